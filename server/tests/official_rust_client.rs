//! The official Rust client (`aerospike` 3.0) against a real apogee process: connect, put/get/
//! select/exists/delete/touch/operate with every basic value and key type, generations and the
//! record-exists and generation policies.

// Policies are set field by field, as the client's own documentation shows.
#![allow(clippy::field_reassign_with_default)]

mod common;

use aerospike::operations as ops;
use aerospike::{
    as_bin, as_blob, as_key, as_list, as_map, as_val, Bins, Client, ClientPolicy, Expiration,
    GenerationPolicy, ReadPolicy, RecordExistsAction, ResultCode, Value, WritePolicy,
};
use common::Server;

async fn connect(server: &Server) -> Client {
    Client::new(&ClientPolicy::default(), &server.addr())
        .await
        .expect("official client connects")
}

fn rc<T: std::fmt::Debug>(r: aerospike::Result<T>) -> ResultCode {
    r.expect_err("expected a server error")
        .server_result_code()
        .expect("error carries a server result code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_keys_generations_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let rp = ReadPolicy::default();

    // Every basic value type round-trips.
    let key = as_key!("test", "demo", "key1");
    let bins = [
        as_bin!("int", 42),
        as_bin!("neg", -7),
        as_bin!("float", 1.5),
        as_bin!("str", "hello"),
        as_bin!("blob", as_blob!(vec![1u8, 2, 3])),
        as_bin!("list", as_list!(1, "x", 2.5)),
        as_bin!("map", as_map!("k" => 1, "j" => "v")),
        as_bin!("bool", Value::Bool(true)),
    ];
    client.put(&wp, &key, &bins).await.unwrap();
    let rec = client.get(&rp, &key, Bins::All).await.unwrap();
    assert_eq!(rec.generation, 1);
    for b in &bins {
        assert_eq!(rec.bins.get(&b.name), Some(&b.value), "bin {}", b.name);
    }
    assert_eq!(rec.bins.len(), bins.len());

    // Select returns only the named bins.
    let rec = client.get(&rp, &key, ["str", "nosuch"]).await.unwrap();
    assert_eq!(rec.bins.len(), 1);
    assert_eq!(rec.bins["str"], Value::from("hello"));

    // Header-only read and exists.
    let rec = client.get(&rp, &key, Bins::None).await.unwrap();
    assert_eq!(rec.generation, 1);
    assert!(rec.bins.is_empty());
    assert!(client.exists(&rp, &key).await.unwrap());
    assert!(!client
        .exists(&rp, &as_key!("test", "demo", "nosuch"))
        .await
        .unwrap());

    // Integer and bytes keys, and the empty set.
    for k in [
        as_key!("test", "demo", 42),
        as_key!("test", "demo", -5),
        as_key!("test", "demo", Value::Blob(vec![1, 2, 3])),
        as_key!("test", "", "noset"),
    ] {
        client.put(&wp, &k, &[as_bin!("v", 1)]).await.unwrap();
        let rec = client.get(&rp, &k, Bins::All).await.unwrap();
        assert_eq!(rec.bins["v"], Value::from(1));
    }

    // Generation increments on every write and on touch; a merge keeps other bins.
    client.put(&wp, &key, &[as_bin!("int", 43)]).await.unwrap();
    client.touch(&wp, &key).await.unwrap();
    let rec = client.get(&rp, &key, Bins::All).await.unwrap();
    assert_eq!(rec.generation, 3);
    assert_eq!(rec.bins["int"], Value::from(43));
    assert_eq!(rec.bins["str"], Value::from("hello"));

    // Record-exists policies.
    let mut create_only = WritePolicy::default();
    create_only.record_exists_action = RecordExistsAction::CreateOnly;
    assert_eq!(
        rc(client.put(&create_only, &key, &[as_bin!("x", 1)]).await),
        ResultCode::KeyExistsError
    );
    let missing = as_key!("test", "demo", "missing");
    for action in [
        RecordExistsAction::UpdateOnly,
        RecordExistsAction::ReplaceOnly,
    ] {
        let mut p = WritePolicy::default();
        p.record_exists_action = action;
        assert_eq!(
            rc(client.put(&p, &missing, &[as_bin!("x", 1)]).await),
            ResultCode::KeyNotFoundError
        );
    }
    assert!(
        !client.exists(&rp, &missing).await.unwrap(),
        "failed writes change nothing"
    );
    let mut replace = WritePolicy::default();
    replace.record_exists_action = RecordExistsAction::Replace;
    client
        .put(&replace, &key, &[as_bin!("only", 1)])
        .await
        .unwrap();
    let rec = client.get(&rp, &key, Bins::All).await.unwrap();
    assert_eq!(rec.bins.len(), 1, "replace drops the other bins");
    assert_eq!(rec.generation, 4);

    // Generation policies.
    let mut gen_eq = WritePolicy::default();
    gen_eq.generation_policy = GenerationPolicy::ExpectGenEqual;
    gen_eq.generation = 3;
    assert_eq!(
        rc(client.put(&gen_eq, &key, &[as_bin!("g", 1)]).await),
        ResultCode::GenerationError
    );
    gen_eq.generation = 4;
    client.put(&gen_eq, &key, &[as_bin!("g", 1)]).await.unwrap();
    let mut gen_gt = WritePolicy::default();
    gen_gt.generation_policy = GenerationPolicy::ExpectGenGreater;
    gen_gt.generation = 5;
    assert_eq!(
        rc(client.put(&gen_gt, &key, &[as_bin!("g", 2)]).await),
        ResultCode::GenerationError
    );

    // TTL: sent, stored and reported back.
    let mut ttl = WritePolicy::default();
    ttl.expiration = Expiration::Seconds(1000);
    client.put(&ttl, &key, &[as_bin!("t", 1)]).await.unwrap();
    let rec = client.get(&rp, &key, Bins::All).await.unwrap();
    let left = rec.time_to_live().expect("record has a TTL").as_secs();
    assert!((990..=1000).contains(&left), "ttl {left}");

    // Operate with basic ops: increment then read in one call.
    let opkey = as_key!("test", "demo", "counter");
    let rec = client
        .operate(
            &wp,
            &opkey,
            &[ops::add(&as_bin!("n", 5)), ops::get_bin("n")],
        )
        .await
        .unwrap();
    assert_eq!(
        rec.bins["n"],
        Value::MultiResult(vec![Value::Nil, Value::from(5)])
    );
    assert_eq!(
        rc(client
            .operate(&wp, &opkey, &[ops::append(&as_bin!("n", "x"))])
            .await),
        ResultCode::BinTypeError
    );

    // Touch of a missing record, delete twice.
    assert_eq!(
        rc(client.touch(&wp, &missing).await),
        ResultCode::KeyNotFoundError
    );
    assert!(client.delete(&wp, &key).await.unwrap());
    assert!(!client.delete(&wp, &key).await.unwrap());
    assert_eq!(
        rc(client.get(&rp, &key, Bins::All).await),
        ResultCode::KeyNotFoundError
    );

    // Unknown namespace.
    let err = client
        .get(&rp, &as_key!("nons", "demo", 1), Bins::All)
        .await
        .expect_err("namespace nons does not exist");
    let _ = err; // the client refuses it before sending: the namespace is not in the partition map
    client.close().await.unwrap();
}

/// List and map operations through the official Rust client, with the results its
/// documentation describes for each return type, nested contexts, and the error codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_map_operations() {
    use aerospike::operations::cdt_context::ctx_map_key_create;
    use aerospike::operations::maps::MapOrder;
    use aerospike::operations::{lists, maps};
    use aerospike::{ListPolicy, ListReturnType, MapPolicy, MapReturnType};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "demo", "cdt");
    let lp = ListPolicy::default();
    let mp = MapPolicy::default();
    let one = |op: aerospike::operations::Operation| {
        let client = &client;
        let wp = &wp;
        let key = &key;
        async move { client.operate(wp, key, &[op]).await }
    };

    let items = vec![as_val!(7), as_val!(3), as_val!(9), as_val!(3), as_val!(1)];
    let rec = one(lists::append_items(&lp, "l", items)).await.unwrap();
    assert_eq!(rec.bins["l"], Value::from(5));
    let rec = one(lists::get_by_rank_range_count(
        "l",
        0,
        3,
        ListReturnType::VALUES,
    ))
    .await
    .unwrap();
    // Aerospike CE 8.1.2 gives a low rank range of an unordered list high to low.
    assert_eq!(rec.bins["l"], as_list!(3, 3, 1));
    let rec = one(lists::remove_by_value(
        "l",
        as_val!(3),
        ListReturnType::INDEX,
    ))
    .await
    .unwrap();
    assert_eq!(rec.bins["l"], as_list!(1, 3));
    let rec = one(lists::size("l")).await.unwrap();
    assert_eq!(rec.bins["l"], Value::from(3));
    assert_eq!(
        rc(one(lists::get("l", 99)).await),
        ResultCode::OpNotApplicable
    );

    let mut entries = std::collections::HashMap::new();
    for (k, v) in [("a", 1), ("b", 2), ("c", 30), ("y", 30), ("z", 26)] {
        entries.insert(as_val!(k), as_val!(v));
    }
    let rec = one(maps::put_items(&mp, "m", entries)).await.unwrap();
    assert_eq!(rec.bins["m"], Value::from(5));
    let rec = one(maps::get_by_rank_range("m", -2, 2, MapReturnType::KEY))
        .await
        .unwrap();
    assert_eq!(rec.bins["m"], as_list!("c", "y"));
    let rec = one(maps::get_by_key("m", as_val!("q"), MapReturnType::VALUE))
        .await
        .unwrap();
    assert_eq!(rec.bins.get("m").cloned().unwrap_or(Value::Nil), Value::Nil);
    let create = vec![ctx_map_key_create(as_val!("n"), MapOrder::KeyOrdered)];
    let rec = one(maps::put(&mp, "m", as_val!("x"), as_val!(1)).context(create))
        .await
        .unwrap();
    assert_eq!(rec.bins["m"], Value::from(1));
    let rec = client
        .get(&ReadPolicy::default(), &key, ["m"])
        .await
        .unwrap();
    assert_eq!(
        rec.bins["m"],
        as_map!("a" => 1, "b" => 2, "c" => 30, "n" => as_map!("x" => 1), "y" => 30, "z" => 26)
    );
    assert_eq!(
        rc(one(maps::put(&mp, "l", as_val!("k"), as_val!(1))).await),
        ResultCode::BinTypeError
    );
    let create_only = MapPolicy::new(MapOrder::Unordered, aerospike::MapWriteFlags::CREATE_ONLY);
    assert_eq!(
        rc(one(maps::put(&create_only, "m", as_val!("a"), as_val!(5))).await),
        ResultCode::ElementExists
    );
}

