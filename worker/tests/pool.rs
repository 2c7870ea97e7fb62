//! Worker manager logic against a fake sandbox backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::sandbox::{Backend, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use worker::{
    FunctionVersionSpec, InvokeRequest, InvokeResult, ThrottleReason, Worker, WorkerConfig,
    WorkerError,
};

#[derive(Default)]
struct Counters {
    created: AtomicU32,
    destroyed: AtomicU32,
}

/// Behaviour is driven by the payload: `sleep:<ms>`, `crash`, `oom`, `error`, else echo.
/// The response names the sandbox, so tests can see which one served.
struct FakeSandbox {
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
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
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

struct FakeBackend {
    counters: Arc<Counters>,
    init_behaviour: Mutex<String>,
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
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

fn setup(cfg: WorkerConfig) -> (Worker, Arc<Counters>, Arc<FakeBackend>) {
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(FakeBackend {
        counters: counters.clone(),
        init_behaviour: Mutex::new(String::new()),
    });
    (Worker::new(backend.clone(), cfg), counters, backend)
}

fn spec(name: &str) -> FunctionVersionSpec {
    FunctionVersionSpec {
        name: name.into(),
        version: "$LATEST".into(),
        code_dir: None,
        code_image: None,
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        memory_mib: 128,
        timeout: Duration::from_secs(1),
        env: vec![],
        reserved_concurrency: None,
        revision: String::new(),
    }
}

fn req(id: &str, payload: &str) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn success(r: &InvokeResult) -> String {
    match r {
        InvokeResult::Success(p) => String::from_utf8_lossy(p).into_owned(),
        other => panic!("expected success, got {other:?}"),
    }
}

fn error_json(r: &InvokeResult) -> serde_json::Value {
    match r {
        InvokeResult::FunctionError { body, .. } => serde_json::from_slice(body).unwrap(),
        other => panic!("expected function error, got {other:?}"),
    }
}

/// Lets background destroy tasks run.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn warm_reuse_has_no_init_duration() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let first = w.invoke(&spec("f"), req("r1", "x")).await.unwrap();
    let second = w.invoke(&spec("f"), req("r2", "x")).await.unwrap();
    assert_eq!(success(&first.result), success(&second.result));
    assert_eq!(counters.created.load(Ordering::SeqCst), 1);
    assert!(first.report.init_duration.is_some());
    assert!(second.report.init_duration.is_none());
    assert!(first.logs.contains("Init Duration: "));
    assert!(!second.logs.contains("Init Duration"));
    let lines: Vec<&str> = second.logs.lines().collect();
    assert_eq!(lines[0], "START RequestId: r2 Version: $LATEST");
    assert_eq!(lines[1], "handling x");
    assert_eq!(lines[2], "END RequestId: r2");
    assert!(lines[3].starts_with("REPORT RequestId: r2\tDuration: "));
    assert!(lines[3].contains("Memory Size: 128 MB\tMax Memory Used: 20 MB\t"));
    assert_eq!(w.cold_starts(), 1);
}

#[tokio::test]
async fn most_recently_used_sandbox_is_picked() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let s = spec("f");
    let (a, b, c) = tokio::join!(
        w.invoke(&s, req("a", "sleep:100")),
        w.invoke(&s, req("b", "sleep:200")),
        w.invoke(&s, req("c", "sleep:300")),
    );
    assert_eq!(counters.created.load(Ordering::SeqCst), 3);
    // "c" finished last, so its sandbox is the most recently used.
    let last = success(&c.unwrap().result);
    let _ = (a.unwrap(), b.unwrap());
    for i in 0..5 {
        let o = w.invoke(&s, req(&format!("n{i}"), "x")).await.unwrap();
        assert_eq!(success(&o.result), last);
    }
    assert_eq!(w.idle_count(&s.key()), 3);
}

#[tokio::test]
async fn timeout_destroys_the_sandbox() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let s = spec("f");
    let o = w.invoke(&s, req("slow", "sleep:3000")).await.unwrap();
    let body = error_json(&o.result);
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert_eq!(
        body["errorMessage"],
        "RequestId: slow Error: Task timed out after 1.00 seconds"
    );
    assert!(o.logs.contains("slow Task timed out after 1.00 seconds\n"));
    assert!(o.logs.contains("Status: timeout"));
    settle().await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    let next = w.invoke(&s, req("next", "x")).await.unwrap();
    assert!(
        next.report.init_duration.is_some(),
        "fresh sandbox expected"
    );
}

