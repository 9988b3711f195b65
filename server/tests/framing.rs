//! Requests however the bytes arrive: several requests in one write (the server reads ahead
//! and must keep the bytes past the first request for the next), a request cut into pieces
//! sent apart, and a large request (past the first read) followed at once by a small one —
//! each answered, in order, with what it asked.

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
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn keyed(key: &str, info1: u8, info2: u8, ops: Vec<Op>) -> Vec<u8> {
    let mut m = Message::default();
    m.header.info1 = info1;
    m.header.info2 = info2;
    m.fields = vec![
        Field {
            field_type: FieldType::NAMESPACE,
            data: b"test".to_vec(),
        },
        Field {
            field_type: FieldType::DIGEST,
            data: Digest::of_string("f", key).0.to_vec(),
        },
    ];
    m.ops = ops;
    frame(MsgType::Message, &m.encode())
}

fn put(key: &str, value: &[u8]) -> Vec<u8> {
    let op = Op {
        op_type: OpType::WRITE,
        particle_type: 4, // blob
        name: b"v".to_vec(),
        value: value.to_vec(),
    };
    keyed(key, 0, info2::WRITE, vec![op])
}

fn get(key: &str) -> Vec<u8> {
    keyed(key, info1::READ | info1::GET_ALL, 0, vec![])
}

/// The next reply on `s`.
fn reply(s: &mut TcpStream) -> Message {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    let h = ProtoHeader::decode(&head).unwrap();
    let mut body = vec![0u8; h.body_bytes as usize];
    s.read_exact(&mut body).unwrap();
    Message::decode(&body).unwrap()
}

fn value_of(m: &Message) -> &[u8] {
    assert_eq!(m.header.result_code, 0, "{m:?}");
    &m.ops
        .iter()
        .find(|op| op.name == b"v")
        .expect("bin v")
        .value
}

#[test]
fn requests_are_answered_in_order_however_their_bytes_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let mut s = connect(server.port);

    // Three requests in one write: two puts of one key, then a get that must see the second.
    let mut bytes = put("a", b"one");
    bytes.extend(put("a", b"two"));
    bytes.extend(get("a"));
    s.write_all(&bytes).unwrap();
    assert_eq!(reply(&mut s).header.result_code, 0);
    assert_eq!(reply(&mut s).header.result_code, 0);
    assert_eq!(value_of(&reply(&mut s)), b"two");

    // One request cut into three pieces sent apart, the cut inside its header first.
    let bytes = put("b", &[7u8; 3000]);
    for piece in [&bytes[..5], &bytes[5..1000], &bytes[1000..]] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(reply(&mut s).header.result_code, 0);

    // A 200 KB put (past the first read) with a get of it in the same write, then a get
    // split so that the next request's header straddles two writes.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = put("c", &big);
    bytes.extend(get("c"));
    let next = get("b");
    bytes.extend(&next[..3]);
    s.write_all(&bytes).unwrap();
    assert_eq!(reply(&mut s).header.result_code, 0);
    assert_eq!(value_of(&reply(&mut s)), &big[..]);
    std::thread::sleep(Duration::from_millis(30));
    s.write_all(&next[3..]).unwrap();
    assert_eq!(value_of(&reply(&mut s)), &[7u8; 3000][..]);

    // Many small requests in one write: every reply, in order.
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        bytes.extend(put(&format!("m{i}"), &i.to_be_bytes()));
        bytes.extend(get(&format!("m{i}")));
    }
    s.write_all(&bytes).unwrap();
    for i in 0..200u32 {
        assert_eq!(reply(&mut s).header.result_code, 0, "put {i}");
        assert_eq!(value_of(&reply(&mut s)), i.to_be_bytes(), "get {i}");
    }
}
