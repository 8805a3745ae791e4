//! A log-bucketed histogram in the spirit of HdrHistogram: values below 256 are exact, larger
//! values fall in buckets whose width is at most 1/128 of their value (relative error below
//! 0.8 %). Values above [`MAX_VALUE`] are clamped. Counts merge by addition; the wire form lists
//! only non-empty buckets.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (above the exact range).
const SUB: u64 = 128;
/// Values below this are recorded exactly.
const EXACT: u64 = 2 * SUB;
/// Largest power-of-two shift used; values up to about 2^48 are kept.
const MAX_SHIFT: u32 = 40;
/// Number of buckets.
const BUCKETS: usize = (EXACT + MAX_SHIFT as u64 * SUB) as usize;
/// Largest value kept without clamping.
pub const MAX_VALUE: u64 = ((2 * SUB) << MAX_SHIFT) - 1;

fn index_of(v: u64) -> usize {
    let v = v.min(MAX_VALUE);
    if v < EXACT {
        return v as usize;
    }
    let shift = (64 - v.leading_zeros()) - 8; // >= 1; v >> shift is in [128, 256)
    (EXACT + u64::from(shift - 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// Lowest and highest value of bucket `i`.
fn bounds_of(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let shift = (i - EXACT) / SUB + 1;
    let low = ((i - EXACT) % SUB + SUB) << shift;
    (low, low + (1 << shift) - 1)
}

/// A histogram of `u64` values (the load tool records microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        let v = v.min(MAX_VALUE);
        self.counts[index_of(v)] += n;
        self.count += n;
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest recorded value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Largest recorded value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the highest value equivalent to the recorded value
    /// of rank `ceil(q * count)` (at least 1), capped by the maximum. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bounds_of(i).1.min(self.max).max(self.min);
            }
        }
        self.max
    }
}

/// Serialized form: only non-empty buckets, as `[index, count]` pairs.
#[derive(Serialize, Deserialize)]
struct Wire {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    buckets: Vec<(u32, u64)>,
}

impl From<Histogram> for Wire {
    fn from(h: Histogram) -> Self {
        Wire {
            count: h.count,
            sum: h.sum,
            min: h.min,
            max: h.max,
            buckets: h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u32, *c))
                .collect(),
        }
    }
}

impl From<Wire> for Histogram {
    fn from(w: Wire) -> Self {
        let mut h = Histogram {
            count: w.count,
            sum: w.sum,
            min: w.min,
            max: w.max,
            ..Histogram::default()
        };
        for (i, c) in w.buckets {
            if let Some(slot) = h.counts.get_mut(i as usize) {
                *slot += c;
            }
        }
        h
    }
}

/// A histogram many tasks record into concurrently (relaxed atomics, no lock).
#[derive(Debug)]
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, v: u64) {
        let v = v.min(MAX_VALUE);
        self.counts[index_of(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed); // µs: no overflow in practice
        self.min.fetch_min(v, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// A consistent-enough copy (exact once recording has stopped).
    pub fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        Histogram {
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Ordering::Relaxed),
            min: self.min.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut expect_low = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds_of(i);
            assert_eq!(lo, expect_low, "bucket {i}");
            assert!(hi >= lo);
            assert!(
                (hi - lo) as f64 <= lo as f64 / 128.0 + 1e-9,
                "bucket {i} too wide"
            );
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(hi), i);
            expect_low = hi + 1;
        }
        assert_eq!(expect_low - 1, MAX_VALUE);
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn exact_percentiles_for_small_values() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.value_at_quantile(0.5), 50);
        assert_eq!(h.value_at_quantile(0.9), 90);
        assert_eq!(h.value_at_quantile(0.99), 99);
        assert_eq!(h.value_at_quantile(0.999), 100);
        assert_eq!(h.value_at_quantile(1.0), 100);
        assert_eq!(h.value_at_quantile(0.0), 1);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
        assert_eq!(Histogram::new().value_at_quantile(0.5), 0);
    }

    #[test]
    fn large_values_within_relative_error() {
        let mut h = Histogram::new();
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * 997).collect();
        for &v in &values {
            h.record(v);
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let rank = (q * values.len() as f64).ceil() as usize;
            let exact = values[rank - 1];
            let got = h.value_at_quantile(q);
            assert!(got >= exact, "q={q}: {got} < {exact}");
            assert!(
                (got - exact) as f64 <= exact as f64 / 128.0,
                "q={q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.value_at_quantile(1.0), 9_970_000);
    }

    #[test]
    fn merge_and_wire_round_trip() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 0..5000u64 {
            let x = v * v;
            if v % 3 == 0 { &mut a } else { &mut b }.record(x);
            all.record(x);
        }
        let json = serde_json::to_string(&b).unwrap();
        let b2: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(b2, b);
        a.merge(&b2);
        assert_eq!(a, all);
        let atomic = AtomicHistogram::new();
        for v in 0..5000u64 {
            atomic.record(v * v);
        }
        assert_eq!(atomic.snapshot(), all);
    }
}
