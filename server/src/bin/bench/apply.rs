//! `apply`: ApplyEvent through the real server against the same SQL issued directly.
//!
//! Per event the server's PostgreSQL store runs `BEGIN`, the instance row's
//! `SELECT ... FOR UPDATE`, one `APPEND_SQL` statement and `COMMIT`. The direct baseline runs
//! exactly these on its own fresh database, through a deadpool pool of the same size, with the
//! same number of concurrent clients, and folds the merge patch in Rust: the same data work
//! minus gRPC, request validation, schema validation and protobuf conversion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
use tokio::sync::Barrier;
use tokio_postgres::types::ToSql;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::harness::{
    BenchDb, Measured, RunningServer, Table, backends, environment, fill_pool, fmt_rate, histogram,
    micros, pool, process_cpu, ratio, to_struct,
};
use crate::sql;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured events per configuration, split evenly over its clients.
    #[arg(long, default_value_t = 3000)]
    pub events: usize,
    /// Numbers of concurrent clients, each writing to its own instance.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients_list: Vec<usize>,
    /// Clients all writing to ONE instance (server only, contention case); 0 skips it.
    #[arg(long, default_value_t = 32)]
    pub contention_clients: usize,
    /// Connections in the server's pool (--pool-size) and in the direct baseline's pool.
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
    /// Unmeasured events per configuration, run first on the same instances.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Server and direct alternate this many times per client count, each time with
    /// events / rounds events.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub const TYPE_NAME: &str = "player_profile";
pub const EVENT_TYPE: &str = "ScoreChanged";

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "score": {"type": "integer", "minimum": 0},
            "level": {"type": "integer", "minimum": 1, "maximum": 100},
            "stats": {"type": "object", "properties": {"wins": {"type": "integer"}}}
        },
        "required": ["name", "score", "level"]
    })
}

pub fn initial_state(i: usize) -> Value {
    json!({"name": format!("player-{i}"), "score": 0, "level": 1})
}

pub fn payload(n: u64) -> Value {
    json!({"score": n, "level": n % 100 + 1})
}

/// `total` split over `clients` as evenly as possible.
pub fn split(total: usize, clients: usize) -> Vec<usize> {
    (0..clients)
        .map(|i| total / clients + usize::from(i < total % clients))
        .collect()
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.events >= args.rounds,
        "need 0 < --rounds <= --events"
    );
    ensure!(
        !args.clients_list.is_empty() && args.clients_list.iter().all(|&c| c > 0),
        "--clients-list needs positive numbers"
    );
    let server_db = BenchDb::create(admin_url).await?;
    let direct_db = match BenchDb::create(admin_url).await {
        Ok(db) => db,
        Err(e) => {
            server_db.drop_db().await?;
            return Err(e);
        }
    };
    let result = run_in(admin_url, &args, &server_db, &direct_db).await;
    let dropped = (server_db.drop_db().await, direct_db.drop_db().await);
    result?;
    dropped.0?;
    dropped.1?;
    Ok(())
}

/// A measured run and the CPU this whole process (bench clients plus in-process server) used.
pub struct Timed {
    pub m: Measured,
    pub cpu: Duration,
}

impl Timed {
    fn empty() -> Self {
        Self {
            m: Measured::empty(),
            cpu: Duration::ZERO,
        }
    }

    fn absorb(&mut self, other: Timed) -> Result<()> {
        self.cpu += other.cpu;
        self.m.absorb(other.m)
    }

    /// Process CPU microseconds per event.
    fn cpu_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.m.ops.max(1) as f64
    }
}

struct Row {
    clients: usize,
    instances: usize,
    path: &'static str,
    t: Timed,
}

async fn run_in(
    admin_url: &str,
    args: &Args,
    server_db: &BenchDb,
    direct_db: &BenchDb,
) -> Result<()> {
    let pool_size = args.pool_size.to_string();
    let server = RunningServer::start(&server_db.url, &["--pool-size", &pool_size]).await?;
    let result = measure(admin_url, args, &server, direct_db).await;
    let stopped = server.stop().await;
    result?;
    stopped
}

