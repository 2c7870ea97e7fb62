//! placement-sim: replays a synthetic bursty trace of many functions on a
//! simulated fleet under the real placement policy and two baselines (random
//! placement, packing copies together), and reports host-load spread, cold
//! starts, throttles and the fleet needed for a p99 latency budget.
//! See `cluster::placement::sim` for the model.

use std::io::Write;
use std::process::ExitCode;

use cluster::placement::sim::{self, ConfigReport, FleetParams, Rule, SearchParams, TraceParams};

const USAGE: &str = "usage: placement-sim [options]
  --functions N            functions in the trace (3000)
  --workers N              fleet size; the trace is scaled to --target-load on it (200)
  --duration-steps N       1-second steps to simulate (2400)
  --seed N                 seed of the trace and the random choices (1)
  --out FILE               write the JSON report here (default: stdout)
  --sweep N,N,...          run one config per fleet size, functions scaled with it
                           (e.g. --sweep 200,1000 runs 3000 and 15000 functions)
  --worker-cpus N          CPUs per worker (16)
  --worker-mib N           sandbox memory per worker, MiB (65536)
  --idle-timeout-steps N   idle sandboxes are reaped after this (600)
  --warmup-steps N         steps left out of the statistics (600)
  --target-load X          mean CPU load of the trace on --workers (0.4)
  --persistence X          chance a busy sandbox stays busy next step (0.8)
  --demand-sigma X         lognormal sigma of base concurrency across functions (1.8)
  --busy-per-cpu N         policy's busy sandboxes per CPU (64)
  --p99-load-limit X       fleet search: p99 host load limit (0.8)
  --throttle-budget X      fleet search: allowed throttled share (0.001)
  --search-tolerance X     fleet search precision, fraction of the fleet (0.02)
  --no-search              skip the fleet-size search
  --no-evict               throttle instead of evicting idle sandboxes when full
  --policies a,b,...       rules to compare: policy,random,pack (default) and
                           balance (least loaded, copies ignored: an ablation)";

