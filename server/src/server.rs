//! Wiring: builds the adapters and the application from a [`Config`] and serves every gRPC
//! service, plus health and reflection, on a listener the caller provides; and the admin HTTP
//! server (`admin.rs`: metrics, liveness, readiness) on ADMIN_ADDR.

mod admin;
pub mod telemetry;

pub use admin::Sampler;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use temporal_state_proto::v1::analytics_service_server::AnalyticsServiceServer;
use temporal_state_proto::v1::auth_service_server::AuthServiceServer;
use temporal_state_proto::v1::entity_type_service_server::EntityTypeServiceServer;
use temporal_state_proto::v1::event_service_server::EventServiceServer;
use temporal_state_proto::v1::instance_service_server::InstanceServiceServer;
use temporal_state_proto::v1::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::adapters::memory::{LocalBus, MemoryCache};
use crate::adapters::nats;
use crate::adapters::postgres::{PgError, PgOutbox, PgStore, PgStoreConfig};
use crate::adapters::redis::{RedisCache, RedisCacheConfig};
use crate::app::{App, Limits, Ports, Retention, RetentionBatch, RetentionReport};
use crate::config::Config;
use crate::grpc::{AnalyticsApi, AuthApi, EntityTypeApi, EventApi, InstanceApi, QueryApi};
use crate::ports::{EventBus, EventStore, StateCache};

/// How often the health of the backends is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] PgError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("retention: {0}")]
    Retention(#[from] crate::app::AppError),
}

/// The backends the application runs on, and the background work they need.
pub struct Backends {
    pub app: App,
    /// The write side, pinged for the health status.
    pub store: Arc<dyn EventStore>,
    /// Outbox relay and cache repair; aborted when serving stops.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Refreshes the sampled gauges (pool, outbox) before each scrape of `/metrics`.
    pub sample: Sampler,
    /// The outbox relay, when events go to NATS: stopped after the last call, so that it
    /// publishes what those calls committed before the process exits.
    pub relay: Option<Relay>,
}

/// The running outbox relay and its stop signal.
pub struct Relay {
    pub task: tokio::task::JoinHandle<()>,
    pub stop: tokio::sync::watch::Sender<bool>,
}

fn pool_gauges(status: crate::adapters::PoolStatus) {
    use crate::app::metrics::{DB_POOL_IN_USE, DB_POOL_SIZE, DB_POOL_WAITING};
    metrics::gauge!(DB_POOL_SIZE).set(status.size as f64);
    metrics::gauge!(DB_POOL_IN_USE).set(status.in_use as f64);
    metrics::gauge!(DB_POOL_WAITING).set(status.waiting as f64);
}

