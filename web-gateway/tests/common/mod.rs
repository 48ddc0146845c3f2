//! What the gateway's tests share: a real gateway on 127.0.0.1:0, an HTTP/1.1 client as a browser
//! would use, gRPC-web requests built from their bytes (a 5-byte frame header and a prost
//! message, independent of any gRPC-web library), and a raw HTTP upstream that records what
//! reaches it — for the few checks a real engine cannot show (the headers it was sent).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use temporal_state_gateway::{Gateway, GatewayConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use temporal_state_proto::v1 as pb;
pub use temporal_state_test_support::TestServer;

pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A real gateway on a loopback port of its own, stopped when dropped.
pub struct Gw {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Gw {
    /// A gateway in front of `upstreams` (`host:port`), with quick health checks, after `tweak`
    /// changed its configuration.
    pub async fn start(upstreams: &[SocketAddr], tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let uris = upstreams
            .iter()
            .map(|a| temporal_state_gateway::config::upstream_arg(&a.to_string()).unwrap())
            .collect();
        let mut config = GatewayConfig::new(uris);
        config.health_interval_ms = 100;
        config.connect_timeout_ms = 1_000;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::new(config).expect("a valid gateway configuration");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the gateway and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Waits until `/readyz` says 200 (an engine answered its health check SERVING).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, _) = get(&self.url("/readyz"), &[]).await;
            if status == StatusCode::OK {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTP/1.1 client, as browsers speak to a plain-HTTP origin.
pub fn client() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A GET with `headers`: (status, headers, body).
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    send("GET", url, headers, Bytes::new()).await
}

pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body).boxed()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("an answer, not a hang")
        .expect("an HTTP response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    (parts.status, parts.headers, body)
}

/// One gRPC-web message frame: flag 0, length, the message.
pub fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + payload.len());
    framed.push(0);
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    Bytes::from(framed)
}

/// A gRPC-web (binary) request for `path` carrying `body`.
pub fn grpc_web_request(
    gw: &Gw,
    path: &str,
    body: ReqBody,
    headers: &[(&str, &str)],
) -> Request<ReqBody> {
    let mut request = Request::builder()
        .method("POST")
        .uri(gw.url(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).unwrap()
}

/// What a unary gRPC-web call returned.
#[derive(Debug)]
pub struct Answer {
    pub http: StatusCode,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    /// From the headers (trailers-only) or the status frame.
    pub status: i32,
    pub message: String,
}

impl Answer {
    pub fn decode<M: Message + Default>(&self) -> M {
        assert_eq!(self.status, 0, "the call failed: {self:?}");
        assert_eq!(self.messages.len(), 1, "{self:?}");
        M::decode(self.messages[0].clone()).expect("a message of the expected type")
    }
}

/// Sends a unary gRPC-web call of `request` to `path` and reads the whole answer.
pub async fn unary(
    gw: &Gw,
    path: &str,
    request: &impl Message,
    headers: &[(&str, &str)],
) -> Answer {
    let req = grpc_web_request(gw, path, Full::new(frame(request)).boxed(), headers);
    call(req).await
}

/// Sends `request` and reads the whole gRPC-web answer (binary mode).
pub async fn call(request: Request<ReqBody>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("an answer, not a hang")
        .expect("an HTTP response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the whole body, not a hang")
        .expect("the body")
        .to_bytes();
    let (messages, trailers) = parse_frames(body);
    let from = trailers.as_ref().unwrap_or(&parts.headers);
    let status = from
        .get("grpc-status")
        .unwrap_or_else(|| panic!("a grpc-status: {:?} {trailers:?}", parts.headers))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let message = from
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode_str(v.to_str().unwrap())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Answer {
        http: parts.status,
        headers: parts.headers,
        messages,
        status,
        message,
    }
}

/// The messages and the status frame (as headers) of a binary gRPC-web body.
pub fn parse_frames(mut body: Bytes) -> (Vec<Bytes>, Option<HeaderMap>) {
    let mut messages = Vec::new();
    let mut trailers = None;
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        assert!(body.len() >= len, "a whole frame");
        let payload = body.split_to(len);
        if flags & 0x80 != 0 {
            trailers = Some(parse_trailer_block(&payload));
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "no partial frame at the end");
    (messages, trailers)
}

pub fn parse_trailer_block(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in String::from_utf8_lossy(block).split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            map.insert(
                http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
    }
    map
}

/// Reads a streaming gRPC-web body frame by frame.
pub struct FrameReader {
    body: Incoming,
    buffer: BytesMut,
}

impl FrameReader {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next frame as (flags, payload), or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    self.buffer.advance(5);
                    return Some((flags, self.buffer.split_to(len).freeze()));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("the stream broke: {e}"),
                None => return None,
            }
        }
    }
}

