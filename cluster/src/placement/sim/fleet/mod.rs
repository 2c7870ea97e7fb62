//! The harness: replays a trace on a fleet of simulated workers, placing every
//! sandbox activation through a placement rule, and records each host's CPU
//! load per step.
//!
//! Sandbox lifecycle: at each step a function's busy sandboxes are set to its
//! demand. Fewer needed: randomly chosen busy ones go idle. More needed: each
//! extra one is placed by the rule: warm on an idle sandbox (MRU, by the real
//! policy, for every rule) or cold on a worker. Sandboxes never move. Idle ones
//! are reaped after `idle_timeout_steps`. With `evict_idle`, when no worker has
//! free memory the rule is asked again as if idle sandboxes were free memory,
//! and the chosen worker evicts its least recently used idle sandboxes to make
//! room (as a provider reclaims memory); without it, the activation is
//! throttled.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::rng::{Rng, WordBuild};
use super::trace::Trace;
use crate::placement::{Choice, Policy, Request, WorkerLoad};

mod lifecycle;
mod rules;

/// How cold starts are placed. Warm routing is the real policy's in all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The real `Policy::choose`: spread copies, mix functions.
    Policy,
    /// A uniformly random worker among those that fit.
    Random,
    /// The opposite rule: the fitting worker with the most copies of the function.
    Pack,
    /// Ablation: the real policy without its first key, i.e. the least loaded
    /// worker whatever it holds. Shows what spreading copies adds to balancing.
    Balance,
}

impl Rule {
    /// The comparison the simulator runs by default.
    pub const DEFAULT: [Rule; 3] = [Rule::Policy, Rule::Random, Rule::Pack];
    pub const ALL: [Rule; 4] = [Rule::Policy, Rule::Random, Rule::Pack, Rule::Balance];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Policy => "policy",
            Rule::Random => "random",
            Rule::Pack => "pack",
            Rule::Balance => "balance",
        }
    }
}

/// The simulated fleet; recorded in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FleetParams {
    pub workers: usize,
    pub worker_cpus: u32,
    pub worker_mib: u64,
    pub idle_timeout_steps: u64,
    /// Steps left out of the load statistics while the fleet fills up.
    pub warmup_steps: usize,
    pub evict_idle: bool,
    pub busy_per_cpu: u32,
}

/// Counters of one run (steps after the warm-up only).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Sandbox activations asked for: warm + cold + throttled.
    pub activations: u64,
    pub warm: u64,
    pub cold: u64,
    pub throttled: u64,
    pub reaped: u64,
    pub evicted: u64,
}

/// Host loads after the warm-up, host-major within a step:
/// `loads[(step - warmup) * workers + worker]`.
#[derive(Debug)]
pub struct RunResult {
    pub loads: Vec<f32>,
    /// Busy sandboxes per host-step, same layout: weights invokes' view of load.
    pub busy: Vec<u32>,
    pub counts: Counts,
}

/// Replays `trace` with `rule` on the fleet described by `params`.
pub fn run(trace: &Trace, params: &FleetParams, rule: Rule, seed: u64) -> RunResult {
    let names = FunctionNames::new(trace.functions.len());
    let names = names.all();
    let mut fleet = Fleet::new(trace, params, rule, seed, &names);
    let recorded = trace.steps().saturating_sub(params.warmup_steps) * params.workers;
    let mut result = RunResult {
        loads: Vec::with_capacity(recorded),
        busy: Vec::with_capacity(recorded),
        counts: Counts::default(),
    };
    for step in 0..trace.steps() {
        if step == params.warmup_steps {
            fleet.counts = Counts::default();
        }
        fleet.step(step);
        if step >= params.warmup_steps {
            fleet.record_loads(step, &mut result);
        }
    }
    result.counts = fleet.counts;
    result
}

/// Sandboxes of one function on one worker.
#[derive(Debug, Default)]
struct Placement {
    busy: u32,
    /// Last-use ticks of its idle sandboxes, oldest first.
    idle: VecDeque<u64>,
}

struct Fleet<'a> {
    trace: &'a Trace,
    params: &'a FleetParams,
    rule: Rule,
    policy: Policy,
    /// Function `f`'s name, also its version key (one version per function).
    names: &'a [&'a str],
    /// What the policy sees, kept up to date as sandboxes change.
    views: Vec<WorkerLoad<&'a str, WordBuild>>,
    idle_mib: Vec<u64>,
    /// Per worker, (last-use tick, function) of idle sandboxes in the order they
    /// went idle. Entries of sandboxes taken warm since are stale and skipped.
    idle_order: Vec<VecDeque<(u64, u32)>>,
    /// Per function: worker → its sandboxes there.
    placements: Vec<HashMap<u32, Placement, WordBuild>>,
    busy_of: Vec<u32>,
    rng: Rng,
    counts: Counts,
}

