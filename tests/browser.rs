//! Chromium's own EventSource against the real hub: the JS lives in tests/browser/
//! (Node's test runner + playwright-core); this file makes `cargo test` run it.

mod js_runner;

use std::time::Duration;

fn require_browser_deps() {
    js_runner::require_paths(&[
        ("/usr/bin/chromium", "Debian chromium (/usr/bin/chromium)"),
        (
            "tests/browser/node_modules/playwright-core/package.json",
            "npm package playwright-core in tests/browser/node_modules",
        ),
    ]);
}

/// Named events with lastEventId, realtime.resync, CORS allow/refuse.
#[test]
fn browser_eventsource() {
    require_browser_deps();
    js_runner::run_node_test(
        "tests/browser",
        "eventsource.test.mjs",
        Duration::from_secs(240),
    );
}

/// Hub SIGTERM -> the browser reconnects by itself with Last-Event-ID (Redis backend).
#[test]
fn browser_reconnect() {
    require_browser_deps();
    js_runner::require_redis();
    js_runner::run_node_test(
        "tests/browser",
        "reconnect.test.mjs",
        Duration::from_secs(240),
    );
}

/// The status page at `/`: ops token, live numbers that move, the org watcher; writes
/// target/status-page.png.
#[test]
fn browser_status_page() {
    require_browser_deps();
    js_runner::run_node_test("tests/browser", "status.test.mjs", Duration::from_secs(240));
}
