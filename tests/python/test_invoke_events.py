"""Asynchronous (Event) invocations: durable queue, Lambda's two retries, restart after kill -9."""

import os
import time

import pytest

from invoke_harness import deploy, log_file, metric_value, metrics, start_supervisor
from supervisor_harness import Supervisor

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

RETRY_MS = 300


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def log_text(sup, name):
    try:
        return log_file(sup, name).read_text()
    except FileNotFoundError:
        return ""


def send_event(client, name, payload=b'{"event": true}'):
    r = client.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
    assert r["StatusCode"] == 202
    return r["ResponseMetadata"]["RequestId"]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_event_survives_kill_9_and_runs_after_restart(data_dir):
    sup = start_supervisor(data_dir, "--event-retry-base-ms", str(RETRY_MS))
    try:
        client = sup.client()
        deploy(client, "ev-slow", "shell", "function.slow")
        rid = send_event(client, "ev-slow")
        sup.kill9()
        assert f"END RequestId: {rid}" not in log_text(sup, "ev-slow")
    finally:
        sup.stop()
    again = Supervisor(data_dir, extra_args=sup.extra_args).start()
    try:
        wait_for(lambda: f"END RequestId: {rid}" in log_text(again, "ev-slow"), 30,
                 "the stored event to run after the restart")
        wait_for(lambda: metric_value(metrics(again), "supervisor_event_queue_depth") == 0, 10,
                 "the event to leave the queue")
        assert metric_value(metrics(again), "supervisor_events_total", outcome="succeeded") == 1
    finally:
        again.stop()


def test_failed_event_is_retried_twice(data_dir):
    sup = start_supervisor(data_dir, "--event-retry-base-ms", str(RETRY_MS))
    try:
        client = sup.client()
        deploy(client, "ev-fail", "shell", "function.fail")
        rid = send_event(client, "ev-fail")
        start = f"START RequestId: {rid}"
        wait_for(lambda: log_text(sup, "ev-fail").count(start) == 3, 30, "three attempts")
        wait_for(lambda: metric_value(metrics(sup), "supervisor_event_queue_depth") == 0, 10,
                 "the event to be dropped")
        time.sleep(3 * RETRY_MS / 1000)
        assert log_text(sup, "ev-fail").count(start) == 3, "no fourth attempt"
        m = metrics(sup)
        assert metric_value(m, "supervisor_events_total", outcome="retried") == 2
        assert metric_value(m, "supervisor_events_total", outcome="dropped") == 1
    finally:
        sup.stop()


def test_throttled_event_waits_for_capacity(data_dir):
    sup = start_supervisor(data_dir, "--event-retry-base-ms", str(RETRY_MS))
    try:
        client = sup.client()
        deploy(client, "ev-off", "rust", "echo")
        client.put_function_concurrency(FunctionName="ev-off", ReservedConcurrentExecutions=0)
        rid = send_event(client, "ev-off")
        time.sleep(1.5)
        assert f"START RequestId: {rid}" not in log_text(sup, "ev-off")
        assert metric_value(metrics(sup), "supervisor_event_queue_depth") == 1
        client.delete_function_concurrency(FunctionName="ev-off")
        wait_for(lambda: f"END RequestId: {rid}" in log_text(sup, "ev-off"), 30,
                 "the throttled event to run once capacity is back")
    finally:
        sup.stop()
