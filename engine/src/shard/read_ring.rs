//! Record reads through an io_uring of the shard's own, beside glommio's reactor.
//!
//! A glommio read waits in the executor's submission queue until the executor next polls its
//! reactor, and its completion is handed back a batch at a time: a bare glommio loop of 32
//! random 4 KiB reads reached 0.78 of fio's IOPS on the development machine, this ring 0.85
//! (`docs/benchmarks.md`). Each read is submitted at once, hard-linked to a 1-byte write to
//! one end of a socket pair; a task reads the other end through glommio (so the executor
//! sleeps as usual) and, when woken, reaps every completion and wakes the readers.
//!
//! Owns the ring and the buffer of every read in flight: a buffer is freed only once the
//! kernel reported the read done, even when the reading future was dropped before that, and
//! dropping the ring first waits for every read in flight. Must never block the thread except
//! in that drop. The files read must outlive the ring (the owner drops the ring first).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use futures_lite::AsyncReadExt;
use glommio::sync::{Semaphore, StaticPermit};
use io_uring::{opcode, squeue, types, IoUring};

use crate::block::{page_bytes, Page, IO_ALIGN_BYTES};

/// Reads in flight at most: two ring entries each (the read and its notice). Also bounds the
/// notices waiting in the socket pair between two reaps (a read's permit is given back only
/// once its completion is reaped, abandoned or not), well within a socket buffer, so a notice
/// never blocks.
const READS_IN_FLIGHT_MAX: usize = 128;
const RING_ENTRIES: u32 = 2 * READS_IN_FLIGHT_MAX as u32;
/// The `user_data` of the notice writes, which need no handling.
const NOTICE: u64 = u64::MAX;
/// What every notice writes.
static NOTICE_BYTE: [u8; 1] = [1];

enum Slot {
    Free,
    /// Submitted; the buffer belongs to the kernel until the completion is reaped.
    InFlight {
        buf: Box<[Page]>,
        waker: Option<Waker>,
        abandoned: bool,
        /// Given back when the slot is freed, so an abandoned read still counts.
        _permit: StaticPermit,
    },
    Done {
        buf: Box<[Page]>,
        result: i32,
        _permit: StaticPermit,
    },
}

struct Inner {
    /// Declared first, so dropped first; its `Drop` (below) waits for the reads in flight.
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The end the kernel writes notices to.
    notice_tx: UnixStream,
}

/// One shard's reader. `!Send`: lives on its core.
pub struct ReadRing {
    inner: Rc<RefCell<Inner>>,
    permits: Rc<Semaphore>,
}

/// The bytes of one read.
pub struct RingBytes {
    buf: Box<[Page]>,
    skip: usize,
    len: usize,
}

impl std::ops::Deref for RingBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &page_bytes(&self.buf)[self.skip..self.skip + self.len]
    }
}

impl ReadRing {
    /// A ring and the task that reaps its completions (spawned on the current executor).
    pub fn new() -> io::Result<ReadRing> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let (notice_tx, notice_rx) = UnixStream::pair()?;
        // SAFETY: the descriptor was just created by `pair` and is owned by nothing else;
        // glommio's stream takes it over.
        let mut notice_rx =
            unsafe { glommio::net::UnixStream::from_raw_fd(notice_rx.into_raw_fd()) };
        let inner = Rc::new(RefCell::new(Inner {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            notice_tx,
        }));
        let weak: Weak<RefCell<Inner>> = Rc::downgrade(&inner);
        glommio::spawn_local(async move {
            let mut notices = [0u8; 256];
            loop {
                let got = notice_rx.read(&mut notices).await;
                // Ends when the ring is dropped (its end of the pair closes: a read of 0).
                let Some(inner) = weak.upgrade() else { break };
                inner.borrow_mut().reap();
                drop(inner);
                match got {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        // Never seen; if the pair ever fails, reads are still reaped, once a
                        // millisecond instead of at once, rather than never.
                        tracing::warn!(error = %e, "read ring notices failed; polling instead");
                        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
            }
        })
        .detach();
        Ok(ReadRing {
            inner,
            permits: Rc::new(Semaphore::new(READS_IN_FLIGHT_MAX as u64)),
        })
    }

