//! One test per placement rule.

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn worker(capacity_mib: u64) -> WorkerLoad {
    WorkerLoad {
        available: true,
        lease_remaining: HOUR,
        capacity_mib,
        used_mib: 0,
        cpus: 4,
        busy: 0,
        idle: HashMap::new(),
        per_function: HashMap::new(),
    }
}

fn request<'a>(function: &'a str, version_key: &'a str, memory_mib: u64) -> Request<'a> {
    Request {
        function,
        version_key,
        memory_mib,
        min_lease: Duration::from_secs(60),
    }
}

/// Records a started sandbox on `worker`, as the frontend would after `Cold`.
fn start(worker: &mut WorkerLoad, function: &str, memory_mib: u64) {
    worker.used_mib += memory_mib;
    *worker.per_function.entry(function.to_owned()).or_default() += 1;
}

fn policy() -> Policy {
    Policy::default()
}

#[test]
fn most_recently_used_warm_sandbox_wins_over_an_older_one() {
    let mut workers = vec![worker(4096), worker(4096), worker(4096)];
    workers[0].idle.insert("f:1".into(), 100);
    workers[1].idle.insert("f:1".into(), 300);
    workers[2].idle.insert("f:1".into(), 200);
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 128)),
        Choice::Warm(1)
    );
}

#[test]
fn warm_needs_the_same_version() {
    let mut workers = vec![worker(4096), worker(4096)];
    workers[0].idle.insert("f:2".into(), 500);
    workers[1].used_mib = 1024; // so that a cold start would pick worker 0
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 128)),
        Choice::Cold(0)
    );
}

#[test]
fn warm_on_a_draining_or_expiring_worker_is_skipped() {
    let mut workers = vec![worker(4096), worker(4096), worker(4096)];
    workers[0].idle.insert("f:1".into(), 900);
    workers[0].available = false; // draining
    workers[1].idle.insert("f:1".into(), 800);
    workers[1].lease_remaining = Duration::from_secs(10); // lease about to end
    workers[2].idle.insert("f:1".into(), 100);
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 128)),
        Choice::Warm(2)
    );

    workers[2].available = false;
    // No eligible warm sandbox left, and no eligible worker for a cold start.
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 128)),
        Choice::Full
    );
}

#[test]
fn warm_on_a_worker_at_its_busy_limit_is_skipped() {
    let mut workers = vec![worker(4096), worker(4096)];
    workers[0].idle.insert("f:1".into(), 900);
    workers[0].busy = 4 * 2;
    let policy = Policy { busy_per_cpu: 2 };
    assert_eq!(
        policy.choose(&workers, &request("f", "f:1", 128)),
        Choice::Cold(1)
    );
}

#[test]
fn cold_starts_spread_copies_of_one_function_over_workers() {
    let mut workers = vec![worker(8192), worker(8192), worker(8192), worker(8192)];
    let req = request("f", "f:1", 256);
    let mut chosen = Vec::new();
    for _ in 0..8 {
        let Choice::Cold(index) = policy().choose(&workers, &req) else {
            panic!("expected a cold start");
        };
        start(&mut workers[index], "f", 256);
        chosen.push(index);
    }
    for worker in &workers {
        assert_eq!(worker.per_function["f"], 2, "placements {chosen:?}");
    }
}

#[test]
fn copies_spread_even_onto_a_more_loaded_worker() {
    let mut workers = vec![worker(8192), worker(8192)];
    start(&mut workers[0], "f", 256);
    start(&mut workers[1], "g", 4096); // worker 1 holds more memory, but no f
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 256)),
        Choice::Cold(1)
    );
}

