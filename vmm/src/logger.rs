//! Structured stderr logger and a per-call-site rate limiter for guest-triggerable lines.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Process start as seen by the VMM (set first thing in `main`).
pub fn start_instant() -> Instant {
    *START.get_or_init(Instant::now)
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = start_instant().elapsed();
        let thread = std::thread::current();
        let line = format!(
            "[vmm {:>4}.{:06} {:<5} {}] {}\n",
            t.as_secs(),
            t.subsec_micros(),
            record.level(),
            thread.name().unwrap_or("?"),
            record.args()
        );
        // One write per line so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

#[derive(Debug, thiserror::Error)]
#[error("unknown log level {0:?} (expected error, warn, info, debug, trace or off)")]
pub struct LevelError(String);

pub fn parse_level(s: &str) -> Result<log::LevelFilter, LevelError> {
    s.parse().map_err(|_| LevelError(s.to_owned()))
}

/// Installs the logger; a second call only changes the level.
pub fn init(level: log::LevelFilter) {
    start_instant();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Allows `BURST` lines per `WINDOW_MS` window for one call site.
pub struct RateLimiter {
    window_start_ms: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

const BURST: u64 = 10;
const WINDOW_MS: u64 = 5000;

impl RateLimiter {
    pub const fn new() -> Self {
        Self {
            window_start_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(suppressed_since_last)` when a line may be logged now.
    pub fn check(&self) -> Option<u64> {
        let now = start_instant().elapsed().as_millis() as u64;
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < BURST {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// `rl_log!(warn, "fmt", args..)`: like `log::warn!` but rate limited per call site.
#[macro_export]
macro_rules! rl_log {
    ($lvl:ident, $($arg:tt)+) => {{
        static LIMITER: $crate::logger::RateLimiter = $crate::logger::RateLimiter::new();
        if let Some(suppressed) = LIMITER.check() {
            if suppressed > 0 {
                log::$lvl!("({} similar messages suppressed)", suppressed);
            }
            log::$lvl!($($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_burst_then_suppresses() {
        let l = RateLimiter::new();
        let allowed = (0..100).filter(|_| l.check().is_some()).count();
        assert_eq!(allowed as u64, BURST);
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 100 - BURST);
    }

    #[test]
    fn level_parsing() {
        assert_eq!(parse_level("debug").unwrap(), log::LevelFilter::Debug);
        assert!(parse_level("loud").is_err());
    }
}
