//! What every benchmark needs: a throw-away database, the real server in-process on a real TCP
//! port, gRPC channels to it, a direct connection pool, latency histograms and an aligned table.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use hdrhistogram::Histogram;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_server::config::{Cli as ServerCli, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tonic::transport::{Channel, Endpoint};

/// A database created for one benchmark and dropped at its end.
pub struct BenchDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str) -> Result<Self> {
        let name = format!("tse_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_client(admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_string(),
            url: with_dbname(admin_url, &name)?,
            name,
        })
    }

    /// Drops the database, closing any connection still open on it.
    pub async fn drop_db(self) -> Result<()> {
        let admin = admin_client(&self.admin_url).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("DROP DATABASE {}", self.name))?;
        Ok(())
    }
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to the admin database {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The admin URL with its database name replaced (URL or key=value form).
pub fn with_dbname(url: &str, db: &str) -> Result<String> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        // The path starts at the first '/' after the authority (which has no '/').
        let authority = main.split_once('/').map_or(main, |(a, _)| a);
        let mut out = format!("{scheme}://{authority}/{db}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Ok(out)
    } else if url.contains('=') {
        Ok(format!("{url} dbname={db}"))
    } else {
        bail!("cannot tell how to name a database in {url:?}")
    }
}

/// A pool configured like the server's own (`PgStore::new`): fast recycling, lazy connections.
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let mut pg = tokio_postgres::Config::from_str(url)?;
    pg.application_name("temporal-state-bench");
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Opens every connection of the pool once, so no measurement pays for a connect.
pub async fn fill_pool(pool: &Pool, size: usize) -> Result<()> {
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        held.push(pool.get().await?);
    }
    Ok(())
}

/// The real server (`temporal_state_server::run`) serving on 127.0.0.1:<ephemeral>.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub config: Config,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), temporal_state_server::server::ServeError>>,
}

impl RunningServer {
    /// Starts the server on `database_url` with extra server flags; returns once it answers.
    pub async fn start(database_url: &str, extra: &[&str]) -> Result<Self> {
        let mut argv = vec![
            "temporal-state-server",
            "--database-url",
            database_url,
            "--grpc-addr",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        let cli = ServerCli::try_parse_from(argv).map_err(|e| anyhow!("server flags: {e}"))?;
        let config = cli.config;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(temporal_state_server::run(
            config.clone(),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let server = Self {
            addr,
            config,
            shutdown: tx,
            handle,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.handle.is_finished() {
                bail!("the server stopped while starting");
            }
            if let Ok(channel) = self.channel().await {
                let mut types = EntityTypeServiceClient::new(channel);
                if types
                    .list_entity_types(pb::ListEntityTypesRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the server did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new HTTP/2 connection to the server.
    pub async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(joined) => joined?.map_err(|e| anyhow!("server: {e}")),
            Err(_) => bail!("the server did not stop within 30 s"),
        }
    }
}

/// A JSON object literal as a `google.protobuf.Struct`.
pub fn to_struct(v: Value) -> prost_types::Struct {
    match v {
        Value::Object(map) => temporal_state_server::grpc::convert::state_to_struct(&map),
        other => panic!("not a JSON object: {other}"),
    }
}

/// Latencies in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// What one measured run produced.
pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Measured {
    pub fn empty() -> Self {
        Self {
            ops: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    /// Adds another run of the same thing: operations, time and latencies.
    pub fn absorb(&mut self, other: Measured) -> Result<()> {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latency.add(other.latency)?;
        Ok(())
    }

    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p50(&self) -> u64 {
        self.latency.value_at_quantile(0.50)
    }
    pub fn p99(&self) -> u64 {
        self.latency.value_at_quantile(0.99)
    }
}

/// User plus system CPU time this process has used so far (Linux; zero elsewhere).
pub fn process_cpu() -> Duration {
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks (USER_HZ = 100).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// An aligned text table: first column left-aligned, the others right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            println!("{}", out.trim_end());
        };
        line(&self.header);
        for row in &self.rows {
            line(row);
        }
    }
}

pub fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// Which backends the in-process server runs on (it reads REDIS_URL / NATS_URL from the
/// environment like the real binary does).
pub fn backends(config: &Config) -> String {
    let mut parts = vec!["PostgreSQL"];
    if config.redis_url.is_some() {
        parts.push("Redis cache");
    }
    if config.nats_url.is_some() {
        parts.push("NATS outbox");
    }
    parts.join(" + ")
}

/// One line describing the machine and database the figures come from.
pub async fn environment(url: &str) -> Result<String> {
    let client = admin_client(url).await?;
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    Ok(format!(
        "PostgreSQL {version} (synchronous_commit={sync}); {cpus} CPUs shared by bench client, server and database; load average {load}"
    ))
}
