//! Boots the project's real `vmlinux` + `provided` rootfs under `vmm` on this host's KVM.
//!
//! On a PVM host (`/sys/module/kvm_pvm`) an unmodified guest runs only its kernel, fully
//! emulated: about 2.5 minutes here, 80 s of it in `pty_init` for the kernel's 256 legacy
//! PTYs. The test asserts that the kernel found our virtio-blk disk and mounted the root
//! filesystem, then stops the VMM with SIGTERM. On a host with VMX/SVM it waits for
//! guest-init's banner and the clean exit (code 0) that follows its reboot through the
//! i8042. `VMM_REAL_GUEST_TIMEOUT_S` overrides the deadline (300 s on PVM, 60 s otherwise).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn images_dir() -> PathBuf {
    std::env::var_os("LAMBDA_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/images"))
}

fn prerequisites(dir: &std::path::Path) -> Result<(), String> {
    for f in ["vmlinux", "rootfs-provided.ext4"] {
        if !dir.join(f).is_file() {
            return Err(format!(
                "{} missing (build the images first)",
                dir.join(f).display()
            ));
        }
    }
    kvm_usable()
}

fn timeout(default_s: u64) -> Duration {
    let s = std::env::var("VMM_REAL_GUEST_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_s);
    Duration::from_secs(s)
}

/// Streams the guest console line by line until `pred` has matched every needle.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    needles: &[&str],
    limit: Duration,
    log: &mut Vec<String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut pending: Vec<&str> = needles.to_vec();
    while !pending.is_empty() {
        let left = limit
            .checked_sub(start.elapsed())
            .ok_or_else(|| format!("timed out after {limit:?} waiting for {pending:?}"))?;
        match rx.recv_timeout(left) {
            Ok(line) => {
                pending.retain(|n| !line.contains(n));
                log.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("timed out after {limit:?} waiting for {pending:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "guest console closed while waiting for {pending:?}"
                ))
            }
        }
    }
    Ok(start.elapsed())
}

#[test]
fn real_kernel_finds_virtio_blk_and_mounts_root() {
    let dir = images_dir();
    if !require(prerequisites(&dir)) {
        return;
    }
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    let kernel = dir.join("vmlinux");
    let rootfs = dir.join("rootfs-provided.ext4");
    let mut child = spawn(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--rootfs-read-only",
        "--mem-mib",
        "256",
    ]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let (needles, limit): (&[&str], _) = if pvm {
        eprintln!(
            "real guest: PVM host detected; asserting the kernel probes our virtio-blk disk \
             and mounts root (guest userspace cannot run on PVM)"
        );
        (
            &["virtio_blk virtio0: [vda]", "VFS: Mounted root"],
            timeout(300),
        )
    } else {
        eprintln!("real guest: VMX/SVM host; asserting guest-init's banner and a clean exit");
        (&["VFS: Mounted root", "guest-init ", "ready:"], timeout(60))
    };
    let result = wait_for(&rx, needles, limit, &mut log);
    if pvm {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let out = finish(child, Duration::from_secs(if pvm { 10 } else { 30 }));
    let console_tail = log
        .iter()
        .rev()
        .take(40)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let elapsed = match result {
        Ok(t) => t,
        Err(e) => panic!(
            "{e}\n--- console tail ---\n{console_tail}\n--- vmm stderr ---\n{}",
            out.stderr
        ),
    };
    eprintln!("real guest: reached {needles:?} in {elapsed:?}");
    if pvm {
        // SIGTERM (143), or 0 if the kernel already panicked on its first userspace
        // syscall and rebooted through the i8042 (panic=1, reboot=k) before the signal.
        assert!(
            matches!(out.code, Some(143) | Some(0)),
            "exit {:?}; vmm stderr:\n{}",
            out.code,
            out.stderr
        );
    } else {
        assert_eq!(out.code, Some(0), "vmm stderr:\n{}", out.stderr);
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn real_bzimage_loads_and_runs() {
    let dir = images_dir();
    if !require(prerequisites(&dir)) {
        return;
    }
    let kernel = dir.join("bzImage");
    if !require(
        kernel
            .is_file()
            .then_some(())
            .ok_or_else(|| format!("{} missing", kernel.display())),
    ) {
        return;
    }
    let child = spawn(&["--kernel", kernel.to_str().unwrap(), "--mem-mib", "256"]);
    // The decompressor is running by now (fully emulated on PVM, so it would take long).
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child, Duration::from_secs(10));
    assert!(out.stderr.contains("first KVM_RUN"), "{}", out.stderr);
    // 0 if a fast (VMX/SVM) host already booted it, panicked without a rootfs and rebooted.
    assert!(
        matches!(out.code, Some(143) | Some(0)),
        "exit {:?}: {}",
        out.code,
        out.stderr
    );
}
