//! The official Rust client (`aerospike` 3.0) against a real apogee process with two
//! namespaces: batches mixing every row type (reads of all bins, of chosen bins, with ops;
//! writes, deletes, UDF rows) across both namespaces and an unknown one, with missing records
//! and filter expressions; then truncate through the client.

// Policies are set field by field, as the client's own documentation shows.
#![allow(clippy::field_reassign_with_default)]

mod common;

use aerospike::expressions::{eq, int_bin, int_val};
use aerospike::operations as ops;
use aerospike::{
    as_bin, as_key, AdminPolicy, BatchDeletePolicy, BatchOperation, BatchPolicy, BatchReadPolicy,
    BatchUdfPolicy, BatchWritePolicy, Bins, Client, ClientPolicy, ReadPolicy, ResultCode, Value,
    WritePolicy,
};
use common::Server;

const TWO_NAMESPACES: &str = "[namespace.test]\n[namespace.bar]\n";

async fn two_namespace_server(dir: &std::path::Path) -> (Server, Client) {
    let config = dir.join("apogee.toml");
    std::fs::write(&config, TWO_NAMESPACES).unwrap();
    let server = Server::start(
        &dir.join("data"),
        2,
        &["--config", config.to_str().unwrap()],
    );
    let client = Client::new(&ClientPolicy::default(), &server.addr())
        .await
        .expect("official client connects");
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_mix_row_types_namespaces_missing_records_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = two_namespace_server(dir.path()).await;
    let wp = WritePolicy::default();
    for i in 0..20i64 {
        let bins = [as_bin!("i", i), as_bin!("s", format!("v{i}"))];
        client
            .put(&wp, &as_key!("test", "s", i), &bins)
            .await
            .unwrap();
        let bins = [as_bin!("i", i * 100)];
        client
            .put(&wp, &as_key!("bar", "s", i), &bins)
            .await
            .unwrap();
    }

    let rp = BatchReadPolicy::default();
    let mut filtered = BatchReadPolicy::default();
    filtered.filter_expression = Some(eq(int_bin("i"), int_val(3)));
    let mut rows = vec![
        BatchOperation::read(&rp, as_key!("test", "s", 1), Bins::All),
        BatchOperation::read(&rp, as_key!("bar", "s", 1), Bins::All),
        BatchOperation::read(&rp, as_key!("test", "s", 2), Bins::from(["s"])),
        BatchOperation::read(&rp, as_key!("test", "s", 999), Bins::All),
        BatchOperation::read(&rp, as_key!("nosuch", "s", 1), Bins::All),
        BatchOperation::read(&filtered, as_key!("test", "s", 3), Bins::All),
        BatchOperation::read(&filtered, as_key!("test", "s", 4), Bins::All),
        BatchOperation::read_ops(&rp, as_key!("bar", "s", 5), [ops::get_bin("i")]),
        BatchOperation::write(
            &BatchWritePolicy::default(),
            as_key!("bar", "s", 6),
            [ops::add(&as_bin!("i", 1)), ops::get_bin("i")],
        ),
        BatchOperation::delete(&BatchDeletePolicy::default(), as_key!("test", "s", 7)),
        BatchOperation::udf(
            &BatchUdfPolicy::default(),
            as_key!("test", "s", 8),
            "m",
            "f",
            [],
        ),
    ];
    client
        .batch(&BatchPolicy::default(), &mut rows)
        .await
        .expect("the batch as a whole succeeds");
    let code = |i: usize| rows[i].result_code();
    let bin = |i: usize, name: &str| {
        rows[i]
            .batch_record()
            .record
            .as_ref()
            .and_then(|r| r.bins.get(name).cloned())
    };
    assert_eq!(code(0), Some(ResultCode::Ok));
    assert_eq!(bin(0, "s"), Some(Value::from("v1")));
    assert_eq!(
        bin(1, "i"),
        Some(Value::from(100)),
        "same key, other namespace"
    );
    assert_eq!(bin(2, "s"), Some(Value::from("v2")));
    assert_eq!(bin(2, "i"), None, "only the chosen bin");
    assert_eq!(code(3), Some(ResultCode::KeyNotFoundError));
    assert_eq!(code(4), Some(ResultCode::InvalidNamespace));
    assert_eq!(bin(5, "i"), Some(Value::from(3)), "the filter keeps i == 3");
    assert_eq!(code(6), Some(ResultCode::FilteredOut));
    assert_eq!(bin(7, "i"), Some(Value::from(500)));
    // Batch writes ask for every op's result: the add answers nil, the read 601.
    assert_eq!(
        bin(8, "i"),
        Some(Value::MultiResult(vec![Value::Nil, Value::from(601)])),
        "the write's own read"
    );
    assert_eq!(code(9), Some(ResultCode::Ok));
    assert_eq!(
        code(10),
        Some(ResultCode::UdfBadResponse),
        "a UDF row of a module that is not registered fails as a UDF (100)"
    );

    // The writes happened, once each; other records are untouched.
    let read = ReadPolicy::default();
    let six = client.get(&read, &as_key!("bar", "s", 6), Bins::All).await;
    assert_eq!(six.unwrap().bins["i"], Value::from(601));
    let seven = client.get(&read, &as_key!("test", "s", 7), Bins::All).await;
    assert_eq!(
        seven.expect_err("deleted").server_result_code(),
        Some(ResultCode::KeyNotFoundError)
    );
    let eight = client.get(&read, &as_key!("test", "s", 8), Bins::All).await;
    assert_eq!(
        eight.unwrap().bins["i"],
        Value::from(8),
        "the UDF row changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_through_the_client_empties_one_namespace_set_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = two_namespace_server(dir.path()).await;
    let wp = WritePolicy::default();
    for i in 0..50i64 {
        for (ns, set) in [("test", "gone"), ("test", "kept"), ("bar", "gone")] {
            client
                .put(&wp, &as_key!(ns, set, i), &[as_bin!("i", i)])
                .await
                .unwrap();
        }
    }
    client
        .truncate(&AdminPolicy::default(), "test", "gone", 0)
        .await
        .expect("truncate answers ok");
    let rp = BatchReadPolicy::default();
    let mut rows: Vec<_> = (0..50i64)
        .flat_map(|i| {
            [("test", "gone"), ("test", "kept"), ("bar", "gone")]
                .map(|(ns, set)| BatchOperation::read(&rp, as_key!(ns, set, i), Bins::All))
        })
        .collect();
    client
        .batch(&BatchPolicy::default(), &mut rows)
        .await
        .unwrap();
    for (n, row) in rows.iter().enumerate() {
        let want = if n % 3 == 0 {
            ResultCode::KeyNotFoundError
        } else {
            ResultCode::Ok
        };
        assert_eq!(row.result_code(), Some(want), "row {n}");
    }
    // A write after the truncate stays.
    client
        .put(&wp, &as_key!("test", "gone", 1), &[as_bin!("i", 1)])
        .await
        .unwrap();
    let key = as_key!("test", "gone", 1);
    let back = client.get(&ReadPolicy::default(), &key, Bins::All).await;
    assert_eq!(back.unwrap().bins["i"], Value::from(1));
}