async fn outbox_gauges(outbox: &dyn crate::ports::Outbox) {
    use crate::app::metrics::{OUTBOX_OLDEST_AGE, OUTBOX_ROWS};
    match outbox.backlog().await {
        Ok(backlog) => {
            let age = backlog.oldest_recorded_at.map_or(0.0, |at| {
                (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics::gauge!(OUTBOX_ROWS).set(backlog.rows as f64);
            metrics::gauge!(OUTBOX_OLDEST_AGE).set(age);
        }
        // The previous values stay; the store's own health shows the outage.
        Err(e) => tracing::debug!(error = %e, "outbox backlog not sampled"),
    }
}

/// Events a subscriber of the in-process bus may fall behind.
pub const DEFAULT_BUS_BUFFER: usize = 4096;

/// The bus used when no NATS carries events: subscribers hear commits of this process only.
fn local_bus() -> Arc<dyn EventBus> {
    Arc::new(LocalBus::new(DEFAULT_BUS_BUFFER))
}

/// A backend at `url` (the value of `variable`) could not be used: the error names the variable
/// and the URL with its secrets masked, and the library's message with them redacted, since it
/// may quote the URL.
fn unusable_url(variable: &str, url: &str, error: impl std::fmt::Display) -> ServeError {
    ServeError::Config(format!(
        "{variable} {}: {}",
        crate::adapters::secrets::mask_secrets(url),
        crate::adapters::secrets::redact(&error.to_string(), url)
    ))
}

/// How often cache entries whose write failed are re-written.
const CACHE_REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// Connects the backends named by the config and applies migrations: PostgreSQL when a
/// DATABASE_URL is given, otherwise the embedded SQLite store under DATA_DIR. Redis (REDIS_URL)
/// caches current states and NATS (NATS_URL) carries events, each optional.
pub async fn build(config: &Config) -> Result<Backends, ServeError> {
    let mut limits = Limits {
        max_payload_bytes: config.max_payload_bytes,
        state: crate::domain::StateLimits {
            max_bytes: config.max_state_bytes,
            max_depth: config.max_state_depth,
        },
        max_batch_events: config.max_batch_events,
        subscriber_buffer: config.subscriber_buffer,
        max_event_bytes: None,
        // Pages stop at the customary 4 MiB that clients accept by default, or sooner when the
        // server's response cap is set lower.
        max_response_bytes: config
            .max_response_bytes()
            .min(crate::app::DEFAULT_MAX_RESPONSE_BYTES),
    };
    let mut tasks = Vec::new();
    let mut relay = None;
    let retention: Retention;
    let sample: Sampler;
    let mut ports = match &config.database_url {
        Some(url) => {
            let store = PgStore::with_statement_timeout(
                &PgStoreConfig {
                    url: url.clone(),
                    pool_size: config.pool_size as usize,
                    snapshot_interval: config.snapshot_interval,
                    connect_timeout: config.db_connect_timeout(),
                },
                // Started just after the call, a statement ends just after the call's deadline
                // (both answer DEADLINE_EXCEEDED), freeing its connection for the next caller.
                Some(config.request_timeout()),
            )?
            .with_timescale(config.timescale())
            .with_outbox(config.nats_url.is_some());
            let applied = store.migrate().await?;
            info!(?applied, "database schema up to date");
            let nats_client = match &config.nats_url {
                Some(nats_url) => {
                    let client = nats::connect(nats_url, config.nats_tls_ca_file.as_deref())
                        .await
                        .map_err(|e| unusable_url("NATS_URL", nats_url, e))?;
                    // An event whose message NATS would refuse must be refused before it is
                    // stored, or it would wait in the outbox forever.
                    let max_payload = nats::server_max_payload(&client).await;
                    let max_event = nats::max_event_bytes(max_payload);
                    limits.max_event_bytes = Some(max_event);
                    info!(
                        max_payload,
                        max_event_bytes = max_event,
                        "events are limited to what one nats message can carry"
                    );
                    if max_event < config.max_payload_bytes {
                        warn!(
                            max_payload_bytes = config.max_payload_bytes,
                            max_event_bytes = max_event,
                            "MAX_PAYLOAD_BYTES exceeds what the NATS server's max_payload allows: \
                             an event's payload and metadata are refused past max_event_bytes"
                        );
                    }
                    Some(client)
                }
                None => None,
            };
            let outbox: Option<Arc<dyn crate::ports::Outbox>> = nats_client
                .is_some()
                .then(|| Arc::new(PgOutbox::new(store.clone())) as _);
            sample = {
                let store = store.clone();
                let outbox = outbox.clone();
                Arc::new(move || {
                    pool_gauges(store.pool_status());
                    let outbox = outbox.clone();
                    Box::pin(async move {
                        if let Some(outbox) = outbox {
                            outbox_gauges(outbox.as_ref()).await;
                        }
                    })
                })
            };
            let bus: Arc<dyn EventBus> = match (nats_client, outbox) {
                (Some(client), Some(outbox)) => {
                    let wake = Arc::new(tokio::sync::Notify::new());
                    let (stop, stopped) = tokio::sync::watch::channel(false);
                    let task = tokio::spawn(nats::relay::run(
                        client.clone(),
                        config.nats(),
                        outbox,
                        wake.clone(),
                        stopped,
                    ));
                    relay = Some(Relay { task, stop });
                    info!(stream = %config.nats_stream, "publishing events to nats jetstream through the outbox");
                    Arc::new(nats::NatsBus::new(client, wake, config.subscriber_buffer))
                }
                _ => local_bus(),
            };
            let store = Arc::new(store);
            retention = Retention::new(store.clone(), store.clone());
            Ports {
                store: store.clone(),
                catalog: store.clone(),
                history: store.clone(),
                analytics: Some(store),
                state_cache: None,
                bus,
            }
        }
        None => {
            use crate::adapters::embedded::EmbeddedStore;
            if config.nats_url.is_some() {
                warn!(
                    "NATS_URL is ignored without DATABASE_URL: the embedded store publishes in-process"
                );
            }
            let dir = config.data_dir.clone();
            let interval = config.snapshot_interval;
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir, interval))
                .await
                .map_err(|e| ServeError::Config(format!("opening the embedded store: {e}")))?
                .map_err(|e| ServeError::Config(format!("embedded store: {e}")))?;
            info!(
                path = %store.path().display(),
                applied = ?store.applied_migrations(),
                "no DATABASE_URL: using the embedded store"
            );
            let store = Arc::new(store.with_read_timeout(config.request_timeout()));
            retention = Retention::new(store.clone(), store.clone());
            sample = {
                let store = store.clone();
                Arc::new(move || {
                    pool_gauges(store.pool_status());
                    Box::pin(async {})
                })
            };
            Ports {
                store: store.clone(),
                catalog: store.clone(),
                history: store.clone(),
                analytics: Some(store),
                // Without Redis, current states are cached in memory (one process owns the
                // embedded store, so no other writer can make them stale).
                state_cache: config
                    .redis_url
                    .is_none()
                    .then(|| Arc::new(MemoryCache::default()) as Arc<dyn StateCache>),
                bus: local_bus(),
            }
        }
    };
    if let Some(redis_url) = &config.redis_url {
        let cache = RedisCache::connect(&RedisCacheConfig {
            url: redis_url.clone(),
            ttl: Duration::from_secs(config.cache_ttl_secs),
            command_timeout: Duration::from_millis(config.redis_timeout_ms),
            tls_ca_file: config.redis_tls_ca_file.clone(),
        })
        .await
        .map_err(|e| unusable_url("REDIS_URL", redis_url, e))?;
        ports.state_cache = Some(Arc::new(cache));
    }
    if let Some(keep) = config.retention() {
        if config.retention_days == 0 {
            warn!("TIMESCALE_RETENTION_DAYS is deprecated: set RETENTION_DAYS instead");
        }
        let every = config.retention_interval();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = retention
                    .run(chrono::Utc::now() - keep, RetentionBatch::default())
                    .await
                {
                    warn!(error = %e, "retention pass failed; the next one tries again");
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    let store = ports.store.clone();
    let app = App::new(ports, limits);
    if config.redis_url.is_some() {
        let repairing = app.current.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(CACHE_REPAIR_INTERVAL).await;
                repairing.repair().await;
            }
        }));
    }
    Ok(Backends {
        app,
        store,
        tasks,
        sample,
        relay,
    })
}

