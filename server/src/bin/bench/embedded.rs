//! `embedded`: the embedded store (SQLite under a fresh DATA_DIR, what the server runs on with no
//! DATABASE_URL) through the real server, against raw rusqlite doing the same SQL work in the
//! same run. No PostgreSQL is needed or touched.
//!
//! - ApplyEvent with 1 and 32 clients, each client on its own instance. The raw baseline is what
//!   `EmbeddedStore::append` does per event without the application around it: one connection
//!   opened with the store's PRAGMAs (WAL, `synchronous=FULL`, foreign keys, busy timeout) and
//!   the store's schema (its own migrations), shared by the clients behind a FIFO tokio mutex
//!   with each transaction on tokio's blocking pool, as the store's writer is; per event
//!   `BEGIN IMMEDIATE`, read the instance head, fold the merge patch, insert the event (and a
//!   snapshot at multiples of the interval), update the head, `COMMIT` (one fsync). The server
//!   adds gRPC, validation, JSON Schema and protobuf conversion. (Keep the threading the same:
//!   on ext4 here, the same loop on dedicated OS threads paid about 4 ms per fsync instead of
//!   about 0.5 ms, which made raw SQLite look twice as slow as the server.)
//! - The measured events run in rounds alternating which path goes first, so that noise from
//!   outside (other processes' disk writes and CPU) hits both alike.
//! - GetStateAtVersion on a 10,000-event instance at the latest version, the middle one (a
//!   snapshot) and the one before it (the longest tail), against the store's snapshot+tail
//!   read issued directly on a read-only connection to the server's own database file: rows
//!   fetched only, and fetched + decoded + folded (the work the server does minus gRPC).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{CommandFactory, FromArgMatches};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::adapters::embedded::{DB_FILE, migrate};
use temporal_state_server::config::{Cli as ServerCli, Config};
use temporal_state_server::domain::{ApplyMode, apply_event};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::apply::{
    EVENT_TYPE, TYPE_NAME, check_server_versions, create_instances_via_server, initial_state,
    payload, schema, server_clients, split,
};
use crate::harness::{Measured, Table, fmt_rate, histogram, micros, ratio, to_struct};
use crate::state_at::{payload as history_payload, server_state_at};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured ApplyEvent calls per configuration, split evenly over its clients.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Numbers of concurrent clients, each writing to its own instance.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients_list: Vec<usize>,
    /// Unmeasured events per configuration, run first on the same instances.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Rounds the measured events are split into, alternating which path runs first.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Events of the instance GetStateAtVersion reads (version 1 is InstanceCreated).
    #[arg(long, default_value_t = 10_000)]
    pub history: i64,
    /// Measured GetStateAtVersion calls per version and path.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Unmeasured GetStateAtVersion calls before each measurement.
    #[arg(long, default_value_t = 20)]
    pub samples_warmup: usize,
    /// Where the benchmark's fresh DATA_DIRs are created (and removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

/// Adds one round's figures to the total.
fn add(total: &mut Option<Measured>, m: Measured) -> Result<()> {
    match total {
        None => *total = Some(m),
        Some(t) => {
            t.ops += m.ops;
            t.elapsed += m.elapsed;
            t.latency.add(m.latency)?;
        }
    }
    Ok(())
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.events > 0, "--events must be positive");
    ensure!(
        !args.clients_list.is_empty() && args.clients_list.iter().all(|&c| c > 0),
        "--clients-list needs positive numbers"
    );
    ensure!(args.history >= 4, "--history must be at least 4");
    ensure!(args.samples > 0, "--samples must be positive");
    let root = args
        .dir
        .join(format!("tse_bench_embedded_{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = run_in(&args, &root).await;
    let removed =
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()));
    result?;
    removed
}

async fn run_in(args: &Args, root: &Path) -> Result<()> {
    let server = EmbeddedServer::start(&root.join("server")).await?;
    let result = measure(args, root, &server).await;
    let stopped = server.stop().await;
    result?;
    stopped
}

