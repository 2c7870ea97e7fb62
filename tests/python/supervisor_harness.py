"""Start and drive the real `supervisor` binary for the control-plane tests."""

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "000000000000"
ACCESS_KEY = "AKIATESTCONTROLPLANE"
SECRET_KEY = "test/secret+key/for/the/control/plane0"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"


def require(condition, reason):
    """Missing prerequisite: fail under CI, skip loudly elsewhere."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"prerequisite missing in CI: {reason}")
    print(f"\nSKIPPED: {reason}")
    pytest.skip(reason)


def supervisor_binary():
    path = Path(os.environ.get("SUPERVISOR_BIN", REPO / "target" / "debug" / "supervisor"))
    require(path.is_file() and os.access(path, os.X_OK),
            f"supervisor binary not found at {path} (run `cargo build -p supervisor` or set SUPERVISOR_BIN)")
    return path


class Supervisor:
    """One `supervisor serve` process on an ephemeral port."""

    def __init__(self, data_dir, credentials=True, extra_args=()):
        self.data_dir = Path(data_dir)
        self.credentials = credentials
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def argv(self):
        argv = [str(supervisor_binary()), "serve", "--listen", "127.0.0.1:0",
                "--data-dir", str(self.data_dir), "--region", REGION]
        if self.credentials:
            argv += ["--access-key-id", ACCESS_KEY]
        return argv + self.extra_args

    def env(self):
        env = dict(os.environ)
        if self.credentials:
            # Secrets never go on a command line (every process can read argv).
            env["SUPERVISOR_SECRET_ACCESS_KEY"] = SECRET_KEY
        return env

    def start(self, timeout=30):
        self.log_offset = len(self.log())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=self.env())
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log()[self.log_offset:]
            found = re.findall(r"listening on http://127\.0\.0\.1:(\d+)", text)
            if found:
                self.port = int(found[-1])
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"supervisor did not start within {timeout}s:\n{self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def client(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=120),
        )


def make_zip(files, compression=zipfile.ZIP_DEFLATED):
    """files: {name: bytes | (bytes, unix_mode) | ('symlink', target)}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, spec in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            if isinstance(spec, tuple) and spec[0] == "symlink":
                info.create_system = 3
                info.external_attr = (0o120777 << 16)
                z.writestr(info, spec[1])
                continue
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            info.create_system = 3
            info.external_attr = ((0o100000 | mode) << 16)
            z.writestr(info, data)
    return buf.getvalue()


def code_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def bootstrap_zip(marker="hello"):
    script = f"#!/bin/sh\n# {marker}\necho ok\n".encode()
    return make_zip({"bootstrap": (script, 0o755)})


def error_code(exc_info):
    """The AWS error code of a ClientError caught by pytest.raises."""
    return exc_info.value.response["Error"]["Code"]


def aws_lambda(endpoint, *args):
    """Runs `aws lambda ARGS` against `endpoint` with the test credentials; asserts it
    succeeded and returns its JSON output (None when it printed nothing)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run(["aws", "--endpoint-url", endpoint, "lambda", *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout) if proc.stdout.strip() else None
