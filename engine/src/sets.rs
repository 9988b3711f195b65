//! Per-set object counts of one shard, for the `sets` info command.
//!
//! A record's set never changes (its digest hashes the set name), so the index counts a set
//! up when a digest enters it and down when one leaves, whatever the cause (write, delete,
//! expiry, eviction, recovery). Set names get small ids (1..=[`SETS_MAX`]; 0 is "no set"),
//! kept in the index entry. The owning core is the only writer of the counts; info readers on
//! other cores see eventually-consistent values. The name list is behind a mutex taken only
//! when a shard first meets a set name and by info readers, never per request.

use std::sync::Mutex;

use crate::sync::atomic::{AtomicU64, Ordering};

/// Most distinct set names per namespace and shard (Aerospike's limit is 4095 per namespace).
pub const SETS_MAX: usize = 4095;

#[derive(Debug)]
pub struct SetStats {
    /// `names[id - 1]` is the name of set id `id`.
    names: Mutex<Vec<Vec<u8>>>,
    /// `objects[id]`; index 0 counts records with no set.
    objects: Vec<AtomicU64>,
}

impl Default for SetStats {
    fn default() -> SetStats {
        SetStats {
            names: Mutex::new(Vec::new()),
            objects: (0..=SETS_MAX).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SetStats {
    /// Gives `name` an id, or `None` once [`SETS_MAX`] names exist.
    pub fn register(&self, name: &[u8]) -> Option<u16> {
        let mut names = self.names.lock().expect("set names lock is never poisoned");
        if let Some(i) = names.iter().position(|n| n == name) {
            return Some(i as u16 + 1);
        }
        if names.len() >= SETS_MAX {
            return None;
        }
        names.push(name.to_vec());
        Some(names.len() as u16)
    }

    pub fn add(&self, id: u16, delta: i64) {
        // Only the owning core writes (see the module doc), so no locked add is needed.
        crate::stats::add_owned(&self.objects[usize::from(id)], delta as u64);
    }

    /// Every named set and its object count (sets whose records are all gone included).
    pub fn snapshot(&self) -> Vec<(Vec<u8>, u64)> {
        let names = self.names.lock().expect("set names lock is never poisoned");
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), self.objects[i + 1].load(Ordering::Relaxed)))
            .collect()
    }
}
