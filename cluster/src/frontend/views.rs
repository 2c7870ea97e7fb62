//! The frontend's picture of each worker for placement: rebuilt from every status the
//! worker reports, and adjusted between reports by what this frontend dispatched.

use crate::link::status::{version_key, WorkerStatus};
use crate::placement::WorkerLoad;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Loads (what placement reads) and the rest, index by index.
pub(crate) struct Views {
    pub loads: Vec<WorkerLoad>,
    pub info: Vec<View>,
}

impl Views {
    pub fn new(n: usize) -> Self {
        Self {
            loads: (0..n).map(|_| blank_load()).collect(),
            info: (0..n).map(|_| View::new()).collect(),
        }
    }

    /// A slot for one more worker; its index.
    pub fn push(&mut self) -> usize {
        self.loads.push(blank_load());
        self.info.push(View::new());
        self.loads.len() - 1
    }

    /// Worker `i` with its load, to update both.
    pub fn at(&mut self, i: usize) -> Option<Worker<'_>> {
        Some(Worker {
            load: self.loads.get_mut(i)?,
            view: self.info.get_mut(i)?,
        })
    }

    pub fn refresh_all(&mut self, now: Instant) {
        for i in 0..self.loads.len() {
            if let Some(mut w) = self.at(i) {
                w.refresh(now);
            }
        }
    }
}

fn blank_load() -> WorkerLoad {
    WorkerLoad {
        available: false,
        lease_remaining: Duration::ZERO,
        capacity_mib: 0,
        used_mib: 0,
        cpus: 1,
        busy: 0,
        idle: HashMap::new(),
        per_function: HashMap::new(),
    }
}

pub(crate) struct Worker<'a> {
    pub load: &'a mut WorkerLoad,
    pub view: &'a mut View,
}

pub(crate) struct View {
    /// On the frontend's list (`--worker`, or registered in etcd now): only listed
    /// workers are placed invokes.
    pub listed: bool,
    pub up: bool,
    pub draining: bool,
    pub lease_end: Instant,
    pub status: Option<WorkerStatus>,
    /// Idle sandboxes per version key (the load's `idle` holds only the MRU tick).
    pub idle_count: HashMap<String, u32>,
    pub down_reason: Option<String>,
    /// This frontend's dispatches to the worker that have not finished: a status may
    /// have been taken before the worker registered them, so they are laid over it.
    pending: Pending,
}

#[derive(Default)]
struct Pending {
    busy: u32,
    cold_mib: u64,
    cold_per_function: HashMap<String, u32>,
    warm_per_key: HashMap<String, u32>,
}

