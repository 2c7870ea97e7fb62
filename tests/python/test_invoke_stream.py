"""InvokeWithResponseStream through the process backend, driven by boto3: each chunk
reaches the caller as the function writes it, and errors mid-stream (function error
trailers, runtime exit, timeout) end the stream with InvokeComplete carrying the error.

Needs target/debug/supervisor, the images in target/images and the musl release build
of fn-rust.
"""

import base64
import json
import os
import time

import pytest

from invoke_harness import deploy, has_init_duration, start_supervisor

try:
    import botocore  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

# lambda_runtime starts every streamed body with its HTTP-integration prelude: JSON, then
# eight NUL bytes.
PRELUDE_END = b"\0" * 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = start_supervisor(tmp_path_factory.mktemp("stream") / "data")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


class Stream:
    """One InvokeWithResponseStream call, read event by event with arrival times."""

    def __init__(self, client, name, **kw):
        started = time.monotonic()
        self.response = client.invoke_with_response_stream(FunctionName=name, Payload=b"{}", **kw)
        self.chunks = []  # (seconds since the call, payload)
        self.complete = None
        self.complete_at = None
        for ev in self.response["EventStream"]:
            now = time.monotonic() - started
            if "PayloadChunk" in ev:
                self.chunks.append((now, ev["PayloadChunk"]["Payload"]))
            elif "InvokeComplete" in ev:
                self.complete, self.complete_at = ev["InvokeComplete"], now
        assert self.complete is not None, "the stream ended without InvokeComplete"
        self.body = b"".join(c for _, c in self.chunks)

    def arrival_of(self, marker):
        """When the bytes received so far first contained `marker`."""
        seen = b""
        for at, chunk in self.chunks:
            seen += chunk
            if marker in seen:
                return at
        raise AssertionError(f"{marker!r} never arrived; body {self.body!r}")

    def logs(self):
        return base64.b64decode(self.complete["LogResult"]).decode()


def test_chunks_arrive_while_the_function_runs(client):
    deploy(client, "stream-slow", "rust", "stream-slow")
    for attempt in ("cold", "warm"):
        s = Stream(client, "stream-slow", LogType="Tail")
        assert s.response["StatusCode"] == 200
        assert s.response["ExecutedVersion"] == "$LATEST"
        prelude, sep, rest = s.body.partition(PRELUDE_END)
        assert sep and json.loads(prelude)["statusCode"] == 200, s.body
        assert rest == b"chunk-1 chunk-2", s.body
        # The function sleeps 1 s between its chunks: the first must not wait for it.
        first_chunk = s.chunks[0][0]
        chunk_1 = s.arrival_of(b"chunk-1")
        assert s.complete_at - first_chunk >= 0.5, (attempt, s.chunks, s.complete_at)
        assert s.complete_at - chunk_1 >= 0.5, (attempt, chunk_1, s.complete_at)
        assert s.arrival_of(b"chunk-2") - chunk_1 >= 0.5, (attempt, s.chunks)
        assert "ErrorCode" not in s.complete, s.complete
        assert has_init_duration(s.logs()) == (attempt == "cold")


def test_function_error_mid_stream(client):
    deploy(client, "stream-error", "rust", "stream-error")
    s = Stream(client, "stream-error", LogType="Tail")
    assert s.response["StatusCode"] == 200
    assert s.body == b"partial "
    # The runtime sends its error trailers 0.5 s after the chunk.
    assert s.complete_at - s.arrival_of(b"partial") >= 0.3, (s.chunks, s.complete_at)
    assert s.complete["ErrorCode"] == "StreamFailure"
    details = json.loads(s.complete["ErrorDetails"])
    assert details == {"errorMessage": "failed mid-stream", "errorType": "StreamFailure"}
    assert has_init_duration(s.logs())
    # A function error keeps the sandbox.
    s = Stream(client, "stream-error", LogType="Tail")
    assert s.complete["ErrorCode"] == "StreamFailure"
    assert not has_init_duration(s.logs())


def test_runtime_exit_mid_stream(client):
    deploy(client, "stream-exit", "rust", "stream-exit")
    s = Stream(client, "stream-exit", LogType="Tail")
    assert s.response["StatusCode"] == 200
    assert s.body.endswith(PRELUDE_END + b"chunk-1 "), s.body
    assert s.complete["ErrorCode"] == "Runtime.ExitError", s.complete
    details = json.loads(s.complete["ErrorDetails"])
    assert details["errorType"] == "Runtime.ExitError"
    assert "exit status 7" in details["errorMessage"], details
    assert "Status: error" in s.logs()
    # The sandbox was destroyed: the next invoke starts a new one.
    s = Stream(client, "stream-exit", LogType="Tail")
    assert has_init_duration(s.logs())


def test_timeout_mid_stream(client):
    deploy(client, "stream-hang", "rust", "stream-hang", Timeout=1)
    started = time.monotonic()
    s = Stream(client, "stream-hang", LogType="Tail")
    assert time.monotonic() - started < 6
    assert s.body.endswith(PRELUDE_END + b"chunk-1 "), s.body
    assert s.complete_at - s.arrival_of(b"chunk-1") >= 0.5, (s.chunks, s.complete_at)
    assert s.complete["ErrorCode"] == "Sandbox.Timedout", s.complete
    assert "Task timed out after 1.00 seconds" in s.complete["ErrorDetails"]
    assert "Status: timeout" in s.logs()
    s = Stream(client, "stream-hang", LogType="Tail")
    assert has_init_duration(s.logs())
