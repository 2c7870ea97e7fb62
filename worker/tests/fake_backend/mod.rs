//! A fake sandbox backend for the worker manager's tests: behaviour is driven by the
//! payload, and every response names the sandbox that served it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::sandbox::{Backend, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult, Worker, WorkerConfig};

#[derive(Default)]
pub struct Counters {
    pub created: AtomicU32,
    pub destroyed: AtomicU32,
}

/// Behaviour is driven by the payload: `sleep:<ms>`, `crash`, `oom`, `error`, else echo.
/// The response names the sandbox, so tests can see which one served. Init behaviours
/// starting with `restore` act as a sandbox resumed from a SnapStart snapshot:
/// `restore-fail` (its after-restore hook fails), `restore-hang`, `restore-took` (its
/// start also took the snapshot, after an Init that printed a line), `restore-took-fail`
/// (both), else restored.
pub struct FakeSandbox {
    id: String,
    function: String,
    logs: Vec<LogLine>,
    oom: bool,
    counters: Arc<Counters>,
    init_behaviour: String,
}

impl Sandbox for FakeSandbox {
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            self.logs.push(LogLine {
                request_id: None,
                text: "init line".into(),
            });
            match self.init_behaviour.as_str() {
                "fail" => Err(SandboxError::Init {
                    error_type: "Runtime.HandlerNotFound".into(),
                    body: br#"{"errorType":"Runtime.HandlerNotFound"}"#.to_vec(),
                }),
                "hang" | "restore-hang" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
                "restore-fail" => Err(SandboxError::Restore {
                    error_type: "Runtime.AfterRestoreError".into(),
                    body: br#"{"errorType":"RuntimeError","errorMessage":"hook broke"}"#.to_vec(),
                }),
                _ => Ok(()),
            }
        })
    }

    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        _deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            let payload = String::from_utf8_lossy(&req.payload).to_string();
            self.logs.push(LogLine {
                request_id: Some(req.request_id.clone()),
                text: format!("handling {payload}"),
            });
            if let Some(ms) = payload.strip_prefix("sleep:") {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match payload.as_str() {
                "crash" => Err(SandboxError::Exited {
                    error_type: "Runtime.ExitError".into(),
                    message: "Runtime exited with error: exit status 3".into(),
                }),
                "oom" => {
                    self.oom = true;
                    Err(SandboxError::Exited {
                        error_type: "Runtime.ExitError".into(),
                        message: "Runtime exited with error: signal: killed".into(),
                    })
                }
                "error" => Ok(Reply::Error {
                    error_type: "Handled".into(),
                    body: br#"{"errorType":"Handled","errorMessage":"boom"}"#.to_vec(),
                }),
                _ => Ok(Reply::Response(
                    format!("{}|{}", self.function, self.id).into_bytes(),
                )),
            }
        })
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }

    fn is_restored(&self) -> bool {
        self.init_behaviour.starts_with("restore")
    }

    fn resume_took(&self) -> Option<Duration> {
        self.is_restored().then_some(Duration::from_millis(7))
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        Some(20 << 20)
    }

    fn oom_killed(&self) -> bool {
        self.oom
    }

    fn destroy(self: Box<Self>, _grace: Duration) -> BoxFuture<'static, ()> {
        self.counters.destroyed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

pub struct FakeBackend {
    pub counters: Arc<Counters>,
    pub init_behaviour: Mutex<String>,
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    /// `restore-took[-fail]`: the snapshot is taken now (an Init that printed a line),
    /// then the sandbox restores from it (and its hook fails).
    fn prepare<'a>(
        &'a self,
        _spec: &'a FunctionVersionSpec,
    ) -> BoxFuture<'a, Option<worker::sandbox::SnapshotInit>> {
        Box::pin(async move {
            let mut b = self.init_behaviour.lock().unwrap();
            let then_fail = b.strip_prefix("restore-took")? == "-fail";
            *b = if then_fail {
                "restore-fail"
            } else {
                "restored"
            }
            .into();
            Some(worker::sandbox::SnapshotInit {
                took: Duration::from_millis(1500),
                logs: vec![LogLine {
                    request_id: None,
                    text: "snapshot init line".into(),
                }],
            })
        })
    }

    fn create<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            self.counters.created.fetch_add(1, Ordering::SeqCst);
            let init_behaviour = {
                let mut b = self.init_behaviour.lock().unwrap();
                if b.as_str() == "fail-once" {
                    b.clear();
                    "fail".to_string()
                } else {
                    b.clone()
                }
            };
            let sb: Box<dyn Sandbox> = Box::new(FakeSandbox {
                id: id.to_string(),
                function: format!("{}:{}", spec.name, spec.version),
                logs: Vec::new(),
                oom: false,
                counters: self.counters.clone(),
                init_behaviour,
            });
            Ok(sb)
        })
    }
}

pub fn setup(cfg: WorkerConfig) -> (Worker, Arc<Counters>, Arc<FakeBackend>) {
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(FakeBackend {
        counters: counters.clone(),
        init_behaviour: Mutex::new(String::new()),
    });
    (Worker::new(backend.clone(), cfg), counters, backend)
}

pub fn spec(name: &str) -> FunctionVersionSpec {
    FunctionVersionSpec {
        name: name.into(),
        version: "$LATEST".into(),
        code_dir: None,
        code_image: None,
        code: None,
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        memory_mib: 128,
        timeout: Duration::from_secs(1),
        env: vec![],
        reserved_concurrency: None,
        revision: String::new(),
        layers: Default::default(),
        image: None,
        snap_start: false,
    }
}

pub fn req(id: &str, payload: &str) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn success(r: &InvokeResult) -> String {
    match r {
        InvokeResult::Success(p) => String::from_utf8_lossy(p).into_owned(),
        other => panic!("expected success, got {other:?}"),
    }
}

pub fn error_json(r: &InvokeResult) -> serde_json::Value {
    match r {
        InvokeResult::FunctionError { body, .. } => serde_json::from_slice(body).unwrap(),
        other => panic!("expected function error, got {other:?}"),
    }
}

/// The log file at `path` once it holds `needle` (lines are written by the log flusher
/// within its interval), or as it is after 20 intervals.
pub async fn read_log_until(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + 20 * worker::logfile::FLUSH_INTERVAL;
    let mut text = String::new();
    while !text.contains(needle) && std::time::Instant::now() < deadline {
        tokio::time::sleep(worker::logfile::FLUSH_INTERVAL / 4).await;
        text = std::fs::read_to_string(path).unwrap_or_default();
    }
    text
}

/// Lets background destroy tasks run.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

pub fn revised(name: &str, revision: &str) -> FunctionVersionSpec {
    let mut s = spec(name);
    s.revision = revision.into();
    s
}
