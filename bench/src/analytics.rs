//! `analytics`: every AnalyticsService RPC over 1,000,000 events of one entity type, next to a
//! hand-written SQL query giving the same answer, in the same run. The dataset is bulk-loaded in
//! SQL (1,000 instances x 1,000 versions, occurred_at spread over 30 days, snapshots every 100
//! versions), consistent with what the server would have written: every event is a merge patch
//! of `score`, so each state is the initial state with the score of its latest event.

use std::future::Future;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use uuid::Uuid;

use crate::harness::{RunningServer, Table, environment, ratio, sample, to_struct, with_dbs};

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

/// Hand-written time series: buckets of `$2` µs from `$3` to `$4` of type `$1`'s events.
pub(crate) const RAW_TIME_SERIES_SQL: &str = "SELECT date_bin($2::bigint * interval '1 microsecond', \
     occurred_at, $3), count(*) FROM events WHERE entity_type_id = $1 AND occurred_at >= $3 \
     AND occurred_at < $4 GROUP BY 1 ORDER BY 1";

/// Hand-written statistics of `score` over type `$1`'s current states, and its frequent
/// non-numeric values: the two statements a field aggregation needs.
pub(crate) const RAW_SCORE_STATS_SQL: &str = "SELECT count(state->'score'), \
     min((state->>'score')::float8), max((state->>'score')::float8), \
     sum((state->>'score')::float8), avg((state->>'score')::float8) \
     FROM instances WHERE entity_type_id = $1";
