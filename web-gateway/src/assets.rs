//! The console's static files: the copy built into the gateway (`ui/dist/` at compile time), or a
//! folder read at start (`--assets`). Hashed files under `/assets/` are cached for a year;
//! everything else, `index.html` first, is revalidated on every use (`no-cache` and an ETag), so
//! a new release is seen at once. Any other GET path gets `index.html`, for the console's own
//! routes (`/types/player_profile/...`). Encodings are chosen from what the browser accepts,
//! among those prepared ahead of time.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::precompress;
use crate::{Body, text_response};

/// One file of the console as the build script embeds it.
pub struct EmbeddedFile {
    pub path: &'static str,
    pub raw: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub brotli: Option<&'static [u8]>,
    pub etag: &'static str,
}

/// The console built into this gateway: empty when `ui/dist/` was absent at compile time.
static EMBEDDED: &[EmbeddedFile] = include!(concat!(env!("OUT_DIR"), "/embedded_console.rs"));

/// `Cache-Control` of the content-hashed files under `/assets/`: their name changes with them.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else: the browser keeps it but asks each time (ETag).
pub const REVALIDATE: &str = "no-cache";

/// Said by `/` when the gateway was built without the console.
pub const NOT_BUILT: &str = "the console was not built: run `npm ci && npm run build` in web-gateway/ui and rebuild the gateway, or pass --assets <dir>\n";

struct Asset {
    raw: Bytes,
    gzip: Option<Bytes>,
    brotli: Option<Bytes>,
    /// Strong ETag of the raw file; the encoded forms append `-gz` / `-br` inside the quotes.
    etag: String,
    content_type: &'static str,
}

/// Every file of the console, by URL path (`/index.html`, `/assets/index-3f2a1c.js`).
pub struct Assets {
    files: HashMap<String, Asset>,
}

/// Which representation of a file goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Assets {
    /// The console compiled into the gateway.
    pub fn embedded() -> Self {
        let files = EMBEDDED
            .iter()
            .map(|f| {
                let asset = Asset {
                    raw: Bytes::from_static(f.raw),
                    gzip: f.gzip.map(Bytes::from_static),
                    brotli: f.brotli.map(Bytes::from_static),
                    etag: f.etag.to_string(),
                    content_type: precompress::content_type(f.path),
                };
                (f.path.to_string(), asset)
            })
            .collect();
        Self { files }
    }

    /// Every file under `dir`, read and compressed now (hidden names skipped).
    pub fn from_dir(dir: &Path) -> std::io::Result<Self> {
        let mut files = HashMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                let url = format!(
                    "/{}",
                    relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let raw = std::fs::read(&path)?;
                let (gzip, brotli) = precompress::encodings(&url, &raw);
                let asset = Asset {
                    etag: precompress::etag(&raw),
                    content_type: precompress::content_type(&url),
                    raw: Bytes::from(raw),
                    gzip: gzip.map(Bytes::from),
                    brotli: brotli.map(Bytes::from),
                };
                files.insert(url, asset);
            }
        }
        Ok(Self { files })
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn has_index(&self) -> bool {
        self.files.contains_key("/index.html")
    }

    /// Answers a request for a static file.
    pub fn serve(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let wanted = if decoded == "/" {
            "/index.html"
        } else {
            &decoded
        };
        let (path, asset) = match self.files.get(wanted) {
            Some(asset) => (wanted, asset),
            // A missing hashed file is a real 404: answering HTML to a script tag would only
            // hide that the page is older than the deployment.
            None if wanted.starts_with("/assets/") => {
                return text_response(StatusCode::NOT_FOUND, "no such file\n");
            }
            None => match self.files.get("/index.html") {
                Some(index) => ("/index.html", index),
                None if self.files.is_empty() => {
                    return text_response(StatusCode::NOT_FOUND, NOT_BUILT);
                }
                None => return text_response(StatusCode::NOT_FOUND, "no such file\n"),
            },
        };

        let encoding = choose_encoding(headers, asset);
        let (bytes, etag) = match encoding {
            Encoding::Brotli => (asset.brotli.clone(), tagged(&asset.etag, "br")),
            Encoding::Gzip => (asset.gzip.clone(), tagged(&asset.etag, "gz")),
            Encoding::Identity => (Some(asset.raw.clone()), asset.etag.clone()),
        };
        let bytes = bytes.unwrap_or_else(|| asset.raw.clone());
        let cache = if path.starts_with("/assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        };

        let mut response = if if_none_match(headers, &etag) {
            let mut r = Response::new(crate::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let length = bytes.len();
            let body = if method == Method::HEAD {
                crate::empty()
            } else {
                crate::full(bytes)
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
            h.insert(CONTENT_LENGTH, HeaderValue::from(length));
            match encoding {
                Encoding::Brotli => {
                    h.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
                }
                Encoding::Gzip => {
                    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                Encoding::Identity => {}
            }
            r
        };
        let h = response.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        if let Ok(value) = HeaderValue::from_str(&etag) {
            h.insert(ETAG, value);
        }
        if asset.gzip.is_some() || asset.brotli.is_some() {
            h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        response
    }
}

/// `"abc"` with a representation suffix: `"abc-br"`.
fn tagged(etag: &str, suffix: &str) -> String {
    format!("{}-{suffix}\"", etag.trim_end_matches('"'))
}

/// Whether `If-None-Match` names `etag` (or `*`); weak tags compare by their opaque part.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The best encoding the browser accepts among those the file has: brotli, then gzip, then the
/// file as it is. `q=0` refuses an encoding, `*` stands for any not named.
fn choose_encoding(headers: &HeaderMap, asset: &Asset) -> Encoding {
    let mut accepted: HashMap<String, f32> = HashMap::new();
    for item in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        accepted.insert(name, q);
    }
    let q = |name: &str| {
        accepted
            .get(name)
            .or_else(|| accepted.get("*"))
            .copied()
            .unwrap_or(0.0)
    };
    let br = if asset.brotli.is_some() { q("br") } else { 0.0 };
    let gzip = if asset.gzip.is_some() {
        q("gzip").max(accepted.get("x-gzip").copied().unwrap_or(0.0))
    } else {
        0.0
    };
    if br > 0.0 && br >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset() -> Asset {
        Asset {
            raw: Bytes::from_static(b"x"),
            gzip: Some(Bytes::from_static(b"g")),
            brotli: Some(Bytes::from_static(b"b")),
            etag: "\"t\"".into(),
            content_type: "text/javascript",
        }
    }

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn encodings_follow_accept_encoding() {
        let a = asset();
        assert!(choose_encoding(&accept("gzip, deflate, br, zstd"), &a) == Encoding::Brotli);
        assert!(choose_encoding(&accept("gzip"), &a) == Encoding::Gzip);
        assert!(choose_encoding(&accept("br;q=0, gzip;q=0.5"), &a) == Encoding::Gzip);
        assert!(choose_encoding(&accept("br;q=0.2, gzip;q=0.8"), &a) == Encoding::Gzip);
        assert!(choose_encoding(&accept("*"), &a) == Encoding::Brotli);
        assert!(choose_encoding(&accept("identity"), &a) == Encoding::Identity);
        assert!(choose_encoding(&HeaderMap::new(), &a) == Encoding::Identity);
        let plain = Asset {
            brotli: None,
            ..asset()
        };
        assert!(choose_encoding(&accept("br"), &plain) == Encoding::Identity);
    }

    #[test]
    fn etags_match_strong_weak_and_star() {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"t-br\""));
        assert!(if_none_match(&h, &tagged("\"t\"", "br")));
        assert!(!if_none_match(&h, "\"t\""));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"anything\""));
    }
}
