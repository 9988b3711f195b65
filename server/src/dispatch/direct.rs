//! Replies the owning core writes to the client's socket itself. A keyed request that lands on
//! a core that does not own its record crosses to the owner; instead of sending the reply
//! back for the receiving core to write (a second cross-core hand-off, which wakes that core
//! when it sleeps), the owner writes it to the connection's socket and leaves a note that it
//! did. The receiving core reads that note before it answers anything else on the connection,
//! and before it closes the connection, so replies keep their order and the descriptor stays
//! the connection's while the owner writes to it; the client almost always has its reply, and
//! the note is there, before its next request arrives.
//!
//! Owns the owner's side of the write. It must never leave a reply half written and say it
//! is written: what one non-blocking send could not take is finished by a write that waits
//! for the socket, and a write that fails shuts the socket down (the client sees the
//! connection end, never a torn reply followed by another) and leaves no note, which the
//! receiving core takes as the connection's end.

use std::os::fd::{FromRawFd, RawFd};
use std::time::Instant;

use apogee_wire::compression::{deflate_frame, COMPRESS_REPLY_BYTES_MIN};
use futures_lite::AsyncWriteExt;

use crate::latency;

/// The client's socket, for another core to write a reply to.
pub struct Target {
    /// The connection's descriptor: its core keeps it open until the owner's note arrives.
    pub socket: RawFd,
    /// Whether the client asked for a compressed reply.
    pub compress: bool,
}

/// Where and how the owning core writes a reply itself.
pub struct DirectReply {
    pub target: Target,
    /// When the receiving core read the request, and what kind it is: the owner records the
    /// request's latency once its reply is written.
    pub started: Instant,
    pub kind: latency::Kind,
}

/// Why a reply written by the owning core did not reach the socket whole; the socket has been
/// shut down.
#[derive(Debug)]
pub struct WriteFailed;

impl DirectReply {
    /// Writes `frame` (compressed when asked and worth it) to the client's socket, all of it,
    /// or shuts the socket down and says so.
    pub async fn write(&self, frame: Vec<u8>) -> Result<(), WriteFailed> {
        let frame = if self.target.compress && frame.len() > COMPRESS_REPLY_BYTES_MIN {
            deflate_frame(&frame)
        } else {
            frame
        };
        let fd = self.target.socket;
        // SAFETY: `frame` is a valid buffer of `frame.len()` bytes, and `fd` is open: the
        // connection's core closes it only after this write's note.
        let sent = unsafe {
            libc::send(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        let sent = match usize::try_from(sent) {
            Ok(n) => n,
            Err(_) => match std::io::Error::last_os_error().kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => 0,
                _ => return Err(shut_down(fd)),
            },
        };
        if sent == frame.len() {
            return Ok(());
        }
        // The socket's send buffer is full (a large reply, a slow reader): the rest waits for
        // room on a stream of this core's own, over a duplicate of the descriptor (the
        // stream closes what it owns).
        // SAFETY: dup of a descriptor that is open (above).
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return Err(shut_down(fd));
        }
        // SAFETY: `dup` is a fresh descriptor of a connected TCP socket, owned by the stream.
        let mut stream = unsafe { glommio::net::TcpStream::from_raw_fd(dup) };
        match stream.write_all(&frame[sent..]).await {
            Ok(()) => Ok(()),
            Err(_) => Err(shut_down(fd)),
        }
    }
}

/// Ends the connection both ways after a reply could not be written whole, so the client
/// never reads another reply after a torn one.
fn shut_down(fd: RawFd) -> WriteFailed {
    // SAFETY: shutdown of an open descriptor; it closes nothing.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    WriteFailed
}
