//! Peak rates for the `rolling-restart` report: per instance, the most new streams in one
//! second, counted by the clients (streams subscribed per Unix second, by the instance named in
//! `X-Realtime-Instance`) and by the hubs (successive samples of a cumulative counter).

use std::collections::BTreeMap;

use serde::Serialize;

/// The peak of one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstancePeak {
    /// The instance's id ("" when the server names none).
    pub instance: String,
    /// The highest rate, per second.
    pub per_second: f64,
    /// When (Unix seconds; for sampled counters, the end of the interval).
    pub at_unix_s: u64,
    /// Seconds or samples the figure was taken from.
    pub points: u64,
}

/// Per instance, the busiest second among `(instance, unix_second, count)` rows at or after
/// `from_unix_s`; rows of one (instance, second) may repeat (merged shards) and are summed.
pub fn busiest_second(rows: &[(String, u64, u64)], from_unix_s: u64) -> Vec<InstancePeak> {
    let mut per: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for (instance, second, n) in rows {
        if *second >= from_unix_s {
            *per.entry(instance).or_default().entry(*second).or_default() += n;
        }
    }
    per.into_iter()
        .map(|(instance, seconds)| {
            let (at, n) = seconds
                .iter()
                .max_by_key(|&(s, n)| (*n, std::cmp::Reverse(*s)))
                .map_or((0, 0), |(s, n)| (*s, *n));
            InstancePeak {
                instance: instance.to_string(),
                per_second: n as f64,
                at_unix_s: at,
                points: seconds.len() as u64,
            }
        })
        .collect()
}

/// The highest rate between successive samples `(ts_ms, cumulative counter)` of one instance
/// (any order, repeats allowed). Intervals shorter than `min_interval_ms` are merged into the
/// next one, so two samples taken a few milliseconds apart do not make a spike. A counter that
/// goes down (not expected within one instance) restarts the measurement.
pub fn peak_rate(samples: &[(u64, u64)], min_interval_ms: u64) -> Option<(f64, u64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.dedup_by_key(|s| s.0);
    let mut best: Option<(f64, u64)> = None;
    let mut base = *sorted.first()?;
    for &(ts, value) in &sorted[1..] {
        if value < base.1 {
            base = (ts, value);
            continue;
        }
        let dt = ts - base.0;
        if dt < min_interval_ms.max(1) {
            continue;
        }
        let rate = (value - base.1) as f64 * 1000.0 / dt as f64;
        if best.is_none_or(|(b, _)| rate > b) {
            best = Some((rate, ts / 1000));
        }
        base = (ts, value);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: &str, s: u64, n: u64) -> (String, u64, u64) {
        (i.to_string(), s, n)
    }

    #[test]
    fn busiest_second_sums_shards_and_skips_early_rows() {
        let rows = [
            row("a", 100, 900), // the initial connect, before `from`
            row("a", 110, 40),
            row("a", 111, 30),
            row("a", 111, 25), // another shard, same second: 55
            row("b", 112, 7),
            row("", 113, 1),
        ];
        let peaks = busiest_second(&rows, 110);
        assert_eq!(
            peaks,
            vec![
                InstancePeak {
                    instance: String::new(),
                    per_second: 1.0,
                    at_unix_s: 113,
                    points: 1
                },
                InstancePeak {
                    instance: "a".into(),
                    per_second: 55.0,
                    at_unix_s: 111,
                    points: 2
                },
                InstancePeak {
                    instance: "b".into(),
                    per_second: 7.0,
                    at_unix_s: 112,
                    points: 1
                },
            ]
        );
        assert!(busiest_second(&rows, 200).is_empty());
    }

    #[test]
    fn peak_rate_between_samples() {
        // 10/s, then 310 in 1 s, then nothing, then 5/s; unordered and with a repeat.
        let samples = [
            (3_000, 330),
            (1_000, 10),
            (2_000, 20),
            (1_500, 15),
            (3_500, 330),
            (2_000, 20),
            (4_500, 335),
        ];
        let (rate, at) = peak_rate(&samples, 500).unwrap();
        assert!((rate - 310.0).abs() < 1e-9, "{rate}");
        assert_eq!(at, 3);
        // Samples closer than the minimum interval are merged with the next.
        let close = [(0, 0), (10, 50), (1_010, 60)];
        let (rate, _) = peak_rate(&close, 500).unwrap();
        assert!((rate - 60.0 / 1.01).abs() < 1e-6, "{rate}");
        // A counter that restarts does not give a negative or huge rate.
        let reset = [(0, 500), (1_000, 3), (2_000, 13)];
        assert_eq!(peak_rate(&reset, 500), Some((10.0, 2)));
        assert_eq!(peak_rate(&[(5, 5)], 500), None);
        assert_eq!(peak_rate(&[], 500), None);
    }
}
