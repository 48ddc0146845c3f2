//! The write side against a real server: concurrency, idempotency, atomic batches, snapshots,
//! and bad input that stores nothing.
//!
//! Every guarantee is one test body run on both stores: `postgres::<name>` on a fresh PostgreSQL
//! database, `embedded::<name>` on the embedded SQLite store in a fresh DATA_DIR. What is stored
//! is checked directly: through SQL on PostgreSQL, through a read-only rusqlite connection to
//! `DATA_DIR/temporal-state.db` on the embedded store. Health through an unreachable database
//! and concurrent migrations are PostgreSQL's own and run there only.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_server::domain::{ApplyMode, apply_event};
use tonic::Code;
use tonic_types::StatusExt;

/// Every event of an instance, in version order, through GetHistory pages.
async fn full_history(c: &mut Clients, instance_id: &str) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: instance_id.into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

fn fold(events: &[pb::Event]) -> Value {
    let mut state = serde_json::Map::new();
    for e in events {
        let mode = match pb::ApplyMode::try_from(e.mode).unwrap() {
            pb::ApplyMode::Replace => ApplyMode::Replace,
            pb::ApplyMode::JsonPatch => ApplyMode::JsonPatch,
            _ => ApplyMode::MergePatch,
        };
        let payload = js(&e.payload);
        state = apply_event(&state, payload.as_object().unwrap(), mode).unwrap();
    }
    Value::Object(state)
}

for_each_backend!(
    concurrent_writers_without_expected_version_lose_no_update: 4,
    expected_version_lets_exactly_one_writer_win_each_version: 4,
    a_retried_event_id_returns_the_first_recording_even_after_a_restart: 4,
    bad_input_gets_its_code_and_stores_nothing: 2,
    a_batch_stores_all_of_its_events_or_none: 2,
    creation_is_version_one_and_reads_find_it_by_id_or_name: 2,
    negative_zero_arrives_as_zero_on_both_backends: 2,
);

async fn concurrent_writers_without_expected_version_lose_no_update(backend: Backend) {
    const WRITERS: usize = 32;
    const EACH: usize = 200;
    let db = Store::create(backend).await;
    let server = db.start(&["--snapshot-interval", "50"]).await;
    let mut c = server.clients().await;
    c.create_type("counter", json!({"type": "object"})).await;
    let instance = c
        .create_instance("counter", "c-1", json!({"started": true}))
        .await;

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = server.clients().await;
        let id = instance.id.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                c.apply(
                    &id,
                    "Tick",
                    json!({ format!("w{w}"): n, "last": format!("w{w}-{n}") }),
                )
                .await
                .expect("apply without expected_version never conflicts");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let events = full_history(&mut c, &instance.id).await;
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<i64> = (1..=(WRITERS * EACH + 1) as i64).collect();
    assert_eq!(versions, expected, "versions must be exactly 1..=6401");

    let current = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: instance.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(current.version, (WRITERS * EACH + 1) as i64);
    let state = js(&current.state);
    assert_eq!(state, fold(&events), "current state is the sequential fold");
    for w in 0..WRITERS {
        assert_eq!(
            state[format!("w{w}")],
            json!(EACH - 1),
            "writer {w} lost an update"
        );
    }
    // Recorded times never decrease along the versions.
    let times: Vec<(i64, i32)> = events
        .iter()
        .map(|e| {
            let t = e.recorded_at.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        db.count("snapshots").await,
        ((WRITERS * EACH + 1) / 50) as i64
    );
}

async fn expected_version_lets_exactly_one_writer_win_each_version(backend: Backend) {
    const WRITERS: usize = 12;
    const ROUNDS: i64 = 8;
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("counter", json!({"type": "object"})).await;
    let instance = c.create_instance("counter", "c-1", json!({})).await;

    for round in 0..ROUNDS {
        let version = 1 + round;
        let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mut c = server.clients().await;
            let id = instance.id.clone();
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                c.events
                    .apply_event(pb::ApplyEventRequest {
                        instance_id: id,
                        event_type: "Claim".into(),
                        payload: Some(st(json!({"winner": w}))),
                        expected_version: Some(version),
                        ..Default::default()
                    })
                    .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    wins += 1;
                    assert_eq!(r.into_inner().event.unwrap().version, version + 1);
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                    assert!(
                        status
                            .message()
                            .contains(&format!("instance is at version {}", version + 1)),
                        "the conflict names the current version: {}",
                        status.message()
                    );
                }
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
    }
    assert_eq!(db.count("events").await, 1 + ROUNDS);
}

