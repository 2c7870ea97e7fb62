"""Benchmark of SnapStart in microVMs, inside the appliance under nested KVM: a python3.11
function whose Init takes 3 s (a slow import) is invoked in bursts of concurrent calls,
as a SnapStart published version (each new sandbox resumes the version's snapshot) and
as `$LATEST` (each new sandbox boots and runs Init), in the same run. Reports the cold
starts (REPORT's Restore Duration against Init Duration, and the caller's latency to the
first response), and the memory of the resulting microVMs: resident set against
proportional set (pages shared between the VMs restored from one memory file count once
across them). Then the snapshot at rest: how long sealing it into the vault took, its
sealed size against the memory it holds, and after a reboot of the appliance the first
cold start, which opens the sealed snapshot instead of running Init. Absolute times
under TCG mean little; read the ratios. Writes JSON.

    target/pyenv/bin/python tests/python/bench_appliance_snapstart.py [--out FILE] [--burst N] [--rounds R]
"""

import argparse
import base64
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from appliance_harness import Appliance, require_appliance  # noqa: E402
from invoke_harness import stats  # noqa: E402
from supervisor_harness import REPO, ROLE, make_zip  # noqa: E402

SLEEP_S = 6
APP = b"""
import os, time
time.sleep(3)  # a slow import
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"random": os.urandom(8).hex()}
"""
FIGURE = re.compile(r"(Restore|Init) Duration: ([0-9.]+) ms")


def burst(a, qualifier, n):
    """n concurrent invokes that each hold their sandbox SLEEP_S seconds: returns
    [(kind, Restore or Init Duration ms, latency to the response less the sleep)] of
    the cold starts among them."""
    out = []

    def call():
        c = a.client()
        t = time.perf_counter()
        r = c.invoke(FunctionName="snap", Qualifier=qualifier, LogType="Tail",
                     Payload=json.dumps({"sleep": SLEEP_S}).encode())
        latency = (time.perf_counter() - t - SLEEP_S) * 1000
        r["Payload"].read()
        m = FIGURE.search(base64.b64decode(r["LogResult"]).decode())
        if m:
            out.append((m.group(1), float(m.group(2)), latency))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return out


def memory_kib(a, pids):
    """Summed VmRSS and Pss (KiB) of the given vmm processes."""
    rss = pss = 0
    for pid in pids:
        rc, out = a.shell(f"cat /proc/{pid}/smaps_rollup")
        if rc != 0:
            continue
        rss += sum(int(l.split()[1]) for l in out.splitlines() if l.startswith("Rss:"))
        pss += sum(int(l.split()[1]) for l in out.splitlines() if l.startswith("Pss:"))
    return rss, pss


def measure(a, n, rounds):
    c = a.client()
    c.create_function(FunctionName="snap", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                      Code={"ZipFile": make_zip({"app.py": APP})}, Timeout=120,
                      SnapStart={"ApplyOn": "PublishedVersions"}, Publish=True)
    t = time.perf_counter()
    c.invoke(FunctionName="snap", Qualifier="1", Payload=b"{}")
    first_ms = (time.perf_counter() - t) * 1000
    c.invoke(FunctionName="snap", Payload=b"{}")
    restored, booted = [], []
    pids = {"1": set(), "$LATEST": set()}
    for _ in range(rounds):
        for qualifier, into in (("1", restored), ("$LATEST", booted)):
            before = {p for p, _ in a.vmm_processes()}
            # The warm sandboxes take as many calls, the rest are cold starts.
            warm = len(pids[qualifier]) + 1
            into.extend(burst(a, qualifier, warm + n))
            pids[qualifier] |= {p for p, _ in a.vmm_processes()} - before
    assert all(k == "Restore" for k, _, _ in restored), restored
    assert all(k == "Init" for k, _, _ in booted), booted
    rss_r, pss_r = memory_kib(a, pids["1"])
    rss_b, pss_b = memory_kib(a, pids["$LATEST"])
    restore_ms = [ms for _, ms, _ in restored]
    init_ms = [ms for _, ms, _ in booted]
    return {
        "first_cold_start_with_snapshot_ms": round(first_ms, 1),
        "restore_duration_ms": stats(restore_ms),
        "init_duration_ms": stats(init_ms),
        "restore_to_init_ratio": statistics.median(restore_ms) / statistics.median(init_ms),
        "first_response_restored_ms": stats([l for _, _, l in restored]),
        "first_response_booted_ms": stats([l for _, _, l in booted]),
        "first_response_ratio": statistics.median(l for _, _, l in restored)
        / statistics.median(l for _, _, l in booted),
        "restored_vms": len(pids["1"]),
        "booted_vms": len(pids["$LATEST"]),
        "restored_rss_kib_total": rss_r,
        "restored_pss_kib_total": pss_r,
        "booted_rss_kib_total": rss_b,
        "booted_pss_kib_total": pss_b,
    }


def kib(a, command):
    rc, out = a.shell(command)
    assert rc == 0, out
    return sum(int(line.split()[0]) for line in out.splitlines() if line.strip())


def vault_figures(a):
    """Seal time and size of the version's snapshot, then a reboot and the first cold
    start after it (opened from the vault, then resumed)."""
    sealed_ms = [int(m) for m in re.findall(
        r"snapshot of snap:1 sealed into the vault in (\d+) ms", a.console_text())]
    assert sealed_ms, "the snapshot was sealed"
    copy = "$(find /run -path '*-snapshots/snap.1.*' -name mem | head -1)"
    mem_allocated = kib(a, f"du -k {copy}")
    sealed = kib(a, "du -k -s /data/supervisor/snapshots/snap.1.*")
    a.stop()
    a.start()
    c = a.client()
    t = time.perf_counter()
    r = c.invoke(FunctionName="snap", Qualifier="1", LogType="Tail", Payload=b"{}")
    latency = (time.perf_counter() - t) * 1000
    r["Payload"].read()
    m = FIGURE.search(base64.b64decode(r["LogResult"]).decode())
    assert m and m.group(1) == "Restore", "the first cold start after the reboot resumed"
    opened = re.search(r"snapshot of snap:1 opened from the vault in (\d+) ms", a.console_text())
    assert opened, "it opened the sealed snapshot"
    return {
        "seal_ms": sealed_ms[0],
        "memory_file_allocated_kib": mem_allocated,
        "sealed_snapshot_kib": sealed,
        "after_reboot_open_from_vault_ms": int(opened.group(1)),
        "after_reboot_restore_duration_ms": float(m.group(2)),
        "after_reboot_first_response_ms": round(latency, 1),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(REPO / "target" / "bench" / "appliance-snapstart.json"))
    p.add_argument("--burst", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    require_appliance()
    with tempfile.TemporaryDirectory() as tmp:
        a = Appliance(Path(tmp) / "vm", mem_mib=6144,
                      serve_args=["--init-timeout-secs", "120"])
        a.start()
        try:
            result = measure(a, args.burst, args.rounds)
            result["vault"] = vault_figures(a)
        finally:
            a.kill()
    report = {"bench": "appliance-snapstart", "backend": "microvm (nested KVM under TCG)",
              "burst": args.burst, "rounds": args.rounds, "results": result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
