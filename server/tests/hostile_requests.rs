//! Requests as an attacker would send them, against a real server on both backends: values that
//! overflow, NUL characters in every string field, megabytes of junk, undecodable and too-deep
//! messages, over-large requests, and more calls (or slower ones) than the server takes. Each
//! gets a client code with a short message, nothing is stored, and the server stays healthy and
//! writable.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::raw::raw_call;
use common::*;
use prost::Message as _;
use prost_types::{Duration as PbDuration, Struct, Timestamp, Value, value::Kind};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A server on one backend, with what the tests need to look behind it.
struct Target {
    server: TestServer,
    /// The PostgreSQL database, None on the embedded store.
    db: Option<TestDb>,
    _dir: Option<tempfile::TempDir>,
}

async fn on_postgres(args: &[&str]) -> Target {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, args).await;
    Target {
        server,
        db: Some(db),
        _dir: None,
    }
}

async fn on_embedded(args: &[&str]) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_embedded(dir.path(), args).await;
    Target {
        server,
        db: None,
        _dir: Some(dir),
    }
}

/// What a hostile call must not change: entity types, instances and the probe instance's
/// version, read through the API (so the same check holds on both backends), plus the raw
/// row counts on PostgreSQL.
#[derive(Debug, PartialEq)]
struct Stored {
    types: usize,
    instances: usize,
    version: i64,
    rows: Option<(i64, i64, i64)>,
}

impl Target {
    async fn stored(&self, c: &mut Clients, instance_id: &str) -> Stored {
        let types = c
            .types
            .list_entity_types(pb::ListEntityTypesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entity_types
            .len();
        let instances = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                entity_type: "device".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instances
            .len();
        let version = c
            .instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: instance_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .instance
            .unwrap()
            .version;
        let rows = match &self.db {
            Some(db) => Some((
                db.count("entity_types").await,
                db.count("instances").await,
                db.count("events").await,
            )),
            None => None,
        };
        Stored {
            types,
            instances,
            version,
            rows,
        }
    }

    /// Health SERVING, and a write still goes through.
    async fn assert_healthy_and_writable(&self, c: &mut Clients, instance_id: &str) {
        let mut health = HealthClient::new(self.server.channel().await);
        wait_for_health(&mut health, "", ServingStatus::Serving).await;
        c.apply(instance_id, "StillWritable", json!({"ok": true}))
            .await
            .expect("the server still takes writes");
    }
}

/// Asserts a client code (one of `codes`) and a message short enough never to echo a request.
fn assert_code<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, codes: &[Code]) {
    let status = match result {
        Ok(v) => panic!("{what}: expected one of {codes:?}, got {v:?}"),
        Err(s) => s,
    };
    assert!(
        codes.contains(&status.code()),
        "{what}: expected one of {codes:?}, got {:?}: {}",
        status.code(),
        status.message()
    );
    assert!(
        status.message().len() < 1024,
        "{what}: a {}-byte message",
        status.message().len()
    );
    assert!(
        status.details().len() < 8 * 1024,
        "{what}: {} bytes of details",
        status.details().len()
    );
}

const INVALID: &[Code] = &[Code::InvalidArgument];

fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn year_2024() -> Option<Timestamp> {
    ts(1_704_067_200, 0)
}

fn year_2025() -> Option<Timestamp> {
    ts(1_735_689_600, 0)
}

struct Fixture {
    c: Clients,
    analytics: AnalyticsServiceClient<Channel>,
    instance_id: String,
}

async fn fixture(target: &Target) -> Fixture {
    let mut c = target.server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d-1", json!({"n": 1})).await;
    c.apply(&inst.id, "Reading", json!({"n": 2})).await.unwrap();
    let analytics = AnalyticsServiceClient::new(target.server.channel().await);
    Fixture {
        c,
        analytics,
        instance_id: inst.id,
    }
}

