//! Stream lifecycle at scale (issue 12): the paced drain of an instance behind a shared port,
//! the maximum stream age, accept pacing, and resumes from the same or nearby positions
//! sharing their stream reads. Every client is checked for the exact sequence across its
//! reconnects; times are only checked against wide margins around what the hub guarantees.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use common::{
    Backend, BackendKind, End, Follower, Publisher, SseClient, StreamRecord, TestHub, TestRedis,
    assert_same_ids, error_code, free_port, header_str, metric_value, post_json, unique_org,
};

/// Upper bound for anything to arrive; never a speed expectation.
const WAIT: Duration = Duration::from_secs(60);

fn stream_url(base: &str, org: &str) -> String {
    format!("{base}/v1/orgs/{org}/stream")
}

fn events_url(base: &str, org: &str) -> String {
    format!("{base}/v1/orgs/{org}/events")
}

/// The ids of the data events a follower received over all its streams, in order; asserts
/// no stream carried a `realtime.resync` and each one `realtime.connected`, except a stream
/// the server ended cleanly before it (its age or the drain ran out during its replay, which
/// a busy machine can make last that long; the next stream resumes where it stopped).
fn delivered_ids(label: &str, records: &[StreamRecord], org: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, record) in records.iter().enumerate() {
        let names: Vec<&str> = record.events.iter().map(|e| e.event.as_str()).collect();
        assert!(
            !names.contains(&"realtime.resync"),
            "{label} stream {n}: a resync although nothing was lost: {names:?}"
        );
        let ended_cleanly = matches!(record.ended, Some((_, End::Clean)));
        assert!(
            names.contains(&"realtime.connected") || ended_cleanly,
            "{label} stream {n}: no realtime.connected and no clean end: {names:?} {:?}",
            record.ended
        );
        for ev in record.data() {
            ids.push(common::id_of(&common::delivered_envelope(ev, org)));
        }
    }
    ids
}

/// The ids a publisher got accepted, and the last cursor.
async fn accepted(publisher: Publisher) -> (Vec<String>, String) {
    let log = publisher.finish().await;
    let ids = log.accepted.iter().map(|a| a.id.clone()).collect();
    let last = log.accepted.last().expect("accepted").cursor.clone();
    (ids, last)
}

// ---------------------------------------------------------------------------------------------
// The paced drain: two instances behind one port.
// ---------------------------------------------------------------------------------------------

/// One look at an instance, through a keep-alive connection that only it holds: `/readyz`
/// and `/metrics`, pipelined, so both answers describe the same moment.
#[derive(Debug, Clone)]
struct Sample {
    ready_status: u16,
    connections: f64,
    drain_closes: f64,
}

