//! `Last-Event-ID` / cursor parsing: `ResumePosition::parse`, `Cursor::from_str`, and the
//! display round trip. Checks: no panic; classification is consistent; a parsed cursor
//! displays canonically and parses back to itself; ordering is the `(ms, seq)` order.
#![no_main]

use dashclaw_realtime::envelope::{Cursor, ResumePosition, validate_event_id};
use libfuzzer_sys::fuzz_target;

fn is_cursor_text(s: &str) -> bool {
    match s.split_once('-') {
        Some((a, b)) => [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|c| c.is_ascii_digit())),
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim();
    let position = ResumePosition::parse(&text);
    match &position {
        ResumePosition::Cursor(c) => {
            assert!(is_cursor_text(trimmed));
            assert_eq!(position.as_text(), c.to_string());
        }
        ResumePosition::EventId(id) => {
            assert_eq!(id, trimmed);
            assert!(validate_event_id(id).is_ok());
            assert!(trimmed.parse::<Cursor>().is_err());
        }
        ResumePosition::Unrecognized(raw) => {
            assert!(raw.chars().count() <= 200);
            assert!(trimmed.starts_with(raw.as_str()));
            assert!(trimmed.parse::<Cursor>().is_err());
            assert!(validate_event_id(trimmed).is_err());
        }
    }

    match text.parse::<Cursor>() {
        Ok(c) => {
            assert!(is_cursor_text(&text));
            let shown = c.to_string();
            assert_eq!(shown.parse::<Cursor>(), Ok(c));
            // Canonical form: the same numbers without leading zeros.
            let (ms, seq) = text.split_once('-').unwrap();
            let strip = |p: &str| {
                let s = p.trim_start_matches('0');
                if s.is_empty() {
                    "0".to_owned()
                } else {
                    s.to_owned()
                }
            };
            assert_eq!(shown, format!("{}-{}", strip(ms), strip(seq)));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c);
        }
        Err(_) => {
            // Only out-of-range numbers may look like a cursor and still fail.
            if is_cursor_text(&text) {
                let (ms, seq) = text.split_once('-').unwrap();
                assert!(ms.parse::<u64>().is_err() || seq.parse::<u64>().is_err());
            }
        }
    }

    // Two cursors from the two halves of the input: order agrees with the tuple order.
    let (a, b) = data.split_at(data.len() / 2);
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    if let (Ok(x), Ok(y)) = (a.trim().parse::<Cursor>(), b.trim().parse::<Cursor>()) {
        assert_eq!(x.cmp(&y), (x.ms, x.seq).cmp(&(y.ms, y.seq)));
        // (`seq == u64::MAX` in the same millisecond is unreachable for a real stream.)
        if x.seq < u64::MAX || y.ms > x.ms {
            let next = Cursor::next_after(Some(x), y.ms);
            assert!(next > x);
            assert_eq!(next.ms, x.ms.max(y.ms));
        }
    }
});
