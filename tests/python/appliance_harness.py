"""Boots the appliance (target/appliance, built by image-build/appliance.sh) under QEMU
TCG, whose `-cpu max` emulates AMD SVM: the appliance's kernel loads kvm_amd and our
vmm runs each sandbox as a real microVM inside it (nested KVM). The tests and the
benchmark drive it from this machine through QEMU user networking forwarded on
127.0.0.1 only, a root shell on the second serial port, and QMP for the ACPI power
button. Recipe and timings: shared/notes/nested-kvm-tcg.md."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from supervisor_harness import REPO, REGION, require

APPLIANCE = Path(os.environ.get("LAMBDA_APPLIANCE_DIR", REPO / "target" / "appliance"))
OVMF = Path("/usr/share/ovmf/OVMF.fd")
CREDENTIALS = re.compile(r"access key id (\S+) secret access key (\S+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_disk(path, files):
    """A 4 GiB ext4 data disk (label lambda-data) holding `files`: {relative path:
    (bytes, mode)}."""
    staging = Path(path).parent / "staging"
    for rel, (data, mode) in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
        os.chmod(staging / rel, mode)
    with open(path, "wb") as f:
        f.truncate(4 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "lambda-data", "-d", str(staging), str(path)],
                   check=True)
    shutil.rmtree(staging)
    return path


def node_data_disk(path, ca, role, node_ids):
    """A data disk holding, under cluster/, what cluster nodes of `role` ("worker" or
    "frontend") read: the CA certificate, each node's own certificate and key (`node_ids`:
    one id or a list, for several daemons in one appliance), and the CRL, never the CA's
    key."""
    ids = [node_ids] if isinstance(node_ids, str) else list(node_ids)
    files = [ca / "ca.pem"] + [ca / f"{role}-{i}.{ext}" for i in ids for ext in ("pem", "key")]
    files += [ca / "crl.pem"] if (ca / "crl.pem").exists() else []
    return data_disk(path, {f"cluster/{f.name}": (f.read_bytes(), f.stat().st_mode & 0o777)
                            for f in files})


def registry_data_disk(path, registry, host):
    """A data disk whose supervisor config names `registry` as `host` (how the
    appliance reaches it)."""
    from image_harness import registry_toml
    return data_disk(path, {"supervisor.toml": (registry_toml(registry, host).encode(), 0o600)})


def require_appliance():
    require(shutil.which("qemu-system-x86_64") is not None,
            "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
    for f in ("appliance-vmlinuz", "appliance-initramfs.cpio.zst"):
        require((APPLIANCE / f).is_file(), f"{f} not found in {APPLIANCE} (run image-build/appliance.sh)")


# What busybox ash prints when appliance-init starts a new shell on the serial port.
SHELL_BANNER = b"built-in shell (ash)"


class Appliance:
    """One appliance VM. `data` is its data disk (a raw file), kept across boots."""

    def __init__(self, workdir, data=None, data_size=4 << 30, mem_mib=4096, cpus=2,
                 serve_args=(), cmdline="", disk_image=None, forward=(), drives=(),
                 ready="supervisor: listening on"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = Path(data) if data else self.workdir / "data.img"
        if not self.data.exists():
            with open(self.data, "wb") as f:
                f.truncate(data_size)
        self.mem_mib, self.cpus = mem_mib, cpus
        self.serve_args = list(serve_args)
        self.extra_cmdline = cmdline
        self.disk_image = disk_image
        # Extra guest ports forwarded to 127.0.0.1 (guest port -> host port in `ports`): a
        # tuple of guest ports gets host ports picked at each boot, a dict pins them (for a
        # guest that must be told its own forwarded address on its command line).
        self.forward = dict(forward) if isinstance(forward, dict) else {g: None for g in forward}
        # Extra raw drives after the data disk (/dev/vdb, ...), e.g. benchmark tools.
        self.drives = [Path(d) for d in drives]
        # What the console says once the appliance serves; a worker host prints no
        # API credentials.
        self.ready = ready
        self.ports = {}
        self.proc = None
        self.port = None
        self.credentials = None
        self.boots = 0
        self.shell_conn = None  # (boot number, socket)

    # --- lifecycle -----------------------------------------------------------------

    def cmdline(self):
        serve = " ".join(self.serve_args)
        parts = ["console=ttyS0", "lambda.shell=ttyS1", "lambda.data=/dev/vda", "lambda.stop_timeout=60"]
        if serve:
            parts.append(f'lambda.serve="{serve}"')
        if self.extra_cmdline:
            parts.append(self.extra_cmdline)
        return " ".join(parts)

    def argv(self):
        self.console = self.workdir / f"console-{self.boots}.log"
        self.shell_sock = self.workdir / "shell.sock"
        self.qmp_sock = self.workdir / "qmp.sock"
        for p in (self.shell_sock, self.qmp_sock):
            p.unlink(missing_ok=True)
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(self.mem_mib),
                "-smp", str(self.cpus), "-nodefaults", "-no-user-config", "-nographic",
                "-serial", f"file:{self.console}",
                "-chardev", f"socket,id=sh,path={self.shell_sock},server=on,wait=off",
                "-serial", "chardev:sh",
                "-qmp", f"unix:{self.qmp_sock},server=on,wait=off",
                "-netdev", "user,id=n0," + ",".join(
                    f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.ports.items()),
                "-device", "virtio-net-pci,netdev=n0"]
        if self.disk_image:
            # UEFI boot of the GPT disk image: its lambda-data partition is the data disk.
            argv += ["-bios", str(OVMF),
                     "-drive", f"file={self.disk_image},if=virtio,format=raw"]
        else:
            argv += ["-kernel", str(APPLIANCE / "appliance-vmlinuz"),
                     "-initrd", str(APPLIANCE / "appliance-initramfs.cpio.zst"),
                     "-append", self.cmdline(),
                     "-drive", f"file={self.data},if=virtio,format=raw"]
        for d in self.drives:
            argv += ["-drive", f"file={d},if=virtio,format=raw,readonly=on"]
        return argv

    def start(self, timeout=300):
        self.port = free_port()
        self.ports = {9000: self.port, **{g: h or free_port() for g, h in self.forward.items()}}
        argv = self.argv()
        self.boot_started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"qemu-{self.boots}.log", "wb"))
        self.boots += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console_text()
            if self.ready in text:
                self.ready_after = time.monotonic() - self.boot_started
                found = CREDENTIALS.search(text)
                if found:
                    self.credentials = found.groups()
                if self.credentials is None and "lambda.role=worker" not in self.cmdline():
                    raise RuntimeError("the appliance printed no credentials on its first boot")
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"appliance not ready within {timeout}s:\n{self.console_text()[-4000:]}")

    def console_text(self):
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def qmp(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_sock))
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": command}):
                f.write(json.dumps(cmd) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def press_power_button(self):
        return self.qmp("system_powerdown")

    def wait_exit(self, timeout=180):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=180):
        """Clean shutdown through the power button; kill if it takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.press_power_button()
            self.wait_exit(timeout)
        except Exception:
            self.kill()
            raise

    # --- talking to it -------------------------------------------------------------

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def client(self, read_timeout=600):
        import boto3
        from botocore.config import Config

        key, secret = self.credentials
        return boto3.client(
            "lambda", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=10,
                          read_timeout=read_timeout, max_pool_connections=32))

    def shell_connection(self):
        """One connection to the root shell's serial port per boot, kept open."""
        if self.shell_conn is None or self.shell_conn[0] != self.boots:
            if self.shell_conn is not None:
                self.shell_conn[1].close()
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(1)
            s.connect(str(self.shell_sock))
            self.shell_conn = (self.boots, s)
        return self.shell_conn[1]

    def shell(self, command, timeout=120):
        """Runs `command` in the appliance's root shell; returns (exit status, output).

        A command ending in `&` runs detached, in a subshell that exits at once. With
        `stty -echo`, busybox ash reads its input with a plain fgets, and a child ending
        while it waits there interrupts the read, which ash takes for the end of its input:
        the shell exits and a command sent before appliance-init restarts it is lost."""
        if command.rstrip().endswith("&"):
            command = f"(\n{command}\n)"
        marker = f"M{time.monotonic_ns()}"
        s = self.shell_connection()
        # Newlines, not ';': the command may end with '&'.
        line = (f"PS1= PS2=; stty -echo 2>/dev/null; printf '%s_BEGIN\\n' {marker}\n{command}\n"
                f"printf '%s_RC_%s\\n' {marker} $?\n")
        s.sendall(line.encode())
        buf = b""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf"{marker}_BEGIN\r?\n(.*?){marker}_RC_(\d+)".encode(), re.S)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                chunk = b""
            buf += chunk
            m = pattern.search(buf)
            if m:
                return int(m.group(2)), m.group(1).decode(errors="replace").replace("\r", "")
            if SHELL_BANNER in buf:
                raise RuntimeError(f"the appliance's shell restarted while running: {command}\n"
                                   f"{buf[-2000:]!r}")
        raise TimeoutError(f"shell command did not finish in {timeout}s: {command}\n{buf[-2000:]!r}")

    def vmm_processes(self):
        """(pid, host uid) of every vmm process inside the appliance."""
        rc, out = self.shell(
            "for p in /proc/[0-9]*; do if [ \"$(cat $p/comm 2>/dev/null)\" = vmm ]; then "
            "echo \"${p#/proc/} $(awk '/^Uid:/ {print $2}' $p/status)\"; fi; done")
        assert rc == 0, out
        return [tuple(int(x) for x in l.split()) for l in out.splitlines() if l.strip()]
