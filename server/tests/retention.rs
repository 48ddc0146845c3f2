//! Retention (RETENTION_DAYS) that keeps time travel honest, on PostgreSQL and on the embedded
//! store, through a real server.
//!
//! Three instances of one type carry events spread over the last 30 days: one across the whole
//! span, one only before the 10-day horizon, one only after it. Every event is applied through
//! the API with its business time (`occurred_at`) in the past; the engine's own clock cannot be
//! turned back, so `recorded_at` is then moved to those times directly in the store, as if the
//! engine had recorded each event on its day. Then one retention pass runs, through the code the
//! server's background task runs (`server::run_retention`, also `temporal-state-server
//! retention`), and the answers are compared with the ones taken before it:
//!
//! - every current state is unchanged, and so is every answer from the horizon on (states at
//!   versions and times, diffs, field timelines, analytics as of a moment);
//! - before the horizon, time travel answers OUT_OF_RANGE naming the horizon;
//! - each instance keeps one snapshot at or before the horizon (written where it had none) and
//!   loses its older snapshots and events;
//! - analytics report the horizon as `covered_from`;
//! - new writes still work, and a second pass drops nothing more.
//!
//! On PostgreSQL alone: a pass yields to another server's retention transaction (the advisory
//! lock), and never drops a version still waiting in the outbox.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Backend, Store, for_each_backend, js, json, st};
use prost_types::Timestamp;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use temporal_state_server::adapters::embedded::DB_FILE;
use temporal_state_test_support::server::config_from_flags;
use tonic::Code;

fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn dt(t: &Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// Each event's `recorded_at` becomes its `occurred_at`, and each version 1 (whose business
/// time a client cannot set) moves to an hour before the instance's first event.
const PG_BACKDATE: &str = "
UPDATE events SET recorded_at = occurred_at WHERE version > 1;
UPDATE events e SET recorded_at = f.first - interval '1 hour', occurred_at = f.first - interval '1 hour'
FROM (SELECT instance_id, min(occurred_at) AS first FROM events WHERE version > 1 GROUP BY instance_id) f
WHERE e.instance_id = f.instance_id AND e.version = 1;
UPDATE instances i SET created_at = e.recorded_at FROM events e WHERE e.instance_id = i.id AND e.version = 1;
UPDATE instances i SET updated_at = (SELECT max(recorded_at) FROM events e WHERE e.instance_id = i.id);";

const SQLITE_BACKDATE: &str = "
UPDATE events SET recorded_at = occurred_at WHERE version > 1;
UPDATE events SET
    recorded_at = (SELECT min(e.occurred_at) FROM events e WHERE e.instance_id = events.instance_id AND e.version > 1) - 3600000000,
    occurred_at = (SELECT min(e.occurred_at) FROM events e WHERE e.instance_id = events.instance_id AND e.version > 1) - 3600000000
WHERE version = 1 AND EXISTS (SELECT 1 FROM events e WHERE e.instance_id = events.instance_id AND e.version > 1);
UPDATE instances SET
    created_at = (SELECT recorded_at FROM events e WHERE e.instance_id = instances.id AND e.version = 1),
    updated_at = (SELECT max(recorded_at) FROM events e WHERE e.instance_id = instances.id);";

async fn backdate(store: &Store) {
    match store {
        Store::Postgres(db) => db.client().await.batch_execute(PG_BACKDATE).await.unwrap(),
        Store::Embedded(dir) => {
            let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            conn.execute_batch(SQLITE_BACKDATE).unwrap();
        }
    }
}

/// (versions of the instance's events, versions of its snapshots), read in the store.
async fn stored(store: &Store, instance_id: &str) -> (Vec<i64>, Vec<i64>) {
    let mut out = (Vec::new(), Vec::new());
    for (table, into) in [("events", &mut out.0), ("snapshots", &mut out.1)] {
        *into = match store {
            Store::Postgres(db) => db
                .client()
                .await
                .query(
                    &format!(
                        "SELECT version FROM {table} WHERE instance_id = $1::text::uuid ORDER BY version"
                    ),
                    &[&instance_id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            Store::Embedded(dir) => {
                let conn = Store::sqlite(dir);
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT version FROM {table} WHERE instance_id = ?1 ORDER BY version"
                    ))
                    .unwrap();
                stmt.query_map([instance_id], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        };
    }
    out
}

/// OUT_OF_RANGE whose message names the horizon.
#[track_caller]
fn out_of_range<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    horizon: DateTime<Utc>,
) {
    let status = result.expect_err("OUT_OF_RANGE");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&horizon.to_rfc3339()),
        "{:?} does not name the horizon {}",
        status.message(),
        horizon.to_rfc3339()
    );
}

