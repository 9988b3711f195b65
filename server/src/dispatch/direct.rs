//! Replies the owning core writes to the client's socket itself. A keyed request that lands on
//! a core that does not own its record crosses to the owner; instead of sending the reply
//! back for the receiving core to write (a second cross-core hand-off, which wakes that core
//! when it sleeps), the owner writes it to the connection's socket and leaves a note that it
//! did. The receiving core reads that note before it answers anything else on the connection,
//! so replies keep their order; the client almost always has its reply, and the note is
//! there, before its next request arrives.
//!
//! Owns the owner's side of the write. It must never write to a socket without holding its
//! descriptor (a duplicate shared by the connection, so the number cannot be reused by another
//! connection meanwhile), and never leave a reply half written: what one non-blocking send
//! could not take is finished by a write that waits for the socket.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use apogee_wire::compression::{deflate_frame, COMPRESS_REPLY_BYTES_MIN};
use futures_lite::AsyncWriteExt;

use crate::latency;

/// The client's socket, for another core to write a reply to.
pub struct Target {
    /// A duplicate of the connection's socket, alive while any core may still write to it.
    pub socket: Arc<OwnedFd>,
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

impl DirectReply {
    /// Writes `frame` (compressed when asked and worth it) to the client's socket. Returns
    /// once all of it is written or the socket failed; a failed socket is the receiving
    /// core's to notice (its next read fails and it closes the connection).
    pub async fn write(&self, frame: Vec<u8>) {
        let frame = if self.target.compress && frame.len() > COMPRESS_REPLY_BYTES_MIN {
            deflate_frame(&frame)
        } else {
            frame
        };
        let fd = self.target.socket.as_raw_fd();
        // SAFETY: `frame` is a valid buffer of `frame.len()` bytes and `fd` stays open while
        // `self.target.socket` is held.
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
                _ => return,
            },
        };
        if sent == frame.len() {
            return;
        }
        // The socket's send buffer is full (a large reply, a slow reader): the rest waits for
        // room on a stream of this core's own over another duplicate of the descriptor.
        // SAFETY: dup of an open descriptor; the new one is owned by the stream built on it.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return;
        }
        let mut stream = unsafe { glommio::net::TcpStream::from_raw_fd(dup) };
        let _ = stream.write_all(&frame[sent..]).await;
    }
}

/// A duplicate of `fd` to share with the cores that may write replies to it.
pub fn share(fd: &impl AsRawFd) -> Option<Arc<OwnedFd>> {
    // SAFETY: dup of an open descriptor; the result is owned by the `OwnedFd`.
    let dup = unsafe { libc::dup(fd.as_raw_fd()) };
    (dup >= 0).then(|| Arc::new(unsafe { OwnedFd::from_raw_fd(dup) }))
}
