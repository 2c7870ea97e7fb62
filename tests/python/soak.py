"""Soak: mixed invokes against one real supervisor (process isolation, loopback only)
for a bounded time, sampling the supervisor's and the sandboxes' memory and
descriptors, then checking that nothing is left behind.

    python3 tests/python/soak.py [--duration 600] [--clients 3] [--out target/bench/soak.json]

The mix: warm invokes, cold starts (a configuration update makes the next invoke start
a new sandbox), function errors, timeouts, response streaming and Event invocations.
Every invoke's outcome is checked; anything else counts as an unexpected error.
Flatness: after the warm-up (the first quarter), among the samples taken at the usual
number of live sandbox processes, the median of the last third is compared with the
median of the first third, per series.
Writes JSON; exits non-zero when a goal is missed (--check, the default).
"""

import argparse
import base64
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from invoke_harness import deploy, metric_value, metrics, start_supervisor  # noqa: E402
from supervisor_harness import REPO  # noqa: E402

# Operation weights of the mix.
MIX = {"warm": 50, "error": 10, "timeout": 4, "stream": 14, "cold": 6, "event": 16}
FLAT_TOLERANCE = 0.05


def page_kib():
    return os.sysconf("SC_PAGE_SIZE") // 1024


def proc_tree(root):
    """Pids of `root` and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * page_kib()
    except (OSError, IndexError, ValueError):
        return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def sample(sup_pid, seen):
    """One sample; adds every sandbox process (pid, start time) to `seen`."""
    tree = proc_tree(sup_pid)
    sandboxes = [p for p in tree if p != sup_pid]
    seen.update((p, start_time(p)) for p in sandboxes)
    return {
        "t": time.time(),
        "supervisor_rss_kib": rss_kib(sup_pid),
        "supervisor_fds": fd_count(sup_pid),
        "sandbox_processes": len(sandboxes),
        "sandbox_rss_kib": sum(rss_kib(p) for p in sandboxes),
        "sandbox_fds": sum(fd_count(p) for p in sandboxes),
    }


class Mix:
    """The functions and one checked operation of each kind."""

    def __init__(self, client):
        self.client = client
        self.cold_lock = threading.Lock()
        self.cold_rev = 0
        self.events_sent = 0
        self.lock = threading.Lock()
        for name, handler, timeout in [("soak-echo", "echo", 10), ("soak-error", "error", 10),
                                       ("soak-sleep", "sleep", 1), ("soak-stream", "stream", 10),
                                       ("soak-cold", "echo", 10)]:
            deploy(client, name, "rust", handler, Timeout=timeout)

    def invoke(self, name, payload, **kw):
        r = self.client.invoke(FunctionName=name, Payload=payload, **kw)
        return r, r["Payload"].read()

    def warm(self, i):
        payload = json.dumps({"n": i, "pad": "x" * (i % 2048)}).encode()
        r, body = self.invoke("soak-echo", payload)
        ok = r["StatusCode"] == 200 and "FunctionError" not in r and json.loads(body) == json.loads(payload)
        return ok, body

    def error(self, i):
        r, body = self.invoke("soak-error", b"{}")
        return r.get("FunctionError") == "Unhandled" and b"FunctionError" in body, body

    def timeout(self, i):
        r, body = self.invoke("soak-sleep", b"{}")
        return r.get("FunctionError") == "Unhandled" and b"Task timed out" in body, body

    def stream(self, i):
        r = self.client.invoke_with_response_stream(FunctionName="soak-stream", Payload=b"{}")
        data, complete = b"", None
        for ev in r["EventStream"]:
            if "PayloadChunk" in ev:
                data += ev["PayloadChunk"]["Payload"]
            if "InvokeComplete" in ev:
                complete = ev["InvokeComplete"]
        # The function streams an HTTP response: a JSON prelude, 8 NULs, then the body.
        prelude, sep, body = data.partition(b"\0" * 8)
        ok = (sep and json.loads(prelude).get("statusCode") == 200
              and body == b"chunk-1 chunk-2 chunk-3"
              and complete is not None and "ErrorCode" not in complete)
        return ok, data

    def cold(self, i):
        # A new configuration revision: the next invoke cannot reuse a sandbox.
        with self.cold_lock:
            self.cold_rev += 1
            rev = self.cold_rev
            self.client.update_function_configuration(
                FunctionName="soak-cold", Environment={"Variables": {"REV": str(rev)}})
            r, body = self.invoke("soak-cold", json.dumps({"rev": rev}).encode(), LogType="Tail")
        logs = base64.b64decode(r.get("LogResult", "")).decode(errors="replace")
        return "FunctionError" not in r and json.loads(body) == {"rev": rev} and "Init Duration" in logs, body

    def event(self, i):
        r = self.client.invoke(FunctionName="soak-echo", InvocationType="Event",
                               Payload=json.dumps({"event": i}).encode())
        with self.lock:
            self.events_sent += 1
        return r["StatusCode"] == 202, b""


def client_loop(mix, deadline, seed, counts, failures):
    rnd = random.Random(seed)
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    i = 0
    while time.time() < deadline:
        kind = rnd.choices(kinds, weights)[0]
        i += 1
        try:
            ok, detail = getattr(mix, kind)(i)
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            ok, detail = False, repr(e).encode()
        with mix.lock:
            counts[kind] = counts.get(kind, 0) + 1
            if not ok:
                failures.append({"kind": kind, "detail": detail[:300].decode(errors="replace")})


def flatness(samples, key):
    n = len(samples)
    if n < 6:
        return None
    third = max(1, n // 3)
    first = statistics.median(s[key] for s in samples[:third])
    last = statistics.median(s[key] for s in samples[-third:])
    change = (last - first) / first if first else (0.0 if last == 0 else float("inf"))
    return {"first_median": first, "last_median": last, "change": round(change, 4)}


def at_usual_pool_size(samples):
    """The samples taken with the most common number of live sandbox processes. One
    sandbox more or fewer (the pool follows the load) moves every series by its share;
    a leak shows as growth at the same pool size. All samples when too few match."""
    if not samples:
        return samples
    counts = statistics.multimode(s["sandbox_processes"] for s in samples)
    usual = [s for s in samples if s["sandbox_processes"] == max(counts)]
    return usual if len(usual) >= 6 else samples


def leftovers(data_dir, seen):
    """What a stopped supervisor must not leave: sandbox processes, mounts, cgroups."""
    found = [f"sandbox process {pid} still runs" for pid, t in seen
             if t is not None and start_time(pid) == t]
    marker = str(data_dir.parent)
    for line in open("/proc/self/mountinfo"):
        if marker in line or "/lambda-microvm/" in line.split()[4]:
            found.append(f"mount {line.split()[4]}")
    for cg in sandbox_cgroup_parents():
        subs = [e for e in os.listdir(cg) if os.path.isdir(os.path.join(cg, e))]
        if subs:
            found.append(f"cgroups left under {cg}: {subs[:5]}")
    return found


def sandbox_cgroup_parents():
    """The worker's `lambda-worker` groups below this process's cgroups (v1 and v2)."""
    out = []
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        roots = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] if not controllers else \
            [f"/sys/fs/cgroup/{c}" for c in controllers.split(",")]
        for root in roots:
            cg = os.path.join(root + path, "lambda-worker")
            if os.path.isdir(cg):
                out.append(cg)
    return out


def wait_for_events(sup, sent, timeout=120):
    deadline = time.time() + timeout
    done = 0
    while time.time() < deadline:
        text = metrics(sup)
        done = metric_value(text, "supervisor_events_total", outcome="succeeded")
        if done >= sent:
            # A second run of some event would show up a little later.
            time.sleep(2)
            return int(metric_value(metrics(sup), "supervisor_events_total", outcome="succeeded"))
        time.sleep(1)
    return int(done)


def run(duration, clients, data_dir, interval):
    sup = start_supervisor(data_dir)
    client = sup.client()
    mix = Mix(client)
    counts, failures, samples, seen = {}, [], [], set()
    deadline = time.time() + duration
    threads = [threading.Thread(target=client_loop, args=(mix, deadline, n, counts, failures))
               for n in range(clients)]
    started = time.time()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append(sample(sup.proc.pid, seen))
        time.sleep(interval)
    for t in threads:
        t.join()
    events_done = wait_for_events(sup, mix.events_sent)
    final = sample(sup.proc.pid, seen)
    rc = sup.stop()
    time.sleep(1)
    warm = at_usual_pool_size(samples[len(samples) // 4:])
    series = ["supervisor_rss_kib", "supervisor_fds", "sandbox_processes", "sandbox_rss_kib", "sandbox_fds"]
    return {
        "duration_s": round(time.time() - started, 1),
        "clients": clients,
        "invokes": counts,
        "invokes_total": sum(counts.values()),
        "unexpected_errors": len(failures),
        "failures": failures[:20],
        "events_sent": mix.events_sent,
        "events_succeeded": events_done,
        "cold_starts_forced": mix.cold_rev,
        "flatness_after_warmup": {k: flatness(warm, k) for k in series},
        "final_sample": final,
        "supervisor_exit_code": rc,
        "sandbox_processes_seen": len(seen),
        "left_behind": leftovers(data_dir, seen),
        "samples": samples,
    }


def goals(result):
    """Goals missed, as readable strings."""
    missed = []
    if result["unexpected_errors"]:
        missed.append(f"{result['unexpected_errors']} unexpected errors: {result['failures'][:3]}")
    # Each event succeeds exactly once: fewer were lost, more ran twice.
    if result["events_succeeded"] != result["events_sent"]:
        missed.append(f"events: {result['events_succeeded']} succeeded of {result['events_sent']} sent")
    for key in ["supervisor_rss_kib", "supervisor_fds", "sandbox_rss_kib", "sandbox_fds"]:
        f = result["flatness_after_warmup"][key]
        if f is None:
            missed.append(f"{key}: too few samples")
        elif f["change"] > FLAT_TOLERANCE:
            missed.append(f"{key} grew {f['change']:.1%} after warm-up ({f['first_median']} -> {f['last_median']})")
    if result["left_behind"]:
        missed.append(f"left behind: {result['left_behind'][:5]}")
    if result["supervisor_exit_code"] != 0:
        missed.append(f"supervisor exited with {result['supervisor_exit_code']}")
    return missed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--out", default=str(REPO / "target" / "bench" / "soak.json"))
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    import tempfile
    base = Path(args.data_dir or tempfile.mkdtemp(prefix="soak-"))
    result = run(args.duration, args.clients, base / "data", args.interval)
    result["goals_missed"] = goals(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k not in ("samples", "failures")}
    print(json.dumps(summary, indent=2))
    sys.exit(1 if result["goals_missed"] else 0)


if __name__ == "__main__":
    main()