    /// `len` bytes at `offset` of `fd` (opened with O_DIRECT, whose device reads in units of
    /// `align` bytes, a power of two from 512 to 4096): the read covers the aligned units
    /// around them (a 1 KiB record across a 4 KiB boundary costs 1.5 KiB, not 8, on a
    /// 512-byte device). Fewer bytes come back past the end of the file.
    pub async fn read(
        &self,
        fd: RawFd,
        offset: u64,
        len: usize,
        align: u64,
    ) -> io::Result<RingBytes> {
        assert!(
            align.is_power_of_two() && (512..=IO_ALIGN_BYTES as u64).contains(&align),
            "O_DIRECT unit {align}"
        );
        let permit = self
            .permits
            .acquire_static_permit(1)
            .await
            .expect("read permits are never closed");
        let start = offset / align * align;
        let skip = (offset - start) as usize;
        let bytes = (skip + len).div_ceil(align as usize) * align as usize;
        let id = self.inner.borrow_mut().submit(fd, start, bytes, permit)?;
        // Marks the read abandoned if this future is dropped before it completes, so the
        // reaper frees the buffer once the kernel is done with it.
        let guard = Abandon {
            inner: &self.inner,
            id,
        };
        let (buf, result) = futures_lite::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[id];
            match slot {
                Slot::InFlight { waker, .. } => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Slot::Done { .. } => {
                    let Slot::Done { buf, result, .. } = std::mem::replace(slot, Slot::Free) else {
                        unreachable!("matched Done")
                    };
                    inner.free.push(id);
                    Poll::Ready((buf, result))
                }
                Slot::Free => unreachable!("a read's slot is freed only by the read"),
            }
        })
        .await;
        std::mem::forget(guard);
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        let got = (result as usize).saturating_sub(skip).min(len);
        Ok(RingBytes {
            buf,
            skip,
            len: got,
        })
    }
}

struct Abandon<'a> {
    inner: &'a Rc<RefCell<Inner>>,
    id: usize,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        match &mut inner.slots[self.id] {
            Slot::InFlight { abandoned, .. } => *abandoned = true,
            Slot::Done { .. } => {
                inner.slots[self.id] = Slot::Free;
                inner.free.push(self.id);
            }
            Slot::Free => {}
        }
    }
}

