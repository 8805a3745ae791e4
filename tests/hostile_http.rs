//! Hostile HTTP on raw TCP: request smuggling shapes, huge headers, slowloris, thousands
//! of connections that never read, half-closed sockets. Every case ends by proving the
//! hub still serves a well-behaved subscriber and publisher.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{SseClient, TestHub, post_json, unique_org};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(20);

async fn memory_hub(extra: &[(&str, &str)]) -> TestHub {
    let mut env = vec![
        ("REALTIME_BACKEND", "memory"),
        ("REALTIME_HEARTBEAT_SECONDS", "1"),
    ];
    env.extend_from_slice(extra);
    TestHub::spawn(&env).await
}

async fn subscribe(hub: &TestHub, org: &str) -> SseClient {
    let mut sub = SseClient::connect_ok(&hub.url(&format!("/v1/orgs/{org}/stream")), &[]).await;
    sub.expect_event_named("realtime.connected", T).await;
    sub
}

async fn publish(hub: &TestHub, org: &str, event: &str, payload: serde_json::Value) -> String {
    let (status, body, _) = post_json(
        &hub.url(&format!("/v1/orgs/{org}/events")),
        &json!({"event": event, "payload": payload}),
        &[],
    )
    .await;
    assert_eq!(status, 202, "publish {event}: {body}");
    body["cursor"].as_str().expect("cursor").to_string()
}

/// A fresh subscriber gets a freshly published event: the hub still serves others.
async fn assert_responsive(hub: &TestHub, what: &str) {
    let (status, body, _) = common::get(&hub.url("/healthz"), &[]).await;
    assert_eq!(status, 200, "after {what}: /healthz {body}");
    let org = unique_org("responsive");
    let mut sub = subscribe(hub, &org).await;
    let cursor = publish(hub, &org, "probe.ok", json!({"after": what})).await;
    let ev = sub.expect_event(T).await;
    assert_eq!(
        (ev.event.as_str(), ev.last_event_id.as_str()),
        ("probe.ok", cursor.as_str()),
        "after {what}"
    );
}

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses complete responses from `buf` (Content-Length, chunked, or to EOF when `eof`).
fn parse_responses(mut buf: &[u8], eof: bool) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some(head_end) = find(buf, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1."),
            "not an HTTP response: {status_line:?} in {:?}",
            String::from_utf8_lossy(buf)
        );
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut rest = &buf[head_end + 4..];
        let body;
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            let mut b = Vec::new();
            loop {
                let Some(le) = find(rest, b"\r\n") else {
                    return out;
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&rest[..le])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .unwrap_or_else(|_| {
                    panic!("bad chunk size in {:?}", String::from_utf8_lossy(rest))
                });
                if rest.len() < le + 2 + size + 2 {
                    return out;
                }
                b.extend_from_slice(&rest[le + 2..le + 2 + size]);
                rest = &rest[le + 2 + size + 2..];
                if size == 0 {
                    break;
                }
            }
            body = b;
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().expect("content-length");
            if rest.len() < len {
                return out;
            }
            body = rest[..len].to_vec();
            rest = &rest[len..];
        } else if eof {
            body = rest.to_vec();
            rest = &[];
        } else {
            return out;
        }
        out.push(RawResponse {
            status,
            headers,
            body,
        });
        buf = rest;
    }
    out
}

