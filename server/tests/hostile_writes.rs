//! Hostile writes against a real server, on both stores: what a write produces is bounded
//! (MAX_STATE_BYTES, MAX_STATE_DEPTH), refused writes store nothing and leave the instance
//! usable, a batch does not keep a state per event, and idempotency survives the store's
//! rendering of numbers and covers server-generated ids.
//!
//! Every test body runs as `postgres::<name>` on a fresh PostgreSQL database and as
//! `embedded::<name>` on the embedded store in a fresh DATA_DIR.

mod common;

use common::bombs::{copy_bomb, json_patch, nesting_bomb};
use common::*;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use tonic::Code;

for_each_backend!(
    a_copy_bomb_is_refused_and_the_instance_stays_writable,
    a_patch_nesting_200_levels_is_refused_and_the_instance_stays_usable,
    states_at_the_depth_limit_travel_to_the_client_and_one_more_level_is_refused,
    a_batch_of_1000_events_on_a_900_kb_state_keeps_no_state_per_event,
    faithful_retries_are_recognised_whatever_numbers_they_hold,
    server_generated_event_ids_are_reserved,
);

async fn current(c: &mut Clients, external_id: &str) -> pb::Instance {
    c.instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "doc".into(),
            external_id: external_id.into(),
        })
        .await
        .expect("the instance is readable")
        .into_inner()
        .instance
        .unwrap()
}

async fn assert_serving(server: &TestServer) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    wait_for_health(
        &mut health,
        "",
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
}

async fn a_copy_bomb_is_refused_and_the_instance_stays_writable(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let inst = c
        .create_instance("doc", "d", json!({"blob": "x".repeat(1000)}))
        .await;

    // Each op copies the whole state beside itself: 20 doublings, about 1 GB.
    let bomb = json_patch(&inst.id, "Patched", copy_bomb(20));
    let refused = c.events.apply_event(bomb).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("MAX_STATE_BYTES"),
        "{}",
        refused.message()
    );
    assert!(refused.message().len() < 1024);
    assert_eq!(db.count("events").await, 1, "nothing stored");

    assert_serving(&server).await;
    let next = c
        .apply(&inst.id, "Set", json!({"after": true}))
        .await
        .unwrap();
    assert_eq!(next.event.unwrap().version, 2);
    assert_eq!(js(&current(&mut c, "d").await.state)["after"], json!(true));
}

async fn a_patch_nesting_200_levels_is_refused_and_the_instance_stays_usable(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let inst = c.create_instance("doc", "d", json!({})).await;

    let deep = json_patch(&inst.id, "Patched", nesting_bomb(200));
    let refused = c.events.apply_event(deep).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("MAX_STATE_DEPTH (32)"),
        "{}",
        refused.message()
    );
    assert_eq!(db.count("events").await, 1, "nothing stored");

    assert_serving(&server).await;
    assert_eq!(current(&mut c, "d").await.version, 1);
    c.apply(&inst.id, "Set", json!({"ok": 1})).await.unwrap();
    assert_eq!(current(&mut c, "d").await.version, 2);
}

/// `{"a": {"a": ... {"a": 1}}}`, `levels` objects deep (the root included).
fn nested_objects(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "a": v });
    }
    v
}

/// `{"a": [[...[1]...]]}`: the root object and `levels - 1` arrays.
fn nested_arrays(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 1..levels {
        v = json!([v]);
    }
    json!({ "a": v })
}

