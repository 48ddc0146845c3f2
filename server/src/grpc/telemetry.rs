//! The tower layer that observes every call: it counts it by method and final code, times it
//! until its final status (`tse_grpc_requests_total`, `tse_grpc_request_duration_seconds`), and
//! runs it in a server span named after the method, continuing the caller's trace when the
//! request carries W3C `traceparent` metadata (exported over OTLP when configured; see
//! `server/telemetry.rs`). The span ends with the final status, which it records.
//!
//! It sits inside tonic-web's layer (gRPC-web calls are counted like plain ones) and outside
//! the guard, so calls the guard sheds or cuts off at their deadline are counted with the code
//! the client saw. The final code is in the response headers of a trailers-only response, and
//! otherwise in the trailers at the end of the body: the body is wrapped, and the call is
//! recorded when its trailers pass, or as CANCELLED when the body is dropped before them (the
//! client went away).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::app::metrics::{GRPC_DURATION, GRPC_REQUESTS};

#[derive(Clone, Copy, Debug, Default)]
pub struct TelemetryLayer;

impl<S> Layer<S> for TelemetryLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

/// Reads the propagation headers (`traceparent`, `tracestate`) of a request.
struct Headers<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one call, child of the caller's span when the request names one.
fn call_span(path: &str, headers: &HeaderMap) -> tracing::Span {
    let name = path.strip_prefix('/').unwrap_or(path);
    let span = tracing::info_span!(
        "grpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to continue.
    let _ = span.set_parent(parent);
    span
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = call_span(request.uri().path(), request.headers());
        let call = Call {
            method: request.uri().path().to_owned(),
            started: Instant::now(),
            span: span.clone(),
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let future = async move {
            let (parts, body) = response.await?.into_parts();
            if let Some(code) = grpc_code(&parts.headers) {
                call.finish(code);
                return Ok(Response::from_parts(parts, body));
            }
            let body = Body::new(MeteredBody {
                inner: body,
                call: Some(call),
            });
            Ok(Response::from_parts(parts, body))
        };
        Box::pin(future.instrument(span))
    }
}

/// One call being measured.
struct Call {
    method: String,
    started: Instant,
    /// Ends (is exported) when the call is recorded and this is dropped.
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: Code) {
        // Only methods a service answered get a label of their own: any client can send any
        // path, and each would become a time series.
        let method = if code == Code::Unimplemented {
            "unknown".to_owned()
        } else {
            self.method
        };
        self.span.record("rpc.grpc.status_code", code as i32);
        let elapsed = self.started.elapsed().as_secs_f64();
        metrics::counter!(GRPC_REQUESTS, "method" => method.clone(), "code" => format!("{code:?}"))
            .increment(1);
        metrics::histogram!(GRPC_DURATION, "method" => method).record(elapsed);
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// A response body that records its call when the final status passes.
struct MeteredBody {
    inner: Body,
    call: Option<Call>,
}

impl MeteredBody {
    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.finish(code);
                }
            }
            Some(Err(status)) => self.finish(status.code()),
            // A gRPC response always ends with a status; one without is not a success.
            None => self.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The body went away before its status: the client cancelled or disconnected.
        self.finish(Code::Cancelled);
    }
}
