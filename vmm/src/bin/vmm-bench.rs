//! vmm-bench: measures VMM process start -> first KVM_RUN (wall and CPU) and the VMM's RSS
//! overhead excluding guest memory, over several runs, and writes JSON with medians.
//!
//! usage: vmm-bench [--vmm PATH] [--iterations N] [--out FILE] [--mem-mib N]
//!                  [--kernel PATH [--rootfs PATH] [--settle-ms N]]
//!
//! Without --kernel a tiny guest (prints "R", then spins) is used and RSS is sampled once
//! its output arrives; with --kernel, RSS is sampled --settle-ms after the first KVM_RUN.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vmm::testing::tiny_guest::TinyProgram;

struct Args {
    vmm: PathBuf,
    iterations: usize,
    out: Option<PathBuf>,
    mem_mib: u64,
    kernel: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    settle_ms: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("vmm-bench: {msg}");
    std::process::exit(1);
}

fn parse_args() -> Args {
    let default_vmm = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vmm")))
        .unwrap_or_else(|| PathBuf::from("vmm"));
    let mut a = Args {
        vmm: default_vmm,
        iterations: 10,
        out: None,
        mem_mib: 128,
        kernel: None,
        rootfs: None,
        settle_ms: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad number {v:?}")))
        };
        match flag.as_str() {
            "--vmm" => a.vmm = val().into(),
            "--iterations" => a.iterations = num(val()).max(1) as usize,
            "--out" => a.out = Some(val().into()),
            "--mem-mib" => a.mem_mib = num(val()),
            "--kernel" => a.kernel = Some(val().into()),
            "--rootfs" => a.rootfs = Some(val().into()),
            "--settle-ms" => a.settle_ms = num(val()),
            other => usage(&format!("unknown option {other}")),
        }
    }
    a
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Rss of all mappings except those exactly as large as guest memory, in KiB.
fn rss_overhead_kib(pid: u32, guest_bytes: u64) -> Result<(u64, u64), String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("reading smaps: {e}"))?;
    let (mut total, mut guest) = (0u64, 0u64);
    let mut current_is_guest = false;
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                current_is_guest = e - s == guest_bytes;
                continue;
            }
        }
        if first == "Rss:" {
            let kib: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kib;
            if current_is_guest {
                guest += kib;
            }
        }
    }
    Ok((total - guest, total))
}

struct Sample {
    wall_ms: f64,
    cpu_ms: f64,
    rss_overhead_kib: u64,
    rss_total_kib: u64,
}

fn parse_first_run(line: &str) -> Option<(u64, u64)> {
    let rest = line.split("first KVM_RUN:").nth(1)?;
    let field = |k: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("monotonic_ns=")?, field("process_cpu_us=")?))
}

fn one_run(a: &Args, kernel: &std::path::Path) -> Result<Sample, String> {
    let mut cmd = Command::new(&a.vmm);
    cmd.args(["--kernel".as_ref(), kernel.as_os_str()])
        .args([
            "--vcpus",
            "1",
            "--mem-mib",
            &a.mem_mib.to_string(),
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(r) = &a.rootfs {
        cmd.args(["--rootfs".as_ref(), r.as_os_str()]);
    }
    let t0 = monotonic_ns();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", a.vmm.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(v) = parse_first_run(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let result = (|| {
        let (mono, cpu_us) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "no 'first KVM_RUN' line from the VMM".to_string())?;
        if a.kernel.is_some() {
            std::thread::sleep(Duration::from_millis(a.settle_ms));
        } else {
            let mut b = [0u8; 1];
            stdout
                .read_exact(&mut b)
                .map_err(|e| format!("waiting for guest output: {e}"))?;
        }
        let (rss, total) = rss_overhead_kib(child.id(), a.mem_mib << 20)?;
        Ok(Sample {
            wall_ms: mono.saturating_sub(t0) as f64 / 1e6,
            cpu_ms: cpu_us as f64 / 1e3,
            rss_overhead_kib: rss,
            rss_total_kib: total,
        })
    })();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn stats(v: Vec<f64>) -> serde_json::Value {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    serde_json::json!({"median": median(v.clone()), "min": min, "max": max, "samples": v})
}

fn main() {
    let a = parse_args();
    let dir = std::env::temp_dir().join(format!("vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| usage(&format!("temp dir: {e}")));
    let kernel = match &a.kernel {
        Some(k) => k.clone(),
        None => {
            let p = dir.join("tiny.elf");
            std::fs::write(&p, TinyProgram::new().serial_str("R").spin().elf())
                .unwrap_or_else(|e| usage(&format!("writing tiny guest: {e}")));
            p
        }
    };
    let mut samples = Vec::new();
    for i in 0..a.iterations {
        match one_run(&a, &kernel) {
            Ok(s) => samples.push(s),
            Err(e) => usage(&format!("run {i}: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = serde_json::json!({
        "guest": if a.kernel.is_some() { kernel.display().to_string() } else { "tiny".into() },
        "vcpus": 1,
        "mem_mib": a.mem_mib,
        "iterations": samples.len(),
        "start_to_first_kvm_run_wall_ms": stats(samples.iter().map(|s| s.wall_ms).collect()),
        "start_to_first_kvm_run_cpu_ms": stats(samples.iter().map(|s| s.cpu_ms).collect()),
        "rss_overhead_kib": stats(samples.iter().map(|s| s.rss_overhead_kib as f64).collect()),
        "rss_total_kib": stats(samples.iter().map(|s| s.rss_total_kib as f64).collect()),
        "firecracker_reference": {"exec_to_first_kvm_run_ms": 19.0, "rss_overhead_mib": 4.3},
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    match &a.out {
        Some(p) => {
            std::fs::write(p, &text).unwrap_or_else(|e| usage(&format!("{}: {e}", p.display())))
        }
        None => println!("{text}"),
    }
}
