//! invoke-bench: the whole Invoke path over HTTP (SigV4 verification, registry,
//! worker pool, process sandbox, Rust echo function built with `lambda_runtime`),
//! 1 KiB payloads, beside a bare loopback HTTP/1.1 echo server in the same run.
//!
//! Reports warm p50/p99 and invokes/s at 1, 8 and 32 keep-alive clients, cold start to
//! first response of a new function, and sandboxes per GiB (MemAvailable drop while
//! pre-warming). Writes JSON to stdout (and `--out FILE`). Needs root and the images.
//!
//! usage: invoke-bench --fn-bin PATH [--images DIR] [--seconds N] [--levels 1,8,32]
//!                     [--cold N] [--density N] [--memory MB] [--out FILE]
//!
//! `--memory` (default 128) sets the functions' MemorySize, and with it their CPU share
//! (one vCPU per 1,769 MB, at least 0.25): at 128 MB one busy sandbox is held to a
//! quarter of a CPU, which bounds the 1-client rate; 1769 measures the path unthrottled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use serde_json::json;
use supervisor::auth::{sign_request, SigningRequest};
use supervisor::config::Config;
use supervisor::control::names::FunctionRef;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use worker::bench::{http_echo, stats};

const AK: &str = "AKIAINVOKEBENCH00000";
const SK: &str = "invoke-bench-secret";

struct Args {
    images: Option<PathBuf>,
    fn_bin: PathBuf,
    seconds: f64,
    levels: Vec<usize>,
    cold: usize,
    density: u32,
    memory_mb: u32,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        images: None,
        fn_bin: PathBuf::new(),
        seconds: 3.0,
        levels: vec![1, 8, 32],
        cold: 10,
        density: 32,
        memory_mb: 128,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--images" => a.images = Some(val()?.into()),
            "--fn-bin" => a.fn_bin = val()?.into(),
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--levels" => {
                a.levels = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--levels: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--cold" => a.cold = val()?.parse().map_err(|e| format!("--cold: {e}"))?,
            "--density" => a.density = val()?.parse().map_err(|e| format!("--density: {e}"))?,
            "--memory" => a.memory_mb = val()?.parse().map_err(|e| format!("--memory: {e}"))?,
            "--out" => a.out = Some(val()?.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !a.fn_bin.is_file() {
        return Err("--fn-bin must name the fn-rust (musl) binary".into());
    }
    Ok(a)
}

/// A signed request as raw bytes; SigV4 allows replaying it within the clock-skew window.
fn signed(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = HeaderMap::new();
    let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
    headers.insert("host", host);
    let auth = sign_request(
        &SigningRequest {
            method,
            path,
            query: None,
            body,
            access_key_id: AK,
            secret_access_key: SK,
            region: "us-east-1",
            service: "lambda",
            now: supervisor::timefmt::now(),
        },
        &mut headers,
    )
    .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        req.push_str(&format!(
            "{k}: {}\r\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    req.push_str(&format!(
        "authorization: {auth}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    Ok(raw)
}

/// Reads one HTTP/1.1 response with a Content-Length; returns (status, body).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("headers"))?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("status"))?;
            let len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                if s.read_buf(buf).await? == 0 {
                    return Err(bad("eof in body"));
                }
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Ok((status, body));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(bad("eof"));
        }
    }
}

/// `clients` keep-alive connections replaying `request` for `secs`.
async fn load(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    clients: usize,
    secs: f64,
) -> stats::RunStats {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return (samples, 1);
            };
            let _ = s.set_nodelay(true);
            let mut buf = Vec::with_capacity(8192);
            while Instant::now() < until {
                let t = Instant::now();
                if s.write_all(&request).await.is_err() {
                    errors += 1;
                    break;
                }
                match read_response(&mut s, &mut buf).await {
                    Ok((200, _)) => samples.push(t.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (samples, errors)
        }));
    }
    stats::collect(clients, tasks, started).await
}

async fn one(addr: SocketAddr, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(raw).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf)
        .await
        .map_err(|e| e.to_string())
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

