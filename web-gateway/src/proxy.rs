//! The gRPC-web forwarder. It knows no RPC: a call's path, headers (authorization and all other
//! metadata) and body go to an engine as they came, and the response streams back as it arrives
//! — never buffered whole, so a Subscribe stream flows at the pace of the browser that reads it
//! (HTTP/2 and TCP flow control do the rest).
//!
//! Calls to one engine share one HTTP/2 connection (prior-knowledge h2c, as gRPC speaks it; the
//! engine answers gRPC-web on it through tonic-web). The engine sets no limit on streams per
//! connection, so open Subscribe streams never hold up other calls; pings find an engine that
//! vanished without closing the connection. A pool of HTTP/1.1 connections, one per call in
//! flight, was measured no cheaper per call (`temporal-state-bench console`).
//!
//! What it adds: a size limit on the request, a deadline (the client's `grpc-timeout`, capped;
//! server-streaming methods have none unless the client asks), a choice of engine among the
//! healthy ones with a retry on another when one refuses the connection, and gRPC-web statuses
//! for every failure of its own, so a browser never sees an HTML error page or a hang.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prost::Message as _;
use tokio::time::{Instant, Sleep};
use tonic::Code;
use tower::ServiceExt as _;
use tracing::{info, warn};

use crate::config::GatewayConfig;
use crate::grpc_web::{self, FrameTracker, Mode};
use crate::upstreams::{Pool, Target};
use crate::{Body, BoxError};

/// Forwards gRPC-web calls to the pool's engines.
pub struct Forwarder {
    pool: Arc<Pool>,
    client: Client<HttpConnector, Full<Bytes>>,
    max_request_bytes: usize,
    request_timeout: Duration,
    /// `/package.Service/Method` of every server-streaming method, read from the API's descriptor
    /// set: these have no total deadline unless the client sets one.
    streaming: HashSet<String>,
}

