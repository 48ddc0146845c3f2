//! `embedded`: the embedded store (SQLite under a fresh DATA_DIR, what the server runs on with no
//! DATABASE_URL) through the real server, against raw rusqlite doing the same SQL work in the
//! same run. No PostgreSQL is needed or touched.
//!
//! - ApplyEvent with 1 and 32 clients, each client on its own instance. The raw baseline is what
//!   `EmbeddedStore::append` does per event without the application around it: one connection
//!   opened by the store's own `connect` (WAL, `synchronous=FULL`, foreign keys, busy timeout)
//!   with the store's schema (its own migrations), shared by the clients behind a FIFO tokio
//!   mutex with each transaction on tokio's blocking pool, as the store's writer is; per event
//!   the store's own statements (`adapters::embedded::sql`): `BEGIN IMMEDIATE`, read the
//!   instance head, fold the merge patch (the domain's `apply_event`), insert the event and its
//!   id with its content hash (the domain's `content_hash`), a snapshot at multiples of the
//!   interval, move the head, `COMMIT` (one fsync). The server adds gRPC, validation, JSON
//!   Schema, protobuf conversion and the application. (Keep the threading the same:
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

use anyhow::{Context, Result, anyhow, ensure};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::adapters::embedded::{DB_FILE, migrate, sql};
use temporal_state_server::domain::idempotency::content_hash;
use temporal_state_server::domain::{ApplyMode, EventType, apply_event};
use uuid::Uuid;

use crate::apply::{
    EVENT_TYPE, TYPE_NAME, check_server_versions, create_instances_via_server, initial_state,
    object, payload, schema, server_clients,
};
use crate::harness::{
    Measured, RunningServer, Table, clients, fmt_rate, machine, ratio, sample, split, to_struct,
    with_dir,
};
use crate::state_at::{load, server_state_at};

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

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.events > 0, "--events must be positive");
    ensure!(
        !args.clients_list.is_empty() && args.clients_list.iter().all(|&c| c > 0),
        "--clients-list needs positive numbers"
    );
    ensure!(args.history >= 4, "--history must be at least 4");
    ensure!(args.samples > 0, "--samples must be positive");
    let args = &args;
    with_dir(&args.dir, "embedded", |root| async move {
        run_in(args, &root).await
    })
    .await
}

async fn run_in(args: &Args, root: &Path) -> Result<()> {
    let server = RunningServer::embedded(&root.join("server")).await?;
    let result = measure(args, root, &server).await;
    server.stop_after(result).await
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

async fn measure(args: &Args, root: &Path, server: &RunningServer) -> Result<()> {
    let interval = server.config.snapshot_interval;
    let most = args.clients_list.iter().copied().max().unwrap_or(1);
    // One HTTP/2 connection per client, as separate client processes would have.
    let channels = server.channels(most).await?;
    let type_id = EntityTypeServiceClient::new(channels[0].clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
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
        let (mut server_m, mut raw_m) = (Measured::empty(), Measured::empty());
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
                    server_m.absorb(
                        server_clients(&channels[..clients], &server_ids, &measured).await?,
                    )?;
                } else {
                    raw_m.absorb(raw.apply_clients(&raw_ids, &measured).await?)?;
                }
            }
        }
        let expected: Vec<i64> = applied.iter().map(|n| 1 + *n as i64).collect();
        check_server_versions(&channels[0], &server_ids, &expected).await?;
        raw.check_versions(&raw_ids, &expected)?;
        for (path, m) in [("server", server_m), ("raw rusqlite", raw_m)] {
            applies.push(ApplyRow { clients, path, m });
        }
    }

    let files_after_apply = format!(
        "files after the ApplyEvent rows: server {}, raw {}",
        file_sizes(&root.join("server")),
        file_sizes(&root.join("raw"))
    );

    // The long history, loaded through the server with ApplyEvents.
    let loaded = load(&channels[0], &type_id, "long", args.history, 1000).await?;
    let (long, load_elapsed) = (loaded.id, loaded.elapsed);
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
        let (rows_m, tail_rows) = reader.measure(&long, version, false, args)?;
        let (folded_m, _) = reader.measure(&long, version, true, args)?;
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
         raw = one task per client sharing one writer connection behind a FIFO mutex, each transaction on the blocking pool (as the store), with the store.s own connect, schema and statements: BEGIN IMMEDIATE / read head / fold / INSERT event / INSERT event id + content hash / UPDATE head / COMMIT per event",
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
        "checked: every instance written (server via GetInstance, raw via SQL) is at version 1 + events applied (raw: with as many events and event ids)"
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
        "SQLite {} (bundled); DATA_DIRs under {}: {fs}; {}",
        rusqlite::version(),
        root.display(),
        machine()
    )
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The raw baseline's own database: the store's schema (its migrations), one writer connection.
pub(crate) struct RawStore {
    /// The store's writer lock: a FIFO tokio mutex, so with 32 clients none starves.
    writer: Arc<tokio::sync::Mutex<Connection>>,
    type_id: String,
    interval: i64,
}

