//! Interop of the host-side hybrid-vsock client (the one the supervisor uses) with
//! (a) our virtio-vsock device's Unix muxer, the guest emulated in-process on mock
//! queues, and (b) vhost-device-vsock serving a real Linux guest under QEMU TCG, where
//! the static `vsock-peer` program plays the guest. Both run the same host scenario.
//! Plus (c): the real guest kernel booted by our `vmm` on this host's KVM activates our
//! vsock device, and its vsock stack answers a host CONNECT to a closed port with RST.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use hybrid_vsock::{connect, listen, HybridListener};
use integration_tests::images::{make_ext4_image, require, workspace_root, Images};
use integration_tests::tcg::{tools_available, TcgConfig, TcgVm, TempDir};
use vmm::devices::virtio::vsock::testing::{pattern, run_emulated_peer, GuestStack, VsockHarness};

/// Guest port the peer serves on (host-initiated connection).
const SERVE_PORT: u32 = 5000;
/// Host port the peer connects to (guest-initiated connection).
const CONNECT_PORT: u32 = 5001;
const GUEST_CID: u64 = 3;

/// The host half of the scenario, one direction at a time, with length-framed
/// messages (Firecracker-style backends do not pass a host half-close through):
/// connect into the guest's SERVE_PORT (with retry), send a framed pattern, read the
/// echo until the guest closes; then accept the guest's connection on
/// `<uds>_CONNECT_PORT`, read its framed message and send the body back.
fn host_scenario(
    uds: &Path,
    listener: HybridListener,
    bytes: usize,
    timeout: Duration,
) -> Result<(), String> {
    let want = pattern(bytes);
    let mut s = connect(uds, SERVE_PORT, timeout).map_err(|e| format!("connect: {e}"))?;
    if s.host_port() == 0 {
        return Err("OK line carried host port 0".into());
    }
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let data = want.clone();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&(data.len() as u64).to_le_bytes())?;
        w.write_all(&data)
    });
    let mut got = Vec::with_capacity(bytes);
    s.read_to_end(&mut got)
        .map_err(|e| format!("read echo: {e}"))?;
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    if got != want {
        return Err(format!(
            "host->guest echo: got {} of {} bytes, or different",
            got.len(),
            want.len()
        ));
    }
    let mut s = listener
        .accept_timeout(timeout)
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    s.read_exact(&mut len)
        .map_err(|e| format!("guest->host frame: {e}"))?;
    if u64::from_le_bytes(len) != bytes as u64 {
        return Err(format!(
            "guest->host frame length {}",
            u64::from_le_bytes(len)
        ));
    }
    let mut body = vec![0u8; bytes];
    s.read_exact(&mut body)
        .map_err(|e| format!("guest->host read: {e}"))?;
    if body != want {
        return Err("guest->host body differs".into());
    }
    s.write_all(&body)
        .map_err(|e| format!("guest->host echo: {e}"))?;
    // The guest closes once it has checked the echo.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("waiting for the guest to close: {e}"))?;
    Ok(())
}

#[test]
fn hybrid_client_against_our_device_muxer() {
    let dir = TempDir::new("vsock-interop-ours").expect("tmp");
    let uds = dir.path().join("vm.vsock");
    let listener = listen(&uds, CONNECT_PORT).expect("host listener");
    let harness = VsockHarness::new(GUEST_CID, uds.clone(), 64, 4096 + 44).expect("vsock device");
    // 32 KiB of guest buffer against 2 MiB each way: flow control throughout.
    let stack = GuestStack::new(harness, GUEST_CID, 32 * 1024);
    let peer = run_emulated_peer(stack, SERVE_PORT, Some((CONNECT_PORT, 2 * 1024 * 1024)));
    let started = Instant::now();
    let result = host_scenario(&uds, listener, 2 * 1024 * 1024, Duration::from_secs(30));
    let connected = peer.wait_connect_ok(Duration::from_secs(10));
    let report = peer.finish();
    result.expect("host scenario");
    let report = report.expect("emulated guest");
    assert!(
        connected && report.connect_ok,
        "guest-initiated echo failed: {report:?}"
    );
    assert_eq!(report.served, 1);
    assert_eq!(report.overruns, 0, "device exceeded the guest's credit");
    eprintln!("our device: scenario took {:?}", started.elapsed());
}

fn vsock_peer_binary() -> Result<PathBuf, String> {
    let p = workspace_root().join("target/x86_64-unknown-linux-musl/release/vsock-peer");
    p.exists().then_some(p.clone()).ok_or_else(|| {
        format!(
            "{} missing: cargo build --release --target x86_64-unknown-linux-musl -p integration-tests --bin vsock-peer",
            p.display()
        )
    })
}

