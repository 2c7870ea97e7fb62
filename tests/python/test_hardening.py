"""Regression tests for the hardening issue, against the real supervisor with process
isolation: what a function can see of the supervisor, what one invoke can make it hold,
and how it treats slow or bad clients."""

import json
import os
import re

import pytest

from invoke_harness import FUNCTIONS, ROLE, invoke, json_body, logged, make_zip, start_supervisor
from supervisor_harness import ACCESS_KEY, SECRET_KEY

try:
    import boto3  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3 not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

# A function that looks for the supervisor's secret everywhere it can reach, and tries
# to get at the agent (guest-init, PID 1) that holds the connection to the host.
PROBE = r'''
import ctypes, errno, glob, os

def probe(event, context):
    secret = event["secret"].encode()
    found = []
    for path in glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ"):
        try:
            with open(path, "rb") as f:
                if secret in f.read():
                    found.append(path)
        except OSError:
            pass
    if any(secret in v.encode() for v in os.environ.values()):
        found.append("own environment")
    try:
        with open("/proc/1/mem", "rb") as f:
            f.read(1)
        mem = "readable"
    except OSError as e:
        mem = errno.errorcode.get(e.errno, str(e.errno))
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, 1, 0)  # pidfd_open(1, 0)
    getfd = "no pidfd"
    if pidfd >= 0:
        r = libc.syscall(438, pidfd, 3, 0)  # pidfd_getfd(pidfd, 3, 0)
        getfd = "got a descriptor" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    with open("/proc/1/cmdline", "rb") as f:
        pid1 = f.read().replace(b"\0", b" ").decode()
    with open("/proc/cmdline", "rb") as f:
        kernel_cmdline = f.read().decode()
    # io_uring would run system calls outside the sandbox's seccomp filter.
    params = ctypes.create_string_buffer(120)
    ring = libc.syscall(425, 8, params)  # io_uring_setup(8, &params)
    uring = "created" if ring >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    with open("/proc/1/status") as f:
        pid1_uid = int([l for l in f if l.startswith("Uid:")][0].split()[1])
    return {"found": found, "mem": mem, "getfd": getfd, "pid1": pid1,
            "uid": os.getuid(), "pid1_uid": pid1_uid, "kernel_cmdline": kernel_cmdline,
            "io_uring": uring}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = start_supervisor(tmp_path_factory.mktemp("hardening") / "data")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_no_secret_of_the_supervisor_reaches_a_function(server, client):
    assert SECRET_KEY not in " ".join(server.argv()), "the harness must not pass it in argv"
    app = (FUNCTIONS / "python" / "app.py").read_text() + PROBE
    client.create_function(FunctionName="probe", Runtime="python3.11", Role=ROLE,
                           Handler="app.probe", Code={"ZipFile": make_zip({"app.py": app.encode()})})
    r, body, _ = invoke(client, "probe", json.dumps({"secret": SECRET_KEY}).encode())
    assert "FunctionError" not in r, body
    seen = json_body(body)
    assert seen["found"] == [], seen
    # PID 1 is guest-init, exec'd (not a clone of the supervisor), as another uid.
    assert seen["pid1"].startswith("/.worker/guest-init --jail-init"), seen
    assert seen["uid"] == 993 and seen["pid1_uid"] == 0, seen
    assert seen["mem"] == "EACCES", seen
    assert seen["getfd"] == "EPERM", seen
    # The host's kernel command line (an appliance's may hold credentials) is masked.
    assert seen["kernel_cmdline"] == "", seen
    assert seen["io_uring"] == "EPERM", seen


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("VmHWM:")][0].split()[1])


def reset_peak_rss(pid):
    """Resets the peak RSS (VmHWM) to the current RSS, and returns it: the next peak read
    is the highest the process reached since."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return vm_hwm_kib(pid)


FLOOD = '''

def flood(event, context):
    import sys
    line = "f" * 99 + "\\n"
    block = line * 10000
    for _ in range(event["mb"]):
        sys.stdout.write(block)
    sys.stdout.flush()
    return "flooded"
