//! Synthetic bursty invoke traces: per function and per time step, how many
//! sandboxes of it must be busy, and how much CPU each of them uses.
//!
//! Model, per function (independent of every other function):
//! - base concurrency: lognormal across functions (heavy tail: a few functions
//!   carry much of the load), scaled so the whole trace puts `target_load` of
//!   CPU on `calibration_workers` workers on average;
//! - bursts: an on/off Markov chain (mean on and off times drawn per function);
//!   while on, demand is multiplied by the function's burst multiplier and each
//!   busy sandbox uses `burst_cpu_factor` times more CPU (capped at one CPU).
//!   A burst raises the demand of the function as a whole: its copies are
//!   perfectly correlated; different functions are independent;
//! - concurrency: an INAR(1) process, `d(t) = Binomial(d(t-1), persistence) +
//!   Poisson((1 - persistence) λ(t))`: mean λ(t), Poisson-like noise, and a busy
//!   sandbox stays busy for 1 / (1 - persistence) steps on average;
//! - memory: a fixed mix from 128 to 3008 MiB, small sizes most common;
//! - CPU of a busy sandbox: min(1, memory / 1769 MiB) (Lambda's CPU share per
//!   memory) times a per-function utilisation drawn uniformly from 0.2..1.

use serde::Serialize;

use super::rng::Rng;

/// Memory sizes (MiB) and their weights.
const MEMORY_MIX: [(u64, f64); 7] = [
    (128, 0.30),
    (256, 0.25),
    (512, 0.20),
    (1024, 0.12),
    (1536, 0.06),
    (2048, 0.04),
    (3008, 0.03),
];
/// Memory that buys one full vCPU on Lambda.
const MIB_PER_CPU: f64 = 1769.0;

/// Every input of the trace generator; recorded in the report.
#[derive(Debug, Clone, Serialize)]
pub struct TraceParams {
    pub functions: usize,
    pub steps: usize,
    pub seed: u64,
    /// Mean CPU load the trace puts on `calibration_workers` workers.
    pub target_load: f64,
    pub calibration_workers: usize,
    pub worker_cpus: u32,
    /// Sigma of the lognormal base concurrency across functions.
    pub demand_sigma: f64,
    /// INAR(1) persistence: chance that a busy sandbox is still busy next step.
    pub persistence: f64,
    /// Mean burst length (steps), drawn log-uniformly per function.
    pub burst_on_steps: (f64, f64),
    /// Mean time between bursts (steps), drawn log-uniformly per function.
    pub burst_off_steps: (f64, f64),
    /// Burst multiplier: lognormal with this median and sigma, clamped.
    pub burst_multiplier_median: f64,
    pub burst_multiplier_sigma: f64,
    pub burst_multiplier_range: (f64, f64),
    pub burst_cpu_factor: f64,
    /// Per-function CPU utilisation of a busy sandbox, uniform in this range.
    pub utilisation: (f64, f64),
}

impl TraceParams {
    pub fn new(
        functions: usize,
        steps: usize,
        seed: u64,
        workers: usize,
        worker_cpus: u32,
    ) -> Self {
        TraceParams {
            functions,
            steps,
            seed,
            target_load: 0.4,
            calibration_workers: workers,
            worker_cpus,
            demand_sigma: 1.8,
            persistence: 0.8,
            burst_on_steps: (30.0, 300.0),
            burst_off_steps: (600.0, 7200.0),
            burst_multiplier_median: 4.0,
            burst_multiplier_sigma: 0.6,
            burst_multiplier_range: (1.5, 40.0),
            burst_cpu_factor: 1.3,
            utilisation: (0.2, 1.0),
        }
    }
}

/// What stays fixed for a function over the whole trace.
#[derive(Debug, Clone)]
pub struct FunctionProfile {
    pub memory_mib: u64,
    /// CPUs used by one busy sandbox outside and during a burst.
    pub cpu_calm: f64,
    pub cpu_burst: f64,
    /// Mean concurrency outside a burst, and the burst multiplier.
    pub base_concurrency: f64,
    pub burst_multiplier: f64,
    /// Per-step chances to enter and to leave a burst.
    pub burst_start: f64,
    pub burst_end: f64,
}

impl FunctionProfile {
    fn draw(params: &TraceParams, rng: &mut Rng) -> Self {
        let memory_mib = draw_memory(rng);
        let utilisation =
            params.utilisation.0 + (params.utilisation.1 - params.utilisation.0) * rng.uniform();
        let cpu_calm = (memory_mib as f64 / MIB_PER_CPU).min(1.0) * utilisation;
        let (low, high) = params.burst_multiplier_range;
        let multiplier = rng.lognormal(
            params.burst_multiplier_median.ln(),
            params.burst_multiplier_sigma,
        );
        FunctionProfile {
            memory_mib,
            cpu_calm,
            cpu_burst: (cpu_calm * params.burst_cpu_factor).min(1.0),
            base_concurrency: rng.lognormal(0.0, params.demand_sigma),
            burst_multiplier: multiplier.clamp(low, high),
            burst_start: 1.0 / rng.log_uniform(params.burst_off_steps.0, params.burst_off_steps.1),
            burst_end: 1.0 / rng.log_uniform(params.burst_on_steps.0, params.burst_on_steps.1),
        }
    }

