//! Bad network input: malformed frames close only their own connection (with a log line) and
//! the node keeps serving; unknown ops and fields get result code 4, long bin names 21,
//! unknown namespaces 20, unsupported features 16.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use apogee_wire::msg::{info1, info2, Field, FieldType, Message, Op, OpType};
use apogee_wire::proto::{frame, ProtoHeader};
use apogee_wire::{Digest, MsgType};
use common::Server;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// True when the server closed the connection (EOF or reset) instead of answering.
fn closed_after(port: u16, bytes: &[u8]) -> bool {
    let mut s = connect(port);
    s.write_all(bytes).unwrap();
    // Half-close so a server waiting for more body bytes sees EOF.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

fn keyed(ns: &str, ops: Vec<Op>) -> Message {
    let mut m = Message::default();
    m.header.info2 = info2::WRITE;
    m.fields = vec![
        Field {
            field_type: FieldType::NAMESPACE,
            data: ns.as_bytes().to_vec(),
        },
        Field {
            field_type: FieldType::DIGEST,
            data: Digest::of_string("demo", "k").0.to_vec(),
        },
    ];
    m.ops = ops;
    m
}

fn write_op(name: &str) -> Op {
    Op {
        op_type: OpType::WRITE,
        particle_type: 1,
        name: name.as_bytes().to_vec(),
        value: 1i64.to_be_bytes().to_vec(),
    }
}

/// Sends one message and returns the reply's result code.
fn result_of(port: u16, msg: &Message) -> u8 {
    let mut s = connect(port);
    s.write_all(&frame(MsgType::Message, &msg.encode()))
        .unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    let h = ProtoHeader::decode(&head).unwrap();
    let mut body = vec![0u8; h.body_bytes as usize];
    s.read_exact(&mut body).unwrap();
    Message::decode(&body).unwrap().header.result_code
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let port = server.port;
    // A healthy connection opened before the abuse must keep working after it.
    let mut healthy = connect(port);
    let node_req = frame(MsgType::Info, b"node\n");

    let good_body = keyed("test", vec![write_op("a")]).encode();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad version", [&[3u8, 3, 0, 0, 0, 0, 0, 0][..]].concat()),
        ("bad type 0", vec![2, 0, 0, 0, 0, 0, 0, 0]),
        ("bad type 9", vec![2, 9, 0, 0, 0, 0, 0, 1, 0]),
        ("over 128 MiB", vec![2, 3, 0, 0, 0x08, 0, 0, 1]),
        ("truncated header", vec![2, 3, 0]),
        ("body shorter than announced", {
            let mut f = frame(MsgType::Message, &good_body);
            f.truncate(f.len() - 3);
            f
        }),
        ("compressed garbage", frame(MsgType::Compressed, &[0; 16])),
    ];
    // A field length running past the message.
    let mut bad_field = good_body.clone();
    bad_field[22 + 3] = 0xF0;
    cases.push(("field past end", frame(MsgType::Message, &bad_field)));
    // An op length running past the message.
    let mut bad_op = good_body.clone();
    let op_at = good_body.len() - (8 + 1 + 8);
    bad_op[op_at + 2] = 0x7F;
    cases.push(("op past end", frame(MsgType::Message, &bad_op)));
    // A header size byte other than 22.
    let mut bad_hdr = good_body.clone();
    bad_hdr[0] = 30;
    cases.push(("header size", frame(MsgType::Message, &bad_hdr)));

    for (name, bytes) in &cases {
        assert!(
            closed_after(port, bytes),
            "{name}: connection should be closed"
        );
        healthy.write_all(&node_req).unwrap();
        let mut head = [0u8; 8];
        healthy.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; (u64::from_be_bytes(head) & 0xFFFF_FFFF_FFFF) as usize];
        healthy.read_exact(&mut body).unwrap();
        assert!(body.starts_with(b"node\t"), "{name}: node stopped serving");
    }
    let log = server.log_text();
    assert!(
        log.contains("closing connection: malformed frame header"),
        "{log}"
    );
    assert!(
        log.contains("closing connection: malformed message"),
        "{log}"
    );
    assert!(
        log.contains("closing connection: frame body cut short"),
        "{log}"
    );
}