async fn measure(
    admin_url: &str,
    args: &Args,
    server: &RunningServer,
    direct_db: &BenchDb,
) -> Result<()> {
    let env = environment(admin_url).await?;
    let interval = server.config.snapshot_interval;
    let most_clients = args
        .clients_list
        .iter()
        .copied()
        .chain([args.contention_clients])
        .max()
        .unwrap_or(1);
    // One HTTP/2 connection per client, as separate client processes would have.
    let mut channels = Vec::with_capacity(most_clients);
    for _ in 0..most_clients {
        channels.push(server.channel().await?);
    }
    let type_id = create_type_via_server(&channels[0]).await?;

    // The baseline database gets the server's schema from the server's own migrations.
    let store = PgStore::new(&PgStoreConfig {
        url: direct_db.url.clone(),
        pool_size: 1,
        snapshot_interval: interval,
        connect_timeout: Duration::from_secs(5),
    })?;
    store.migrate().await.context("migrating the baseline db")?;
    drop(store);
    let direct_pool = pool(&direct_db.url, args.pool_size)?;
    fill_pool(&direct_pool, args.pool_size).await?;
    let direct_type = create_type_direct(&direct_pool).await?;

    let mut rows = Vec::new();
    let mut checks = 0;
    for (config_no, &clients) in args.clients_list.iter().enumerate() {
        let prefix = format!("c{config_no}");
        let warm = split(args.warmup, clients);
        let server_ids =
            create_instances_via_server(&channels[0], &type_id, &prefix, clients).await?;
        let direct_ids =
            create_instances_direct(&direct_pool, direct_type, &prefix, clients).await?;
        server_clients(&channels[..clients], &server_ids, &warm).await?;
        direct_clients(&direct_pool, &direct_ids, &warm, interval).await?;

        // Server and direct take turns, so a slow spell of the shared disk or CPUs hits both.
        let mut server_m = Timed::empty();
        let mut direct_m = Timed::empty();
        let mut applied = warm.clone();
        for round in 0..args.rounds {
            let share = args.events / args.rounds + usize::from(round < args.events % args.rounds);
            let measured = split(share, clients);
            server_m.absorb(server_clients(&channels[..clients], &server_ids, &measured).await?)?;
            direct_m
                .absorb(direct_clients(&direct_pool, &direct_ids, &measured, interval).await?)?;
            for (a, n) in applied.iter_mut().zip(&measured) {
                *a += n;
            }
        }
        let expected: Vec<i64> = applied.iter().map(|n| 1 + *n as i64).collect();
        check_server_versions(&channels[0], &server_ids, &expected).await?;
        check_direct_versions(&direct_pool, &direct_ids, &expected).await?;
        checks += 2 * clients;
        rows.push(Row {
            clients,
            instances: clients,
            path: "server",
            t: server_m,
        });
        rows.push(Row {
            clients,
            instances: clients,
            path: "direct",
            t: direct_m,
        });
    }

    let mut bystander_line = None;
    if args.contention_clients > 0 {
        let clients = args.contention_clients;
        let ids = create_instances_via_server(&channels[0], &type_id, "hot", 1).await?;
        let targets = vec![ids[0].clone(); clients];
        let warm = split(args.warmup, clients);
        let measured = split(args.events, clients);
        server_clients(&channels[..clients], &targets, &warm).await?;
        // A bystander writes to another instance meanwhile: does the hot row starve it?
        let bystander = create_instances_via_server(&channels[0], &type_id, "calm", 1).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let probe = tokio::spawn(bystander_probe(
            server.channel().await?,
            bystander[0].clone(),
            stop.clone(),
        ));
        let t = server_clients(&channels[..clients], &targets, &measured).await?;
        stop.store(true, Ordering::Relaxed);
        let probe = probe.await??;
        let expected = 1 + (args.warmup + args.events) as i64;
        check_server_versions(&channels[0], &ids, &[expected]).await?;
        check_server_versions(&channels[0], &bystander, &[1 + probe.len() as i64]).await?;
        bystander_line = Some(format!(
            "meanwhile 1 more client on its own instance: {} events, p50 {} µs, p99 {} µs",
            probe.len(),
            probe.value_at_quantile(0.5),
            probe.value_at_quantile(0.99)
        ));
        checks += 2;
        rows.push(Row {
            clients,
            instances: 1,
            path: "server",
            t,
        });
    }

    println!(
        "== apply: ApplyEvent, merge patch {{score, level}} on {TYPE_NAME} (schema-validated) =="
    );
    println!("{env}");
    println!("{}", sql::drift_line());
    println!(
        "server on {}, pool {} = direct pool {}; snapshot interval {interval}; {} measured events per row in {} alternating rounds, after {} warm-up; one HTTP/2 connection per client",
        backends(&server.config),
        server.config.pool_size,
        args.pool_size,
        args.events,
        args.rounds,
        args.warmup
    );
    let mut table = Table::new(&[
        "path",
        "clients",
        "instances",
        "events",
        "events/s",
        "p50 µs",
        "p99 µs",
        "cpu µs/ev",
    ]);
    for r in &rows {
        table.row(vec![
            r.path.to_string(),
            r.clients.to_string(),
            r.instances.to_string(),
            r.t.m.ops.to_string(),
            fmt_rate(r.t.m.per_sec()),
            r.t.m.p50().to_string(),
            r.t.m.p99().to_string(),
            format!("{:.0}", r.t.cpu_per_op()),
        ]);
    }
    table.print();
    for &clients in &args.clients_list {
        let find = |path: &str| {
            rows.iter()
                .find(|r| r.clients == clients && r.instances == clients && r.path == path)
        };
        if let (Some(s), Some(d)) = (find("server"), find("direct")) {
            println!(
                "ratio server/direct throughput ({clients} client{}) = {}   (p50 latency {}, p99 latency {})",
                if clients == 1 { "" } else { "s" },
                ratio(s.t.m.per_sec(), d.t.m.per_sec()),
                ratio(s.t.m.p50() as f64, d.t.m.p50() as f64),
                ratio(s.t.m.p99() as f64, d.t.m.p99() as f64),
            );
        }
    }
    if args.contention_clients > 0 {
        let c = args.contention_clients;
        let hot = rows.iter().find(|r| r.instances == 1 && r.clients == c);
        let spread = rows
            .iter()
            .find(|r| r.path == "server" && r.clients == c && r.instances == c);
        if let (Some(h), Some(s)) = (hot, spread) {
            println!(
                "ratio server one-instance/own-instances throughput ({c} clients) = {}",
                ratio(h.t.m.per_sec(), s.t.m.per_sec())
            );
        }
    }
    if let Some(line) = bystander_line {
        println!("{line}");
    }
    println!(
        "(cpu µs/ev = CPU of this process, bench clients plus in-process server, per event; PostgreSQL's own CPU not included)"
    );
    println!(
        "checked: all {checks} instances written (server via GetInstance, direct via SQL) are at version 1 + events applied"
    );
    Ok(())
}

