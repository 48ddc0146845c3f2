//! `write`: write throughput as issue 13 measures it. 1,000 instances; every call one
//! `ScoreIncreased` merge patch `{"score": n}` with `expected_version`, sent by clients that
//! each own a share of the instances (so each knows its instances' versions) and cycle through
//! them. 1 and 32 clients, against:
//!
//! - the server on PostgreSQL only (server defaults: pool size and all);
//! - the server on PostgreSQL + Redis + NATS (skipped with `--no-full-stack`);
//! - the hand-written durable append with tokio-postgres, in-process, on its own database
//!   migrated by the server's migrations, with a pool sized to the client count:
//!   `BEGIN`, `UPDATE instances SET version = version + 1 WHERE id = $1 AND version = $2
//!   RETURNING version`, `INSERT` the event, `COMMIT`;
//! - the server on the embedded store (skipped with `--no-embedded`), next to raw rusqlite doing
//!   the same work over as many instances with the store's own statements, one transaction
//!   (one fsync) per event (`embedded::RawStore`).
//!
//! The paths take turns in rounds, so a slow spell of the shared disk or CPUs hits all of them;
//! the embedded store and raw rusqlite, which share the disk's fsyncs, alternate which goes
//! first. Every instance's version is checked at the end on every path. Then `write_scale`
//! compares `ApplyEvents` batches with single calls, and append latency on a store holding
//! `--stored-events` events with an empty one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result, ensure};
use deadpool_postgres::Pool;
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::apply::{check_server_versions, create_instances_direct, create_type_direct, schema};
use crate::embedded::RawStore;
use crate::harness::{
    Measured, RunningServer, Services, Table, baseline_store, clients, environment, fmt_rate,
    ratio, split, to_struct, with_dbs, with_dir,
};
use crate::write_scale;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured events per configuration and path, split evenly over its clients.
    #[arg(long, default_value_t = 6000)]
    pub events: usize,
    /// Numbers of concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients_list: Vec<usize>,
    /// Instances written to, spread over the clients.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Unmeasured events per configuration and path, run first.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// The paths take turns this many times per client count.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the server on PostgreSQL + Redis + NATS.
    #[arg(long)]
    pub no_full_stack: bool,
    /// Skip the embedded store and its raw rusqlite baseline.
    #[arg(long)]
    pub no_embedded: bool,
    /// Events per ApplyEvents call in the batch comparison (0 skips it).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Events applied by each side of the batch comparison (single calls and batches), one
    /// client.
    #[arg(long, default_value_t = 3000)]
    pub batch_events: usize,
    /// Events stored before the append-latency comparison against an empty store (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub stored_events: i64,
    /// Sequential ApplyEvent calls timed on each of the two stores of that comparison.
    #[arg(long, default_value_t = 2000)]
    pub stored_samples: usize,
    /// Where the embedded store's DATA_DIRs are created (and removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: std::path::PathBuf,
    #[command(flatten)]
    pub services: Services,
}

pub const EVENT_TYPE: &str = "ScoreIncreased";

/// The instances one path writes to, with the versions its clients know them at.
pub(crate) struct Targets {
    pub(crate) ids: Vec<String>,
    pub(crate) versions: Arc<Vec<AtomicI64>>,
}

impl Targets {
    pub(crate) fn new(ids: Vec<String>) -> Self {
        let versions = Arc::new(ids.iter().map(|_| AtomicI64::new(1)).collect());
        Self { ids, versions }
    }

    /// Client `c` of `n` owns instances `c, c + n, c + 2n, ...`; its call `i` goes to the
    /// `i`-th of them, round the cycle.
    pub(crate) fn pick(&self, c: usize, n: usize, i: usize) -> usize {
        let owned = (self.ids.len() - c).div_ceil(n);
        c + (i % owned) * n
    }

    pub(crate) fn expected(&self) -> Vec<i64> {
        self.versions
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .collect()
    }
}

