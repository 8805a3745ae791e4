#![allow(dead_code)]
//! Plain HTTP helpers and Prometheus text parsing.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Per-request timeout for the non-streaming helpers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The process-wide client: no proxy, and no idle pooling, so every request
/// (in particular every SSE stream) gets its own TCP connection, and the client
/// is safe to share across the per-test tokio runtimes (nothing is cached
/// across runtimes).
pub fn shared_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|e| panic!("building reqwest client: {}", error_chain(&e)))
    })
}

/// A client handle (cheap clone of the shared client).
pub fn client() -> reqwest::Client {
    shared_client().clone()
}

/// Error with its source chain, e.g. "error decoding response body: connection reset".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Add headers to a request; panics on an invalid name or value (a test bug).
pub fn apply_headers(
    mut req: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header name {k:?}: {e}"));
        let value =
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("invalid header value {v:?}: {e}"));
        req = req.header(name, value);
    }
    req
}

async fn send(what: &str, url: &str, req: reqwest::RequestBuilder) -> reqwest::Response {
    match req.timeout(REQUEST_TIMEOUT).send().await {
        Ok(r) => r,
        Err(e) => panic!("{what} {url} failed: {}", error_chain(&e)),
    }
}

async fn read_all(what: &str, url: &str, resp: reqwest::Response) -> (u16, Vec<u8>, HeaderMap) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    match resp.bytes().await {
        Ok(b) => (status, b.to_vec(), headers),
        Err(e) => panic!(
            "{what} {url}: status {status} but reading the body failed: {}",
            error_chain(&e)
        ),
    }
}

/// JSON body, or `Null` when the body is empty or not JSON.
pub fn json_or_null(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// POST a JSON body. Returns status, JSON response body (`Null` if empty or
/// not JSON) and headers.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value, HeaderMap) {
    let req = apply_headers(shared_client().post(url).json(body), headers);
    let resp = send("POST", url, req).await;
    let (status, bytes, h) = read_all("POST", url, resp).await;
    (status, json_or_null(&bytes), h)
}

/// POST raw bytes with an optional Content-Type. Returns status, JSON response
/// body (`Null` if empty or not JSON) and headers.
pub async fn post_raw(
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value, HeaderMap) {
    let mut req = shared_client().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let req = apply_headers(req, headers);
    let resp = send("POST", url, req).await;
    let (status, bytes, h) = read_all("POST", url, resp).await;
    (status, json_or_null(&bytes), h)
}

/// GET and read the whole body as text (do not use on an SSE stream).
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, HeaderMap) {
    let req = apply_headers(shared_client().get(url), headers);
    let resp = send("GET", url, req).await;
    let (status, bytes, h) = read_all("GET", url, resp).await;
    (status, String::from_utf8_lossy(&bytes).into_owned(), h)
}

/// GET with a JSON body (`Null` if empty or not JSON).
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value, HeaderMap) {
    let (status, body, h) = get(url, headers).await;
    (status, json_or_null(body.as_bytes()), h)
}

/// Any method with optional body.
pub async fn request(
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>, HeaderMap) {
    let mut req = shared_client().request(method.clone(), url);
    if let Some(b) = body {
        req = req.body(b);
    }
    let req = apply_headers(req, headers);
    let what = method.to_string();
    let resp = send(&what, url, req).await;
    read_all(&what, url, resp).await
}

/// A header as a string (None if absent or not visible ASCII).
pub fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Assert the contract error shape `{"error":{"code":..,"message":..}}` and
/// return the code.
pub fn error_code(body: &serde_json::Value) -> String {
    let code = body
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("not a contract error body (no error.code string): {body}"));
    let msg = body
        .pointer("/error/message")
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("not a contract error body (no error.message string): {body}"));
    assert!(!msg.is_empty(), "empty error.message in {body}");
    code.to_string()
}

/// Value of a Prometheus sample in `text` with metric `name` and exactly the
/// label set `labels` (order-insensitive). `None` if absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (got_labels, value_part) = if let Some(inner) = rest.strip_prefix('{') {
            let Some(close) = inner.find('}') else {
                continue;
            };
            (parse_labels(&inner[..close]), &inner[close + 1..])
        } else if rest.starts_with(' ') || rest.starts_with('\t') {
            (Vec::new(), rest)
        } else {
            continue; // a longer metric name with the same prefix
        };
        let mut got_labels = got_labels;
        got_labels.sort();
        if got_labels != want {
            continue;
        }
        let value = value_part.split_whitespace().next()?;
        return match value {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            v => v.parse().ok(),
        };
    }
    None
}

/// Sum of all samples of `name` whatever their labels (0 if absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(close) => &inner[close + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') || rest.starts_with('\t') {
            rest
        } else {
            continue;
        };
        if let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum += v;
        }
    }
    sum
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    // name="value" pairs, values may contain escaped quotes and commas.
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        out.push((name.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_parsing() {
        let text = "# HELP x y\n# TYPE dashclaw_realtime_connections gauge\n\
                    dashclaw_realtime_connections 3\n\
                    dashclaw_realtime_connections_closed_total{reason=\"client\"} 2\n\
                    dashclaw_realtime_connections_closed_total{reason=\"slow\"} 1\n\
                    dashclaw_realtime_publish_duration_seconds_bucket{le=\"+Inf\",path=\"a,b\"} 7\n";
        assert_eq!(
            metric_value(text, "dashclaw_realtime_connections", &[]),
            Some(3.0)
        );
        assert_eq!(
            metric_value(
                text,
                "dashclaw_realtime_connections_closed_total",
                &[("reason", "slow")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric_value(
                text,
                "dashclaw_realtime_connections_closed_total",
                &[("reason", "limit")]
            ),
            None
        );
        assert_eq!(
            metric_value(
                text,
                "dashclaw_realtime_publish_duration_seconds_bucket",
                &[("path", "a,b"), ("le", "+Inf")]
            ),
            Some(7.0)
        );
        assert_eq!(
            metric_sum(text, "dashclaw_realtime_connections_closed_total"),
            3.0
        );
        assert_eq!(metric_sum(text, "dashclaw_realtime_orgs_active"), 0.0);
    }
}
