//! The gateway's typed configuration: every field is a flag and an environment variable. The
//! server crate builds one in code ([`GatewayConfig::new`]) to serve the console next to itself.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use http::Uri;

/// Default largest request body: 4 MiB, gRPC's own default receive limit.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Default longest call, the engine's own default (REQUEST_TIMEOUT_SECS).
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default longest wait for a TCP connection to an engine.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default time between two health checks of each engine.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Engine to forward gRPC-web calls to (`http://host:port` or `host:port`; gRPC-web over plain HTTP),
    /// repeatable; calls are spread over those whose gRPC health check answers SERVING. In the
    /// environment: comma-separated.
    #[arg(
        long = "upstream",
        env = "GATEWAY_UPSTREAMS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051",
        value_parser = upstream_arg
    )]
    pub upstreams: Vec<Uri>,

    /// Serve the console from this folder (a `vite build` output) instead of the copy built into
    /// the gateway; read once at start.
    #[arg(long, env = "GATEWAY_ASSETS")]
    pub assets: Option<PathBuf>,

    /// Largest request body, in bytes: a larger gRPC-web call is answered RESOURCE_EXHAUSTED (and
    /// any other request 413) before it reaches an engine.
    #[arg(long, env = "GATEWAY_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 30))]
    pub max_request_bytes: usize,

    /// Longest call, in seconds; a shorter `grpc-timeout` from the client wins, and the engine is
    /// told the deadline. Subscribe streams have no total limit unless the client sets one.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout_secs: u64,

    /// Longest wait for a connection to an engine, in milliseconds; an engine that does not
    /// connect is taken out of rotation at once and the call goes to another.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_CONNECT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub connect_timeout_ms: u64,

    /// Time between two gRPC health checks of each engine, in milliseconds: how soon an engine
    /// that came back is used again.
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL_MS", default_value_t = DEFAULT_HEALTH_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub health_interval_ms: u64,

    #[command(flatten)]
    pub oidc: OidcConfig,
}

/// OpenID Connect sign-in for the console. Unset: the console signs in with API keys only. The
/// browser runs the authorization code flow with PKCE itself (a public client, no secret) and
/// sends the access token to the engine, which checks it (AUTH_JWKS_URL of the same issuer).
/// The same flags configure the console the server serves on CONSOLE_ADDR.
#[derive(Debug, Clone, Default, Args)]
pub struct OidcConfig {
    /// The issuer (`https://login.example.com/realms/main`): its discovery document is
    /// `<issuer>/.well-known/openid-configuration`, and its origin is added to the console's CSP
    /// `connect-src` (the token endpoint must live on that origin). `http://` only on loopback.
    #[arg(long, env = "CONSOLE_OIDC_ISSUER", value_parser = issuer_arg)]
    pub console_oidc_issuer: Option<String>,

    /// The console's client id at the issuer (a public client, redirect URI
    /// `<console origin>/auth/callback`). Required with CONSOLE_OIDC_ISSUER.
    #[arg(long, env = "CONSOLE_OIDC_CLIENT_ID")]
    pub console_oidc_client_id: Option<String>,

    /// The scopes the console asks for, space-separated. The engine reads `read`, `write`,
    /// `admin` (and `write:orders`...) from the access token's `scope` or `scp` claim.
    #[arg(long, env = "CONSOLE_OIDC_SCOPES", default_value = "openid profile")]
    pub console_oidc_scopes: String,
}

/// One `--console-oidc-issuer`: an `https://` URL (or `http://` on a loopback host) without
/// query or fragment, returned without a trailing slash.
pub fn issuer_arg(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    let bad = |why: &str| {
        Err(format!(
            "OIDC issuer {value:?}: {why}; expected https://host[/path], e.g. https://login.example.com/realms/main"
        ))
    };
    let Ok(uri) = value.parse::<Uri>() else {
        return bad("not a URL");
    };
    let Some(host) = uri.host() else {
        return bad("no host");
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if matches!(host, "localhost" | "127.0.0.1" | "[::1]") => {}
        Some("http") => return bad("plain http is allowed on a loopback host only"),
        _ => return bad("the scheme must be https"),
    }
    if uri.query().is_some() || value.contains('#') {
        return bad("an issuer has no query or fragment");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return bad("user info is not supported");
    }
    Ok(value.to_string())
}

impl GatewayConfig {
    /// The defaults, forwarding to `upstreams`.
    pub fn new(upstreams: Vec<Uri>) -> Self {
        Self {
            upstreams,
            assets: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            health_interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            oidc: OidcConfig {
                console_oidc_scopes: "openid profile".into(),
                ..OidcConfig::default()
            },
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
}

/// One `--upstream`: `http://host:port` or `host:port`, as `http://host:port` (no path). TLS is
/// refused rather than silently spoken in clear: the gateway reaches engines on a private network.
pub fn upstream_arg(value: &str) -> Result<Uri, String> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let bad = |why: &str| {
        Err(format!(
            "upstream {value:?}: {why}; expected http://host:port, e.g. http://127.0.0.1:50051"
        ))
    };
    let Ok(uri) = with_scheme.parse::<Uri>() else {
        return bad("not a URL");
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return bad("TLS to the engine is not supported"),
        _ => return bad("the scheme must be http"),
    }
    let Some(authority) = uri.authority() else {
        return bad("no host");
    };
    if authority.port_u16().is_none() {
        return bad("no port");
    }
    if authority.as_str().contains('@') {
        return bad("user info is not supported");
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return bad("an upstream has no path");
    }
    Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .or_else(|_| bad("not a URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_normalised_or_refused() {
        assert_eq!(
            upstream_arg("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051/"
        );
        assert_eq!(
            upstream_arg(" http://engine-1:7000/ ").unwrap(),
            "http://engine-1:7000/"
        );
        for bad in [
            "https://engine:443",
            "engine",
            "ftp://engine:21",
            "http://engine:1/x",
            "http://u:p@engine:1",
            "",
        ] {
            assert!(upstream_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issuers_are_https_or_loopback_http() {
        assert_eq!(
            issuer_arg("https://login.example.com/realms/main/").unwrap(),
            "https://login.example.com/realms/main"
        );
        assert_eq!(
            issuer_arg("http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        for bad in [
            "http://login.example.com",
            "login.example.com",
            "https://login.example.com/?x=1",
            "https://u:p@login.example.com",
            "ftp://x",
            "",
        ] {
            assert!(issuer_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_form_is_comma_separated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: GatewayConfig,
        }
        let cli = Cli::try_parse_from([
            "gw",
            "--upstream",
            "127.0.0.1:1,127.0.0.1:2",
            "--upstream",
            "http://127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!(cli.config.upstreams.len(), 3);
        let cli = Cli::try_parse_from(["gw"]).unwrap();
        assert_eq!(cli.config.upstreams, ["http://127.0.0.1:50051/"]);
        assert!(Cli::try_parse_from(["gw", "--upstream", "https://x:1"]).is_err());
    }
}
