//! Statistics over host-step loads.

use serde::Serialize;

/// CPU load (busy CPU / CPUs) over all host-steps of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStats {
    pub mean: f64,
    pub max: f64,
    /// Max over hosts and steps / mean over hosts and steps.
    pub peak_to_mean: f64,
    /// Mean over hosts of (that host's max / that host's mean).
    pub host_peak_to_mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// p99 of the load seen by busy sandboxes: host-steps weighted by their
    /// busy sandboxes, the view of an invoke rather than of a host.
    pub p99_seen_by_invokes: f64,
    /// Latency model: slowdown 1 / (1 - p99 load); null when p99 ≥ 1 (unbounded).
    pub p99_slowdown: Option<f64>,
}

impl LoadStats {
    /// `loads` and `busy` are step-major with `workers` entries per step.
    pub fn new(loads: &[f32], busy: &[u32], workers: usize) -> Self {
        let mean = mean(loads);
        let max = loads.iter().copied().fold(0.0f32, f32::max) as f64;
        let mut sorted = loads.to_vec();
        sorted.sort_unstable_by(f32::total_cmp);
        let p99 = sorted_quantile(&sorted, 0.99);
        LoadStats {
            mean,
            max,
            peak_to_mean: ratio(max, mean),
            host_peak_to_mean: host_peak_to_mean(loads, workers),
            p50: sorted_quantile(&sorted, 0.5),
            p99,
            p999: sorted_quantile(&sorted, 0.999),
            p99_seen_by_invokes: weighted_quantile(loads, busy, 0.99),
            p99_slowdown: slowdown(p99),
        }
    }
}

/// M/M/1 processor-sharing slowdown at load `load`; None when unbounded.
pub fn slowdown(load: f64) -> Option<f64> {
    (load < 1.0).then(|| 1.0 / (1.0 - load))
}

pub fn mean(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|&value| f64::from(value)).sum::<f64>() / values.len() as f64
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Quantile `q` without sorting everything (for the many fleet-search runs).
pub fn quantile(values: &[f32], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut copy = values.to_vec();
    let rank = quantile_rank(copy.len(), q);
    let (_, nth, _) = copy.select_nth_unstable_by(rank, f32::total_cmp);
    f64::from(*nth)
}

fn sorted_quantile(sorted: &[f32], q: f64) -> f64 {
    sorted
        .get(quantile_rank(sorted.len(), q))
        .map_or(0.0, |&value| f64::from(value))
}

/// Nearest-rank index of quantile `q` among `len` values.
fn quantile_rank(len: usize, q: f64) -> usize {
    ((q * len as f64).ceil() as usize).clamp(1, len.max(1)) - 1
}

/// Quantile of `values` where each value counts `weights[i]` times.
fn weighted_quantile(values: &[f32], weights: &[u32], q: f64) -> f64 {
    let total: u64 = weights.iter().map(|&weight| u64::from(weight)).sum();
    if total == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| weights[i] > 0).collect();
    order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
    let target = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for i in order {
        seen += u64::from(weights[i]);
        if seen >= target {
            return f64::from(values[i]);
        }
    }
    0.0
}

fn host_peak_to_mean(loads: &[f32], workers: usize) -> f64 {
    if workers == 0 || loads.is_empty() {
        return 0.0;
    }
    let mut sum = vec![0.0f64; workers];
    let mut peak = vec![0.0f64; workers];
    for step in loads.chunks_exact(workers) {
        for (w, &load) in step.iter().enumerate() {
            sum[w] += f64::from(load);
            peak[w] = peak[w].max(f64::from(load));
        }
    }
    let steps = (loads.len() / workers) as f64;
    let ratios: Vec<f64> = (0..workers)
        .filter(|&w| sum[w] > 0.0)
        .map(|w| peak[w] / (sum[w] / steps))
        .collect();
    ratios.iter().sum::<f64>() / ratios.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let values: Vec<f32> = (1..=1000).map(|v| v as f32).collect();
        assert_eq!(quantile(&values, 0.99), 990.0);
        assert_eq!(sorted_quantile(&values, 0.999), 999.0);
        assert_eq!(quantile(&values, 0.5), 500.0);
        // A load seen by 9 busy sandboxes outweighs one seen by 1.
        assert_eq!(weighted_quantile(&[0.1, 0.9], &[1, 9], 0.5), 0.9f32 as f64);
    }

    #[test]
    fn host_peak_to_mean_averages_per_host() {
        // Host 0: loads 1, 3 (peak/mean 1.5); host 1: 2, 2 (1.0).
        let loads = [1.0, 2.0, 3.0, 2.0];
        assert!((host_peak_to_mean(&loads, 2) - 1.25).abs() < 1e-9);
        let stats = LoadStats::new(&loads, &[1, 1, 1, 1], 2);
        assert!((stats.peak_to_mean - 1.5).abs() < 1e-9);
        assert_eq!(slowdown(0.8).map(|s| (s * 10.0).round()), Some(50.0));
        assert_eq!(slowdown(1.0), None);
    }
}
