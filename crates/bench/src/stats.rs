//! Latency statistics: nearest-rank percentiles and the mean of a set of samples, the targets
//! they are checked against, and how both are written in the report.

use std::time::Duration;

/// p50/p95/p99/mean of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Summary {
            samples: ms.len(),
            p50: nearest_rank(&ms, 50.0),
            p95: nearest_rank(&ms, 95.0),
            p99: nearest_rank(&ms, 99.0),
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }
}

/// The nearest-rank percentile `p` (0–100] of sorted, non-empty `sorted`: the smallest sample
/// that at least `p` percent of the samples are less than or equal to.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Which statistic a target bounds.
#[derive(Debug, Clone, Copy)]
pub enum Stat {
    P50,
    P99,
}

impl Stat {
    fn of(self, summary: &Summary) -> f64 {
        match self {
            Stat::P50 => summary.p50,
            Stat::P99 => summary.p99,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P99 => "p99",
        }
    }
}

/// Upper bounds, in milliseconds, that a measurement must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Target(pub &'static [(Stat, f64)]);

impl Target {
    pub fn met(&self, summary: &Summary) -> bool {
        self.0.iter().all(|(stat, max)| stat.of(summary) <= *max)
    }

    /// E.g. `p50 ≤ 10 ms, p99 ≤ 30 ms: PASS`.
    pub fn verdict(&self, summary: &Summary) -> String {
        let bounds: Vec<String> = self
            .0
            .iter()
            .map(|(stat, max)| format!("{} ≤ {max} ms", stat.label()))
            .collect();
        format!("{}: {}", bounds.join(", "), pass(self.met(summary)))
    }
}

pub fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Milliseconds with two decimals (three below one millisecond).
pub fn ms(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.2}")
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 50.0), 50.0);
        assert_eq!(nearest_rank(&sorted, 95.0), 95.0);
        assert_eq!(nearest_rank(&sorted, 99.0), 99.0);
        assert_eq!(nearest_rank(&sorted, 100.0), 100.0);
        assert_eq!(nearest_rank(&[7.0], 99.0), 7.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), 3.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0), 1.0);
    }

    #[test]
    fn summary_and_targets() {
        let samples: Vec<Duration> = [4, 1, 3, 2].map(Duration::from_millis).to_vec();
        let summary = Summary::of(&samples).unwrap();
        assert_eq!((summary.p50, summary.p99, summary.mean), (2.0, 4.0, 2.5));
        assert!(Target(&[(Stat::P50, 2.0), (Stat::P99, 4.0)]).met(&summary));
        assert!(!Target(&[(Stat::P99, 3.9)]).met(&summary));
        assert_eq!(
            Target(&[(Stat::P50, 10.0)]).verdict(&summary),
            "p50 ≤ 10 ms: PASS"
        );
        assert!(Summary::of(&[]).is_none());
    }
}
