//! The null server: built on the same runtime as Apogee (one glommio executor per core,
//! SO_REUSEPORT listeners), it answers every Aerospike-protocol request with a canned reply
//! (result 0, no bins) and never touches storage. Its throughput under the same load generator
//! is the ceiling of this machine and client; Apogee's result as a fraction of it is the
//! headroom left in the server.

use apogee_wire::msg::{Message, MsgHeader};
use apogee_wire::proto::{frame, ProtoHeader, BODY_SIZE_MAX_BYTES, PROTO_HEADER_BYTES};
use apogee_wire::MsgType;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

async fn serve(mut s: TcpStream, ok: std::rc::Rc<Vec<u8>>) {
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; PROTO_HEADER_BYTES];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let Ok(h) = ProtoHeader::decode(&head) else {
            return;
        };
        if h.body_bytes > BODY_SIZE_MAX_BYTES {
            return;
        }
        body.resize(h.body_bytes as usize, 0);
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let reply = match h.msg_type {
            MsgType::Info => frame(MsgType::Info, b"node\tNULLSERVER\n"),
            _ => ok.as_ref().clone(),
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Runs the null server on `port` with `cores` executors until the process is killed.
pub fn run(address: &str, port: u16, cores: usize) -> Result<(), String> {
    let ok = frame(
        MsgType::Message,
        &Message {
            header: MsgHeader {
                generation: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .encode(),
    );
    let mut handles = Vec::new();
    for core in 0..cores {
        let ok = ok.clone();
        let addr = format!("{address}:{port}");
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("null-core-{core}"))
            .spawn(move || async move {
                let l = match TcpListener::bind(&addr) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("null server cannot listen on {addr}: {e}");
                        std::process::exit(1);
                    }
                };
                let ok = std::rc::Rc::new(ok);
                while let Ok(s) = l.accept().await {
                    let _ = s.set_nodelay(true);
                    glommio::spawn_local(serve(s, ok.clone())).detach();
                }
            })
            .map_err(|e| format!("cannot start null-server core {core}: {e}"))?;
        handles.push(h);
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
