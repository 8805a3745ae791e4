//! Publishing: keep-alive HTTP/1.1 POSTs on raw TCP, single or batched, paced at a rate or as
//! fast as the server accepts. Each publisher connection owns a subset of the orgs (org j goes to
//! publisher j mod P), so per-org order is the send order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use dashclaw_realtime_load::chunked::ChunkedDecoder;
use dashclaw_realtime_load::http::{BodyFraming, parse_response_head};
use dashclaw_realtime_load::template::{Template, Vars};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

use dashclaw_realtime::hub::HubHandle;

use crate::cli::Target;
use crate::client::wall_us;
use crate::embedded;

/// A keep-alive HTTP/1.1 connection.
struct HttpConn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(target: Target) -> HttpConn {
        HttpConn {
            target,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    /// POST and return the status (the body is read and discarded).
    async fn post(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: &[u8],
    ) -> Result<u16, String> {
        let r = timeout(
            Duration::from_secs(10),
            self.post_inner(path, headers, content_type, body),
        )
        .await
        .unwrap_or_else(|_| Err("timeout".into()));
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn post_inner(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: &[u8],
    ) -> Result<u16, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.target.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(s);
        }
        let mut req = format!(
            "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.target.prefix,
            path,
            self.target.host,
            content_type,
            body.len()
        );
        for (n, v) in headers {
            req.push_str(n);
            req.push_str(": ");
            req.push_str(v);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let mut tmp = [0u8; 8192];
        let (head, n) = loop {
            if let Some(h) = parse_response_head(&self.buf)? {
                break h;
            }
            let k = stream
                .read(&mut tmp)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if k == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&tmp[..k]);
        };
        let mut rest = self.buf[n..].to_vec();
        match head.framing {
            BodyFraming::Length(len) => {
                let mut have = rest.len() as u64;
                while have < len {
                    let k = stream
                        .read(&mut tmp)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if k == 0 {
                        return Err("connection closed in body".into());
                    }
                    have += k as u64;
                }
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::new();
                loop {
                    dec.feed(&rest, &mut |_| {}).map_err(|e| e.to_string())?;
                    if dec.is_done() {
                        break;
                    }
                    let k = stream
                        .read(&mut tmp)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if k == 0 {
                        return Err("connection closed in body".into());
                    }
                    rest.clear();
                    rest.extend_from_slice(&tmp[..k]);
                }
            }
            BodyFraming::Close => {
                while stream
                    .read(&mut tmp)
                    .await
                    .map_err(|e| format!("read: {e}"))?
                    > 0
                {}
            }
        }
        if head.close {
            self.stream = None;
        }
        Ok(head.status)
    }
}

/// What to publish.
#[derive(Clone)]
pub struct Publisher {
    pub orgs: Arc<Vec<String>>,
    pub targets: Arc<Vec<Target>>,
    pub path: Arc<Template>,
    pub body: Arc<Template>,
    pub content_type: Arc<str>,
    pub headers: Arc<Vec<(String, String)>>,
    pub batch: usize,
    pub connections: usize,
    /// Sequence numbers handed out per org (the next is this + 1); persists across runs.
    pub next_seq: Arc<Vec<AtomicU64>>,
    /// Events accepted so far (for progress).
    pub accepted: Arc<AtomicU64>,
    /// `--embed-hub`: publish through this handle instead of HTTP.
    pub in_process: Option<HubHandle>,
    /// Set to end a run without an event count at the next event.
    pub stop: Arc<AtomicBool>,
    /// Retry a refused or failed request until it is accepted or the run's `until` (rolling
    /// restarts: every sequence number handed out must be stored, or it would count as missing);
    /// otherwise three attempts.
    pub persist: bool,
}

/// One publishing run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Events to publish in total (None: until `until`).
    pub events: Option<u64>,
    /// Events per second (None: as fast as accepted).
    pub rate: Option<f64>,
    /// Hard stop.
    pub until: Instant,
}

/// Results of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub requests: u64,
    pub events: u64,
    pub failed_requests: u64,
    pub failed_events: u64,
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the first send to the last response.
    pub elapsed_s: f64,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.requests += o.requests;
        self.events += o.events;
        self.failed_requests += o.failed_requests;
        self.failed_events += o.failed_events;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.elapsed_s = self.elapsed_s.max(o.elapsed_s);
    }
}

