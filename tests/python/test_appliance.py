"""The appliance end to end: booted under QEMU TCG with nested SVM, it runs every
sandbox as a jailed microVM under our own vmm (no other VM monitor anywhere), driven
from this machine with boto3 through its forwarded API port. One appliance serves all
these tests (boto3 and the AWS CLI); the last ones power it off with the ACPI button
while an invoke is in flight, boot it again from the same data disk, and stop it with
SIGTERM to its PID 1."""

import base64
import json
import os
import re
import subprocess
import threading
import time

import pytest

from appliance_harness import CREDENTIALS, Appliance, require_appliance
from invoke_harness import (LAYER_TOOLS, PY_EXTRA, deploy, has_init_duration, invoke, json_body,
                            layer_reader_zip, report_line, shell_zip)
from supervisor_harness import REGION, ROLE, make_zip

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

PY_REMAINING = '''

def remaining(event, context):
    return {"remaining_ms": context.get_remaining_time_in_millis()}
'''


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    require_appliance()
    a = Appliance(tmp_path_factory.mktemp("appliance"),
                  # Nested TCG boots take seconds; retries of throttled events come fast.
                  serve_args=["--init-timeout-secs", "120", "--event-retry-base-ms", "500"])
    a.start()
    yield a
    a.kill()


@pytest.fixture(scope="module")
def client(appliance):
    return appliance.client()


def error_of(body):
    doc = json_body(body)
    # Lambda's error shape has one level: the message is text, not another document.
    assert not doc["errorMessage"].lstrip().startswith("{"), doc
    return doc


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_boots_with_microvm_isolation_and_says_why(appliance):
    text = appliance.console_text()
    assert "supervisor: isolation auto: microvm (/dev/kvm is usable" in text, text[-3000:]
    assert "was blank: formatted ext4 (first boot)" in text
    assert "kvm: /dev/kvm is present" in text


def test_runtimes_each_in_their_own_microvm(appliance, client):
    before = appliance.vmm_processes()
    cases = [("vm-shell", "shell", "function.handler"), ("vm-rust", "rust", "echo"),
             ("vm-python", "python", "app.echo")]
    for name, kind, handler in cases:
        deploy(client, name, kind, handler, Timeout=30)
    for name, _, _ in cases:
        event = {"from": name, "data": "y" * 512}
        r, body, logs = invoke(client, name, json.dumps(event).encode(), LogType="Tail")
        assert "FunctionError" not in r, (body, logs)
        assert json_body(body) == event
        assert has_init_duration(logs), logs
    after = appliance.vmm_processes()
    assert len(after) == len(before) + 3, (before, after)
    # One jail per microVM: each vmm runs under its own host uid.
    assert len({uid for _, uid in after}) == len(after), after
    for name, _, _ in cases:
        r, body, logs = invoke(client, name, b'{"again": true}', LogType="Tail")
        assert json_body(body) == {"again": True}
        assert not has_init_duration(logs), logs
        assert report_line(logs).startswith(f"REPORT RequestId: {r['ResponseMetadata']['RequestId']}")
    assert len(appliance.vmm_processes()) == len(after), "warm invokes start no microVM"


