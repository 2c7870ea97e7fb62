//! The fleet-size search: the smallest fleet that meets the p99 load limit,
//! rerunning the same trace at each size tried.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::fleet::{self, FleetParams, Rule};
use super::trace::Trace;
use super::{describe, metrics, passes, rate, rule_seed, SearchParams};

/// One fleet size tried by the search.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Probe {
    pub workers: usize,
    pub p99_load: f64,
    pub throttle_rate: f64,
    pub cold_start_rate: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetSearch {
    /// None when no fleet up to 4× the configured one passed, or p99 load
    /// stopped falling as the fleet grew (see `tried`).
    pub workers_needed: Option<usize>,
    pub tried: Vec<Probe>,
}

/// Brackets the smallest passing fleet starting from the estimate
/// `workers × p99 / limit`, then bisects. Assumes that more workers never hurt.
pub(super) fn search_fleet(
    trace: &Trace,
    fleet: &FleetParams,
    search: &SearchParams,
    rule: Rule,
    first: Probe,
    progress: &mut dyn FnMut(String),
) -> FleetSearch {
    let mut probes = BTreeMap::from([(first.workers, first)]);
    let mut try_size = |workers: usize, probes: &mut BTreeMap<usize, Probe>| -> bool {
        if let Some(known) = probes.get(&workers) {
            return known.pass;
        }
        let started = Instant::now();
        let sized = FleetParams {
            workers,
            ..fleet.clone()
        };
        let result = fleet::run(trace, &sized, rule, rule_seed(trace, rule));
        let p99_load = metrics::quantile(&result.loads, 0.99);
        let throttle_rate = rate(result.counts.throttled, result.counts.activations);
        let pass = passes(search, p99_load, throttle_rate);
        let cold_start_rate = rate(result.counts.cold, result.counts.activations);
        let probe = Probe {
            workers,
            p99_load,
            throttle_rate,
            cold_start_rate,
            pass,
        };
        progress(describe(rule, &probe, started));
        probes.insert(workers, probe);
        pass
    };
    let ceiling = fleet.workers.saturating_mul(4).max(1);
    let estimate = (first.workers as f64 * first.p99_load / search.p99_load_limit).ceil();
    try_size((estimate as usize).clamp(1, ceiling), &mut probes);
    // Grow until something passes; give up at the ceiling, or when growing
    // stops lowering p99 (e.g. packing: a host full of one function's copies
    // is as hot in any fleet size).
    while smallest_pass(&probes).is_none() {
        let mut largest = probes.values().rev();
        let (last, before) = (largest.next().expect("probed"), largest.next());
        let stalled = before.is_some_and(|before| last.p99_load > 0.97 * before.p99_load);
        if last.workers >= ceiling || stalled {
            return FleetSearch {
                workers_needed: None,
                tried: probes.into_values().collect(),
            };
        }
        try_size(
            (last.workers + last.workers / 4 + 1).min(ceiling),
            &mut probes,
        );
    }
    // Shrink until something below the smallest pass fails (or 1 passes).
    loop {
        let pass = smallest_pass(&probes).expect("found above");
        match largest_fail_below(&probes, pass) {
            None if pass > 1 => try_size((pass - pass / 5 - 1).max(1), &mut probes),
            None => break,
            Some(fail) => {
                let tolerance = ((pass as f64 * search.tolerance) as usize).max(1);
                if pass - fail <= tolerance {
                    break;
                }
                try_size(fail + (pass - fail) / 2, &mut probes)
            }
        };
    }
    FleetSearch {
        workers_needed: smallest_pass(&probes),
        tried: probes.into_values().collect(),
    }
}

fn smallest_pass(probes: &BTreeMap<usize, Probe>) -> Option<usize> {
    probes
        .values()
        .find(|probe| probe.pass)
        .map(|probe| probe.workers)
}

fn largest_fail_below(probes: &BTreeMap<usize, Probe>, limit: usize) -> Option<usize> {
    probes
        .range(..limit)
        .rev()
        .find(|(_, probe)| !probe.pass)
        .map(|(&workers, _)| workers)
}