async fn a_retried_event_id_returns_the_first_recording_even_after_a_restart(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player_profile", player_schema()).await;
    let instance = c
        .create_instance(
            "player_profile",
            "player-001",
            json!({"username": "alice", "score": 0}),
        )
        .await;
    let request = |payload: Value| pb::ApplyEventRequest {
        instance_id: instance.id.clone(),
        event_type: "ScoreIncreased".into(),
        payload: Some(st(payload)),
        event_id: "score-1".into(),
        ..Default::default()
    };
    let first = c
        .events
        .apply_event(request(json!({"score": 150})))
        .await
        .unwrap()
        .into_inner();
    // Something else happens in between: the retry must still answer with the first recording.
    c.apply(&instance.id, "LevelUp", json!({"level": 2}))
        .await
        .unwrap();

    let retry = c
        .events
        .apply_event(request(json!({"score": 150})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.event, first.event);
    assert_eq!(js(&retry.state), js(&first.state));

    // Concurrent retries of the same id record one event.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = server.clients().await;
        let r = request(json!({"score": 150}));
        tasks.push(tokio::spawn(async move { c.events.apply_event(r).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().into_inner().event, first.event);
    }
    server.stop().await;

    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    let after_restart = c
        .events
        .apply_event(request(json!({"score": 150})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_restart.event, first.event);
    assert_eq!(
        db.count("events").await,
        3,
        "created + score + level, no duplicates"
    );

    let clash = c
        .events
        .apply_event(request(json!({"score": 999})))
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists);
    assert!(clash.message().contains("score-1"), "{}", clash.message());
    assert_eq!(db.count("events").await, 3);

    // The same id on another instance is a clash too.
    let other = c
        .create_instance("player_profile", "player-002", json!({"username": "bob"}))
        .await;
    let mut req = request(json!({"score": 150}));
    req.instance_id = other.id.clone();
    let clash = c.events.apply_event(req).await.unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

async fn bad_input_gets_its_code_and_stores_nothing(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db
        .start(&["--max-payload-bytes", "2048", "--max-batch-events", "5"])
        .await;
    let mut c = server.clients().await;
    let player = c.create_type("player_profile", player_schema()).await;
    let instance = c
        .create_instance(
            "player_profile",
            "player-001",
            json!({"username": "alice", "score": 1}),
        )
        .await;
    let tables = [
        "entity_types",
        "instances",
        "events",
        "event_ids",
        "snapshots",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(db.count(t).await);
    }

    // A state that breaks the schema names each violating path, also in the rich details.
    let status = c
        .apply(
            &instance.id,
            "Broken",
            json!({"score": -5, "username": "al"}),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("/score"), "{}", status.message());
    let details = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert!(
        fields.contains(&"/score") && fields.contains(&"/username"),
        "{fields:?}"
    );

    // An initial state that breaks the schema.
    assert_status(
        c.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: "player_profile".into(),
                external_id: "player-002".into(),
                initial_state: Some(st(json!({"score": 1}))),
                metadata: None,
            })
            .await,
        Code::InvalidArgument,
        "username",
    );
    // A schema that is not a valid JSON Schema.
    assert_status(
        c.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: "broken".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "bogus"}))),
            })
            .await,
        Code::InvalidArgument,
        "schema",
    );
    // A name that is not a name, and a taken one.
    assert_status(
        c.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: "Player-Profile".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "object"}))),
            })
            .await,
        Code::InvalidArgument,
        "Player-Profile",
    );
    assert_status(
        c.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: "player_profile".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "object"}))),
            })
            .await,
        Code::AlreadyExists,
        "player_profile",
    );
    // Unknown entity type, by name and by id.
    assert_status(
        c.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: "no_such_type".into(),
                external_id: "x".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "no_such_type",
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_status(
        c.types
            .get_entity_type(pb::GetEntityTypeRequest {
                entity_type: unknown.clone(),
            })
            .await,
        Code::NotFound,
        &unknown,
    );
    // Unknown instance.
    assert_status(
        c.apply(&unknown, "X", json!({"score": 2})).await,
        Code::NotFound,
        &unknown,
    );
    // Duplicate external id.
    assert_status(
        c.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: player.id.clone(),
                external_id: "player-001".into(),
                initial_state: Some(st(json!({"username": "alice2"}))),
                metadata: None,
            })
            .await,
        Code::AlreadyExists,
        "player-001",
    );
    // A payload over the limit.
    assert_status(
        c.apply(&instance.id, "Big", json!({"username": "x".repeat(4096)}))
            .await,
        Code::ResourceExhausted,
        "2048",
    );
    // Metadata, a schema or an initial state over MAX_PAYLOAD_BYTES.
    let big = "x".repeat(4096);
    assert_status(
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: instance.id.clone(),
                event_type: "Meta".into(),
                payload: Some(st(json!({"score": 2}))),
                metadata: Some(st(json!({ "note": big }))),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "2048",
    );
    assert_status(
        c.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                name: "big_schema".into(),
                schema: Some(st(json!({"type": "object", "description": big}))),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "2048",
    );
    assert_status(
        c.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: player.id.clone(),
                external_id: "big-initial".into(),
                initial_state: Some(st(json!({"username": big}))),
                metadata: None,
            })
            .await,
        Code::ResourceExhausted,
        "2048",
    );
    assert_status(
        c.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: player.id.clone(),
                external_id: "big-metadata".into(),
                initial_state: Some(st(json!({"username": "bob"}))),
                metadata: Some(st(json!({ "note": big }))),
            })
            .await,
        Code::ResourceExhausted,
        "2048",
    );
    // A batch over MAX_BATCH_EVENTS (5), each event valid on its own.
    assert_status(
        c.events
            .apply_events(pb::ApplyEventsRequest {
                instance_id: instance.id.clone(),
                events: (0..6)
                    .map(|n| pb::EventInput {
                        event_type: "Score".into(),
                        payload: Some(st(json!({ "score": n }))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "5",
    );
    // Malformed ids and versions.
    assert_status(
        c.apply("not-a-uuid", "X", json!({})).await,
        Code::InvalidArgument,
        "instance_id",
    );
    assert_status(
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: instance.id.clone(),
                event_type: "X".into(),
                expected_version: Some(0),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "expected_version",
    );
    assert_status(
        c.apply(&instance.id, "", json!({})).await,
        Code::InvalidArgument,
        "event_type",
    );
    // A JSON patch that does not apply.
    assert_status(
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: instance.id.clone(),
                event_type: "Patch".into(),
                payload: Some(st(json!({"patch": [{"op": "remove", "path": "/nope"}]}))),
                mode: pb::ApplyMode::JsonPatch as i32,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "payload",
    );
    // Huge page sizes and garbage tokens.
    assert_status(
        c.instances
            .list_instances(pb::ListInstancesRequest {
                include_archived: false,
                entity_type: "player_profile".into(),
                page_size: 10_000_000,
                page_token: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_status(
        c.types
            .list_entity_types(pb::ListEntityTypesRequest {
                page_size: 10,
                page_token: "%%%".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );

    for (t, n) in tables.iter().zip(before) {
        assert_eq!(db.count(t).await, n, "bad input stored something in {t}");
    }
    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player_profile".into(),
            external_id: "player-001".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(js(&current.state), json!({"username": "alice", "score": 1}));
}

async fn a_batch_stores_all_of_its_events_or_none(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&["--snapshot-interval", "2"]).await;
    let mut c = server.clients().await;
    c.create_type("player_profile", player_schema()).await;
    let instance = c
        .create_instance("player_profile", "p", json!({"username": "alice"}))
        .await;
    let input = |t: &str, payload: Value, id: &str| pb::EventInput {
        event_type: t.into(),
        payload: Some(st(payload)),
        event_id: id.into(),
        ..Default::default()
    };

    let status = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            dry_run: false,
            instance_id: instance.id.clone(),
            expected_version: None,
            events: vec![
                input("A", json!({"score": 1}), "b-1"),
                input("B", json!({"score": -1}), "b-2"),
                input("C", json!({"score": 3}), "b-3"),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(db.count("events").await, 1);
    // Only the creation's id: every event id is reserved, none of the refused batch's.
    assert_eq!(db.count("event_ids").await, 1);
    assert_eq!(db.count("snapshots").await, 0);

    let batch = pb::ApplyEventsRequest {
        dry_run: false,
        instance_id: instance.id.clone(),
        expected_version: Some(1),
        events: vec![
            input("A", json!({"score": 1}), "b-1"),
            input("B", json!({"score": 2, "level": 2}), "b-2"),
            input("C", json!({"achievements": ["first"]}), "b-3"),
        ],
        ..Default::default()
    };
    let stored = c
        .events
        .apply_events(batch.clone())
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<i64> = stored.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![2, 3, 4]);
    assert_eq!(
        js(&stored.state),
        json!({"username": "alice", "score": 2, "level": 2, "achievements": ["first"]})
    );
    // Snapshots at versions 2 and 4 hold the states after those events.
    let snaps = db.snapshots().await;
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0], (2, json!({"username": "alice", "score": 1})));
    assert_eq!(snaps[1].0, 4);

    // Retrying the whole batch (even with a now-stale expected_version) returns it unchanged.
    let retry = c.events.apply_events(batch).await.unwrap().into_inner();
    assert_eq!(retry.events, stored.events);
    assert_eq!(js(&retry.state), js(&stored.state));
    assert_eq!(db.count("events").await, 4);

    // A batch that repeats an id within itself is rejected before anything happens.
    assert_status(
        c.events
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: instance.id.clone(),
                expected_version: None,
                events: vec![input("A", json!({}), "dup"), input("B", json!({}), "dup")],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "dup",
    );
    // Half of a batch already recorded is a clash, not a partial write.
    assert_status(
        c.events
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: instance.id.clone(),
                expected_version: None,
                events: vec![
                    input("A", json!({"score": 1}), "b-1"),
                    input("D", json!({}), "new"),
                ],
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "b-1",
    );
    assert_eq!(db.count("events").await, 4);
}

async fn creation_is_version_one_and_reads_find_it_by_id_or_name(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    let player = c.create_type("player_profile", player_schema()).await;
    c.create_type("device", json!({"type": "object"})).await;
    for i in 0..5 {
        c.create_instance(
            &player.id,
            &format!("player-{i:03}"),
            json!({"username": format!("user{i}")}),
        )
        .await;
    }

    let by_name = c
        .types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: "player_profile".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entity_type
        .unwrap();
    assert_eq!(by_name, player);
    assert_eq!(js(&by_name.schema), player_schema());

    let page = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entity_types[0].name, "device");
    let page = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entity_types[0].name, "player_profile");
    assert!(page.next_page_token.is_empty());

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                include_archived: false,
                entity_type: "player_profile".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.instances.into_iter().map(|i| i.external_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("player-{i:03}")).collect::<Vec<_>>()
    );

    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: player.id.clone(),
            external_id: "player-003".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    let history = full_history(&mut c, &current.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].version, 1);
    assert_eq!(history[0].event_type, "InstanceCreated");
    assert_eq!(js(&history[0].payload), json!({"username": "user3"}));
    assert_eq!(history[0].recorded_at, current.created_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_safe_when_servers_start_together() {
    use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
    let db = TestDb::create().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let store = PgStore::new(&PgStoreConfig {
                url,
                pool_size: 1,
                snapshot_interval: 100,
                connect_timeout: Duration::from_secs(5),
            })
            .unwrap();
            store.migrate().await.map(|applied| applied.len())
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap().expect("concurrent migration must succeed");
    }
    let all = temporal_state_server::adapters::postgres::migrate::MIGRATIONS.len();
    assert!(all >= 3);
    assert_eq!(applied, all, "each migration applied exactly once in total");
    assert_eq!(db.count("schema_migrations").await, all as i64);
}

/// Backends of this test's database waiting for a lock.
async fn lock_waiters(db: &TestDb) -> i64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_stuck_on_one_instance_leave_the_pool_to_the_others() {
    let db = TestDb::create().await;
    let server = TestServer::start(
        &db.url,
        &["--pool-size", "2", "--db-connect-timeout-secs", "1"],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let hot = c.create_instance("device", "hot", json!({})).await;
    let calm = c.create_instance("device", "calm", json!({})).await;

    // Another transaction (another server, an operator) holds the hot instance's row lock.
    let mut pg = db.client().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM instances WHERE id = $1::text::uuid FOR UPDATE",
        &[&hot.id],
    )
    .await
    .unwrap();

    // Twice as many writers as the pool has connections, all behind that lock.
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let mut c = c.clone();
            let id = hot.id.clone();
            tokio::spawn(async move { c.apply(&id, "Reading", json!({"n": n})).await })
        })
        .collect();
    for _ in 0..200 {
        if lock_waiters(&db).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let every writer get as far as it can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lock_waiters(&db).await,
        1,
        "one writer waits in PostgreSQL, the others wait without a connection"
    );

    // So a write to another instance still finds a connection.
    let other = c.apply(&calm.id, "Reading", json!({"n": 1})).await;
    assert_eq!(
        other
            .expect("the other instance is writable")
            .event
            .unwrap()
            .version,
        2
    );

    tx.commit().await.unwrap();
    for w in writers {
        w.await
            .unwrap()
            .expect("every stuck writer completes once the lock is released");
    }
    assert_eq!(full_history(&mut c, &hot.id).await.len(), 5);
    server.stop().await;
}

/// A loopback TCP proxy to PostgreSQL that can be cut and restored, to make the database
/// unreachable for one server without touching the shared PostgreSQL.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                conns2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self {
            port,
            up,
            connections,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let db = TestDb::create().await;
    let target: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match &target.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("TEST_DATABASE_URL must use TCP, got {other:?}"),
    };
    let port = target.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let via_proxy = db
        .url
        .replacen(&format!(":{port}/"), &format!(":{}/", proxy.port), 1);
    assert_ne!(
        via_proxy, db.url,
        "the proxy URL must differ from the direct one"
    );
    let server = TestServer::start(&via_proxy, &["--db-connect-timeout-secs", "1"]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let event_service = "temporal_state.v1.EventService";

    wait_for_health(&mut health, event_service, ServingStatus::Serving).await;
    wait_for_health(&mut health, "", ServingStatus::Serving).await;

    proxy.cut();
    wait_for_health(&mut health, event_service, ServingStatus::NotServing).await;
    let mut c = server.clients().await;
    let status = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.restore();
    wait_for_health(&mut health, event_service, ServingStatus::Serving).await;
    c.types
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .expect("reads work again once the database is back");
}

