#![allow(dead_code)]
//! A publisher that never loses an event: single events with its own ids, published until
//! stopped, each refused one retried with the SAME id until accepted, so an event stored
//! although its answer was lost comes back as a 200 duplicate instead of a second copy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::envelope::{cursor_key, str_field};
use super::http::{client, error_code, header_str};
use super::hub::TestHub;
use super::{ms, secs};

/// Pause between two published events.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(15);
/// Pause before retrying a refused publish.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// What a Redis fault makes the hub answer.
pub const BACKEND_UNAVAILABLE: &[&str] = &["backend_unavailable"];

/// One event the hub acknowledged.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: String,
    pub cursor: String,
    pub status: u16,
    /// Refused attempts (503 or transport error) with this id before it was accepted.
    pub failures: u32,
}

/// Everything a publisher saw.
#[derive(Debug, Default)]
pub struct PublishLog {
    pub accepted: Vec<Accepted>,
    /// 503 answers (each with one of the publisher's expected codes and `Retry-After`).
    pub unavailable: usize,
    /// Requests that failed at the transport level (timeout, reset).
    pub transport_errors: usize,
}

/// A task publishing single events with fresh ids until stopped; a refused event is retried
/// with the same id until accepted, so an event that was stored although its answer was lost
/// comes back as a 200 duplicate instead of a second copy.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<PublishLog>>,
    task: JoinHandle<()>,
}

impl Publisher {
    pub fn start(hub: &TestHub, org: &str) -> Publisher {
        Self::start_at(
            hub.url(&format!("/v1/orgs/{org}/events")),
            BACKEND_UNAVAILABLE,
            PUBLISH_INTERVAL,
        )
    }

    /// Publishes to `url` (any instance behind it) every `interval`, accepting 503 refusals
    /// with these codes.
    pub fn start_at(
        url: String,
        refusals: &'static [&'static str],
        interval: Duration,
    ) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(PublishLog::default()));
        let task = tokio::spawn(publish_loop(
            url,
            stop.clone(),
            log.clone(),
            refusals,
            interval,
        ));
        Publisher { stop, log, task }
    }

    pub fn accepted_count(&self) -> usize {
        self.log.lock().unwrap().accepted.len()
    }

    pub fn unavailable_count(&self) -> usize {
        self.log.lock().unwrap().unavailable
    }

    /// Waits until `n` more events are accepted (the publisher makes progress again).
    pub async fn wait_accepted_more(&self, n: usize, timeout: Duration) {
        let start = self.accepted_count();
        let deadline = Instant::now() + timeout;
        while self.accepted_count() < start + n {
            assert!(
                !self.task.is_finished(),
                "publisher stopped (panicked?) while waiting for progress"
            );
            assert!(
                Instant::now() < deadline,
                "publisher got no {n} more events accepted within {timeout:?} (log: {:?})",
                self.log.lock().unwrap().accepted.last()
            );
            tokio::time::sleep(ms(20)).await;
        }
    }

    /// Waits until at least one publish was refused with 503.
    pub async fn wait_refused(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.unavailable_count() == 0 {
            assert!(!self.task.is_finished(), "publisher stopped (panicked?)");
            assert!(
                Instant::now() < deadline,
                "no publish was refused with 503 within {timeout:?}"
            );
            tokio::time::sleep(ms(20)).await;
        }
    }

    /// Stops after the event in flight is accepted; returns the log.
    pub async fn finish(self) -> PublishLog {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("publisher task panicked");
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        assert!(!log.accepted.is_empty(), "nothing was accepted");
        let mut ids = HashSet::new();
        for pair in log.accepted.windows(2) {
            assert!(
                cursor_key(&pair[0].cursor) < cursor_key(&pair[1].cursor),
                "a sequential publisher got non-increasing cursors: {pair:?}"
            );
        }
        for a in &log.accepted {
            assert!(ids.insert(a.id.clone()), "id accepted twice: {a:?}");
        }
        log
    }
}

/// POSTs with a bounded wait; `Err` on transport failure (the hub may be stuck on Redis).
pub async fn try_post(
    url: &str,
    body: &Value,
) -> Result<(u16, Value, reqwest::header::HeaderMap), String> {
    let resp = client()
        .post(url)
        .json(body)
        .timeout(secs(15))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    ))
}

/// Asserts a refused publish is the contract's 503: `backend_unavailable` with `Retry-After`.
pub fn assert_unavailable(body: &Value, headers: &reqwest::header::HeaderMap) {
    assert_refused(body, headers, BACKEND_UNAVAILABLE);
}

/// Asserts a refused publish is a 503 with one of `codes` and `Retry-After`.
pub fn assert_refused(body: &Value, headers: &reqwest::header::HeaderMap, codes: &[&str]) {
    let code = error_code(body);
    assert!(
        codes.contains(&code.as_str()),
        "503 body: {body}, expected one of {codes:?}"
    );
    let retry_after = header_str(headers, "retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {body}"));
    assert!(
        retry_after.trim().parse::<u64>().is_ok(),
        "Retry-After is not delay-seconds: {retry_after:?}"
    );
}

async fn publish_loop(
    url: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<PublishLog>>,
    refusals: &'static [&'static str],
    interval: Duration,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("evt_{n}");
        let body = json!({"id": id, "event": "fault.tick", "payload": {"n": n}});
        let mut failures = 0u32;
        let first_try = Instant::now();
        loop {
            // The stop flag is ignored here on purpose: an id given up on might still be
            // stored, and then subscribers would rightly deliver an event nobody recorded.
            assert!(
                first_try.elapsed() < Duration::from_secs(40),
                "event {id} still not accepted after 40 s ({failures} attempts)"
            );
            match try_post(&url, &body).await {
                Ok((status @ (200 | 202), resp, _)) => {
                    assert_eq!(str_field(&resp, "id"), id, "answer for {id}: {resp}");
                    let cursor = str_field(&resp, "cursor").to_string();
                    cursor_key(&cursor);
                    log.lock().unwrap().accepted.push(Accepted {
                        id: id.clone(),
                        cursor,
                        status,
                        failures,
                    });
                    break;
                }
                Ok((503, resp, headers)) => {
                    assert_refused(&resp, &headers, refusals);
                    log.lock().unwrap().unavailable += 1;
                }
                Ok((status, resp, _)) => panic!("publishing {id}: unexpected {status}: {resp}"),
                Err(_) => log.lock().unwrap().transport_errors += 1,
            }
            failures += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        tokio::time::sleep(interval).await;
    }
}
