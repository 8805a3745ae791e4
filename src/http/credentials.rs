//! The credentials a request presents, for [`crate::auth`] to verify. The rules of which
//! cookies count are DashClaw's: its NextAuth session cookie only on a same-origin request
//! (`Sec-Fetch-Site: same-origin`, exactly), its local-session cookie on any request.

use actix_web::http::header;
use actix_web::{HttpRequest, web};

use super::{AppState, query_param};
use crate::auth::local_session::COOKIE_NAME as LOCAL_SESSION_COOKIE;
use crate::auth::{AuthError, Credential};

/// The one credential publish and ops routes look at: the first of [`credentials`].
pub fn credential(req: &HttpRequest) -> Result<Option<Credential>, AuthError> {
    Ok(credentials(req)?.into_iter().next())
}

/// What the request presents, most preferred first: `Authorization: Bearer <t>`, else the
/// `access_token` query parameter (EventSource cannot set headers), else `x-api-key` —
/// each alone, as DashClaw never reads cookies beside a key; else, when the hub reads
/// DashClaw's sessions, the NextAuth cookie (same-origin requests only) and then the
/// local-session cookie. Empty when the request presents none.
pub fn credentials(req: &HttpRequest) -> Result<Vec<Credential>, AuthError> {
    if let Some(token) = bearer_token(req) {
        return Ok(vec![Credential::Bearer(token)]);
    }
    if let Some(key) = req.headers().get("x-api-key") {
        let key = key.to_str().map_err(|_| AuthError::InvalidApiKey)?;
        return Ok(vec![Credential::ApiKey(key.to_owned())]);
    }
    let Some(nextauth_name) = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.auth.session_cookie_name())
    else {
        return Ok(Vec::new());
    };
    let cookies = cookie_pairs(req);
    let mut found = Vec::new();
    if same_origin(req)
        && let Some(token) = nextauth_token(&cookies, nextauth_name)
    {
        found.push(Credential::NextAuthSession(token));
    }
    if let Some((_, token)) = cookies
        .iter()
        .find(|(name, _)| *name == LOCAL_SESSION_COOKIE)
    {
        found.push(Credential::LocalSession((*token).to_owned()));
    }
    Ok(found)
}

/// `Sec-Fetch-Site: same-origin`, compared exactly as DashClaw does.
fn same_origin(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin")
}

/// Every `name=value` pair of every `Cookie` header; pairs without `=` are skipped (one
/// odd cookie of another app on the domain must not hide the session).
fn cookie_pairs(req: &HttpRequest) -> Vec<(&str, &str)> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect()
}

/// NextAuth's session token: the cookie `name`, or, when it was split for size, the
/// cookies `name.0`, `name.1`, ... joined in index order.
fn nextauth_token(cookies: &[(&str, &str)], name: &str) -> Option<String> {
    let mut whole = None;
    let mut chunks: Vec<(u32, &str)> = Vec::new();
    for (cookie, value) in cookies {
        if *cookie == name {
            whole = Some(*value);
        } else if let Some(index) = cookie
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|index| index.parse::<u32>().ok())
        {
            chunks.push((index, value));
        }
    }
    if chunks.is_empty() {
        return whole.map(str::to_owned);
    }
    chunks.sort_by_key(|(index, _)| *index);
    Some(chunks.into_iter().map(|(_, value)| value).collect())
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
    {
        let mut parts = text.splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            return parts.next().map(|t| t.trim().to_owned());
        }
    }
    query_param(req, "access_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_in_index_order() {
        let name = "next-auth.session-token";
        let cookies = [
            ("next-auth.session-token.1", "bb"),
            ("other", "x"),
            ("next-auth.session-token.10", "dd"),
            ("next-auth.session-token.0", "aa"),
            ("next-auth.session-token.2", "cc"),
        ];
        assert_eq!(nextauth_token(&cookies, name).as_deref(), Some("aabbccdd"));
        let single = [("next-auth.session-token", "tok"), ("x", "y")];
        assert_eq!(nextauth_token(&single, name).as_deref(), Some("tok"));
        let secure_only = [("__Secure-next-auth.session-token", "tok")];
        assert_eq!(nextauth_token(&secure_only, name), None);
        let lookalike = [
            ("next-auth.session-token-x", "tok"),
            ("next-auth.session-token.a", "t"),
        ];
        assert_eq!(nextauth_token(&lookalike, name), None);
    }
}