    /// Stationary chance of being in a burst.
    fn burst_share(&self) -> f64 {
        self.burst_start / (self.burst_start + self.burst_end)
    }

    /// Mean CPU demand, in the long run, per unit of base concurrency.
    fn mean_cpu_per_base(&self) -> f64 {
        let on = self.burst_share();
        (1.0 - on) * self.cpu_calm + on * self.burst_multiplier * self.cpu_burst
    }
}

fn draw_memory(rng: &mut Rng) -> u64 {
    let mut point = rng.uniform() * MEMORY_MIX.iter().map(|(_, weight)| weight).sum::<f64>();
    for (memory_mib, weight) in MEMORY_MIX {
        if point < weight {
            return memory_mib;
        }
        point -= weight;
    }
    MEMORY_MIX[MEMORY_MIX.len() - 1].0
}

/// The pre-generated trace, shared by every policy and fleet size.
#[derive(Debug)]
pub struct Trace {
    pub params: TraceParams,
    pub functions: Vec<FunctionProfile>,
    /// Step-major: `demand[step * functions + function]`.
    demand: Vec<u32>,
    bursting: Vec<bool>,
}

impl Trace {
    pub fn generate(params: TraceParams) -> Self {
        let count = params.functions;
        let mut functions: Vec<FunctionProfile> = (0..count)
            .map(|f| FunctionProfile::draw(&params, &mut Rng::stream(params.seed, f as u64)))
            .collect();
        // Scale base concurrency so that the mean CPU demand hits the target.
        let cpu_per_unit: f64 = functions
            .iter()
            .map(|p| p.base_concurrency * p.mean_cpu_per_base())
            .sum();
        let target_cpu =
            params.target_load * params.calibration_workers as f64 * f64::from(params.worker_cpus);
        let scale = if cpu_per_unit > 0.0 {
            target_cpu / cpu_per_unit
        } else {
            0.0
        };
        for profile in &mut functions {
            profile.base_concurrency *= scale;
        }

        let mut demand = vec![0u32; count * params.steps];
        let mut bursting = vec![false; count * params.steps];
        for (f, profile) in functions.iter().enumerate() {
            // A second stream per function: the profile's draws stay independent of the trace length.
            let mut rng = Rng::stream(params.seed ^ 0x005e_ed0f_7ace, f as u64);
            let mut on = rng.chance(profile.burst_share());
            let mut current = rng.poisson(
                profile.base_concurrency * if on { profile.burst_multiplier } else { 1.0 },
            );
            for step in 0..params.steps {
                let flip = if on {
                    profile.burst_end
                } else {
                    profile.burst_start
                };
                if rng.chance(flip) {
                    on = !on;
                }
                let mean =
                    profile.base_concurrency * if on { profile.burst_multiplier } else { 1.0 };
                current = rng.binomial(current, params.persistence)
                    + rng.poisson((1.0 - params.persistence) * mean);
                demand[step * count + f] = current;
                bursting[step * count + f] = on;
            }
        }
        Trace {
            params,
            functions,
            demand,
            bursting,
        }
    }

    pub fn steps(&self) -> usize {
        self.params.steps
    }

    /// Busy sandboxes function `f` needs during `step`.
    pub fn demand(&self, step: usize, f: usize) -> u32 {
        self.demand[step * self.functions.len() + f]
    }

    /// CPUs one busy sandbox of `f` uses during `step`.
    pub fn cpu_share(&self, step: usize, f: usize) -> f64 {
        let profile = &self.functions[f];
        if self.bursting[step * self.functions.len() + f] {
            profile.cpu_burst
        } else {
            profile.cpu_calm
        }
    }

    /// Whole-fleet CPU demand per step (independent of placement).
    pub fn aggregate_cpu(&self) -> Vec<f64> {
        (0..self.steps())
            .map(|step| {
                (0..self.functions.len())
                    .map(|f| f64::from(self.demand(step, f)) * self.cpu_share(step, f))
                    .sum()
            })
            .collect()
    }

    /// Sandbox-steps of demand per function (how concentrated the load is).
    pub fn busy_per_function(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.functions.len()];
        for step in 0..self.steps() {
            for (f, total) in totals.iter_mut().enumerate() {
                *total += u64::from(self.demand(step, f));
            }
        }
        totals
    }
}
