//! Per-client accounting of sequence numbers: every delivery is new, a duplicate, or new but
//! out of order (below the highest seen so far). Seen numbers are kept as sorted, disjoint,
//! non-adjacent ranges, so an in-order stream costs one range whatever its length and memory
//! grows only with the number of gaps.

use serde::{Deserialize, Serialize};

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First delivery of this number, not below the highest seen.
    New,
    /// First delivery of this number, but a higher one arrived before it.
    OutOfOrder,
    /// Delivered before.
    Duplicate,
}

/// Sequence accounting of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Inclusive ranges of distinct numbers seen, sorted, disjoint and non-adjacent.
    ranges: Vec<(u64, u64)>,
    max_seen: u64,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one delivery of `seq`.
    pub fn record(&mut self, seq: u64) -> Seen {
        self.delivered += 1;
        // Index of the first range whose end is >= seq - 1 (the range seq could touch or extend).
        let i = self
            .ranges
            .partition_point(|&(_, hi)| hi.saturating_add(1) < seq);
        let seen = match self.ranges.get(i).copied() {
            Some((lo, hi)) if lo <= seq && seq <= hi => {
                self.duplicates += 1;
                return Seen::Duplicate;
            }
            Some((lo, hi)) if hi.saturating_add(1) == seq => {
                // Extends range i upwards; maybe joins range i + 1.
                self.ranges[i].1 = seq;
                if let Some(&(next_lo, next_hi)) = self.ranges.get(i + 1)
                    && next_lo == seq.saturating_add(1)
                {
                    self.ranges[i] = (lo, next_hi);
                    self.ranges.remove(i + 1);
                }
                self.classify(seq)
            }
            Some((lo, _)) if seq.saturating_add(1) == lo => {
                self.ranges[i].0 = seq;
                self.classify(seq)
            }
            _ => {
                self.ranges.insert(i, (seq, seq));
                self.classify(seq)
            }
        };
        self.max_seen = self.max_seen.max(seq);
        seen
    }

    fn classify(&mut self, seq: u64) -> Seen {
        if self.delivered > 1 + self.duplicates && seq < self.max_seen {
            self.out_of_order += 1;
            Seen::OutOfOrder
        } else {
            Seen::New
        }
    }

    /// Deliveries recorded (including duplicates).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Distinct numbers seen.
    pub fn unique(&self) -> u64 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    /// Distinct numbers seen within `lo..=hi`.
    pub fn unique_in(&self, lo: u64, hi: u64) -> u64 {
        if lo > hi {
            return 0;
        }
        self.ranges
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(lo), b.min(hi));
                if a <= b { b - a + 1 } else { 0 }
            })
            .sum()
    }

    /// Numbers of `lo..=hi` never seen.
    pub fn missing_in(&self, lo: u64, hi: u64) -> u64 {
        if lo > hi {
            return 0;
        }
        (hi - lo + 1) - self.unique_in(lo, hi)
    }

    /// Number of gap-separated ranges held (memory use is proportional to it).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// The counters of this tracker against the expected numbers `1..=expected`.
    pub fn counts(&self, expected: u64) -> SeqCounts {
        SeqCounts {
            expected,
            delivered: self.delivered,
            unique: self.unique_in(1, expected),
            missing: self.missing_in(1, expected),
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            unexpected: self.unique() - self.unique_in(1, expected),
        }
    }
}

/// Delivery counters of one client, or summed over clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqCounts {
    /// Numbers the client should have received.
    pub expected: u64,
    /// Deliveries, duplicates included.
    pub delivered: u64,
    /// Distinct expected numbers received.
    pub unique: u64,
    /// Expected numbers never received.
    pub missing: u64,
    /// Deliveries of a number already received.
    pub duplicates: u64,
    /// First deliveries below a number already received.
    pub out_of_order: u64,
    /// Distinct numbers received outside `1..=expected`.
    pub unexpected: u64,
}

impl SeqCounts {
    pub fn add(&mut self, o: &SeqCounts) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.unique += o.unique;
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> (SeqTracker, Vec<Seen>) {
        let mut t = SeqTracker::new();
        let seen = seqs.iter().map(|&s| t.record(s)).collect();
        (t, seen)
    }

    #[test]
    fn in_order_is_one_range() {
        let seqs: Vec<u64> = (1..=1000).collect();
        let (t, seen) = run(&seqs);
        assert!(seen.iter().all(|s| *s == Seen::New));
        assert_eq!(t.ranges(), 1);
        assert_eq!(
            t.counts(1000),
            SeqCounts {
                expected: 1000,
                delivered: 1000,
                unique: 1000,
                ..Default::default()
            }
        );
    }

    #[test]
    fn missing_duplicates_out_of_order() {
        use Seen::*;
        let (t, seen) = run(&[1, 2, 2, 5, 4, 3, 7, 1, 9]);
        assert_eq!(
            seen,
            vec![
                New, New, Duplicate, New, OutOfOrder, OutOfOrder, New, Duplicate, New
            ]
        );
        assert_eq!(t.ranges(), 3); // 1-5, 7, 9
        let c = t.counts(10);
        assert_eq!(c.delivered, 9);
        assert_eq!(c.unique, 7);
        assert_eq!(c.missing, 3); // 6, 8, 10
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.out_of_order, 2);
        assert_eq!(c.unexpected, 0);
        // Fewer expected than received: the rest is unexpected.
        let c = t.counts(5);
        assert_eq!((c.unique, c.missing, c.unexpected), (5, 0, 2));
        assert_eq!(t.counts(0).missing, 0);
    }

    #[test]
    fn first_delivery_is_never_out_of_order_and_gaps_merge() {
        use Seen::*;
        let (t, seen) = run(&[50, 10, 12, 11, 49, 13]);
        assert_eq!(
            seen,
            vec![
                New, OutOfOrder, OutOfOrder, OutOfOrder, OutOfOrder, OutOfOrder
            ]
        );
        assert_eq!(t.ranges(), 2); // 10-13, 49-50
        assert_eq!(t.unique_in(1, 100), 6);
        assert_eq!(t.missing_in(10, 13), 0);
        assert_eq!(t.missing_in(1, 50), 44);
    }

    #[test]
    fn matches_a_naive_model() {
        // Deterministic pseudo-random sequences against a set-based model.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200 {
            let mut t = SeqTracker::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut max = 0;
            let (mut dup, mut ooo) = (0, 0);
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let s = 1 + x % 120;
                let want = if !seen.insert(s) {
                    dup += 1;
                    Seen::Duplicate
                } else if s < max {
                    ooo += 1;
                    Seen::OutOfOrder
                } else {
                    Seen::New
                };
                max = max.max(s);
                assert_eq!(t.record(s), want);
            }
            let c = t.counts(100);
            assert_eq!(c.duplicates, dup);
            assert_eq!(c.out_of_order, ooo);
            assert_eq!(c.unique, seen.range(1..=100).count() as u64);
            assert_eq!(c.missing, 100 - c.unique);
            assert_eq!(c.unexpected, seen.range(101..).count() as u64);
        }
    }
}
