"""Invoke API (issue 7) through the process backend, driven by boto3 and the aws CLI.

Needs target/debug/supervisor, the images in target/images (guest-init, unpacked
rootfs-provided and rootfs-python3.11) and the musl release build of fn-rust.
"""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.request

import pytest

from invoke_harness import (deploy, has_init_duration, invoke, json_body, logged, metric_value,
                            metrics, report_line, start_supervisor)
from supervisor_harness import ACCESS_KEY, REGION, SECRET_KEY

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

IDLE_SECS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = start_supervisor(tmp_path_factory.mktemp("invoke") / "data",
                           "--idle-timeout-secs", str(IDLE_SECS))
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def rust_echo(client):
    deploy(client, "rust-echo", "rust", "echo")
    return "rust-echo"


def test_rust_echo_round_trips_1_kib(client, rust_echo):
    event = {"data": "x" * 1024, "n": 7}
    r, body, _ = invoke(client, rust_echo, json.dumps(event).encode())
    assert r["StatusCode"] == 200
    assert "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    assert json_body(body) == event


def test_python_awslambdaric_echo(client):
    deploy(client, "py-echo", "python", "app.echo")
    r, body, logs = invoke(client, "py-echo", b'{"hello": "python"}', LogType="Tail")
    assert r["StatusCode"] == 200, logs
    assert "FunctionError" not in r, body
    assert json_body(body) == {"hello": "python"}


def test_shell_bootstrap_echo_and_logs(client):
    deploy(client, "sh-echo", "shell", "function.handler")
    r, body, _ = invoke(client, "sh-echo", b'{"from": "shell"}')
    assert "FunctionError" not in r, body
    assert json_body(body) == {"from": "shell"}
    deploy(client, "sh-chatty", "shell", "function.chatty")
    r, body, logs = invoke(client, "sh-chatty", LogType="Tail")
    assert json_body(body) == "logged"
    assert "shell: first log line" in logs and "shell: second log line" in logs


def test_log_tail_has_start_end_report(client, rust_echo):
    r, _, logs = invoke(client, rust_echo, b'{"a": 1}', LogType="Tail")
    rid = r["ResponseMetadata"]["RequestId"]
    lines = logs.splitlines()
    assert f"START RequestId: {rid} Version: $LATEST" in lines
    assert f"END RequestId: {rid}" in lines
    rep = report_line(logs)
    assert rep.startswith(f"REPORT RequestId: {rid}\tDuration: ")
    for field in ("Billed Duration: ", "Memory Size: 128 MB", "Max Memory Used: "):
        assert field in rep, rep


def test_function_error_is_unhandled_with_lambda_json(client):
    deploy(client, "rust-error", "rust", "error")
    r, body, _ = invoke(client, "rust-error")
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    err = json_body(body)
    assert err["errorType"] == "FunctionError"
    assert err["errorMessage"] == "deliberate failure"


def test_timeout_destroys_the_sandbox(client):
    deploy(client, "rust-sleep", "rust", "sleep", Timeout=1)
    started = time.monotonic()
    r, body, logs = invoke(client, "rust-sleep", LogType="Tail")
    assert time.monotonic() - started < 6
    assert r["FunctionError"] == "Unhandled"
    err = json_body(body)
    assert err["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in err["errorMessage"]
    assert "Status: timeout" in report_line(logs)
    # The next invoke gets a fresh sandbox.
    _, _, logs = invoke(client, "rust-sleep", LogType="Tail")
    assert has_init_duration(logs)


def test_crash_is_runtime_exit_error_and_next_invoke_is_cold(client):
    deploy(client, "rust-exit", "rust", "exit")
    r, body, logs = invoke(client, "rust-exit", LogType="Tail")
    assert r["FunctionError"] == "Unhandled"
    err = json_body(body)
    assert err["errorType"] == "Runtime.ExitError", err
    assert "fn-rust: exiting mid-invoke" in logs
    _, _, logs = invoke(client, "rust-exit", LogType="Tail")
    assert has_init_duration(logs)


def test_out_of_memory(client):
    deploy(client, "py-oom", "python", "app.oom", MemorySize=128, Timeout=30)
    r, body, logs = invoke(client, "py-oom", LogType="Tail")
    assert r["FunctionError"] == "Unhandled", body
    err = json_body(body)
    assert err["errorType"] == "Runtime.OutOfMemory", (body, logs)
    assert "{" not in err["errorMessage"], err  # one level of error JSON


def test_payload_over_6_mb_is_413(client, rust_echo):
    payload = b'"' + b"x" * (6 * 1024 * 1024 - 1) + b'"'
    assert len(payload) == 6 * 1024 * 1024 + 1
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName=rust_echo, Payload=payload)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"