impl<'a> Fleet<'a> {
    fn new(
        trace: &'a Trace,
        params: &'a FleetParams,
        rule: Rule,
        seed: u64,
        names: &'a [&'a str],
    ) -> Self {
        let view = WorkerLoad {
            available: true,
            lease_remaining: Duration::from_secs(86_400),
            capacity_mib: params.worker_mib,
            cpus: params.worker_cpus,
            ..WorkerLoad::default()
        };
        let functions = trace.functions.len();
        Fleet {
            trace,
            params,
            rule,
            policy: Policy {
                busy_per_cpu: params.busy_per_cpu,
            },
            names,
            views: vec![view; params.workers],
            idle_mib: vec![0; params.workers],
            idle_order: vec![VecDeque::new(); params.workers],
            placements: (0..functions).map(|_| HashMap::default()).collect(),
            busy_of: vec![0; functions],
            rng: Rng::stream(seed, 0x000f_1ee7),
            counts: Counts::default(),
        }
    }

    fn request(&self, f: usize) -> Request<'a> {
        Request {
            function: self.names[f],
            version_key: self.names[f],
            memory_mib: self.trace.functions[f].memory_mib,
            min_lease: Duration::from_secs(60),
        }
    }

    fn step(&mut self, step: usize) {
        let now = step as u64;
        self.reap(now);
        let functions = self.trace.functions.len();
        for f in 0..functions {
            let excess = self.busy_of[f].saturating_sub(self.trace.demand(step, f));
            if excess > 0 {
                self.release(f, excess, now);
            }
        }
        // A different start each step, so that no function always goes first.
        let start = self.rng.below(functions.max(1) as u64) as usize;
        for offset in 0..functions {
            let f = (start + offset) % functions;
            let missing = self.trace.demand(step, f).saturating_sub(self.busy_of[f]);
            for placed in 0..missing {
                if !self.activate(f) {
                    self.counts.activations += u64::from(missing - placed - 1);
                    self.counts.throttled += u64::from(missing - placed - 1);
                    break;
                }
            }
        }
    }

    /// Makes `count` randomly chosen busy sandboxes of `f` idle (selection
    /// sampling: each busy sandbox is picked with probability left/remaining).
    fn release(&mut self, f: usize, count: u32, now: u64) {
        let memory_mib = self.trace.functions[f].memory_mib;
        let mut remaining = self.busy_of[f];
        let mut left = count;
        for (&worker, placement) in self.placements[f].iter_mut() {
            let w = worker as usize;
            for _ in 0..placement.busy {
                if left == 0 {
                    break;
                }
                if self.rng.below(u64::from(remaining)) < u64::from(left) {
                    left -= 1;
                    placement.busy -= 1;
                    placement.idle.push_back(now);
                    self.views[w].busy -= 1;
                    set_idle_tick(&mut self.views[w], self.names[f], Some(now));
                    self.idle_order[w].push_back((now, f as u32));
                    self.idle_mib[w] += memory_mib;
                }
                remaining -= 1;
            }
        }
        self.busy_of[f] -= count;
    }

    /// Places one more busy sandbox of `f`; false if throttled.
    fn activate(&mut self, f: usize) -> bool {
        let req = self.request(f);
        self.counts.activations += 1;
        let mut choice = self.pick(&req);
        if choice == Choice::Full && self.params.evict_idle {
            choice = self.pick_reclaiming(&req);
        }
        match choice {
            Choice::Warm(w) => {
                self.take_warm(f, w);
                self.counts.warm += 1;
                true
            }
            Choice::Cold(w) => {
                self.start_cold(f, w);
                self.counts.cold += 1;
                true
            }
            Choice::Full => {
                self.counts.throttled += 1;
                false
            }
        }
    }

    fn record_loads(&self, step: usize, result: &mut RunResult) {
        let first = result.loads.len();
        result.loads.resize(first + self.views.len(), 0.0);
        let loads = &mut result.loads[first..];
        let mut cpu = vec![0.0f64; self.views.len()];
        for (f, placements) in self.placements.iter().enumerate() {
            if self.busy_of[f] == 0 {
                continue;
            }
            let share = self.trace.cpu_share(step, f);
            for (&w, placement) in placements {
                cpu[w as usize] += f64::from(placement.busy) * share;
            }
        }
        for ((load, cpu), view) in loads.iter_mut().zip(&cpu).zip(&self.views) {
            *load = (cpu / f64::from(view.cpus.max(1))) as f32;
            result.busy.push(view.busy);
        }
    }
}

/// Keeps the policy's view of a worker's most recent idle sandbox of a version.
fn set_idle_tick<'a>(view: &mut WorkerLoad<&'a str, WordBuild>, key: &'a str, tick: Option<u64>) {
    match tick {
        Some(tick) => {
            view.idle.insert(key, tick);
        }
        None => {
            view.idle.remove(key);
        }
    }
}

/// Every function's name in one buffer: the policy compares keys on every
/// lookup hit, and names scattered over the heap would each cost a cache miss.
struct FunctionNames {
    buffer: String,
    ends: Vec<usize>,
}

impl FunctionNames {
    fn new(count: usize) -> Self {
        let mut names = FunctionNames {
            buffer: String::new(),
            ends: Vec::with_capacity(count),
        };
        for f in 0..count {
            names.buffer.push_str(&format!("f{f}"));
            names.ends.push(names.buffer.len());
        }
        names
    }

    fn all(&self) -> Vec<&str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.buffer[start..end])
            .collect()
    }
}

#[cfg(test)]
mod tests;