async fn states_at_the_depth_limit_travel_to_the_client_and_one_more_level_is_refused(
    backend: Backend,
) {
    const MAX: usize = 32; // MAX_STATE_DEPTH's default
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;

    for (name, deepest) in [
        ("objects", nested_objects(MAX)),
        ("arrays", nested_arrays(MAX)),
    ] {
        // Created at the limit, then written again through a replace: both come back, decoded
        // by the tonic client (prost, recursion limit 100), from every read that carries them.
        let inst = c.create_instance("doc", name, deepest.clone()).await;
        assert_eq!(js(&current(&mut c, name).await.state), deepest, "{name}");
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: inst.id.clone(),
                event_type: "Replaced".into(),
                payload: Some(st(deepest.clone())),
                mode: pb::ApplyMode::Replace as i32,
                ..Default::default()
            })
            .await
            .expect("a replace at the depth limit");
        let history = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: inst.id.clone(),
                ..Default::default()
            })
            .await
            .expect("history at the depth limit decodes")
            .into_inner();
        assert_eq!(history.events.len(), 2);
        for e in &history.events {
            assert_eq!(js(&e.payload), deepest, "{name}");
        }
        let at = c
            .queries
            .get_state_at_version(pb::GetStateAtVersionRequest {
                instance_id: inst.id.clone(),
                version: 2,
            })
            .await
            .expect("a past state at the depth limit decodes")
            .into_inner();
        assert_eq!(js(&at.state), deepest, "{name}");

        // One level more, grown by a patch on the server: refused, nothing stored.
        let mut pointer = String::from("/a");
        let mut v = &deepest["a"];
        while let Some(inner) = v.get("a").or_else(|| v.get(0)) {
            pointer.push_str(if v.is_array() { "/0" } else { "/a" });
            v = inner;
        }
        let deeper = json_patch(
            &inst.id,
            "Patched",
            vec![json!({"op": "replace", "path": pointer, "value": {}})],
        );
        let refused = c.events.apply_event(deeper).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
        assert!(
            refused.message().contains("MAX_STATE_DEPTH"),
            "{}",
            refused.message()
        );
        assert_eq!(current(&mut c, name).await.version, 2, "{name}");
    }
    // Sent one level too deep: refused by the limit (not by a decoder), nothing stored.
    let too_deep = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "doc".into(),
            external_id: "too-deep".into(),
            initial_state: Some(st(nested_objects(MAX + 1))),
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(too_deep.code(), Code::InvalidArgument, "{too_deep:?}");
    assert!(
        too_deep.message().contains("MAX_STATE_DEPTH"),
        "{too_deep:?}"
    );
    assert_eq!(db.count("instances").await, 2);
}

