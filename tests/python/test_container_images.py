"""Container-image functions (issue 14), process backend: images built here without
Docker, pushed by skopeo to Debian's docker-registry (basic auth) on loopback, deployed
with boto3 (`PackageType: Image`), pulled, flattened, built into ext4 and stored as
convergently encrypted chunks by the supervisor, then mounted as the sandboxes' root and
started through their ENTRYPOINT/CMD by the injected guest-init.
"""

import json
import os
import tarfile
import time

import pytest

from image_harness import registry  # noqa: F401 (the module's registry fixture)
from image_harness import (OciLayout, chunk_files, config_file,
                           create_image_function, dir_layer, files_layer, huge_file_layer)
from invoke_harness import FN_RUST, IMAGES, invoke, start_supervisor
from supervisor_harness import error_code, require

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

PY_ENTRYPOINT = ["/usr/bin/python3", "-m", "awslambdaric"]
APP = '''import json, os
VERSION = "{version}"
def handler(event, context):
    return {{"version": VERSION, "event": event, "cwd": os.getcwd(), "uid": os.getuid(),
            "image_env": os.environ.get("IMAGE_ENV"), "fn_env": os.environ.get("FN_ENV"),
            "handler": os.environ.get("_HANDLER"),
            "request_id": context.aws_request_id}}
def other(event, context):
    return {{"other": True, "cwd": os.getcwd(), "version": VERSION}}
'''


def app_layer(layout, version, extra=None):
    files = {"var/task/app.py": (APP.format(version=version).encode(), 0o644)}
    files.update(extra or {})
    return files_layer(layout, files)


