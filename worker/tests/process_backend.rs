//! The process backend end to end: guest-init jailed on the host, real runtimes
//! (a shell bootstrap on rootfs-provided, the `lambda_runtime` Rust echo), real limits.

mod common;

use common::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use worker::sandbox::process::{ProcessBackend, ProcessConfig};
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult, Worker, WorkerConfig};

/// A Runtime API client in busybox sh + curl, as in AWS's custom runtime tutorial.
/// `_HANDLER` selects the behaviour.
const SHELL_BOOTSTRAP: &str = r#"#!/bin/sh
set -u
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
echo "shell runtime starting handler=$_HANDLER"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -i Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"
  echo "got event $EVENT"
  case "$_HANDLER" in
    crash) exit 3 ;;
    sleep) sleep 30 ;;
    slow) sleep 1 ;;
    oom) tail -n 1 /dev/zero ;;
    error)
      curl -sS -X POST "$API/invocation/$ID/error" -H "Lambda-Runtime-Function-Error-Type: Unhandled" \
        -d '{"errorMessage":"shell failure","errorType":"ShellError"}' >/dev/null
      continue ;;
  esac
  curl -sS -X POST "$API/invocation/$ID/response" -d "$EVENT" >/dev/null
done
"#;

fn run_root(run: &tempfile::TempDir) -> PathBuf {
    run.path().join("run")
}

struct Env {
    _dirs: Vec<tempfile::TempDir>,
    worker: Worker,
    code: PathBuf,
}

fn prerequisites() -> bool {
    require(is_root(), "process backend tests need root")
        && require(
            images_dir().join("rootfs-provided").is_dir(),
            "target/images/rootfs-provided missing (run image-build/build.sh)",
        )
        && require(guest_init_bin().is_file(), "guest-init binary missing")
}

fn env(cfg: WorkerConfig) -> Env {
    env_in_group(cfg, "worker-test-process")
}

fn env_in_group(cfg: WorkerConfig, group: &str) -> Env {
    let run = open_dir();
    let code = open_dir();
    write_exec(&code.path().join("bootstrap"), SHELL_BOOTSTRAP);
    let mut pcfg = ProcessConfig::from_images_dir(&images_dir(), run_root(&run));
    pcfg.guest_init = guest_init_bin();
    pcfg.cgroup_group = group.into();
    let backend = ProcessBackend::new(pcfg).expect("backend");
    Env {
        code: code.path().to_path_buf(),
        _dirs: vec![run, code],
        worker: Worker::new(Arc::new(backend), cfg),
    }
}

fn spec(name: &str, code: &std::path::Path, handler: &str) -> FunctionVersionSpec {
    FunctionVersionSpec {
        name: name.into(),
        version: "$LATEST".into(),
        code_dir: Some(code.to_path_buf()),
        code_image: None,
        code: None,
        runtime: "provided.al2023".into(),
        handler: handler.into(),
        memory_mib: 128,
        timeout: Duration::from_secs(3),
        env: vec![("GREETING".into(), "hi".into())],
        reserved_concurrency: None,
        revision: String::new(),
        layers: Default::default(),
        image: None,
        snap_start: false,
    }
}