struct Row {
    path: &'static str,
    clients: usize,
    t: Measured,
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.events >= args.rounds,
        "need 0 < --rounds <= --events"
    );
    ensure!(
        args.clients_list
            .iter()
            .all(|&c| c > 0 && c <= args.instances),
        "--clients-list needs positive numbers, at most --instances"
    );
    ensure!(
        args.batch == 0 || args.batch_events >= args.batch,
        "--batch-events must be at least --batch"
    );
    let stream = format!("TSE_BENCH_{}", Uuid::new_v4().simple());
    let args = &args;
    let stream_name = stream.clone();
    let result = with_dbs(admin_url, 3, |urls| async move {
        with_dir(&args.dir, "write", move |root| async move {
            let plain = RunningServer::postgres_only(&urls[0], &[]).await?;
            let full = if args.no_full_stack {
                None
            } else {
                let server = RunningServer::postgres(
                    &urls[2],
                    &[
                        "--redis-url",
                        &args.services.redis_url,
                        "--nats-url",
                        &args.services.nats_url,
                        "--nats-stream",
                        &stream_name,
                    ],
                )
                .await;
                match server {
                    Ok(s) => Some(s),
                    Err(e) => return plain.stop_after(Err(e)).await,
                }
            };
            let embedded = if args.no_embedded {
                None
            } else {
                match RunningServer::embedded(&root.join("server")).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        let result = plain.stop_after(Err(e)).await;
                        return match full {
                            Some(full) => full.stop_after(result).await,
                            None => result,
                        };
                    }
                }
            };
            let servers = Servers {
                plain: &plain,
                full: full.as_ref(),
                embedded: embedded.as_ref(),
            };
            let result = measure(admin_url, args, servers, &urls[1], &root).await;
            let result = plain.stop_after(result).await;
            let result = match full {
                Some(full) => full.stop_after(result).await,
                None => result,
            };
            match embedded {
                Some(embedded) => embedded.stop_after(result).await,
                None => result,
            }
        })
        .await
    })
    .await;
    if !args.no_full_stack
        && let Ok(client) = async_nats::connect(&args.services.nats_url).await
    {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
    let result = result.and(Ok(()));
    if result.is_ok() && args.stored_events > 0 {
        return crate::write_scale::stored_events(admin_url, args).await;
    }
    result
}

/// The servers the main table measures.
#[derive(Clone, Copy)]
struct Servers<'a> {
    plain: &'a RunningServer,
    full: Option<&'a RunningServer>,
    embedded: Option<&'a RunningServer>,
}