@pytest.fixture(scope="module")
def images(registry, tmp_path_factory):
    """Tag → image URI for every image the tests use."""
    base_tree = IMAGES / "rootfs-python3.11"
    require(base_tree.is_dir(), f"python3.11 rootfs tree not found at {base_tree}")
    require(FN_RUST.is_file(), f"fn-rust (musl release) not found at {FN_RUST}")
    work = tmp_path_factory.mktemp("layouts")
    layout = OciLayout(work / "layout")
    base = dir_layer(layout, base_tree, work)
    py_run = {"Entrypoint": PY_ENTRYPOINT, "Cmd": ["app.handler"], "WorkingDir": "/var/task",
              "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/var/runtime:/var/task",
                      "IMAGE_ENV=from-image",
                      "FN_ENV=image-default"]}
    out = {}

    def push(tag, repo, layers, run, arch="amd64"):
        layout.image(tag, layers, run, arch)
        out[f"{repo}:{tag}"] = registry.push(layout, tag, repo)
        return layers

    push("v1", "py", [base, app_layer(layout, "v1")], py_run)
    push("v2", "py", [base, app_layer(layout, "v2")], py_run)
    noise = {"var/task/noise.bin": (os.urandom(3 << 20), 0o644)}
    push("v3", "py", [base, app_layer(layout, "v3", noise)], py_run)
    rust = files_layer(layout, {"var/task/bootstrap": (FN_RUST.read_bytes(), 0o755)})
    push("v1", "rust", [rust], {"Entrypoint": ["/var/task/bootstrap"], "Cmd": ["context"]})
    push("v1", "arm", [app_layer(layout, "arm")], py_run, arch="arm64")
    escape = tarfile.TarInfo("../escape.txt")
    escape.size, escape.mode = 3, 0o644
    push("v1", "evil", [files_layer(layout, {}, [(escape, b"out")])], py_run)
    push("v1", "huge", [huge_file_layer(layout, 11 << 30)], py_run)
    broken = push("v1", "broken", [app_layer(layout, "broken")], py_run)
    blob = registry.blob_file(broken[0][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("images")
    cfg = config_file(work / "supervisor.toml", registry,
                      bad_password_host=f"localhost:{registry.port}")
    sup = start_supervisor(work / "data", "--config", str(cfg), "--chunk-gc-delay-secs", "0")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_python_image_runs_its_entrypoint_with_awslambdaric(client, images, registry):
    c = create_image_function(client, "py-image", images["py:v1"],
                              Environment={"Variables": {"FN_ENV": "from-function"}})
    assert c["PackageType"] == "Image"
    assert "Runtime" not in c and "Handler" not in c and "ImageConfigResponse" not in c
    g = client.get_function(FunctionName="py-image")
    assert g["Code"]["RepositoryType"] == "ECR"
    assert g["Code"]["ImageUri"] == images["py:v1"]
    assert g["Code"]["ResolvedImageUri"].startswith(f"{registry.host}/py@sha256:")
    # CodeSha256 is the image's manifest digest, as Lambda reports it, and is what
    # PublishVersion's CodeSha256 precondition compares.
    digest = g["Code"]["ResolvedImageUri"].rsplit("@sha256:", 1)[1]
    assert c["CodeSha256"] == g["Configuration"]["CodeSha256"] == digest
    with pytest.raises(ClientError) as e:
        client.publish_version(FunctionName="py-image", CodeSha256="0" * 64)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert client.publish_version(FunctionName="py-image", CodeSha256=digest)["CodeSha256"] == digest
    r, body, logs = invoke(client, "py-image", b'{"n": 1}', LogType="Tail")
    assert "FunctionError" not in r, (body, logs)
    out = json.loads(body)
    assert out["version"] == "v1" and out["event"] == {"n": 1}
    assert out["cwd"] == "/var/task" and out["handler"] == "app.handler"
    # The image's environment is there; the function's own variables win.
    assert out["image_env"] == "from-image" and out["fn_env"] == "from-function"
    assert out["uid"] == 993 and out["request_id"] == r["ResponseMetadata"]["RequestId"]
    assert "Init Duration" in logs
    _, again, logs = invoke(client, "py-image", b'{"n": 2}', LogType="Tail")
    assert json.loads(again)["event"] == {"n": 2} and "Init Duration" not in logs


def test_image_config_overrides_command_and_working_directory(client, images, server):
    before = chunk_files(server.data_dir)
    c = create_image_function(client, "py-other", images["py:v1"],
                              ImageConfig={"Command": ["app.other"]})
    assert c["ImageConfigResponse"] == {"ImageConfig": {"Command": ["app.other"]}}
    # The same image again: every chunk is already stored.
    assert chunk_files(server.data_dir) == before
    _, body, _ = invoke(client, "py-other")
    assert json.loads(body) == {"other": True, "cwd": "/var/task", "version": "v1"}
    u = client.update_function_configuration(
        FunctionName="py-other",
        ImageConfig={"Command": ["app.other"], "WorkingDirectory": "/tmp"})
    assert u["ImageConfigResponse"]["ImageConfig"]["WorkingDirectory"] == "/tmp"
    client.get_waiter("function_updated_v2").wait(FunctionName="py-other")
    _, body, logs = invoke(client, "py-other", LogType="Tail")
    assert json.loads(body).get("cwd") == "/tmp", (body, logs)


def test_update_to_a_new_tag_adds_only_the_changed_chunks(client, images, server):
    before = chunk_files(server.data_dir)
    u = client.update_function_code(FunctionName="py-image", ImageUri=images["py:v2"])
    assert u["PackageType"] == "Image"
    g = client.get_function(FunctionName="py-image")
    assert g["Code"]["ImageUri"] == images["py:v2"]
    after = chunk_files(server.data_dir)
    new = set(after) - set(before)
    # One application file differs: a handful of the image's chunks are new.
    assert 0 < len(new) <= 8, f"{len(new)} new chunks of {len(after)}"
    assert sum(after[p] for p in new) < 0.05 * sum(before.values())
    _, body, _ = invoke(client, "py-image", b'{"n": 3}')
    assert json.loads(body)["version"] == "v2"


def test_rust_lambda_runtime_function_on_a_minimal_image(client, images):
    create_image_function(client, "rust-image", images["rust:v1"])
    r, body, _ = invoke(client, "rust-image", b'{"hello": "image"}')
    assert "FunctionError" not in r, body
    out = json.loads(body)
    assert out["payload"] == {"hello": "image"}


BAD = [
    ("unknown tag", "{host}/py:nope", "does not exist"),
    ("wrong credentials", "localhost:{port}/py:v1", "refused the configured credentials"),
    ("unconfigured registry", "registry.example.com/py:v1", "is not one this host pulls from"),
    ("no tag", "{host}/py", "is not registry/repository:tag"),
    ("arm64 only", "{host}/arm:v1", "linux/amd64"),
    ("layer digest mismatch", "{host}/broken:v1", "does not match its digest"),
    ("entry escaping the root", "{host}/evil:v1", "climbs out of the image root"),
    ("over 10 GiB", "{host}/huge:v1", "over"),
]


@pytest.mark.parametrize("what,uri,message", BAD, ids=[b[0] for b in BAD])
def test_bad_images_are_refused_and_store_nothing(client, images, registry, server,
                                                  what, uri, message):
    uri = uri.format(host=registry.host, port=registry.port)
    before = chunk_files(server.data_dir)
    with pytest.raises(ClientError) as e:
        create_image_function(client, "bad-image", uri)
    assert error_code(e) == "InvalidParameterValueException", (what, e.value.response)
    assert message in e.value.response["Error"]["Message"], what
    assert chunk_files(server.data_dir) == before, what
    with pytest.raises(ClientError) as e:
        client.get_function(FunctionName="bad-image")
    assert error_code(e) == "ResourceNotFoundException"


def test_zip_settings_on_an_image_function_are_refused(client, images):
    with pytest.raises(ClientError) as e:
        create_image_function(client, "bad-runtime", images["py:v1"], Runtime="python3.11")
    assert error_code(e) == "InvalidParameterValueException"
    assert "PackageType is Image" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        client.update_function_code(FunctionName="py-image", ZipFile=b"PK\x05\x06" + bytes(18))
    assert "Please provide ImageUri" in e.value.response["Error"]["Message"]


def test_a_chunk_corrupted_at_rest_fails_the_start_cleanly(client, images, server):
    before = chunk_files(server.data_dir)
    create_image_function(client, "py-corrupt", images["py:v3"])
    new = sorted(set(chunk_files(server.data_dir)) - set(before))
    assert new, "the v3 image has chunks of its own"
    for path in new:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(ClientError) as e:
        invoke(client, "py-corrupt")
    assert error_code(e) == "ServiceException"
    assert "chunk" in e.value.response["Error"]["Message"]
    # Other images are unaffected.
    _, body, _ = invoke(client, "py-image")
    assert json.loads(body)["version"] == "v2"


def test_deleting_collects_unused_chunks_while_serving_and_restart_keeps_images(client, server):
    before = chunk_files(server.data_dir)
    client.delete_function(FunctionName="py-corrupt")
    deadline = time.monotonic() + 20
    while set(chunk_files(server.data_dir)) == set(before):
        assert time.monotonic() < deadline, "the deleted image's own chunks were not collected"
        time.sleep(0.1)
    assert set(chunk_files(server.data_dir)) < set(before)
    _, body, _ = invoke(client, "py-image", b'{"n": 5}')
    assert json.loads(body)["version"] == "v2"
    server.stop()
    server.start()
    c = server.client()
    _, body, _ = invoke(c, "py-image", b'{"n": 4}')
    assert json.loads(body)["version"] == "v2"
    _, body, _ = invoke(c, "rust-image", b'{"after": "restart"}')
    assert json.loads(body)["payload"] == {"after": "restart"}
