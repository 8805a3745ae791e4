//! Property tests (issue 5, part 3): envelope → SSE round trip, cursors, resume
//! positions, the `events=` filter, and the field validators against oracles built
//! from the contract's regexes.
//!
//! Case counts are kept moderate so the whole file runs in a few seconds in debug.

mod common;

use std::sync::LazyLock;

use common::{SseItem, SseParser};
use dashclaw_realtime::auth::Auth;
use dashclaw_realtime::envelope::{
    Cursor, Envelope, NewEvent, OrgId, PublishRequest, ResumePosition, StoredEvent, Topic,
    ValidationError, format_timestamp, raw_json, validate_event_id, validate_event_name,
};
use dashclaw_realtime::filter::EventFilter;
use dashclaw_realtime::sse::{self as frame, StreamFormat};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use regex::Regex;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Oracles: the contract's regexes, verbatim (section 1).

static ORG_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_-]{1,64}$").unwrap());
static EVENT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$").unwrap());
static ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^evt_[A-Za-z0-9_-]{1,128}$").unwrap());
static CURSOR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9]{1,20})-([0-9]{1,20})$").unwrap());
static TIMESTAMP_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$").unwrap()
});

fn oracle_org(s: &str) -> bool {
    ORG_RE.is_match(s)
}

/// `Ok` / the error the contract prescribes for an event name.
fn oracle_event(s: &str) -> Result<(), ValidationError> {
    if !EVENT_RE.is_match(s) || s.chars().count() > 64 {
        Err(ValidationError::InvalidEventName)
    } else if s.starts_with("realtime.") {
        Err(ValidationError::ReservedEventName)
    } else {
        Ok(())
    }
}

fn oracle_id(s: &str) -> bool {
    ID_RE.is_match(s)
}

/// The cursor a `<ms>-<seq>` text denotes, if any.
fn oracle_cursor(s: &str) -> Option<Cursor> {
    let caps = CURSOR_RE.captures(s)?;
    let ms = caps[1].parse::<u64>().ok()?;
    let seq = caps[2].parse::<u64>().ok()?;
    Some(Cursor::new(ms, seq))
}

