//! Benchmarks for the control plane; prints JSON (or writes it to --out).
//!
//! * AES-256-GCM envelope seal/open throughput on a 50 MB object (one core);
//! * CreateFunction latency, end to end over HTTP with SigV4, for 1 MB and
//!   50 MB zips (request pre-signed so client-side hashing is not counted).
//!
//! Build in release mode: `cargo run --release -p supervisor --bin supervisor-bench`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use supervisor::auth::{sign_request, SigningRequest};
use supervisor::codestore::envelope::{open_in_place, seal_in_place, CodeAad};
use supervisor::codestore::MasterKey;
use supervisor::codestore::{code_sha256, CodeStore, ZipLimits};
use supervisor::config::Config;
use supervisor::Supervisor;

const MB: usize = 1024 * 1024;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn random(n: usize) -> Vec<u8> {
    // xorshift: fast, incompressible enough for zip sizes to stay put.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn mb_per_s(bytes: usize, t: Instant) -> f64 {
    bytes as f64 / MB as f64 / t.elapsed().as_secs_f64()
}

/// Envelope seal/open in place (what the store does per object: data-key
/// generation and wrap, AES-256-GCM over 50 MB), on one thread.
fn crypto_bench(runs: usize) -> serde_json::Value {
    let master = MasterKey::from_bytes([0x42; 32]);
    let mut data = random(50 * MB);
    let aad = CodeAad {
        function: "bench",
        version: "$LATEST",
        code_sha256: "x",
    };
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let sealed = seal_in_place(&master, &aad, &mut data).expect("seal");
        enc.push(mb_per_s(data.len(), t));
        let t = Instant::now();
        open_in_place(&master, &aad, &sealed, &mut data).expect("open");
        dec.push(mb_per_s(data.len(), t));
    }
    serde_json::json!({
        "object_mb": 50,
        "runs": runs,
        "threads": 1,
        "encrypt_mb_per_s_median": median(enc.clone()),
        "decrypt_mb_per_s_median": median(dec.clone()),
        "encrypt_samples": enc,
        "decrypt_samples": dec,
    })
}

/// CodeStore put (seal + write + fsync + rename) and read (read + open +
/// SHA-256 check) of a 50 MB object, including file I/O.
fn store_bench(runs: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CodeStore::open(
        &dir.path().join("code"),
        MasterKey::from_bytes([0x42; 32]),
        ZipLimits::default(),
    )
    .expect("store");
    let data = random(50 * MB);
    let sha = code_sha256(&data);
    let aad = CodeAad {
        function: "bench",
        version: "$LATEST",
        code_sha256: &sha,
    };
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let buf = data.clone();
        let t = Instant::now();
        let id = store.put(&aad, buf).expect("put");
        put.push(mb_per_s(data.len(), t));
        let t = Instant::now();
        let back = store.read(&id, &aad).expect("read");
        get.push(mb_per_s(data.len(), t));
        assert_eq!(back.len(), data.len());
        store.remove(&id).expect("remove");
    }
    serde_json::json!({
        "object_mb": 50,
        "runs": runs,
        "put_mb_per_s_median": median(put.clone()),
        "read_mb_per_s_median": median(get.clone()),
        "put_samples": put,
        "read_samples": get,
    })
}

/// A stored-method zip holding one file of `size` random bytes, sized so the
/// whole archive stays within `size_cap`.
fn make_zip(payload: usize, seed: u8) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o755);
    w.start_file("bootstrap", o).expect("zip");
    let mut data = random(payload);
    data[0] = seed;
    w.write_all(&data).expect("zip");
    w.finish().expect("zip").into_inner()
}

fn signed_create(addr: SocketAddr, name: &str, zip: &[u8], creds: (&str, &str)) -> Vec<u8> {
    let body = serde_json::to_vec(&serde_json::json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/bench",
        "Handler": "bootstrap",
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
    }))
    .expect("json");
    let host = addr.to_string();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(&host).expect("host"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let auth = sign_request(
        &SigningRequest {
            method: "POST",
            path: "/2015-03-31/functions",
            query: None,
            body: &body,
            access_key_id: creds.0,
            secret_access_key: creds.1,
            region: "us-east-1",
            service: "lambda",
            now: supervisor::timefmt::now(),
        },
        &mut headers,
    )
    .expect("sign");
    let mut req = format!(
        "POST /2015-03-31/functions HTTP/1.1\r\ncontent-length: {}\r\nauthorization: {auth}\r\n",
        body.len()
    );
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {}\r\n", v.to_str().expect("ascii")));
    }
    req.push_str("connection: close\r\n\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(&body);
    out
}

fn send(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(raw).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn create_bench(rt: &tokio::runtime::Runtime, zip_mb: usize, runs: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::with_data_dir(dir.path());
    cfg.credentials = Some(("AKIABENCH".into(), "bench-secret".into()));
    let (sup, _) = Supervisor::open(cfg).expect("open");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = sup.router(axum::Router::new(), axum::Router::new());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(supervisor::http::serve(listener, router, async {
        let _ = rx.await;
    }));
    // Largest payload that keeps the archive within Lambda's 50 MB limit.
    let payload = zip_mb * MB - 512;
    let mut samples = Vec::new();
    for i in 0..runs {
        let zip = make_zip(payload, i as u8);
        assert!(zip.len() <= zip_mb * MB, "zip {} too big", zip.len());
        let raw = signed_create(
            addr,
            &format!("bench-{zip_mb}-{i}"),
            &zip,
            ("AKIABENCH", "bench-secret"),
        );
        let t = Instant::now();
        let (status, text) = send(addr, &raw);
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 201, "CreateFunction of {zip_mb} MB failed: {text}");
    }
    let _ = tx.send(());
    let _ = rt.block_on(server);
    serde_json::json!({
        "zip_mb": zip_mb,
        "runs": runs,
        "latency_ms_median": median(samples.clone()),
        "samples_ms": samples,
    })
}

fn main() {
    let out = std::env::args().skip_while(|a| a != "--out").nth(1);
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 7 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let report = serde_json::json!({
        "benchmark": "supervisor-control-plane",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cpu": cpu,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
        "aes_256_gcm_envelope": crypto_bench(runs),
        "code_store_with_io": store_bench(if quick { 2 } else { 5 }),
        "create_function_1mb": create_bench(&rt, 1, if quick { 5 } else { 15 }),
        "create_function_50mb": create_bench(&rt, 50, if quick { 2 } else { 5 }),
    });
    let text = serde_json::to_string_pretty(&report).expect("json");
    match out {
        Some(path) => std::fs::write(&path, text + "\n").expect("write --out"),
        None => println!("{text}"),
    }
}
