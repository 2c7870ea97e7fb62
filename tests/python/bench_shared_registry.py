"""Bench: the shared registry (`--etcd`, a real three-member etcd on loopback) against
the embedded SQLite registry, in the same run and interleaved: CreateFunction latency,
warm Invoke latency and throughput, and what the cluster-wide concurrency check (a slot
of the account's pool, or of a function's reservation) adds to an invoke: the embedded
frontend makes none. Writes target/bench/shared-registry.json.

    target/pyenv/bin/python tests/python/bench_shared_registry.py [--creates 30] [--invokes 300]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from etcd_harness import EtcdCluster, master_key_file  # noqa: E402
from invoke_harness import deploy, invoke, start_supervisor  # noqa: E402
from supervisor_harness import REPO  # noqa: E402


def ms(samples):
    s = sorted(samples)
    return {"p50_ms": round(statistics.median(s) * 1e3, 3),
            "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3, 3), "n": len(s)}


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def throughput(sup, name, clients=8, seconds=5.0):
    """Invokes/s with `clients` threads, each with its own connection, and the
    throttles by reason."""
    from botocore.exceptions import ClientError

    deadline = time.perf_counter() + seconds
    throttles = {}

    def loop(_):
        c, n = sup.client(), 0
        while time.perf_counter() < deadline:
            try:
                invoke(c, name)
                n += 1
            except ClientError as e:
                reason = e.response.get("Reason", e.response["Error"]["Code"])
                throttles[reason] = throttles.get(reason, 0) + 1
        return n

    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(loop, range(clients)))
    return {"per_s": round(done / seconds, 1), "refused": throttles}


def added(samples):
    """p50 over the embedded frontend's, in ms: account slot, reserved slot."""
    base = statistics.median(samples["sqlite"])
    return {"account": round((statistics.median(samples["etcd"]) - base) * 1e3, 3),
            "reserved": round((statistics.median(samples["etcd-reserved"]) - base) * 1e3, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=30)
    ap.add_argument("--invokes", type=int, default=300)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    etcd = EtcdCluster(work / "etcd").start()
    key = master_key_file(work / "master.key")
    embedded = start_supervisor(work / "embedded")
    shared = start_supervisor(work / "shared", "--etcd", etcd.urls, "--master-key-file", str(key))
    sides = {"sqlite": embedded, "etcd": shared}
    try:
        creates = {k: [] for k in sides}
        for i in range(args.creates):
            for k, sup in sides.items():
                c = sup.client()
                creates[k].append(timed(lambda: deploy(c, f"bench-{i}", "shell", "function.handler")))
        for k, sup in sides.items():
            deploy(sup.client(), "warm", "rust", "echo")
        deploy(shared.client(), "warm-reserved", "rust", "echo")
        shared.client().put_function_concurrency(FunctionName="warm-reserved",
                                                 ReservedConcurrentExecutions=50)
        time.sleep(1)
        targets = {"sqlite": (embedded, "warm"), "etcd": (shared, "warm"),
                   "etcd-reserved": (shared, "warm-reserved")}
        clients = {k: sup.client() for k, (sup, _) in targets.items()}
        for k, (sup, name) in targets.items():
            for _ in range(20):
                invoke(clients[k], name)
        warm = {k: [] for k in targets}
        for _ in range(args.invokes):
            for k, (sup, name) in targets.items():
                warm[k].append(timed(lambda: invoke(clients[k], name)))
        # Spaced past the frontend's slot hold (100 ms): each invoke with etcd takes a
        # slot from etcd.
        spaced = {k: [] for k in targets}
        for _ in range(40):
            for k in spaced:
                sup, name = targets[k]
                spaced[k].append(timed(lambda: invoke(clients[k], name)))
                time.sleep(0.15)
        rates = {k: throughput(sup, name) for k, (sup, name) in targets.items()}
        out = {
            "machine": "2 CPUs; etcd members, frontends and sandboxes on one host (loopback)",
            "create_function": {k: ms(v) for k, v in creates.items()},
            "warm_invoke_1_client": {k: ms(v) for k, v in warm.items()},
            "warm_invokes_per_s_8_clients": rates,
            # Back-to-back invokes reuse the slot the previous one gave back.
            "concurrency_check_p50_added_ms": added(warm),
            "spaced_invoke": {k: ms(v) for k, v in spaced.items()},
            "concurrency_check_spaced_p50_added_ms": added(spaced),
        }
    finally:
        for sup in sides.values():
            sup.stop()
        etcd.stop()
    dest = REPO / "target" / "bench" / "shared-registry.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
