//! DashClaw's NextAuth session cookie: a JWE (`alg: dir`, `enc: A256GCM`) whose key is
//! derived from `NEXTAUTH_SECRET` the way next-auth 4 derives it, decrypted by `josekit`.

use hkdf::Hkdf;
use josekit::jwe::{Dir, JweDecrypter};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::SessionClaims;
use super::{AuthError, claim_seconds};

/// next-auth's HKDF `info` for the session key (with its default, empty salt).
const KEY_INFO: &[u8] = b"NextAuth.js Generated Encryption Key";

/// The only content encryption next-auth writes; anything else is refused.
const CONTENT_ENCRYPTION: &str = "A256GCM";

/// Seconds of clock skew next-auth allows on `exp` and `nbf`.
pub const CLOCK_TOLERANCE_SECONDS: u64 = 15;

/// Decrypts NextAuth session tokens made with one secret.
pub struct NextAuthVerifier {
    decrypter: Box<dyn JweDecrypter>,
}

/// The 32-byte key next-auth derives from its secret: HKDF-SHA256, empty salt.
pub fn derive_key(secret: &str) -> [u8; 32] {
    let hkdf = Hkdf::<Sha256>::new(None, secret.as_bytes());
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so this cannot fail.
    if hkdf.expand(KEY_INFO, &mut key).is_err() {
        unreachable!("HKDF-SHA256 can always expand 32 bytes");
    }
    key
}

impl NextAuthVerifier {
    /// A verifier for `NEXTAUTH_SECRET`.
    pub fn new(secret: &str) -> Result<Self, String> {
        let decrypter = Dir
            .decrypter_from_bytes(derive_key(secret))
            .map_err(|e| format!("NEXTAUTH_SECRET: {e}"))?;
        Ok(Self {
            decrypter: Box::new(decrypter),
        })
    }

    /// The claims of a valid, unexpired token (`now`: seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<SessionClaims, AuthError> {
        let (payload, header) = josekit::jwt::decode_with_decrypter(token, &*self.decrypter)
            .map_err(|_| AuthError::InvalidSession)?;
        if header.content_encryption() != Some(CONTENT_ENCRYPTION) {
            return Err(AuthError::InvalidSession);
        }
        check_times(payload.claims_set(), now)?;
        SessionClaims::from_claims(payload.claims_set(), CLOCK_TOLERANCE_SECONDS)
    }
}

/// next-auth's rule: refused when `exp <= now - 15` or `nbf > now + 15`.
fn check_times(claims: &Map<String, Value>, now: u64) -> Result<(), AuthError> {
    if let Some(exp) = claim_seconds(claims, "exp")?
        && exp.saturating_add(CLOCK_TOLERANCE_SECONDS) <= now
    {
        return Err(AuthError::SessionExpired);
    }
    if let Some(nbf) = claim_seconds(claims, "nbf")?
        && nbf > now.saturating_add(CLOCK_TOLERANCE_SECONDS)
    {
        return Err(AuthError::InvalidSession);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_next_auth() {
        // Derived by next-auth 4.24 itself for the secret `test-secret`.
        assert_eq!(
            hex::encode(derive_key("test-secret")),
            "233a0d9c3e93817c2a383a4235b78cc7820ed294cbf0a88d52650b90af59115a"
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let verifier = NextAuthVerifier::new("test-secret").unwrap();
        for token in [
            "",
            "a.b.c.d.e",
            "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..a.b.c",
        ] {
            assert_eq!(
                verifier.verify(token, 0).err(),
                Some(AuthError::InvalidSession)
            );
        }
    }
}
