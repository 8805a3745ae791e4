//! Resume by `Last-Event-ID` (contract section 3): no gap and no duplicate across a
//! reconnect, also while events keep coming; resync for unknown or expired positions;
//! the `realtime.connected` frame after the replay.

#[macro_use]
mod common;

use common::{assert_same_ids, cursor_key, cursor_of, delivered_envelope, id_of, str_field};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use common::{Backend, SseClient, SseEvent, TestHub, ms, post_json, unique_org};

backend_tests!(
    resume_while_publishing_never_stops,
    unknown_positions_resync_then_live,
    expired_position_resyncs,
    connected_after_replay_counts,
    replay_larger_than_a_page
);

/// Upper bound for anything the hub should deliver; never a speed expectation.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs one event object or a batch to the org and returns the stored envelopes.
async fn publish(hub: &TestHub, org: &str, body: &Value) -> Vec<Value> {
    let url = hub.url(&format!("/v1/orgs/{org}/events"));
    let (status, resp, _) = post_json(&url, body, &[]).await;
    assert_eq!(status, 202, "POST {url} {body}: {resp}");
    match resp {
        Value::Array(out) => out,
        out @ Value::Object(_) => vec![out],
        other => panic!("POST {url}: unexpected answer {other}"),
    }
}

/// Publishes `count` events in batches of at most `batch`, named by `name(i)`.
async fn publish_many(
    hub: &TestHub,
    org: &str,
    count: usize,
    batch: usize,
    name: impl Fn(usize) -> &'static str,
) -> Vec<Value> {
    let mut stored = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let body: Vec<Value> = (start..end)
            .map(|i| json!({"event": name(i), "payload": {"i": i}}))
            .collect();
        stored.extend(publish(hub, org, &Value::Array(body)).await);
        start = end;
    }
    stored
}

/// Asserts a control frame of type `name` without an `id:` line; returns its data.
fn control(ev: &SseEvent, name: &str) -> Value {
    assert_eq!(ev.event, name, "expected {name}, got {ev:?}");
    assert!(!ev.had_id_field, "control event with an id: line: {ev:?}");
    ev.json()
}

/// Reads events up to and including `realtime.connected`; returns the envelopes before it
/// and the connected data.
async fn read_replay(client: &mut SseClient, org: &str) -> (Vec<Value>, Value) {
    let events = client
        .collect_events_until(|e| e.event == "realtime.connected", DELIVERY_TIMEOUT)
        .await;
    let Some((last, replay)) = events.split_last() else {
        panic!(
            "no event at all from {}; raw:\n{}",
            client.url(),
            client.raw_text()
        );
    };
    if last.event != "realtime.connected" {
        panic!(
            "no realtime.connected from {} after {} events; raw:\n{}",
            client.url(),
            events.len(),
            client.raw_text()
        );
    }
    let replay = replay.iter().map(|e| delivered_envelope(e, org)).collect();
    (replay, control(last, "realtime.connected"))
}

/// How a reconnecting client states its position.
#[derive(Debug, Clone, Copy)]
enum ResumeForm {
    CursorHeader,
    IdHeader,
    CursorQuery,
    IdQuery,
}

const FORMS: [ResumeForm; 4] = [
    ResumeForm::CursorHeader,
    ResumeForm::IdHeader,
    ResumeForm::CursorQuery,
    ResumeForm::IdQuery,
];

/// URL and headers to resume after `last` in the given form.
fn resume_request(stream: &str, last: &Value, form: ResumeForm) -> (String, Vec<(String, String)>) {
    match form {
        ResumeForm::CursorHeader => (
            stream.to_string(),
            vec![("Last-Event-ID".into(), cursor_of(last))],
        ),
        ResumeForm::IdHeader => (
            stream.to_string(),
            vec![("Last-Event-ID".into(), id_of(last))],
        ),
        ResumeForm::CursorQuery => (
            format!("{stream}?last_event_id={}", cursor_of(last)),
            Vec::new(),
        ),
        ResumeForm::IdQuery => (format!("{stream}?lastEventId={}", id_of(last)), Vec::new()),
    }
}

/// What one resuming client saw up to its reconnect.
struct Resumed {
    index: usize,
    form: ResumeForm,
    before: Vec<Value>,
    replay: Vec<Value>,
    connected: Value,
    client: SseClient,
}

