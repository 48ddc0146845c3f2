//! gRPC-web for browsers: the translation itself is tonic-web's; this module decides which other
//! origins a browser may call from (CORS), from GRPC_WEB_ALLOWED_ORIGINS.

use std::time::Duration;

use http::{HeaderName, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::parse_origin;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The response headers a gRPC-web client must read: the status travels in them when a call
/// fails before any message (trailers-only responses).
const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The CORS layer for `origins`: `*` allows any origin; otherwise each entry is one exact
/// origin (`scheme://host[:port]`, a trailing `/` is ignored). An empty list gives no layer at
/// all: no CORS header on any response, so a browser lets only same-origin pages through, and
/// non-browser clients never notice. Credentials (cookies) are never allowed: the API does not
/// use them.
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.contains(&"*") {
        if origins.len() > 1 {
            return Err(
                "GRPC_WEB_ALLOWED_ORIGINS: `*` cannot be combined with other origins".into(),
            );
        }
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| parse_origin(o))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST])
            // Whatever the page asks to send: content-type, x-grpc-web, x-user-agent,
            // grpc-timeout and the caller's own metadata.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_origins_any_and_nothing() {
        assert!(cors_layer(&[]).unwrap().is_none());
        assert!(cors_layer(&origins(&[""])).unwrap().is_none());
        assert!(cors_layer(&origins(&["*"])).unwrap().is_some());
        let two = origins(&["http://localhost:5173", "https://ui.example.com/"]);
        assert!(cors_layer(&two).unwrap().is_some());
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for bad in [
            "localhost:5173",
            "ftp://example.com",
            "https://example.com/app",
            "https://example.com?x=1",
            "https://user@example.com",
            "http://",
            "not a url",
        ] {
            let err = cors_layer(&origins(&[bad])).expect_err(bad);
            assert!(err.contains("GRPC_WEB_ALLOWED_ORIGINS"), "{err}");
        }
        assert!(cors_layer(&origins(&["*", "https://example.com"])).is_err());
    }

    #[test]
    fn origins_compare_as_browsers_send_them() {
        assert_eq!(
            parse_origin("HTTPS://UI.Example.com/").unwrap(),
            "https://ui.example.com"
        );
    }
}
