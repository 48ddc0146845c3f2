//! Declared event types against a real server, on both stores: payload schemas, CEL transforms
//! and guards, strict mode, expressions refused when declared, `dry_run`, the recorded change
//! that time travel folds (so a later transform never rewrites history), and guarded
//! withdrawals racing deposits.

mod common;

use common::*;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use tonic::Code;

for_each_backend!(
    expressions_are_checked_when_declared_and_hostile_ones_refused,
    payload_schema_transform_guards_and_strict_mode,
    a_dry_run_answers_the_event_and_state_and_stores_nothing,
    a_later_transform_leaves_past_states_diffs_and_timelines_unchanged,
    concurrent_deposits_and_withdrawals_never_overdraw: 4,
);

fn guard(expression: &str, message: &str) -> pb::EventGuard {
    pb::EventGuard {
        expression: expression.into(),
        message: message.into(),
    }
}

/// The README's `ScoreIncreased`: points ≥ 0, added to the score, the level recomputed, at most
/// 1000 points per event.
fn score_increased(transform: &str) -> pb::EventTypeDeclaration {
    pb::EventTypeDeclaration {
        event_type: "ScoreIncreased".into(),
        payload_schema: Some(st(json!({
            "type": "object",
            "properties": {"points": {"type": "integer", "minimum": 0}},
            "required": ["points"],
            "additionalProperties": false
        }))),
        mode: 0,
        transform: transform.into(),
        guards: vec![guard(
            "payload.points <= 1000",
            "at most 1000 points per event",
        )],
    }
}

const SCORE: &str =
    r#"{"score": state.score + payload.points, "level": (state.score + payload.points) / 100 + 1}"#;

fn player_declarations(transform: &str) -> pb::EventDeclarations {
    pb::EventDeclarations {
        strict: true,
        event_types: vec![
            score_increased(transform),
            pb::EventTypeDeclaration {
                event_type: "Renamed".into(),
                ..Default::default()
            },
        ],
    }
}

fn account_declarations() -> pb::EventDeclarations {
    let amount = || {
        Some(st(json!({
            "type": "object",
            "properties": {"amount": {"type": "integer", "minimum": 1}},
            "required": ["amount"]
        })))
    };
    pb::EventDeclarations {
        strict: true,
        event_types: vec![
            pb::EventTypeDeclaration {
                event_type: "Deposited".into(),
                payload_schema: amount(),
                transform: r#"{"balance": state.balance + payload.amount}"#.into(),
                ..Default::default()
            },
            pb::EventTypeDeclaration {
                event_type: "Withdrawn".into(),
                payload_schema: amount(),
                transform: r#"{"balance": state.balance - payload.amount}"#.into(),
                guards: vec![guard(
                    "state.balance >= payload.amount",
                    "insufficient funds",
                )],
                ..Default::default()
            },
        ],
    }
}

async fn create_declared(
    c: &mut Clients,
    name: &str,
    schema: Value,
    declarations: pb::EventDeclarations,
) -> Result<pb::EntityType, tonic::Status> {
    c.types
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: name.into(),
            description: String::new(),
            schema: Some(st(schema)),
            declarations: Some(declarations),
        })
        .await
        .map(|r| r.into_inner().entity_type.unwrap())
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

async fn state_at(c: &mut Clients, instance_id: &str, version: i64) -> Value {
    let r = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: instance_id.into(),
            version,
        })
        .await
        .unwrap()
        .into_inner();
    js(&r.state)
}

