//! Test harness: starts the real `apogee` binary on a free loopback port with its own data
//! directory, waits until it answers info, and kills it when the test ends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// A port nobody listens on right now (the server binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one info request on a fresh connection and returns the reply text.
pub fn info(port: u16, cmds: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = cmds.as_bytes();
    let mut frame = vec![2u8, 1, 0, 0, 0, 0, 0, 0];
    frame[2..8].copy_from_slice(&(body.len() as u64).to_be_bytes()[2..]);
    frame.extend_from_slice(body);
    s.write_all(&frame)?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let size = u64::from_be_bytes(head) & 0xFFFF_FFFF_FFFF;
    let mut reply = vec![0u8; size as usize];
    s.read_exact(&mut reply)?;
    Ok(String::from_utf8(reply).unwrap())
}

impl Server {
    pub fn start(dir: &Path, cores: usize, extra: &[&str]) -> Server {
        let port = free_port();
        let log = dir.with_extension(format!("{port}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_apogee"))
            .args(["--port", &port.to_string(), "--cores", &cores.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn apogee");
        let mut s = Server {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = info(self.port, "node\n") {
                if r.starts_with("node\t") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "apogee exited with {status} during start:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("apogee did not become ready:\n{}", self.log_text());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc_kill(c.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill().unwrap();
        panic!("apogee did not stop within 30 s of SIGTERM");
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A write policy for loading test data: the client's default gives a put 1 s in all and no
/// retry, which a debug build writing durably on a loaded 2-core CI machine can miss; a test
/// that loads records is not measuring latency, so it waits up to 10 s and retries twice (a put
/// of the same bins is idempotent).
pub fn patient_writes() -> aerospike::WritePolicy {
    let mut wp = aerospike::WritePolicy::default();
    wp.base_policy.total_timeout = 10_000;
    wp.base_policy.max_retries = 2;
    wp
}