/// The contract's legacy `/api/stream` projection (section 3), written independently:
/// DashClaw's `toSseData` table, `x || null` included.
fn reference_projection(envelope: &Envelope) -> Value {
    let key = match envelope.event.as_str() {
        "action.created" | "action.updated" => Some("action"),
        "message.created" => Some("message"),
        "decision.created" | "guard.decision.created" => Some("decision"),
        "loop.created" | "loop.updated" => Some("loop"),
        "goal.created" | "goal.updated" => Some("goal"),
        "signal.detected" => Some("signal"),
        _ => None,
    };
    let data = match key {
        Some(k) => envelope
            .payload
            .as_object()
            .and_then(|o| o.get(k))
            .cloned()
            .unwrap_or(Value::Null),
        None => envelope.payload.clone(),
    };
    let falsy = match &data {
        Value::Null => true,
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if falsy { Value::Null } else { data }
}

// ---------------------------------------------------------------------------
// Generators.

/// Pieces that stress JSON escaping and SSE framing.
const PIECES: &[&str] = &[
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\0",
    "\u{2028}",
    "\u{2029}",
    "\u{1F600}",
    "\u{10FFFF}",
    "\u{1F468}\u{200D}\u{1F469}",
    "\u{FEFF}",
    "\u{7F}",
    "\u{1}",
    "\t",
    "\"",
    "\\",
    "\\u0000",
    "é",
    "a",
    " ",
    ":",
    "data: x",
    "id: 1-0",
    "event: x",
    "retry: 1",
];

fn piece_string(max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(PIECES), 0..max_pieces).prop_map(|v| v.concat())
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => piece_string(24),
        3 => any::<String>(),
        1 => (select(PIECES), 2_000usize..30_000).prop_map(|(p, n)| p.repeat(n)),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // serde_json's default float parser is best-effort; keep the floats it round-trips
        // so that a failure here is about the hub, not about serde_json.
        any::<f64>().prop_filter_map("finite and JSON round-trippable", |f| {
            let value = Value::Number(serde_json::Number::from_f64(f)?);
            let back: Value = serde_json::from_str(&value.to_string()).ok()?;
            (back == value).then_some(value)
        }),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((piece_string(6), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value nested 40–60 levels deep in arrays and objects.
fn deep_value() -> impl Strategy<Value = Value> {
    (
        json_leaf(),
        prop::collection::vec(prop::option::of(piece_string(4)), 40..=60),
    )
        .prop_map(|(leaf, layers)| {
            layers.into_iter().fold(leaf, |acc, key| match key {
                None => Value::Array(vec![acc]),
                Some(k) => Value::Object([(k, acc)].into_iter().collect()),
            })
        })
}

const LEGACY_KEYS: &[&str] = &["action", "message", "decision", "loop", "goal", "signal"];

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => json_value(),
        1 => deep_value(),
        // Objects shaped like DashClaw payloads, so the legacy projection has work to do.
        2 => (select(LEGACY_KEYS), json_value(), prop::option::of(json_value())).prop_map(
            |(key, inner, extra)| {
                let mut map = serde_json::Map::new();
                map.insert(key.to_owned(), inner);
                if let Some(extra) = extra {
                    map.insert("other".to_owned(), extra);
                }
                Value::Object(map)
            }
        ),
    ]
}

const LEGACY_NAMES: &[&str] = &[
    "action.created",
    "action.updated",
    "message.created",
    "decision.created",
    "guard.decision.created",
    "signal.detected",
    "loop.started",
    "loop.completed",
    "goal.updated",
    "agent.heartbeat",
];

fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => select(LEGACY_NAMES).prop_map(str::to_owned),
        3 => "[a-z][a-z0-9_]{0,12}(\\.[a-z0-9_]{1,10}){0,4}"
            .prop_filter("contract length, not reserved", |s| {
                s.len() <= 64 && !s.starts_with("realtime.")
            }),
    ]
}

fn org_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn event_id() -> impl Strategy<Value = String> {
    "evt_[A-Za-z0-9_-]{1,128}"
}

fn topic() -> impl Strategy<Value = Topic> {
    prop_oneof![
        4 => org_id().prop_map(|o| Topic::Org(OrgId::parse(&o).unwrap())),
        1 => Just(Topic::Ops),
    ]
}

fn cursor() -> impl Strategy<Value = Cursor> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| Cursor::new(ms, seq)),
        (1_600_000_000_000u64..1_900_000_000_000, 0u64..16)
            .prop_map(|(ms, seq)| Cursor::new(ms, seq)),
    ]
}

/// Parses `bytes` fed in chunks cut at `cuts`, checking that nothing is left pending.
fn parse_in_chunks(bytes: &[u8], cuts: &[Index]) -> Vec<SseItem> {
    let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    positions.sort_unstable();
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    let mut start = 0;
    for pos in positions.into_iter().chain([bytes.len()]) {
        items.extend(parser.feed(&bytes[start..pos]));
        start = pos;
    }
    assert!(!parser.has_pending(), "frame left bytes pending");
    items
}

/// Every line of a frame is `name: value` with one space (contract section 3).
fn check_frame_lines(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let body = text
        .strip_suffix("\n\n")
        .ok_or_else(|| TestCaseError::fail("no blank line"))?;
    for line in body.split('\n') {
        prop_assert!(
            ["id: ", "event: ", "data: "]
                .iter()
                .any(|p| line.starts_with(p)),
            "frame line {:?}",
            line.chars().take(80).collect::<String>()
        );
    }
    Ok(())
}