async fn create_type_via_server(channel: &Channel) -> Result<String> {
    let mut types = EntityTypeServiceClient::new(channel.clone());
    let created = types
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: TYPE_NAME.into(),
            description: "benchmark player profile".into(),
            schema: Some(to_struct(schema())),
        })
        .await?
        .into_inner();
    Ok(created.entity_type.context("no entity type")?.id)
}

pub async fn create_instances_via_server(
    channel: &Channel,
    type_id: &str,
    prefix: &str,
    n: usize,
) -> Result<Vec<String>> {
    let mut instances = InstanceServiceClient::new(channel.clone());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let created = instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: type_id.into(),
                external_id: format!("{prefix}-{i}"),
                initial_state: Some(to_struct(initial_state(i))),
                metadata: None,
            })
            .await?
            .into_inner();
        ids.push(created.instance.context("no instance")?.id);
    }
    Ok(ids)
}

/// Each client applies its share of events to its target, one call after the other.
pub async fn server_clients(
    channels: &[Channel],
    targets: &[String],
    per_client: &[usize],
) -> Result<Timed> {
    let barrier = Arc::new(Barrier::new(channels.len() + 1));
    let mut tasks = Vec::with_capacity(channels.len());
    for (c, channel) in channels.iter().enumerate() {
        let mut client = EventServiceClient::new(channel.clone());
        let target = targets[c].clone();
        let n = per_client[c];
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            barrier.wait().await;
            for i in 0..n {
                let request = pb::ApplyEventRequest {
                    instance_id: target.clone(),
                    event_type: EVENT_TYPE.into(),
                    payload: Some(to_struct(payload((c * 1_000_000 + i) as u64))),
                    ..Default::default()
                };
                let t = Instant::now();
                client.apply_event(request).await?;
                hist.record(micros(t.elapsed()))?;
            }
            anyhow::Ok(hist)
        }));
    }
    join_clients(barrier, tasks).await
}

/// Applies events to `target` one after the other until told to stop.
async fn bystander_probe(
    channel: Channel,
    target: String,
    stop: Arc<AtomicBool>,
) -> Result<hdrhistogram::Histogram<u64>> {
    let mut client = EventServiceClient::new(channel);
    let mut hist = histogram();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let request = pb::ApplyEventRequest {
            instance_id: target.clone(),
            event_type: EVENT_TYPE.into(),
            payload: Some(to_struct(payload(n))),
            ..Default::default()
        };
        let t = Instant::now();
        client.apply_event(request).await?;
        hist.record(micros(t.elapsed()))?;
        n += 1;
    }
    Ok(hist)
}

async fn join_clients(
    barrier: Arc<Barrier>,
    tasks: Vec<tokio::task::JoinHandle<Result<hdrhistogram::Histogram<u64>>>>,
) -> Result<Timed> {
    barrier.wait().await;
    let start = Instant::now();
    let cpu = process_cpu();
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    Ok(Timed {
        m: Measured {
            ops: latency.len(),
            elapsed: start.elapsed(),
            latency,
        },
        cpu: process_cpu().saturating_sub(cpu),
    })
}

