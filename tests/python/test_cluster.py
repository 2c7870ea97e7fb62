"""Frontend and worker hosts joined by mutually authenticated TLS links: one frontend
and three workers, each in its own network namespace, driven with boto3."""

import json
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from cluster_harness import (FRONTEND_ADDR, LINK_PORT, SUBNET, Frontend, Network, WorkerDaemon,
                             cluster_cli, make_ca)
from invoke_harness import deploy, has_init_duration, invoke, metric_value, require_process_backend
from supervisor_harness import make_zip

try:
    from botocore.exceptions import ClientError
except ImportError:
    import os
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 not installed", allow_module_level=True)

WORKERS = ("w1", "w2", "w3")
SCRAPE_PORT = 7200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_process_backend()
    root = tmp_path_factory.mktemp("cluster")
    ca = root / "ca"
    make_ca(ca, WORKERS)
    with Network("a") as net:
        fe_ns = net.add_host("fe", FRONTEND_ADDR)
        workers = {}
        for i, w in enumerate(WORKERS):
            ns = net.add_host(w, f"{SUBNET}.{11 + i}")
            # w1 also serves its metrics over plain HTTP (for scrapers).
            extra = ["--metrics-listen", f"{SUBNET}.11:{SCRAPE_PORT}"] if i == 0 else []
            workers[w] = WorkerDaemon(ns, w, f"{SUBNET}.{11 + i}", ca, root, *extra).start()
        fe = Frontend(fe_ns, root / "data", ca, [d.link for d in workers.values()]).start()
        fe.wait_workers(3)
        try:
            yield net, fe, workers, ca, root
        finally:
            fe.stop()
            for d in workers.values():
                d.stop()


def sent_by_worker(fe):
    text = fe.metrics_text()
    return {w: metric_value(text, "frontend_worker_invokes_sent_total", worker=f"{SUBNET}.{11 + i}:7100")
            for i, w in enumerate(WORKERS)}


def moved(before, after):
    return [w for w in WORKERS if after[w] != before[w]]


def test_functions_run_on_workers_and_warm_invokes_stick_to_their_worker(cluster):
    _, fe, workers, _, _ = cluster
    client = fe.client()
    deploy(client, "c-rust", "rust", "echo")
    deploy(client, "c-py", "python", "app.echo")
    deploy(client, "c-sh", "shell", "function.handler")
    for name in ("c-rust", "c-py", "c-sh"):
        before = sent_by_worker(fe)
        r, body, logs = invoke(client, name, b'{"k":"v"}', LogType="Tail")
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        assert has_init_duration(logs), logs
        first = moved(before, sent_by_worker(fe))
        assert len(first) == 1, first
        for _ in range(3):
            before = sent_by_worker(fe)
            r, body2, logs = invoke(client, name, b'{"k":"v"}', LogType="Tail")
            assert r["StatusCode"] == 200 and body2 == body
            assert not has_init_duration(logs), f"{name}: warm invoke cold-started:\n{logs}"
            assert moved(before, sent_by_worker(fe)) == first, "warm invoke left its worker"
    # The code went to workers by digest and was cached there, sealed.
    status = fe.cluster_status()
    assert status["role"] == "frontend"
    assert sum(w["sandboxes"] for w in status["workers"]) >= 3
    assert all(w["lease_remaining_secs"] > 0 for w in status["workers"])


