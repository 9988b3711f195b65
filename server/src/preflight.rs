//! Start-up checks of what io_uring and glommio need from the host: a recent enough kernel,
//! io_uring not disabled or blocked, and enough locked memory. Each failure names the exact
//! problem and its fix. This module must never start serving; it only checks and raises the
//! soft memlock limit when the hard limit allows.

use thiserror::Error;

/// io_uring features glommio relies on arrived in Linux 5.8.
pub const KERNEL_MIN: (u32, u32) = (5, 8);
/// Before 5.12 io_uring rings are charged to RLIMIT_MEMLOCK; each core has three rings.
const RING_MEMLOCK_BYTES_PER_CORE: u64 = 3 * 128 * 1024;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("kernel {0} is older than 5.8; Apogee's io_uring runtime needs Linux 5.8 or newer: upgrade the kernel")]
    KernelTooOld(String),
    #[error("io_uring is disabled on this host (/proc/sys/kernel/io_uring_disabled = {0}); enable it with `sysctl -w kernel.io_uring_disabled=0`")]
    UringDisabled(String),
    #[error("io_uring_setup was refused ({0}); a container seccomp profile may block it: allow the io_uring_setup, io_uring_enter and io_uring_register syscalls (e.g. docker --security-opt seccomp=<profile allowing io_uring>)")]
    UringBlocked(std::io::Error),
    #[error(
        "this kernel has no io_uring support ({0}); use a kernel built with CONFIG_IO_URING=y"
    )]
    UringMissing(std::io::Error),
    #[error("locked-memory limit (ulimit -l) is {have_kib} KiB, but {cores} cores on kernel {kernel} need {need_kib} KiB; raise it with `ulimit -l {need_kib}` (or LimitMEMLOCK= in a systemd unit), or start fewer --cores")]
    MemlockTooLow {
        have_kib: u64,
        need_kib: u64,
        cores: usize,
        kernel: String,
    },
    #[error("io_uring_setup failed: {0}")]
    UringOther(std::io::Error),
}

/// Parses "6.18.44-foo" into (6, 18).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Raises the soft memlock limit to the hard one and returns the resulting soft limit in bytes.
fn raise_memlock() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// What the checks found, for the start-up log and for sizing glommio's I/O memory.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub kernel: String,
    pub memlock_bytes: u64,
}

/// Runs every check for a server of `cores` cores.
pub fn check(cores: usize) -> Result<HostReport, PreflightError> {
    let kernel = kernel_release();
    let version = parse_kernel_version(&kernel).unwrap_or((0, 0));
    if version < KERNEL_MIN {
        return Err(PreflightError::KernelTooOld(kernel));
    }
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let v = v.trim().to_string();
        // 1 allows only members of kernel.io_uring_group; the setup probe below decides.
        if v == "2" {
            return Err(PreflightError::UringDisabled(v));
        }
    }
    let memlock_bytes = raise_memlock();
    if version < (5, 12) {
        let need = RING_MEMLOCK_BYTES_PER_CORE * cores as u64;
        if memlock_bytes < need {
            return Err(PreflightError::MemlockTooLow {
                have_kib: memlock_bytes / 1024,
                need_kib: need / 1024,
                cores,
                kernel,
            });
        }
    }
    match io_uring::IoUring::new(8) {
        Ok(_) => {}
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => PreflightError::UringBlocked(e),
                Some(libc::ENOSYS) => PreflightError::UringMissing(e),
                Some(libc::ENOMEM) => PreflightError::MemlockTooLow {
                    have_kib: memlock_bytes / 1024,
                    need_kib: RING_MEMLOCK_BYTES_PER_CORE * cores as u64 / 1024,
                    cores,
                    kernel,
                },
                _ => PreflightError::UringOther(e),
            })
        }
    }
    Ok(HostReport {
        kernel,
        memlock_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0-1-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!(parse_kernel_version("5.4.0").unwrap() < KERNEL_MIN);
    }

    #[test]
    fn this_host_passes() {
        let r = check(1).expect("the test host supports io_uring");
        assert!(!r.kernel.is_empty());
    }
}