def aws(appliance, *args):
    """Runs `aws lambda ARGS` against the appliance; returns its standard output."""
    key, secret = appliance.credentials
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run(["aws", "--endpoint-url", appliance.endpoint, "--cli-read-timeout", "600",
                           "lambda", *args], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_aws_cli_deploys_and_invokes_through_a_microvm(appliance, tmp_path):
    package = tmp_path / "function.zip"
    package.write_bytes(shell_zip())
    before = {pid for pid, _ in appliance.vmm_processes()}
    created = json.loads(aws(appliance, "create-function", "--function-name", "vm-cli",
                             "--runtime", "provided.al2023", "--handler", "function.handler",
                             "--role", ROLE, "--zip-file", f"fileb://{package}", "--timeout", "30"))
    assert created["FunctionName"] == "vm-cli" and created["State"] == "Active", created
    out = tmp_path / "out.json"
    meta = json.loads(aws(appliance, "invoke", "--function-name", "vm-cli", "--payload",
                          '{"cli": true}', "--log-type", "Tail", str(out)))
    assert meta["StatusCode"] == 200 and "FunctionError" not in meta, meta
    assert json.loads(out.read_text()) == {"cli": True}
    assert "Init Duration:" in base64.b64decode(meta["LogResult"]).decode()
    # Its own microVM: exactly one new vmm.
    assert len({pid for pid, _ in appliance.vmm_processes()} - before) == 1
    meta = json.loads(aws(appliance, "invoke", "--function-name", "vm-cli", "--invocation-type",
                          "Event", "--payload", '{"cli": "event"}', str(out)))
    assert meta["StatusCode"] == 202, meta
    listed = json.loads(aws(appliance, "list-functions"))
    assert "vm-cli" in [f["FunctionName"] for f in listed["Functions"]]
    log = "/data/supervisor/logs/vm-cli/\\$LATEST.log"
    wait_for(lambda: appliance.shell(f"grep -c '^END RequestId' {log}")[1].strip() == "2", 120,
             "the Event invocation to run")


def test_function_error_shape(client):
    deploy(client, "vm-error", "rust", "error")
    r, body, _ = invoke(client, "vm-error")
    assert r["FunctionError"] == "Unhandled"
    doc = error_of(body)
    assert doc["errorType"] == "FunctionError" and doc["errorMessage"] == "deliberate failure"


def test_timeout_destroys_the_microvm(appliance, client):
    deploy(client, "vm-sleep", "rust", "sleep", Timeout=3)
    before = {pid for pid, _ in appliance.vmm_processes()}
    r, body, logs = invoke(client, "vm-sleep", LogType="Tail")
    doc = error_of(body)
    assert doc["errorType"] == "Sandbox.Timedout", doc
    assert doc["errorMessage"].endswith("Task timed out after 3.00 seconds"), doc
    assert "Status: timeout" in report_line(logs)
    # The microVM started for it is gone (others may have been reaped meanwhile too).
    wait_for(lambda: {pid for pid, _ in appliance.vmm_processes()} <= before, 30,
             "the timed-out microVM to go")


def test_runtime_exit_is_an_exit_error(client):
    deploy(client, "vm-die", "shell", "function.die")
    r, body, logs = invoke(client, "vm-die", LogType="Tail")
    doc = error_of(body)
    rid = r["ResponseMetadata"]["RequestId"]
    assert doc["errorType"] == "Runtime.ExitError", doc
    assert doc["errorMessage"] == f"RequestId: {rid} Error: Runtime exited with error: exit status 7", doc
    assert "Status: error\tError Type: Runtime.ExitError" in report_line(logs)


def test_running_out_of_guest_memory_is_out_of_memory(appliance, client):
    deploy(client, "vm-oom", "python", "app.oom", MemorySize=128, Timeout=60)
    r, body, _ = invoke(client, "vm-oom")
    doc = error_of(body)
    # The supervisor's log (on the appliance console) explains a lost guest.
    assert doc["errorType"] == "Runtime.OutOfMemory", (doc, appliance.console_text()[-6000:])


def test_remaining_time_never_exceeds_the_timeout(client):
    from invoke_harness import FUNCTIONS, ROLE, make_zip

    app = (FUNCTIONS / "python" / "app.py").read_text() + PY_EXTRA + PY_REMAINING
    client.create_function(FunctionName="vm-remaining", Runtime="python3.11", Role=ROLE,
                           Handler="app.remaining", Timeout=3,
                           Code={"ZipFile": make_zip({"app.py": app.encode()})})
    for _ in range(2):
        r, body, _ = invoke(client, "vm-remaining")
        left = json_body(body)["remaining_ms"]
        # The guest's clock may lag the host's; the deadline it gives the runtime must not.
        assert 1500 < left <= 3000, left


def test_reserved_concurrency_throttles_the_excess(client):
    deploy(client, "vm-slow", "shell", "function.slow", Timeout=30)
    invoke(client, "vm-slow")  # cold start out of the way
    client.put_function_concurrency(FunctionName="vm-slow", ReservedConcurrentExecutions=1)
    results = []

    def call():
        try:
            results.append(client.invoke(FunctionName="vm-slow", Payload=b"{}")["StatusCode"])
        except client.exceptions.TooManyRequestsException:
            results.append(429)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[0] == 200 and 429 in results, results
    client.delete_function_concurrency(FunctionName="vm-slow")


def test_a_sandbox_never_serves_another_function(client):
    for name in ("vm-owner-a", "vm-owner-b"):
        deploy(client, name, "shell", "function.owner")
    for _ in range(2):
        for name in ("vm-owner-a", "vm-owner-b"):
            _, body, _ = invoke(client, name)
            assert json_body(body) == {"owner": name, "me": name}


def test_layers_are_a_read_only_opt_drive_in_the_microvm(client):
    tools = client.publish_layer_version(LayerName="vm-tools",
                                         Content={"ZipFile": make_zip(LAYER_TOOLS)})
    over = client.publish_layer_version(LayerName="vm-over", Content={"ZipFile": make_zip({
        "etc/shared.txt": (b"second", 0o644)})})
    client.create_function(FunctionName="vm-layers", Runtime="provided.al2023", Role=ROLE,
                           Handler="function.handler", Code={"ZipFile": layer_reader_zip()},
                           Layers=[tools["LayerVersionArn"], over["LayerVersionArn"]],
                           Timeout=30)
    _, body, logs = invoke(client, "vm-layers", LogType="Tail")
    assert json_body(body) == {"tool": "tool-from-first", "a": "only-in-first",
                               "shared": "second", "opt": "read-only"}, (body, logs)


def test_the_guest_kernel_boots_without_timer_or_xsave_warnings(appliance):
    """Our vmm straight from the appliance's shell, the guest kernel not quiet: the
    TSC-deadline timer spares it the LAPIC calibration that fails under nesting, and the
    XSAVE state KVM cannot track here is detected and hidden (no `noxsave` given)."""
    images = "/usr/share/lambda-microvm/images"
    rc, out = appliance.shell(
        f"/usr/bin/vmm --kernel {images}/vmlinux --rootfs {images}/rootfs-provided.ext4 "
        "--rootfs-read-only --mem-mib 128 --cmdline 'console=ttyS0 reboot=k panic=-1 "
        "pci=off gi.exec=/bin/true' 2>&1", timeout=300)
    assert rc == 0, out[-3000:]
    assert "boot-to-init=" in out, out[-3000:]
    for warning in ("APIC timer disabled", "XSAVE consistency problem", "Hammer"):
        assert warning not in out, out


SNAP = "/tmp/vm-snapshot"
IMAGES = "/usr/share/lambda-microvm/images"
# The guest's console counts and says its wall clock once a second.
TICKER = "i=0; while true; do i=$((i+1)); echo tick-$i-$(date +%s); sleep 1; done"
TICK = re.compile(r"tick-(\d+)-(\d+)")
SNAP_DRIVES = f"--rootfs {IMAGES}/rootfs-provided.ext4 --rootfs-read-only"


def signal_vmms(appliance, signal, pattern):
    """The appliance's busybox has no pkill: find the vmm processes by command line."""
    appliance.shell(f"kill -{signal} $(ps | grep '[{pattern[0]}]{pattern[1:]}' | awk '{{print $1}}')")


def ticks(appliance, name):
    return [(int(n), int(t)) for n, t in TICK.findall(appliance.shell(f"cat {SNAP}/{name}")[1])]


def test_a_snapshot_of_a_running_linux_guest_resumes_in_new_vmms(appliance):
    """Our vmm pauses a running Linux guest on SIGUSR1 and writes its snapshot; two new
    vmm processes resume it at once from the same files (memory mapped copy-on-write):
    each continues the console's count where the snapshot stopped it, its timers work,
    and its wall clock has moved on to the host's instead of resuming in the past."""
    appliance.shell(f"rm -rf {SNAP} && mkdir {SNAP}")
    appliance.shell(
        f"(/usr/bin/vmm --kernel {IMAGES}/vmlinux {SNAP_DRIVES} --mem-mib 64 "
        f"--cmdline 'console=ttyS0 quiet reboot=k panic=-1 pci=off gi.exec=\"{TICKER}\"' "
        f"--snapshot-state {SNAP}/state --snapshot-mem {SNAP}/mem --snapshot-exit "
        f"> {SNAP}/boot.out 2> {SNAP}/boot.err; echo $? > {SNAP}/boot.rc) &")
    wait_for(lambda: len(ticks(appliance, "boot.out")) >= 3, 300, "the guest's ticks")
    signal_vmms(appliance, "USR1", f"snapshot-state {SNAP}/state")
    wait_for(lambda: appliance.shell(f"cat {SNAP}/boot.rc")[0] == 0, 180, "the snapshot")
    rc, err = appliance.shell(f"cat {SNAP}/boot.rc {SNAP}/boot.err")
    assert err.startswith("4\n") and "snapshot taken" in err, err[-3000:]
    last, taken_at = ticks(appliance, "boot.out")[-1]
    time.sleep(5)  # the restored clocks must show this gap
    for copy in (1, 2):
        appliance.shell(
            f"/usr/bin/vmm --restore-state {SNAP}/state --restore-mem {SNAP}/mem {SNAP_DRIVES} "
            f"> {SNAP}/r{copy}.out 2> {SNAP}/r{copy}.err &")
    for copy in (1, 2):
        wait_for(lambda: len(ticks(appliance, f"r{copy}.out")) >= 3, 180, f"copy {copy}'s ticks")
    host_now = int(appliance.shell("date +%s")[1])
    signal_vmms(appliance, "TERM", f"restore-state {SNAP}/state")
    for copy in (1, 2):
        resumed = ticks(appliance, f"r{copy}.out")
        err = appliance.shell(f"cat {SNAP}/r{copy}.err")[1]
        assert "restored from snapshot" in err, err[-3000:]
        counts = [n for n, _ in resumed]
        assert counts[0] == last + 1, (last, resumed)
        assert counts == list(range(last + 1, last + 1 + len(counts))), resumed
        # Wall clock: past the snapshot by at least the wait, and near the host's now.
        assert resumed[0][1] >= taken_at + 5, (taken_at, resumed)
        assert abs(resumed[-1][1] - host_now) <= 5, (host_now, resumed)
    appliance.shell(f"rm -rf {SNAP}")


SNAP_FN = """
import os, time, uuid
time.sleep(3)  # an Init that imports something slow
INIT_RANDOM = os.urandom(8).hex()  # drawn in Init: every copy restored from one snapshot has it
MARKER = "-".join(["snapstart", "memory", "marker"])  # in guest memory only, not in the code


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"random": os.urandom(16).hex(), "uuid": str(uuid.uuid4()),
            "init_random": INIT_RANDOM, "request": context.aws_request_id}
"""


def restore_duration(logs):
    m = re.search(r"Restore Duration: ([0-9.]+) ms", report_line(logs))
    return float(m.group(1)) if m else None


def max_memory_used(logs):
    return int(re.search(r"Max Memory Used: ([0-9]+) MB", report_line(logs)).group(1))


def init_duration(logs):
    m = re.search(r"Init Duration: ([0-9.]+) ms", report_line(logs))
    return float(m.group(1)) if m else None


def test_snapstart_resumes_published_versions_from_a_snapshot(appliance, client):
    """SnapStart on a published python3.11 version: the first cold start boots, runs
    Init once and snapshots the microVM; it and every later cold start resume from the
    snapshot (REPORT says Restore Duration, no Init Duration) and skip the slow Init.
    Copies resumed from one snapshot share what Init drew, but each reseeded its
    kernel RNG: their os.urandom and uuid4 values differ."""
    client.create_function(FunctionName="vm-snap", Runtime="python3.11", Role=ROLE,
                           Handler="app.handler", Code={"ZipFile": make_zip({"app.py": SNAP_FN.encode()})},
                           Timeout=60, SnapStart={"ApplyOn": "PublishedVersions"}, Publish=True)
    latest = client.get_function_configuration(FunctionName="vm-snap")["SnapStart"]
    assert latest == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}, latest
    v1 = client.get_function_configuration(FunctionName="vm-snap", Qualifier="1")["SnapStart"]
    assert v1 == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}, v1

    _, body, logs = invoke(client, "vm-snap", b"{}", Qualifier="1", LogType="Tail")
    first = json_body(body)
    assert init_duration(logs) is None and restore_duration(logs) is not None, logs
    # The Init the snapshot was taken after is reported once, as Lambda does for it.
    m = re.search(r"INIT_REPORT Init Duration: ([0-9.]+) ms", logs)
    assert m and float(m.group(1)) >= 3000, logs
    assert "Billed Restore Duration:" in report_line(logs), logs
    assert "SnapStart: snapshot of vm-snap:1 taken" in appliance.console_text()
    # $LATEST is not snapshotted: its cold start runs the slow Init.
    _, _, latest_logs = invoke(client, "vm-snap", b"{}", LogType="Tail")
    assert init_duration(latest_logs) >= 3000, latest_logs

    # Three at once: two more sandboxes, each resumed from the same snapshot.
    results = [None] * 3

    def call(i):
        results[i] = hold(appliance)

    concurrently(call, 3)
    docs = [json_body(r[1]) for r in results] + [first]
    restores = [restore_duration(r[2]) for r in results if restore_duration(r[2]) is not None]
    assert len(restores) >= 2, [r[2] for r in results]
    assert all(init_duration(r[2]) is None for r in results), [r[2] for r in results]
    assert len({d["init_random"] for d in docs}) == 1, docs
    assert len({d["random"] for d in docs}) == len(docs), docs
    assert len({d["uuid"] for d in docs}) == len(docs), docs
    # Resuming skips the 3 s Init the $LATEST cold start paid.
    assert max(restores) < init_duration(latest_logs), (restores, latest_logs)
    # A resumed VM's memory counts the pages it maps from the snapshot, as a booted one's
    # counts what it loaded itself.
    resumed_mb = [max_memory_used(r[2]) for r in results]
    assert min(resumed_mb) >= max_memory_used(latest_logs) // 2, (resumed_mb, latest_logs)
    snapshots_are_sealed_at_rest(appliance)
    snapstart_falls_back_to_a_boot_when_the_snapshot_fails(appliance)


