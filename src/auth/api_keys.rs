//! The API keys file: `<sha256 hex of key> <org_id> <scopes>` lines.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{AuthError, Grant, OrgGrant, Scope, parse_scopes};
use crate::envelope::OrgId;

struct ApiKeyEntry {
    org: OrgId,
    scopes: Vec<Scope>,
}

/// SHA-256 of an API key as lowercase hex, the form stored in the keys file.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The keys of one keys file, by the SHA-256 of the key.
pub struct ApiKeys {
    keys: HashMap<[u8; 32], ApiKeyEntry>,
}

impl ApiKeys {
    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| format!("line {}: {why}", number + 1);
            let [hash, org, scopes] = fields[..] else {
                return Err(bad("expected `<sha256 hex> <org_id> <scopes>`"));
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest).map_err(|_| bad("bad sha256 hex"))?;
            let org = OrgId::parse(org).map_err(|e| bad(&e.to_string()))?;
            let parsed = parse_scopes(scopes, ',');
            if parsed.len() != scopes.split(',').count() {
                return Err(bad(
                    "scopes are a comma-separated subset of subscribe,publish,ops",
                ));
            }
            keys.insert(
                digest,
                ApiKeyEntry {
                    org,
                    scopes: parsed,
                },
            );
        }
        Ok(Self { keys })
    }

    /// How many keys the file holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the file holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The grant of a known key.
    pub fn verify(&self, key: &str) -> Result<Grant, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let entry = self.keys.get(&digest).ok_or(AuthError::InvalidApiKey)?;
        Ok(Grant {
            orgs: OrgGrant::List(vec![entry.org.clone()]),
            scopes: entry.scopes.clone(),
        })
    }
}
