//! The lifecycle of types and instances against a real server: schema versions
//! (UpdateEntityType, with its check of every current state, dry runs, the override and the
//! expected-version guard), DeleteEntityType, and ArchiveInstance / RestoreInstance.
//!
//! Every test body runs on both stores: `postgres::<name>` on a fresh PostgreSQL database,
//! `embedded::<name>` on the embedded store in a fresh DATA_DIR. What only several replicas
//! sharing one database can show runs on PostgreSQL only.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

for_each_backend!(
    a_schema_change_is_accepted_refused_by_one_old_state_then_accepted_once_it_is_fixed,
    allow_invalid_existing_accepts_and_the_next_event_must_fix_the_state,
    two_concurrent_schema_updates_exactly_one_wins,
    a_schema_change_racing_writers_never_leaves_a_state_unchecked: 4,
    a_description_alone_keeps_the_schema_version,
    bad_updates_get_the_right_code_and_change_nothing,
    a_type_is_deleted_only_without_instances,
    an_archived_instance_refuses_writes_answers_history_and_restores,
    archive_and_restore_retries_with_an_event_id_answer_the_event_recorded_first,
);

/// Players: a name, and a level that the later schemas require.
fn v1() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "level": {"type": "integer", "minimum": 1}
        },
        "required": ["name"]
    })
}

/// v1 plus an optional email: every state satisfies it.
fn v2() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "level": {"type": "integer", "minimum": 1},
            "email": {"type": "string"}
        },
        "required": ["name"]
    })
}

/// v2 with `level` required.
fn v3() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "level": {"type": "integer", "minimum": 1},
            "email": {"type": "string"}
        },
        "required": ["name", "level"]
    })
}

fn update(entity_type: &str, schema: Value) -> pb::UpdateEntityTypeRequest {
    pb::UpdateEntityTypeRequest {
        entity_type: entity_type.into(),
        schema: Some(st(schema)),
        ..Default::default()
    }
}

async fn update_type(
    c: &mut Clients,
    request: pb::UpdateEntityTypeRequest,
) -> Result<pb::UpdateEntityTypeResponse, tonic::Status> {
    c.types
        .update_entity_type(request)
        .await
        .map(|r| r.into_inner())
}