fn sole_event(items: Vec<SseItem>) -> Result<common::SseEvent, TestCaseError> {
    match <[SseItem; 1]>::try_from(items) {
        Ok([SseItem::Event(event)]) => Ok(event),
        other => Err(TestCaseError::fail(format!(
            "expected exactly one event, got {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------
// Envelope → SSE → envelope.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn envelope_round_trips_through_sse_frames(
        topic in topic(),
        event in event_name(),
        payload in payload(),
        id in prop::option::of(event_id()),
        cursor in cursor(),
        now in 0u64..4_102_444_800_000,
        cuts in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let request = PublishRequest { event: event.clone(), payload: Some(raw_json(&payload)), id: id.clone() };
        let new = NewEvent::validate(&topic, request, usize::MAX, now)
            .map_err(|e| TestCaseError::fail(format!("valid envelope refused: {e}")))?;
        if id.is_none() {
            prop_assert!(validate_event_id(&new.id).is_ok());
            prop_assert_eq!(new.id.len(), 30);
        }
        prop_assert!(TIMESTAMP_RE.is_match(&new.timestamp), "{}", new.timestamp);
        prop_assert_eq!(&new.timestamp, &format_timestamp(now));

        let expected = Envelope {
            id: id.unwrap_or_else(|| new.id.clone()),
            org_id: topic.envelope_org().to_owned(),
            event: event.clone(),
            timestamp: format_timestamp(now),
            version: "v1".to_owned(),
            payload,
            cursor: Some(cursor),
        };
        let stored = StoredEvent::from_new(&new, cursor);
        prop_assert_eq!(&stored.envelope(), &expected);
        prop_assert!(!stored.json().iter().any(|&b| b == b'\n' || b == b'\r'));
        // The stream entry's `data` is the same envelope without the cursor.
        let data_value: Value = serde_json::from_str(&new.data_json).unwrap();
        let mut without_cursor = serde_json::to_value(&expected).unwrap();
        without_cursor.as_object_mut().unwrap().remove("cursor");
        prop_assert_eq!(data_value, without_cursor);

        // v1 frame.
        let bytes = stored.frame(StreamFormat::V1);
        prop_assert_eq!(&bytes, &frame::event(Some(cursor), &event, stored.json()));
        check_frame_lines(&bytes)?;
        let sse = sole_event(parse_in_chunks(&bytes, &cuts))?;
        prop_assert_eq!(&sse.event, &event);
        prop_assert!(sse.had_id_field);
        prop_assert_eq!(&sse.last_event_id, &cursor.to_string());
        let value: Value = serde_json::from_str(&sse.data)
            .map_err(|e| TestCaseError::fail(format!("data is not JSON: {e}")))?;
        prop_assert_eq!(&value, &serde_json::to_value(&expected).unwrap());
        let back: Envelope = serde_json::from_str(&sse.data).unwrap();
        prop_assert_eq!(&back, &expected);

        // Legacy `/api/stream` frame: same id and event, data the projection.
        let legacy = stored.frame(StreamFormat::Legacy);
        check_frame_lines(&legacy)?;
        let sse = sole_event(parse_in_chunks(&legacy, &cuts))?;
        prop_assert_eq!(&sse.event, &event);
        prop_assert_eq!(&sse.last_event_id, &cursor.to_string());
        let value: Value = serde_json::from_str(&sse.data)
            .map_err(|e| TestCaseError::fail(format!("legacy data is not JSON: {e}")))?;
        prop_assert_eq!(value, reference_projection(&expected));

        // The size limit is exact: the delivered form (with the longest cursor) must fit.
        let limit = new.data_json.len() + 55;
        let req = |p: &Value| PublishRequest { event: event.clone(), payload: Some(raw_json(p)), id: Some(expected.id.clone()) };
        prop_assert!(NewEvent::validate(&topic, req(&expected.payload), limit, now).is_ok());
        prop_assert!(
            matches!(
                NewEvent::validate(&topic, req(&expected.payload), limit - 1, now),
                Err(ValidationError::TooLarge { .. })
            ),
            "limit - 1 accepted"
        );
    }

    #[test]
    fn control_frames_carry_no_id(
        event in prop_oneof![Just("realtime.resync".to_owned()), Just("connected".to_owned()), event_name()],
        data in json_value(),
        cuts in prop::collection::vec(any::<Index>(), 0..3),
    ) {
        let bytes = frame::control(&event, &data);
        check_frame_lines(&bytes)?;
        let sse = sole_event(parse_in_chunks(&bytes, &cuts))?;
        prop_assert!(!sse.had_id_field);
        prop_assert_eq!(&sse.event, &event);
        prop_assert_eq!(serde_json::from_str::<Value>(&sse.data).unwrap(), data);
    }
}

// ---------------------------------------------------------------------------
// Cursors and resume positions.

fn cursor_like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,22}-[0-9]{0,22}",
        "[ \t]{0,2}[0-9]{1,5}-[0-9]{1,3}[ \t\n]{0,2}",
        "[+-]?[0-9]{1,4}[-+.][0-9]{0,3}(-[0-9])?",
        "18446744073709551615-1844674407370955161[4-9]",
        "0{0,25}[0-9]{1,3}-0{0,25}[0-9]",
        "evt_[A-Za-z0-9_:*-]{0,130}",
        "[ ]?evt_[A-Za-z0-9_-]{1,8}[ ]?",
        any::<String>(),
        "[٠-٩0-9]{1,3}-[0-9]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cursor_display_parse_round_trip(c in cursor()) {
        let text = c.to_string();
        prop_assert_eq!(text.parse::<Cursor>(), Ok(c));
        prop_assert_eq!(ResumePosition::parse(&text), ResumePosition::Cursor(c));
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c);
    }

    #[test]
    fn cursor_order_is_tuple_order(a in cursor(), b in cursor(), ms in any::<u64>(), s1 in any::<u64>(), s2 in any::<u64>()) {
        prop_assert_eq!(a.cmp(&b), (a.ms, a.seq).cmp(&(b.ms, b.seq)));
        prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        prop_assert_eq!(a == b, (a.ms, a.seq) == (b.ms, b.seq));
        // Same millisecond: the sequence decides.
        let (x, y) = (Cursor::new(ms, s1), Cursor::new(ms, s2));
        prop_assert_eq!(x.cmp(&y), s1.cmp(&s2));
    }

    #[test]
    fn cursor_parse_agrees_with_regex_oracle(text in cursor_like_text()) {
        prop_assert_eq!(text.parse::<Cursor>().ok(), oracle_cursor(&text));
    }

    #[test]
    fn next_after_is_strictly_increasing(
        start in prop::option::of((0u64..1_000_000, 0u64..1_000)),
        readings in prop::collection::vec(
            prop_oneof![
                3 => 0u64..1_000_100,
                1 => Just(0u64),
                1 => 999_990u64..1_000_010,
            ],
            1..64,
        ),
    ) {
        let mut previous = start.map(|(ms, seq)| Cursor::new(ms, seq));
        let mut max_ms = previous.map(|c| c.ms);
        for now in readings {
            let next = Cursor::next_after(previous, now);
            if let Some(prev) = previous {
                prop_assert!(next > prev, "{next} after {prev} at clock {now}");
            }
            // The stream never goes back in time and follows the clock when it moves on.
            let expected_ms = max_ms.map_or(now, |m| m.max(now));
            prop_assert_eq!(next.ms, expected_ms);
            if max_ms.is_none_or(|m| now > m) {
                prop_assert_eq!(next.seq, 0);
            }
            max_ms = Some(expected_ms);
            previous = Some(next);
        }
    }

    #[test]
    fn resume_position_classifies_like_the_oracles(text in cursor_like_text()) {
        let parsed = ResumePosition::parse(&text);
        let trimmed = text.trim();
        let expected = if let Some(c) = oracle_cursor(trimmed) {
            ResumePosition::Cursor(c)
        } else if oracle_id(trimmed) {
            ResumePosition::EventId(trimmed.to_owned())
        } else {
            ResumePosition::Unrecognized(trimmed.chars().take(200).collect())
        };
        prop_assert_eq!(&parsed, &expected);
        // as_text gives back what the client sent (canonical form for cursors, bounded).
        match &parsed {
            ResumePosition::Cursor(c) => prop_assert_eq!(parsed.as_text(), c.to_string()),
            ResumePosition::EventId(id) => prop_assert_eq!(&parsed.as_text(), id),
            ResumePosition::Unrecognized(raw) => {
                prop_assert!(raw.chars().count() <= 200);
                prop_assert!(trimmed.starts_with(raw.as_str()));
            }
        }
    }

    #[test]
    fn resume_position_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ResumePosition::parse(&text).as_text();
        let _ = text.parse::<Cursor>();
    }
}

