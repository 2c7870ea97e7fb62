"""A worker's lease: near its end it drains (no new invokes, in-flight ones finish),
then rejoins as a new incarnation; no invoke fails. Its own module: its network reuses
the addresses of `test_cluster.py`'s, which must be gone first."""

import re
import time

import pytest

from cluster_harness import FRONTEND_ADDR, SUBNET, Frontend, Network, WorkerDaemon, make_ca
from invoke_harness import deploy, invoke, require_process_backend

try:
    import boto3  # noqa: F401
except ImportError:
    import os
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)



def test_lease_expiry_drains_a_worker_without_failing_an_invoke_and_it_rejoins(tmp_path):
    require_process_backend()
    ca = tmp_path / "ca"
    make_ca(ca, ("l1", "l2"))
    with Network("b") as net:
        fe_ns = net.add_host("fe", FRONTEND_ADDR)
        short = WorkerDaemon(net.add_host("l1", f"{SUBNET}.11"), "l1", f"{SUBNET}.11", ca, tmp_path,
                             "--lease-secs", "8", "--rejoin").start()
        steady = WorkerDaemon(net.add_host("l2", f"{SUBNET}.12"), "l2", f"{SUBNET}.12", ca, tmp_path).start()
        fe = Frontend(fe_ns, tmp_path / "data", ca, [short.link, steady.link]).start()
        try:
            fe.wait_workers(2)
            client = fe.client()
            deploy(client, "leased", "shell", "function.handler", Timeout=3)
            first = {w["address"]: w["incarnation"] for w in fe.cluster_status()["workers"]}
            failures, count = [], 0
            t_end = time.time() + 14
            while time.time() < t_end:
                try:
                    r, _, _ = invoke(client, "leased", b'{"k":"v"}')
                    assert r["StatusCode"] == 200 and "FunctionError" not in r
                    count += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    failures.append(repr(e))
                time.sleep(0.1)
            assert not failures, failures
            assert count > 20
            incarnations = re.findall(r"incarnation ([0-9a-f]{16})", short.log())
            assert len(incarnations) >= 2 and "draining" in short.log(), short.log()
            deadline = time.time() + 5
            while time.time() < deadline:
                now = {w["address"]: w["incarnation"] for w in fe.wait_workers(2)["workers"]}
                if now[short.link] == incarnations[-1]:
                    break
                time.sleep(0.2)
            assert now[short.link] == incarnations[-1], (now, incarnations)
            assert now[steady.link] == first[steady.link]
        finally:
            fe.stop()
            short.stop()
            steady.stop()
