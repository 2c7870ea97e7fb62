//! Idle sandboxes of one function version, most recently used last, so the hot end
//! stays busy and the cold end ages out and gets reaped.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct IdleEntry<S> {
    pub sandbox: S,
    pub id: String,
    pub created: Instant,
    pub last_used: Instant,
}

/// Why a sandbox is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    Idle,
    Lease,
    /// Started for a code or configuration revision that has since been replaced.
    Stale,
}

impl Retire {
    pub fn as_str(self) -> &'static str {
        match self {
            Retire::Idle => "idle",
            Retire::Lease => "lease",
            Retire::Stale => "stale",
        }
    }
}

#[derive(Debug)]
pub struct IdleStack<S> {
    entries: Vec<IdleEntry<S>>,
}

impl<S> Default for IdleStack<S> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<S> IdleStack<S> {
    pub fn push(&mut self, entry: IdleEntry<S>) {
        self.entries.push(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the most recently used sandbox whose lease has not expired; expired ones met
    /// on the way are returned for destruction.
    pub fn pop_mru(
        &mut self,
        now: Instant,
        lease: Duration,
    ) -> (Option<IdleEntry<S>>, Vec<IdleEntry<S>>) {
        let mut expired = Vec::new();
        while let Some(e) = self.entries.pop() {
            if now.saturating_duration_since(e.created) >= lease {
                expired.push(e);
            } else {
                return (Some(e), expired);
            }
        }
        (None, expired)
    }

    /// Removes sandboxes idle longer than `idle_timeout` or older than `lease`.
    pub fn drain_expired(
        &mut self,
        now: Instant,
        idle_timeout: Duration,
        lease: Duration,
    ) -> Vec<(IdleEntry<S>, Retire)> {
        let mut out = Vec::new();
        let mut keep = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if now.saturating_duration_since(e.created) >= lease {
                out.push((e, Retire::Lease));
            } else if now.saturating_duration_since(e.last_used) >= idle_timeout {
                out.push((e, Retire::Idle));
            } else {
                keep.push(e);
            }
        }
        self.entries = keep;
        out
    }

    /// When the least recently used sandbox was last used.
    /// When the most recently used idle sandbox was last used.
    pub fn mru_last_used(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.last_used).max()
    }

    pub fn lru_last_used(&self) -> Option<Instant> {
        self.entries.first().map(|e| e.last_used)
    }

    /// Takes the least recently used sandbox (the cold end).
    pub fn pop_lru(&mut self) -> Option<IdleEntry<S>> {
        (!self.entries.is_empty()).then(|| self.entries.remove(0))
    }

    pub fn drain_all(&mut self) -> Vec<IdleEntry<S>> {
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created: Instant, last_used: Instant) -> IdleEntry<()> {
        IdleEntry {
            sandbox: (),
            id: id.into(),
            created,
            last_used,
        }
    }

    #[test]
    fn picks_most_recently_used() {
        let t0 = Instant::now();
        let mut s = IdleStack::default();
        s.push(entry("old", t0, t0));
        s.push(entry("new", t0, t0 + Duration::from_secs(1)));
        let (got, expired) = s.pop_mru(t0 + Duration::from_secs(2), Duration::from_secs(3600));
        assert_eq!(got.unwrap().id, "new");
        assert!(expired.is_empty());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn skips_and_returns_expired_leases() {
        let t0 = Instant::now();
        let mut s = IdleStack::default();
        s.push(entry(
            "young",
            t0 + Duration::from_secs(50),
            t0 + Duration::from_secs(50),
        ));
        s.push(entry("ancient", t0, t0 + Duration::from_secs(60)));
        let (got, expired) = s.pop_mru(t0 + Duration::from_secs(100), Duration::from_secs(90));
        assert_eq!(got.unwrap().id, "young");
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, "ancient");
    }

    #[test]
    fn reaps_idle_and_leased_out() {
        let t0 = Instant::now();
        let mut s = IdleStack::default();
        s.push(entry("idle", t0, t0));
        s.push(entry(
            "lease",
            t0 - Duration::from_secs(1000),
            t0 + Duration::from_secs(9),
        ));
        s.push(entry("fresh", t0, t0 + Duration::from_secs(9)));
        let mut gone = s.drain_expired(
            t0 + Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(500),
        );
        gone.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let ids: Vec<(&str, Retire)> = gone.iter().map(|(e, r)| (e.id.as_str(), *r)).collect();
        assert_eq!(ids, vec![("idle", Retire::Idle), ("lease", Retire::Lease)]);
        assert_eq!(s.len(), 1);
    }
}
