//! Bookkeeping checks of the simulated fleet.

use super::*;
use crate::placement::sim::trace::TraceParams;

/// Recomputes every view from the placements and compares.
fn audit(fleet: &Fleet<'_>) {
    for (w, view) in fleet.views.iter().enumerate() {
        let (mut busy, mut used, mut idle_mib) = (0, 0, 0);
        for (f, placements) in fleet.placements.iter().enumerate() {
            let Some(placement) = placements.get(&(w as u32)) else {
                assert!(!view.per_function.contains_key(fleet.names[f]));
                assert!(!view.idle.contains_key(fleet.names[f]));
                continue;
            };
            let memory_mib = fleet.trace.functions[f].memory_mib;
            let copies = placement.busy + placement.idle.len() as u32;
            assert!(copies > 0, "empty placement kept");
            assert_eq!(view.per_function.get(fleet.names[f]), Some(&copies));
            assert_eq!(view.idle.get(fleet.names[f]), placement.idle.back());
            assert!(placement
                .idle
                .iter()
                .zip(placement.idle.iter().skip(1))
                .all(|(a, b)| a <= b));
            busy += placement.busy;
            used += u64::from(copies) * memory_mib;
            idle_mib += placement.idle.len() as u64 * memory_mib;
        }
        assert_eq!(
            (view.busy, view.used_mib, fleet.idle_mib[w]),
            (busy, used, idle_mib),
            "worker {w}"
        );
        assert!(view.used_mib <= view.capacity_mib);
    }
}

#[test]
fn bookkeeping_stays_consistent_under_pressure() {
    // A small, tight fleet: reaping, eviction and throttling all happen.
    let trace = Trace::generate(TraceParams::new(40, 300, 3, 4, 2));
    let params = FleetParams {
        workers: 4,
        worker_cpus: 2,
        worker_mib: 4 * 1024,
        idle_timeout_steps: 30,
        warmup_steps: 0,
        evict_idle: true,
        busy_per_cpu: 64,
    };
    let names = FunctionNames::new(40);
    let names = names.all();
    let mut totals = Counts::default();
    for rule in Rule::ALL {
        let mut fleet = Fleet::new(&trace, &params, rule, 5, &names);
        for step in 0..trace.steps() {
            fleet.step(step);
            audit(&fleet);
            let busy: u32 = fleet.views.iter().map(|view| view.busy).sum();
            assert_eq!(busy, fleet.busy_of.iter().sum::<u32>());
        }
        totals.reaped += fleet.counts.reaped;
        totals.evicted += fleet.counts.evicted;
        totals.throttled += fleet.counts.throttled;
    }
    assert!(
        totals.reaped > 0 && totals.evicted > 0 && totals.throttled > 0,
        "{totals:?}"
    );
}
