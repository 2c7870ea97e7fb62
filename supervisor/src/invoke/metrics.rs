//! Frontend counters for `/metrics` (Prometheus text), rendered beside the worker's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// End-to-end request latency bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 60.0, 900.0,
];

#[derive(Default)]
struct Inner {
    /// (invocation type, HTTP status) → count.
    requests: BTreeMap<(&'static str, u16), u64>,
    function_errors: BTreeMap<String, u64>,
    throttles: BTreeMap<&'static str, u64>,
    events: BTreeMap<&'static str, u64>,
    latency_buckets: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
}

#[derive(Default)]
pub struct FrontMetrics {
    inner: Mutex<Inner>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl FrontMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request(&self, kind: &'static str, status: u16, elapsed: Duration) {
        self.with(|i| {
            *i.requests.entry((kind, status)).or_default() += 1;
            let v = elapsed.as_secs_f64();
            for (n, b) in BUCKETS.iter().enumerate() {
                if v <= *b {
                    i.latency_buckets[n] += 1;
                }
            }
            i.latency_sum += v;
            i.latency_count += 1;
        });
    }

    pub fn function_error(&self, error_type: &str) {
        self.with(|i| *i.function_errors.entry(error_type.to_owned()).or_default() += 1);
    }

    pub fn throttle(&self, reason: &'static str) {
        self.with(|i| *i.throttles.entry(reason).or_default() += 1);
    }

    /// Event lifecycle: `queued`, `succeeded`, `retried`, `dropped`.
    pub fn event(&self, what: &'static str) {
        self.with(|i| *i.events.entry(what).or_default() += 1);
    }

    pub fn render(&self, queue_depth: Option<u64>) -> String {
        let mut out = String::new();
        self.with(|i| {
            out.push_str("# HELP supervisor_invoke_requests_total Invoke API requests by invocation type and HTTP status.\n");
            out.push_str("# TYPE supervisor_invoke_requests_total counter\n");
            for ((kind, status), n) in &i.requests {
                let _ = writeln!(
                    out,
                    "supervisor_invoke_requests_total{{type=\"{kind}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str("# HELP supervisor_function_errors_total Invocations answered with X-Amz-Function-Error, by error type.\n");
            out.push_str("# TYPE supervisor_function_errors_total counter\n");
            for (t, n) in &i.function_errors {
                let _ = writeln!(out, "supervisor_function_errors_total{{type=\"{}\"}} {n}", esc(t));
            }
            out.push_str("# HELP supervisor_throttles_total Invocations refused with 429, by reason.\n");
            out.push_str("# TYPE supervisor_throttles_total counter\n");
            for (r, n) in &i.throttles {
                let _ = writeln!(out, "supervisor_throttles_total{{reason=\"{r}\"}} {n}");
            }
            out.push_str("# HELP supervisor_events_total Asynchronous invocations by outcome.\n");
            out.push_str("# TYPE supervisor_events_total counter\n");
            for (w, n) in &i.events {
                let _ = writeln!(out, "supervisor_events_total{{outcome=\"{w}\"}} {n}");
            }
            out.push_str("# HELP supervisor_invoke_request_duration_seconds Invoke API latency, request received to response ready.\n");
            out.push_str("# TYPE supervisor_invoke_request_duration_seconds histogram\n");
            for (n, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "supervisor_invoke_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                    i.latency_buckets[n]
                );
            }
            let _ = writeln!(
                out,
                "supervisor_invoke_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                i.latency_count
            );
            let _ = writeln!(out, "supervisor_invoke_request_duration_seconds_sum {}", i.latency_sum);
            let _ = writeln!(out, "supervisor_invoke_request_duration_seconds_count {}", i.latency_count);
        });
        if let Some(d) = queue_depth {
            out.push_str("# HELP supervisor_event_queue_depth Asynchronous invocations stored and not yet finished.\n");
            out.push_str("# TYPE supervisor_event_queue_depth gauge\n");
            let _ = writeln!(out, "supervisor_event_queue_depth {d}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = FrontMetrics::default();
        m.request("RequestResponse", 200, Duration::from_micros(800));
        m.request("RequestResponse", 429, Duration::from_micros(50));
        m.function_error("Sandbox.Timedout");
        m.throttle("ReservedFunctionConcurrentInvocationLimitExceeded");
        m.event("queued");
        let t = m.render(Some(3));
        assert!(t.contains(
            "supervisor_invoke_requests_total{type=\"RequestResponse\",status=\"429\"} 1\n"
        ));
        assert!(t.contains("supervisor_function_errors_total{type=\"Sandbox.Timedout\"} 1\n"));
        assert!(t.contains("supervisor_invoke_request_duration_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(t.contains("supervisor_invoke_request_duration_seconds_count 2\n"));
        assert!(t.contains("supervisor_event_queue_depth 3\n"));
        assert!(t.contains("supervisor_events_total{outcome=\"queued\"} 1\n"));
    }
}