SNAP_MARKER = "snapstart-memory-marker"
VAULT = "/data/supervisor/snapshots"


def wait_until_sealed(appliance):
    """Every snapshot of vm-snap:1 taken on this boot has been sealed into the vault."""
    def sealed():
        text = appliance.console_text()
        taken = text.count("SnapStart: snapshot of vm-snap:1 taken")
        return taken and text.count("SnapStart: snapshot of vm-snap:1 sealed into the vault") >= taken
    wait_for(sealed, 120, "the snapshot to be sealed into the vault")


def snapshots_are_sealed_at_rest(appliance):
    """The snapshot's memory holds what Init left (the marker); its copy on the data
    disk holds the same files sealed, and not the marker."""
    wait_until_sealed(appliance)
    rc, out = appliance.shell(f"ls {VAULT}/vm-snap.1.*/")
    assert rc == 0 and {"state", "mem", "code.ext4", "meta.sealed"} <= set(out.split()), out
    rc, out = appliance.shell(
        f"grep -z -l -F {SNAP_MARKER} $(find /run -path '*-snapshots/vm-snap.1.*' -name mem)")
    assert rc == 0 and "/mem" in out, f"the marker is in the memory a restore maps: {out}"
    rc, out = appliance.shell(f"grep -z -r -l -F {SNAP_MARKER} {VAULT}; echo done")
    assert rc == 0 and out.strip() == "done", f"plaintext in the vault: {out}"