#[tokio::test]
async fn crash_and_oom_map_to_lambda_errors() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let s = spec("f");
    let crash = w.invoke(&s, req("c1", "crash")).await.unwrap();
    let body = error_json(&crash.result);
    assert_eq!(body["errorType"], "Runtime.ExitError");
    assert_eq!(
        body["errorMessage"],
        "RequestId: c1 Error: Runtime exited with error: exit status 3"
    );
    let oom = w.invoke(&s, req("o1", "oom")).await.unwrap();
    let body = error_json(&oom.result);
    assert_eq!(body["errorType"], "Runtime.OutOfMemory");
    assert_eq!(
        body["errorMessage"],
        "RequestId: o1 Error: Runtime exited with error: signal: killed"
    );
    let handled = w.invoke(&s, req("e1", "error")).await.unwrap();
    assert_eq!(error_json(&handled.result)["errorType"], "Handled");
    settle().await;
    // crash and oom each destroyed a sandbox; the handled error kept its sandbox.
    assert_eq!(counters.created.load(Ordering::SeqCst), 3);
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 2);
    assert_eq!(w.idle_count(&s.key()), 1);
    let m = w.metrics();
    assert!(
        m.contains("worker_errors_total{type=\"Runtime.OutOfMemory\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("worker_errors_total{type=\"Runtime.ExitError\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn reserved_concurrency_throttles_the_excess() {
    let (w, _, _) = setup(WorkerConfig::default());
    let mut s = spec("limited");
    s.reserved_concurrency = Some(5);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let w = w.clone();
            let s = s.clone();
            tokio::spawn(async move { w.invoke(&s, req(&format!("r{i}"), "sleep:200")).await })
        })
        .collect();
    let mut ok = 0;
    let mut throttled = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(o) => {
                success(&o.result);
                ok += 1;
            }
            Err(WorkerError::Throttled(
                ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            )) => throttled += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(throttled, 15);
    assert!(w.metrics().contains(
        "worker_throttles_total{reason=\"ReservedFunctionConcurrentInvocationLimitExceeded\"} 15"
    ));
}

#[tokio::test]
async fn host_limit_throttles_unreserved_functions() {
    let (w, _, _) = setup(WorkerConfig {
        host_concurrency: 2,
        ..Default::default()
    });
    let s = spec("f");
    let (a, b, c) = tokio::join!(
        w.invoke(&s, req("a", "sleep:200")),
        w.invoke(&s, req("b", "sleep:200")),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            w.invoke(&spec("g"), req("c", "x")).await
        }
    );
    assert!(a.is_ok() && b.is_ok());
    assert!(matches!(
        c,
        Err(WorkerError::Throttled(
            ThrottleReason::ConcurrentInvocationLimitExceeded
        ))
    ));
}