pub async fn check_server_versions(
    channel: &Channel,
    ids: &[String],
    expected: &[i64],
) -> Result<()> {
    let mut instances = InstanceServiceClient::new(channel.clone());
    for (id, want) in ids.iter().zip(expected) {
        let got = instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
            })
            .await?
            .into_inner()
            .instance
            .context("no instance")?
            .version;
        ensure!(
            got == *want,
            "server instance {id} at version {got}, expected {want}"
        );
    }
    Ok(())
}

async fn create_type_direct(pool: &Pool) -> Result<Uuid> {
    let client = pool.get().await?;
    let id = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO entity_types (id, name, description, schema, created_at) \
             VALUES ($1, $2, '', $3, now())",
            &[&id, &TYPE_NAME, &schema()],
        )
        .await?;
    Ok(id)
}

async fn create_instances_direct(
    pool: &Pool,
    type_id: Uuid,
    prefix: &str,
    n: usize,
) -> Result<Vec<Uuid>> {
    let client = pool.get().await?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::now_v7();
        let state = initial_state(i);
        client
            .execute(
                "WITH i AS (
                    INSERT INTO instances (id, entity_type_id, external_id, state, version,
                                           created_at, updated_at)
                    VALUES ($1, $2, $3, $4, 1, now(), now())
                )
                INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type,
                                    payload, metadata, mode, recorded_at, occurred_at)
                VALUES ($1, 1, $5, $2, 'InstanceCreated', $4, '{}', 'replace', now(), now())",
                &[
                    &id,
                    &type_id,
                    &format!("{prefix}-{i}"),
                    &state,
                    &Uuid::now_v7().to_string(),
                ],
            )
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

async fn direct_clients(
    pool: &Pool,
    targets: &[Uuid],
    per_client: &[usize],
    interval: i64,
) -> Result<Timed> {
    let barrier = Arc::new(Barrier::new(targets.len() + 1));
    let mut tasks = Vec::with_capacity(targets.len());
    for (c, &target) in targets.iter().enumerate() {
        let pool = pool.clone();
        let n = per_client[c];
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            barrier.wait().await;
            for i in 0..n {
                let patch = payload((c * 1_000_000 + i) as u64);
                let t = Instant::now();
                direct_apply(&pool, target, patch, interval).await?;
                hist.record(micros(t.elapsed()))?;
            }
            anyhow::Ok(hist)
        }));
    }
    join_clients(barrier, tasks).await
}

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// What `PgStore::try_append` sends for one merge-patch event without an idempotency key.
async fn direct_apply(pool: &Pool, instance: Uuid, patch: Value, interval: i64) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(sql::LOCK_SQL).await?;
    let row = tx.query_one(&lock, &[&instance]).await?;
    let entity_type_id: Uuid = row.get(0);
    let version: i64 = row.get(1);
    let mut state: Value = row.get(2);
    let updated_at: DateTime<Utc> = row.get(3);

    merge(&mut state, &patch);
    let recorded_at = now_micros().max(updated_at);
    let next = version + 1;
    let versions = vec![next];
    let ids = vec![Uuid::now_v7().to_string()];
    let types = vec![EVENT_TYPE.to_string()];
    let payloads = vec![patch];
    let metadata = vec![json!({})];
    let modes = vec!["merge_patch"];
    let occurred = vec![recorded_at];
    let key_ids: Vec<&str> = Vec::new();
    let key_versions: Vec<i64> = Vec::new();
    let (snap_versions, snap_states) = if next % interval == 0 {
        (vec![next], vec![state.clone()])
    } else {
        (Vec::new(), Vec::new())
    };
    let write = tx.prepare_cached(sql::APPEND_SQL).await?;
    // $18: whether the transactional outbox is written; off unless publication is enabled,
    // which the benchmark's server does not configure.
    let outbox = false;
    let params: [&(dyn ToSql + Sync); 18] = [
        &instance,
        &entity_type_id,
        &recorded_at,
        &versions,
        &ids,
        &types,
        &payloads,
        &metadata,
        &modes,
        &occurred,
        &key_ids,
        &key_versions,
        &snap_versions,
        &snap_states,
        &next,
        &state,
        &version,
        &outbox,
    ];
    let updated = tx.execute(&write, &params).await?;
    if updated != 1 {
        bail!("instance {instance} changed under its lock");
    }
    tx.commit().await?;
    Ok(())
}

async fn check_direct_versions(pool: &Pool, ids: &[Uuid], expected: &[i64]) -> Result<()> {
    let client = pool.get().await?;
    for (id, want) in ids.iter().zip(expected) {
        let row = client
            .query_one(
                "SELECT i.version, (SELECT count(*) FROM events e WHERE e.instance_id = i.id) \
                 FROM instances i WHERE i.id = $1",
                &[id],
            )
            .await?;
        let (version, count): (i64, i64) = (row.get(0), row.get(1));
        ensure!(
            version == *want && count == *want,
            "direct instance {id} at version {version} with {count} events, expected {want}"
        );
    }
    Ok(())
}
