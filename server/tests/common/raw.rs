//! Calls with raw bytes as the request message: what a broken or hostile client sends (garbage,
//! truncated messages, invalid UTF-8, nesting past the decoder's limit), which generated clients
//! cannot produce.

use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends already-encoded bytes and returns the answer's bytes undecoded.
#[derive(Clone, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// One unary call of `path` (`/package.Service/Method`) with `bytes` as its message, within
/// 20 seconds; no client-side size limit, so the server's own limits are what is tested.
pub async fn raw_call(
    channel: Channel,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(bytes);
    request.set_timeout(Duration::from_secs(20));
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// One gRPC-web call to `addr` over HTTP/1.1, written by hand as a browser's transport sends it:
/// `payload` framed as one message, `authorization: Bearer <token>` when given, `connection:
/// close`. Returns the connection once the request is written, for the caller to read the answer.
pub async fn grpc_web_send(
    addr: &str,
    path: &str,
    payload: &[u8],
    token: Option<&str>,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    stream
}

/// Reads `stream` into `seen` until it contains `needle` (true) or the answer ends (false); at
/// most 20 s between reads.
pub async fn read_until(
    stream: &mut tokio::net::TcpStream,
    seen: &mut Vec<u8>,
    needle: &str,
) -> bool {
    use tokio::io::AsyncReadExt as _;
    let contains = |seen: &[u8]| String::from_utf8_lossy(seen).contains(needle);
    while !contains(seen) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within 20 s: {}",
                    String::from_utf8_lossy(seen)
                )
            })
            .unwrap();
        if n == 0 {
            return false;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
    true
}

/// The `grpc-status` of a whole gRPC-web answer on `stream` (read to its end).
pub async fn grpc_web_status(mut stream: tokio::net::TcpStream) -> String {
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, "\u{0}never").await;
    let text = String::from_utf8_lossy(&seen).to_lowercase();
    let at = text
        .find("grpc-status:")
        .unwrap_or_else(|| panic!("a grpc-status in {text:?}"))
        + "grpc-status:".len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}
