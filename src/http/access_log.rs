//! Request ids and access lines: one line per request, with credentials redacted from the
//! logged target and headers never logged.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use tracing::{Instrument, debug, info, info_span};

/// Header carrying the request id, taken from the client when sane and always echoed.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What a redacted query value (or unrecognizable query part) is logged as.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names that are logged (their values only when [`loggable_query_value`]
/// says so); any other name is logged as [`REDACTED`].
const KNOWN_PARAMETERS: [&str; 9] = [
    "events",
    "last_event_id",
    "lastEventId",
    "org_id",
    "access_token",
    "api_key",
    "apikey",
    "token",
    "key",
];

/// Whether a query value may be logged: only `events` filters and resume positions that
/// parse as what they should be. Every other value is redacted, so `access_token`,
/// `api_key`, `token`, whatever a client invents, and a credential pasted into the wrong
/// parameter never reach a log.
fn loggable_query_value(name: &str, decoded: &str) -> bool {
    match name {
        "events" => crate::filter::EventFilter::parse(decoded).is_ok(),
        "last_event_id" | "lastEventId" => !matches!(
            crate::envelope::ResumePosition::parse(decoded),
            crate::envelope::ResumePosition::Unrecognized(_)
        ),
        _ => false,
    }
}

/// A client-given request id is kept when it is short and of plain characters, and does
/// not look like a JWT (a client pasting its token there must not get it logged).
fn sane_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !id.starts_with("eyJ")
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request target as logged: path segments too long to be an org id or a route and
/// every query value but filters and resume positions are replaced by [`REDACTED`].
pub fn loggable_target(path: &str, query: &str) -> String {
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if segment.len() > 64 {
            REDACTED
        } else {
            segment
        });
    }
    if query.is_empty() {
        return out;
    }
    out.push('?');
    for (i, part) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (part, None),
        };
        let name = percent_decode(key);
        // A bare value (`?sk_live_abc`) or a name the hub does not know may itself be a
        // credential pasted into the URL: only known parameter names are logged.
        let known = KNOWN_PARAMETERS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(&name));
        if value.is_none() || !known {
            out.push_str(REDACTED);
            continue;
        }
        out.push_str(key);
        if let Some(value) = value {
            out.push('=');
            if loggable_query_value(&name, &percent_decode(value)) {
                out.push_str(value);
            } else {
                out.push_str(REDACTED);
            }
        }
    }
    out
}

/// Paths polled by probes and scrapers: their access lines are debug, not info.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Gives every request an id (the client's `x-request-id` when sane, else a new ULID),
/// runs it inside a `request{request_id}` span, echoes the id in the response and writes
/// one access line: method, redacted target, status and time to the response head (for
/// streams, the time to open them). Headers are never logged.
pub async fn request_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| sane_request_id(id))
        .map_or_else(|| ulid::Ulid::generate().to_string(), str::to_owned);
    let method = req.method().clone();
    let probe = is_probe(req.path());
    let target = loggable_target(req.path(), req.query_string());
    let span = info_span!("request", request_id = %request_id);
    let result = next.call(req).instrument(span).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if probe {
        debug!(target: "dashclaw_realtime::access", request_id = %request_id, method = %method,
               path = %target, status = status.as_u16(), duration_ms, "request");
    } else {
        info!(target: "dashclaw_realtime::access", request_id = %request_id, method = %method,
              path = %target, status = status.as_u16(), duration_ms, "request");
    }
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_unless_known() {
        assert_eq!(
            loggable_target(
                "/api/stream",
                "access_token=eyJ.a.b&events=a.b,c.*&lastEventId=1-0"
            ),
            "/api/stream?access_token=REDACTED&events=a.b,c.*&lastEventId=1-0"
        );
        assert_eq!(
            loggable_target("/x", "api_key=k&token=t&Access%5Ftoken=t2&flag"),
            "/x?api_key=REDACTED&token=REDACTED&Access%5Ftoken=REDACTED&REDACTED"
        );
        // A bare query value is logged as nothing but REDACTED, however plain it looks.
        assert_eq!(
            loggable_target("/api/stream", "sk_live_abc"),
            "/api/stream?REDACTED"
        );
        assert_eq!(
            loggable_target("/api/stream", "oc_live_0123456789abcdef=1&events=a.b"),
            "/api/stream?REDACTED&events=a.b"
        );
        assert_eq!(
            loggable_target("/x", "eyJhbGciOiJIUzI1NiJ9.e30.sig&a%3Db=c"),
            "/x?REDACTED&REDACTED"
        );
        assert_eq!(
            loggable_target(
                "/x",
                "last_event_id=eyJhbGciOiJIUzI1NiJ9.e30.sig&lastEventId=evt_1&events=eyJ.X&org_id=o"
            ),
            "/x?last_event_id=REDACTED&lastEventId=evt_1&events=REDACTED&org_id=REDACTED"
        );
        assert_eq!(loggable_target("/healthz", ""), "/healthz");
        let long = "x".repeat(65);
        assert_eq!(
            loggable_target(&format!("/v1/orgs/{long}/stream"), ""),
            "/v1/orgs/REDACTED/stream"
        );
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id("req-1:a.b_C"));
        assert!(sane_request_id(&ulid::Ulid::generate().to_string()));
        for bad in ["", "a b", "x\ny", "eyJhbGciOi.e30.x", &"a".repeat(65), "é"] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }
}
