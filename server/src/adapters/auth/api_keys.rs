//! API keys from AUTH_API_KEYS_FILE: a JSON array of `{"name", "sha256", "scopes"}`, holding
//! only the SHA-256 (hex) of each key. The file is re-read when it changes, so a key removed from
//! it stops working on the next call, without a restart.
//!
//! An entry may name a client certificate's subject instead of a key: `{"name", "tls_subject":
//! "CN=orders-svc,O=Acme", "scopes"}`. With mutual TLS (TLS_CLIENT_CA_FILE), a call that brings
//! no token is then made by the entry whose subject is its certificate's, as RFC 4514 writes it
//! (`openssl x509 -noout -subject -nameopt RFC2253` prints the same form).
//!
//! Change detection: every check stats the file (microseconds, no read) and re-reads it when its
//! modification time, length or inode differ from the last read (a Kubernetes Secret update swaps
//! a symlink, which changes the inode), and at least every [`REREAD_EVERY`] whatever the stat says
//! (two writes within the file system's timestamp granularity look alike). A file that cannot be
//! read or parsed fails closed: no key is accepted until it is fixed, because the edit that broke
//! it may have been a revocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::AuthError;
use crate::domain::{Principal, PrincipalKind, Scope};

/// Longest a changed file goes unnoticed when its stat looks unchanged.
const REREAD_EVERY: Duration = Duration::from_secs(5);

/// Largest keys file read: far more than any real list of keys, and a bound on what a wrong path
/// (a log file, a device) makes the server read on every change.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    tls_subject: Option<String>,
    scopes: Vec<String>,
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// The principals of one version of the file: by the hash of their key, or by the subject of
/// their client certificate.
#[derive(Default)]
pub(crate) struct Keys {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    by_subject: HashMap<String, Arc<Principal>>,
}

impl Keys {
    fn len(&self) -> usize {
        self.by_hash.len() + self.by_subject.len()
    }
}

struct Loaded {
    stamp: Option<Stamp>,
    read_at: Instant,
    /// The keys, or why the file cannot be used (then every key is refused).
    keys: Result<Arc<Keys>, String>,
}

/// The API keys of one file, kept up to date with it.
pub struct ApiKeys {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl ApiKeys {
    /// Reads the file; an unreadable or invalid file is an error here (the server must not start
    /// with keys it cannot check).
    pub fn open(path: &Path) -> Result<Self, String> {
        let stamp = Stamp::of(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys = read_keys(path)?;
        info!(path = %path.display(), keys = keys.len(), "api keys loaded");
        Ok(Self {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                stamp: Some(stamp),
                read_at: Instant::now(),
                keys: Ok(Arc::new(keys)),
            }),
        })
    }

    /// The principal of `token`, if it is one of the file's keys as the file is now.
    pub fn check(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let keys = self.current()?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        keys.by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| AuthError::Rejected("the token is not a valid API key or JWT".into()))
    }

    /// The principal of a client certificate's subject (RFC 4514 form), if an entry names it.
    pub fn check_subject(&self, subject: &str) -> Result<Arc<Principal>, AuthError> {
        let keys = self.current()?;
        keys.by_subject.get(subject).cloned().ok_or_else(|| {
            AuthError::Rejected(format!(
                "the client certificate's subject {subject:?} is not in the API keys file, and \
                 no bearer token was sent"
            ))
        })
    }

    /// The keys as the file is now, re-read if it changed.
    fn current(&self) -> Result<Arc<Keys>, AuthError> {
        let stamp = Stamp::of(&self.path).ok();
        {
            let loaded = self.loaded.read().map_err(|_| poisoned())?;
            if stamp.is_some() && loaded.stamp == stamp && loaded.read_at.elapsed() < REREAD_EVERY {
                return loaded.keys.clone().map_err(unusable);
            }
        }
        let mut loaded = self.loaded.write().map_err(|_| poisoned())?;
        // Another call may have re-read it meanwhile.
        if stamp.is_some() && loaded.stamp == stamp && loaded.read_at.elapsed() < REREAD_EVERY {
            return loaded.keys.clone().map_err(unusable);
        }
        let keys = match &stamp {
            None => Err(format!("{} cannot be read", self.path.display())),
            Some(_) => read_keys(&self.path).map(Arc::new),
        };
        let changed = loaded.stamp != stamp;
        match &keys {
            Ok(k) if changed => {
                info!(path = %self.path.display(), keys = k.len(), "api keys reloaded")
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "api keys file unusable: every api key is refused until it is fixed")
            }
        }
        *loaded = Loaded {
            stamp,
            read_at: Instant::now(),
            keys: keys.clone(),
        };
        keys.map_err(unusable)
    }
}

