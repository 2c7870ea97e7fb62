"""The appliance end to end: booted under QEMU TCG with nested SVM, it runs every
sandbox as a jailed microVM under our own vmm (no other VM monitor anywhere), driven
from this machine with boto3 through its forwarded API port. One appliance serves all
these tests; the last one powers it off with the ACPI button and boots it again from
the same data disk."""

import json
import os
import threading
import time

import pytest

from appliance_harness import Appliance, require_appliance
from invoke_harness import PY_EXTRA, deploy, has_init_duration, invoke, json_body, report_line

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


def test_function_error_shape(client):
    deploy(client, "vm-error", "rust", "error")
    r, body, _ = invoke(client, "vm-error")
    assert r["FunctionError"] == "Unhandled"
    doc = error_of(body)
    assert doc["errorType"] == "FunctionError" and doc["errorMessage"] == "deliberate failure"


def test_timeout_destroys_the_microvm(appliance, client):
    deploy(client, "vm-sleep", "rust", "sleep", Timeout=3)
    before = len(appliance.vmm_processes())
    r, body, logs = invoke(client, "vm-sleep", LogType="Tail")
    doc = error_of(body)
    assert doc["errorType"] == "Sandbox.Timedout", doc
    assert doc["errorMessage"].endswith("Task timed out after 3.00 seconds"), doc
    assert "Status: timeout" in report_line(logs)
    wait_for(lambda: len(appliance.vmm_processes()) == before, 30, "the timed-out microVM to go")


def test_runtime_exit_is_an_exit_error(client):
    deploy(client, "vm-die", "shell", "function.die")
    r, body, logs = invoke(client, "vm-die", LogType="Tail")
    doc = error_of(body)
    rid = r["ResponseMetadata"]["RequestId"]
    assert doc["errorType"] == "Runtime.ExitError", doc
    assert doc["errorMessage"] == f"RequestId: {rid} Error: Runtime exited with error: exit status 7", doc
    assert "Status: error\tError Type: Runtime.ExitError" in report_line(logs)


def test_running_out_of_guest_memory_is_out_of_memory(client):
    deploy(client, "vm-oom", "python", "app.oom", MemorySize=128, Timeout=60)
    r, body, _ = invoke(client, "vm-oom")
    doc = error_of(body)
    assert doc["errorType"] == "Runtime.OutOfMemory", doc


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


def test_an_event_accepted_before_a_reboot_runs_after_it(appliance, client):
    deploy(client, "vm-event", "shell", "function.handler")
    # Throttled to nothing, the event must wait in the durable queue.
    client.put_function_concurrency(FunctionName="vm-event", ReservedConcurrentExecutions=0)
    r = client.invoke(FunctionName="vm-event", InvocationType="Event", Payload=b'{"after": "reboot"}')
    assert r["StatusCode"] == 202
    rid = r["ResponseMetadata"]["RequestId"]
    appliance.stop()
    assert appliance.proc.returncode == 0
    text = appliance.console_text()
    assert "appliance-init: power button pressed" in text, text[-3000:]
    assert "supervisor: shut down cleanly" in text, text[-3000:]
    assert "data disk synced and unmounted" in text, text[-3000:]
    appliance.start()
    assert "checked and mounted" in appliance.console_text()
    client = appliance.client()
    assert "vm-event" in [f["FunctionName"] for f in client.list_functions()["Functions"]]
    client.delete_function_concurrency(FunctionName="vm-event")
    log = "/data/supervisor/logs/vm-event/\\$LATEST.log"

    def ran():
        rc, out = appliance.shell(f"cat {log} 2>/dev/null")
        return f"END RequestId: {rid}" in out

    wait_for(ran, 240, "the stored event to run after the reboot")

