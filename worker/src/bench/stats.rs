//! Latency percentiles and throughput of one benchmark run.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunStats {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// With `max_us`: rare stalls that the percentiles hide but throughput feels.
    pub mean_us: f64,
    pub max_us: f64,
    pub per_second: f64,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latencies and error count of one client task.
pub type Samples = (Vec<Duration>, usize);

/// Awaits the client tasks of one run and summarises their samples.
pub async fn collect(
    concurrency: usize,
    tasks: Vec<tokio::task::JoinHandle<Samples>>,
    start: std::time::Instant,
) -> RunStats {
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    summarize(concurrency, all, errors, start.elapsed())
}

pub fn summarize(
    concurrency: usize,
    mut samples: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
) -> RunStats {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    RunStats {
        concurrency,
        requests: samples.len(),
        errors,
        p50_us: us(percentile(&samples, 50.0)),
        p99_us: us(percentile(&samples, 99.0)),
        mean_us: us(samples.iter().sum::<Duration>() / samples.len().max(1) as u32),
        max_us: us(samples.last().copied().unwrap_or_default()),
        per_second: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = summarize(4, samples, 1, Duration::from_secs(2));
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.per_second, 50.0);
        assert_eq!(s.errors, 1);
        assert_eq!(summarize(1, vec![], 0, Duration::from_secs(1)).p50_us, 0.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
