"""The appliance as a cluster worker host. Booted with `lambda.role=worker` under nested
KVM in QEMU TCG, with its certificate, key, the CA certificate and the CRL on its data
disk, it runs `supervisor worker` with microVM isolation. A frontend on this machine
reaches it over the mutually authenticated link (QEMU's forwarded port), the worker
fetches code back from the frontend (QEMU's 10.0.2.2 is this machine's loopback), and
boto3's invokes run in microVMs inside the appliance; a container image's chunks are
copied from the frontend as the guest reads them."""

import json
import os
import time

import pytest

from appliance_harness import Appliance, node_data_disk, free_port, require_appliance
from cluster_harness import cluster_status, make_ca
from image_harness import registry  # noqa: F401 (the module's registry fixture)
from image_harness import (OciLayout, config_file, create_image_function,
                           rust_image_with_ballast)
from invoke_harness import FN_RUST, deploy, invoke, json_body
from supervisor_harness import Supervisor

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

WORKER_ID = "aw1"
GUEST_LINK_PORT = 9443


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, registry):
    require_appliance()
    tmp = tmp_path_factory.mktemp("appliance-worker")
    registries = config_file(tmp / "supervisor.toml", registry)
    ca = tmp / "ca"
    make_ca(ca, workers=[WORKER_ID])
    data = node_data_disk(tmp / "disk" / "data.img", ca, "worker", WORKER_ID)
    appliance = Appliance(tmp / "vm", data=data,
                          cmdline=f"lambda.role=worker lambda.node_id={WORKER_ID}",
                          serve_args=["--init-timeout-secs", "120"],
                          forward=(GUEST_LINK_PORT,), ready=f"worker {WORKER_ID}: listening on")
    link_port = free_port()
    frontend = None
    try:
        appliance.start()
        frontend = Supervisor(tmp / "frontend", extra_args=[
            "--role", "frontend", "--node-id", "fe1", "--cluster-dir", str(ca),
            "--link-listen", f"127.0.0.1:{link_port}",
            "--link-advertise", f"10.0.2.2:{link_port}",
            "--worker", f"{WORKER_ID}@127.0.0.1:{appliance.ports[GUEST_LINK_PORT]}",
            "--config", str(registries)]).start()
        yield appliance, frontend
    finally:
        if frontend:
            frontend.stop()
        appliance.kill()


def diagnostics(appliance, frontend):
    return (f"frontend log:\n{frontend.log()[-4000:]}\n"
            f"appliance console:\n{appliance.console_text()[-4000:]}")


def test_the_appliance_worker_runs_a_frontends_invokes_in_microvms(cluster):
    appliance, frontend = cluster
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = cluster_status(frontend.endpoint)["workers"]
        if any(w["up"] for w in workers):
            break
        time.sleep(0.5)
    assert [w["id"] for w in workers if w["up"]] == [WORKER_ID], (
        workers, diagnostics(appliance, frontend))
    assert appliance.vmm_processes() == []

    client = frontend.client()
    deploy(client, "aw-python", "python", "app.echo")
    for i in range(2):
        payload = json.dumps({"n": i}).encode()
        r, body, _ = invoke(client, "aw-python", payload=payload)
        assert r["StatusCode"] == 200 and "FunctionError" not in r, (
            body, diagnostics(appliance, frontend))
        assert json_body(body) == {"n": i}
    # It ran in one of the appliance's own microVMs, kept warm for the second invoke.
    vmms = appliance.vmm_processes()
    assert len(vmms) == 1, (vmms, diagnostics(appliance, frontend))
    assert vmms[0][1] != 0, "the vmm runs under an unprivileged host uid"
    # The frontend's picture: one worker, this sandbox on it, both invokes sent to it (the
    # code it ran came from the frontend over the link: nothing else holds it).
    (worker,) = cluster_status(frontend.endpoint)["workers"]
    assert worker["id"] == WORKER_ID and worker["up"], worker
    assert worker["sandboxes"] == 1 and worker["invokes_sent"] >= 2, worker


def test_an_image_runs_in_the_worker_appliance_copying_only_the_chunks_it_reads(
        cluster, registry, tmp_path):
    appliance, frontend = cluster
    uri = rust_image_with_ballast(OciLayout(tmp_path / "layout"), registry, FN_RUST)
    client = frontend.client()
    create_image_function(client, "aw-image", uri)
    r, body, _ = invoke(client, "aw-image", b'{"image": "remote"}')
    assert "FunctionError" not in r, (body, diagnostics(appliance, frontend))
    assert json_body(body)["payload"] == {"image": "remote"}
    # The worker host copied from the frontend only what the guest read: a few chunks of
    # the image's 50-odd (24 MiB of it, never read, are 48).
    rc, out = appliance.shell("find /run/lambda/chunk-copies -type f ! -name '.*' | wc -l")
    assert rc == 0 and 0 < int(out.strip()) <= 12, (out, diagnostics(appliance, frontend))
