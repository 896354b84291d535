//! Latency samples and their summary.

use std::time::Duration;

/// Latencies of one scenario, and how long the whole run took.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    latencies: Vec<Duration>,
    /// Completed operations (may exceed the latencies kept).
    pub(crate) operations: u64,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
}

impl Samples {
    pub(crate) fn push(&mut self, latency: Duration) {
        self.latencies.push(latency);
    }

    pub(crate) fn extend(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.operations += other.operations;
    }

    /// The samples of every task of a run that started at `started`, with the run's wall time.
    pub(crate) async fn of_tasks(
        tasks: Vec<tokio::task::JoinHandle<Samples>>,
        started: tokio::time::Instant,
    ) -> Samples {
        let mut all = Samples::default();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        all.elapsed = started.elapsed();
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.latencies.len()
    }

    /// The `q`-quantile (0..=1) in microseconds, nearest rank.
    pub(crate) fn quantile_us(&mut self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let rank = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[rank].as_secs_f64() * 1e6
    }

    pub(crate) fn ops_per_s(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut samples = Samples::default();
        for us in 1..=100 {
            samples.push(Duration::from_micros(us));
        }
        assert_eq!(samples.quantile_us(0.5).round(), 51.0);
        assert_eq!(samples.quantile_us(0.99).round(), 99.0);
        assert_eq!(samples.quantile_us(0.0).round(), 1.0);
    }
}
