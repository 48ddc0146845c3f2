//! `temporal-state-bench`: figures for the real path. Each subcommand creates its own database
//! (`tse_bench_<uuid>`), starts the real server in-process on 127.0.0.1:<ephemeral>, talks to
//! it over TCP with the generated tonic clients, compares it with the store's own statements
//! (exported by the server's adapters, never copied here) issued directly, prints one table plus
//! ratio lines, and drops the database. Nothing here asserts on timing; it only checks that the
//! data it measured is what it meant to write and that server and baseline answered alike.
//! `harness` is the one measuring harness every scenario uses.
//!
//! ```text
//! cargo build --release -p temporal-state-bench
//! target/release/temporal-state-bench apply
//! target/release/temporal-state-bench write
//! target/release/temporal-state-bench state-at-version
//! target/release/temporal-state-bench console
//! target/release/temporal-state-bench timescale
//! target/release/temporal-state-bench declared
//! target/release/temporal-state-bench read-events
//! ```

/// The server's own allocator (see the server's main.rs), so the in-process server and the
/// baselines beside it allocate as the deployed server does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod analytics;
mod apply;
mod auth;
mod console;
mod declared;
mod embedded;
mod harness;
mod log;
mod procs;
mod state_at;
mod stream;
mod timescale;
mod write;
mod write_scale;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "temporal-state-bench",
    about = "Benchmarks of the Temporal State Engine's real gRPC path against direct SQL"
)]
struct Cli {
    /// Database used to CREATE and DROP the benchmark's own databases.
    #[arg(
        long,
        global = true,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ApplyEvent throughput and latency: server vs the same SQL issued directly.
    Apply(apply::Args),
    /// Write throughput (issue 13): ScoreIncreased with expected_version over 1,000 instances,
    /// the server on PostgreSQL alone and with Redis + NATS, against a hand-written
    /// tokio-postgres append.
    Write(write::Args),
    /// GetStateAtVersion on short and long histories, and GetHistory over a long one.
    StateAtVersion(state_at::Args),
    /// Every analytics RPC over 1,000,000 events next to hand-written SQL.
    Analytics(analytics::Args),
    /// Redis cache reads vs direct HGET, publication on vs off, commit-to-subscriber latency.
    CacheAndStream(stream::Args),
    /// The embedded store (no DATABASE_URL): ApplyEvent and GetStateAtVersion vs raw rusqlite.
    Embedded(embedded::Args),
    /// The web console's gateway: gRPC-web GetCurrentState and Subscribe through it vs straight
    /// to the engine.
    Console(console::Args),
    /// Time series and field aggregation over 1,000,000 events on TimescaleDB (continuous
    /// aggregate, compressed chunks) and on plain PostgreSQL, answers checked equal.
    Timescale(analytics::Args),
    /// QueryService.ReadEvents over a global log of 1,000,000 events vs raw keyset SQL on the
    /// same table.
    ReadEvents(log::Args),
    /// The cost of authentication per call: ApplyEvent and GetCurrentState without credentials,
    /// with an API key and with an RS256 JWT (embedded store).
    Auth(auth::Args),
    /// Declared event types (issue 22): ApplyEvent with a payload schema, a CEL transform and a
    /// CEL guard against a plain merge patch, on the embedded store and PostgreSQL.
    Declared(declared::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Apply(args) => apply::run(&cli.admin_url, args).await,
        Command::Write(args) => write::run(&cli.admin_url, args).await,
        Command::StateAtVersion(args) => state_at::run(&cli.admin_url, args).await,
        Command::Analytics(args) => analytics::run(&cli.admin_url, args).await,
        Command::CacheAndStream(args) => stream::run(&cli.admin_url, args).await,
        Command::Timescale(args) => timescale::run(&cli.admin_url, args).await,
        Command::Embedded(args) => embedded::run(args).await,
        Command::Console(args) => console::run(args).await,
        Command::Auth(args) => auth::run(args).await,
        Command::Declared(args) => declared::run(&cli.admin_url, args).await,
        Command::ReadEvents(args) => log::run(&cli.admin_url, args).await,
    }
}
