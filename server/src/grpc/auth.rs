//! Authentication, as a tower layer: turns the `authorization: Bearer <token>` header into a
//! [`Principal`] carried in the request's extensions, or answers UNAUTHENTICATED before any
//! service runs. Handlers take the principal with [`caller`] and hand it to the application,
//! which decides what it may do.
//!
//! gRPC health is always public (orchestrators probe it without credentials); reflection is
//! public unless AUTH_REFLECTION_REQUIRES_AUTH. Without any credential source configured, every
//! call gets the all-powerful anonymous principal: behaviour is as before authentication existed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::adapters::auth::{AuthError, Authenticator};
use crate::domain::{Principal, PrincipalKind};
use crate::grpc::rate_limit::RateLimiter;

const HEALTH: &str = "/grpc.health.v1.Health/";
const REFLECTION: &str = "/grpc.reflection.";

/// The principal of a call, and its message. UNAUTHENTICATED if the layer did not run (a
/// service wired without it): fail closed.
pub(crate) fn caller<T>(request: tonic::Request<T>) -> Result<(Arc<Principal>, T), Status> {
    let who = request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no credentials were checked for this call"))?;
    Ok((who, request.into_inner()))
}

struct AuthState {
    /// None: authentication is off.
    authenticator: Option<Authenticator>,
    reflection_requires_auth: bool,
    anonymous: Arc<Principal>,
    /// None: no rate limit.
    rate_limiter: Option<RateLimiter>,
}

#[derive(Clone)]
pub struct AuthLayer(Arc<AuthState>);

impl AuthLayer {
    pub fn new(
        authenticator: Option<Authenticator>,
        reflection_requires_auth: bool,
        rate_limiter: Option<RateLimiter>,
    ) -> Self {
        Self(Arc::new(AuthState {
            authenticator,
            reflection_requires_auth,
            anonymous: Arc::new(Principal::anonymous()),
            rate_limiter,
        }))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    state: Arc<AuthState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let path = request.uri().path();
        let public = path.starts_with(HEALTH)
            || (path.starts_with(REFLECTION) && !state.reflection_requires_auth);
        if public {
            // Health and (unless configured otherwise) reflection: no principal is needed.
            return Box::pin(inner.call(request));
        }
        if state.authenticator.is_none() {
            let anonymous = state.anonymous.clone();
            if let Err(refused) = state.admit(&anonymous, &request) {
                return Box::pin(async move { Ok(refused.into_http()) });
            }
            request.extensions_mut().insert(anonymous);
            return Box::pin(inner.call(request));
        }
        // A bearer token if there is one; otherwise the client certificate of mutual TLS.
        let credential = match bearer(request.headers()) {
            Ok(token) => Ok(token),
            Err(missing) => match client_certificate(request.extensions()) {
                Some(der) => Err(der),
                None => return Box::pin(async move { Ok(missing.into_http()) }),
            },
        };
        Box::pin(async move {
            let checked = match (&state.authenticator, credential) {
                (Some(authenticator), Ok(token)) => authenticator.authenticate(&token).await,
                (Some(authenticator), Err(der)) => authenticator.authenticate_certificate(&der),
                (None, _) => Ok(state.anonymous.clone()),
            };
            match checked {
                Ok(principal) => {
                    if let Err(refused) = state.admit(&principal, &request) {
                        return Ok(refused.into_http());
                    }
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(AuthError::Rejected(why)) => Ok(Status::unauthenticated(why).into_http()),
                Err(AuthError::Unavailable(why)) => Ok(Status::unavailable(why).into_http()),
            }
        })
    }
}

impl AuthState {
    /// Takes one call of the caller's rate-limit credit, or the RESOURCE_EXHAUSTED answer.
    fn admit<B>(&self, principal: &Principal, request: &Request<B>) -> Result<(), Status> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(());
        };
        let caller = rate_limit_key(principal, request.extensions());
        limiter
            .take(&caller, std::time::Instant::now())
            .map_err(|wait| limiter.refusal(&caller, wait))
    }
}

/// Whose bucket a call draws on: the principal's, or without authentication (where everyone is
/// the anonymous principal) the peer's IP address.
fn rate_limit_key(principal: &Principal, extensions: &http::Extensions) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    match principal.kind {
        PrincipalKind::ApiKey => format!("API key {:?}", principal.name),
        PrincipalKind::Jwt => format!("JWT subject {:?}", principal.name),
        PrincipalKind::ClientCertificate => format!("client certificate {:?}", principal.name),
        PrincipalKind::Anonymous => {
            let peer = extensions
                .get::<TcpConnectInfo>()
                .or_else(|| {
                    extensions
                        .get::<TlsConnectInfo<TcpConnectInfo>>()
                        .map(TlsConnectInfo::get_ref)
                })
                .and_then(TcpConnectInfo::remote_addr);
            match peer {
                Some(addr) => format!("peer {}", addr.ip()),
                None => "the anonymous caller".to_string(),
            }
        }
    }
}

/// The end-entity certificate the client presented over mutual TLS, if any (rustls verified it
/// against TLS_CLIENT_CA_FILE before the connection was accepted).
fn client_certificate(extensions: &http::Extensions) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certs.first().map(|c| c.as_ref().to_vec())
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(headers: &http::HeaderMap) -> Result<String, Status> {
    let missing = || {
        Status::unauthenticated(
            "this server requires credentials: send the header `authorization: Bearer <token>` \
             with an API key or a JWT",
        )
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated(
            "the authorization header must use the Bearer scheme: `Bearer <token>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        let h = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            bearer(&h)
        };
        assert_eq!(h("Bearer abc").unwrap(), "abc");
        assert_eq!(h("bearer  abc ").unwrap(), "abc");
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "abc"] {
            assert_eq!(
                h(bad).unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{bad}"
            );
        }
        assert!(bearer(&http::HeaderMap::new()).is_err());
    }
}
