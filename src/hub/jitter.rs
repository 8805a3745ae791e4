//! Random spreads for the hub's timings, so clients that were told the same thing at the
//! same moment do not all come back at the same moment.

use std::time::Duration;

/// `base` moved by up to `fraction` of itself either way (uniformly): `around(30 min, 0.1)`
/// is between 27 and 33 minutes.
pub fn around(base: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    base.mul_f64(1.0 - fraction + 2.0 * fraction * fastrand::f64())
}

/// A reconnection delay for a `retry:` frame: uniformly between half and one and a half
/// times the configured one.
pub fn retry_ms(base_ms: u64) -> u64 {
    let low = base_ms / 2;
    low + fastrand::u64(0..=base_ms)
}

/// A `Retry-After` in whole seconds, uniformly in `1..=most`.
pub fn retry_after_secs(most: u32) -> u32 {
    fastrand::u32(1..=most.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_bounds_and_spreads() {
        let base = Duration::from_secs(100);
        let ages: Vec<Duration> = (0..1000).map(|_| around(base, 0.1)).collect();
        assert!(ages.iter().all(|a| *a >= Duration::from_secs(90)));
        assert!(ages.iter().all(|a| *a <= Duration::from_secs(110)));
        let (min, max) = (ages.iter().min().unwrap(), ages.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(15), "{min:?}..{max:?}");
        let retries: Vec<u64> = (0..1000).map(|_| retry_ms(3000)).collect();
        assert!(retries.iter().all(|r| (1500..=4500).contains(r)));
        assert!(retries.iter().max().unwrap() - retries.iter().min().unwrap() > 2000);
        let after: Vec<u32> = (0..1000).map(|_| retry_after_secs(5)).collect();
        assert!(after.iter().all(|s| (1..=5).contains(s)));
        assert_eq!(
            after.iter().collect::<std::collections::HashSet<_>>().len(),
            5
        );
        assert_eq!(retry_after_secs(0), 1);
    }
}
