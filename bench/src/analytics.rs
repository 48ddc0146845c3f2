//! `analytics`: every AnalyticsService RPC over 1,000,000 events of one entity type, next to a
//! hand-written SQL query giving the same answer, in the same run. The dataset is bulk-loaded in
//! SQL (1,000 instances x 1,000 versions, occurred_at spread over 30 days, snapshots every 100
//! versions), consistent with what the server would have written: every event is a merge patch
//! of `score`, so each state is the initial state with the score of its latest event.

use std::future::Future;
use std::time::Instant;

use anyhow::{Result, ensure};
use chrono::{DateTime, Utc};
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use uuid::Uuid;

use crate::harness::{
    Measured, RunningServer, Table, environment, ratio, sample, to_struct, with_dbs,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Instances; each gets `versions` events (version 1 is InstanceCreated).
    #[arg(long, default_value_t = 1000)]
    pub instances: i64,
    #[arg(long, default_value_t = 1000)]
    pub versions: i64,
    /// Measured calls per RPC and path.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
}

pub(crate) const BASE: &str = "2026-10-01T00:00:00Z";

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.instances > 0 && args.versions >= 2 && args.samples > 0,
        "sizes must be positive"
    );
    with_dbs(admin_url, 1, |urls| async move {
        let server = RunningServer::postgres(&urls[0], &[]).await?;
        let result = measure(admin_url, &args, &server, &urls[0]).await;
        server.stop_after(result).await
    })
    .await
}