async fn get_type(c: &mut Clients, name: &str) -> pb::GetEntityTypeResponse {
    c.types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn history(c: &mut Clients, instance_id: &str) -> Vec<pb::Event> {
    c.queries
        .get_history(pb::GetHistoryRequest {
            instance_id: instance_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn a_schema_change_is_accepted_refused_by_one_old_state_then_accepted_once_it_is_fixed(
    backend: Backend,
) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    let created = c.create_type("player", v1()).await;
    assert_eq!(created.schema_version, 1);
    let a = c
        .create_instance("player", "a", json!({"name": "Ann", "level": 2}))
        .await;
    let b = c
        .create_instance("player", "b", json!({"name": "Bob"}))
        .await;
    c.apply(&a.id, "Renamed", json!({"name": "Anna"}))
        .await
        .unwrap();

    // v2: every state satisfies it.
    let accepted = update_type(&mut c, update("player", v2())).await.unwrap();
    assert!(accepted.applied);
    assert_eq!(accepted.checked_instances, 2);
    assert_eq!(accepted.invalid_instances, 0);
    let t = accepted.entity_type.unwrap();
    assert_eq!(t.schema_version, 2);
    assert_eq!(js(&t.schema), v2());
    let after = c
        .apply(&a.id, "EmailSet", json!({"email": "ann@example.com"}))
        .await
        .unwrap();
    assert_eq!(after.event.unwrap().schema_version, 2);

    // v3 requires a level, which b never had: refused, naming b and the rule.
    let refused = update_type(&mut c, update("player", v3()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("\"b\""), "{}", refused.message());
    assert!(refused.message().contains("level"), "{}", refused.message());
    assert!(
        !refused.message().contains("\"a\""),
        "{}",
        refused.message()
    );
    let details = refused.get_details_precondition_failure().expect("details");
    assert_eq!(details.violations.len(), 1, "{details:?}");
    assert!(details.violations[0].subject.contains(&b.id));
    assert_eq!(
        get_type(&mut c, "player")
            .await
            .entity_type
            .unwrap()
            .schema_version,
        2
    );

    // A dry run lists it and changes nothing.
    let dry = update_type(
        &mut c,
        pb::UpdateEntityTypeRequest {
            dry_run: true,
            ..update("player", v3())
        },
    )
    .await
    .unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.checked_instances, 2);
    assert_eq!(dry.invalid_instances, 1);
    assert_eq!(dry.violations.len(), 1);
    assert_eq!(dry.violations[0].external_id, "b");
    assert_eq!(dry.violations[0].instance_id, b.id);
    assert_eq!(dry.violations[0].version, 1);
    assert!(
        dry.violations[0].messages[0].contains("level"),
        "{:?}",
        dry.violations[0]
    );
    assert_eq!(dry.entity_type.unwrap().schema_version, 2);

    // Fixed by an event, the same change is accepted.
    c.apply(&b.id, "LevelSet", json!({"level": 1}))
        .await
        .unwrap();
    let accepted = update_type(&mut c, update("player", v3())).await.unwrap();
    assert!(accepted.applied);
    assert_eq!(accepted.entity_type.unwrap().schema_version, 3);

    // Every version is kept, in order.
    let got = get_type(&mut c, "player").await;
    assert_eq!(got.entity_type.unwrap().schema_version, 3);
    let versions: Vec<(i64, Value)> = got
        .schema_versions
        .iter()
        .map(|v| (v.version, js(&v.schema)))
        .collect();
    assert_eq!(versions, vec![(1, v1()), (2, v2()), (3, v3())]);

    // The new schema holds from now on: removing the level is refused.
    let broken = c
        .apply(&b.id, "LevelCleared", json!({"level": null}))
        .await
        .unwrap_err();
    assert_eq!(broken.code(), Code::InvalidArgument);
    let fine = c
        .apply(&b.id, "LevelUp", json!({"level": 2}))
        .await
        .unwrap();
    assert_eq!(fine.event.unwrap().schema_version, 3);

    // Events before and after carry the version that validated them.
    let a_versions: Vec<(String, i64)> = history(&mut c, &a.id)
        .await
        .into_iter()
        .map(|e| (e.event_type, e.schema_version))
        .collect();
    assert_eq!(
        a_versions,
        [
            ("InstanceCreated".to_string(), 1),
            ("Renamed".to_string(), 1),
            ("EmailSet".to_string(), 2)
        ]
    );
    let b_versions: Vec<i64> = history(&mut c, &b.id)
        .await
        .iter()
        .map(|e| e.schema_version)
        .collect();
    assert_eq!(b_versions, [1, 2, 3]);
    // A new instance is validated against, and records, the current version.
    let created = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "player".into(),
            external_id: "c".into(),
            initial_state: Some(st(json!({"name": "Cy"}))),
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::InvalidArgument);
    let cy = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "player".into(),
            external_id: "c".into(),
            initial_state: Some(st(json!({"name": "Cy", "level": 1}))),
            metadata: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cy.event.unwrap().schema_version, 3);

    // A restarted server reads the versions back from the store.
    server.stop().await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    let got = get_type(&mut c, "player").await;
    assert_eq!(got.entity_type.unwrap().schema_version, 3);
    assert_eq!(got.schema_versions.len(), 3);
    let again = c
        .apply(&b.id, "LevelCleared", json!({"level": null}))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::InvalidArgument);
    server.stop().await;
}

async fn allow_invalid_existing_accepts_and_the_next_event_must_fix_the_state(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let b = c
        .create_instance("player", "b", json!({"name": "Bob"}))
        .await;
    let forced = update_type(
        &mut c,
        pb::UpdateEntityTypeRequest {
            allow_invalid_existing: true,
            ..update("player", v3())
        },
    )
    .await
    .unwrap();
    assert!(forced.applied);
    assert_eq!(forced.invalid_instances, 1);
    assert_eq!(forced.violations[0].external_id, "b");
    assert_eq!(forced.entity_type.unwrap().schema_version, 2);

    // b is still readable as it was, and its next event must bring it into line.
    let got = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(js(&got.state), json!({"name": "Bob"}));
    let still_broken = c
        .apply(&b.id, "Renamed", json!({"name": "Bobby"}))
        .await
        .unwrap_err();
    assert_eq!(still_broken.code(), Code::InvalidArgument);
    let fixed = c
        .apply(&b.id, "LevelSet", json!({"level": 3}))
        .await
        .unwrap();
    assert_eq!(fixed.event.unwrap().schema_version, 2);
    server.stop().await;
}