async fn resume_one(index: usize, stream: String, org: String, backend: &'static str) -> Resumed {
    // Staggered joins, read lengths and pauses put the disconnects at different points
    // of the publisher's run.
    tokio::time::sleep(ms(15 * index as u64)).await;
    let mut first = SseClient::connect_ok(&stream, &[]).await;
    let (nothing, hello) = read_replay(&mut first, &org).await;
    assert!(
        nothing.is_empty(),
        "client {index}: replay without a position"
    );
    assert_eq!(hello["replayed"], json!(0), "{hello}");
    assert_eq!(hello["backend"], json!(backend), "{hello}");
    let take = 1 + (index * 7) % 17;
    let mut before = Vec::with_capacity(take);
    for _ in 0..take {
        let ev = first.expect_event(DELIVERY_TIMEOUT).await;
        before.push(delivered_envelope(&ev, &org));
    }
    first.close();
    drop(first);
    // Every tenth client stays away long enough to miss more than a replay page.
    let away = if index % 10 == 9 {
        1200
    } else {
        (index * 13) % 70
    };
    tokio::time::sleep(ms(away as u64)).await;

    let form = FORMS[index % FORMS.len()];
    let last = before.last().unwrap_or_else(|| unreachable!("take >= 1"));
    let (url, headers) = resume_request(&stream, last, form);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut client = SseClient::connect_ok(&url, &pairs).await;
    let (replay, connected) = read_replay(&mut client, &org).await;
    Resumed {
        index,
        form,
        before,
        replay,
        connected,
        client,
    }
}

async fn resume_while_publishing_never_stops(backend: Backend) {
    const CLIENTS: usize = 50;
    let hub = Arc::new(backend.hub(&[]).await);
    let org = unique_org("resume_live");
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));

    let accepted: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let (stop_tx, stop_rx) = watch::channel(false);
    let publisher = {
        let (hub, org, accepted) = (hub.clone(), org.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut round = 0usize;
            while !*stop_rx.borrow() {
                // Singles and batches of 2..=7, so replays of the paused clients span
                // several pages while the publisher keeps going.
                let size = if round.is_multiple_of(3) {
                    1
                } else {
                    2 + round % 6
                };
                round += 1;
                let body = if size == 1 {
                    json!({"event": "action.created", "payload": {"n": n}})
                } else {
                    Value::Array(
                        (0..size)
                            .map(|k| json!({"event": "action.updated", "payload": {"n": n + k}}))
                            .collect(),
                    )
                };
                let stored = publish(&hub, &org, &body).await;
                n += stored.len();
                let total = {
                    let mut all = accepted.lock().unwrap_or_else(|p| p.into_inner());
                    all.extend(stored);
                    all.len()
                };
                count_tx.send_replace(total);
                tokio::time::sleep(ms(5 + (n % 6) as u64)).await;
            }
        })
    };

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(resume_one(i, stream.clone(), org.clone(), backend.name())))
        .collect();
    let mut resumed = Vec::with_capacity(CLIENTS);
    for task in tasks {
        resumed.push(task.await.unwrap_or_else(|e| panic!("client task: {e}")));
    }
    // Everyone is back; let the publisher go on a little so every client also gets live
    // events on its new connection, then stop it.
    let target = *count_rx.borrow() + 30;
    tokio::time::timeout(DELIVERY_TIMEOUT, count_rx.wait_for(|n| *n >= target))
        .await
        .unwrap_or_else(|_| panic!("publisher stalled"))
        .unwrap_or_else(|e| panic!("publisher gone: {e}"));
    stop_tx.send_replace(true);
    publisher
        .await
        .unwrap_or_else(|e| panic!("publisher task: {e}"));
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pair in accepted.windows(2) {
        assert!(
            cursor_key(&cursor_of(&pair[0])) < cursor_key(&cursor_of(&pair[1])),
            "sequential publishes got non-increasing cursors: {pair:?}"
        );
    }
    let all_ids: Vec<String> = accepted.iter().map(id_of).collect();
    let final_cursor = cursor_of(
        accepted
            .last()
            .unwrap_or_else(|| panic!("nothing published")),
    );

    let replays: Vec<usize> = resumed.iter().map(|r| r.replay.len()).collect();
    // Without replays this scenario would not exercise resume at all.
    assert!(
        replays.iter().any(|n| *n > 0),
        "no client had anything to replay: {replays:?}"
    );
    eprintln!(
        "{} events published; replayed per client: {replays:?}",
        accepted.len()
    );
    for mut r in resumed {
        let label = format!("client {} ({:?})", r.index, r.form);
        // Events before the connected frame are the replay, and the frame says how many.
        assert_eq!(
            r.connected["replayed"],
            json!(r.replay.len()),
            "{label}: {}",
            r.connected
        );
        assert_eq!(r.connected["org_id"], json!(org), "{label}");
        // The connected cursor is where the client now stands: the last event it has.
        let position = r.replay.last().unwrap_or_else(|| {
            r.before
                .last()
                .unwrap_or_else(|| unreachable!("before is never empty"))
        });
        assert_eq!(
            r.connected["cursor"],
            json!(cursor_of(position)),
            "{label}: connected {} after replaying {}",
            r.connected,
            r.replay.len()
        );

        let mut live = Vec::new();
        let caught_up =
            r.replay.last().or(r.before.last()).map(cursor_of) == Some(final_cursor.clone());
        if !caught_up {
            loop {
                let ev = r.client.expect_event(DELIVERY_TIMEOUT).await;
                let env = delivered_envelope(&ev, &org);
                let done = cursor_of(&env) == final_cursor;
                live.push(env);
                if done {
                    break;
                }
            }
        }
        let got: Vec<String> = r
            .before
            .iter()
            .chain(&r.replay)
            .chain(&live)
            .map(id_of)
            .collect();
        let start = all_ids
            .iter()
            .position(|id| *id == got[0])
            .unwrap_or_else(|| panic!("{label}: first event {} was never accepted", got[0]));
        assert_same_ids(&label, &got, &all_ids[start..]);
    }
}