impl Publisher {
    /// Last sequence number handed out per org (what subscribers should have received).
    pub fn expected(&self) -> Vec<u64> {
        self.next_seq.iter().map(|s| s.load(Relaxed)).collect()
    }

    pub async fn run(&self, run: Run) -> Outcome {
        let m = self.orgs.len();
        let p = self.connections.clamp(1, m);
        let budget = Arc::new(AtomicU64::new(run.events.unwrap_or(u64::MAX)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..p {
            let my_orgs: Vec<usize> = (0..m).filter(|j| j % p == k).collect();
            let share = my_orgs.len() as f64 / m as f64;
            let this = self.clone();
            let budget = budget.clone();
            tasks.push(tokio::spawn(async move {
                this.publisher_task(
                    my_orgs,
                    run.rate.map(|r| r * share),
                    budget,
                    run.until,
                    start,
                )
                .await
            }));
        }
        let mut out = Outcome::default();
        for t in tasks {
            if let Ok(o) = t.await {
                out.merge(o);
            }
        }
        out
    }

    async fn publisher_task(
        &self,
        orgs: Vec<usize>,
        rate: Option<f64>,
        budget: Arc<AtomicU64>,
        until: Instant,
        start: Instant,
    ) -> Outcome {
        let mut out = Outcome::default();
        let mut conns: Vec<Option<HttpConn>> = (0..self.targets.len()).map(|_| None).collect();
        let mut body = String::with_capacity(256 * self.batch);
        let mut k: u64 = 0;
        loop {
            if Instant::now() >= until || self.stop.load(Relaxed) {
                break;
            }
            // Claim up to `batch` events from the budget.
            let mut n = self.batch as u64;
            let claimed = budget.fetch_update(Relaxed, Relaxed, |left| {
                if left == 0 {
                    None
                } else {
                    n = n.min(left);
                    Some(left - n)
                }
            });
            if claimed.is_err() {
                break;
            }
            if let Some(rate) = rate {
                let at = start + Duration::from_secs_f64(k as f64 * self.batch as f64 / rate);
                if at >= until {
                    break;
                }
                sleep_until(at).await;
            }
            let j = orgs[(k as usize) % orgs.len()];
            k += 1;
            let org = &self.orgs[j];
            let first = self.next_seq[j].fetch_add(n, Relaxed) + 1;
            let sent_us = wall_us();
            body.clear();
            if self.batch > 1 {
                body.push('[');
            }
            for i in 0..n {
                if i > 0 {
                    body.push(',');
                }
                self.body.render_into(
                    &Vars {
                        org,
                        seq: first + i,
                        sent_us,
                    },
                    &mut body,
                );
            }
            if self.batch > 1 {
                body.push(']');
            }
            out.requests += 1;
            if let Some(hub) = &self.in_process {
                match embedded::publish(hub, org, &body, self.batch > 1).await {
                    Ok(accepted) => {
                        out.events += accepted;
                        self.accepted.fetch_add(accepted, Relaxed);
                    }
                    Err(e) => {
                        out.failed_requests += 1;
                        out.failed_events += n;
                        *out.errors.entry(e).or_default() += 1;
                    }
                }
                out.elapsed_s = start.elapsed().as_secs_f64();
                continue;
            }
            let path = self.path.render(&Vars {
                org,
                seq: first,
                sent_us,
            });
            let t = j % self.targets.len();
            let conn = conns[t].get_or_insert_with(|| HttpConn::new(self.targets[t].clone()));
            let mut result;
            let mut attempts = 0;
            loop {
                result = conn
                    .post(&path, &self.headers, &self.content_type, body.as_bytes())
                    .await;
                attempts += 1;
                let pause = match &result {
                    Ok(s) if *s == 429 || *s >= 500 => Duration::from_millis(100),
                    Ok(_) => break,
                    Err(_) => Duration::from_millis(50),
                };
                if (attempts >= 3 && !self.persist) || Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            match result {
                Ok(s) if (200..300).contains(&s) => {
                    out.events += n;
                    self.accepted.fetch_add(n, Relaxed);
                }
                other => {
                    out.failed_requests += 1;
                    out.failed_events += n;
                    let key = match other {
                        Ok(s) => format!("http_{s}"),
                        Err(e) => e,
                    };
                    *out.errors.entry(key).or_default() += 1;
                }
            }
            out.elapsed_s = start.elapsed().as_secs_f64();
        }
        out
    }
}
