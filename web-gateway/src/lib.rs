//! The Temporal State Engine's web gateway: what browsers talk to. It serves the console (the
//! React UI in `ui/`) and forwards the console's gRPC-web calls to the engines from the same
//! origin, so no CORS is needed and the engines stay on a private network.
//!
//! Layout:
//! - [`config`]: the typed configuration (flags and environment variables).
//! - `upstreams`: the engines (over the network, or in this process), their gRPC health, and the
//!   choice of one for each call.
//! - `proxy`: the generic gRPC-web forwarder (no code per RPC), deadlines and size limits.
//! - `grpc_web`: the bits of the gRPC-web protocol the forwarder needs.
//! - `assets`, `precompress`: the console's files, embedded at compile time or read from a folder,
//!   with their caching headers and encodings prepared ahead of time.
//! - this file: [`Gateway`] and [`serve`], which take their listener and shutdown signal from the
//!   caller (so tests bind `127.0.0.1:0`), routing, and the security headers of every response.
//!
//! Routes: `/healthz` (the process answers), `/readyz` (some engine is SERVING),
//! `/console-config.json` (the console's sign-in settings, `console_config`), `POST
//! /temporal_state.*/*` and `/grpc.health.v1.Health/*` with a gRPC-web content type (forwarded),
//! and GET/HEAD of anything else (the console).

pub mod config;

mod assets;
mod console_config;
mod grpc_web;
mod precompress;
mod proxy;
mod upstreams;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::Code;
use tracing::{info, warn};

use crate::assets::Assets;
pub use crate::config::GatewayConfig;
use crate::console_config::ConsoleConfig;
use crate::grpc_web::Mode;
use crate::proxy::Forwarder;
use crate::upstreams::Pool;
pub use crate::upstreams::{Engine, EngineSlot};

/// The body of every response the gateway sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Content-Security-Policy of every response: scripts, styles and connections from this
/// origin only, no inline script, no framing, no plugins. With OpenID Connect sign-in, the
/// issuer's origin is added to `connect-src` (and nothing else).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'";

/// How long connections may take to finish their calls once shutdown begins; Subscribe streams
/// never finish by themselves, so they are cut after this.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a browser may take to send a request's headers (a connection that sends nothing is
/// closed instead of being held open forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no upstream given: at least one --upstream (GATEWAY_UPSTREAMS) is needed")]
    NoUpstream,
    #[error("reading the console from {path}: {source}")]
    Assets {
        path: String,
        source: std::io::Error,
    },
    #[error("the console folder {0} holds no index.html")]
    NoIndex(String),
    #[error("console sign-in: {0}")]
    Oidc(String),
}

/// A configured gateway, ready to serve on a listener.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    forwarder: Forwarder,
    assets: Assets,
    health_interval: Duration,
    max_request_bytes: usize,
    console_config: ConsoleConfig,
}

