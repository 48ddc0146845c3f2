//! The few parts of the gRPC-web protocol the gateway must understand to forward calls without
//! knowing them: which requests are gRPC-web, how to answer one itself (a trailers-only
//! response), the `grpc-timeout` header, and where the messages of a response body begin and end
//! (to end a call cleanly with a status frame, and to log its status).

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS};
use tonic::Code;

/// The two body encodings of gRPC-web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto|+json]`: frames as bytes.
    Binary,
    /// `application/grpc-web-text[+proto]`: the same frames in base64.
    Text,
}

impl Mode {
    /// The mode of a request with this content type; `None` when it is not gRPC-web.
    pub fn of(content_type: Option<&HeaderValue>) -> Option<Mode> {
        let value = content_type?.to_str().ok()?.trim().to_ascii_lowercase();
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence == "application/grpc-web-text"
            || essence.starts_with("application/grpc-web-text+")
        {
            Some(Mode::Text)
        } else if essence == "application/grpc-web" || essence.starts_with("application/grpc-web+")
        {
            Some(Mode::Binary)
        } else {
            None
        }
    }
}

/// Bytes a `grpc-message` value must escape: controls, non-ASCII (always) and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// `message` as the gRPC spec puts it in `grpc-message`.
fn encode_message(message: &str) -> HeaderValue {
    let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

/// A gRPC-web answer made by the gateway itself: HTTP 200 with the status in the headers and no
/// body ("trailers-only"), which every gRPC-web client reads as the call's outcome. It echoes the
/// request's content type, so the client decodes it in the mode it asked for.
pub fn trailers_only<B: Default>(
    code: Code,
    message: &str,
    content_type: Option<&HeaderValue>,
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        content_type
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/grpc-web+proto")),
    );
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    headers.insert("grpc-message", encode_message(message));
    response
}

/// Longest value `grpc-timeout` may carry: at most 8 digits.
const MAX_TIMEOUT_VALUE: u64 = 99_999_999;

/// A `grpc-timeout` header (`1S`, `250m`, ...: at most 8 digits and a unit), or `None` when it is
/// malformed.
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
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

/// `timeout` as a `grpc-timeout` value, in the finest unit that fits in 8 digits (rounded up, so
/// the engine never gets less time than the gateway waits).
pub fn format_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis().max(1);
    let (n, unit) = if millis <= u128::from(MAX_TIMEOUT_VALUE) {
        (millis, "m")
    } else {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        if secs <= MAX_TIMEOUT_VALUE {
            (u128::from(secs), "S")
        } else {
            (u128::from(secs.div_ceil(3600).min(MAX_TIMEOUT_VALUE)), "H")
        }
    };
    HeaderValue::from_str(&format!("{n}{unit}")).expect("digits and a letter")
}

/// The status frame that ends a gRPC-web body (flag 0x80), in the body's mode.
pub fn status_frame(code: Code, message: &str, mode: Mode) -> Bytes {
    let mut block = format!("grpc-status: {}\r\n", code as i32);
    let message = encode_message(message);
    block.push_str("grpc-message: ");
    block.push_str(message.to_str().unwrap_or("error"));
    block.push_str("\r\n");
    let mut frame = Vec::with_capacity(5 + block.len());
    frame.push(0x80);
    frame.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(block.as_bytes());
    match mode {
        Mode::Binary => Bytes::from(frame),
        Mode::Text => Bytes::from(base64::engine::general_purpose::STANDARD.encode(frame)),
    }
}

