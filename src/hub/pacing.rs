//! Accept pacing: at most `REALTIME_MAX_NEW_STREAMS_PER_SECOND` new streams per second on
//! this instance (a token bucket holding one second of them), so a reconnect storm is
//! admitted at a pace the instance can serve while its live clients keep their delivery.
//! Beyond it a stream is refused with a `Retry-After` jittered over a few seconds, so the
//! refused clients do not come back together either.

use std::sync::Mutex;
use std::time::Instant;

use super::jitter;
use crate::metrics::Metrics;

/// Most seconds a refused client is told to wait (uniformly from 1).
pub const RETRY_AFTER_SPREAD_SECS: u32 = 5;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token at `now` if there is one (after refilling since the last call).
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Admits new streams at the configured pace; the one writer of `paced_refusals_total`.
#[derive(Debug)]
pub struct AcceptPacer {
    /// Tokens per second; `None`: no limit.
    rate: Option<f64>,
    bucket: Mutex<Bucket>,
    metrics: Metrics,
}

impl AcceptPacer {
    /// A pacer admitting `per_second` new streams a second (0: unlimited), starting full.
    pub fn new(per_second: u32, metrics: Metrics) -> Self {
        let rate = (per_second > 0).then_some(f64::from(per_second));
        Self {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate.unwrap_or(0.0),
                at: Instant::now(),
            }),
            metrics,
        }
    }

    /// Admits one new stream, or answers how many seconds the client should wait.
    pub fn admit(&self) -> Result<(), u32> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let admitted =
            self.bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(Instant::now(), rate, rate);
        if admitted {
            Ok(())
        } else {
            self.metrics.paced_refusals.inc();
            Err(jitter::retry_after_secs(RETRY_AFTER_SPREAD_SECS))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_beyond_the_rate_is_refused_and_the_rate_comes_back() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 5.0,
            at: start,
        };
        let admitted = (0..20).filter(|_| bucket.take(start, 5.0, 5.0)).count();
        assert_eq!(admitted, 5, "one second of burst");
        // 0.4 s later: two more.
        let later = start + Duration::from_millis(400);
        let admitted = (0..20).filter(|_| bucket.take(later, 5.0, 5.0)).count();
        assert_eq!(admitted, 2);
        // A long pause refills to the burst, no further.
        let much_later = later + Duration::from_secs(60);
        let admitted = (0..20)
            .filter(|_| bucket.take(much_later, 5.0, 5.0))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn refusals_are_counted_and_jittered() {
        let metrics = Metrics::new();
        let pacer = AcceptPacer::new(3, metrics.clone());
        let results: Vec<Result<(), u32>> = (0..200).map(|_| pacer.admit()).collect();
        let refused: Vec<u32> = results.iter().filter_map(|r| r.err()).collect();
        // The bucket may refill a token or two while the loop runs on a slow machine.
        assert!(refused.len() >= 190, "{} refused", refused.len());
        assert_eq!(metrics.paced_refusals.get(), refused.len() as u64);
        assert!(
            refused
                .iter()
                .all(|s| (1..=RETRY_AFTER_SPREAD_SECS).contains(s))
        );
        assert!(refused.iter().any(|s| *s != refused[0]), "not jittered");
        let unlimited = AcceptPacer::new(0, Metrics::new());
        assert!((0..10_000).all(|_| unlimited.admit().is_ok()));
    }
}
