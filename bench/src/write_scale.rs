//! The two comparisons `write` prints after its main table (issue 13):
//!
//! - **Batches**: `ApplyEvents` of `--batch` events per call against single `ApplyEvent` calls,
//!   one client, the same merge patch with `expected_version`, over the main table's instances,
//!   on the server on PostgreSQL only and on the embedded store. The two take turns in rounds.
//! - **A large store**: append latency with `--stored-events` events already stored against an
//!   empty store. Two servers on PostgreSQL only, each on a database of its own; the same
//!   entity type and 1,000 instances are created in both with the store's own statements, and
//!   the large one is then filled in SQL (events with their log positions, their ids and the
//!   snapshots the server would have written), with progress, before either server has seen an instance. One client,
//!   sequential calls, the two stores taking turns in rounds.

use std::slice;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::apply::{check_server_versions, create_instances_direct, create_type_direct};
use crate::harness::{
    Measured, RunningServer, Table, baseline_store, clients, environment, fmt_rate, ratio, split,
    to_struct, with_dbs,
};
use crate::write::{Args, EVENT_TYPE, Targets, server_clients};

/// Single calls and batches of one server, measured in the same rounds.
pub struct BatchFigures {
    single: Measured,
    batched: Measured,
}

/// `--batch-events` events as single calls and as `--batch`-event ApplyEvents calls, one
/// client, alternating which goes first each round.
pub async fn batch_vs_single(
    channel: &Channel,
    targets: &Targets,
    args: &Args,
) -> Result<BatchFigures> {
    let channels = slice::from_ref(channel);
    let rounds = args.rounds.max(1);
    // Warm-up: a few of each, unmeasured.
    server_clients(channels, targets, &[args.batch.min(100)]).await?;
    batch_client(channel, targets, args.batch, 2).await?;
    let (mut single, mut batched) = (Measured::empty(), Measured::empty());
    for (round, events) in split(args.batch_events, rounds).into_iter().enumerate() {
        let calls = (events / args.batch).max(1);
        for single_turn in [round % 2 == 0, round % 2 == 1] {
            if single_turn {
                single.absorb(server_clients(channels, targets, &[calls * args.batch]).await?)?;
            } else {
                batched.absorb(batch_client(channel, targets, args.batch, calls).await?)?;
            }
        }
    }
    Ok(BatchFigures { single, batched })
}