/// Values that overflow or make no sense: durations, timestamps, versions, page sizes and
/// limits at the extremes of their types.
async fn extreme_numbers(target: Target) {
    let Fixture {
        mut c,
        mut analytics,
        instance_id: id,
    } = fixture(&target).await;
    let before = target.stored(&mut c, &id).await;

    // The interval that panicked a worker (chrono overflow), and its neighbours.
    for (seconds, nanos) in [
        (9_223_372_036_854_775, 0),
        (9_223_372_036_854_775, 999_999_999),
        (i64::MAX, 999_999_999),
        (i64::MAX, 0),
        (i64::MIN, 0),
        (i64::MIN, -999_999_999),
        (-1, 0),
        (0, 0),
        (0, 1), // under a microsecond: no bucket can be that narrow
        (1, i32::MAX),
        (1, i32::MIN),
        (1, -1),
    ] {
        let r = analytics
            .get_event_time_series(pb::GetEventTimeSeriesRequest {
                entity_type: "device".into(),
                interval: Some(PbDuration { seconds, nanos }),
                start_time: year_2024(),
                end_time: year_2025(),
                event_type: None,
            })
            .await;
        assert_code(&format!("interval {seconds}s {nanos}ns"), r, INVALID);
    }
    // A tiny interval over a huge range: the bucket count is capped, and the limit named.
    for (interval, start, end) in [
        (
            PbDuration {
                seconds: 0,
                nanos: 1000,
            },
            ts(-62_135_596_800, 0),
            ts(253_402_300_799, 999_999_999),
        ),
        (
            PbDuration {
                seconds: 1,
                nanos: 0,
            },
            year_2024(),
            year_2025(),
        ),
    ] {
        let status = analytics
            .get_event_time_series(pb::GetEventTimeSeriesRequest {
                entity_type: "device".into(),
                interval: Some(interval),
                start_time: start,
                end_time: end,
                event_type: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("10000"), "{}", status.message());
    }
    // The longest interval there is still works: one bucket.
    let one = analytics
        .get_event_time_series(pb::GetEventTimeSeriesRequest {
            entity_type: "device".into(),
            interval: Some(PbDuration {
                seconds: 315_537_897_599,
                nanos: 0,
            }),
            start_time: ts(-62_135_596_800, 0),
            end_time: ts(253_402_300_799, 0),
            event_type: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.buckets.len(), 1);

    // Timestamps out of the RFC 3339 range, or with impossible nanos, in every request that
    // takes one.
    for (seconds, nanos) in [
        (i64::MAX, 0),
        (i64::MIN, 0),
        (253_402_300_800, 0),
        (-62_135_596_801, 0),
        (0, -1),
        (0, 1_000_000_000),
        (0, i32::MAX),
        (0, i32::MIN),
    ] {
        let bad = ts(seconds, nanos);
        let what = |rpc: &str| format!("{rpc} with timestamp {seconds}s {nanos}ns");
        let r = c
            .events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Reading".into(),
                occurred_at: bad,
                ..Default::default()
            })
            .await;
        assert_code(&what("ApplyEvent"), r, INVALID);
        let r = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: id.clone(),
                start_time: bad,
                ..Default::default()
            })
            .await;
        assert_code(&what("GetHistory"), r, INVALID);
        let r = c
            .queries
            .get_state_at_time(pb::GetStateAtTimeRequest {
                instance_id: id.clone(),
                timestamp: bad,
                ..Default::default()
            })
            .await;
        assert_code(&what("GetStateAtTime"), r, INVALID);
        let r = c
            .queries
            .get_field_timeline(pb::GetFieldTimelineRequest {
                instance_id: id.clone(),
                field: "n".into(),
                end_time: bad,
                ..Default::default()
            })
            .await;
        assert_code(&what("GetFieldTimeline"), r, INVALID);
        let r = analytics
            .get_event_counts(pb::GetEventCountsRequest {
                entity_type: "device".into(),
                start_time: bad,
                end_time: None,
            })
            .await;
        assert_code(&what("GetEventCounts"), r, INVALID);
        let r = analytics
            .get_event_time_series(pb::GetEventTimeSeriesRequest {
                entity_type: "device".into(),
                interval: Some(PbDuration {
                    seconds: 3600,
                    nanos: 0,
                }),
                start_time: year_2024(),
                end_time: bad,
                event_type: None,
            })
            .await;
        assert_code(&what("GetEventTimeSeries"), r, INVALID);
        let r = analytics
            .get_field_aggregation(pb::GetFieldAggregationRequest {
                entity_type: "device".into(),
                field: "n".into(),
                as_of: bad,
            })
            .await;
        assert_code(&what("GetFieldAggregation"), r, INVALID);
        let r = analytics
            .get_most_active(pb::GetMostActiveRequest {
                entity_type: "device".into(),
                limit: 10,
                start_time: bad,
                end_time: None,
            })
            .await;
        assert_code(&what("GetMostActive"), r, INVALID);
    }

    // Versions at the extremes of int64: a client code each, never INTERNAL or a panic.
    let versions = [i64::MIN, -1, 0, i64::MAX, i64::MAX - 1];
    let invalid_or_absent = &[Code::InvalidArgument, Code::NotFound, Code::OutOfRange];
    for v in versions {
        let r = c
            .queries
            .get_state_at_version(pb::GetStateAtVersionRequest {
                instance_id: id.clone(),
                version: v,
            })
            .await;
        assert_code(&format!("GetStateAtVersion {v}"), r, invalid_or_absent);
        let r = c
            .queries
            .compare_versions(pb::CompareVersionsRequest {
                instance_id: id.clone(),
                version1: 1,
                version2: v,
            })
            .await;
        assert_code(&format!("CompareVersions 1..{v}"), r, invalid_or_absent);
        let r = c
            .events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Reading".into(),
                expected_version: Some(v),
                ..Default::default()
            })
            .await;
        assert_code(
            &format!("ApplyEvent expecting {v}"),
            r,
            &[Code::InvalidArgument, Code::Aborted],
        );
        // Ranges: a client code, or an empty answer.
        for (from, to) in [(Some(v), None), (None, Some(v)), (Some(v), Some(v))] {
            let history = c
                .queries
                .get_history(pb::GetHistoryRequest {
                    instance_id: id.clone(),
                    from_version: from,
                    to_version: to,
                    ..Default::default()
                })
                .await;
            if let Err(s) = history {
                assert_code("GetHistory range", Err::<(), _>(s), INVALID);
            }
            let timeline = c
                .queries
                .get_field_timeline(pb::GetFieldTimelineRequest {
                    instance_id: id.clone(),
                    field: "n".into(),
                    from_version: from,
                    to_version: to,
                    ..Default::default()
                })
                .await;
            if let Err(s) = timeline {
                assert_code("GetFieldTimeline range", Err::<(), _>(s), INVALID);
            }
        }
        let sub = c
            .events
            .subscribe(pb::SubscribeRequest {
                instance_id: id.clone(),
                from_version: Some(v),
                ..Default::default()
            })
            .await;
        if v < 1 {
            assert_code(&format!("Subscribe from {v}"), sub, INVALID);
        }
    }

    // Page sizes and limits at the extremes of int32.
    for n in [i32::MIN, -1, i32::MAX, 1001] {
        let r = c
            .types
            .list_entity_types(pb::ListEntityTypesRequest {
                page_size: n,
                ..Default::default()
            })
            .await;
        assert_code(&format!("ListEntityTypes page_size {n}"), r, INVALID);
        let r = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                entity_type: "device".into(),
                page_size: n,
                ..Default::default()
            })
            .await;
        assert_code(&format!("ListInstances page_size {n}"), r, INVALID);
        let r = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: id.clone(),
                page_size: n,
                ..Default::default()
            })
            .await;
        assert_code(&format!("GetHistory page_size {n}"), r, INVALID);
        let r = analytics
            .get_most_active(pb::GetMostActiveRequest {
                entity_type: "device".into(),
                limit: n,
                ..Default::default()
            })
            .await;
        assert_code(&format!("GetMostActive limit {n}"), r, INVALID);
    }
    let r = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: id.clone(),
            event_type: "Reading".into(),
            mode: i32::MAX,
            ..Default::default()
        })
        .await;
    assert_code("ApplyEvent mode i32::MAX", r, INVALID);

    assert_eq!(target.stored(&mut c, &id).await, before, "nothing stored");
    target.assert_healthy_and_writable(&mut c, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_get_client_codes_on_postgres() {
    extreme_numbers(on_postgres(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_get_client_codes_on_the_embedded_store() {
    extreme_numbers(on_embedded(&[]).await).await;
}

/// Every string field of every request, once holding `value`: each call must fail with
/// INVALID_ARGUMENT (or, for a lookup by a well-formed key, NOT_FOUND) and a short message.
async fn every_string_field(f: &mut Fixture, value: &str, label: &str) {
    let id = f.instance_id.clone();
    let v = || value.to_string();
    let c = &mut f.c;
    let a = &mut f.analytics;
    let token = URL_SAFE_NO_PAD.encode(value.as_bytes());
    let what = |field: &str| format!("{field} = {label}");
    // Free text (a description, a schema, a field path naming a JSON key) may hold control
    // characters other than NUL; a NUL, or a megabyte, it may not.
    let not_text = value.contains('\0') || value.len() > 4096;

    let r = c
        .types
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: v(),
            description: String::new(),
            schema: Some(st(json!({"type": "object"}))),
        })
        .await;
    assert_code(&what("CreateEntityType.name"), r, INVALID);
    if not_text {
        let r = c
            .types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: "hostile".into(),
                description: v(),
                schema: Some(st(json!({"type": "object"}))),
            })
            .await;
        assert_code(&what("CreateEntityType.description"), r, INVALID);
    }
    if value.contains('\0') {
        let r = c
            .types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: "hostile".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "object", "title": value}))),
            })
            .await;
        assert_code(&what("CreateEntityType.schema"), r, INVALID);
    }
    let r = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest {
            page_size: 0,
            page_token: token.clone(),
        })
        .await;
    assert_code(&what("ListEntityTypes.page_token"), r, INVALID);
    let r = c
        .types
        .get_entity_type(pb::GetEntityTypeRequest { entity_type: v() })
        .await;
    assert_code(&what("GetEntityType.entity_type"), r, INVALID);

    let r = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: v(),
            external_id: "x".into(),
            ..Default::default()
        })
        .await;
    assert_code(&what("CreateInstance.entity_type"), r, INVALID);
    let r = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "device".into(),
            external_id: v(),
            ..Default::default()
        })
        .await;
    assert_code(&what("CreateInstance.external_id"), r, INVALID);
    let r = c
        .instances
        .list_instances(pb::ListInstancesRequest {
            entity_type: v(),
            ..Default::default()
        })
        .await;
    assert_code(&what("ListInstances.entity_type"), r, INVALID);
    let r = c
        .instances
        .list_instances(pb::ListInstancesRequest {
            entity_type: "device".into(),
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
    assert_code(&what("ListInstances.page_token"), r, INVALID);
    let r = c
        .instances
        .get_instance(pb::GetInstanceRequest { instance_id: v() })
        .await;
    assert_code(&what("GetInstance.instance_id"), r, INVALID);
    let r = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "device".into(),
            external_id: v(),
        })
        .await;
    assert_code(&what("GetCurrentState.external_id"), r, INVALID);
    let r = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: v(),
            external_id: "d-1".into(),
        })
        .await;
    assert_code(&what("GetCurrentState.entity_type"), r, INVALID);

    for (field, req) in [
        (
            "instance_id",
            pb::ApplyEventRequest {
                instance_id: v(),
                event_type: "Reading".into(),
                ..Default::default()
            },
        ),
        (
            "event_type",
            pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: v(),
                ..Default::default()
            },
        ),
        (
            "event_id",
            pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Reading".into(),
                event_id: v(),
                ..Default::default()
            },
        ),
    ] {
        let r = c.events.apply_event(req).await;
        assert_code(&what(&format!("ApplyEvent.{field}")), r, INVALID);
    }
    let r = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            instance_id: id.clone(),
            events: vec![pb::EventInput {
                event_type: v(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await;
    assert_code(&what("ApplyEvents.events[0].event_type"), r, INVALID);
    for (field, req) in [
        (
            "entity_type",
            pb::SubscribeRequest {
                entity_type: v(),
                ..Default::default()
            },
        ),
        (
            "instance_id",
            pb::SubscribeRequest {
                instance_id: v(),
                ..Default::default()
            },
        ),
        (
            "event_types",
            pb::SubscribeRequest {
                instance_id: id.clone(),
                event_types: vec!["Reading".into(), v()],
                ..Default::default()
            },
        ),
    ] {
        let r = c.events.subscribe(req).await;
        assert_code(&what(&format!("Subscribe.{field}")), r, INVALID);
    }

    let r = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.clone(),
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
    assert_code(&what("GetHistory.page_token"), r, INVALID);
    let r = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.clone(),
            event_types: vec![v()],
            ..Default::default()
        })
        .await;
    assert_code(&what("GetHistory.event_types"), r, INVALID);
    let r = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: v(),
            ..Default::default()
        })
        .await;
    assert_code(&what("GetHistory.instance_id"), r, INVALID);
    let r = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: v(),
            version: 1,
        })
        .await;
    assert_code(&what("GetStateAtVersion.instance_id"), r, INVALID);
    let r = c
        .queries
        .get_state_at_time(pb::GetStateAtTimeRequest {
            instance_id: v(),
            timestamp: year_2024(),
            ..Default::default()
        })
        .await;
    assert_code(&what("GetStateAtTime.instance_id"), r, INVALID);
    let r = c
        .queries
        .compare_versions(pb::CompareVersionsRequest {
            instance_id: v(),
            version1: 1,
            version2: 2,
        })
        .await;
    assert_code(&what("CompareVersions.instance_id"), r, INVALID);
    let fields = if not_text {
        vec![format!("/n{value}"), format!("n.{value}")]
    } else {
        Vec::new()
    };
    for field in fields {
        let r = c
            .queries
            .get_field_timeline(pb::GetFieldTimelineRequest {
                instance_id: id.clone(),
                field: field.clone(),
                ..Default::default()
            })
            .await;
        assert_code(&what("GetFieldTimeline.field"), r, INVALID);
        let r = a
            .get_field_aggregation(pb::GetFieldAggregationRequest {
                entity_type: "device".into(),
                field,
                as_of: None,
            })
            .await;
        assert_code(&what("GetFieldAggregation.field"), r, INVALID);
    }

    let r = a
        .get_event_counts(pb::GetEventCountsRequest {
            entity_type: v(),
            ..Default::default()
        })
        .await;
    assert_code(&what("GetEventCounts.entity_type"), r, INVALID);
    let r = a
        .get_event_time_series(pb::GetEventTimeSeriesRequest {
            entity_type: "device".into(),
            interval: Some(PbDuration {
                seconds: 86_400,
                nanos: 0,
            }),
            start_time: year_2024(),
            end_time: year_2025(),
            event_type: Some(v()),
        })
        .await;
    assert_code(&what("GetEventTimeSeries.event_type"), r, INVALID);
    let r = a
        .get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: v(),
            field: "n".into(),
            as_of: None,
        })
        .await;
    assert_code(&what("GetFieldAggregation.entity_type"), r, INVALID);
    let r = a
        .get_most_active(pb::GetMostActiveRequest {
            entity_type: v(),
            limit: 5,
            ..Default::default()
        })
        .await;
    assert_code(&what("GetMostActive.entity_type"), r, INVALID);
    let r = a
        .get_summary(pb::GetSummaryRequest { entity_type: v() })
        .await;
    assert_code(&what("GetSummary.entity_type"), r, INVALID);
}

