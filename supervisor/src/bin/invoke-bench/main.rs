//! invoke-bench: the whole Invoke path over HTTP (SigV4 verification, registry,
//! worker pool, process sandbox, Rust echo function built with `lambda_runtime`),
//! 1 KiB payloads. In the same run and at each level: the same supervisor's worker
//! called directly (`Worker::invoke` with the spec the API resolves, no HTTP), and a
//! bare loopback HTTP/1.1 echo server.
//!
//! Reports warm p50/p99 and invokes/s at 1, 8 and 32 keep-alive clients, the
//! supervisor's CPU per invoke (the HTTP clients run in a child process, so this
//! process's CPU time is the server's), cold start to first response of a new
//! function, and sandboxes per GiB (the worker cgroup's charged memory while
//! pre-warming). Writes JSON to stdout (and `--out FILE`). Needs root and the images.
//!
//! usage: invoke-bench --fn-bin PATH [--images DIR] [--seconds N] [--levels 1,8,32]
//!                     [--cold N] [--density N] [--memory MB] [--out FILE]
//!
//! `--memory` (default 128) sets the functions' MemorySize, and with it their CPU share
//! (one vCPU per 1,769 MB, at least 0.25): at 128 MB one busy sandbox is held to a
//! quarter of a CPU, which bounds the 1-client rate; 1769 measures the path unthrottled.

mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use client::{load_from_child, one, signed, ServedRun, AK, SK};
use serde_json::json;
use supervisor::config::Config;
use supervisor::control::names::FunctionRef;
use worker::bench::args::{self, number, LoadFlags};
use worker::bench::load::{closed_loop, process_cpu};
use worker::bench::{http_echo, stats};
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult, Worker};