/// One retention pass now on the store the config names, as the serving server runs them
/// (`temporal-state-server retention`): RETENTION_DAYS must be set.
pub async fn run_retention(config: &Config) -> Result<RetentionReport, ServeError> {
    let keep = config
        .retention()
        .ok_or_else(|| ServeError::Config("RETENTION_DAYS is not set: nothing to drop".into()))?;
    let retention = match &config.database_url {
        Some(url) => {
            let store = PgStore::new(&PgStoreConfig {
                url: url.clone(),
                pool_size: 1,
                snapshot_interval: config.snapshot_interval,
                connect_timeout: config.db_connect_timeout(),
            })?
            .with_timescale(config.timescale());
            store.migrate().await?;
            let store = Arc::new(store);
            Retention::new(store.clone(), store)
        }
        None => {
            let dir = config.data_dir.clone();
            let interval = config.snapshot_interval;
            let store = tokio::task::spawn_blocking(move || {
                crate::adapters::embedded::EmbeddedStore::open(&dir, interval)
            })
            .await
            .map_err(|e| ServeError::Config(format!("opening the embedded store: {e}")))?
            .map_err(|e| ServeError::Config(format!("embedded store: {e}")))?;
            let store = Arc::new(store);
            Retention::new(store.clone(), store)
        }
    };
    Ok(retention
        .run(chrono::Utc::now() - keep, RetentionBatch::default())
        .await?)
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in [
        <EntityTypeServiceServer<EntityTypeApi> as NamedService>::NAME,
        <InstanceServiceServer<InstanceApi> as NamedService>::NAME,
        <EventServiceServer<EventApi> as NamedService>::NAME,
        <QueryServiceServer<QueryApi> as NamedService>::NAME,
        <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
        <AuthServiceServer<AuthApi> as NamedService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Reports every service NOT_SERVING while the store does not answer; `ready` follows (for the
/// admin port's `/readyz`).
async fn watch_health(
    reporter: HealthReporter,
    store: Arc<dyn EventStore>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let mut last = None;
    loop {
        let status = match store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(error = %e, "store unreachable, reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            set_all(&reporter, status).await;
            ready.send_replace(status == ServingStatus::Serving);
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// Serves every service on `listener` until `shutdown` completes, and the admin endpoints on
/// ADMIN_ADDR when it is set.
pub async fn serve(
    config: &Config,
    backends: Backends,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let admin = bind_admin(config).await?;
    serve_all(config, backends, listener, admin, None, shutdown).await
}

/// The admin listener on ADMIN_ADDR, unless it is empty.
async fn bind_admin(config: &Config) -> Result<Option<TcpListener>, ServeError> {
    match config.admin_addr() {
        Some(addr) => Ok(Some(TcpListener::bind(addr).await.map_err(|e| {
            ServeError::Config(format!("ADMIN_ADDR {addr}: cannot listen: {e}"))
        })?)),
        None => Ok(None),
    }
}

/// [`serve`] with the admin endpoints on a listener the caller bound (tests bind
/// `127.0.0.1:0`), or none; ADMIN_ADDR is not read.
pub async fn serve_with_admin(
    config: &Config,
    backends: Backends,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_all(config, backends, listener, admin, None, shutdown).await
}

/// [`serve_with_admin`], handing the service stack to an in-process console through `console`
/// once it serves, and taking it back when new calls are refused.
async fn serve_all(
    config: &Config,
    backends: Backends,
    listener: TcpListener,
    admin: Option<TcpListener>,
    console: Option<temporal_state_gateway::EngineSlot>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Backends {
        app,
        store,
        tasks,
        sample,
        relay,
    } = backends;
    // Before anything is spawned: a refused exposure leaves nothing running.
    refuse_open_exposure(config, &listener)?;
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    let ready = Arc::new(ready);
    let admin_task = admin.map(|listener| {
        info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "serving admin http: /metrics, /healthz, /readyz"
        );
        tokio::spawn(admin::serve(listener, sample, ready_rx))
    });
    let authenticator =
        crate::adapters::auth::Authenticator::new(&config.auth()).map_err(ServeError::Config)?;
    match &authenticator {
        Some(_) => info!(
            reflection_requires_auth = config.auth_reflection_requires_auth,
            "authentication on: every call but health needs a bearer token"
        ),
        None => warn!("authentication off: every caller may do everything"),
    }
    let auth = crate::grpc::auth::AuthLayer::new(
        authenticator,
        config.auth_reflection_requires_auth,
        config
            .rate_limit()
            .map(crate::grpc::rate_limit::RateLimiter::new),
    );
    let cors = crate::grpc::web::cors_layer(&config.grpc_web_allowed_origins)
        .map_err(ServeError::Config)?;
    let max = config.max_message_bytes();
    // Subscribe streams never end by themselves: they are ended when new calls are refused, so
    // that the graceful shutdown that waits for open calls can finish.
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;
    let health_task = tokio::spawn(watch_health(reporter.clone(), store, ready.clone()));
    // The drain. On the signal: NOT_SERVING at once, calls still accepted for the grace period;
    // then the listener closes, open connections get GOAWAY (new calls on them are refused,
    // safe to retry elsewhere), Subscribe streams end, and calls in flight have
    // SHUTDOWN_TIMEOUT_SECS from then, the relay's last flush included.
    let (grace, drain_timeout) = (config.shutdown_grace(), config.shutdown_timeout());
    let (refusing, mut refused_since) = tokio::sync::watch::channel(None);
    let health_abort = health_task.abort_handle();
    let console_slot = console.clone();
    let shutdown = async move {
        shutdown.await;
        health_abort.abort();
        set_all(&reporter, ServingStatus::NotServing).await;
        ready.send_replace(false);
        info!(
            grace_secs = grace.as_secs(),
            "draining: health NOT_SERVING; new calls accepted for SHUTDOWN_GRACE_SECS"
        );
        tokio::time::sleep(grace).await;
        info!(
            timeout_secs = drain_timeout.as_secs(),
            "refusing new calls: ending Subscribe streams, finishing calls in flight"
        );
        let _ = stop_streams.send(true);
        if let Some(slot) = &console_slot {
            // The console refuses new calls with the listener, as a remote gateway would find.
            slot.close();
        }
        refusing.send_replace(Some(tokio::time::Instant::now()));
    };

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(temporal_state_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can print the BadRequest field violations.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(temporal_state_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving gRPC");
    let guard = crate::grpc::guard::GuardLayer::new(crate::grpc::guard::GuardConfig {
        request_timeout: config.request_timeout(),
        max_concurrent: config.max_concurrent_requests as usize,
    });
    let out = config.max_response_bytes();
    let tls = match config.tls() {
        Some(settings) => Some(Arc::new(
            crate::adapters::tls::ReloadingTls::new(settings).map_err(ServeError::Config)?,
        )),
        None => None,
    };
    let sizes = crate::grpc::fast::Sizes {
        max_decoding: max,
        max_encoding: out,
    };
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            EntityTypeServiceServer::new(EntityTypeApi(app.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(out),
        )
        // The hot reads write their documents straight into the response (grpc::fast).
        .add_service(crate::grpc::fast::instances(
            InstanceApi(app.clone()),
            sizes,
        ))
        .add_service(
            EventServiceServer::new(EventApi {
                app: app.clone(),
                stopping,
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(out),
        )
        .add_service(crate::grpc::fast::queries(QueryApi(app.clone()), sizes))
        .add_service(
            AnalyticsServiceServer::new(AnalyticsApi(app.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(out),
        )
        .add_service(AuthServiceServer::new(AuthApi))
        .prepare();
    // Every call, from the listener or from the in-process console, passes the same layers (the
    // first is the outermost).
    let stack = tower::ServiceBuilder::new()
        .option_layer(cors)
        // gRPC-web (HTTP/1.1 or HTTP/2) for browsers, next to plain gRPC on the same port.
        .layer(tonic_web::GrpcWebLayer::new())
        // Inside tonic-web, so gRPC-web calls are counted like plain ones; outside the guard, so
        // shed calls and cut-off deadlines are counted with the code the client saw.
        .layer(crate::grpc::telemetry::TelemetryLayer)
        // Inside tonic-web, so gRPC-web calls get the same deadline, shedding and codes.
        .layer(guard)
        // Inside the guard: checking a token (a JWKS fetch) counts against the deadline and the
        // concurrency limit like any other work.
        .layer(auth)
        .service(routes);
    if let Some(slot) = &console {
        use tower::ServiceExt;
        type Call = http::Request<tonic::body::Body>;
        let engine = ServiceExt::<Call>::map_response(stack.clone(), |response| {
            response.map(tonic::body::Body::new)
        });
        let engine = ServiceExt::<Call>::map_err(engine, Into::into);
        slot.set(temporal_state_gateway::Engine::new(engine));
    }
    let server = tonic::transport::Server::builder()
        // Pings find clients that vanished without closing their connection; their calls and
        // Subscribe streams then end instead of living forever.
        .http2_keepalive_interval(config.grpc_keepalive_interval())
        .http2_keepalive_timeout(Some(config.grpc_keepalive_timeout()))
        .accept_http1(true);
    let serving = async {
        match tls {
            Some(tls) => {
                server
                    .serve_with_incoming_shutdown(stack, tls_incoming(listener, tls), shutdown)
                    .await
            }
            None => {
                server
                    .serve_with_incoming_shutdown(
                        stack,
                        // Small request/response messages: do not let Nagle hold them back.
                        TcpListenerStream::new(listener).inspect(|conn| {
                            if let Ok(stream) = conn {
                                let _ = stream.set_nodelay(true);
                            }
                        }),
                        shutdown,
                    )
                    .await
            }
        }
    };
    let result = tokio::select! {
        result = serving => result,
        () = async {
            let since = refused_since
                .wait_for(Option::is_some)
                .await
                .map(|since| *since);
            match since {
                Ok(Some(since)) => tokio::time::sleep_until(since + drain_timeout).await,
                // Serving ended without a drain: the other branch completes.
                _ => std::future::pending().await,
            }
        } => {
            warn!(
                timeout_secs = drain_timeout.as_secs(),
                "calls still in flight after SHUTDOWN_TIMEOUT_SECS: ending them"
            );
            Ok(())
        }
    };
    if let Some(Relay { mut task, stop }) = relay {
        // What the last calls committed is published before the process exits, within what is
        // left of the drain's time (at least a second); the rest waits for the next relay.
        let since = *refused_since.borrow();
        let deadline = since
            .map(|since| since + drain_timeout)
            .unwrap_or_else(tokio::time::Instant::now)
            .max(tokio::time::Instant::now() + Duration::from_secs(1));
        let _ = stop.send(true);
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!("the relay's last flush was cut off; the next relay publishes the rest");
            task.abort();
        }
    }
    health_task.abort();
    if let Some(task) = admin_task {
        task.abort();
    }
    for task in tasks {
        task.abort();
    }
    Ok(result?)
}

/// Longest a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections accepted on `listener`: each handshake runs in a task of its own (a slow or
/// silent client never holds up the others), with the certificate files as they are now.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<crate::adapters::tls::ReloadingTls>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server stopped serving: release the port.
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Refuses a listener beyond loopback when no credential source is configured, unless
/// `--insecure-no-auth` says so explicitly.
fn refuse_open_exposure(config: &Config, listener: &TcpListener) -> Result<(), ServeError> {
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Config(format!("the listener's address: {e}")))?;
    if !config.auth_configured() && !config.insecure_no_auth && !local.ip().is_loopback() {
        return Err(ServeError::Config(format!(
            "refusing to serve {local} without authentication: anyone who can reach it could \
             write permanent history. Set AUTH_API_KEYS_FILE, AUTH_JWT_KEY_FILE or AUTH_JWKS_URL, \
             bind a loopback address, or pass --insecure-no-auth (INSECURE_NO_AUTH=true)"
        )));
    }
    Ok(())
}

/// Builds the backends and serves until `shutdown`: what `main` and the tests call. Unless
/// CONSOLE_ADDR is empty, the web console is served too, forwarding to this server.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // Before any store is opened or migrated.
    refuse_open_exposure(&config, &listener)?;
    let backends = build(&config).await?;
    let engine = temporal_state_gateway::EngineSlot::new();
    let console = start_console(&config, engine.clone()).await?;
    let admin = bind_admin(&config).await?;
    let result = serve_all(
        &config,
        backends,
        listener,
        admin,
        console.is_some().then_some(engine),
        shutdown,
    )
    .await;
    if let Some((stop, console)) = console {
        let _ = stop.send(());
        let _ = console.await;
    }
    result
}

/// Binds CONSOLE_ADDR and serves the console there, calling this server's service stack in
/// process (through `engine`, filled once the server serves: no second connection, no HTTP/2
/// hop); returns the sender that stops it. A taken address stops the server, naming the
/// variable, rather than leaving the user without the console they were told to open.
async fn start_console(
    config: &Config,
    engine: temporal_state_gateway::EngineSlot,
) -> Result<
    Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    ServeError,
> {
    let Some(addr) = config.console_addr() else {
        return Ok(None);
    };
    let mut console = temporal_state_gateway::GatewayConfig::new(Vec::new());
    console.oidc = config.console_oidc.clone();
    let gateway = temporal_state_gateway::Gateway::in_process(console, engine)
        .map_err(|e| ServeError::Config(format!("console: {e}")))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        ServeError::Config(format!(
            "CONSOLE_ADDR {addr}: {e} (set CONSOLE_ADDR to a free address, or to an empty value to run without the console)"
        ))
    })?;
    let mut url = listener.local_addr().unwrap_or(addr);
    if url.ip().is_unspecified() {
        url.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    info!(url = %format!("http://{url}"), "console: http://{url}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok(Some((stop, handle)))
}