async fn measure(
    admin_url: &str,
    args: &Args,
    servers: Servers<'_>,
    direct_url: &str,
    root: &Path,
) -> Result<()> {
    let Servers {
        plain,
        full,
        embedded,
    } = servers;
    let env = environment(admin_url).await?;
    let most = args.clients_list.iter().copied().max().unwrap_or(1);

    let plain_channels = plain.channels(most).await?;
    eprintln!(
        "loading {} instances on the server (PostgreSQL only)",
        args.instances
    );
    let plain_targets = Targets::new(load_server(&plain_channels[0], args.instances).await?);
    let full_setup = match full {
        Some(server) => {
            let channels = server.channels(most).await?;
            eprintln!(
                "loading {} instances on the server (PostgreSQL + Redis + NATS)",
                args.instances
            );
            let targets = Targets::new(load_server(&channels[0], args.instances).await?);
            Some((channels, targets))
        }
        None => None,
    };
    let embedded_setup = match embedded {
        Some(server) => {
            let channels = server.channels(most).await?;
            eprintln!(
                "loading {} instances on the server (embedded store) and on raw rusqlite",
                args.instances
            );
            let targets = Targets::new(load_server(&channels[0], args.instances).await?);
            let raw = RawStore::create(&root.join("raw"), server.config.snapshot_interval)?;
            let raw_ids = raw.create_instances("w", args.instances)?;
            Some((channels, targets, raw, raw_ids))
        }
        None => None,
    };
    eprintln!(
        "loading {} instances on the baseline database",
        args.instances
    );
    let store = baseline_store(direct_url, most, &plain.config).await?;
    store.migrate().await.context("migrating the baseline db")?;
    // The hand-written event store keeps no analytics rollups: its events table goes without
    // the server's triggers, so the baseline is the plain durable append.
    store
        .pool()
        .get()
        .await?
        .batch_execute(
            "DROP TRIGGER IF EXISTS event_rollups_insert ON events;
             DROP TRIGGER IF EXISTS event_rollups_delete ON events;
             DROP TRIGGER IF EXISTS event_rollups_update ON events;",
        )
        .await
        .context("dropping the rollup triggers from the baseline db")?;
    let direct_type = create_type_direct(store.pool()).await?;
    let direct_ids =
        create_instances_direct(store.pool(), direct_type, "w", args.instances).await?;
    let direct_targets = Targets::new(direct_ids.iter().map(Uuid::to_string).collect());
    // Events each raw rusqlite instance received, to check its versions at the end.
    let raw_applied: Vec<AtomicI64> = (0..args.instances).map(|_| AtomicI64::new(0)).collect();

    let mut rows = Vec::new();
    for &n in &args.clients_list {
        // The hand-written loop's pool is sized to the client count.
        let pool = baseline_store(direct_url, n, &plain.config)
            .await?
            .pool()
            .clone();
        let warm = split(args.warmup, n);
        eprintln!("{n} client(s): warm-up");
        server_clients(&plain_channels[..n], &plain_targets, &warm).await?;
        if let Some((channels, targets)) = &full_setup {
            server_clients(&channels[..n], targets, &warm).await?;
        }
        if let Some((channels, targets, raw, raw_ids)) = &embedded_setup {
            server_clients(&channels[..n], targets, &warm).await?;
            raw_clients(raw, raw_ids, &raw_applied, &warm).await?;
        }
        direct_clients(&pool, direct_type, &direct_targets, &warm).await?;

        let mut plain_m = Measured::empty();
        let mut full_m = Measured::empty();
        let mut embedded_m = Measured::empty();
        let mut raw_m = Measured::empty();
        let mut direct_m = Measured::empty();
        for round in 0..args.rounds {
            eprintln!("{n} client(s): round {}/{}", round + 1, args.rounds);
            let share = args.events / args.rounds + usize::from(round < args.events % args.rounds);
            let measured = split(share, n);
            direct_m
                .absorb(direct_clients(&pool, direct_type, &direct_targets, &measured).await?)?;
            plain_m
                .absorb(server_clients(&plain_channels[..n], &plain_targets, &measured).await?)?;
            if let Some((channels, targets)) = &full_setup {
                full_m.absorb(server_clients(&channels[..n], targets, &measured).await?)?;
            }
            if let Some((channels, targets, raw, raw_ids)) = &embedded_setup {
                // Alternate which of the two goes first: they share the disk's fsyncs.
                for server_turn in [round % 2 == 0, round % 2 == 1] {
                    if server_turn {
                        embedded_m
                            .absorb(server_clients(&channels[..n], targets, &measured).await?)?;
                    } else {
                        raw_m.absorb(raw_clients(raw, raw_ids, &raw_applied, &measured).await?)?;
                    }
                }
            }
        }
        rows.push(Row {
            path: HAND_WRITTEN,
            clients: n,
            t: direct_m,
        });
        rows.push(Row {
            path: PLAIN,
            clients: n,
            t: plain_m,
        });
        if full_setup.is_some() {
            rows.push(Row {
                path: FULL,
                clients: n,
                t: full_m,
            });
        }
        if embedded_setup.is_some() {
            rows.push(Row {
                path: EMBEDDED,
                clients: n,
                t: embedded_m,
            });
            rows.push(Row {
                path: RAW_SQLITE,
                clients: n,
                t: raw_m,
            });
        }
    }
    let rss = resident_mb();

    // ApplyEvents of `--batch` against single calls, on the same instances (their versions are
    // tracked by the same targets, so the checks below cover these events too).
    let mut batches = Vec::new();
    if args.batch > 0 {
        eprintln!("batches of {} against single calls", args.batch);
        batches.push((
            PLAIN,
            write_scale::batch_vs_single(&plain_channels[0], &plain_targets, args).await?,
        ));
        if let Some((channels, targets, _, _)) = &embedded_setup {
            batches.push((
                EMBEDDED,
                write_scale::batch_vs_single(&channels[0], targets, args).await?,
            ));
        }
    }

    check_server_versions(
        &plain_channels[0],
        &plain_targets.ids,
        &plain_targets.expected(),
    )
    .await?;
    if let Some((channels, targets)) = &full_setup {
        check_server_versions(&channels[0], &targets.ids, &targets.expected()).await?;
    }
    if let Some((channels, targets, raw, raw_ids)) = &embedded_setup {
        check_server_versions(&channels[0], &targets.ids, &targets.expected()).await?;
        let expected: Vec<i64> = raw_applied
            .iter()
            .map(|a| 1 + a.load(Ordering::Relaxed))
            .collect();
        raw.check_versions(raw_ids, &expected)?;
    }
    check_direct(store.pool(), &direct_ids, &direct_targets.expected()).await?;

    println!(
        "== write: ApplyEvent {EVENT_TYPE} merge patch with expected_version over {} instances ==",
        args.instances
    );
    println!("{env}");
    println!(
        "server defaults (pool {}); hand-written: BEGIN, UPDATE ... version = version + 1 WHERE version = $2, INSERT event, COMMIT on a pool of as many connections as clients; raw rusqlite: the embedded store's own statements, one IMMEDIATE transaction (one fsync) per event on one writer connection; {} measured events per row in {} rounds, after {} warm-up; one HTTP/2 connection per client",
        plain.config.pool_size, args.events, args.rounds, args.warmup
    );
    let mut table = Table::new(&[
        "path",
        "clients",
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
            r.t.ops.to_string(),
            fmt_rate(r.t.per_sec()),
            r.t.p50().to_string(),
            r.t.p99().to_string(),
            format!("{:.0}", r.t.cpu_per_op()),
        ]);
    }
    table.print();
    let rate = |path: &str, n: usize| {
        rows.iter()
            .find(|r| r.clients == n && r.path == path)
            .map(|r| r.t.per_sec())
    };
    for &n in &args.clients_list {
        let mut parts = Vec::new();
        if let (Some(direct), Some(plain)) = (rate(HAND_WRITTEN, n), rate(PLAIN, n)) {
            parts.push(format!(
                "server PostgreSQL only / hand-written = {}",
                ratio(plain, direct)
            ));
            if let Some(full) = rate(FULL, n) {
                parts.push(format!(
                    "PostgreSQL + Redis + NATS / PostgreSQL only = {}",
                    ratio(full, plain)
                ));
            }
        }
        if let (Some(embedded), Some(raw)) = (rate(EMBEDDED, n), rate(RAW_SQLITE, n)) {
            parts.push(format!(
                "embedded / raw rusqlite = {}",
                ratio(embedded, raw)
            ));
        }
        if let (Some(embedded), Some(one)) = (rate(EMBEDDED, n), rate(EMBEDDED, 1))
            && n > 1
        {
            parts.push(format!(
                "embedded / its 1-client rate = {}",
                ratio(embedded, one)
            ));
        }
        println!("{n} client(s): {}", parts.join("; "));
    }
    if let Some(rss) = rss {
        println!(
            "resident memory after the {most}-client load: {rss} MB (this whole process: bench clients and in-process servers)"
        );
    }
    write_scale::print_batches(args, &batches);
    println!(
        "checked: every instance on every path is at version 1 + the events its clients applied"
    );
    Ok(())
}