impl Forwarder {
    pub fn new(pool: Arc<Pool>, config: &GatewayConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout()));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .build(connector);
        Self {
            pool,
            client,
            max_request_bytes: config.max_request_bytes,
            request_timeout: config.request_timeout(),
            streaming: server_streaming_methods(),
        }
    }

    /// Forwards one gRPC-web call; every outcome is a gRPC-web response.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        mode: Mode,
    ) -> Response<Body> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let content_type = parts.headers.get(CONTENT_TYPE).cloned();
        let answer = |code: Code, message: &str, upstream: Option<&str>| {
            info!(
                path = %path,
                upstream = upstream.unwrap_or("-"),
                grpc_status = code as i32,
                duration_ms = started.elapsed().as_millis() as u64,
                reason = message,
                "grpc-web call answered by the gateway"
            );
            grpc_web::trailers_only::<Body>(code, message, content_type.as_ref())
        };

        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_request_bytes as u64) {
            return answer(
                Code::ResourceExhausted,
                &format!(
                    "the request is larger than the gateway's limit of {} bytes",
                    self.max_request_bytes
                ),
                None,
            );
        }
        let client_timeout = match parts.headers.get("grpc-timeout") {
            None => None,
            Some(value) => match grpc_web::parse_timeout(value) {
                Some(timeout) => Some(timeout),
                None => {
                    return answer(
                        Code::InvalidArgument,
                        "malformed grpc-timeout header (expected up to 8 digits and a unit of H, M, S, m, u or n)",
                        None,
                    );
                }
            },
        };
        let streaming = self.streaming.contains(&path);
        let limit = if streaming {
            client_timeout
        } else {
            Some(client_timeout.map_or(self.request_timeout, |t| t.min(self.request_timeout)))
        };
        let deadline = limit.map(|limit| started + limit);
        // Receiving the request and the response's headers is bounded even for a stream.
        let headers_deadline = deadline.unwrap_or(started + self.request_timeout);

        let body = match tokio::time::timeout_at(
            headers_deadline,
            Limited::new(body, self.max_request_bytes).collect(),
        )
        .await
        {
            Err(_) => {
                return answer(
                    Code::DeadlineExceeded,
                    "the request body did not arrive in time",
                    None,
                );
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return answer(
                    Code::ResourceExhausted,
                    &format!(
                        "the request is larger than the gateway's limit of {} bytes",
                        self.max_request_bytes
                    ),
                    None,
                );
            }
            Ok(Err(e)) => {
                return answer(
                    Code::Cancelled,
                    &format!("reading the request failed: {e}"),
                    None,
                );
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };

        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(HOST);
        if limit.is_some() && limit != client_timeout {
            // The gateway's cap is shorter than what the client asked (or it asked nothing): the
            // engine is told, so it stops working on a call nobody waits for any more.
            headers.insert(
                "grpc-timeout",
                grpc_web::format_timeout(limit.unwrap_or_default()),
            );
        }
        append_forwarded_for(&mut headers, peer);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.as_str().to_string());

        let mut tried = Vec::new();
        let mut rechecked = false;
        loop {
            let Some(index) = self.pool.pick(&tried) else {
                if tried.is_empty() && !rechecked {
                    // None in rotation: ask the engines now rather than fail until the next
                    // periodic check (bounded by the connect timeout, and shared between calls).
                    rechecked = true;
                    self.pool.recheck().await;
                    continue;
                }
                let why = if tried.is_empty() {
                    "no engine is available; try again shortly"
                } else {
                    "no engine accepted a connection; try again shortly"
                };
                return answer(Code::Unavailable, why, None);
            };
            tried.push(index);
            let upstream = self.pool.get(index);
            let call = RelayedCall {
                path: path.clone(),
                upstream: upstream.name.clone(),
                started,
                deadline,
                mode,
                content_type: content_type.clone(),
            };
            match &upstream.target {
                Target::InProcess(slot) => {
                    let Some(engine) = slot.get() else {
                        return answer(
                            Code::Unavailable,
                            "the engine is not serving (starting or shutting down); try again shortly",
                            Some(&upstream.name),
                        );
                    };
                    let uri = match path_and_query.parse::<http::Uri>() {
                        Ok(uri) => uri,
                        Err(_) => {
                            return answer(Code::InvalidArgument, "malformed request path", None);
                        }
                    };
                    let mut outgoing =
                        Request::new(tonic::body::Body::new(Full::new(body.clone())));
                    *outgoing.method_mut() = parts.method.clone();
                    *outgoing.uri_mut() = uri;
                    *outgoing.version_mut() = Version::HTTP_2;
                    *outgoing.headers_mut() = headers.clone();
                    // What the engine's own listener would record of a browser that called it.
                    outgoing
                        .extensions_mut()
                        .insert(tonic::transport::server::TcpConnectInfo {
                            local_addr: None,
                            remote_addr: Some(peer),
                        });
                    return match tokio::time::timeout_at(headers_deadline, engine.oneshot(outgoing))
                        .await
                    {
                        Err(_) => answer(
                            Code::DeadlineExceeded,
                            "the engine did not answer in time",
                            Some(&upstream.name),
                        ),
                        Ok(Err(e)) => {
                            warn!(path = %path, upstream = %upstream.name, error = %error_chain(e.as_ref()), "the engine failed the call");
                            answer(
                                Code::Internal,
                                "the engine failed the call",
                                Some(&upstream.name),
                            )
                        }
                        Ok(Ok(response)) => relay(response, call),
                    };
                }
                Target::Network(authority) => {
                    let authority = authority.as_str();
                    let uri = match format!("http://{authority}{path_and_query}")
                        .parse::<http::Uri>()
                    {
                        Ok(uri) => uri,
                        Err(_) => {
                            return answer(Code::InvalidArgument, "malformed request path", None);
                        }
                    };
                    let mut outgoing = Request::new(Full::new(body.clone()));
                    *outgoing.method_mut() = parts.method.clone();
                    *outgoing.uri_mut() = uri;
                    *outgoing.version_mut() = Version::HTTP_2;
                    *outgoing.headers_mut() = headers.clone();
                    match tokio::time::timeout_at(headers_deadline, self.client.request(outgoing))
                        .await
                    {
                        Err(_) => {
                            return answer(
                                Code::DeadlineExceeded,
                                "the engine did not answer in time",
                                Some(authority),
                            );
                        }
                        Ok(Err(e)) if e.is_connect() => {
                            // Nothing was sent: safe to try another engine.
                            self.pool.mark_down(index, &error_chain(&e));
                            continue;
                        }
                        Ok(Err(e)) => {
                            warn!(path = %path, upstream = %authority, error = %error_chain(&e), "forwarding failed");
                            return answer(
                                Code::Unavailable,
                                "the connection to the engine failed; try again",
                                Some(authority),
                            );
                        }
                        Ok(Ok(response)) => return relay(response, call),
                    }
                }
            }
        }
    }
}

/// What [`relay`] needs to know of the call.
struct RelayedCall {
    path: String,
    upstream: String,
    started: Instant,
    deadline: Option<Instant>,
    mode: Mode,
    content_type: Option<HeaderValue>,
}