/// The real server on the embedded store, in-process on 127.0.0.1:<ephemeral>.
struct EmbeddedServer {
    addr: std::net::SocketAddr,
    config: Config,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), temporal_state_server::server::ServeError>>,
}

impl EmbeddedServer {
    /// Default flags plus `--data-dir`; DATABASE_URL, REDIS_URL and NATS_URL in the environment
    /// are ignored, so the figures are always the embedded store's alone.
    async fn start(data_dir: &Path) -> Result<Self> {
        let data_dir = data_dir.display().to_string();
        let argv = [
            "temporal-state-server",
            "--data-dir",
            &data_dir,
            "--grpc-addr",
            "127.0.0.1:0",
        ];
        let matches = ServerCli::command()
            .try_get_matches_from(argv)
            .map_err(|e| anyhow!("server flags: {e}"))?;
        let mut config = ServerCli::from_arg_matches(&matches)?.config;
        config.database_url = None;
        config.redis_url = None;
        config.nats_url = None;
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server.handle.is_finished() {
                bail!("the server stopped while starting");
            }
            if let Ok(channel) = server.channel().await
                && EntityTypeServiceClient::new(channel)
                    .list_entity_types(pb::ListEntityTypesRequest::default())
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }

    async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(joined) => joined?.map_err(|e| anyhow!("server: {e}")),
            Err(_) => bail!("the server did not stop within 30 s"),
        }
    }
}

struct ApplyRow {
    clients: usize,
    path: &'static str,
    m: Measured,
}

struct StateRow {
    label: &'static str,
    version: i64,
    tail_rows: usize,
    server: Measured,
    rows: Measured,
    folded: Measured,
}