async fn unknown_positions_resync_then_live(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("resume_unknown");
    let other = unique_org("resume_other");
    let stored = publish_many(&hub, &org, 5, 5, |_| "action.created").await;
    // A real id, but of another org: it must not resolve in this one.
    let foreign = publish(&hub, &other, &json!({"event": "action.created"})).await;
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));
    let newest = cursor_key(&cursor_of(&stored[4]));
    let future = format!("{}-0", newest.0 + 86_400_000);

    // (what, position, where it goes: None = Last-Event-ID header, else the query name)
    let cases = [
        ("garbage", "not-a-cursor".to_string(), None),
        ("future cursor", future.clone(), None),
        (
            "future cursor in query",
            future.clone(),
            Some("last_event_id"),
        ),
        (
            "unknown id",
            "evt_never_published_here".to_string(),
            Some("lastEventId"),
        ),
        ("other org's id", id_of(&foreign[0]), None),
    ];
    for (what, position, query) in cases {
        let (url, pairs) = match query {
            Some(name) => (format!("{stream}?{name}={position}"), Vec::new()),
            None => (stream.clone(), vec![("Last-Event-ID", position.as_str())]),
        };
        let mut client = SseClient::connect_ok(&url, &pairs).await;
        let resync = control(
            &client.expect_event(DELIVERY_TIMEOUT).await,
            "realtime.resync",
        );
        assert_eq!(resync["reason"], json!("unknown"), "{what}: {resync}");
        assert_eq!(resync["last_event_id"], json!(position), "{what}: {resync}");
        let connected = control(
            &client.expect_event(DELIVERY_TIMEOUT).await,
            "realtime.connected",
        );
        assert_eq!(connected["replayed"], json!(0), "{what}: {connected}");
        assert_eq!(connected["org_id"], json!(org), "{what}: {connected}");
        assert_eq!(
            connected["backend"],
            json!(backend.name()),
            "{what}: {connected}"
        );

        let live = publish(&hub, &org, &json!({"event": "action.updated"})).await;
        let ev = client.expect_event(DELIVERY_TIMEOUT).await;
        let env = delivered_envelope(&ev, &org);
        assert_eq!(id_of(&env), id_of(&live[0]), "{what}: first live event");
    }
}

async fn expired_position_resyncs(backend: Backend) {
    let hub = backend
        .hub(&[("REALTIME_REPLAY_WINDOW_SECONDS", "1")])
        .await;
    let org = unique_org("resume_expired");
    let old = publish_many(&hub, &org, 3, 3, |_| "action.created").await;
    // The window is wall-clock time: only waiting can push these events out of it.
    tokio::time::sleep(ms(1500)).await;
    publish_many(&hub, &org, 3, 3, |_| "action.updated").await;
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));

    let cases = [
        ("first cursor", cursor_of(&old[0])),
        ("ancient cursor", "1000-0".to_string()),
        ("id of an expired event", id_of(&old[0])),
    ];
    for (what, position) in cases {
        let mut client = SseClient::connect_ok(&stream, &[("Last-Event-ID", &position)]).await;
        let resync = control(
            &client.expect_event(DELIVERY_TIMEOUT).await,
            "realtime.resync",
        );
        assert_eq!(resync["reason"], json!("expired"), "{what}: {resync}");
        assert_eq!(resync["last_event_id"], json!(position), "{what}: {resync}");
        let connected = control(
            &client.expect_event(DELIVERY_TIMEOUT).await,
            "realtime.connected",
        );
        assert_eq!(connected["replayed"], json!(0), "{what}: {connected}");
        let live = publish(&hub, &org, &json!({"event": "action.created"})).await;
        let ev = client.expect_event(DELIVERY_TIMEOUT).await;
        let env = delivered_envelope(&ev, &org);
        assert_eq!(id_of(&env), id_of(&live[0]), "{what}: first live event");
    }
}

