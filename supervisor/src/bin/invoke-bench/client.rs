//! The bench's HTTP/1.1 client: SigV4-signed requests replayed over keep-alive
//! connections, run in a child process so the parent's CPU time is the server's alone.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use worker::bench::load::process_cpu;
use worker::bench::stats::{self, RunStats};

pub const AK: &str = "AKIAINVOKEBENCH00000";
pub const SK: &str = "invoke-bench-secret";

/// The flag that turns this binary into the load generator of [`load_from_child`].
const CHILD_FLAG: &str = "--load-child";

/// A signed request as raw bytes; SigV4 allows replaying it within the clock-skew window.
pub fn signed(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let client = supervisor::demo::client::Client {
        addr,
        access_key_id: AK.into(),
        secret_access_key: SK.into(),
        region: "us-east-1".into(),
    };
    let head = client
        .signed_head(method, path, &[], body, "")
        .map_err(|e| e.to_string())?;
    let mut raw = head.into_bytes();
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

pub async fn one(addr: SocketAddr, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(raw).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf)
        .await
        .map_err(|e| e.to_string())
}

/// One run's client-side figures and the CPU this process (the server side) spent
/// during it.
pub struct ServedRun {
    pub stats: RunStats,
    pub server_cpu: Duration,
}

impl ServedRun {
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.stats.requests.max(1) as f64
    }
}

/// Runs [`load`] in a child process (this binary with [`CHILD_FLAG`]) against `addr`,
/// so the CPU this process uses meanwhile is the server's: its HTTP, SigV4, registry,
/// worker and logging, without the client's.
pub async fn load_from_child(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    clients: usize,
    secs: f64,
) -> Result<ServedRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let cpu_before = process_cpu();
    let output = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut child = Command::new(exe)
            .args([
                CHILD_FLAG,
                &addr.to_string(),
                &clients.to_string(),
                &secs.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("load child: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("load child: no stdin")?;
        stdin
            .write_all(&request)
            .map_err(|e| format!("load child stdin: {e}"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| format!("load child: {e}"))?;
        if !out.status.success() {
            return Err(format!("load child failed: {}", out.status));
        }
        Ok(out.stdout)
    })
    .await
    .map_err(|e| format!("load child task: {e}"))??;
    let server_cpu = process_cpu().saturating_sub(cpu_before);
    let stats = serde_json::from_slice(&output).map_err(|e| format!("load child output: {e}"))?;
    Ok(ServedRun { stats, server_cpu })
}

/// In the child of [`load_from_child`]: runs the load and prints its stats as JSON,
/// then exits. Returns when this process is not such a child.
pub fn maybe_run_load_child() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(CHILD_FLAG) {
        return;
    }
    let code = match run_load_child(&args[1..]) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("invoke-bench load child: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run_load_child(args: &[String]) -> Result<(), String> {
    let [addr, clients, secs] = args else {
        return Err(format!("usage: {CHILD_FLAG} ADDR CLIENTS SECONDS"));
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("address: {e}"))?;
    let clients: usize = clients.parse().map_err(|e| format!("clients: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("seconds: {e}"))?;
    let mut request = Vec::new();
    std::io::stdin()
        .read_to_end(&mut request)
        .map_err(|e| format!("stdin: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let stats = rt.block_on(load(addr, Arc::new(request), clients, secs));
    let text = serde_json::to_string(&stats).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}