// ---------------------------------------------------------------------------
// The `events=` filter against a reference implementation.

/// `None`: every event; `Some(exact, prefixes)` otherwise; `Err` for a bad entry.
type RefFilter = Option<(Vec<String>, Vec<String>)>;

fn reference_filter(raw: &str) -> Result<RefFilter, ()> {
    let is_name = |s: &str| EVENT_RE.is_match(s) && s.len() <= 64;
    let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
    for entry in raw.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return Ok(None);
        }
        if let Some(prefix) = entry.strip_suffix(".*") {
            if !is_name(prefix) {
                return Err(());
            }
            prefixes.push(format!("{prefix}."));
        } else if is_name(entry) {
            exact.push(entry.to_owned());
        } else {
            return Err(());
        }
    }
    Ok((!exact.is_empty() || !prefixes.is_empty()).then_some((exact, prefixes)))
}

fn reference_matches(filter: &RefFilter, name: &str) -> bool {
    match filter {
        None => true,
        Some((exact, prefixes)) => {
            exact.iter().any(|e| e == name) || prefixes.iter().any(|p| name.starts_with(p))
        }
    }
}

fn small_name() -> impl Strategy<Value = String> {
    prop::collection::vec(select(&["a", "b", "ab", "a_1", "x", "realtime"][..]), 1..4)
        .prop_map(|v| v.join("."))
}