fn mem_available_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cfg = Config::with_data_dir(&dir.path().join("data"));
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.credentials = Some((AK.into(), SK.into()));
    cfg.data_plane.isolation = worker::sandbox::select::Isolation::Process;
    if let Some(i) = args.images {
        cfg.data_plane.images_dir = i;
    }
    let prepared = supervisor::serve::prepare(cfg).await?;
    if prepared.invoke.worker().is_none() {
        return Err("the process backend did not start (see above)".into());
    }
    let addr = prepared.addr;
    let svc = prepared.invoke.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(prepared.run(async {
        let _ = stop_rx.await;
    }));
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(worker::bench::bootstrap_zip(
        &std::fs::read(&args.fn_bin).map_err(|e| e.to_string())?,
    )?);
    create(addr, "bench-echo", &zip_b64, args.memory_mb).await?;
    let payload = json!({ "data": "x".repeat(1024 - 12) }).to_string();
    let invoke = Arc::new(signed(
        addr,
        "POST",
        "/2015-03-31/functions/bench-echo/invocations",
        payload.as_bytes(),
    )?);
    let (status, body) = one(addr, &invoke).await?;
    if status != 200 || body != payload.as_bytes() {
        return Err(format!(
            "warm-up invoke: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let echo_addr = http_echo::serve().await.map_err(|e| e.to_string())?;
    let mut echo_req = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    echo_req.extend_from_slice(payload.as_bytes());
    let echo_req = Arc::new(echo_req);

    let mut levels = Vec::new();
    for &c in &args.levels {
        let bare = load(echo_addr, echo_req.clone(), c, args.seconds).await;
        let inv = load(addr, invoke.clone(), c, args.seconds).await;
        eprintln!(
            "clients {c}: invoke p50 {:.0} us p99 {:.0} us {:.0}/s | bare echo p50 {:.0} us p99 {:.0} us {:.0}/s",
            inv.p50_us, inv.p99_us, inv.per_second, bare.p50_us, bare.p99_us, bare.per_second
        );
        levels.push(json!({
            "clients": c,
            "invoke": inv,
            "bare_echo": bare,
            "p50_ratio": inv.p50_us / bare.p50_us.max(1e-9),
            "p99_ratio": inv.p99_us / bare.p99_us.max(1e-9),
        }));
    }

    let mut cold = Vec::new();
    for i in 0..args.cold {
        let name = format!("bench-cold-{i}");
        create(addr, &name, &zip_b64, args.memory_mb).await?;
        let raw = signed(
            addr,
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            payload.as_bytes(),
        )?;
        let t = Instant::now();
        let (status, _) = one(addr, &raw).await?;
        if status == 200 {
            cold.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }

    let density = {
        create(addr, "bench-density", &zip_b64, args.memory_mb).await?;
        let before = mem_available_kib();
        let started = match svc
            .prewarm(
                &FunctionRef {
                    name: "bench-density".into(),
                    qualifier: None,
                },
                args.density,
            )
            .await
        {
            Ok(n) => n,
            Err(e) => {
                eprintln!("density: {e}");
                0
            }
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = mem_available_kib();
        match (before, after) {
            (Some(b), Some(a)) if started > 0 && b > a => {
                let per_kib = (b - a) as f64 / f64::from(started);
                json!({ "sandboxes": started, "kib_per_sandbox": per_kib,
                        "sandboxes_per_gib": 1024.0 * 1024.0 / per_kib })
            }
            _ => json!({ "sandboxes": started, "kib_per_sandbox": null }),
        }
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(json!({
        "benchmark": "invoke-bench (HTTP + SigV4 + worker + process sandbox, Rust echo, 1 KiB)",
        "memory_mb": args.memory_mb,
        "levels": levels,
        "cold_start_ms_median": stats::median(cold.clone()),
        "cold_start_ms": cold,
        "density": density,
    }))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("invoke-bench: {e}");
            std::process::exit(2);
        }
    };
    let out = args.out.clone();
    worker::bench::report::run_and_report("invoke-bench", out, run(args));
}
