//! What the frontend tells operators: `/metrics` lines and `cluster status`.

use super::Frontend;
use crate::link::FORGET_PATH;
use bytes::Bytes;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One worker in `cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSummary {
    pub id: Option<String>,
    pub address: String,
    pub role: &'static str,
    /// Given by `--worker`, or registered in etcd now: only listed workers are placed
    /// invokes (one off the list shows here while its link is still up).
    pub listed: bool,
    pub up: bool,
    pub draining: bool,
    pub incarnation: Option<String>,
    pub lease_remaining_secs: f64,
    pub in_flight: u64,
    pub sandboxes: u32,
    pub idle: u32,
    pub capacity_mib: u64,
    pub used_mib: u64,
    pub invokes_sent: u64,
    pub down_reason: Option<String>,
}

impl Frontend {
    pub fn summary(&self) -> Vec<WorkerSummary> {
        let mut views = self.views();
        views.refresh_all(Instant::now());
        let workers = self.all_workers();
        views
            .loads
            .iter()
            .zip(&views.info)
            .zip(&workers)
            .filter(|((_, v), _)| v.listed || v.up)
            .map(|((l, v), w)| {
                let s = v.status.as_ref();
                WorkerSummary {
                    id: s.map(|s| s.id.clone()).or_else(|| w.expected_id.clone()),
                    address: w.addr.clone(),
                    role: "worker",
                    listed: v.listed,
                    up: v.up,
                    draining: v.draining,
                    incarnation: s.map(|s| s.incarnation.clone()),
                    lease_remaining_secs: l.lease_remaining.as_secs_f64(),
                    in_flight: s.map_or(0, |s| s.in_flight),
                    sandboxes: l.per_function.values().sum(),
                    idle: v.idle_count.values().sum(),
                    capacity_mib: l.capacity_mib,
                    used_mib: l.used_mib,
                    invokes_sent: w.sent.load(Ordering::Relaxed),
                    down_reason: v.down_reason.clone(),
                }
            })
            .collect()
    }

    /// Prometheus text: this frontend's links, and each worker as it last reported.
    pub fn metrics(&self) -> String {
        let mut t = self.stats.render("frontend");
        let _ = writeln!(t, "# TYPE frontend_invokes_lost_total counter");
        let _ = writeln!(
            t,
            "frontend_invokes_lost_total {}",
            self.lost.load(Ordering::Relaxed)
        );
        let rows = self.summary();
        for (name, kind) in [
            ("frontend_worker_up", "gauge"),
            ("frontend_worker_sandboxes", "gauge"),
            ("frontend_worker_lease_remaining_seconds", "gauge"),
            ("frontend_worker_invokes_sent_total", "counter"),
        ] {
            let _ = writeln!(t, "# TYPE {name} {kind}");
            for r in &rows {
                let v = match name {
                    "frontend_worker_up" => f64::from(u8::from(r.listed && r.up && !r.draining)),
                    "frontend_worker_sandboxes" => f64::from(r.sandboxes),
                    "frontend_worker_lease_remaining_seconds" => r.lease_remaining_secs,
                    _ => r.invokes_sent as f64,
                };
                let _ = writeln!(t, "{name}{{worker=\"{}\"}} {v}", r.address);
            }
        }
        t
    }

    /// Tells every reachable worker a function (or version) is gone, or, with
    /// `current_revision`, that older revisions of `version` are.
    pub fn forget(&self, function: &str, version: Option<&str>, current_revision: Option<&str>) {
        let body = serde_json::json!({
            "function": function,
            "version": version,
            "current_revision": current_revision,
        })
        .to_string();
        for w in self.all_workers() {
            let Some(send) = w.sender() else { continue };
            let body = Bytes::from(body.clone());
            tokio::spawn(async move {
                if let Ok(req) = http::Request::post(format!("http://link{FORGET_PATH}")).body(()) {
                    let _ = send.send(req, Some(body)).await;
                }
            });
        }
    }
}