/// Reads one response with a `Content-Length` body from a raw connection.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, String)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                buf.drain(..end + 4 + length);
                return Some((status, body));
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Samples the instance holding `sock` every 100 ms until its connection closes or `stop`.
async fn probe(mut sock: TcpStream, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let request = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
                   GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut samples = Vec::new();
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if sock.write_all(request.as_bytes()).await.is_err() {
            break;
        }
        let Some((ready_status, _)) = read_response(&mut sock, &mut buf).await else {
            break;
        };
        let Some((_, metrics)) = read_response(&mut sock, &mut buf).await else {
            break;
        };
        let value = |name, labels: &[(&str, &str)]| {
            metric_value(&metrics, name, labels).unwrap_or(f64::NAN)
        };
        samples.push(Sample {
            ready_status,
            connections: value("dashclaw_realtime_connections", &[]),
            drain_closes: value(
                "dashclaw_realtime_connections_closed_total",
                &[("reason", "drain")],
            ),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// SIGTERM with 500 clients on one of two instances sharing a port: `/readyz` says 503
/// while every stream is still open; the streams close spread over the grace time, each
/// with a jittered `retry:`; every client resumes on the other instance and ends with the
/// exact sequence; the instance exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_paced_to_the_other_instance() {
    const CLIENTS: usize = 500;
    const ORGS: usize = 5;
    // The default drain delay (5 s); the grace time spreads 500 closes over 8 s.
    const DELAY: f64 = 5.0;
    const GRACE: f64 = 8.0;
    const RETRY_MS: u64 = 500;
    let redis = TestRedis::spawn().await;
    let redis_url = redis.url();
    let bind = format!("127.0.0.1:{}", free_port());
    let env: Vec<(&str, &str)> = vec![
        ("REALTIME_BACKEND", "redis"),
        ("REDIS_URL", &redis_url),
        ("REALTIME_BIND", &bind),
        ("REALTIME_REUSE_PORT", "true"),
        ("REALTIME_SHUTDOWN_GRACE_SECONDS", "8"),
        ("REALTIME_RETRY_MS", "500"),
    ];
    let a = TestHub::spawn(&env).await;
    // /readyz is 503 until A's backend is up: the probe starts after that, so the first 503 it
    // sees is the drain's.
    assert!(a.wait_ready(WAIT).await, "A never ready:\n{}", a.log_text());
    let base = a.base_url();
    // Opened while only A listens, so this connection (and every stream below) is A's.
    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe_sock = TcpStream::connect(a.addr())
        .await
        .expect("probe connection");
    let probe = tokio::spawn(probe(probe_sock, stop_probe.clone()));
    let orgs: Vec<String> = (0..ORGS).map(|_| unique_org("drain")).collect();
    let followers: Vec<Follower> = (0..CLIENTS)
        .map(|i| {
            let org = &orgs[i % ORGS];
            Follower::start(stream_url(&base, org), format!("client {i} ({org})"))
        })
        .collect();
    for f in &followers {
        f.wait_connected(1, WAIT).await;
    }
    let a_instance = followers[0].records()[0].instance.clone().expect("header");
    let b = TestHub::spawn(&env).await;
    assert!(
        b.wait_for_log("dashclaw-realtime listening", WAIT).await,
        "{}",
        b.log_text()
    );
    let publishers: Vec<Publisher> = orgs
        .iter()
        .map(|org| {
            Publisher::start_at(
                events_url(&base, org),
                &["shutting_down"],
                Duration::from_millis(100),
            )
        })
        .collect();
    for p in &publishers {
        p.wait_accepted_more(3, WAIT).await;
    }

    let signalled = Instant::now();
    assert!(a.sigterm(), "A exited before SIGTERM");
    for f in &followers {
        f.wait_connected(2, WAIT).await;
    }
    let status = a.wait_exit(WAIT).await.expect("A still running");
    let exited = signalled.elapsed().as_secs_f64();
    assert_eq!(status.code(), Some(0), "A's log:\n{}", a.log_text());
    // Closes end by the grace time; the server then has FLUSH_TIME (5 s) for the last bytes.
    assert!(
        exited < DELAY + GRACE + 5.0 + 5.0,
        "A exited {exited:.1} s after SIGTERM"
    );
    stop_probe.store(true, Ordering::SeqCst);
    let samples = probe.await.expect("probe task");

    // /readyz: 200 before the signal, 503 from some moment on, and a 503 answered while
    // all 500 streams were still open and none had been closed by the drain.
    let first_503 = samples
        .iter()
        .position(|s| s.ready_status == 503)
        .unwrap_or_else(|| panic!("A never answered /readyz with 503: {samples:?}"));
    assert!(
        samples[..first_503].iter().all(|s| s.ready_status == 200),
        "{samples:?}"
    );
    assert!(
        samples[first_503..].iter().all(|s| s.ready_status == 503),
        "/readyz came back from 503: {samples:?}"
    );
    assert!(
        samples[first_503..]
            .iter()
            .any(|s| s.connections == CLIENTS as f64 && s.drain_closes == 0.0),
        "no moment with /readyz 503 and every stream open: {:?}",
        &samples[first_503..(first_503 + 5).min(samples.len())]
    );

    let mut want = std::collections::HashMap::new();
    for (org, publisher) in orgs.iter().zip(publishers) {
        want.insert(org.clone(), accepted(publisher).await);
    }
    let mut end_offsets = Vec::with_capacity(CLIENTS);
    let mut final_retries = std::collections::HashSet::new();
    for (i, follower) in followers.into_iter().enumerate() {
        let org = &orgs[i % ORGS];
        let (want_ids, last) = &want[org];
        let label = follower.label.clone();
        let records = follower.finish_at(last, WAIT).await;
        let first = &records[0];
        assert_eq!(first.instance.as_ref(), Some(&a_instance), "{label}");
        let (ended_at, end) = first.ended.clone().expect("the first stream ended");
        assert_eq!(end, End::Clean, "{label}: the drain ends streams cleanly");
        let offset = ended_at.duration_since(signalled).as_secs_f64();
        assert!(
            offset >= DELAY,
            "{label}: closed {offset:.2} s after SIGTERM, within the drain delay"
        );
        end_offsets.push(offset);
        let retry = *first.retries.last().expect("retry: frames");
        assert!(
            (RETRY_MS / 2..=RETRY_MS * 3 / 2).contains(&retry),
            "{label}: final retry {retry}"
        );
        final_retries.insert(retry);
        for later in &records[1..] {
            assert!(
                later.instance.is_some() && later.instance.as_ref() != Some(&a_instance),
                "{label}: resumed on the draining instance"
            );
        }
        assert_same_ids(&label, &delivered_ids(&label, &records, org), want_ids);
    }
    end_offsets.sort_by(f64::total_cmp);
    let (p10, p90) = (end_offsets[CLIENTS / 10], end_offsets[CLIENTS * 9 / 10]);
    // Evenly spread, the middle 80 % of the closes take 80 % of the grace time; a burst
    // would take none of it.
    assert!(
        p90 - p10 >= 0.4 * GRACE,
        "closes not spread over the grace time: p10 {p10:.2} s, p90 {p90:.2} s after SIGTERM"
    );
    eprintln!(
        "drain: closes from {:.2} s to {:.2} s after SIGTERM (p10 {p10:.2}, p90 {p90:.2}); \
         A exited after {exited:.2} s; {} distinct final retry: hints",
        end_offsets[0],
        end_offsets[CLIENTS - 1],
        final_retries.len()
    );
    assert!(
        final_retries.len() > 10,
        "final retry: hints not jittered: {final_retries:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Maximum stream age.
// ---------------------------------------------------------------------------------------------

/// With a 2 s maximum age, clients cycle several times while publishing never stops: every
/// stream ends cleanly at its age (within the ±10 % jitter, plus wide margins for what the
/// test observes) with a `retry:`, and every client ends with the exact sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_at_their_jittered_max_age_and_resume_exactly() {
    const CLIENTS: usize = 20;
    const AGE: f64 = 2.0;
    let hub = TestHub::spawn(&[
        ("REALTIME_MAX_STREAM_SECONDS", "2"),
        ("REALTIME_RETRY_MS", "100"),
    ])
    .await;
    let base = hub.base_url();
    let orgs = [unique_org("age_a"), unique_org("age_b")];
    let followers: Vec<Follower> = (0..CLIENTS)
        .map(|i| Follower::start(stream_url(&base, &orgs[i % 2]), format!("client {i}")))
        .collect();
    for f in &followers {
        f.wait_connected(1, WAIT).await;
    }
    let publishers: Vec<Publisher> = orgs
        .iter()
        .map(|org| Publisher::start_at(events_url(&base, org), &[], Duration::from_millis(50)))
        .collect();
    // Four streams each: three ended by their age while events kept coming.
    for f in &followers {
        f.wait_connected(4, WAIT).await;
    }
    let mut want = Vec::new();
    for publisher in publishers {
        want.push(accepted(publisher).await);
    }
    let mut ages = Vec::new();
    for (i, follower) in followers.into_iter().enumerate() {
        let (want_ids, last) = &want[i % 2];
        let label = follower.label.clone();
        let records = follower.finish_at(last, WAIT).await;
        for record in records.iter().filter(|r| r.ended.is_some()) {
            let (ended_at, end) = record.ended.clone().expect("ended");
            assert_eq!(end, End::Clean, "{label}");
            assert_eq!(record.retries.last(), Some(&100), "{label}: final retry:");
            let age = ended_at.duration_since(record.opened).as_secs_f64();
            assert!(
                (AGE * 0.9 - 0.5..=AGE * 1.1 + 1.5).contains(&age),
                "{label}: a stream lived {age:.2} s"
            );
            ages.push(age);
        }
        assert_same_ids(
            &label,
            &delivered_ids(&label, &records, &orgs[i % 2]),
            want_ids,
        );
    }
    assert!(ages.len() >= 3 * CLIENTS, "{} ended streams", ages.len());
    let (min, max) = ages
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), a| (lo.min(*a), hi.max(*a)));
    assert!(max - min >= 0.1, "ages not jittered: {min:.3}..{max:.3} s");
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = hub.metrics().await;
        let closed = metric_value(
            &metrics,
            "dashclaw_realtime_connections_closed_total",
            &[("reason", "max_age")],
        )
        .unwrap_or(0.0);
        if closed >= ages.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{closed} max_age closes counted for {} streams",
            ages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Accept pacing.
// ---------------------------------------------------------------------------------------------

/// At 5 new streams a second, a burst of connects gets `503 too_many_new_streams` with a
/// jittered `Retry-After` (counted in `paced_refusals_total`), and the clients already
/// connected miss nothing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_beyond_the_pace_are_refused_and_live_clients_miss_nothing() {
    let hub = TestHub::spawn(&[("REALTIME_MAX_NEW_STREAMS_PER_SECOND", "5")]).await;
    let org = unique_org("paced");
    let url = stream_url(&hub.base_url(), &org);
    let live: Vec<Follower> = (0..5)
        .map(|i| Follower::start(url.clone(), format!("live {i}")))
        .collect();
    for f in &live {
        f.wait_connected(1, WAIT).await;
    }
    let publisher = Publisher::start_at(
        events_url(&hub.base_url(), &org),
        &[],
        Duration::from_millis(20),
    );
    publisher.wait_accepted_more(5, WAIT).await;

    // Batches of 50 at once: at 5 a second, a batch is only ever all admitted if it takes
    // 10 s; keep going until 20 refusals (bounded).
    let (mut refusals, mut admitted, mut attempts) = (Vec::new(), 0usize, 0usize);
    while refusals.len() < 20 {
        assert!(attempts < 2000, "{attempts} connects, none refused");
        let batch =
            join_all((0..50).map(|_| SseClient::connect_expect_status_with_headers(&url, &[])))
                .await;
        attempts += batch.len();
        for (status, body, headers) in batch {
            match status {
                200 => admitted += 1,
                503 => refusals.push((body, header_str(&headers, "retry-after"))),
                other => panic!("connect: {other} {body}"),
            }
        }
    }
    let mut delays = std::collections::HashSet::new();
    for (body, retry_after) in &refusals {
        assert_eq!(error_code(body), "too_many_new_streams", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("new streams per second")),
            "{body}"
        );
        let delay: u64 = retry_after
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After {retry_after:?}"));
        assert!((1..=5).contains(&delay), "Retry-After {delay}");
        delays.insert(delay);
    }
    assert!(delays.len() >= 2, "Retry-After not jittered: {delays:?}");
    let followers_refused: usize = live
        .iter()
        .map(|f| {
            f.refused()
                .iter()
                .filter(|e| e.contains("too_many_new_streams"))
                .count()
        })
        .sum();
    let metrics = hub.metrics().await;
    assert_eq!(
        metric_value(&metrics, "dashclaw_realtime_paced_refusals_total", &[]),
        Some((refusals.len() + followers_refused) as f64),
        "{admitted} of {attempts} admitted"
    );

    let (want, last) = accepted(publisher).await;
    for follower in live {
        let label = follower.label.clone();
        let records = follower.finish_at(&last, WAIT).await;
        assert_eq!(records.len(), 1, "{label}: a live client lost its stream");
        assert_same_ids(&label, &delivered_ids(&label, &records, &org), &want);
    }
}