/// PostgreSQL reporting damaged data (`data_corrupted`, `index_corrupted`) is DATA_LOSS, which the
/// SDK turns into its typed `Error::DataLoss`; any other database failure is INTERNAL, and its
/// cause stays in the server's log: the client gets a fixed message. The failures are raised by a
/// trigger on the test's own database, through the real driver and mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_postgres_data_is_data_loss_and_internal_errors_are_never_detailed() {
    use temporal_state_client::{ApplyEventOptions, Client, Error};
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let inst = c.create_instance("doc", "d", json!({})).await;
    c.apply(&inst.id, "Set", json!({"n": 1})).await.unwrap();
    let sdk = Client::connect(server.endpoint()).await.unwrap();
    let pg = db.client().await;

    for (sqlstate, want, sdk_variant) in [
        ("data_corrupted", Code::DataLoss, "DataLoss"),
        ("index_corrupted", Code::DataLoss, "DataLoss"),
        ("internal_error", Code::Internal, "Internal"),
        ("raise_exception", Code::Internal, "Internal"),
    ] {
        pg.batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               RAISE EXCEPTION 'secret-detail-7f3a in table %', TG_TABLE_NAME
                 USING ERRCODE = '{sqlstate}', DETAIL = 'secret-detail-7f3a';
             END $$;
             CREATE OR REPLACE TRIGGER fail_insert BEFORE INSERT ON events
               FOR EACH ROW EXECUTE FUNCTION fail_insert();"
        ))
        .await
        .unwrap();
        let status = c
            .apply(&inst.id, "Set", json!({"n": 2}))
            .await
            .expect_err(sqlstate);
        assert_eq!(status.code(), want, "{sqlstate}: {status:?}");
        assert!(
            !status.message().contains("secret") && !status.message().contains("events"),
            "{sqlstate}: the cause leaked to the client: {:?}",
            status.message()
        );
        assert!(status.details().is_empty(), "{sqlstate}: {status:?}");
        let typed = sdk
            .apply_event(
                &inst.id,
                "Set",
                &json!({"n": 2}),
                &ApplyEventOptions::default(),
            )
            .await
            .expect_err(sqlstate);
        let variant = match &typed {
            Error::DataLoss { message } | Error::Internal { message } => {
                assert!(!message.contains("secret"), "{sqlstate}: {message:?}");
                if matches!(typed, Error::DataLoss { .. }) {
                    "DataLoss"
                } else {
                    "Internal"
                }
            }
            other => panic!("{sqlstate}: the SDK made {other:?}"),
        };
        assert_eq!(variant, sdk_variant, "{sqlstate}");
        pg.batch_execute("DROP TRIGGER fail_insert ON events")
            .await
            .unwrap();
    }
    // Nothing was stored meanwhile, and the instance takes writes again.
    assert_eq!(db.count("events").await, 2);
    let after = c.apply(&inst.id, "Set", json!({"n": 3})).await.unwrap();
    assert_eq!(after.event.unwrap().version, 3);
    server.stop().await;
}

