"""The raw GPT disk image booted the way a bare-metal machine or EC2 boots it: UEFI
firmware (OVMF) loads appliance.efi from the EFI system partition, and the image's own
lambda-data partition becomes the data disk. Its own module, so no other appliance VM
runs beside it."""

import os
import subprocess

import pytest

from appliance_harness import APPLIANCE, OVMF, Appliance, require_appliance
from invoke_harness import deploy, invoke, json_body
from supervisor_harness import require

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)


def test_the_disk_image_boots_with_uefi_and_runs_a_function(tmp_path):
    require_appliance()
    require(OVMF.is_file(), f"{OVMF} not found (apt-get install ovmf)")
    image = APPLIANCE / "appliance-disk.img"
    require(image.is_file(), f"{image} not found (image-build/appliance.sh without --no-disk)")
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    a = Appliance(tmp_path, disk_image=disk)
    a.start()
    try:
        text = a.console_text()
        assert "data: /dev/vda2 was blank: formatted ext4 (first boot)" in text, text[-3000:]
        c = a.client()
        deploy(c, "uefi-shell", "shell", "function.handler")
        _, body, _ = invoke(c, "uefi-shell", b'{"booted": "uefi"}')
        assert json_body(body) == {"booted": "uefi"}
        a.stop()
        assert a.proc.returncode == 0
    finally:
        a.kill()
