#![allow(dead_code)]
//! Fault-injection helpers shared by the Redis and Redis Cluster fault tests: publishers
//! that retry refused events with the same id, subscribers that record everything, and
//! the checks that every client got exactly the accepted sequence once, in order, or a
//! `realtime.resync` where data is really gone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::envelope::{cursor_key, str_field};
use super::http::{client, error_code, header_str};
use super::hub::TestHub;
use super::sse::{SseEvent, SseItem};
use super::sse_client::{End, Received, SseClient};
use super::{ms, secs};

/// Upper bound for subscribers to catch up after recovery; never a speed expectation.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
pub use super::publisher::{Accepted, PublishLog, Publisher, assert_unavailable, try_post};

/// A live SSE subscriber read by a background task; every item is kept with its arrival time.
pub struct Subscriber {
    pub label: String,
    pub items: Arc<Mutex<Vec<(Instant, Received)>>>,
    pub stop: Arc<AtomicBool>,
    pub task: JoinHandle<()>,
}

impl Subscriber {
    /// Opens the org stream and waits for `realtime.connected`, so everything published
    /// afterwards must reach it.
    pub async fn connect(hub: &TestHub, org: &str, label: &str) -> Subscriber {
        let client = SseClient::connect_ok(&hub.url(&format!("/v1/orgs/{org}/stream")), &[]).await;
        let sub = Subscriber::spawn(client, label);
        sub.wait_for(|ev| ev.event == "realtime.connected", secs(15))
            .await;
        sub
    }

    pub fn spawn(mut client: SseClient, label: &str) -> Subscriber {
        let items = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (items2, stop2) = (items.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                match client.next_item(ms(100)).await {
                    None => continue,
                    Some(r) => {
                        let end = matches!(r, Received::Ended(_));
                        items2.lock().unwrap().push((Instant::now(), r));
                        if end {
                            return;
                        }
                    }
                }
            }
        });
        Subscriber {
            label: label.to_string(),
            items,
            stop,
            task,
        }
    }

    pub fn events(&self) -> Vec<SseEvent> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, r)| match r {
                Received::Item(SseItem::Event(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn ended(&self) -> Option<End> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, r)| match r {
                Received::Ended(e) => Some(e.clone()),
                _ => None,
            })
    }

    pub fn has(&self, pred: &mut impl FnMut(&SseEvent) -> bool) -> bool {
        self.items.lock().unwrap().iter().any(|(_, r)| match r {
            Received::Item(SseItem::Event(e)) => pred(e),
            _ => false,
        })
    }

    pub async fn wait_for(&self, mut pred: impl FnMut(&SseEvent) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has(&mut pred) {
            if let Some(end) = self.ended() {
                panic!(
                    "{}: stream ended ({end:?}) while waiting; events: {:?}",
                    self.label,
                    summarize(&self.events())
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: awaited event not seen within {timeout:?}; events: {:?}",
                    self.label,
                    summarize(&self.events())
                );
            }
            tokio::time::sleep(ms(20)).await;
        }
    }

    /// Waits until the event with this cursor arrived (events come in cursor order, so
    /// everything before it has arrived too), then stops reading.
    pub async fn finish_at(self, last_cursor: &str) -> Finished {
        self.wait_for(
            |ev| ev.last_event_id == last_cursor && ev.had_id_field,
            CATCH_UP_TIMEOUT,
        )
        .await;
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("subscriber task panicked");
        let items = std::mem::take(&mut *self.items.lock().unwrap());
        Finished {
            label: self.label,
            items,
        }
    }
}

/// Compact view of events for failure messages.
pub fn summarize(events: &[SseEvent]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .map(|e| {
            if e.had_id_field {
                let id = serde_json::from_str::<Value>(&e.data)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{id}@{}", e.last_event_id)
            } else {
                format!("{}:{}", e.event, e.data)
            }
        })
        .collect();
    if out.len() > 60 {
        let tail = out.split_off(out.len() - 30);
        out.truncate(30);
        out.push("...".into());
        out.extend(tail);
    }
    out
}

/// A subscriber's complete recording.
pub struct Finished {
    pub label: String,
    pub items: Vec<(Instant, Received)>,
}

/// One delivered data event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivered {
    pub id: String,
    pub cursor: String,
}

/// A subscriber's stream split at `realtime.resync` control events.
pub struct Parsed {
    /// Data events before the first resync (or all of them).
    pub before: Vec<Delivered>,
    /// `(resync data, data events after it)` for every resync.
    pub resyncs: Vec<(Value, Vec<Delivered>)>,
}

