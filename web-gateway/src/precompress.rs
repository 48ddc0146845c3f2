//! What each static file is served with, decided once per file: its content type, its entity tag,
//! and gzip and brotli encodings made ahead of time. The build script includes this same file
//! (`#[path]`) to prepare the embedded console at compile time; `--assets <dir>` prepares a folder
//! the same way when the gateway starts. No request ever compresses anything.

use std::io::Write as _;

use sha2::Digest as _;

/// Files smaller than this are sent as they are: the saving would not pay for the header.
const MIN_COMPRESS_BYTES: usize = 256;

/// Brotli quality 9, not 11: build scripts run unoptimised, where quality 11 took 17.6 s per MB
/// of JavaScript and 9 took 1.4 s, for a few per cent more bytes on real bundles.
const BROTLI_QUALITY: u32 = 9;

/// The content type of a file, from its name (`application/octet-stream` when unknown).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Whether compressing pays: text formats do; images and fonts are compressed already.
fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("application/wasm")
        || content_type.starts_with("application/xml")
        || content_type.starts_with("image/svg+xml")
        || content_type.starts_with("image/x-icon")
}

/// A strong entity tag: the first 128 bits of the content's SHA-256, quoted.
pub fn etag(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The gzip (best) and brotli (quality 9, a 4 MiB window) encodings of a file, each only when it
/// is smaller than the file itself.
pub fn encodings(path: &str, bytes: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    if bytes.len() < MIN_COMPRESS_BYTES || !compressible(content_type(path)) {
        return (None, None);
    }
    let smaller = |encoded: Vec<u8>| (encoded.len() < bytes.len()).then_some(encoded);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gzip = gz
        .write_all(bytes)
        .and_then(|()| gz.finish())
        .ok()
        .and_then(smaller);
    // `into_inner` ends the stream.
    let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, BROTLI_QUALITY, 22);
    let written = br.write_all(bytes).is_ok();
    let brotli = written.then(|| br.into_inner()).and_then(smaller);
    (gzip, brotli)
}