impl Inner {
    /// Submits a read of `bytes` bytes at `start` of `fd` (both aligned for O_DIRECT) and its
    /// notice; returns its slot. The buffer is whole pages (page-aligned memory).
    fn submit(
        &mut self,
        fd: RawFd,
        start: u64,
        bytes: usize,
        permit: StaticPermit,
    ) -> io::Result<usize> {
        let mut buf: Box<[Page]> = bytemuck::zeroed_slice_box(bytes.div_ceil(IO_ALIGN_BYTES));
        let bytes = u32::try_from(bytes).expect("a record read is under 4 GiB");
        let read = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr().cast::<u8>(), bytes)
            .offset(start)
            .build()
            .flags(squeue::Flags::IO_HARDLINK);
        let notice = opcode::Write::new(
            types::Fd(self.notice_tx.as_raw_fd()),
            NOTICE_BYTE.as_ptr(),
            1,
        )
        .build()
        .user_data(NOTICE);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(Slot::Free);
                self.slots.len() - 1
            }
        };
        let read = read.user_data(id as u64);
        // SAFETY: the read's buffer moves into the slot below and stays there (a boxed
        // slice: its pages do not move) until the reaper has seen the read's completion; the
        // notice writes from a static. `fd` stays open while the ring lives (the owner drops
        // the ring first) and the ring waits for reads in flight when dropped.
        let pushed = unsafe {
            let mut sq = self.ring.submission();
            sq.push(&read).is_ok() && sq.push(&notice).is_ok()
        };
        assert!(
            pushed,
            "the ring has room: at most {READS_IN_FLIGHT_MAX} reads are in flight"
        );
        self.slots[id] = Slot::InFlight {
            buf,
            waker: None,
            abandoned: false,
            _permit: permit,
        };
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(id),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The entries stay in the submission queue and go with the next submit
                    // (or the drop's): the buffer must outlive them, so the read is
                    // abandoned, not freed.
                    if let Slot::InFlight { abandoned, .. } = &mut self.slots[id] {
                        *abandoned = true;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Hands every completed read to its reader (or frees an abandoned one's buffer).
    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (id, result) in done {
            if id == NOTICE {
                continue;
            }
            let slot = &mut self.slots[id as usize];
            let Slot::InFlight {
                waker, abandoned, ..
            } = slot
            else {
                unreachable!("a completion for a read not in flight")
            };
            if *abandoned {
                *slot = Slot::Free;
                self.free.push(id as usize);
                continue;
            }
            let waker = waker.take();
            let Slot::InFlight { buf, _permit, .. } = std::mem::replace(slot, Slot::Free) else {
                unreachable!("matched InFlight")
            };
            *slot = Slot::Done {
                buf,
                result,
                _permit,
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl Drop for Inner {
    /// Waits for every read in flight: their buffers are freed right after.
    fn drop(&mut self) {
        loop {
            self.reap();
            let in_flight = self
                .slots
                .iter()
                .any(|s| matches!(s, Slot::InFlight { .. }));
            if !in_flight {
                break;
            }
            if self.ring.submit_and_wait(1).is_err() {
                // Nothing more can be learnt from a failing ring; leak the buffers rather
                // than free memory the device may still write.
                for slot in &mut self.slots {
                    if let Slot::InFlight { buf, .. } = std::mem::replace(slot, Slot::Free) {
                        std::mem::forget(buf);
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    /// A file of `pages` pages whose byte `i` is `i % 251`, opened with O_DIRECT, and the
    /// O_DIRECT unit of its device (512 on most disks, 4096 on some).
    struct Patterned {
        dir: tempfile::TempDir,
        file: std::fs::File,
        bytes: Vec<u8>,
        unit: u64,
    }

    async fn patterned(pages: usize) -> Patterned {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..pages * IO_ALIGN_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let dma = glommio::io::DmaFile::open(&path).await.unwrap();
        let unit = dma.align_up(1);
        dma.close().await.unwrap();
        Patterned {
            dir,
            file,
            bytes,
            unit,
        }
    }

    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::default()
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn reads_return_the_bytes_asked_for_and_fewer_past_the_end() {
        on_executor(|| async {
            let p = patterned(8).await;
            let (fd, bytes) = (p.file.as_raw_fd(), &p.bytes);
            let ring = ReadRing::new().unwrap();
            for (at, len) in [
                (0, 10),
                (4090, 20),
                (5000, 8192),
                (100, 1),
                (8 * 4096 - 7, 7),
            ] {
                let got = ring.read(fd, at as u64, len, p.unit).await.unwrap();
                assert_eq!(&got[..], &bytes[at..at + len], "read of {len} at {at}");
            }
            let tail = ring.read(fd, 8 * 4096 - 5, 100, 4096).await.unwrap();
            assert_eq!(
                &tail[..],
                &bytes[8 * 4096 - 5..],
                "stops at the end of the file"
            );
            let past = ring.read(fd, 9 * 4096, 10, 4096).await.unwrap();
            assert!(past.is_empty());
        });
    }

    #[test]
    fn many_reads_in_flight_and_abandoned_ones_keep_the_ring_sound() {
        on_executor(|| async {
            let p = patterned(64).await;
            let fd = p.file.as_raw_fd();
            let ring = Rc::new(ReadRing::new().unwrap());
            // Reads dropped right after submission: their buffers stay with the kernel
            // until it is done, and their slots come back.
            for i in 0..50u64 {
                let read = ring.read(fd, i * 1000, 100, 4096);
                futures_lite::pin!(read);
                assert!(futures_lite::future::poll_once(&mut read).await.is_none());
            }
            // More readers than reads allowed in flight: the rest wait their turn.
            let readers: Vec<_> = (0..3 * READS_IN_FLIGHT_MAX)
                .map(|i| {
                    let (ring, unit) = (ring.clone(), p.unit);
                    glommio::spawn_local(async move {
                        let at = (i * 997) % (63 * IO_ALIGN_BYTES);
                        (
                            at,
                            ring.read(fd, at as u64, 300, unit).await.unwrap().to_vec(),
                        )
                    })
                })
                .collect();
            for r in readers {
                let (at, got) = r.await;
                assert_eq!(got, &p.bytes[at..at + 300]);
            }
            assert_eq!(
                ring.permits.available(),
                READS_IN_FLIGHT_MAX as u64,
                "abandoned reads gave their permits back once reaped"
            );
            let inner = ring.inner.borrow();
            assert!(inner.slots.len() <= READS_IN_FLIGHT_MAX);
            assert!(inner.slots.iter().all(|s| !matches!(s, Slot::Done { .. })));
        });
    }

    #[test]
    fn a_failed_read_is_an_error_and_the_ring_goes_on() {
        on_executor(|| async {
            let p = patterned(2).await;
            let ring = ReadRing::new().unwrap();
            let wrong = std::fs::File::create(p.dir.path().join("write-only")).unwrap();
            let err = ring
                .read(wrong.as_raw_fd(), 0, 10, 4096)
                .await
                .err()
                .unwrap();
            assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
            let got = ring.read(p.file.as_raw_fd(), 3, 4, 4096).await.unwrap();
            assert_eq!(&got[..], &p.bytes[3..7]);
        });
    }
}