/// `calls` ApplyEvents calls of `batch` events each, one after the other, cycling through the
/// instances; each checks it was given every version it asked for.
async fn batch_client(
    channel: &Channel,
    targets: &Targets,
    batch: usize,
    calls: usize,
) -> Result<Measured> {
    let client = EventServiceClient::new(channel.clone());
    let ids = targets.ids.clone();
    let versions = targets.versions.clone();
    clients(&[calls], move |_| {
        let client = client.clone();
        let ids = ids.clone();
        let versions = versions.clone();
        move |i| {
            let mut client = client.clone();
            let k = i % ids.len();
            let versions = versions.clone();
            let expected = versions[k].load(Ordering::Relaxed);
            let request = pb::ApplyEventsRequest {
                instance_id: ids[k].clone(),
                expected_version: Some(expected),
                events: (0..batch as i64)
                    .map(|j| pb::EventInput {
                        event_type: EVENT_TYPE.into(),
                        payload: Some(to_struct(json!({"score": expected + j}))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            async move {
                let events = client.apply_events(request).await?.into_inner().events;
                let last = events.last().map(|e| e.version);
                ensure!(
                    events.len() == batch && last == Some(expected + batch as i64),
                    "a batch of {batch} after version {expected} gave {} events, last {last:?}",
                    events.len()
                );
                versions[k].store(expected + batch as i64, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await
}

/// The batch comparison's table and ratios.
pub fn print_batches(args: &Args, rows: &[(&str, BatchFigures)]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "-- ApplyEvents of {} events per call against single ApplyEvent calls: 1 client, {} events each way, same instances --",
        args.batch, args.batch_events
    );
    let mut table = Table::new(&[
        "server",
        "single events/s",
        "single p50 µs",
        "batched events/s",
        "batch call p50 µs",
        "batched / single",
    ]);
    for (path, f) in rows {
        let single = f.single.per_sec();
        let batched = f.batched.per_sec() * args.batch as f64;
        table.row(vec![
            path.to_string(),
            fmt_rate(single),
            f.single.p50().to_string(),
            fmt_rate(batched),
            f.batched.p50().to_string(),
            ratio(batched, single),
        ]);
    }
    table.print();
}

/// Append latency with `--stored-events` events stored against an empty store.
pub async fn stored_events(admin_url: &str, args: &Args) -> Result<()> {
    ensure!(
        args.stored_samples > 0 && args.instances > 0,
        "--stored-samples and --instances must be positive"
    );
    with_dbs(admin_url, 2, |urls| async move {
        let large = RunningServer::postgres_only(&urls[0], &[]).await?;
        let empty = match RunningServer::postgres_only(&urls[1], &[]).await {
            Ok(s) => s,
            Err(e) => return large.stop_after(Err(e)).await,
        };
        let result = measure_stored(admin_url, args, (&large, &urls[0]), (&empty, &urls[1])).await;
        let result = large.stop_after(result).await;
        empty.stop_after(result).await
    })
    .await
}

async fn measure_stored(
    admin_url: &str,
    args: &Args,
    (large, large_url): (&RunningServer, &str),
    (empty, empty_url): (&RunningServer, &str),
) -> Result<()> {
    let env = environment(admin_url).await?;
    let per_instance = args.stored_events / args.instances as i64;
    ensure!(
        per_instance >= 1,
        "--stored-events must be at least --instances"
    );
    let interval = large.config.snapshot_interval;
    let large_ids = create_direct(large_url, large, args.instances).await?;
    let empty_ids = create_direct(empty_url, empty, args.instances).await?;
    fill(large_url, large, &large_ids, per_instance, interval).await?;
    let (stored_large, stored_empty) = (
        stored_count(large_url).await?,
        stored_count(empty_url).await?,
    );

    let large_targets = Targets::new(large_ids.iter().map(Uuid::to_string).collect());
    for v in large_targets.versions.iter() {
        v.store(1 + per_instance, Ordering::Relaxed);
    }
    let empty_targets = Targets::new(empty_ids.iter().map(Uuid::to_string).collect());
    let large_channel = large.channel().await?;
    let empty_channel = empty.channel().await?;

    // One warm-up call per instance on both: each server reads every head once.
    eprintln!("large store: warm-up");
    server_clients(
        slice::from_ref(&large_channel),
        &large_targets,
        &[args.instances],
    )
    .await?;
    server_clients(
        slice::from_ref(&empty_channel),
        &empty_targets,
        &[args.instances],
    )
    .await?;
    let (mut large_m, mut empty_m) = (Measured::empty(), Measured::empty());
    let rounds = args.rounds.max(1);
    for (round, calls) in split(args.stored_samples, rounds).into_iter().enumerate() {
        eprintln!("large store: round {}/{rounds}", round + 1);
        for large_turn in [round % 2 == 0, round % 2 == 1] {
            if large_turn {
                large_m.absorb(
                    server_clients(slice::from_ref(&large_channel), &large_targets, &[calls])
                        .await?,
                )?;
            } else {
                empty_m.absorb(
                    server_clients(slice::from_ref(&empty_channel), &empty_targets, &[calls])
                        .await?,
                )?;
            }
        }
    }
    check_server_versions(
        &large_channel,
        &large_targets.ids,
        &large_targets.expected(),
    )
    .await?;
    check_server_versions(
        &empty_channel,
        &empty_targets.ids,
        &empty_targets.expected(),
    )
    .await?;

    println!(
        "-- append latency with {stored_large} events stored against an empty store: server on PostgreSQL only, 1 client, {} sequential ApplyEvent calls each, {rounds} alternating rounds --",
        args.stored_samples
    );
    println!("{env}");
    let mut table = Table::new(&["store", "events stored", "events/s", "p50 µs", "p99 µs"]);
    for (label, m, n) in [
        ("large", &large_m, stored_large),
        ("empty", &empty_m, stored_empty),
    ] {
        table.row(vec![
            label.to_string(),
            n.to_string(),
            fmt_rate(m.per_sec()),
            m.p50().to_string(),
            m.p99().to_string(),
        ]);
    }
    table.print();
    println!(
        "append p50, large / empty store = {}",
        ratio(large_m.p50() as f64, empty_m.p50() as f64)
    );
    Ok(())
}

/// The benchmark's entity type and `n` instances, created with the store's own statements in
/// the database a running server migrated.
async fn create_direct(url: &str, server: &RunningServer, n: usize) -> Result<Vec<Uuid>> {
    let store = baseline_store(url, 1, &server.config).await?;
    let type_id = create_type_direct(store.pool()).await?;
    create_instances_direct(store.pool(), type_id, "w", n).await
}

/// Instances per bulk statement while filling, so progress shows.
const FILL_CHUNK: usize = 50;

/// Versions 2..=1+`per_instance` of every instance, as the server would have stored merge
/// patches `{"score": version - 1}`: the events, their ids, a snapshot at every multiple of
/// `interval`, and the instances' heads.
async fn fill(
    url: &str,
    server: &RunningServer,
    ids: &[Uuid],
    per_instance: i64,
    interval: i64,
) -> Result<()> {
    let store = baseline_store(url, 1, &server.config).await?;
    let client = store.pool().get().await?;
    let total = per_instance * ids.len() as i64;
    let start = Instant::now();
    let mut done = 0i64;
    for chunk in ids.chunks(FILL_CHUNK) {
        let chunk = chunk.to_vec();
        client
            .batch_execute("BEGIN")
            .await
            .context("filling the large store")?;
        client
            .execute(
                "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type,
                                     payload, metadata, mode, recorded_at, occurred_at, position)
                 SELECT i.id, k, md5(i.id::text || '-' || k)::uuid::text, i.entity_type_id, $3,
                        jsonb_build_object('score', k - 1), '{}', 'merge_patch',
                        i.created_at + k * interval '1 microsecond',
                        i.created_at + k * interval '1 microsecond',
                        nextval('events_position_seq')
                 FROM instances i, generate_series(2, $2::bigint + 1) k
                 WHERE i.id = ANY($1)",
                &[&chunk, &per_instance, &EVENT_TYPE],
            )
            .await?;
        client
            .execute(
                "INSERT INTO event_ids (event_id, instance_id, version)
                 SELECT md5(i.id::text || '-' || k)::uuid::text, i.id, k
                 FROM instances i, generate_series(2, $2::bigint + 1) k
                 WHERE i.id = ANY($1)",
                &[&chunk, &per_instance],
            )
            .await?;
        client
            .execute(
                "INSERT INTO snapshots (instance_id, version, state)
                 SELECT i.id, k, jsonb_set(i.state, '{score}', to_jsonb(k - 1))
                 FROM instances i, generate_series($3::bigint, $2::bigint + 1, $3::bigint) k
                 WHERE i.id = ANY($1)",
                &[&chunk, &per_instance, &interval],
            )
            .await?;
        client
            .execute(
                "UPDATE instances
                 SET version = $2::bigint + 1,
                     state = jsonb_set(state, '{score}', to_jsonb($2::bigint)),
                     updated_at = created_at + ($2::bigint + 1) * interval '1 microsecond'
                 WHERE id = ANY($1)",
                &[&chunk, &per_instance],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        done += per_instance * chunk.len() as i64;
        eprintln!(
            "large store: {done} / {total} events stored ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

async fn stored_count(url: &str) -> Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0))
}