fn req(id: &str, payload: &str) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn error_type(r: &InvokeResult) -> String {
    match r {
        InvokeResult::FunctionError { body, .. } => {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            v["errorType"].as_str().unwrap_or_default().to_string()
        }
        InvokeResult::Success(p) => panic!("expected an error, got {}", String::from_utf8_lossy(p)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_bootstrap_echo_warm_and_logs() {
    if !prerequisites() {
        return;
    }
    let e = env(WorkerConfig::default());
    let s = spec("shell-echo", &e.code, "echo");
    let first = e
        .worker
        .invoke(&s, req("req-1", r#"{"n":1}"#))
        .await
        .expect("invoke");
    assert_eq!(
        first.result,
        InvokeResult::Success(br#"{"n":1}"#.to_vec()),
        "logs: {} body: {:?}",
        first.logs,
        match &first.result {
            InvokeResult::FunctionError { body, .. } => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        }
    );
    assert!(first.report.init_duration.is_some());
    let second = e
        .worker
        .invoke(&s, req("req-2", r#"{"n":2}"#))
        .await
        .expect("invoke");
    assert_eq!(second.result, InvokeResult::Success(br#"{"n":2}"#.to_vec()));
    assert!(second.report.init_duration.is_none(), "warm reuse expected");
    assert!(
        second
            .logs
            .starts_with("START RequestId: req-2 Version: $LATEST\n"),
        "{}",
        second.logs
    );
    assert!(second.logs.contains("END RequestId: req-2\n"));
    assert!(second.logs.contains("REPORT RequestId: req-2\tDuration: "));
    assert!(second.report.max_memory_used_mb > 0);
    assert_eq!(e.worker.cold_starts(), 1);
    e.worker.shutdown_idle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_errors_timeout_crash_and_oom() {
    if !prerequisites() {
        return;
    }
    let e = env(WorkerConfig::default());
    let handled = e
        .worker
        .invoke(&spec("sh-error", &e.code, "error"), req("e1", "{}"))
        .await
        .unwrap();
    assert_eq!(error_type(&handled.result), "ShellError");

    let mut slow = spec("sh-sleep", &e.code, "sleep");
    slow.timeout = Duration::from_secs(1);
    let t = e.worker.invoke(&slow, req("t1", "{}")).await.unwrap();
    assert_eq!(error_type(&t.result), "Sandbox.Timedout");
    assert!(t.logs.contains("Task timed out after 1.00 seconds"));

    let crash = e
        .worker
        .invoke(&spec("sh-crash", &e.code, "crash"), req("c1", "{}"))
        .await
        .unwrap();
    assert_eq!(
        error_type(&crash.result),
        "Runtime.ExitError",
        "{}",
        crash.logs
    );

    let oom = e
        .worker
        .invoke(&spec("sh-oom", &e.code, "oom"), req("o1", "{}"))
        .await
        .unwrap();
    assert_eq!(
        error_type(&oom.result),
        "Runtime.OutOfMemory",
        "{}",
        oom.logs
    );

    // After a crash the next invoke of that function gets a fresh sandbox.
    let again = e
        .worker
        .invoke(&spec("sh-crash", &e.code, "echo"), req("c2", "{}"))
        .await
        .unwrap();
    assert!(again.report.init_duration.is_some());
    e.worker.shutdown_idle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_lambda_runtime_echo() {
    if !prerequisites() {
        return;
    }
    let Some(bin) = fn_rust_bin() else {
        require(false, "fn-rust musl binary missing (cargo build -p fn-rust --target x86_64-unknown-linux-musl)");
        return;
    };
    let e = env(WorkerConfig::default());
    let code = open_dir();
    std::fs::copy(&bin, code.path().join("bootstrap")).unwrap();
    write_exec(&code.path().join("bootstrap"), "");
    std::fs::copy(&bin, code.path().join("bootstrap")).unwrap();
    let s = spec("rust-echo", code.path(), "echo");
    for i in 0..3 {
        let payload = format!(r#"{{"i":{i}}}"#);
        let o = e
            .worker
            .invoke(&s, req(&format!("r{i}"), &payload))
            .await
            .unwrap();
        assert_eq!(
            o.result,
            InvokeResult::Success(payload.into_bytes()),
            "{}",
            o.logs
        );
    }
    assert_eq!(e.worker.cold_starts(), 1);
    e.worker.shutdown_idle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_with_real_sandboxes() {
    if !prerequisites() {
        return;
    }
    let e = env(WorkerConfig::default());
    let mut s = spec("sh-reserved", &e.code, "slow");
    s.reserved_concurrency = Some(5);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (w, s) = (e.worker.clone(), s.clone());
            tokio::spawn(async move { w.invoke(&s, req(&format!("rc{i}"), "{}")).await })
        })
        .collect();
    let (mut ok, mut throttled) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(o) => {
                assert!(matches!(o.result, InvokeResult::Success(_)), "{}", o.logs);
                ok += 1;
            }
            Err(worker::WorkerError::Throttled(r)) => {
                assert_eq!(
                    r.as_str(),
                    "ReservedFunctionConcurrentInvocationLimitExceeded"
                );
                throttled += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, throttled), (5, 15));
    e.worker.shutdown_idle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaping_removes_processes_cgroups_and_run_dirs() {
    if !prerequisites() {
        return;
    }
    let group = "worker-test-reap";
    let e = env_in_group(
        WorkerConfig {
            idle_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        group,
    );
    let s = spec("sh-reap", &e.code, "echo");
    e.worker.invoke(&s, req("a", "{}")).await.unwrap();
    let run = run_root(&e._dirs[0]);
    let entries = || std::fs::read_dir(&run).map(|d| d.count()).unwrap_or(0);
    assert!(
        entries() >= 2,
        "run dir and socket dir expected while alive"
    );
    let cg = worker::jail::CgroupHost::detect(group).unwrap();
    assert_eq!(cg.sandbox_names().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.worker.reap(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while entries() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries(), 0, "sandbox files left behind");
    assert!(cg.sandbox_names().is_empty(), "{:?}", cg.sandbox_names());
    let metrics = e.worker.metrics();
    assert!(
        metrics.contains("worker_sandboxes{state=\"idle\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("worker_sandboxes_reaped_total{reason=\"idle\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_awslambdaric_echo() {
    if !prerequisites()
        || !require(
            images_dir().join("rootfs-python3.11").is_dir(),
            "target/images/rootfs-python3.11 missing (run image-build/build.sh)",
        )
    {
        return;
    }
    let e = env(WorkerConfig::default());
    let code = open_dir();
    std::fs::write(
        code.path().join("lambda_function.py"),
        "import os\n\ndef handler(event, context):\n    print('python got', event)\n    \
         return {'echo': event, 'fn': context.function_name, 'greeting': os.environ.get('GREETING')}\n",
    )
    .unwrap();
    let mut s = spec("py-echo", code.path(), "lambda_function.handler");
    s.runtime = "python3.11".into();
    s.timeout = Duration::from_secs(20);
    let first = e
        .worker
        .invoke(&s, req("py-1", r#"{"k":1}"#))
        .await
        .unwrap();
    let body = match &first.result {
        InvokeResult::Success(p) => serde_json::from_slice::<serde_json::Value>(p).unwrap(),
        other => panic!("{other:?}\n{}", first.logs),
    };
    assert_eq!(body["echo"]["k"], 1);
    assert_eq!(body["fn"], "py-echo");
    assert_eq!(body["greeting"], "hi");
    let second = e
        .worker
        .invoke(&s, req("py-2", r#"{"k":2}"#))
        .await
        .unwrap();
    assert!(second.report.init_duration.is_none());
    assert!(
        second.logs.contains("python got {'k': 2}"),
        "{}",
        second.logs
    );
    e.worker.shutdown_idle();
}

#[test]
fn stale_sandboxes_of_a_dead_worker_are_cleaned_up() {
    if !prerequisites() {
        return;
    }
    let group = "worker-test-stale";
    let cg = worker::jail::CgroupHost::detect(group).unwrap();
    let limits = worker::jail::CgroupLimits {
        memory_bytes: 64 << 20,
        pids_max: 8,
        cpu_millicores: None,
    };
    // A cgroup and run dir named after a pid that cannot exist, as a crashed worker leaves.
    std::mem::forget(cg.create("sb-4000000000-7", &limits).unwrap());
    let run = open_dir();
    std::fs::create_dir_all(run.path().join("run/sb-4000000000-7.sock")).unwrap();
    assert!(cg.sandbox_names().contains(&"sb-4000000000-7".to_string()));
    let mut pcfg = ProcessConfig::from_images_dir(&images_dir(), run.path().join("run"));
    pcfg.guest_init = guest_init_bin();
    pcfg.cgroup_group = group.into();
    let _backend = ProcessBackend::new(pcfg).unwrap();
    assert!(!cg.sandbox_names().contains(&"sb-4000000000-7".to_string()));
    assert!(!run.path().join("run/sb-4000000000-7.sock").exists());
}
