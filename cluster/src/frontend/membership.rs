//! Which workers the frontend places invokes on: those given by `--worker`, and those
//! registered in etcd now ([`Frontend::set_discovered`], fed by the supervisor's watch
//! of the membership keys).

use super::remote::{self, RemoteWorker};
use super::Frontend;
use std::sync::Arc;
use std::time::Instant;

/// A worker registered in etcd: its certificate's identity and its link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedWorker {
    pub id: String,
    /// `HOST:PORT`.
    pub link: String,
}

impl ListedWorker {
    fn is(&self, w: &RemoteWorker) -> bool {
        w.expected_id.as_deref() == Some(self.id.as_str()) && w.addr == self.link
    }
}

impl Frontend {
    /// Gives `w` a slot (listed) and starts its link task; its index.
    pub(super) fn add_worker(&self, w: RemoteWorker) -> usize {
        let w = Arc::new(w);
        // Views before workers, as everywhere.
        let index = {
            let mut views = self.views();
            let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
            let index = views.push();
            debug_assert_eq!(index, workers.len());
            workers.push(w.clone());
            index
        };
        if w.set_listed(true) {
            self.runtime
                .spawn(remote::run(index, w, self.links.clone()));
        }
        index
    }

    /// Makes the workers known from etcd exactly `listed`: new ones get a slot and a
    /// link, ones no longer listed are placed nothing (their link task ends once the
    /// link is down), and ones listed again are placed again. `--worker` ones stay.
    pub fn set_discovered(&self, listed: &[ListedWorker]) {
        let current = self.all_workers();
        for (i, w) in current.iter().enumerate().filter(|(_, w)| w.discovered) {
            self.list(i, w, listed.iter().any(|l| l.is(w)));
        }
        for l in listed {
            let known = current.iter().any(|w| {
                if w.discovered {
                    l.is(w)
                } else {
                    w.addr == l.link
                }
            });
            if !known {
                tracing::info!(worker = %l.id, link = %l.link, "worker joined");
                self.add_worker(RemoteWorker::new(&format!("{}@{}", l.id, l.link), true));
            }
        }
    }

    fn list(&self, index: usize, w: &Arc<RemoteWorker>, on: bool) {
        if w.is_listed() != on {
            tracing::info!(worker = %w.addr, listed = on, "worker membership changed");
        }
        if let Some(mut v) = self.views().at(index) {
            v.view.listed = on;
            v.refresh(Instant::now());
        }
        if w.set_listed(on) {
            self.runtime
                .spawn(remote::run(index, w.clone(), self.links.clone()));
        }
    }
}
