//! Link counters: handshakes, refusals by reason, bytes; rendered as Prometheus text.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a handshake (or, for [`RefusalReason::BadRecord`], an established link) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to the cluster CA.
    UnknownCa,
    /// The certificate is expired or not yet valid.
    Expired,
    /// The certificate is on the cluster CA's revocation list.
    Revoked,
    /// The certificate names the other role than the one expected.
    WrongRole,
    /// The certificate chains to the CA but carries no valid `lambda-cluster://` identity.
    BadIdentity,
    /// A record failed to decrypt or parse (tampering, corruption).
    BadRecord,
    /// Anything else: I/O errors, protocol errors, other alerts.
    Other,
}

impl RefusalReason {
    /// Every reason, in the order of [`RefusalReason::index`].
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::NoCertificate,
        RefusalReason::UnknownCa,
        RefusalReason::Expired,
        RefusalReason::Revoked,
        RefusalReason::WrongRole,
        RefusalReason::BadIdentity,
        RefusalReason::BadRecord,
        RefusalReason::Other,
    ];

    /// The snake_case label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoCertificate => "no_certificate",
            RefusalReason::UnknownCa => "unknown_ca",
            RefusalReason::Expired => "expired",
            RefusalReason::Revoked => "revoked",
            RefusalReason::WrongRole => "wrong_role",
            RefusalReason::BadIdentity => "bad_identity",
            RefusalReason::BadRecord => "bad_record",
            RefusalReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters for the links of one process (or one listener / dialer), shared by the
/// verifiers, [`super::accept`] / [`super::connect`] and [`super::Counted`].
#[derive(Debug, Default)]
pub struct LinkStats {
    handshakes: AtomicU64,
    handshake_micros_total: AtomicU64,
    handshake_micros_max: AtomicU64,
    refusals: [AtomicU64; RefusalReason::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl LinkStats {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a completed handshake that took `took`.
    pub fn record_handshake(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.handshakes.fetch_add(1, Relaxed);
        self.handshake_micros_total.fetch_add(micros, Relaxed);
        self.handshake_micros_max.fetch_max(micros, Relaxed);
    }

    /// Counts one refusal.
    pub fn record_refusal(&self, reason: RefusalReason) {
        self.refusals[reason.index()].fetch_add(1, Relaxed);
    }

    /// Counts plaintext bytes received.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }

    /// Counts plaintext bytes sent.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }

    /// Completed handshakes.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Relaxed)
    }

    /// Sum of the durations of completed handshakes, in microseconds.
    pub fn handshake_micros_total(&self) -> u64 {
        self.handshake_micros_total.load(Relaxed)
    }

    /// Longest completed handshake, in microseconds.
    pub fn handshake_micros_max(&self) -> u64 {
        self.handshake_micros_max.load(Relaxed)
    }

    /// Refusals counted for `reason`.
    pub fn refusals(&self, reason: RefusalReason) -> u64 {
        self.refusals[reason.index()].load(Relaxed)
    }

    /// Refusals over all reasons.
    pub fn refusals_total(&self) -> u64 {
        RefusalReason::ALL.iter().map(|r| self.refusals(*r)).sum()
    }

    /// Plaintext bytes received through [`super::Counted`].
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Relaxed)
    }

    /// Plaintext bytes sent through [`super::Counted`].
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }

    /// The counters in the Prometheus text format, metric names starting with `prefix`:
    /// `<prefix>_link_handshakes_total`, `<prefix>_link_handshake_seconds_{sum,count}`,
    /// `<prefix>_link_handshake_seconds_max`, `<prefix>_link_refusals_total{reason=..}`
    /// (every reason, zeros included) and `<prefix>_link_bytes_total{direction="in|out"}`.
    pub fn render(&self, prefix: &str) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out, prefix);
        out
    }

    fn render_into(&self, out: &mut String, p: &str) -> fmt::Result {
        let secs = |micros: u64| micros as f64 / 1e6;
        let handshakes = self.handshakes();
        header(
            out,
            p,
            "handshakes_total",
            "counter",
            "Completed TLS handshakes.",
        )?;
        writeln!(out, "{p}_link_handshakes_total {handshakes}")?;
        let help = "Time spent in completed TLS handshakes.";
        header(out, p, "handshake_seconds", "summary", help)?;
        let sum = secs(self.handshake_micros_total());
        writeln!(out, "{p}_link_handshake_seconds_sum {sum}")?;
        writeln!(out, "{p}_link_handshake_seconds_count {handshakes}")?;
        let help = "Longest completed TLS handshake.";
        header(out, p, "handshake_seconds_max", "gauge", help)?;
        let max = secs(self.handshake_micros_max());
        writeln!(out, "{p}_link_handshake_seconds_max {max}")?;
        let help = "Refused handshakes and bad records, by reason.";
        header(out, p, "refusals_total", "counter", help)?;
        for reason in RefusalReason::ALL {
            let n = self.refusals(reason);
            writeln!(out, "{p}_link_refusals_total{{reason=\"{reason}\"}} {n}")?;
        }
        header(
            out,
            p,
            "bytes_total",
            "counter",
            "Plaintext bytes through links.",
        )?;
        for (direction, n) in [("in", self.bytes_in()), ("out", self.bytes_out())] {
            writeln!(out, "{p}_link_bytes_total{{direction=\"{direction}\"}} {n}")?;
        }
        Ok(())
    }
}

/// The `# HELP` and `# TYPE` lines of `<prefix>_link_<name>`.
fn header(out: &mut String, prefix: &str, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {prefix}_link_{name} {help}")?;
    writeln!(out, "# TYPE {prefix}_link_{name} {kind}")
}
