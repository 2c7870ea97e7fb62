//! Time since the kernel started, from `/proc/uptime`.

use std::time::Duration;

/// Parses the first field of `/proc/uptime` ("12.34 56.78").
pub fn parse(text: &str) -> Option<Duration> {
    let first = text.split_whitespace().next()?;
    let secs: f64 = first.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Reads the time since kernel start, or `None` when `/proc` is unavailable.
pub fn since_kernel_start() -> Option<Duration> {
    parse(&std::fs::read_to_string("/proc/uptime").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uptime() {
        assert_eq!(parse("1.25 3.00\n"), Some(Duration::from_millis(1250)));
        assert_eq!(parse(""), None);
        assert_eq!(parse("abc 1"), None);
        assert_eq!(parse("-1 1"), None);
    }
}
