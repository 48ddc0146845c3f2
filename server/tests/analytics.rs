//! AnalyticsService against a real server on PostgreSQL: a known dataset (several types,
//! instances and event types, occurred_at spread over days), every RPC checked against a naive
//! computation over the stored history, and bad input.

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::*;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use tonic::Code;
use tonic::transport::Channel;

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn from_ts(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.unwrap();
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// One stored event, as the naive computations see it.
#[derive(Debug, Clone)]
struct Seen {
    instance_id: String,
    external_id: String,
    event_type: String,
    occurred_at: DateTime<Utc>,
}

struct Dataset {
    _db: TestDb,
    server: TestServer,
    clients: Clients,
    analytics: AnalyticsServiceClient<Channel>,
    base: DateTime<Utc>,
    /// Every event of player_profile, read back through GetHistory.
    players: Vec<Seen>,
    /// A moment between the two loading phases.
    between: DateTime<Utc>,
    player_ids: Vec<String>,
}

async fn history(c: &mut Clients, id: &str, external_id: &str) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: id.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.events.into_iter().map(|e| Seen {
            instance_id: id.into(),
            external_id: external_id.into(),
            event_type: e.event_type,
            occurred_at: from_ts(&e.occurred_at),
        }));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn dataset() -> Dataset {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--snapshot-interval", "4"]).await;
    let mut c = server.clients().await;
    let mut schema = player_schema();
    schema["properties"]["active"] = json!({"type": "boolean"});
    c.create_type("player_profile", schema).await;
    c.create_type("order", json!({"type": "object"})).await;
    let base = (Utc::now() - Duration::days(10))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    let names = ["alice", "bob", "alice", "carol", "bob", "alice"];
    let mut player_ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let inst = c
            .create_instance(
                "player_profile",
                &format!("player-{i:03}"),
                json!({"username": name, "score": i * 10, "active": i % 2 == 0}),
            )
            .await;
        player_ids.push(inst.id);
    }
    // Phase 1: events spread over five days; instance k gets k + 2 of them.
    let types = ["ScoreIncreased", "LevelUp", "AchievementUnlocked"];
    let mut n = 0u64;
    for (k, id) in player_ids.iter().enumerate() {
        let events = (0..k + 2)
            .map(|j| {
                n += 1;
                let minutes = (n * 7919) % (5 * 24 * 60);
                pb::EventInput {
                    event_type: types[(n % 3) as usize].into(),
                    payload: Some(st(json!({"score": (k * 100 + j) as i64}))),
                    occurred_at: Some(ts(base + Duration::minutes(minutes as i64))),
                    ..Default::default()
                }
            })
            .collect();
        c.events
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: id.clone(),
                expected_version: None,
                events,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Phase 2: recent events, and changes the as_of statistics must not see.
    for (k, id) in player_ids.iter().enumerate().take(3) {
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "ScoreIncreased".into(),
                payload: Some(st(json!({"score": 5000 + k as i64, "username": "zed"}))),
                occurred_at: Some(ts(Utc::now() - Duration::hours(1))),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Another type's events must never leak into player_profile's figures.
    let order = c
        .create_instance("order", "order-1", json!({"total": 5}))
        .await;
    for _ in 0..4 {
        c.apply(&order.id, "ScoreIncreased", json!({"total": 6}))
            .await
            .unwrap();
    }

    let mut players = Vec::new();
    for (i, id) in player_ids.iter().enumerate() {
        players.extend(history(&mut c, id, &format!("player-{i:03}")).await);
    }
    let analytics = AnalyticsServiceClient::new(server.channel().await);
    Dataset {
        _db: db,
        server,
        clients: c,
        analytics,
        base,
        players,
        between,
        player_ids,
    }
}

fn naive_counts(
    events: &[Seen],
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Vec<(String, i64)> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for e in events {
        if start.is_none_or(|s| e.occurred_at >= s) && end.is_none_or(|x| e.occurred_at < x) {
            *counts.entry(e.event_type.clone()).or_default() += 1;
        }
    }
    let mut v: Vec<(String, i64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_matches_a_naive_computation() {
    let mut d = dataset().await;
    let a = &mut d.analytics;

    // Event counts, whole and in a range.
    for (start, end) in [
        (None, None),
        (
            Some(d.base + Duration::days(1)),
            Some(d.base + Duration::days(3)),
        ),
        (Some(d.base + Duration::days(4)), None),
    ] {
        let got = a
            .get_event_counts(pb::GetEventCountsRequest {
                entity_type: "player_profile".into(),
                start_time: start.map(ts),
                end_time: end.map(ts),
            })
            .await
            .unwrap()
            .into_inner()
            .counts;
        let got: Vec<(String, i64)> = got.into_iter().map(|c| (c.event_type, c.count)).collect();
        assert_eq!(
            got,
            naive_counts(&d.players, start, end),
            "range {start:?}..{end:?}"
        );
    }

    // Time series: 6-hour buckets over the five days, empty ones included; then one event type.
    let interval = Duration::hours(6);
    let (start, end) = (d.base, d.base + Duration::days(5));
    for event_type in [None, Some("LevelUp")] {
        let got = a
            .get_event_time_series(pb::GetEventTimeSeriesRequest {
                entity_type: "player_profile".into(),
                interval: Some(prost_types::Duration {
                    seconds: 6 * 3600,
                    nanos: 0,
                }),
                start_time: Some(ts(start)),
                end_time: Some(ts(end)),
                event_type: event_type.map(String::from),
            })
            .await
            .unwrap()
            .into_inner()
            .buckets;
        assert_eq!(got.len(), 20);
        let mut naive = [0i64; 20];
        for e in &d.players {
            if e.occurred_at >= start
                && e.occurred_at < end
                && event_type.is_none_or(|t| t == e.event_type)
            {
                let k = ((e.occurred_at - start).num_seconds() / interval.num_seconds()) as usize;
                naive[k] += 1;
            }
        }
        for (k, b) in got.iter().enumerate() {
            assert_eq!(from_ts(&b.bucket_start), start + interval * k as i32);
            assert_eq!(b.count, naive[k], "bucket {k} ({event_type:?})");
        }
        assert!(naive.iter().sum::<i64>() > 0 && naive.contains(&0));
    }

    // Field aggregation over the current states, numbers and strings and booleans.
    let mut states = Vec::new();
    for id in &d.player_ids {
        let inst = d
            .clients
            .instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .instance
            .unwrap();
        states.push(js(&inst.state));
    }
    check_field(a, "player_profile", "score", None, &states).await;
    check_field(a, "player_profile", "/username", None, &states).await;
    check_field(a, "player_profile", "active", None, &states).await;
    check_field(a, "player_profile", "level", None, &states).await; // declared, never set

    // ... and over the states as they were between the two phases.
    let mut then = Vec::new();
    for id in &d.player_ids {
        let s = d
            .clients
            .queries
            .get_state_at_time(pb::GetStateAtTimeRequest {
                instance_id: id.clone(),
                timestamp: Some(ts(d.between)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        then.push(js(&s.state));
    }
    assert_ne!(then, states, "phase 2 must have changed something");
    check_field(a, "player_profile", "score", Some(d.between), &then).await;
    check_field(a, "player_profile", "username", Some(d.between), &then).await;
    // Before any instance existed there is nothing.
    let before = a
        .get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: "player_profile".into(),
            field: "score".into(),
            as_of: Some(ts(d.base)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((before.count, before.missing, before.sum), (0, 0, None));

    // Most active, whole and in a range.
    for (start, end) in [
        (None, None),
        (
            Some(d.base + Duration::days(2)),
            Some(d.base + Duration::days(4)),
        ),
    ] {
        let got = a
            .get_most_active(pb::GetMostActiveRequest {
                entity_type: "player_profile".into(),
                limit: 3,
                start_time: start.map(ts),
                end_time: end.map(ts),
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let mut per: BTreeMap<String, (String, i64, DateTime<Utc>)> = BTreeMap::new();
        for e in &d.players {
            if start.is_none_or(|s| e.occurred_at >= s) && end.is_none_or(|x| e.occurred_at < x) {
                let entry = per.entry(e.instance_id.clone()).or_insert((
                    e.external_id.clone(),
                    0,
                    e.occurred_at,
                ));
                entry.1 += 1;
                entry.2 = entry.2.max(e.occurred_at);
            }
        }
        let mut naive: Vec<(String, String, i64, DateTime<Utc>)> = per
            .into_iter()
            .map(|(id, (x, n, t))| (id, x, n, t))
            .collect();
        naive.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        naive.truncate(3);
        let got: Vec<(String, String, i64, DateTime<Utc>)> = got
            .into_iter()
            .map(|e| {
                (
                    e.instance_id,
                    e.external_id,
                    e.event_count,
                    from_ts(&e.last_event_at),
                )
            })
            .collect();
        assert_eq!(got, naive, "range {start:?}..{end:?}");
    }

    // Summary.
    let s = a
        .get_summary(pb::GetSummaryRequest {
            entity_type: "player_profile".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let day_ago = Utc::now() - Duration::hours(24);
    let mut types: Vec<String> = d.players.iter().map(|e| e.event_type.clone()).collect();
    types.sort();
    types.dedup();
    assert_eq!(s.instance_count, d.player_ids.len() as i64);
    assert_eq!(s.event_count, d.players.len() as i64);
    assert_eq!(
        from_ts(&s.first_event_at),
        d.players.iter().map(|e| e.occurred_at).min().unwrap()
    );
    assert_eq!(
        from_ts(&s.last_event_at),
        d.players.iter().map(|e| e.occurred_at).max().unwrap()
    );
    assert_eq!(
        s.events_last_24h,
        d.players
            .iter()
            .filter(|e| e.occurred_at >= day_ago)
            .count() as i64
    );
    assert_eq!(s.event_types, types);
    drop(d.server);
}

async fn check_field(
    a: &mut AnalyticsServiceClient<Channel>,
    entity_type: &str,
    field: &str,
    as_of: Option<DateTime<Utc>>,
    states: &[Value],
) {
    let got = a
        .get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: entity_type.into(),
            field: field.into(),
            as_of: as_of.map(ts),
        })
        .await
        .unwrap()
        .into_inner();
    let key = field.trim_start_matches('/');
    let values: Vec<Option<&Value>> = states.iter().map(|s| s.get(key)).collect();
    let present: Vec<&Value> = values.iter().flatten().copied().collect();
    assert_eq!(got.count, present.len() as i64, "{field}");
    assert_eq!(
        got.missing,
        (values.len() - present.len()) as i64,
        "{field}"
    );
    let numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
    if numbers.is_empty() {
        assert_eq!(
            (got.min, got.max, got.sum, got.mean),
            (None, None, None, None),
            "{field}"
        );
    } else {
        let sum: f64 = numbers.iter().sum();
        assert_eq!(got.min, numbers.iter().copied().reduce(f64::min), "{field}");
        assert_eq!(got.max, numbers.iter().copied().reduce(f64::max), "{field}");
        assert!((got.sum.unwrap() - sum).abs() < 1e-9, "{field}");
        assert!(
            (got.mean.unwrap() - sum / numbers.len() as f64).abs() < 1e-9,
            "{field}"
        );
    }
    let mut freq: HashMap<String, (Value, i64)> = HashMap::new();
    for v in present.iter().filter(|v| v.is_string() || v.is_boolean()) {
        freq.entry(v.to_string()).or_insert(((*v).clone(), 0)).1 += 1;
    }
    let mut naive: Vec<(String, (Value, i64))> = freq.into_iter().collect();
    naive.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
    let naive: Vec<(Value, i64)> = naive.into_iter().take(10).map(|(_, v)| v).collect();
    let got_top: Vec<(Value, i64)> = got
        .top_values
        .iter()
        .map(|f| {
            let v = js(&Some(prost_types::Struct {
                fields: [("v".to_string(), f.value.clone().unwrap())]
                    .into_iter()
                    .collect(),
            }));
            (v["v"].clone(), f.count)
        })
        .collect();
    assert_eq!(got_top, naive, "{field}");
}

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} should mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_analytics_input_gets_its_code() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    c.create_type("player_profile", player_schema()).await;
    let mut a = AnalyticsServiceClient::new(server.channel().await);
    let now = Utc::now();
    let series =
        |seconds: i64, start: DateTime<Utc>, end: DateTime<Utc>| pb::GetEventTimeSeriesRequest {
            entity_type: "player_profile".into(),
            interval: Some(prost_types::Duration { seconds, nanos: 0 }),
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            event_type: None,
        };
    assert_invalid(
        a.get_event_time_series(series(0, now - Duration::days(1), now))
            .await,
        Code::InvalidArgument,
        "interval",
    );
    assert_invalid(
        a.get_event_time_series(series(-60, now - Duration::days(1), now))
            .await,
        Code::InvalidArgument,
        "interval",
    );
    assert_invalid(
        a.get_event_time_series(series(60, now, now - Duration::days(1)))
            .await,
        Code::InvalidArgument,
        "start_time",
    );
    assert_invalid(
        a.get_event_time_series(series(1, now - Duration::days(30), now))
            .await,
        Code::InvalidArgument,
        "buckets",
    );
    assert_invalid(
        a.get_event_counts(pb::GetEventCountsRequest {
            entity_type: "player_profile".into(),
            start_time: Some(ts(now)),
            end_time: Some(ts(now - Duration::hours(1))),
        })
        .await,
        Code::InvalidArgument,
        "start_time",
    );
    for limit in [0, 1_000_000, -3] {
        assert_invalid(
            a.get_most_active(pb::GetMostActiveRequest {
                entity_type: "player_profile".into(),
                limit,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "limit",
        );
    }
    assert_invalid(
        a.get_summary(pb::GetSummaryRequest {
            entity_type: "no_such_type".into(),
        })
        .await,
        Code::NotFound,
        "no_such_type",
    );
    assert_invalid(
        a.get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: "player_profile".into(),
            field: "nickname".into(),
            as_of: None,
        })
        .await,
        Code::NotFound,
        "nickname",
    );
    assert_invalid(
        a.get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: "player_profile".into(),
            field: "a..b".into(),
            as_of: None,
        })
        .await,
        Code::InvalidArgument,
        "field",
    );
    // An empty type answers with zeros, not an error.
    let s = a
        .get_summary(pb::GetSummaryRequest {
            entity_type: "player_profile".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.instance_count, s.event_count, s.first_event_at),
        (0, 0, None)
    );
}