#[test]
fn hybrid_client_against_vhost_device_vsock_with_real_guest() {
    const WHAT: &str = "vsock interop under QEMU TCG";
    let Some(images) = require(WHAT, Images::locate()) else {
        return;
    };
    let Some(rootfs) = require(WHAT, images.rootfs("provided")) else {
        return;
    };
    let Some(()) = require(WHAT, tools_available(true)) else {
        return;
    };
    let Some(peer_bin) = require(WHAT, vsock_peer_binary()) else {
        return;
    };
    let dir = TempDir::new("vsock-interop-tcg").expect("tmp");
    let drive_dir = dir.path().join("drive");
    std::fs::create_dir_all(&drive_dir).expect("drive dir");
    std::fs::copy(&peer_bin, drive_dir.join("vsock-peer")).expect("copy vsock-peer");
    let drive = dir.path().join("peer.ext4");
    make_ext4_image(&drive_dir, &drive, 16).expect("peer drive");
    let uds = dir.path().join("vm.vsock");
    let listener = listen(&uds, CONNECT_PORT).expect("host listener");
    let bytes = 1024 * 1024;
    let cmd = format!(
        "mount -t ext4 -o ro /dev/vdb /mnt && /mnt/vsock-peer {SERVE_PORT} {CONNECT_PORT} {bytes}"
    );
    let config = TcgConfig::new(images.bzimage(), rootfs)
        .drive(&drive, true)
        .cmdline(&format!("quiet gi.exec=\"{cmd}\""))
        .vsock(&uds);
    let vm = TcgVm::spawn(&config).expect("start QEMU + vhost-device-vsock");
    let started = Instant::now();
    let result = host_scenario(&uds, listener, bytes, Duration::from_secs(90));
    let passed = vm.wait_for_serial("vsock-peer: PASS", Duration::from_secs(30));
    let outcome = vm.wait(Duration::from_secs(30));
    eprintln!("--- serial ({:?}) ---\n{}", outcome.elapsed, outcome.serial);
    result.expect("host scenario against the real guest");
    assert!(passed, "vsock-peer in the guest did not pass");
    eprintln!("vhost-device-vsock: scenario took {:?}", started.elapsed());
}

fn vmm_binary() -> Result<PathBuf, String> {
    let p = std::env::var_os("VMM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/vmm"));
    p.exists()
        .then_some(p.clone())
        .ok_or_else(|| format!("{} missing: cargo build -p vmm --bin vmm", p.display()))
}

fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm not usable: {e}"))
}

/// The line our device logs when the guest driver brings it up.
const ACTIVATED: &str = "vsock: guest driver activated the device (DRIVER_OK, 3 queues ready";

#[test]
fn real_guest_kernel_activates_our_vsock_device_under_vmm() {
    use std::io::BufRead;
    const WHAT: &str = "real guest kernel with our vsock device";
    let Some(images) = require(WHAT, Images::locate()) else {
        return;
    };
    let Some(rootfs) = require(WHAT, images.rootfs("provided")) else {
        return;
    };
    let Some(vmm) = require(WHAT, vmm_binary()) else {
        return;
    };
    let Some(()) = require(WHAT, kvm_usable()) else {
        return;
    };
    let limit = Duration::from_secs(
        std::env::var("VSOCK_REAL_GUEST_TIMEOUT_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let dir = TempDir::new("vsock-real-guest").expect("tmp");
    let uds = dir.path().join("vm.vsock");
    let mut child = std::process::Command::new(&vmm)
        .arg("--kernel")
        .arg(images.vmlinux())
        .arg("--rootfs")
        .arg(&rootfs)
        .args([
            "--rootfs-read-only",
            "--mem-mib",
            "256",
            "--vsock-cid",
            "3",
            "--log-level",
            "info",
        ])
        .arg("--vsock-uds")
        .arg(&uds)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut log = Vec::new();
    let mut activated = None;
    while activated.is_none() && started.elapsed() < limit {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                if line.contains(ACTIVATED) {
                    activated = Some(started.elapsed());
                }
                log.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // With the driver up, the guest kernel's vsock stack answers a connection to a port
    // nobody listens on (guest userspace cannot run on PVM) with RST: we get EOF.
    let refused =
        activated.map(|_| hybrid_vsock::connect_once(&uds, 1234, Duration::from_secs(60)));
    // SAFETY: kill(2) on our own child process id.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let tail = log
        .iter()
        .rev()
        .take(30)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let at = activated
        .unwrap_or_else(|| panic!("no activation line within {limit:?}; vmm log tail:\n{tail}"));
    eprintln!("our vsock device activated by the guest driver {at:?} after start");
    match refused {
        Some(Err(hybrid_vsock::Error::NotListening { port: 1234 })) => {}
        other => {
            panic!("expected the guest kernel to refuse port 1234, got {other:?}; log:\n{tail}")
        }
    }
}
