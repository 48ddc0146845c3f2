//! The server binary: parse the config, log it, then serve or migrate.

use anyhow::Context;
use clap::Parser;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
use temporal_state_server::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    let telemetry =
        temporal_state_server::server::telemetry::init(&config).map_err(|e| anyhow::anyhow!(e))?;
    // One line with every setting; connection strings with their secrets masked.
    tracing::info!(
        database_url = ?config.masked_database_url(),
        redis_url = ?config.masked_redis_url(),
        nats_url = ?config.masked_nats_url(),
        grpc_addr = %config.grpc_addr,
        console_addr = %config.console_addr,
        data_dir = %config.data_dir.display(),
        snapshot_interval = config.snapshot_interval,
        pool_size = config.pool_size,
        db_connect_timeout_secs = config.db_connect_timeout_secs,
        request_timeout_secs = config.request_timeout_secs,
        max_payload_bytes = config.max_payload_bytes,
        max_batch_events = config.max_batch_events,
        cache_ttl_secs = config.cache_ttl_secs,
        redis_timeout_ms = config.redis_timeout_ms,
        nats_stream = %config.nats_stream,
        nats_stream_replicas = config.nats_stream_replicas,
        nats_stream_retention = %config.nats_stream_retention,
        nats_duplicate_window_secs = config.nats_duplicate_window_secs,
        outbox_max_attempts = config.outbox_max_attempts,
        subscriber_buffer = config.subscriber_buffer,
        timescale_compress_after_days = config.timescale_compress_after_days,
        timescale_retention_days = config.timescale_retention_days,
        grpc_web_allowed_origins = ?config.grpc_web_allowed_origins,
        auth_api_keys_file = ?config.auth_api_keys_file,
        auth_jwt_key_file = ?config.auth_jwt_key_file,
        auth_jwks_url = ?config.auth_jwks_url,
        auth_jwt_issuer = ?config.auth_jwt_issuer,
        auth_jwt_audience = ?config.auth_jwt_audience,
        auth_jwt_leeway_secs = config.auth_jwt_leeway_secs,
        auth_reflection_requires_auth = config.auth_reflection_requires_auth,
        insecure_no_auth = config.insecure_no_auth,
        admin_addr = %config.admin_addr,
        shutdown_grace_secs = config.shutdown_grace_secs,
        shutdown_timeout_secs = config.shutdown_timeout_secs,
        log_format = %config.log_format,
        otel_exporter_otlp_endpoint = ?config.otel_exporter_otlp_endpoint,
        "effective configuration"
    );
    let result = run(cli.command.unwrap_or(Command::Serve), config).await;
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "stopped by an error");
    }
    telemetry.shutdown().await;
    result
}

async fn run(command: Command, config: temporal_state_server::Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => match config.database_url.clone() {
            Some(url) => {
                let store = PgStore::new(&PgStoreConfig {
                    url,
                    pool_size: 1,
                    snapshot_interval: config.snapshot_interval,
                    connect_timeout: config.db_connect_timeout(),
                })?;
                let applied = store.migrate().await?;
                tracing::info!(?applied, "migrations done");
            }
            None => {
                let store = temporal_state_server::adapters::embedded::EmbeddedStore::open(
                    &config.data_dir,
                    config.snapshot_interval,
                )?;
                tracing::info!(
                    path = %store.path().display(),
                    applied = ?store.applied_migrations(),
                    "no DATABASE_URL: embedded store migrations done"
                );
            }
        },
        Command::Backup { path } => {
            if config.database_url.is_some() {
                anyhow::bail!(
                    "backup copies the embedded store; with DATABASE_URL use pg_dump or \
                     point-in-time recovery (deploy/README.md, \"Backups and restore\")"
                );
            }
            let dir = config.data_dir.clone();
            let to = path.clone();
            let report = tokio::task::spawn_blocking(move || {
                temporal_state_server::adapters::embedded::backup(&dir, &to)
            })
            .await??;
            tracing::info!(
                source = %report.source.display(),
                path = %path.display(),
                bytes = report.bytes,
                events = report.events,
                instances = report.instances,
                "backup written"
            );
        }
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("binding {}", config.grpc_addr))?;
            temporal_state_server::run(config, listener, shutdown_signal()).await?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