async fn hostile_strings(target: Target) {
    let mut f = fixture(&target).await;
    let id = f.instance_id.clone();
    let before = target.stored(&mut f.c, &id).await;
    for (value, label) in [
        ("\0".to_string(), "NUL"),
        ("a\0b".to_string(), "a NUL inside"),
        ("Reading\u{1b}[2J".to_string(), "an escape sequence"),
    ] {
        every_string_field(&mut f, &value, label).await;
    }
    assert_eq!(target.stored(&mut f.c, &id).await, before, "nothing stored");
    // A megabyte of junk: refused with a message that does not echo it.
    let junk = "\u{7f}".to_string() + &"J".repeat(1 << 20);
    every_string_field(&mut f, &junk, "1 MB of junk").await;
    target.assert_healthy_and_writable(&mut f.c, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_invalid_argument_on_postgres() {
    hostile_strings(on_postgres(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_invalid_argument_on_the_embedded_store() {
    hostile_strings(on_embedded(&[]).await).await;
}

/// A `Struct` nested `depth` levels deep: `{"a": {"a": ...}}`.
fn nested(depth: usize) -> Struct {
    let mut s = Struct::default();
    for _ in 0..depth {
        s = Struct {
            fields: [(
                "a".to_string(),
                Value {
                    kind: Some(Kind::StructValue(s)),
                },
            )]
            .into_iter()
            .collect(),
        };
    }
    s
}

/// Messages that do not decode, and messages over the size limit.
async fn undecodable_and_oversized(target: Target) {
    let Fixture {
        mut c,
        instance_id: id,
        ..
    } = fixture(&target).await;
    let before = target.stored(&mut c, &id).await;
    let channel = target.server.channel().await;
    const APPLY: &str = "/temporal_state.v1.EventService/ApplyEvent";

    // Nested past prost's recursion limit (100): INVALID_ARGUMENT, not INTERNAL.
    let deep = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Deep".into(),
        payload: Some(nested(200)),
        ..Default::default()
    };
    let r = raw_call(channel.clone(), APPLY, deep.encode_to_vec()).await;
    assert_code("a Struct nested 200 deep", r, INVALID);
    // Through the generated client as well (it encodes without a depth limit).
    let r = c.events.apply_event(deep).await;
    assert_code("a Struct nested 200 deep (generated client)", r, INVALID);

    // Garbage bytes, a truncated message, invalid UTF-8 in a string field.
    let valid = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Reading".into(),
        payload: Some(st(json!({"n": 3}))),
        ..Default::default()
    }
    .encode_to_vec();
    let mut utf8 = vec![0x12, 2, 0xff, 0xfe]; // field 2 (event_type): two invalid bytes
    utf8.extend_from_slice(&valid);
    for (what, bytes) in [
        (
            "garbage",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01".to_vec(),
        ),
        ("a truncated message", valid[..valid.len() - 3].to_vec()),
        ("invalid UTF-8 in event_type", utf8),
        ("a length past the end", vec![0x0a, 0xff, 0xff, 0x03, b'x']),
    ] {
        let r = raw_call(channel.clone(), APPLY, bytes).await;
        assert_code(what, r, INVALID);
    }
    for path in [
        "/temporal_state.v1.EntityTypeService/CreateEntityType",
        "/temporal_state.v1.QueryService/GetHistory",
        "/temporal_state.v1.AnalyticsService/GetSummary",
        "/temporal_state.v1.EventService/Subscribe",
    ] {
        let r = raw_call(channel.clone(), path, b"\x0a\xff\xff\xff\xff\x0f".to_vec()).await;
        assert_code(&format!("garbage to {path}"), r, INVALID);
    }

    // 8 MB: over the 6 MB request limit of the default settings, RESOURCE_EXHAUSTED as the
    // README promises.
    let huge = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Huge".into(),
        payload: Some(st(json!({"blob": "x".repeat(8 << 20)}))),
        ..Default::default()
    };
    let r = c.events.apply_event(huge).await;
    assert_code("an 8 MB request", r, &[Code::ResourceExhausted]);

    assert_eq!(target.stored(&mut c, &id).await, before, "nothing stored");
    target.assert_healthy_and_writable(&mut c, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_messages_are_client_codes_on_postgres() {
    undecodable_and_oversized(on_postgres(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_messages_are_client_codes_on_the_embedded_store() {
    undecodable_and_oversized(on_embedded(&[]).await).await;
}

/// One gRPC-web call over HTTP/1.1, by hand: returns the `grpc-status` the server answered.
async fn grpc_web_status(addr: std::net::SocketAddr, path: &str, message: &[u8]) -> String {
    let addr = addr.to_string();
    common::raw::grpc_web_status(common::raw::grpc_web_send(&addr, path, message, None).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_gets_the_same_codes() {
    let target = on_embedded(&[]).await;
    let Fixture {
        mut c,
        instance_id: id,
        ..
    } = fixture(&target).await;
    let addr = target.server.addr;
    const APPLY: &str = "/temporal_state.v1.EventService/ApplyEvent";
    let deep = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Deep".into(),
        payload: Some(nested(200)),
        ..Default::default()
    };
    assert_eq!(
        grpc_web_status(addr, APPLY, &deep.encode_to_vec()).await,
        "3"
    );
    assert_eq!(grpc_web_status(addr, APPLY, b"\xff\xff\xff\xff").await, "3");
    let nul = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "\0".into(),
        ..Default::default()
    };
    assert_eq!(
        grpc_web_status(addr, APPLY, &nul.encode_to_vec()).await,
        "3"
    );
    let ok = pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Web".into(),
        ..Default::default()
    };
    assert_eq!(grpc_web_status(addr, APPLY, &ok.encode_to_vec()).await, "0");
    target.assert_healthy_and_writable(&mut c, &id).await;
}

/// Holds the row lock of an instance from outside the server, so that every write to it waits:
/// a slow call without sleeping in the server.
struct RowLock {
    client: tokio_postgres::Client,
}

impl RowLock {
    async fn take(db: &TestDb, instance_id: &str) -> Self {
        Self::take_all(db, &[instance_id]).await
    }

    async fn take_all(db: &TestDb, instance_ids: &[&str]) -> Self {
        let client = db.client().await;
        client.batch_execute("BEGIN").await.unwrap();
        for id in instance_ids {
            let id: uuid::Uuid = id.parse().unwrap();
            client
                .query("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .unwrap();
        }
        Self { client }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// How many of the server's queries wait for a lock, right now.
async fn waiting_on_locks(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_until_waiting(db: &TestDb, n: i64) {
    for _ in 0..400 {
        if waiting_on_locks(db).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rows = db
        .client()
        .await
        .query(
            "SELECT coalesce(wait_event_type, ''), coalesce(state, ''), query FROM pg_stat_activity              WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    panic!("{n} calls never blocked on the row lock: {rows:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_concurrency_limit_are_shed_and_health_still_answers() {
    let target = on_postgres(&["--max-concurrent-requests", "2"]).await;
    let db = target.db.as_ref().unwrap();
    let Fixture {
        mut c,
        instance_id: id,
        ..
    } = fixture(&target).await;
    // Writes to one instance queue inside the server, so each slow call gets an instance of its
    // own and waits in PostgreSQL.
    let other = c.create_instance("device", "d-2", json!({})).await.id;
    let lock = RowLock::take_all(db, &[&id, &other]).await;
    let slow: Vec<_> = [id.clone(), other.clone()]
        .into_iter()
        .map(|id| {
            let mut c = c.clone();
            tokio::spawn(async move { c.apply(&id, "Slow", json!({})).await })
        })
        .collect();
    wait_until_waiting(db, 2).await;

    // Both slots are taken: the next calls are shed at once, reads and writes alike.
    let r = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await;
    assert_code("a third call", r, &[Code::Unavailable]);
    let r = c.apply(&id, "Shed", json!({})).await;
    assert_code("a fourth call", r, &[Code::Unavailable]);
    // Health is never shed.
    let mut health = HealthClient::new(target.server.channel().await);
    wait_for_health(&mut health, "", ServingStatus::Serving).await;

    lock.release().await;
    for call in slow {
        call.await
            .unwrap()
            .expect("the slow calls finish once the lock is gone");
    }
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let types: Vec<_> = history
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert!(
        !types.contains(&"Shed"),
        "a shed call stored nothing: {types:?}"
    );
    assert_eq!(types.iter().filter(|t| **t == "Slow").count(), 1);
    target.assert_healthy_and_writable(&mut c, &id).await;
}

/// DEADLINE_EXCEEDED means the write may or may not have happened (it goes on without its
/// caller, so the bus and cache hear of it if it commits): a retry with the same `event_id`
/// settles it, and the event is then stored exactly once, right after what was there before.
async fn assert_a_retry_records_it_once(c: &mut Clients, id: &str, event_id: &str, before: i64) {
    let retried = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: id.into(),
            event_type: "Late".into(),
            event_id: event_id.into(),
            ..Default::default()
        })
        .await
        .expect("a retry with the same event_id succeeds")
        .into_inner()
        .event
        .unwrap();
    assert_eq!(retried.version, before + 1, "recorded once, in its place");
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let late = history
        .events
        .iter()
        .filter(|e| e.event_type == "Late")
        .count();
    assert_eq!(late, 1, "the timed-out write and its retry are one event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_is_honoured_with_deadline_exceeded() {
    let target = on_postgres(&[]).await;
    let db = target.db.as_ref().unwrap();
    let Fixture {
        mut c,
        instance_id: id,
        ..
    } = fixture(&target).await;
    let before = target.stored(&mut c, &id).await;
    let lock = RowLock::take(db, &id).await;
    let mut request = tonic::Request::new(pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Late".into(),
        event_id: "late-client".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let r = c.events.apply_event(request).await;
    assert_code(
        "a call past its client deadline",
        r,
        &[Code::DeadlineExceeded],
    );
    lock.release().await;
    assert_a_retry_records_it_once(&mut c, &id, "late-client", before.version).await;
    target.assert_healthy_and_writable(&mut c, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deadline_ends_a_blocked_call_with_deadline_exceeded() {
    let target = on_postgres(&["--request-timeout-secs", "1"]).await;
    let db = target.db.as_ref().unwrap();
    let Fixture {
        mut c,
        instance_id: id,
        ..
    } = fixture(&target).await;
    let before = target.stored(&mut c, &id).await;
    let lock = RowLock::take(db, &id).await;
    let r = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: id.clone(),
            event_type: "Late".into(),
            event_id: "late-server".into(),
            ..Default::default()
        })
        .await;
    assert_code(
        "a call past the server deadline",
        r,
        &[Code::DeadlineExceeded],
    );
    // A Subscribe is exempt: it outlives the deadline.
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    lock.release().await;
    // Past the deadline, with the subscription open all along.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_a_retry_records_it_once(&mut c, &id, "late-server", before.version).await;
    let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the subscription is still open past the deadline")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(event.event_type, "Late");
    target.assert_healthy_and_writable(&mut c, &id).await;
}