'''


def test_a_log_flood_stays_out_of_supervisor_memory(server, client):
    app = (FUNCTIONS / "python" / "app.py").read_text() + FLOOD
    client.create_function(FunctionName="flood", Runtime="python3.11", Role=ROLE, Timeout=120,
                           Handler="app.flood", Code={"ZipFile": make_zip({"app.py": app.encode()})})
    invoke(client, "flood", json.dumps({"mb": 1}).encode())  # warm
    before = reset_peak_rss(server.proc.pid)
    r, body, logs = invoke(client, "flood", json.dumps({"mb": 200}).encode(), LogType="Tail")
    assert json_body(body) == "flooded"
    # The peak, not what is left after the call: logs held until the end and freed
    # afterwards would pass a check of the RSS after it.
    grew = vm_hwm_kib(server.proc.pid) - before
    assert grew < 64 * 1024, f"supervisor's peak RSS grew {grew} KiB for a 200 MB log"
    # The tail (Lambda's 4 KB) ends with the platform lines; the file was cut.
    assert len(logs) <= 4096 and logs.rstrip().splitlines()[-1].startswith("REPORT")
    # The file gets its last lines within the worker's log flush interval.
    logged(server, "flood", "REPORT RequestId: " + r["ResponseMetadata"]["RequestId"])
    log_dir = server.data_dir / "logs" / "flood"
    sizes = {p.name: p.stat().st_size for p in log_dir.iterdir()}
    assert all(s <= 10 * 1024 * 1024 + 4096 for s in sizes.values()), sizes
    text = "".join(p.read_text(errors="replace") for p in sorted(log_dir.iterdir()))
    assert "log output truncated" in text


def test_a_buffered_invoke_of_a_big_stream_is_cut_at_the_6_mb_limit(server, client):
    from invoke_harness import rust_zip

    client.create_function(FunctionName="bigstream", Runtime="provided.al2023", Role=ROLE,
                           Handler="stream-big", Timeout=60, Code={"ZipFile": rust_zip()},
                           Environment={"Variables": {"STREAM_BIG_MIB": "150"}})
    # The first call also starts the sandbox and prepares the code; the second is measured.
    for _ in range(2):
        before = reset_peak_rss(server.proc.pid)
        r, body, _ = invoke(client, "bigstream")
        assert r.get("FunctionError") == "Unhandled", body[:200]
        assert json_body(body)["errorType"] == "Function.ResponseSizeTooLarge"
    # Collecting the stream to its end peaked above 150 MiB even when freed afterwards.
    grew = vm_hwm_kib(server.proc.pid) - before
    assert grew < 64 * 1024, f"supervisor's peak RSS grew {grew} KiB for a refused 150 MiB stream"


def test_deleting_functions_gives_back_their_descriptors(server, client):
    from invoke_harness import shell_zip

    def round_trip(i):
        name = f"fdleak-{i}"
        client.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                               Handler="function.handler", Code={"ZipFile": shell_zip()})
        invoke(client, name, b'{"n": 1}')
        client.delete_function(FunctionName=name)

    round_trip(0)
    baseline = fd_count(server.proc.pid)
    for i in range(1, 31):
        round_trip(i)
    import time
    time.sleep(1)  # destroyed sandboxes finish closing their sockets
    assert fd_count(server.proc.pid) <= baseline + 3, (baseline, fd_count(server.proc.pid))


def jail_uid_bases():
    """Host uid base of every running process-sandbox jail (guest-init is its PID 1)."""
    bases = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"/.worker/guest-init\0--jail-init"):
                    continue
            with open(f"/proc/{pid}/uid_map") as f:
                bases.append(int(f.read().split()[1]))
        except OSError:
            pass
    return bases


def test_live_sandboxes_never_share_a_host_uid(server, client):
    from invoke_harness import shell_zip

    for i in range(6):
        client.create_function(FunctionName=f"uids-{i}", Runtime="provided.al2023", Role=ROLE,
                               Handler="function.handler", Code={"ZipFile": shell_zip()})
        invoke(client, f"uids-{i}", b"{}")
    bases = jail_uid_bases()
    assert len(bases) >= 6, bases
    assert len(set(bases)) == len(bases), f"two live sandboxes share a host uid range: {bases}"


def signed_headers(port, path, body_len):
    """SigV4 headers for a POST of `body_len` bytes, as an SDK would send them."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from supervisor_harness import ACCESS_KEY, REGION

    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{path}", data=b"x" * body_len,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(req)
    return req.headers


def closed_within(socks, seconds):
    """How many of `socks` the server closed within `seconds`."""
    import select
    import time

    open_socks, closed = set(socks), 0
    deadline = time.monotonic() + seconds
    while open_socks and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_socks), [], [], 0.5)
        for s in ready:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data or b"HTTP/1.1 4" in data:
                open_socks.discard(s)
                closed += 1
    return closed


def test_slow_clients_are_cut_off_and_others_still_served(server, client):
    import socket
    import time

    port = server.port
    path = "/2015-03-31/functions/none/invocations"
    slow_heads, slow_bodies = [], []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        slow_heads.append(s)
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(port, path, 100).items())
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\nx".encode())
        slow_bodies.append(s)
    t0 = time.monotonic()
    assert client.list_functions()["Functions"] is not None, "others are still served"
    assert closed_within(slow_heads + slow_bodies, 20) == 200
    assert time.monotonic() - t0 < 20
    for s in slow_heads + slow_bodies:
        s.close()


def nofile_limits(pid):
    """(soft, hard) RLIMIT_NOFILE of a process."""
    with open(f"/proc/{pid}/limits") as f:
        line = [l for l in f if l.startswith("Max open files")][0]
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_connections_past_the_cap_leave_descriptors_for_sandboxes(tmp_path):
    """Started with a soft limit of 256 descriptors (hard 1024), the supervisor raises it
    to 1024 and serves at most (1024 - 512) / 2 = 256 connections: a flood of idle
    connections waits in the listen backlog instead of taking the descriptors that a
    sandbox start needs."""
    import re
    import resource
    import shutil
    import socket
    import time

    from invoke_harness import require_process_backend, shell_zip
    from supervisor_harness import Supervisor, require

    require_process_backend()
    require(shutil.which("prlimit"), "prlimit (util-linux) not found")

    class Limited(Supervisor):
        def argv(self):
            return ["prlimit", "--nofile=256:1024", "--"] + super().argv()

    sup = Limited(tmp_path / "data", extra_args=["--isolation", "process"]).start()
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    flood = []
    try:
        pid = sup.proc.pid  # prlimit execs the supervisor
        assert nofile_limits(pid) == (1024, 1024), "the soft limit is raised to the hard one"
        # Logged as serving starts, just after the line start() waits for.
        cap = None
        deadline = time.monotonic() + 10
        while cap is None and time.monotonic() < deadline:
            log = re.sub(r"\x1b\[[0-9;]*m", "", sup.log()[sup.log_offset:])
            cap = re.search(r"connection cap\s+max_connections=(\d+)\s+nofile=(\d+)", log)
            time.sleep(0.05)
        assert cap and cap.groups() == ("256", "1024"), log
        c = sup.client()
        for name in ("cap-warm", "cap-cold"):
            c.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                              Handler="function.handler", Code={"ZipFile": shell_zip()})
        invoke(c, "cap-warm", b'{"n": 1}')
        # Up to 700 idle connections (the client needs descriptors for them too).
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(own[0], min(own[1], 4096)), own[1]))
        # Past the cap, connections wait in the listen backlog; once that is full too
        # (its size is the host's somaxconn), the kernel drops further SYNs: stop there.
        for _ in range(700):
            try:
                flood.append(socket.create_connection(("127.0.0.1", sup.port), timeout=2))
            except TimeoutError:
                break
        assert len(flood) > 256, f"only {len(flood)} connections: the flood must pass the cap"
        time.sleep(1)  # the supervisor accepts what it will
        used = fd_count(pid)
        assert used < 1024 - 256, f"{used} of 1024 descriptors in use during the flood"
        # A sandbox still starts: the client's kept-alive connection was accepted before
        # the flood (a new one would wait behind it in the backlog).
        r, body, _ = invoke(c, "cap-cold", b'{"n": 2}')
        assert "FunctionError" not in r, body
        for s in flood:
            s.close()
        flood = []
        time.sleep(0.5)
        r, body, _ = invoke(sup.client(), "cap-warm", b'{"n": 3}')
        assert "FunctionError" not in r, body
        assert fd_count(pid) < used, "the flood's descriptors are given back"
    finally:
        for s in flood:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, own)
        sup.stop()


def test_an_unsigned_large_body_is_refused_unread(server):
    import socket

    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(10)
    # 50 MB announced, none sent: the 403 must come at once, without reading.
    s.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
    reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    s.close()


def test_duplicate_entry_names_are_refused(client):
    import warnings
    import zipfile

    from botocore.exceptions import ClientError

    # zipfile writes a repeated name when asked (with a warning); the zip crate would
    # keep only the last one, so the check must read the central directory itself.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup = make_zip({"bootstrap": (b"#!/bin/sh\n", 0o755)})
        import io
        buf = io.BytesIO(dup)
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr("bootstrap", b"#!/bin/sh\necho second\n")
    with pytest.raises(ClientError) as e:
        client.create_function(FunctionName="dupzip", Runtime="provided.al2023", Role=ROLE,
                               Handler="x", Code={"ZipFile": buf.getvalue()})
    err = e.value.response["Error"]
    assert err["Code"] == "InvalidParameterValueException", err
    assert "more than once" in err["Message"], err


def test_concurrent_large_uploads_have_a_memory_bound(tmp_path):
    import threading
    import zipfile

    import boto3
    from botocore.config import Config

    sup = start_supervisor(tmp_path / "data")
    try:
        # As the AWS CLI is configured by default: 60 s to send a request, and
        # throttles (429) retried. Uploads beyond the budget wait without being read.
        c = boto3.client("lambda", endpoint_url=sup.endpoint, region_name="us-east-1",
                         aws_access_key_id=ACCESS_KEY,
                         aws_secret_access_key=SECRET_KEY,
                         config=Config(connect_timeout=60, read_timeout=300,
                                       retries={"mode": "standard", "max_attempts": 8}))
        blob = os.urandom(40 << 20)
        code = make_zip({"bootstrap": (b"#!/bin/sh\n", 0o755), "blob": blob},
                        compression=zipfile.ZIP_STORED)
        before = vm_hwm_kib(sup.proc.pid)
        errors = []

        def upload(i):
            try:
                c.create_function(FunctionName=f"upload-{i}", Runtime="provided.al2023", Role=ROLE,
                                  Handler="x", Code={"ZipFile": code})
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors
        grew_mib = (vm_hwm_kib(sup.proc.pid) - before) // 1024
        # 8 x 53 MB request bodies; without a budget this peaked near 1 GB.
        assert grew_mib < 600, f"peak RSS grew {grew_mib} MiB for 8 concurrent 40 MiB uploads"
        assert len(c.list_functions()["Functions"]) == 8
    finally:
        sup.stop()


def test_a_full_disk_for_sandbox_code_is_a_service_error_not_a_bad_package(tmp_path):
    import subprocess

    from botocore.exceptions import ClientError

    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(run)], check=True)
    try:
        sup = start_supervisor(tmp_path / "data", "--run-dir", str(run))
        try:
            c = sup.client()
            boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
            code = make_zip({"bootstrap": (boot, 0o755), "filler": os.urandom(3 << 20)})
            with pytest.raises(ClientError) as e:
                c.create_function(FunctionName="diskfull", Runtime="provided.al2023", Role=ROLE,
                                  Handler="function.handler", Code={"ZipFile": code})
                c.invoke(FunctionName="diskfull", Payload=b"{}")
            err = e.value.response["Error"]
            assert err["Code"] == "ServiceException", err
            assert "No space left" in err["Message"], err
        finally:
            sup.stop()
    finally:
        subprocess.run(["umount", "-l", str(run)], check=False)


DIE_PY = '''

