//! Snapshots of tiny guests on this host's KVM: taken on SIGUSR1, resumed in new vmm
//! processes that continue exactly where the guest was (registers and memory), refused
//! when tampered with. Seccomp is on in all of them.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use vmm::testing::tiny_guest::TinyProgram;

const T: Duration = Duration::from_secs(60);
const COUNTER_ADDR: u32 = 0x20_0000;

fn kvm() -> bool {
    require(kvm_usable())
}

/// The letter the counting guest prints after `c`.
fn next(c: u8) -> u8 {
    b'a' + (c - b'a' + 1) % 16
}

fn assert_counting(out: &[u8]) {
    for w in out.windows(2) {
        assert_eq!(
            w[1],
            next(w[0]),
            "not consecutive: {:?}",
            String::from_utf8_lossy(out)
        );
    }
}

/// Reads at least `n` bytes of the child's stdout (keeping the pipe for later).
fn read_at_least(child: &mut Child, n: usize) -> Vec<u8> {
    let out = child.stdout.as_mut().expect("stdout piped");
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    let mut buf = [0u8; 256];
    while got.len() < n {
        assert!(Instant::now() < deadline, "guest printed only {got:?}");
        let k = out.read(&mut buf).expect("read guest output");
        assert!(k > 0, "guest output ended after {got:?}");
        got.extend_from_slice(&buf[..k]);
    }
    got
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn counting_guest(dir: &Path) -> String {
    write_guest(
        dir,
        "count.elf",
        &TinyProgram::new().serial_counter(COUNTER_ADDR, 2000).elf(),
    )
}

/// The counting guest with `vcpus` vCPUs, snapshotted to `state` and `mem` on SIGUSR1.
fn spawn_snapshottable(dir: &Path, vcpus: &str, state: &str, mem: &str, exit: bool) -> Child {
    let k = counting_guest(dir);
    let mut args = vec![
        "--kernel",
        &k,
        "--mem-mib",
        "16",
        "--vcpus",
        vcpus,
        "--snapshot-state",
        state,
        "--snapshot-mem",
        mem,
    ];
    if exit {
        args.push("--snapshot-exit");
    }
    spawn(&args)
}

struct Snapshot {
    state: String,
    mem: String,
    /// The last letter the guest printed before it was paused.
    last: u8,
}

/// Boots the counting guest, snapshots it with `--snapshot-exit` once it has printed a
/// few letters, and returns the files and the last letter printed.
fn take_snapshot(dir: &Path, vcpus: &str) -> Snapshot {
    let state = dir.join("vm.state").to_string_lossy().into_owned();
    let mem = dir.join("vm.mem").to_string_lossy().into_owned();
    let mut child = spawn_snapshottable(dir, vcpus, &state, &mem, true);
    let before = read_at_least(&mut child, 20);
    signal(&child, libc::SIGUSR1);
    let o = finish(child, T);
    assert_eq!(o.code, Some(4), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("snapshot taken"), "{}", o.stderr);
    let mut printed = before;
    printed.extend_from_slice(o.stdout.as_bytes());
    assert_counting(&printed);
    Snapshot {
        state,
        mem,
        last: *printed.last().unwrap(),
    }
}

fn restore(s: &Snapshot) -> Child {
    spawn(&["--restore-state", &s.state, "--restore-mem", &s.mem])
}

#[test]
fn a_restored_guest_continues_where_the_snapshot_stopped_it() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-continue");
    let s = take_snapshot(&d, "1");
    // Two VMs from one snapshot, at the same time: each continues the same sequence.
    let mut a = restore(&s);
    let mut b = restore(&s);
    let out_a = read_at_least(&mut a, 10);
    let out_b = read_at_least(&mut b, 10);
    for (child, out) in [(a, out_a), (b, out_b)] {
        signal(&child, libc::SIGTERM);
        let o = finish(child, T);
        assert_eq!(o.code, Some(143), "stderr: {}", o.stderr);
        assert!(o.stderr.contains("restored from snapshot"), "{}", o.stderr);
        assert_eq!(
            out[0],
            next(s.last),
            "output {:?} after {}",
            String::from_utf8_lossy(&out),
            s.last as char
        );
        assert_counting(&out);
    }
}

#[test]
fn a_snapshot_without_exit_lets_the_guest_run_on() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-resume");
    let state = d.join("s").to_string_lossy().into_owned();
    let mem = d.join("m").to_string_lossy().into_owned();
    let mut child = spawn_snapshottable(&d, "2", &state, &mem, false);
    read_at_least(&mut child, 10);
    signal(&child, libc::SIGUSR1);
    let wait = Instant::now();
    while std::fs::metadata(&state).map_or(0, |m| m.len()) == 0 {
        assert!(wait.elapsed() < T, "no snapshot state written");
        std::thread::sleep(Duration::from_millis(20));
    }
    // It keeps printing after the snapshot.
    read_at_least(&mut child, 200);
    signal(&child, libc::SIGTERM);
    let o = finish(child, T);
    assert_eq!(o.code, Some(143), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("snapshot taken: 2 vCPUs"), "{}", o.stderr);
}

