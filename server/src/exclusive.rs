//! What only one process may hold: the data directory, each configured data file or device,
//! and the service port.
//!
//! The data directory and every data file are locked with `flock(LOCK_EX)` for the life of
//! the process, so a second `apogee` on the same data refuses to start and names the holder
//! (the lock file records its pid). The service port is bound once, without `SO_REUSEPORT`,
//! before any shard recovers: a second server on the port fails at once, and no other process
//! can join the port's listeners. The socket only starts listening once every shard has
//! recovered ([`PortReservation::listen`]), so no client can connect to a node that is not
//! ready. This module must never remove or truncate data: it only opens, locks and binds.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The file in the data directory that holds its lock and the holder's pid.
pub const LOCK_FILE_NAME: &str = "apogee.lock";
/// Connections the kernel queues for `accept` per listening socket.
const LISTEN_BACKLOG: i32 = 1024;

#[derive(Debug, Error)]
pub enum ExclusiveError {
    #[error("{what} {path} is in use by another apogee process{holder}; each node needs its own data directory and data files")]
    InUse {
        what: &'static str,
        path: String,
        /// " (pid N)" when the holder wrote it.
        holder: String,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: the port is already in use (is another apogee or Aerospike serving it?)")]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Locks held for the life of the process; dropping it releases them.
#[derive(Debug)]
pub struct DataLocks {
    _files: Vec<File>,
}

/// Takes an exclusive, non-blocking `flock` on an open file.
fn flock(file: &File, what: &'static str, path: &Path) -> Result<(), ExclusiveError> {
    // SAFETY: flock on a descriptor this function's caller owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(ExclusiveError::InUse {
            what,
            path: path.display().to_string(),
            holder: String::new(),
        });
    }
    Err(ExclusiveError::Lock {
        path: path.display().to_string(),
        source: e,
    })
}

