//! The one typed configuration: every field is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::adapters::secrets::mask_secrets;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "temporal-state-server",
    version,
    about = "Immutable, versioned history of any entity, with time travel over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Copy the embedded store (DATA_DIR) to PATH, consistently, while a server may be writing
    /// to it; PATH must not exist. For PostgreSQL use pg_dump or PITR (deploy/README.md).
    Backup {
        /// Where the copy goes (a new file).
        path: PathBuf,
    },
    /// Run one retention pass now (RETENTION_DAYS must be set) and exit; a serving server runs
    /// them every RETENTION_INTERVAL_SECS.
    Retention,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/temporal_state.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where the gRPC server listens.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Where the admin HTTP server listens: `/metrics` (Prometheus text), `/healthz` (the process
    /// answers) and `/readyz` (the store answers and the server is not draining), for scrapers
    /// and load balancers that do not speak gRPC. Empty disables it. Not for the internet: it
    /// has no authentication.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9090", value_parser = admin_addr_arg)]
    pub admin_addr: String,

    /// Log lines on stdout: `text` for people, `json` (one object per line) for log collectors.
    /// RUST_LOG filters them (default `info`).
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// OpenTelemetry collector receiving traces over OTLP/gRPC, e.g. http://otel-collector:4317.
    /// Unset: no traces. One span per call, continuing the caller's W3C `traceparent`, with the
    /// spans of the store, Redis and NATS below it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// A snapshot is stored at every version that is a multiple of this; a past state then costs
    /// one snapshot plus fewer than this many events.
    #[arg(long, env = "SNAPSHOT_INTERVAL", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub snapshot_interval: i64,

    /// Most database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// Largest payload, metadata, schema or initial state, in bytes of JSON.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,

    /// Largest state a write may produce, in bytes of JSON: a JSON Patch that copies a value
    /// over and over is refused before it allocates, and no request holds much more than a few
    /// states of this size. Larger states would also not fit gRPC's 4 MiB default receive limit.
    #[arg(long, env = "MAX_STATE_BYTES", default_value_t = crate::domain::StateLimits::DEFAULT_MAX_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1 << 32))]
    pub max_state_bytes: usize,

    /// Deepest nesting of objects and arrays a state, payload or metadata may have (the root
    /// object is 1). At 32, every state crosses protobuf `Struct` (3 message levels per object)
    /// within the 100-level decode limit of prost and Python protobuf.
    #[arg(long, env = "MAX_STATE_DEPTH", default_value_t = crate::domain::StateLimits::DEFAULT_MAX_DEPTH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=32))]
    pub max_state_depth: usize,

    /// Most events in one ApplyEvents batch.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// Seconds to wait for a database connection before answering UNAVAILABLE.
    #[arg(long, env = "DB_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub db_connect_timeout_secs: u64,

    /// Redis URL for the current-state cache, e.g. redis://127.0.0.1:6379. Optional.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// How long a cached state lives in Redis, in seconds.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 3600)]
    pub cache_ttl_secs: u64,

    /// Longest wait for Redis before a read falls back to the database, in milliseconds.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,

    /// CA certificates (PEM) the certificate of a `rediss://` REDIS_URL must chain to. Unset:
    /// the system's root certificates.
    #[arg(long, env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// NATS URL for publishing every committed event to JetStream, e.g. nats://127.0.0.1:4222.
    /// Optional; needs DATABASE_URL (publication goes through the PostgreSQL outbox).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// CA certificates (PEM) the NATS server's certificate must chain to; with it, TLS is
    /// required (as with a `tls://` NATS_URL). Unset: the system's roots, for `tls://` URLs.
    #[arg(long, env = "NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,

    /// JetStream stream the events go to (created if missing).
    #[arg(long, env = "NATS_STREAM", default_value = "TEMPORAL_STATE_EVENTS")]
    pub nats_stream: String,

    /// Replicas of the stream when it is created.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,

    /// Retention of the stream when it is created: limits, interest or workqueue.
    #[arg(long, env = "NATS_STREAM_RETENTION", default_value = "limits", value_parser = ["limits", "interest", "workqueue"])]
    pub nats_stream_retention: String,

    /// JetStream's de-duplication window by Nats-Msg-Id, in seconds: re-sends after an outage
    /// shorter than this are dropped by the stream.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS", default_value_t = 600)]
    pub nats_duplicate_window_secs: u64,

    /// Times JetStream may refuse one outbox row before the relay moves it to the
    /// `outbox_dead_letters` table and goes on with the rest: a row the stream will never take
    /// must not hold up publication. Outages (timeouts, NATS down) do not count as attempts.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub outbox_max_attempts: u32,

    /// Events a Subscribe stream may fall behind before it is ended with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SUBSCRIBER_BUFFER", default_value_t = 1024)]
    pub subscriber_buffer: usize,

    /// TimescaleDB only: compress event chunks older than this many days (0 = never).
    #[arg(long, env = "TIMESCALE_COMPRESS_AFTER_DAYS", default_value_t = 30)]
    pub timescale_compress_after_days: u64,

    /// Keep this many days of history (0, the default: keep everything). Older history is
    /// dropped by a background pass, on PostgreSQL, TimescaleDB and the embedded store alike,
    /// but never what rebuilding a current state needs: each instance keeps its state at its last
    /// version recorded before the horizon (as a snapshot) and everything after. Time travel
    /// before the horizon then answers OUT_OF_RANGE; analytics say where their events begin.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=365_000))]
    pub retention_days: u64,

    /// Deprecated: the old name of RETENTION_DAYS, used when that is 0. It used to add a
    /// TimescaleDB policy that dropped chunks blindly; that policy is now removed at start.
    #[arg(long, env = "TIMESCALE_RETENTION_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=365_000))]
    pub timescale_retention_days: u64,

    /// Seconds between retention passes (with RETENTION_DAYS). Each pass works in bounded
    /// batches; with several replicas on one PostgreSQL, one of them works at a time.
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub retention_interval_secs: u64,

    /// Browser origins (`scheme://host[:port]`) that may call the API over gRPC-web from another
    /// origin, comma-separated, or `*` for any. Empty (the default) sends no CORS headers:
    /// gRPC-web still works from the same origin and from non-browser clients, and no web page
    /// elsewhere can make a browser write to this server.
    #[arg(
        long,
        env = "GRPC_WEB_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "",
        value_parser = origin_arg
    )]
    pub grpc_web_allowed_origins: Vec<String>,

    /// Longest any call may run, in seconds (a shorter client `grpc-timeout` wins); database
    /// statements and embedded-store reads are cut off at the same bound (DEADLINE_EXCEEDED too),
    /// so a slow call frees its connection instead of starving everyone else. Subscribe streams are exempt (they live as long as their client).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout_secs: u64,

    /// Most calls handled at once; one more is shed at once with UNAVAILABLE (safe to retry:
    /// nothing was done) instead of queueing without bound while memory and latency grow.
    /// Health checks are never shed; a Subscribe counts only while it starts.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,

    /// Largest response message, in bytes; a larger one ends the call with RESOURCE_EXHAUSTED
    /// instead of building it. Listings stop their page early to stay under it.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..=1024 * 1024 * 1024))]
    pub max_response_bytes: u64,

    /// Seconds between HTTP/2 pings the server sends on each connection (0 = none): a client
    /// that vanished without closing its connection (a crashed host, a dropped NAT entry) is
    /// noticed and its calls and subscriptions are ended.
    #[arg(long, env = "GRPC_KEEPALIVE_INTERVAL_SECS", default_value_t = 30)]
    pub grpc_keepalive_interval_secs: u64,

    /// Seconds a ping may go unanswered before the connection is closed.
    #[arg(long, env = "GRPC_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub grpc_keepalive_timeout_secs: u64,

    /// Seconds between SIGTERM and refusing new calls. Health turns NOT_SERVING at once (gRPC
    /// health and `/readyz`) while calls are still accepted, so load balancers and clients that
    /// watch health move away before the listener closes.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds the calls in flight, then the outbox relay's last flush, have once new calls are
    /// refused; past them the server exits anyway. Keep it at least REQUEST_TIMEOUT_SECS, which
    /// bounds every call. Subscribe streams are ended when refusal starts.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub shutdown_timeout_secs: u64,

    /// Directory of the embedded store, used when no DATABASE_URL is given.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Where the web console listens (the `web-gateway` library, in this process, forwarding to
    /// this server's own gRPC address), so that one command brings up the engine and its console.
    /// Empty: no console (run `temporal-state-gateway` in front of the engines instead).
    #[arg(long, env = "CONSOLE_ADDR", default_value = "127.0.0.1:8080", value_parser = console_addr_arg)]
    pub console_addr: String,

    /// OpenID Connect sign-in for that console (CONSOLE_OIDC_ISSUER, CONSOLE_OIDC_CLIENT_ID,
    /// CONSOLE_OIDC_SCOPES); unset: API keys only.
    #[command(flatten)]
    pub console_oidc: temporal_state_gateway::config::OidcConfig,

    /// API keys: a JSON file `[{"name": "...", "sha256": "<hex of the key>", "scopes":
    /// ["read", "write:orders", ...]}]`, re-read when it changes. Setting it (or a JWT source)
    /// turns authentication on: every call but health needs `authorization: Bearer <token>`.
    #[arg(long, env = "AUTH_API_KEYS_FILE")]
    pub auth_api_keys_file: Option<PathBuf>,

    /// JWT verification key: an RSA or EC public key in PEM (RS256/384/512, ES256/384), or a file
    /// holding an HS256 secret of at least 32 bytes.
    #[arg(long, env = "AUTH_JWT_KEY_FILE")]
    pub auth_jwt_key_file: Option<PathBuf>,

    /// JWKS URL of the JWT issuer: fetched on first use, cached, fetched again for an unknown key
    /// id (rotation without restart) and every 5 minutes.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// The `iss` every JWT must carry. Unset: not checked.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// The `aud` every JWT must carry. Unset: not checked.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// Clock skew allowed when checking a JWT's `exp` and `nbf`, in seconds.
    #[arg(long, env = "AUTH_JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub auth_jwt_leeway_secs: u64,

    /// With authentication on, reflection needs credentials too (by default it is public, so
    /// grpcurl can list the API before a token is at hand).
    #[arg(long, env = "AUTH_REFLECTION_REQUIRES_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auth_reflection_requires_auth: bool,

    /// Serve without authentication on an address other than loopback. Without this, such a
    /// server refuses to start when no AUTH_API_KEYS_FILE, AUTH_JWT_KEY_FILE or AUTH_JWKS_URL
    /// is set: anyone who can reach the port could write permanent history.
    #[arg(long, env = "INSECURE_NO_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub insecure_no_auth: bool,

    /// Calls per second each caller may make on average (0, the default: no limit). The caller
    /// is the API key or the JWT subject; without authentication, the peer's IP address. A call
    /// over the limit is answered RESOURCE_EXHAUSTED with a RetryInfo saying when to retry.
    /// Health is never limited.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 0.0, value_parser = rate_arg)]
    pub rate_limit_per_second: f64,

    /// Calls a caller may make at once after being idle: the size of its token bucket. Unset:
    /// one second's worth (RATE_LIMIT_PER_SECOND, at least 1).
    #[arg(long, env = "RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..=1_000_000_000))]
    pub rate_limit_burst: Option<u32>,

    /// The server's certificate chain in PEM: with TLS_KEY_FILE, the server speaks TLS only.
    /// Both files are re-read when they change (rotation without restart).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of TLS_CERT_FILE, in PEM.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificates in PEM: with it, every client must present a certificate they signed
    /// (mutual TLS). Needs TLS_CERT_FILE and TLS_KEY_FILE.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl Config {
    /// The admin server's address; None when ADMIN_ADDR is empty.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        admin_addr_arg(&self.admin_addr)
            .ok()
            .and_then(|a| a.parse().ok())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The interval of the server's HTTP/2 keepalive pings, if any.
    pub fn grpc_keepalive_interval(&self) -> Option<Duration> {
        (self.grpc_keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(self.grpc_keepalive_interval_secs))
    }

    pub fn grpc_keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.grpc_keepalive_timeout_secs)
    }

    /// Largest response message, in bytes.
    pub fn max_response_bytes(&self) -> usize {
        usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX)
    }

    pub fn db_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.db_connect_timeout_secs.max(1))
    }

    /// Largest gRPC message accepted: a full batch of maximal payloads, plus room for framing.
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload_bytes
            .saturating_mul(2)
            .saturating_add(4 * 1024 * 1024)
    }

    pub fn timescale(&self) -> crate::adapters::postgres::TimescaleSettings {
        let days = |d: u64| (d > 0).then(|| Duration::from_secs(d * 86_400));
        crate::adapters::postgres::TimescaleSettings {
            compress_after: days(self.timescale_compress_after_days),
        }
    }

    /// How much history to keep (RETENTION_DAYS, or its deprecated alias); None keeps it all.
    pub fn retention(&self) -> Option<chrono::Duration> {
        let days = if self.retention_days > 0 {
            self.retention_days
        } else {
            self.timescale_retention_days
        };
        (days > 0).then(|| chrono::Duration::days(days as i64))
    }

    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs)
    }

    pub fn nats(&self) -> crate::adapters::nats::NatsConfig {
        crate::adapters::nats::NatsConfig {
            url: self.nats_url.clone().unwrap_or_default(),
            stream: self.nats_stream.clone(),
            replicas: self.nats_stream_replicas,
            retention: self.nats_stream_retention.clone(),
            duplicate_window: Duration::from_secs(self.nats_duplicate_window_secs.max(1)),
            subscriber_buffer: self.subscriber_buffer,
            max_attempts: self.outbox_max_attempts,
        }
    }

    /// The console's address, or `None` when CONSOLE_ADDR is empty.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        console_addr_arg(&self.console_addr)
            .ok()
            .and_then(|a| a.parse().ok())
    }

    /// Where credentials come from; authentication is on when any source is set.
    pub fn auth(&self) -> crate::adapters::auth::AuthSettings {
        crate::adapters::auth::AuthSettings {
            api_keys_file: self.auth_api_keys_file.clone(),
            jwt: crate::adapters::auth::JwtSettings {
                key_file: self.auth_jwt_key_file.clone(),
                jwks_url: self.auth_jwks_url.clone(),
                issuer: self.auth_jwt_issuer.clone(),
                audience: self.auth_jwt_audience.clone(),
                leeway: Duration::from_secs(self.auth_jwt_leeway_secs),
            },
        }
    }

    /// The per-caller rate limit, when one is set.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        (self.rate_limit_per_second > 0.0).then(|| RateLimit {
            per_second: self.rate_limit_per_second,
            burst: self
                .rate_limit_burst
                .unwrap_or_else(|| self.rate_limit_per_second.ceil().clamp(1.0, 1e9) as u32),
        })
    }

    /// The server's TLS files, when TLS is on.
    pub fn tls(&self) -> Option<crate::adapters::tls::TlsSettings> {
        Some(crate::adapters::tls::TlsSettings {
            cert_file: self.tls_cert_file.clone()?,
            key_file: self.tls_key_file.clone()?,
            client_ca_file: self.tls_client_ca_file.clone(),
        })
    }

    /// Whether any credential source is configured.
    pub fn auth_configured(&self) -> bool {
        self.auth_api_keys_file.is_some()
            || self.auth_jwt_key_file.is_some()
            || self.auth_jwks_url.is_some()
    }

    /// This configuration with every URL's secrets masked, for the log line the binary writes at
    /// start. Its `Debug` then shows every setting, so a field added later is logged too, and
    /// only URLs can carry a secret here: the keys themselves are read from files.
    pub fn masked(&self) -> Config {
        let mask = |url: &Option<String>| url.as_deref().map(mask_secrets);
        let mut masked = self.clone();
        masked.database_url = mask(&self.database_url);
        masked.redis_url = mask(&self.redis_url);
        masked.nats_url = mask(&self.nats_url);
        masked.auth_jwks_url = mask(&self.auth_jwks_url);
        masked.otel_exporter_otlp_endpoint = mask(&self.otel_exporter_otlp_endpoint);
        masked
    }
}