HOOK_FN = """
from snapshot_restore_py import register_after_restore


def broken():
    raise RuntimeError("after-restore hook broke")


register_after_restore(broken)


def handler(event, context):
    return "unreachable"
"""


def test_a_failing_after_restore_hook_is_a_snapstart_exception(appliance, client):
    """awslambdaric runs the function's after-restore hook in the resumed guest; it
    raises, the runtime reports it on /restore/error, and the caller gets Lambda's
    SnapStartException (400), not a function error or a second Init."""
    client.create_function(FunctionName="vm-snap-hook", Runtime="python3.11", Role=ROLE,
                           Handler="app.handler", Code={"ZipFile": make_zip({"app.py": HOOK_FN.encode()})},
                           Timeout=30, SnapStart={"ApplyOn": "PublishedVersions"}, Publish=True)
    version = "1"
    try:
        client.invoke(FunctionName="vm-snap-hook", Qualifier=version, Payload=b"{}")
        failed = None
    except client.exceptions.SnapStartException as e:
        failed = e
    if failed is None:
        # No snapshot was taken, so the cold start booted (the worker's fallback, tested
        # in the SnapStart test). Seen once in CI: the nested guest taking the snapshot
        # crashed (a triple fault under QEMU TCG). Once more, on a new version.
        console = appliance.console_text()
        assert "SnapStart: no snapshot of vm-snap-hook:1" in console, console[-3000:]
        client.update_function_configuration(FunctionName="vm-snap-hook", Description="again")
        version = client.publish_version(FunctionName="vm-snap-hook")["Version"]
        with pytest.raises(client.exceptions.SnapStartException) as info:
            client.invoke(FunctionName="vm-snap-hook", Qualifier=version, Payload=b"{}")
        failed = info.value
    assert failed.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "after-restore hook broke" in str(failed), failed
    rc, out = appliance.shell(f"cat /data/supervisor/logs/vm-snap-hook/{version}.log")
    assert rc == 0 and "INIT_REPORT Init Duration: " in out, out
    assert "after-restore hook broke" in out, "the hook's traceback is in the function's log"
    assert out.count("Init Duration") == 1, f"no second Init ran: {out}"


