//! The one measuring harness every scenario uses: a throw-away database, the real server
//! in-process on a real TCP port (on PostgreSQL or on the embedded store), gRPC channels to it,
//! a baseline pool configured by the server's own code, concurrent clients and sequential
//! samples timed into latency histograms, and an aligned table for the figures.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use deadpool_postgres::Pool;
use hdrhistogram::Histogram;
use prost_types::value::Kind;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig, split_pool};
use temporal_state_server::config::{Cli as ServerCli, Config};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tonic::transport::{Channel, Endpoint};

/// The Redis and NATS the scenarios that use them point the server at.
#[derive(Debug, clap::Args)]
pub struct Services {
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    #[arg(long, env = "BENCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

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

/// Runs `body` on `n` fresh databases and drops them all afterwards, whatever `body` returned.
pub async fn with_dbs<T, F, Fut>(admin_url: &str, n: usize, body: F) -> Result<T>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut dbs = Vec::with_capacity(n);
    let mut created = Ok(());
    for _ in 0..n {
        match BenchDb::create(admin_url).await {
            Ok(db) => dbs.push(db),
            Err(e) => {
                created = Err(e);
                break;
            }
        }
    }
    let result = match created {
        Ok(()) => body(dbs.iter().map(|db| db.url.clone()).collect()).await,
        Err(e) => Err(e),
    };
    let mut dropped = Ok(());
    for db in dbs {
        if let Err(e) = db.drop_db().await {
            dropped = Err(e);
        }
    }
    let value = result?;
    dropped?;
    Ok(value)
}

/// Runs `body` in a fresh directory `tse_bench_<label>_<uuid>` under `base` (for DATA_DIRs and
/// key files) and removes it afterwards, whatever `body` returned.
pub async fn with_dir<T, F, Fut>(base: &Path, label: &str, body: F) -> Result<T>
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let dir = base.join(format!(
        "tse_bench_{label}_{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = body(dir.clone()).await;
    let removed =
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()));
    let value = result?;
    removed?;
    Ok(value)
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

/// A store on `url` built by the server's own code with the server's settings (connect timeout,
/// statement_timeout, snapshot interval), with a pool of `size` connections, every one opened
/// once so no measurement pays for a connect. Its pool is what the direct baselines use: the
/// store's shared pool, so its `DB_POOL_SIZE` is `size` plus what the group commit keeps.
pub async fn baseline_store(url: &str, size: usize, server: &Config) -> Result<PgStore> {
    let pool_size = (size..)
        .find(|total| split_pool(*total).0 >= size)
        .context("no pool size gives that many shared connections")?;
    let store = PgStore::with_statement_timeout(
        &PgStoreConfig {
            url: url.to_string(),
            pool_size,
            snapshot_interval: server.snapshot_interval,
            connect_timeout: server.db_connect_timeout(),
        },
        Some(server.request_timeout()),
    )?;
    fill_pool(store.pool(), size).await?;
    Ok(store)
}

async fn fill_pool(pool: &Pool, size: usize) -> Result<()> {
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
    /// On PostgreSQL at `database_url`, with extra server flags (REDIS_URL and NATS_URL are read
    /// from the environment as the real binary does); returns once it answers.
    pub async fn postgres(database_url: &str, extra: &[&str]) -> Result<Self> {
        let mut argv = vec!["--database-url", database_url];
        argv.extend_from_slice(extra);
        Self::start(config(&argv)?).await
    }

    /// As [`Self::postgres`] with REDIS_URL and NATS_URL ignored: PostgreSQL alone.
    pub async fn postgres_only(database_url: &str, extra: &[&str]) -> Result<Self> {
        let mut argv = vec!["--database-url", database_url];
        argv.extend_from_slice(extra);
        let mut config = config(&argv)?;
        config.redis_url = None;
        config.nats_url = None;
        Self::start(config).await
    }

    /// On the embedded store under `data_dir`, default flags otherwise. DATABASE_URL, REDIS_URL
    /// and NATS_URL in the environment are ignored, so the figures are the embedded store's alone.
    pub async fn embedded(data_dir: &Path) -> Result<Self> {
        Self::embedded_with(data_dir, &[]).await
    }

    /// [`Self::embedded`] with extra server flags.
    pub async fn embedded_with(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let data_dir = data_dir.display().to_string();
        let mut argv = vec!["--data-dir", data_dir.as_str()];
        argv.extend_from_slice(extra);
        let mut config = config(&argv)?;
        config.database_url = None;
        config.redis_url = None;
        config.nats_url = None;
        Self::start(config).await
    }

    /// [`Self::embedded`] with the server's own console on `console` (its gateway in process).
    pub async fn embedded_with_console(data_dir: &Path, console: SocketAddr) -> Result<Self> {
        let data_dir = data_dir.display().to_string();
        let mut config = config(&["--data-dir", data_dir.as_str()])?;
        config.database_url = None;
        config.redis_url = None;
        config.nats_url = None;
        config.console_addr = console.to_string();
        Self::start(config).await
    }

    async fn start(config: Config) -> Result<Self> {
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
            if let Ok(channel) = self.channel().await
                && EntityTypeServiceClient::new(channel)
                    .list_entity_types(pb::ListEntityTypesRequest::default())
                    .await
                    // A server with authentication on answers, refusing a call without a token.
                    .is_ok_or_unauthenticated()
            {
                return Ok(());
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

    /// `n` connections, one per client, as separate client processes would have.
    pub async fn channels(&self, n: usize) -> Result<Vec<Channel>> {
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            channels.push(self.channel().await?);
        }
        Ok(channels)
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(joined) => joined?.map_err(|e| anyhow!("server: {e}")),
            Err(_) => bail!("the server did not stop within 30 s"),
        }
    }

    /// Stops the server once a run against it ended, whatever the run returned; reports the
    /// run's failure first.
    pub async fn stop_after<T>(self, result: Result<T>) -> Result<T> {
        let stopped = self.stop().await;
        let value = result?;
        stopped?;
        Ok(value)
    }
}

