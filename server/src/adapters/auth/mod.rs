//! Credentials: turning a bearer token into a [`Principal`]. The token is an API key of
//! AUTH_API_KEYS_FILE (`api_keys.rs`) or a JWT checked against AUTH_JWT_KEY_FILE and/or
//! AUTH_JWKS_URL (`jwt.rs`). The gRPC layer calls [`Authenticator::authenticate`]; what a
//! principal may do is decided by the application.

mod api_keys;
mod jwt;

use std::path::PathBuf;
use std::sync::Arc;

pub use api_keys::ApiKeys;
pub use jwt::{JWKS_MAX_AGE, JwtSettings, JwtVerifier, REFETCH_MIN_INTERVAL};

use crate::domain::Principal;

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// UNAUTHENTICATED: the token is not valid (the message says why, without secrets).
    #[error("{0}")]
    Rejected(String),
    /// UNAVAILABLE: the token cannot be checked now (the JWKS cannot be fetched).
    #[error("{0}")]
    Unavailable(String),
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub api_keys_file: Option<PathBuf>,
    pub jwt: JwtSettings,
}

/// The configured credential sources.
pub struct Authenticator {
    api_keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// The authenticator of `settings`, or None when no source is configured (authentication
    /// off). A source that cannot be read is an error: the server must not start half-open.
    pub fn new(settings: &AuthSettings) -> Result<Option<Self>, String> {
        let api_keys = match &settings.api_keys_file {
            Some(path) => Some(ApiKeys::open(path).map_err(|e| format!("AUTH_API_KEYS_FILE {e}"))?),
            None => None,
        };
        let jwt = JwtVerifier::new(&settings.jwt)?;
        if api_keys.is_none() && jwt.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { api_keys, jwt }))
    }

    /// The principal of a call that brought no token but a client certificate (mutual TLS,
    /// already verified against TLS_CLIENT_CA_FILE): the API keys file entry naming its subject.
    pub fn authenticate_certificate(&self, der: &[u8]) -> Result<Arc<Principal>, AuthError> {
        let subject = api_keys::certificate_subject(der).map_err(|e| {
            AuthError::Rejected(format!("the client certificate cannot be read: {e}"))
        })?;
        match &self.api_keys {
            Some(keys) => keys.check_subject(&subject),
            None => Err(AuthError::Rejected(format!(
                "no bearer token was sent, and client certificates ({subject:?}) are mapped to \
                 principals only by AUTH_API_KEYS_FILE entries with a tls_subject"
            ))),
        }
    }

    /// The principal of a bearer token. A token shaped like a JWT (three dot-separated parts)
    /// is checked as one when JWTs are configured (then as an API key, should a key have that
    /// shape); anything else as an API key.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let looks_like_jwt = token.split('.').count() == 3;
        match (&self.jwt, &self.api_keys) {
            (Some(jwt), keys) if looks_like_jwt => match jwt.verify(token).await {
                Ok(p) => Ok(p),
                Err(e) => keys.as_ref().and_then(|k| k.check(token).ok()).ok_or(e),
            },
            (_, Some(keys)) => keys.check(token),
            (Some(_), None) => Err(AuthError::Rejected(
                "the token is not a JWT (header.payload.signature)".into(),
            )),
            (None, None) => Err(AuthError::Rejected("no credentials are accepted".into())),
        }
    }
}
