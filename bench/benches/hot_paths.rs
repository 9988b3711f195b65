//! Criterion benches of the single-record hot paths: digest, message decode/encode, record
//! encode/decode. Run: `cargo bench -p apogee-bench`.

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
