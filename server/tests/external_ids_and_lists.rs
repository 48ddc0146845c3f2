//! Issue 18, items 4 to 6, against a real server on both stores: writes by external id (with
//! `create_if_missing`, atomic and race-safe), time travel on business time (GetStateAtTime's
//! axis, shown with a late-arriving correction), and ListInstances with filters, orders and the
//! light view.

mod common;

use std::sync::Arc;

use common::*;
use prost_types::Timestamp;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use tonic::Code;

for_each_backend!(
    sixteen_racing_creators_make_one_instance_at_version_17: 4,
    create_if_missing_is_one_atomic_step_and_checks_its_input,
    writes_by_external_id_without_create_need_the_instance,
    a_late_correction_changes_the_occurred_at_answer_not_the_recorded_at_one,
    list_instances_filters_orders_and_leaves_the_state_out,
    bad_list_and_time_requests_are_invalid_argument,
);

fn counter_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0},
            "name": {"type": "string"}
        },
        "required": ["n"]
    })
}

fn by_external(
    entity_type: &str,
    external_id: &str,
    event_type: &str,
    payload: Value,
    initial_state: Option<Value>,
) -> pb::ApplyEventRequest {
    pb::ApplyEventRequest {
        entity_type: entity_type.into(),
        external_id: external_id.into(),
        event_type: event_type.into(),
        payload: Some(st(payload)),
        create_if_missing: initial_state.is_some(),
        initial_state: initial_state.map(st),
        ..Default::default()
    }
}

async fn current(
    c: &mut Clients,
    entity_type: &str,
    external_id: &str,
) -> Result<pb::Instance, tonic::Status> {
    c.instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: entity_type.into(),
            external_id: external_id.into(),
        })
        .await
        .map(|r| r.into_inner().instance.unwrap())
}

async fn sixteen_racing_creators_make_one_instance_at_version_17(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "5"]).await;
    let mut c = server.clients().await;
    c.create_type("counter", counter_schema()).await;

    let start = Arc::new(tokio::sync::Barrier::new(16));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let mut c = c.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                c.events
                    .apply_event(by_external(
                        "counter",
                        "hot-1",
                        "Touched",
                        json!({ format!("w{i:02}"): i }),
                        Some(json!({"n": 0})),
                    ))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut answered_positions = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for w in writers {
        let answer = w.await.unwrap().expect("every racing creator succeeds");
        let event = answer.event.unwrap();
        ids.insert(event.instance_id.clone());
        versions.push(event.version);
        answered_positions.push(event.position);
    }
    assert_eq!(ids.len(), 1, "one instance for all 16 creators: {ids:?}");
    versions.sort();
    assert_eq!(
        versions,
        (2..=17).collect::<Vec<_>>(),
        "each event applied once"
    );

    let instance = current(&mut c, "counter", "hot-1").await.unwrap();
    assert_eq!(instance.version, 17);
    let state = js(&instance.state);
    assert_eq!(state["n"], json!(0));
    for i in 0..16 {
        assert_eq!(state[format!("w{i:02}")], json!(i), "{state}");
    }
    // Stored: one instance, 17 events, one of them the creation.
    assert_eq!(store.count("instances").await, 1);
    assert_eq!(store.count("events").await, 17);
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: instance.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=17).collect::<Vec<_>>()
    );
    assert_eq!(
        history
            .iter()
            .filter(|e| e.event_type == "InstanceCreated")
            .count(),
        1
    );
    // Created and appended together, the events still take their places in the global log:
    // positive, increasing with the versions, each answered position the stored one.
    let positions: Vec<i64> = history.iter().map(|e| e.position).collect();
    assert!(positions[0] > 0, "{positions:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let mut answered = answered_positions;
    answered.sort();
    assert_eq!(answered, positions[1..], "what the writers were told");
}

