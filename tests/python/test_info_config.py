"""Info get-config / set-config against a real apogee: dynamic namespace settings take effect
on every shard while the node runs, and bad requests change nothing."""

import time

from conftest import info


def ns_stats(port):
    text = info(port, "namespace/test\n").split("\t", 1)[1].strip()
    return dict(kv.split("=", 1) for kv in text.split(";"))


def ns_config(port):
    text = info(port, "get-config:context=namespace;id=test\n").split("\t", 1)[1].strip()
    return dict(kv.split("=", 1) for kv in text.split(";"))


def test_set_config_default_ttl_applies_to_new_writes(server, client):
    assert ns_config(server.port)["default-ttl"] == "0"
    reply = info(server.port, "set-config:context=namespace;id=test;default-ttl=1000\n")
    assert reply.endswith("\tok\n"), reply
    assert ns_config(server.port)["default-ttl"] == "1000"
    client.put(("test", "demo", "ttl"), {"a": 1})
    _, meta = client.exists(("test", "demo", "ttl"))
    assert 990 <= meta["ttl"] <= 1000


def test_set_config_nsup_period_starts_expiry_sweeps(apogee):
    # Sweeps off at start (nsup-period 0): expired records are hidden but stay counted.
    server = apogee(config="[namespace.test]\nnsup-period = 0\n").start()
    c = server.client()
    for i in range(20):
        c.put(("test", "demo", i), {"a": i}, meta={"ttl": 1})
    time.sleep(2.2)
    assert ns_stats(server.port)["objects"] == "20"
    reply = info(server.port, "set-config:context=namespace;id=test;nsup-period=1\n")
    assert reply.endswith("\tok\n"), reply
    deadline = time.time() + 10
    while ns_stats(server.port)["objects"] != "0":
        assert time.time() < deadline, ns_stats(server.port)
        time.sleep(0.2)
    assert ns_stats(server.port)["expired_objects"] == "20"
    assert ns_config(server.port)["nsup-period"] == "1"
    c.close()


def test_bad_set_config_changes_nothing(server):
    for req, want in [
        ("set-config:context=namespace;id=test;default-ttl=5;defrag-lwm-pct=0", "ERROR:4:"),
        ("set-config:context=namespace;id=test;filesize=1", "ERROR:4:filesize is not a dynamic"),
        ("set-config:context=namespace;id=nope;default-ttl=5", "ERROR:20:"),
    ]:
        reply = info(server.port, req + "\n")
        assert want in reply, reply
    assert ns_config(server.port)["default-ttl"] == "0"
    assert ns_config(server.port)["defrag-lwm-pct"] == "50"


def set_counts(port, cmd="sets"):
    text = info(port, cmd + "\n").split("\t", 1)[1].strip()
    out = {}
    for entry in filter(None, text.split(";")):
        fields = dict(kv.split("=", 1) for kv in entry.split(":"))
        out[(fields["ns"], fields["set"])] = int(fields["objects"])
    return out


def test_sets_counts_follow_writes_deletes_and_restarts(apogee):
    server = apogee().start()
    c = server.client()
    for i in range(30):
        c.put(("test", "s1", i), {"a": i})
    for i in range(7):
        c.put(("test", "s2", i), {"a": i})
    c.put(("test", "s1", 0), {"a": "overwrite"})
    c.put(("test", None, "no-set"), {"a": 1})
    for i in range(10):
        c.remove(("test", "s1", i))
    assert set_counts(server.port) == {("test", "s1"): 20, ("test", "s2"): 7}
    assert set_counts(server.port, "sets/test/s2") == {("test", "s2"): 7}
    stats = ns_stats(server.port)
    assert stats["objects"] == "28"
    # Live bytes cover the 28 records (each well over 40 bytes) and the 10 tombstones.
    assert 28 * 40 < int(stats["data_used_bytes"]) < 100_000
    assert stats["data_total_bytes"] == ns_config(server.port)["filesize"]
    assert int(stats["index_used_bytes"]) >= 28 * 52
    assert "ERROR:20" in info(server.port, "sets/nope\n")
    c.close()
    # Counts are rebuilt by recovery: every shard re-counts its sets from the records on disk.
    assert server.stop() == 0
    server.start()
    assert set_counts(server.port) == {("test", "s1"): 20, ("test", "s2"): 7}


def bin_names(port):
    text = info(port, "bins\n").split("\t", 1)[1].strip()
    entry = dict(e.split(":", 1) for e in text.split(";"))["test"].split(",")
    counts = dict(kv.split("=") for kv in entry[:2])
    return int(counts["bin_names"]), sorted(entry[2:])


def test_bins_lists_names_written_and_survives_restart(apogee):
    from aerospike_helpers.operations import list_operations as lo
    server = apogee().start()
    c = server.client()
    assert bin_names(server.port) == (0, [])
    for i in range(20):
        c.put(("test", "demo", i), {"alpha": i, "beta": "x"})
    c.operate(("test", "demo", 0), [lo.list_append("gamma", 1)])
    deadline = time.time() + 5
    while bin_names(server.port)[0] < 3:
        assert time.time() < deadline, bin_names(server.port)
        time.sleep(0.05)
    assert bin_names(server.port) == (3, ["alpha", "beta", "gamma"])
    c.close()
    assert server.stop() == 0
    server.start()
    assert bin_names(server.port) == (3, ["alpha", "beta", "gamma"])


def test_logs_lists_the_one_log_sink_as_aerospike_does(server, client):
    # Aerospike answers `id:path` per sink (the official client's info tests ask for it).
    assert info(server.port, "logs\n") == "logs\t0:stderr\n"
    assert client.info_random_node("logs").strip() == "logs\t0:stderr"