async fn measure(args: &Args, root: &Path, server: &EmbeddedServer) -> Result<()> {
    let interval = server.config.snapshot_interval;
    let most = args.clients_list.iter().copied().max().unwrap_or(1);
    // One HTTP/2 connection per client, as separate client processes would have.
    let mut channels = Vec::with_capacity(most);
    for _ in 0..most {
        channels.push(server.channel().await?);
    }
    let type_id = EntityTypeServiceClient::new(channels[0].clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: TYPE_NAME.into(),
            description: "benchmark player profile".into(),
            schema: Some(to_struct(schema())),
        })
        .await?
        .into_inner()
        .entity_type
        .context("no entity type")?
        .id;

    let raw = RawStore::create(&root.join("raw"), interval)?;
    let mut applies = Vec::new();
    for (config_no, &clients) in args.clients_list.iter().enumerate() {
        let prefix = format!("c{config_no}");
        let warm = split(args.warmup, clients);
        let server_ids =
            create_instances_via_server(&channels[0], &type_id, &prefix, clients).await?;
        let raw_ids = raw.create_instances(&prefix, clients)?;
        server_clients(&channels[..clients], &server_ids, &warm).await?;
        raw.apply_clients(&raw_ids, &warm).await?;

        // The measured events in rounds that alternate which path goes first, so that noise
        // from outside (other processes' disk writes, CPU) hits both paths alike.
        let mut applied = warm.clone();
        let (mut server_m, mut raw_m) = (None, None);
        for (round, events) in split(args.events, args.rounds.max(1))
            .into_iter()
            .enumerate()
        {
            let measured = split(events, clients);
            for (a, n) in applied.iter_mut().zip(&measured) {
                *a += n;
            }
            for server_turn in [round % 2 == 0, round % 2 == 1] {
                if server_turn {
                    let m = server_clients(&channels[..clients], &server_ids, &measured)
                        .await?
                        .m;
                    add(&mut server_m, m)?;
                } else {
                    let m = raw.apply_clients(&raw_ids, &measured).await?;
                    add(&mut raw_m, m)?;
                }
            }
        }
        let expected: Vec<i64> = applied.iter().map(|n| 1 + *n as i64).collect();
        check_server_versions(&channels[0], &server_ids, &expected).await?;
        raw.check_versions(&raw_ids, &expected)?;
        for (path, m) in [("server", server_m), ("raw rusqlite", raw_m)] {
            applies.push(ApplyRow {
                clients,
                path,
                m: m.context("no round measured")?,
            });
        }
    }

    let files_after_apply = format!(
        "files after the ApplyEvent rows: server {}, raw {}",
        file_sizes(&root.join("server")),
        file_sizes(&root.join("raw"))
    );

    // The long history, loaded through the server with ApplyEvents.
    let load_start = Instant::now();
    let long = load_history(&channels[0], &type_id, args.history).await?;
    let load_elapsed = load_start.elapsed();
    let reader = RawReader::open(&root.join("server").join(DB_FILE))?;
    let mut queries = QueryServiceClient::new(channels[0].clone());
    let n = args.history;
    let mut states = Vec::new();
    for (label, version) in [("latest", n), ("middle", n / 2), ("middle-1", n / 2 - 1)] {
        let server_m = server_state_at(
            &mut queries,
            &long,
            version,
            args.samples_warmup,
            args.samples,
        )
        .await?;
        // Synchronous like the store's blocking tasks; the server is idle meanwhile.
        let (rows_m, tail_rows) =
            tokio::task::block_in_place(|| reader.measure(&long, version, false, args))?;
        let (folded_m, _) =
            tokio::task::block_in_place(|| reader.measure(&long, version, true, args))?;
        states.push(StateRow {
            label,
            version,
            tail_rows,
            server: server_m,
            rows: rows_m,
            folded: folded_m,
        });
    }

    println!(
        "== embedded: the embedded store (SQLite, WAL, synchronous=FULL) through the server vs raw rusqlite =="
    );
    println!("{}", environment(root));
    println!(
        "snapshot interval {interval} (server default); {} measured ApplyEvent calls per row in {} rounds alternating server and raw, after {} warm-up; one HTTP/2 connection per client; \
         raw = one task per client sharing one writer connection behind a FIFO mutex, each transaction on the blocking pool (as the store), with the store's PRAGMAs and schema: BEGIN IMMEDIATE / read head / fold / INSERT event / UPDATE head / COMMIT per event",
        args.events,
        args.rounds.max(1),
        args.warmup
    );
    let mut table = Table::new(&[
        "ApplyEvent path",
        "clients",
        "instances",
        "events",
        "events/s",
        "p50 µs",
        "p99 µs",
    ]);
    for r in &applies {
        table.row(vec![
            r.path.to_string(),
            r.clients.to_string(),
            r.clients.to_string(),
            r.m.ops.to_string(),
            fmt_rate(r.m.per_sec()),
            r.m.p50().to_string(),
            r.m.p99().to_string(),
        ]);
    }
    table.print();
    for &clients in &args.clients_list {
        let find = |path: &str| {
            applies
                .iter()
                .find(|r| r.clients == clients && r.path == path)
        };
        if let (Some(s), Some(r)) = (find("server"), find("raw rusqlite")) {
            println!(
                "ratio server/raw throughput ({clients} client{}) = {}   (p50 latency {}, p99 latency {})",
                if clients == 1 { "" } else { "s" },
                ratio(s.m.per_sec(), r.m.per_sec()),
                ratio(s.m.p50() as f64, r.m.p50() as f64),
                ratio(s.m.p99() as f64, r.m.p99() as f64),
            );
        }
    }
    println!("{files_after_apply}");
    println!(
        "checked: every instance written (server via GetInstance, raw via SQL) is at version 1 + events applied"
    );

    println!();
    println!(
        "== embedded: GetStateAtVersion on a {n}-event instance (loaded through ApplyEvents x1000 in {:.1} s, {} events/s) ==",
        load_elapsed.as_secs_f64(),
        fmt_rate(n as f64 / load_elapsed.as_secs_f64())
    );
    println!(
        "{} sequential calls per row after {} warm-up; raw = the store's snapshot+tail read in one read transaction on a read-only connection to the server's file: \
         'rows' fetches the columns, 'folded' also decodes the JSON and folds the tail",
        args.samples, args.samples_warmup
    );
    let mut table = Table::new(&[
        "version",
        "at",
        "rows",
        "server p50 µs",
        "server p99 µs",
        "raw rows p50 µs",
        "raw rows p99 µs",
        "raw folded p50 µs",
        "raw folded p99 µs",
        "server/rows p50",
        "server/folded p50",
    ]);
    for r in &states {
        table.row(vec![
            r.version.to_string(),
            r.label.to_string(),
            r.tail_rows.to_string(),
            r.server.p50().to_string(),
            r.server.p99().to_string(),
            r.rows.p50().to_string(),
            r.rows.p99().to_string(),
            r.folded.p50().to_string(),
            r.folded.p99().to_string(),
            ratio(r.server.p50() as f64, r.rows.p50() as f64),
            ratio(r.server.p50() as f64, r.folded.p50() as f64),
        ]);
    }
    table.print();
    println!(
        "checked: every state read (server and raw folded) has score = its version; tails start at the snapshot"
    );
    Ok(())
}

