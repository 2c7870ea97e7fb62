"""Benchmark of the appliance under nested KVM (QEMU TCG emulating SVM, our vmm inside):
boot to supervisor ready, microVM cold start by stage, warm invoke latency through a
microVM against a process sandbox in the same L1, the vmm's memory beyond guest RAM,
and microVMs per GiB. Absolute times under TCG mean little; read the ratios. Writes JSON.

    target/pyenv/bin/python tests/python/bench_appliance.py [--out FILE] [--cold N] [--warm N]
"""

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from appliance_harness import Appliance, require_appliance  # noqa: E402
from invoke_harness import deploy, invoke, report_line, stats  # noqa: E402
from supervisor_harness import REPO  # noqa: E402

READY = re.compile(
    r"worker: sandbox \S+ \((?P<fn>[^:]+):\$LATEST, (?P<backend>\w+)\) ready in (?P<total>\d+) ms"
    r"(?:: jail\+vmm spawned (?P<spawn>\d+) ms)?(?:, first KVM_RUN (?P<run>\d+) ms after vmm start)?"
    r"(?:, guest kernel to init (?P<kernel>\d+) ms)?(?:, guest-init connected (?P<conn>\d+) ms)?")
DURATION = re.compile(r"Duration: ([\d.]+) ms")


def cold_starts(a, c, n):
    """n cold starts per runtime; the worker's log line gives the stages."""
    out = {}
    for kind, handler in (("rust", "echo"), ("shell", "function.handler"), ("python", "app.echo")):
        client_ms, stages = [], {k: [] for k in ("spawn", "run", "kernel", "conn", "total")}
        for i in range(n):
            name = f"cold-{kind}-{i}"
            deploy(c, name, kind, handler, Timeout=60)
            t = time.monotonic()
            _, _, logs = invoke(c, name, b'{"cold": true}', LogType="Tail")
            client_ms.append((time.monotonic() - t) * 1000)
            assert "Init Duration" in report_line(logs)
        for m in READY.finditer(a.console_text()):
            if m["fn"].startswith(f"cold-{kind}-"):
                for k in stages:
                    if m[k]:
                        stages[k].append(float(m[k]))
        out[kind] = {
            "first_response_ms": stats(client_ms),
            "jail_and_vmm_spawned_ms": stats(stages["spawn"]),
            "vmm_start_to_first_kvm_run_ms": stats(stages["run"]),
            "guest_kernel_to_init_ms": stats(stages["kernel"]),
            "guest_init_connected_ms": stats(stages["conn"]),
            "init_done_ms": stats(stages["total"]),
        }
    return out


def warm(c, name, n):
    client_ms, inside_ms = [], []
    for _ in range(5):
        invoke(c, name, b'{"warm": 0}')
    for i in range(n):
        t = time.monotonic()
        _, _, logs = invoke(c, name, json.dumps({"warm": i}).encode(), LogType="Tail")
        client_ms.append((time.monotonic() - t) * 1000)
        inside_ms.append(float(DURATION.search(report_line(logs)).group(1)))
    return {"client_ms": stats(client_ms), "report_duration_ms": stats(inside_ms)}


def start_process_supervisor(a):
    """A second supervisor in the same appliance, with process isolation, on port 9001."""
    key, secret = a.credentials
    rc, out = a.shell(
        f"SUPERVISOR_ACCESS_KEY_ID={key} SUPERVISOR_SECRET_ACCESS_KEY='{secret}' "
        "/usr/bin/supervisor serve --isolation process --listen 0.0.0.0:9001 "
        "--data-dir /tmp/bench-process --images-dir /usr/share/lambda-microvm/images "
        "--run-dir /run/lambda-process >/tmp/bench-process.log 2>&1 &")
    assert rc == 0, out
    for _ in range(120):
        rc, out = a.shell("cat /tmp/bench-process.log")
        if "listening on" in out:
            return
        time.sleep(1)
    raise RuntimeError(f"process supervisor did not start:\n{out}")


def process_client(a):
    import boto3
    from botocore.config import Config

    key, secret = a.credentials
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{a.ports[9001]}",
                        region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=600))


