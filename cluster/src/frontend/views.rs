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
    pub up: bool,
    pub draining: bool,
    pub lease_end: Instant,
    pub status: Option<WorkerStatus>,
    /// Idle sandboxes per version key (the load's `idle` holds only the MRU tick).
    pub idle_count: HashMap<String, u32>,
    pub down_reason: Option<String>,
}

impl View {
    fn new() -> Self {
        Self {
            up: false,
            draining: false,
            lease_end: Instant::now(),
            status: None,
            idle_count: HashMap::new(),
            down_reason: Some("not connected yet".into()),
        }
    }
}

impl Worker<'_> {
    /// Replaces the picture with a fresh status. `memory` gives a version's memory size
    /// (what this frontend dispatched of it); unknown versions count as 128 MiB.
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
        l.cpus = s.cpus.max(1);
        l.idle.clear();
        l.per_function.clear();
        self.view.idle_count.clear();
        let (mut used, mut busy) = (0, 0);
        for p in &s.pools {
            let key = version_key(&p.function, &p.version, &p.revision);
            let n = p.idle + p.busy;
            used += u64::from(n) * memory.get(&key).copied().unwrap_or(128);
            busy += p.busy;
            *l.per_function.entry(p.function.clone()).or_default() += n;
            if p.idle > 0 {
                let ago = p.idle_for_ms.unwrap_or(0);
                l.idle.insert(key.clone(), now_tick.saturating_sub(ago));
                self.view.idle_count.insert(key, p.idle);
            }
        }
        l.used_mib = used;
        l.busy = busy;
        self.view.lease_end = Instant::now() + Duration::from_millis(s.lease_remaining_ms);
        self.view.draining = s.draining;
        self.view.up = true;
        self.view.down_reason = None;
        self.view.status = Some(s);
        self.refresh(Instant::now());
    }

    pub fn down(&mut self, why: String) {
        self.view.up = false;
        self.view.down_reason = Some(why);
        self.refresh(Instant::now());
    }

    /// Brings the time-dependent parts of the load up to `now`.
    pub fn refresh(&mut self, now: Instant) {
        self.load.lease_remaining = self.view.lease_end.saturating_duration_since(now);
        self.load.available = self.view.up && !self.view.draining;
    }

    /// A warm sandbox of `key` was taken for an invoke.
    pub fn took_warm(&mut self, key: &str) {
        self.load.busy += 1;
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
        self.load.busy += 1;
        self.load.used_mib += memory_mib;
        *self
            .load
            .per_function
            .entry(function.to_owned())
            .or_default() += 1;
    }

    /// An invoke ended; `kept` says whether its sandbox went back to the idle pool.
    pub fn finished(&mut self, function: &str, key: &str, memory_mib: u64, kept: bool, tick: u64) {
        self.load.busy = self.load.busy.saturating_sub(1);
        if kept {
            *self.view.idle_count.entry(key.to_owned()).or_default() += 1;
            self.load.idle.insert(key.to_owned(), tick);
        } else {
            self.load.used_mib = self.load.used_mib.saturating_sub(memory_mib);
            if let Some(n) = self.load.per_function.get_mut(function) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