fn bump(map: &mut HashMap<String, u32>, key: &str, up: bool) {
    if up {
        let n = map.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
    } else if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl View {
    fn new() -> Self {
        Self {
            listed: true,
            up: false,
            draining: false,
            lease_end: Instant::now(),
            status: None,
            idle_count: HashMap::new(),
            down_reason: Some("not connected yet".into()),
            pending: Pending::default(),
        }
    }
}

/// Numbers a worker reports are bounded before they are added up: a peer's figures
/// must not overflow the frontend's counters.
const MAX_POOL_COUNT: u32 = 1 << 20;
/// Lambda's largest memory size: a bigger figure from a worker is taken as this.
const MAX_MEMORY_MIB: u32 = 10_240;

impl Worker<'_> {
    /// Replaces the picture with a fresh status, then lays this frontend's unfinished
    /// dispatches over it. A version's memory size is what the worker reports, else
    /// what this frontend dispatched of it (`memory`), else 128 MiB.
    pub fn update(&mut self, s: WorkerStatus, memory: &HashMap<String, u64>, now_tick: u64) {
        let incarnation_changed = self
            .view
            .status
            .as_ref()
            .is_some_and(|old| old.incarnation != s.incarnation);
        if incarnation_changed {
            tracing::info!(worker = %s.id, incarnation = %s.incarnation, "worker rejoined");
        }
        let l = &mut *self.load;
        l.capacity_mib = s.capacity_mib;
        l.cpus = s.cpus.clamp(1, 1 << 16);
        l.idle.clear();
        l.per_function.clear();
        self.view.idle_count.clear();
        let (mut used, mut busy) = (0u64, 0u32);
        for p in &s.pools {
            let key = version_key(&p.function, &p.version, &p.revision);
            let (idle, run) = (p.idle.min(MAX_POOL_COUNT), p.busy.min(MAX_POOL_COUNT));
            let n = idle + run;
            let mib = match p.memory_mib.min(MAX_MEMORY_MIB) {
                0 => memory.get(&key).copied().unwrap_or(128),
                reported => u64::from(reported),
            };
            used = used.saturating_add(u64::from(n).saturating_mul(mib));
            busy = busy.saturating_add(run);
            let f = l.per_function.entry(p.function.clone()).or_default();
            *f = f.saturating_add(n);
            if idle > 0 {
                let ago = p.idle_for_ms.unwrap_or(0);
                l.idle.insert(key.clone(), now_tick.saturating_sub(ago));
                self.view.idle_count.insert(key, idle);
            }
        }
        l.used_mib = used;
        l.busy = busy;
        self.overlay_pending();
        self.view.lease_end = Instant::now() + Duration::from_millis(s.lease_remaining_ms);
        self.view.draining = s.draining;
        self.view.up = true;
        self.view.down_reason = None;
        self.view.status = Some(s);
        self.refresh(Instant::now());
    }

    /// Unfinished dispatches count at least as much as they would on their own.
    fn overlay_pending(&mut self) {
        let (l, p) = (&mut *self.load, &self.view.pending);
        l.busy = l.busy.max(p.busy);
        l.used_mib = l.used_mib.max(p.cold_mib);
        for (f, n) in &p.cold_per_function {
            let have = l.per_function.entry(f.clone()).or_default();
            *have = (*have).max(*n);
        }
        for (key, n) in &p.warm_per_key {
            let left = self
                .view
                .idle_count
                .get(key)
                .map_or(0, |c| c.saturating_sub(*n));
            if left == 0 {
                self.view.idle_count.remove(key);
                l.idle.remove(key);
            } else {
                self.view.idle_count.insert(key.clone(), left);
            }
        }
    }

    pub fn down(&mut self, why: String) {
        self.view.up = false;
        self.view.down_reason = Some(why);
        self.refresh(Instant::now());
    }

    /// Brings the time-dependent parts of the load up to `now`.
    pub fn refresh(&mut self, now: Instant) {
        self.load.lease_remaining = self.view.lease_end.saturating_duration_since(now);
        self.load.available = self.view.listed && self.view.up && !self.view.draining;
    }

    /// A warm sandbox of `key` was taken for an invoke.
    pub fn took_warm(&mut self, key: &str) {
        self.load.busy = self.load.busy.saturating_add(1);
        self.view.pending.busy = self.view.pending.busy.saturating_add(1);
        bump(&mut self.view.pending.warm_per_key, key, true);
        if let Some(n) = self.view.idle_count.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.view.idle_count.remove(key);
                self.load.idle.remove(key);
            }
        }
    }

    /// A sandbox of `function` is starting for an invoke.
    pub fn started_cold(&mut self, function: &str, memory_mib: u64) {
        self.load.busy = self.load.busy.saturating_add(1);
        self.load.used_mib = self.load.used_mib.saturating_add(memory_mib);
        bump(&mut self.load.per_function, function, true);
        let p = &mut self.view.pending;
        p.busy = p.busy.saturating_add(1);
        p.cold_mib = p.cold_mib.saturating_add(memory_mib);
        bump(&mut p.cold_per_function, function, true);
    }

    /// A dispatch ended (`warm` as it was placed); `kept` says whether its sandbox went
    /// back to the idle pool.
    pub fn finished(&mut self, d: &Finished<'_>, tick: u64) {
        let p = &mut self.view.pending;
        p.busy = p.busy.saturating_sub(1);
        if d.warm {
            bump(&mut p.warm_per_key, d.key, false);
        } else {
            p.cold_mib = p.cold_mib.saturating_sub(d.memory_mib);
            bump(&mut p.cold_per_function, d.function, false);
        }
        self.load.busy = self.load.busy.saturating_sub(1);
        if d.kept {
            bump(&mut self.view.idle_count, d.key, true);
            self.load.idle.insert(d.key.to_owned(), tick);
        } else {
            self.load.used_mib = self.load.used_mib.saturating_sub(d.memory_mib);
            if let Some(n) = self.load.per_function.get_mut(d.function) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// What ended, for [`Worker::finished`].
pub(crate) struct Finished<'a> {
    pub function: &'a str,
    pub key: &'a str,
    pub memory_mib: u64,
    pub warm: bool,
    pub kept: bool,
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
