//! JWT verification, with `jsonwebtoken`: against a local key (AUTH_JWT_KEY_FILE: an RSA or EC
//! public key in PEM, or an HS256 secret) and/or the keys of a JWKS document (AUTH_JWKS_URL).
//!
//! Each key carries the algorithms it may verify, decided by the key's type and never by the
//! token: an RSA key verifies RS256/384/512 only, an EC key ES256/384, a secret HS256. So a
//! token saying `alg: none` (which `jsonwebtoken` does not even parse) or `HS256` signed with an
//! RSA public key as the secret is refused. Issuer and audience are checked when configured;
//! `exp` is required; `exp` and `nbf` are checked with a small leeway.
//!
//! The JWKS is fetched on first use, cached, and fetched again when a token names a key id it
//! does not hold (rotation: new keys work without a restart; at most one fetch per
//! [`REFETCH_MIN_INTERVAL`], so tokens with made-up key ids cannot flood the issuer) and when it
//! is older than [`JWKS_MAX_AGE`] (removed keys stop working).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tracing::{info, warn};

use super::AuthError;
use crate::domain::{Principal, PrincipalKind, Scope};

/// Least time between two JWKS fetches caused by unknown key ids.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Oldest a fetched JWKS is used before it is fetched again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// What the JWT verifier is configured with.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub key_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// A verification key with the algorithms it may verify.
struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The JWKS as last fetched.
struct JwksState {
    keys: Arc<HashMap<String, Arc<Key>>>,
    /// When it was last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted, successful or not.
    attempted_at: Option<Instant>,
}

struct Jwks {
    url: String,
    client: reqwest::Client,
    state: RwLock<JwksState>,
    /// One fetch at a time; callers that waited look at the result instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
}

/// Verifies JWTs and turns them into principals.
pub struct JwtVerifier {
    local: Option<Arc<Key>>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    scope: Option<String>,
    scp: Option<Scp>,
}

/// `scp` is a list in some issuers' tokens and a space-separated string in others'.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scp {
    One(String),
    Many(Vec<String>),
}

impl JwtVerifier {
    /// The verifier of `settings`; None when neither a key file nor a JWKS URL is set. A key
    /// file that cannot be read or understood is an error.
    pub fn new(settings: &JwtSettings) -> Result<Option<Self>, String> {
        if settings.key_file.is_none() && settings.jwks_url.is_none() {
            return Ok(None);
        }
        let local = match &settings.key_file {
            Some(path) => Some(Arc::new(read_key_file(path)?)),
            None => None,
        };
        let jwks = match &settings.jwks_url {
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| format!("AUTH_JWKS_URL {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(format!(
                        "AUTH_JWKS_URL {url:?} must be https:// (or http://)"
                    ));
                }
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| format!("the JWKS client: {e}"))?;
                Some(Jwks {
                    url: url.clone(),
                    client,
                    state: RwLock::new(JwksState {
                        keys: Arc::default(),
                        fetched_at: None,
                        attempted_at: None,
                    }),
                    fetching: tokio::sync::Mutex::new(()),
                })
            }
            None => None,
        };
        Ok(Some(Self {
            local,
            jwks,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway,
        }))
    }

    /// The principal of a valid token.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Rejected(format!("the token is not a usable JWT: {e}")))?;
        let key = self.key_for(header.kid.as_deref()).await?;
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::Rejected(format!(
                "the token's algorithm {:?} is not allowed for its key (allowed: {:?})",
                header.alg, key.algorithms
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| AuthError::Rejected(format!("the JWT is refused: {e}")))?;
        let claims = data.claims;
        let name = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Rejected("the JWT has no sub (subject) claim".into()))?;
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(AuthError::Rejected(
                "the JWT's subject is over 256 bytes or has control characters".into(),
            ));
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(scope) = claims.scope {
            words.extend(scope.split_whitespace().map(str::to_string));
        }
        match claims.scp {
            Some(Scp::One(s)) => words.extend(s.split_whitespace().map(str::to_string)),
            Some(Scp::Many(list)) => words.extend(list),
            None => {}
        }
        // Scopes of other services (openid, profile...) are not ours: ignored.
        let scopes = words.iter().filter_map(|w| Scope::parse(w)).collect();
        Ok(Arc::new(Principal {
            name,
            kind: PrincipalKind::Jwt,
            scopes,
        }))
    }

    /// The key a token names: the JWKS key of its `kid` (fetching the JWKS again if that id is
    /// unknown), else the local key.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<Key>, AuthError> {
        if let Some(jwks) = &self.jwks {
            match jwks.key(kid, self.local.is_none()).await {
                Ok(Some(key)) => return Ok(key),
                Ok(None) => {}
                Err(e) if self.local.is_none() => return Err(e),
                Err(_) => {}
            }
        }
        self.local.clone().ok_or_else(|| {
            AuthError::Rejected(format!(
                "the JWT is signed by an unknown key (kid {:?})",
                kid.unwrap_or("")
            ))
        })
    }
}

