//! Where a request's answer goes: the client's socket, one frame at a time.
//!
//! A request that answers many frames (batch, scan) hands each one to the sink as it is ready
//! and waits for the write to finish before producing more, so a slow reader slows its
//! producers down (back-pressure through the bounded channels feeding the sink) instead of
//! piling frames up in memory. Owns the socket's write side while a request is answered; it
//! must never buffer more than the frame it is writing, and never write while another core is
//! still writing a reply to the same socket ([`super::direct`]).

use std::os::fd::RawFd;

use apogee_wire::compression::{deflate_frame, COMPRESS_REPLY_BYTES_MIN};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::direct::Target;

/// What a connection keeps between requests for replies written by other cores.
#[derive(Default)]
pub struct Elsewhere {
    /// The socket, for other cores to write replies to (a node of several cores).
    pub socket: Option<RawFd>,
    /// The note of a reply another core is writing: an empty frame once it is written; the
    /// channel closed without one when the write failed.
    pub pending: Option<flume::Receiver<Vec<u8>>>,
}

impl Elsewhere {
    /// Waits for the note of a reply another core is writing, if any: `Err` when that write
    /// failed (the connection is over). The connection must call this before it closes its
    /// socket, so no other core ever writes to a descriptor number reused meanwhile.
    pub async fn settle(&mut self) -> std::io::Result<()> {
        match self.pending.take() {
            None => Ok(()),
            Some(note) => note.recv_async().await.map(drop).map_err(|_| {
                std::io::Error::other("the core writing this connection's reply could not")
            }),
        }
    }
}

/// The write side of one connection, for one request at a time.
pub struct ReplySink<'a> {
    stream: &'a mut TcpStream,
    elsewhere: &'a mut Elsewhere,
    /// Whether the request asked for a compressed reply (type 4).
    compress: bool,
}

impl<'a> ReplySink<'a> {
    pub fn new(stream: &'a mut TcpStream, elsewhere: &'a mut Elsewhere) -> ReplySink<'a> {
        ReplySink {
            stream,
            elsewhere,
            compress: false,
        }
    }

    /// Starts a request's answer: whether its single reply frame may be compressed.
    pub fn begin(&mut self, compress: bool) {
        self.compress = compress;
    }

    /// Waits until the reply another core was writing to this socket is written (`Err`: it
    /// could not be, and the connection is over).
    pub async fn settle(&mut self) -> std::io::Result<()> {
        self.elsewhere.settle().await
    }

    /// How another core may write this request's single reply itself, when it can: `None`
    /// on a node of one core, and while a reply written elsewhere is not settled.
    pub fn direct(&self) -> Option<Target> {
        if self.elsewhere.pending.is_some() {
            return None;
        }
        Some(Target {
            socket: self.elsewhere.socket?,
            compress: self.compress,
        })
    }

    /// The request's reply is being written by another core; `note` says when it is.
    pub fn written_elsewhere(&mut self, note: flume::Receiver<Vec<u8>>) {
        debug_assert!(self.elsewhere.pending.is_none());
        self.elsewhere.pending = Some(note);
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
