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