fn restore_fails_with(s: &Snapshot, needle: &str) {
    let o = finish(restore(s), T);
    assert_eq!(o.code, Some(1), "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains(needle),
        "expected {needle:?} in: {}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "the guest ran: {:?}", o.stdout);
}

#[test]
fn tampered_truncated_or_foreign_snapshots_are_refused() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-bad");
    let s = take_snapshot(&d, "1");
    let state = std::fs::read(&s.state).unwrap();
    let mem = std::fs::read(&s.mem).unwrap();

    let mut flipped = state.clone();
    flipped[state.len() / 2] ^= 1;
    std::fs::write(&s.state, &flipped).unwrap();
    restore_fails_with(&s, "checksum mismatch");

    std::fs::write(&s.state, &state[..state.len() - 100]).unwrap();
    restore_fails_with(&s, "checksum mismatch");

    let mut version = state.clone();
    version[8] = 99;
    std::fs::write(&s.state, &version).unwrap();
    restore_fails_with(&s, "format version 99");

    std::fs::write(
        &s.state,
        b"not a snapshot at all, just text ......................",
    )
    .unwrap();
    restore_fails_with(&s, "bad magic");

    std::fs::write(&s.state, &state).unwrap();
    std::fs::write(&s.mem, &mem[..mem.len() / 2]).unwrap();
    restore_fails_with(&s, "memory file holds");

    let mut mem_flipped = mem.clone();
    mem_flipped[0x1234] ^= 0x40;
    std::fs::write(&s.mem, &mem_flipped).unwrap();
    restore_fails_with(&s, "memory file checksum mismatch");

    // Back to the good files, but with a drive the snapshot did not have.
    std::fs::write(&s.mem, &mem).unwrap();
    let drive = d.join("extra.img");
    std::fs::write(&drive, vec![0u8; 1 << 20]).unwrap();
    let o = run(
        &[
            "--restore-state",
            &s.state,
            "--restore-mem",
            &s.mem,
            "--drive",
            &drive.to_string_lossy(),
        ],
        T,
    );
    assert_eq!(o.code, Some(1), "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("0 virtio devices, this configuration 1"),
        "{}",
        o.stderr
    );

    // And the good files still restore.
    let mut ok = restore(&s);
    let out = read_at_least(&mut ok, 3);
    assert_eq!(out[0], next(s.last));
    signal(&ok, libc::SIGTERM);
    finish(ok, T);
}

#[test]
fn sigusr1_without_snapshot_files_is_ignored() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-none");
    let k = counting_guest(&d);
    let mut child = spawn(&["--kernel", &k, "--mem-mib", "16"]);
    read_at_least(&mut child, 5);
    signal(&child, libc::SIGUSR1);
    read_at_least(&mut child, 50);
    signal(&child, libc::SIGTERM);
    let o = finish(child, T);
    assert_eq!(o.code, Some(143), "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("no --snapshot-state was given: ignored"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_lazy_restore_maps_memory_unread_and_still_continues() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-lazy");
    let s = take_snapshot(&d, "1");
    let mut child = spawn(&[
        "--restore-state",
        &s.state,
        "--restore-mem",
        &s.mem,
        "--restore-lazy",
    ]);
    let out = read_at_least(&mut child, 5);
    signal(&child, libc::SIGTERM);
    finish(child, T);
    assert_eq!(out[0], next(s.last));
    assert_counting(&out);
}

/// A Firecracker-style config file for the counting guest: kernel, machine, no devices.
fn counting_config(dir: &Path) -> String {
    let k = counting_guest(dir);
    let cfg = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{k}"}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 16}}}}"#
    );
    let path = dir.join("vm.json");
    std::fs::write(&path, cfg).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_config_file_vm_snapshots_and_restores_with_its_config_file() {
    if !kvm() {
        return;
    }
    let d = tmpdir("snap-config-file");
    let cfg = counting_config(&d);
    let state = d.join("vm.state").to_string_lossy().into_owned();
    let mem = d.join("vm.mem").to_string_lossy().into_owned();
    let snap = [
        "--snapshot-state",
        &state,
        "--snapshot-mem",
        &mem,
        "--snapshot-exit",
    ];
    let mut child = spawn(&[&["--config-file", &cfg][..], &snap].concat());
    let before = read_at_least(&mut child, 20);
    signal(&child, libc::SIGUSR1);
    let o = finish(child, T);
    assert_eq!(o.code, Some(4), "stderr: {}", o.stderr);
    let mut printed = before;
    printed.extend_from_slice(o.stdout.as_bytes());
    let last = *printed.last().unwrap();
    let restore = ["--restore-state", &state, "--restore-mem", &mem];
    let mut child = spawn(&[&["--config-file", &cfg][..], &restore].concat());
    let out = read_at_least(&mut child, 10);
    signal(&child, libc::SIGTERM);
    let o = finish(child, T);
    assert!(o.stderr.contains("restored from snapshot"), "{}", o.stderr);
    assert_eq!(out[0], next(last), "{:?}", String::from_utf8_lossy(&out));
    assert_counting(&out);
}
