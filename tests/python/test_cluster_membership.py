"""Issue 13's topology: three etcd members, two frontends and three workers, each in its
own network namespace. Workers register in etcd under a lease; the frontends are given
no worker addresses and place invokes on whatever workers are registered. A worker whose
lease lapses (frozen with SIGSTOP) leaves placement within the TTL and is placed invokes
again once it runs; a worker that stops leaves at once."""

import signal
import time

import pytest

from cluster_harness import SUBNET, Frontend, Network, WorkerDaemon, make_ca
from etcd_harness import EtcdCluster, all_values, master_key_file
from invoke_harness import deploy, invoke, require_process_backend

try:
    from botocore.exceptions import ClientError  # noqa: F401
except ImportError:
    import os
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

WORKERS = ("w1", "w2", "w3")
FRONTENDS = ("fe1", "fe2")
TTL = 3
SHELL = "function.handler"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_process_backend()
    root = tmp_path_factory.mktemp("membership")
    ca = root / "ca"
    make_ca(ca, WORKERS, FRONTENDS)
    key = master_key_file(root / "master.key")
    with Network("m") as net:
        hosts = [(net.add_host(f"e{i}", f"{SUBNET}.{31 + i}"), f"{SUBNET}.{31 + i}") for i in range(3)]
        etcd = EtcdCluster(root / "etcd", hosts=hosts).start()
        member = ("--etcd", etcd.urls, "--member-ttl-secs", str(TTL))
        workers = {}
        try:
            for i, w in enumerate(WORKERS):
                addr = f"{SUBNET}.{11 + i}"
                workers[w] = WorkerDaemon(net.add_host(w, addr), w, addr, ca, root, *member).start()
            frontends = []
            for i, f in enumerate(FRONTENDS):
                addr = f"{SUBNET}.{1 + i}"
                frontends.append(Frontend(net.add_host(f, addr), root / f, ca, [],
                                          (*member, "--master-key-file", str(key)),
                                          addr=addr, node_id=f).start())
            for fe in frontends:
                fe.wait_workers(3)
            yield etcd, frontends, workers
        finally:
            for fe in locals().get("frontends", []):
                fe.stop()
            for d in workers.values():
                d.stop()
            etcd.stop()


def rows(fe):
    return {w["id"]: w for w in fe.cluster_status()["workers"]}


def placeable(row):
    return row is not None and row["listed"] and row["up"] and not row["draining"]


def listed(fe, worker):
    row = rows(fe).get(worker)
    return row is not None and row["listed"]


def registered(etcd):
    """The worker ids registered in etcd now (read from a live member)."""
    member = next(m for m in etcd.members if m.proc and m.proc.poll() is None)
    keys = all_values(member, "/lambda-microvm/members/worker/")
    return {k.decode().rsplit("/", 1)[1] for k in keys}


def wait_for(what, check, timeout):
    """Polls `check` until it returns something truthy; returns it and the seconds taken."""
    started = time.time()
    while True:
        got = check()
        if got:
            return got, time.time() - started
        assert time.time() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def test_frontends_given_no_workers_place_on_the_workers_registered_in_etcd(cluster):
    _, (a, b), _ = cluster
    for fe in (a, b):
        seen = rows(fe)
        assert set(seen) == set(WORKERS), seen
        assert all(placeable(r) for r in seen.values()), seen
        assert {r["address"] for r in seen.values()} == {f"{SUBNET}.{11 + i}:7100" for i in range(3)}
    deploy(a.client(), "members-echo", "shell", SHELL)
    for fe in (b, a):
        r, body, _ = invoke(fe.client(), "members-echo", b'{"via":"etcd"}')
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    sent = sum(r["invokes_sent"] for fe in (a, b) for r in rows(fe).values())
    assert sent >= 2


def test_a_frozen_worker_leaves_placement_within_its_ttl_and_rejoins_when_resumed(cluster):
    etcd, (a, b), workers = cluster
    frozen = workers["w1"]
    deploy(a.client(), "members-frozen", "shell", SHELL)
    incarnation = rows(a)["w1"]["incarnation"]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        for fe in (a, b):
            # Its etcd lease lapses within the TTL (plus etcd's lease check, about 0.5 s,
            # and the watch): off the list, whatever its link says.
            _, took = wait_for("w1 off the list", lambda: not listed(fe, "w1"), TTL + 3)
            print(f"{fe.node_id}: frozen w1 off the list after {took:.2f}s")
            assert not placeable(rows(fe).get("w1"))
        assert registered(etcd) == {"w2", "w3"}
        before = {fe: rows(fe).get("w1", {}).get("invokes_sent", 0) for fe in (a, b)}
        for fe in (a, b):
            for _ in range(4):
                r, body, _ = invoke(fe.client(), "members-frozen", b'{"w1":"frozen"}')
                assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        after = {fe: rows(fe).get("w1", {}).get("invokes_sent", 0) for fe in (a, b)}
        assert after == before, "an invoke was placed on the frozen worker"
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    for fe in (a, b):
        # Resumed, it finds its lease gone and registers under a new one.
        row, took = wait_for("w1 placeable again", lambda: (lambda r: r if placeable(r) else None)(
            rows(fe).get("w1")), TTL + 10)
        print(f"{fe.node_id}: resumed w1 placeable after {took:.2f}s more")
        assert row["incarnation"] == incarnation, "frozen, not restarted: same incarnation"
    assert registered(etcd) == set(WORKERS)


def test_a_stopped_worker_leaves_at_once_and_a_new_one_joins(cluster):
    etcd, (a, b), workers = cluster
    leaving = workers["w3"]
    leaving.stop()
    # It revoked its lease on the way out: its entry is gone already, not in TTL seconds.
    assert registered(etcd) == {"w1", "w2"}
    for fe in (a, b):
        wait_for("w3 gone", lambda: not listed(fe, "w3") and not placeable(rows(fe).get("w3")), 2)
    deploy(b.client(), "members-two-left", "shell", SHELL)
    r, body, _ = invoke(a.client(), "members-two-left")
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    leaving.start()
    for fe in (a, b):
        wait_for("w3 back", lambda: placeable(rows(fe).get("w3")), 10)
    assert registered(etcd) == set(WORKERS)


def test_one_etcd_member_killed_changes_nothing_visible(cluster):
    etcd, (a, b), _ = cluster
    victim = etcd.members[0]
    victim.kill()
    try:
        deploy(a.client(), "members-one-etcd-down", "shell", SHELL)
        for fe in (b, a):
            r, body, _ = invoke(fe.client(), "members-one-etcd-down")
            assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        # Registrations live on: no worker leaves placement while a quorum remains.
        time.sleep(TTL + 1)
        for fe in (a, b):
            assert all(placeable(r) for r in rows(fe).values()), rows(fe)
            assert len(rows(fe)) == 3
    finally:
        victim.start()
        etcd.wait_healthy([victim])


def test_a_killed_frontend_leaves_the_other_serving(cluster):
    _, (a, b), _ = cluster
    deploy(a.client(), "members-fe-killed", "shell", SHELL)
    a.kill9()
    try:
        r, body, _ = invoke(b.client(), "members-fe-killed", b'{"after":"kill"}')
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    finally:
        a.start()
        a.wait_workers(3)