def smaps_mappings(text):
    """[(start, end, rss KiB)] of each mapping in a /proc/PID/smaps text, in address order."""
    maps = []
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            maps.append([int(head.group(1), 16), int(head.group(2), 16), 0])
        elif line.startswith("Rss:") and maps:
            maps[-1][2] = int(line.split()[1])
    return maps


def guest_ram_rss(maps, size):
    """RSS (KiB) of guest RAM: the run of adjacent mappings spanning exactly `size` bytes.
    The guest kernel's segments are mapped over guest RAM from the page cache, which
    splits it into several mappings (anonymous and file-backed)."""
    for i in range(len(maps)):
        end, rss = maps[i][0], 0
        for start, stop, kib in maps[i:]:
            if start != end or stop - maps[i][0] > size:
                break
            end, rss = stop, rss + kib
            if end - maps[i][0] == size:
                return rss
    return None


def vmm_memory(a, mem_mib):
    """RSS of each vmm process beyond its guest RAM (KiB)."""
    overheads = []
    for pid, _ in a.vmm_processes():
        rc, out = a.shell(f"cat /proc/{pid}/smaps")
        if rc != 0:
            continue
        maps = smaps_mappings(out)
        guest = guest_ram_rss(maps, mem_mib << 20)
        assert guest is not None, f"no guest RAM mapping of {mem_mib} MiB in vmm {pid}"
        overheads.append(sum(kib for _, _, kib in maps) - guest)
    return stats(overheads)


def mem_available_kib(a):
    rc, out = a.shell("awk '/^MemAvailable:/ {print $2}' /proc/meminfo")
    return int(out.strip())


def density(a, c, n):
    """Idle 128 MB microVMs: host memory each costs, and how many fit in a GiB."""
    before = mem_available_kib(a)
    for i in range(n):
        deploy(c, f"dense-{i}", "rust", "echo", MemorySize=128)
        invoke(c, f"dense-{i}")
    time.sleep(2)
    after = mem_available_kib(a)
    per_vm_mib = (before - after) / n / 1024
    return {"microvms": n, "memory_size_mb": 128, "host_mib_per_microvm": round(per_vm_mib, 1),
            "microvms_per_gib": round(1024 / per_vm_mib, 1) if per_vm_mib > 0 else None}


BOOT_TO_INIT = re.compile(r"boot-to-init=([\d.]+) s")
GUEST_CMDLINE = "console=ttyS0 root=/dev/vda ro rootfstype=ext4 panic=-1 quiet reboot=k noxsave"
# What the guest runs through guest-init's debug hook before it powers off: nothing, or
# the Python runtime client's import (its tree comes through virtio-blk).
WORKLOADS = {
    "true": ("rootfs-provided.ext4", "/bin/true"),
    "python": ("rootfs-python3.11.ext4", "PYTHONPATH=/var/runtime /usr/bin/python3 -c import\\ awslambdaric"),
}


def tools_disk(workdir, reference_vmm):
    """An ext4 image holding the reference VMM, attached read-only as /dev/vdb."""
    import shutil
    import subprocess

    tree = Path(workdir) / "tools"
    tree.mkdir(exist_ok=True)
    shutil.copy(reference_vmm, tree / "vmm-reference")
    img = Path(workdir) / "tools.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img), "64M"], check=True)
    return img


def direct_boot(a, vmm, workload, extra=""):
    """One VM booted by `vmm` straight from the shell (no jail, no worker): guest-init
    runs the workload's command and powers off. Returns (guest boot-to-init by the
    guest's clock, vmm exec to exit by L1's clock), in ms."""
    images = "/usr/share/lambda-microvm/images"
    rootfs, command = WORKLOADS[workload]
    rc, out = a.shell(
        f"t0=$(cut -d' ' -f1 /proc/uptime); {vmm} --kernel {images}/vmlinux --rootfs {images}/{rootfs} "
        f"--rootfs-read-only --mem-mib 128 {extra} --cmdline '{GUEST_CMDLINE} gi.exec=\"{command}\"' "
        "2>/dev/null; echo rc=$? t0=$t0 t1=$(cut -d' ' -f1 /proc/uptime)", timeout=300)
    boot = BOOT_TO_INIT.search(out)
    # /proc/uptime: 10 ms resolution (busybox date has no %N).
    wall = re.search(r"rc=(\d+) t0=([\d.]+) t1=([\d.]+)", out)
    assert boot and wall and wall.group(1) == "0", out[-2000:]
    assert "guest-init: exec status: 0" in out, out[-2000:]
    return float(boot.group(1)) * 1000, (float(wall.group(3)) - float(wall.group(2))) * 1000