impl RawStore {
    pub(crate) fn create(dir: &Path, interval: i64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = sql::connect(&path, false)?;
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

    pub(crate) fn create_instances(&self, prefix: &str, n: usize) -> Result<Vec<String>> {
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
            // The creation's event and its id with its content hash, as the server stores them.
            let event_id = Uuid::now_v7().to_string();
            let _position: i64 = tx.query_row(
                sql::INSERT_EVENT_SQL,
                params![
                    id,
                    1,
                    event_id,
                    self.type_id,
                    EventType::INSTANCE_CREATED,
                    state,
                    "{}",
                    ApplyMode::Replace.as_str(),
                    now,
                    now,
                    ""
                ],
                |r| r.get(0),
            )?;
            let hash = content_hash(
                EventType::INSTANCE_CREATED,
                ApplyMode::Replace,
                &object(initial_state(i)),
            );
            tx.execute(sql::INSERT_KEY_SQL, params![event_id, id, 1, hash])?;
            tx.commit()?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// One task per client, each applying its share to its own instance; every transaction
    /// runs on the blocking pool once the writer lock is taken, as in `EmbeddedStore::write`.
    async fn apply_clients(&self, targets: &[String], per_client: &[usize]) -> Result<Measured> {
        self.apply_picked(targets, per_client, |c, _| c).await
    }

    /// As [`Self::apply_clients`], with client `c`'s call `i` going to `targets[pick(c, i)]`.
    pub(crate) async fn apply_picked(
        &self,
        targets: &[String],
        per_client: &[usize],
        pick: impl Fn(usize, usize) -> usize,
    ) -> Result<Measured> {
        let targets: Arc<Vec<Arc<String>>> =
            Arc::new(targets.iter().map(|t| Arc::new(t.clone())).collect());
        clients(per_client, |c| {
            let writer = self.writer.clone();
            let interval = self.interval;
            let picks: Vec<usize> = (0..per_client[c]).map(|i| pick(c, i)).collect();
            let targets = targets.clone();
            move |i| {
                let writer = writer.clone();
                let target = targets[picks[i]].clone();
                let patch = object(payload((c * 1_000_000 + i) as u64));
                async move {
                    let mut conn = writer.lock_owned().await;
                    tokio::task::spawn_blocking(move || {
                        raw_append(&mut conn, &target, &patch, interval)
                    })
                    .await?
                }
            }
        })
        .await
    }

    pub(crate) fn check_versions(&self, ids: &[String], expected: &[i64]) -> Result<()> {
        let conn = self.writer.try_lock()?;
        for (id, want) in ids.iter().zip(expected) {
            let (version, count, ids): (i64, i64, i64) = conn.query_row(
                "SELECT i.version, (SELECT count(*) FROM events e WHERE e.instance_id = i.id), \
                 (SELECT count(*) FROM event_ids k WHERE k.instance_id = i.id) \
                 FROM instances i WHERE i.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            ensure!(
                version == *want && count == *want && ids == *want,
                "raw instance {id} at version {version} with {count} events and {ids} event \
                 ids, expected {want} of each"
            );
        }
        Ok(())
    }
}

/// What `append_transaction` does for one merge-patch event without an idempotency key, with
/// the store's own statements.
fn raw_append(
    conn: &mut Connection,
    instance: &str,
    patch: &Map<String, Value>,
    interval: i64,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (type_id, version, state_text, updated_at): (String, i64, String, i64) = tx
        .prepare_cached(sql::HEAD_SQL)?
        .query_row([instance], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
        .context("raw instance missing")?;
    let state = object(serde_json::from_str(&state_text)?);
    let state = apply_event(&state, patch, ApplyMode::MergePatch)
        .map_err(|e| anyhow!("merge patch: {e}"))?;
    let hash = content_hash(EVENT_TYPE, ApplyMode::MergePatch, patch);
    let state_text = serde_json::to_string(&state)?;
    // recorded_at never decreases within an instance, as in the store.
    let recorded = now_micros().max(updated_at);
    let next = version + 1;
    let event_id = Uuid::now_v7().to_string();
    // The statement draws the event's global position and returns it, as in the store.
    let _position: i64 = tx.prepare_cached(sql::INSERT_EVENT_SQL)?.query_row(
        params![
            instance,
            next,
            event_id,
            type_id,
            EVENT_TYPE,
            serde_json::to_string(patch)?,
            "{}",
            ApplyMode::MergePatch.as_str(),
            recorded,
            recorded,
            "",
        ],
        |r| r.get(0),
    )?;
    tx.prepare_cached(sql::INSERT_KEY_SQL)?
        .execute(params![event_id, instance, next, hash])?;
    if next % interval == 0 {
        tx.prepare_cached(sql::INSERT_SNAPSHOT_SQL)?
            .execute(params![instance, next, state_text])?;
    }
    let updated = tx
        .prepare_cached(sql::MOVE_HEAD_SQL)?
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

/// One event row as fetched (`sql::EVENT_COLUMNS`): every column, undecoded.
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
            conn: Mutex::new(sql::connect(path, true)?),
        })
    }

    /// The store's `snapshot_and_tail` SQL in one read transaction; rows fetched, and when
    /// `fold`, decoded and folded into the state at `version`.
    fn state_at(&self, instance: &str, version: i64, fold: bool) -> Result<(usize, Option<Value>)> {
        let mut conn = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
        let tx = conn.transaction()?;
        let snapshot: Option<(i64, String)> = tx
            .prepare_cached(sql::SNAPSHOT_SQL)?
            .query_row(params![instance, version], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let from = snapshot.as_ref().map_or(1, |s| s.0);
        let tail: Vec<RawEvent> = tx
            .prepare_cached(&sql::tail_sql())?
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

    /// `samples` sequential reads after `samples_warmup`; checks the first folded state. Runs
    /// synchronously, as the store's blocking tasks do; the server is idle meanwhile.
    fn measure(
        &self,
        instance: &str,
        version: i64,
        fold: bool,
        args: &Args,
    ) -> Result<(Measured, usize)> {
        let reads = sample(args.samples_warmup, args.samples, || async {
            self.state_at(instance, version, fold)
        });
        let (m, (rows, state)) =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(reads))?;
        if let Some(state) = state {
            ensure!(
                state["score"] == json!(version),
                "raw state at version {version} does not have score {version}"
            );
        }
        Ok((m, rows))
    }
}
