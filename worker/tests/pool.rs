//! Worker manager logic against a fake sandbox backend.

mod fake_backend;

use fake_backend::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use worker::{ThrottleReason, WorkerConfig, WorkerError};

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
    let mut s = spec("f");
    s.memory_mib = 640;
    w.invoke(&s, req("a", "x")).await.unwrap();
    assert_eq!(w.reap(), 0);
    let pools = w.pools();
    assert_eq!(pools.len(), 1);
    assert_eq!(
        (pools[0].idle, pools[0].busy, pools[0].memory_mib),
        (1, 0, 640)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(w.reap(), 1);
    settle().await;
    assert_eq!(w.idle_count(&s.key()), 0);
    assert!(w.pools().is_empty());
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
    let path = dir.path().join("f").join("$LATEST.log");
    let text = read_log_until(&path, "REPORT RequestId: r1\t").await;
    assert!(text.contains("START RequestId: r1 Version: $LATEST\n"));
    assert!(text.contains("REPORT RequestId: r1\t"));
}