impl Jwks {
    /// The key of `kid` (or the only key, for a token without a kid), fetching the set when it
    /// is stale or lacks the id. `last_resort`: no other key could verify the token, so a failed
    /// fetch is UNAVAILABLE rather than a refusal.
    async fn key(
        &self,
        kid: Option<&str>,
        last_resort: bool,
    ) -> Result<Option<Arc<Key>>, AuthError> {
        let (found, stale, may_refetch) = self.lookup(kid);
        if found.is_some() && !stale {
            return Ok(found);
        }
        if found.is_none() && !stale && !may_refetch {
            return Ok(None);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Someone else may have fetched while this call waited.
        let (found, stale, may_refetch) = self.lookup(kid);
        if found.is_some() && !stale {
            return Ok(found);
        }
        if !stale && !may_refetch {
            return Ok(found);
        }
        match self.fetch().await {
            Ok(()) => Ok(self.lookup(kid).0),
            Err(e) => {
                warn!(url = %self.url, error = %e, "jwks fetch failed");
                match found {
                    // A stale set still verifies the keys it has.
                    Some(key) => Ok(Some(key)),
                    None if last_resort && self.is_empty() => Err(AuthError::Unavailable(
                        "the JWT issuer's key set (AUTH_JWKS_URL) cannot be fetched; retry later"
                            .into(),
                    )),
                    None => Ok(None),
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.state.read().map(|s| s.keys.is_empty()).unwrap_or(true)
    }

    /// (the key, whether the set is stale, whether an unknown id may fetch it again now).
    fn lookup(&self, kid: Option<&str>) -> (Option<Arc<Key>>, bool, bool) {
        let Ok(state) = self.state.read() else {
            return (None, true, true);
        };
        let found = match kid {
            Some(kid) => state.keys.get(kid).cloned(),
            None if state.keys.len() == 1 => state.keys.values().next().cloned(),
            None => None,
        };
        let stale = state.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        let may_refetch = state
            .attempted_at
            .is_none_or(|t| t.elapsed() >= REFETCH_MIN_INTERVAL);
        (found, stale, may_refetch)
    }

    async fn fetch(&self) -> Result<(), String> {
        if let Ok(mut state) = self.state.write() {
            state.attempted_at = Some(Instant::now());
        }
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("the JWKS is over {MAX_JWKS_BYTES} bytes"));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS is over {MAX_JWKS_BYTES} bytes"));
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match key_of_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(e) => warn!(%kid, error = %e, "jwks key skipped"),
            }
        }
        info!(url = %self.url, keys = keys.len(), "jwks fetched");
        if let Ok(mut state) = self.state.write() {
            state.keys = Arc::new(keys);
            state.fetched_at = Some(Instant::now());
        }
        Ok(())
    }
}

const RSA_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// A JWKS key and the algorithms its type allows (narrowed by its `alg` when it has one).
/// Symmetric keys are refused: a key set is public.
fn key_of_jwk(jwk: &Jwk) -> Result<Key, String> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key in a public key set is refused".into());
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(alg) => {
            let alg: Algorithm = alg
                .to_string()
                .parse()
                .map_err(|_| format!("unsupported alg {alg:?}"))?;
            if !by_type.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key's type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(Key { key, algorithms })
}

/// AUTH_JWT_KEY_FILE: a PEM public key (RSA: RS256/384/512; EC: ES256/384) or, anything else,
/// an HS256 secret (its bytes, without a trailing newline).
fn read_key_file(path: &Path) -> Result<Key, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("AUTH_JWT_KEY_FILE {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN") {
        if text.contains("PRIVATE KEY") {
            return Err(format!(
                "AUTH_JWT_KEY_FILE {} holds a private key: give the server the public key only",
                path.display()
            ));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
            return Ok(Key {
                key,
                algorithms: RSA_ALGORITHMS.to_vec(),
            });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
            return Ok(Key {
                key,
                algorithms: vec![Algorithm::ES256, Algorithm::ES384],
            });
        }
        return Err(format!(
            "AUTH_JWT_KEY_FILE {}: not an RSA or EC public key in PEM",
            path.display()
        ));
    }
    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() < 32 {
        return Err(format!(
            "AUTH_JWT_KEY_FILE {}: an HS256 secret must be at least 32 bytes",
            path.display()
        ));
    }
    Ok(Key {
        key: DecodingKey::from_secret(secret),
        algorithms: vec![Algorithm::HS256],
    })
}
