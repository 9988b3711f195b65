//! Cold-start decisions: walking the records of one block read from disk and deciding what the
//! index holds afterwards. Plain logic over bytes; `shard::store` does the reading.
//!
//! The caller replays blocks in sequence order and this walks records in append order, so the
//! last version seen of a digest is the newest. A tombstone or an expired record leaves the
//! index and becomes the digest's shadow (it must stay on disk while older versions might).
//! A record whose checksum fails is counted and skipped, never indexed: the previous good
//! version (if any) stays served. This module must never index a record that did not verify.

use crate::block::{BlockHeader, BlockState, BLOCK_HEADER_BYTES};
use crate::clock;
use crate::index::{IndexEntry, Shadow};
use crate::record::{
    block_tag, decode_header_tagged, digests_ahead, set_name_of, RecordDecodeError,
    RECORD_FIXED_BYTES,
};
use crate::shard::store::{Change, Keydir, Uncounted};

/// What replaying one block found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockReplay {
    pub records: u64,
    pub bad_records: u64,
    /// True when the walk stopped early at bytes it could not skip (a bad length or magic).
    pub stopped_early: bool,
}

/// Replays the records of `block` (read from file offset `base`) into `keydir`, through its
/// one mutation point (live bytes are counted by the caller once every block is replayed).
/// Returns `None` for a block that was never written.
pub(crate) fn replay_block(
    block: &[u8],
    base: u64,
    keydir: &mut Keydir,
    now_secs: u32,
) -> Option<(BlockState, BlockReplay)> {
    let state = BlockHeader::decode(block);
    let mut out = BlockReplay::default();
    let tag = match state {
        BlockState::Empty => return None,
        BlockState::Corrupt => {
            out.stopped_early = true;
            return Some((state, out));
        }
        BlockState::Valid(h) => block_tag(h.sequence),
    };
    let mut pos = BLOCK_HEADER_BYTES;
    // Prefetch hints two records ahead (header) and one ahead (home slot): an index insert's
    // cache misses then overlap the checksum of the records before it.
    let ahead = digests_ahead(block, pos);
    let mut n = 0;
    while pos + RECORD_FIXED_BYTES <= block.len() {
        if let Some(d) = ahead.get(n + 2) {
            keydir.index().prefetch(d, false);
        }
        if let Some(d) = ahead.get(n + 1) {
            keydir.index().prefetch(d, true);
        }
        n += 1;
        match decode_header_tagged(&block[pos..], tag) {
            Ok(h) => {
                out.records += 1;
                let offset = base + pos as u64;
                let change = if h.tombstone || clock::is_expired(h.meta.void_time, now_secs) {
                    Change::Shadow {
                        digest: h.digest,
                        shadow: Shadow {
                            offset,
                            bytes: h.total_bytes,
                        },
                    }
                } else {
                    Change::Live {
                        digest: h.digest,
                        entry: IndexEntry {
                            offset,
                            bytes: h.total_bytes,
                            meta: h.meta,
                            set_id: keydir.set_id(set_name_of(&block[pos..])),
                        },
                    }
                };
                keydir.mutate_indexed(change, &mut Uncounted, None);
                pos += h.total_bytes as usize;
            }
            Err(RecordDecodeError::End) => break,
            Err(RecordDecodeError::BadChecksum { .. }) => {
                // The length verified as plausible; skip this record and keep walking.
                out.bad_records += 1;
                let len = u32::from_be_bytes(block[pos + 4..pos + 8].try_into().expect("4"));
                pos += len as usize;
            }
            Err(_) => {
                out.bad_records += 1;
                out.stopped_early = true;
                break;
            }
        }
    }
    Some((state, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{WriteBlock, BLOCK_SIZE_BYTES_MIN};
    use crate::record::{Bin, Record, RecordMeta};
    use apogee_wire::Digest;

    fn rec(key: &str, gen: u16, val: u8, tombstone: bool) -> Record {
        Record {
            digest: Digest::of_string("s", key),
            meta: RecordMeta {
                generation: gen,
                void_time: 0,
                last_update_ms: 1,
            },
            set_name: b"s".to_vec(),
            user_key: None,
            bins: if tombstone {
                vec![]
            } else {
                vec![Bin {
                    name: b"v".to_vec(),
                    particle_type: 4,
                    value: vec![val; 10],
                }]
            },
            tombstone,
        }
    }

    fn block_with(records: &[Record]) -> (WriteBlock, Vec<u64>) {
        let mut w = WriteBlock::new(
            4096,
            BlockHeader {
                sequence: 1,
                shard: 0,
                block_bytes: BLOCK_SIZE_BYTES_MIN as u32,
            },
        );
        let offsets = records
            .iter()
            .map(|r| {
                let mut bytes = r.encode();
                crate::record::retag(&mut bytes, 0, block_tag(1));
                w.append(&bytes)
            })
            .collect();
        (w, offsets)
    }

    fn bytes(w: &WriteBlock) -> Vec<u8> {
        let mut v = w.pending_write().unwrap().bytes().to_vec();
        v.resize(BLOCK_SIZE_BYTES_MIN, 0);
        v
    }

    #[test]
    fn prefetch_hints_list_the_digests_and_stop_at_garbage() {
        let recs = [
            rec("a", 1, 1, false),
            rec("b", 1, 2, true),
            rec("c", 1, 3, false),
        ];
        let (w, offsets) = block_with(&recs);
        let mut b = bytes(&w);
        let want: Vec<_> = recs.iter().map(|r| r.digest).collect();
        assert_eq!(digests_ahead(&b, BLOCK_HEADER_BYTES), want);
        // A bad length in the second record ends the hints there (replay decides the rest).
        let second = (offsets[1] - 4096) as usize;
        b[second + 4..second + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(digests_ahead(&b, BLOCK_HEADER_BYTES), want[..1].to_vec());
    }

    #[test]
    fn newest_wins_and_tombstones_delete() {
        let (w, offs) = block_with(&[
            rec("a", 1, 1, false),
            rec("b", 1, 1, false),
            rec("a", 2, 2, false),
            rec("b", 2, 0, true),
        ]);
        let mut idx = Keydir::default();
        let (_, r) = replay_block(&bytes(&w), w.base, &mut idx, 0).unwrap();
        assert_eq!(r.records, 4);
        assert_eq!(
            idx.shadows().len(),
            1,
            "the tombstone of b stays as a shadow"
        );
        assert_eq!(r.bad_records, 0);
        assert_eq!(idx.index().len(), 1);
        let a = idx.index().get(&Digest::of_string("s", "a")).unwrap();
        assert_eq!(a.offset, offs[2]);
        assert_eq!(a.meta.generation, 2);
    }

    #[test]
    fn corrupt_record_is_skipped_and_previous_version_kept() {
        let (w, offs) = block_with(&[
            rec("a", 1, 1, false),
            rec("a", 2, 2, false),
            rec("c", 1, 3, false),
        ]);
        let mut b = bytes(&w);
        let flip = (offs[1] - w.base) as usize + RECORD_FIXED_BYTES + 4;
        b[flip] ^= 0xff;
        let mut idx = Keydir::default();
        let (_, r) = replay_block(&b, w.base, &mut idx, 0).unwrap();
        assert_eq!(r.bad_records, 1);
        assert!(!r.stopped_early);
        assert_eq!(
            idx.index()
                .get(&Digest::of_string("s", "a"))
                .unwrap()
                .offset,
            offs[0]
        );
        assert!(
            idx.index().get(&Digest::of_string("s", "c")).is_some(),
            "later record survives"
        );
    }

    #[test]
    fn bytes_from_another_use_of_the_block_are_not_replayed() {
        // The same record bytes in a block with another sequence number: stale, so skipped.
        let (w, _) = block_with(&[rec("a", 1, 1, false)]);
        let mut b = bytes(&w);
        b[..BLOCK_HEADER_BYTES].copy_from_slice(
            &BlockHeader {
                sequence: 2,
                shard: 0,
                block_bytes: BLOCK_SIZE_BYTES_MIN as u32,
            }
            .encode(),
        );
        let mut idx = Keydir::default();
        let (_, r) = replay_block(&b, w.base, &mut idx, 0).unwrap();
        assert_eq!(idx.index().len(), 0);
        assert_eq!(r.bad_records, 1);
    }

    #[test]
    fn expired_records_are_not_indexed() {
        let mut r = rec("a", 1, 1, false);
        r.meta.void_time = 100;
        let (w, _) = block_with(&[r]);
        let mut idx = Keydir::default();
        replay_block(&bytes(&w), w.base, &mut idx, 50).unwrap();
        assert_eq!(idx.index().len(), 1);
        // Readable through its void-time second (clock::is_expired), gone the second after.
        let mut idx = Keydir::default();
        replay_block(&bytes(&w), w.base, &mut idx, 100).unwrap();
        assert_eq!(idx.index().len(), 1);
        let mut idx = Keydir::default();
        replay_block(&bytes(&w), w.base, &mut idx, 101).unwrap();
        assert_eq!(idx.index().len(), 0);
        assert_eq!(
            idx.shadows().len(),
            1,
            "an expired record shadows older versions"
        );
    }

    #[test]
    fn empty_and_corrupt_blocks() {
        let mut idx = Keydir::default();
        assert!(replay_block(&vec![0; 8192], 0, &mut idx, 0).is_none());
        let mut junk = vec![0u8; 8192];
        junk[0] = 1;
        let (state, r) = replay_block(&junk, 0, &mut idx, 0).unwrap();
        assert_eq!(state, BlockState::Corrupt);
        assert!(r.stopped_early);
    }
}
