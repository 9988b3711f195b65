"""Replies written by the core that owns a record (server/src/dispatch/direct.rs): on a node
of two cores about half the requests a connection reads are for records of the other core,
whose reply that core writes to the socket itself. Requests sent back to back on one
connection still get their replies in order, and a reply larger than the client's socket
buffer arrives whole while the client is slow to read it."""

import socket
import struct
import time

import aerospike

from conftest import recv_exactly

INFO1_READ, INFO1_GET_ALL = 0x01, 0x02


def get_frame(key):
    digest = aerospike.calc_digest("test", "x", key)
    fields = b"".join(struct.pack(">IB", len(data) + 1, t) + data
                      for t, data in ((0, b"test"), (1, b"x"), (4, digest)))
    header = struct.pack(">BBBBBBIIIHH", 22, INFO1_READ | INFO1_GET_ALL, 0, 0, 0, 0, 0, 0,
                         5000, 3, 0)
    body = header + fields
    return struct.pack(">Q", (2 << 56) | (3 << 48) | len(body)) + body


def read_reply(sock):
    """One reply: (result code, {bin name: (particle type, value bytes)})."""
    size = struct.unpack(">Q", recv_exactly(sock, 8))[0] & 0xFFFFFFFFFFFF
    body = recv_exactly(sock, size)
    (_, _, _, _, _, result, _, _, _, n_fields, n_ops) = struct.unpack(">BBBBBBIIIHH", body[:22])
    pos, bins = 22, {}
    for _ in range(n_fields):
        pos += 4 + struct.unpack(">I", body[pos:pos + 4])[0]
    for _ in range(n_ops):
        (op_sz,) = struct.unpack(">I", body[pos:pos + 4])
        particle, name_len = body[pos + 5], body[pos + 7]
        name = body[pos + 8:pos + 8 + name_len].decode()
        bins[name] = (particle, body[pos + 8 + name_len:pos + 4 + op_sz])
        pos += 4 + op_sz
    assert pos == len(body)
    return result, bins


def test_requests_sent_back_to_back_are_answered_in_order(server, client):
    n = 64
    for i in range(n):
        client.put(("test", "x", i), {"v": i})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"".join(get_frame(i) for i in range(n)))
            got = []
            for _ in range(n):
                result, bins = read_reply(s)
                assert result == 0
                got.append(struct.unpack(">q", bins["v"][1])[0])
            assert got == list(range(n))
    # Some of those crossed cores (the point of the test), and the node still serves.
    assert client.get(("test", "x", 0))[2] == {"v": 0}


def test_a_reply_larger_than_the_clients_socket_buffer_arrives_whole(server, client):
    n, size = 8, 600_000
    for i in range(n):
        client.put(("test", "x", f"big{i}"), {"b": bytes([i + 1]) * size})
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer: the server's first send cannot take a whole reply.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", server.port))
    with s:
        s.sendall(b"".join(get_frame(f"big{i}") for i in range(n)))
        time.sleep(0.3)  # a slow reader: the replies wait on a full socket
        for i in range(n):
            result, bins = read_reply(s)
            assert result == 0
            assert bins["b"][1] == bytes([i + 1]) * size, f"reply {i}"
    assert client.get(("test", "x", "big0"))[2]["b"] == bytes([1]) * size
