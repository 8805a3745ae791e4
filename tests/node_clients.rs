//! The `eventsource` npm package and an SDK-style fetch reader against the real hub:
//! the JS lives in tests/node/; this file makes `cargo test` run it.

mod js_runner;

use std::time::Duration;

/// Both clients on /v1/orgs/{org}/stream and /api/stream, resume by Last-Event-ID,
/// and eventsource's own reconnect across a hub restart (Redis backend).
#[test]
fn node_clients() {
    js_runner::require_paths(&[(
        "tests/node/node_modules/eventsource/package.json",
        "npm package eventsource in tests/node/node_modules",
    )]);
    js_runner::require_redis();
    js_runner::run_node_test("tests/node", "clients.test.mjs", Duration::from_secs(180));
}