/// Writes `request` on a new connection and reads until the hub closes it, or until it
/// stayed quiet for `idle` after at least one full response (upper bound `T`).
async fn exchange(hub: &TestHub, request: &[u8], idle: Duration) -> (Vec<RawResponse>, bool) {
    let mut s = TcpStream::connect(hub.addr()).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    let deadline = Instant::now() + T;
    let mut chunk = [0u8; 16384];
    let eof = loop {
        let wait = if parse_responses(&buf, false).is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            idle
        };
        match tokio::time::timeout(wait, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (parse_responses(&buf, eof), eof)
}

/// Each shape is ambiguous about where the body ends. Whatever the hub decides, the
/// request it smuggles (a second publish hidden in the body) must never run, and the
/// outer publish may be stored at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_never_publish_extra() {
    let hub = memory_hub(&[]).await;
    let org = unique_org("smuggle");
    let mut sub = subscribe(&hub, &org).await;
    let path = format!("/v1/orgs/{org}/events");
    let smuggled = |name: &str| {
        let body = format!(r#"{{"event":"smuggled.{name}"}}"#);
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let json_of = |name: &str| format!(r#"{{"event":"shape.{name}"}}"#);
    let chunk_of = |s: &str| format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len());
    let head = |extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}\r\n"
        )
    };

    let mut shapes: Vec<(&str, String)> = Vec::new();
    // Control: an unambiguous publish must be accepted, or the checks below prove nothing.
    {
        let j = json_of("control");
        shapes.push((
            "control",
            format!("{}{j}", head(&format!("Content-Length: {}\r\n", j.len()))),
        ));
    }
    // CL.TE: Content-Length spans the chunked body and the smuggled request.
    {
        let body = format!("{}{}", chunk_of(&json_of("cl_te")), smuggled("cl_te"));
        shapes.push((
            "cl_te",
            format!(
                "{}{body}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len()
                ))
            ),
        ));
    }
    // TE.CL: a short Content-Length would leave the chunk's content as the next request.
    {
        let inner = smuggled("te_cl");
        let body = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
        let prefix = format!("{:x}\r\n", inner.len()).len();
        shapes.push((
            "te_cl",
            format!(
                "{}{body}",
                head(&format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {prefix}\r\n"
                ))
            ),
        ));
    }
    // Two different Content-Lengths: the first one would end the body before the smuggle.
    for (name, first_short) in [("dup_cl_short_first", true), ("dup_cl_long_first", false)] {
        let j = json_of(name);
        let body = format!("{j}{}", smuggled(name));
        let (a, b) = if first_short {
            (j.len(), body.len())
        } else {
            (body.len(), j.len())
        };
        shapes.push((
            name,
            format!(
                "{}{body}",
                head(&format!("Content-Length: {a}\r\nContent-Length: {b}\r\n"))
            ),
        ));
    }
    // Obfuscated Transfer-Encoding next to a Content-Length covering everything.
    for (name, te) in [
        ("te_trailing_comma", "Transfer-Encoding: chunked ,\r\n"),
        ("te_xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("te_tab", "Transfer-Encoding:\tchunked\r\n"),
        ("te_upper", "Transfer-Encoding: CHUNKED\r\n"),
        (
            "te_identity_chunked",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        (
            "te_chunked_identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "te_twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        ("te_space_before_colon", "Transfer-Encoding : chunked\r\n"),
        ("te_obs_fold", "Transfer-Encoding:\r\n chunked\r\n"),
        ("te_vertical_tab", "Transfer-Encoding:\x0bchunked\r\n"),
    ] {
        let body = format!("{}{}", chunk_of(&json_of(name)), smuggled(name));
        shapes.push((
            name,
            format!(
                "{}{body}",
                head(&format!("{te}Content-Length: {}\r\n", body.len()))
            ),
        ));
    }
    // Bare obfuscated Transfer-Encoding (no Content-Length at all).
    for (name, te) in [
        ("bare_te_trailing_comma", "Transfer-Encoding: chunked ,\r\n"),
        ("bare_te_xchunked", "Transfer-Encoding: xchunked\r\n"),
    ] {
        let body = format!("{}{}", chunk_of(&json_of(name)), smuggled(name));
        shapes.push((name, format!("{}{body}", head(te))));
    }
    // Content-Length values that lenient parsers read differently.
    // Each lenient reading ends the body right after the JSON, exposing the smuggle.
    for (name, cl) in [
        ("cl_plus", "+{n}"),
        ("cl_negative", "-1"),
        ("cl_list", "{n}, {n}"),
        ("cl_hex", "0x{x}"),
        ("cl_leading_space_digits", "{n} 0"),
        ("cl_huge", "99999999999999999999999"),
    ] {
        let j = json_of(name);
        let cl = cl
            .replace("{n}", &j.len().to_string())
            .replace("{x}", &format!("{:x}", j.len()));
        let body = format!("{j}{}", smuggled(name));
        shapes.push((
            name,
            format!("{}{body}", head(&format!("Content-Length: {cl}\r\n"))),
        ));
    }
    // Chunk-size tricks: overflowing size, size with extension/whitespace.
    {
        let name = "chunk_overflow";
        let body = format!("ffffffffffffffff1\r\n{}\r\n0\r\n\r\n", smuggled(name));
        shapes.push((
            name,
            format!("{}{body}", head("Transfer-Encoding: chunked\r\n")),
        ));
    }
    // HTTP/1.0 with chunked (chunked is not HTTP/1.0).
    {
        let name = "http10_chunked";
        let body = format!("{}{}", chunk_of(&json_of(name)), smuggled(name));
        shapes.push((
            name,
            format!(
                "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        ));
    }
    // Bare LF line endings around the framing headers.
    {
        let name = "bare_lf";
        let body = format!("{}{}", chunk_of(&json_of(name)), smuggled(name));
        shapes.push((
            name,
            format!(
                "POST {path} HTTP/1.1\nHost: localhost\nContent-Type: application/json\nTransfer-Encoding: chunked\nContent-Length: {}\n\n{body}",
                body.len()
            ),
        ));
    }

    let mut accepted: Vec<String> = Vec::new();
    let mut report = Vec::new();
    for (name, request) in &shapes {
        let (responses, eof) =
            exchange(&hub, request.as_bytes(), Duration::from_millis(1500)).await;
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        let conn = responses
            .iter()
            .filter_map(|r| r.headers.get("connection"))
            .cloned()
            .collect::<Vec<_>>();
        report.push(format!(
            "{name}: {statuses:?} connection={conn:?} closed={eof}"
        ));
        assert_eq!(
            responses.len(),
            1,
            "{name}: exactly one response expected (a second one means the smuggled request ran); got {responses:?}"
        );
        let status = statuses[0];
        assert!(
            status == 202 || (400..500).contains(&status) || status == 501,
            "{name}: unexpected status {status}: {:?}",
            String::from_utf8_lossy(&responses[0].body)
        );
        if *name == "control" {
            assert_eq!(status, 202, "control publish refused: {responses:?}");
        }
        if status == 202 {
            accepted.push(format!("shape.{name}"));
        }
        // The hub answers every later client normally: the connection state was not shared.
        let (h, body, _) = common::get(&hub.url("/healthz"), &[]).await;
        assert_eq!(h, 200, "after {name}: {body}");
    }
    println!("smuggling shapes:\n  {}", report.join("\n  "));

    let sentinel = publish(&hub, &org, "sentinel.done", json!({})).await;
    let events = sub
        .collect_events_until(|e| e.last_event_id == sentinel, T)
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names.last(),
        Some(&"sentinel.done"),
        "sentinel never arrived: {names:?}"
    );
    let mut expected: Vec<&str> = accepted.iter().map(String::as_str).collect();
    expected.push("sentinel.done");
    assert_eq!(
        names, expected,
        "only accepted shapes, each once, and never a smuggled event"
    );
    assert_responsive(&hub, "smuggling").await;
}

fn status_of(buf: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(buf)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
}

/// Request heads beyond actix's 128 KiB head buffer, or with more headers than it
/// parses, are refused with 431 (or 400); a 64 KB header within that limit gets a
/// normal answer. Either way nothing is published and everyone else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_and_hub_stays_responsive() {
    let hub = memory_hub(&[]).await;
    let org = unique_org("hugehdr");
    let kb64 = "a".repeat(64 * 1024);
    let kb200 = "a".repeat(200 * 1024);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let fill = format!("X-Fill: {}\r\n", "b".repeat(1000)).repeat(1024);
    let publish_head = |extra: &str| {
        format!(
            "POST /v1/orgs/{org}/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 19\r\n{extra}\r\n{{\"event\":\"huge.x\"}}"
        )
    };
    // (what, request, must be refused)
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "64 KB header value (within actix's head limit)",
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {kb64}\r\n\r\n"),
            false,
        ),
        (
            "64 KB Last-Event-ID on a stream",
            format!(
                "GET /v1/orgs/{org}/stream HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {kb64}\r\n\r\n"
            ),
            false,
        ),
        (
            "200 KB header value",
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {kb200}\r\n\r\n"),
            true,
        ),
        (
            "200 KB request target",
            format!("GET /healthz?{kb200} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            true,
        ),
        (
            "300 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}\r\n"),
            true,
        ),
        ("1 MB header block on a publish", publish_head(&fill), true),
        (
            "200 KB header value on a publish",
            publish_head(&format!("X-Big: {kb200}\r\n")),
            true,
        ),
    ];
    let mut sub = subscribe(&hub, &org).await;
    for (what, request, refused) in &cases {
        let mut s = TcpStream::connect(hub.addr()).await.expect("connect");
        let (buf, ()) = {
            let (mut rd, mut wr) = s.split();
            let writer = async {
                // The hub may stop reading (and reset) before we are done: that is fine.
                let _ = wr.write_all(request.as_bytes()).await;
            };
            let reader = async {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                let deadline = Instant::now() + T;
                while find(&buf, b"\r\n\r\n").is_none() {
                    match tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        rd.read(&mut chunk),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                buf
            };
            tokio::join!(reader, writer)
        };
        let status = status_of(&buf);
        println!("{what}: {status:?}");
        if *refused {
            assert!(
                matches!(status, Some(431) | Some(400) | Some(414)) || buf.is_empty(),
                "{what}: expected 431/400/414 or a closed connection, got {:?}",
                String::from_utf8_lossy(&buf)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        } else {
            assert!(
                matches!(status, Some(200) | Some(400) | Some(431)),
                "{what}: expected a normal answer (200) or a refusal, got {:?}",
                String::from_utf8_lossy(&buf)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        drop(s);
        assert_responsive(&hub, what).await;
    }
    // Nothing from the refused publishes reached the org.
    let sentinel = publish(&hub, &org, "sentinel.done", json!({})).await;
    let ev = sub.expect_event(T).await;
    assert_eq!(
        (ev.event.as_str(), ev.last_event_id.as_str()),
        ("sentinel.done", sentinel.as_str())
    );
}

/// Several clients dribble their request heads a byte at a time: others are served
/// meanwhile, and the hub's request timeout closes the dribblers long before their
/// heads would be complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_others_and_is_timed_out() {
    let hub = memory_hub(&[]).await;
    let org = unique_org("slowloris");
    const SLOW: usize = 6;
    // 120+ bytes at ~300 ms each would take over 36 s: far beyond any sane request timeout.
    let head = format!(
        "GET /v1/orgs/{org}/stream HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(60)
    );
    assert!(head.len() >= 120, "{}", head.len());
    let mut tasks = Vec::new();
    for _ in 0..SLOW {
        let head = head.clone().into_bytes();
        let addr = hub.addr();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let (mut rd, mut wr) = s.into_split();
            let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = rd.read_to_end(&mut buf).await;
                let _ = done_tx.send(buf);
            });
            let mut sent = 0;
            for b in &head {
                if let Ok(buf) = done_rx.try_recv() {
                    return (sent, Some(buf));
                }
                if wr.write_all(&[*b]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let closed = tokio::time::timeout(T, done_rx)
                .await
                .ok()
                .and_then(Result::ok);
            (sent, closed)
        }));
    }
    // While they dribble, the hub serves well-behaved clients several times over.
    for round in 0..3 {
        assert_responsive(&hub, &format!("slowloris round {round}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in tasks {
        let (sent, closed) = t.await.expect("slow client task");
        let Some(reply) = closed else {
            panic!("hub never closed a slowloris connection ({sent} bytes sent)");
        };
        assert!(
            sent < head.len(),
            "slow client finished its whole request head ({sent} bytes) before the hub closed it"
        );
        let text = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty() || text.starts_with("HTTP/1.1 408"),
            "unexpected reply to a slow request: {text:?}"
        );
        println!(
            "slow client closed after {sent} bytes, reply {:?}",
            text.lines().next()
        );
    }
    assert_responsive(&hub, "slowloris end").await;
}

/// 1,000 subscribers with tiny receive buffers never read while large events flow:
/// every queue overflows (the hub cuts the session off as slow), the hub's memory stays
/// within connections × REALTIME_SESSION_QUEUE_BYTES (×2, plus slack), and a reading
/// client gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_non_reading_streams_bounded_memory() {
    flood_non_readers(false).await;
}

/// Same flood; additionally every cut-off connection must really be released (socket
/// closed, connection slot freed): the hub cannot write its final frame to a peer that never
/// reads, so the kernel drops it after REALTIME_SEND_TIMEOUT_SECONDS of zero window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_non_reading_streams_are_released() {
    flood_non_readers(true).await;
}