// ---------------------------------------------------------------------------------------------
// Storm-proof resume.
// ---------------------------------------------------------------------------------------------

/// A resume: connects with `Last-Event-ID` and returns every event up to
/// `realtime.connected`.
async fn resume(url: String, last_event_id: String) -> Vec<common::SseEvent> {
    let mut client =
        SseClient::connect_ok(&url, &[("Last-Event-ID", last_event_id.as_str())]).await;
    client
        .collect_events_until(|e| e.event == "realtime.connected", WAIT)
        .await
}

/// Whether the hub's log shows `org`'s supervisor started on HTTP worker `worker`.
fn supervisor_on_worker(hub: &TestHub, org: &str, worker: usize) -> bool {
    let needle = format!("worker=Some({worker})");
    hub.log_text().lines().any(|line| {
        line.contains("supervisor started") && line.contains(org) && line.contains(&needle)
    })
}

/// The resume reads of the hub: (backend, shared with one in flight, from a recent page).
async fn resume_reads(hub: &TestHub) -> (f64, f64, f64) {
    let metrics = hub.metrics().await;
    let served = |how| {
        metric_value(
            &metrics,
            "dashclaw_realtime_stream_reads_total",
            &[("served", how)],
        )
        .unwrap_or(f64::NAN)
    };
    (served("backend"), served("shared"), served("cache"))
}

