//! The TimescaleDB path run, not only written: PostgreSQL 17 with TimescaleDB 2.23 (a WASM build,
//! test-support's [`TimescaleDb`], one per test) under the same contracts as plain PostgreSQL.
//!
//! - `store::timescaledb::` and `analytics::timescaledb::`: the store (write path, time travel)
//!   and analytics contracts of `tests/contract/`, unchanged, on a migrated TimescaleDB.
//! - What only TimescaleDB has: the migrations' hypertable, continuous aggregate, compression and
//!   retention; one dataset loaded into TimescaleDB and plain PostgreSQL alike, whose every answer
//!   (history, time travel, analytics, the hourly aggregate's time series) must be equal before
//!   and after `refresh_continuous_aggregate` and `compress_chunk`, and after more events land in
//!   compressed chunks, and after a restart configures TimescaleDB again over compressed chunks.
//! - Retention (RETENTION_DAYS): the batched deletes keep every state from the horizon on, then
//!   `drop_chunks` drops only the chunks they emptied, never one holding a back-dated import.
//!
//! Background jobs never run in this build, so each test calls what the policies would.

mod common;

/// The store and analytics contracts of `tests/contract/` run here on TimescaleDB only.
macro_rules! on_each_store {
    ($($tests:tt)*) => {
        temporal_state_test_support::for_each_backend!(
            Backend { timescaledb => Timescale }; $($tests)*
        );
    };
}

