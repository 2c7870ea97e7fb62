"""Helpers for the Invoke API tests: function packages and a supervisor with a data plane."""

import base64
import json
import os
import re
import statistics
import time
from pathlib import Path

from supervisor_harness import REPO, ROLE, Supervisor, make_zip, require

IMAGES = Path(os.environ.get("LAMBDA_IMAGES_DIR", REPO / "target" / "images"))
FN_RUST = Path(os.environ.get("FN_RUST_BIN",
                              REPO / "target" / "x86_64-unknown-linux-musl" / "release" / "fn-rust"))
FUNCTIONS = REPO / "tests" / "functions"

# Extra shell handlers for these tests, appended to tests/functions/shell/function.sh.
SHELL_EXTRA = r'''
slow() {
  sleep 1
  cat "$1"
}

linger() {
  sleep 8
  cat "$1"
}

slowenv() {
  if grep -q slow "$1"; then sleep 2; fi
  printf '"%s"' "$MARK"
}

window() {
  # When this invoke ran, by the host's uptime (process sandboxes share the host's
  # clock): overlapping windows count concurrent executions.
  read start _ < /proc/uptime
  sleep 2
  read end _ < /proc/uptime
  printf '{"start":%s,"end":%s}' "$start" "$end"
}

owner() {
  # /tmp is private to a sandbox: the first function to run here claims it.
  if [ ! -f /tmp/owner ]; then
    echo "$AWS_LAMBDA_FUNCTION_NAME" > /tmp/owner
  fi
  printf '{"owner":"%s","me":"%s"}' "$(cat /tmp/owner)" "$AWS_LAMBDA_FUNCTION_NAME"
}
'''

PY_EXTRA = '''

def oom(event, context):
    blocks = []
    while True:
        blocks.append(bytearray(16 << 20))
'''


def require_process_backend():
    require((IMAGES / "guest-init").is_file(), f"guest-init image not found in {IMAGES}")
    require((IMAGES / "rootfs-provided").is_dir(), f"unpacked rootfs-provided not found in {IMAGES}")
    require(os.geteuid() == 0, "the process backend needs root (namespaces, cgroups)")


def rust_zip():
    require(FN_RUST.is_file(), f"fn-rust (musl release) not found at {FN_RUST}")
    return make_zip({"bootstrap": (FN_RUST.read_bytes(), 0o755)})


def shell_zip(extra=""):
    """The shell function, with `extra` handlers appended."""
    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    fn = (FUNCTIONS / "shell" / "function.sh").read_text() + SHELL_EXTRA + extra
    return make_zip({"bootstrap": (boot, 0o755), "function.sh": fn.encode()})


# A shell function that reports what its layers put in /opt, and whether /opt is
# writable (test_layers.py, and the microVM test in test_appliance.py).
LAYER_READER_SH = r'''
handler() {
  tool=$(tool.sh 2>&1)
  a=$(cat /opt/etc/a.txt 2>&1)
  shared=$(cat /opt/etc/shared.txt 2>&1)
  if touch /opt/etc/new 2>/dev/null; then w=writable; else w=read-only; fi
  printf '{"tool":"%s","a":"%s","shared":"%s","opt":"%s"}' "$tool" "$a" "$shared" "$w"
}
'''

# A layer with a tool on /opt/bin (which is on PATH) and two files.
LAYER_TOOLS = {
    "bin/tool.sh": (b"#!/bin/sh\necho tool-from-first\n", 0o755),
    "etc/a.txt": (b"only-in-first", 0o644),
    "etc/shared.txt": (b"first", 0o644),
}


def layer_reader_zip():
    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    return make_zip({"bootstrap": (boot, 0o755), "function.sh": LAYER_READER_SH.encode()})


def python_zip():
    app = (FUNCTIONS / "python" / "app.py").read_text() + PY_EXTRA
    return make_zip({"app.py": app.encode()})


def deploy(client, name, kind, handler, **kw):
    """kind: rust | shell | python."""
    if kind == "python":
        require((IMAGES / "rootfs-python3.11").is_dir(), f"rootfs-python3.11 not found in {IMAGES}")
        runtime, code = "python3.11", python_zip()
    elif kind == "rust":
        runtime, code = "provided.al2023", rust_zip()
    else:
        runtime, code = "provided.al2023", shell_zip()
    params = dict(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                  Code={"ZipFile": code}, Timeout=kw.pop("Timeout", 10),
                  MemorySize=kw.pop("MemorySize", 128))
    params.update(kw)
    return client.create_function(**params)


def invoke(client, name, payload=b"{}", **kw):
    """Returns (response, payload bytes, decoded log tail or None)."""
    r = client.invoke(FunctionName=name, Payload=payload, **kw)
    body = r["Payload"].read()
    logs = base64.b64decode(r["LogResult"]).decode() if "LogResult" in r else None
    return r, body, logs


def report_line(logs):
    for line in logs.splitlines():
        if line.startswith("REPORT RequestId:"):
            return line
    raise AssertionError(f"no REPORT line in:\n{logs}")


def has_init_duration(logs):
    return "Init Duration:" in report_line(logs)


def start_supervisor(data_dir, *extra):
    require_process_backend()
    return Supervisor(data_dir, extra_args=["--isolation", "process", *extra]).start()


def metrics(sup):
    """GET /metrics, signed like any other call (it is not public by default)."""
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from supervisor_harness import ACCESS_KEY, REGION, SECRET_KEY

    req = AWSRequest(method="GET", url=f"{sup.endpoint}/metrics")
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(req)
    get = urllib.request.Request(req.url, headers=dict(req.headers))
    with urllib.request.urlopen(get, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def metric_value(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)"
    m = re.search("^" + pattern + "$", text, re.M)
    return float(m.group(1)) if m else 0.0


def log_file(sup, name, version="$LATEST"):
    return sup.data_dir / "logs" / name / f"{version}.log"


def logged(sup, name, *needles, version="$LATEST", timeout=5.0):
    """The text of a function's log file once it holds every needle: the worker writes
    held lines within its flush interval (100 ms), not at the end of each invoke."""
    path, deadline = log_file(sup, name, version), time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if all(n in text for n in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def json_body(body):
    return json.loads(body.decode())


def stats(xs):
    """Benchmarks' summary of a sample: count, percentiles, extremes (None if empty)."""
    xs = sorted(xs)
    if not xs:
        return None
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]  # noqa: E731
    return {"n": len(xs), "p50": statistics.median(xs), "p90": q(0.9), "p99": q(0.99),
            "min": xs[0], "max": xs[-1]}
