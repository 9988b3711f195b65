//! `apogee-info`: sends info commands to a node (Apogee or Aerospike) and prints the answers,
//! like Aerospike's `asinfo -v`. It must never write data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use apogee_wire::proto::{frame, ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::MsgType;
use clap::Parser;

/// Send info commands to an Apogee or Aerospike node and print the replies.
#[derive(Parser)]
#[command(name = "apogee-info", version)]
struct Args {
    /// Host to connect to.
    #[arg(long, short = 'h', default_value = "127.0.0.1")]
    host: String,
    /// Service port.
    #[arg(long, short = 'p', default_value_t = 3000)]
    port: u16,
    /// Seconds to wait for the connection and the reply.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// Info commands, e.g. `namespaces` `statistics` `namespace/test`.
    #[arg(short = 'v', required = true)]
    commands: Vec<String>,
}

fn run(args: &Args) -> Result<String, String> {
    let addr = format!("{}:{}", args.host, args.port);
    let timeout = Duration::from_secs(args.timeout_secs);
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or(format!("{addr} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    for c in &args.commands {
        body.push_str(c);
        body.push('\n');
    }
    s.write_all(&frame(MsgType::Info, body.as_bytes()))
        .map_err(|e| format!("send to {addr} failed: {e}"))?;
    let mut head = [0u8; PROTO_HEADER_BYTES];
    s.read_exact(&mut head)
        .map_err(|e| format!("no reply from {addr}: {e}"))?;
    let h = ProtoHeader::decode(&head).map_err(|e| format!("bad reply header: {e}"))?;
    if h.msg_type != MsgType::Info {
        return Err(format!("reply has type {:?}, expected info", h.msg_type));
    }
    let mut reply = vec![0u8; h.body_bytes as usize];
    s.read_exact(&mut reply)
        .map_err(|e| format!("reply from {addr} cut short: {e}"))?;
    String::from_utf8(reply).map_err(|_| "reply is not UTF-8".to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            let mut failed = false;
            for line in text.lines() {
                let (_, value) = line.split_once('\t').unwrap_or(("", line));
                failed |= value.starts_with("ERROR");
                println!("{value}");
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("apogee-info: {e}");
            ExitCode::from(2)
        }
    }
}
