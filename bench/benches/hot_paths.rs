//! Criterion benches of the single-record hot paths: digest, message decode/encode, record
//! encode/decode, index insert/lookup, write-block append, record-cache hit. Run:
//! `cargo bench -p apogee-bench --bench hot_paths`.

use apogee_engine::block::{BlockHeader, WriteBlock};
use apogee_engine::cache::RecordCache;
use apogee_engine::index::{Index, IndexEntry};
use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_wire::msg::{Field, FieldType, Message, Op, OpType};
use apogee_wire::Digest;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn put_message() -> Vec<u8> {
    let mut m = Message::default();
    m.header.info2 = 1;
    m.fields.push(Field {
        field_type: FieldType::NAMESPACE,
        data: b"test".to_vec(),
    });
    m.fields.push(Field {
        field_type: FieldType::DIGEST,
        data: Digest::of_string("demo", "k").0.to_vec(),
    });
    for i in 0..10u8 {
        m.ops.push(Op {
            op_type: OpType::WRITE,
            particle_type: 4,
            name: vec![b'a' + i],
            value: vec![i; 100],
        });
    }
    m.encode()
}

fn record() -> Record {
    Record {
        digest: Digest::of_string("demo", "k"),
        meta: RecordMeta {
            generation: 1,
            void_time: 0,
            last_update_ms: 0,
        },
        set_name: b"demo".to_vec(),
        user_key: None,
        bins: (0..10u8)
            .map(|i| Bin {
                name: vec![b'a' + i],
                particle_type: 4,
                value: vec![i; 100],
            })
            .collect(),
        tombstone: false,
    }
}

fn benches(c: &mut Criterion) {
    c.bench_function("digest_string_key", |b| {
        b.iter(|| Digest::of_string(black_box("demo"), black_box("user:1000")))
    });
    let body = put_message();
    c.bench_function("decode_put_10x100", |b| {
        b.iter(|| Message::decode(black_box(&body)).unwrap())
    });
    let msg = Message::decode(&body).unwrap();
    c.bench_function("encode_put_10x100", |b| b.iter(|| black_box(&msg).encode()));
    let digests: Vec<Digest> = (0..100_000).map(|i| Digest::of_integer("s", i)).collect();
    let entry = |i: usize| IndexEntry {
        offset: i as u64 * 1100,
        bytes: 1100,
        meta: RecordMeta {
            generation: 1,
            void_time: 0,
            last_update_ms: 0,
        },
        set_id: 0,
    };
    c.bench_function("index_insert_100k", |b| {
        b.iter(|| {
            let mut idx = Index::default();
            for (i, d) in digests.iter().enumerate() {
                idx.insert(*d, entry(i));
            }
            idx
        })
    });
    let mut idx = Index::default();
    for (i, d) in digests.iter().enumerate() {
        idx.insert(*d, entry(i));
    }
    let mut n = 0usize;
    c.bench_function("index_lookup", |b| {
        b.iter(|| {
            n = (n + 7919) % digests.len();
            black_box(idx.get(&digests[n]))
        })
    });
    let rec_bytes = record().encode();
    let header = BlockHeader {
        sequence: 1,
        shard: 0,
        block_bytes: 1 << 20,
    };
    let mut block = WriteBlock::new(4096, header);
    c.bench_function("write_block_append_1kib", |b| {
        b.iter(|| {
            if !block.fits(rec_bytes.len()) {
                block = WriteBlock::new(4096, header);
            }
            black_box(block.append(&rec_bytes))
        })
    });
    // Large enough for all 100,000 records (~110 MB), so every lookup hits.
    let mut cache = RecordCache::new(256 << 20);
    let cached: std::rc::Rc<[u8]> = std::rc::Rc::from(&rec_bytes[..]);
    for (i, d) in digests.iter().enumerate() {
        cache.insert(*d, i as u64, cached.clone());
    }
    let mut m = 0usize;
    c.bench_function("cache_hit", |b| {
        b.iter(|| {
            m = (m + 7919) % digests.len();
            black_box(cache.get(&digests[m], m as u64))
        })
    });
    c.bench_function("cache_hit_and_decode_10x100", |b| {
        b.iter(|| {
            m = (m + 7919) % digests.len();
            let bytes = cache.get(&digests[m], m as u64).unwrap();
            black_box(Record::decode(&bytes).unwrap())
        })
    });
    let r = record();
    c.bench_function("record_encode_10x100", |b| {
        b.iter(|| black_box(&r).encode())
    });
    let bytes = r.encode();
    c.bench_function("record_decode_10x100", |b| {
        b.iter(|| Record::decode(black_box(&bytes)).unwrap())
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
