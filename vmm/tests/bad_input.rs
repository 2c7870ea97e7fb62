//! Bad input to the real binary: a one-line error naming the problem, exit code 1, no
//! panic. None of these need KVM: they fail before /dev/kvm is opened.

mod common;

use std::time::Duration;

use common::*;
use vmm::testing::tiny_guest::{elf_image, TinyProgram};

const T: Duration = Duration::from_secs(20);

fn assert_clean_error(o: &Output, needle: &str) {
    assert_eq!(o.code, Some(1), "stderr: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("vmm: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error line expected:\n{}",
        o.stderr
    );
    assert!(
        errors[0].contains(needle),
        "{:?} does not mention {needle:?}",
        errors[0]
    );
}

#[test]
fn missing_kernel() {
    let o = run(&["--kernel", "/nonexistent/vmlinux"], T);
    assert_clean_error(&o, "/nonexistent/vmlinux");
}

#[test]
fn unreadable_kernel_is_a_directory() {
    let d = tmpdir("dirkernel");
    let o = run(&["--kernel", d.to_str().unwrap()], T);
    assert_clean_error(&o, "is a directory");
}

#[test]
fn wrong_machine_elf() {
    let d = tmpdir("arm");
    let k = write_guest(&d, "arm.elf", &elf_image(&[0u8; 16], 183));
    let o = run(&["--kernel", &k], T);
    assert_clean_error(&o, "machine type 183");
}

#[test]
fn garbage_kernel() {
    let d = tmpdir("garbage");
    let k = write_guest(&d, "junk", &[0x42u8; 8192]);
    let o = run(&["--kernel", &k], T);
    assert_clean_error(&o, "neither an ELF vmlinux nor a bzImage");
}

#[test]
fn memory_too_small_for_kernel() {
    let d = tmpdir("small");
    let k = write_guest(&d, "g.elf", &TinyProgram::new().spin().elf());
    let o = run(&["--kernel", &k, "--mem-mib", "1"], T);
    assert_clean_error(&o, "needs guest memory");
}

#[test]
fn missing_rootfs_and_drive() {
    let d = tmpdir("noroot");
    let k = write_guest(&d, "g.elf", &TinyProgram::new().spin().elf());
    let o = run(&["--kernel", &k, "--rootfs", "/nonexistent/rootfs.ext4"], T);
    assert_clean_error(&o, "rootfs /nonexistent/rootfs.ext4");
    let o = run(&["--kernel", &k, "--drive", "/nonexistent/d.img,ro"], T);
    assert_clean_error(&o, "drive /nonexistent/d.img");
}

#[test]
fn unwritable_metrics_path() {
    let d = tmpdir("nometrics");
    let k = write_guest(&d, "g.elf", &TinyProgram::new().spin().elf());
    let o = run(
        &["--kernel", &k, "--metrics-path", "/nonexistent/m.json"],
        T,
    );
    assert_clean_error(&o, "metrics file /nonexistent/m.json");
}

#[test]
fn unknown_json_field() {
    let d = tmpdir("json");
    let cfg = d.join("vm.json");
    std::fs::write(
        &cfg,
        r#"{"boot-source": {"kernel_image_path": "/k"}, "machine-config":
            {"vcpu_count": 1, "mem_size_mib": 64, "turbo_mode": true}}"#,
    )
    .unwrap();
    let o = run(&["--config-file", cfg.to_str().unwrap()], T);
    assert_clean_error(&o, "turbo_mode");
    let o = run(&["--config-file", "/nonexistent/vm.json"], T);
    assert_clean_error(&o, "/nonexistent/vm.json");
}

#[test]
fn bad_options() {
    assert_clean_error(&run(&["--kernel"], T), "needs a value");
    assert_clean_error(&run(&["--frobnicate"], T), "--frobnicate");
    assert_clean_error(&run(&[], T), "--kernel");
    assert_clean_error(&run(&["--kernel", "/k", "--vcpus", "0"], T), "vcpus");
    assert_clean_error(&run(&["--kernel", "/k", "--mem-mib", "lots"], T), "mem-mib");
    let o = run(&["--help"], T);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.contains("usage: vmm"));
}
