"""Container-image functions in a cluster (issue 14 with issue 12): the frontend pulls
and stores the image; a worker host in its own network namespace fetches the image
package by digest and the chunks it lacks by id over the mutually authenticated link,
checks each chunk against its id, keeps them sealed, and runs the image."""

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from cluster_harness import CLIENT_ADDR, FRONTEND_ADDR, SUBNET, Frontend, Network, \
    WorkerDaemon, make_ca
from image_harness import OciLayout, Registry, chunk_files, config_file, files_layer
from invoke_harness import FN_RUST, invoke, require_process_backend
from supervisor_harness import ROLE, error_code, require

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

RUN = {"Entrypoint": ["/var/task/bootstrap"], "Cmd": ["context"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_process_backend()
    require(FN_RUST.is_file(), f"fn-rust (musl release) not found at {FN_RUST}")
    root = tmp_path_factory.mktemp("cluster-images")
    make_ca(root / "ca", ("w1",))
    with Network("i") as net:
        # The registry listens on the client host's address, which the frontend reaches.
        registry = Registry(root / "registry", addr=CLIENT_ADDR)
        layout = OciLayout(root / "layout")
        uris = {}
        for tag, extra in (("v1", {}), ("v2", {"var/task/noise.bin": (os.urandom(2 << 20), 0o644)}),
                           ("v3", {"var/task/noise.bin": (os.urandom(6 << 20), 0o644)})):
            files = {"var/task/bootstrap": (FN_RUST.read_bytes(), 0o755), **extra}
            layout.image(tag, [files_layer(layout, files)], RUN)
            uris[tag] = registry.push(layout, tag, "rust")
        fe_ns = net.add_host("fe", FRONTEND_ADDR)
        w_ns = net.add_host("w1", f"{SUBNET}.11")
        worker = WorkerDaemon(w_ns, "w1", f"{SUBNET}.11", root / "ca", root).start()
        cfg = config_file(root / "frontend.toml", registry)
        fe = Frontend(fe_ns, root / "data", root / "ca", [worker.link],
                      extra_args=["--config", str(cfg)]).start()
        fe.wait_workers(1)
        try:
            yield fe, worker, uris
        finally:
            fe.stop()
            worker.stop()
            registry.stop()


def create(client, name, uri):
    return client.create_function(FunctionName=name, PackageType="Image", Role=ROLE,
                                  Code={"ImageUri": uri}, Timeout=30)


def test_an_image_function_runs_on_a_worker_host(cluster):
    fe, worker, uris = cluster
    c = fe.client()
    create(c, "img", uris["v1"])
    r, body, _ = invoke(c, "img", b'{"via": "worker"}')
    assert "FunctionError" not in r, body
    assert json.loads(body)["payload"] == {"via": "worker"}
    status = fe.cluster_status()
    ran = [w for w in status["workers"] if w["sandboxes"] > 0]
    assert [w["address"] for w in ran] == [worker.link], status
    assert ran[0]["invokes_sent"] >= 1


def test_a_chunk_that_is_not_its_id_is_refused_by_the_worker(cluster):
    fe, worker, uris = cluster
    c = fe.client()
    before = chunk_files(fe.data_dir)
    create(c, "img-damaged", uris["v2"])
    new = sorted(set(chunk_files(fe.data_dir)) - set(before))
    assert new
    for path in new:
        data = bytearray(path.read_bytes())
        data[7] ^= 0x80
        path.write_bytes(bytes(data))
    with pytest.raises(ClientError) as e:
        invoke(c, "img-damaged")
    assert error_code(e) == "ServiceException"
    assert "do not match its id" in e.value.response["Error"]["Message"], e.value.response
    # The undamaged image still runs.
    _, body, _ = invoke(c, "img", b'{"again": 1}')
    assert json.loads(body)["payload"] == {"again": 1}


def test_an_image_larger_than_the_workers_chunk_store_still_runs(cluster):
    """The worker copies the chunks it lacks as it writes the image, so an image larger
    than its `--chunk-cache-mib` runs even though its early chunks are evicted before
    the write ends."""
    fe, worker, uris = cluster
    old = fe.cluster_status()["workers"][0]["incarnation"]
    worker.stop()
    worker.extra += ["--chunk-cache-mib", "1"]
    worker.start()
    deadline = time.monotonic() + 30
    while True:
        (w,) = fe.cluster_status()["workers"]
        if w["up"] and w["incarnation"] != old:
            break
        assert time.monotonic() < deadline, w
        time.sleep(0.2)
    c = fe.client()
    create(c, "img-big", uris["v3"])
    r, body, _ = invoke(c, "img-big", b'{"big": true}')
    assert "FunctionError" not in r, body
    assert json.loads(body)["payload"] == {"big": True}
    # The image's 6 MiB of noise alone is a dozen chunks; the store kept about two.
    # The worker's default run dir (nsenter execs it: the same pid).
    run_dir = Path(tempfile.gettempdir()) / f"lambda-supervisor-{worker.proc.pid}"
    assert run_dir.is_dir(), run_dir
    kept = [p for p in (run_dir / "chunk-copies").rglob("*")
            if p.is_file() and not p.name.startswith(".")]
    assert 0 < sum(p.stat().st_size for p in kept) <= (1 << 20) + (600 << 10), kept
