//! The `EventStore` and `HistoryReader` contract: entity types, instances, appends (versions,
//! idempotency keys, atomic batches, snapshots, recorded_at), history reads and concurrent
//! appends, on the stores the test binary names (`on_each_store!`): PostgreSQL (`postgres::`) and
//! the embedded store (`embedded::`) in `contract`, TimescaleDB (`timescaledb::`) in
//! `timescaledb`. What only the embedded store has is in `store_embedded.rs`.

use std::sync::Arc;

use crate::common::json;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use temporal_state_server::domain::{ApplyMode, DomainError, State, apply_event};
use temporal_state_server::ports::{
    AppendOutcome, AppendRequest, Decision, EntityTypeRecord, Head, HistoryFilter, InstanceRecord,
    PendingEvent, Snapshot, StoreError, TypeKey,
};
use uuid::Uuid;

use super::fixture::*;

on_each_store!(
    ping_answers,
    entity_type_create_get_and_not_found,
    entity_type_names_are_unique,
    entity_types_list_in_name_order_after_cursor,
    instance_create_records_version_one,
    instance_with_interval_one_snapshots_every_version,
    instance_external_ids_are_unique_per_type,
    instance_get_find_type_and_not_found,
    instances_list_in_external_id_order_after_cursor,
    create_instance_of_unknown_type_stores_nothing,
    append_assigns_consecutive_versions_and_returns_state,
    append_to_unknown_instance_is_not_found,
    stale_expected_version_conflicts_naming_current,
    recorded_keys_return_the_recorded_events,
    rejected_decision_stores_nothing,
    batches_are_atomic,
    snapshots_at_every_multiple_of_the_interval,
    snapshot_and_tail_edges,
    recorded_at_never_decreases_and_occurred_at_defaults,
    history_filters_and_paging,
    version_at_follows_recorded_at,
    concurrent_appends_lose_no_update,
    erasure_scrubs_the_instance_and_every_later_head_says_erased,
);

// ---------------------------------------------------------------------------------------------
// Entity types

async fn ping_answers(b: Backend) {
    let f = b.open(100).await;
    f.store.ping().await.expect("ping");
}

async fn entity_type_create_get_and_not_found(b: Backend) {
    let f = b.open(100).await;
    let id = Uuid::now_v7();
    let schema = obj(json!({
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0}},
        "required": ["score"]
    }));
    let before = Utc::now() - TimeDelta::seconds(1);
    let created = f
        .store
        .create_entity_type(id, "player", "Players of the game", &schema, None)
        .await
        .unwrap();
    assert_eq!(created.id, id);
    assert_eq!(created.name, "player");
    assert_eq!(created.description, "Players of the game");
    assert_eq!(created.schema, schema);
    assert!(created.created_at >= before && created.created_at <= Utc::now());
    assert!(micros_only(created.created_at));

    let by_id = f.store.get_entity_type(&TypeKey::Id(id)).await.unwrap();
    let by_name = f
        .store
        .get_entity_type(&TypeKey::Name("player".into()))
        .await
        .unwrap();
    assert_eq!(by_id, created);
    assert_eq!(by_name, created);

    let unknown = Uuid::now_v7();
    expect_not_found(
        f.store.get_entity_type(&TypeKey::Id(unknown)).await,
        &format!("entity type {unknown}"),
    );
    expect_not_found(
        f.store
            .get_entity_type(&TypeKey::Name("nobody".into()))
            .await,
        "entity type \"nobody\"",
    );
}

async fn entity_type_names_are_unique(b: Backend) {
    let f = b.open(100).await;
    let first = new_type(f.store.as_ref(), "player").await;
    let again = f
        .store
        .create_entity_type(
            Uuid::now_v7(),
            "player",
            "other",
            &obj(json!({"type": "object"})),
            None,
        )
        .await;
    expect_already_exists(again, "entity type \"player\"");
    let listed = f.store.list_entity_types(None, 10).await.unwrap();
    assert_eq!(listed, vec![first.clone()]);
    assert_eq!(
        f.store
            .get_entity_type(&TypeKey::Name("player".into()))
            .await
            .unwrap(),
        first
    );
}