def ensure_a_snapstart_snapshot(appliance, client):
    """vm-snap:1 and its sealed snapshot (made here when the SnapStart test did not run)."""
    names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
    if "vm-snap" not in names:
        client.create_function(FunctionName="vm-snap", Runtime="python3.11", Role=ROLE,
                               Handler="app.handler", Timeout=60, Publish=True,
                               Code={"ZipFile": make_zip({"app.py": SNAP_FN.encode()})},
                               SnapStart={"ApplyOn": "PublishedVersions"})
        invoke(client, "vm-snap", b"{}", Qualifier="1")
    wait_until_sealed(appliance)


def hold(appliance):
    """An invoke of vm-snap:1 that keeps its sandbox busy for 4 s."""
    return invoke(appliance.client(), "vm-snap", b'{"sleep": 4}', Qualifier="1", LogType="Tail")


def concurrently(call, n):
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def snapstart_falls_back_to_a_boot_when_the_snapshot_fails(appliance):
    """The snapshot's state file cut short: the next cold start's resume is refused, the
    snapshot dropped, and the sandbox boots and runs Init instead, answering as usual;
    the cold start after it takes a new snapshot and resumes again."""
    rc, out = appliance.shell(
        "for f in $(find /run -path '*-snapshots/vm-snap.1.*' -name state); do "
        "head -c 1000 $f > $f.cut && mv $f.cut $f && echo cut $f; done")
    assert rc == 0 and "cut " in out, out
    for warm_plus_one, expect in ((4, init_duration), (5, restore_duration)):
        results = [None] * warm_plus_one

        def call(i):
            results[i] = hold(appliance)

        concurrently(call, warm_plus_one)
        assert all("random" in json_body(r[1]) for r in results), results
        cold = [r[2] for r in results if init_duration(r[2]) or restore_duration(r[2])]
        assert len(cold) == 1 and expect(cold[0]) is not None, cold
    console = appliance.console_text()
    assert "resuming vm-snap:1 from its snapshot failed" in console, console[-3000:]
    assert console.count("SnapStart: snapshot of vm-snap:1 taken") == 2, console[-3000:]