def die(event, context):
    import os
    os._exit(3)
'''


def test_a_runtime_exit_mid_invoke_is_one_level_of_error_json(server, client):
    app = (FUNCTIONS / "python" / "app.py").read_text() + DIE_PY
    client.create_function(FunctionName="die-py", Runtime="python3.11", Role=ROLE,
                           Handler="app.die", Code={"ZipFile": make_zip({"app.py": app.encode()})})
    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    fn = (FUNCTIONS / "shell" / "function.sh").read_text() + "\ndie() {\n  exit 3\n}\n"
    client.create_function(FunctionName="die-sh", Runtime="provided.al2023", Role=ROLE,
                           Handler="function.die",
                           Code={"ZipFile": make_zip({"bootstrap": (boot, 0o755),
                                                      "function.sh": fn.encode()})})
    for name in ["die-py", "die-sh"]:
        r, body, _ = invoke(client, name)
        assert r.get("FunctionError") == "Unhandled", body
        err = json_body(body)
        assert set(err) >= {"errorType", "errorMessage"}, err
        assert err["errorType"] == "Runtime.ExitError", err
        # One level: the message is text, not a second error document.
        assert "{" not in err["errorMessage"] and "exit status 3" in err["errorMessage"], err


def test_two_supervisors_never_share_a_host_uid(server, client, tmp_path):
    from invoke_harness import shell_zip

    other = start_supervisor(tmp_path / "other")
    try:
        oc = other.client()
        for i in range(3):
            for c, prefix in [(client, "uidmine"), (oc, "uidother")]:
                c.create_function(FunctionName=f"{prefix}-{i}", Runtime="provided.al2023",
                                  Role=ROLE, Handler="function.handler",
                                  Code={"ZipFile": shell_zip()})
                invoke(c, f"{prefix}-{i}", b"{}")
        bases = jail_uid_bases()
        assert len(bases) >= 6, bases
        assert len(set(bases)) == len(bases), f"sandboxes of two supervisors share ids: {bases}"
    finally:
        other.stop()


JAIL_ROOT_GID = 999999  # worker::jail::JAIL_ROOT_GID


def _read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def test_sandbox_code_is_closed_to_other_users(server, client):
    import glob
    import stat
    import subprocess

    boot = (FUNCTIONS / "shell" / "bootstrap").read_bytes()
    fn = (FUNCTIONS / "shell" / "function.sh").read_bytes()
    client.create_function(FunctionName="code-dirs", Runtime="provided.al2023", Role=ROLE,
                           Handler="function.handler",
                           Code={"ZipFile": make_zip({"bootstrap": (boot, 0o755), "function.sh": fn})})
    r = client.invoke(FunctionName="code-dirs", Payload=b"{}")
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    run_dirs = glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                      f"lambda-supervisor-{server.proc.pid}"))
    assert run_dirs, "the supervisor's default run dir"
    code = os.path.join(run_dirs[0], "sandbox-code")
    assert os.path.isdir(code) and os.listdir(code), "a live sandbox has its own code directory"
    assert stat.S_IMODE(os.stat(run_dirs[0]).st_mode) == 0o711, oct(os.stat(run_dirs[0]).st_mode)
    st = os.stat(code)
    # Only the jails' root group may pass: a directory's name shows in its jail's mountinfo.
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 0, JAIL_ROOT_GID), st
    names = os.listdir(code)
    # Sandboxes' own directories, and the one unpacked copy per digest they hard-link to.
    assert all(re.fullmatch(r"sb-\d+-\d+|tpl-[0-9a-f]{64}-\d+", n) for n in names), names
    # This test's sandbox (others of the module's functions may hold no bootstrap, or be
    # going away): one whose bootstrap is this function's.
    own = next(d for d in (os.path.join(code, n) for n in names if n.startswith("sb-"))
               if _read_or_none(os.path.join(d, "bootstrap")) == boot)
    shared = os.stat(os.path.join(own, "bootstrap"))
    assert shared.st_nlink >= 2 and shared.st_uid == 0, shared
    # Read-only for everyone but root: no sandbox can change what another one runs.
    assert stat.S_IMODE(shared.st_mode) == 0o755, oct(shared.st_mode)
    copies = [os.path.join(code, n, "bootstrap") for n in names if n.startswith("tpl-")]
    assert any(os.path.exists(c) and os.path.samestat(shared, os.stat(c)) for c in copies), \
        "linked to its digest's copy"
    for cmd in (["ls", code], ["ls", own]):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            *cmd], capture_output=True, text=True)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r.returncode, r.stderr)