impl Gateway {
    /// Checks the configuration and loads the console (embedded, or from `--assets`). Must be
    /// called within a Tokio runtime.
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        if config.upstreams.is_empty() {
            return Err(GatewayError::NoUpstream);
        }
        let pool = Pool::new(&config.upstreams, config.connect_timeout());
        Self::with_pool(config, pool)
    }

    /// A gateway in the engine's own process (the server's console): calls go to the service
    /// stack in `slot` directly, with no network hop, instead of to `config.upstreams` (which are
    /// ignored). Everything else (limits, deadlines, health, `/readyz`, the console) is as with
    /// [`Gateway::new`].
    pub fn in_process(config: GatewayConfig, slot: EngineSlot) -> Result<Self, GatewayError> {
        let pool = Pool::in_process(slot, config.connect_timeout());
        Self::with_pool(config, pool)
    }

    fn with_pool(config: GatewayConfig, pool: Pool) -> Result<Self, GatewayError> {
        let assets = match &config.assets {
            Some(dir) => {
                let assets = Assets::from_dir(dir).map_err(|source| GatewayError::Assets {
                    path: dir.display().to_string(),
                    source,
                })?;
                if !assets.has_index() {
                    return Err(GatewayError::NoIndex(dir.display().to_string()));
                }
                assets
            }
            None => Assets::embedded(),
        };
        let console_config = ConsoleConfig::new(&config.oidc).map_err(GatewayError::Oidc)?;
        let pool = Arc::new(pool);
        let forwarder = Forwarder::new(pool.clone(), &config);
        info!(
            upstreams = ?pool.names(),
            console_files = assets.len(),
            console_from = %config.assets.as_ref().map_or_else(|| "embedded".to_string(), |d| d.display().to_string()),
            max_request_bytes = config.max_request_bytes,
            request_timeout_secs = config.request_timeout_secs,
            connect_timeout_ms = config.connect_timeout_ms,
            health_interval_ms = config.health_interval_ms,
            oidc_issuer = config.oidc.console_oidc_issuer.as_deref().unwrap_or("none"),
            "gateway configured"
        );
        if assets.is_empty() {
            warn!(
                "this gateway was built without the console (web-gateway/ui/dist is missing): only the API is forwarded"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                forwarder,
                assets,
                health_interval: config.health_interval(),
                max_request_bytes: config.max_request_bytes,
                console_config,
            }),
        })
    }

    /// Serves on `listener` until `shutdown` completes, then lets open calls finish (for at most
    /// a few seconds) and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let health = tokio::spawn(self.inner.pool.clone().watch(self.inner.health_interval));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, usually: wait a little instead of spinning.
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            let builder = builder.clone();
            let mut stopping = stopping.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    // The only change ever sent is the stop; a closed channel means the same.
                    _ = stopping.changed() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        info!(
            open_connections = connections.len(),
            "gateway shutting down"
        );
        let _ = stop.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                cut = connections.len(),
                "connections still open after the drain timeout"
            );
            connections.shutdown().await;
        }
        health.abort();
    }

    /// Routes one request and adds the security headers to whatever answers it.
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let mut response = self.route(request, peer).await;
        let h = response.headers_mut();
        h.insert("content-security-policy", self.inner.console_config.csp());
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        response
    }

    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = request.uri().path();
        if path == "/healthz" {
            return no_store(text_response(StatusCode::OK, "ok\n"));
        }
        if path == "/readyz" {
            return no_store(if self.inner.pool.any_serving() {
                text_response(StatusCode::OK, "ready\n")
            } else {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "no engine is serving\n")
            });
        }
        if path == console_config::PATH {
            return self.inner.console_config.response();
        }
        if let Some(service) = rpc_service(path) {
            let content_type = request.headers().get(CONTENT_TYPE);
            let Some(mode) = Mode::of(content_type) else {
                return text_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "only gRPC-web (application/grpc-web, application/grpc-web-text) is forwarded; gRPC clients call the engine directly\n",
                );
            };
            if request.method() != Method::POST {
                return grpc_web::trailers_only(
                    Code::Unimplemented,
                    "gRPC-web calls are POST requests",
                    content_type,
                );
            }
            if !forwarded_service(service) {
                return grpc_web::trailers_only(
                    Code::Unimplemented,
                    &format!("service {service} is not offered through this gateway"),
                    content_type,
                );
            }
            return self.inner.forwarder.forward(request, peer, mode).await;
        }
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.inner.max_request_bytes as u64) {
            return text_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        self.inner
            .assets
            .serve(request.method(), path, request.headers())
    }
}

/// Serves `config` on `listener` until `shutdown` completes: [`Gateway::new`] then
/// [`Gateway::serve`].
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    Gateway::new(config)?.serve(listener, shutdown).await;
    Ok(())
}

/// Whether the gateway's build has the console in it (false until `ui/dist/` is built).
pub fn console_embedded() -> bool {
    !Assets::embedded().is_empty()
}

/// The service of a gRPC path, `/package.Service/Method`, if the path is one.
fn rpc_service(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (service.contains('.') && !method.is_empty() && !method.contains('/')).then_some(service)
}

/// The services browsers may reach: the API, whatever its methods, and health. Reflection is left
/// out: the console has no use for it and the public side of the gateway need not describe it.
fn forwarded_service(service: &str) -> bool {
    service.starts_with("temporal_state.") || service == "grpc.health.v1.Health"
}

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_paths_are_told_from_console_paths() {
        assert_eq!(
            rpc_service("/temporal_state.v1.EventService/Subscribe"),
            Some("temporal_state.v1.EventService")
        );
        assert_eq!(
            rpc_service("/grpc.health.v1.Health/Check"),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(rpc_service("/types/player_profile"), None);
        assert_eq!(rpc_service("/assets/index-1a2b.js"), None);
        assert_eq!(rpc_service("/a.b/c/d"), None);
        assert!(forwarded_service("temporal_state.v2.Future"));
        assert!(!forwarded_service("grpc.reflection.v1.ServerReflection"));
    }
}
