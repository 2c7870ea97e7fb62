"""Benchmark of container-image functions in microVMs, inside the appliance under nested
KVM: the python3.11 rootfs plus a small `awslambdaric` handler deployed as an image, and
the same handler as a .zip on the python3.11 runtime. Cold start to first response for
both (a new configuration revision forces each cold start), warm invokes, CreateFunction
time, and how much of the image each cold start read through its chunk link (the worker
logs it when the sandbox goes). Absolute times under TCG mean little; read the ratios.
Writes JSON.

    target/pyenv/bin/python tests/python/bench_appliance_images.py [--out FILE] [--rounds N]
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

from appliance_harness import Appliance, registry_data_disk, require_appliance  # noqa: E402
from bench_images import APP, RUN, STORED, cold_and_warm, new_revision  # noqa: E402
from image_harness import OciLayout, Registry, dir_layer, files_layer  # noqa: E402
from invoke_harness import IMAGES, make_zip, stats  # noqa: E402
from supervisor_harness import REPO, ROLE  # noqa: E402

HOST_FROM_GUEST = "10.0.2.2"
SERVED = re.compile(r"image chunk link served (\d+) of (\d+) stored chunks")
CHUNK = 512 << 10


def deploy_both(c, uri):
    t = time.perf_counter()
    c.create_function(FunctionName="img", PackageType="Image", Role=ROLE,
                      Code={"ImageUri": uri}, Timeout=120, MemorySize=512)
    create_ms = (time.perf_counter() - t) * 1000
    c.create_function(FunctionName="zip", Runtime="python3.11", Role=ROLE,
                      Handler="app.handler", Timeout=120, MemorySize=512,
                      Code={"ZipFile": make_zip({"app.py": APP % b"zip"})})
    return create_ms


def measure(a, uri, rounds):
    c = a.client()
    create_ms = deploy_both(c, uri)
    cold, warm = cold_and_warm(c, rounds)
    # One more revision retires the last image sandbox, so every round's is logged.
    new_revision(c, "img", rounds)
    time.sleep(5)
    text = a.console_text()
    served = [int(n) for n, _ in SERVED.findall(text)]
    stored_chunks = max((int(m) for _, m in SERVED.findall(text)), default=0)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    image_bytes, image_chunks, _ = map(int, STORED.findall(plain)[-1])
    return {
        "create_function_image_ms": round(create_ms, 1),
        "cold_start_image_microvm_ms": stats(cold["img"]),
        "cold_start_zip_microvm_ms": stats(cold["zip"]),
        "cold_ratio_image_to_zip": statistics.median(cold["img"])
        / statistics.median(cold["zip"]),
        "warm_invoke_image_ms": stats(warm["img"]),
        "warm_invoke_zip_ms": stats(warm["zip"]),
        "image_bytes": image_bytes,
        "image_chunks": image_chunks,
        "image_stored_chunks": stored_chunks,
        "cold_start_chunks_served": served,
        "cold_start_reads_bytes_median": statistics.median(served) * CHUNK if served else None,
        "cold_start_reads_fraction_of_image": statistics.median(served) * CHUNK / image_bytes
        if served else None,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(REPO / "target" / "bench" / "appliance-images.json"))
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    require_appliance()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        registry = Registry(tmp / "registry")
        try:
            layout = OciLayout(tmp / "layout")
            base = dir_layer(layout, IMAGES / "rootfs-python3.11", tmp)
            app = files_layer(layout, {"var/task/app.py": (APP % b"v1", 0o644)})
            layout.image("v1", [base, app], RUN)
            uri = registry.push(layout, "v1", "py").replace(
                registry.host, f"{HOST_FROM_GUEST}:{registry.port}")
            data = registry_data_disk(tmp / "disk" / "data.img", registry,
                                      f"{HOST_FROM_GUEST}:{registry.port}")
            a = Appliance(tmp / "vm", data=data, serve_args=["--init-timeout-secs", "120"])
            a.start()
            try:
                result = measure(a, uri, args.rounds)
            finally:
                a.kill()
        finally:
            registry.stop()
    report = {"bench": "appliance-images", "backend": "microvm (nested KVM under TCG)",
              "results": result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
