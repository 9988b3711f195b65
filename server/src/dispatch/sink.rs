//! Where a request's answer goes: the client's socket, one frame at a time.
//!
//! A request that answers many frames (batch, scan) hands each one to the sink as it is ready
//! and waits for the write to finish before producing more, so a slow reader slows its
//! producers down (back-pressure through the bounded channels feeding the sink) instead of
//! piling frames up in memory. Owns the socket's write side while a request is answered; it
//! must never buffer more than the frame it is writing.

use apogee_wire::compression::{deflate_frame, COMPRESS_REPLY_BYTES_MIN};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

/// The write side of one connection, for one request at a time.
pub struct ReplySink<'a> {
    stream: &'a mut TcpStream,
    /// Whether the request asked for a compressed reply (type 4).
    compress: bool,
}

impl<'a> ReplySink<'a> {
    pub fn new(stream: &'a mut TcpStream) -> ReplySink<'a> {
        ReplySink {
            stream,
            compress: false,
        }
    }

    /// Starts a request's answer: whether its single reply frame may be compressed.
    pub fn begin(&mut self, compress: bool) {
        self.compress = compress;
    }

    /// Writes one complete frame, compressed when the client asked for it and it is worth
    /// it. Only single-frame answers use this: Aerospike CE never compresses replies, and
    /// multi-frame streams go as they are (both clients accept either, spec §1.5).
    pub async fn reply(&mut self, frame: Vec<u8>) -> std::io::Result<()> {
        let frame = if self.compress && frame.len() > COMPRESS_REPLY_BYTES_MIN {
            deflate_frame(&frame)
        } else {
            frame
        };
        self.send(&frame).await
    }

    /// The client's address as `query-show` lists it (`host+port`).
    pub fn peer(&self) -> String {
        self.stream
            .peer_addr()
            .map(|a| format!("{}+{}", a.ip(), a.port()))
            .unwrap_or_default()
    }

    /// Writes one frame of a stream as it is, returning once the socket took all of it.
    pub async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(frame).await
    }
}
