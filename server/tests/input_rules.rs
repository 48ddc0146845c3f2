//! Input rules, checked here on PostgreSQL, the store where they are hardest to keep: it cannot
//! store a NUL character, and its collations could reorder listings. The NUL rule is applied by
//! the application before any store is asked, so the embedded store keeps it too; the embedded
//! store (SQLite) orders text by bytes by default.

mod common;

use common::*;
use temporal_state_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_everywhere_and_stores_nothing() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d", json!({"ok": true})).await;
    let events_before = db.count("events").await;

    for payload in [
        json!({"name": "a\u{0}b"}),
        json!({"nested": {"list": ["x", "\u{0}"]}}),
        json!({"key\u{0}": 1}),
    ] {
        let status = c.apply(&inst.id, "Renamed", payload).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("NUL"), "{}", status.message());
    }
    let status = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "device".into(),
            external_id: "e".into(),
            initial_state: Some(st(json!({"name": "\u{0}"}))),
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = c
        .types
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: "other".into(),
            description: "bad\u{0}".into(),
            schema: Some(st(json!({"type": "object"}))),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("description"),
        "{}",
        status.message()
    );
    // A backslash followed by "u0000" is ordinary text.
    c.apply(&inst.id, "Renamed", json!({"name": "\\u0000"}))
        .await
        .unwrap();
    assert_eq!(db.count("events").await, events_before + 1);
    assert_eq!(db.count("instances").await, 1);
    assert_eq!(db.count("entity_types").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_in_byte_order_whatever_the_collation() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    for name in ["ab", "a_b", "a1", "b"] {
        c.create_type(name, json!({"type": "object"})).await;
    }
    for id in ["Zeta", "alpha", "Beta", "_x", "a-b", "a b"] {
        c.create_instance("ab", id, json!({})).await;
    }
    let types = c
        .types
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entity_types;
    let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a1", "a_b", "ab", "b"]);
    let instances = c
        .instances
        .list_instances(pb::ListInstancesRequest {
            entity_type: "ab".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instances;
    let ids: Vec<&str> = instances.iter().map(|i| i.external_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort(); // Rust's str order is byte order
    assert_eq!(ids, sorted);
    assert_eq!(ids, ["Beta", "Zeta", "_x", "a b", "a-b", "alpha"]);
}
