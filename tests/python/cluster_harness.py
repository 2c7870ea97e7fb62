"""A cluster on one machine: each host is a network namespace joined to a bridge by a
veth pair (one frontend, three workers), with a CA and certificates from
`supervisor cluster`. The test process reaches the frontend's API through its own veth."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from supervisor_harness import ACCESS_KEY, REGION, SECRET_KEY, Supervisor, require, supervisor_binary

SUBNET = "10.77.0"
CLIENT_ADDR = f"{SUBNET}.254"
FRONTEND_ADDR = f"{SUBNET}.1"
API_PORT = 9000
LINK_PORT = 9443
WORKER_PORT = 7100


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_ns(ns):
    """Runs in a host's network namespace only: `ip netns exec` would also remount /sys,
    hiding the cgroup hierarchies the jails need. `None` is this machine's own."""
    return ["nsenter", f"--net=/run/netns/{ns}"] if ns else []


def ns_name(tag, host):
    return f"lmc{tag}-{host}"


class Network:
    """Bridge namespace plus one namespace per host."""

    def __init__(self, tag):
        require(os.geteuid() == 0, "network namespaces need root")
        self.tag = tag
        self.switch = ns_name(tag, "sw")
        self.hosts = {}

    def __enter__(self):
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        # The test process is the client host: its end lives in the root namespace.
        self._plug(None, f"v{self.tag}c", CLIENT_ADDR)
        return self

    def _plug(self, ns, name, addr):
        peer = name + "p"
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", self.switch)
        sh("ip", "-n", self.switch, "link", "set", peer, "master", "br0", "up")
        if ns is not None:
            sh("ip", "link", "set", name, "netns", ns)
        prefix = ["ip", "-n", ns] if ns else ["ip"]
        sh(*prefix, "addr", "add", f"{addr}/24", "dev", name)
        sh(*prefix, "link", "set", name, "up")
        return peer

    def add_host(self, host, addr):
        ns = ns_name(self.tag, host)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        peer = self._plug(ns, f"v{self.tag}{host}", addr)
        self.hosts[host] = (ns, addr, peer)
        return ns

    def cut(self, host):
        """Takes the host's cable out (its switch port goes down)."""
        _, _, peer = self.hosts[host]
        sh("ip", "-n", self.switch, "link", "set", peer, "down")

    def __exit__(self, *exc):
        for ns, _, _ in self.hosts.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", f"v{self.tag}c", check=False)
        sh("ip", "netns", "del", self.switch, check=False)


def cluster_cli(*args):
    return sh(str(supervisor_binary()), "cluster", *args)


def make_ca(dir, workers, frontends=("fe1",)):
    cluster_cli("init", "--dir", str(dir))
    for w in workers:
        cluster_cli("issue", "--dir", str(dir), "--worker", w)
    for f in frontends:
        cluster_cli("issue", "--dir", str(dir), "--frontend", f)


def cluster_status(endpoint, credentials=(ACCESS_KEY, SECRET_KEY)):
    """A frontend's signed `GET /cluster/status` (`credentials`: access key id, secret)."""
    import json
    import urllib.request

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    url = f"{endpoint}/cluster/status"
    req = botocore.awsrequest.AWSRequest(method="GET", url=url)
    creds = botocore.credentials.Credentials(*credentials)
    botocore.auth.SigV4Auth(creds, "lambda", REGION).add_auth(req)
    r = urllib.request.Request(url, headers=dict(req.headers.items()))
    with urllib.request.urlopen(r, timeout=5) as resp:
        return json.loads(resp.read())


class WorkerDaemon:
    """`supervisor worker` inside a host namespace."""

    def __init__(self, ns, wid, addr, cluster_dir, log_dir, *extra, port=WORKER_PORT):
        self.ns, self.id, self.addr, self.port = ns, wid, addr, port
        self.cluster_dir = cluster_dir
        self.log_path = Path(log_dir) / f"worker-{wid}.log"
        self.extra = list(extra)
        self.proc = None

    @property
    def link(self):
        return f"{self.addr}:{self.port}"

    def start(self, timeout=30):
        offset = len(self.log())
        argv = [*in_ns(self.ns), str(supervisor_binary()), "worker",
                "--id", self.id, "--listen", self.link, "--cluster-dir", str(self.cluster_dir),
                "--isolation", "process", "--capacity-mib", "4096", *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "listening on" in self.log()[offset:]:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.id} exited:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"worker {self.id} did not start:\n{self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


class Frontend(Supervisor):
    """`supervisor serve --role frontend` inside the frontend's namespace."""

    def __init__(self, ns, data_dir, cluster_dir, workers, extra_args=(), addr=FRONTEND_ADDR,
                 node_id="fe1"):
        super().__init__(data_dir, extra_args=extra_args)
        self.ns, self.addr, self.node_id = ns, addr, node_id
        self.cluster_dir = cluster_dir
        self.workers = workers

    @property
    def endpoint(self):
        return f"http://{self.addr}:{API_PORT}"

    def argv(self):
        argv = [*in_ns(self.ns), str(supervisor_binary()), "serve",
                "--listen", f"{self.addr}:{API_PORT}", "--data-dir", str(self.data_dir),
                "--region", REGION, "--access-key-id", ACCESS_KEY,
                "--role", "frontend", "--cluster-dir", str(self.cluster_dir),
                "--node-id", self.node_id, "--link-listen", f"{self.addr}:{LINK_PORT}"]
        for w in self.workers:
            argv += ["--worker", w]
        return argv + self.extra_args

    def start(self, timeout=30):
        self.log_offset = len(self.log())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(r"listening on http://", self.log()[self.log_offset:]):
                self.port = API_PORT
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"frontend exited:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"frontend did not start:\n{self.log()}")

    def wait_workers(self, n, timeout=20):
        """Until the frontend sees `n` workers up (its signed cluster status)."""
        deadline = time.time() + timeout
        status = None
        while time.time() < deadline:
            status = self.cluster_status()
            if sum(1 for w in status["workers"]
                   if w.get("listed", True) and w["up"] and not w["draining"]) >= n:
                return status
            time.sleep(0.2)
        raise AssertionError(f"{n} workers not up: {status}")

    def cluster_status(self):
        return cluster_status(self.endpoint)

    def metrics_text(self):
        from invoke_harness import metrics
        return metrics(self)