#[test]
fn different_functions_mix_on_a_worker() {
    // Worker 0 holds f; worker 1 holds as much memory of g. A cold start of
    // g goes next to f, one of f next to g.
    let mut workers = vec![worker(8192), worker(8192), worker(8192)];
    start(&mut workers[0], "f", 1024);
    start(&mut workers[1], "g", 1024);
    workers[2].used_mib = 4096; // other load: less attractive than 0 and 1
    start(&mut workers[2], "f", 0);
    start(&mut workers[2], "g", 0);
    assert_eq!(
        policy().choose(&workers, &request("g", "g:1", 512)),
        Choice::Cold(0)
    );
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 512)),
        Choice::Cold(1)
    );
}

#[test]
fn ties_go_to_the_least_loaded_worker() {
    let mut workers = vec![worker(8192), worker(4096), worker(8192)];
    workers[0].used_mib = 2048; // 25 %
    workers[1].used_mib = 512; // 12.5 %
    workers[2].used_mib = 4096; // 50 %
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 128)),
        Choice::Cold(1)
    );
}

#[test]
fn exact_ties_do_not_all_land_on_worker_zero() {
    let workers: Vec<WorkerLoad> = (0..16).map(|_| worker(8192)).collect();
    let mut first_choices = std::collections::HashSet::new();
    for function in 0..32 {
        let name = format!("fn-{function}");
        match policy().choose(&workers, &request(&name, "v", 128)) {
            Choice::Cold(index) => first_choices.insert(index),
            other => panic!("unexpected {other:?}"),
        };
    }
    assert!(first_choices.len() > 8, "ties landed on {first_choices:?}");
}

#[test]
fn memory_capacity_is_respected() {
    let mut workers = vec![worker(4096), worker(4096)];
    workers[0].used_mib = 3500; // 596 MiB left
    workers[1].used_mib = 3900; // 196 MiB left
    start(&mut workers[0], "f", 0); // worker 0 would lose on spreading
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 512)),
        Choice::Cold(0)
    );
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 196)),
        Choice::Cold(1)
    );
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 597)),
        Choice::Full
    );
}

#[test]
fn full_only_when_no_worker_fits() {
    let mut workers = vec![worker(1024), worker(1024), worker(1024)];
    workers[0].used_mib = 1024;
    workers[1].used_mib = 1024;
    workers[2].used_mib = 768;
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 256)),
        Choice::Cold(2)
    );
    workers[2].used_mib = 769;
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 256)),
        Choice::Full
    );
    // A warm sandbox needs no new memory: still served on a full worker.
    workers[1].idle.insert("f:1".into(), 7);
    assert_eq!(
        policy().choose(&workers, &request("f", "f:1", 256)),
        Choice::Warm(1)
    );
}

#[test]
fn zero_capacity_or_unavailable_fleet_is_full() {
    let req = request("f", "f:1", 128);
    assert_eq!(
        policy().choose::<String, RandomState>(&[], &req),
        Choice::Full
    );

    let zero_memory = vec![worker(0), worker(0)];
    assert_eq!(policy().choose(&zero_memory, &req), Choice::Full);
    let zero_memory_request = request("f", "f:1", 0);
    assert_eq!(
        policy().choose(&zero_memory, &zero_memory_request),
        Choice::Full
    );

    let mut zero_cpus = vec![worker(4096)];
    zero_cpus[0].cpus = 0;
    assert_eq!(policy().choose(&zero_cpus, &req), Choice::Full);

    let mut unavailable = vec![worker(4096), worker(4096)];
    unavailable[0].available = false;
    unavailable[1].lease_remaining = Duration::ZERO;
    assert_eq!(policy().choose(&unavailable, &req), Choice::Full);
}

#[test]
fn memory_load_compares_exactly() {
    let mut a = worker(3);
    let mut b = worker(6);
    a.used_mib = 1;
    b.used_mib = 2;
    assert_eq!(memory_load_cmp(&a, &b), std::cmp::Ordering::Equal);
    b.used_mib = 3;
    assert_eq!(memory_load_cmp(&a, &b), std::cmp::Ordering::Less);
    assert_eq!(memory_load_cmp(&worker(0), &b), std::cmp::Ordering::Greater);
}
