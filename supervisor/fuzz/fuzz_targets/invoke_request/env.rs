//! The fixture of the `invoke_request` target: a supervisor with the real worker pool
//! over an echoing sandbox backend, two functions, and a request signer.

use std::io::{Cursor, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::Router;
use base64::Engine as _;
use supervisor::auth::{sign_request, SigningRequest};
use supervisor::config::Config;
use supervisor::dataplane::Host;
use supervisor::invoke::{local_code_supply, CodeIndex};
use supervisor::invoke::InvokeService;
use supervisor::Supervisor;
use tower::ServiceExt as _;
use worker::sandbox::{Backend, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeRequest, Worker, WorkerConfig};

pub const AK: &str = "AKIAFUZZINVOKE000000";
pub const SK: &str = "fuzz-invoke-secret";
pub const ACCOUNT: &str = "000000000000";
pub const ECHO: &str = "echo";
pub const FAIL: &str = "fail";

/// Invocations that reached a sandbox.
pub static REACHED: AtomicU64 = AtomicU64::new(0);

/// Answers with the payload (handler `echo`) or a function error (`fail`); streams
/// the payload in two chunks when asked to stream.
struct Echo {
    handler: String,
    logs: Vec<LogLine>,
}

impl Echo {
    fn reply(&mut self, req: &InvokeRequest) -> Reply {
        REACHED.fetch_add(1, Ordering::Relaxed);
        self.logs.push(LogLine {
            request_id: Some(req.request_id.clone()),
            text: format!("{} bytes in", req.payload.len()),
        });
        if self.handler == FAIL {
            return Reply::Error {
                error_type: "Fuzz".into(),
                body: br#"{"errorType":"Fuzz","errorMessage":"asked to fail"}"#.to_vec(),
            };
        }
        Reply::Response(req.payload.clone())
    }
}

impl Sandbox for Echo {
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async { Ok(()) })
    }
    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        _deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move { Ok(self.reply(req)) })
    }
    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        _deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            match self.reply(req) {
                Reply::Response(p) => {
                    let half = p.len() / 2;
                    let _ = chunks.send(p[..half].to_vec()).await;
                    let _ = chunks.send(p[half..].to_vec()).await;
                    Ok(Reply::Streamed)
                }
                other => Ok(other),
            }
        })
    }
    fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        None
    }
    fn oom_killed(&self) -> bool {
        false
    }
    fn destroy(self: Box<Self>, _grace: std::time::Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

struct EchoBackend;

impl Backend for EchoBackend {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn create<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let sb: Box<dyn Sandbox> = Box::new(Echo {
                handler: spec.handler.clone(),
                logs: Vec::new(),
            });
            Ok(sb)
        })
    }
}

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub router: Router,
    _dir: tempfile::TempDir,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::Builder::new()
            .prefix("invoke-fuzz")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("tempdir");
        let router = rt.block_on(async {
            let mut cfg = Config::with_data_dir(&dir.path().join("data"));
            cfg.credentials = Some((AK.into(), SK.into()));
            let (sup, _) = Supervisor::open(cfg).expect("open");
            let worker_cfg = WorkerConfig {
                memory_headroom_mib: 0,
                log_dir: None,
                ..WorkerConfig::default()
            };
            let codes = CodeIndex::new(&sup);
            let run_dir = dir.path().join("run");
            let supply = local_code_supply(&sup, &codes, &run_dir);
            let worker = Worker::with_code(Arc::new(EchoBackend), worker_cfg, Some(supply));
            let plane = Host::from_worker(worker, run_dir);
            let svc = InvokeService::new(sup.clone(), Ok(plane), codes).expect("invoke service");
            let router = sup.router(svc.signed_routes(), svc.public_routes());
            for f in [ECHO, FAIL] {
                create(&router, f).await;
            }
            router
        });
        Env {
            rt,
            router,
            _dir: dir,
        }
    })
}

fn code_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("bootstrap", o).expect("zip entry");
    w.write_all(b"#!/bin/sh\n").expect("zip write");
    w.finish().expect("zip").into_inner()
}

async fn create(router: &Router, name: &str) {
    let body = serde_json::json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": format!("arn:aws:iam::{ACCOUNT}:role/r"),
        "Handler": name,
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(code_zip())},
    });
    let req = signed(
        "POST",
        "/2015-03-31/functions",
        HeaderMap::new(),
        body.to_string().into_bytes(),
        SK,
    );
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), 201, "create {name}");
}

/// Signs with `secret` (the right one or not) over the path, query, headers and body.
pub fn signed(
    method: &str,
    uri: &str,
    mut headers: HeaderMap,
    body: Vec<u8>,
    secret: &str,
) -> Request<Body> {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    headers.insert("host", HeaderValue::from_static("localhost:9000"));
    let auth = sign_request(
        &SigningRequest {
            method,
            path,
            query,
            body: &body,
            access_key_id: AK,
            secret_access_key: secret,
            region: "us-east-1",
            service: "lambda",
            now: supervisor::timefmt::now(),
        },
        &mut headers,
    );
    if let Ok(auth) = auth {
        if let Ok(v) = HeaderValue::from_str(&auth) {
            headers.insert("authorization", v);
        }
    }
    unsigned(method, uri, headers, body)
}

pub fn unsigned(method: &str, uri: &str, headers: HeaderMap, body: Vec<u8>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    req.body(Body::from(body))
        .unwrap_or_else(|_| Request::new(Body::empty()))
}
