//! The server binary: parse the config, log it, then serve or migrate.

use anyhow::Context;
use clap::Parser;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
use temporal_state_server::config::{Cli, Command};

/// mimalloc rather than the system allocator: a history or log page allocates and frees
/// thousands of small documents and large buffers, where glibc's malloc spent about a sixth of
/// the CPU and faulted fresh pages in for every large buffer (`temporal-state-bench
/// read-events`: 0.40x the raw SQL with glibc, 0.52x with mimalloc; the bench sets the same).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    let telemetry =
        temporal_state_server::server::telemetry::init(&config).map_err(|e| anyhow::anyhow!(e))?;
    // One line with every setting (the whole Config, so none is forgotten), connection strings
    // with their secrets masked.
    tracing::info!(config = ?config.masked(), "effective configuration");
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
        Command::Retention => {
            let report = temporal_state_server::server::run_retention(&config).await?;
            tracing::info!(?report, "retention pass done");
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