/// `-0.0` from a client is a whole number, so the server takes it as the integer 0 before any
/// store sees it: both backends answer and keep `0`, without a sign (the embedded store could
/// keep `-0.0`, PostgreSQL could not; at the API they agree).
async fn negative_zero_arrives_as_zero_on_both_backends(backend: Backend) {
    fn plain_zero(s: &Option<prost_types::Struct>, field: &str) -> bool {
        match s.as_ref().unwrap().fields[field].kind {
            Some(prost_types::value::Kind::NumberValue(n)) => n == 0.0 && n.is_sign_positive(),
            ref other => panic!("{field}: {other:?}"),
        }
    }
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("signed", json!({"type": "object"})).await;
    let inst = c.create_instance("signed", "s", json!({"a": -0.0})).await;
    assert!(plain_zero(&inst.state, "a"), "{:?}", inst.state);
    let applied = c.apply(&inst.id, "Set", json!({"b": -0.0})).await.unwrap();
    assert!(plain_zero(&applied.state, "a") && plain_zero(&applied.state, "b"));
    const SQL: &str = "SELECT state FROM instances";
    let stored: Value = match &db {
        Store::Postgres(pg) => pg.client().await.query_one(SQL, &[]).await.unwrap().get(0),
        Store::Embedded(dir) => {
            let text: String = Store::sqlite(dir).query_row(SQL, [], |r| r.get(0)).unwrap();
            serde_json::from_str(&text).unwrap()
        }
    };
    assert_eq!(stored.to_string(), r#"{"a":0,"b":0}"#);
    server.stop().await;
}
