//! The bytes of migration's [`Message`]s between nodes, and of a batch of them for one view.
//!
//! Owns the encoding only (ours, little-endian): a batch is
//! `cluster_key u64 | count u16 | count × (namespace_len u8 | namespace | message)`, a message
//! is `tag u8 | ...`: `1` Versions (`PARTITION_COUNT` copy bytes 0 absent / 1 subset / 2 full,
//! then the `PARTITION_BITMAP_BYTES` serving bitmap, then `count u8` (at most
//! `VIEW_HISTORY_MAX`) view keys u64), `2` Start (`partition u16 | light u8`
//! 0 or 1), `3` StartReply (`partition u16 | accepted u8` 0 or 1), `4` Done, `5` MasterReady, `6` Settled, `7` Dropped (each
//! `partition u16`). Decoding checks every length, tag, partition and flag and refuses bytes
//! left over; it must never panic on a peer's bytes nor allocate more than the input holds.

use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

use super::{Copy, Message, VIEW_HISTORY_MAX};
use crate::balance::PARTITION_BITMAP_BYTES;
use crate::view::ClusterKey;

/// Most messages in one batch (a view sends a few per partition and peer; a sender splits
/// more into several batches).
pub const BATCH_MESSAGES_MAX: usize = 4096;
/// Longest namespace name (Aerospike's limit, 31 bytes).
pub const NAMESPACE_BYTES_MAX: usize = 31;

/// Why bytes are not a migration batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("migration batch cut short at byte {0}")]
    Short(usize),
    #[error("migration batch has {0} bytes left over after its messages")]
    Trailing(usize),
    #[error("cluster key {0:#x} is zero or wider than 48 bits")]
    Key(u64),
    #[error("migration batch of {0} messages is outside 1..={BATCH_MESSAGES_MAX}")]
    Count(usize),
    #[error("namespace name of {0} bytes is outside 1..={NAMESPACE_BYTES_MAX} or not UTF-8")]
    Namespace(usize),
    #[error("unknown migration message tag {0}")]
    Tag(u8),
    #[error("partition {0} is not below {PARTITION_COUNT}")]
    Partition(u16),
    #[error("copy byte {0} is not 0, 1 or 2")]
    Copy(u8),
    #[error("accepted flag {0} is not 0 or 1")]
    Flag(u8),
    #[error("view history of {0} keys is over {VIEW_HISTORY_MAX}")]
    History(usize),
}

/// One decoded batch: the view it belongs to and its `(namespace, message)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub cluster_key: ClusterKey,
    pub messages: Vec<(String, Message)>,
}

const TAG_VERSIONS: u8 = 1;
const TAG_START: u8 = 2;
const TAG_START_REPLY: u8 = 3;
const TAG_DONE: u8 = 4;
const TAG_MASTER_READY: u8 = 5;
const TAG_SETTLED: u8 = 6;
const TAG_DROPPED: u8 = 7;

/// Appends `message`'s bytes to `out`.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    let partition_only = |tag: u8, p: PartitionId, out: &mut Vec<u8>| {
        out.push(tag);
        out.extend_from_slice(&p.0.to_le_bytes());
    };
    match message {
        Message::Versions {
            copies,
            serving,
            history,
        } => {
            debug_assert_eq!(copies.len(), PARTITION_COUNT as usize);
            assert!(history.len() <= VIEW_HISTORY_MAX, "history is capped");
            out.push(TAG_VERSIONS);
            out.extend(copies.iter().map(|c| match c {
                Copy::Absent => 0u8,
                Copy::Subset => 1,
                Copy::Full => 2,
            }));
            out.extend_from_slice(&serving[..]);
            out.push(history.len() as u8);
            for k in history {
                out.extend_from_slice(&k.get().to_le_bytes());
            }
        }
        Message::Start { partition, light } => {
            partition_only(TAG_START, *partition, out);
            out.push(u8::from(*light));
        }
        Message::StartReply {
            partition,
            accepted,
        } => {
            partition_only(TAG_START_REPLY, *partition, out);
            out.push(u8::from(*accepted));
        }
        Message::Done { partition } => partition_only(TAG_DONE, *partition, out),
        Message::MasterReady { partition } => partition_only(TAG_MASTER_READY, *partition, out),
        Message::Settled { partition } => partition_only(TAG_SETTLED, *partition, out),
        Message::Dropped { partition } => partition_only(TAG_DROPPED, *partition, out),
    }
}