/// Whether a call was answered, counting a refusal for want of credentials.
trait Answered {
    fn is_ok_or_unauthenticated(&self) -> bool;
}

impl<T> Answered for std::result::Result<T, tonic::Status> {
    fn is_ok_or_unauthenticated(&self) -> bool {
        match self {
            Ok(_) => true,
            Err(s) => s.code() == tonic::Code::Unauthenticated,
        }
    }
}

/// The server's configuration from its own flag parser, on 127.0.0.1:<ephemeral>, without the
/// console (a benchmark that wants one starts the gateway itself), with no admin port (the
/// default 9090 may be taken on the machine running the benchmark) and no drain grace period (a
/// benchmark's server stops at once).
fn config(flags: &[&str]) -> Result<Config> {
    let argv = [
        "temporal-state-server",
        "--grpc-addr",
        "127.0.0.1:0",
        "--console-addr",
        "",
        "--admin-addr=",
        "--shutdown-grace-secs=0",
    ]
    .iter()
    .chain(flags);
    Ok(ServerCli::try_parse_from(argv)
        .map_err(|e| anyhow!("server flags: {e}"))?
        .config)
}

/// A JSON object literal as a `google.protobuf.Struct`, as a client would send it.
pub fn to_struct(v: Value) -> prost_types::Struct {
    match v {
        Value::Object(map) => prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        },
        other => panic!("not a JSON object: {other}"),
    }
}

fn to_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        object @ Value::Object(_) => Kind::StructValue(to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
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
    /// CPU this whole process (bench clients plus in-process server) used meanwhile.
    pub cpu: Duration,
}

impl Measured {
    pub fn empty() -> Self {
        Self {
            ops: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            cpu: Duration::ZERO,
        }
    }

    /// Adds another run of the same thing: operations, time, CPU and latencies.
    pub fn absorb(&mut self, other: Measured) -> Result<()> {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
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
    /// Process CPU microseconds per operation.
    pub fn cpu_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }
}

/// Concurrent clients: client `c` makes `per_client[c]` calls one after the other, all clients
/// at once. `client(c)` gives client `c`'s call maker; `call(i)` prepares call `i` (building
/// the request is not timed) and its future is the timed part. The clock starts once every
/// client is ready.
pub async fn clients<G, Fut>(
    per_client: &[usize],
    mut client: impl FnMut(usize) -> G,
) -> Result<Measured>
where
    G: FnMut(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(per_client.len() + 1));
    let mut tasks = Vec::with_capacity(per_client.len());
    for (c, &n) in per_client.iter().enumerate() {
        let mut call = client(c);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            barrier.wait().await;
            for i in 0..n {
                let pending = call(i);
                let t = Instant::now();
                pending.await?;
                hist.record(micros(t.elapsed()))?;
            }
            anyhow::Ok(hist)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let cpu = process_cpu();
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    Ok(Measured {
        ops: latency.len(),
        elapsed: start.elapsed(),
        latency,
        cpu: process_cpu().saturating_sub(cpu),
    })
}

/// `warmup` unmeasured calls, then `samples` measured ones, one after the other. Returns the
/// figures and the first call's answer, for the caller to check.
pub async fn sample<T, F, Fut>(warmup: usize, samples: usize, mut call: F) -> Result<(Measured, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut latency = histogram();
    let mut first = None;
    let mut start = Instant::now();
    let mut cpu = process_cpu();
    for i in 0..warmup + samples {
        if i == warmup {
            latency.reset();
            start = Instant::now();
            cpu = process_cpu();
        }
        let t = Instant::now();
        let answer = call().await?;
        latency.record(micros(t.elapsed()))?;
        first.get_or_insert(answer);
    }
    Ok((
        Measured {
            ops: latency.len(),
            elapsed: start.elapsed(),
            latency,
            cpu: process_cpu().saturating_sub(cpu),
        },
        first.context("no call was made")?,
    ))
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

/// `total` split over `parts` as evenly as possible.
pub fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
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

/// The CPUs and load the figures share.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!(
        "{cpus} CPUs shared by the bench clients, the server and its store; load average {load}"
    )
}

/// One line describing the machine and database the figures come from.
pub async fn environment(url: &str) -> Result<String> {
    let client = admin_client(url).await?;
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    Ok(format!(
        "PostgreSQL {version} (synchronous_commit={sync}); {}",
        machine()
    ))
}
