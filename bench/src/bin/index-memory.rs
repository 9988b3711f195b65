//! `index-memory`: resident memory growth per record of the primary index, measured as the
//! change in RSS (from /proc/self/statm) while inserting N records into one `Index`.
//! Target (issue 4): at most 48 bytes per record at 10 million records; Aerospike needs 64.
//!
//! Usage: `index-memory [records]` (default 10,000,000).

use apogee_engine::index::{Index, IndexEntry};
use apogee_engine::record::RecordMeta;
use apogee_wire::Digest;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm readable");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

fn main() {
    let records: u64 = match std::env::args().nth(1) {
        None => 10_000_000,
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("index-memory: records must be a positive integer, got {a:?}");
                std::process::exit(2);
            }
        },
    };
    let before = rss_bytes();
    let mut index = Index::default();
    for i in 0..records {
        index.insert(
            Digest::of_integer("s", i as i64),
            IndexEntry {
                offset: i * 1100,
                bytes: 1100,
                meta: RecordMeta {
                    generation: 1,
                    void_time: 0,
                    last_update_ms: i,
                },
                set_id: 0,
            },
        );
    }
    let after = rss_bytes();
    assert_eq!(index.len() as u64, records);
    let per = (after - before) as f64 / records as f64;
    println!(
        "records {records}: RSS grew {:.1} MiB, {per:.1} bytes per record (target <= 48; Aerospike 64); \
         the index counts {:.1} bytes per record of its own",
        (after - before) as f64 / (1 << 20) as f64,
        index.memory_bytes() as f64 / records as f64
    );
}