/// A temporary folder with the engine's embedded store.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A real engine on the embedded store in a folder of its own, once its gRPC health says
/// SERVING (it says NOT_SERVING for a moment after it starts answering calls, and a gateway
/// keeps such an engine out of rotation until its next check).
pub async fn engine() -> (TestServer, tempfile::TempDir) {
    let dir = data_dir();
    let server = TestServer::start_embedded(dir.path(), &[]).await;
    wait_serving(server.addr).await;
    (server, dir)
}

/// Waits until the engine at `addr` answers its health check SERVING.
pub async fn wait_serving(addr: SocketAddr) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        if answer.is_ok_and(|a| a.into_inner().status == 1) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine on {addr} never said SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A unique name for a test's entity type.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The headers one request carried to [`RawUpstream`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// A raw HTTP/1.1 and HTTP/2 (h2c) server standing in for an engine where the test must see what arrived: it
/// answers the gRPC health check SERVING, holds calls whose path ends in `/Hang` open forever,
/// and answers every other call OK with no message (trailers-only), recording its headers.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move { Ok::<_, Infallible>(raw_answer(request, &recorded).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// What reached it, health checks left out.
    pub fn calls(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.path.starts_with("/grpc.health"))
            .cloned()
            .collect()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_answer(
    request: Request<Incoming>,
    recorded: &Mutex<Vec<Seen>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let path = request.uri().path().to_string();
    recorded.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: request.headers().clone(),
    });
    if path == "/grpc.health.v1.Health/Check" {
        let answer = tonic_health::pb::HealthCheckResponse {
            status: tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(frame(&answer))),
            Ok(Frame::trailers(trailers)),
        ];
        return Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            .unwrap();
    }
    if path.ends_with("/Hang") {
        std::future::pending::<()>().await;
    }
    let _ = request.into_body().collect().await;
    Response::builder()
        .header("content-type", "application/grpc-web+proto")
        .header("grpc-status", "0")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// A folder standing in for a built console (what `vite build` writes).
pub struct Console {
    pub dir: tempfile::TempDir,
    pub index: String,
    pub script: String,
    pub script_path: &'static str,
}

impl Console {
    pub fn write() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script_path = "/assets/index-3f2a1c9b.js";
        let index = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Temporal State</title>\
             <script type=\"module\" src=\"{script_path}\"></script></head><body><div id=\"root\">\
             </div>{}</body></html>",
            "<!-- padding so the page is worth compressing -->".repeat(10)
        );
        let script = "export const greeting = 'hello from the console';\n".repeat(200);
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), &index).unwrap();
        std::fs::write(dir.path().join("assets/index-3f2a1c9b.js"), &script).unwrap();
        // A PNG signature: already compressed, sent as it is.
        std::fs::write(
            dir.path().join("assets/logo-77aa.png"),
            [0x89, b'P', b'N', b'G', 13, 10, 26, 10],
        )
        .unwrap();
        Self {
            dir,
            index,
            script,
            script_path,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}