/// Peak resident memory of this test process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn a_batch_of_1000_events_on_a_900_kb_state_keeps_no_state_per_event(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let big: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("s{i}"), json!("x".repeat(100_000))))
        .collect();
    let inst = c
        .create_instance("doc", "d", Value::Object(big.clone()))
        .await;

    let events = (0..1000)
        .map(|i| pb::EventInput {
            event_type: "Noop".into(),
            payload: Some(st(json!({}))),
            event_id: format!("noop-{i}"),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let request = pb::ApplyEventsRequest {
        instance_id: inst.id.clone(),
        events: events.clone(),
        ..Default::default()
    };
    let done = c
        .events
        .apply_events(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.events.len(), 1000);
    assert_eq!(done.events.last().unwrap().version, 1001);
    assert_eq!(js(&done.state), Value::Object(big.clone()));
    // Snapshots at 100, 200, ..., 1000 (and version 1 is none of them): the decision kept
    // those ten copies and the last state, not one per event.
    assert_eq!(db.count("snapshots").await, 10);
    // Each event holding its own 900 KB copy peaked at gigabytes; the whole test process
    // (server included) stays far below.
    if let Some(peak) = peak_rss() {
        eprintln!("peak RSS of the test process: {} MiB", peak >> 20);
        assert!(peak < 1 << 30, "peak RSS {} MiB", peak >> 20);
    }

    // The retry of the whole batch is still recognised, and answers the same.
    let retry = c.events.apply_events(request).await.unwrap().into_inner();
    assert_eq!(retry.events, done.events);
    assert_eq!(js(&retry.state), Value::Object(big));
    assert_eq!(db.count("events").await, 1001);
}

async fn faithful_retries_are_recognised_whatever_numbers_they_hold(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let inst = c.create_instance("doc", "d", json!({})).await;
    // Numbers PostgreSQL's jsonb writes differently from how they were sent.
    let payload = json!({
        "e18": 1e18, "one": 1.0, "tiny": 1e-7, "negzero": -0.0, "huge": 1.2345678901234567e25,
        "list": [1e300, 2.5, -1e-300], "nested": {"x": 9007199254740993.0}
    });
    let request = |event_type: &str, payload: Value, mode: pb::ApplyMode, meta: Value| {
        pb::ApplyEventRequest {
            instance_id: inst.id.clone(),
            event_type: event_type.into(),
            payload: Some(st(payload)),
            metadata: Some(st(meta)),
            event_id: "numbers-1".into(),
            mode: mode as i32,
            ..Default::default()
        }
    };
    let merge = pb::ApplyMode::MergePatch;
    let first = c
        .events
        .apply_event(request("Set", payload.clone(), merge, json!({})))
        .await
        .unwrap()
        .into_inner();
    for round in 0..2 {
        let retry = c
            .events
            .apply_event(request("Set", payload.clone(), merge, json!({})))
            .await
            .unwrap_or_else(|e| panic!("round {round}: a faithful retry is a retry: {e:?}"))
            .into_inner();
        assert_eq!(retry.event, first.event);
        assert_eq!(js(&retry.state), js(&first.state));
    }
    // Metadata is not content: a retry may carry a new trace id.
    let retry = c
        .events
        .apply_event(request(
            "Set",
            payload.clone(),
            merge,
            json!({"trace": "t-2"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.event, first.event);

    // The same id with another event type, mode or payload is a clash.
    let replace = pb::ApplyMode::Replace;
    let mut other_payload = payload.clone();
    other_payload["e18"] = json!(1e17);
    for (what, clash) in [
        (
            "event type",
            request("Other", payload.clone(), merge, json!({})),
        ),
        ("mode", request("Set", payload.clone(), replace, json!({}))),
        ("payload", request("Set", other_payload, merge, json!({}))),
    ] {
        let status = c.events.apply_event(clash).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{what}: {status:?}");
        assert!(
            status.message().contains("numbers-1"),
            "{}",
            status.message()
        );
    }
    assert_eq!(db.count("events").await, 2);

    // A batch retry, after a restart (nothing held in memory).
    let batch = pb::ApplyEventsRequest {
        instance_id: inst.id.clone(),
        events: (0..3)
            .map(|i| pb::EventInput {
                event_type: "Set".into(),
                payload: Some(st(json!({ "n": i, "big": 1e18 + i as f64 * 1e3 }))),
                event_id: format!("batch-{i}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let done = c
        .events
        .apply_events(batch.clone())
        .await
        .unwrap()
        .into_inner();
    server.stop().await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    let again = c.events.apply_events(batch).await.unwrap().into_inner();
    assert_eq!(again.events, done.events);
    assert_eq!(db.count("events").await, 5);
}

async fn server_generated_event_ids_are_reserved(backend: Backend) {
    let db = Store::create(backend).await;
    let server = db.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let inst = c.create_instance("doc", "d", json!({})).await;
    let other = c.create_instance("doc", "e", json!({})).await;
    let generated = c
        .apply(&inst.id, "Set", json!({"n": 1}))
        .await
        .unwrap()
        .event
        .unwrap();

    let with_id = |instance_id: &str, payload: Value, event_id: &str| pb::ApplyEventRequest {
        instance_id: instance_id.into(),
        event_type: "Set".into(),
        payload: Some(st(payload)),
        event_id: event_id.into(),
        ..Default::default()
    };
    // Sent again with its generated id and the same content: a retry of that event.
    let retry = c
        .events
        .apply_event(with_id(&inst.id, json!({"n": 1}), &generated.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.event.unwrap(), generated);
    // With other content, or on another instance: never a second event with that id.
    for (instance_id, payload) in [(&inst.id, json!({"n": 2})), (&other.id, json!({"n": 1}))] {
        let clash = c
            .events
            .apply_event(with_id(instance_id, payload, &generated.id))
            .await
            .unwrap_err();
        assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
    }
    // The id of an InstanceCreated event is reserved too.
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: other.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created_id = &history.events[0].id;
    let clash = c
        .events
        .apply_event(with_id(&other.id, json!({}), created_id))
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
    assert_eq!(db.count("events").await, 3);
}
