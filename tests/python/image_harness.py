"""Container images for the image-function tests, built and pushed without Docker: OCI
layouts written here (layers as tar files, config and manifest as JSON blobs), copied by
`skopeo` into Debian's `docker-registry` running on a loopback port with basic auth."""

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from supervisor_harness import ROLE, require

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def tool(name):
    require(shutil.which(name), f"{name} is not installed (tests/run.sh installs it from Debian)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`docker-registry serve` on `addr` (loopback by default), requiring
    `user`:`password`."""

    def __init__(self, directory, user="puller", password="s3cret", addr="127.0.0.1"):
        tool("docker-registry")
        tool("htpasswd")
        tool("skopeo")
        self.dir, self.user, self.password = Path(directory), user, password
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"{addr}:{self.port}"
        htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                  capture_output=True).stdout
        (self.dir / "htpasswd").write_bytes(htpasswd)
        (self.dir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
            f"auth:\n  htpasswd:\n    realm: test\n    path: {self.dir / 'htpasswd'}\n")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((addr, self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (self.dir / "registry.log").read_text()
                time.sleep(0.05)

    def push(self, layout, tag, repo):
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--quiet",
                        "--dest-tls-verify=false", f"--dest-creds={self.user}:{self.password}",
                        f"oci:{layout.dir}:{tag}", f"docker://{self.host}/{repo}:{tag}"],
                       check=True, capture_output=True)
        return f"{self.host}/{repo}:{tag}"

    def blob_file(self, digest):
        hexd = digest.split(":", 1)[1]
        return self.dir / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def _digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


class OciLayout:
    """An OCI image layout directory that `skopeo copy oci:DIR:TAG` reads."""

    def __init__(self, directory):
        self.dir = Path(directory)
        (self.dir / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (self.dir / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.tags = []

    def blob(self, media_type, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.dir / "blobs/sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def blob_from_file(self, media_type, path):
        digest = _digest_file(path)
        target = self.dir / "blobs/sha256" / digest[7:]
        if not target.exists():
            shutil.copyfile(path, target)
        return {"mediaType": media_type, "digest": digest, "size": target.stat().st_size}

    def image(self, tag, layers, run, arch="amd64"):
        """`layers`: (descriptor, diff_id) bottom first; `run`: the config's `config`."""
        config = {"architecture": arch, "os": "linux", "config": run,
                  "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}
        config_d = self.blob("application/vnd.oci.image.config.v1+json",
                             json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_d, "layers": [d for d, _ in layers]}
        desc = self.blob("application/vnd.oci.image.manifest.v1+json",
                         json.dumps(manifest).encode())
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.tags = [t for t in self.tags
                     if t["annotations"]["org.opencontainers.image.ref.name"] != tag] + [desc]
        (self.dir / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                          "manifests": self.tags}))
        return desc


def dir_layer(layout, tree, work):
    """An uncompressed layer of the directory `tree` (GNU tar, sorted, numeric owners)."""
    tool("tar")
    out = Path(work) / f"{Path(tree).name}.tar"
    if not out.exists():
        subprocess.run(["tar", "-C", str(tree), "--sort=name", "--numeric-owner",
                        "--owner=0", "--group=0", "-cf", str(out), "."], check=True)
    d = layout.blob_from_file(TAR, out)
    return d, d["digest"]


def files_layer(layout, files, raw_members=()):
    """A gzip layer of `files` ({path: (bytes, mode)}); `raw_members` are TarInfo
    headers written as they are, for hostile layers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 1700000000
            tar.addfile(info, io.BytesIO(data))
        for info, data in raw_members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    d = layout.blob(TAR_GZIP, gzip.compress(raw, mtime=0))
    return d, "sha256:" + hashlib.sha256(raw).hexdigest()


def huge_file_layer(layout, size):
    """A layer whose only entry declares `size` bytes (far more than it carries)."""
    info = tarfile.TarInfo("huge.bin")
    info.size, info.mode, info.mtime = size, 0o644, 1700000000
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024
    return layout.blob(TAR_GZIP, gzip.compress(raw, mtime=0)), \
        "sha256:" + hashlib.sha256(raw).hexdigest()


def chunk_files(data_dir):
    """The chunk store's files: {path: size}."""
    root = Path(data_dir) / "chunks"
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file() and len(p.name) == 64}


def registry_toml(registry, host=None, password=None):
    """A `[[registries]]` entry naming `registry` as `host` (by default its own
    address), with its credentials (or `password` instead of its own)."""
    return (f'[[registries]]\nhost = "{host or registry.host}"\nplain-http = true\n'
            f'username = "{registry.user}"\npassword = "{password or registry.password}"\n')


def config_file(path, registry, bad_password_host=None):
    """A supervisor config naming `registry` (and the same registry under another name
    with a wrong password, for the credentials test)."""
    text = registry_toml(registry)
    if bad_password_host:
        text += registry_toml(registry, bad_password_host, password="wrong")
    Path(path).write_text(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry for one test module (import this fixture into the module)."""
    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


def rust_image_with_ballast(layout, registry, fn_rust, ballast_mib=24):
    """Pushes `rust:v1`: a `lambda_runtime` function (`fn_rust`, CMD `context`) on a
    minimal image, plus `ballast_mib` MiB of random data the function never reads.
    Returns the URI as this machine names the registry."""
    code = files_layer(layout, {"var/task/bootstrap": (Path(fn_rust).read_bytes(), 0o755)})
    ballast = files_layer(layout, {"var/task/ballast.bin": (os.urandom(ballast_mib << 20), 0o644)})
    layout.image("v1", [code, ballast], {"Entrypoint": ["/var/task/bootstrap"], "Cmd": ["context"]})
    return registry.push(layout, "v1", "rust")


def create_image_function(client, name, uri, **kw):
    """CreateFunction of an image (60 s timeout, 256 MB unless `kw` says otherwise)."""
    args = {"Timeout": 60, "MemorySize": 256, **kw}
    return client.create_function(FunctionName=name, PackageType="Image", Role=ROLE,
                                  Code={"ImageUri": uri}, **args)