/// A per-caller rate limit: `per_second` calls on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// A rate in calls per second: 0 (no limit) or a finite positive number.
fn rate_arg(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number of calls per second"))?;
    if !rate.is_finite() || !(0.0..=1e9).contains(&rate) {
        return Err(format!(
            "`{value}`: the rate must be between 0 (no limit) and 1e9 calls per second"
        ));
    }
    Ok(rate)
}

/// The command-line parser of CONSOLE_ADDR: empty, or an address to listen on.
pub fn console_addr_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
        return Err(format!(
            "CONSOLE_ADDR: {value:?} is not an address (expected host:port, e.g. 127.0.0.1:8080, or empty for no console)"
        ));
    }
    Ok(value.to_string())
}

/// The command-line parser of ADMIN_ADDR: empty, or a socket address.
pub fn admin_addr_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() {
        value.parse::<SocketAddr>().map_err(|e| {
            format!(
                "ADMIN_ADDR: {value:?} is not host:port ({e}); e.g. 127.0.0.1:9090, or empty to disable"
            )
        })?;
    }
    Ok(value.to_string())
}

/// The command-line parser of one GRPC_WEB_ALLOWED_ORIGINS entry (`*`, nothing, or an origin),
/// so that a malformed origin stops the server before it opens any store.
pub fn origin_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() && value != "*" {
        parse_origin(value)?;
    }
    Ok(value.to_string())
}

