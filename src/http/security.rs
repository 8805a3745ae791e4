//! Headers every response carries, and the `Host` check that keeps a hub without auth from
//! being read by a web page through DNS rebinding (a name the attacker controls that
//! resolves to 127.0.0.1: the browser then sends that name as `Host`).

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::{ApiError, AppState};

/// Refuses a foreign `Host` when auth is off, then adds `X-Content-Type-Options: nosniff`
/// and `X-Frame-Options: DENY` to every response (the status page adds its own CSP).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let auth_off = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.auth.is_off());
    let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
    if auth_off && host.is_some_and(|h| !is_loopback_host(h)) {
        let response = ApiError::HostNotAllowed.error_response();
        let mut response = req.into_response(response).map_into_right_body();
        add_headers(response.headers_mut());
        return Ok(response);
    }
    let mut response = next.call(req).await?.map_into_left_body();
    add_headers(response.headers_mut());
    Ok(response)
}

fn add_headers(headers: &mut header::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `localhost`, a loopback IP literal (`127.0.0.1`, `[::1]`), with or without a port.
pub fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || is_port(port) => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    text.strip_prefix(':')
        .unwrap_or(text)
        .parse::<u16>()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_only() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:65535",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "x",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[::2]:80",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "[::1]x",
            "",
            "::1",
        ] {
            assert!(!is_loopback_host(bad.as_bytes()), "{bad}");
        }
    }
}
