//! `apply`: ApplyEvent through the real server against the same SQL issued directly.
//!
//! Per event (no idempotency key) the server's PostgreSQL store runs `BEGIN`, the instance
//! row's `SELECT ... FOR UPDATE` (`sql::LOCK_HEAD_SQL`), one `sql::APPEND_SQL` statement (the
//! event, its id with its content hash, a snapshot at multiples of the interval, the head's
//! compare-and-set) and `COMMIT`. The direct baseline issues exactly these statements, the
//! server's own text (`temporal_state_server::adapters::postgres::sql`), on its own fresh
//! database migrated by the server's migrations, through a pool built by the server's own code
//! (same statement_timeout and connect timeout) of the same size, with the same number of
//! concurrent clients; it folds the merge patch and hashes the content with the domain's own
//! functions. What the ratio measures is therefore the server's overhead over the same durable
//! work: gRPC, request and JSON Schema validation, protobuf conversion and the application.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_server::adapters::postgres::sql;
use temporal_state_server::domain::idempotency::content_hash;
use temporal_state_server::domain::{ApplyMode, EventType, State, apply_event};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::harness::{
    Measured, RunningServer, Table, backends, baseline_store, clients, environment, fmt_rate,
    histogram, micros, ratio, split, to_struct, with_dbs,
};

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

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.events >= args.rounds,
        "need 0 < --rounds <= --events"
    );
    ensure!(
        !args.clients_list.is_empty() && args.clients_list.iter().all(|&c| c > 0),
        "--clients-list needs positive numbers"
    );
    with_dbs(admin_url, 2, |urls| async move {
        let pool_size = args.pool_size.to_string();
        let server = RunningServer::postgres(&urls[0], &["--pool-size", &pool_size]).await?;
        let result = measure(admin_url, &args, &server, &urls[1]).await;
        server.stop_after(result).await
    })
    .await
}

struct Row {
    clients: usize,
    instances: usize,
    path: &'static str,
    t: Measured,
}

async fn measure(
    admin_url: &str,
    args: &Args,
    server: &RunningServer,
    direct_url: &str,
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
    let channels = server.channels(most_clients).await?;
    let type_id = create_type_via_server(&channels[0]).await?;

    // The baseline database gets the server's schema from the server's own migrations.
    let store = baseline_store(direct_url, args.pool_size, &server.config).await?;
    store.migrate().await.context("migrating the baseline db")?;
    let direct_pool = store.pool().clone();
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
        let mut server_m = Measured::empty();
        let mut direct_m = Measured::empty();
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
    println!(
        "direct = the store's own statements (adapters::postgres::sql: LOCK_HEAD_SQL, APPEND_SQL) on a pool built by PgStore, content hash and merge patch by the domain's functions"
    );
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
            r.t.ops.to_string(),
            fmt_rate(r.t.per_sec()),
            r.t.p50().to_string(),
            r.t.p99().to_string(),
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
                ratio(s.t.per_sec(), d.t.per_sec()),
                ratio(s.t.p50() as f64, d.t.p50() as f64),
                ratio(s.t.p99() as f64, d.t.p99() as f64),
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
                ratio(h.t.per_sec(), s.t.per_sec())
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
        "checked: all {checks} instances written (server via GetInstance, direct via SQL) are at version 1 + events applied (direct: with as many events and event ids)"
    );
    Ok(())
}

async fn create_type_via_server(channel: &Channel) -> Result<String> {
    let mut types = EntityTypeServiceClient::new(channel.clone());
    let created = types
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
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
) -> Result<Measured> {
    clients(per_client, |c| {
        let client = EventServiceClient::new(channels[c].clone());
        let target = targets[c].clone();
        move |i| {
            let mut client = client.clone();
            let request = pb::ApplyEventRequest {
                instance_id: target.clone(),
                event_type: EVENT_TYPE.into(),
                payload: Some(to_struct(payload((c * 1_000_000 + i) as u64))),
                ..Default::default()
            };
            async move {
                client.apply_event(request).await?;
                Ok(())
            }
        }
    })
    .await
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

pub async fn create_type_direct(pool: &Pool) -> Result<Uuid> {
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

pub async fn create_instances_direct(
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
        // What the server's creation stores (not measured): the instance, its first event and
        // that event's id with its content hash.
        let hash = content_hash(
            EventType::INSTANCE_CREATED,
            ApplyMode::Replace,
            &object(state.clone()),
        );
        client
            .execute(
                "WITH i AS (
                    INSERT INTO instances (id, entity_type_id, external_id, state, version,
                                           created_at, updated_at)
                    VALUES ($1, $2, $3, $4, 1, now(), now())
                ), k AS (
                    INSERT INTO event_ids (event_id, instance_id, version, content_hash)
                    VALUES ($5, $1, 1, $6)
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
                    &hash,
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
) -> Result<Measured> {
    clients(per_client, |c| {
        let pool = pool.clone();
        let target = targets[c];
        move |i| {
            let pool = pool.clone();
            let patch = object(payload((c * 1_000_000 + i) as u64));
            async move { direct_apply(&pool, target, patch, interval).await }
        }
    })
    .await
}

pub fn object(v: Value) -> State {
    match v {
        Value::Object(map) => map,
        _ => State::new(),
    }
}

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// What `PgStore::try_append` sends for one merge-patch event without an idempotency key: the
/// store's own two statements, with the parameters it computes (the merge patch folded by the
/// domain's `apply_event`, the content hash by the domain's `content_hash`).
async fn direct_apply(pool: &Pool, instance: Uuid, patch: State, interval: i64) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(sql::LOCK_HEAD_SQL).await?;
    let row = tx.query_one(&lock, &[&instance]).await?;
    let entity_type_id: Uuid = row.get(0);
    let version: i64 = row.get(1);
    let state = object(row.get(2));
    let updated_at: DateTime<Utc> = row.get(3);

    let state = Value::Object(
        apply_event(&state, &patch, ApplyMode::MergePatch)
            .map_err(|e| anyhow::anyhow!("merge patch: {e}"))?,
    );
    let hash = content_hash(EVENT_TYPE, ApplyMode::MergePatch, &patch);
    // recorded_at never decreases within an instance, as in the store.
    let recorded_at = now_micros().max(updated_at);
    let next = version + 1;
    let event_id = Uuid::now_v7().to_string();
    // The benchmark's server does not enable publication, so no outbox row either.
    let mut params = sql::AppendParams::new(instance, entity_type_id, recorded_at, version, false);
    params.last_version = next;
    params.push_event(
        next,
        &event_id,
        EVENT_TYPE,
        Value::Object(patch),
        json!({}),
        ApplyMode::MergePatch,
        recorded_at,
        hash,
    );
    if next % interval == 0 {
        params.push_snapshot(next, state.clone());
    }
    params.state = state;
    let updated = params.execute(&tx).await?;
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
                "SELECT i.version, (SELECT count(*) FROM events e WHERE e.instance_id = i.id), \
                 (SELECT count(*) FROM event_ids k WHERE k.instance_id = i.id) \
                 FROM instances i WHERE i.id = $1",
                &[id],
            )
            .await?;
        let (version, count, ids): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        ensure!(
            version == *want && count == *want && ids == *want,
            "direct instance {id} at version {version} with {count} events and {ids} event ids, \
             expected {want} of each"
        );
    }
    Ok(())
}