def vmm_ab(a, rounds, workload):
    """This build's vmm against a reference vmm binary, interleaved, same guest."""
    rc, out = a.shell("mkdir -p /mnt/tools && (grep -q ' /mnt/tools ' /proc/mounts || "
                      "mount -o ro /dev/vdb /mnt/tools) && ls /mnt/tools")
    assert rc == 0 and "vmm-reference" in out, out
    runs = {"this": {"boot_to_init_ms": [], "exec_to_exit_ms": []},
            "reference": {"boot_to_init_ms": [], "exec_to_exit_ms": []}}
    for i in range(rounds):
        order = [("this", "/usr/bin/vmm"), ("reference", "/mnt/tools/vmm-reference")]
        for label, vmm in (order if i % 2 == 0 else order[::-1]):
            boot, wall = direct_boot(a, vmm, workload)
            runs[label]["boot_to_init_ms"].append(boot)
            runs[label]["exec_to_exit_ms"].append(wall)
    out = {"workload": workload, "rounds": rounds}
    out.update({k: {m: stats(v) for m, v in r.items()} for k, r in runs.items()})
    out["ratio_this_to_reference"] = {
        m: round(out["this"][m]["p50"] / out["reference"][m]["p50"], 3) for m in runs["this"]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "target" / "bench" / "appliance.json"))
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--dense", type=int, default=8)
    ap.add_argument("--reference-vmm", help="a vmm binary to compare with (e.g. an earlier build)")
    ap.add_argument("--ab-rounds", type=int, default=10)
    ap.add_argument("--ab-workload", choices=sorted(WORKLOADS), action="append",
                    help="what the A/B guests run (repeatable; default: true)")
    ap.add_argument("--only-ab", action="store_true", help="run only the vmm comparison")
    args = ap.parse_args()
    require_appliance()
    workdir = tempfile.mkdtemp(prefix="bench-appliance-")
    drives = [tools_disk(workdir, args.reference_vmm)] if args.reference_vmm else []
    a = Appliance(workdir, forward=[9001], drives=drives, serve_args=["--init-timeout-secs", "120"])
    a.start()
    try:
        c = a.client()
        result = {"l1_boot_to_supervisor_ready_s": round(a.ready_after, 2)}
        if args.reference_vmm:
            result["vmm_direct_boot_ab"] = [vmm_ab(a, args.ab_rounds, w)
                                             for w in args.ab_workload or ["true"]]
        if args.only_ab:
            raise StopIteration
        result["cold_start"] = cold_starts(a, c, args.cold)
        deploy(c, "warm-vm", "rust", "echo")
        result["warm_microvm"] = warm(c, "warm-vm", args.warm)
        start_process_supervisor(a)
        pc = process_client(a)
        deploy(pc, "warm-proc", "rust", "echo")
        result["warm_process"] = warm(pc, "warm-proc", args.warm)
        vm, pr = result["warm_microvm"], result["warm_process"]
        result["warm_ratio_microvm_to_process"] = {
            "client_p50": round(vm["client_ms"]["p50"] / pr["client_ms"]["p50"], 3),
            "report_duration_p50": round(vm["report_duration_ms"]["p50"] / pr["report_duration_ms"]["p50"], 3),
        }
        result["vmm_rss_beyond_guest_ram_kib"] = vmm_memory(a, 128)
        result["density"] = density(a, c, args.dense)
    except StopIteration:
        pass
    finally:
        a.kill()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
