"""Container-image functions on two frontends sharing their state through etcd: an
image's chunks reach the other frontend before CreateFunction is acknowledged, so the
function runs there with its first frontend dead; a frontend that lost chunks fetches
them back from the other; a delete through one frontend frees the image's chunks on
both."""

import os

import pytest

from etcd_harness import EtcdCluster, master_key_file
from image_harness import registry  # noqa: F401 (the module's registry fixture)
from image_harness import (OciLayout, chunk_files, config_file, create_image_function,
                           rust_image_with_ballast)
from invoke_harness import FN_RUST, invoke, start_supervisor
from supervisor_harness import require

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def pair(registry, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    require(FN_RUST.is_file(), f"fn-rust (musl release) not found at {FN_RUST}")
    work = tmp_path_factory.mktemp("shared-images")
    etcd = EtcdCluster(work / "etcd").start()
    cfg = config_file(work / "supervisor.toml", registry)
    key = master_key_file(work / "master.key")
    args = ("--config", str(cfg), "--etcd", etcd.urls, "--master-key-file", str(key),
            "--member-ttl-secs", "3", "--chunk-gc-delay-secs", "2")
    a = start_supervisor(work / "a", *args)
    b = start_supervisor(work / "b", *args)
    uri = rust_image_with_ballast(OciLayout(work / "layout"), registry, FN_RUST, ballast_mib=4)
    try:
        yield a, b, uri
    finally:
        for s in (a, b):
            s.stop()
        etcd.stop()


def names(files):
    return {p.name for p in files}


def test_an_image_created_on_one_frontend_runs_on_the_other_with_the_first_dead(pair):
    a, b, uri = pair
    create_image_function(a.client(), "shared-image", uri)
    held = names(chunk_files(a.data_dir))
    assert len(held) >= 8, held  # 4 MiB of random ballast alone is 8 chunks
    # Acknowledged only once the other frontend holds every chunk.
    assert held <= names(chunk_files(b.data_dir))
    a.kill9()
    try:
        r, body, _ = invoke(b.client(), "shared-image", b'{"via":"b"}')
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    finally:
        a.start()


def test_a_frontend_that_lost_chunks_fetches_them_from_the_other(pair):
    a, b, uri = pair
    create_image_function(b.client(), "shared-image-lost", uri, MemorySize=512)
    lost = sorted(chunk_files(a.data_dir))[:3]
    for p in lost:
        p.unlink()
    assert not any(p.exists() for p in lost)
    # a builds this version's image from its chunks at its first cold start; the three
    # it lacks come from b, checked against their names, and are kept.
    r, body, _ = invoke(a.client(), "shared-image-lost", b'{"via":"a"}')
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert all(p.exists() for p in lost), [p.name for p in lost if not p.exists()]


def test_a_delete_through_one_frontend_collects_the_chunks_on_the_other(pair, registry,  # noqa: F811
                                                                         tmp_path):
    import time

    a, b, _ = pair
    before = names(chunk_files(b.data_dir))
    # Fresh random ballast: chunks no other function of this module uses.
    uri = rust_image_with_ballast(OciLayout(tmp_path / "layout"), registry, FN_RUST,
                                  ballast_mib=2)
    create_image_function(a.client(), "shared-gc", uri)
    own = names(chunk_files(b.data_dir)) - before
    assert len(own) >= 4, own  # 2 MiB of ballast is 4 chunks
    a.client().delete_function(FunctionName="shared-gc")
    # b learns of the delete from the registry log and collects after --chunk-gc-delay-secs.
    deadline = time.monotonic() + 30
    while own & names(chunk_files(b.data_dir)):
        assert time.monotonic() < deadline, "b kept the deleted image's chunks"
        time.sleep(0.2)
    assert not own & names(chunk_files(a.data_dir))
    r, body, _ = invoke(b.client(), "shared-image", b'{"still":"here"}')
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