/// Locks `<data_dir>/apogee.lock` (creating the directory) and writes this process's pid into
/// it, then locks every data file or device in `data_paths`. Paths that do not exist yet are
/// skipped: the engine creates them, and the directory lock already keeps a second default
/// server out.
pub fn lock_data(data_dir: &Path, data_paths: &[PathBuf]) -> Result<DataLocks, ExclusiveError> {
    let lock_path = data_dir.join(LOCK_FILE_NAME);
    let io_error = |source| ExclusiveError::Lock {
        path: lock_path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io_error)?;
    let mut dir_lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error)?;
    if let Err(mut e) = flock(&dir_lock, "data directory", data_dir) {
        if let ExclusiveError::InUse { holder, .. } = &mut e {
            let mut pid = String::new();
            // The holder wrote its pid after locking; at worst this reads nothing.
            let _ = dir_lock.read_to_string(&mut pid);
            if let Ok(pid) = pid.trim().parse::<u32>() {
                *holder = format!(" (pid {pid})");
            }
        }
        return Err(e);
    }
    dir_lock
        .set_len(0)
        .and_then(|()| dir_lock.rewind())
        .and_then(|()| writeln!(dir_lock, "{}", std::process::id()))
        .map_err(io_error)?;
    let mut files = vec![dir_lock];
    for path in data_paths {
        let file = match std::fs::OpenOptions::new().read(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ExclusiveError::Lock {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        flock(&file, "data file", path)?;
        files.push(file);
    }
    Ok(DataLocks { _files: files })
}

/// The service port, bound (so nobody else can take it) but not yet accepting connections.
#[derive(Debug)]
pub struct PortReservation {
    socket: OwnedFd,
    addr: SocketAddr,
}

/// How long a start waits for a port that is in use before refusing. A process killed with
/// SIGKILL has exited before its io_uring rings are torn down (the kernel does that later, in
/// a worker), and a ring with an `accept` in flight keeps the listening socket, and so the
/// port, for a short while after the process is gone: a restart right after a kill must not
/// fail on that.
pub const PORT_IN_USE_WAIT_MS: u64 = 5_000;
/// Pause between two attempts to bind a port in use.
const PORT_RETRY_PAUSE_MS: u64 = 50;

/// Binds the service address without `SO_REUSEPORT`, and with `SO_REUSEADDR` only for the bind
/// itself (so a restart need not wait out its old connections' TIME_WAIT). Binding fails while
/// any other socket holds the port (after waiting up to [`PORT_IN_USE_WAIT_MS`] for it to be
/// released), and no socket can bind it afterwards, listening or not.
pub fn reserve_port(address: IpAddr, port: u16) -> Result<PortReservation, ExclusiveError> {
    let started = std::time::Instant::now();
    let wait = std::time::Duration::from_millis(PORT_IN_USE_WAIT_MS);
    let mut logged = false;
    loop {
        match try_reserve_port(address, port) {
            Err(ExclusiveError::PortInUse { addr }) if started.elapsed() < wait => {
                if !logged {
                    tracing::warn!(%addr, wait_ms = PORT_IN_USE_WAIT_MS,
                        "the service port is in use; waiting for it to be released");
                    logged = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(PORT_RETRY_PAUSE_MS));
            }
            other => return other,
        }
    }
}

/// One attempt of [`reserve_port`].
fn try_reserve_port(address: IpAddr, port: u16) -> Result<PortReservation, ExclusiveError> {
    let addr = SocketAddr::new(address, port);
    let bind_error = |source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            ExclusiveError::PortInUse { addr }
        } else {
            ExclusiveError::Bind { addr, source }
        }
    };
    let domain = if address.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket creation; the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(bind_error(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_reuse_addr(fd, true).map_err(bind_error)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for this address family.
    if unsafe { libc::bind(fd, std::ptr::from_ref(&storage).cast(), len) } != 0 {
        return Err(bind_error(std::io::Error::last_os_error()));
    }
    // Two bound sockets that both allow address reuse may share a port until one listens:
    // with the flag cleared, no other socket can bind the port while this one holds it.
    set_reuse_addr(fd, false).map_err(bind_error)?;
    Ok(PortReservation { socket, addr })
}

fn set_reuse_addr(fd: libc::c_int, on: bool) -> std::io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: setsockopt reads `value` for the length given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The C socket address of `addr`.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

impl PortReservation {
    /// Starts accepting connections: from now on clients can connect.
    pub fn listen(self) -> Result<TcpListener, ExclusiveError> {
        // A listening socket keeps every other bind out by itself. The flag is set again so
        // that the connections it accepts inherit it: without it, their TIME_WAIT remains
        // would keep the next start (after a kill) from binding the port for a minute.
        set_reuse_addr(self.socket.as_raw_fd(), true).map_err(|source| ExclusiveError::Bind {
            addr: self.addr,
            source,
        })?;
        // SAFETY: listen on a bound socket this value owns.
        if unsafe { libc::listen(self.socket.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(ExclusiveError::Bind {
                addr: self.addr,
                source: std::io::Error::last_os_error(),
            });
        }
        let listener = TcpListener::from(self.socket);
        listener
            .set_nonblocking(true)
            .map_err(|source| ExclusiveError::Bind {
                addr: self.addr,
                source,
            })?;
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_a_data_directory_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data(dir.path(), &[]).unwrap();
        let e = lock_data(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("in use by another apogee process"), "{e}");
        assert!(e.contains(&format!("(pid {})", std::process::id())), "{e}");
        drop(first);
        lock_data(dir.path(), &[]).expect("free again once the holder is gone");
    }

    #[test]
    fn data_files_are_locked_and_missing_ones_skipped() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let file = a.path().join("data.dat");
        std::fs::write(&file, b"x").unwrap();
        let missing = a.path().join("later.dat");
        let _held = lock_data(a.path(), &[file.clone(), missing.clone()]).unwrap();
        // Another data directory naming the same file is refused.
        let e = lock_data(b.path(), &[file]).unwrap_err().to_string();
        assert!(e.starts_with("data file "), "{e}");
        lock_data(b.path(), &[missing]).expect("a file that does not exist is not locked");
    }

    #[test]
    fn a_reserved_port_cannot_be_shared_and_refuses_connections_until_listening() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let probe = TcpListener::bind((loopback, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let reserved = reserve_port(loopback, port).unwrap();
        assert!(matches!(
            reserve_port(loopback, port),
            Err(ExclusiveError::PortInUse { .. })
        ));
        assert!(std::net::TcpStream::connect((loopback, port)).is_err());
        let listener = reserved.listen().unwrap();
        let client = std::net::TcpStream::connect((loopback, port)).expect("listening now");
        assert!(matches!(
            reserve_port(loopback, port),
            Err(ExclusiveError::PortInUse { .. })
        ));
        // A connection the server closes first leaves TIME_WAIT on the port; a restart must
        // still bind it.
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(accepted);
        drop(client);
        drop(listener);
        reserve_port(loopback, port).expect("TIME_WAIT does not keep a restart out");
    }
}
