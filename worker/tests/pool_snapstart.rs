//! SnapStart in the worker manager, against the fake backend: what REPORT and the log
//! say for resumed sandboxes, and a failed restore answered as Lambda's SnapStart errors.

mod fake_backend;

use fake_backend::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use worker::{SnapStartFailure, WorkerConfig, WorkerError};

#[tokio::test]
async fn the_cold_start_that_took_the_snapshot_logs_its_init_report() {
    let (w, _, backend) = setup(WorkerConfig::default());
    *backend.init_behaviour.lock().unwrap() = "restore-took".into();
    let o = w.invoke(&spec("f"), req("r1", "x")).await.unwrap();
    assert!(
        o.logs
            .starts_with("snapshot init line\nINIT_REPORT Init Duration: 1500.00 ms\t\n"),
        "{}",
        o.logs
    );
    let report = o.logs.lines().last().unwrap();
    assert!(report.contains("\tRestore Duration: "), "{report}");
    assert!(
        report.contains("\tBilled Restore Duration: 7 ms"),
        "{report}"
    );
    assert!(!report.contains("\tInit Duration"), "{report}");
    // Later cold starts resumed from the same snapshot have no INIT_REPORT.
    assert_eq!(*backend.init_behaviour.lock().unwrap(), "restored");
    let mut s = spec("f");
    s.version = "2".into();
    let o = w.invoke(&s, req("r2", "x")).await.unwrap();
    assert!(!o.logs.contains("INIT_REPORT"), "{}", o.logs);
    assert!(o.logs.contains("\tRestore Duration: "), "{}", o.logs);
}

#[tokio::test]
async fn a_failed_after_restore_hook_is_a_snapstart_exception_without_a_second_init() {
    let (w, counters, backend) = setup(WorkerConfig::default());
    *backend.init_behaviour.lock().unwrap() = "restore-fail".into();
    match w.invoke(&spec("f"), req("r", "x")).await {
        Err(WorkerError::SnapStart(SnapStartFailure::Hook {
            error_type,
            message,
        })) => {
            assert_eq!(error_type, "Runtime.AfterRestoreError");
            assert_eq!(message, "hook broke");
        }
        other => panic!("expected a SnapStart hook failure, got {other:?}"),
    }
    settle().await;
    // One sandbox, gone: no suppressed init follows a failed restore.
    assert_eq!(counters.created.load(Ordering::SeqCst), 1);
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert!(
        !WorkerError::SnapStart(SnapStartFailure::Timeout(Duration::ZERO))
            .to_string()
            .is_empty()
    );
}

#[tokio::test]
async fn a_restore_past_the_init_timeout_is_a_snapstart_timeout() {
    let (w, counters, backend) = setup(WorkerConfig {
        init_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    *backend.init_behaviour.lock().unwrap() = "restore-hang".into();
    let e = w.invoke(&spec("f"), req("r", "x")).await.unwrap_err();
    assert!(
        matches!(&e, WorkerError::SnapStart(SnapStartFailure::Timeout(d)) if *d == Duration::from_millis(200)),
        "{e:?}"
    );
    assert!(
        e.is_transient(),
        "a timeout may pass; a failed hook does not"
    );
    assert_eq!(counters.created.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_snapshot_init_is_logged_even_when_the_restore_after_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _, backend) = setup(WorkerConfig {
        log_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    *backend.init_behaviour.lock().unwrap() = "restore-took-fail".into();
    let e = w.invoke(&spec("f"), req("r", "x")).await.unwrap_err();
    assert!(matches!(e, WorkerError::SnapStart(_)), "{e:?}");
    let path = dir.path().join("f").join("$LATEST.log");
    let text = read_log_until(&path, "INIT_REPORT").await;
    assert_eq!(
        text,
        "snapshot init line\nINIT_REPORT Init Duration: 1500.00 ms\t\n"
    );
}
