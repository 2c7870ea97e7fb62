//! link-bench: what the link between a frontend and a worker host costs. One worker
//! daemon (process sandboxes, the Rust echo function built with `lambda_runtime`) on
//! loopback; warm invokes of 1 KiB go to its worker directly (the embedded path) and
//! through a frontend over the mutually authenticated TLS link, interleaved level by
//! level and round by round in the same process. Also: TLS handshake time, and the
//! code transfer rate of a worker fetching a package from the frontend.
//!
//! usage: link-bench --fn-bin PATH [--images DIR] [--seconds N] [--levels 1,8,32]
//!                   [--rounds N] [--package-mib N] [--out FILE]
//! Needs root (jailed sandboxes) and the images. Writes JSON to stdout and `--out`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::daemon::{Daemon, DaemonSettings, LinkCodeSource};
use cluster::frontend::{CodeLookup, Frontend, FrontendSettings};
use cluster::tls::{self, LinkStats, Role, TlsFiles};
use serde_json::json;
use worker::bench::args::{self, number, LoadFlags};
use worker::bench::load::closed_loop;
use worker::bench::stats::{self, RunStats};
use worker::code::{code_sha256, digest_hex, CodeRef, CodeSource as _};
use worker::host::{HostConfig, HostSettings};
use worker::sandbox::select::Isolation;
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult};

