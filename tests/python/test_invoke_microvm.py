"""Invoke API through the microVM backend: the same kernel, rootfs and code drive run
under QEMU TCG with vhost-device-vsock (this machine's KVM cannot run guest userspace),
so the whole path - jail, VM monitor, vsock, guest-init, runtime - runs for real."""

import json
import os
import shutil
from pathlib import Path

import pytest

from invoke_harness import IMAGES, deploy, has_init_duration, invoke, json_body, report_line
from supervisor_harness import REPO, Supervisor, require

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

VHOST = Path(os.environ.get("VHOST_DEVICE_VSOCK", REPO / "target" / "tools" / "bin" / "vhost-device-vsock"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require(shutil.which("qemu-system-x86_64") is not None,
            "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
    require(VHOST.is_file(), f"vhost-device-vsock not found at {VHOST}")
    for f in ("bzImage", "rootfs-provided.ext4", "rootfs-python3.11.ext4"):
        require((IMAGES / f).is_file(), f"{f} not found in {IMAGES}")
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 not installed (e2fsprogs)")
    require(os.geteuid() == 0, "the microVM backend's jail needs root")
    sup = Supervisor(tmp_path_factory.mktemp("invoke-vm") / "data", extra_args=[
        "--isolation", "microvm", "--vm-launcher", "qemu-tcg", "--vhost-device-vsock", str(VHOST),
        # TCG boots take seconds; Lambda's 10 s init bound is too tight for a loaded CI box.
        "--init-timeout-secs", "90"]).start()
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_rust_echo_in_a_microvm_then_warm(client):
    deploy(client, "vm-rust", "rust", "echo")
    event = {"data": "y" * 1024}
    r, body, cold = invoke(client, "vm-rust", json.dumps(event).encode(), LogType="Tail")
    assert "FunctionError" not in r, body
    assert json_body(body) == event
    assert has_init_duration(cold), cold
    r, body, warm = invoke(client, "vm-rust", b'{"again": 1}', LogType="Tail")
    assert json_body(body) == {"again": 1}
    assert not has_init_duration(warm), warm
    rid = r["ResponseMetadata"]["RequestId"]
    assert report_line(warm).startswith(f"REPORT RequestId: {rid}")


def test_shell_bootstrap_in_a_microvm(client):
    deploy(client, "vm-shell", "shell", "function.handler")
    r, body, _ = invoke(client, "vm-shell", b'{"from": "vm"}')
    assert "FunctionError" not in r, body
    assert json_body(body) == {"from": "vm"}


def test_python_awslambdaric_in_a_microvm(client):
    deploy(client, "vm-python", "python", "app.echo")
    r, body, logs = invoke(client, "vm-python", b'{"py": 3.11}', LogType="Tail")
    assert "FunctionError" not in r, (body, logs)
    assert json_body(body) == {"py": 3.11}


def test_function_error_in_a_microvm(client):
    deploy(client, "vm-error", "rust", "error")
    r, body, _ = invoke(client, "vm-error")
    assert r["FunctionError"] == "Unhandled"
    assert json_body(body)["errorType"] == "FunctionError"
