//! The gateway binary: parse the configuration, bind, serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use temporal_state_gateway::GatewayConfig;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "temporal-state-gateway",
    version,
    about = "Serves the Temporal State console and forwards its gRPC-web calls to the engines"
)]
struct Cli {
    /// Where browsers connect.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    #[command(flatten)]
    config: GatewayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let gateway = temporal_state_gateway::Gateway::new(cli.config)?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "console: http://{addr}");
    gateway.serve(listener, shutdown_signal()).await;
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
