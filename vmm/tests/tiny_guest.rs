//! Runs the real `vmm` binary on KVM with tiny guests built here, asserting on serial
//! output, the boot timer, and exit codes. Seccomp is on (the default) in all of them.

mod common;

use std::time::Duration;

use common::*;
use vmm::testing::tiny_guest::TinyProgram;

const T: Duration = Duration::from_secs(30);

fn kvm() -> bool {
    require(kvm_usable())
}

/// The exit metrics report the VMM logs (`metrics: {json}`).
fn logged_metrics(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("metrics: ").map(|(_, j)| j))
        .unwrap_or_else(|| panic!("no metrics line in: {stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("metrics line {line:?}: {e}"))
}

#[test]
fn serial_output_and_i8042_reset_exit_cleanly() {
    if !kvm() {
        return;
    }
    let d = tmpdir("serial");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("Hello, VM!\n").reset().elf(),
    );
    let o = run(&["--kernel", &k, "--mem-mib", "16"], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "Hello, VM!\n");
    assert!(
        o.stderr.contains("guest requested a CPU reset"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"));
}

#[test]
fn no_vsock_key_without_a_vsock_device() {
    if !kvm() {
        return;
    }
    let d = tmpdir("novsock");
    let k = write_guest(&d, "g.elf", &TinyProgram::new().reset().elf());
    let o = run(&["--kernel", &k, "--mem-mib", "16"], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let m = logged_metrics(&o.stderr);
    assert!(m.get("vmm").is_some() && m.get("vsock").is_none(), "{m}");
}

#[test]
fn boot_timer_is_logged() {
    if !kvm() {
        return;
    }
    let d = tmpdir("timer");
    let k = write_guest(&d, "g.elf", &TinyProgram::new().boot_timer().reset().elf());
    let o = run(&["--kernel", &k, "--mem-mib", "16"], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("Guest-boot-time ="), "{}", o.stderr);
}

#[test]
fn triple_fault_exits_with_code_3() {
    if !kvm() {
        return;
    }
    let d = tmpdir("tf");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("x").triple_fault().elf(),
    );
    let o = run(&["--kernel", &k, "--mem-mib", "16"], T);
    assert_eq!(o.code, Some(3), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("triple fault"), "{}", o.stderr);
    assert_eq!(o.stdout, "x");
}

#[test]
fn sigterm_exits_with_143() {
    if !kvm() {
        return;
    }
    let d = tmpdir("term");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("up").spin().elf(),
    );
    let mut child = spawn(&["--kernel", &k, "--mem-mib", "16"]);
    // Wait until the guest is running (its output arrived), then terminate.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 2];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"up");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.stdout = Some(stdout);
    let o = finish(child, T);
    assert_eq!(o.code, Some(143), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("signal 15"), "{}", o.stderr);
}

#[test]
fn multiple_vcpus_boot_and_reset() {
    if !kvm() {
        return;
    }
    let d = tmpdir("smp");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("smp").reset().elf(),
    );
    let o = run(&["--kernel", &k, "--mem-mib", "64", "--vcpus", "4"], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "smp");
}

#[test]
fn serial_file_output_is_capped() {
    if !kvm() {
        return;
    }
    let d = tmpdir("cap");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_flood(b'z', 5000).reset().elf(),
    );
    let out = d.join("serial.log");
    let o = run(
        &[
            "--kernel",
            &k,
            "--mem-mib",
            "16",
            "--serial-out",
            out.to_str().unwrap(),
            "--serial-out-max-bytes",
            "1000",
        ],
        T,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let data = std::fs::read(&out).unwrap();
    assert_eq!(data.len(), 1000);
    assert!(data.iter().all(|b| *b == b'z'));
    assert!(o.stderr.contains("size cap"), "{}", o.stderr);
    assert!(
        o.stderr.contains("\"serial_dropped_bytes\":4000"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn firecracker_config_file_boots_tiny_guest_with_drive() {
    if !kvm() {
        return;
    }
    let d = tmpdir("fcjson");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("json").reset().elf(),
    );
    let disk = d.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let cfg = d.join("vm.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "boot-source": {"kernel_image_path": k, "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": disk, "is_root_device": true,
                        "is_read_only": true}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 32},
            "network-interfaces": []
        })
        .to_string(),
    )
    .unwrap();
    let o = run(&["--config-file", cfg.to_str().unwrap()], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "json");
    assert!(o.stderr.contains("root=/dev/vda ro "), "{}", o.stderr);
    assert!(
        o.stderr.contains("virtio_mmio.device=4K@0xd0001000:5"),
        "{}",
        o.stderr
    );
}

