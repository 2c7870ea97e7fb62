"""Pool settings of `supervisor serve`: sandbox lease, pre-warming, host concurrency limit."""

import json
import os
import threading
import time

import pytest

from invoke_harness import (FUNCTIONS, deploy, has_init_duration, invoke, json_body, metric_value,
                            metrics, start_supervisor)
from supervisor_harness import ROLE, Supervisor, make_zip

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)


def test_sandbox_lease_expires_even_when_busy_enough(tmp_path):
    sup = start_supervisor(tmp_path / "data", "--sandbox-lease-secs", "2", "--idle-timeout-secs", "600")
    try:
        client = sup.client()
        deploy(client, "leased", "rust", "echo")
        started = time.monotonic()
        _, _, first = invoke(client, "leased", LogType="Tail")
        assert has_init_duration(first)
        recycled = False
        # Used every 200 ms (never idle long), yet replaced once the 2 s lease runs out.
        while time.monotonic() < started + 6:
            _, _, logs = invoke(client, "leased", LogType="Tail")
            if has_init_duration(logs):
                assert time.monotonic() - started >= 1.9, "replaced before the lease ended"
                recycled = True
                break
            time.sleep(0.2)
        assert recycled, "the sandbox outlived its lease"
    finally:
        sup.stop()


def test_prewarmed_sandbox_serves_the_first_invoke(tmp_path):
    data = tmp_path / "data"
    sup = start_supervisor(data)
    try:
        deploy(sup.client(), "warm-me", "rust", "echo")
    finally:
        sup.stop()
    sup = Supervisor(data, extra_args=["--isolation", "process", "--prewarm", "warm-me=2"]).start()
    try:
        time.sleep(1.5)
        _, body, logs = invoke(sup.client(), "warm-me", b'{"w": 1}', LogType="Tail")
        assert json.loads(body) == {"w": 1}
        assert not has_init_duration(logs), logs
    finally:
        sup.stop()


def test_host_concurrency_limit_throttles_unreserved_functions(tmp_path):
    sup = start_supervisor(tmp_path / "data", "--host-concurrency", "2")
    try:
        client = sup.client()
        deploy(client, "slow", "shell", "function.slow")
        results = []
        barrier = threading.Barrier(6)

        def one():
            barrier.wait()
            try:
                client.invoke(FunctionName="slow", Payload=b"{}")["Payload"].read()
                results.append("ok")
            except ClientError as e:
                results.append(e.response.get("Reason"))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results.count("ok") >= 1
        assert "ConcurrentInvocationLimitExceeded" in results, results
        assert set(results) <= {"ok", "ConcurrentInvocationLimitExceeded"}, results
    finally:
        sup.stop()


def replying_shell_zip(reply):
    """The shell runtime with a handler that answers `reply`."""
    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    fn = f"handler() {{\n  printf '\"%s\"' '{reply}'\n}}\n"
    return make_zip({"bootstrap": (boot, 0o755), "function.sh": fn.encode()})


def test_updating_one_function_keeps_the_others_warm(tmp_path):
    sup = start_supervisor(tmp_path / "data")
    try:
        client = sup.client()
        deploy(client, "stays-warm", "rust", "echo")
        client.create_function(FunctionName="updated", Runtime="provided.al2023", Role=ROLE,
                               Handler="function.handler", Timeout=10,
                               Code={"ZipFile": replying_shell_zip("v1")})
        for name in ("stays-warm", "updated"):
            _, _, logs = invoke(client, name, LogType="Tail")
            assert has_init_duration(logs), logs
        _, body, logs = invoke(client, "updated", LogType="Tail")
        assert json_body(body) == "v1" and not has_init_duration(logs), logs

        client.update_function_code(FunctionName="updated", ZipFile=replying_shell_zip("v2"))
        _, body, logs = invoke(client, "stays-warm", b'{"still": "warm"}', LogType="Tail")
        assert json.loads(body) == {"still": "warm"}
        assert not has_init_duration(logs), f"another function's update made it cold:\n{logs}"
        _, body, logs = invoke(client, "updated", LogType="Tail")
        assert json_body(body) == "v2"
        assert has_init_duration(logs), logs
        # The v1 sandbox was stopped at once rather than left to the idle timeout.
        assert metric_value(metrics(sup), "worker_sandboxes_reaped_total", reason="stale") == 1
        assert metric_value(metrics(sup), "worker_sandboxes", state="idle") == 2

        client.update_function_configuration(FunctionName="stays-warm", MemorySize=256)
        _, _, logs = invoke(client, "updated", LogType="Tail")
        assert not has_init_duration(logs), logs
        _, _, logs = invoke(client, "stays-warm", LogType="Tail")
        assert has_init_duration(logs) and "Memory Size: 256 MB" in logs, logs
    finally:
        sup.stop()
