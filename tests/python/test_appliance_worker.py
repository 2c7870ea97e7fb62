"""The appliance as a cluster's worker hosts. Booted with `lambda.role=worker` under nested
KVM in QEMU TCG, with certificates, keys, the CA certificate and the CRL on its data
disk, it runs `supervisor worker` aw1 with microVM isolation (appliance-init's, restarted
when it dies); the tests start two more worker daemons, aw2 and aw3, beside it, each
with its own identity, link port and run dir. Two TCG appliances with nested guests at
once are more than two cores carry, so the three microVM worker hosts share one L1
kernel. A frontend on this machine reaches them over the mutually authenticated link
(QEMU's forwarded ports), the workers fetch code back from the frontend (QEMU's 10.0.2.2
is this machine's loopback), and boto3's invokes run in microVMs inside the appliance; a
container image's chunks are copied from the frontend as the guest reads them."""

import json
import os
import threading
import time

import pytest

from appliance_harness import Appliance, node_data_disk, free_port, require_appliance
from cluster_harness import cluster_status, make_ca
from image_harness import registry  # noqa: F401 (the module's registry fixture)
from image_harness import (OciLayout, config_file, create_image_function,
                           rust_image_with_ballast)
from invoke_harness import FN_RUST, deploy, has_init_duration, invoke, json_body, shell_zip
from supervisor_harness import ROLE, Supervisor

try:
    import boto3  # noqa: F401
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

# aw1 is appliance-init's worker; aw2 and aw3 are started by the tests. Guest link ports.
WORKERS = {"aw1": 9443, "aw2": 9444, "aw3": 9445}
SUPERVISOR_ARGS = ("--images-dir /usr/share/lambda-microvm/images --isolation auto "
                   "--init-timeout-secs 120")


def start_extra_worker(appliance, worker_id):
    """Starts worker daemon `worker_id` in the appliance beside appliance-init's, with the
    certificates on the data disk and a run dir of its own."""
    rc, out = appliance.shell(
        f"/usr/bin/supervisor worker --id {worker_id} --listen 0.0.0.0:{WORKERS[worker_id]} "
        f"--cluster-dir /data/cluster --log-dir /data/worker-logs-{worker_id} "
        f"--run-dir /run/lambda-{worker_id} {SUPERVISOR_ARGS} "
        f">>/data/{worker_id}.log 2>&1 &")
    assert rc == 0, out


def worker_pid(appliance, worker_id):
    """The pid of worker daemon `worker_id` (busybox has no pgrep)."""
    rc, out = appliance.shell(
        f"ps | grep '[s]upervisor worker --id {worker_id} ' | awk '{{print $1}}'")
    assert rc == 0, out
    pids = out.split()
    return int(pids[0]) if pids else None


def workers_by_id(frontend):
    return {w["id"]: w for w in cluster_status(frontend.endpoint)["workers"]}