def test_an_event_accepted_before_a_reboot_runs_after_it(appliance, client):
    ensure_a_snapstart_snapshot(appliance, client)
    deploy(client, "vm-event", "shell", "function.handler")
    # Throttled to nothing, the event must wait in the durable queue.
    client.put_function_concurrency(FunctionName="vm-event", ReservedConcurrentExecutions=0)
    r = client.invoke(FunctionName="vm-event", InvocationType="Event", Payload=b'{"after": "reboot"}')
    assert r["StatusCode"] == 202
    rid = r["ResponseMetadata"]["RequestId"]
    # An invoke in flight when the power button is pressed still gets its answer.
    deploy(client, "vm-inflight", "shell", "function.linger", Timeout=60)
    invoke(client, "vm-inflight", b'{"warm": 1}')  # started, so the next one runs at once
    answer = {}

    def call():
        answer["body"] = invoke(appliance.client(), "vm-inflight", b'{"in": "flight"}')[1]
        answer["at"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(3)  # the function sleeps 8 s
    pressed = time.monotonic()
    appliance.stop()
    caller.join(60)
    assert json_body(answer["body"]) == {"in": "flight"}, answer
    assert answer["at"] > pressed, "the invoke was in flight when the button was pressed"
    assert appliance.proc.returncode == 0
    text = appliance.console_text()
    assert "appliance-init: power button pressed" in text, text[-3000:]
    assert "supervisor: shut down cleanly" in text, text[-3000:]
    assert "data disk synced and unmounted" in text, text[-3000:]
    appliance.start()
    second_boot = appliance.console_text()
    assert "checked and mounted" in second_boot
    assert CREDENTIALS.search(second_boot) is None, "credentials are printed on first boot only"
    client = appliance.client()
    assert "vm-event" in [f["FunctionName"] for f in client.list_functions()["Functions"]]
    client.delete_function_concurrency(FunctionName="vm-event")
    log = "/data/supervisor/logs/vm-event/\\$LATEST.log"

    def ran():
        rc, out = appliance.shell(f"cat {log} 2>/dev/null")
        return f"END RequestId: {rid}" in out

    wait_for(ran, 240, "the stored event to run after the reboot")
    snapstart_resumes_from_the_vault_after_a_reboot(appliance, client)


def snapstart_resumes_from_the_vault_after_a_reboot(appliance, client):
    """The vault outlives the supervisor: after the reboot, the first cold start of
    vm-snap:1 opens its sealed snapshot and resumes, with no new Init or snapshot."""
    _, body, logs = invoke(client, "vm-snap", b"{}", Qualifier="1", LogType="Tail")
    assert "random" in json_body(body), body
    text = appliance.console_text()
    worker_lines = "\n".join(l for l in text.splitlines() if "worker:" in l)
    assert init_duration(logs) is None and restore_duration(logs) is not None, (logs, worker_lines)
    assert "SnapStart: snapshot of vm-snap:1 opened from the vault" in text, text[-3000:]
    assert "SnapStart: snapshot of vm-snap:1 taken" not in text, text[-3000:]


def test_sigterm_to_pid_1_shuts_down_cleanly(appliance):
    # Delayed, so the shell reports before PID 1's shutdown signals it.
    appliance.shell("(sleep 1; kill -TERM 1) &")
    assert appliance.wait_exit(180) == 0
    text = appliance.console_text()
    assert "supervisor: shut down cleanly" in text, text[-3000:]
    assert "data disk synced and unmounted" in text, text[-3000:]