async fn create_if_missing_is_one_atomic_step_and_checks_its_input(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("counter", counter_schema()).await;

    // The event breaks the schema: nothing is created either.
    let refused = c
        .events
        .apply_event(by_external(
            "counter",
            "a",
            "Broken",
            json!({"n": -1}),
            Some(json!({"n": 0})),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        current(&mut c, "counter", "a").await.unwrap_err().code(),
        Code::NotFound
    );
    // So does an initial state that breaks it.
    let refused = c
        .events
        .apply_event(by_external(
            "counter",
            "a",
            "Set",
            json!({"n": 1}),
            Some(json!({})),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(store.count("instances").await, 0);
    assert_eq!(store.count("events").await, 0);

    // A batch creates and applies all, with the created instance counted at version 1.
    let batch = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            entity_type: "counter".into(),
            external_id: "a".into(),
            create_if_missing: true,
            initial_state: Some(st(json!({"n": 0, "name": "first"}))),
            expected_version: Some(1),
            events: (1..=3)
                .map(|n| pb::EventInput {
                    event_type: "Inc".into(),
                    payload: Some(st(json!({"n": n}))),
                    event_id: format!("inc-{n}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(js(&batch.state), json!({"n": 3, "name": "first"}));
    let id = batch.events[0].instance_id.clone();

    // The same batch again (a retry): the events recorded first, nothing new, no second instance.
    let retry = c
        .events
        .apply_events(pb::ApplyEventsRequest {
            entity_type: "counter".into(),
            external_id: "a".into(),
            create_if_missing: true,
            initial_state: Some(st(json!({"n": 0, "name": "first"}))),
            events: (1..=3)
                .map(|n| pb::EventInput {
                    event_type: "Inc".into(),
                    payload: Some(st(json!({"n": n}))),
                    event_id: format!("inc-{n}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.events, batch.events);
    assert_eq!(store.count("instances").await, 1);
    assert_eq!(store.count("events").await, 4);

    // An existing instance: create_if_missing applies to it and its initial state is ignored.
    let next = c
        .events
        .apply_event(by_external(
            "counter",
            "a",
            "Inc",
            json!({"n": 4}),
            Some(json!({"n": 99})),
        ))
        .await
        .unwrap()
        .into_inner();
    let event = next.event.unwrap();
    assert_eq!(
        (event.instance_id.as_str(), event.version),
        (id.as_str(), 5)
    );
    assert_eq!(js(&next.state), json!({"n": 4, "name": "first"}));

    // An event id recorded on another instance: refused, and the new instance is not created.
    let clash = c
        .events
        .apply_event(pb::ApplyEventRequest {
            event_id: "inc-1".into(),
            ..by_external(
                "counter",
                "b",
                "Inc",
                json!({"n": 7}),
                Some(json!({"n": 0})),
            )
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
    assert_eq!(
        current(&mut c, "counter", "b").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(store.count("instances").await, 1);

    // A wrong expected version on a creation stores nothing.
    let conflict = c
        .events
        .apply_event(pb::ApplyEventRequest {
            expected_version: Some(3),
            ..by_external(
                "counter",
                "c",
                "Inc",
                json!({"n": 1}),
                Some(json!({"n": 0})),
            )
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::Aborted, "{conflict:?}");
    assert_eq!(store.count("instances").await, 1);
}

async fn writes_by_external_id_without_create_need_the_instance(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("counter", counter_schema()).await;
    let made = c.create_instance("counter", "x", json!({"n": 1})).await;

    let applied = c
        .events
        .apply_event(by_external("counter", "x", "Inc", json!({"n": 2}), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.event.unwrap().instance_id, made.id);
    let missing = c
        .events
        .apply_event(by_external(
            "counter",
            "nobody",
            "Inc",
            json!({"n": 2}),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let bad = [
        // Both ways of naming the target.
        pb::ApplyEventRequest {
            instance_id: made.id.clone(),
            ..by_external("counter", "x", "Inc", json!({"n": 3}), None)
        },
        // An external id without its type.
        pb::ApplyEventRequest {
            entity_type: String::new(),
            ..by_external("counter", "x", "Inc", json!({"n": 3}), None)
        },
        // create_if_missing by instance id.
        pb::ApplyEventRequest {
            instance_id: made.id.clone(),
            create_if_missing: true,
            event_type: "Inc".into(),
            payload: Some(st(json!({"n": 3}))),
            ..Default::default()
        },
        // An initial state without create_if_missing.
        pb::ApplyEventRequest {
            create_if_missing: false,
            ..by_external(
                "counter",
                "x",
                "Inc",
                json!({"n": 3}),
                Some(json!({"n": 0})),
            )
        },
        // An external id no instance can have.
        by_external(
            "counter",
            "bad\u{1}id",
            "Inc",
            json!({"n": 3}),
            Some(json!({"n": 0})),
        ),
    ];
    for request in bad {
        let status = c.events.apply_event(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    let unknown_type = c
        .events
        .apply_event(by_external(
            "nope",
            "x",
            "Inc",
            json!({"n": 3}),
            Some(json!({"n": 0})),
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown_type.code(), Code::NotFound);
    assert_eq!(current(&mut c, "counter", "x").await.unwrap().version, 2);
}

fn ts(t: &Option<Timestamp>) -> chrono::DateTime<chrono::Utc> {
    let t = t.unwrap();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

fn pts(t: chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

async fn at(
    c: &mut Clients,
    id: &str,
    t: chrono::DateTime<chrono::Utc>,
    axis: pb::TimeAxis,
    known_at: Option<chrono::DateTime<chrono::Utc>>,
) -> pb::GetStateAtTimeResponse {
    c.queries
        .get_state_at_time(pb::GetStateAtTimeRequest {
            instance_id: id.into(),
            timestamp: pts(t),
            axis: axis as i32,
            known_at: known_at.and_then(pts),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn a_late_correction_changes_the_occurred_at_answer_not_the_recorded_at_one(
    backend: Backend,
) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "2"]).await;
    let mut c = server.clients().await;
    c.create_type("price", json!({"type": "object"})).await;
    let p = c
        .create_instance("price", "sku-1", json!({"price": 0}))
        .await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(30));

    pause().await;
    let v2 = c
        .apply(&p.id, "PriceSet", json!({"price": 10}))
        .await
        .unwrap();
    let r2 = ts(&v2.event.unwrap().recorded_at);
    pause().await;
    let v3 = c
        .apply(&p.id, "PriceSet", json!({"price": 20}))
        .await
        .unwrap();
    let r3 = ts(&v3.event.unwrap().recorded_at);
    // Business time T, between the two changes.
    let micros = |t: chrono::DateTime<chrono::Utc>| {
        chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
    };
    let mid = micros(r2 + (r3 - r2) / 2);
    let t = micros(mid + (r3 - mid) / 2);

    let before_recorded = at(&mut c, &p.id, t, pb::TimeAxis::RecordedAt, None).await;
    let before_occurred = at(&mut c, &p.id, t, pb::TimeAxis::OccurredAt, None).await;
    assert_eq!(js(&before_recorded.state), json!({"price": 10}));
    assert_eq!(js(&before_occurred.state), json!({"price": 10}));

    // Found later: the price was really 15 from `mid` on. Recorded now, occurred at `mid`.
    pause().await;
    let correction = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: p.id.clone(),
            event_type: "PriceCorrected".into(),
            payload: Some(st(json!({"price": 15}))),
            occurred_at: pts(mid),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let v4 = correction.event.unwrap();
    let r4 = ts(&v4.recorded_at);
    // The current state follows versions: the correction was applied last.
    assert_eq!(js(&correction.state), json!({"price": 15}));

    // What the engine knew at T has not changed.
    let recorded = at(&mut c, &p.id, t, pb::TimeAxis::RecordedAt, None).await;
    assert_eq!(recorded, before_recorded);
    let unspecified = at(&mut c, &p.id, t, pb::TimeAxis::Unspecified, None).await;
    assert_eq!(unspecified, before_recorded);
    // What was true at T, as known now, has.
    let occurred = at(&mut c, &p.id, t, pb::TimeAxis::OccurredAt, None).await;
    assert_eq!(js(&occurred.state), json!({"price": 15}));
    assert_eq!(occurred.version, 4);
    assert_eq!(ts(&occurred.occurred_at), mid);
    assert_eq!(ts(&occurred.recorded_at), r4);
    // In business time the change at r3 comes after the correction: it still wins after r3.
    let later = at(&mut c, &p.id, r3, pb::TimeAxis::OccurredAt, None).await;
    assert_eq!(js(&later.state), json!({"price": 20}));
    assert_eq!(later.version, 3);
    // Both axes: true at T as known at r3 (before the correction), and as known at r4.
    let known_then = at(&mut c, &p.id, t, pb::TimeAxis::Both, Some(r3)).await;
    assert_eq!(js(&known_then.state), json!({"price": 10}));
    assert_eq!(known_then.version, 2);
    let known_now = at(&mut c, &p.id, t, pb::TimeAxis::Both, Some(r4)).await;
    assert_eq!(js(&known_now.state), json!({"price": 15}));
    // Before the instance existed in business time.
    let before = c
        .queries
        .get_state_at_time(pb::GetStateAtTimeRequest {
            instance_id: p.id.clone(),
            timestamp: pts(ts(&p.created_at) - chrono::Duration::seconds(1)),
            axis: pb::TimeAxis::OccurredAt as i32,
            known_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(before.code(), Code::NotFound, "{before:?}");
    // Misuse of known_at.
    for (axis, known_at) in [
        (pb::TimeAxis::Both, None),
        (pb::TimeAxis::OccurredAt, pts(r4)),
        (pb::TimeAxis::RecordedAt, pts(r4)),
    ] {
        let status = c
            .queries
            .get_state_at_time(pb::GetStateAtTimeRequest {
                instance_id: p.id.clone(),
                timestamp: pts(t),
                axis: axis as i32,
                known_at,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{axis:?}: {status:?}");
    }
    let status = c
        .queries
        .get_state_at_time(pb::GetStateAtTimeRequest {
            instance_id: p.id.clone(),
            timestamp: pts(t),
            axis: 42,
            known_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

async fn list(c: &mut Clients, request: pb::ListInstancesRequest) -> Vec<pb::Instance> {
    c.instances
        .list_instances(request)
        .await
        .unwrap()
        .into_inner()
        .instances
}

fn externals(v: &[pb::Instance]) -> Vec<String> {
    v.iter().map(|i| i.external_id.clone()).collect()
}

async fn list_instances_filters_orders_and_leaves_the_state_out(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", json!({"type": "object"})).await;
    c.create_type("team", json!({"type": "object"})).await;
    let mut made = Vec::new();
    for (x, city, tags) in [
        ("eu-1", "Paris", json!(["a"])),
        ("eu-2", "Lyon", json!(["b"])),
        ("eu-3", "Paris", json!(["b", "a"])),
        ("us-1", "Paris", json!(["a"])),
        ("eu", "Paris", json!([])),
        ("eu-10", "Rome", json!(["a"])),
    ] {
        made.push(
            c.create_instance(
                "player",
                x,
                json!({"address": {"city": city}, "tags": tags, "n": 1}),
            )
            .await,
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    c.create_instance("team", "eu-1", json!({"address": {"city": "Paris"}}))
        .await;
    let base = || pb::ListInstancesRequest {
        entity_type: "player".into(),
        ..Default::default()
    };

    // Prefix, in external-id (byte) order.
    let eu = list(
        &mut c,
        pb::ListInstancesRequest {
            external_id_prefix: "eu-".into(),
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&eu), ["eu-1", "eu-10", "eu-2", "eu-3"]);
    // Paged: the token continues the filtered list.
    let first = c
        .instances
        .list_instances(pb::ListInstancesRequest {
            external_id_prefix: "eu-".into(),
            page_size: 3,
            ..base()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(externals(&first.instances), ["eu-1", "eu-10", "eu-2"]);
    let rest = list(
        &mut c,
        pb::ListInstancesRequest {
            external_id_prefix: "eu-".into(),
            page_size: 3,
            page_token: first.next_page_token,
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&rest), ["eu-3"]);

    // Equality on a state field, with a prefix, and on an array element.
    let paris = list(
        &mut c,
        pb::ListInstancesRequest {
            state_path: "address.city".into(),
            state_equals: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("Paris".into())),
            }),
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&paris), ["eu", "eu-1", "eu-3", "us-1"]);
    let first_tag_b = list(
        &mut c,
        pb::ListInstancesRequest {
            state_path: "/tags/0".into(),
            state_equals: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("b".into())),
            }),
            external_id_prefix: "eu".into(),
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&first_tag_b), ["eu-2", "eu-3"]);
    let whole_array = list(
        &mut c,
        pb::ListInstancesRequest {
            state_path: "tags".into(),
            state_equals: Some(temporal_state_server::grpc::value_from_json(&json!(["a"]))),
            ..base()
        },
    )
    .await;
    // Equality, not containment: ["b", "a"] is not ["a"].
    assert_eq!(externals(&whole_array), ["eu-1", "eu-10", "us-1"]);
    let number = list(
        &mut c,
        pb::ListInstancesRequest {
            state_path: "n".into(),
            state_equals: Some(temporal_state_server::grpc::value_from_json(&json!(1))),
            ..base()
        },
    )
    .await;
    assert_eq!(number.len(), 6);

    // Last update: most recent first, and a range.
    let touched = c
        .apply(&made[1].id, "Moved", json!({"address": {"city": "Nice"}}))
        .await
        .unwrap();
    let touched_at = ts(&touched.event.unwrap().recorded_at);
    let recent = list(
        &mut c,
        pb::ListInstancesRequest {
            order_by: pb::InstanceOrder::RecentlyUpdated as i32,
            ..base()
        },
    )
    .await;
    assert_eq!(
        externals(&recent),
        ["eu-2", "eu-10", "eu", "us-1", "eu-3", "eu-1"]
    );
    // Paged one at a time, the same order.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                order_by: pb::InstanceOrder::RecentlyUpdated as i32,
                page_size: 1,
                page_token: token,
                ..base()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(externals(&page.instances));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, externals(&recent));
    let since = list(
        &mut c,
        pb::ListInstancesRequest {
            updated_since: pts(touched_at),
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&since), ["eu-2"]);
    let before = list(
        &mut c,
        pb::ListInstancesRequest {
            updated_before: pts(ts(&made[3].updated_at)),
            ..base()
        },
    )
    .await;
    assert_eq!(externals(&before), ["eu-1", "eu-3"]);

    // The light view: everything but the state.
    let basic = list(
        &mut c,
        pb::ListInstancesRequest {
            view: pb::InstanceView::Basic as i32,
            external_id_prefix: "eu-2".into(),
            ..base()
        },
    )
    .await;
    assert_eq!(basic.len(), 1);
    assert_eq!(basic[0].state, None);
    assert_eq!(basic[0].version, 2);
    assert_eq!(basic[0].id, made[1].id);
    let full = list(
        &mut c,
        pb::ListInstancesRequest {
            external_id_prefix: "eu-2".into(),
            ..base()
        },
    )
    .await;
    assert_eq!(js(&full[0].state)["address"], json!({"city": "Nice"}));
}

async fn bad_list_and_time_requests_are_invalid_argument(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", json!({"type": "object"})).await;
    c.create_instance("player", "p", json!({})).await;
    let base = || pb::ListInstancesRequest {
        entity_type: "player".into(),
        ..Default::default()
    };
    let value = || Some(temporal_state_server::grpc::value_from_json(&json!(1)));
    let deep = vec!["a"; 33].join(".");
    let now = chrono::Utc::now();
    let bad = [
        pb::ListInstancesRequest {
            external_id_prefix: "x".repeat(257),
            ..base()
        },
        pb::ListInstancesRequest {
            external_id_prefix: "a\u{0}".into(),
            ..base()
        },
        pb::ListInstancesRequest {
            state_path: "n".into(),
            ..base()
        },
        pb::ListInstancesRequest {
            state_equals: value(),
            ..base()
        },
        pb::ListInstancesRequest {
            state_path: deep,
            state_equals: value(),
            ..base()
        },
        pb::ListInstancesRequest {
            state_path: "a\"b".into(),
            state_equals: value(),
            ..base()
        },
        pb::ListInstancesRequest {
            state_path: "n".into(),
            state_equals: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("x".repeat(5000))),
            }),
            ..base()
        },
        pb::ListInstancesRequest {
            updated_since: pts(now),
            updated_before: pts(now),
            ..base()
        },
        pb::ListInstancesRequest {
            order_by: 9,
            ..base()
        },
        pb::ListInstancesRequest { view: 9, ..base() },
        pb::ListInstancesRequest {
            order_by: pb::InstanceOrder::RecentlyUpdated as i32,
            page_token: "bm90IGEgY3Vyc29y".into(),
            ..base()
        },
    ];
    for request in bad {
        let status = c
            .instances
            .list_instances(request.clone())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
}