#[test]
fn bad_requests_get_result_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 1, &[]);
    let port = server.port;

    assert_eq!(result_of(port, &keyed("test", vec![write_op("a")])), 0);
    // Unknown op type.
    let mut unknown_op = write_op("a");
    unknown_op.op_type = OpType(99);
    assert_eq!(result_of(port, &keyed("test", vec![unknown_op])), 4);
    // Unknown field type.
    let mut m = keyed("test", vec![write_op("a")]);
    m.fields.push(Field {
        field_type: FieldType(99),
        data: vec![1],
    });
    assert_eq!(result_of(port, &m), 4);
    // Bin name over 15 bytes.
    assert_eq!(
        result_of(port, &keyed("test", vec![write_op("sixteen_chars_xx")])),
        21
    );
    // Unknown namespace.
    assert_eq!(result_of(port, &keyed("nope", vec![write_op("a")])), 20);
    // No ops in a write, a read op without the READ flag, a digest of the wrong length.
    assert_eq!(result_of(port, &keyed("test", vec![])), 4);
    let read = Op {
        op_type: OpType::READ,
        particle_type: 0,
        name: b"a".to_vec(),
        value: vec![],
    };
    assert_eq!(
        result_of(port, &keyed("test", vec![write_op("a"), read])),
        4
    );
    let mut m = keyed("test", vec![write_op("a")]);
    m.fields[1].data.pop();
    assert_eq!(result_of(port, &m), 4);
    // Out-of-range TTL.
    let mut m = keyed("test", vec![write_op("a")]);
    m.header.record_ttl = 315_360_001;
    assert_eq!(result_of(port, &m), 4);
    // A CDT op whose payload is not msgpack, one with an unknown op code, and a string op
    // (server 8.2's, not supported).
    let mut cdt = write_op("a");
    cdt.op_type = OpType::CDT_MODIFY;
    assert_eq!(result_of(port, &keyed("test", vec![cdt.clone()])), 4);
    cdt.value = vec![0x91, 0x3f];
    assert_eq!(result_of(port, &keyed("test", vec![cdt.clone()])), 4);
    cdt.op_type = OpType(18);
    assert_eq!(result_of(port, &keyed("test", vec![cdt])), 16);
    // Filter expressions: a literal true lets the write through, false filters it out (27),
    // and malformed, ill-typed (a geo comparison of two booleans) or unknown ops get 4, as
    // Aerospike CE 8.1.2 refuses them when it builds the expression.
    for (exp, want) in [
        (vec![0xc3], 0),
        (vec![0xc2], 27),
        (vec![0x91], 4),
        (vec![0x93, 0x01, 0x08], 4),
        (vec![0x93, 0x08, 0xc3, 0xc3], 4),
        (vec![0x91, 0x5a], 4),
    ] {
        let mut m = keyed("test", vec![write_op("a")]);
        m.fields.push(Field {
            field_type: FieldType::FILTER_EXP,
            data: exp,
        });
        assert_eq!(result_of(port, &m), want);
    }
    // A record over max-record-size.
    let mut big = write_op("a");
    big.particle_type = 4;
    big.value = vec![0; 2 * 1024 * 1024];
    assert_eq!(result_of(port, &keyed("test", vec![big])), 13);
    // A read of a missing record, with neither READ nor WRITE set.
    let mut m = keyed("test", vec![]);
    m.header.info2 = 0;
    m.header.info1 = info1::READ | info1::GET_ALL;
    m.fields[1].data = Digest::of_string("demo", "missing").0.to_vec();
    assert_eq!(result_of(port, &m), 2);
    m.header.info1 = 0;
    assert_eq!(result_of(port, &m), 4);
    // More than 32,767 bins in one record: refused, whether in one write or by merging two.
    let many = |prefix: char, n: usize| -> Vec<Op> {
        (0..n).map(|i| write_op(&format!("{prefix}{i}"))).collect()
    };
    let mut m = keyed("test", many('a', 32_768));
    m.fields[1].data = Digest::of_string("demo", "wide").0.to_vec();
    assert_eq!(result_of(port, &m), 4);
    m.ops = many('a', 30_000);
    assert_eq!(result_of(port, &m), 0);
    m.ops = many('b', 30_000);
    assert_eq!(
        result_of(port, &m),
        4,
        "merged record would hold 60,000 bins"
    );
    // The record written first is untouched by all of the failures.
    let mut m = keyed("test", vec![]);
    m.header.info2 = 0;
    m.header.info1 = info1::READ | info1::GET_ALL;
    assert_eq!(result_of(port, &m), 0);
}

/// A client that sets COMPRESS_RESPONSE gets a type-4 reply for a large record, which inflates
/// to the same message; a small reply, or one nobody asked to compress, stays type 3.
#[test]
fn replies_are_compressed_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let mut big = write_op("a");
    big.particle_type = 3;
    big.value = vec![b'x'; 4000];
    assert_eq!(result_of(server.port, &keyed("test", vec![big])), 0);
    let get = |info1_bits: u8| {
        let mut m = keyed("test", vec![]);
        m.header.info2 = 0;
        m.header.info1 = info1_bits;
        let mut s = connect(server.port);
        s.write_all(&frame(MsgType::Message, &m.encode())).unwrap();
        let mut head = [0u8; 8];
        s.read_exact(&mut head).unwrap();
        let h = ProtoHeader::decode(&head).unwrap();
        let mut body = vec![0u8; h.body_bytes as usize];
        s.read_exact(&mut body).unwrap();
        (h.msg_type, body)
    };
    let (t, body) = get(info1::READ | info1::GET_ALL | info1::COMPRESS_RESPONSE);
    assert_eq!(t, MsgType::Compressed);
    assert!(
        body.len() < 1000,
        "4000 x's compress well: {} bytes",
        body.len()
    );
    let msg = Message::decode(&apogee_wire::compression::inflate_message(&body).unwrap()).unwrap();
    assert_eq!(msg.header.result_code, 0);
    assert_eq!(msg.ops[0].value, vec![b'x'; 4000]);
    let (t, _) = get(info1::READ | info1::GET_ALL);
    assert_eq!(t, MsgType::Message);
    let (t, _) = get(info1::READ | info1::GET_NOBINDATA | info1::COMPRESS_RESPONSE);
    assert_eq!(
        t,
        MsgType::Message,
        "a header-only reply is too small to compress"
    );
}
