#![allow(dead_code)]
//! An SSE client for tests: one TCP connection per stream, parsed with
//! [`SseParser`], items forwarded over an unbounded channel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, HeaderMap};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::http::{apply_headers, error_chain, shared_client};
use super::sse::{SseEvent, SseItem, SseParser};

/// How long `connect` waits for the response head.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the response body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body ended normally (e.g. terminating chunk received).
    Clean,
    /// The body ended with an error (connection reset, truncated chunk, ...).
    Error(String),
}

/// What `next_item` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Item(SseItem),
    Ended(End),
}

pub struct SseClient {
    url: String,
    status: u16,
    headers: HeaderMap,
    raw: Arc<Mutex<Vec<u8>>>,
    rx: mpsc::UnboundedReceiver<Received>,
    task: Option<JoinHandle<()>>,
    ended: Option<End>,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClient")
            .field("url", &self.url)
            .field("status", &self.status)
            .field("ended", &self.ended)
            .finish()
    }
}

/// Send the GET (with `Accept: text/event-stream` unless the caller gives an
/// Accept header) and wait for the response head.
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<reqwest::Response, String> {
    let mut req = shared_client().get(url);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        req = req.header(ACCEPT, "text/event-stream");
    }
    req = apply_headers(req, headers);
    match tokio::time::timeout(CONNECT_TIMEOUT, req.send()).await {
        Err(_) => Err(format!(
            "GET {url}: no response head within {CONNECT_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("GET {url}: request failed: {}", error_chain(&e))),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Read a (non-streaming) error body with a timeout.
async fn read_body(resp: reqwest::Response) -> String {
    match tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(Err(e)) => format!("<error reading body: {}>", error_chain(&e)),
        Err(_) => "<timeout reading body>".to_string(),
    }
}

impl SseClient {
    /// Open an SSE stream. `Err` (with status and body) when the status is not 200.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<SseClient, String> {
        let resp = open(url, headers).await?;
        let status = resp.status().as_u16();
        let resp_headers = resp.headers().clone();
        if status != 200 {
            let body = read_body(resp).await;
            return Err(format!(
                "GET {url}: expected 200, got {status}; headers {resp_headers:?}; body: {body}"
            ));
        }
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(reader(resp, raw.clone(), tx));
        Ok(SseClient {
            url: url.to_string(),
            status,
            headers: resp_headers,
            raw,
            rx,
            task: Some(task),
            ended: None,
        })
    }

    /// Like [`connect`](Self::connect) but panics with the reason on failure.
    pub async fn connect_ok(url: &str, headers: &[(&str, &str)]) -> SseClient {
        match Self::connect(url, headers).await {
            Ok(c) => c,
            Err(e) => panic!("SSE connect failed: {e}"),
        }
    }

    /// For error tests: returns the status and the JSON body (`Null` when the
    /// body is empty or not JSON). On a 200 the stream is not read: the body is
    /// `Null` and the connection is dropped.
    pub async fn connect_expect_status(
        url: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let (status, body, _) = Self::connect_expect_status_with_headers(url, headers).await;
        (status, body)
    }

    /// Same as [`connect_expect_status`](Self::connect_expect_status), plus the
    /// response headers (e.g. `Retry-After`).
    pub async fn connect_expect_status_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value, HeaderMap) {
        let resp = match open(url, headers).await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let status = resp.status().as_u16();
        let resp_headers = resp.headers().clone();
        if status == 200 {
            return (status, serde_json::Value::Null, resp_headers);
        }
        let body = read_body(resp).await;
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        (status, json, resp_headers)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A response header as a string (None if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Every byte received so far.
    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().expect("raw buffer lock poisoned").clone()
    }

    /// Every byte received so far, lossily decoded.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw()).into_owned()
    }

    /// The end marker, once the reader reported the end of the body.
    pub fn ended(&self) -> Option<&End> {
        self.ended.as_ref()
    }

    /// Next item, or `None` on timeout. After the end, returns the end marker
    /// again on every call.
    pub async fn next_item(&mut self, timeout: Duration) -> Option<Received> {
        if let Some(end) = &self.ended {
            return Some(Received::Ended(end.clone()));
        }
        let got = match tokio::time::timeout(timeout, self.rx.recv()).await {
            Err(_) => return None,
            Ok(got) => got,
        };
        let received = got.unwrap_or_else(|| {
            Received::Ended(End::Error(
                "reader task stopped without an end marker (closed?)".into(),
            ))
        });
        if let Received::Ended(end) = &received {
            self.ended = Some(end.clone());
        }
        Some(received)
    }

    /// Next event, skipping comments and retry items. `None` on timeout or end.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await? {
                Received::Item(SseItem::Event(e)) => return Some(e),
                Received::Item(_) => continue,
                Received::Ended(_) => return None,
            }
        }
    }

    /// Next event or panic (with the raw stream so far) on timeout or end.
    pub async fn expect_event(&mut self, timeout: Duration) -> SseEvent {
        match self.next_event(timeout).await {
            Some(e) => e,
            None => panic!(
                "no SSE event within {timeout:?} from {} (ended: {:?}); raw so far:\n{}",
                self.url,
                self.ended,
                self.raw_text()
            ),
        }
    }

    /// Collect events until one satisfies `pred` (it is included, last), or
    /// until the timeout or the end of the stream (then the last element does
    /// not satisfy `pred`).
    pub async fn collect_events_until<F>(&mut self, mut pred: F, timeout: Duration) -> Vec<SseEvent>
    where
        F: FnMut(&SseEvent) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(e) = self
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            let done = pred(&e);
            out.push(e);
            if done {
                break;
            }
        }
        out
    }

    /// Collect `n` events, or fewer on timeout/end.
    pub async fn collect_events(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self
                .next_event(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// All events that arrive during `duration` (stops early at the end).
    pub async fn collect_events_for(&mut self, duration: Duration) -> Vec<SseEvent> {
        self.collect_events_until(|_| false, duration).await
    }

    /// All items (events, comments, retry) that arrive during `duration`,
    /// including the end marker if the stream ends.
    pub async fn collect_items_for(&mut self, duration: Duration) -> Vec<Received> {
        let deadline = Instant::now() + duration;
        let mut out = Vec::new();
        if self.ended.is_some() {
            return out;
        }
        while let Some(r) = self
            .next_item(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            let end = matches!(r, Received::Ended(_));
            out.push(r);
            if end {
                break;
            }
        }
        out
    }

    /// Skip events until one of type `name` arrives. `None` on timeout or end.
    pub async fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Option<SseEvent> {
        let evs = self
            .collect_events_until(|e| e.event == name, timeout)
            .await;
        evs.into_iter().last().filter(|e| e.event == name)
    }

    /// Like [`wait_for_event`](Self::wait_for_event) but panics with the raw stream.
    pub async fn expect_event_named(&mut self, name: &str, timeout: Duration) -> SseEvent {
        match self.wait_for_event(name, timeout).await {
            Some(e) => e,
            None => panic!(
                "no SSE event {name:?} within {timeout:?} from {} (ended: {:?}); raw so far:\n{}",
                self.url,
                self.ended,
                self.raw_text()
            ),
        }
    }

    /// Skip items until the stream ends. `None` on timeout.
    pub async fn wait_end(&mut self, timeout: Duration) -> Option<End> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .next_item(deadline.saturating_duration_since(Instant::now()))
                .await?
            {
                Received::Ended(e) => return Some(e),
                Received::Item(_) => continue,
            }
        }
    }

    /// Abort the reader task and drop the connection (the TCP socket closes).
    pub fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.rx.close();
        if self.ended.is_none() {
            self.ended = Some(End::Error("closed by test".into()));
        }
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn reader(
    resp: reqwest::Response,
    raw: Arc<Mutex<Vec<u8>>>,
    tx: mpsc::UnboundedSender<Received>,
) {
    let mut parser = SseParser::new();
    let mut stream = resp.bytes_stream();
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                raw.lock()
                    .expect("raw buffer lock poisoned")
                    .extend_from_slice(&chunk);
                for item in parser.feed(&chunk) {
                    if tx.send(Received::Item(item)).is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Received::Ended(End::Error(error_chain(&e))));
                return;
            }
            None => {
                let _ = tx.send(Received::Ended(End::Clean));
                return;
            }
        }
    }
}
