//! The tower layer every call passes through before it reaches a service: the server-side
//! deadline, the concurrency limit that sheds excess calls, and the rewriting of the statuses
//! tonic produces by itself (before or after a handler runs) into the codes this API promises.
//!
//! Why a layer and not a codec: the codec is chosen by the generated service code (the proto
//! crate), and tonic's decode errors are turned into a response inside the generated `call`,
//! before any handler or interceptor sees them. What leaves the service is always an HTTP
//! response, and tonic puts the `Status` of a trailers-only response in its extensions (and its
//! `grpc-status` header), so a layer can recognise those statuses exactly, whatever the method
//! or codec. The layer sits inside tonic-web's `GrpcWebLayer` (it sees plain gRPC responses,
//! which tonic-web then translates for browsers), so gRPC-web calls get the same codes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::status::clip;

/// Methods whose response is a stream: no deadline, the permit is held only until the stream
/// starts (a subscription lives as long as its client; it must not hold a slot meanwhile).
const STREAMING: [&str; 3] = [
    "/temporal_state.v1.EventService/Subscribe",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.",
];
/// Never shed: an orchestrator must be able to tell an overloaded server from a dead one.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// How much earlier than the client's own deadline the server answers DEADLINE_EXCEEDED.
/// tonic enforces the `grpc-timeout` header itself, outside every layer, and answers CANCELLED;
/// answering a moment before it makes the code the client sees DEADLINE_EXCEEDED, as gRPC
/// specifies. Timer ticks are 1 ms, so a few ms are enough.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The limits [`Guard`] enforces.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Longest a unary call may run.
    pub request_timeout: Duration,
    /// Most calls being handled at once (health checks excluded).
    pub max_concurrent: usize,
}

#[derive(Clone)]
pub struct GuardLayer {
    config: Arc<GuardConfig>,
    permits: Arc<Semaphore>,
}

impl GuardLayer {
    pub fn new(config: GuardConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Self {
            config: Arc::new(config),
            permits,
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            config: self.config.clone(),
            permits: self.permits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    config: Arc<GuardConfig>,
    permits: Arc<Semaphore>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Guard<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let streaming = STREAMING.iter().any(|p| path.starts_with(p));
        let health = path.starts_with(HEALTH);
        let deadline = (!streaming).then(|| {
            let client =
                client_timeout(request.headers()).map(|t| t.saturating_sub(CLIENT_DEADLINE_MARGIN));
            client.map_or(self.config.request_timeout, |c| {
                c.min(self.config.request_timeout)
            })
        });
        let permit = if health {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let status = Status::unavailable(format!(
                        "the server is handling its limit of {} calls; retry with backoff",
                        self.config.max_concurrent
                    ));
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        };
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timeout = self.config.request_timeout;
        Box::pin(async move {
            let call = inner.call(request);
            let response = match deadline {
                None => call.await?,
                Some(deadline) => match tokio::time::timeout(deadline, call).await {
                    Ok(response) => response?,
                    // Dropping the call cancels the handler: it stops at its next await and
                    // releases its database connection (an open transaction rolls back).
                    Err(_) => {
                        return Ok(Status::deadline_exceeded(format!(
                            "the call did not finish within {} ms (the server allows {} s; a \
                             shorter client deadline wins)",
                            deadline.as_millis(),
                            timeout.as_secs()
                        ))
                        .into_http());
                    }
                },
            };
            // For unary calls the handler has finished here (only encoding the message is
            // left); a stream's permit is released once it has started.
            drop(permit);
            Ok(rewrite(response))
        })
    }
}

/// The client's `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n).
fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Rewrites a trailers-only response whose status tonic produced itself, and watches the body's
/// trailers for the status of an over-large response.
fn rewrite(mut response: Response<Body>) -> Response<Body> {
    let status = response
        .extensions()
        .get::<Status>()
        .map(|s| (s.code(), s.message().to_string()))
        .or_else(|| {
            Status::from_header_map(response.headers()).map(|s| (s.code(), s.message().into()))
        });
    if let Some((code, message)) = status
        && let Some(mapped) = client_status(code, &message)
    {
        return mapped.into_http();
    }
    let body = std::mem::replace(response.body_mut(), Body::empty());
    *response.body_mut() = Body::new(CappedBody(body));
    response
}

/// The client code of a status tonic produced without a handler, if it is one of those.
///
/// - A request that does not decode (garbage bytes, invalid UTF-8 in a string, a `Struct`
///   nested past prost's recursion limit, a missing message, a bad compression flag) is the
///   caller's mistake: INVALID_ARGUMENT, where tonic says INTERNAL.
/// - A request over the size limit is RESOURCE_EXHAUSTED (as the README promises and as gRPC
///   itself uses for over-large messages), where tonic says OUT_OF_RANGE.
///
/// Handlers never produce these messages (their INTERNAL is always "internal error"), so a
/// handler's status is never rewritten.
fn client_status(code: Code, message: &str) -> Option<Status> {
    match code {
        Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("protocol error:")
                || message == "Missing request message." =>
        {
            Some(Status::invalid_argument(clip(
                &format!("the request is not a valid message of this method: {message}"),
                400,
            )))
        }
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => Some(
            Status::resource_exhausted(clip(&format!("the request is too large: {message}"), 400)),
        ),
        _ => None,
    }
}

/// A response body whose final status, when tonic's encoder reports a message over
/// `max_encoding_message_size` (OUT_OF_RANGE), becomes RESOURCE_EXHAUSTED.
struct CappedBody(Body);

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.0).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(trailers) => Frame::trailers(rewrite_trailers(trailers)),
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

fn rewrite_trailers(mut trailers: HeaderMap) -> HeaderMap {
    if let Some(s) = Status::from_header_map(&trailers)
        && s.code() == Code::OutOfRange
        && s.message()
            .starts_with("Error, encoded message length too large")
    {
        let status = Status::resource_exhausted(clip(
            &format!("the response is too large: {}", s.message()),
            400,
        ));
        let _ = status.add_header(&mut trailers);
    }
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_timeouts_parse_like_grpc() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            client_timeout(&h)
        };
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_tonic_decode_and_size_errors_are_rewritten() {
        let s = client_status(
            Code::Internal,
            "failed to decode Protobuf message: invalid wire type",
        )
        .unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = client_status(
            Code::OutOfRange,
            "Error, decoded message length too large: found 8388613 bytes, the limit is: 6291456 bytes",
        )
        .unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(client_status(Code::Internal, "internal error").is_none());
        assert!(
            client_status(Code::InvalidArgument, "failed to decode Protobuf message").is_none()
        );
        let long = format!(
            "failed to decode Protobuf message: {}",
            "Value.kind: Struct.fields: ".repeat(200)
        );
        assert!(
            client_status(Code::Internal, &long)
                .unwrap()
                .message()
                .len()
                < 1024
        );
    }
}