/// One origin as a browser sends it in the Origin header: `http` or `https`, a host, an
/// optional port, nothing else.
pub(crate) fn parse_origin(origin: &str) -> Result<http::HeaderValue, String> {
    let bad = |why: &str| {
        Err(format!(
            "GRPC_WEB_ALLOWED_ORIGINS: {origin:?} is not an origin ({why}); \
             expected scheme://host[:port], e.g. http://localhost:5173, or `*`"
        ))
    };
    let trimmed = origin.strip_suffix('/').unwrap_or(origin);
    let Ok(uri) = trimmed.parse::<http::Uri>() else {
        return bad("not a URL");
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return bad("the scheme must be http or https"),
    }
    let Some(authority) = uri.authority() else {
        return bad("no host");
    };
    if authority.as_str().contains('@') {
        return bad("user info is not part of an origin");
    }
    if uri
        .path_and_query()
        .is_some_and(|p| !p.as_str().is_empty() && p.as_str() != "/")
    {
        return bad("an origin has no path or query");
    }
    http::HeaderValue::from_str(&trimmed.to_ascii_lowercase())
        .or_else(|_| bad("invalid characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_configuration_shows_every_setting_but_no_secret() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "temporal-state-server",
            "--database-url",
            "postgres://app:pg-secret-1@db:5432/tse",
            "--redis-url",
            "redis://:redis-secret-2@cache:6379",
            "--nats-url",
            "nats://relay:nats-secret-3@bus:4222,nats://bus2:4222",
            "--auth-jwks-url",
            "https://issuer.example/jwks?token=jwks-secret-4",
            "--otel-exporter-otlp-endpoint",
            "http://otel:otel-secret-5@collector:4317",
            "--max-state-depth",
            "17",
        ])
        .unwrap();
        let logged = format!("{:?}", cli.config.masked());
        for secret in [
            "pg-secret-1",
            "redis-secret-2",
            "nats-secret-3",
            "jwks-secret-4",
            "otel-secret-5",
        ] {
            assert!(!logged.contains(secret), "{secret} in {logged}");
        }
        for shown in [
            "db:5432/tse",
            "cache:6379",
            "bus2:4222",
            "max_state_depth: 17",
        ] {
            assert!(logged.contains(shown), "{shown} missing from {logged}");
        }
    }

    #[test]
    fn a_bad_origin_is_refused_when_the_command_line_is_parsed() {
        use clap::Parser;
        let parse = |value: &str| {
            Cli::try_parse_from(["temporal-state-server", "--grpc-web-allowed-origins", value])
        };
        let cli = parse("http://localhost:5173, https://ui.example.com").unwrap();
        assert_eq!(
            cli.config.grpc_web_allowed_origins,
            ["http://localhost:5173", "https://ui.example.com"]
        );
        assert!(parse("*").is_ok());
        let err = parse("http://localhost:5173,localhost:8080").unwrap_err();
        assert!(err.to_string().contains("not an origin"), "{err}");
    }

    #[test]
    fn the_console_address_is_an_address_or_empty() {
        use clap::Parser;
        let parse = |value: &str| {
            Cli::try_parse_from(["temporal-state-server", "--console-addr", value])
                .map(|cli| cli.config.console_addr())
        };
        assert_eq!(
            parse("127.0.0.1:9000").unwrap(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(parse("").unwrap(), None);
        let err = parse("localhost").unwrap_err();
        assert!(err.to_string().contains("CONSOLE_ADDR"), "{err}");
    }
}