pub(crate) const RAW_SCORE_TOP_SQL: &str = "SELECT state->'score', count(*) FROM instances \
     WHERE entity_type_id = $1 AND jsonb_typeof(state->'score') IN ('string', 'boolean') \
     GROUP BY 1 ORDER BY 2 DESC LIMIT 10";

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
            declarations: None,
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
    let total = load(&client, type_id, args).await?;
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

    // Each row: the server's answer and the SQL's, as the same JSON, must be equal before either
    // is timed; any failed call fails the benchmark.

    // Event counts.
    let server = || {
        let mut a = a.clone();
        async move {
            let r = a
                .get_event_counts(pb::GetEventCountsRequest {
                    entity_type: "player".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok(json!(
                r.counts
                    .iter()
                    .map(|c| json!([c.event_type, c.count]))
                    .collect::<Vec<_>>()
            ))
        }
    };
    let sql = || async {
        let rows = client
            .query(
                "SELECT event_type, count(*) FROM events WHERE entity_type_id = $1 \
                 GROUP BY event_type ORDER BY 2 DESC, event_type COLLATE \"C\"",
                &[&type_id],
            )
            .await?;
        anyhow::Ok(json!(
            rows.iter()
                .map(|r| json!([r.get::<_, String>(0), r.get::<_, i64>(1)]))
                .collect::<Vec<_>>()
        ))
    };
    compare_and_time(&mut table, "GetEventCounts", args.samples, server, sql).await?;

    // Time series: daily buckets over 31 days (empty days left out of both).
    let day = 86_400_000_000i64;
    let server = || {
        let mut a = a.clone();
        async move {
            let r = a
                .get_event_time_series(pb::GetEventTimeSeriesRequest {
                    entity_type: "player".into(),
                    interval: Some(prost_types::Duration {
                        seconds: 86_400,
                        nanos: 0,
                    }),
                    start_time: Some(ts(base)),
                    end_time: Some(ts(end)),
                    event_type: None,
                })
                .await?
                .into_inner();
            anyhow::Ok(json!(
                r.buckets
                    .iter()
                    .filter(|b| b.count > 0)
                    .map(|b| json!([micros_of(b.bucket_start.as_ref()), b.count]))
                    .collect::<Vec<_>>()
            ))
        }
    };
    let sql = || async {
        let rows = client
            .query(RAW_TIME_SERIES_SQL, &[&type_id, &day, &base, &end])
            .await?;
        anyhow::Ok(json!(
            rows.iter()
                .map(|r| json!([
                    r.get::<_, DateTime<Utc>>(0).timestamp_micros(),
                    r.get::<_, i64>(1)
                ]))
                .collect::<Vec<_>>()
        ))
    };
    compare_and_time(
        &mut table,
        "GetEventTimeSeries (31 daily buckets)",
        args.samples,
        server,
        sql,
    )
    .await?;

    // Field statistics over the current states.
    let aggregation = |as_of: Option<DateTime<Utc>>| {
        let mut a = a.clone();
        async move {
            let r = a
                .get_field_aggregation(pb::GetFieldAggregationRequest {
                    entity_type: "player".into(),
                    field: "score".into(),
                    as_of: as_of.map(|t| prost_types::Timestamp {
                        seconds: t.timestamp(),
                        nanos: t.timestamp_subsec_nanos() as i32,
                    }),
                })
                .await?
                .into_inner();
            ensure!(
                r.top_values.is_empty(),
                "numeric scores have no top values, got {:?}",
                r.top_values
            );
            anyhow::Ok(stats(r.count, r.min, r.max, r.sum, r.mean))
        }
    };
    let sql = || async {
        // The same two statements the answer needs: the statistics and the frequent values.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&type_id];
        let stats_query = client.query_one(RAW_SCORE_STATS_SQL, &params);
        let top = client.query(RAW_SCORE_TOP_SQL, &params);
        let (r, top) = futures::try_join!(stats_query, top)?;
        ensure!(top.is_empty(), "numeric scores have no top values");
        anyhow::Ok(stats(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    };
    compare_and_time(
        &mut table,
        "GetFieldAggregation (current)",
        args.samples,
        || aggregation(None),
        sql,
    )
    .await?;

    // The same as of a past moment: the hand-written query knows every event sets `score`.
    let sql = || async {
        let r = client
            .query_one(
                "SELECT count(s), min(s), max(s), sum(s), avg(s) FROM ( \
                   SELECT (e.payload->>'score')::float8 AS s FROM instances i \
                   CROSS JOIN LATERAL (SELECT payload FROM events e \
                     WHERE e.instance_id = i.id AND e.recorded_at <= $2 \
                     ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) e \
                   WHERE i.entity_type_id = $1) t",
                &[&type_id, &as_of],
            )
            .await?;
        anyhow::Ok(stats(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    };
    compare_and_time(
        &mut table,
        "GetFieldAggregation (as_of) vs latest-event SQL",
        args.samples,
        || aggregation(Some(as_of)),
        sql,
    )
    .await?;
    // A general hand-written answer must fold merge patches: it reads what the server reads,
    // each instance's latest snapshot before the moment and the events after it, and folds them
    // here (timed with the fold).
    let sql = || async {
        let rows = client
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
            .await?;
        fold_scores(&rows)
    };
    compare_and_time(
        &mut table,
        "GetFieldAggregation (as_of) vs snapshot+tail SQL",
        args.samples,
        || aggregation(Some(as_of)),
        sql,
    )
    .await?;

    let server = || {
        let mut a = a.clone();
        async move {
            let r = a
                .get_most_active(pb::GetMostActiveRequest {
                    entity_type: "player".into(),
                    limit: 10,
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok(json!(
                r.entries
                    .iter()
                    .map(|e| json!([
                        e.instance_id,
                        e.external_id,
                        e.event_count,
                        micros_of(e.last_event_at.as_ref())
                    ]))
                    .collect::<Vec<_>>()
            ))
        }
    };
    let sql = || async {
        let rows = client
            .query(
                "SELECT e.instance_id, i.external_id, count(*), max(e.occurred_at) \
                 FROM events e JOIN instances i ON i.id = e.instance_id \
                 WHERE e.entity_type_id = $1 GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 10",
                &[&type_id],
            )
            .await?;
        anyhow::Ok(json!(
            rows.iter()
                .map(|r| json!([
                    r.get::<_, Uuid>(0).to_string(),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, DateTime<Utc>>(3).timestamp_micros()
                ]))
                .collect::<Vec<_>>()
        ))
    };
    compare_and_time(
        &mut table,
        "GetMostActive (top 10)",
        args.samples,
        server,
        sql,
    )
    .await?;

    let server = || {
        let mut a = a.clone();
        async move {
            let r = a
                .get_summary(pb::GetSummaryRequest {
                    entity_type: "player".into(),
                })
                .await?
                .into_inner();
            anyhow::Ok(json!([
                r.instance_count,
                r.event_count,
                micros_of(r.first_event_at.as_ref()),
                micros_of(r.last_event_at.as_ref()),
                r.events_last_24h,
                r.event_types
            ]))
        }
    };
    let sql = || async {
        let since = Utc::now() - chrono::Duration::hours(24);
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM instances WHERE entity_type_id = $1), count(*), \
                 min(occurred_at), max(occurred_at), count(*) FILTER (WHERE occurred_at >= $2), \
                 array_agg(DISTINCT event_type COLLATE \"C\" ORDER BY event_type COLLATE \"C\") \
                 FROM events WHERE entity_type_id = $1",
                &[&type_id, &since],
            )
            .await?;
        anyhow::Ok(json!([
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, DateTime<Utc>>(2).timestamp_micros(),
            r.get::<_, DateTime<Utc>>(3).timestamp_micros(),
            r.get::<_, i64>(4),
            r.get::<_, Vec<String>>(5)
        ]))
    };
    compare_and_time(&mut table, "GetSummary", args.samples, server, sql).await?;
    table.print();
    Ok(())
}

/// A timestamp in microseconds (PostgreSQL's precision), so both sides compare exactly.
fn micros_of(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

/// Field statistics as JSON; the sum and mean rounded to 9 significant digits, since float sums
/// may differ in the last bits with the order rows are added in.
fn stats(
    count: i64,
    min: Option<f64>,
    max: Option<f64>,
    sum: Option<f64>,
    mean: Option<f64>,
) -> serde_json::Value {
    let round = |v: Option<f64>| v.map(|v| format!("{v:.9e}"));
    json!({"count": count, "min": min, "max": max, "sum": round(sum), "mean": round(mean)})
}

/// Folds (instance, version, snapshot state at the snapshot's version, payload, mode) rows, in
/// instance and version order, into each instance's state with the server's own apply, and gives
/// the statistics of their scores.
fn fold_scores(rows: &[tokio_postgres::Row]) -> Result<serde_json::Value> {
    use serde_json::Value;
    use temporal_state_server::domain::{ApplyMode, State, apply_event};
    let score = |state: &State| state.get("score").and_then(Value::as_f64);
    let mut scores = Vec::new();
    let mut current: Option<(Uuid, State)> = None;
    for r in rows {
        let id: Uuid = r.get(0);
        let state = match current.take() {
            Some((c, state)) if c == id => state,
            Some((_, done)) => {
                scores.extend(score(&done));
                State::new()
            }
            None => State::new(),
        };
        // The snapshot row's event is already in the snapshot.
        let state = match r.get::<_, Option<Value>>(2) {
            Some(Value::Object(snapshot)) => snapshot,
            Some(other) => anyhow::bail!("a snapshot that is not an object: {other}"),
            None => {
                let Value::Object(payload) = r.get::<_, Value>(3) else {
                    anyhow::bail!("a payload that is not an object");
                };
                let mode: String = r.get(4);
                let mode = ApplyMode::parse(&mode)
                    .ok_or_else(|| anyhow::anyhow!("unknown mode {mode:?}"))?;
                apply_event(&state, &payload, mode)?
            }
        };
        current = Some((id, state));
    }
    if let Some((_, state)) = current {
        scores.extend(score(&state));
    }
    let n = scores.len();
    let sum: f64 = scores.iter().sum();
    let (min, max) =
        scores
            .iter()
            .fold((None, None), |(lo, hi): (Option<f64>, Option<f64>), &v| {
                (
                    Some(lo.map_or(v, |l| l.min(v))),
                    Some(hi.map_or(v, |h| h.max(v))),
                )
            });
    Ok(stats(
        n as i64,
        min,
        max,
        (n > 0).then_some(sum),
        (n > 0).then(|| sum / n as f64),
    ))
}

/// Checks that the server and the SQL give the same answer, then times each: one warm-up and
/// `samples` sequential calls. A failed call, or different answers, fails the benchmark.
async fn compare_and_time<S, SFut, Q, QFut>(
    table: &mut Table,
    name: &str,
    samples: usize,
    mut server: S,
    mut sql: Q,
) -> Result<()>
where
    S: FnMut() -> SFut,
    SFut: Future<Output = Result<serde_json::Value>>,
    Q: FnMut() -> QFut,
    QFut: Future<Output = Result<serde_json::Value>>,
{
    let server_answer = server()
        .await
        .with_context(|| format!("{name}: the server"))?;
    let sql_answer = sql().await.with_context(|| format!("{name}: the SQL"))?;
    ensure!(
        server_answer == sql_answer,
        "{name}: the server answered {server_answer}\nbut the SQL answered {sql_answer}"
    );
    let (server_timed, _) = sample(1, samples, &mut server)
        .await
        .with_context(|| format!("{name}: the server"))?;
    let (sql_timed, _) = sample(1, samples, &mut sql)
        .await
        .with_context(|| format!("{name}: the SQL"))?;
    table.row(vec![
        name.to_string(),
        server_timed.p50().to_string(),
        server_timed.p99().to_string(),
        sql_timed.p50().to_string(),
        sql_timed.p99().to_string(),
        ratio(server_timed.p50() as f64, sql_timed.p50() as f64),
    ]);
    Ok(())
}

/// Bulk-loads the dataset in SQL, as the server would have written it, and checks that the type
/// holds `instances × versions` events; returns that count.
pub(crate) async fn load(
    client: &tokio_postgres::Client,
    type_id: Uuid,
    args: &Args,
) -> Result<i64> {
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
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE entity_type_id = $1",
            &[&type_id],
        )
        .await?
        .get(0);
    ensure!(total == n * v, "loaded {total} events, not {}", n * v);
    Ok(total)
}
