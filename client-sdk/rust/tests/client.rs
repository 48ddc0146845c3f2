//! The SDK against a real server on PostgreSQL: every call of the five services, every typed
//! error, and the retries (a server that appears late, answers lost after the server committed).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use temporal_state_client::*;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::Channel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Player {
    username: String,
    email: String,
    score: u32,
    level: u32,
    achievements: Vec<String>,
}

/// The player_profile type and its instance player-001 (alice); returns the instance's id.
async fn create_player_001(client: &Client) -> String {
    client
        .create_entity_type("player_profile", &player_schema(), &Default::default())
        .await
        .unwrap();
    client
        .create_instance(
            "player_profile",
            "player-001",
            &alice(),
            &Default::default(),
        )
        .await
        .unwrap()
        .instance
        .id
}

fn alice() -> Player {
    Player {
        username: "alice".into(),
        email: "alice@example.com".into(),
        score: 0,
        level: 1,
        achievements: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_every_service() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let client = server.client().await;

    // EntityTypeService
    let created_type = client
        .create_entity_type(
            "player_profile",
            &player_schema(),
            &CreateEntityTypeOptions::default().description("A player of our game"),
        )
        .await
        .unwrap();
    assert_eq!(created_type.name, "player_profile");
    assert_eq!(created_type.description, "A player of our game");
    assert_eq!(created_type.schema, player_schema());
    client
        .create_entity_type("order", &json!({"type": "object"}), &Default::default())
        .await
        .unwrap();
    let by_id = client
        .get_entity_type(&created_type.id, &Default::default())
        .await
        .unwrap();
    let by_name = client
        .get_entity_type("player_profile", &Default::default())
        .await
        .unwrap();
    assert_eq!(by_id, created_type);
    assert_eq!(by_name, created_type);
    let first = client
        .list_entity_types(&ListEntityTypesOptions::default().page_size(1))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].name, "order");
    let token = first.next_page_token.expect("a second page");
    let second = client
        .list_entity_types(
            &ListEntityTypesOptions::default()
                .page_size(1)
                .page_token(token),
        )
        .await
        .unwrap();
    assert_eq!(second.items[0].name, "player_profile");
    let all = client.list_entity_types(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(all.next_page_token, None);

    // InstanceService, with the caller's own serde type in and out.
    let created = client
        .create_instance(
            "player_profile",
            "player-001",
            &alice(),
            &CreateInstanceOptions::default().metadata(&json!({"actor": "signup"})),
        )
        .await
        .unwrap();
    let id = created.instance.id.clone();
    assert_eq!(created.instance.version, 1);
    assert_eq!(created.instance.entity_type_name, "player_profile");
    assert_eq!(created.instance.state_as::<Player>().unwrap(), alice());
    assert_eq!(created.event.event_type, "InstanceCreated");
    assert_eq!(created.event.metadata, json!({"actor": "signup"}));
    assert_eq!(created.event.payload_as::<Player>().unwrap(), alice());
    client
        .create_instance(
            "player_profile",
            "player-002",
            &json!({"username": "bob", "email": "bob@example.com"}),
            &Default::default(),
        )
        .await
        .unwrap();
    let got = client.get_instance(&id, &Default::default()).await.unwrap();
    assert_eq!(got, created.instance);
    let current = client
        .get_current_state("player_profile", "player-001", &Default::default())
        .await
        .unwrap();
    assert_eq!(current, created.instance);
    let page = client
        .list_instances(
            "player_profile",
            &ListInstancesOptions::default().page_size(1),
        )
        .await
        .unwrap();
    assert_eq!(page.items[0].external_id, "player-001");
    let rest = client
        .list_instances(
            "player_profile",
            &ListInstancesOptions::default().page_token(page.next_page_token.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items[0].external_id, "player-002");
    assert_eq!(rest.next_page_token, None);

    // EventService: one event with every option.
    // Whole microseconds: the precision the server stores (it echoes nanoseconds in the first
    // answer but replays microseconds).
    let micros = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    };
    let occurred = SystemTime::UNIX_EPOCH
        + Duration::from_micros(micros(SystemTime::now() - Duration::from_secs(60)) as u64);
    let applied = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 150, "level": 2}),
            &ApplyEventOptions::default()
                .expected_version(1)
                .event_id("player-001-score-1")
                .metadata(&json!({"actor": "game"}))
                .occurred_at(occurred),
        )
        .await
        .unwrap();
    assert_eq!(applied.event.version, 2);
    assert_eq!(applied.event.id, "player-001-score-1");
    assert_eq!(applied.event.mode, ApplyMode::MergePatch);
    assert_eq!(applied.event.metadata, json!({"actor": "game"}));
    assert_eq!(applied.event.occurred_at, occurred);
    let player: Player = applied.state_as().unwrap();
    assert_eq!((player.score, player.level), (150, 2));

    // The same event_id and content again: the first recording, not a new event.
    let again = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 150, "level": 2}),
            &ApplyEventOptions::default()
                .event_id("player-001-score-1")
                .metadata(&json!({"actor": "game"}))
                .occurred_at(occurred),
        )
        .await
        .unwrap();
    assert_eq!(again.event, applied.event);

    // Without an event_id the SDK makes one (a UUID), so it is never empty.
    let generated = client
        .apply_event(
            &id,
            "AchievementUnlocked",
            &json!({"achievements": ["first-blood"]}),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(generated.event.version, 3);
    assert!(
        uuid::Uuid::parse_str(&generated.event.id).is_ok(),
        "{}",
        generated.event.id
    );

    // A batch, with REPLACE and JSON_PATCH modes.
    let batch = client
        .apply_events(
            &id,
            &[
                NewEvent::new("LevelUp", &json!({"level": 3})).event_id("batch-1"),
                NewEvent::new(
                    "Renamed",
                    &json!({"patch": [{"op": "replace", "path": "/username", "value": "alice2"}]}),
                )
                .mode(ApplyMode::JsonPatch)
                .metadata(&json!({"actor": "support"})),
                NewEvent::new(
                    "Reset",
                    &json!({"username": "alice2", "email": "alice@example.com", "score": 0}),
                )
                .mode(ApplyMode::Replace),
            ],
            &ApplyEventsOptions::default().expected_version(3),
        )
        .await
        .unwrap();
    assert_eq!(
        batch.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(batch.events[0].id, "batch-1");
    assert_eq!(batch.events[1].mode, ApplyMode::JsonPatch);
    assert_eq!(batch.events[2].mode, ApplyMode::Replace);
    assert_eq!(
        batch.state,
        json!({"username": "alice2", "email": "alice@example.com", "score": 0})
    );
    assert_eq!(batch.state_as::<serde_json::Value>().unwrap(), batch.state);

    // QueryService
    let history = client.get_history(&id, &Default::default()).await.unwrap();
    assert_eq!(
        history.items.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let filtered = client
        .get_history(
            &id,
            &GetHistoryOptions::default()
                .from_version(2)
                .to_version(5)
                .event_types(["ScoreIncreased", "LevelUp"])
                .descending(true),
        )
        .await
        .unwrap();
    assert_eq!(
        filtered.items.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![4, 2]
    );
    let paged = client
        .get_history(&id, &GetHistoryOptions::default().page_size(4))
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 4);
    let tail = client
        .get_history(
            &id,
            &GetHistoryOptions::default()
                .page_size(4)
                .page_token(paged.next_page_token.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        tail.items.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5, 6]
    );
    let v2_recorded = history.items[1].recorded_at;
    let timed = client
        .get_history(
            &id,
            &GetHistoryOptions::default()
                .start_time(v2_recorded)
                .end_time(v2_recorded),
        )
        .await
        .unwrap();
    assert!(timed.items.iter().any(|e| e.version == 2), "{timed:?}");

    let at1 = client
        .get_state_at_version(&id, 1, &Default::default())
        .await
        .unwrap();
    assert_eq!(at1.state_as::<Player>().unwrap(), alice());
    assert_eq!(at1.version, 1);
    assert_eq!(at1.recorded_at, history.items[0].recorded_at);
    let at_time = client
        .get_state_at_time(&id, history.items[1].recorded_at, &Default::default())
        .await
        .unwrap();
    assert!(at_time.version >= 2, "{at_time:?}");
    let now = client
        .get_state_at_time(&id, SystemTime::now(), &Default::default())
        .await
        .unwrap();
    assert_eq!(now.version, 6);
    assert_eq!(now.state, batch.state);

    let diff = client
        .compare_versions(&id, 1, 2, &Default::default())
        .await
        .unwrap();
    assert_eq!(diff.state1, serde_json::to_value(alice()).unwrap());
    assert_eq!(diff.state2["score"], 150);
    let score = diff.changes.iter().find(|c| c.path == "/score").unwrap();
    assert_eq!(score.kind, ChangeKind::Changed);
    assert_eq!(score.old_value, Some(json!(0)));
    assert_eq!(score.new_value, Some(json!(150)));
    assert!(
        diff.patch
            .iter()
            .any(|op| op["op"] == "replace" && op["path"] == "/score"),
        "{:?}",
        diff.patch
    );
    let back = client
        .compare_versions(&id, 6, 5, &Default::default())
        .await
        .unwrap();
    assert!(
        back.changes
            .iter()
            .any(|c| c.path == "/level" && c.kind == ChangeKind::Added),
        "{:?}",
        back.changes
    );

    let timeline = client
        .get_field_timeline(&id, "/score", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        timeline
            .iter()
            .map(|p| (p.version, p.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, Some(json!(0))),
            (2, Some(json!(150))),
            (6, Some(json!(0)))
        ]
    );
    assert_eq!(timeline[1].event_type, "ScoreIncreased");
    let level = client
        .get_field_timeline(
            &id,
            "level",
            &GetFieldTimelineOptions::default()
                .from_version(2)
                .to_version(6)
                .start_time(SystemTime::UNIX_EPOCH)
                .end_time(SystemTime::now()),
        )
        .await
        .unwrap();
    assert_eq!(
        level
            .iter()
            .map(|p| (p.version, p.value.clone()))
            .collect::<Vec<_>>(),
        vec![(2, Some(json!(2))), (4, Some(json!(3))), (6, None)]
    );

    // AnalyticsService
    let counts = client
        .get_event_counts("player_profile", &Default::default())
        .await
        .unwrap();
    let count_of = |t: &str| counts.iter().find(|c| c.event_type == t).map(|c| c.count);
    assert_eq!(count_of("InstanceCreated"), Some(2));
    assert_eq!(count_of("ScoreIncreased"), Some(1));
    let future_only = client
        .get_event_counts(
            "player_profile",
            &GetEventCountsOptions::default()
                .start_time(SystemTime::now() + Duration::from_secs(3600))
                .end_time(SystemTime::now() + Duration::from_secs(7200)),
        )
        .await
        .unwrap();
    assert!(future_only.is_empty(), "{future_only:?}");

    let hour = Duration::from_secs(3600);
    // Whole microseconds again: the server matches buckets to `start` at that precision (a
    // start with nanoseconds finds every bucket empty).
    let start =
        SystemTime::UNIX_EPOCH + Duration::from_micros(micros(SystemTime::now() - 2 * hour) as u64);
    let series = client
        .get_event_time_series(
            "player_profile",
            hour,
            start,
            start + 3 * hour,
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(series.len() >= 3, "{series:?}");
    assert_eq!(series.iter().map(|b| b.count).sum::<i64>(), 7);
    let only_resets = client
        .get_event_time_series(
            "player_profile",
            hour,
            start,
            start + 3 * hour,
            &GetEventTimeSeriesOptions::default().event_type("Reset"),
        )
        .await
        .unwrap();
    assert_eq!(only_resets.iter().map(|b| b.count).sum::<i64>(), 1);

    let scores = client
        .get_field_aggregation("player_profile", "/score", &Default::default())
        .await
        .unwrap();
    assert_eq!((scores.count, scores.missing), (1, 1));
    assert_eq!(scores.max, Some(0.0));
    let names = client
        .get_field_aggregation(
            "player_profile",
            "username",
            &GetFieldAggregationOptions::default().as_of(history.items[1].recorded_at),
        )
        .await
        .unwrap();
    assert_eq!(names.count, 2);
    assert!(
        names.top_values.iter().any(|v| v.value == json!("alice")),
        "{names:?}"
    );

    let active = client
        .get_most_active("player_profile", &GetMostActiveOptions::default().limit(1))
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].external_id, "player-001");
    assert_eq!(active[0].event_count, 6);
    let ranged = client
        .get_most_active(
            "player_profile",
            &GetMostActiveOptions::default()
                .start_time(SystemTime::UNIX_EPOCH)
                .end_time(SystemTime::now() + hour),
        )
        .await
        .unwrap();
    assert_eq!(ranged.len(), 2);

    let summary = client
        .get_summary("player_profile", &Default::default())
        .await
        .unwrap();
    assert_eq!(summary.instance_count, 2);
    assert_eq!(summary.event_count, 7);
    assert_eq!(summary.events_last_24h, 7);
    assert!(summary.first_event_at.is_some() && summary.last_event_at.is_some());
    assert_eq!(
        summary.event_types,
        vec![
            "AchievementUnlocked",
            "InstanceCreated",
            "LevelUp",
            "Renamed",
            "Reset",
            "ScoreIncreased"
        ]
    );
    let empty = client
        .get_summary("order", &Default::default())
        .await
        .unwrap();
    assert_eq!((empty.event_count, empty.first_event_at), (0, None));

    // Per-call options are accepted everywhere (a generous deadline, no retries).
    let quick = GetInstanceOptions::default()
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy::none());
    assert_eq!(client.get_instance(&id, &quick).await.unwrap().version, 6);

    // EventService.Subscribe: a replay of the history from version 5, then live events.
    let mut replay = client
        .subscribe(&SubscribeOptions::default().instance_id(&id).from_version(5))
        .await
        .unwrap();
    let mut live = client
        .subscribe(
            &SubscribeOptions::default()
                .entity_type("player_profile")
                .event_types(["ScoreIncreased"]),
        )
        .await
        .unwrap();
    for version in [5, 6] {
        assert_eq!(next(&mut replay).await.version, version);
    }
    client
        .apply_event(&id, "LevelUp", &json!({"level": 4}), &Default::default())
        .await
        .unwrap();
    let scored = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 5}),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut replay).await.version, 7);
    assert_eq!(next(&mut replay).await, scored.event);
    // The filtered subscription saw only the ScoreIncreased event, through the Stream trait too.
    use futures::StreamExt;
    let event = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("in time")
        .expect("an item")
        .unwrap();
    assert_eq!(event, scored.event);
    // Open streams would hold the server's graceful shutdown.
    drop((replay, live));

    // EraseInstance: the state and external id are gone, time travel is refused, a retry
    // answers the same event.
    let gone = client
        .create_instance(
            "player_profile",
            "player-erased",
            &json!({"username": "eve", "email": "eve@example.com"}),
            &Default::default(),
        )
        .await
        .unwrap()
        .instance
        .id;
    let erased = client
        .erase_instance(&gone, &EraseInstanceOptions::default().reason("asked"))
        .await
        .unwrap();
    assert!(erased.instance.erased);
    assert_eq!(erased.instance.external_id, "");
    assert_eq!(erased.instance.state, json!({}));
    assert_eq!(erased.event.event_type, "InstanceErased");
    assert_eq!(erased.event.metadata, json!({"reason": "asked"}));
    let again = client
        .erase_instance(&gone, &Default::default())
        .await
        .unwrap();
    assert_eq!(again.event, erased.event);
    let refused = client
        .get_state_at_version(&gone, 1, &Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::FailedPrecondition),
        "{refused}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_server_answers_is_typed() {
    let db = TestDb::create().await;
    // A small payload limit, to reach RESOURCE_EXHAUSTED.
    let server = TestServer::start(&db.url, &["--max-payload-bytes", "2048"]).await;
    let client = server.client().await;
    let id = create_player_001(&client).await;
    client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 150}),
            &Default::default(),
        )
        .await
        .unwrap();

    // INVALID_ARGUMENT with each violation: a state breaking the schema in two places.
    let e = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": -5, "level": 0}),
            &Default::default(),
        )
        .await
        .unwrap_err();
    let Error::InvalidArgument { violations, .. } = &e else {
        panic!("{e:?}")
    };
    let mut fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, vec!["/level", "/score"], "{violations:?}");
    assert!(violations.iter().all(|v| !v.description.is_empty()));
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument));
    // ... and nothing was stored.
    assert_eq!(
        client
            .get_instance(&id, &Default::default())
            .await
            .unwrap()
            .version,
        2
    );

    // INVALID_ARGUMENT for a version past the current one.
    let e = client
        .get_state_at_version(&id, 99, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { violations, .. } if violations[0].field == "version"),
        "{e:?}"
    );

    // INVALID_ARGUMENT for a malformed request field.
    let e = client
        .create_entity_type("Not A Name", &json!({}), &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { violations, .. } if violations.iter().any(|v| v.field == "name")),
        "{e:?}"
    );

    // ABORTED: a stale expected_version, with the current version.
    let e = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 1}),
            &ApplyEventOptions::default().expected_version(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Conflict {
                expected_version: Some(1),
                current_version: Some(2),
                ..
            }
        ),
        "{e:?}"
    );
    let e = client
        .apply_events(
            &id,
            &[NewEvent::new("X", &json!({}))],
            &ApplyEventsOptions::default().expected_version(7),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Conflict {
                current_version: Some(2),
                ..
            }
        ),
        "{e:?}"
    );

    // NOT_FOUND
    let missing = uuid::Uuid::new_v4().to_string();
    for e in [
        client
            .get_instance(&missing, &Default::default())
            .await
            .unwrap_err(),
        client
            .get_entity_type("nope", &Default::default())
            .await
            .unwrap_err(),
        client
            .get_current_state("player_profile", "nobody", &Default::default())
            .await
            .unwrap_err(),
        client
            .get_state_at_version(&missing, 1, &Default::default())
            .await
            .unwrap_err(),
        client
            .get_state_at_time(
                &id,
                SystemTime::UNIX_EPOCH + Duration::from_secs(1),
                &Default::default(),
            )
            .await
            .unwrap_err(),
        client
            .apply_event(&missing, "X", &json!({}), &Default::default())
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }

    // ALREADY_EXISTS: a taken name, a taken external id, an event_id reused for other content.
    let e = client
        .create_entity_type("player_profile", &player_schema(), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    let e = client
        .create_instance(
            "player_profile",
            "player-001",
            &alice(),
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    let once = ApplyEventOptions::default().event_id("only-once");
    client
        .apply_event(&id, "ScoreIncreased", &json!({"score": 10}), &once)
        .await
        .unwrap();
    let e = client
        .apply_event(&id, "ScoreIncreased", &json!({"score": 11}), &once)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");

    // RESOURCE_EXHAUSTED: a payload over the server's limit.
    let e = client
        .apply_event(
            &id,
            "Big",
            &json!({"bio": "x".repeat(4096)}),
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted { .. }), "{e:?}");

    // Opening a stream is typed the same way.
    let e = client
        .subscribe(&SubscribeOptions::default().from_version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { violations, .. } if violations[0].field == "from_version"),
        "{e:?}"
    );
    let e = client
        .subscribe(&SubscribeOptions::default().instance_id(&missing))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");

    // The client's own: values that are not JSON objects, states that are not the type asked.
    let e = client
        .apply_event(&id, "X", &json!([1, 2]), &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Encode {
                what: "payload",
                ..
            }
        ),
        "{e:?}"
    );
    let e = client
        .apply_events(&id, &[NewEvent::new("X", &"a string")], &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Encode {
                what: "payload",
                ..
            }
        ),
        "{e:?}"
    );
    let e = client
        .create_instance(
            "player_profile",
            "player-002",
            &alice(),
            &CreateInstanceOptions::default().metadata(&42),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Encode {
                what: "metadata",
                ..
            }
        ),
        "{e:?}"
    );
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NotAPlayer {
        wings: u8,
    }
    let instance = client.get_instance(&id, &Default::default()).await.unwrap();
    let e = instance.state_as::<NotAPlayer>().unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    assert_eq!(e.code(), None);

    server.stop().await;

    // UNIMPLEMENTED: a gRPC server that does not offer the call (here, one serving health only).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let client = Client::connect(format!("http://{other}")).await.unwrap();
    let e = client
        .get_summary("player_profile", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unimplemented { .. }), "{e:?}");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

