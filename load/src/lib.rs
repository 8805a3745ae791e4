//! Building blocks of the `dashclaw-realtime-load` tool (`src/main.rs`), kept in this library
//! so they are unit-tested on their own and usable from tests and benches:
//!
//! - [`sse`]: a compact, allocation-light incremental WHATWG event-stream parser;
//! - [`chunked`]: an incremental HTTP/1.1 chunked transfer-encoding decoder;
//! - [`http`]: HTTP/1.1 response-head parsing;
//! - [`hist`]: a log-bucketed (HDR-like) latency histogram with percentiles, mergeable and
//!   serializable, plus a lock-free recording variant;
//! - [`seq`]: per-client sequence accounting (delivered, missing, duplicate, out-of-order);
//! - [`rates`]: per-instance peak new-stream rates for the `rolling-restart` report;
//! - [`template`]: URL/body templates (`{org}`, `{seq}`, `{sent_ms}`, `{sent_us}`) and extraction
//!   of the sequence number and send timestamp from a received payload.

pub mod chunked;
pub mod hist;
pub mod http;
pub mod rates;
pub mod seq;
pub mod sse;
pub mod template;