/// Bit, HLL and expression operations and filter expressions through the official Rust client,
/// with the results its documentation gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_hll_and_expression_operations() {
    use aerospike::expressions::{self as exp, lists as lexp};
    use aerospike::operations::bitwise::{
        self, BitPolicy, BitwiseOverflowActions, BitwiseResizeFlags,
    };
    use aerospike::operations::exp::{read_exp, write_exp, ExpReadFlags, ExpWriteFlags};
    use aerospike::operations::hll::{self, HllPolicy};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "demo", "bits");
    let bp = BitPolicy::default();

    // The bitwise documentation's running example: [0x01, 0x42, 0x03, 0x04, 0x05].
    client
        .put(
            &wp,
            &key,
            &[as_bin!("b", as_blob!(vec![1u8, 0x42, 3, 4, 5]))],
        )
        .await
        .unwrap();
    let ops = [
        bitwise::set("b", 13, 3, as_blob!(vec![0xe0u8]), &bp),
        bitwise::add("b", 24, 16, 128, false, BitwiseOverflowActions::Fail, &bp),
        bitwise::get("b", 0, 40),
    ];
    let rec = client.operate(&wp, &key, &ops).await.unwrap();
    let Value::MultiResult(results) = &rec.bins["b"] else {
        panic!(
            "three results for one bin come back together: {:?}",
            rec.bins
        )
    };
    assert_eq!(results[2], as_blob!(vec![1u8, 0x47, 3, 4, 0x85]));
    let rec = client
        .operate(&wp, &key, &[bitwise::count("b", 0, 40)])
        .await
        .unwrap();
    assert_eq!(rec.bins["b"], Value::from(11));
    let grow = bitwise::resize("b", 8, BitwiseResizeFlags::DEFAULT, &bp);
    client.operate(&wp, &key, &[grow]).await.unwrap();
    let rec = client
        .get(&ReadPolicy::default(), &key, ["b"])
        .await
        .unwrap();
    assert_eq!(
        rec.bins["b"],
        as_blob!(vec![1u8, 0x47, 3, 4, 0x85, 0, 0, 0])
    );
    let overflow = bitwise::add("b", 0, 8, 255, false, BitwiseOverflowActions::Fail, &bp);
    assert_eq!(
        rc(client.operate(&wp, &key, &[overflow]).await),
        ResultCode::OpNotApplicable
    );

    // HLL: three distinct elements, a union with a second HLL.
    let hp = HllPolicy::default();
    let els = vec![as_val!("a"), as_val!("b"), as_val!("c"), as_val!("a")];
    let rec = client
        .operate(&wp, &key, &[hll::add_with_index(&hp, "h", els, 10)])
        .await
        .unwrap();
    assert_eq!(rec.bins["h"], Value::from(3));
    let other = vec![as_val!("c"), as_val!("d")];
    client
        .operate(&wp, &key, &[hll::add_with_index(&hp, "h2", other, 10)])
        .await
        .unwrap();
    let rec = client
        .get(&ReadPolicy::default(), &key, ["h2"])
        .await
        .unwrap();
    let h2 = rec.bins["h2"].clone();
    assert!(
        matches!(h2, Value::Hll(_)),
        "an HLL bin reads back as Value::Hll: {h2:?}"
    );
    let rec = client
        .operate(&wp, &key, &[hll::get_union_count("h", vec![h2.clone()])])
        .await
        .unwrap();
    assert_eq!(rec.bins["h"], Value::from(4));
    let rec = client
        .operate(&wp, &key, &[hll::describe("h")])
        .await
        .unwrap();
    assert_eq!(rec.bins["h"], as_list!(10, 0));

    // Expressions: a filter that does not match is FILTERED_OUT (27) and writes nothing.
    client
        .put(
            &wp,
            &key,
            &[as_bin!("n", 8), as_bin!("l", as_list!(7, 3, 9))],
        )
        .await
        .unwrap();
    let mut filtered = WritePolicy::default();
    filtered.base_policy.filter_expression = Some(exp::gt(exp::int_bin("n"), exp::int_val(10)));
    assert_eq!(
        rc(client.put(&filtered, &key, &[as_bin!("n", 1)]).await),
        ResultCode::FilteredOut
    );
    let mut matching = ReadPolicy::default();
    matching.base_policy.filter_expression = Some(exp::eq(
        lexp::size(exp::list_bin("l"), &[]),
        exp::int_val(3),
    ));
    let rec = client.get(&matching, &key, ["n"]).await.unwrap();
    assert_eq!(rec.bins["n"], Value::from(8));
    let ops = [
        write_exp(
            "w",
            exp::num_add(vec![exp::int_bin("n"), exp::int_val(2)]),
            ExpWriteFlags::DEFAULT,
        ),
        read_exp(
            "r",
            exp::cond(vec![
                exp::gt(exp::int_bin("n"), exp::int_val(5)),
                exp::string_val("big"),
                exp::string_val("small"),
            ]),
            ExpReadFlags::DEFAULT,
        ),
    ];
    let rec = client.operate(&wp, &key, &ops).await.unwrap();
    assert_eq!(rec.bins["r"], Value::from("big"));
    let rec = client
        .get(&ReadPolicy::default(), &key, ["w"])
        .await
        .unwrap();
    assert_eq!(rec.bins["w"], Value::from(10));
}