/// Twenty resumes of an org whose supervisor's ring does not reach back to them: ten from
/// the same position, queued while Redis is frozen, cost one lookup and one read per page;
/// ten more from nearby positions (inside the pages just read) cost none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_the_same_or_nearby_positions_share_their_reads() {
    let backend = Backend::new(BackendKind::Redis).await;
    let hub = backend
        .hub(&[
            (
                "RUST_LOG",
                "info,dashclaw_realtime::hub::stream_reader=debug,dashclaw_realtime::hub::registry=debug",
            ),
            ("REALTIME_REDIS_TIMEOUT_MS", "30000"),
        ])
        .await;
    let redis = backend.redis.as_ref().expect("redis");
    let org = unique_org("storm");
    let url = stream_url(&hub.base_url(), &org);
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"event": "storm.tick", "payload": {"i": i}}))
        .collect();
    let (status, body, _) = post_json(
        &events_url(&hub.base_url(), &org),
        &Value::Array(batch),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let stored = body.as_array().expect("envelopes").clone();
    let ids: Vec<String> = stored.iter().map(common::id_of).collect();
    let cursors: Vec<String> = stored.iter().map(common::cursor_of).collect();
    // The org's supervisor starts now, after the 300 events: its ring does not reach back.
    // The org's sessions join a supervisor on their own HTTP worker thread; one that starts
    // while Redis is frozen waits for the stream's head. Live clients are opened until every
    // worker has the org's supervisor, so the frozen resumes all reach the stream reader.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut live = Vec::new();
    while !(0..workers).all(|w| supervisor_on_worker(&hub, &org, w)) {
        assert!(
            live.len() < 20 * workers,
            "no supervisor on every worker:\n{}",
            hub.log_text()
        );
        let mut client = SseClient::connect_ok(&url, &[]).await;
        client.expect_event_named("realtime.connected", WAIT).await;
        live.push(client);
    }
    let check = |label: &str, from: usize, events: Vec<common::SseEvent>| {
        let (last, data) = events.split_last().expect("events");
        assert_eq!(last.event, "realtime.connected", "{label}");
        let got: Vec<String> = data
            .iter()
            .map(|e| common::id_of(&common::delivered_envelope(e, &org)))
            .collect();
        assert_same_ids(label, &got, &ids[from + 1..]);
    };

    // Ten from the same position while Redis is frozen: nine lookups queue behind the first.
    let reads_before = resume_reads(&hub).await;
    let reconnects_before = redis_reconnects(&hub).await;
    let (xrange_before, xinfo_before) = (
        redis.calls("xrange").await,
        redis.calls("xinfo|stream").await,
    );
    let shares_before = shares(&hub);
    redis.pause(true);
    let same: Vec<_> = (0..10)
        .map(|_| tokio::spawn(resume(url.clone(), cursors[9].clone())))
        .collect();
    let deadline = Instant::now() + WAIT;
    while shares(&hub) < shares_before + 9 {
        assert!(
            Instant::now() < deadline,
            "lookups not shared:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.pause(false);
    for (n, task) in same.into_iter().enumerate() {
        check(&format!("same #{n}"), 9, task.await.expect("resume task"));
    }
    let after_same = resume_reads(&hub).await;
    // One lookup and two pages (256 + 34 events) from Redis; the other 27 shared them.
    assert_eq!(after_same.0 - reads_before.0, 3.0, "backend reads");
    assert_eq!(
        (after_same.1 + after_same.2) - (reads_before.1 + reads_before.2),
        27.0,
        "shared and cached reads"
    );
    assert_eq!(
        redis.calls("xinfo|stream").await - xinfo_before,
        1,
        "XINFO lookups"
    );
    let xranges = redis.calls("xrange").await - xrange_before;
    if redis_reconnects(&hub).await == reconnects_before {
        assert_eq!(xranges, 2, "XRANGE reads for ten resumes");
    } else {
        // The freeze outlasted the canary: gap fills read the stream too (not resumes).
        assert!(xranges >= 2, "{xranges}");
    }

    // Ten from nearby positions, inside the first page: no Redis call at all.
    let (xrange_before, xinfo_before) = (
        redis.calls("xrange").await,
        redis.calls("xinfo|stream").await,
    );
    let nearby: Vec<_> = (10..20)
        .map(|i| tokio::spawn(resume(url.clone(), cursors[i].clone())))
        .collect();
    for (n, task) in nearby.into_iter().enumerate() {
        check(
            &format!("nearby #{n}"),
            10 + n,
            task.await.expect("resume task"),
        );
    }
    let after_nearby = resume_reads(&hub).await;
    assert_eq!(after_nearby.0 - after_same.0, 0.0, "backend reads");
    assert_eq!(
        after_nearby.2 - after_same.2,
        30.0,
        "cached lookups and pages"
    );
    assert_eq!(redis.calls("xinfo|stream").await - xinfo_before, 0);
    if redis_reconnects(&hub).await == reconnects_before {
        assert_eq!(redis.calls("xrange").await - xrange_before, 0);
    }
    drop(live);
}

/// Shared reads the stream reader logged so far.
fn shares(hub: &TestHub) -> usize {
    hub.log_text()
        .matches("a read shares one in flight")
        .count()
}

async fn redis_reconnects(hub: &TestHub) -> f64 {
    metric_value(
        &hub.metrics().await,
        "dashclaw_realtime_redis_reconnects_total",
        &[],
    )
    .unwrap_or(f64::NAN)
}
