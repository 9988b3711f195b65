//! Sending cluster metadata to the other members: truncate cut-offs, secondary-index
//! catalogs and UDF module changes each wait in their own queue on the node, and core 0 of
//! a clustered node sends every queued body to each other member of the current view over
//! the fabric, trying each a few times. A member it cannot reach learns the change on the
//! next committed view, when every member shares all it has again.
//!
//! Owns the queues' use and the sending loop; what a body holds and how a member merges it
//! belong to `truncate`, `sindex` and `udf`.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;

/// Tries per member and body before giving up until the next view.
pub const FORWARD_ATTEMPTS_MAX: u32 = 5;

/// Which metadata a forwarding loop sends.
#[derive(Clone, Copy, Debug)]
pub enum Metadata {
    /// A truncate cut-off (`truncate::encode_cut_off`).
    Truncate,
    /// A namespace's secondary-index catalog (`sindex::encode`).
    SindexCatalog,
    /// A UDF module change (`udf::Change::encode`).
    UdfModule,
}

impl Metadata {
    fn queue(self, node: &Node) -> &(flume::Sender<Vec<u8>>, flume::Receiver<Vec<u8>>) {
        match self {
            Metadata::Truncate => &node.cut_offs,
            Metadata::SindexCatalog => &node.sindex_out,
            Metadata::UdfModule => &node.udf_out,
        }
    }
}

/// Queues a change made here for the other members (a clustered node only). Never waits:
/// when the queue is full the change is logged as not sent, and the members learn it on the
/// next view.
pub fn send_now(node: &Node, kind: Metadata, body: Vec<u8>) {
    if node.config.cluster.heartbeat.is_none() {
        return;
    }
    if kind.queue(node).0.try_send(body).is_err() {
        tracing::error!(?kind, "a change made here was not sent to the other members: too many pending; they learn it on the next view");
    }
}

/// On a committed view: queues everything `bodies` holds for the view's members, waiting
/// while the queue is full (a task of the calling core's; a clustered node only).
pub fn send_on_view(node: &Node, kind: Metadata, bodies: Vec<Vec<u8>>) {
    if bodies.is_empty() || node.config.cluster.heartbeat.is_none() {
        return;
    }
    let tx = kind.queue(node).0.clone();
    glommio::spawn_local(async move {
        for body in bodies {
            if tx.send_async(body).await.is_err() {
                return;
            }
        }
    })
    .detach();
}

/// Core 0 of a clustered node: sends each body queued for `kind` to every other member of the
/// view, trying each up to [`FORWARD_ATTEMPTS_MAX`] times (backing off 200 ms more each time).
pub async fn forward(node: Arc<Node>, kind: Metadata) {
    let queue = kind.queue(&node).1.clone();
    while let Ok(body) = queue.recv_async().await {
        let members: Vec<_> = node.cluster.load().peers.iter().map(|p| p.node).collect();
        for member in members {
            for attempt in 1..=FORWARD_ATTEMPTS_MAX {
                let sent = match kind {
                    Metadata::Truncate => super::fabric::truncate_at(&node, member, &body).await,
                    Metadata::SindexCatalog => super::fabric::sindex_at(&node, member, &body).await,
                    Metadata::UdfModule => super::fabric::udf_at(&node, member, &body).await,
                };
                match sent {
                    Ok(()) => break,
                    Err(error) if attempt == FORWARD_ATTEMPTS_MAX => {
                        tracing::error!(member = %format!("{:X}", member.0), %error, ?kind,
                            "cluster metadata not made durable on this member; it learns it on the next view");
                    }
                    Err(_) => {
                        glommio::timer::sleep(Duration::from_millis(200 * u64::from(attempt))).await
                    }
                }
            }
        }
    }
}