/// A batch of `messages` of one view.
pub fn encode_batch(cluster_key: ClusterKey, messages: &[(&str, &Message)]) -> Vec<u8> {
    assert!(
        (1..=BATCH_MESSAGES_MAX).contains(&messages.len()),
        "a batch holds 1..=BATCH_MESSAGES_MAX messages"
    );
    let mut out = Vec::with_capacity(10 + messages.len() * 8);
    out.extend_from_slice(&cluster_key.get().to_le_bytes());
    out.extend_from_slice(&(messages.len() as u16).to_le_bytes());
    for (ns, m) in messages {
        assert!(
            (1..=NAMESPACE_BYTES_MAX).contains(&ns.len()),
            "namespace names are checked at config load"
        );
        out.push(ns.len() as u8);
        out.extend_from_slice(ns.as_bytes());
        encode_message(m, &mut out);
    }
    out
}

/// A cursor over the input that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Short(self.at))?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(WireError::Short(self.at))?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn partition(&mut self) -> Result<PartitionId, WireError> {
        let p = self.u16()?;
        if p >= PARTITION_COUNT {
            return Err(WireError::Partition(p));
        }
        Ok(PartitionId(p))
    }
}

fn flag(b: u8) -> Result<bool, WireError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(WireError::Flag(other)),
    }
}

fn decode_message(r: &mut Reader<'_>) -> Result<Message, WireError> {
    let tag = r.u8()?;
    Ok(match tag {
        TAG_VERSIONS => {
            let copies = r
                .take(PARTITION_COUNT as usize)?
                .iter()
                .map(|&b| match b {
                    0 => Ok(Copy::Absent),
                    1 => Ok(Copy::Subset),
                    2 => Ok(Copy::Full),
                    other => Err(WireError::Copy(other)),
                })
                .collect::<Result<Box<[Copy]>, WireError>>()?;
            let mut serving = Box::new([0u8; PARTITION_BITMAP_BYTES]);
            serving.copy_from_slice(r.take(PARTITION_BITMAP_BYTES)?);
            let count = usize::from(r.u8()?);
            if count > VIEW_HISTORY_MAX {
                return Err(WireError::History(count));
            }
            let mut history = Vec::with_capacity(count);
            for _ in 0..count {
                let mut b = [0u8; 8];
                b.copy_from_slice(r.take(8)?);
                let raw = u64::from_le_bytes(b);
                history.push(ClusterKey::new(raw).ok_or(WireError::Key(raw))?);
            }
            Message::Versions {
                copies,
                serving,
                history,
            }
        }
        TAG_START => Message::Start {
            partition: r.partition()?,
            light: flag(r.u8()?)?,
        },
        TAG_START_REPLY => {
            let partition = r.partition()?;
            let accepted = flag(r.u8()?)?;
            Message::StartReply {
                partition,
                accepted,
            }
        }
        TAG_DONE => Message::Done {
            partition: r.partition()?,
        },
        TAG_MASTER_READY => Message::MasterReady {
            partition: r.partition()?,
        },
        TAG_SETTLED => Message::Settled {
            partition: r.partition()?,
        },
        TAG_DROPPED => Message::Dropped {
            partition: r.partition()?,
        },
        other => return Err(WireError::Tag(other)),
    })
}