const HAND_WRITTEN: &str = "hand-written tokio-postgres";
const PLAIN: &str = "server, PostgreSQL only";
const FULL: &str = "server, PostgreSQL + Redis + NATS";
const EMBEDDED: &str = "server, embedded store";
const RAW_SQLITE: &str = "raw rusqlite";

/// Raw rusqlite over the same instances as the server's clients: client `c` of `n` owns
/// instances `c, c + n, ...` and cycles through them; `applied` counts each instance's events.
async fn raw_clients(
    raw: &RawStore,
    ids: &[String],
    applied: &[AtomicI64],
    per_client: &[usize],
) -> Result<Measured> {
    let n = per_client.len();
    let owned = |c: usize| (ids.len() - c).div_ceil(n);
    for (c, &calls) in per_client.iter().enumerate() {
        for i in 0..calls {
            applied[c + (i % owned(c)) * n].fetch_add(1, Ordering::Relaxed);
        }
    }
    raw.apply_picked(ids, per_client, |c, i| c + (i % owned(c)) * n)
        .await
}

/// The entity type and `n` instances, created through the server.
pub(crate) async fn load_server(channel: &Channel, n: usize) -> Result<Vec<String>> {
    let mut types =
        temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient::new(
            channel.clone(),
        );
    let created = types
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: crate::apply::TYPE_NAME.into(),
            description: "benchmark player profile".into(),
            schema: Some(to_struct(schema())),
        })
        .await?
        .into_inner();
    let type_id = created.entity_type.context("no entity type")?.id;
    crate::apply::create_instances_via_server(channel, &type_id, "w", n).await
}

