"""A real etcd cluster for the tests: Debian's `etcd` members on loopback (ports picked
at start) or each in a host's network namespace, each with its own data dir."""

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


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(dir, name):
    """A CA (key, certificate) in `dir`, made with the openssl command."""
    key, cert = dir / f"{name}-ca.key", dir / f"{name}-ca.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name} test CA")
    return key, cert


def issue(dir, ca, name, usage):
    """A certificate for 127.0.0.1 signed by `ca`; `usage` is serverAuth or clientAuth."""
    key, csr, cert, ext = (dir / f"{name}.key", dir / f"{name}.csr", dir / f"{name}.pem",
                           dir / f"{name}.ext")
    ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


class EtcdTls:
    """A CA, etcd's server certificate, a client certificate, and a client certificate
    from another CA (which etcd must refuse)."""

    def __init__(self, dir):
        dir = Path(dir)
        dir.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(dir, "etcd")
        self.server = issue(dir, self.ca, "server", "serverAuth")
        self.client = issue(dir, self.ca, "client", "clientAuth")
        self.rogue = issue(dir, make_ca(dir, "rogue"), "rogue", "clientAuth")

    def frontend_args(self, client=None):
        cert, key = client or self.client
        return ("--etcd-ca", str(self.ca[1]), "--etcd-cert", str(cert), "--etcd-key", str(key))


class EtcdMember:
    def __init__(self, cluster, name, workdir, host=None):
        """`host`: (namespace, address) to run in, else loopback on free ports."""
        self.cluster, self.name = cluster, name
        self.data_dir = Path(workdir) / f"{name}.etcd"
        self.log_path = Path(workdir) / f"{name}.log"
        if host:
            # Not etcd's default ports, even in a namespace of its own.
            (self.ns, self.addr), (self.client_port, self.peer_port) = host, (12379, 12380)
        else:
            self.ns, self.addr = None, "127.0.0.1"
            self.client_port, self.peer_port = free_port(), free_port()
        self.proc = None

    @property
    def client_url(self):
        scheme = "https" if self.cluster.tls else "http"
        return f"{scheme}://{self.addr}:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://{self.addr}:{self.peer_port}"

    def start(self):
        # Only the network namespace: see cluster_harness.in_ns.
        ns = ["nsenter", f"--net=/run/netns/{self.ns}"] if self.ns else []
        argv = [*ns, shutil.which("etcd"), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.cluster.initial_cluster(),
                "--initial-cluster-token", "lambda-test", "--initial-cluster-state", "new",
                # Loopback members: short timeouts so a lost quorum shows within seconds.
                "--heartbeat-interval", "50", "--election-timeout", "500"]
        if self.cluster.tls:
            t = self.cluster.tls
            argv += ["--cert-file", str(t.server[0]), "--key-file", str(t.server[1]),
                     "--client-cert-auth", "--trusted-ca-file", str(t.ca[1])]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def healthy(self):
        context = None
        if self.cluster.tls:
            import ssl
            t = self.cluster.tls
            context = ssl.create_default_context(cafile=str(t.ca[1]))
            context.load_cert_chain(str(t.client[0]), str(t.client[1]))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1,
                                        context=context) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class EtcdCluster:
    def __init__(self, workdir, size=3, tls=None, hosts=None):
        """`hosts`: one (namespace, address) per member; loopback without."""
        require(shutil.which("etcd") is not None, "etcd not installed (apt-get install etcd-server)")
        self.tls = tls
        Path(workdir).mkdir(parents=True, exist_ok=True)
        hosts = hosts or [None] * size
        self.members = [EtcdMember(self, f"m{i}", workdir, h) for i, h in enumerate(hosts)]

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


def gateway(member, path, request):
    """A POST to etcd's JSON gateway (plain http) on `member`; its decoded answer."""
    req = urllib.request.Request(f"{member.client_url}{path}", data=json.dumps(request).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def key_values(member, prefix="/"):
    """Every key-value record under `prefix` as the gateway gives it (key and value in
    base64, lease id as a decimal string)."""
    import base64

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return gateway(member, "/v3/kv/range", {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(end.encode()).decode()}).get("kvs", [])


def all_values(member, prefix="/"):
    """Every key and value under `prefix`."""
    import base64

    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
            for kv in key_values(member, prefix)}
