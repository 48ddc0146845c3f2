//! What the console learns from the gateway before it signs in: `/console-config.json` (the
//! OpenID Connect issuer, client id and scopes, or none), and the Content-Security-Policy, whose
//! `connect-src` must let the browser reach the issuer's discovery document and token endpoint.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::config::OidcConfig;
use crate::{Body, CONTENT_SECURITY_POLICY};

/// The path the console fetches its configuration from.
pub const PATH: &str = "/console-config.json";

/// The console's configuration and the CSP that goes with it, prepared once.
pub struct ConsoleConfig {
    json: Bytes,
    csp: HeaderValue,
}

impl ConsoleConfig {
    /// Checks `oidc` (a client id is needed with an issuer) and prepares the answers.
    pub fn new(oidc: &OidcConfig) -> Result<Self, String> {
        let issuer = match (&oidc.console_oidc_issuer, &oidc.console_oidc_client_id) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err("CONSOLE_OIDC_CLIENT_ID is set without CONSOLE_OIDC_ISSUER".into());
            }
            (Some(_), None) => {
                return Err("CONSOLE_OIDC_ISSUER needs CONSOLE_OIDC_CLIENT_ID (the console's client id at the issuer)".into());
            }
            (Some(issuer), Some(client_id)) => {
                let issuer = crate::config::issuer_arg(issuer)?;
                if client_id.trim().is_empty() {
                    return Err("CONSOLE_OIDC_CLIENT_ID is empty".into());
                }
                Some((issuer, client_id.trim().to_string()))
            }
        };
        let (json, csp) = match issuer {
            None => (
                serde_json::json!({ "oidc": null }),
                CONTENT_SECURITY_POLICY.to_string(),
            ),
            Some((issuer, client_id)) => {
                let origin = origin(&issuer);
                let csp = CONTENT_SECURITY_POLICY.replace(
                    "connect-src 'self'",
                    &format!("connect-src 'self' {origin}"),
                );
                let json = serde_json::json!({ "oidc": {
                    "issuer": issuer,
                    "clientId": client_id,
                    "scopes": oidc.console_oidc_scopes.split_whitespace().collect::<Vec<_>>().join(" "),
                }});
                (json, csp)
            }
        };
        Ok(Self {
            json: Bytes::from(json.to_string()),
            csp: HeaderValue::from_str(&csp)
                .map_err(|_| format!("the CSP {csp:?} is not a header value"))?,
        })
    }

    /// The Content-Security-Policy of every response.
    pub fn csp(&self) -> HeaderValue {
        self.csp.clone()
    }

    /// `GET /console-config.json`: never cached, so a changed issuer is seen at the next load.
    pub fn response(&self) -> Response<Body> {
        let mut response = Response::new(crate::full(self.json.clone()));
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `scheme://host[:port]` of a URL checked by `issuer_arg`.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(issuer: Option<&str>, client: Option<&str>) -> OidcConfig {
        OidcConfig {
            console_oidc_issuer: issuer.map(Into::into),
            console_oidc_client_id: client.map(Into::into),
            console_oidc_scopes: "openid  read write".into(),
        }
    }

    #[test]
    fn without_an_issuer_the_csp_is_the_strict_one() {
        let c = ConsoleConfig::new(&oidc(None, None)).unwrap();
        assert_eq!(c.csp(), CONTENT_SECURITY_POLICY);
        assert_eq!(&c.json[..], br#"{"oidc":null}"#);
    }

    #[test]
    fn an_issuer_adds_its_origin_to_connect_src_only() {
        let c = ConsoleConfig::new(&oidc(
            Some("https://login.example.com/realms/main"),
            Some("console"),
        ))
        .unwrap();
        let csp = c.csp().to_str().unwrap().to_string();
        assert!(
            csp.contains("connect-src 'self' https://login.example.com;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        let json: serde_json::Value = serde_json::from_slice(&c.json).unwrap();
        assert_eq!(
            json["oidc"]["issuer"],
            "https://login.example.com/realms/main"
        );
        assert_eq!(json["oidc"]["clientId"], "console");
        assert_eq!(json["oidc"]["scopes"], "openid read write");
    }

    #[test]
    fn half_a_configuration_is_refused() {
        assert!(ConsoleConfig::new(&oidc(Some("https://x.example"), None)).is_err());
        assert!(ConsoleConfig::new(&oidc(None, Some("console"))).is_err());
        assert!(ConsoleConfig::new(&oidc(Some("http://x.example"), Some("c"))).is_err());
        assert_eq!(origin("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(origin("https://a.example/b/c"), "https://a.example");
    }
}