def test_response_over_6_mb_is_function_error(client):
    deploy(client, "rust-big", "rust", "big")
    r, body, _ = invoke(client, "rust-big", json.dumps({"size": 6_291_557}).encode())
    assert r["FunctionError"] == "Unhandled"
    assert json_body(body)["errorType"] == "Function.ResponseSizeTooLarge"


def test_warm_reuse_has_no_init_duration(client):
    deploy(client, "rust-warm", "rust", "echo")
    _, _, first = invoke(client, "rust-warm", LogType="Tail")
    _, _, second = invoke(client, "rust-warm", LogType="Tail")
    assert has_init_duration(first)
    assert not has_init_duration(second), second


def test_idle_sandboxes_are_reaped(client, server):
    deploy(client, "rust-idle", "rust", "echo")
    invoke(client, "rust-idle")
    _, _, warm = invoke(client, "rust-idle", LogType="Tail")
    assert not has_init_duration(warm)
    time.sleep(IDLE_SECS + 2.5)
    _, _, cold = invoke(client, "rust-idle", LogType="Tail")
    assert has_init_duration(cold), cold
    assert metric_value(metrics(server), "worker_sandboxes_reaped_total", reason="idle") >= 1


def test_reserved_concurrency_throttles_beyond_5(client):
    deploy(client, "sh-slow", "shell", "function.slow")
    assert client.put_function_concurrency(
        FunctionName="sh-slow", ReservedConcurrentExecutions=5)["ReservedConcurrentExecutions"] == 5
    assert client.get_function_concurrency(FunctionName="sh-slow")["ReservedConcurrentExecutions"] == 5
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def one(i):
        barrier.wait()
        try:
            r = client.invoke(FunctionName="sh-slow", Payload=json.dumps({"i": i}).encode())
            out = ("ok", r["Payload"].read(), r.get("FunctionError"))
        except ClientError as e:
            out = ("err", e.response["Error"].get("Code"), e.response.get("Reason"),
                   e.response["ResponseMetadata"]["HTTPStatusCode"])
        with lock:
            results.append(out)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 20
    ok = [r for r in results if r[0] == "ok"]
    throttled = [r for r in results if r[0] == "err"]
    assert all(r[2] is None for r in ok), ok
    assert all(r[1] == "TooManyRequestsException" and r[3] == 429 for r in throttled), throttled
    assert all(r[2] == "ReservedFunctionConcurrentInvocationLimitExceeded" for r in throttled), throttled
    assert len(ok) >= 5 and len(throttled) >= 1, results
    client.delete_function_concurrency(FunctionName="sh-slow")
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(FunctionName="sh-slow")


def test_reserved_zero_disables_the_function(client):
    deploy(client, "rust-off", "rust", "echo")
    client.put_function_concurrency(FunctionName="rust-off", ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="rust-off", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
    with pytest.raises(ClientError) as e:
        client.put_function_concurrency(FunctionName="nope", ReservedConcurrentExecutions=1)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_sandbox_of_a_is_never_used_for_b(client):
    # Same code (same CodeSha256) for both functions: only the function differs.
    deploy(client, "iso-a", "shell", "function.owner")
    deploy(client, "iso-b", "shell", "function.owner")
    for _ in range(4):
        for name in ("iso-a", "iso-b"):
            r, body, _ = invoke(client, name)
            assert "FunctionError" not in r, body
            out = json_body(body)
            assert out == {"owner": name, "me": name}, out


def test_versions_qualifier_and_executed_version(client):
    deploy(client, "rust-ver", "rust", "echo", Publish=True)
    r, body, logs = invoke(client, "rust-ver", b'{"v": 1}', Qualifier="1", LogType="Tail")
    assert r["ExecutedVersion"] == "1"
    assert "Version: 1" in logs
    r, _, _ = invoke(client, "rust-ver:$LATEST")
    assert r["ExecutedVersion"] == "$LATEST"
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="rust-ver", Qualifier="9")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="does-not-exist")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_updated_code_is_used_by_the_next_invoke(client):
    deploy(client, "upd", "rust", "echo")
    invoke(client, "upd")
    client.update_function_configuration(FunctionName="upd", Handler="error")
    r, body, _ = invoke(client, "upd")
    assert r.get("FunctionError") == "Unhandled", body


def test_no_sandbox_of_an_old_revision_is_reused(client):
    deploy(client, "rev", "shell", "function.slowenv", Environment={"Variables": {"MARK": "v1"}})
    assert json_body(invoke(client, "rev")[1]) == "v1"
    old = {}
    t = threading.Thread(
        target=lambda: old.setdefault("body", invoke(client, "rev", b'{"slow": true}')[1]))
    t.start()
    time.sleep(0.3)
    client.update_function_configuration(FunctionName="rev", Environment={"Variables": {"MARK": "v2"}})
    assert json_body(invoke(client, "rev")[1]) == "v2"
    t.join(30)
    assert json_body(old["body"]) == "v1"
    # The v1 sandbox finished after v2 existed; it must not serve again.
    for _ in range(2):
        assert json_body(invoke(client, "rev")[1]) == "v2"