async fn entity_types_list_in_name_order_after_cursor(b: Backend) {
    let f = b.open(100).await;
    // Byte order ("C" collation): digits < '_' < letters; a locale collation would differ.
    for name in ["zeta", "alpha", "a_b", "ab", "a1", "beta"] {
        new_type(f.store.as_ref(), name).await;
    }
    let names = |v: Vec<EntityTypeRecord>| v.into_iter().map(|t| t.name).collect::<Vec<_>>();
    let s = f.store.as_ref();
    assert_eq!(
        names(s.list_entity_types(None, 100).await.unwrap()),
        ["a1", "a_b", "ab", "alpha", "beta", "zeta"]
    );
    assert_eq!(
        names(s.list_entity_types(None, 2).await.unwrap()),
        ["a1", "a_b"]
    );
    assert_eq!(
        names(s.list_entity_types(Some("a_b"), 2).await.unwrap()),
        ["ab", "alpha"]
    );
    assert_eq!(
        names(s.list_entity_types(Some("alpha"), 10).await.unwrap()),
        ["beta", "zeta"]
    );
    // The cursor need not be a stored name.
    assert_eq!(
        names(s.list_entity_types(Some("b"), 10).await.unwrap()),
        ["beta", "zeta"]
    );
    assert!(
        s.list_entity_types(Some("zeta"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_entity_types(None, 0).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Instances

async fn instance_create_records_version_one(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let mut new = new_instance(t.id, "p-1", json!({"name": "ada", "score": 1}));
    new.metadata = obj(json!({"source": "import", "batch": 7}));
    let (inst, event) = f.store.create_instance(new.clone()).await.unwrap();

    assert_eq!(inst.id, new.id);
    assert_eq!(inst.entity_type_id, t.id);
    assert_eq!(inst.entity_type_name, "player");
    assert_eq!(inst.external_id, "p-1");
    assert_eq!(inst.state, new.initial_state);
    assert_eq!(inst.version, 1);
    assert_eq!(inst.created_at, inst.updated_at);
    assert!(micros_only(inst.created_at));

    assert_eq!(event.event_id, new.event_id);
    assert_eq!(event.instance_id, new.id);
    assert_eq!(event.entity_type_id, t.id);
    assert_eq!(event.event_type, "InstanceCreated");
    assert_eq!(event.version, 1);
    assert_eq!(event.payload, new.initial_state);
    assert_eq!(event.metadata, new.metadata);
    assert_eq!(event.mode, ApplyMode::Replace);
    assert_eq!(event.recorded_at, inst.created_at);
    assert_eq!(event.occurred_at, inst.created_at);

    assert_eq!(f.store.get_instance(new.id).await.unwrap(), inst);
    assert_eq!(
        all_events(f.history.as_ref(), new.id).await,
        vec![event.clone()]
    );
    // No snapshot at version 1 with an interval of 100.
    assert_eq!(
        f.history.snapshot_and_tail(new.id, 1).await.unwrap(),
        (None, vec![event])
    );
}

async fn instance_with_interval_one_snapshots_every_version(b: Backend) {
    let f = b.open(1).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, event) = instance(f.store.as_ref(), t.id, "p-1", json!({"score": 1})).await;
    assert_eq!(
        f.history.snapshot_and_tail(inst.id, 1).await.unwrap(),
        (
            Some(Snapshot {
                version: 1,
                state: obj(json!({"score": 1}))
            }),
            vec![event]
        )
    );
    let (events, _) = appended(
        f.store.as_ref(),
        inst.id,
        vec![ev("Up", json!({"score": 2})), ev("Up", json!({"score": 3}))],
    )
    .await;
    for (v, score) in [(2, 2), (3, 3)] {
        let (snap, tail) = f.history.snapshot_and_tail(inst.id, v).await.unwrap();
        assert_eq!(
            snap,
            Some(Snapshot {
                version: v,
                state: obj(json!({"score": score}))
            })
        );
        assert_eq!(tail, vec![events[(v - 2) as usize].clone()]);
    }
}

async fn instance_external_ids_are_unique_per_type(b: Backend) {
    let f = b.open(100).await;
    let a = new_type(f.store.as_ref(), "a_type").await;
    let other = new_type(f.store.as_ref(), "b_type").await;
    let (first, _) = instance(f.store.as_ref(), a.id, "x", json!({"n": 1})).await;
    let dup = new_instance(a.id, "x", json!({"n": 2}));
    let dup_id = dup.id;
    expect_already_exists(
        f.store.create_instance(dup).await,
        "instance with external_id \"x\" of entity type \"a_type\"",
    );
    expect_not_found(
        f.store.get_instance(dup_id).await,
        &format!("instance {dup_id}"),
    );
    assert_eq!(
        f.store
            .list_instances(&listing(a.id, None, false), 10)
            .await
            .unwrap(),
        vec![first.clone()]
    );
    assert_eq!(
        f.store.find_instance(a.id, "x").await.unwrap().state,
        obj(json!({"n": 1}))
    );
    // The same external id under another type is another instance.
    let (second, _) = instance(f.store.as_ref(), other.id, "x", json!({"n": 3})).await;
    assert_ne!(first.id, second.id);
}

async fn instance_get_find_type_and_not_found(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let other = new_type(f.store.as_ref(), "team").await;
    let (inst, _) = instance(f.store.as_ref(), t.id, "p-1", json!({"a": [1, 2]})).await;

    assert_eq!(f.store.get_instance(inst.id).await.unwrap(), inst);
    assert_eq!(f.store.find_instance(t.id, "p-1").await.unwrap(), inst);
    assert_eq!(f.store.instance_type(inst.id).await.unwrap(), t.id);

    let unknown = Uuid::now_v7();
    expect_not_found(
        f.store.get_instance(unknown).await,
        &format!("instance {unknown}"),
    );
    expect_not_found(
        f.store.instance_type(unknown).await,
        &format!("instance {unknown}"),
    );
    expect_not_found(
        f.store.find_instance(t.id, "p-2").await,
        "instance with external_id \"p-2\"",
    );
    expect_not_found(
        f.store.find_instance(other.id, "p-1").await,
        "instance with external_id \"p-1\"",
    );
}

async fn instances_list_in_external_id_order_after_cursor(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let other = new_type(f.store.as_ref(), "team").await;
    for x in ["b", "é", "B", "a_1", "a-1", "a", "9", "10"] {
        instance(f.store.as_ref(), t.id, x, json!({"x": x})).await;
    }
    instance(f.store.as_ref(), other.id, "a0", json!({})).await;
    let ids = |v: Vec<InstanceRecord>| v.into_iter().map(|i| i.external_id).collect::<Vec<_>>();
    let s = f.store.as_ref();
    // Byte (code point) order, as PostgreSQL with the "C" collation.
    assert_eq!(
        ids(s
            .list_instances(&listing(t.id, None, false), 100)
            .await
            .unwrap()),
        ["10", "9", "B", "a", "a-1", "a_1", "b", "é"]
    );
    assert_eq!(
        ids(s
            .list_instances(&listing(t.id, None, false), 3)
            .await
            .unwrap()),
        ["10", "9", "B"]
    );
    assert_eq!(
        ids(s
            .list_instances(&listing(t.id, Some("B"), false), 3)
            .await
            .unwrap()),
        ["a", "a-1", "a_1"]
    );
    assert_eq!(
        ids(s
            .list_instances(&listing(t.id, Some("a_1"), false), 3)
            .await
            .unwrap()),
        ["b", "é"]
    );
    assert!(
        s.list_instances(&listing(t.id, Some("é"), false), 3)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = s
        .list_instances(&listing(t.id, None, false), 1)
        .await
        .unwrap();
    assert_eq!(listed[0], s.find_instance(t.id, "10").await.unwrap());
    assert!(
        s.list_instances(&listing(Uuid::now_v7(), None, false), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn create_instance_of_unknown_type_stores_nothing(b: Backend) {
    let f = b.open(1).await;
    let unknown = Uuid::now_v7();
    let new = new_instance(unknown, "p-1", json!({}));
    let id = new.id;
    // PostgreSQL reports the foreign key violation as Internal, the embedded store as
    // NotFound("entity type <id>"); the application never gets here (it resolves the type
    // first), so only "fails and stores nothing" is the contract for now.
    assert!(f.store.create_instance(new).await.is_err());
    expect_not_found(f.store.get_instance(id).await, &format!("instance {id}"));
    assert!(all_events(f.history.as_ref(), id).await.is_empty());
    assert_eq!(
        f.history.snapshot_and_tail(id, 1).await.unwrap(),
        (None, vec![])
    );
}

// ---------------------------------------------------------------------------------------------
// Appends

async fn append_assigns_consecutive_versions_and_returns_state(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(
        f.store.as_ref(),
        t.id,
        "p-1",
        json!({"score": 0, "tags": ["a"], "stats": {"hp": 10, "mp": 5}}),
    )
    .await;
    tick().await;

    // JSON round-trips as given: nested objects, arrays, nulls, big integers, floats, unicode.
    let mut first = ev(
        "Scored",
        json!({"score": 5, "stats": {"mp": null}, "note": "héllo ✓ \"q\"", "big": 9007199254740993_u64}),
    );
    first.metadata = obj(json!({"by": "test", "nested": {"x": null, "f": 1.5, "neg": -3}}));
    let second = Ev {
        mode: ApplyMode::Replace,
        ..ev(
            "Reset",
            json!({"score": 1, "pi": 3.25, "list": [1, "two", null, {"k": true}]}),
        )
    };
    let third = Ev {
        mode: ApplyMode::JsonPatch,
        ..ev(
            "Patched",
            json!({"patch": [{"op": "add", "path": "/score", "value": 2}]}),
        )
    };
    let seen = Arc::new(Seen::default());
    let outcome = append_seen(
        f.store.as_ref(),
        inst.id,
        None,
        vec![first.clone(), second.clone(), third.clone()],
        seen.clone(),
    )
    .await
    .unwrap();
    let AppendOutcome::Appended { events, state } = outcome else {
        panic!("expected Appended, got {outcome:?}");
    };
    assert_eq!(seen.calls(), 1);
    assert_eq!(seen.head(), (t.id, 1, inst.state.clone()));
    let expected_state =
        obj(json!({"score": 2, "pi": 3.25, "list": [1, "two", null, {"k": true}]}));
    assert_eq!(state, expected_state);
    assert_eq!(versions(&events), [2, 3, 4]);
    let recorded_at = events[0].recorded_at;
    assert!(recorded_at >= created.recorded_at);
    for (e, input) in events.iter().zip([&first, &second, &third]) {
        assert_eq!(e.event_id, input.id);
        assert_eq!(e.instance_id, inst.id);
        assert_eq!(e.entity_type_id, t.id);
        assert_eq!(e.event_type, input.event_type);
        assert_eq!(e.payload, input.payload);
        assert_eq!(e.metadata, input.metadata);
        assert_eq!(e.mode, input.mode);
        // One batch, one transaction, one recorded_at.
        assert_eq!(e.recorded_at, recorded_at);
        assert_eq!(e.occurred_at, recorded_at);
    }
    assert!(micros_only(recorded_at));

    let head = f.store.get_instance(inst.id).await.unwrap();
    assert_eq!(head.version, 4);
    assert_eq!(head.state, expected_state);
    assert_eq!(head.updated_at, recorded_at);
    assert_eq!(head.created_at, inst.created_at);
    let mut stored = vec![created];
    stored.extend(events.clone());
    assert_eq!(all_events(f.history.as_ref(), inst.id).await, stored);

    // The next append sees the new head.
    let seen = Arc::new(Seen::default());
    let next = append_seen(
        f.store.as_ref(),
        inst.id,
        None,
        vec![ev("Scored", json!({"score": 3}))],
        seen.clone(),
    )
    .await
    .unwrap();
    assert_eq!(seen.head(), (t.id, 4, expected_state));
    let AppendOutcome::Appended { events, .. } = next else {
        panic!("expected Appended");
    };
    assert_eq!(versions(&events), [5]);
}

async fn append_to_unknown_instance_is_not_found(b: Backend) {
    let f = b.open(100).await;
    let unknown = Uuid::now_v7();
    let seen = Arc::new(Seen::default());
    let r = append_seen(
        f.store.as_ref(),
        unknown,
        Some(1),
        vec![keyed("k-1", "X", json!({}))],
        seen.clone(),
    )
    .await;
    expect_not_found(r, &format!("instance {unknown}"));
    assert_eq!(seen.calls(), 0);
}

async fn stale_expected_version_conflicts_naming_current(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, _) = instance(f.store.as_ref(), t.id, "p-1", json!({"n": 0})).await;
    let s = f.store.as_ref();
    let seen = Arc::new(Seen::default());
    append_seen(
        s,
        inst.id,
        Some(1),
        vec![ev("N", json!({"n": 1}))],
        seen.clone(),
    )
    .await
    .unwrap();
    for expected in [1, 5] {
        let r = append_seen(
            s,
            inst.id,
            Some(expected),
            vec![keyed(&format!("c-{expected}"), "N", json!({"n": 9}))],
            seen.clone(),
        )
        .await;
        match r {
            Err(StoreError::Conflict {
                expected: e,
                current,
            }) => {
                assert_eq!((e, current), (expected, 2));
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
    // The decision is not asked for when the version does not match, and nothing is stored.
    assert_eq!(seen.calls(), 1);
    assert_eq!(
        versions(&all_events(f.history.as_ref(), inst.id).await),
        [1, 2]
    );
    assert_eq!(
        s.get_instance(inst.id).await.unwrap().state,
        obj(json!({"n": 1}))
    );
    // The keys of the refused appends were not recorded.
    let r = append(
        s,
        inst.id,
        Some(2),
        vec![keyed("c-1", "N", json!({"n": 3}))],
    )
    .await
    .unwrap();
    assert!(matches!(r, AppendOutcome::Appended { ref events, .. } if events[0].version == 3));
}

async fn recorded_keys_return_the_recorded_events(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (a, _) = instance(f.store.as_ref(), t.id, "a", json!({})).await;
    let (b_inst, _) = instance(f.store.as_ref(), t.id, "b", json!({})).await;
    let s = f.store.as_ref();
    let (first, _) = appended(
        s,
        a.id,
        vec![
            keyed("k1", "Set", json!({"x": 1})),
            ev("Set", json!({"y": 1})),
            keyed("k2", "Set", json!({"x": 2})),
        ],
    )
    .await;
    assert_eq!(versions(&first), [2, 3, 4]);

    // A retry finds its keys before the expected version is checked, without a decision.
    let seen = Arc::new(Seen::default());
    let retry = append_seen(
        s,
        a.id,
        Some(1),
        vec![
            keyed("k1", "Set", json!({"x": 1})),
            ev("Set", json!({"y": 1})),
            keyed("k2", "Set", json!({"x": 2})),
        ],
        seen.clone(),
    )
    .await
    .unwrap();
    match retry {
        AppendOutcome::AlreadyRecorded { keys } => {
            assert_eq!(
                key_triples(&keys),
                keys_of(&[first[0].clone(), first[2].clone()])
            );
        }
        other => panic!("expected AlreadyRecorded, got {other:?}"),
    }
    assert_eq!(seen.calls(), 0);

    // Keys are unique across instances: a key recorded on `a` is found when appending to `b`,
    // and nothing of that batch is stored.
    let (on_b, _) = appended(s, b_inst.id, vec![keyed("kb", "Set", json!({"z": 1}))]).await;
    let clash = append(
        s,
        b_inst.id,
        None,
        vec![
            keyed("k3", "Set", json!({"w": 1})),
            keyed("k2", "Set", json!({"w": 2})),
            keyed("kb", "Set", json!({"w": 3})),
        ],
    )
    .await
    .unwrap();
    let mut expected = vec![first[2].clone(), on_b[0].clone()];
    expected.sort_by_key(|e| (e.instance_id, e.version));
    match clash {
        AppendOutcome::AlreadyRecorded { keys } => {
            assert_eq!(key_triples(&keys), keys_of(&expected))
        }
        other => panic!("expected AlreadyRecorded, got {other:?}"),
    }
    assert_eq!(s.get_instance(b_inst.id).await.unwrap().version, 2);
    // k3 was not recorded by the refused batch.
    let (k3, _) = appended(s, b_inst.id, vec![keyed("k3", "Set", json!({"w": 1}))]).await;
    assert_eq!(versions(&k3), [3]);
    // The instance is looked up (and locked) first.
    let unknown = Uuid::now_v7();
    expect_not_found(
        append(s, unknown, None, vec![keyed("k1", "Set", json!({}))]).await,
        &format!("instance {unknown}"),
    );
}

async fn rejected_decision_stores_nothing(b: Backend) {
    let f = b.open(2).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(f.store.as_ref(), t.id, "p-1", json!({"n": 0})).await;
    let s = f.store.as_ref();
    let rejection = DomainError::invalid("payload", "not today");
    let r = s
        .append(
            AppendRequest {
                instance_id: inst.id,
                expected_version: Some(1),
                client_event_ids: vec!["r1".into()],
                recorded_by: String::new(),
            },
            Box::new(|_head: &Head| Err(DomainError::invalid("payload", "not today"))),
        )
        .await;
    match r {
        Err(StoreError::Rejected(e)) => assert_eq!(e, rejection),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A batch whose second event does not apply (a JSON patch on a missing path).
    let bad = Ev {
        mode: ApplyMode::JsonPatch,
        ..ev(
            "P",
            json!({"patch": [{"op": "replace", "path": "/missing/deep", "value": 1}]}),
        )
    };
    let r = append(
        s,
        inst.id,
        None,
        vec![keyed("r2", "N", json!({"n": 1})), bad],
    )
    .await;
    assert!(
        matches!(r, Err(StoreError::Rejected(DomainError::InvalidPatch(_)))),
        "{r:?}"
    );
    // An empty decision is a bug of the caller.
    let r = s
        .append(
            AppendRequest {
                instance_id: inst.id,
                expected_version: None,
                client_event_ids: vec![],
                recorded_by: String::new(),
            },
            Box::new(|_head: &Head| {
                Ok(Decision {
                    archived: None,
                    events: vec![],
                    state: State::new(),
                })
            }),
        )
        .await;
    assert!(matches!(r, Err(StoreError::Internal(_))), "{r:?}");

    assert_eq!(all_events(f.history.as_ref(), inst.id).await, vec![created]);
    assert_eq!(s.get_instance(inst.id).await.unwrap(), inst);
    assert_eq!(
        f.history.snapshot_and_tail(inst.id, 2).await.unwrap().0,
        None
    );
    // The keys of rejected appends are free.
    let (events, _) = appended(
        s,
        inst.id,
        vec![
            keyed("r1", "N", json!({"n": 1})),
            keyed("r2", "N", json!({"n": 2})),
        ],
    )
    .await;
    assert_eq!(versions(&events), [2, 3]);
}

async fn batches_are_atomic(b: Backend) {
    let f = b.open(2).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(f.store.as_ref(), t.id, "p-1", json!({"n": 0})).await;
    let s = f.store.as_ref();
    // A batch that fails while its events are being written (its own key twice: the second
    // insert of the key fails) leaves no trace, not even of the events before the failure.
    let r = append(
        s,
        inst.id,
        None,
        vec![
            keyed("d", "N", json!({"n": 1})),
            keyed("x", "N", json!({"n": 2})),
            keyed("d", "N", json!({"n": 3})),
        ],
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        all_events(f.history.as_ref(), inst.id).await,
        vec![created.clone()]
    );
    assert_eq!(s.get_instance(inst.id).await.unwrap(), inst);
    assert_eq!(
        f.history.snapshot_and_tail(inst.id, 3).await.unwrap().0,
        None
    );

    // A good batch stores every event.
    let (events, state) = appended(
        s,
        inst.id,
        (1..=5)
            .map(|n| keyed(&format!("b{n}"), "N", json!({ "n": n })))
            .collect(),
    )
    .await;
    assert_eq!(versions(&events), [2, 3, 4, 5, 6]);
    assert_eq!(state, obj(json!({"n": 5})));
    assert_eq!(
        versions(&all_events(f.history.as_ref(), inst.id).await),
        [1, 2, 3, 4, 5, 6]
    );
    // "x" was never recorded.
    let (x, _) = appended(s, inst.id, vec![keyed("x", "N", json!({"n": 6}))]).await;
    assert_eq!(versions(&x), [7]);
}

async fn snapshots_at_every_multiple_of_the_interval(b: Backend) {
    let f = b.open(3).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, _) = instance(f.store.as_ref(), t.id, "p-1", json!({"n": 1})).await;
    let s = f.store.as_ref();
    let mut states = vec![State::new(), obj(json!({"n": 1}))];
    for n in 2..=5 {
        let (_, state) = appended(
            s,
            inst.id,
            vec![ev("N", json!({ "n": n, format!("k{n}"): n }))],
        )
        .await;
        states.push(state);
    }
    // A batch crossing two multiples (6 and 9), then a single event.
    let batch: Vec<Ev> = (6..=10)
        .map(|n| ev("N", json!({ "n": n, format!("k{n}"): n })))
        .collect();
    let mut state = states[5].clone();
    for e in &batch {
        state = apply_event(&state, &e.payload, e.mode).unwrap();
        states.push(state.clone());
    }
    appended(s, inst.id, batch).await;
    let (_, last) = appended(s, inst.id, vec![ev("N", json!({"n": 11}))]).await;
    states.push(last);
    assert_eq!(states.len(), 12);

    for v in 1..=11_i64 {
        let (snap, tail) = f.history.snapshot_and_tail(inst.id, v).await.unwrap();
        let snap_version = (v / 3) * 3;
        if snap_version == 0 {
            assert_eq!(snap, None, "no snapshot before version 3 (at {v})");
            assert_eq!(versions(&tail), (1..=v).collect::<Vec<_>>());
        } else {
            let snap = snap.unwrap_or_else(|| panic!("a snapshot at or before {v}"));
            assert_eq!(
                snap.version, snap_version,
                "latest snapshot at or before {v}"
            );
            assert_eq!(snap.state, states[snap_version as usize]);
            // The tail starts at the snapshot's own version.
            assert_eq!(versions(&tail), (snap_version..=v).collect::<Vec<_>>());
        }
        // Folding the snapshot and the events after it gives the state at v.
        let (base, from) = match f.history.snapshot_and_tail(inst.id, v).await.unwrap().0 {
            Some(s) => (s.state, s.version),
            None => (State::new(), 0),
        };
        let folded = tail
            .iter()
            .filter(|e| e.version > from)
            .fold(base, |st, e| apply_event(&st, &e.payload, e.mode).unwrap());
        assert_eq!(folded, states[v as usize], "state at {v}");
    }
}

async fn snapshot_and_tail_edges(b: Backend) {
    let f = b.open(4).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, _) = instance(f.store.as_ref(), t.id, "p-1", json!({"n": 1})).await;
    let s = f.store.as_ref();
    for n in 2..=10 {
        appended(s, inst.id, vec![ev("N", json!({ "n": n }))]).await;
    }
    let h = f.history.as_ref();
    let id = inst.id;
    let at = |v: i64| async move {
        let (snap, tail) = h.snapshot_and_tail(id, v).await.unwrap();
        (snap.map(|s| (s.version, s.state)), versions(&tail))
    };
    assert_eq!(at(3).await, (None, vec![1, 2, 3]));
    // Exactly on a snapshot: the snapshot and that one event.
    assert_eq!(at(4).await, (Some((4, obj(json!({"n": 4})))), vec![4]));
    assert_eq!(at(5).await, (Some((4, obj(json!({"n": 4})))), vec![4, 5]));
    assert_eq!(at(8).await, (Some((8, obj(json!({"n": 8})))), vec![8]));
    // Past the latest version: the tail ends at the latest event.
    assert_eq!(
        at(15).await,
        (Some((8, obj(json!({"n": 8})))), vec![8, 9, 10])
    );
    assert_eq!(at(0).await, (None, vec![]));
    assert_eq!(
        h.snapshot_and_tail(Uuid::now_v7(), 4).await.unwrap(),
        (None, vec![])
    );
}

async fn recorded_at_never_decreases_and_occurred_at_defaults(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(f.store.as_ref(), t.id, "p-1", json!({})).await;
    let s = f.store.as_ref();
    let business =
        Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap() + TimeDelta::nanoseconds(123_456_789);
    // Before PostgreSQL's epoch (2000-01-01), sub-microsecond digits are truncated toward it.
    let old = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap() - TimeDelta::nanoseconds(1);
    let mut returned = vec![created.clone()];
    for i in 0..6 {
        let mut e = ev("N", json!({ "i": i }));
        e.occurred_at = match i {
            2 => Some(business),
            4 => Some(old),
            _ => None,
        };
        let (events, _) = appended(s, inst.id, vec![e]).await;
        returned.extend(events);
        if i % 2 == 0 {
            tick().await;
        }
    }
    let stored = all_events(f.history.as_ref(), inst.id).await;
    assert_eq!(versions(&stored), (1..=7).collect::<Vec<_>>());
    for pair in stored.windows(2) {
        assert!(pair[1].recorded_at >= pair[0].recorded_at, "{pair:?}");
    }
    for (e, r) in stored.iter().zip(&returned) {
        assert!(micros_only(e.recorded_at));
        assert_eq!(e.recorded_at, r.recorded_at);
        match e.version {
            4 => assert_eq!(
                e.occurred_at,
                Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap()
                    + TimeDelta::microseconds(123_456)
            ),
            6 => assert_eq!(
                e.occurred_at,
                Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap()
            ),
            _ => assert_eq!(e.occurred_at, e.recorded_at),
        }
    }
    assert!(stored.last().unwrap().recorded_at > created.recorded_at);
    assert_eq!(
        s.get_instance(inst.id).await.unwrap().updated_at,
        stored.last().unwrap().recorded_at
    );
}

// ---------------------------------------------------------------------------------------------
// History reads

async fn history_filters_and_paging(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(f.store.as_ref(), t.id, "p-1", json!({})).await;
    let s = f.store.as_ref();
    let mut recorded = vec![created.recorded_at, created.recorded_at];
    for (i, ty) in ["A", "B", "A", "C", "A"].into_iter().enumerate() {
        tick().await;
        let (events, _) = appended(s, inst.id, vec![ev(ty, json!({ "i": i }))]).await;
        recorded.push(events[0].recorded_at);
    }
    // recorded[v] is the recorded_at of version v; all distinct.
    for pair in recorded[1..].windows(2) {
        assert!(pair[1] > pair[0]);
    }
    let h = f.history.as_ref();
    let id = inst.id;
    let read = |filter: HistoryFilter, limit: usize| async move {
        versions(&h.events(id, &filter, limit).await.unwrap())
    };
    let all = HistoryFilter::default();
    assert_eq!(read(all.clone(), 100).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(read(all.clone(), 2).await, [1, 2]);
    assert!(read(all.clone(), 0).await.is_empty());
    let range = HistoryFilter {
        from_version: Some(2),
        to_version: Some(4),
        ..all.clone()
    };
    assert_eq!(read(range, 100).await, [2, 3, 4]);
    let time = HistoryFilter {
        start_time: Some(recorded[3]),
        end_time: Some(recorded[5]),
        ..all.clone()
    };
    assert_eq!(read(time, 100).await, [3, 4, 5]);
    // Sub-microsecond digits of a bound are truncated, as PostgreSQL does.
    let nanos = HistoryFilter {
        start_time: Some(recorded[3] + TimeDelta::nanoseconds(999)),
        end_time: Some(recorded[5] - TimeDelta::nanoseconds(1)),
        ..all.clone()
    };
    assert_eq!(read(nanos, 100).await, [3, 4]);
    let before = HistoryFilter {
        end_time: Some(recorded[1] - TimeDelta::microseconds(1)),
        ..all.clone()
    };
    assert!(read(before, 100).await.is_empty());
    let types = HistoryFilter {
        event_types: vec!["A".into(), "C".into()],
        ..all.clone()
    };
    assert_eq!(read(types.clone(), 100).await, [2, 4, 5, 6]);
    let created_only = HistoryFilter {
        event_types: vec!["InstanceCreated".into()],
        ..all.clone()
    };
    assert_eq!(read(created_only, 100).await, [1]);
    let none = HistoryFilter {
        event_types: vec!["Nope".into()],
        ..all.clone()
    };
    assert!(read(none, 100).await.is_empty());

    let desc = HistoryFilter {
        descending: true,
        ..all.clone()
    };
    assert_eq!(read(desc.clone(), 100).await, [6, 5, 4, 3, 2, 1]);
    assert_eq!(read(desc.clone(), 2).await, [6, 5]);
    let desc_after = HistoryFilter {
        after_version: Some(5),
        ..desc.clone()
    };
    assert_eq!(read(desc_after, 100).await, [4, 3, 2, 1]);
    let asc_after = HistoryFilter {
        after_version: Some(2),
        ..all.clone()
    };
    assert_eq!(read(asc_after, 2).await, [3, 4]);
    let combined = HistoryFilter {
        from_version: Some(3),
        event_types: vec!["A".into()],
        descending: true,
        after_version: Some(6),
        ..all.clone()
    };
    assert_eq!(read(combined, 100).await, [4]);

    // Paging through everything, both ways, with after_version cursors.
    for descending in [false, true] {
        let mut seen: Vec<i64> = Vec::new();
        let mut after = None;
        loop {
            let page = read(
                HistoryFilter {
                    descending,
                    after_version: after,
                    ..all.clone()
                },
                4,
            )
            .await;
            seen.extend(&page);
            match page.last() {
                Some(&last) if page.len() == 4 => after = Some(last),
                _ => break,
            }
        }
        let mut expected = vec![1, 2, 3, 4, 5, 6];
        if descending {
            expected.reverse();
        }
        assert_eq!(seen, expected);
    }
    // Full records, as stored.
    let stored = h.events(inst.id, &all, 100).await.unwrap();
    assert_eq!(stored[0], created);
    // Who wrote each event comes back as written, created and appended alike.
    assert_eq!(stored.len(), 6);
    for e in &stored {
        assert_eq!(
            e.recorded_by,
            super::fixture::WRITER,
            "version {}",
            e.version
        );
    }
    assert!(
        h.events(Uuid::now_v7(), &all, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn version_at_follows_recorded_at(b: Backend) {
    let f = b.open(100).await;
    let t = new_type(f.store.as_ref(), "player").await;
    let (inst, created) = instance(f.store.as_ref(), t.id, "p-1", json!({})).await;
    let s = f.store.as_ref();
    tick().await;
    let (batch, _) = appended(
        s,
        inst.id,
        vec![ev("N", json!({"a": 1})), ev("N", json!({"a": 2}))],
    )
    .await;
    tick().await;
    let (last, _) = appended(s, inst.id, vec![ev("N", json!({"a": 3}))]).await;
    let (t1, t2, t4) = (
        created.recorded_at,
        batch[0].recorded_at,
        last[0].recorded_at,
    );
    assert!(t1 < t2 && t2 < t4);
    let h = f.history.as_ref();
    let id = inst.id;
    let at = |when: DateTime<Utc>| async move { h.version_at(id, when).await.unwrap() };
    let us = TimeDelta::microseconds(1);
    assert_eq!(at(t1 - us).await, None);
    assert_eq!(at(t1 - TimeDelta::days(365)).await, None);
    assert_eq!(at(t1).await, Some(1));
    assert_eq!(at(t2 - us).await, Some(1));
    // Two versions recorded at the same moment: the later one.
    assert_eq!(at(t2).await, Some(3));
    assert_eq!(at(t2 + TimeDelta::nanoseconds(999)).await, Some(3));
    assert_eq!(at(t2 - TimeDelta::nanoseconds(1)).await, Some(1));
    assert_eq!(at(t4 - us).await, Some(3));
    assert_eq!(at(t4).await, Some(4));
    assert_eq!(at(t4 + TimeDelta::hours(1)).await, Some(4));
    assert_eq!(h.version_at(Uuid::now_v7(), t4).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

async fn concurrent_appends_lose_no_update(b: Backend) {
    const TASKS: i64 = 16;
    const EACH: i64 = 50;
    let f = b.open(25).await;
    let t = new_type(f.store.as_ref(), "counter").await;
    let (inst, _) = instance(f.store.as_ref(), t.id, "c-1", json!({"count": 0})).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                // Read-modify-write under the lock: a lost update would repeat a count.
                let id = format!("t{task}-{n}");
                let r = store
                    .append(
                        AppendRequest {
                            instance_id: inst.id,
                            expected_version: None,
                            client_event_ids: vec![id.clone()],
                            recorded_by: String::new(),
                        },
                        Box::new(move |head: &Head| {
                            let count = head.state["count"].as_i64().unwrap();
                            let payload = obj(json!({ "count": count + 1, "by": task }));
                            let state = apply_event(&head.state, &payload, ApplyMode::MergePatch)?;
                            let version = head.version + 1;
                            Ok(Decision {
                                archived: None,
                                events: vec![PendingEvent {
                                    event_id: id.clone(),
                                    event_type: "Inc".into(),
                                    payload,
                                    metadata: State::new(),
                                    mode: ApplyMode::MergePatch,
                                    occurred_at: None,
                                    snapshot: (version % head.snapshot_interval == 0)
                                        .then(|| state.clone()),
                                    content_hash: vec![],
                                }],
                                state,
                            })
                        }),
                    )
                    .await
                    .expect("append without expected version never fails");
                assert!(matches!(r, AppendOutcome::Appended { .. }));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "{b:?}: {} appends from {TASKS} tasks in {:?}",
        TASKS * EACH,
        started.elapsed()
    );
    let head = f.store.get_instance(inst.id).await.unwrap();
    assert_eq!(head.version, TASKS * EACH + 1);
    assert_eq!(head.state["count"], json!(TASKS * EACH));
    let events = all_events(f.history.as_ref(), inst.id).await;
    assert_eq!(
        versions(&events),
        (1..=TASKS * EACH + 1).collect::<Vec<_>>()
    );
    for e in &events[1..] {
        assert_eq!(e.payload["count"], json!(e.version - 1));
    }
    for pair in events.windows(2) {
        assert!(pair[1].recorded_at >= pair[0].recorded_at);
    }
    let (snap, tail) = f
        .history
        .snapshot_and_tail(inst.id, TASKS * EACH + 1)
        .await
        .unwrap();
    let snap = snap.unwrap();
    assert_eq!(snap.version, TASKS * EACH);
    assert_eq!(snap.state["count"], json!(TASKS * EACH - 1));
    assert_eq!(versions(&tail), [TASKS * EACH, TASKS * EACH + 1]);
}

/// The decision of an erasure as the application makes it: `InstanceErased` with an empty state,
/// refused on a head already erased.
fn erase_decision(reason: &str) -> temporal_state_server::ports::Decide {
    let reason = reason.to_string();
    Box::new(move |head: &Head| {
        if head.erased {
            return Err(DomainError::NotNow("erased".into()));
        }
        let version = head.version + 1;
        Ok(Decision {
            events: vec![PendingEvent {
                event_id: Uuid::now_v7().to_string(),
                event_type: "InstanceErased".into(),
                payload: State::new(),
                metadata: obj(json!({ "reason": reason })),
                mode: ApplyMode::Replace,
                occurred_at: None,
                snapshot: (version % head.snapshot_interval == 0).then(State::new),
                content_hash: vec![9],
            }],
            state: State::new(),
            archived: Some(false),
        })
    })
}

async fn erasure_scrubs_the_instance_and_every_later_head_says_erased(b: Backend) {
    let f = b.open(3).await;
    let s = f.store.as_ref();
    let t = new_type(s, "player").await;
    let (inst, _) = instance(s, t.id, "secret@example.org", json!({"secret": 0})).await;
    let (other, _) = instance(s, t.id, "bob", json!({"n": 1})).await;
    for n in 1..=6 {
        appended(s, inst.id, vec![ev("N", json!({ "secret": n }))]).await;
    }
    appended(s, other.id, vec![ev("N", json!({"n": 2}))]).await;
    let request = || AppendRequest {
        instance_id: inst.id,
        expected_version: None,
        client_event_ids: Vec::new(),
        recorded_by: WRITER.into(),
    };
    let erased = match s.erase_instance(request(), erase_decision("asked")).await {
        Ok(AppendOutcome::Appended { events, state }) => {
            assert_eq!(state, State::new());
            events
        }
        other => panic!("expected Appended, got {other:?}"),
    };
    assert_eq!(versions(&erased), [8]);

    let record = s.get_instance(inst.id).await.unwrap();
    assert!(record.erased);
    assert_eq!(
        (record.external_id.as_str(), record.version, &record.state),
        ("", 8, &State::new())
    );
    expect_not_found(
        s.find_instance(t.id, "secret@example.org").await,
        "instance with external_id \"secret@example.org\"",
    );
    let listed = s
        .list_instances(&listing(t.id, None, true), 10)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), [other.id]);
    // The facts stay, the payloads and metadata do not (but the erasure's own reason).
    let history = f
        .history
        .events(inst.id, &HistoryFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(versions(&history), (1..=8).collect::<Vec<_>>());
    for e in &history[..7] {
        assert_eq!((&e.payload, &e.metadata), (&State::new(), &State::new()));
    }
    assert_eq!(history[7].metadata, obj(json!({"reason": "asked"})));
    // No state to travel to: no tail.
    let (_, tail) = f.history.snapshot_and_tail(inst.id, 5).await.unwrap();
    assert!(tail.is_empty(), "{tail:?}");

    // Every later head says erased, so the decision can refuse; a second erasure is refused.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let saw = seen.clone();
    let later = s
        .append(
            request(),
            Box::new(move |head: &Head| {
                *saw.lock().unwrap() = Some(head.erased);
                Err(DomainError::NotNow("erased".into()))
            }),
        )
        .await;
    assert!(matches!(later, Err(StoreError::Rejected(_))), "{later:?}");
    assert_eq!(*seen.lock().unwrap(), Some(true));
    assert!(matches!(
        s.erase_instance(request(), erase_decision("again")).await,
        Err(StoreError::Rejected(_))
    ));

    // The other instance is untouched, and the external id is free again.
    let kept = s.get_instance(other.id).await.unwrap();
    assert_eq!((kept.version, kept.state), (2, obj(json!({"n": 2}))));
    assert!(!kept.erased);
    instance(s, t.id, "secret@example.org", json!({})).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: the heads the store keeps in memory

/// A creation leaves the instance's head in the store's memory, so its first append needs no
/// read; and that head is never trusted over the database: another replica (a second store on
/// the same database) appending first makes the cached head stale, and the next append on the
/// first store is decided again on the stored one, losing nothing.
#[tokio::test]
async fn postgres_caches_a_created_head_and_never_trusts_it_over_the_store() {
    let db = crate::common::TestDb::create().await;
    let first = pg_store(&db.url, 4, 100, std::time::Duration::from_secs(5)).await;
    let second = pg_store(&db.url, 4, 100, std::time::Duration::from_secs(5)).await;
    let t = new_type(first.as_ref(), "counter").await;
    assert_eq!(first.head_cache_bytes(), 0);
    let (inst, _) = instance(
        first.as_ref(),
        t.id,
        "c-1",
        json!({"count": 0, "by": "none"}),
    )
    .await;
    assert!(
        first.head_cache_bytes() > 0,
        "the created head is kept for the first append"
    );

    // The other replica writes version 2; the first store's cached head still says version 1.
    appended(
        second.as_ref(),
        inst.id,
        vec![ev("Inc", json!({"count": 1, "by": "second"}))],
    )
    .await;
    let seen = Arc::new(Seen::default());
    let outcome = append_seen(
        first.as_ref(),
        inst.id,
        None,
        vec![ev("Inc", json!({"by": "first"}))],
        seen.clone(),
    )
    .await
    .unwrap();
    let AppendOutcome::Appended { events, state } = outcome else {
        panic!("expected Appended, got {outcome:?}");
    };
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [3]);
    assert_eq!(state, obj(json!({"count": 1, "by": "first"})));
    // Decided twice: first on the head cached at the creation (version 1: no read before it),
    // which the store refused, then on the stored one.
    assert_eq!(
        seen.calls(),
        2,
        "decided on the cached head, then on the stored one"
    );
    assert_eq!(seen.head().1, 2, "the last decision saw the stored head");
    assert_eq!(
        versions(&all_events(first.as_ref(), inst.id).await),
        [1, 2, 3]
    );
}
