//! The API keys file: `<sha256 hex of key> <org_id> <scopes>` lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

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
        // Line of each hash, to name both lines of a duplicate.
        let mut lines: HashMap<[u8; 32], usize> = HashMap::new();
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
            // Two lines for one key would silently keep one of their grants.
            if let Some(first) = lines.insert(digest, number + 1) {
                return Err(bad(&format!(
                    "the same key hash as line {first} (each key may appear once)"
                )));
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

/// The keys file as the hub serves it: re-read when asked (`SIGHUP`) or when its
/// modification time changes; a reload that fails keeps the keys it had.
pub struct KeysFile {
    path: PathBuf,
    current: RwLock<Arc<ApiKeys>>,
    modified: Mutex<Option<SystemTime>>,
}

impl KeysFile {
    /// Reads and parses the file once; an error names what is wrong.
    pub fn load(path: &Path) -> Result<Self, String> {
        let (keys, modified) = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(keys)),
            modified: Mutex::new(modified),
        })
    }

    /// The keys now in force.
    pub fn keys(&self) -> Arc<ApiKeys> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file; on failure the old keys stay and the error is returned.
    pub fn reload(&self) -> Result<usize, String> {
        let (keys, modified) = read(&self.path)?;
        let count = keys.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *self.modified.lock().unwrap_or_else(|p| p.into_inner()) = modified;
        Ok(count)
    }

    /// True when the file's modification time differs from the last one read (or the
    /// file cannot be examined, so that the reload reports why).
    pub fn changed(&self) -> bool {
        let now = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let seen = *self.modified.lock().unwrap_or_else(|p| p.into_inner());
        now.is_none() || now != seen
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read(path: &Path) -> Result<(ApiKeys, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((ApiKeys::parse(&text)?, modified))
}
