//! The hubs' own view during `rolling-restart`: a few connections to `GET /v1/ops/stats` on the
//! shared port, each reopened every few seconds so the kernel spreads them over every instance
//! (restarted ones included), collecting each instance's cumulative `opened_total` and
//! `paced_refusals` once a second. The peak rates come from these samples.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashclaw_realtime_load::chunked::ChunkedDecoder;
use dashclaw_realtime_load::http::{BodyFraming, parse_response_head};
use dashclaw_realtime_load::rates::{InstancePeak, peak_rate};
use dashclaw_realtime_load::sse::{Item, SseParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};

use crate::cli::Target;

/// Samples per instance: `ts_ms -> (opened_total, paced_refusals)`. At most one a second per
/// instance for the length of the run.
type Samples = BTreeMap<String, BTreeMap<u64, (u64, u64)>>;

/// How long one watcher connection is kept before it is reopened.
const HOLD: Duration = Duration::from_secs(4);

/// Running watchers.
pub struct StatsWatch {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Peak rates seen by the hubs, per instance.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HubPeaks {
    /// New streams accepted per second (`connections_opened_total`).
    pub opened: Vec<InstancePeak>,
    /// New streams refused by the accept pace per second (`paced_refusals_total`).
    pub refused: Vec<InstancePeak>,
}

impl StatsWatch {
    /// Start `n` watchers on `target`.
    pub fn start(target: &Target, headers: &[(String, String)], n: usize) -> StatsWatch {
        let samples = Arc::new(Mutex::new(Samples::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let request = request(target, headers);
        let tasks = (0..n)
            .map(|k| {
                let (samples, stop, request) = (samples.clone(), stop.clone(), request.clone());
                let addr = target.addr;
                tokio::spawn(async move {
                    // Stagger the reopenings.
                    sleep(HOLD * k as u32 / n.max(1) as u32).await;
                    while !stop.load(Relaxed) {
                        let until = Instant::now() + HOLD;
                        let _ = watch_once(addr, &request, until, &samples).await;
                        sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        StatsWatch {
            samples,
            stop,
            tasks,
        }
    }

    /// Stop the watchers and compute the peaks from the samples, only intervals ending at or
    /// after `from_unix_s`.
    pub async fn finish(self, from_unix_s: u64) -> HubPeaks {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        let mut peaks = HubPeaks::default();
        for (instance, points) in samples {
            let from_ms = from_unix_s.saturating_mul(1000);
            // Keep the last sample before `from` as the base of the first interval.
            let base = points.range(..from_ms).next_back().map(|(t, v)| (*t, *v));
            let window: Vec<(u64, (u64, u64))> = base
                .into_iter()
                .chain(points.range(from_ms..).map(|(t, v)| (*t, *v)))
                .collect();
            for (series, out) in [(0, &mut peaks.opened), (1, &mut peaks.refused)] {
                let xs: Vec<(u64, u64)> = window
                    .iter()
                    .map(|(t, v)| (*t, if series == 0 { v.0 } else { v.1 }))
                    .collect();
                if let Some((rate, at)) = peak_rate(&xs, 900) {
                    out.push(InstancePeak {
                        instance: instance.clone(),
                        per_second: rate,
                        at_unix_s: at,
                        points: xs.len() as u64,
                    });
                }
            }
        }
        peaks
    }
}

fn request(target: &Target, headers: &[(String, String)]) -> Vec<u8> {
    let mut r = format!(
        "GET {}/v1/ops/stats HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        target.prefix, target.host
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// One connection: read `stats` events until `until` or the stream ends.
async fn watch_once(
    addr: std::net::SocketAddr,
    request: &[u8],
    until: Instant,
    samples: &Mutex<Samples>,
) -> Result<(), ()> {
    let mut stream = timeout_at(until, TcpStream::connect(addr))
        .await
        .map_err(drop)?
        .map_err(drop)?;
    stream.write_all(request).await.map_err(drop)?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut parser = SseParser::new();
    let mut chunked: Option<Option<ChunkedDecoder>> = None;
    loop {
        let n = match timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
        };
        let mut body = &buf[..n];
        let head_buf;
        if chunked.is_none() {
            head.extend_from_slice(body);
            let Some((h, used)) = parse_response_head(&head).map_err(drop)? else {
                continue;
            };
            if h.status != 200 {
                return Err(());
            }
            chunked = Some((h.framing == BodyFraming::Chunked).then(ChunkedDecoder::new));
            head_buf = std::mem::take(&mut head);
            body = &head_buf[used..];
        }
        let mut on_item = |item: Item<'_>| {
            if let Item::Event(e) = item
                && e.event == b"stats"
            {
                record(e.data, samples);
            }
        };
        match chunked.as_mut() {
            Some(Some(dec)) => {
                if dec
                    .feed(body, &mut |d| parser.feed(d, &mut on_item))
                    .is_err()
                {
                    return Err(());
                }
            }
            _ => parser.feed(body, &mut on_item),
        }
    }
}

fn record(data: &[u8], samples: &Mutex<Samples>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let (Some(instance), Some(ts), Some(opened)) = (
        v["instance_id"].as_str(),
        v["ts_ms"].as_u64(),
        v["opened_total"].as_u64(),
    ) else {
        return;
    };
    let refused = v["paced_refusals"].as_u64().unwrap_or(0);
    samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(instance.to_string())
        .or_default()
        .insert(ts, (opened, refused));
}