#[path = "contract/analytics.rs"]
mod analytics;
#[path = "contract/fixture.rs"]
mod fixture;
#[path = "contract/store.rs"]
mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, TimeZone, Utc};
use common::{TestDb, TimescaleDb, json};
use fixture::{Ev, append, ev, new_instance, obj, pg_store};
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig, TimescaleSettings};
use temporal_state_server::ports::{
    AnalyticsReader, AppendOutcome, Catalog, EventRecord, EventStore, HistoryFilter, HistoryReader,
    TimeRange, TypeSummary,
};
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Rows of `sql` on the store's own (only) connection.
async fn rows(store: &PgStore, sql: &str) -> Vec<tokio_postgres::Row> {
    let client = store.pool().get().await.expect("the store's connection");
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn execute(store: &PgStore, sql: &str) {
    let client = store.pool().get().await.expect("the store's connection");
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Migrations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_make_a_hypertable_with_its_aggregate_and_compression_and_no_blind_retention() {
    let db = TimescaleDb::start().await;
    eprintln!("timescaledb answered in {:?}", db.started_in);
    let settings = TimescaleSettings {
        compress_after: Some(30 * DAY),
    };
    let open = |settings: &TimescaleSettings| {
        PgStore::new(&PgStoreConfig {
            url: db.url.clone(),
            pool_size: 1,
            snapshot_interval: 10,
            connect_timeout: Duration::from_secs(120),
        })
        .unwrap()
        .with_timescale(settings.clone())
    };
    let store = open(&settings);
    assert_eq!(
        store.migrate().await.unwrap(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    assert!(store.has_timescaledb());

    let version: String = rows(
        &store,
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
    )
    .await[0]
        .get(0);
    assert!(version.starts_with("2.23"), "{version}");
    let dims = rows(
        &store,
        "SELECT column_name FROM timescaledb_information.dimensions \
         WHERE hypertable_name = 'events'",
    )
    .await;
    assert_eq!(
        dims.iter().map(|r| r.get(0)).collect::<Vec<String>>(),
        ["occurred_at"]
    );
    let cagg = rows(
        &store,
        "SELECT materialized_only FROM timescaledb_information.continuous_aggregates \
         WHERE view_name = 'events_hourly'",
    )
    .await;
    assert_eq!(cagg.len(), 1, "the hourly continuous aggregate exists");
    assert!(!cagg[0].get::<_, bool>(0), "real-time: recent events count");
    let segmentby: Vec<String> = rows(
        &store,
        "SELECT attname FROM timescaledb_information.compression_settings \
         WHERE hypertable_name = 'events' AND segmentby_column_index IS NOT NULL \
         ORDER BY segmentby_column_index",
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(segmentby, ["entity_type_id", "instance_id"]);
    let jobs: Vec<(String, String)> = rows(
        &store,
        "SELECT proc_name, config::text FROM timescaledb_information.jobs \
         WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression', \
                             'policy_retention') ORDER BY proc_name",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let names: Vec<&str> = jobs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["policy_compression", "policy_refresh_continuous_aggregate"],
        "no retention policy: it would drop events states still need: {jobs:?}"
    );
    assert!(jobs[0].1.contains("720:00:00"), "30 days: {jobs:?}");
    // The blind policy an older server added (TIMESCALE_RETENTION_DAYS) ...
    execute(
        &store,
        "SELECT add_retention_policy('events', INTERVAL '400 days')",
    )
    .await;
    drop(store);

    // ... goes at the next start, which configures again: nothing to migrate, no error.
    let again = open(&settings);
    assert_eq!(again.migrate().await.unwrap(), Vec::<i32>::new());
    let count: i64 = rows(
        &again,
        "SELECT count(*) FROM timescaledb_information.jobs \
         WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression', \
                             'policy_retention')",
    )
    .await[0]
        .get(0);
    assert_eq!(count, 2, "the old retention policy was removed");
    drop(again);

    // Changed settings take effect at the next start: a new compression age.
    let changed = open(&TimescaleSettings {
        compress_after: Some(7 * DAY),
    });
    assert_eq!(changed.migrate().await.unwrap(), Vec::<i32>::new());
    let jobs: Vec<(String, String)> = rows(
        &changed,
        "SELECT proc_name, config::text FROM timescaledb_information.jobs \
         WHERE proc_name IN ('policy_compression', 'policy_retention') ORDER BY proc_name",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(jobs.len(), 1, "no retention policy: {jobs:?}");
    assert_eq!(jobs[0].0, "policy_compression");
    assert!(jobs[0].1.contains("168:00:00"), "7 days: {jobs:?}");
}

// ---------------------------------------------------------------------------------------------
// The same answers as plain PostgreSQL

/// 2024-01-01T00:00:00Z; the dataset's events occur over the 40 days after it (six weekly chunks).
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

const TYPES: [&str; 5] = ["Scored", "LevelUp", "Renamed", "Flagged", "zeta"];

/// One store of the comparison, and the ids both stores share.
struct Side {
    store: Arc<PgStore>,
    /// When each phase of loading ended, by this store's clock (recorded_at differs per store).
    phase_ends: Vec<DateTime<Utc>>,
}

/// Ids and events both stores receive, in the same order.
struct Plan {
    player: Uuid,
    order: Uuid,
    instances: Vec<(Uuid, Uuid)>, // (entity type, instance)
}

fn plan() -> Plan {
    let player = Uuid::new_v4();
    let order = Uuid::new_v4();
    let instances = (0..10)
        .map(|k| (if k < 7 { player } else { order }, Uuid::new_v4()))
        .collect();
    Plan {
        player,
        order,
        instances,
    }
}

/// The events of phase `phase` for instance `k`: occurred_at spread pseudo-randomly over 40 days
/// (phase 1 lands among phase 0's days: into chunks already compressed by then).
fn phase_events(phase: usize, k: usize) -> Vec<Ev> {
    (0..12)
        .map(|j| {
            let minutes = ((k * 7919 + j * 104_729 + phase * 31) % (40 * 24 * 60)) as i64;
            let name = ["ann", "bob", "cy"][(k + j) % 3];
            let mut e = ev(
                TYPES[(k + j + phase) % TYPES.len()],
                json!({
                    "score": (k * 13 + j * 7 + phase) % 50,
                    "name": name,
                    "flag": j % 2 == 0,
                    "nested": {"level": j + phase}
                }),
            );
            e.occurred_at = Some(base() + TimeDelta::minutes(minutes));
            e
        })
        .collect()
}

async fn load_phase(side: &mut Side, plan: &Plan, phase: usize, events: &[Vec<Vec<Ev>>]) {
    let s = side.store.as_ref();
    if phase == 0 {
        for (id, name) in [(plan.player, "player"), (plan.order, "order")] {
            s.create_entity_type(id, name, "", &obj(json!({"type": "object"})), None)
                .await
                .unwrap();
        }
        for (k, (type_id, id)) in plan.instances.iter().enumerate() {
            let mut new = new_instance(*type_id, &format!("i-{k}"), json!({"k": k}));
            new.id = *id;
            new.event_id = format!("create-{id}");
            s.create_instance(new).await.unwrap();
        }
    }
    for (k, (_, id)) in plan.instances.iter().enumerate() {
        // In batches of three, so some batches span chunks.
        for batch in events[phase][k].chunks(3) {
            match append(s, *id, None, batch.to_vec()).await {
                Ok(AppendOutcome::Appended { .. }) => {}
                other => panic!("append: {other:?}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    side.phase_ends.push(Utc::now());
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// An event without the time it was recorded at (each store has its own clock, and a creation
/// occurs when it is recorded).
fn unrecorded(e: &EventRecord) -> EventRecord {
    EventRecord {
        recorded_at: DateTime::UNIX_EPOCH,
        occurred_at: if e.version == 1 {
            DateTime::UNIX_EPOCH
        } else {
            e.occurred_at
        },
        // Each store numbers the global log itself.
        position: 0,
        ..e.clone()
    }
}

/// Every answer of the history and analytics ports over the dataset, labelled; times that follow
/// recorded_at are asked at the moments that mean the same in each store.
async fn answers(side: &Side, plan: &Plan) -> Vec<(String, String)> {
    let s = side.store.as_ref();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |label: String, value: String| out.push((label, value));
    let hour = 3_600_000_000_i64;
    let day = 24 * hour;
    let b = base();
    for (k, (_, id)) in plan.instances.iter().enumerate() {
        let all = s
            .events(*id, &HistoryFilter::default(), 100_000)
            .await
            .unwrap();
        put(
            format!("history of i-{k}"),
            format!("{:?}", all.iter().map(unrecorded).collect::<Vec<_>>()),
        );
        let desc = s
            .events(
                *id,
                &HistoryFilter {
                    descending: true,
                    event_types: vec!["Scored".into(), "zeta".into()],
                    after_version: Some(20),
                    ..Default::default()
                },
                5,
            )
            .await
            .unwrap();
        put(
            format!("filtered page of i-{k}"),
            format!("{:?}", desc.iter().map(unrecorded).collect::<Vec<_>>()),
        );
        for e in &all {
            let (snapshot, tail) = s.snapshot_and_tail(*id, e.version).await.unwrap();
            put(
                format!("snapshot and tail of i-{k} v{}", e.version),
                format!(
                    "{snapshot:?} {:?}",
                    tail.iter().map(unrecorded).collect::<Vec<_>>()
                ),
            );
            let at = s.version_at(*id, e.recorded_at).await.unwrap();
            let before = s
                .version_at(*id, e.recorded_at - TimeDelta::microseconds(1))
                .await
                .unwrap();
            put(
                format!("version of i-{k} at the time of v{}", e.version),
                format!(
                    "{:?}",
                    (at.map(|v| v >= e.version), before.map(|v| v < e.version))
                ),
            );
        }
        for (p, end) in side.phase_ends.iter().enumerate() {
            put(
                format!("version of i-{k} after phase {p}"),
                format!("{:?}", s.version_at(*id, *end).await.unwrap()),
            );
        }
    }
    for (name, type_id) in [("player", plan.player), ("order", plan.order)] {
        // Bounded: creations occur when they are recorded, at a different moment in each store.
        let ranges = [
            TimeRange {
                start: None,
                end: Some(b + TimeDelta::days(45)),
            },
            TimeRange {
                start: Some(b + TimeDelta::days(3)),
                end: Some(b + TimeDelta::days(17) + TimeDelta::minutes(5)),
            },
            TimeRange {
                start: None,
                end: Some(b + TimeDelta::days(9)),
            },
        ];
        for range in ranges {
            put(
                format!("{name} event counts {range:?}"),
                format!("{:?}", s.event_counts(type_id, range).await.unwrap()),
            );
            put(
                format!("{name} most active {range:?}"),
                format!("{:?}", s.most_active(type_id, range, 4).await.unwrap()),
            );
        }
        // (interval, start, end): the first four are wide and hour-aligned, so TimescaleDB reads
        // them from the hourly aggregate; the others from the events (time_bucket).
        let series = [
            (hour, b, b + TimeDelta::days(40)),
            (day, b - TimeDelta::days(3), b + TimeDelta::days(45)),
            (6 * hour, b + TimeDelta::hours(5), b + TimeDelta::days(12)),
            (day * 7, b - TimeDelta::days(30), b + TimeDelta::days(60)),
            (day, b + TimeDelta::days(2), b + TimeDelta::days(5)),
            (
                7_919_000_013,
                b + TimeDelta::minutes(37),
                b + TimeDelta::days(40),
            ),
            (hour, b + TimeDelta::minutes(1), b + TimeDelta::days(10)),
        ];
        for (interval, start, end) in series {
            for event_type in [None, Some("Scored"), Some("nope")] {
                put(
                    format!("{name} series {interval}us {start}..{end} {event_type:?}"),
                    format!(
                        "{:?}",
                        s.time_series(type_id, interval, start, end, event_type)
                            .await
                            .unwrap()
                    ),
                );
            }
        }
        for field in [
            "/score",
            "/name",
            "/flag",
            "/nested/level",
            "/k",
            "/missing",
        ] {
            put(
                format!("{name} field {field}"),
                format!("{:?}", s.field_stats(type_id, field, 3).await.unwrap()),
            );
            for (p, end) in side.phase_ends.iter().enumerate() {
                put(
                    format!("{name} field {field} after phase {p}"),
                    format!(
                        "{:?}",
                        s.field_stats_as_of(type_id, field, *end, 3).await.unwrap()
                    ),
                );
            }
        }
        let summary = s.summary(type_id, b + TimeDelta::days(20)).await.unwrap();
        put(
            format!("{name} summary"),
            format!(
                "{:?}",
                TypeSummary {
                    last_event_at: None, // the last creation's
                    ..summary
                }
            ),
        );
    }
    out
}

fn assert_same(plain: &[(String, String)], timescale: &[(String, String)], when: &str) {
    assert_eq!(plain.len(), timescale.len(), "{when}: as many answers");
    for ((label, p), (_, t)) in plain.iter().zip(timescale) {
        assert_eq!(
            t, p,
            "{when}: {label}: TimescaleDB (left) differs from PostgreSQL"
        );
    }
}

/// How many of the event hypertable's chunks are compressed, of how many.
async fn compressed_chunks(store: &PgStore) -> (i64, i64) {
    let r = &rows(
        store,
        "SELECT count(*) FILTER (WHERE is_compressed), count(*) \
         FROM timescaledb_information.chunks WHERE hypertable_name = 'events'",
    )
    .await[0];
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_plain_postgresql_through_refresh_compression_and_backfill() {
    let plan = plan();
    let events: Vec<Vec<Vec<Ev>>> = (0..2)
        .map(|phase| {
            (0..plan.instances.len())
                .map(|k| phase_events(phase, k))
                .collect()
        })
        .collect();
    let (pg_db, tsdb) = tokio::join!(TestDb::create(), TimescaleDb::start());
    let timeout = Duration::from_secs(120);
    let mut plain = Side {
        store: pg_store(&pg_db.url, 4, 3, timeout).await,
        phase_ends: Vec::new(),
    };
    // As a server configures it (TIMESCALE_COMPRESS_AFTER_DAYS=30), with its one connection.
    let open_ts = || async {
        let store = PgStore::new(&PgStoreConfig {
            url: tsdb.url.clone(),
            pool_size: 1,
            snapshot_interval: 3,
            connect_timeout: timeout,
        })
        .unwrap()
        .with_timescale(TimescaleSettings {
            compress_after: Some(30 * DAY),
        });
        store
            .migrate()
            .await
            .expect("migrate and configure TimescaleDB");
        Arc::new(store)
    };
    let mut ts = Side {
        store: open_ts().await,
        phase_ends: Vec::new(),
    };
    assert!(ts.store.has_timescaledb() && !plain.store.has_timescaledb());

    load_phase(&mut plain, &plan, 0, &events).await;
    load_phase(&mut ts, &plan, 0, &events).await;
    let expected = answers(&plain, &plan).await;
    // Nothing materialized yet: the aggregate answers in real time from the events.
    assert_same(&expected, &answers(&ts, &plan).await, "before any refresh");

    // What the refresh policy does, then the compression policy (whatever the chunks' age).
    execute(
        &ts.store,
        "CALL refresh_continuous_aggregate('events_hourly', NULL, NULL)",
    )
    .await;
    let materialized: i64 = rows(&ts.store, "SELECT count(*) FROM events_hourly").await[0].get(0);
    assert!(materialized > 0);
    assert_same(&expected, &answers(&ts, &plan).await, "after a refresh");
    execute(
        &ts.store,
        "SELECT compress_chunk(c) FROM show_chunks('events') AS c",
    )
    .await;
    let (compressed, chunks) = compressed_chunks(&ts.store).await;
    assert!(
        chunks >= 6 && compressed == chunks,
        "{compressed} of {chunks}"
    );
    assert_same(
        &expected,
        &answers(&ts, &plan).await,
        "over compressed chunks",
    );

    // A server restarting configures TimescaleDB again, now over compressed chunks.
    ts.store = {
        drop(std::mem::replace(
            &mut ts.store,
            pg_store(&pg_db.url, 1, 3, timeout).await,
        ));
        open_ts().await
    };
    assert_same(&expected, &answers(&ts, &plan).await, "after a restart");

    // More events, most of them into compressed chunks and materialized hours (imports
    // backfill: analytics follow occurred_at).
    load_phase(&mut plain, &plan, 1, &events).await;
    load_phase(&mut ts, &plan, 1, &events).await;
    let expected = answers(&plain, &plan).await;
    assert_same(
        &expected,
        &answers(&ts, &plan).await,
        "after writing into compressed chunks, before the next refresh",
    );
    execute(
        &ts.store,
        "CALL refresh_continuous_aggregate('events_hourly', NULL, NULL)",
    )
    .await;
    execute(
        &ts.store,
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('events') AS c",
    )
    .await;
    assert_same(
        &expected,
        &answers(&ts, &plan).await,
        "after the next refresh and compression",
    );
}

// ---------------------------------------------------------------------------------------------
// Retention

/// The state at `version` as time travel folds it: the snapshot at or before it, then the events
/// after the snapshot.
async fn folded(store: &PgStore, instance: Uuid, version: i64) -> serde_json::Value {
    let (snapshot, tail) = store.snapshot_and_tail(instance, version).await.unwrap();
    let from = snapshot.as_ref().map_or(0, |s| s.version);
    let mut state = snapshot.map(|s| s.state).unwrap_or_default();
    let versions: Vec<i64> = tail
        .iter()
        .filter(|e| e.version > from)
        .map(|e| e.version)
        .collect();
    assert_eq!(
        versions,
        (from + 1..=version).collect::<Vec<_>>(),
        "a whole tail"
    );
    for e in tail.iter().filter(|e| e.version > from) {
        state = temporal_state_server::domain::apply_event(&state, &e.payload, e.mode).unwrap();
    }
    serde_json::Value::Object(state)
}

/// Retention on TimescaleDB: the same batched deletes as plain PostgreSQL (from compressed
/// chunks too), then `drop_chunks` of the chunks they emptied, and never a chunk still holding an event a state needs, such as a
/// recently recorded import whose business time (the partitioning column) lies far in the past,
/// which a blind `drop_chunks` by age would have dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_what_states_do_not_need_then_the_chunks_it_emptied() {
    let db = TimescaleDb::start().await;
    // As the server configures it by default: old chunks get compressed, and retention deletes
    // from compressed chunks.
    let store = PgStore::new(&PgStoreConfig {
        url: db.url.clone(),
        pool_size: 1,
        snapshot_interval: 5,
        connect_timeout: Duration::from_secs(120),
    })
    .unwrap()
    .with_timescale(TimescaleSettings {
        compress_after: Some(30 * DAY),
    });
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    assert!(store.has_timescaledb());
    let t = store
        .create_entity_type(
            Uuid::new_v4(),
            "meter",
            "",
            &obj(json!({"type": "object"})),
            None,
        )
        .await
        .unwrap();
    let now = Utc::now();
    let day = TimeDelta::days(1);
    // `kept`: 40 daily events 60 to 21 days ago, then 5 in the last 5 days (versions 2..=46);
    // `imported`: recorded now, business times 35 to 31 days ago.
    let (kept, _) = store
        .create_instance(new_instance(t.id, "kept", json!({"n": 0})))
        .await
        .unwrap();
    let times: Vec<DateTime<Utc>> = (0..40)
        .map(|i| now - day * 60 + day * i)
        .chain((0..5).map(|i| now - day * 5 + day * i))
        .collect();
    for (i, at) in times.iter().enumerate() {
        let mut e = ev("Read", json!({"n": i + 1, format!("k{}", i % 3): i}));
        e.occurred_at = Some(*at);
        append(store.as_ref(), kept.id, None, vec![e])
            .await
            .unwrap();
    }
    let (imported, _) = store
        .create_instance(new_instance(t.id, "imported", json!({"n": 0})))
        .await
        .unwrap();
    for i in 0..5 {
        let mut e = ev("Read", json!({"n": i + 1}));
        e.occurred_at = Some(now - day * 35 + day * i);
        append(store.as_ref(), imported.id, None, vec![e])
            .await
            .unwrap();
    }
    // As if `kept` had been recorded on its days (the engine's clock cannot be turned back).
    execute(
        &store,
        &format!(
            "UPDATE events SET recorded_at = occurred_at WHERE instance_id = '{id}' AND version > 1;
             UPDATE events SET recorded_at = '{first}' WHERE instance_id = '{id}' AND version = 1;",
            id = kept.id,
            first = (now - day * 61).to_rfc3339()
        ),
    )
    .await;
    let chunks = |store: Arc<PgStore>| async move {
        rows(&store, "SELECT count(*) FROM show_chunks('events')").await[0].get::<_, i64>(0)
    };
    // What the compression policy would have done by now: every chunk older than 15 days.
    execute(
        &store,
        "SELECT compress_chunk(c) FROM show_chunks('events', older_than => now() - INTERVAL '15 days') AS c",
    )
    .await;
    let compressed: i64 = rows(
        &store,
        "SELECT count(*) FROM timescaledb_information.chunks \
         WHERE hypertable_name = 'events' AND is_compressed",
    )
    .await[0]
        .get(0);
    assert!(compressed >= 4, "{compressed} chunks compressed");
    let chunks_before = chunks(store.clone()).await;
    let mut before = Vec::new();
    for v in 41..=46 {
        before.push(folded(&store, kept.id, v).await);
    }
    let imported_before = folded(&store, imported.id, 6).await;

    let retention = temporal_state_server::app::Retention::new(store.clone(), store.clone());
    let horizon = now - day * 10;
    let report = retention
        .run(horizon, Default::default())
        .await
        .expect("retention pass");
    // `kept` keeps version 41 (its last before the horizon, 21 days ago) as a new snapshot and
    // loses 1..=40 and the snapshots 5..=40; `imported` was recorded after the horizon.
    assert_eq!(
        report.horizon,
        horizon.duration_trunc(TimeDelta::microseconds(1)).unwrap()
    );
    assert_eq!(report.events_deleted, 40, "{report:?}");
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    assert_eq!(report.snapshots_deleted, 8, "{report:?}");
    let chunks_after = chunks(store.clone()).await;
    assert!(report.chunks_dropped >= 2, "{report:?}");
    assert_eq!(chunks_after, chunks_before - report.chunks_dropped as i64);
    eprintln!("chunks: {chunks_before} before, {chunks_after} after retention: {report:?}");

    // Every state from the kept version on is unchanged; the import is whole.
    for (v, state) in (41..=46).zip(&before) {
        assert_eq!(&folded(&store, kept.id, v).await, state, "version {v}");
    }
    assert_eq!(folded(&store, imported.id, 6).await, imported_before);
    let kept_versions: Vec<i64> = store
        .events(kept.id, &HistoryFilter::default(), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(kept_versions, (41..=46).collect::<Vec<_>>());
    assert_eq!(
        store
            .events(imported.id, &HistoryFilter::default(), 100)
            .await
            .unwrap()
            .len(),
        6
    );
    assert_eq!(store.horizon().await.unwrap(), Some(report.horizon));
    assert_eq!(
        serde_json::Value::Object(store.get_instance(kept.id).await.unwrap().state),
        before[5]
    );

    // Writes go on, a back-dated one into the range of a dropped chunk too; a second pass has
    // nothing left to drop.
    let mut e = ev("Read", json!({"n": 100}));
    e.occurred_at = Some(now - day * 59);
    append(store.as_ref(), kept.id, None, vec![e])
        .await
        .unwrap();
    assert_eq!(folded(&store, kept.id, 47).await["n"], json!(100));
    let again = retention.run(horizon, Default::default()).await.unwrap();
    assert_eq!(
        (again.events_deleted, again.snapshots_deleted),
        (0, 0),
        "{again:?}"
    );
}