fn poisoned() -> AuthError {
    AuthError::Unavailable("the api key table is unusable".into())
}

fn unusable(_: String) -> AuthError {
    // The cause is logged when the file is read; the caller only learns its key was refused.
    AuthError::Rejected("the token is not a valid API key or JWT".into())
}

fn read_keys(path: &Path) -> Result<Keys, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{} is over {MAX_FILE_BYTES} bytes", path.display()));
    }
    parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The keys of a file's text: every entry must be valid, or none is used.
pub(crate) fn parse_keys(text: &str) -> Result<Keys, String> {
    let entries: Vec<KeyEntry> = serde_json::from_str(text).map_err(|e| {
        format!("not a JSON array of {{\"name\", \"sha256\" or \"tls_subject\", \"scopes\"}}: {e}")
    })?;
    let mut keys = Keys::default();
    let mut names = std::collections::HashSet::new();
    for entry in entries {
        let name = entry.name;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(format!(
                "key name {name:?} must be 1 to 128 characters without control characters"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("key name {name:?} appears twice"));
        }
        let scopes = entry
            .scopes
            .iter()
            .map(|s| {
                Scope::parse(s).ok_or_else(|| {
                    format!(
                        "key {name:?}: scope {s:?} is not read, write or admin, optionally \
                         followed by :<entity type>"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let principal = |kind| {
            Arc::new(Principal {
                name: name.clone(),
                kind,
                scopes,
            })
        };
        match (entry.sha256, entry.tls_subject) {
            (Some(sha256), None) => {
                let hash = decode_sha256(&sha256)
                    .ok_or_else(|| format!("key {name:?}: sha256 must be 64 hex digits"))?;
                if keys
                    .by_hash
                    .insert(hash, principal(PrincipalKind::ApiKey))
                    .is_some()
                {
                    return Err(format!("key {name:?}: the same key is listed twice"));
                }
            }
            (None, Some(subject)) => {
                let subject = canonical_subject(&subject)
                    .map_err(|e| format!("key {name:?}: tls_subject {subject:?}: {e}"))?;
                if keys
                    .by_subject
                    .insert(subject, principal(PrincipalKind::ClientCertificate))
                    .is_some()
                {
                    return Err(format!(
                        "key {name:?}: the same tls_subject is listed twice"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "key {name:?}: give exactly one of sha256 (an API key's hash) and \
                     tls_subject (a client certificate's subject)"
                ));
            }
        }
    }
    Ok(keys)
}

/// A subject written by hand (`CN=orders-svc, O=Acme`) in the one form certificates are
/// compared in: parsed as RFC 4514 and written back.
fn canonical_subject(text: &str) -> Result<String, String> {
    use std::str::FromStr;
    // RFC 4514 has no spaces around `,`, `+` and `=`; people write them. Without escapes in
    // the text, they can only be such spaces, and go.
    let text = if text.contains('\\') {
        text.trim().to_string()
    } else {
        let attribute = |a: &str| match a.split_once('=') {
            Some((k, v)) => format!("{}={}", k.trim(), v.trim()),
            None => a.trim().to_string(),
        };
        text.split(',')
            .map(|rdn| rdn.split('+').map(attribute).collect::<Vec<_>>().join("+"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let name = x509_cert::name::Name::from_str(&text).map_err(|e| e.to_string())?;
    if name.0.is_empty() {
        return Err("an empty subject".into());
    }
    Ok(name.to_string())
}

/// The subject of a DER certificate, in RFC 4514 form.
pub(crate) fn certificate_subject(der: &[u8]) -> Result<String, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(cert.tbs_certificate.subject.to_string())
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_valid_file_maps_hashes_to_principals() {
        let text = format!(
            r#"[{{"name": "ci", "sha256": "{}", "scopes": ["write:orders", "read"]}}]"#,
            hex("secret-1")
        );
        let keys = parse_keys(&text).unwrap();
        let hash: [u8; 32] = Sha256::digest(b"secret-1").into();
        let p = &keys.by_hash[&hash];
        assert_eq!(p.name, "ci");
        assert_eq!(p.scopes.len(), 2);
    }

    #[test]
    fn any_bad_entry_refuses_the_whole_file() {
        let good = hex("k");
        for bad in [
            "{}".to_string(),
            format!(r#"[{{"name": "", "sha256": "{good}", "scopes": []}}]"#),
            r#"[{"name": "a", "sha256": "abc", "scopes": []}]"#.to_string(),
            format!(r#"[{{"name": "a", "sha256": "{good}", "scopes": ["root"]}}]"#),
            format!(r#"[{{"name": "a", "sha256": "{good}", "scopes": [], "key": "x"}}]"#),
            format!(
                r#"[{{"name": "a", "sha256": "{good}", "scopes": []}}, {{"name": "a", "sha256": "{}", "scopes": []}}]"#,
                hex("other")
            ),
            format!(
                r#"[{{"name": "a", "sha256": "{good}", "scopes": []}}, {{"name": "b", "sha256": "{good}", "scopes": []}}]"#
            ),
            // A key and a subject at once, or neither; a subject that is not RFC 4514.
            format!(r#"[{{"name": "a", "sha256": "{good}", "tls_subject": "CN=a", "scopes": []}}]"#),
            r#"[{"name": "a", "scopes": []}]"#.to_string(),
            r#"[{"name": "a", "tls_subject": "not a name", "scopes": []}]"#.to_string(),
            r#"[{"name": "a", "tls_subject": "", "scopes": []}]"#.to_string(),
            r#"[{"name": "a", "tls_subject": "CN=x", "scopes": []}, {"name": "b", "tls_subject": "CN=x", "scopes": []}]"#.to_string(),
        ] {
            assert!(parse_keys(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_subject_is_compared_in_one_form() {
        let keys = parse_keys(
            r#"[{"name": "orders", "tls_subject": "CN=orders-svc, O=Acme", "scopes": ["write:orders"]}]"#,
        )
        .unwrap();
        let subject = canonical_subject("CN=orders-svc,O=Acme").unwrap();
        let p = &keys.by_subject[&subject];
        assert_eq!(
            (p.name.as_str(), p.kind),
            ("orders", PrincipalKind::ClientCertificate)
        );
    }

    #[test]
    fn a_key_removed_from_the_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let entry = |name: &str, key: &str| {
            format!(
                r#"{{"name": "{name}", "sha256": "{}", "scopes": ["read"]}}"#,
                hex(key)
            )
        };
        std::fs::write(
            &path,
            format!("[{}, {}]", entry("a", "ka"), entry("b", "kb")),
        )
        .unwrap();
        let keys = ApiKeys::open(&path).unwrap();
        assert_eq!(keys.check("ka").unwrap().name, "a");
        assert_eq!(keys.check("kb").unwrap().name, "b");
        assert!(keys.check("kc").is_err());
        // Replaced by a new file, as an editor or a Secret update does.
        let next = dir.path().join("keys.json.new");
        std::fs::write(&next, format!("[{}]", entry("a", "ka"))).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(keys.check("kb").is_err(), "b was revoked");
        assert_eq!(keys.check("ka").unwrap().name, "a");
        // A broken file refuses every key.
        std::fs::write(&path, "[{").unwrap();
        assert!(keys.check("ka").is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(keys.check("ka").is_err());
    }
}
