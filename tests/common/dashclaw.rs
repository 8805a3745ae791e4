#![allow(dead_code)]
//! DashClaw's session cookies, minted by the npm packages DashClaw uses (next-auth 4.24's
//! `encode()`, jose 4's `SignJWT` as its local login does), through `tests/dashclaw/mint.mjs`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The NextAuth session cookie over plain HTTP.
pub const NEXTAUTH_COOKIE: &str = "next-auth.session-token";
/// The local-admin session cookie.
pub const LOCAL_COOKIE: &str = "dashclaw-local-session";

fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashclaw")
}

fn mint(kind: &str, claims: &Value, secret: &str, extra: Option<&str>) -> String {
    let dir = package_dir();
    assert!(
        dir.join("node_modules/next-auth/package.json").exists(),
        "tests/dashclaw/node_modules is missing: run scripts/install-test-deps.sh"
    );
    let out = Command::new("node")
        .arg(dir.join("mint.mjs"))
        .arg(kind)
        .arg(claims.to_string())
        .arg(secret)
        .args(extra)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running node mint.mjs: {e}"));
    assert!(
        out.status.success(),
        "mint.mjs {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A NextAuth session token (next-auth's `encode`) lasting `max_age` seconds (negative:
/// already expired).
pub fn nextauth_token(claims: &Value, secret: &str, max_age: i64) -> String {
    mint("nextauth", claims, secret, Some(&max_age.to_string()))
}

/// A local-admin session token as DashClaw's local login signs it (7 days), with
/// `claims` overriding its claims (`null` removes one).
pub fn local_token(claims: &Value, secret: &str) -> String {
    mint("local", claims, secret, None)
}

/// A local-admin session token expiring at `exp` (seconds since the epoch).
pub fn local_token_expiring(claims: &Value, secret: &str, exp: i64) -> String {
    mint("local", claims, secret, Some(&exp.to_string()))
}

/// `Cookie: name=value` as a header pair.
pub fn cookie(name: &str, value: &str) -> (String, String) {
    ("cookie".to_owned(), format!("{name}={value}"))
}
