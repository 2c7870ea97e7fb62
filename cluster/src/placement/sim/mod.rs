//! Fleet simulator for the placement policy, behind the `placement-sim` bench
//! binary. It replays one pre-generated bursty trace ([`trace`]) on simulated
//! workers ([`fleet`]) under the real policy, two baselines (random placement,
//! packing copies together) and optionally an ablation (plain least-loaded
//! balancing), all through the same harness, and reports
//! host-load statistics ([`metrics`]), cold starts, throttles, and the smallest
//! fleet that keeps p99 host load under a limit.
//!
//! Latency model: a host's CPU is shared between its busy sandboxes, so an
//! invoke on a host at load ρ takes 1 / (1 - ρ) times its unloaded time (the
//! mean slowdown of an M/M/1 processor-sharing queue). A p99 latency budget
//! of `1 / (1 - limit)` (5× at the default limit 0.8) thus becomes: p99 host
//! load over all host-steps ≤ limit.

pub mod fleet;
pub mod metrics;
pub mod rng;
mod search;
pub mod trace;

use std::time::Instant;

use serde::Serialize;

pub use fleet::{Counts, FleetParams, Rule};
pub use metrics::LoadStats;
use search::search_fleet;
pub use search::{FleetSearch, Probe};
pub use trace::{Trace, TraceParams};

/// Fleet-size search: smallest fleet with p99 host load ≤ `p99_load_limit`
/// and at most `throttle_budget` of activations throttled.
#[derive(Debug, Clone, Serialize)]
pub struct SearchParams {
    pub enabled: bool,
    pub p99_load_limit: f64,
    pub throttle_budget: f64,
    /// Stop when the bracket is narrower than this fraction of the fleet (≥ 1 worker).
    pub tolerance: f64,
}

/// Properties of the demand itself, the same for every policy.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStats {
    pub mean_busy_sandboxes: f64,
    pub mean_cpu_demand: f64,
    /// Whole-fleet CPU demand per step: max / mean and p99 / mean. What a
    /// perfect balancer would see on every host.
    pub aggregate_peak_to_mean: f64,
    pub aggregate_p99_to_mean: f64,
    /// Share of busy sandbox-steps of the largest function and of the top 1 %.
    pub top_function_share: f64,
    pub top_1_percent_share: f64,
    /// Fleet a perfect balancer would need: every host at the aggregate load,
    /// so p99 host load = p99 aggregate CPU / (workers × CPUs) ≤ the limit.
    pub perfect_balance_workers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub policy: &'static str,
    pub workers: usize,
    pub load: LoadStats,
    pub counts: Counts,
    /// Cold starts / activations (an activation: a sandbox going from not busy to busy).
    pub cold_start_rate: f64,
    pub throttle_rate: f64,
    pub fleet_search: Option<FleetSearch>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    pub trace: TraceParams,
    pub fleet: FleetParams,
    pub search: SearchParams,
    pub latency_model: &'static str,
    pub workload: WorkloadStats,
    pub policies: Vec<PolicyReport>,
}

pub const LATENCY_MODEL: &str = "processor sharing: an invoke on a host at CPU load rho takes 1/(1-rho) times its \
     unloaded time (M/M/1-PS mean slowdown); a p99 budget of 1/(1-limit) means p99 host load <= limit";

/// Generates the trace once and runs every rule on it; `progress` gets one
/// line per simulated run.
pub fn simulate(
    trace_params: TraceParams,
    fleet: FleetParams,
    search: SearchParams,
    rules: &[Rule],
    progress: &mut dyn FnMut(String),
) -> ConfigReport {
    let started = Instant::now();
    let trace = Trace::generate(trace_params);
    progress(format!(
        "trace: {} functions × {} steps in {:.1} s",
        trace.functions.len(),
        trace.steps(),
        started.elapsed().as_secs_f64()
    ));
    let workload = workload_stats(&trace, &fleet, &search);
    let policies = rules
        .iter()
        .map(|&rule| simulate_rule(&trace, &fleet, &search, rule, progress))
        .collect();
    ConfigReport {
        trace: trace.params.clone(),
        fleet,
        search,
        latency_model: LATENCY_MODEL,
        workload,
        policies,
    }
}