struct Options {
    trace: TraceParams,
    fleet: FleetParams,
    search: SearchParams,
    rules: Vec<Rule>,
    sweep: Vec<usize>,
    out: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let reports: Vec<ConfigReport> = sweep_configs(&options)
        .into_iter()
        .map(|(trace, fleet)| {
            eprintln!(
                "== {} functions on {} workers, {} steps, seed {}",
                trace.functions, fleet.workers, trace.steps, trace.seed
            );
            let report = sim::simulate(
                trace,
                fleet,
                options.search.clone(),
                &options.rules,
                &mut |line| eprintln!("  {line}"),
            );
            print_summary(&report);
            report
        })
        .collect();
    let json = serde_json::json!({ "generator": "placement-sim", "configs": reports });
    let text = serde_json::to_string_pretty(&json).expect("report serialises") + "\n";
    let written = match &options.out {
        Some(path) => std::fs::write(path, text),
        None => std::io::stdout().write_all(text.as_bytes()),
    };
    if let Err(error) = written {
        eprintln!("writing the report: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One (trace, fleet) per fleet size; without --sweep, just the one configured.
fn sweep_configs(options: &Options) -> Vec<(TraceParams, FleetParams)> {
    if options.sweep.is_empty() {
        return vec![(options.trace.clone(), options.fleet.clone())];
    }
    let base_workers = options.fleet.workers.max(1);
    options
        .sweep
        .iter()
        .map(|&workers| {
            let functions = (options.trace.functions * workers).div_ceil(base_workers);
            let trace = TraceParams {
                functions,
                calibration_workers: workers,
                ..options.trace.clone()
            };
            (
                trace,
                FleetParams {
                    workers,
                    ..options.fleet.clone()
                },
            )
        })
        .collect()
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let (mut functions, mut workers, mut steps, mut seed) = (3000usize, 200usize, 2400usize, 1u64);
    let (mut cpus, mut memory) = (16u32, 65_536u64);
    let mut fleet = FleetParams {
        workers,
        worker_cpus: cpus,
        worker_mib: memory,
        idle_timeout_steps: 600,
        warmup_steps: 600,
        evict_idle: true,
        busy_per_cpu: 64,
    };
    let mut search = SearchParams {
        enabled: true,
        p99_load_limit: 0.8,
        throttle_budget: 0.001,
        tolerance: 0.02,
    };
    let (mut target_load, mut persistence, mut sigma) = (0.4f64, 0.8f64, 1.8f64);
    let (mut rules, mut sweep, mut out) = (Rule::DEFAULT.to_vec(), Vec::new(), None);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--functions" => functions = number(&value()?)?,
            "--workers" => workers = number(&value()?)?,
            "--duration-steps" => steps = number(&value()?)?,
            "--seed" => seed = number(&value()?)?,
            "--out" => out = Some(value()?),
            "--sweep" => sweep = value()?.split(',').map(number).collect::<Result<_, _>>()?,
            "--worker-cpus" => cpus = number(&value()?)?,
            "--worker-mib" => memory = number(&value()?)?,
            "--idle-timeout-steps" => fleet.idle_timeout_steps = number(&value()?)?,
            "--warmup-steps" => fleet.warmup_steps = number(&value()?)?,
            "--target-load" => target_load = number(&value()?)?,
            "--persistence" => persistence = number(&value()?)?,
            "--demand-sigma" => sigma = number(&value()?)?,
            "--busy-per-cpu" => fleet.busy_per_cpu = number(&value()?)?,
            "--p99-load-limit" => search.p99_load_limit = number(&value()?)?,
            "--throttle-budget" => search.throttle_budget = number(&value()?)?,
            "--search-tolerance" => search.tolerance = number(&value()?)?,
            "--no-search" => search.enabled = false,
            "--no-evict" => fleet.evict_idle = false,
            "--policies" => {
                rules = value()?
                    .split(',')
                    .map(rule_named)
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if workers == 0
        || cpus == 0
        || !(0.0..1.0).contains(&persistence)
        || search.p99_load_limit <= 0.0
    {
        return Err("--workers and --worker-cpus must be > 0, --persistence in [0, 1), --p99-load-limit > 0".into());
    }
    fleet.workers = workers;
    fleet.worker_cpus = cpus;
    fleet.worker_mib = memory;
    let mut trace = TraceParams::new(functions, steps, seed, workers, cpus);
    trace.target_load = target_load;
    trace.persistence = persistence;
    trace.demand_sigma = sigma;
    Ok(Options {
        trace,
        fleet,
        search,
        rules,
        sweep,
        out,
    })
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

fn rule_named(name: &str) -> Result<Rule, String> {
    Rule::ALL
        .into_iter()
        .find(|rule| rule.name() == name)
        .ok_or_else(|| format!("unknown policy {name}"))
}

fn print_summary(report: &ConfigReport) {
    let workload = &report.workload;
    eprintln!(
        "  workload: {:.0} busy sandboxes, {:.0} CPUs of demand on average; fleet aggregate peak/mean {:.2}, \
         p99/mean {:.2}; a perfect balancer would need {} workers",
        workload.mean_busy_sandboxes,
        workload.mean_cpu_demand,
        workload.aggregate_peak_to_mean,
        workload.aggregate_p99_to_mean,
        workload.perfect_balance_workers
    );
    eprintln!("  policy  peak/mean  host-peak/mean  p99   p99.9  p99(invokes)  cold-rate  throttled  workers-needed");
    for policy in &report.policies {
        let needed = policy
            .fleet_search
            .as_ref()
            .and_then(|search| search.workers_needed);
        eprintln!(
            "  {:<7} {:>9.2} {:>15.2} {:>5.3} {:>6.3} {:>13.3} {:>10.4} {:>10.5} {:>15}",
            policy.policy,
            policy.load.peak_to_mean,
            policy.load.host_peak_to_mean,
            policy.load.p99,
            policy.load.p999,
            policy.load.p99_seen_by_invokes,
            policy.cold_start_rate,
            policy.throttle_rate,
            needed.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        );
    }
}