pub(crate) async fn server_clients(
    channels: &[Channel],
    targets: &Targets,
    per_client: &[usize],
) -> Result<Measured> {
    let n = channels.len();
    clients(per_client, |c| {
        let client = EventServiceClient::new(channels[c].clone());
        let ids = targets.ids.clone();
        let versions = targets.versions.clone();
        let picks: Vec<usize> = (0..per_client[c]).map(|i| targets.pick(c, n, i)).collect();
        move |i| {
            let mut client = client.clone();
            let k = picks[i];
            let versions = versions.clone();
            let expected = versions[k].load(Ordering::Relaxed);
            let request = pb::ApplyEventRequest {
                instance_id: ids[k].clone(),
                event_type: EVENT_TYPE.into(),
                payload: Some(to_struct(json!({"score": expected}))),
                expected_version: Some(expected),
                ..Default::default()
            };
            async move {
                let event = client
                    .apply_event(request)
                    .await?
                    .into_inner()
                    .event
                    .context("no event")?;
                ensure!(event.version == expected + 1, "version {}", event.version);
                versions[k].store(expected + 1, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await
}

const DIRECT_MOVE: &str =
    "UPDATE instances SET version = version + 1 WHERE id = $1 AND version = $2 RETURNING version";
const DIRECT_INSERT: &str = "INSERT INTO events (instance_id, version, event_id, entity_type_id, \
     event_type, payload, metadata, mode, recorded_at, occurred_at) \
     VALUES ($1, $2, $3, $4, $5, $6, '{}', 'merge_patch', now(), now())";

async fn direct_clients(
    pool: &Pool,
    type_id: Uuid,
    targets: &Targets,
    per_client: &[usize],
) -> Result<Measured> {
    let n = per_client.len();
    let ids: Arc<Vec<Uuid>> = Arc::new(
        targets
            .ids
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
    );
    clients(per_client, |c| {
        let pool = pool.clone();
        let ids = ids.clone();
        let versions = targets.versions.clone();
        let picks: Vec<usize> = (0..per_client[c]).map(|i| targets.pick(c, n, i)).collect();
        move |i| {
            let pool = pool.clone();
            let k = picks[i];
            let id = ids[k];
            let versions = versions.clone();
            async move {
                let expected = versions[k].load(Ordering::Relaxed);
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                let moved = tx.prepare_cached(DIRECT_MOVE).await?;
                let row = tx
                    .query_opt(&moved, &[&id, &expected])
                    .await?
                    .context("version conflict in the hand-written loop")?;
                let version: i64 = row.get(0);
                let insert = tx.prepare_cached(DIRECT_INSERT).await?;
                tx.execute(
                    &insert,
                    &[
                        &id,
                        &version,
                        &Uuid::now_v7().to_string(),
                        &type_id,
                        &EVENT_TYPE,
                        &json!({"score": expected}),
                    ],
                )
                .await?;
                tx.commit().await?;
                versions[k].store(version, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await
}

async fn check_direct(pool: &Pool, ids: &[Uuid], expected: &[i64]) -> Result<()> {
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
            "hand-written instance {id} at version {version} with {count} events, expected {want}"
        );
    }
    Ok(())
}

/// This process's resident set, in MB (Linux).
fn resident_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
