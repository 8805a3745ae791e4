#![allow(dead_code)]
//! Reading envelopes and cursors out of received events, for assertions.

use serde_json::Value;

/// `<ms>-<seq>` as a comparable pair; panics on anything else.
pub fn cursor_key(cursor: &str) -> (u64, u64) {
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("cursor {cursor:?} is not <ms>-<seq>: {e}"))
    };
    let (ms, seq) = cursor
        .split_once('-')
        .unwrap_or_else(|| panic!("cursor {cursor:?} is not <ms>-<seq>"));
    (parse(ms), parse(seq))
}

/// A string field of a JSON object; panics when it is missing or not a string.
pub fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {v}"))
}

/// The envelope's `id`.
pub fn id_of(env: &Value) -> String {
    str_field(env, "id").to_string()
}

/// The envelope's `cursor`.
pub fn cursor_of(env: &Value) -> String {
    str_field(env, "cursor").to_string()
}

/// Checks one delivered event frame against the contract (an `id:` line equal to the envelope's
/// cursor, `event:` equal to its type, the expected org) and returns its envelope.
pub fn delivered_envelope(ev: &super::SseEvent, org: &str) -> Value {
    assert!(ev.had_id_field, "event frame without an id: line: {ev:?}");
    let env = ev.json();
    assert_eq!(str_field(&env, "org_id"), org, "wrong org in {env}");
    assert_eq!(
        str_field(&env, "event"),
        ev.event,
        "event: line vs envelope {env}"
    );
    assert_eq!(
        str_field(&env, "cursor"),
        ev.last_event_id,
        "id: line must be the envelope's cursor: {env}"
    );
    env
}

/// Asserts `got` is exactly `want` (ids in order); otherwise panics with the duplicates, the
/// missing and foreign ids, and both sequences around the first difference.
pub fn assert_same_ids(label: &str, got: &[String], want: &[String]) {
    use std::collections::HashSet;
    if got == want {
        return;
    }
    let mut seen = HashSet::new();
    let duplicates: Vec<&String> = got.iter().filter(|id| !seen.insert(*id)).collect();
    let got_set: HashSet<&String> = got.iter().collect();
    let want_set: HashSet<&String> = want.iter().collect();
    let missing: Vec<&String> = want.iter().filter(|id| !got_set.contains(id)).collect();
    let foreign: Vec<&String> = got.iter().filter(|id| !want_set.contains(id)).collect();
    let first_diff = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let from = first_diff.saturating_sub(3);
    let around = |v: &[String]| v[from.min(v.len())..(from + 8).min(v.len())].to_vec();
    panic!(
        "{label}: got {} ids, want {}; first difference at {first_diff}; \
         {} duplicates {:?}; {} missing {:?}; {} foreign {:?}\n got[{from}..]: {:?}\nwant[{from}..]: {:?}",
        got.len(),
        want.len(),
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)],
        foreign.len(),
        &foreign[..foreign.len().min(5)],
        around(got),
        around(want),
    );
}
