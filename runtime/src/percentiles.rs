//! Run statistics: latency percentiles.

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `ns` values, in ms (all 0 when empty).
    pub fn from_ns(ns: &[u64]) -> Self {
        if ns.is_empty() {
            return Self::default();
        }
        let mut v = ns.to_vec();
        v.sort_unstable();
        let rank = |q: f64| {
            let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[k - 1] as f64 / 1e6
        };
        Self {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: v[v.len() - 1] as f64 / 1e6,
            mean: v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ns: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        let p = Percentiles::from_ns(&ns);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert_eq!(Percentiles::from_ns(&[]), Percentiles::default());
    }
}
