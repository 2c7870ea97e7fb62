//! Revisions, deletion and host memory in the worker manager (fake backend).

mod fake_backend;

use fake_backend::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use worker::{ThrottleReason, WorkerConfig, WorkerError};

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

#[tokio::test]
async fn a_sandbox_busy_when_its_function_is_deleted_is_destroyed_afterwards() {
    let (w, counters, _) = setup(WorkerConfig::default());
    let f = spec("doomed");
    let other = spec("kept");
    w.invoke(&other, req("k", "x")).await.unwrap();
    let busy = {
        let (w, f) = (w.clone(), f.clone());
        tokio::spawn(async move { w.invoke(&f, req("slow", "sleep:200")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.forget("doomed", None);
    let done = busy.await.unwrap().unwrap();
    assert!(
        success(&done.result).starts_with("doomed:"),
        "the invoke itself finishes"
    );
    settle().await;
    assert_eq!(w.idle_count(&f.key()), 0, "not parked for reuse");
    assert_eq!(counters.destroyed.load(Ordering::SeqCst), 1);
    assert_eq!(w.idle_count(&other.key()), 1, "other functions stay warm");
    // A function created again under the name starts fresh and stays warm.
    let again = w.invoke(&f, req("new", "x")).await.unwrap();
    assert!(again.report.init_duration.is_some());
    assert_eq!(w.idle_count(&f.key()), 1);
}