/// The engine's answer, on its way to the browser.
fn relay<B>(response: Response<B>, call: RelayedCall) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let header_status = grpc_web::status_of_headers(&parts.headers);
    if parts.status != StatusCode::OK && header_status.is_none() {
        // Not a gRPC answer (a proxy in front of the engine, say): the gRPC spec's mapping of
        // HTTP statuses, so the browser still gets a status and never an error page.
        let code = match parts.status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        info!(
            path = %call.path,
            upstream = %call.upstream,
            http_status = parts.status.as_u16(),
            grpc_status = code as i32,
            duration_ms = call.started.elapsed().as_millis() as u64,
            "grpc-web call: the engine answered without a gRPC status"
        );
        return grpc_web::trailers_only(
            code,
            &format!("the engine answered HTTP {}", parts.status.as_u16()),
            call.content_type.as_ref(),
        );
    }
    let body = CallBody {
        inner: incoming,
        deadline: call.deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        tracker: FrameTracker::new(call.mode),
        mode: call.mode,
        header_status,
        done: false,
        ended: None,
        path: call.path,
        upstream: call.upstream,
        http_status: parts.status.as_u16(),
        started: call.started,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// A response body passed through frame by frame. It ends the call with a status frame of its own
/// when the deadline passes or the engine's connection breaks between two messages (in the middle
/// of one, only breaking the response is honest), and logs the call when it is done or dropped.
struct CallBody<B> {
    inner: B,
    deadline: Option<Pin<Box<Sleep>>>,
    tracker: FrameTracker,
    mode: Mode,
    header_status: Option<i32>,
    done: bool,
    /// Why the gateway ended the body itself, for the log.
    ended: Option<&'static str>,
    path: String,
    upstream: String,
    http_status: u16,
    started: Instant,
}

impl<B> CallBody<B> {
    fn status(&self) -> Option<i32> {
        self.header_status.or(self.tracker.status)
    }

    /// Ends the body with `code` when a status frame can still be added; otherwise with an error.
    fn end(
        &mut self,
        code: Code,
        message: &str,
        why: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if self.tracker.at_boundary() && self.status().is_some() {
            // The call's status went by already: nothing was lost.
            return Poll::Ready(None);
        }
        self.ended = Some(why);
        if self.tracker.at_boundary() {
            self.tracker.status = Some(code as i32);
            Poll::Ready(Some(Ok(Frame::data(grpc_web::status_frame(
                code, message, self.mode,
            )))))
        } else {
            Poll::Ready(Some(
                Err(format!("{why} in the middle of a message").into()),
            ))
        }
    }
}

impl<B> http_body::Body for CallBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return this.end(
                Code::DeadlineExceeded,
                "deadline exceeded",
                "deadline exceeded",
            );
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.tracker.feed(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.header_status =
                        this.header_status.or(grpc_web::status_of_headers(trailers));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                warn!(path = %this.path, upstream = %this.upstream, error = %error_chain(e.as_ref()), "the engine's response broke off");
                this.end(
                    Code::Unavailable,
                    "the connection to the engine was lost",
                    "engine connection lost",
                )
            }
            None if this.status().is_none() => this.end(
                Code::Unavailable,
                "the engine ended the call without a status",
                "engine sent no status",
            ),
            None => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl<B> Drop for CallBody<B> {
    fn drop(&mut self) {
        let outcome = match (self.ended, self.done) {
            (Some(why), _) => why,
            (None, true) => "completed",
            (None, false) => "cancelled by the client",
        };
        info!(
            path = %self.path,
            upstream = %self.upstream,
            http_status = self.http_status,
            grpc_status = ?self.status(),
            messages = self.tracker.messages,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome,
            "grpc-web call"
        );
    }
}

/// Headers that describe one connection, not the call (RFC 9110 §7.6.1), and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Adds the browser's address to `x-forwarded-for`, after any the request carried.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) if !before.trim().is_empty() => format!("{before}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// An error and its causes on one line, for the logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The paths of the API's server-streaming methods, from the descriptor set compiled into the
/// proto crate: a method added to the API is known here without a line of gateway code.
fn server_streaming_methods() -> HashSet<String> {
    let set = prost_types::FileDescriptorSet::decode(temporal_state_proto::FILE_DESCRIPTOR_SET)
        .expect("the proto crate's descriptor set decodes");
    let mut paths = HashSet::new();
    for file in set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                if method.server_streaming() {
                    paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_is_known_as_a_stream_from_the_descriptors() {
        let streaming = server_streaming_methods();
        assert!(streaming.contains("/temporal_state.v1.EventService/Subscribe"));
        assert!(!streaming.contains("/temporal_state.v1.InstanceService/GetCurrentState"));
    }

    #[test]
    fn hop_by_hop_headers_go_and_metadata_stays() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert(
            "x-user-agent",
            HeaderValue::from_static("grpc-web-javascript/0.1"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["authorization"], "Bearer t");
        append_forwarded_for(&mut headers, "10.0.0.7:5000".parse().unwrap());
        append_forwarded_for(&mut headers, "127.0.0.1:1".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
    }
}