def test_client_context_reaches_the_function(client):
    deploy(client, "rust-ctx", "rust", "context")
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    r, body, _ = invoke(client, "rust-ctx", b'{"p": 1}', ClientContext=cc)
    out = json_body(body)
    assert out["client_context_present"] is True
    assert out["request_id"] == r["ResponseMetadata"]["RequestId"]
    assert out["uid"] != 0
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="rust-ctx", ClientContext="not base64 json!")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_dry_run_and_event_status_codes(client, rust_echo):
    r = client.invoke(FunctionName=rust_echo, InvocationType="DryRun")
    assert r["StatusCode"] == 204
    r = client.invoke(FunctionName=rust_echo, InvocationType="Event", Payload=b'{"e": 1}')
    assert r["StatusCode"] == 202
    # Lambda's asynchronous limit is 1 MB (1,048,576 bytes) since October 2025.
    at_limit = b'"' + b"x" * (1_048_576 - 2) + b'"'
    r = client.invoke(FunctionName=rust_echo, InvocationType="Event", Payload=at_limit)
    assert r["StatusCode"] == 202
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName=rust_echo, InvocationType="Event", Payload=at_limit + b" ")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"
    assert "limit 1048576 bytes" in e.value.response["Error"]["Message"]


def test_invoke_needs_a_valid_signature(server, rust_echo):
    req = urllib.request.Request(f"{server.endpoint}/2015-03-31/functions/{rust_echo}/invocations",
                                 data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    bad = server.client(secret_key="wrong-secret-key-wrong-secret-key-wrong0")
    with pytest.raises(ClientError) as e:
        bad.invoke(FunctionName=rust_echo)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_metrics_combine_frontend_and_worker(server, client, rust_echo):
    invoke(client, rust_echo)
    text = metrics(server)
    assert metric_value(text, "supervisor_invoke_requests_total", type="RequestResponse", status="200") >= 1
    assert metric_value(text, "worker_invocations_total", function=f"{rust_echo}:$LATEST") >= 1
    assert metric_value(text, "worker_cold_starts_total") >= 1
    assert "worker_invoke_duration_seconds_bucket" in text
    assert "worker_sandboxes{state=\"idle\"}" in text
    assert "supervisor_event_queue_depth" in text


def test_function_log_file_in_data_dir(server, client, rust_echo):
    r, _, _ = invoke(client, rust_echo)
    rid = r["ResponseMetadata"]["RequestId"]
    text = logged(server, rust_echo, f"START RequestId: {rid}", f"REPORT RequestId: {rid}")
    assert f"START RequestId: {rid}" in text and f"REPORT RequestId: {rid}" in text


def test_aws_cli_invoke(server, rust_echo, tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run(
        ["aws", "--endpoint-url", server.endpoint, "lambda", "invoke", "--function-name", rust_echo,
         "--payload", '{"cli": true}',
         "--log-type", "Tail", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["StatusCode"] == 200
    assert "REPORT RequestId" in base64.b64decode(meta["LogResult"]).decode()
    assert json.loads(out.read_text()) == {"cli": True}


def stream_events(client, name, payload=b"{}", **kw):
    r = client.invoke_with_response_stream(FunctionName=name, Payload=payload, **kw)
    chunks, complete = [], None
    for ev in r["EventStream"]:
        if "PayloadChunk" in ev:
            chunks.append(ev["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in ev:
            complete = ev["InvokeComplete"]
    return r, b"".join(chunks), complete


def test_invoke_with_response_stream(client, rust_echo):
    r, body, complete = stream_events(client, rust_echo, b'{"s": 1}', LogType="Tail")
    assert r["StatusCode"] == 200
    assert r["ExecutedVersion"] == "$LATEST"
    assert json.loads(body) == {"s": 1}
    assert complete is not None and "ErrorCode" not in complete
    assert "REPORT RequestId" in base64.b64decode(complete["LogResult"]).decode()
    deploy(client, "rust-stream", "rust", "stream")
    _, body, complete = stream_events(client, "rust-stream")
    assert body.endswith(b"chunk-1 chunk-2 chunk-3"), body
    deploy(client, "rust-stream-error", "rust", "error")
    _, body, complete = stream_events(client, "rust-stream-error")
    assert body == b""
    assert complete["ErrorCode"] == "FunctionError"
    assert "deliberate failure" in complete["ErrorDetails"]