/// The next event of a stream, within 10 s.
async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.next_event())
        .await
        .expect("an event in time")
        .unwrap()
        .expect("an event, not the end")
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A client of `addr` that makes three attempts, 10 ms apart at first.
fn three_quick_attempts(addr: std::net::SocketAddr) -> Client {
    Client::builder(addr.to_string())
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(10)),
        )
        .connect_lazy()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_are_typed_too() {
    // UNAVAILABLE once the retries run out, when nothing listens.
    let addr = closed_port().await;
    let client = three_quick_attempts(addr);
    let e = client
        .list_entity_types(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());

    // Connecting eagerly to it fails at once.
    let e = Client::builder(format!("http://{addr}"))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");

    // DEADLINE_EXCEEDED: a peer that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let client = Client::builder(silent_addr.to_string())
        .request_timeout(Duration::from_millis(300))
        .connect_lazy()
        .unwrap();
    let started = Instant::now();
    let e = client
        .get_summary("x", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    println!("deadline exceeded after {:?}", started.elapsed());
    // A per-call timeout overrides the client's.
    let e = client
        .get_summary(
            "x",
            &GetSummaryOptions::default().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    holder.abort();

    // TLS to a plaintext server: the handshake fails.
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let e = Client::builder(format!("https://{}", server.addr))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");

    // Malformed endpoints never reach the network.
    let e = Client::connect("http://bad host:1").await.unwrap_err();
    assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e:?}");
    server.stop().await;
}

/// An HTTP/2 peer that refuses every call the way a server shutting down refuses the calls it
/// did not take: GOAWAY (NO_ERROR) naming stream 0 as the last one it processed, right after the
/// call's HEADERS arrive. Counts the calls it refused. Written frame by frame, because a real
/// server's shutdown hits this window only by chance (the drain test saw it once).
async fn goaway_peer() -> (
    std::net::SocketAddr,
    Arc<AtomicU32>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const GOAWAY: u8 = 0x7;
    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicU32::new(0));
    let counter = refused.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.write_all(&frame(SETTINGS, 0, &[])).await.is_err()
                    || socket.read_exact(&mut preface).await.is_err()
                {
                    return;
                }
                assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
                let mut header = [0u8; 9];
                while socket.read_exact(&mut header).await.is_ok() {
                    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let reply = match header[3] {
                        SETTINGS if header[4] & 1 == 0 => frame(SETTINGS, 1, &[]),
                        HEADERS => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            // Last stream id 0, error code 0 (NO_ERROR).
                            frame(GOAWAY, 0, &[0; 8])
                        }
                        _ => continue,
                    };
                    if socket.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, refused, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_by_goaway_is_unavailable_and_retried() {
    // tonic reports such a call as INTERNAL; HTTP/2 says it was never processed, so the SDK
    // retries it, as it would a refused connection, and reports UNAVAILABLE when retries run out.
    let (addr, refused, peer) = goaway_peer().await;
    let client = three_quick_attempts(addr);
    let e = client
        .apply_event("some-instance", "Happened", &json!({}), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(
        refused.load(Ordering::SeqCst),
        3,
        "every attempt reached the peer"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_until_the_server_is_up() {
    let db = TestDb::create().await;
    let addr = closed_port().await;
    let client = Client::builder(addr.to_string())
        .retry(
            RetryPolicy::default()
                .max_attempts(60)
                .initial_backoff(Duration::from_millis(50))
                .max_backoff(Duration::from_millis(200)),
        )
        .connect_lazy()
        .unwrap();
    let url = db.url.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listener = TcpListener::bind(addr).await.expect("rebind the port");
        TestServer::start_on(listener, &url, &[]).await
    });
    let started = Instant::now();
    let page = client
        .list_entity_types(&Default::default())
        .await
        .expect("retried until the server answered");
    assert!(page.items.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered before the server was up?"
    );
    println!("answered after {:?} of retries", started.elapsed());
    late.await.unwrap().stop().await;
}

/// A transport that loses the answers of the first `count` calls to `path`: the request reaches
/// the server, which commits and answers, and the client sees UNAVAILABLE — the case a retry
/// must not turn into a second write.
#[derive(Clone)]
struct LoseAnswers {
    inner: Channel,
    path: &'static str,
    to_lose: Arc<AtomicU32>,
    sent: Arc<AtomicU32>,
}

impl LoseAnswers {
    fn new(inner: Channel, path: &'static str, count: u32) -> Self {
        Self {
            inner,
            path,
            to_lose: Arc::new(AtomicU32::new(count)),
            sent: Arc::new(AtomicU32::new(0)),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<Body>> for LoseAnswers {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ours = request.uri().path() == self.path;
        if ours {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        let lose = ours
            && self
                .to_lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        // The ready clone is the one that must serve this call.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let answer = ready.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if lose {
                // Unary answers start after the handler returned: the write is committed.
                drop(response);
                return Err(
                    Box::new(tonic::Status::unavailable("answer lost in transit")) as BoxError,
                );
            }
            Ok(response)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_whose_answer_was_lost_is_recorded_once() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let plain = server.client().await;
    let id = create_player_001(&plain).await;

    let channel = Channel::from_shared(server.endpoint())
        .unwrap()
        .connect_lazy();
    let fast = RetryPolicy::default().initial_backoff(Duration::from_millis(10));
    let build = || Client::builder("unused").retry(fast.clone());

    // One event: its first answer is lost, the retry carries the same event_id.
    let lossy = LoseAnswers::new(
        channel.clone(),
        "/temporal_state.v1.EventService/ApplyEvent",
        1,
    );
    let client = build().with_service(lossy.clone());
    let applied = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 150}),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(lossy.sent.load(Ordering::SeqCst), 2, "the call was retried");
    assert_eq!(applied.event.version, 2);
    let history = plain.get_history(&id, &Default::default()).await.unwrap();
    assert_eq!(history.items.len(), 2, "recorded once: {history:?}");
    assert_eq!(history.items[1].id, applied.event.id);

    // A batch: both answers of the first two attempts are lost.
    let lossy = LoseAnswers::new(
        channel.clone(),
        "/temporal_state.v1.EventService/ApplyEvents",
        2,
    );
    let client = build().with_service(lossy.clone());
    let batch = client
        .apply_events(
            &id,
            &[
                NewEvent::new("LevelUp", &json!({"level": 2})),
                NewEvent::new("LevelUp", &json!({"level": 3})),
            ],
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(lossy.sent.load(Ordering::SeqCst), 3);
    assert_eq!(
        batch.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(
        plain
            .get_instance(&id, &Default::default())
            .await
            .unwrap()
            .version,
        4
    );

    // With retries off, the lost answer is the caller's UNAVAILABLE (and the write happened).
    let lossy = LoseAnswers::new(channel, "/temporal_state.v1.EventService/ApplyEvent", 1);
    let client = Client::builder("unused")
        .retry(RetryPolicy::none())
        .with_service(lossy);
    let e = client
        .apply_event(
            &id,
            "ScoreIncreased",
            &json!({"score": 1}),
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(
        plain
            .get_instance(&id, &Default::default())
            .await
            .unwrap()
            .version,
        5
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_creates_return_what_the_first_attempt_created() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let channel = Channel::from_shared(server.endpoint())
        .unwrap()
        .connect_lazy();
    let fast = RetryPolicy::default().initial_backoff(Duration::from_millis(10));

    let lossy = LoseAnswers::new(
        channel.clone(),
        "/temporal_state.v1.EntityTypeService/CreateEntityType",
        1,
    );
    let client = Client::builder("unused")
        .retry(fast.clone())
        .with_service(lossy.clone());
    let created = client
        .create_entity_type(
            "player_profile",
            &player_schema(),
            &CreateEntityTypeOptions::default().description("players"),
        )
        .await
        .unwrap();
    assert_eq!(lossy.sent.load(Ordering::SeqCst), 2);
    assert_eq!(created.description, "players");

    let lossy = LoseAnswers::new(
        channel.clone(),
        "/temporal_state.v1.InstanceService/CreateInstance",
        1,
    );
    let client = Client::builder("unused")
        .retry(fast.clone())
        .with_service(lossy.clone());
    let options = CreateInstanceOptions::default().metadata(&json!({"actor": "signup"}));
    let created = client
        .create_instance("player_profile", "player-001", &alice(), &options)
        .await
        .unwrap();
    assert_eq!(lossy.sent.load(Ordering::SeqCst), 2);
    assert_eq!(created.instance.version, 1);
    assert_eq!(created.event.event_type, "InstanceCreated");
    assert_eq!(created.event.metadata, json!({"actor": "signup"}));

    // A retry that finds something else under the name is still ALREADY_EXISTS.
    let lossy = LoseAnswers::new(
        channel,
        "/temporal_state.v1.InstanceService/CreateInstance",
        1,
    );
    let client = Client::builder("unused").retry(fast).with_service(lossy);
    let plain = server.client().await;
    plain
        .create_instance(
            "player_profile",
            "player-002",
            &alice(),
            &Default::default(),
        )
        .await
        .unwrap();
    // The lost first attempt is ALREADY_EXISTS itself (answer lost), and so is the retry; the
    // existing instance's initial state differs from this one, so the error stands.
    let mut bob = alice();
    bob.username = "bob".into();
    let e = client
        .create_instance("player_profile", "player-002", &bob, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_survives_a_server_restart_with_no_gap() {
    let db = TestDb::create().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer::start_on(listener, &db.url, &[]).await;
    // Patient enough to wait for the restart below.
    let client = Client::builder(server.endpoint())
        .retry(
            RetryPolicy::default()
                .max_attempts(100)
                .initial_backoff(Duration::from_millis(50))
                .max_backoff(Duration::from_millis(200)),
        )
        .connect()
        .await
        .unwrap();
    client
        .create_entity_type("device", &json!({"type": "object"}), &Default::default())
        .await
        .unwrap();
    let id = client
        .create_instance("device", "d-1", &json!({"n": 0}), &Default::default())
        .await
        .unwrap()
        .instance
        .id;
    let apply = |n: i64| {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .apply_event(&id, "Reading", &json!({"n": n}), &Default::default())
                .await
                .unwrap()
                .event
                .version
        }
    };
    assert_eq!(apply(1).await, 2);

    // Live only: resume reads the current version (2) first and subscribes from 3.
    let mut events = client
        .subscribe(&SubscribeOptions::default().instance_id(&id).resume(true))
        .await
        .unwrap();
    assert_eq!(apply(2).await, 3);
    assert_eq!(next_version(&mut events).await, 3);

    // The server stops (its open streams end with UNAVAILABLE), an event is committed while
    // none runs, and a new server comes up on the same address.
    server.stop().await;
    let writer = {
        let db_url = db.url.clone();
        tokio::spawn(async move {
            let other = TestServer::start(&db_url, &[]).await;
            let c = other.client().await;
            let id = c
                .get_current_state("device", "d-1", &Default::default())
                .await
                .unwrap()
                .id;
            c.apply_event(&id, "Reading", &json!({"n": 3}), &Default::default())
                .await
                .unwrap();
            other.stop().await;
        })
    };
    writer.await.unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = TestServer::start_on(listener, &db.url, &[]).await;
    assert_eq!(apply(4).await, 5);

    // The stream went on from version 4: the one committed while it was down, then live.
    assert_eq!(next_version(&mut events).await, 4);
    assert_eq!(next_version(&mut events).await, 5);
    drop(events);

    // Without an instance there is no version to resume from.
    let refused = client
        .subscribe(
            &SubscribeOptions::default()
                .entity_type("device")
                .resume(true),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::InvalidArgument { .. }),
        "{refused:?}"
    );
    server.stop().await;
}

/// The version of the stream's next event, waiting at most 30 s.
async fn next_version(events: &mut EventStream) -> i64 {
    tokio::time::timeout(Duration::from_secs(30), events.next_event())
        .await
        .expect("an event arrives")
        .expect("no error")
        .expect("the stream goes on")
        .version
}

/// A server with authentication on: the token given to the builder goes with every call, the
/// server's refusals are typed, and events record who wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_goes_with_every_call_and_refusals_are_typed() {
    use sha2::{Digest, Sha256};
    let hex = |key: &str| -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!([
            {"name": "sdk-admin", "sha256": hex("sdk-admin-key-0123"), "scopes": ["admin"]},
            {"name": "sdk-reader", "sha256": hex("sdk-reader-key-0123"), "scopes": ["read"]},
        ])
        .to_string(),
    )
    .unwrap();
    let server = TestServer::start_embedded(
        &dir.path().join("data"),
        &["--auth-api-keys-file", keys.to_str().unwrap()],
    )
    .await;
    let as_key = |key: &str| {
        Client::builder(server.endpoint())
            .bearer_token(key)
            .connect_lazy()
            .unwrap()
    };
    let admin = as_key("sdk-admin-key-0123");
    let debug = format!(
        "{:?}",
        Client::builder("x").bearer_token("sdk-admin-key-0123")
    );
    assert!(!debug.contains("sdk-admin-key"), "{debug}");

    admin
        .create_entity_type("doc", &json!({"type": "object"}), &Default::default())
        .await
        .unwrap();
    let created = admin
        .create_instance("doc", "d1", &json!({"n": 0}), &Default::default())
        .await
        .unwrap();
    assert_eq!(created.event.recorded_by, "sdk-admin");
    let id = created.instance.id;

    let anonymous = Client::connect(server.endpoint()).await.unwrap();
    let err = anonymous
        .list_entity_types(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    let err = as_key("not-a-key")
        .get_instance(&id, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");

    let reader = as_key("sdk-reader-key-0123");
    assert_eq!(
        reader
            .get_instance(&id, &Default::default())
            .await
            .unwrap()
            .version,
        1
    );
    let err = reader
        .apply_event(&id, "Set", &json!({"n": 1}), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    let applied = admin
        .apply_event(&id, "Set", &json!({"n": 2}), &Default::default())
        .await
        .unwrap();
    assert_eq!(applied.event.version, 2, "the refused write stored nothing");
    assert_eq!(applied.event.recorded_by, "sdk-admin");
}

/// Declared event types through the SDK: declarations on create (read back on the type), a
/// dry run that stores nothing, the recorded change, and a guard's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_event_types_dry_run_and_recorded_change() {
    use temporal_state_client::proto::v1 as pb;
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let client = server.client().await;
    let declarations = pb::EventDeclarations {
        strict: true,
        event_types: vec![pb::EventTypeDeclaration {
            event_type: "Withdrawn".into(),
            transform: r#"{"balance": state.balance - payload.amount}"#.into(),
            guards: vec![pb::EventGuard {
                expression: "state.balance >= payload.amount".into(),
                message: "insufficient funds".into(),
            }],
            ..Default::default()
        }],
    };
    let created = client
        .create_entity_type(
            "account",
            &json!({"type": "object"}),
            &CreateEntityTypeOptions::default().declarations(declarations.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.declarations, Some(declarations.clone()));
    let versions = client
        .get_schema_versions("account", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.declarations.clone()))
            .collect::<Vec<_>>(),
        [(1, Some(declarations))],
        "each schema version carries its declarations"
    );
    let id = client
        .create_instance("account", "a", &json!({"balance": 10}), &Default::default())
        .await
        .unwrap()
        .instance
        .id;

    let preview = client
        .apply_event(
            &id,
            "Withdrawn",
            &json!({"amount": 4}),
            &ApplyEventOptions::default().dry_run(true),
        )
        .await
        .unwrap();
    assert_eq!(preview.state, json!({"balance": 6}));
    assert_eq!(preview.event.version, 2);
    assert_eq!(preview.event.change, Some(json!({"balance": 6})));
    let history = client.get_history(&id, &Default::default()).await.unwrap();
    assert_eq!(history.items.len(), 1, "the dry run stored nothing");

    let applied = client
        .apply_event(&id, "Withdrawn", &json!({"amount": 4}), &Default::default())
        .await
        .unwrap();
    assert_eq!(applied.event.payload, json!({"amount": 4}));
    assert_eq!(applied.event.change, Some(json!({"balance": 6})));
    let refused = client
        .apply_event(&id, "Withdrawn", &json!({"amount": 7}), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::FailedPrecondition),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("insufficient funds"),
        "{refused}"
    );
}

/// Writes by external id (with create_if_missing), time travel on business time and the list
/// options, through the SDK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ids_business_time_and_list_options() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let client = server.client().await;
    client
        .create_entity_type("price", &json!({"type": "object"}), &Default::default())
        .await
        .unwrap();

    // Missing without create_if_missing: NotFound; with it, created and applied atomically.
    let missing = client
        .apply_event_by_external_id(
            "price",
            "sku-1",
            "PriceSet",
            &json!({"price": 10}),
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    let created = client
        .apply_event_by_external_id(
            "price",
            "sku-1",
            "PriceSet",
            &json!({"price": 10}),
            &ApplyEventOptions::default().create_if_missing(&json!({"price": 0, "cur": "EUR"})),
        )
        .await
        .unwrap();
    assert_eq!(created.event.version, 2);
    assert_eq!(created.state, json!({"price": 10, "cur": "EUR"}));
    let id = created.event.instance_id.clone();
    let r2 = created.event.recorded_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = client
        .apply_events_by_external_id(
            "price",
            "sku-1",
            &[NewEvent::new("PriceSet", &json!({"price": 20}))],
            &ApplyEventsOptions::default().create_if_missing(&json!({"price": 0})),
        )
        .await
        .unwrap();
    assert_eq!(batch.events[0].version, 3);
    let r3 = batch.events[0].recorded_at;
    let mid = r2 + r3.duration_since(r2).unwrap() / 2;
    let mid = SystemTime::UNIX_EPOCH
        + Duration::from_micros(
            mid.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
        );

    // A late correction that occurred at `mid`.
    tokio::time::sleep(Duration::from_millis(20)).await;
    client
        .apply_event(
            &id,
            "PriceCorrected",
            &json!({"price": 15}),
            &ApplyEventOptions::default().occurred_at(mid),
        )
        .await
        .unwrap();
    let recorded = client
        .get_state_at_time(&id, mid, &Default::default())
        .await
        .unwrap();
    assert_eq!(recorded.state["price"], json!(10));
    let occurred = client
        .get_state_at_time(
            &id,
            mid,
            &GetStateAtTimeOptions::default().axis(TimeAxis::OccurredAt),
        )
        .await
        .unwrap();
    assert_eq!(occurred.state["price"], json!(15));
    assert_eq!(occurred.occurred_at, Some(mid));
    let known_then = client
        .get_state_at_time(
            &id,
            mid,
            &GetStateAtTimeOptions::default().axis(TimeAxis::Both { known_at: r3 }),
        )
        .await
        .unwrap();
    assert_eq!(known_then.state["price"], json!(10));

    // List options.
    for x in ["sku-2", "other-1"] {
        client
            .create_instance(
                "price",
                x,
                &json!({"price": 5, "cur": "USD"}),
                &Default::default(),
            )
            .await
            .unwrap();
    }
    let skus = client
        .list_instances(
            "price",
            &ListInstancesOptions::default()
                .external_id_prefix("sku-")
                .state_equals("cur", &"USD")
                .without_state(true),
        )
        .await
        .unwrap();
    assert_eq!(
        skus.items
            .iter()
            .map(|i| i.external_id.as_str())
            .collect::<Vec<_>>(),
        ["sku-2"]
    );
    assert_eq!(skus.items[0].state, json!({}));
    let recent = client
        .list_instances(
            "price",
            &ListInstancesOptions::default()
                .order_by(InstanceOrder::RecentlyUpdated)
                .updated_since(r2),
        )
        .await
        .unwrap();
    assert_eq!(
        recent
            .items
            .iter()
            .map(|i| i.external_id.as_str())
            .collect::<Vec<_>>(),
        ["other-1", "sku-2", "sku-1"]
    );
}