async fn measure(admin_url: &str, args: &Args, server: &RunningServer, url: &str) -> Result<()> {
    let channel = server.channel().await?;
    let created = EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: "player".into(),
            description: String::new(),
            schema: Some(to_struct(json!({"type": "object"}))),
        })
        .await?
        .into_inner()
        .entity_type
        .unwrap();
    let type_id: Uuid = created.id.parse()?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let loading = Instant::now();
    load(&client, type_id, args).await?;
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE entity_type_id = $1",
            &[&type_id],
        )
        .await?
        .get(0);
    ensure!(
        total == args.instances * args.versions,
        "loaded {total} events"
    );
    println!(
        "analytics over {total} events ({} instances x {} versions), loaded in {:.1} s",
        args.instances,
        args.versions,
        loading.elapsed().as_secs_f64()
    );
    println!("{}", environment(admin_url).await?);

    let a = AnalyticsServiceClient::new(channel);
    let base: DateTime<Utc> = BASE.parse()?;
    let end = base + chrono::Duration::days(31);
    let as_of = base + chrono::Duration::milliseconds(total / 2);
    let ts = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    let mut table = Table::new(&[
        "rpc",
        "server p50 µs",
        "server p99 µs",
        "SQL p50 µs",
        "SQL p99 µs",
        "server/SQL p50",
    ]);

    // Event counts.
    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_event_counts(pb::GetEventCountsRequest {
                    entity_type: "player".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().counts.len())
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            client
                .query(
                    "SELECT event_type, count(*) FROM events WHERE entity_type_id = $1 \
                     GROUP BY event_type ORDER BY 2 DESC, 1",
                    &[&type_id],
                )
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(&mut table, "GetEventCounts", &s, &q);

    // Time series: daily buckets over 31 days.
    let day = 86_400_000_000i64;
    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_event_time_series(pb::GetEventTimeSeriesRequest {
                    entity_type: "player".into(),
                    interval: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
                    start_time: Some(ts(base)),
                    end_time: Some(ts(end)),
                    event_type: None,
                })
                .await
                .map(|r| r.into_inner().buckets.len())
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            client
                .query(
                    "SELECT date_bin($2::bigint * interval '1 microsecond', occurred_at, $3), count(*) \
                     FROM events WHERE entity_type_id = $1 AND occurred_at >= $3 AND occurred_at < $4 \
                     GROUP BY 1 ORDER BY 1",
                    &[&type_id, &day, &base, &end],
                )
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(&mut table, "GetEventTimeSeries (31 daily buckets)", &s, &q);

    // Field statistics over the current states.
    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_field_aggregation(pb::GetFieldAggregationRequest {
                    entity_type: "player".into(),
                    field: "score".into(),
                    as_of: None,
                })
                .await
                .map(|r| r.into_inner().count as usize)
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            // The same two statements the answer needs: the statistics and the frequent values.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&type_id];
            let stats = client.query(
                "SELECT count(state->'score'), min((state->>'score')::float8), \
                 max((state->>'score')::float8), sum((state->>'score')::float8), \
                 avg((state->>'score')::float8) FROM instances WHERE entity_type_id = $1",
                &params,
            );
            let top = client.query(
                "SELECT state->'score', count(*) FROM instances WHERE entity_type_id = $1 \
                 AND jsonb_typeof(state->'score') IN ('string', 'boolean') \
                 GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
                &params,
            );
            futures::try_join!(stats, top)
                .map(|(r, _)| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(&mut table, "GetFieldAggregation (current)", &s, &q);

    // The same as of a past moment: the hand-written query knows every event sets `score`.
    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_field_aggregation(pb::GetFieldAggregationRequest {
                    entity_type: "player".into(),
                    field: "score".into(),
                    as_of: Some(prost_types::Timestamp {
                        seconds: as_of.timestamp(),
                        nanos: as_of.timestamp_subsec_nanos() as i32,
                    }),
                })
                .await
                .map(|r| r.into_inner().count as usize)
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            client
                .query(
                    "SELECT count(s), min(s), max(s), sum(s), avg(s) FROM ( \
                       SELECT (e.payload->>'score')::float8 AS s FROM instances i \
                       CROSS JOIN LATERAL (SELECT payload FROM events e \
                         WHERE e.instance_id = i.id AND e.recorded_at <= $2 \
                         ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) e \
                       WHERE i.entity_type_id = $1) t",
                    &[&type_id, &as_of],
                )
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(
        &mut table,
        "GetFieldAggregation (as_of) vs latest-event SQL",
        &s,
        &q,
    );
    // A general hand-written answer must fold merge patches: it reads what the server reads,
    // each instance's latest snapshot before the moment and the events after it.
    let q = time(args.samples, || async {
        client
            .query(
                "WITH h AS (SELECT i.id, at.version FROM instances i CROSS JOIN LATERAL ( \
                   SELECT e.version FROM events e WHERE e.instance_id = i.id AND e.recorded_at <= $2 \
                   ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) at \
                   WHERE i.entity_type_id = $1 AND i.created_at <= $2), \
                 s AS (SELECT h.id, h.version AS target, sn.version AS sv, sn.state AS ss FROM h \
                   LEFT JOIN LATERAL (SELECT version, state FROM snapshots WHERE instance_id = h.id \
                   AND version <= h.version ORDER BY version DESC LIMIT 1) sn ON true) \
                 SELECT s.id, e.version, CASE WHEN e.version = s.sv THEN s.ss END, e.payload, e.mode \
                 FROM s JOIN events e ON e.instance_id = s.id AND e.version >= COALESCE(s.sv, 1) \
                   AND e.version <= s.target ORDER BY s.id, e.version",
                &[&type_id, &as_of],
            )
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    })
    .await;
    row(
        &mut table,
        "GetFieldAggregation (as_of) vs snapshot+tail SQL",
        &s,
        &q,
    );

    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_most_active(pb::GetMostActiveRequest {
                    entity_type: "player".into(),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().entries.len())
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            client
                .query(
                    "SELECT e.instance_id, i.external_id, count(*), max(e.occurred_at) \
                     FROM events e JOIN instances i ON i.id = e.instance_id \
                     WHERE e.entity_type_id = $1 GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 10",
                    &[&type_id],
                )
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(&mut table, "GetMostActive (top 10)", &s, &q);

    let since = Utc::now() - chrono::Duration::hours(24);
    let (s, q) = (
        time(args.samples, || {
            let mut a = a.clone();
            async move {
                a.get_summary(pb::GetSummaryRequest {
                    entity_type: "player".into(),
                })
                .await
                .map(|r| r.into_inner().event_count as usize)
                .unwrap_or(0)
            }
        })
        .await,
        time(args.samples, || async {
            client
                .query(
                    "SELECT (SELECT count(*) FROM instances WHERE entity_type_id = $1), count(*), \
                     min(occurred_at), max(occurred_at), count(*) FILTER (WHERE occurred_at >= $2), \
                     array_agg(DISTINCT event_type) FROM events WHERE entity_type_id = $1",
                    &[&type_id, &since],
                )
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        })
        .await,
    );
    row(&mut table, "GetSummary", &s, &q);
    table.print();
    Ok(())
}

/// Figures of `samples` sequential calls after one warm-up, and how many rows (or entries) the
/// warm-up's answer had: 0 when it failed or was empty, which the table then flags.
type Timed = (Measured, usize);

/// Runs `f` once to warm up, then `samples` times, sequentially. A failed call counts as an
/// empty answer, so one broken RPC shows in its row instead of ending the run.
async fn time<F, Fut>(samples: usize, mut f: F) -> Timed
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let calls = sample(1, samples, || {
        let answer = f();
        async move { Ok(answer.await) }
    });
    calls.await.unwrap_or_else(|_| (Measured::empty(), 0))
}

fn row(table: &mut Table, name: &str, (server, answered): &Timed, (sql, sql_answered): &Timed) {
    let name = if *answered == 0 || *sql_answered == 0 {
        format!("{name} (NO ANSWER: check the run)")
    } else {
        name.to_string()
    };
    table.row(vec![
        name,
        server.p50().to_string(),
        server.p99().to_string(),
        sql.p50().to_string(),
        sql.p99().to_string(),
        ratio(server.p50() as f64, sql.p50() as f64),
    ]);
}

/// Bulk-loads the dataset in SQL, as the server would have written it.
pub(crate) async fn load(
    client: &tokio_postgres::Client,
    type_id: Uuid,
    args: &Args,
) -> Result<()> {
    let n = args.instances;
    let v = args.versions;
    let base: DateTime<Utc> = BASE.parse()?;
    client
        .execute(
            "INSERT INTO instances (id, entity_type_id, external_id, state, version, created_at, updated_at)
             SELECT md5('i' || g)::uuid, $1, 'player-' || lpad(g::text, 6, '0'),
                    jsonb_build_object('score', ((g - 1) * $3 + $3 - 1) % 997, 'level', g % 50,
                                       'name', 'p' || (g % 7)),
                    $3, $4::timestamptz + ((((g - 1) * $3) + 1) * interval '1 ms'),
                    $4::timestamptz + (((g - 1) * $3 + $3) * interval '1 ms')
             FROM generate_series(1, $2::bigint) g",
            &[&type_id, &n, &v, &base],
        )
        .await?;
    // Event k of instance g (k = 1..v) is the (g-1)*v + k-th; recorded in that order, 1 ms apart;
    // occurred_at scattered over 30 days.
    client
        .execute(
            "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, payload,
                                 metadata, mode, recorded_at, occurred_at)
             SELECT md5('i' || g)::uuid, k, md5('e' || g || '-' || k)::uuid::text, $1,
                    CASE WHEN k = 1 THEN 'InstanceCreated'
                         ELSE (ARRAY['ScoreIncreased','LevelUp','ItemFound','Login','Logout'])[(g * k) % 5 + 1] END,
                    CASE WHEN k = 1 THEN jsonb_build_object('score', 0, 'level', g % 50, 'name', 'p' || (g % 7))
                         ELSE jsonb_build_object('score', ((g - 1) * $3 + k - 1) % 997) END,
                    '{}'::jsonb, CASE WHEN k = 1 THEN 'replace' ELSE 'merge_patch' END,
                    $4::timestamptz + (((g - 1) * $3 + k) * interval '1 ms'),
                    $4::timestamptz + (((((g - 1) * $3 + k) * 7919) % (30 * 86400)) * interval '1 second')
             FROM generate_series(1, $2::bigint) g, generate_series(1, $3::bigint) k",
            &[&type_id, &n, &v, &base],
        )
        .await?;
    client
        .execute(
            "INSERT INTO snapshots (instance_id, version, state)
             SELECT md5('i' || g)::uuid, k,
                    jsonb_build_object('score', ((g - 1) * $2 + k - 1) % 997, 'level', g % 50,
                                       'name', 'p' || (g % 7))
             FROM generate_series(1, $1::bigint) g, generate_series(100, $2::bigint, 100) k",
            &[&n, &v],
        )
        .await?;
    client.batch_execute("ANALYZE").await?;
    Ok(())
}