def wait_up(appliance, frontend, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = workers_by_id(frontend)
        if all(workers.get(i, {}).get("up") for i in ids):
            return workers
        time.sleep(0.5)
    raise AssertionError(f"workers {ids} not all up: {workers}\n"
                         f"{diagnostics(appliance, frontend)}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, registry):
    require_appliance()
    tmp = tmp_path_factory.mktemp("appliance-worker")
    registries = config_file(tmp / "supervisor.toml", registry)
    ca = tmp / "ca"
    make_ca(ca, workers=list(WORKERS))
    data = node_data_disk(tmp / "disk" / "data.img", ca, "worker", list(WORKERS))
    appliance = Appliance(tmp / "vm", data=data,
                          cmdline="lambda.role=worker lambda.node_id=aw1",
                          serve_args=["--init-timeout-secs", "120"],
                          forward=tuple(WORKERS.values()), ready="worker aw1: listening on")
    link_port = free_port()
    frontend = None
    try:
        appliance.start()
        for w in ("aw2", "aw3"):
            start_extra_worker(appliance, w)
        frontend = Supervisor(tmp / "frontend", extra_args=[
            "--role", "frontend", "--node-id", "fe1", "--cluster-dir", str(ca),
            "--link-listen", f"127.0.0.1:{link_port}",
            "--link-advertise", f"10.0.2.2:{link_port}",
            *(a for w, port in WORKERS.items()
              for a in ("--worker", f"{w}@127.0.0.1:{appliance.ports[port]}")),
            "--config", str(registries)]).start()
        yield appliance, frontend
    finally:
        if frontend:
            frontend.stop()
        appliance.kill()


def diagnostics(appliance, frontend):
    _, extra = appliance.shell("tail -n 20 /data/aw2.log /data/aw3.log", timeout=20)
    return (f"frontend log:\n{frontend.log()[-4000:]}\n"
            f"appliance console:\n{appliance.console_text()[-4000:]}\n"
            f"aw2, aw3:\n{extra}")


def test_the_appliance_worker_runs_a_frontends_invokes_in_microvms(cluster):
    appliance, frontend = cluster
    wait_up(appliance, frontend, WORKERS)
    assert appliance.vmm_processes() == []

    client = frontend.client()
    deploy(client, "aw-python", "python", "app.echo")
    for i in range(2):
        payload = json.dumps({"n": i}).encode()
        r, body, _ = invoke(client, "aw-python", payload=payload)
        assert r["StatusCode"] == 200 and "FunctionError" not in r, (
            body, diagnostics(appliance, frontend))
        assert json_body(body) == {"n": i}
    # It ran in one of the appliance's own microVMs, kept warm for the second invoke.
    vmms = appliance.vmm_processes()
    assert len(vmms) == 1, (vmms, diagnostics(appliance, frontend))
    assert vmms[0][1] != 0, "the vmm runs under an unprivileged host uid"
    # The frontend's picture: this sandbox on one worker, both invokes sent to it (the
    # code it ran came from the frontend over the link: nothing else holds it).
    (worker,) = [w for w in workers_by_id(frontend).values() if w["sandboxes"]]
    assert worker["up"] and worker["sandboxes"] == 1 and worker["invokes_sent"] >= 2, worker


def test_an_image_runs_in_the_worker_appliance_copying_only_the_chunks_it_reads(
        cluster, registry, tmp_path):
    appliance, frontend = cluster
    uri = rust_image_with_ballast(OciLayout(tmp_path / "layout"), registry, FN_RUST)
    client = frontend.client()
    create_image_function(client, "aw-image", uri)
    r, body, _ = invoke(client, "aw-image", b'{"image": "remote"}')
    assert "FunctionError" not in r, (body, diagnostics(appliance, frontend))
    assert json_body(body)["payload"] == {"image": "remote"}
    # The worker host copied from the frontend only what the guest read: a few chunks of
    # the image's 50-odd (24 MiB of it, never read, are 48).
    rc, out = appliance.shell("find /run/lambda*/chunk-copies -type f ! -name '.*' | wc -l")
    assert rc == 0 and 0 < int(out.strip()) <= 12, (out, diagnostics(appliance, frontend))


def sent(frontend):
    return {i: w["invokes_sent"] for i, w in workers_by_id(frontend).items()}


def moved(before, after):
    return sorted(w for w in after if after[w] != before.get(w))


def test_copies_of_a_function_spread_over_the_microvm_workers_and_warm_invokes_stick(cluster):
    """Section 5's placement with microVM sandboxes: three concurrent cold starts of one
    function go to three workers; later invokes reuse the most recently used sandbox."""
    appliance, frontend = cluster
    wait_up(appliance, frontend, WORKERS)
    client = frontend.client()
    deploy(client, "aw-spread", "shell", "function.slow", Timeout=60)
    before = sent(frontend)
    results = []

    def run():
        try:
            results.append(invoke(client, "aw-spread", b'"x"', LogType="Tail"))
        except Exception as e:  # noqa: BLE001 - asserted below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)  # the client gives up after 120 s
    assert len(results) == 3 and all(isinstance(r, tuple) for r in results), (
        results, diagnostics(appliance, frontend))
    assert all(has_init_duration(logs) for _, _, logs in results), results
    after = sent(frontend)
    assert moved(before, after) == sorted(WORKERS), (before, after)
    assert all(after[w] - before[w] == 1 for w in WORKERS), (before, after)
    # Warm: every later invoke goes to one worker, the most recently used sandbox's.
    stuck = set()
    for _ in range(3):
        before = sent(frontend)
        r, body, logs = invoke(client, "aw-spread", b'"x"', LogType="Tail")
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        assert not has_init_duration(logs), f"a warm invoke cold-started:\n{logs}"
        stuck.update(moved(before, sent(frontend)))
    assert len(stuck) == 1, stuck
    assert len(appliance.vmm_processes()) >= 3


NAP_SH = r'''
nap() {
  sleep 40
  cat "$1"
}
'''


def test_a_microvm_worker_killed_mid_invoke_fails_it_clearly_and_rejoins(cluster):
    """SIGKILL the worker daemon running an invoke: the caller gets a ServiceException
    long before the function would have ended, the next invoke runs on another worker,
    the dead worker's microVMs do not outlive it, and a restarted worker rejoins as a
    new incarnation."""
    appliance, frontend = cluster
    wait_up(appliance, frontend, WORKERS)
    client = frontend.client()
    client.create_function(
        FunctionName="aw-nap", Runtime="provided.al2023", Role=ROLE, Handler="function.nap",
        Timeout=120, MemorySize=128, Code={"ZipFile": shell_zip(extra=NAP_SH)})
    result = {}

    def run():
        try:
            invoke(client, "aw-nap", b'"x"')
            result["outcome"] = "succeeded"
        except ClientError as e:
            result["outcome"] = e.response
        result["ended"] = time.monotonic()

    deploy(client, "aw-after", "shell", "function.handler")
    before = sent(frontend)
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while not moved(before, sent(frontend)) and time.monotonic() < deadline:
        time.sleep(0.2)
    placed = moved(before, sent(frontend))
    assert len(placed) == 1, (placed, diagnostics(appliance, frontend))
    victim = placed[0]
    old = workers_by_id(frontend)[victim]
    time.sleep(25)  # well into the cold start, or the nap; either way in flight
    vmms_before = appliance.vmm_processes()
    pid = worker_pid(appliance, victim)
    assert pid, diagnostics(appliance, frontend)
    rc, out = appliance.shell(f"kill -9 {pid}")
    killed = time.monotonic()
    assert rc == 0, out
    t.join(timeout=120)
    assert result.get("outcome") not in (None, "succeeded"), result
    err = result["outcome"]["Error"]
    assert err["Code"] == "ServiceException" and "lost" in err["Message"], err
    assert result["ended"] - killed < 15, "the loss was noticed only when the nap ended"
    # The next invoke runs on a worker still up.
    before = sent(frontend)
    r, body, _ = invoke(client, "aw-after", b'"y"')
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    ran = moved(before, sent(frontend))
    assert len(ran) == 1 and victim not in ran, (victim, ran)
    # Back: appliance-init restarts aw1 by itself; the others are restarted here. The
    # new daemon removes what the dead one left, its microVMs included.
    if victim != "aw1":
        start_extra_worker(appliance, victim)
    now = wait_up(appliance, frontend, [victim], timeout=180)
    assert now[victim]["incarnation"] != old["incarnation"], (old, now[victim])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        vmms = appliance.vmm_processes()
        if len(vmms) < len(vmms_before):
            break
        time.sleep(1)
    assert len(vmms) < len(vmms_before), (vmms_before, vmms)
    r, body, _ = invoke(client, "aw-nap", b'"z"')
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
