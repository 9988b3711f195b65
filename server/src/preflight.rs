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
    #[error("proto-fd-max = {proto_fd_max} needs a file limit (ulimit -n) of at least {need}, but this process may open only {have} files: raise it (`ulimit -n {need}`, or LimitNOFILE= in a systemd unit) or lower proto-fd-max")]
    FileLimitTooLow {
        proto_fd_max: usize,
        need: u64,
        have: u64,
    },
}

/// Descriptors kept for everything but client connections: data files, io_uring rings and
/// their eventfds, the listener, logs; per node and per core.
const FILES_RESERVED_BASE: u64 = 256;
const FILES_RESERVED_PER_CORE: u64 = 32;

/// The `proto-fd-max` this node can honour: the configured value when the file limit
/// (raised to its hard limit first) leaves room for it beside the reserve; the default is
/// lowered to fit, with a warning, while a value the user chose is refused.
pub fn fit_file_limit(
    proto_fd_max: usize,
    chosen: bool,
    cores: usize,
) -> Result<usize, PreflightError> {
    let have = raise_limit(libc::RLIMIT_NOFILE);
    fit_connections(proto_fd_max, chosen, cores, have)
}

fn fit_connections(
    proto_fd_max: usize,
    chosen: bool,
    cores: usize,
    have: u64,
) -> Result<usize, PreflightError> {
    let reserved = FILES_RESERVED_BASE + FILES_RESERVED_PER_CORE * cores as u64;
    let need = proto_fd_max as u64 + reserved;
    if need <= have {
        return Ok(proto_fd_max);
    }
    if chosen || have <= reserved {
        return Err(PreflightError::FileLimitTooLow {
            proto_fd_max,
            need,
            have,
        });
    }
    let lowered = (have - reserved) as usize;
    tracing::warn!(
        file_limit = have,
        proto_fd_max = lowered,
        "the file limit (ulimit -n) is below what the default proto-fd-max needs: serving at most \
         {lowered} client connections; raise the limit for more"
    );
    Ok(lowered)
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

/// Raises a soft resource limit to the hard one and returns the resulting soft limit.
fn raise_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(resource, &raised) } == 0 {
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
    let memlock_bytes = raise_limit(libc::RLIMIT_MEMLOCK);
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
    fn connections_fit_the_file_limit() {
        let reserved = FILES_RESERVED_BASE + FILES_RESERVED_PER_CORE * 2;
        assert_eq!(fit_connections(100, true, 2, 100 + reserved).unwrap(), 100);
        let e = fit_connections(100, true, 2, 99 + reserved).unwrap_err();
        assert!(
            e.to_string()
                .contains("proto-fd-max = 100 needs a file limit"),
            "{e}"
        );
        assert_eq!(
            fit_connections(15_000, false, 2, 1024).unwrap(),
            1024 - reserved as usize
        );
        assert!(fit_connections(15_000, false, 2, reserved).is_err());
    }

    #[test]
    fn this_host_passes() {
        let r = check(1).expect("the test host supports io_uring");
        assert!(!r.kernel.is_empty());
    }
}
