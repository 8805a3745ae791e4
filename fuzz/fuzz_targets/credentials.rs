//! Credential parsers: `Auth::verify_token` (fixed secret) on arbitrary token text and on
//! arbitrary claims signed with the right secret, `Auth::verify_api_key`, and the API keys
//! file parser `parse_api_keys`. Checks: no panic; unsigned text never authenticates; a
//! granted token carries only valid orgs; the keys parser reports errors by line.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashclaw_realtime::auth::{Auth, OrgGrant, parse_api_keys};
use dashclaw_realtime::envelope::OrgId;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const SECRET: &[u8] = b"fuzz-secret";

static AUTH: LazyLock<Auth> =
    LazyLock::new(|| Auth::new(Some(std::str::from_utf8(SECRET).unwrap()), None).unwrap());

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn signed_token(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = hmac_sha256(SECRET, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        // Arbitrary token text: can never carry a valid signature.
        0 => assert!(AUTH.verify_token(&text).is_err()),
        // Arbitrary claims (and sometimes header) JSON, correctly signed.
        1 | 2 => {
            let token = if mode % 4 == 1 {
                signed_token(br#"{"alg":"HS256","typ":"JWT"}"#, rest)
            } else {
                let (header, claims) = rest.split_at(rest.len() / 2);
                signed_token(header, claims)
            };
            if let Ok(grant) = AUTH.verify_token(&token) {
                match grant.orgs {
                    OrgGrant::List(orgs) => {
                        for org in orgs {
                            assert!(OrgId::parse(org.as_str()).is_ok());
                        }
                    }
                    OrgGrant::Any => panic!("a token granted every org"),
                }
            }
        }
        // The API keys file.
        _ => {
            match parse_api_keys(&text) {
                Ok(count) => assert!(count <= text.lines().count()),
                Err(message) => assert!(message.starts_with("line "), "{message}"),
            }
            assert!(AUTH.verify_api_key(&text).is_err());
        }
    }
});
