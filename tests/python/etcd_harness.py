"""A real etcd cluster for the tests: Debian's `etcd` members on loopback, on ports
picked at start, each with its own data dir."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from supervisor_harness import require


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdMember:
    def __init__(self, cluster, name, workdir):
        self.cluster, self.name = cluster, name
        self.data_dir = Path(workdir) / f"{name}.etcd"
        self.log_path = Path(workdir) / f"{name}.log"
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc = None

    @property
    def client_url(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self):
        argv = [shutil.which("etcd"), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.cluster.initial_cluster(),
                "--initial-cluster-token", "lambda-test", "--initial-cluster-state", "new",
                # Loopback members: short timeouts so a lost quorum shows within seconds.
                "--heartbeat-interval", "50", "--election-timeout", "500"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def healthy(self):
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class EtcdCluster:
    def __init__(self, workdir, size=3):
        require(shutil.which("etcd") is not None, "etcd not installed (apt-get install etcd-server)")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.members = [EtcdMember(self, f"m{i}", workdir) for i in range(size)]

    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def urls(self):
        return ",".join(m.client_url for m in self.members)

    def start(self, timeout=60):
        for m in self.members:
            m.start()
        self.wait_healthy(self.members, timeout)
        return self

    def wait_healthy(self, members, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(m.healthy() for m in members):
                return
            time.sleep(0.2)
        logs = "\n".join(m.log_path.read_text(errors="replace")[-2000:] for m in members)
        raise RuntimeError(f"etcd members not healthy within {timeout}s:\n{logs}")

    def stop(self):
        for m in self.members:
            m.kill()


def master_key_file(path):
    """A shared master key, as an operator would copy it to every frontend."""
    path = Path(path)
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path