async fn two_concurrent_schema_updates_exactly_one_wins(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    for i in 0..50 {
        c.create_instance(
            "player",
            &format!("p{i:02}"),
            json!({"name": "x", "level": 1}),
        )
        .await;
    }
    let racers: Vec<_> = [v2(), v3()]
        .into_iter()
        .map(|schema| {
            let mut c = c.clone();
            tokio::spawn(async move {
                update_type(
                    &mut c,
                    pb::UpdateEntityTypeRequest {
                        expected_schema_version: Some(1),
                        ..update("player", schema)
                    },
                )
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(answer) => won.push(answer),
            Err(status) => lost.push(status),
        }
    }
    assert_eq!(won.len(), 1, "won: {won:?}, lost: {lost:?}");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].code(), Code::Aborted, "{:?}", lost[0]);
    assert!(
        lost[0].message().contains("schema version 2"),
        "{}",
        lost[0].message()
    );
    let winner = won[0].entity_type.clone().unwrap();
    assert_eq!(winner.schema_version, 2);
    let got = get_type(&mut c, "player").await;
    assert_eq!(got.schema_versions.len(), 2);
    assert_eq!(js(&got.entity_type.unwrap().schema), js(&winner.schema));

    // The guard with the current version passes.
    let next = update_type(
        &mut c,
        pb::UpdateEntityTypeRequest {
            expected_schema_version: Some(2),
            ..update("player", v3())
        },
    )
    .await
    .unwrap();
    assert_eq!(next.entity_type.unwrap().schema_version, 3);
    server.stop().await;
}

