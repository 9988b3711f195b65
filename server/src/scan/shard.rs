//! The part of a scan that runs on one shard: walks the partitions this shard owns, a chunk at
//! a time (`ShardStore::scan_chunk`), filters and samples the records, and either encodes them
//! into frames for the connection or (background scans) applies the scan's write to each.
//!
//! It yields to its executor after every chunk (at most a few hundred records), so the core's
//! other requests are served while a scan runs, and it holds at most one chunk of records and
//! one frame. It must never run on a core that does not own the partitions it walks.

use std::rc::Rc;
use std::time::{Duration, Instant};

use apogee_engine::shard::iterate::PartitionCursor;
use apogee_engine::Record;
use apogee_wire::msg::{info1, Field, Message, MsgHeader, OpType};
use apogee_wire::{FieldType, ResultCode};

use super::{ScanSpec, ShardScan};
use crate::command::{filter, read::bin_op};
use crate::core::Core;
use crate::stream::FrameBuilder;

/// info3 of a partition-done marker (spec §8.3).
pub const INFO3_PARTITION_DONE: u8 = 0x04;

/// The header-only marker that tells the client a partition ended with `rc` (11: retry it).
pub fn partition_done(pid: u16, rc: ResultCode) -> Message {
    Message {
        header: MsgHeader {
            info3: INFO3_PARTITION_DONE,
            generation: u32::from(pid),
            result_code: rc as u8,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The message of one scanned record (spec §8.3): namespace, digest, set, user key; its bins
/// (selected ones only); `None` when a bin selection leaves it nothing (the record is skipped).
pub(crate) fn record_message(spec: &ScanSpec, namespace: &str, record: Record) -> Option<Message> {
    let mut fields = vec![
        Field {
            field_type: FieldType::NAMESPACE,
            data: namespace.as_bytes().to_vec(),
        },
        Field {
            field_type: FieldType::DIGEST,
            data: record.digest.0.to_vec(),
        },
    ];
    if !record.set_name.is_empty() {
        fields.push(Field {
            field_type: FieldType::SET,
            data: record.set_name.clone(),
        });
    }
    if let Some(key) = &record.user_key {
        let mut data = Vec::with_capacity(key.bytes.len() + 1);
        data.push(key.particle_type);
        data.extend_from_slice(&key.bytes);
        fields.push(Field {
            field_type: FieldType::KEY,
            data,
        });
    }
    let ops = if spec.no_bins {
        Vec::new()
    } else {
        let ops: Vec<_> = match &spec.bins {
            None => record
                .bins
                .iter()
                .map(|b| bin_op(OpType::READ, b))
                .collect(),
            Some(names) => (record.bins.iter())
                .filter(|b| names.contains(&b.name))
                .map(|b| bin_op(OpType::READ, b))
                .collect(),
        };
        if ops.is_empty() && spec.bins.is_some() {
            return None;
        }
        ops
    };
    Some(Message {
        header: MsgHeader {
            info1: if spec.no_bins {
                info1::GET_NOBINDATA
            } else {
                0
            },
            generation: u32::from(record.meta.generation),
            record_ttl: record.meta.void_time,
            ..Default::default()
        },
        fields,
        ops,
    })
}

/// Whether sampling at `pct` percent keeps a record: decided by its digest, so a resumed or
/// repeated scan samples the same records.
fn sampled(pct: u8, record: &Record) -> bool {
    pct >= 100 || u32::from(record.digest.0[19]) * 100 / 256 < u32::from(pct)
}

/// Whether a record passes the scan's filter: only when the expression is definitely true
/// (false, unknown and evaluation errors leave the record out, as Aerospike's scans do).
pub(crate) fn matches_filter(e: &apogee_ops::exp::Exp, record: &Record) -> bool {
    let meta = filter::meta_of(record);
    let view = filter::View {
        bins: &record.bins,
        meta: &meta,
    };
    matches!(
        apogee_ops::exp::evaluate(e, &view),
        Ok(Some(apogee_ops::Value::Bool(true)))
    )
}

/// Keeps a shard at or under its share of the scan's records-per-second.
struct Throttle {
    per_second: u32,
    started: Instant,
    passed: u64,
}

impl Throttle {
    async fn pass(&mut self) {
        self.passed += 1;
        if self.per_second == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.passed as f64 / f64::from(self.per_second));
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            glommio::timer::sleep(wait).await;
        }
    }
}

/// Runs one shard's part of a scan until its partitions are walked, the job is aborted, the
/// record budget is spent, or the connection has gone.
pub async fn run(core: Rc<Core>, work: ShardScan) {
    if let Some(q) = work.spec.index.clone() {
        return crate::sindex::query::run_shard(core, work, q).await;
    }
    let ShardScan {
        spec,
        partitions,
        job,
        shards,
        frames,
        done,
    } = work;
    let store = core.stores[spec.namespace].clone();
    let namespace = core.node.config.namespaces[spec.namespace].name.clone();
    let mut throttle = Throttle {
        per_second: spec.records_per_second.div_ceil(shards.max(1)),
        started: Instant::now(),
        passed: 0,
    };
    let mut frame = FrameBuilder::new();
    let Ok(mut agg) =
        crate::udf::stream::start_in(spec.aggregate.as_ref(), &core.node.udfs, &mut frame, &job)
    else {
        if let (Some(frames), Some((last, _))) = (&frames, frame.into_frame()) {
            let _ = frames.send_async(last).await;
        }
        return;
    };
    'partitions: for (pid, resume) in partitions {
        debug_assert_eq!(core.node.shard_of(pid), core.shard);
        let mut cursor = PartitionCursor::new(pid, resume);
        while !cursor.is_done() {
            if job.is_aborted() {
                break 'partitions;
            }
            let chunk = match store.scan_chunk(&mut cursor, spec.set.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, partition = pid, "scan read failed; the scan ends with a server error");
                    job.fail();
                    break 'partitions;
                }
            };
            for record in chunk {
                if !sampled(spec.sample_pct, &record) {
                    continue;
                }
                if let Some(f) = &spec.filter {
                    if !matches_filter(f, &record) {
                        job.count_filtered();
                        continue;
                    }
                }
                if let Some(write) = &spec.write {
                    throttle.pass().await;
                    apply_write(&core, &spec, write, &record, &job).await;
                    continue;
                }
                let msg = match &mut agg {
                    Some(a) => match a.feed(record) {
                        Ok(Some(m)) => m,
                        Ok(None) => continue,
                        Err(failure) => {
                            frame.push(&failure);
                            job.fail();
                            agg = None;
                            break 'partitions;
                        }
                    },
                    None => match record_message(&spec, &namespace, record) {
                        Some(m) => m,
                        None => continue,
                    },
                };
                if !job.take_record() {
                    break 'partitions;
                }
                throttle.pass().await;
                frame.push(&msg);
                if let Some((full, _)) = frame.take_if_full() {
                    let Some(frames) = &frames else { continue };
                    if frames.send_async(full).await.is_err() {
                        job.abort("client-disconnected");
                        break 'partitions;
                    }
                }
            }
            // Let the core's other requests run between chunks.
            futures_lite::future::yield_now().await;
        }
        job.partition_done();
    }
    crate::udf::stream::finish_into(agg, &mut frame, &job);
    if let (Some(frames), Some((last, _))) = (&frames, frame.into_frame()) {
        let _ = frames.send_async(last).await;
    }
    drop(done);
}