impl Finished {
    pub fn events(&self) -> Vec<SseEvent> {
        self.items
            .iter()
            .filter_map(|(_, r)| match r {
                Received::Item(SseItem::Event(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// Checks the frame shapes and splits the stream at resyncs.
    pub fn parse(&self, org: &str) -> Parsed {
        let label = &self.label;
        assert!(
            matches!(
                self.items.first(),
                Some((_, Received::Item(SseItem::Retry(_))))
            ),
            "{label}: the stream must start with retry:"
        );
        for (_, r) in &self.items {
            assert!(
                !matches!(r, Received::Ended(_)),
                "{label}: the stream ended during the fault: {r:?}; events {:?}",
                summarize(&self.events())
            );
        }
        let events = self.events();
        assert_eq!(
            events.first().map(|e| e.event.as_str()),
            Some("realtime.connected"),
            "{label}: first event; events {:?}",
            summarize(&events)
        );
        let connected = events[0].json();
        assert_eq!(connected["backend"], "redis", "{label}: {connected}");
        let mut parsed = Parsed {
            before: Vec::new(),
            resyncs: Vec::new(),
        };
        for ev in &events[1..] {
            match ev.event.as_str() {
                "realtime.resync" => {
                    assert!(!ev.had_id_field, "{label}: resync with an id: line: {ev:?}");
                    parsed.resyncs.push((ev.json(), Vec::new()));
                }
                "realtime.connected" => panic!("{label}: a second realtime.connected: {ev:?}"),
                _ => {
                    assert!(ev.had_id_field, "{label}: event without id: line: {ev:?}");
                    let env = ev.json();
                    assert_eq!(str_field(&env, "org_id"), org, "{label}: {env}");
                    assert_eq!(str_field(&env, "event"), ev.event, "{label}: {env}");
                    assert_eq!(
                        str_field(&env, "cursor"),
                        ev.last_event_id,
                        "{label}: id: line vs cursor: {env}"
                    );
                    let d = Delivered {
                        id: str_field(&env, "id").to_string(),
                        cursor: ev.last_event_id.clone(),
                    };
                    match parsed.resyncs.last_mut() {
                        Some((_, after)) => after.push(d),
                        None => parsed.before.push(d),
                    }
                }
            }
        }
        parsed
    }

    /// Heartbeat comments that arrived within `[from, to]`.
    pub fn heartbeats_between(&self, from: Instant, to: Instant) -> usize {
        self.items
            .iter()
            .filter(|(t, r)| {
                *t >= from
                    && *t <= to
                    && matches!(r, Received::Item(SseItem::Comment(c)) if c == "heartbeat")
            })
            .count()
    }
}

/// Asserts `got` is exactly `want` (same ids, same cursors, same order), explaining the first
/// difference: missing, duplicated and unexpected ids, and where the sequences part.
pub fn assert_exact(label: &str, got: &[Delivered], want: &[Delivered]) {
    for pair in got.windows(2) {
        assert!(
            cursor_key(&pair[0].cursor) < cursor_key(&pair[1].cursor),
            "{label}: cursors not strictly increasing: {pair:?}"
        );
    }
    if got == want {
        return;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for d in got {
        *counts.entry(d.id.as_str()).or_default() += 1;
    }
    let dups: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let want_ids: HashSet<&str> = want.iter().map(|d| d.id.as_str()).collect();
    let missing: Vec<&str> = want
        .iter()
        .map(|d| d.id.as_str())
        .filter(|id| !counts.contains_key(id))
        .collect();
    let extra: Vec<&str> = got
        .iter()
        .map(|d| d.id.as_str())
        .filter(|id| !want_ids.contains(id))
        .collect();
    let first_diff = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{label}: delivered sequence differs from the accepted one ({} delivered, {} expected); \
         missing {missing:?}; duplicated {dups:?}; unexpected {extra:?}; first difference at \
         {first_diff}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        got.get(first_diff),
        want.get(first_diff)
    );
}

pub fn delivered(accepted: &[Accepted]) -> Vec<Delivered> {
    accepted
        .iter()
        .map(|a| Delivered {
            id: a.id.clone(),
            cursor: a.cursor.clone(),
        })
        .collect()
}

/// Every subscriber got exactly the accepted events, once, in order, with no resync.
pub async fn assert_all_exact(subs: Vec<Subscriber>, org: &str, log: &PublishLog) -> Vec<Finished> {
    let want = delivered(&log.accepted);
    let last = &want.last().expect("accepted events").cursor;
    let mut finished = Vec::new();
    for sub in subs {
        let f = sub.finish_at(last).await;
        let parsed = f.parse(org);
        assert!(
            parsed.resyncs.is_empty(),
            "{}: unexpected realtime.resync {:?} (no data was lost)",
            f.label,
            parsed.resyncs.iter().map(|(v, _)| v).collect::<Vec<_>>()
        );
        assert_exact(&f.label, &parsed.before, &want);
        finished.push(f);
    }
    finished
}

pub async fn subscribers(hubs: &[&TestHub], org: &str, per_hub: usize) -> Vec<Subscriber> {
    let mut subs = Vec::new();
    for (h, hub) in hubs.iter().enumerate() {
        for i in 0..per_hub {
            subs.push(Subscriber::connect(hub, org, &format!("hub{h}/sub{i}")).await);
        }
    }
    subs
}

/// Polls `/readyz` in the background, recording `(time, status, body)`.
pub struct ReadyzWatch {
    pub stop: Arc<AtomicBool>,
    pub task: JoinHandle<Vec<(Instant, u16, Value)>>,
}

impl ReadyzWatch {
    pub fn start(hub: &TestHub) -> ReadyzWatch {
        let url = hub.url("/readyz");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let resp = client().get(&url).timeout(secs(5)).send().await;
                if let Ok(r) = resp {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.push((Instant::now(), status, body));
                }
                tokio::time::sleep(ms(100)).await;
            }
            seen
        });
        ReadyzWatch { stop, task }
    }

    pub async fn finish(self) -> Vec<(Instant, u16, Value)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("readyz watcher panicked")
    }
}

/// A readyz 503 must explain itself with a JSON reason.
pub fn assert_unready_body(body: &Value) {
    let reason = body["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("/readyz 503 without a JSON reason: {body}"));
    assert!(
        !reason.is_empty(),
        "/readyz 503 with an empty reason: {body}"
    );
}

/// What one client's stream showed, checked by [`assert_exact_or_resync`].
#[derive(Debug, Default)]
pub struct ResyncCheck {
    /// Reasons of the `realtime.resync` frames, in order.
    pub reasons: Vec<String>,
    /// Events delivered that the stream no longer holds (each before a resync).
    pub lost_delivered: Vec<Delivered>,
    /// Accepted events never delivered (each across a resync, and gone from the stream).
    pub skipped: Vec<Delivered>,
}

/// Checks one client's stream against the accepted events and what the org's stream still
/// holds at the end (`kept`): every accepted event is delivered once, in order, except
/// across a `realtime.resync`, and only when it is gone from the stream; every resync is
/// justified by data really gone (an event delivered since the last resync is no longer
/// stored, or accepted events skipped after it are); an event delivered but never
/// accepted (stored, answered with an error, then lost) comes before a resync. The client
/// must have been read through the last accepted event.
pub fn assert_exact_or_resync(
    label: &str,
    parsed: &Parsed,
    accepted: &[Delivered],
    kept: &[Delivered],
) -> ResyncCheck {
    let index: HashMap<&Delivered, usize> =
        accepted.iter().enumerate().map(|(i, d)| (d, i)).collect();
    let kept: HashSet<&Delivered> = kept.iter().collect();
    let mut check = ResyncCheck::default();
    let mut next = 0;
    // Since the last resync: an event delivered that is gone; a resync not yet justified.
    let mut lost_since_resync = false;
    let mut unjustified: Option<usize> = None;
    let mut resynced_since_delivery = false;
    let segments = std::iter::once((None, &parsed.before))
        .chain(parsed.resyncs.iter().map(|(v, after)| (Some(v), after)));
    for (resync, events) in segments {
        if let Some(resync) = resync {
            assert!(
                unjustified.is_none(),
                "{label}: resync {unjustified:?} while no data was gone"
            );
            if !lost_since_resync {
                unjustified = Some(check.reasons.len());
            }
            check
                .reasons
                .push(resync["reason"].as_str().unwrap_or("").to_owned());
            lost_since_resync = false;
            resynced_since_delivery = true;
        }
        for d in events {
            match index.get(d) {
                Some(&i) => {
                    assert!(i >= next, "{label}: {d:?} delivered twice or out of order");
                    for missing in &accepted[next..i] {
                        assert!(
                            resynced_since_delivery,
                            "{label}: silent gap: {missing:?} was accepted and never delivered"
                        );
                        assert!(
                            !kept.contains(missing),
                            "{label}: {missing:?} is stored but was skipped"
                        );
                        check.skipped.push(missing.clone());
                        unjustified = None;
                    }
                    next = i + 1;
                    resynced_since_delivery = false;
                }
                None => assert!(
                    !kept.contains(d),
                    "{label}: {d:?} was delivered and is stored, but never accepted"
                ),
            }
            if !kept.contains(d) {
                check.lost_delivered.push(d.clone());
                lost_since_resync = true;
            }
        }
    }
    assert!(
        unjustified.is_none(),
        "{label}: resync {unjustified:?} while no data was gone ({:?})",
        check.reasons
    );
    assert!(
        !lost_since_resync,
        "{label}: events delivered then lost, with no resync after them: {:?}",
        check.lost_delivered
    );
    assert_eq!(
        next,
        accepted.len(),
        "{label}: not read through the last accepted event"
    );
    check
}

/// Polls `GET /readyz` of `hub` until `wanted(status, body)` holds; panics with the last
/// answer after `timeout`.
pub async fn wait_readyz(
    hub: &TestHub,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let url = hub.url("/readyz");
    let mut last = None;
    loop {
        if let Ok(resp) = client().get(&url).timeout(secs(5)).send().await {
            let status = resp.status().as_u16();
            let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                .unwrap_or(Value::Null);
            if wanted(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {}: not {what} within {timeout:?}; last answer {last:?}",
            hub.base_url()
        );
        tokio::time::sleep(ms(100)).await;
    }
}