/// The batch `bytes` hold, exactly.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, WireError> {
    let mut r = Reader { bytes, at: 0 };
    let mut key = [0u8; 8];
    key.copy_from_slice(r.take(8)?);
    let raw = u64::from_le_bytes(key);
    let cluster_key = ClusterKey::new(raw).ok_or(WireError::Key(raw))?;
    let count = usize::from(r.u16()?);
    if !(1..=BATCH_MESSAGES_MAX).contains(&count) {
        return Err(WireError::Count(count));
    }
    // Each message takes at least 5 bytes (name length, one name byte, tag, partition... or
    // more): never reserve beyond what the input could hold.
    let mut messages = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        let len = usize::from(r.u8()?);
        if !(1..=NAMESPACE_BYTES_MAX).contains(&len) {
            return Err(WireError::Namespace(len));
        }
        let name = std::str::from_utf8(r.take(len)?).map_err(|_| WireError::Namespace(len))?;
        let message = decode_message(&mut r)?;
        messages.push((name.to_owned(), message));
    }
    if r.at != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - r.at));
    }
    Ok(Batch {
        cluster_key,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Message> {
        let p = PartitionId(4095);
        let mut copies = vec![Copy::Absent; PARTITION_COUNT as usize];
        copies[1] = Copy::Subset;
        copies[4095] = Copy::Full;
        let mut serving = Box::new([0u8; PARTITION_BITMAP_BYTES]);
        serving[0] = 0x80;
        serving[511] = 0x01;
        vec![
            Message::Versions {
                copies: copies.into_boxed_slice(),
                serving,
                history: vec![
                    ClusterKey::new(3).unwrap(),
                    ClusterKey::new(1 << 40).unwrap(),
                ],
            },
            Message::Start {
                partition: p,
                light: true,
            },
            Message::StartReply {
                partition: PartitionId(0),
                accepted: true,
            },
            Message::StartReply {
                partition: p,
                accepted: false,
            },
            Message::Done { partition: p },
            Message::MasterReady { partition: p },
            Message::Settled { partition: p },
            Message::Dropped { partition: p },
        ]
    }

    #[test]
    fn every_message_round_trips_in_a_batch() {
        let key = ClusterKey::new(0xABCD_EF01_2345).unwrap();
        let all = every_kind();
        let pairs: Vec<(&str, &Message)> = all
            .iter()
            .enumerate()
            .map(|(i, m)| (if i % 2 == 0 { "test" } else { "bar" }, m))
            .collect();
        let bytes = encode_batch(key, &pairs);
        let batch = decode_batch(&bytes).unwrap();
        assert_eq!(batch.cluster_key, key);
        assert_eq!(batch.messages.len(), all.len());
        for ((ns, m), (want_ns, want)) in batch.messages.iter().zip(&pairs) {
            assert_eq!(ns, want_ns);
            assert_eq!(m, *want);
        }
    }

    #[test]
    fn every_cut_extra_or_bad_byte_is_a_named_error() {
        let key = ClusterKey::new(7).unwrap();
        let all = every_kind();
        let pairs: Vec<(&str, &Message)> = all.iter().map(|m| ("test", m)).collect();
        let bytes = encode_batch(key, &pairs);
        for cut in 0..bytes.len() {
            assert!(decode_batch(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode_batch(&extra), Err(WireError::Trailing(1)));
        let one = |m: &Message| encode_batch(key, &[("test", m)]);
        let start = one(&Message::Start {
            partition: PartitionId(5),
            light: false,
        });
        // Layout: key 8, count 2, name length 1, "test" 4, tag at 15, partition at 16.
        let mut bad = start.clone();
        bad[15] = 99;
        assert_eq!(decode_batch(&bad), Err(WireError::Tag(99)));
        let mut bad = start.clone();
        bad[16..18].copy_from_slice(&4096u16.to_le_bytes());
        assert_eq!(decode_batch(&bad), Err(WireError::Partition(4096)));
        let mut bad = start.clone();
        bad[..8].copy_from_slice(&(1u64 << 48).to_le_bytes());
        assert_eq!(decode_batch(&bad), Err(WireError::Key(1 << 48)));
        let mut bad = start.clone();
        bad[8..10].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(decode_batch(&bad), Err(WireError::Count(0)));
        let mut bad = start.clone();
        bad[10] = 0;
        assert_eq!(decode_batch(&bad), Err(WireError::Namespace(0)));
        let mut bad = start;
        bad[11] = 0xFF;
        assert_eq!(decode_batch(&bad), Err(WireError::Namespace(4)));
        let mut bad = one(&Message::StartReply {
            partition: PartitionId(1),
            accepted: true,
        });
        *bad.last_mut().unwrap() = 2;
        assert_eq!(decode_batch(&bad), Err(WireError::Flag(2)));
        let mut bad = one(&all[0]);
        bad[16] = 3;
        assert_eq!(decode_batch(&bad), Err(WireError::Copy(3)));
    }
}
