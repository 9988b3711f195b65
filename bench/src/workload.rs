//! YCSB core workloads A–F and the record shape: what each operation is and how often.

use crate::distribution::{KeyChooser, Zipfian};

/// What one benchmark operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
    /// A read of `--batch` keys in one request (replaces Read when batching).
    BatchRead,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
        OpKind::BatchRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
            OpKind::BatchRead => "batch-read",
        }
    }
}

/// Which key distribution a workload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Zipfian,
    Uniform,
    Latest,
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zipfian" => Ok(Distribution::Zipfian),
            "uniform" => Ok(Distribution::Uniform),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!(
                "unknown distribution '{other}': use zipfian, uniform or latest"
            )),
        }
    }
}

/// An operation mix: proportions of each kind, summing to 1.
#[derive(Debug, Clone)]
pub struct Mix {
    pub name: String,
    pub parts: Vec<(OpKind, f64)>,
    pub distribution: Distribution,
}

impl Mix {
    /// The YCSB core workload with this letter.
    pub fn ycsb(letter: &str) -> Result<Mix, String> {
        use OpKind::*;
        let (parts, distribution) = match letter.to_ascii_uppercase().as_str() {
            "A" => (vec![(Read, 0.5), (Update, 0.5)], Distribution::Zipfian),
            "B" => (vec![(Read, 0.95), (Update, 0.05)], Distribution::Zipfian),
            "C" => (vec![(Read, 1.0)], Distribution::Zipfian),
            "D" => (vec![(Read, 0.95), (Insert, 0.05)], Distribution::Latest),
            "E" => (vec![(Scan, 0.95), (Insert, 0.05)], Distribution::Zipfian),
            "F" => (
                vec![(Read, 0.5), (ReadModifyWrite, 0.5)],
                Distribution::Zipfian,
            ),
            other => {
                return Err(format!(
                    "unknown workload '{other}': use A, B, C, D, E or F"
                ))
            }
        };
        Ok(Mix {
            name: letter.to_ascii_uppercase(),
            parts,
            distribution,
        })
    }

    /// A custom read/update mix, e.g. `--read-pct 90`.
    pub fn read_update(read_pct: u8, distribution: Distribution) -> Mix {
        let r = f64::from(read_pct.min(100)) / 100.0;
        Mix {
            name: format!("read{read_pct}"),
            parts: vec![(OpKind::Read, r), (OpKind::Update, 1.0 - r)],
            distribution,
        }
    }

    /// Picks an op kind from a uniform draw `u` in [0, 1).
    pub fn pick(&self, u: f64) -> OpKind {
        let mut acc = 0.0;
        for (k, p) in &self.parts {
            acc += p;
            if u < acc {
                return *k;
            }
        }
        self.parts.last().expect("mix has parts").0
    }

    pub fn chooser(&self, records: u64) -> KeyChooser {
        match self.distribution {
            Distribution::Uniform => KeyChooser::Uniform { items: records },
            Distribution::Zipfian => KeyChooser::ScrambledZipfian {
                zipf: Zipfian::new(records),
                items: records,
            },
            Distribution::Latest => KeyChooser::Latest {
                zipf: Zipfian::new(records),
            },
        }
    }
}

/// The shape of every record: `bins` fields of `bin_bytes` bytes (YCSB: 10 × 100).
#[derive(Debug, Clone, Copy)]
pub struct RecordShape {
    pub bins: usize,
    pub bin_bytes: usize,
}

/// The key string of record `i` (YCSB's `user<n>`).
pub fn key_name(i: u64) -> String {
    format!("user{i}")
}

/// Deterministic field content for record `i`, field `f` (printable, so RESP and string bins
/// carry the same bytes).
pub fn field_value(i: u64, f: usize, bytes: usize) -> Vec<u8> {
    let seed = (i as usize).wrapping_mul(31).wrapping_add(f);
    (0..bytes).map(|j| b'a' + ((seed + j) % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_pick_in_proportion() {
        let a = Mix::ycsb("a").unwrap();
        assert_eq!(a.pick(0.1), OpKind::Read);
        assert_eq!(a.pick(0.9), OpKind::Update);
        let f = Mix::ycsb("F").unwrap();
        assert_eq!(f.pick(0.99), OpKind::ReadModifyWrite);
        assert!(Mix::ycsb("G").is_err());
        assert_eq!(
            Mix::read_update(100, Distribution::Uniform).pick(0.999),
            OpKind::Read
        );
    }
}
