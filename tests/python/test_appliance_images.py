"""Container-image functions in microVMs (issue 14), inside the appliance under nested
KVM: the appliance's supervisor pulls the image from Debian's docker-registry on this
machine (basic auth, reached from the appliance at 10.0.2.2), builds and stores its
chunks; each sandbox is a jailed microVM whose guest root is the image, read lazily by
our vmm through the worker's chunk link (only the chunks the guest reads cross it, each
checked and decrypted in the vmm), with guest-init injected from our rootfs."""

import os
import re

import pytest

from appliance_harness import Appliance, registry_data_disk, require_appliance
from image_harness import registry  # noqa: F401 (the module's registry fixture)
from image_harness import (OciLayout, create_image_function, dir_layer, files_layer,
                           rust_image_with_ballast)
from invoke_harness import FN_RUST, IMAGES, has_init_duration, invoke, json_body
from supervisor_harness import require

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

# QEMU user networking: the appliance reaches this machine's loopback here.
HOST_FROM_GUEST = "10.0.2.2"
SERVED = re.compile(r"image chunk link served (\d+) of (\d+) stored chunks")
PY_APP = b'''import os
def handler(event, context):
    return {"event": event, "cwd": os.getcwd(), "uid": os.getuid(),
            "handler": os.environ.get("_HANDLER"), "request_id": context.aws_request_id}
'''
PY_RUN = {"Entrypoint": ["/usr/bin/python3", "-m", "awslambdaric"], "Cmd": ["app.handler"],
          "WorkingDir": "/var/task",
          "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/var/runtime:/var/task"]}


@pytest.fixture(scope="module")
def image(registry, tmp_path_factory):
    """A `lambda_runtime` function on a minimal image, with 24 MiB of data it never
    reads: the URI as the appliance names it."""
    require(FN_RUST.is_file(), f"fn-rust (musl release) not found at {FN_RUST}")
    layout = OciLayout(tmp_path_factory.mktemp("layout") / "layout")
    uri = rust_image_with_ballast(layout, registry, FN_RUST)
    return uri.replace(registry.host, f"{HOST_FROM_GUEST}:{registry.port}")


@pytest.fixture(scope="module")
def python_image(registry, tmp_path_factory):
    """The project's python3.11 rootfs as the base layer plus an `awslambdaric`
    handler."""
    base_tree = IMAGES / "rootfs-python3.11"
    require(base_tree.is_dir(), f"python3.11 rootfs tree not found at {base_tree}")
    work = tmp_path_factory.mktemp("py-layout")
    layout = OciLayout(work / "layout")
    base = dir_layer(layout, base_tree, work)
    layout.image("v1", [base, files_layer(layout, {"var/task/app.py": (PY_APP, 0o644)})], PY_RUN)
    uri = registry.push(layout, "v1", "py")
    return uri.replace(registry.host, f"{HOST_FROM_GUEST}:{registry.port}")


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, registry):
    """An appliance whose data disk holds a supervisor config naming the registry."""
    require_appliance()
    work = tmp_path_factory.mktemp("appliance")
    data = registry_data_disk(work / "disk" / "data.img", registry,
                              f"{HOST_FROM_GUEST}:{registry.port}")
    a = Appliance(work, data=data, serve_args=["--init-timeout-secs", "120"])
    a.start()
    yield a
    a.kill()


@pytest.fixture(scope="module")
def client(appliance):
    return appliance.client()


def served_lines(appliance):
    return [(int(n), int(m)) for n, m in SERVED.findall(appliance.console_text())]


def test_an_image_is_the_root_of_a_microvm_that_reads_only_what_it_uses(appliance, client, image):
    before = appliance.vmm_processes()
    create_image_function(client, "img-rust", image)
    r, body, logs = invoke(client, "img-rust", b'{"hello": "microvm"}', LogType="Tail")
    assert "FunctionError" not in r, (body, logs)
    out = json_body(body)
    assert out["payload"] == {"hello": "microvm"}, out
    assert out["uid"] != 0, "the function runs unprivileged in the guest"
    after = appliance.vmm_processes()
    assert len(after) == len(before) + 1, (before, after)
    # ImageConfig replaces CMD: the handler exits mid-invoke, which ends its microVM,
    # and the worker says how much of the image that sandbox read.
    client.update_function_configuration(FunctionName="img-rust",
                                         ImageConfig={"Command": ["exit"]})
    client.get_waiter("function_updated_v2").wait(FunctionName="img-rust")
    r, body, _ = invoke(client, "img-rust", b"{}")
    assert r.get("FunctionError") == "Unhandled", body
    assert json_body(body)["errorType"] == "Runtime.ExitError", body
    served = served_lines(appliance)
    assert served, appliance.console_text()[-3000:]
    for n, stored in served:
        # The 24 MiB it never reads are 48 of the image's chunks.
        assert 0 < n and n + 40 <= stored, served


def test_a_python_image_runs_awslambdaric_in_a_microvm(client, python_image):
    create_image_function(client, "img-py", python_image)
    r, body, logs = invoke(client, "img-py", b'{"py": "microvm"}', LogType="Tail")
    assert "FunctionError" not in r, (body, logs)
    out = json_body(body)
    assert out["event"] == {"py": "microvm"}, out
    assert out["cwd"] == "/var/task" and out["handler"] == "app.handler", out
    assert out["uid"] != 0 and out["request_id"] == r["ResponseMetadata"]["RequestId"], out
    assert has_init_duration(logs), logs
    _, body, logs = invoke(client, "img-py", b'{"py": "warm"}', LogType="Tail")
    assert json_body(body)["event"] == {"py": "warm"} and not has_init_duration(logs), logs


def test_a_chunk_corrupted_at_rest_fails_the_start_and_gives_no_bytes(appliance, client, image):
    # Every stored chunk: one byte flipped in place (the host's disk went bad).
    rc, out = appliance.shell(
        "n=0; for f in $(find /data/supervisor/chunks -type f ! -name '.*'); do "
        "printf '\\377' | dd of=$f bs=1 seek=100 conv=notrunc 2>/dev/null && n=$((n+1)); "
        "done; echo flipped $n")
    assert rc == 0 and int(out.split()[-1]) > 0, out
    create_image_function(client, "img-corrupt", image, ImageConfig={"Command": ["echo"]})
    try:
        r, body, _ = invoke(client, "img-corrupt", b'{"must": "not run"}')
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] >= 500, e.response
    else:
        assert r.get("FunctionError"), body
        assert b"not run" not in body, body
    text = appliance.console_text()
    assert "do not hash to its id" in text, text[-3000:]
