//! Worker metrics in the Prometheus text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bounds in seconds (sub-millisecond warm invokes up to 15 min).
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
    900.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    invocations: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    throttles: BTreeMap<String, u64>,
    reaped: BTreeMap<String, u64>,
    cold_starts: u64,
    invoke_latency: Histogram,
    init_latency: Histogram,
}

/// Sandbox counts by state, supplied by the pool at render time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxCounts {
    pub idle: u64,
    pub busy: u64,
    pub starting: u64,
}

/// Counters and histograms of one worker.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(v) => *v += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn invocation(&self, function: &str, latency: Duration) {
        self.with(|i| {
            bump(&mut i.invocations, function);
            i.invoke_latency.observe(latency);
        });
    }

    pub fn error(&self, error_type: &str) {
        self.with(|i| bump(&mut i.errors, error_type));
    }

    pub fn throttle(&self, reason: &str) {
        self.with(|i| bump(&mut i.throttles, reason));
    }

    pub fn cold_start(&self, init: Duration) {
        self.with(|i| {
            i.cold_starts += 1;
            i.init_latency.observe(init);
        });
    }

    pub fn reaped(&self, why: &str) {
        self.with(|i| bump(&mut i.reaped, why));
    }

    pub fn cold_starts(&self) -> u64 {
        self.with(|i| i.cold_starts)
    }

    /// Renders every metric; `sandboxes` is the current state census.
    pub fn render(&self, sandboxes: SandboxCounts) -> String {
        let mut out = String::new();
        self.with(|i| {
            out.push_str("# HELP worker_invocations_total Invocations that ran in a sandbox.\n");
            out.push_str("# TYPE worker_invocations_total counter\n");
            for (f, n) in &i.invocations {
                let _ = writeln!(
                    out,
                    "worker_invocations_total{{function=\"{}\"}} {n}",
                    esc(f)
                );
            }
            out.push_str("# HELP worker_errors_total Invocation errors by Lambda error type.\n");
            out.push_str("# TYPE worker_errors_total counter\n");
            for (t, n) in &i.errors {
                let _ = writeln!(out, "worker_errors_total{{type=\"{}\"}} {n}", esc(t));
            }
            out.push_str("# HELP worker_throttles_total Invocations refused with 429.\n");
            out.push_str("# TYPE worker_throttles_total counter\n");
            for (r, n) in &i.throttles {
                let _ = writeln!(out, "worker_throttles_total{{reason=\"{}\"}} {n}", esc(r));
            }
            out.push_str("# HELP worker_sandboxes_reaped_total Sandboxes retired.\n");
            out.push_str("# TYPE worker_sandboxes_reaped_total counter\n");
            for (r, n) in &i.reaped {
                let _ = writeln!(
                    out,
                    "worker_sandboxes_reaped_total{{reason=\"{}\"}} {n}",
                    esc(r)
                );
            }
            out.push_str("# HELP worker_cold_starts_total Sandboxes started for an invocation.\n");
            out.push_str("# TYPE worker_cold_starts_total counter\n");
            let _ = writeln!(out, "worker_cold_starts_total {}", i.cold_starts);
            out.push_str("# HELP worker_sandboxes Sandboxes by state.\n");
            out.push_str("# TYPE worker_sandboxes gauge\n");
            for (state, n) in [
                ("idle", sandboxes.idle),
                ("busy", sandboxes.busy),
                ("starting", sandboxes.starting),
            ] {
                let _ = writeln!(out, "worker_sandboxes{{state=\"{state}\"}} {n}");
            }
            out.push_str("# HELP worker_invoke_duration_seconds Invocation latency.\n");
            out.push_str("# TYPE worker_invoke_duration_seconds histogram\n");
            i.invoke_latency
                .render(&mut out, "worker_invoke_duration_seconds");
            out.push_str("# HELP worker_init_duration_seconds Sandbox start plus init.\n");
            out.push_str("# TYPE worker_init_duration_seconds histogram\n");
            i.init_latency
                .render(&mut out, "worker_init_duration_seconds");
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.invocation("echo:$LATEST", Duration::from_micros(700));
        m.invocation("echo:$LATEST", Duration::from_secs(2));
        m.error("Sandbox.Timedout");
        m.throttle("ConcurrentInvocationLimitExceeded");
        m.cold_start(Duration::from_millis(20));
        let text = m.render(SandboxCounts {
            idle: 2,
            busy: 1,
            starting: 0,
        });
        assert!(text.contains("worker_invocations_total{function=\"echo:$LATEST\"} 2\n"));
        assert!(text.contains("worker_errors_total{type=\"Sandbox.Timedout\"} 1\n"));
        assert!(text.contains("worker_sandboxes{state=\"idle\"} 2\n"));
        assert!(text.contains("worker_invoke_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("worker_invoke_duration_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("worker_invoke_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("worker_invoke_duration_seconds_count 2\n"));
        assert!(text.contains("worker_cold_starts_total 1\n"));
        assert_eq!(esc("a\"b\\"), "a\\\"b\\\\");
    }
}