#[tokio::test]
async fn idle_sandboxes_are_reaped() {
    let (w, counters, _) = setup(WorkerConfig {
        idle_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let s = spec("f");
    w.invoke(&s, req("a", "x")).await.unwrap();
    assert_eq!(w.reap(), 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(w.reap(), 1);
    settle().await;
    assert_eq!(w.idle_count(&s.key()), 0);
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert!(w
        .metrics()
        .contains("worker_sandboxes_reaped_total{reason=\"idle\"} 1"));
}

#[tokio::test]
async fn background_reaper_runs() {
    let (w, counters, _) = setup(WorkerConfig {
        idle_timeout: Duration::from_millis(50),
        reap_interval: Duration::from_millis(20),
        ..Default::default()
    });
    let _reaper = w.spawn_reaper();
    w.invoke(&spec("f"), req("a", "x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expired_lease_forces_a_new_sandbox() {
    let (w, counters, _) = setup(WorkerConfig {
        lease: Duration::from_millis(100),
        ..Default::default()
    });
    let s = spec("f");
    let first = w.invoke(&s, req("a", "x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = w.invoke(&s, req("b", "x")).await.unwrap();
    assert_ne!(success(&first.result), success(&second.result));
    settle().await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert!(w
        .metrics()
        .contains("worker_sandboxes_reaped_total{reason=\"lease\"} 1"));
}

#[tokio::test]
async fn sandboxes_are_never_shared_between_functions_or_versions() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let a = w.invoke(&spec("a"), req("1", "x")).await.unwrap();
    let b = w.invoke(&spec("b"), req("2", "x")).await.unwrap();
    let mut v1 = spec("a");
    v1.version = "1".into();
    let a1 = w.invoke(&v1, req("3", "x")).await.unwrap();
    assert!(success(&a.result).starts_with("a:$LATEST|"));
    assert!(success(&b.result).starts_with("b:$LATEST|"));
    assert!(success(&a1.result).starts_with("a:1|"));
    assert_eq!(a1.executed_version, "1");
    assert_eq!(counters.created.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failed_init_is_tried_again_inside_the_invoke_as_on_lambda() {
    let (w, counters, backend) = setup(WorkerConfig {
        init_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    // Both the Init phase and the suppressed init fail: the init error, one INIT_REPORT
    // per phase (the invoke phase's after START), two sandboxes gone.
    *backend.init_behaviour.lock().unwrap() = "fail".into();
    let o = w.invoke(&spec("f"), req("r", "x")).await.unwrap();
    assert_eq!(
        error_json(&o.result)["errorType"],
        "Runtime.HandlerNotFound"
    );
    assert!(
        o.logs.starts_with("init line\nINIT_REPORT Init Duration: "),
        "{}",
        o.logs
    );
    let init = o
        .logs
        .find("Phase: init\tStatus: error\tError Type: Runtime.HandlerNotFound");
    let start = o.logs.find("START RequestId: r ");
    let invoke = o
        .logs
        .find("Phase: invoke\tStatus: error\tError Type: Runtime.HandlerNotFound");
    assert!(
        init < start && start < invoke && init.is_some(),
        "{}",
        o.logs
    );
    assert!(
        o.logs
            .contains("Status: error\tError Type: Runtime.HandlerNotFound\t\n"),
        "{}",
        o.logs
    );
    assert!(o.report.init_duration.is_none());
    // Both time out: Sandbox.Timedout with the function's own timeout.
    *backend.init_behaviour.lock().unwrap() = "hang".into();
    let mut s = spec("f");
    s.timeout = Duration::from_millis(300);
    let o = w.invoke(&s, req("r2", "x")).await.unwrap();
    let e = error_json(&o.result);
    assert_eq!(e["errorType"], "Sandbox.Timedout");
    assert_eq!(
        e["errorMessage"],
        "RequestId: r2 Error: Task timed out after 0.30 seconds"
    );
    assert!(
        o.logs.contains("Phase: init\tStatus: timeout"),
        "{}",
        o.logs
    );
    assert!(
        o.logs.contains("Phase: invoke\tStatus: timeout"),
        "{}",
        o.logs
    );
    settle().await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 4);
    assert_eq!(w.idle_count(&spec("f").key()), 0);
    // The Init phase fails, the suppressed init works: the invoke runs (its Duration
    // includes that init; no Init Duration) and the sandbox stays warm.
    *backend.init_behaviour.lock().unwrap() = "fail-once".into();
    let o = w.invoke(&spec("f"), req("r3", "x")).await.unwrap();
    assert!(success(&o.result).starts_with("f:$LATEST|"));
    assert!(o.logs.contains("Phase: init\tStatus: error") && !o.logs.contains("Phase: invoke"));
    assert!(o.report.init_duration.is_none());
    assert_eq!(w.idle_count(&spec("f").key()), 1);
}

#[tokio::test]
async fn prewarmed_sandbox_serves_the_first_invoke() {
    let (w, _, _) = setup(WorkerConfig::default());
    assert_eq!(w.prewarm(&spec("f"), 2).await.unwrap(), 2);
    let o = w.invoke(&spec("f"), req("r", "x")).await.unwrap();
    assert!(o.report.init_duration.is_none());
    assert!(w.metrics().contains("worker_sandboxes{state=\"idle\"} 2"));
}

#[tokio::test]
async fn invalid_spec_is_rejected() {
    let (w, _, _) = setup(WorkerConfig::default());
    let mut s = spec("f");
    s.memory_mib = 1;
    assert!(matches!(
        w.invoke(&s, req("r", "x")).await,
        Err(WorkerError::InvalidSpec(_))
    ));
}

#[tokio::test]
async fn logs_go_to_rotated_function_files() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _, _) = setup(WorkerConfig {
        log_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    w.invoke(&spec("f"), req("r1", "x")).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("f").join("$LATEST.log")).unwrap();
    assert!(text.contains("START RequestId: r1 Version: $LATEST\n"));
    assert!(text.contains("REPORT RequestId: r1\t"));
}

fn revised(name: &str, revision: &str) -> FunctionVersionSpec {
    let mut s = spec(name);
    s.revision = revision.into();
    s
}

#[tokio::test]
async fn retiring_a_revision_keeps_other_functions_warm() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let a = revised("a", "r1");
    let b = revised("b", "r1");
    let mut b_v1 = revised("b", "r1");
    b_v1.version = "1".into();
    let first_a = w.invoke(&a, req("1", "x")).await.unwrap();
    let first_b = w.invoke(&b, req("2", "x")).await.unwrap();
    let first_b_v1 = w.invoke(&b_v1, req("3", "x")).await.unwrap();

    assert_eq!(w.retire_stale("b", "$LATEST", "r2"), 1);
    settle().await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert_eq!(w.idle_count(&a.key()), 1);
    assert_eq!(w.idle_count(&b.key()), 0);

    let warm_a = w.invoke(&a, req("4", "x")).await.unwrap();
    assert!(warm_a.report.init_duration.is_none(), "a stays warm");
    assert_eq!(success(&warm_a.result), success(&first_a.result));
    let warm_b_v1 = w.invoke(&b_v1, req("5", "x")).await.unwrap();
    assert!(warm_b_v1.report.init_duration.is_none(), "b:1 stays warm");
    assert_eq!(success(&warm_b_v1.result), success(&first_b_v1.result));
    let new_b = w.invoke(&revised("b", "r2"), req("6", "x")).await.unwrap();
    assert!(
        new_b.report.init_duration.is_some(),
        "b:$LATEST starts cold"
    );
    assert_ne!(success(&new_b.result), success(&first_b.result));
    assert!(w
        .metrics()
        .contains("worker_sandboxes_reaped_total{reason=\"stale\"} 1"));
}

#[tokio::test]
async fn busy_sandbox_of_a_replaced_revision_is_never_reused() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let old = revised("f", "r1");
    let busy = {
        let (w, old) = (w.clone(), old.clone());
        tokio::spawn(async move { w.invoke(&old, req("slow", "sleep:200")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(w.retire_stale("f", "$LATEST", "r2"), 0, "nothing idle yet");
    let old_sandbox = success(&busy.await.unwrap().unwrap().result);
    // Released after the new revision was announced: parked under its own key only.
    assert_eq!(w.idle_count(&old.key()), 1);
    let new = revised("f", "r2");
    let first_new = w.invoke(&new, req("n1", "x")).await.unwrap();
    assert!(first_new.report.init_duration.is_some());
    assert_ne!(success(&first_new.result), old_sandbox);
    assert_eq!(w.reap(), 1, "the reaper stops the stale sandbox");
    settle().await;
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert_eq!(w.idle_count(&old.key()), 0);
    assert_eq!(w.idle_count(&new.key()), 1);
}

#[tokio::test]
async fn a_host_out_of_memory_throttles_the_cold_start() {
    let (tight, counters, _) = setup(WorkerConfig {
        memory_headroom_mib: 1 << 40,
        ..Default::default()
    });
    match tight.invoke(&spec("f"), req("r", "x")).await {
        Err(WorkerError::Throttled(ThrottleReason::ConcurrentInvocationLimitExceeded)) => {}
        other => panic!("expected a throttle, got {other:?}"),
    }
    assert!(
        tight.metrics().contains("host_memory"),
        "{}",
        tight.metrics()
    );
    assert_eq!(
        counters.created.load(Ordering::SeqCst),
        0,
        "no sandbox was started"
    );
}
