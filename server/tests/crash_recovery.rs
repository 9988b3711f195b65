//! Crash safety with the official Rust client: 20,000 records written (then some overwritten
//! and some deleted) by concurrent writers; the server is SIGKILLed the moment the last write
//! is acknowledged; after a restart on the same data directory every acknowledged write is
//! there with its latest value and every deleted record stays deleted.

mod common;

use std::sync::Arc;

use aerospike::{
    as_bin, as_key, Bins, Client, ClientPolicy, ReadPolicy, ResultCode, Value, WritePolicy,
};
use common::Server;

const RECORDS: i64 = 20_000;
const WRITERS: i64 = 64;

fn expected(i: i64) -> Option<i64> {
    if i % 7 == 0 {
        None // deleted
    } else if i % 10 == 0 {
        Some(i * 1000 + 2) // overwritten
    } else {
        Some(i * 1000 + 1)
    }
}

async fn run_writers(client: Arc<Client>, phase: u8) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.spawn(async move {
            let wp = WritePolicy::default();
            let mut i = w;
            while i < RECORDS {
                let key = as_key!("test", "crash", i);
                match phase {
                    1 => client
                        .put(
                            &wp,
                            &key,
                            &[as_bin!("v", i * 1000 + 1), as_bin!("pad", "x".repeat(200))],
                        )
                        .await
                        .unwrap(),
                    _ => {
                        if i % 7 == 0 {
                            assert!(client.delete(&wp, &key).await.unwrap());
                        } else if i % 10 == 0 {
                            client
                                .put(&wp, &key, &[as_bin!("v", i * 1000 + 2)])
                                .await
                                .unwrap();
                        }
                    }
                }
                i += WRITERS;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_last_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 2, &[]);
    let client = Arc::new(
        Client::new(&ClientPolicy::default(), &server.addr())
            .await
            .unwrap(),
    );
    run_writers(client.clone(), 1).await;
    run_writers(client.clone(), 2).await;
    // The last write was acknowledged when run_writers returned: kill at once.
    server.kill();
    client.close().await.unwrap();

    let server = Server::start(&data, 2, &[]);
    let client = Client::new(&ClientPolicy::default(), &server.addr())
        .await
        .unwrap();
    let rp = ReadPolicy::default();
    let mut present = 0;
    for i in 0..RECORDS {
        let key = as_key!("test", "crash", i);
        match (expected(i), client.get(&rp, &key, Bins::All).await) {
            (Some(v), Ok(rec)) => {
                assert_eq!(rec.bins["v"], Value::from(v), "record {i}");
                present += 1;
            }
            (None, Err(e)) => {
                assert_eq!(
                    e.server_result_code(),
                    Some(ResultCode::KeyNotFoundError),
                    "record {i}"
                )
            }
            (want, got) => panic!("record {i}: expected {want:?}, got {got:?}"),
        }
    }
    let deleted = (0..RECORDS).filter(|i| i % 7 == 0).count() as i64;
    assert_eq!(present, RECORDS - deleted);
    let stats = common::info(server.port, "namespace/test\n").unwrap();
    assert!(stats.contains(&format!("objects={present};")), "{stats}");
    client.close().await.unwrap();
}