/// Writers keep removing and restoring `level` while a schema requiring it is proposed again
/// and again. Whatever the interleaving, once it is accepted no state lacks a level, and every
/// event recorded under it satisfies it: no write slips between the check and the change.
async fn a_schema_change_racing_writers_never_leaves_a_state_unchecked(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let p = c
            .create_instance("player", &format!("p{i}"), json!({"name": "x", "level": 1}))
            .await;
        ids.push(p.id);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let mut c = c.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                    let payload = if n.is_multiple_of(2) {
                        json!({"level": null})
                    } else {
                        json!({"level": 1})
                    };
                    // Refused once the new schema holds (removing the level): expected.
                    match c.apply(&id, "Flip", payload).await {
                        Ok(_) => {}
                        Err(s) if s.code() == Code::InvalidArgument => {}
                        Err(s) => panic!("unexpected {s:?}"),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let mut accepted = None;
    for _ in 0..200 {
        match update_type(&mut c, update("player", v3())).await {
            Ok(answer) => {
                accepted = Some(answer);
                break;
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::task::yield_now().await;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    // Writers that keep restoring a level let the change through eventually; if not within the
    // bound, force it, so the rest of the test still checks what follows a change.
    let accepted = match accepted {
        Some(a) => a,
        None => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for w in &writers {
                w.abort();
            }
            for id in &ids {
                c.apply(id, "Fix", json!({"level": 1})).await.unwrap();
            }
            update_type(&mut c, update("player", v3())).await.unwrap()
        }
    };
    assert!(accepted.applied);
    let version = accepted.entity_type.unwrap().schema_version;
    // Let the writers go on a little under the new schema, then stop them.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let page = c
        .instances
        .list_instances(pb::ListInstancesRequest {
            entity_type: "player".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for i in &page.instances {
        assert!(
            js(&i.state).get("level").is_some(),
            "{} lost its level under the new schema: {:?}",
            i.external_id,
            js(&i.state)
        );
    }
    // Fold each history: every state after an event recorded under the new version has a level.
    for id in &ids {
        let mut state = serde_json::Map::new();
        let events = history(&mut c, id).await;
        let mut versions = BTreeSet::new();
        for e in &events {
            let payload = js(&e.payload);
            state = temporal_state_server::domain::apply_event(
                &state,
                payload.as_object().unwrap(),
                if e.version == 1 {
                    temporal_state_server::domain::ApplyMode::Replace
                } else {
                    temporal_state_server::domain::ApplyMode::MergePatch
                },
            )
            .unwrap();
            versions.insert(e.schema_version);
            if e.schema_version >= version {
                assert!(
                    state.contains_key("level"),
                    "event {} of {id} recorded under schema {} left no level",
                    e.version,
                    e.schema_version
                );
            }
        }
        assert!(
            versions.iter().all(|v| *v == 1 || *v == version),
            "{versions:?}"
        );
    }
    server.stop().await;
}

async fn a_description_alone_keeps_the_schema_version(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let changed = update_type(
        &mut c,
        pb::UpdateEntityTypeRequest {
            entity_type: "player".into(),
            description: Some("People who play".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(changed.applied);
    assert_eq!(changed.checked_instances, 0);
    let t = changed.entity_type.unwrap();
    assert_eq!(t.description, "People who play");
    assert_eq!(t.schema_version, 1);
    let got = get_type(&mut c, "player").await;
    assert_eq!(got.entity_type.unwrap().description, "People who play");
    assert_eq!(got.schema_versions.len(), 1);
    server.stop().await;
}

async fn bad_updates_get_the_right_code_and_change_nothing(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let cases: Vec<(pb::UpdateEntityTypeRequest, Code)> = vec![
        (
            pb::UpdateEntityTypeRequest {
                entity_type: "player".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            update("player", json!({"type": "bogus"})),
            Code::InvalidArgument,
        ),
        (update("nobody", v2()), Code::NotFound),
        (update("Not A Name", v2()), Code::InvalidArgument),
        (
            pb::UpdateEntityTypeRequest {
                expected_schema_version: Some(0),
                ..update("player", v2())
            },
            Code::InvalidArgument,
        ),
        (
            pb::UpdateEntityTypeRequest {
                expected_schema_version: Some(7),
                ..update("player", v2())
            },
            Code::Aborted,
        ),
        (
            pb::UpdateEntityTypeRequest {
                entity_type: "player".into(),
                description: Some("x".repeat(5000)),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        let status = update_type(&mut c, request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
    let got = get_type(&mut c, "player").await;
    assert_eq!(got.entity_type.unwrap().schema_version, 1);
    assert_eq!(got.schema_versions.len(), 1);
    server.stop().await;
}

async fn a_type_is_deleted_only_without_instances(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    c.create_type("scratch", v1()).await;
    update_type(&mut c, update("scratch", v2())).await.unwrap();
    c.create_instance("player", "a", json!({"name": "Ann"}))
        .await;

    let refused = c
        .types
        .delete_entity_type(pb::DeleteEntityTypeRequest {
            entity_type: "player".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("instances"),
        "{}",
        refused.message()
    );
    get_type(&mut c, "player").await;

    c.types
        .delete_entity_type(pb::DeleteEntityTypeRequest {
            entity_type: "scratch".into(),
        })
        .await
        .unwrap();
    let gone = c
        .types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: "scratch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = c
        .types
        .delete_entity_type(pb::DeleteEntityTypeRequest {
            entity_type: "scratch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    // The name is free again, and the new type starts at schema version 1.
    let reborn = c.create_type("scratch", v3()).await;
    assert_eq!(reborn.schema_version, 1);
    assert_eq!(get_type(&mut c, "scratch").await.schema_versions.len(), 1);
    server.stop().await;
}

/// Two servers on one database: the one that did not make the schema change still validates
/// against the new schema (its remembered type is behind; the append finds out and decides
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_a_schema_change_validates_against_it() {
    let store = Store::create(Backend::Postgres).await;
    let one = store.start(&[]).await;
    let two = store.start(&[]).await;
    let mut c1 = one.clients().await;
    let mut c2 = two.clients().await;
    c1.create_type("player", v1()).await;
    let p = c1
        .create_instance("player", "p", json!({"name": "x", "level": 1}))
        .await;
    // Server two remembers v1 (and the instance's head).
    c2.apply(&p.id, "Touch", json!({"name": "y"}))
        .await
        .unwrap();
    update_type(&mut c1, update("player", v3())).await.unwrap();

    let refused = c2
        .apply(&p.id, "LevelCleared", json!({"level": null}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let ok = c2
        .apply(&p.id, "LevelUp", json!({"level": 2}))
        .await
        .unwrap();
    assert_eq!(ok.event.unwrap().schema_version, 2);
    let created = c2
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "player".into(),
            external_id: "q".into(),
            initial_state: Some(st(json!({"name": "no level"}))),
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::InvalidArgument, "{created:?}");
    assert_eq!(
        get_type(&mut c2, "player")
            .await
            .entity_type
            .unwrap()
            .schema_version,
        2
    );
    one.stop().await;
    two.stop().await;
}

async fn archive(c: &mut Clients, id: &str) -> Result<pb::ArchiveInstanceResponse, tonic::Status> {
    c.instances
        .archive_instance(pb::ArchiveInstanceRequest {
            instance_id: id.into(),
            metadata: Some(st(json!({"reason": "season over"}))),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn restore(c: &mut Clients, id: &str) -> Result<pb::RestoreInstanceResponse, tonic::Status> {
    c.instances
        .restore_instance(pb::RestoreInstanceRequest {
            instance_id: id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn listed(c: &mut Clients, include_archived: bool) -> Vec<(String, bool)> {
    c.instances
        .list_instances(pb::ListInstancesRequest {
            entity_type: "player".into(),
            include_archived,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instances
        .into_iter()
        .map(|i| (i.external_id, i.archived))
        .collect()
}

async fn an_archived_instance_refuses_writes_answers_history_and_restores(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "3"]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let a = c
        .create_instance("player", "a", json!({"name": "Ann", "level": 1}))
        .await;
    c.create_instance("player", "b", json!({"name": "Bob"}))
        .await;
    c.apply(&a.id, "LevelUp", json!({"level": 2}))
        .await
        .unwrap();

    let archived = archive(&mut c, &a.id).await.unwrap();
    let event = archived.event.unwrap();
    assert_eq!(event.event_type, "InstanceArchived");
    assert_eq!(event.version, 3);
    assert_eq!(js(&event.payload), json!({}));
    assert_eq!(js(&event.metadata), json!({"reason": "season over"}));
    let instance = archived.instance.unwrap();
    assert!(instance.archived);
    assert_eq!(instance.version, 3);
    assert_eq!(js(&instance.state), json!({"name": "Ann", "level": 2}));

    // Writes are refused, naming the state; nothing is stored.
    let refused = c
        .apply(&a.id, "LevelUp", json!({"level": 3}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("archived"),
        "{}",
        refused.message()
    );
    let batch = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            instance_id: a.id.clone(),
            events: vec![pb::EventInput {
                event_type: "LevelUp".into(),
                payload: Some(st(json!({"level": 3}))),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(batch.code(), Code::FailedPrecondition);
    let twice = archive(&mut c, &a.id).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert!(
        twice.message().contains("already archived"),
        "{}",
        twice.message()
    );
    // Lifecycle events are the server's to record.
    let b = b_id(&mut c).await;
    let forged = c
        .apply(&b, "InstanceArchived", json!({}))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::InvalidArgument);

    // Fully queryable.
    let got = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(got.archived);
    assert_eq!(got.version, 3);
    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player".into(),
            external_id: "a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(current.archived);
    let types: Vec<String> = history(&mut c, &a.id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["InstanceCreated", "LevelUp", "InstanceArchived"]);
    let at = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: a.id.clone(),
            version: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(js(&at.state), json!({"name": "Ann", "level": 2}));

    // Left out of listings unless asked for.
    assert_eq!(listed(&mut c, false).await, [("b".to_string(), false)]);
    assert_eq!(
        listed(&mut c, true).await,
        [("a".to_string(), true), ("b".to_string(), false)]
    );

    // The flag survives a restart.
    server.stop().await;
    let server = store.start(&["--snapshot-interval", "3"]).await;
    let mut c = server.clients().await;
    let refused = c
        .apply(&a.id, "LevelUp", json!({"level": 3}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Restored, it is writable again, and both are events in its history.
    let restored = restore(&mut c, &a.id).await.unwrap();
    assert_eq!(restored.event.unwrap().event_type, "InstanceRestored");
    assert!(!restored.instance.unwrap().archived);
    let written = c
        .apply(&a.id, "LevelUp", json!({"level": 3}))
        .await
        .unwrap();
    assert_eq!(written.event.unwrap().version, 5);
    let again = restore(&mut c, &a.id).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let versions: Vec<(i64, String)> = history(&mut c, &a.id)
        .await
        .into_iter()
        .map(|e| (e.version, e.event_type))
        .collect();
    assert_eq!(
        versions,
        [
            (1, "InstanceCreated".to_string()),
            (2, "LevelUp".to_string()),
            (3, "InstanceArchived".to_string()),
            (4, "InstanceRestored".to_string()),
            (5, "LevelUp".to_string()),
        ]
    );
    assert_eq!(
        listed(&mut c, false).await,
        [("a".to_string(), false), ("b".to_string(), false)]
    );
    // A guarded archive with a stale version is ABORTED.
    let stale = c
        .instances
        .archive_instance(pb::ArchiveInstanceRequest {
            instance_id: a.id.clone(),
            metadata: None,
            expected_version: Some(4),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    server.stop().await;
}

async fn b_id(c: &mut Clients) -> String {
    c.instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player".into(),
            external_id: "b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
        .id
}

/// Two servers sharing PostgreSQL and a Redis cache: an archive made through one is what the
/// other reads (the archive is an event like any other: the cached record moves with it), and
/// the other refuses writes to it; a restore moves the cache back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_reaches_the_shared_cache_and_every_replica() {
    let redis = common::procs::Redis::start();
    let store = Store::create(Backend::Postgres).await;
    let one = store.start(&["--redis-url", &redis.url()]).await;
    let two = store.start(&["--redis-url", &redis.url()]).await;
    let mut c1 = one.clients().await;
    let mut c2 = two.clients().await;
    c1.create_type("player", v1()).await;
    let p = c1
        .create_instance("player", "p", json!({"name": "x"}))
        .await;
    let read = |c: &mut Clients| {
        let mut c = c.clone();
        let id = p.id.clone();
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
    // Server two caches the record, unarchived.
    assert!(!read(&mut c2).await.archived);
    archive(&mut c1, &p.id).await.unwrap();
    let seen = read(&mut c2).await;
    assert!(seen.archived, "{seen:?}");
    assert_eq!(seen.version, 2);
    let refused = c2
        .apply(&p.id, "Renamed", json!({"name": "y"}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    restore(&mut c2, &p.id).await.unwrap();
    let seen = read(&mut c1).await;
    assert!(!seen.archived);
    assert_eq!(seen.version, 3);
    c1.apply(&p.id, "Renamed", json!({"name": "y"}))
        .await
        .unwrap();
    one.stop().await;
    two.stop().await;
}

/// Archive and restore take an `event_id`, as ApplyEvent does: a retry (the answer was lost)
/// answers the event recorded first instead of FAILED_PRECONDITION, and records nothing more. An
/// id already used for another event is ALREADY_EXISTS; a malformed one INVALID_ARGUMENT. Without
/// an id, archiving an archived instance is still FAILED_PRECONDITION.
async fn archive_and_restore_retries_with_an_event_id_answer_the_event_recorded_first(
    backend: Backend,
) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", v1()).await;
    let a = c
        .create_instance("player", "a", json!({"name": "Ann"}))
        .await;
    let archive_with = |c: &Clients, id: &str, event_id: Option<&str>| {
        let mut c = c.clone();
        let request = pb::ArchiveInstanceRequest {
            instance_id: id.into(),
            event_id: event_id.map(str::to_string),
            ..Default::default()
        };
        async move {
            c.instances
                .archive_instance(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let restore_with = |c: &Clients, id: &str, event_id: &str| {
        let mut c = c.clone();
        let request = pb::RestoreInstanceRequest {
            instance_id: id.into(),
            event_id: Some(event_id.into()),
            ..Default::default()
        };
        async move {
            c.instances
                .restore_instance(request)
                .await
                .map(|r| r.into_inner())
        }
    };

    let first = archive_with(&c, &a.id, Some("archive-1")).await.unwrap();
    let event = first.event.unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.version, event.id.as_str()),
        ("InstanceArchived", 2, "archive-1")
    );
    let retry = archive_with(&c, &a.id, Some("archive-1")).await.unwrap();
    assert_eq!(
        retry.event.unwrap(),
        event,
        "a retry answers the same event"
    );
    assert!(retry.instance.unwrap().archived);
    assert_eq!(history(&mut c, &a.id).await.len(), 2, "and records nothing");
    // Without an id, or with a new one, archiving an archived instance is refused as before.
    for id in [None, Some("archive-2")] {
        let refused = archive_with(&c, &a.id, id).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    // The archive's id cannot stand for the restore.
    let reused = restore_with(&c, &a.id, "archive-1").await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let bad = archive_with(&c, &a.id, Some("")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    let restored = restore_with(&c, &a.id, "restore-1").await.unwrap();
    let event = restored.event.unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.version),
        ("InstanceRestored", 3)
    );
    let retry = restore_with(&c, &a.id, "restore-1").await.unwrap();
    assert_eq!(retry.event.unwrap(), event);
    assert!(!retry.instance.unwrap().archived);
    // Writes go on; the retried restore still answers its own event afterwards.
    c.apply(&a.id, "LevelUp", json!({"level": 2}))
        .await
        .unwrap();
    let late = restore_with(&c, &a.id, "restore-1").await.unwrap();
    assert_eq!(late.event.unwrap(), event);
    assert_eq!(history(&mut c, &a.id).await.len(), 4);
}
