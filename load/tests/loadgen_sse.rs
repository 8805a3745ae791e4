//! The load tool's compact SSE parser (`dashclaw_realtime_load::sse`) against the harness's
//! WHATWG-exact parser (`tests/common/sse.rs`): same items for the same bytes, however the
//! stream is split into chunks.

#[path = "../../tests/common/mod.rs"]
mod common;

use dashclaw_realtime_load::chunked::ChunkedDecoder;
use dashclaw_realtime_load::sse::{Item, SseParser as LoadParser};
use proptest::prelude::*;

use common::{SseEvent, SseItem, SseParser};

fn load_items(chunks: &[&[u8]]) -> Vec<SseItem> {
    let mut p = LoadParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut |item| {
            out.push(match item {
                Item::Event(e) => SseItem::Event(SseEvent {
                    event: e.event_type().into_owned(),
                    data: e.data_lossy().into_owned(),
                    last_event_id: e.last_event_id_lossy().into_owned(),
                    had_id_field: e.had_id_field,
                }),
                Item::Comment(c) => SseItem::Comment(String::from_utf8_lossy(c).into_owned()),
                Item::Retry(r) => SseItem::Retry(r),
            })
        });
    }
    out
}

/// Fragments that exercise every rule: fields, spacing, line endings, BOM, NUL, UTF-8.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data: x".to_vec()),
        Just(b"event: load.tick".to_vec()),
        Just(b"event".to_vec()),
        Just(b"id: 1-0".to_vec()),
        Just(b"id".to_vec()),
        Just(b"id: a\0b".to_vec()),
        Just(b"retry: 3000".to_vec()),
        Just(b"retry: 1x".to_vec()),
        Just(b": heartbeat".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xEF\xBB".to_vec()),
        Just(b" ".to_vec()),
        Just("é€".as_bytes().to_vec()),
        Just(b"\xff\xc3".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_the_whatwg_harness_parser(
        frags in proptest::collection::vec(fragment(), 0..40),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let stream: Vec<u8> = frags.concat();
        let want = SseParser::parse_all(&stream);
        prop_assert_eq!(&load_items(&[&stream]), &want);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&stream[start..p]);
            start = p;
        }
        chunks.push(&stream[start..]);
        prop_assert_eq!(&load_items(&chunks), &want);
    }

    #[test]
    fn chunked_then_sse_equals_plain_sse(
        frags in proptest::collection::vec(fragment(), 0..30),
        sizes in proptest::collection::vec(1usize..20, 1..10),
        cut in any::<prop::sample::Index>(),
    ) {
        // Encode the stream as chunks of the given sizes, decode it split at one point.
        let stream: Vec<u8> = frags.concat();
        let mut body = Vec::new();
        let mut rest = &stream[..];
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].min(rest.len());
            body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            body.extend_from_slice(&rest[..n]);
            body.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            k += 1;
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let c = cut.index(body.len() + 1);
        let mut dec = ChunkedDecoder::new();
        let mut decoded = Vec::new();
        for part in [&body[..c], &body[c..]] {
            dec.feed(part, &mut |d| decoded.extend_from_slice(d)).unwrap();
        }
        prop_assert!(dec.is_done());
        prop_assert_eq!(&decoded, &stream);
        prop_assert_eq!(load_items(&[&decoded]), SseParser::parse_all(&stream));
    }
}
