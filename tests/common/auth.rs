#![allow(dead_code)]
//! Credentials for auth tests (contract section 6).

use std::path::{Path, PathBuf};

use sha2::Digest;

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("system clock before 1970: {e}"));
    i64::try_from(d.as_secs()).unwrap_or_else(|_| panic!("clock out of range"))
}

/// HS256 JWT with arbitrary claims.
pub fn make_jwt(secret: &str, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .unwrap_or_else(|e| panic!("jwt key: {e}"));
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key)
        .unwrap_or_else(|e| panic!("jwt encode: {e}"))
}

/// HS256 JWT `{"exp": now+ttl_secs, "org_id": org, "scope": scope}`
/// (a negative ttl gives an expired token).
pub fn jwt_for(secret: &str, org: &str, scope: &str, ttl_secs: i64) -> String {
    make_jwt(
        secret,
        &serde_json::json!({"exp": now_unix() + ttl_secs, "org_id": org, "scope": scope}),
    )
}

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Write an API keys file into `dir`: one line `<sha256 hex> <org> <scopes>` per
/// `(key, org, scopes_comma_separated)`. Returns its path.
pub fn write_api_keys_file(dir: &Path, keys: &[(&str, &str, &str)]) -> PathBuf {
    let path = dir.join("api_keys.txt");
    let text: String = keys
        .iter()
        .map(|(key, org, scopes)| format!("{} {} {}\n", sha256_hex(key), org, scopes))
        .collect();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