def scrape(path):
    """(status, text) of a plain HTTP GET to w1's metrics port (this process is a host
    on the cluster's network)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{SUBNET}.11:{SCRAPE_PORT}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_a_worker_can_serve_its_metrics_to_scrapers_without_a_certificate(cluster):
    status, text = scrape("/metrics")
    assert status == 200, text
    assert "worker_lease_remaining_seconds" in text, text
    assert "worker_invokes_refused_body_budget_total 0" in text, text
    # The frontend's connection to w1 shows in w1's own link counters.
    assert re.search(r"^worker_link_handshakes_total [1-9]", text, re.M), text
    assert scrape("/")[0] == 404
    assert scrape("/2018-06-01/runtime/invocation/next")[0] == 404


def test_copies_of_one_function_spread_and_different_functions_mix(cluster):
    _, fe, _, _, _ = cluster
    client = fe.client()
    for name in ("spread-a", "spread-b"):
        deploy(client, name, "shell", "function.slow")
    errors = []

    def run(name):
        try:
            r, _, _ = invoke(client, name, b'"x"')
            assert r["StatusCode"] == 200 and "FunctionError" not in r
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ["spread-a"] * 3 + ["spread-b"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    status = fe.cluster_status()
    per_worker = {w["address"]: w for w in status["workers"]}
    assert len(per_worker) == 3
    # Three concurrent copies of each function: one per worker, so every worker mixes
    # one sandbox of each.
    logs = {w: d.log() for w, d in cluster[2].items()}
    for w, text in logs.items():
        for name in ("spread-a", "spread-b"):
            assert text.count(f"({name}:$LATEST") >= 1, f"{w} has no sandbox of {name}:\n{text[-2000:]}"


def test_a_capture_on_the_links_holds_no_payload_or_code_in_plaintext(cluster, tmp_path):
    net, fe, _, _, _ = cluster
    client = fe.client()
    code_marker = b"CODE-MARKER-" + b"7" * 24
    payload_marker = "PAYLOAD-MARKER-" + "5" * 24
    import zipfile
    from invoke_harness import FUNCTIONS, SHELL_EXTRA
    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    fn = (FUNCTIONS / "shell" / "function.sh").read_text() + SHELL_EXTRA
    code = make_zip({"bootstrap": (boot, 0o755), "function.sh": fn.encode(), "marker.txt": code_marker},
                    compression=zipfile.ZIP_STORED)
    assert code_marker in code
    pcap = tmp_path / "link.pcap"
    cap = subprocess.Popen(["nsenter", f"--net=/run/netns/{net.switch}", "tcpdump", "-i", "br0", "-w", str(pcap),
                            "-U", "tcp", "and", "not", "port", "9000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)
    try:
        client.create_function(FunctionName="capture", Runtime="provided.al2023",
                               Role="arn:aws:iam::000000000000:role/r", Handler="function.handler",
                               Code={"ZipFile": code})
        r, body, _ = invoke(client, "capture", json.dumps({"m": payload_marker}).encode())
        assert r["StatusCode"] == 200 and payload_marker.encode() in body, body
    finally:
        time.sleep(1)
        cap.terminate()
        cap.wait()
    data = pcap.read_bytes()
    assert len(data) > 5000, "the capture saw no link traffic"
    assert code_marker not in data, "function code crossed a link in plaintext"
    assert payload_marker.encode() not in data, "a payload crossed a link in plaintext"


def tls_context(ca_dir, role, ident):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca_dir / "ca.pem"))
    if role:
        ctx.load_cert_chain(str(ca_dir / f"{role}-{ident}.pem"), str(ca_dir / f"{role}-{ident}.key"))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def try_handshake(ctx):
    """A handshake with the frontend's link listener (which admits only workers); TLS 1.3
    reports a refused client certificate on the first read."""
    with socket.create_connection((FRONTEND_ADDR, LINK_PORT), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                s.settimeout(3)
                return bool(s.recv(1))
        except (ssl.SSLError, ConnectionError, OSError):
            return False


def refusals(fe, reason):
    return metric_value(fe.metrics_text(), "frontend_link_refusals_total", reason=reason)


def test_each_refusal_is_refused_and_counted(cluster, tmp_path):
    _, fe, _, ca, _ = cluster
    other = tmp_path / "other-ca"
    cluster_cli("init", "--dir", str(other))
    cluster_cli("issue", "--dir", str(other), "--worker", "w1")
    cluster_cli("issue", "--dir", str(ca), "--worker", "old", "--hours", "0.0002")
    cluster_cli("issue", "--dir", str(ca), "--worker", "gone")
    cluster_cli("revoke", "--dir", str(ca), "--worker", "gone")
    time.sleep(2)  # "old" expires; the frontend re-reads the revocation list
    assert try_handshake(tls_context(ca, "worker", "w1")), "a valid worker certificate was refused"
    cases = [
        ("no_certificate", tls_context(ca, None, None)),
        ("unknown_ca", tls_context(other, "worker", "w1")),
        ("expired", tls_context(ca, "worker", "old")),
        ("revoked", tls_context(ca, "worker", "gone")),
        ("wrong_role", tls_context(ca, "frontend", "fe1")),
    ]
    for reason, ctx in cases:
        before = refusals(fe, reason) or 0
        assert not try_handshake(ctx), f"{reason}: handshake accepted"
        assert (refusals(fe, reason) or 0) == before + 1, f"{reason} not counted"
    # Nothing else was disturbed.
    r, _, _ = invoke(fe.client(), "c-rust", b"{}")
    assert r["StatusCode"] == 200


def flip_proxy(listen_port, target, armed):
    """Relays one connection to `target`; once `armed` is set, flips one byte in the
    middle of the next chunk the client sends (an application-data record)."""
    srv = socket.create_server(("127.0.0.1", listen_port))
    flipped = threading.Event()

    def pump(a, b, tamper):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if tamper and armed.is_set() and not flipped.is_set():
                    i = len(d) // 2
                    d = d[:i] + bytes([d[i] ^ 0x01]) + d[i + 1:]
                    flipped.set()
                b.sendall(d)
        except OSError:
            pass
        for sock in (a, b):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run():
        c, _ = srv.accept()
        srv.close()
        u = socket.create_connection(target)
        threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
        pump(c, u, True)

    threading.Thread(target=run, daemon=True).start()
    return flipped


def test_a_tampered_record_is_refused_and_counted_and_nothing_else_notices(cluster):
    _, fe, _, ca, _ = cluster
    client = fe.client()
    before = refusals(fe, "bad_record") or 0
    armed = threading.Event()
    flipped = flip_proxy(19443, (FRONTEND_ADDR, LINK_PORT), armed)
    ctx = tls_context(ca, "worker", "w1")
    with socket.create_connection(("127.0.0.1", 19443), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            time.sleep(0.5)  # the handshake's last bytes are through the proxy
            armed.set()
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 64)
            s.settimeout(3)
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                while s.recv(65536):
                    pass
    assert flipped.is_set()
    deadline = time.time() + 5
    while (refusals(fe, "bad_record") or 0) < before + 1 and time.time() < deadline:
        time.sleep(0.1)
    assert (refusals(fe, "bad_record") or 0) == before + 1, "the tampered record was not counted"
    r, _, _ = invoke(client, "c-rust", b"{}")
    assert r["StatusCode"] == 200


def test_a_worker_killed_mid_invoke_fails_that_invoke_clearly_and_the_next_runs_elsewhere(cluster):
    _, fe, workers, _, _ = cluster
    client = fe.client()
    deploy(client, "c-linger", "shell", "function.linger", Timeout=20)
    result = {}

    def run():
        t0 = time.time()
        try:
            invoke(client, "c-linger", b'"x"')
            result["outcome"] = "succeeded"
        except ClientError as e:
            result["outcome"] = e.response
        result["took"] = time.time() - t0

    before = sent_by_worker(fe)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(3)  # cold start done, the function sleeps
    victim = moved(before, sent_by_worker(fe))
    assert len(victim) == 1, victim
    workers[victim[0]].kill9()
    t.join(timeout=30)
    assert result.get("outcome") != "succeeded", result
    err = result["outcome"]
    assert err["Error"]["Code"] == "ServiceException", err
    assert "lost" in err["Error"]["Message"], err
    assert result["took"] < 8, "the loss was noticed only when the function would have ended"
    r, _, _ = invoke(client, "c-rust", b"{}")
    assert r["StatusCode"] == 200
    lost = metric_value(fe.metrics_text(), "frontend_invokes_lost_total")
    assert lost >= 1
    # The worker restarts and rejoins.
    workers[victim[0]].start()
    fe.wait_workers(3)


def test_a_cut_cable_is_noticed_within_seconds(cluster):
    net, fe, _, _, _ = cluster
    fe.wait_workers(3)
    t0 = time.time()
    net.cut("w3")
    deadline = t0 + 10
    while time.time() < deadline:
        ws = {w["address"]: w["up"] for w in fe.cluster_status()["workers"]}
        if not ws[f"{SUBNET}.13:7100"] and sum(ws.values()) == 2:
            break
        time.sleep(0.1)
    took = time.time() - t0
    status = fe.cluster_status()
    assert took < 6, f"a cut worker was still up after {took:.1f} s: {status}"
    r, _, _ = invoke(fe.client(), "c-sh", b'{"k":"v"}')
    assert r["StatusCode"] == 200, status

