"""Secondary indexes and UDF modules in a 3-node Apogee cluster: both are cluster metadata. An
index created through one node exists on every member (each indexes the partitions it
holds), so a query the client sends to all nodes finds every matching record; a member that
was down while indexes were created and deleted learns both when it returns, and keeps them
across its own restart. Real processes on loopback, the official Python client; every wait
is bounded."""

import base64

import aerospike
from aerospike import predicates as p

from conftest import wait_for
from test_cluster import NODE_IDS, REFORM_SECS_MAX, Cluster, one, wait_client_nodes  # noqa: F401
from test_cluster import cluster  # noqa: F401  (the fixture)

SPREAD_SECS_MAX = 20


def index_names(port):
    listed = one(port, "sindex-list:ns=test")
    return {kv.split("=", 1)[1] for e in listed.split(";") if e
            for kv in e.split(":") if kv.startswith("indexname=")}


def built_everywhere(cluster, name):
    return all("load_pct=100" in one(n.port, f"sindex/test/{name}") for n in cluster.live())


def query_keys(client, lo, hi):
    q = client.query("test", "sx")
    q.where(p.between("v", lo, hi))
    keys = [r[2]["k"] for r in q.results()]
    assert len(keys) == len(set(keys)), "a record came back twice"
    return set(keys)


def test_an_index_created_on_one_node_is_queried_on_every_node(cluster):  # noqa: F811
    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)]}).connect()
    wait_client_nodes(client, 3)
    for i in range(600):
        client.put(("test", "sx", i), {"v": i % 50, "k": i})
    a = cluster.nodes[0].port
    assert one(a, "sindex-create:ns=test;set=sx;indexname=sx_v;indexdata=v,numeric") == "ok"
    wait_for(lambda: built_everywhere(cluster, "sx_v"),
             "sx_v built on every member", timeout=SPREAD_SECS_MAX)
    assert query_keys(client, 10, 19) == {i for i in range(600) if 10 <= i % 50 <= 19}
    # Writes after the index exists are indexed on whichever node masters them.
    for i in range(600, 700):
        client.put(("test", "sx", i), {"v": 7, "k": i})
    assert query_keys(client, 7, 7) == {i for i in range(700) if i >= 600 or i % 50 == 7}

    # C3 is down while sx_v is deleted (through B2) and sx_w created (through A1).
    c3 = cluster.nodes[2]
    assert c3.stop() == 0
    cluster.wait_formed(NODE_IDS[:2], secs=REFORM_SECS_MAX)
    b = cluster.nodes[1].port
    assert one(b, "sindex-delete:ns=test;indexname=sx_v") == "ok"
    assert one(a, "sindex-create:ns=test;set=sx;indexname=sx_w;indexdata=w,string") == "ok"
    for n in cluster.nodes[:2]:
        wait_for(lambda n=n: index_names(n.port) == {"sx_w"},
                 f"node {n.port} has only sx_w", timeout=SPREAD_SECS_MAX)
    c3.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    wait_for(lambda: index_names(c3.port) == {"sx_w"},
             "C3 learns the delete and the create", timeout=SPREAD_SECS_MAX)
    # Durable there: after its own restart it still has exactly those.
    assert c3.stop() == 0
    c3.start()
    assert index_names(c3.port) == {"sx_w"}
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    wait_for(lambda: built_everywhere(cluster, "sx_w"),
             "sx_w built on every member", timeout=SPREAD_SECS_MAX)
    client.close()


def udf_names(port):
    listed = one(port, "udf-list")
    return {e.split(",")[0].split("=", 1)[1] for e in listed.split(";") if e.startswith("filename=")}


def put_udf(port, name, source):
    content = base64.b64encode(source.encode()).decode()
    return one(port, f"udf-put:filename={name};content={content};content-len={len(content)};udf-type=LUA;")


ADD = "function add(r, b, n) r[b] = (r[b] or 0) + n; aerospike:update(r); return r[b] end\n"


def test_a_udf_module_registered_on_one_node_runs_on_every_node(cluster):  # noqa: F811
    # UDF modules are cluster metadata too: registered through one node, a module runs on
    # whichever node masters a key; a member down while modules change learns it on return.
    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)]}).connect()
    wait_client_nodes(client, 3)
    a, b = cluster.nodes[0].port, cluster.nodes[1].port
    assert put_udf(a, "cm.lua", ADD) == "ok"
    wait_for(lambda: all(udf_names(n.port) == {"cm.lua"} for n in cluster.live()),
             "cm.lua on every member", timeout=SPREAD_SECS_MAX)
    # 60 keys land on all three masters (about 20 each).
    assert [client.apply(("test", "cu", i), "cm", "add", ["v", i]) for i in range(60)] == list(range(60))
    c3 = cluster.nodes[2]
    assert c3.stop() == 0
    cluster.wait_formed(NODE_IDS[:2], secs=REFORM_SECS_MAX)
    assert put_udf(b, "cm2.lua", ADD) == "ok"
    assert one(a, "udf-remove:filename=cm.lua") == "ok"
    c3.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    wait_for(lambda: udf_names(c3.port) == {"cm2.lua"},
             "C3 learns the new module and the removal", timeout=SPREAD_SECS_MAX)
    client.close()
