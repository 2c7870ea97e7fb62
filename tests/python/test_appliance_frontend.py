"""The appliance as a cluster frontend. Booted with `lambda.role=frontend` in QEMU TCG,
with its certificate, key, the CA certificate and the CRL on its data disk, it runs
`supervisor serve --role frontend`: the API, registry, code store and placement, and no
sandbox. Its worker is `supervisor worker` on this machine, which the appliance reaches
at QEMU's 10.0.2.2 (this machine's loopback); the worker fetches code back through the
frontend's forwarded link port. boto3 talks to the appliance's API as it would to any
frontend."""

import json
import os
import time

import pytest

from appliance_harness import Appliance, node_data_disk, free_port, require_appliance
from cluster_harness import WorkerDaemon, cluster_status, make_ca
from invoke_harness import deploy, invoke, json_body

try:
    import boto3  # noqa: F401
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

FRONTEND_ID = "afe1"
WORKER_ID = "hw1"
GUEST_LINK_PORT = 9443


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_appliance()
    tmp = tmp_path_factory.mktemp("appliance-frontend")
    ca = tmp / "ca"
    make_ca(ca, workers=[WORKER_ID], frontends=[FRONTEND_ID])
    data = node_data_disk(tmp / "disk" / "data.img", ca, "frontend", FRONTEND_ID)
    worker = WorkerDaemon(None, WORKER_ID, "127.0.0.1", ca, tmp, port=free_port())
    link_port = free_port()
    appliance = Appliance(
        tmp / "vm", data=data,
        cmdline=f"lambda.role=frontend lambda.node_id={FRONTEND_ID}",
        serve_args=["--worker", f"{WORKER_ID}@10.0.2.2:{worker.port}",
                    "--link-advertise", f"127.0.0.1:{link_port}"],
        forward={GUEST_LINK_PORT: link_port})
    try:
        worker.start()
        appliance.start()
        yield appliance, worker
    finally:
        appliance.kill()
        worker.stop()


def status(appliance):
    return cluster_status(appliance.endpoint, appliance.credentials)


def wait_worker_up(appliance, worker, timeout=60):
    deadline = time.monotonic() + timeout
    workers = []
    while time.monotonic() < deadline:
        workers = status(appliance)["workers"]
        if [w["id"] for w in workers if w["up"]] == [WORKER_ID]:
            return workers
        time.sleep(0.5)
    raise AssertionError(f"worker {WORKER_ID} not up: {workers}\n{diagnostics(appliance, worker)}")


def diagnostics(appliance, worker):
    return (f"worker log:\n{worker.log()[-4000:]}\n"
            f"appliance console:\n{appliance.console_text()[-4000:]}")


def test_the_appliance_frontend_places_invokes_on_its_worker(cluster):
    appliance, worker = cluster
    wait_worker_up(appliance, worker)
    client = appliance.client()
    deploy(client, "af-python", "python", "app.echo")
    for i in range(2):
        payload = json.dumps({"n": i}).encode()
        r, body, _ = invoke(client, "af-python", payload=payload)
        assert r["StatusCode"] == 200 and "FunctionError" not in r, (
            body, diagnostics(appliance, worker))
        assert json_body(body) == {"n": i}
    # A frontend runs no sandbox: both invokes ran on the worker (which could only get
    # the code from the frontend, over the link), the second one warm.
    assert appliance.vmm_processes() == []
    (w,) = status(appliance)["workers"]
    assert w["sandboxes"] == 1 and w["invokes_sent"] >= 2, w


def test_losing_the_worker_is_a_service_exception_until_it_rejoins(cluster):
    appliance, worker = cluster
    client = appliance.client()
    deploy(client, "af-python-2", "python", "app.echo")
    worker.kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(w["up"] for w in status(appliance)["workers"]):
        time.sleep(0.2)
    with pytest.raises(ClientError) as e:
        invoke(client, "af-python-2", payload=b"{}")
    err = e.value.response
    assert err["Error"]["Code"] == "ServiceException", err
    assert "worker" in err["Error"]["Message"], err
    # The restarted worker (a new incarnation on the same address) is reconnected to
    # with backoff and takes invokes again.
    worker.start()
    wait_worker_up(appliance, worker)
    r, body, _ = invoke(client, "af-python-2", payload=b'{"back":true}')
    assert r["StatusCode"] == 200 and json_body(body) == {"back": True}, (
        body, diagnostics(appliance, worker))