/// Applies a background scan's write to one record through the single-record write path,
/// counting the outcome on the job.
pub(crate) async fn apply_write(
    core: &Core,
    spec: &ScanSpec,
    write: &Message,
    record: &Record,
    job: &super::Job,
) {
    let mut msg = write.clone();
    msg.fields.push(Field {
        field_type: FieldType::DIGEST,
        data: record.digest.0.to_vec(),
    });
    if !record.set_name.is_empty() {
        msg.fields.push(Field {
            field_type: FieldType::SET,
            data: record.set_name.clone(),
        });
    }
    let reply = core.execute_reply(spec.namespace, &msg, None).await;
    if reply.result == ResultCode::Ok as u8 {
        job.count_succeeded();
    } else if reply.result == ResultCode::FilteredOut as u8
        || reply.result == ResultCode::NotFound as u8
    {
        job.count_filtered();
    } else {
        job.count_failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::{Bin, RecordMeta, UserKey};
    use apogee_wire::Digest;

    fn spec() -> ScanSpec {
        ScanSpec {
            namespace: 0,
            set: None,
            bins: None,
            no_bins: false,
            filter: None,
            sample_pct: 100,
            records_per_second: 0,
            write: None,
            index: None,
            aggregate: None,
        }
    }

    fn record() -> Record {
        Record {
            digest: Digest::of_integer("demo", 1),
            meta: RecordMeta {
                generation: 3,
                void_time: 77,
                last_update_ms: 1,
            },
            set_name: b"demo".to_vec(),
            user_key: Some(UserKey {
                particle_type: 1,
                bytes: 1i64.to_be_bytes().to_vec(),
            }),
            bins: vec![Bin {
                name: b"a".to_vec(),
                particle_type: 1,
                value: 5i64.to_be_bytes().to_vec(),
            }],
            tombstone: false,
        }
    }

    #[test]
    fn a_record_message_carries_its_identity_and_bins() {
        let m = record_message(&spec(), "test", record()).unwrap();
        let types: Vec<u8> = m.fields.iter().map(|f| f.field_type.0).collect();
        assert_eq!(types, [0, 4, 1, 2]);
        assert_eq!((m.header.generation, m.header.record_ttl), (3, 77));
        assert_eq!(m.ops.len(), 1);
        let no_bins = ScanSpec {
            no_bins: true,
            ..spec()
        };
        let m = record_message(&no_bins, "test", record()).unwrap();
        assert!(m.ops.is_empty());
        assert_eq!(m.header.info1, info1::GET_NOBINDATA);
        let other = ScanSpec {
            bins: Some(vec![b"zz".to_vec()]),
            ..spec()
        };
        assert!(record_message(&other, "test", record()).is_none());
    }

    #[test]
    fn a_done_marker_names_its_partition() {
        let m = partition_done(4095, ResultCode::PartitionUnavailable);
        assert_eq!(m.header.generation, 4095);
        assert_eq!(m.header.info3, INFO3_PARTITION_DONE);
        assert_eq!(m.header.result_code, 11);
    }
}
