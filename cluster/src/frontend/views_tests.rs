use super::*;
use crate::link::status::{CodeCacheStatus, PoolStatus, WorkerStatus};

fn status(incarnation: &str, pools: Vec<PoolStatus>) -> WorkerStatus {
    WorkerStatus {
        id: "w1".into(),
        incarnation: incarnation.into(),
        lease_remaining_ms: 60_000,
        draining: false,
        capacity_mib: 4096,
        cpus: 2,
        in_flight: 0,
        pools,
        code_cache: CodeCacheStatus::default(),
    }
}

fn pool(function: &str, idle: u32, busy: u32, idle_for_ms: Option<u64>) -> PoolStatus {
    PoolStatus {
        function: function.into(),
        version: "$LATEST".into(),
        revision: "r".into(),
        idle,
        busy,
        idle_for_ms,
        memory_mib: 0,
    }
}

#[test]
fn a_workers_own_memory_figures_win_over_what_this_frontend_remembers() {
    let mut views = Views::new(1);
    // A restarted frontend remembers nothing; the worker says what its sandboxes hold.
    let sized = |function, mib| PoolStatus {
        memory_mib: mib,
        ..pool(function, 1, 1, Some(10))
    };
    let mut w = views.at(0).expect("worker 0");
    let remembered = HashMap::from([(version_key("f", "$LATEST", "r"), 256)]);
    w.update(
        status(
            "a",
            vec![sized("f", 1024), sized("g", 2048), sized("h", 1 << 30)],
        ),
        &remembered,
        1000,
    );
    assert_eq!(w.load.used_mib, 2 * 1024 + 2 * 2048 + 2 * 10_240);
}

#[test]
fn a_status_rebuilds_the_load_and_local_dispatches_adjust_it() {
    let mut views = Views::new(1);
    let key = version_key("f", "$LATEST", "r");
    let memory = HashMap::from([(key.clone(), 512)]);
    let mut w = views.at(0).expect("worker 0");
    w.update(
        status("a", vec![pool("f", 2, 1, Some(100)), pool("g", 0, 1, None)]),
        &memory,
        1000,
    );
    assert!(w.load.available);
    assert_eq!(
        w.load.used_mib,
        3 * 512 + 128,
        "unknown versions count as 128 MiB"
    );
    assert_eq!(w.load.busy, 2);
    assert_eq!(w.load.per_function.get("f"), Some(&3));
    assert_eq!(w.load.idle.get(&key), Some(&900));
    w.took_warm(&key);
    assert!(
        w.load.idle.contains_key(&key),
        "one idle sandbox of f is left"
    );
    w.took_warm(&key);
    assert!(
        !w.load.idle.contains_key(&key),
        "no idle sandbox of f is left"
    );
    w.started_cold("f", 512);
    assert_eq!(w.load.per_function.get("f"), Some(&4));
    // A sandbox that ended abnormally is gone; a normal one is idle again.
    let done = |warm, kept| Finished {
        function: "f",
        key: &key,
        memory_mib: 512,
        warm,
        kept,
    };
    w.finished(&done(false, false), 2000);
    assert_eq!(w.load.per_function.get("f"), Some(&3));
    w.finished(&done(true, true), 2100);
    assert_eq!(w.load.idle.get(&key), Some(&2100));
}

#[test]
fn a_down_or_draining_worker_is_not_available_and_its_lease_runs_down() {
    let mut views = Views::new(2);
    let memory = HashMap::new();
    views
        .at(0)
        .expect("0")
        .update(status("a", vec![]), &memory, 0);
    let mut s = status("a", vec![]);
    s.draining = true;
    views.at(1).expect("1").update(s, &memory, 0);
    assert!(views.loads[0].available);
    assert!(!views.loads[1].available, "draining");
    views.at(0).expect("0").down("gone".into());
    assert!(!views.loads[0].available);
    views.refresh_all(Instant::now() + Duration::from_secs(30));
    assert!(views.loads[1].lease_remaining <= Duration::from_secs(30));
}

#[test]
fn a_status_taken_before_the_worker_saw_a_dispatch_does_not_erase_it() {
    let mut views = Views::new(1);
    let key = version_key("f", "$LATEST", "r");
    let memory = HashMap::from([(key.clone(), 256)]);
    let mut w = views.at(0).expect("worker 0");
    w.update(status("a", vec![pool("f", 1, 0, Some(5))]), &memory, 100);
    w.took_warm(&key);
    w.started_cold("f", 256);
    // A stale status: the idle sandbox still idle, the new one not there yet.
    w.update(status("a", vec![pool("f", 1, 0, Some(5))]), &memory, 200);
    assert!(
        !w.load.idle.contains_key(&key),
        "the taken sandbox came back as idle"
    );
    assert_eq!(w.load.busy, 2);
    assert!(w.load.per_function.get("f").copied().unwrap_or(0) >= 1);
    // Absurd figures from a peer saturate instead of overflowing.
    w.update(
        status(
            "a",
            vec![
                pool("f", u32::MAX, u32::MAX, None),
                pool("g", u32::MAX, 1, None),
            ],
        ),
        &memory,
        300,
    );
    assert!(w.load.busy >= 2);
}

#[test]
fn a_worker_off_the_list_is_not_available_however_its_link_reports() {
    let mut views = Views::new(0);
    let i = views.push();
    assert_eq!((i, views.loads.len(), views.info.len()), (0, 1, 1));
    let mut w = views.at(i).expect("pushed worker");
    w.update(status("a", vec![]), &HashMap::new(), 0);
    assert!(w.load.available, "listed and up");
    w.view.listed = false;
    w.refresh(Instant::now());
    assert!(!w.load.available, "up, but off the list");
    // A fresh status (its link still answers) does not put it back.
    w.update(status("a", vec![]), &HashMap::new(), 0);
    assert!(!w.load.available);
    w.view.listed = true;
    w.refresh(Instant::now());
    assert!(w.load.available);
}