/// The `grpc-status` of a header block (the headers of a trailers-only response, or a status
/// frame's text), if it has one.
pub fn status_of_headers(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Follows a response body's frames as they pass, without holding them: whether the bytes sent so
/// far end on a frame boundary, how many messages went by, and the status frame's code.
#[derive(Debug)]
pub struct FrameTracker {
    mode: Mode,
    /// Text mode: base64 characters not yet decoded (fewer than 4).
    pending_text: Vec<u8>,
    /// The 5-byte header of the frame being read, as far as it has arrived.
    header: Vec<u8>,
    /// Bytes of the current frame's body still to come.
    remaining: usize,
    /// Whether the current frame is the status frame, whose text is kept to read its code.
    in_status: bool,
    status_text: BytesMut,
    pub messages: u64,
    pub status: Option<i32>,
}

/// Longest status frame text kept: enough for a status, a message and details.
const MAX_STATUS_TEXT: usize = 64 * 1024;

impl FrameTracker {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            pending_text: Vec::new(),
            header: Vec::with_capacity(5),
            remaining: 0,
            in_status: false,
            status_text: BytesMut::new(),
            messages: 0,
            status: None,
        }
    }

    /// True when everything seen so far forms whole frames: a frame added now is read as one.
    pub fn at_boundary(&self) -> bool {
        self.pending_text.is_empty() && self.header.is_empty() && self.remaining == 0
    }

    /// Takes note of the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) {
        match self.mode {
            Mode::Binary => self.feed_frames(data),
            Mode::Text => {
                // Base64 decodes in groups of 4 characters; padded groups may follow each other,
                // as servers encode each frame on its own.
                let mut text: Vec<u8> = std::mem::take(&mut self.pending_text);
                text.extend(data.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                let whole = text.len() / 4 * 4;
                for group in text[..whole].chunks(4) {
                    match base64::engine::general_purpose::STANDARD.decode(group) {
                        Ok(bytes) => self.feed_frames(&bytes),
                        // Not base64: nothing more can be learnt from this body.
                        Err(_) => return,
                    }
                }
                self.pending_text = text[whole..].to_vec();
            }
        }
    }

    fn feed_frames(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining == 0 && self.header.len() < 5 {
                let take = (5 - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.header.len() < 5 {
                    return;
                }
                let flags = self.header[0];
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                self.header.clear();
                self.in_status = flags & 0x80 != 0;
                if !self.in_status {
                    self.messages += 1;
                }
                self.status_text.clear();
                self.remaining = len;
                if len == 0 {
                    self.finish_frame();
                }
                continue;
            }
            let take = self.remaining.min(data.len());
            if self.in_status && self.status_text.len() + take <= MAX_STATUS_TEXT {
                self.status_text.extend_from_slice(&data[..take]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                self.finish_frame();
            }
        }
    }

    fn finish_frame(&mut self) {
        if !self.in_status {
            return;
        }
        self.in_status = false;
        let text = String::from_utf8_lossy(&self.status_text);
        for line in text.split("\r\n") {
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("grpc-status")
            {
                self.status = value.trim().parse().ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_recognised() {
        let mode = |v: &'static str| Mode::of(Some(&HeaderValue::from_static(v)));
        assert_eq!(mode("application/grpc-web"), Some(Mode::Binary));
        assert_eq!(mode("application/grpc-web+proto"), Some(Mode::Binary));
        assert_eq!(
            mode("Application/GRPC-Web+proto; charset=x"),
            Some(Mode::Binary)
        );
        assert_eq!(mode("application/grpc-web-text"), Some(Mode::Text));
        assert_eq!(mode("application/grpc-web-text+proto"), Some(Mode::Text));
        assert_eq!(mode("application/grpc"), None);
        assert_eq!(mode("application/grpc-webx"), None);
        assert_eq!(mode("text/html"), None);
        assert_eq!(Mode::of(None), None);
    }

    #[test]
    fn timeouts_parse_and_format() {
        let parse = |v: &'static str| parse_timeout(&HeaderValue::from_static(v));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("123456789m"), None, "9 digits");
        assert_eq!(parse("10"), None);
        assert_eq!(parse("-1S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
        for d in [
            Duration::from_millis(7),
            Duration::from_secs(30),
            Duration::from_secs(200_000),
        ] {
            assert!(parse_timeout(&format_timeout(d)).unwrap() >= d);
        }
    }

    fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![flags];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn the_tracker_follows_frames_split_anywhere() {
        let mut body = frame(0, b"hello");
        body.extend(frame(0, b""));
        body.extend_from_slice(&status_frame(Code::NotFound, "no such thing", Mode::Binary));
        for split in 0..body.len() {
            let mut t = FrameTracker::new(Mode::Binary);
            t.feed(&body[..split]);
            t.feed(&body[split..]);
            assert!(t.at_boundary());
            assert_eq!(t.messages, 2);
            assert_eq!(t.status, Some(Code::NotFound as i32));
        }
        let mut t = FrameTracker::new(Mode::Binary);
        t.feed(&body[..7]);
        assert!(!t.at_boundary());
    }

    #[test]
    fn the_tracker_reads_text_mode_with_padding_between_frames() {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut text = engine.encode(frame(0, b"a"));
        text.push_str(&engine.encode(frame(0, b"bc")));
        text.push_str(std::str::from_utf8(&status_frame(Code::Ok, "", Mode::Text)).unwrap());
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let mut t = FrameTracker::new(Mode::Text);
            t.feed(&bytes[..split]);
            t.feed(&bytes[split..]);
            assert!(t.at_boundary(), "split at {split}");
            assert_eq!(t.messages, 2);
            assert_eq!(t.status, Some(0));
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        let r: Response<()> = trailers_only(Code::Unavailable, "100% down: é", None);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "100%25 down: %C3%A9");
    }
}
