#![allow(dead_code)]
//! A client that follows one stream across its ends, as `EventSource` does: when a stream
//! ends it waits the last `retry:` hint, reconnects with the last `id:` as `Last-Event-ID`,
//! and keeps a record of every stream (when it opened and ended, which instance served it,
//! what it carried).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sse::{SseEvent, SseItem};
use super::sse_client::{End, Received, SseClient};

/// One stream of a follower, from its response head to its end.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// When the `200` head arrived.
    pub opened: Instant,
    /// `X-Realtime-Instance`: which hub instance served it.
    pub instance: Option<String>,
    /// Every event, data and control, in order.
    pub events: Vec<SseEvent>,
    /// Every `retry:` value, in order (the last one is the hint the stream ended with).
    pub retries: Vec<u64>,
    /// When and how the stream ended (None: still open).
    pub ended: Option<(Instant, End)>,
}

impl StreamRecord {
    /// Its data events (those with an `id:` line).
    pub fn data(&self) -> impl Iterator<Item = &SseEvent> {
        self.events.iter().filter(|e| e.had_id_field)
    }
}

/// A following client, run by a background task until [`Follower::finish_at`].
pub struct Follower {
    pub label: String,
    records: Arc<Mutex<Vec<StreamRecord>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Starts following `url` (the first connection carries no `Last-Event-ID`).
    pub fn start(url: String, label: String) -> Follower {
        let records = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(url, records.clone(), refused.clone(), stop.clone()));
        Follower {
            label,
            records,
            refused,
            stop,
            task,
        }
    }

    /// A copy of every stream so far.
    pub fn records(&self) -> Vec<StreamRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Connection attempts that were refused (their error text), in order.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// How many streams have delivered `realtime.connected`.
    pub fn connected_streams(&self) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.events.iter().any(|e| e.event == "realtime.connected"))
            .count()
    }

    /// How many streams have ended.
    pub fn ended_streams(&self) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ended.is_some())
            .count()
    }

    /// Waits until `n` streams have delivered `realtime.connected`.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.connected_streams() < n {
            assert!(!self.task.is_finished(), "{}: follower stopped", self.label);
            assert!(
                Instant::now() < deadline,
                "{}: {} of {n} streams connected within {timeout:?}; refused {:?}",
                self.label,
                self.connected_streams(),
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the event with `cursor` arrived (events come in cursor order, so all
    /// before it did too) and its stream got past its replay (`realtime.connected`) or
    /// ended, stops, and returns every stream's record.
    pub async fn finish_at(self, cursor: &str, timeout: Duration) -> Vec<StreamRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.records.lock().unwrap().iter().any(|r| {
                r.data().any(|e| e.last_event_id == cursor)
                    && (r.ended.is_some()
                        || r.events.iter().any(|e| e.event == "realtime.connected"))
            });
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {cursor} not delivered within {timeout:?}; {} streams, refused {:?}",
                self.label,
                self.records.lock().unwrap().len(),
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("follower task panicked");
        std::mem::take(&mut *self.records.lock().unwrap())
    }
}

async fn follow(
    url: String,
    records: Arc<Mutex<Vec<StreamRecord>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        let headers: Vec<(&str, &str)> = last_id
            .as_deref()
            .map(|id| vec![("Last-Event-ID", id)])
            .unwrap_or_default();
        let mut client = match SseClient::connect(&url, &headers).await {
            Ok(client) => client,
            Err(e) => {
                refused.lock().unwrap().push(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let index = {
            let mut records = records.lock().unwrap();
            records.push(StreamRecord {
                opened: Instant::now(),
                instance: client.header("x-realtime-instance"),
                events: Vec::new(),
                retries: Vec::new(),
                ended: None,
            });
            records.len() - 1
        };
        while !stop.load(Ordering::SeqCst) {
            let Some(received) = client.next_item(Duration::from_millis(100)).await else {
                continue;
            };
            let mut records = records.lock().unwrap();
            let record = &mut records[index];
            match received {
                Received::Item(SseItem::Event(e)) => {
                    if e.had_id_field {
                        last_id = Some(e.last_event_id.clone());
                    }
                    record.events.push(e);
                }
                Received::Item(SseItem::Retry(ms)) => {
                    retry = Duration::from_millis(ms);
                    record.retries.push(ms);
                }
                Received::Item(SseItem::Comment(_)) => {}
                Received::Ended(end) => {
                    record.ended = Some((Instant::now(), end));
                    break;
                }
            }
        }
        client.close();
        if !stop.load(Ordering::SeqCst) {
            // As EventSource: wait the stream's last `retry:` hint before reconnecting.
            tokio::time::sleep(retry).await;
        }
    }
}
