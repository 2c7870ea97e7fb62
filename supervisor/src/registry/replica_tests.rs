//! Registries sharing one log in memory: what one commits the others apply, a race for
//! an entry is lost cleanly, and a failed append leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::replica::{SharedLog, Snapshot};
use super::tests::rec;
use super::*;
use crate::shared::etcd::EtcdError;

#[derive(Default)]
struct MemLog {
    entries: Mutex<BTreeMap<u64, Vec<u8>>>,
    down: AtomicBool,
    /// Entries between snapshots (0: none), and the latest snapshot.
    every: u64,
    snapshot: Mutex<Option<Snapshot>>,
}

/// A handle on a shared [`MemLog`].
struct Handle(Arc<MemLog>);

impl SharedLog for Handle {
    fn append(&self, index: u64, changeset: &[u8]) -> Result<bool, EtcdError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(EtcdError::Unavailable("down".into()));
        }
        let mut e = self.0.entries.lock().unwrap();
        if e.contains_key(&index) {
            return Ok(false);
        }
        e.insert(index, changeset.to_vec());
        Ok(true)
    }

    fn entries_after(&self, applied: u64) -> Result<Vec<(u64, Vec<u8>)>, EtcdError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(EtcdError::Unavailable("down".into()));
        }
        let e = self.0.entries.lock().unwrap();
        Ok(e.range(applied + 1..)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn watch_prefix(&self) -> Option<String> {
        None
    }

    fn snapshot_every(&self) -> u64 {
        self.0.every
    }

    fn save_snapshot(&self, index: u64, parts: &[Vec<u8>]) -> Result<(), EtcdError> {
        *self.0.snapshot.lock().unwrap() = Some(Snapshot {
            index,
            parts: parts.to_vec(),
        });
        let keep = index.saturating_sub(self.0.every) + 1;
        self.0.entries.lock().unwrap().retain(|i, _| *i >= keep);
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, EtcdError> {
        Ok(self.0.snapshot.lock().unwrap().clone())
    }
}

fn on(log: &Arc<MemLog>) -> Registry {
    Registry::open_on_log(Box::new(Handle(log.clone()))).expect("open on log")
}

#[test]
fn what_one_commits_the_others_apply_and_a_new_one_replays() {
    let log = Arc::new(MemLog::default());
    let (a, b) = (on(&log), on(&log));
    a.create(
        &rec("f", LATEST, "r1"),
        Some(&rec("f", "1", "v1")),
        &Tags::new(),
    )
    .unwrap();
    assert_eq!(b.get("f", LATEST).unwrap(), None, "not synced yet");
    // A creation frees no image chunks: nothing to collect.
    assert!(!b.catch_up().unwrap().versions_changed);
    assert_eq!(b.get("f", "1").unwrap(), Some(rec("f", "1", "v1")));
    b.update_latest(&rec("f", LATEST, "r2"), "r1").unwrap();
    b.set_reserved_concurrency("f", 4, ReservationBound::NONE)
        .unwrap();
    let seen = a.catch_up().unwrap();
    assert!(seen.reserved_changed && seen.deleted.is_empty(), "{seen:?}");
    assert!(
        seen.versions_changed,
        "an update of $LATEST may replace its code"
    );
    assert_eq!(a.get("f", LATEST).unwrap().unwrap().revision_id, "r2");
    assert_eq!(a.reserved_concurrency("f").unwrap(), Some(4));
    // A registry opened later rebuilds everything from the log.
    let c = on(&log);
    assert_eq!(c.get("f", LATEST).unwrap().unwrap().revision_id, "r2");
    assert_eq!(c.reserved_concurrency("f").unwrap(), Some(4));
}

#[test]
fn the_loser_of_a_race_runs_again_on_the_winners_state() {
    let log = Arc::new(MemLog::default());
    let (a, b) = (on(&log), on(&log));
    a.create(&rec("f", LATEST, "a"), None, &Tags::new())
        .unwrap();
    // B has not seen A's entry: its create commits locally, loses entry 1, is undone,
    // and runs again after applying A's, which refuses it.
    let lost = b.create(&rec("f", LATEST, "b"), None, &Tags::new());
    assert!(
        matches!(lost, Err(RegistryError::AlreadyExists(_))),
        "{lost:?}"
    );
    assert_eq!(b.get("f", LATEST).unwrap().unwrap().revision_id, "a");
    // A stale revision check is made against the newest state too.
    b.update_latest(&rec("f", LATEST, "b2"), "a").unwrap();
    let stale = a.update_latest(&rec("f", LATEST, "a2"), "a");
    assert!(matches!(stale, Err(RegistryError::Conflict)), "{stale:?}");
    assert_eq!(log.entries.lock().unwrap().len(), 2);
}

#[test]
fn reservations_made_on_two_frontends_at_once_stay_within_the_bound_together() {
    let log = Arc::new(MemLog::default());
    let (a, b) = (on(&log), on(&log));
    for name in ["f", "g"] {
        a.create(&rec(name, LATEST, "r"), None, &Tags::new())
            .unwrap();
    }
    b.sync().unwrap();
    let bound = ReservationBound {
        max_total: 10,
        unreserved_minimum: 5,
    };
    a.set_reserved_concurrency("f", 6, bound).unwrap();
    // B has not seen A's reservation; alone, 6 more would fit. Its write loses the
    // log entry, runs again on A's state, and its check refuses it there.
    let over = b.set_reserved_concurrency("g", 6, bound);
    assert!(
        matches!(
            over,
            Err(RegistryError::OverReserved {
                unreserved_minimum: 5
            })
        ),
        "{over:?}"
    );
    assert_eq!(b.reserved_concurrency("g").unwrap(), None);
    b.set_reserved_concurrency("g", 4, bound).unwrap();
    a.sync().unwrap();
    assert_eq!(
        a.all_reserved_concurrency().unwrap().values().sum::<u32>(),
        10
    );
}

#[test]
fn deletions_by_others_are_reported_with_cascaded_rows_applied_once() {
    let log = Arc::new(MemLog::default());
    let (a, b) = (on(&log), on(&log));
    a.create(
        &rec("f", LATEST, "r1"),
        Some(&rec("f", "1", "v1")),
        &Tags::new(),
    )
    .unwrap();
    a.create(
        &rec("g", LATEST, "r1"),
        Some(&rec("g", "1", "v1")),
        &Tags::new(),
    )
    .unwrap();
    a.set_reserved_concurrency("f", 2, ReservationBound::NONE)
        .unwrap();
    b.sync().unwrap();
    a.delete_version("g", "1").unwrap();
    a.delete_function("f").unwrap();
    let seen = b.catch_up().unwrap();
    let deleted: Vec<_> = seen.deleted.iter().cloned().collect();
    assert!(deleted.contains(&("f".into(), None)), "{deleted:?}");
    assert!(
        deleted.contains(&("g".into(), Some("1".into()))),
        "{deleted:?}"
    );
    assert!(seen.reserved_changed && seen.versions_changed);
    assert_eq!(b.get("f", LATEST).unwrap(), None);
    assert_eq!(b.get("g", "1").unwrap(), None);
    assert!(b.get("g", LATEST).unwrap().is_some());
    assert_eq!(b.reserved_concurrency("f").unwrap(), None);
}

#[test]
fn a_change_the_log_does_not_take_is_undone() {
    let log = Arc::new(MemLog::default());
    let a = on(&log);
    a.create(&rec("f", LATEST, "r1"), None, &Tags::new())
        .unwrap();
    log.down.store(true, Ordering::SeqCst);
    let refused = a.update_latest(&rec("f", LATEST, "r2"), "r1");
    match refused {
        Err(RegistryError::Shared(e)) => assert!(e.is_transient(), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.get("f", LATEST).unwrap().unwrap().revision_id, "r1");
    log.down.store(false, Ordering::SeqCst);
    a.update_latest(&rec("f", LATEST, "r2"), "r1").unwrap();
    assert_eq!(
        on(&log).get("f", LATEST).unwrap().unwrap().revision_id,
        "r2"
    );
}

#[test]
fn a_single_hosts_file_seeds_an_empty_log_once() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("r.db");
    let single = Registry::open(&path).unwrap();
    for i in 0..600 {
        let name = format!("f{i}");
        single
            .create(&rec(&name, LATEST, "r1"), None, &Tags::new())
            .unwrap();
    }
    single
        .set_reserved_concurrency("f7", 3, ReservationBound::NONE)
        .unwrap();
    drop(single);
    let log = Arc::new(MemLog::default());
    let (rows, entries) = seed::seed(&Handle(log.clone()), &path).unwrap();
    assert_eq!(rows, 1201, "600 functions, 600 versions, 1 reservation");
    assert!(entries >= 5, "batches of at most 256 rows: {entries}");
    let shared = on(&log);
    assert!(shared.get("f599", LATEST).unwrap().is_some());
    assert_eq!(shared.reserved_concurrency("f7").unwrap(), Some(3));
    assert!(
        seed::seed(&Handle(log), &path).is_err(),
        "the log is no longer empty"
    );
}

#[test]
fn snapshots_compact_the_log_and_a_copy_far_behind_or_new_starts_from_one() {
    let log = Arc::new(MemLog {
        every: 4,
        ..MemLog::default()
    });
    let (a, behind) = (on(&log), on(&log));
    behind
        .create(
            &rec("gone", LATEST, "r"),
            Some(&rec("gone", "1", "v")),
            &Tags::new(),
        )
        .unwrap();
    for i in 0..9 {
        a.create(&rec(&format!("f{i}"), LATEST, "r1"), None, &Tags::new())
            .unwrap();
    }
    a.set_reserved_concurrency("f3", 2, ReservationBound::NONE)
        .unwrap();
    a.delete_function("gone").unwrap();
    // 12 entries: snapshots at 4, 8 and 12; the log keeps 9..=12.
    let at = log
        .snapshot
        .lock()
        .unwrap()
        .as_ref()
        .expect("a snapshot")
        .index;
    assert_eq!(at, 12);
    assert_eq!(
        log.entries
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![9, 10, 11, 12]
    );
    // A new copy starts from the snapshot alone.
    let fresh = on(&log);
    assert!(fresh.get("f8", LATEST).unwrap().is_some());
    assert_eq!(fresh.get("gone", LATEST).unwrap(), None);
    assert_eq!(fresh.reserved_concurrency("f3").unwrap(), Some(2));
    // `behind` stopped at entry 1: the entries it lacks are gone, so it loads the
    // snapshot, and learns that "gone" was deleted.
    let seen = behind.catch_up().unwrap();
    assert!(
        seen.deleted.contains(&("gone".to_owned(), None)),
        "{seen:?}"
    );
    assert!(seen.reserved_changed);
    assert!(behind.get("f0", LATEST).unwrap().is_some());
    assert_eq!(behind.get("gone", "1").unwrap(), None);
    // And it writes on from there.
    behind
        .create(&rec("after", LATEST, "r"), None, &Tags::new())
        .unwrap();
    a.sync().unwrap();
    assert!(a.get("after", LATEST).unwrap().is_some());
}
