//! worker-bench: the process backend with the Rust echo function (1 KiB payloads).
//!
//! Measures warm invoke p50/p99 and invokes/s at 1, 8 and 32 concurrent clients, each
//! beside a bare loopback HTTP/1.1 echo server and the invoke topology's floor
//! (`bench::floor`: the same three processes and exchanges with no logic) in the same run; cold start to first
//! response of a new function; and sandboxes per GiB of RAM. Writes JSON to stdout
//! (and `--out FILE`).
//!
//! usage: worker-bench --fn-bin PATH [--images DIR] [--guest-init PATH] [--seconds N]
//!                     [--levels 1,8,32] [--cold N] [--density N] [--out FILE]
//!                     [--cpu proportional|unlimited] [--no-cpu-placement]
//!                     [--no-seccomp] (diagnostic: what the jail's filter costs)
//!                     [--memory MB] (default 128; sets the CPU share under `proportional`)

use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::bench::args::{self, number, LoadFlags};
use worker::bench::{floor, http_echo, load, stats};
use worker::jail::CgroupHost;
use worker::sandbox::process::{ProcessBackend, ProcessConfig};
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult, Worker, WorkerConfig};

const GROUP: &str = "worker-bench";

struct Args {
    load: LoadFlags,
    images: PathBuf,
    guest_init: Option<PathBuf>,
    cold: usize,
    density: u32,
    cpu_unlimited: bool,
    place_cpus: bool,
    seccomp: bool,
    memory_mb: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        load: LoadFlags::default(),
        images: PathBuf::from("target/images"),
        guest_init: None,
        cold: 10,
        density: 32,
        cpu_unlimited: false,
        place_cpus: true,
        seccomp: true,
        memory_mb: 128,
    };
    args::parse(&mut a.load, |flag, val| {
        match flag {
            "--images" => a.images = val()?.into(),
            "--guest-init" => a.guest_init = Some(val()?.into()),
            "--cold" => a.cold = number(flag, &val()?)?,
            "--density" => a.density = number(flag, &val()?)?,
            "--cpu" => {
                a.cpu_unlimited = match val()?.as_str() {
                    "unlimited" => true,
                    "proportional" => false,
                    other => {
                        return Err(format!("--cpu {other}: expected unlimited or proportional"))
                    }
                }
            }
            "--no-cpu-placement" => a.place_cpus = false,
            "--no-seccomp" => a.seccomp = false,
            "--memory" => a.memory_mb = number(flag, &val()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

fn spec(name: &str, code: &std::path::Path, memory_mib: u32) -> FunctionVersionSpec {
    FunctionVersionSpec {
        name: name.into(),
        version: "$LATEST".into(),
        code_dir: Some(code.to_path_buf()),
        code_image: None,
        code: None,
        runtime: "provided.al2023".into(),
        handler: "echo".into(),
        memory_mib,
        timeout: Duration::from_secs(10),
        env: vec![],
        reserved_concurrency: None,
        revision: String::new(),
        layers: Default::default(),
        image: None,
        snap_start: false,
    }
}

static REQ: AtomicU64 = AtomicU64::new(1);

fn request(payload: &[u8]) -> InvokeRequest {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = REQ.fetch_add(1, Ordering::Relaxed);
    InvokeRequest {
        request_id: format!("{pid:08x}-0000-4000-8000-{n:012x}"),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

/// A 1 KiB JSON document.
fn payload() -> Vec<u8> {
    let mut p = br#"{"data":""#.to_vec();
    p.resize(1024 - 2, b'x');
    p.extend_from_slice(br#""}"#);
    p
}

async fn run_worker(w: &Worker, s: &FunctionVersionSpec, c: usize, secs: f64) -> stats::RunStats {
    let (w, s, body) = (w.clone(), Arc::new(s.clone()), Arc::new(payload()));
    load::closed_loop(c, secs, move || {
        let (w, s, body) = (w.clone(), s.clone(), body.clone());
        async move {
            matches!(w.invoke(&s, request(&body)).await,
                Ok(o) if o.result == InvokeResult::Success(body.to_vec()))
        }
    })
    .await
}

async fn run_http(addr: std::net::SocketAddr, c: usize, secs: f64) -> stats::RunStats {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            tokio::spawn(async move {
                let body = payload();
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                let Ok(mut client) = http_echo::Client::connect(addr).await else {
                    return (lat, 1);
                };
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.echo(&body).await {
                        Ok(b) if b == body => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    stats::collect(c, tasks, start).await
}

/// Removes the bench's scratch directory however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn bench(args: Args) -> Result<serde_json::Value, String> {
    let run = std::env::temp_dir().join(format!("worker-bench-{}", std::process::id()));
    let _scratch = Scratch(run.clone());
    let code = run.join("code");
    std::fs::create_dir_all(&code).map_err(|e| e.to_string())?;
    for d in [&run, &code] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    std::fs::copy(&args.load.fn_bin, code.join("bootstrap"))
        .map_err(|e| format!("copy fn: {e}"))?;
    let images = std::fs::canonicalize(&args.images).map_err(|e| format!("--images: {e}"))?;
    let mut pcfg = ProcessConfig::from_images_dir(&images, run.join("run"));
    if let Some(g) = &args.guest_init {
        pcfg.guest_init = g.clone();
    }
    pcfg.cgroup_group = GROUP.into();
    if args.cpu_unlimited {
        pcfg.cpu = worker::sandbox::process::CpuPolicy::Unlimited;
    }
    pcfg.place_cpus = args.place_cpus;
    pcfg.seccomp = args.seccomp;
    let cpu = format!("{:?}", pcfg.cpu);
    let backend = ProcessBackend::new(pcfg).map_err(|e| e.to_string())?;
    let w = Worker::new(Arc::new(backend), WorkerConfig::default());
    let echo_addr = http_echo::serve().await.map_err(|e| e.to_string())?;
    let s = spec("bench-echo", &code, args.memory_mb);
    let placer = args
        .place_cpus
        .then(worker::jail::cpus::CpuPlacer::from_own_affinity);

    let mut levels = Vec::new();
    for &c in &args.load.levels {
        let have = w.idle_count(&s.key());
        if have < c {
            w.prewarm(&s, (c - have) as u32)
                .await
                .map_err(|e| e.to_string())?;
        }
        run_worker(&w, &s, c, 0.3).await; // warm-up
        let wk = run_worker(&w, &s, c, args.load.seconds).await;
        let http = run_http(echo_addr, c, args.load.seconds).await;
        let mut setup = floor::FloorSetup {
            dir: &run,
            placer: placer.as_ref(),
            runtime: None,
        };
        let fl = floor::run(&setup, c, args.load.seconds, &payload())
            .await
            .map_err(|e| format!("floor: {e}"))?;
        setup.runtime = Some(&args.load.fn_bin);
        let flr = floor::run(&setup, c, args.load.seconds, &payload())
            .await
            .map_err(|e| format!("floor with the function: {e}"))?;
        eprintln!(
            "c={c}: worker p50 {:.0} us p99 {:.0} us {:.0}/s",
            wk.p50_us, wk.p99_us, wk.per_second
        );
        for (name, r) in [("http echo", &http), ("floor", &fl), ("floor+fn", &flr)] {
            eprintln!(
                "      {name}: p50 {:.0} us p99 {:.0} us {:.0}/s",
                r.p50_us, r.p99_us, r.per_second
            );
        }
        levels.push(json!({
            "concurrency": c,
            "worker": wk,
            "http_echo": http,
            "floor": fl,
            "floor_with_function": flr,
            "p50_ratio": wk.p50_us / http.p50_us.max(1e-9),
            "p99_ratio": wk.p99_us / http.p99_us.max(1e-9),
            "p50_ratio_to_floor": wk.p50_us / fl.p50_us.max(1e-9),
            "p99_ratio_to_floor": wk.p99_us / fl.p99_us.max(1e-9),
            "p50_ratio_to_floor_with_function": wk.p50_us / flr.p50_us.max(1e-9),
        }));
    }
    w.shutdown_idle();

    let mut cold = Vec::new();
    for i in 0..args.cold {
        let cs = spec(&format!("bench-cold-{i}"), &code, args.memory_mb);
        let t = Instant::now();
        let o = w
            .invoke(&cs, request(&payload()))
            .await
            .map_err(|e| e.to_string())?;
        if o.result != InvokeResult::Success(payload()) {
            return Err(format!("cold invoke failed: {}", o.logs));
        }
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        w.shutdown_idle();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Charged to this process's cgroup and everything below it: the sandbox groups,
    // plus what the kernel charged here for each sandbox before it joined its group
    // (first task, namespaces). The groups' own share is reported beside it.
    let cg = CgroupHost::detect(GROUP).map_err(|e| e.to_string())?;
    let read = || {
        (
            cg.own_memory_current(),
            cg.group_memory_current().unwrap_or(0),
        )
    };
    let before = read();
    let ds = spec("bench-density", &code, 128);
    w.prewarm(&ds, args.density)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = read();
    let n = f64::from(args.density.max(1));
    let groups_per = after.1.saturating_sub(before.1) as f64 / n;
    let per = match (before.0, after.0) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / n,
        _ => groups_per, // a root cgroup: only the sandbox groups can be read
    };
    w.shutdown_idle();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    Ok(json!({
        "backend": "process",
        "function": "fn-rust echo (lambda_runtime)",
        "memory_mb": args.memory_mb,
        "payload_bytes": 1024,
        "seconds_per_level": args.load.seconds,
        "cpu_policy": cpu,
        "cpu_placement": args.place_cpus,
        "seccomp": args.seccomp,
        "levels": levels,
        "cold_start_ms": { "median": stats::median(cold.clone()), "samples": cold },
        "density": {
            "sandboxes": args.density,
            "bytes_per_sandbox": per,
            "sandbox_groups_bytes_per_sandbox": groups_per,
            "sandboxes_per_gib": if per > 0.0 { (1u64 << 30) as f64 / per } else { 0.0 },
        },
    }))
}

fn main() {
    floor::maybe_run_child();
    let args = args::or_exit("worker-bench", parse_args());
    let out = args.load.out.clone();
    worker::bench::report::run_and_report("worker-bench", out, bench(args));
}