for_each_backend!(
    thirty_days_with_a_ten_day_horizon: 4,
    an_erased_instance_loses_its_old_facts_like_any_other,
);

async fn thirty_days_with_a_ten_day_horizon(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "5"]).await;
    let mut c = server.clients().await;
    let mut analytics = AnalyticsServiceClient::new(server.channel().await);
    c.create_type("sensor", json!({"type": "object"})).await;

    let now = Utc::now();
    let day = Duration::days(1);
    let hour = Duration::hours(1);
    // `span`: one event a day from 30 days ago to yesterday (versions 2..=31); `old`: ten
    // days, all before the horizon (2..=11); `new`: the last nine days (2..=10).
    let plan = [
        (
            "span",
            (0..30)
                .map(|i| now - day * 30 + day * i + hour)
                .collect::<Vec<_>>(),
        ),
        (
            "old",
            (0..10).map(|i| now - day * 30 + day * i + hour).collect(),
        ),
        (
            "new",
            (0..9).map(|i| now - day * 9 + day * i + hour).collect(),
        ),
    ];
    let mut ids = Vec::new();
    for (name, times) in &plan {
        let inst = c.create_instance("sensor", name, json!({"n": 0})).await;
        for (i, t) in times.iter().enumerate() {
            let tag = if i % 3 == 0 {
                json!(null)
            } else {
                json!(format!("t{}", i % 3))
            };
            c.events
                .apply_event(pb::ApplyEventRequest {
                    instance_id: inst.id.clone(),
                    event_type: "Reading".into(),
                    payload: Some(st(
                        json!({"n": i + 1, "tag": tag, format!("k{}", i % 4): i}),
                    )),
                    occurred_at: Some(ts(*t)),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        ids.push(inst.id);
    }
    backdate(&store).await;
    let (span, old, new) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let span_times = &plan[0].1;

    // Answers before retention.
    let current = |c: &mut common::Clients, id: String| {
        let mut c = c.clone();
        async move {
            c.instances
                .get_instance(pb::GetInstanceRequest { instance_id: id })
                .await
                .unwrap()
                .into_inner()
                .instance
                .unwrap()
        }
    };
    let at_version = |c: &common::Clients, id: &str, version: i64| {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            c.queries
                .get_state_at_version(pb::GetStateAtVersionRequest {
                    instance_id: id,
                    version,
                })
                .await
        }
    };
    let at_time = |c: &common::Clients, id: &str, t: DateTime<Utc>| {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            c.queries
                .get_state_at_time(pb::GetStateAtTimeRequest {
                    instance_id: id,
                    timestamp: Some(ts(t)),
                    ..Default::default()
                })
                .await
        }
    };
    let timeline =
        |c: &common::Clients, id: &str, from: Option<i64>, start: Option<DateTime<Utc>>| {
            let mut c = c.clone();
            let id = id.to_string();
            async move {
                c.queries
                    .get_field_timeline(pb::GetFieldTimelineRequest {
                        instance_id: id,
                        field: "n".into(),
                        from_version: from,
                        start_time: start.map(ts),
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
            }
        };
    let counts = |a: &AnalyticsServiceClient<tonic::transport::Channel>| {
        let mut a = a.clone();
        async move {
            a.get_event_counts(pb::GetEventCountsRequest {
                entity_type: "sensor".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let aggregation = |a: &AnalyticsServiceClient<tonic::transport::Channel>,
                       as_of: DateTime<Utc>| {
        let mut a = a.clone();
        async move {
            a.get_field_aggregation(pb::GetFieldAggregationRequest {
                entity_type: "sensor".into(),
                field: "n".into(),
                as_of: Some(ts(as_of)),
            })
            .await
        }
    };
    let mut before_current = Vec::new();
    for id in &ids {
        before_current.push(current(&mut c, id.clone()).await);
    }
    // The kept version of `span`: the last recorded before the horizon, 10 days ago: its 20th
    // event (version 21), recorded 11 days ago plus an hour.
    let keep = 21;
    let mut before_versions = Vec::new();
    for v in keep..=31 {
        before_versions.push(at_version(&c, &span, v).await.unwrap().into_inner());
    }
    let moments: Vec<DateTime<Utc>> = vec![
        now - day * 10 + Duration::minutes(10),
        span_times[24] + Duration::minutes(1),
        now,
    ];
    let mut before_times = Vec::new();
    for t in &moments {
        before_times.push(at_time(&c, &span, *t).await.unwrap().into_inner());
    }
    let compare = |c: &common::Clients, v1: i64, v2: i64| {
        let mut c = c.clone();
        let id = span.clone();
        async move {
            c.queries
                .compare_versions(pb::CompareVersionsRequest {
                    instance_id: id,
                    version1: v1,
                    version2: v2,
                })
                .await
        }
    };
    let before_compare = compare(&c, keep, 31).await.unwrap().into_inner();
    let before_timeline = timeline(&c, &span, Some(keep + 1), None)
        .await
        .unwrap()
        .into_inner();
    let before_aggregation = aggregation(&analytics, moments[1])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before_aggregation.covered_from, None, "nothing dropped yet");
    let before_counts = counts(&analytics).await;
    assert_eq!(before_counts.covered_from, None);
    assert_eq!(
        before_counts.counts.iter().map(|c| c.count).sum::<i64>(),
        31 + 11 + 10
    );
    let (events, snapshots) = stored(&store, &span).await;
    assert_eq!(events, (1..=31).collect::<Vec<_>>());
    assert_eq!(snapshots, [5, 10, 15, 20, 25, 30]);

    // One pass, as the server runs it.
    let mut flags = store.flags();
    flags.extend(["--retention-days", "10", "--snapshot-interval", "5"]);
    let report = temporal_state_server::server::run_retention(&config_from_flags(&flags))
        .await
        .expect("retention pass");
    let horizon = report.horizon;
    assert!(
        (horizon - (Utc::now() - day * 10)).num_seconds().abs() < 600,
        "{horizon}"
    );
    // span: 1..=20 and old: 1..=10 go; span keeps a new snapshot at 21 (it had none) and loses
    // 5..=20; old keeps a new one at 11 and loses 5 and 10; new is untouched.
    assert_eq!(report.events_deleted, 20 + 10, "{report:?}");
    assert_eq!(report.snapshots_written, 2, "{report:?}");
    assert_eq!(report.snapshots_deleted, 4 + 2, "{report:?}");
    assert_eq!(report.instances, 2, "{report:?}");
    assert!(!report.busy);

    // The global log: a read from before what was deleted would skip events, so it is refused,
    // naming where a read can start; from there it answers.
    let refused = c
        .queries
        .read_events(pb::ReadEventsRequest {
            from_position: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    let dropped: i64 = refused
        .message()
        .rsplit("read from ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no position in {:?}", refused.message()));
    assert!(dropped > 0);
    let log = c
        .queries
        .read_events(pb::ReadEventsRequest {
            from_position: dropped,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!log.events.is_empty());
    assert!(log.events.iter().all(|e| e.position > dropped));
    assert_eq!(log.next_position, log.head_position);

    // What is stored: one snapshot at or before the horizon per instance, nothing older.
    assert_eq!(
        stored(&store, &span).await,
        ((keep..=31).collect(), vec![21, 25, 30])
    );
    assert_eq!(stored(&store, &old).await, (vec![11], vec![11]));
    assert_eq!(
        stored(&store, &new).await,
        ((1..=10).collect(), vec![5, 10])
    );

    // Current states unchanged.
    for (id, before) in ids.iter().zip(&before_current) {
        let after = current(&mut c, id.clone()).await;
        assert_eq!(js(&after.state), js(&before.state), "{id}");
        assert_eq!(after.version, before.version);
        let by_external = c
            .instances
            .get_current_state(pb::GetCurrentStateRequest {
                entity_type: "sensor".into(),
                external_id: after.external_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(js(&by_external.instance.unwrap().state), js(&before.state));
    }

    // Time travel inside the horizon: the same answers as before.
    for (v, before) in (keep..=31).zip(&before_versions) {
        assert_eq!(
            &at_version(&c, &span, v).await.unwrap().into_inner(),
            before,
            "v{v}"
        );
    }
    for (t, before) in moments.iter().zip(&before_times) {
        assert_eq!(
            &at_time(&c, &span, *t).await.unwrap().into_inner(),
            before,
            "{t}"
        );
    }
    assert_eq!(
        compare(&c, keep, 31).await.unwrap().into_inner(),
        before_compare
    );
    assert_eq!(
        timeline(&c, &span, Some(keep + 1), None)
            .await
            .unwrap()
            .into_inner(),
        before_timeline
    );
    // An open timeline starts after the first version kept, from its state.
    assert_eq!(
        timeline(&c, &span, None, None).await.unwrap().into_inner(),
        before_timeline
    );
    assert_eq!(
        at_version(&c, &old, 11).await.unwrap().into_inner().state,
        before_current[1].state
    );

    // Before it: OUT_OF_RANGE, naming the horizon.
    for v in [1, 2, 20] {
        out_of_range(at_version(&c, &span, v).await, horizon);
    }
    out_of_range(at_version(&c, &old, 10).await, horizon);
    out_of_range(
        at_time(&c, &span, horizon - Duration::seconds(1)).await,
        horizon,
    );
    out_of_range(at_time(&c, &span, span_times[3]).await, horizon);
    out_of_range(compare(&c, 3, 31).await, horizon);
    out_of_range(compare(&c, keep, 20).await, horizon);
    out_of_range(timeline(&c, &span, Some(5), None).await, horizon);
    out_of_range(
        timeline(&c, &span, None, Some(horizon - hour)).await,
        horizon,
    );
    let history = |from: Option<i64>, start: Option<DateTime<Utc>>| {
        let mut c = c.clone();
        let id = span.clone();
        async move {
            c.queries
                .get_history(pb::GetHistoryRequest {
                    instance_id: id,
                    from_version: from,
                    start_time: start.map(ts),
                    page_size: 100,
                    ..Default::default()
                })
                .await
        }
    };
    out_of_range(history(Some(1), None).await, horizon);
    out_of_range(history(None, Some(now - day * 20)).await, horizon);
    // Without bounds, history starts at the first version kept.
    let versions: Vec<i64> = history(None, None)
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (keep..=31).collect::<Vec<_>>());
    let from_keep = history(Some(keep), Some(horizon))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        from_keep.events.len(),
        10,
        "recorded at or after the horizon: 22..=31"
    );
    // A replay from a dropped version would start later, silently: refused.
    let replay = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: span.clone(),
            from_version: Some(3),
            ..Default::default()
        })
        .await;
    out_of_range(replay, horizon);

    // Analytics say what they cover; a past they no longer have is OUT_OF_RANGE.
    let after_counts = counts(&analytics).await;
    assert_eq!(after_counts.covered_from.as_ref().map(dt), Some(horizon));
    assert_eq!(
        after_counts.counts.iter().map(|c| c.count).sum::<i64>(),
        11 + 1 + 10,
        "{after_counts:?}"
    );
    let after_aggregation = aggregation(&analytics, moments[1])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after_aggregation.covered_from.as_ref().map(dt),
        Some(horizon)
    );
    assert_eq!(
        pb::GetFieldAggregationResponse {
            covered_from: None,
            ..after_aggregation
        },
        before_aggregation
    );
    out_of_range(aggregation(&analytics, now - day * 15).await, horizon);
    let summary = analytics
        .get_summary(pb::GetSummaryRequest {
            entity_type: "sensor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.covered_from.as_ref().map(dt), Some(horizon));
    let series = analytics
        .get_event_time_series(pb::GetEventTimeSeriesRequest {
            entity_type: "sensor".into(),
            interval: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            start_time: Some(ts(now - day * 31)),
            end_time: Some(ts(now + day)),
            event_type: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(series.covered_from.as_ref().map(dt), Some(horizon));

    // New writes still work, on a trimmed instance and on one that kept a single event.
    for (id, version) in [(&span, 32), (&old, 12)] {
        let applied = c.apply(id, "Reading", json!({"n": 100})).await.unwrap();
        assert_eq!(applied.event.unwrap().version, version);
        let state = at_version(&c, id, version).await.unwrap().into_inner();
        assert_eq!(js(&state.state)["n"], json!(100));
        let current = current(&mut c, id.clone()).await;
        assert_eq!(js(&current.state), js(&state.state));
    }

    // A second pass finds nothing more to drop.
    let again = temporal_state_server::server::run_retention(&config_from_flags(&flags))
        .await
        .unwrap();
    assert_eq!(
        (
            again.events_deleted,
            again.snapshots_deleted,
            again.snapshots_written
        ),
        (0, 0, 0),
        "{again:?}"
    );
    assert!(again.horizon >= horizon);
    server.stop().await;
}

/// Two things only PostgreSQL has: other replicas, and the outbox. A pass that finds another
/// server's retention transaction in progress stops and deletes nothing; and a version still
/// waiting for publication is never dropped (the kept version stops at it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_yield_to_another_server_and_keep_what_awaits_publication() {
    use temporal_state_server::adapters::postgres::retention::RETENTION_LOCK_KEY;
    let store = Store::create(Backend::Postgres).await;
    let Store::Postgres(db) = &store else {
        unreachable!()
    };
    let server = store.start(&["--snapshot-interval", "5"]).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let inst = c.create_instance("meter", "m", json!({"n": 0})).await;
    let now = Utc::now();
    for i in 0..12 {
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: inst.id.clone(),
                event_type: "Read".into(),
                payload: Some(st(json!({"n": i + 1}))),
                occurred_at: Some(ts(now - Duration::days(30) + Duration::days(i))),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    backdate(&store).await;
    let mut flags = store.flags();
    flags.extend(["--retention-days", "10", "--snapshot-interval", "5"]);
    let config = config_from_flags(&flags);

    // Another server is in a retention transaction: this pass leaves the work to it.
    let mut other = db.client().await;
    let tx = other.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK_KEY])
        .await
        .unwrap();
    let report = temporal_state_server::server::run_retention(&config)
        .await
        .unwrap();
    assert!(report.busy, "{report:?}");
    assert_eq!(report.events_deleted, 0);
    assert_eq!(
        stored(&store, &inst.id).await.0,
        (1..=13).collect::<Vec<_>>()
    );
    // The horizon is in force already: nothing before it is answered meanwhile.
    out_of_range(
        c.queries
            .get_state_at_time(pb::GetStateAtTimeRequest {
                instance_id: inst.id.clone(),
                timestamp: Some(ts(now - Duration::days(20))),
                ..Default::default()
            })
            .await,
        report.horizon,
    );
    tx.rollback().await.unwrap();

    // Version 4 still waits for publication: 1..=3 go, 4 is kept (with a new snapshot), though
    // everything up to 13 was recorded before the horizon.
    db.client()
        .await
        .execute(
            "INSERT INTO outbox (instance_id, version) VALUES ($1::text::uuid, 4)",
            &[&inst.id],
        )
        .await
        .unwrap();
    let report = temporal_state_server::server::run_retention(&config)
        .await
        .unwrap();
    assert!(!report.busy);
    assert_eq!(report.events_deleted, 3, "{report:?}");
    assert_eq!(
        stored(&store, &inst.id).await,
        ((4..=13).collect(), vec![4, 5, 10])
    );
    let state = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: inst.id.clone(),
            version: 13,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(js(&state.state), json!({"n": 12}));
    server.stop().await;
}

/// An erased instance keeps only facts, and retention drops the old ones like any instance's:
/// its kept state is the empty one (no fold could rebuild it from destroyed payloads), so it is
/// never skipped, and it stays erased.
async fn an_erased_instance_loses_its_old_facts_like_any_other(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "5"]).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let inst = c.create_instance("meter", "m-1", json!({"n": 0})).await;
    let start = Utc::now() - Duration::days(20);
    for i in 0..8 {
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: inst.id.clone(),
                event_type: "Reading".into(),
                payload: Some(st(json!({"n": i + 1}))),
                occurred_at: Some(ts(start + Duration::hours(i))),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    backdate(&store).await;
    // Erased now: versions 1..=9 lie 20 days back, the InstanceErased event (10) after the horizon.
    c.instances
        .erase_instance(pb::EraseInstanceRequest {
            instance_id: inst.id.clone(),
            reason: Some("retention test".into()),
        })
        .await
        .unwrap();

    let mut flags = store.flags();
    flags.extend(["--retention-days", "10", "--snapshot-interval", "5"]);
    temporal_state_server::server::run_retention(&config_from_flags(&flags))
        .await
        .expect("retention pass");
    let (events, snapshots) = stored(&store, &inst.id).await;
    assert_eq!(events, [9, 10], "the facts before the kept version go");
    assert_eq!(snapshots.first(), Some(&9), "{snapshots:?}");
    let after = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: inst.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(after.erased);
    assert_eq!(js(&after.state), json!({}));
    assert_eq!(after.version, 10);
}