async fn flood_non_readers(check_release: bool) {
    const CONNS: usize = 1000;
    const QUEUE: u64 = 65536;
    const EVENTS: usize = 40;
    let hub = memory_hub(&[
        ("REALTIME_SESSION_QUEUE_BYTES", "65536"),
        ("REALTIME_MAX_CONNECTIONS", "5000"),
        ("REALTIME_HEARTBEAT_SECONDS", "15"),
        ("REALTIME_SEND_TIMEOUT_SECONDS", "5"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let org = unique_org("nonreaders");
    let mut good = subscribe(&hub, &org).await;
    let baseline = common::rss_kib(hub.pid());

    // Small receive buffers and MSS (common::non_reading_stream) keep the kernel from
    // absorbing megabytes per socket, so the hub's own per-session queue is what fills.
    let path = format!("/v1/orgs/{org}/stream");
    let mut idle = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        idle.push(common::non_reading_stream(hub.addr(), &path, &[]).await);
    }
    // Every stream is registered before the flood (so each one really has a queue).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = hub.metrics().await;
        let open = common::metric_sum(&m, "dashclaw_realtime_connections");
        if open >= (CONNS + 1) as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {open} streams open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let bound = baseline + (CONNS as u64 * QUEUE * 2) / 1024 + 96 * 1024;
    let mut peak = baseline;
    let big = "x".repeat(30 * 1024);
    let mut cursors = Vec::new();
    for i in 0..EVENTS {
        cursors.push(publish(&hub, &org, "load.big", json!({"i": i, "fill": big})).await);
        peak = peak.max(common::rss_kib(hub.pid()));
    }
    let events = good
        .collect_events_until(
            |e| e.last_event_id == *cursors.last().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    peak = peak.max(common::rss_kib(hub.pid()));
    let got: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(
        got, cursors,
        "the reading client gets every event, in order, once"
    );

    // The never-readers overflow their queues and are cut off as slow.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (overflowed, closed_slow, open) = loop {
        let m = hub.metrics().await;
        let overflowed = common::metric_sum(&m, "dashclaw_realtime_slow_disconnects_total");
        let closed_slow = common::metric_value(
            &m,
            "dashclaw_realtime_connections_closed_total",
            &[("reason", "slow")],
        )
        .unwrap_or(0.0);
        let open = common::metric_sum(&m, "dashclaw_realtime_connections");
        peak = peak.max(common::rss_kib(hub.pid()));
        let done = overflowed >= CONNS as f64 && (!check_release || closed_slow >= CONNS as f64);
        if done || Instant::now() >= deadline {
            break (overflowed, closed_slow, open);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "rss baseline {baseline} KiB, peak {peak} KiB, bound {bound} KiB; overflowed {overflowed}, closed slow {closed_slow}, open {open}"
    );
    assert!(
        peak < bound,
        "hub RSS peaked at {peak} KiB, bound {bound} KiB"
    );
    assert_eq!(
        overflowed as usize, CONNS,
        "every non-reader's queue must overflow"
    );
    if check_release {
        assert_eq!(
            (closed_slow as usize, open as usize),
            (CONNS, 1),
            "every non-reader's connection must be closed and its slot freed"
        );
    }
    drop(idle);
    assert_responsive(&hub, "1000 non-readers").await;
}

/// A client that shuts down its write side right after its request still gets its
/// response (or a clean close), publishes exactly once, and leaves no stuck connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_sockets() {
    let hub = memory_hub(&[]).await;
    let org = unique_org("halfclose");
    let mut sub = subscribe(&hub, &org).await;

    // Publish, then half-close: one 202, stored once.
    let body = r#"{"event":"half.published"}"#;
    let req = format!(
        "POST /v1/orgs/{org}/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(hub.addr()).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    s.shutdown().await.expect("shutdown write");
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .expect("hub closes after answering a half-closed publish")
        .expect("read");
    let responses = parse_responses(&buf, true);
    assert!(responses.len() <= 1, "at most one response: {responses:?}");
    let published = responses.first().is_some_and(|r| r.status == 202);
    println!(
        "half-closed publish: {:?}",
        responses.first().map(|r| r.status)
    );

    // Stream, then half-close: the stream is delivered (or the hub ends it cleanly).
    let req = format!(
        "GET /v1/orgs/{org}/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    );
    let mut hs = TcpStream::connect(hub.addr()).await.expect("connect");
    hs.write_all(req.as_bytes()).await.expect("write");
    hs.shutdown().await.expect("shutdown write");
    let mut stream_bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_deadline = Instant::now() + T;
    let stream_closed = loop {
        if find(&stream_bytes, b"realtime.connected").is_some() {
            break false;
        }
        match tokio::time::timeout(
            head_deadline.saturating_duration_since(Instant::now()),
            hs.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => stream_bytes.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "half-closed stream: neither data nor close within {T:?}: {:?}",
                String::from_utf8_lossy(&stream_bytes)
            ),
        }
    };
    let text = String::from_utf8_lossy(&stream_bytes).into_owned();
    let live_cursor = publish(&hub, &org, "half.live", json!({})).await;
    if stream_closed {
        println!("half-closed stream: hub closed it: {text:?}");
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 4"),
            "{text:?}"
        );
    } else {
        println!("half-closed stream: delivered");
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        let needle = format!("id: {live_cursor}\nevent: half.live\n");
        let deadline = Instant::now() + T;
        while find(&stream_bytes, needle.as_bytes()).is_none() {
            match tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                hs.read(&mut chunk),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => stream_bytes.extend_from_slice(&chunk[..n]),
                other => panic!(
                    "half-closed stream stopped before the live event ({other:?}): {:?}",
                    String::from_utf8_lossy(&stream_bytes)
                ),
            }
        }
    }
    drop(hs);

    // The live subscriber saw the half-closed publish once (if accepted) then the live event.
    let sentinel = publish(&hub, &org, "sentinel.done", json!({})).await;
    let events = sub
        .collect_events_until(|e| e.last_event_id == sentinel, T)
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let mut expected = Vec::new();
    if published {
        expected.push("half.published");
    }
    expected.extend(["half.live", "sentinel.done"]);
    assert_eq!(names, expected);

    // Neither half-closed socket leaves a connection counted as open.
    let deadline = Instant::now() + T;
    loop {
        let open = common::metric_sum(&hub.metrics().await, "dashclaw_realtime_connections");
        if open <= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} streams still open, only the subscriber should be"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_responsive(&hub, "half-closed sockets").await;
}

/// `REALTIME_REQUEST_TIMEOUT_MS` is the time a new connection has to send its request head:
/// with 60 s, a head sent after 6 s (longer than actix's 5-s default) still opens its stream;
/// with 1 s, a connection that sends nothing is answered 408 and closed.
#[tokio::test]
async fn request_timeout_setting_bounds_the_wait_for_a_request_head() {
    let org = unique_org("request_timeout");
    let head = format!("GET /v1/orgs/{org}/stream HTTP/1.1\r\nHost: localhost\r\n\r\n");

    let patient = memory_hub(&[("REALTIME_REQUEST_TIMEOUT_MS", "60000")]).await;
    let mut late = TcpStream::connect(patient.addr()).await.expect("connect");
    tokio::time::sleep(Duration::from_secs(6)).await;
    late.write_all(head.as_bytes()).await.expect("late head");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + T;
    while !String::from_utf8_lossy(&reply).contains("realtime.connected") {
        let n = tokio::time::timeout_at(deadline, late.read(&mut buf))
            .await
            .expect("stream opens after a late head")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    let strict = memory_hub(&[("REALTIME_REQUEST_TIMEOUT_MS", "1000")]).await;
    let mut silent = TcpStream::connect(strict.addr()).await.expect("connect");
    let mut reply = Vec::new();
    tokio::time::timeout(T, silent.read_to_end(&mut reply))
        .await
        .expect("the hub closes a silent connection")
        .expect("read");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
}