fn simulate_rule(
    trace: &Trace,
    fleet: &FleetParams,
    search: &SearchParams,
    rule: Rule,
    progress: &mut dyn FnMut(String),
) -> PolicyReport {
    let started = Instant::now();
    let result = fleet::run(trace, fleet, rule, rule_seed(trace, rule));
    let load = LoadStats::new(&result.loads, &result.busy, fleet.workers);
    let counts = result.counts;
    let first = Probe {
        workers: fleet.workers,
        p99_load: load.p99,
        throttle_rate: rate(counts.throttled, counts.activations),
        cold_start_rate: rate(counts.cold, counts.activations),
        pass: passes(search, load.p99, rate(counts.throttled, counts.activations)),
    };
    progress(describe(rule, &first, started));
    let fleet_search = search
        .enabled
        .then(|| search_fleet(trace, fleet, search, rule, first, progress));
    PolicyReport {
        policy: rule.name(),
        workers: fleet.workers,
        load,
        counts,
        cold_start_rate: first.cold_start_rate,
        throttle_rate: first.throttle_rate,
        fleet_search,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Each rule gets its own random stream (random placement, which sandboxes go
/// idle), the same for every fleet size.
fn rule_seed(trace: &Trace, rule: Rule) -> u64 {
    trace.params.seed ^ (rule as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn passes(search: &SearchParams, p99_load: f64, throttle_rate: f64) -> bool {
    p99_load <= search.p99_load_limit && throttle_rate <= search.throttle_budget
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn describe(rule: Rule, probe: &Probe, started: Instant) -> String {
    format!(
        "{:>6} on {:>4} workers: p99 load {:.3}, cold {:.4}, throttled {:.5} → {} ({:.1} s)",
        rule.name(),
        probe.workers,
        probe.p99_load,
        probe.cold_start_rate,
        probe.throttle_rate,
        if probe.pass { "pass" } else { "fail" },
        started.elapsed().as_secs_f64()
    )
}

fn workload_stats(trace: &Trace, fleet: &FleetParams, search: &SearchParams) -> WorkloadStats {
    let measured = fleet.warmup_steps.min(trace.steps().saturating_sub(1));
    let cpu: Vec<f32> = trace.aggregate_cpu()[measured..]
        .iter()
        .map(|&c| c as f32)
        .collect();
    let mean_cpu = metrics::mean(&cpu);
    let peak = cpu.iter().copied().fold(0.0f32, f32::max) as f64;
    let p99 = metrics::quantile(&cpu, 0.99);
    let mut busy = trace.busy_per_function();
    busy.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = busy.iter().sum();
    let top_1_percent = busy.iter().take(busy.len().div_ceil(100)).sum::<u64>();
    let steps = trace.steps().max(1) as f64;
    WorkloadStats {
        mean_busy_sandboxes: total as f64 / steps,
        mean_cpu_demand: mean_cpu,
        aggregate_peak_to_mean: if mean_cpu > 0.0 { peak / mean_cpu } else { 0.0 },
        aggregate_p99_to_mean: if mean_cpu > 0.0 { p99 / mean_cpu } else { 0.0 },
        top_function_share: rate(busy.first().copied().unwrap_or(0), total),
        top_1_percent_share: rate(top_1_percent, total),
        perfect_balance_workers: (p99 / (search.p99_load_limit * f64::from(fleet.worker_cpus)))
            .ceil() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config() -> (TraceParams, FleetParams) {
        let trace = TraceParams::new(60, 200, 9, 6, 4);
        let fleet = FleetParams {
            workers: 6,
            worker_cpus: 4,
            worker_mib: 16 * 1024,
            idle_timeout_steps: 50,
            warmup_steps: 20,
            evict_idle: true,
            busy_per_cpu: 64,
        };
        (trace, fleet)
    }

    #[test]
    fn same_seed_same_report() {
        let (trace, fleet) = small_config();
        let search = SearchParams {
            enabled: true,
            p99_load_limit: 0.8,
            throttle_budget: 0.001,
            tolerance: 0.0,
        };
        let report = |_: ()| {
            let report = simulate(
                trace.clone(),
                fleet.clone(),
                search.clone(),
                &Rule::ALL,
                &mut |_| {},
            );
            let mut json = serde_json::to_value(&report).expect("serialises");
            for policy in json["policies"].as_array_mut().expect("policies") {
                policy["seconds"] = 0.into(); // wall time is the only thing allowed to differ
            }
            json
        };
        let first = report(());
        assert_eq!(first, report(()));
        for policy in first["policies"].as_array().expect("policies") {
            assert!(
                policy["counts"]["activations"].as_u64().expect("count") > 0,
                "{policy}"
            );
        }
        // Packing may never pass on so small a fleet; the real policy must.
        assert!(
            first["policies"][0]["fleet_search"]["workers_needed"]
                .as_u64()
                .is_some(),
            "{first}"
        );
    }

    #[test]
    fn every_sandbox_is_accounted_for() {
        let (trace, fleet) = small_config();
        let trace = Trace::generate(trace);
        for rule in Rule::ALL {
            let result = fleet::run(&trace, &fleet, rule, 1);
            let counts = result.counts;
            assert_eq!(
                counts.activations,
                counts.warm + counts.cold + counts.throttled,
                "{rule:?}"
            );
            assert!(counts.warm > 0 && counts.cold > 0, "{rule:?}: {counts:?}");
            assert_eq!(
                result.loads.len(),
                (trace.steps() - fleet.warmup_steps) * fleet.workers
            );
        }
    }
}