fn filter_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => small_name(),
        3 => small_name().prop_map(|n| format!("{n}.*")),
        1 => Just("*".to_owned()),
        1 => select(
            &["", " ", "A", "a..b", ".*", "a.", "*.a", "a.*.*", "a*", "a:b", "é", "a .*", "a. *", ".", "*a"][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn filter_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            filter_entry(),
            select(&["", " ", "\t", "  "][..]),
            select(&["", " ", "\n"][..]),
        ),
        0..5,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(e, pre, post)| format!("{pre}{e}{post}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn filter_agrees_with_reference(
        raw in filter_text(),
        names in prop::collection::vec(small_name(), 1..8),
    ) {
        let parsed = EventFilter::parse(&raw);
        let reference = reference_filter(&raw);
        prop_assert_eq!(parsed.is_ok(), reference.is_ok(), "parse result differs for {:?}", raw);
        if let (Ok(filter), Ok(reference)) = (parsed, reference) {
            prop_assert_eq!(filter.is_all(), reference.is_none());
            for name in names {
                prop_assert_eq!(
                    filter.matches(&name),
                    reference_matches(&reference, &name),
                    "filter {:?} on {:?}", raw, name
                );
            }
        }
    }

    #[test]
    fn filter_parse_never_panics(raw in any::<String>(), name in any::<String>()) {
        if let Ok(filter) = EventFilter::parse(&raw) {
            let _ = filter.matches(&name);
        }
    }
}

// ---------------------------------------------------------------------------
// Validators accept exactly the contract's languages.

/// Characters a near miss is made of: separators, case, control and non-ASCII look-alikes.
const NEAR_MISS_CHARS: &str =
    ".:*{} \n\r\t\0AZaz09_-/#$éß\u{212A}\u{0130}\u{2028}\u{1F600}\u{FF41}٣";

#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, char),
    Delete(Index),
    Replace(Index, char),
    Double,
    Truncate(Index),
}

