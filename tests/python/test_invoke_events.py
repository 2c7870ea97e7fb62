"""Asynchronous (Event) invocations: durable queue, Lambda's two retries, restart after kill -9."""

import glob
import os
import tempfile
import threading
import time

import pytest

from invoke_harness import deploy, invoke, log_file, metric_value, metrics, start_supervisor
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


def proc_stats():
    """{pid: (state, ppid, start time)} from /proc."""
    out = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.split("/")[2])] = (fields[0], int(fields[1]), fields[19])
    return out


def descendants(pid):
    """{pid: start time} of the processes whose parent chain leads to `pid`."""
    stats = proc_stats()
    found, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, (_, pp, _) in stats.items() if pp in frontier and p not in found}
        found.update({p: stats[p][2] for p in frontier})
    return found


def still_running(procs):
    """Those of `procs` ({pid: start time}) still running: not reaped, not a zombie, and
    not a reused pid."""
    stats = proc_stats()
    return {p: stats[p] for p, start in procs.items()
            if p in stats and stats[p][2] == start and stats[p][0] != "Z"}


def sandbox_cgroups(pid):
    return glob.glob(f"/sys/fs/cgroup/**/lambda-worker/sb-{pid}-*", recursive=True)


def test_kill_9_leaves_no_sandboxes_and_the_restart_sweeps_the_run_dir(data_dir):
    sup = start_supervisor(data_dir)
    try:
        client = sup.client()
        deploy(client, "k9-idle", "shell", "function.handler")
        deploy(client, "k9-busy", "shell", "function.slow")
        invoke(client, "k9-idle")

        def busy_invoke():
            try:
                invoke(client, "k9-busy")
            except Exception:  # noqa: BLE001 - the server is killed mid-request
                pass

        threading.Thread(target=busy_invoke, daemon=True).start()
        old_pid = sup.proc.pid
        old_run_dir = os.path.join(tempfile.gettempdir(), f"lambda-supervisor-{old_pid}")
        # The busy one is being created: kill -9 lands while its jail is being set up.
        wait_for(lambda: len({os.path.basename(c) for c in sandbox_cgroups(old_pid)}) >= 2, 20,
                 "two sandboxes to start")
        sandboxes = descendants(old_pid)
        assert sandboxes, "no sandbox processes found"
        sup.kill9()
    finally:
        sup.stop()
    # Nothing kills them but their own guest-init, which ends when its host socket closes.
    try:
        wait_for(lambda: not still_running(sandboxes), 15, "the orphaned sandbox processes to exit")
    except AssertionError as e:
        raise AssertionError(f"{e}: {still_running(sandboxes)}") from None
    assert os.path.isdir(old_run_dir), "the run dir should outlive a kill -9"
    assert sandbox_cgroups(old_pid), "empty sandbox cgroups should outlive a kill -9"
    again = Supervisor(data_dir, extra_args=sup.extra_args).start()
    try:
        assert not os.path.exists(old_run_dir), \
            f"the restart did not sweep {old_run_dir}: {os.listdir(old_run_dir)}\n{again.log()}"
        assert sandbox_cgroups(old_pid) == [], again.log()
        new_run_dir = os.path.join(tempfile.gettempdir(), f"lambda-supervisor-{again.proc.pid}")
        assert os.path.isdir(new_run_dir)
        _, _, logs = invoke(again.client(), "k9-idle", LogType="Tail")
        assert "Init Duration:" in logs
    finally:
        again.stop()
