//! The harness: replays a trace on a fleet of simulated workers, placing every
//! sandbox activation through a placement rule, and records each host's CPU
//! load per step.
//!
//! Sandbox lifecycle: at each step a function's busy sandboxes are set to its
//! demand. Fewer needed: randomly chosen busy ones go idle. More needed: each
//! extra one is placed by the rule: warm on an idle sandbox (MRU, by the real
//! policy, for every rule) or cold on a worker. Sandboxes never move. Idle ones
//! are reaped after `idle_timeout_steps`; with `evict_idle`, a placement that
//! finds the fleet full first evicts the least recently used idle sandboxes of
//! one worker (as a provider reclaims memory) and tries again.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::rng::{Rng, WordBuild};
use super::trace::Trace;
use crate::placement::{memory_load_cmp, tie_rank, Choice, Policy, Request, WorkerLoad};

/// How cold starts are placed. Warm routing is the real policy's in all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The real `Policy::choose`: spread copies, mix functions.
    Policy,
    /// A uniformly random worker among those that fit.
    Random,
    /// The opposite rule: the fitting worker with the most copies of the function.
    Pack,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Policy, Rule::Random, Rule::Pack];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Policy => "policy",
            Rule::Random => "random",
            Rule::Pack => "pack",
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
    if std::env::var_os("SIM_DEBUG").is_some() {
        let idle: usize = fleet.views.iter().map(|v| v.idle.len()).sum();
        let per: usize = fleet.views.iter().map(|v| v.per_function.len()).sum();
        let used: u64 = fleet.views.iter().map(|v| v.used_mib).sum();
        let busy: u32 = fleet.views.iter().map(|v| v.busy).sum();
        eprintln!(
            "DEBUG idle keys/worker {} functions/worker {} used {:.2} busy {}",
            idle / fleet.views.len(),
            per / fleet.views.len(),
            used as f64 / (fleet.views.len() as f64 * params.worker_mib as f64),
            busy
        );
    }
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
        loop {
            match self.pick(&req) {
                Choice::Warm(w) => {
                    self.take_warm(f, w);
                    self.counts.warm += 1;
                    return true;
                }
                Choice::Cold(w) => {
                    self.start_cold(f, w);
                    self.counts.cold += 1;
                    return true;
                }
                Choice::Full => {
                    if !(self.params.evict_idle && self.evict_for(&req)) {
                        self.counts.throttled += 1;
                        return false;
                    }
                }
            }
        }
    }

    fn pick(&mut self, req: &Request<'_>) -> Choice {
        if self.rule == Rule::Policy {
            return self.policy.choose(&self.views, req);
        }
        if let Some(w) = self.policy.warm(&self.views, req) {
            return Choice::Warm(w);
        }
        let cold = match self.rule {
            Rule::Random => self.random_fit(req),
            _ => self.packing_fit(req),
        };
        cold.map_or(Choice::Full, Choice::Cold)
    }

    /// Reservoir sampling over the workers that fit.
    fn random_fit(&mut self, req: &Request<'_>) -> Option<usize> {
        let mut chosen = None;
        let mut fitting = 0;
        for (w, view) in self.views.iter().enumerate() {
            if self.policy.can_start(view, req) {
                fitting += 1;
                if self.rng.below(fitting) == 0 {
                    chosen = Some(w);
                }
            }
        }
        chosen
    }

    /// Most copies of the function first; then the real policy's tie-breaks.
    fn packing_fit(&self, req: &Request<'_>) -> Option<usize> {
        let copies = |view: &WorkerLoad<&str, WordBuild>| {
            view.per_function.get(req.function).copied().unwrap_or(0)
        };
        (0..self.views.len())
            .filter(|&w| self.policy.can_start(&self.views[w], req))
            .min_by(|&a, &b| {
                let (view_a, view_b) = (&self.views[a], &self.views[b]);
                copies(view_b)
                    .cmp(&copies(view_a))
                    .then_with(|| memory_load_cmp(view_a, view_b))
                    .then_with(|| tie_rank(req.function, b).cmp(&tie_rank(req.function, a)))
            })
    }

    fn take_warm(&mut self, f: usize, w: usize) {
        let placement = self.placements[f]
            .get_mut(&(w as u32))
            .expect("warm worker holds the function");
        placement
            .idle
            .pop_back()
            .expect("warm worker has an idle sandbox");
        placement.busy += 1;
        let most_recent = placement.idle.back().copied();
        set_idle_tick(&mut self.views[w], self.names[f], most_recent);
        self.views[w].busy += 1;
        self.idle_mib[w] -= self.trace.functions[f].memory_mib;
        self.busy_of[f] += 1;
    }

    fn start_cold(&mut self, f: usize, w: usize) {
        self.placements[f].entry(w as u32).or_default().busy += 1;
        let view = &mut self.views[w];
        view.busy += 1;
        view.used_mib += self.trace.functions[f].memory_mib;
        *view.per_function.entry(self.names[f]).or_default() += 1;
        self.busy_of[f] += 1;
    }

    /// Reaps idle sandboxes unused for the idle timeout.
    fn reap(&mut self, now: u64) {
        for w in 0..self.views.len() {
            while let Some(&(tick, f)) = self.idle_order[w].front() {
                if tick + self.params.idle_timeout_steps > now {
                    break;
                }
                self.idle_order[w].pop_front();
                if self.destroy_oldest_idle(w, f as usize, tick) {
                    self.counts.reaped += 1;
                }
            }
        }
    }

    /// Frees memory for `req` on the eligible worker whose oldest idle sandbox
    /// is the oldest in the fleet, among workers where that can make room.
    fn evict_for(&mut self, req: &Request<'_>) -> bool {
        let mut victim: Option<(usize, u64)> = None;
        for w in 0..self.views.len() {
            let view = &self.views[w];
            let room_after = view
                .capacity_mib
                .saturating_sub(view.used_mib - self.idle_mib[w]);
            if !self.policy.can_run(view, req) || room_after < req.memory_mib {
                continue;
            }
            if let Some(oldest) = self.oldest_idle(w) {
                if victim.is_none_or(|(_, best)| oldest < best) {
                    victim = Some((w, oldest));
                }
            }
        }
        let Some((w, _)) = victim else { return false };
        while self.views[w].used_mib + req.memory_mib > self.views[w].capacity_mib {
            let Some((tick, f)) = self.idle_order[w].pop_front() else {
                break;
            };
            if self.destroy_oldest_idle(w, f as usize, tick) {
                self.counts.evicted += 1;
            }
        }
        true
    }

    /// Last-use tick of the oldest idle sandbox on `w`, dropping stale entries.
    fn oldest_idle(&mut self, w: usize) -> Option<u64> {
        while let Some(&(tick, f)) = self.idle_order[w].front() {
            let front = self.placements[f as usize]
                .get(&(w as u32))
                .and_then(|p| p.idle.front());
            if front == Some(&tick) {
                return Some(tick);
            }
            self.idle_order[w].pop_front();
        }
        None
    }

    /// Destroys the oldest idle sandbox of `f` on `w` if it went idle at `tick`
    /// (otherwise the entry was stale: that sandbox was taken warm since).
    fn destroy_oldest_idle(&mut self, w: usize, f: usize, tick: u64) -> bool {
        let key = w as u32;
        let Some(placement) = self.placements[f].get_mut(&key) else {
            return false;
        };
        if placement.idle.front() != Some(&tick) {
            return false;
        }
        placement.idle.pop_front();
        let now_empty = placement.idle.is_empty();
        if now_empty && placement.busy == 0 {
            self.placements[f].remove(&key);
        }
        let memory_mib = self.trace.functions[f].memory_mib;
        let view = &mut self.views[w];
        view.used_mib -= memory_mib;
        self.idle_mib[w] -= memory_mib;
        if now_empty {
            set_idle_tick(view, self.names[f], None);
        }
        let copies = view
            .per_function
            .get_mut(self.names[f])
            .expect("counted sandbox");
        *copies -= 1;
        if *copies == 0 {
            view.per_function.remove(self.names[f]);
        }
        true
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
mod tests {
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
}
