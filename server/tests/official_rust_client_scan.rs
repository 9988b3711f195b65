//! The official Rust client (`aerospike` 3.0) scanning a real apogee process: a full scan,
//! a partition range, bin selection, pagination with `max_records` through the client's
//! partition cursor (every record exactly once), and a background operate scan that the client
//! waits on through `query-show`.

// Policies are set field by field, as the client's own documentation shows.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::collections::HashSet;

use aerospike::operations as ops;
use aerospike::{
    as_bin, as_key, Bins, Client, ClientPolicy, PartitionFilter, QueryPolicy, Statement, Task,
    Value, WritePolicy,
};
use common::Server;
use futures_lite::StreamExt;

const RECORDS: i64 = 3000;

async fn loaded_server(dir: &std::path::Path) -> (Server, Client) {
    let server = Server::start(&dir.join("data"), 2, &[]);
    let client = Client::new(&ClientPolicy::default(), &server.addr())
        .await
        .expect("official client connects");
    let wp = common::patient_writes();
    for i in 0..RECORDS {
        let bins = [as_bin!("i", i), as_bin!("s", format!("v{i}"))];
        client
            .put(&wp, &as_key!("test", "demo", i), &bins)
            .await
            .unwrap();
    }
    (server, client)
}

/// The `i` bin of every record a query returns, and its partition cursor once it ended.
async fn run(
    client: &Client,
    policy: &QueryPolicy,
    filter: PartitionFilter,
    bins: Bins,
) -> (Vec<aerospike::Record>, Option<PartitionFilter>) {
    let rs = client
        .query(policy, filter, Statement::new("test", "demo", bins))
        .await
        .expect("query starts");
    let mut out = Vec::new();
    let mut stream = rs.clone().into_stream();
    while let Some(r) = stream.next().await {
        out.push(r.expect("record"));
    }
    (out, rs.partition_filter())
}

fn int(record: &aerospike::Record, bin: &str) -> i64 {
    match record.bins.get(bin) {
        Some(Value::Int(i)) => *i,
        other => panic!("bin {bin}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_full_ranged_selected_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = loaded_server(dir.path()).await;
    let qp = QueryPolicy::default();

    let (all, _) = run(&client, &qp, PartitionFilter::all(), Bins::All).await;
    let mut seen: Vec<i64> = all.iter().map(|r| int(r, "i")).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..RECORDS).collect::<Vec<_>>());

    let (selected, _) = run(&client, &qp, PartitionFilter::all(), Bins::from(["s"])).await;
    assert_eq!(selected.len(), RECORDS as usize);
    assert!(selected
        .iter()
        .all(|r| r.bins.len() == 1 && r.bins.contains_key("s")));

    let (ranged, _) = run(&client, &qp, PartitionFilter::by_range(0, 2048), Bins::All).await;
    assert!(!ranged.is_empty() && ranged.len() < RECORDS as usize);
    for r in &ranged {
        let key = r.key.as_ref().expect("scan records carry their key");
        assert!(key.partition_id() < 2048, "{}", key.partition_id());
    }

    // Pages of at most 400 records, resumed from the client's partition cursor.
    let mut paged = QueryPolicy::default();
    paged.max_records = 400;
    let mut filter = PartitionFilter::all();
    let mut got = HashSet::new();
    let mut total = 0;
    for page in 0.. {
        assert!(page < 50, "pagination ends");
        let (records, cursor) = run(&client, &paged, filter, Bins::All).await;
        assert!(records.len() <= 400);
        total += records.len();
        got.extend(records.iter().map(|r| int(r, "i")));
        filter = cursor.expect("a finished query has a cursor");
        if filter.done() {
            break;
        }
    }
    assert_eq!((total, got.len()), (RECORDS as usize, RECORDS as usize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_operate_scan_updates_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = loaded_server(dir.path()).await;
    let mut statement = Statement::new("test", "demo", Bins::All);
    statement.set_operations([ops::put(&as_bin!("bg", 7))]);
    let task = client
        .query_operate(&WritePolicy::default(), statement)
        .await
        .expect("background scan starts");
    task.wait_till_complete(None).await.expect("job completes");
    let (all, _) = run(
        &client,
        &QueryPolicy::default(),
        PartitionFilter::all(),
        Bins::All,
    )
    .await;
    assert_eq!(all.len(), RECORDS as usize);
    assert!(all.iter().all(|r| int(r, "bg") == 7));
}