fn near_miss_char() -> impl Strategy<Value = char> {
    select(NEAR_MISS_CHARS.chars().collect::<Vec<_>>())
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), near_miss_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        2 => any::<Index>().prop_map(Edit::Delete),
        3 => (any::<Index>(), near_miss_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        1 => Just(Edit::Double),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(i, c) => chars.insert(i.index(chars.len() + 1), c),
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = c;
            }
            Edit::Double => chars.extend(chars.clone()),
            Edit::Truncate(i) => chars.truncate(i.index(chars.len() + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn near_miss(base: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (base, prop::collection::vec(edit(), 0..3)).prop_map(|(b, edits)| apply(&b, &edits))
}

fn event_request(event: &str, id: Option<&str>) -> PublishRequest {
    PublishRequest {
        event: event.to_owned(),
        payload: None,
        id: id.map(str::to_owned),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn org_ids_match_the_contract_regex(
        s in near_miss(prop_oneof!["[A-Za-z0-9_-]{1,8}", "[A-Za-z0-9_-]{60,64}"]),
    ) {
        prop_assert_eq!(OrgId::parse(&s).is_ok(), oracle_org(&s), "{:?}", s);
        if let Ok(org) = OrgId::parse(&s) {
            prop_assert_eq!(org.as_str(), s.as_str());
        }
    }

    #[test]
    fn event_names_match_the_contract_regex(
        s in near_miss(prop_oneof![
            event_name(),
            "[a-z][a-z0-9_]{50,63}",
            "[a-z]{1,20}(\\.[a-z0-9_]{1,20}){1,3}",
            "realtime(\\.[a-z]{1,6}){0,2}",
        ]),
    ) {
        let expected = oracle_event(&s);
        prop_assert_eq!(validate_event_name(&s), expected.clone(), "{:?}", s);
        let got = NewEvent::validate(&Topic::Ops, event_request(&s, None), usize::MAX, 0).map(|_| ());
        prop_assert_eq!(got, expected, "{:?}", s);
    }

    #[test]
    fn event_ids_match_the_contract_regex(
        s in near_miss(prop_oneof![event_id(), "evt_[A-Za-z0-9_-]{120,128}", "evt_[A-Za-z0-9]{0,2}"]),
    ) {
        prop_assert_eq!(validate_event_id(&s).is_ok(), oracle_id(&s), "{:?}", s);
        let got = NewEvent::validate(&Topic::Ops, event_request("a.b", Some(&s)), usize::MAX, 0);
        match got {
            Ok(new) => {
                prop_assert!(oracle_id(&s), "accepted {:?}", s);
                prop_assert_eq!(new.id, s);
            }
            Err(e) => {
                prop_assert!(!oracle_id(&s), "refused {:?}: {}", s, e);
                prop_assert_eq!(e, ValidationError::InvalidEventId);
            }
        }
    }

    #[test]
    fn validators_accept_everything_inside(
        org in org_id(),
        event in "[a-z][a-z0-9_]{0,30}(\\.[a-z0-9_]{1,8}){0,3}",
        id in event_id(),
    ) {
        prop_assert!(OrgId::parse(&org).is_ok());
        prop_assert_eq!(validate_event_name(&event), oracle_event(&event));
        prop_assert!(validate_event_id(&id).is_ok());
    }

    #[test]
    fn validators_never_panic_on_arbitrary_text(s in any::<String>()) {
        prop_assert_eq!(OrgId::parse(&s).is_ok(), oracle_org(&s));
        prop_assert_eq!(validate_event_name(&s), oracle_event(&s));
        prop_assert_eq!(validate_event_id(&s).is_ok(), oracle_id(&s));
    }
}

// ---------------------------------------------------------------------------
// Credentials: arbitrary tokens and keys never panic and never authenticate.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_credentials_are_refused(
        token in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,43}",
            "eyJ[A-Za-z0-9_=-]{0,60}\\.eyJ[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,43}",
        ],
    ) {
        static AUTH: LazyLock<Auth> = LazyLock::new(|| Auth::new(Some("fuzz-secret"), None).unwrap());
        prop_assert!(AUTH.verify_token(&token).is_err());
        prop_assert!(AUTH.verify_api_key(&token).is_err());
    }
}
