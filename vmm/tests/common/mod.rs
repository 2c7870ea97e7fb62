//! Helpers for the vmm integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn vmm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmm"))
}

/// Fails under CI (`CI` set), otherwise prints a loud SKIPPED line. Returns false to skip.
pub fn require(cond: Result<(), String>) -> bool {
    match cond {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("prerequisite missing under CI: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            false
        }
    }
}

pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm not usable: {e}"))
}

/// A scratch directory removed when the test drops it.
pub struct TmpDir(tempfile::TempDir);

impl std::ops::Deref for TmpDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.path()
    }
}

pub fn tmpdir(tag: &str) -> TmpDir {
    TmpDir(
        tempfile::Builder::new()
            .prefix(&format!("vmm-it-{tag}-"))
            .tempdir()
            .unwrap(),
    )
}

pub struct Output {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

pub fn spawn(args: &[&str]) -> Child {
    Command::new(vmm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm")
}

/// Waits for `child` (killing it after `timeout`) and collects its output.
pub fn finish(mut child: Child, timeout: Duration) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    // The caller may have taken a stream to read it live.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        signal: status.signal(),
        stdout: out.map(|h| h.join().unwrap()).unwrap_or_default(),
        stderr: err.map(|h| h.join().unwrap()).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

pub fn run(args: &[&str], timeout: Duration) -> Output {
    finish(spawn(args), timeout)
}

pub fn write_guest(dir: &std::path::Path, name: &str, elf: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, elf).unwrap();
    p.to_string_lossy().into_owned()
}