struct Args {
    load: LoadFlags,
    images: PathBuf,
    rounds: usize,
    package_mib: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        load: LoadFlags::default(),
        images: PathBuf::from("target/images"),
        rounds: 3,
        package_mib: 32,
    };
    args::parse(&mut a.load, |flag, val| {
        match flag {
            "--images" => a.images = val()?.into(),
            "--rounds" => a.rounds = number(flag, &val()?)?,
            "--package-mib" => a.package_mib = number(flag, &val()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // The jail wants absolute paths.
    a.images = std::fs::canonicalize(&a.images).map_err(|e| format!("--images: {e}"))?;
    Ok(a)
}

/// Serves the packages the bench knows, by hex digest.
struct Packages(Vec<(String, Vec<u8>)>);

impl CodeLookup for Packages {
    fn package(&self, digest_hex: &str) -> Result<Option<Vec<u8>>, cluster::frontend::LookupError> {
        let found = self.0.iter().find(|(h, _)| h == digest_hex);
        Ok(found.map(|(_, z)| z.clone()))
    }

    fn chunk(&self, _id_hex: &str) -> Result<Option<Vec<u8>>, cluster::frontend::LookupError> {
        Ok(None)
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn spec(name: &str, code: CodeRef) -> FunctionVersionSpec {
    FunctionVersionSpec {
        name: name.into(),
        version: "$LATEST".into(),
        code_dir: None,
        code_image: None,
        code: Some(code),
        runtime: "provided.al2023".into(),
        handler: "echo".into(),
        // One full vCPU per sandbox (Lambda's share at 1,769 MB): the path is measured,
        // not the CPU share. A smaller share throttles the function itself (CFS quota
        // spent within a 100 ms period stalls its next invokes for the rest of it).
        memory_mib: 1769,
        timeout: Duration::from_secs(10),
        env: Vec::new(),
        reserved_concurrency: None,
        revision: "r1".into(),
        layers: Default::default(),
        image: None,
        snap_start: false,
    }
}

fn request(payload: &[u8]) -> InvokeRequest {
    InvokeRequest {
        request_id: "bench".into(),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

struct Bed {
    daemon: Arc<Daemon>,
    fe: Arc<Frontend>,
    local: FunctionVersionSpec,
    remote: FunctionVersionSpec,
    worker_tls: TlsFiles,
    frontend_tls: TlsFiles,
    daemon_addr: String,
    _dir: tempfile::TempDir,
}

async fn start(args: &Args, package: &[u8]) -> Result<Bed, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = dir.path().join("ca");
    let e = |e: tls::TlsError| e.to_string();
    tls::ca::init(&ca).map_err(e)?;
    tls::ca::issue(
        &ca,
        Role::Worker,
        "bench-w",
        tls::DEFAULT_CERT_LIFETIME,
        &ca,
    )
    .map_err(e)?;
    tls::ca::issue(
        &ca,
        Role::Frontend,
        "bench-fe",
        tls::DEFAULT_CERT_LIFETIME,
        &ca,
    )
    .map_err(e)?;
    let worker_tls = TlsFiles::in_dir(&ca, Role::Worker, "bench-w");
    let frontend_tls = TlsFiles::in_dir(&ca, Role::Frontend, "bench-fe");
    let zip = worker::bench::bootstrap_zip(
        &std::fs::read(&args.load.fn_bin).map_err(|e| e.to_string())?,
    )?;
    let sha = code_sha256(&zip);
    let daemon_addr = format!("127.0.0.1:{}", free_port()?);
    let host = HostSettings {
        config: HostConfig {
            isolation: Isolation::Process,
            vmm_binary: None,
            kernel: None,
            vm_cmdline: String::new(),
            images_dir: args.images.clone(),
            run_dir: Some(dir.path().join("run")),
            idle_timeout: Duration::from_secs(600),
            lease: Duration::from_secs(3600),
            host_concurrency: 1000,
            init_timeout: Duration::from_secs(10),
            favor_cgroup_dynmods: true,
        },
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        log_dir: None,
        code: None,
        snapshot_vault: None,
    };
    let (daemon, listener) = Daemon::start(DaemonSettings {
        id: "bench-w".into(),
        listen: daemon_addr.parse().map_err(|e| format!("{e}"))?,
        tls: worker_tls.clone(),
        host,
        code_cache_max_bytes: 1 << 30,
        chunk_copies_max_bytes: 1 << 30,
        lease: Duration::from_secs(3600),
        rejoin: false,
        capacity_mib: Some(1 << 20),
        metrics_listen: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    let (d, wt) = (daemon.clone(), worker_tls.clone());
    tokio::spawn(async move { d.serve(listener, &wt, false, std::future::pending()).await });
    let big = digest_hex(&code_sha256(package)).map_err(|e| e.to_string())?;
    let lookup = Packages(vec![
        (digest_hex(&sha).map_err(|e| e.to_string())?, zip),
        (big, package.to_vec()),
    ]);
    let fe = Frontend::start(
        FrontendSettings {
            id: "bench-fe".into(),
            tls: frontend_tls.clone(),
            workers: vec![daemon_addr.clone()],
            link_listen: format!("127.0.0.1:{}", free_port()?)
                .parse()
                .map_err(|e| format!("{e}"))?,
            advertise: None,
        },
        Arc::new(lookup),
    )
    .await
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    while fe.available_workers() == 0 {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("the worker did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = fe.code_ref(&sha);
    Ok(Bed {
        daemon,
        // One function for both paths: the same warm sandboxes serve either.
        local: spec("bench-echo", code.clone()),
        remote: spec("bench-echo", code),
        fe,
        worker_tls,
        frontend_tls,
        daemon_addr,
        _dir: dir,
    })
}

/// Whether the invoke echoed `payload`; the first failure is printed, once.
fn echoed<E: std::fmt::Debug>(out: Result<worker::InvokeOutcome, E>, payload: &[u8]) -> bool {
    static SHOWN: std::sync::Once = std::sync::Once::new();
    let ok = matches!(&out, Ok(o) if matches!(&o.result, InvokeResult::Success(p) if p == payload));
    if !ok {
        SHOWN.call_once(|| eprintln!("link-bench: an invoke failed: {out:?}"));
    }
    ok
}

async fn level(
    bed: &Bed,
    clients: usize,
    secs: f64,
    payload: &Arc<Vec<u8>>,
) -> (RunStats, RunStats) {
    let (w, s, p) = (
        bed.daemon.worker().clone(),
        bed.local.clone(),
        payload.clone(),
    );
    let local = closed_loop(clients, secs, move || {
        let (w, s, p) = (w.clone(), s.clone(), p.clone());
        async move { echoed(w.invoke(&s, request(&p)).await, &p) }
    })
    .await;
    let (fe, s, p) = (bed.fe.clone(), bed.remote.clone(), payload.clone());
    let remote = closed_loop(clients, secs, move || {
        let (fe, s, p) = (fe.clone(), s.clone(), p.clone());
        async move { echoed(fe.invoke(&s, request(&p), None).await, &p) }
    })
    .await;
    (local, remote)
}

fn median_of(runs: &[RunStats], f: impl Fn(&RunStats) -> f64) -> f64 {
    stats::median(runs.iter().map(f).collect())
}

/// The machine's floor for any link over TCP: one 1 KiB message there and back on
/// loopback between two tasks of this runtime, no TLS, no HTTP/2.
async fn tcp_round_trips(n: usize) -> Result<Vec<f64>, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const SIZE: usize = 1100;
    let e = |e: std::io::Error| e.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let addr = listener.local_addr().map_err(e)?;
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut b = vec![0u8; SIZE];
        while s.read_exact(&mut b).await.is_ok() {
            s.write_all(&b).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.map_err(e)?;
    c.set_nodelay(true).map_err(e)?;
    let mut b = vec![7u8; SIZE];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b).await.map_err(e)?;
        c.read_exact(&mut b).await.map_err(e)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    let _ = echo.await;
    Ok(out)
}

async fn handshakes(bed: &Bed, n: usize) -> Result<Vec<f64>, String> {
    let stats = Arc::new(LinkStats::default());
    let config = tls::client_config(&bed.frontend_tls, Role::Worker, stats.clone())
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let tcp = tokio::net::TcpStream::connect(&bed.daemon_addr)
            .await
            .map_err(|e| e.to_string())?;
        tls::connect(&connector, tcp, &stats)
            .await
            .map_err(|e| e.to_string())?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

async fn transfer(bed: &Bed, package: &[u8], n: usize) -> Result<Vec<f64>, String> {
    let stats = Arc::new(LinkStats::default());
    let config = tls::client_config(&bed.worker_tls, Role::Frontend, stats.clone())
        .map_err(|e| e.to_string())?;
    let source = LinkCodeSource::new(config, stats);
    let code = bed.fe.code_ref(&code_sha256(package));
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let got = source.fetch(&code).await.map_err(|e| e.to_string())?;
        if got.len() != package.len() {
            return Err("short package".into());
        }
        out.push(package.len() as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    // Incompressible: TLS does not compress, but be sure nothing else does either.
    let package: Vec<u8> = (0..args.package_mib << 20)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let bed = start(&args, &package).await?;
    let payload = Arc::new(
        json!({ "data": "x".repeat(1024 - 12) })
            .to_string()
            .into_bytes(),
    );
    let top = args.load.levels.iter().copied().max().unwrap_or(1);
    level(&bed, top, 1.0, &payload).await; // warm-up: sandboxes for every client
    let mut levels = Vec::new();
    for &c in &args.load.levels {
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let (l, r) = level(&bed, c, args.load.seconds, &payload).await;
            local.push(l);
            remote.push(r);
        }
        // A figure over failed invokes would measure nothing.
        if local.iter().chain(&remote).any(|s| s.errors > 0) {
            return Err(format!(
                "invokes failed at {c} clients (the first is printed above)"
            ));
        }
        let p50 = |v: &[RunStats]| median_of(v, |s| s.p50_us);
        let p99 = |v: &[RunStats]| median_of(v, |s| s.p99_us);
        let rate = |v: &[RunStats]| median_of(v, |s| s.per_second);
        eprintln!(
            "clients {c}: embedded p50 {:.0} us p99 {:.0} us {:.0}/s | link p50 {:.0} us p99 {:.0} us {:.0}/s",
            p50(&local), p99(&local), rate(&local), p50(&remote), p99(&remote), rate(&remote)
        );
        levels.push(json!({
            "clients": c,
            "embedded": local,
            "link": remote,
            "p50_added_us_median": p50(&remote) - p50(&local),
            "p99_added_us_median": p99(&remote) - p99(&local),
            "throughput_ratio_median": rate(&remote) / rate(&local).max(1e-9),
        }));
    }
    let mut floor = Vec::new();
    for _ in 0..args.rounds {
        let fe = bed.fe.clone();
        floor.push(
            closed_loop(1, args.load.seconds, move || {
                let fe = fe.clone();
                async move { fe.status_round_trip(0).await }
            })
            .await,
        );
    }
    let mut tcp = Vec::new();
    for _ in 0..args.rounds {
        tcp.push(stats::median(tcp_round_trips(5000).await?));
    }
    let hs = handshakes(&bed, 50).await?;
    let mbs = transfer(&bed, &package, 5).await?;
    Ok(json!({
        "benchmark": "link-bench (warm invokes, Rust echo, 1 KiB, process sandboxes; embedded worker vs the same worker through a frontend over the mTLS link; loopback)",
        "rounds": args.rounds,
        "seconds_per_run": args.load.seconds,
        "levels": levels,
        "link_status_round_trip": floor,
        "link_status_round_trip_p50_us_median": median_of(&floor, |s| s.p50_us),
        "tcp_round_trip_p50_us": tcp.clone(),
        "tcp_round_trip_p50_us_median": stats::median(tcp),
        "tls_handshake_us_median": stats::median(hs.clone()),
        "tls_handshake_us": hs,
        "code_transfer_mib_per_s_median": stats::median(mbs.clone()),
        "code_transfer_mib_per_s": mbs,
        "package_mib": args.package_mib,
    }))
}

fn main() {
    let args = args::or_exit("link-bench", parse_args());
    let out = args.load.out.clone();
    worker::bench::report::run_and_report("link-bench", out, run(args));
}