struct Args {
    load: LoadFlags,
    images: Option<PathBuf>,
    cold: usize,
    density: u32,
    memory_mb: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        load: LoadFlags::default(),
        images: None,
        cold: 10,
        density: 32,
        memory_mb: 128,
    };
    args::parse(&mut a.load, |flag, val| {
        match flag {
            "--images" => a.images = Some(val()?.into()),
            "--cold" => a.cold = number(flag, &val()?)?,
            "--density" => a.density = number(flag, &val()?)?,
            "--memory" => a.memory_mb = number(flag, &val()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

async fn create(addr: SocketAddr, name: &str, zip_b64: &str, memory_mb: u32) -> Result<(), String> {
    let body = json!({
        "FunctionName": name, "Runtime": "provided.al2023", "Handler": "echo",
        "Role": "arn:aws:iam::000000000000:role/bench", "MemorySize": memory_mb,
        "Code": {"ZipFile": zip_b64},
    })
    .to_string();
    let (status, resp) = one(
        addr,
        &signed(addr, "POST", "/2015-03-31/functions", body.as_bytes())?,
    )
    .await?;
    if status != 201 {
        return Err(format!(
            "CreateFunction {status}: {}",
            String::from_utf8_lossy(&resp)
        ));
    }
    Ok(())
}

/// Warm invokes straight through the supervisor's own worker with `spec`: the Invoke
/// API's reference in the same run (no HTTP, SigV4 or registry).
async fn direct_worker(
    w: &Worker,
    spec: &FunctionVersionSpec,
    payload: &[u8],
    c: usize,
    secs: f64,
) -> ServedRun {
    let (w, spec, body) = (
        w.clone(),
        Arc::new(spec.clone()),
        Arc::new(payload.to_vec()),
    );
    let cpu_before = process_cpu();
    let stats = closed_loop(c, secs, move || {
        let (w, spec, body) = (w.clone(), spec.clone(), body.clone());
        async move {
            let req = InvokeRequest {
                request_id: supervisor::ids::uuid_v4(),
                payload: body.to_vec(),
                ..Default::default()
            };
            matches!(w.invoke(&spec, req).await,
                Ok(o) if matches!(&o.result, InvokeResult::Success(p) if *p == *body))
        }
    })
    .await;
    ServedRun {
        stats,
        server_cpu: process_cpu().saturating_sub(cpu_before),
    }
}

/// One level: the worker directly, the Invoke API and the bare echo, each from `c`
/// clients; the Invoke API and the echo are loaded from a child process.
async fn level(bed: &Bed, c: usize, secs: f64) -> Result<serde_json::Value, String> {
    // Warm-up: enough idle sandboxes for `c` clients before anything is timed.
    direct_worker(&bed.worker, &bed.spec, &bed.payload, c, 0.3).await;
    let wk = direct_worker(&bed.worker, &bed.spec, &bed.payload, c, secs).await;
    let inv = load_from_child(bed.addr, bed.invoke.clone(), c, secs).await?;
    let bare = load_from_child(bed.echo_addr, bed.echo.clone(), c, secs).await?;
    let (i, w, e) = (&inv.stats, &wk.stats, &bare.stats);
    if i.errors > 0 || w.errors > 0 || e.errors > 0 {
        return Err(format!(
            "clients {c}: errors: invoke {}, worker {}, echo {}",
            i.errors, w.errors, e.errors
        ));
    }
    eprintln!(
        "clients {c}: invoke p50 {:.0} us {:.0}/s cpu {:.1} us | worker p50 {:.0} us {:.0}/s cpu {:.1} us | echo p50 {:.0} us {:.0}/s cpu {:.1} us",
        i.p50_us, i.per_second, inv.cpu_us_per_request(),
        w.p50_us, w.per_second, wk.cpu_us_per_request(),
        e.p50_us, e.per_second, bare.cpu_us_per_request(),
    );
    Ok(json!({
        "clients": c,
        "invoke": i,
        "worker": w,
        "bare_echo": e,
        "supervisor_cpu_us_per_invoke": inv.cpu_us_per_request(),
        "worker_cpu_us_per_invoke": wk.cpu_us_per_request(),
        "echo_server_cpu_us_per_request": bare.cpu_us_per_request(),
        "throughput_ratio_to_worker": i.per_second / w.per_second.max(1e-9),
        "p50_ratio_to_worker": i.p50_us / w.p50_us.max(1e-9),
        "p50_ratio": i.p50_us / e.p50_us.max(1e-9),
        "p99_ratio": i.p99_us / e.p99_us.max(1e-9),
    }))
}

/// What every level uses: the supervisor's address and worker, the resolved spec, and
/// the requests the children replay.
struct Bed {
    addr: SocketAddr,
    worker: Worker,
    spec: FunctionVersionSpec,
    payload: Vec<u8>,
    invoke: Arc<Vec<u8>>,
    echo_addr: SocketAddr,
    echo: Arc<Vec<u8>>,
}

async fn cold_starts(
    addr: SocketAddr,
    zip_b64: &str,
    args: &Args,
    payload: &[u8],
) -> Result<Vec<f64>, String> {
    let mut cold = Vec::new();
    for i in 0..args.cold {
        let name = format!("bench-cold-{i}");
        create(addr, &name, zip_b64, args.memory_mb).await?;
        let raw = signed(
            addr,
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            payload,
        )?;
        let t = Instant::now();
        let (status, _) = one(addr, &raw).await?;
        if status == 200 {
            cold.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(cold)
}

/// Sandboxes per GiB: the memory charged while `count` idle sandboxes of a new
/// function start, to this process's cgroup and everything below it (the sandboxes'
/// groups, plus the kernel objects made for them before they joined those: first
/// task, namespaces). The sandbox groups' own share is reported beside it.
async fn density(
    svc: &supervisor::invoke::InvokeService,
    addr: SocketAddr,
    zip_b64: &str,
    count: u32,
) -> Result<serde_json::Value, String> {
    let group = worker::jail::CgroupHost::detect("lambda-worker").map_err(|e| e.to_string())?;
    let read = || -> Result<(u64, u64), String> {
        let all = group
            .own_memory_current()
            .ok_or("no memory figure for this process's cgroup")?;
        let sandboxes = group
            .group_memory_current()
            .ok_or("no memory figure for the worker cgroup")?;
        Ok((all, sandboxes))
    };
    create(addr, "bench-density", zip_b64, 128).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = read()?;
    let f = FunctionRef {
        name: "bench-density".into(),
        qualifier: None,
    };
    let started = svc.prewarm(&f, count).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = read()?;
    if started == 0 || after.0 <= before.0 {
        return Err(format!(
            "density: {started} sandboxes started, {before:?} -> {after:?} bytes"
        ));
    }
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / f64::from(started);
    let all = per(after.0, before.0);
    Ok(json!({ "sandboxes": started, "bytes_per_sandbox": all,
               "sandbox_groups_bytes_per_sandbox": per(after.1, before.1),
               "sandboxes_per_gib": (1u64 << 30) as f64 / all }))
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cfg = Config::with_data_dir(&dir.path().join("data"));
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.credentials = Some((AK.into(), SK.into()));
    cfg.data_plane.host.isolation = worker::sandbox::select::Isolation::Process;
    if let Some(i) = &args.images {
        cfg.data_plane.host.images_dir =
            std::fs::canonicalize(i).map_err(|e| format!("--images: {e}"))?;
    }
    let prepared = supervisor::serve::prepare(cfg).await?;
    let Some(worker) = prepared.invoke.worker().cloned() else {
        return Err("the process backend did not start (see above)".into());
    };
    let addr = prepared.addr;
    let svc = prepared.invoke.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(prepared.run(async {
        let _ = stop_rx.await;
    }));
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(worker::bench::bootstrap_zip(
        &std::fs::read(&args.load.fn_bin).map_err(|e| e.to_string())?,
    )?);
    create(addr, "bench-echo", &zip_b64, args.memory_mb).await?;
    let payload = json!({ "data": "x".repeat(1024 - 12) })
        .to_string()
        .into_bytes();
    let invoke = Arc::new(signed(
        addr,
        "POST",
        "/2015-03-31/functions/bench-echo/invocations",
        &payload,
    )?);
    let (status, body) = one(addr, &invoke).await?;
    if status != 200 || body != payload {
        return Err(format!(
            "warm-up invoke: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let f = FunctionRef {
        name: "bench-echo".into(),
        qualifier: None,
    };
    let spec = svc
        .resolve(&f)
        .await
        .map_err(|e| format!("resolve: {e:?}"))?;
    let echo_addr = http_echo::serve().await.map_err(|e| e.to_string())?;
    let mut echo = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    echo.extend_from_slice(&payload);
    let bed = Bed {
        addr,
        worker,
        spec,
        payload,
        invoke,
        echo_addr,
        echo: Arc::new(echo),
    };

    let mut levels = Vec::new();
    for &c in &args.load.levels {
        levels.push(level(&bed, c, args.load.seconds).await?);
    }
    let cold = cold_starts(addr, &zip_b64, &args, &bed.payload).await?;
    let density = if args.density > 0 {
        density(&svc, addr, &zip_b64, args.density).await?
    } else {
        serde_json::Value::Null
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(json!({
        "benchmark": "invoke-bench (HTTP + SigV4 + worker + process sandbox, Rust echo, 1 KiB)",
        "memory_mb": args.memory_mb,
        "async_threads": tokio::runtime::Handle::current().metrics().num_workers(),
        "seconds_per_level": args.load.seconds,
        "levels": levels,
        "cold_start_ms_median": stats::median(cold.clone()),
        "cold_start_ms": cold,
        "density": density,
    }))
}

fn main() {
    client::maybe_run_load_child();
    let args = args::or_exit("invoke-bench", parse_args());
    let out = args.load.out.clone();
    worker::bench::report::run_and_report("invoke-bench", out, run(args));
}