/// Names for the filter case: `signal.*,goal.created` matches indices 1 and 2 mod 4.
fn mixed_name(i: usize) -> &'static str {
    [
        "action.created",
        "signal.detected",
        "goal.created",
        "action.updated",
    ][i % 4]
}

fn matches_filter(name: &str) -> bool {
    name.starts_with("signal.") || name == "goal.created"
}

async fn connected_after_replay_counts(backend: Backend) {
    let hub = backend.hub(&[]).await;
    let org = unique_org("resume_counts");
    let stored = publish_many(&hub, &org, 30, 7, mixed_name).await;
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));
    let tenth = &stored[9];
    let last_cursor = cursor_of(&stored[29]);

    let mut all = SseClient::connect_ok(&stream, &[("Last-Event-ID", &cursor_of(tenth))]).await;
    let (replay, connected) = read_replay(&mut all, &org).await;
    let got: Vec<String> = replay.iter().map(id_of).collect();
    let want: Vec<String> = stored[10..].iter().map(id_of).collect();
    assert_same_ids("unfiltered replay", &got, &want);
    assert_eq!(connected["replayed"], json!(20), "{connected}");
    assert_eq!(connected["cursor"], json!(last_cursor), "{connected}");
    assert_eq!(connected["org_id"], json!(org), "{connected}");
    assert_eq!(connected["backend"], json!(backend.name()), "{connected}");

    // Resumed by envelope id this time; the count covers only what the filter lets through.
    let url = format!(
        "{stream}?events=signal.*,goal.created&lastEventId={}",
        id_of(tenth)
    );
    let mut filtered = SseClient::connect_ok(&url, &[]).await;
    let (replay, connected) = read_replay(&mut filtered, &org).await;
    let got: Vec<String> = replay.iter().map(id_of).collect();
    let want: Vec<String> = stored[10..]
        .iter()
        .filter(|e| matches_filter(str_field(e, "event")))
        .map(id_of)
        .collect();
    assert_eq!(want.len(), 10, "test data");
    assert_same_ids("filtered replay", &got, &want);
    assert_eq!(connected["replayed"], json!(10), "{connected}");
    assert_eq!(connected["cursor"], json!(last_cursor), "{connected}");

    let skipped = publish(&hub, &org, &json!({"event": "action.created"})).await;
    let wanted = publish(&hub, &org, &json!({"event": "signal.detected"})).await;
    for expected in [&skipped[0], &wanted[0]] {
        let env = delivered_envelope(&all.expect_event(DELIVERY_TIMEOUT).await, &org);
        assert_eq!(id_of(&env), id_of(expected), "unfiltered live");
    }
    let env = delivered_envelope(&filtered.expect_event(DELIVERY_TIMEOUT).await, &org);
    assert_eq!(id_of(&env), id_of(&wanted[0]), "filtered live");
}

async fn replay_larger_than_a_page(backend: Backend) {
    // More than the supervisor's ring of recent events (2,048), so the resume cannot be served
    // from the ring alone: the session reads stream pages of 256, then joins, and the ring
    // hands over the rest.
    const COUNT: usize = 3000;
    let hub = backend.hub(&[]).await;
    let org = unique_org("resume_pages");
    let stored = publish_many(&hub, &org, COUNT, 200, |_| "action.created").await;
    assert_eq!(stored.len(), COUNT);
    let stream = hub.url(&format!("/v1/orgs/{org}/stream"));

    let mut client =
        SseClient::connect_ok(&stream, &[("Last-Event-ID", &cursor_of(&stored[0]))]).await;
    let (replay, connected) = read_replay(&mut client, &org).await;
    let got: Vec<String> = replay.iter().map(id_of).collect();
    let want: Vec<String> = stored[1..].iter().map(id_of).collect();
    assert_same_ids("replay", &got, &want);
    assert_eq!(connected["replayed"], json!(COUNT - 1), "{connected}");
    assert_eq!(
        connected["cursor"],
        json!(cursor_of(&stored[COUNT - 1])),
        "{connected}"
    );

    let live = publish(&hub, &org, &json!({"event": "action.updated"})).await;
    let env = delivered_envelope(&client.expect_event(DELIVERY_TIMEOUT).await, &org);
    assert_eq!(
        id_of(&env),
        id_of(&live[0]),
        "first live event after the replay"
    );
}
