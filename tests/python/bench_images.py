"""Benchmark of container-image functions against the same Python code as a .zip, on
the process backend, one supervisor: CreateFunction time (pull, flatten, ext4, chunks),
cold start to first response (the first on the host, which writes and mounts the image;
and later ones, which share the mount), warm invokes, the bytes a cold start reads
against the image's size, and what a second image sharing the base adds to the store.
Writes JSON.

    target/pyenv/bin/python tests/python/bench_images.py [--out FILE] [--rounds N]
"""

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_harness import (OciLayout, Registry, chunk_files, config_file,  # noqa: E402
                           dir_layer, files_layer)
from invoke_harness import IMAGES, make_zip, start_supervisor, stats  # noqa: E402
from supervisor_harness import REPO, ROLE  # noqa: E402

APP = b'''import os
VERSION = "%s"
def handler(event, context):
    return {"version": VERSION, "n": event.get("n")}
'''
RUN = {"Entrypoint": ["/usr/bin/python3", "-m", "awslambdaric"], "Cmd": ["app.handler"],
       "WorkingDir": "/var/task",
       "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/var/runtime:/var/task"]}
STORED = re.compile(r"container image stored.*?bytes=(\d+) chunks=(\d+) new_chunks=(\d+)")


def timed_invoke(c, name, n=0):
    t = time.perf_counter()
    r = c.invoke(FunctionName=name, Payload=json.dumps({"n": n}).encode())
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r and body["n"] == n, body
    return (time.perf_counter() - t) * 1000


def image_mounts():
    return [l for l in Path("/proc/self/mountinfo").read_text().splitlines()
            if "/sandbox-code/img-" in l]


def wait_unmounted(timeout=30):
    deadline = time.monotonic() + timeout
    while image_mounts():
        assert time.monotonic() < deadline, "image still mounted"
        time.sleep(0.05)


def recreate(c, name, uri):
    """Deletes `name` if present, waits for its image to be unmounted, creates it again;
    returns the CreateFunction time in ms."""
    try:
        c.delete_function(FunctionName=name)
    except c.exceptions.ResourceNotFoundException:
        pass
    wait_unmounted()
    t = time.perf_counter()
    c.create_function(FunctionName=name, PackageType="Image", Role=ROLE,
                      Code={"ImageUri": uri}, Timeout=60, MemorySize=256)
    return (time.perf_counter() - t) * 1000


def new_revision(c, name, i):
    c.update_function_configuration(FunctionName=name,
                                    Environment={"Variables": {"ROUND": str(i)}})


def cold_and_warm(c, rounds, names=("img", "zip")):
    """Per function: `rounds` cold starts (each after a new configuration revision) and
    20 warm invokes after each; returns ({name: cold ms}, {name: warm ms})."""
    cold = {n: [] for n in names}
    warm = {n: [] for n in names}
    for i in range(rounds):
        for name in names:
            new_revision(c, name, i)
            cold[name].append(timed_invoke(c, name, i))
            warm[name].extend(timed_invoke(c, name, j) for j in range(20))
    return cold, warm


def measure(c, sup, uris, rounds):
    create_ms, first_cold = [], []
    for _ in range(rounds):
        create_ms.append(recreate(c, "img", uris["v1"]))
        first_cold.append(timed_invoke(c, "img"))
    c.create_function(FunctionName="zip", Runtime="python3.11", Role=ROLE,
                      Handler="app.handler", Timeout=60, MemorySize=256,
                      Code={"ZipFile": make_zip({"app.py": APP % b"zip"})})
    cold, warm = cold_and_warm(c, rounds)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", sup.log())
    stored = [tuple(map(int, m)) for m in STORED.findall(plain)]
    before = len(chunk_files(sup.data_dir))
    # The process backend writes every stored chunk of the image at a host's first cold
    # start; only v1's chunks are in the store yet.
    v1_stored_bytes = sum(chunk_files(sup.data_dir).values())
    c.create_function(FunctionName="img-v2", PackageType="Image", Role=ROLE,
                      Code={"ImageUri": uris["v2"]}, Timeout=60, MemorySize=256)
    image_bytes, image_chunks, _ = stored[-1]
    added = len(chunk_files(sup.data_dir)) - before
    stored_bytes = sum(chunk_files(sup.data_dir).values())
    return {
        "create_function_image_ms": stats(create_ms),
        "cold_start_first_on_host_image_ms": stats(first_cold),
        "cold_start_mount_shared_image_ms": stats(cold["img"]),
        "cold_start_zip_ms": stats(cold["zip"]),
        "cold_ratio_image_first_to_zip": statistics.median(first_cold)
        / statistics.median(cold["zip"]),
        "cold_ratio_image_shared_to_zip": statistics.median(cold["img"])
        / statistics.median(cold["zip"]),
        "warm_invoke_image_ms": stats(warm["img"]),
        "warm_invoke_zip_ms": stats(warm["zip"]),
        "image_bytes": image_bytes,
        "image_chunks": image_chunks,
        "first_cold_start_reads_bytes": v1_stored_bytes,
        "first_cold_start_reads_fraction_of_image": v1_stored_bytes / image_bytes,
        "second_image_sharing_base_new_chunks": added,
        "second_image_new_fraction_of_chunks": added / image_chunks,
        "store_bytes_for_both_images": stored_bytes,
        "dedup_ratio_two_images": 2 * image_bytes / stored_bytes,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(REPO / "target" / "bench" / "images.json"))
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        registry = Registry(tmp / "registry")
        try:
            layout = OciLayout(tmp / "layout")
            base = dir_layer(layout, IMAGES / "rootfs-python3.11", tmp)
            uris = {}
            for v in ("v1", "v2"):
                app = files_layer(layout, {"var/task/app.py": (APP % v.encode(), 0o644)})
                layout.image(v, [base, app], RUN)
                uris[v] = registry.push(layout, v, "py")
            sup = start_supervisor(tmp / "data", "--config",
                                   str(config_file(tmp / "sup.toml", registry)))
            try:
                result = measure(sup.client(), sup, uris, a.rounds)
            finally:
                sup.stop()
        finally:
            registry.stop()
    report = {"bench": "images", "backend": "process", "results": result}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