async fn apply_dry(
    c: &mut Clients,
    instance_id: &str,
    event_type: &str,
    payload: Value,
    dry_run: bool,
) -> Result<pb::ApplyEventResponse, tonic::Status> {
    c.events
        .apply_event(pb::ApplyEventRequest {
            instance_id: instance_id.into(),
            event_type: event_type.into(),
            payload: Some(st(payload)),
            dry_run,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn expressions_are_checked_when_declared_and_hostile_ones_refused(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;

    let refused = |transform: &str, guards: Vec<pb::EventGuard>| pb::EventDeclarations {
        strict: false,
        event_types: vec![pb::EventTypeDeclaration {
            event_type: "E".into(),
            transform: transform.into(),
            guards,
            ..Default::default()
        }],
    };
    let cases = [
        // A syntax error, with its position.
        (refused("", vec![guard("state.score >", "")]), "line 1"),
        // An unknown variable, with its position.
        (
            refused("", vec![guard("state.score > 1 && balance > 2", "")]),
            "line 1, column 20",
        ),
        // Loops: nested comprehensions would cost the product of the lists' sizes.
        (
            refused(
                "",
                vec![guard(
                    "state.items.all(x, state.items.all(y, x != y || true))",
                    "",
                )],
            ),
            "loop",
        ),
        (
            refused(r#"{"all": state.items.map(x, state.items)}"#, vec![]),
            "loop",
        ),
        // Too long, too deep.
        (
            refused(
                "",
                vec![guard(&format!("true{}", " && true".repeat(400)), "")],
            ),
            "over the limit",
        ),
        (
            refused(
                "",
                vec![guard(
                    &format!("{}true{}", "(".repeat(500), ")".repeat(500)),
                    "",
                )],
            ),
            "",
        ),
        // A guard that is no boolean; a transform that is no map of fields.
        (refused("", vec![guard("state.score + 1", "")]), "boolean"),
        (refused("state.score + 1", vec![]), "map literal"),
    ];
    for (i, (declarations, expect)) in cases.into_iter().enumerate() {
        let err = create_declared(
            &mut c,
            &format!("bad{i}"),
            json!({"type": "object"}),
            declarations,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "case {i}: {err:?}");
        assert!(
            err.message().contains("event_types[E]"),
            "case {i}: {}",
            err.message()
        );
        assert!(
            err.message().contains(expect),
            "case {i}: {}",
            err.message()
        );
        // Nothing stored.
        let got = c
            .types
            .get_entity_type(pb::GetEntityTypeRequest {
                entity_type: format!("bad{i}"),
            })
            .await
            .unwrap_err();
        assert_eq!(got.code(), Code::NotFound);
    }

    // The same checks on an update, which then changes nothing.
    create_declared(
        &mut c,
        "player",
        player_schema(),
        player_declarations(SCORE),
    )
    .await
    .unwrap();
    let err = c
        .types
        .update_entity_type(pb::UpdateEntityTypeRequest {
            entity_type: "player".into(),
            declarations: Some(refused("", vec![guard("payload.x.exists(y, true)", "")])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let t = c
        .types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: "player".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entity_type
        .unwrap();
    assert_eq!(t.schema_version, 1);
    assert_eq!(t.declarations, Some(player_declarations(SCORE)));

    // A read of a payload field the payload schema closes out (additionalProperties: false, no
    // such property) would fail on every accepted payload: refused when declared, on a create
    // and on an update, naming the field, the allowed ones and the position.
    let mut misspelled = player_declarations(SCORE);
    misspelled.event_types[0].guards[0].expression = "payload.pionts <= 1000".into();
    let err = create_declared(
        &mut c,
        "typo",
        json!({"type": "object"}),
        misspelled.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for expect in [
        "event_types[ScoreIncreased].guards[0].expression",
        "line 1, column 8",
        "payload has no field \"pionts\"",
        "allows only \"points\"",
    ] {
        assert!(
            err.message().contains(expect),
            "{expect}: {}",
            err.message()
        );
    }
    let mut misspelled = player_declarations(r#"{"score": state.score + payload.point}"#);
    misspelled.event_types[0].guards.clear();
    let err = c
        .types
        .update_entity_type(pb::UpdateEntityTypeRequest {
            entity_type: "player".into(),
            declarations: Some(misspelled),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("event_types[ScoreIncreased].transform")
            && err.message().contains("\"point\""),
        "{}",
        err.message()
    );
    // Without additionalProperties: false any field may be read (a missing one fails the event
    // when evaluated, as before).
    let mut open = player_declarations(SCORE);
    open.event_types[0]
        .payload_schema
        .as_mut()
        .unwrap()
        .fields
        .remove("additionalProperties");
    open.event_types[0].guards[0].expression = "payload.bonus <= 1000".into();
    create_declared(&mut c, "open_payload", json!({"type": "object"}), open)
        .await
        .unwrap();
    assert_eq!(
        c.types
            .get_entity_type(pb::GetEntityTypeRequest {
                entity_type: "player".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .entity_type
            .unwrap()
            .schema_version,
        1,
        "the refused update changed nothing"
    );
}

async fn payload_schema_transform_guards_and_strict_mode(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    let created = create_declared(
        &mut c,
        "player_profile",
        player_schema(),
        player_declarations(SCORE),
    )
    .await
    .unwrap();
    assert_eq!(created.declarations, Some(player_declarations(SCORE)));
    let p = c
        .create_instance(
            "player_profile",
            "p1",
            json!({"username": "alice", "score": 150, "level": 2}),
        )
        .await;

    // The transform adds the points and recomputes the level; the event keeps both what the
    // client sent and the change it made.
    let applied = c
        .apply(&p.id, "ScoreIncreased", json!({"points": 70}))
        .await
        .unwrap();
    assert_eq!(
        js(&applied.state),
        json!({"username": "alice", "score": 220, "level": 3})
    );
    let event = applied.event.unwrap();
    assert_eq!(js(&event.payload), json!({"points": 70}));
    assert_eq!(js(&event.change), json!({"score": 220, "level": 3}));
    assert_eq!(event.mode, pb::ApplyMode::MergePatch as i32);
    assert_eq!(applied.guards.len(), 1);
    assert!(applied.guards[0].passed);
    assert!(!applied.dry_run);
    let recorded = history(&mut c, &p.id).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1], event, "history shows the event as answered");

    // A payload breaking its schema: INVALID_ARGUMENT naming the path, nothing stored.
    for bad in [
        json!({"points": -1}),
        json!({"points": "x"}),
        json!({"pts": 1}),
    ] {
        let err = c
            .apply(&p.id, "ScoreIncreased", bad.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(
            err.message().contains("payload schema"),
            "{}",
            err.message()
        );
    }
    // A guard false: FAILED_PRECONDITION naming it, nothing stored.
    let err = c
        .apply(&p.id, "ScoreIncreased", json!({"points": 5000}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("at most 1000 points per event"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("payload.points <= 1000"),
        "{}",
        err.message()
    );
    // Strict: an undeclared event type is INVALID_ARGUMENT naming the declared ones.
    let err = c
        .apply(&p.id, "Teleported", json!({"x": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("Renamed, ScoreIncreased"),
        "{}",
        err.message()
    );
    // A transform's fields are a merge patch: another mode is refused.
    let err = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: p.id.clone(),
            event_type: "ScoreIncreased".into(),
            payload: Some(st(json!({"points": 1}))),
            mode: pb::ApplyMode::Replace as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(history(&mut c, &p.id).await.len(), 2, "nothing was stored");

    // A declared type without a transform applies its payload as usual.
    let renamed = c
        .apply(&p.id, "Renamed", json!({"username": "alicia"}))
        .await
        .unwrap();
    assert_eq!(js(&renamed.state)["username"], "alicia");
    assert_eq!(renamed.event.unwrap().change, None);

    // The transform's result still passes the state's schema (username minLength 3).
    let t = c
        .types
        .update_entity_type(pb::UpdateEntityTypeRequest {
            entity_type: "player_profile".into(),
            declarations: Some(pb::EventDeclarations {
                strict: false,
                event_types: vec![pb::EventTypeDeclaration {
                    event_type: "Shortened".into(),
                    transform: r#"{"username": "al"}"#.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.applied);
    assert_eq!(t.entity_type.unwrap().schema_version, 2);
    let err = c.apply(&p.id, "Shortened", json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/username"), "{}", err.message());
    // No longer strict: an undeclared type is a plain merge patch again.
    c.apply(&p.id, "Teleported", json!({"score": 1}))
        .await
        .unwrap();
    assert_eq!(history(&mut c, &p.id).await.len(), 4);
}

async fn a_dry_run_answers_the_event_and_state_and_stores_nothing(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    let mut declarations = account_declarations();
    declarations.event_types[1]
        .guards
        .push(guard("payload.amount <= 100", "at most 100 per withdrawal"));
    create_declared(
        &mut c,
        "account",
        json!({"type": "object", "properties": {"balance": {"type": "integer"}}}),
        declarations,
    )
    .await
    .unwrap();
    let a = c
        .create_instance("account", "acc", json!({"balance": 50}))
        .await;

    let preview = apply_dry(&mut c, &a.id, "Withdrawn", json!({"amount": 20}), true)
        .await
        .unwrap();
    assert!(preview.dry_run);
    assert_eq!(js(&preview.state), json!({"balance": 30}));
    let event = preview.event.unwrap();
    assert_eq!(event.version, 2);
    assert_eq!(event.event_type, "Withdrawn");
    assert_eq!(js(&event.payload), json!({"amount": 20}));
    assert_eq!(js(&event.change), json!({"balance": 30}));
    assert_eq!(preview.guards.len(), 2);
    assert!(
        preview.guards.iter().all(|g| g.passed),
        "{:?}",
        preview.guards
    );

    // Every guard is evaluated: both failing ones are named.
    let err = apply_dry(&mut c, &a.id, "Withdrawn", json!({"amount": 500}), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("insufficient funds"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("at most 100 per withdrawal"),
        "{}",
        err.message()
    );

    // A batch previews every event on the state the previous one left.
    let batch = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            instance_id: a.id.clone(),
            expected_version: Some(1),
            events: vec![
                pb::EventInput {
                    event_type: "Deposited".into(),
                    payload: Some(st(json!({"amount": 60}))),
                    ..Default::default()
                },
                pb::EventInput {
                    event_type: "Withdrawn".into(),
                    payload: Some(st(json!({"amount": 100}))),
                    ..Default::default()
                },
            ],
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.dry_run);
    assert_eq!(js(&batch.state), json!({"balance": 10}));
    assert_eq!(
        batch.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 3]
    );

    // Nothing of it was stored.
    assert_eq!(history(&mut c, &a.id).await.len(), 1);
    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "account".into(),
            external_id: "acc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(js(&current.state), json!({"balance": 50}));
    assert_eq!(current.version, 1);

    // The same event applied for real is what the preview said.
    let real = apply_dry(&mut c, &a.id, "Withdrawn", json!({"amount": 20}), false)
        .await
        .unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.state, preview.state);
    let real_event = real.event.unwrap();
    assert_eq!(real_event.version, event.version);
    assert_eq!(real_event.change, event.change);
}

async fn a_later_transform_leaves_past_states_diffs_and_timelines_unchanged(backend: Backend) {
    let store = Store::create(backend).await;
    // Snapshots every 3 versions: past states fold both snapshots and recorded changes.
    let server = store.start(&["--snapshot-interval", "3"]).await;
    let mut c = server.clients().await;
    create_declared(
        &mut c,
        "player_profile",
        player_schema(),
        player_declarations(SCORE),
    )
    .await
    .unwrap();
    let p = c
        .create_instance(
            "player_profile",
            "p1",
            json!({"username": "alice", "score": 0, "level": 1}),
        )
        .await;
    for points in [10, 120, 35, 300, 5, 60, 999] {
        c.apply(&p.id, "ScoreIncreased", json!({"points": points}))
            .await
            .unwrap();
    }
    let last = 8;
    let mut before = Vec::new();
    for v in 1..=last {
        before.push(state_at(&mut c, &p.id, v).await);
    }
    assert_eq!(before[7]["score"], json!(1529));
    let compare = |c: &mut Clients| {
        let mut q = c.queries.clone();
        let id = p.id.clone();
        async move {
            q.compare_versions(pb::CompareVersionsRequest {
                instance_id: id,
                version1: 2,
                version2: 7,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let timeline = |c: &mut Clients| {
        let mut q = c.queries.clone();
        let id = p.id.clone();
        async move {
            q.get_field_timeline(pb::GetFieldTimelineRequest {
                instance_id: id,
                field: "score".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .points
        }
    };
    let diff_before = compare(&mut c).await;
    let timeline_before = timeline(&mut c).await;
    let history_before = history(&mut c, &p.id).await;

    // A new schema version whose transform doubles the points.
    let updated = c
        .types
        .update_entity_type(pb::UpdateEntityTypeRequest {
            entity_type: "player_profile".into(),
            declarations: Some(player_declarations(
                r#"{"score": state.score + 2 * payload.points, "level": 1}"#,
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.entity_type.unwrap().schema_version, 2);
    // Each schema version shows the declarations it was accepted with: the old transform stays
    // readable beside the new one.
    let versions = c
        .types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: "player_profile".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .schema_versions;
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.declarations.clone()))
            .collect::<Vec<_>>(),
        [
            (1, Some(player_declarations(SCORE))),
            (
                2,
                Some(player_declarations(
                    r#"{"score": state.score + 2 * payload.points, "level": 1}"#
                ))
            ),
        ]
    );

    for v in 1..=last {
        assert_eq!(
            state_at(&mut c, &p.id, v).await,
            before[v as usize - 1],
            "version {v}"
        );
    }
    assert_eq!(compare(&mut c).await, diff_before);
    assert_eq!(timeline(&mut c).await, timeline_before);
    assert_eq!(history(&mut c, &p.id).await, history_before);

    // New events follow the new transform, on top of the unchanged past.
    let next = c
        .apply(&p.id, "ScoreIncreased", json!({"points": 1}))
        .await
        .unwrap();
    assert_eq!(js(&next.state)["score"], json!(1531));
    assert_eq!(next.event.unwrap().schema_version, 2);
    assert_eq!(state_at(&mut c, &p.id, last).await, before[7]);
}

async fn concurrent_deposits_and_withdrawals_never_overdraw(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    // No minimum on the balance in the schema: only the guard stands between it and an
    // overdraft.
    create_declared(
        &mut c,
        "account",
        json!({"type": "object", "properties": {"balance": {"type": "integer"}}}),
        account_declarations(),
    )
    .await
    .unwrap();
    let a = c
        .create_instance("account", "acc", json!({"balance": 0}))
        .await;

    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut c = c.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            let (event_type, amount) = if i % 2 == 0 {
                ("Deposited", 10)
            } else {
                ("Withdrawn", 15)
            };
            (
                event_type,
                c.apply(&id, event_type, json!({"amount": amount})).await,
            )
        }));
    }
    let mut deposits = 0;
    let mut withdrawals = 0;
    let mut refusals = 0;
    for t in tasks {
        match t.await.unwrap() {
            ("Deposited", Ok(_)) => deposits += 1,
            ("Withdrawn", Ok(_)) => withdrawals += 1,
            ("Withdrawn", Err(e)) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(
                    e.message().contains("insufficient funds"),
                    "{}",
                    e.message()
                );
                assert!(
                    e.message().contains("state.balance >= payload.amount"),
                    "{}",
                    e.message()
                );
                refusals += 1;
            }
            (t, Err(e)) => panic!("{t} refused: {e:?}"),
            (t, Ok(_)) => panic!("unexpected {t}"),
        }
    }
    assert_eq!(deposits, 16);
    assert_eq!(withdrawals + refusals, 16);
    let events = history(&mut c, &a.id).await;
    assert_eq!(events.len() as i64, 1 + deposits + withdrawals);
    // Every state the account went through is non-negative.
    for v in 1..=events.len() as i64 {
        let balance = state_at(&mut c, &a.id, v).await["balance"]
            .as_i64()
            .unwrap();
        assert!(balance >= 0, "balance {balance} at version {v}");
    }
    let last = state_at(&mut c, &a.id, events.len() as i64).await;
    assert_eq!(
        last["balance"].as_i64().unwrap(),
        10 * deposits - 15 * withdrawals
    );
}