#[test]
fn vsock_device_is_attached_with_its_own_mmio_slot() {
    if !kvm() {
        return;
    }
    let d = tmpdir("vsock");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("v").reset().elf(),
    );
    let disk = d.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let uds = d.join("v.sock");
    let metrics_file = d.join("metrics.json");
    let o = run(
        &[
            "--kernel",
            &k,
            "--mem-mib",
            "32",
            "--rootfs",
            disk.to_str().unwrap(),
            "--vsock-cid",
            "3",
            "--vsock-uds",
            uds.to_str().unwrap(),
            "--metrics-path",
            metrics_file.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "v");
    // Block first (vda), then vsock in the next window and IRQ.
    assert!(
        o.stderr
            .contains("virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"),
        "{}",
        o.stderr
    );
    // The exit report has the vsock counters; this guest has no driver, so no traffic.
    let m = logged_metrics(&o.stderr);
    let v = m["vsock"].as_object().unwrap_or_else(|| panic!("{m}"));
    for key in [
        "tx_packets",
        "tx_bytes",
        "rx_packets",
        "rx_bytes",
        "conns_open",
    ] {
        assert_eq!(v.get(key).and_then(|x| x.as_u64()), Some(0), "{key}: {m}");
    }
    assert_eq!(m["block"].as_array().map(Vec::len), Some(1), "{m}");
    // --metrics-path gets the same report as one JSON line.
    let text = std::fs::read_to_string(&metrics_file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let from_file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(from_file, m);
}

#[test]
fn bzimage_boots_through_its_64bit_entry() {
    if !kvm() {
        return;
    }
    let d = tmpdir("bz");
    let code = TinyProgram::new().serial_str("bz").reset().code();
    let k = write_guest(&d, "bzImage", &vmm::testing::tiny_guest::bzimage(&code));
    let o = run(&["--kernel", &k, "--mem-mib", "16"], T);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "bz");
}

#[test]
fn vsock_host_connection_survives_seccomp() {
    if !kvm() {
        return;
    }
    let d = tmpdir("vsock-host");
    let k = write_guest(
        &d,
        "g.elf",
        &TinyProgram::new().serial_str("s").spin().elf(),
    );
    let uds = d.join("v.sock");
    let mut child = spawn(&[
        "--kernel",
        &k,
        "--mem-mib",
        "32",
        "--vsock-cid",
        "3",
        "--vsock-uds",
        uds.to_str().unwrap(),
    ]);
    let mut stdout = child.stdout.take().unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut b).unwrap();
    child.stdout = Some(stdout);
    // The guest has no vsock driver: the VMM accepts the host connection, reads the
    // CONNECT line on its seccomp-filtered event loop and refuses or times it out.
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&uds).expect("connect to vsock uds");
        s.write_all(b"CONNECT 1234\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "vmm died while serving vsock"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = finish(child, T);
    assert_eq!(o.code, Some(143), "stderr: {}", o.stderr);
    // The host connection shows up in the vsock counters of the exit report: accepted,
    // then timed out waiting for a guest that never answers. No driver, so no packets
    // either way (and the RST for the guest stays queued, keeping the connection open).
    let m = logged_metrics(&o.stderr);
    let v = &m["vsock"];
    for (key, want) in [
        ("conns_added", 1),
        ("conns_timed_out", 1),
        ("tx_packets", 0),
        ("rx_packets", 0),
        ("drop_bad_len", 0),
    ] {
        assert_eq!(v[key].as_u64(), Some(want), "{key}: {m}");
    }
}