/// Sizes of the database file and its write-ahead log in `dir`.
fn file_sizes(dir: &Path) -> String {
    let size = |suffix: &str| {
        std::fs::metadata(dir.join(format!("{DB_FILE}{suffix}")))
            .map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
    };
    format!("db {:.1} MiB + wal {:.1} MiB", size(""), size("-wal"))
}

/// The machine, SQLite and the file system the figures come from.
fn environment(root: &Path) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    // The mount with the longest prefix of the data directory: tmpfs would make fsync free.
    let fs = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|mounts| {
            let canonical = root.canonicalize().ok()?;
            mounts
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() > 2 && canonical.starts_with(f[1]))
                        .then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, fs)| fs)
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "SQLite {} (bundled); DATA_DIRs under {}: {fs}; {cpus} CPUs shared by bench client and server; load average {load}",
        rusqlite::version(),
        root.display()
    )
}

/// Creates an instance and applies versions 2..=events to it in batches of 1000.
async fn load_history(channel: &Channel, type_id: &str, events: i64) -> Result<String> {
    let mut instances = InstanceServiceClient::new(channel.clone());
    let mut writer = EventServiceClient::new(channel.clone());
    let id = instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: type_id.into(),
            external_id: "long".into(),
            initial_state: Some(to_struct(json!({"name": "long", "score": 1, "level": 1}))),
            metadata: None,
        })
        .await?
        .into_inner()
        .instance
        .context("no instance")?
        .id;
    let mut next = 2;
    while next <= events {
        let last = (next + 999).min(events);
        writer
            .apply_events(pb::ApplyEventsRequest {
                instance_id: id.clone(),
                expected_version: Some(next - 1),
                events: (next..=last)
                    .map(|v| pb::EventInput {
                        event_type: EVENT_TYPE.into(),
                        payload: Some(to_struct(history_payload(v))),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .with_context(|| format!("ApplyEvents {next}..={last}"))?;
        next = last + 1;
    }
    Ok(id)
}

/// Opens a connection as `EmbeddedStore` does (`store.rs`, `connect`): same flags, busy timeout,
/// statement cache and PRAGMAs.
fn connect(path: &Path, reader: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if !reader {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(128);
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if reader {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The raw baseline's own database: the store's schema (its migrations), one writer connection.
struct RawStore {
    /// The store's writer lock: a FIFO tokio mutex, so with 32 clients none starves.
    writer: Arc<tokio::sync::Mutex<Connection>>,
    type_id: String,
    interval: i64,
}

impl RawStore {
    fn create(dir: &Path, interval: i64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = connect(&path, false)?;
        migrate::run(&mut conn, &path).map_err(|e| anyhow!("migrating the raw baseline: {e}"))?;
        let type_id = Uuid::now_v7().hyphenated().to_string();
        conn.execute(
            "INSERT INTO entity_types (id, name, description, schema, created_at) \
             VALUES (?1, ?2, '', ?3, ?4)",
            params![type_id, TYPE_NAME, schema().to_string(), now_micros()],
        )?;
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(conn)),
            type_id,
            interval,
        })
    }

    fn create_instances(&self, prefix: &str, n: usize) -> Result<Vec<String>> {
        let mut conn = self.writer.try_lock()?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = Uuid::now_v7().hyphenated().to_string();
            let state = initial_state(i).to_string();
            let now = now_micros();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO instances (id, entity_type_id, external_id, state, version, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
                params![id, self.type_id, format!("{prefix}-{i}"), state, now],
            )?;
            tx.execute(
                "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, \
                 payload, metadata, mode, recorded_at, occurred_at) \
                 VALUES (?1, 1, ?2, ?3, 'InstanceCreated', ?4, '{}', 'replace', ?5, ?5)",
                params![id, Uuid::now_v7().to_string(), self.type_id, state, now],
            )?;
            tx.commit()?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// One task per client, each applying its share to its own instance; every transaction
    /// runs on the blocking pool once the writer lock is taken, as in `EmbeddedStore::write`.
    async fn apply_clients(&self, targets: &[String], per_client: &[usize]) -> Result<Measured> {
        let barrier = Arc::new(Barrier::new(targets.len() + 1));
        let mut tasks = Vec::new();
        for (c, target) in targets.iter().enumerate() {
            let writer = self.writer.clone();
            let interval = self.interval;
            let target = Arc::new(target.clone());
            let n = per_client[c];
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut hist = histogram();
                barrier.wait().await;
                for i in 0..n {
                    let patch = payload((c * 1_000_000 + i) as u64);
                    let t = Instant::now();
                    let mut conn = writer.clone().lock_owned().await;
                    let target = target.clone();
                    tokio::task::spawn_blocking(move || {
                        raw_append(&mut conn, &target, &patch, interval)
                    })
                    .await??;
                    hist.record(micros(t.elapsed()))?;
                }
                anyhow::Ok(hist)
            }));
        }
        barrier.wait().await;
        let start = Instant::now();
        let mut latency = histogram();
        for task in tasks {
            latency.add(task.await??)?;
        }
        Ok(Measured {
            ops: latency.len(),
            elapsed: start.elapsed(),
            latency,
        })
    }

    fn check_versions(&self, ids: &[String], expected: &[i64]) -> Result<()> {
        let conn = self.writer.try_lock()?;
        for (id, want) in ids.iter().zip(expected) {
            let (version, count): (i64, i64) = conn.query_row(
                "SELECT i.version, (SELECT count(*) FROM events e WHERE e.instance_id = i.id) \
                 FROM instances i WHERE i.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            ensure!(
                version == *want && count == *want,
                "raw instance {id} at version {version} with {count} events, expected {want}"
            );
        }
        Ok(())
    }
}

/// What `append_transaction` does for one merge-patch event without an idempotency key.
fn raw_append(conn: &mut Connection, instance: &str, patch: &Value, interval: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (type_id, version, state_text, updated_at): (String, i64, String, i64) = tx
        .prepare_cached(
            "SELECT entity_type_id, version, state, updated_at FROM instances WHERE id = ?1",
        )?
        .query_row([instance], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
        .context("raw instance missing")?;
    let state = object(serde_json::from_str(&state_text)?);
    let patch_map = object(patch.clone());
    let state = apply_event(&state, &patch_map, ApplyMode::MergePatch)
        .map_err(|e| anyhow!("merge patch: {e}"))?;
    let state_text = serde_json::to_string(&state)?;
    let recorded = now_micros().max(updated_at);
    let next = version + 1;
    tx.prepare_cached(
        "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, \
         payload, metadata, mode, recorded_at, occurred_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        instance,
        next,
        Uuid::now_v7().to_string(),
        type_id,
        EVENT_TYPE,
        serde_json::to_string(&patch_map)?,
        "{}",
        "merge_patch",
        recorded,
        recorded,
    ])?;
    if next % interval == 0 {
        tx.prepare_cached(
            "INSERT INTO snapshots (instance_id, version, state) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![instance, next, state_text])?;
    }
    let updated = tx
        .prepare_cached(
            "UPDATE instances SET version = ?1, state = ?2, updated_at = ?3 \
             WHERE id = ?4 AND version = ?5",
        )?
        .execute(params![next, state_text, recorded, instance, version])?;
    ensure!(
        updated == 1,
        "raw instance {instance} changed under its lock"
    );
    tx.commit()?;
    Ok(())
}

/// A read-only connection to the server's database file, configured as the store's readers.
struct RawReader {
    conn: Mutex<Connection>,
}

/// The columns `EmbeddedStore` reads per event (`rows::EVENT_COLUMNS`).
const EVENT_COLUMNS: &str = "e.event_id, e.instance_id, e.entity_type_id, e.event_type, \
     e.version, e.payload, e.metadata, e.mode, e.recorded_at, e.occurred_at";

/// One event row as fetched: every column, undecoded.
type RawEvent = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
);

impl RawReader {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: Mutex::new(connect(path, true)?),
        })
    }

    /// The store's `snapshot_and_tail` SQL in one read transaction; rows fetched, and when
    /// `fold`, decoded and folded into the state at `version`.
    fn state_at(&self, instance: &str, version: i64, fold: bool) -> Result<(usize, Option<Value>)> {
        let mut conn = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
        let tx = conn.transaction()?;
        let snapshot: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT version, state FROM snapshots WHERE instance_id = ?1 \
                 AND version <= ?2 ORDER BY version DESC LIMIT 1",
            )?
            .query_row(params![instance, version], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let from = snapshot.as_ref().map_or(1, |s| s.0);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.instance_id = ?1 \
             AND e.version >= ?2 AND e.version <= ?3 ORDER BY e.version"
        );
        let tail: Vec<RawEvent> = tx
            .prepare_cached(&sql)?
            .query_map(params![instance, from, version], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        if !fold {
            return Ok((tail.len(), None));
        }
        let (mut state, from) = match snapshot {
            Some((v, text)) => (object(serde_json::from_str(&text)?), v),
            None => (Map::new(), 0),
        };
        for event in tail.iter().filter(|e| e.4 > from) {
            let payload = object(serde_json::from_str(&event.5)?);
            let _metadata: Value = serde_json::from_str(&event.6)?;
            let mode = ApplyMode::parse(&event.7).context("apply mode")?;
            state = apply_event(&state, &payload, mode).map_err(|e| anyhow!("fold: {e}"))?;
        }
        Ok((tail.len(), Some(Value::Object(state))))
    }

    fn measure(
        &self,
        instance: &str,
        version: i64,
        fold: bool,
        args: &Args,
    ) -> Result<(Measured, usize)> {
        let mut latency = histogram();
        let mut rows = 0;
        let start = Instant::now();
        for i in 0..args.samples_warmup + args.samples {
            if i == args.samples_warmup {
                latency.reset();
            }
            let t = Instant::now();
            let (n, state) = self.state_at(instance, version, fold)?;
            latency.record(micros(t.elapsed()))?;
            rows = n;
            if i == 0
                && let Some(state) = state
            {
                ensure!(
                    state["score"] == json!(version),
                    "raw state at version {version} does not have score {version}"
                );
            }
        }
        Ok((
            Measured {
                ops: latency.len(),
                elapsed: start.elapsed(),
                latency,
            },
            rows,
        ))
    }
}
