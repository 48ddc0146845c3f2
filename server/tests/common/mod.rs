//! Test harness of the server's integration tests: what test-support gives every test (its own
//! PostgreSQL database, a real server on 127.0.0.1:0, `for_each_backend!`), the storage a test
//! runs on (`backend`), the built binary as a process (`binary`), private Redis and NATS
//! servers (`procs`), and fixtures several test files share.
#![allow(dead_code)]

use std::time::Duration;

use temporal_state_proto::v1 as pb;

pub mod backend;
pub mod binary;
pub mod bombs;
pub mod procs;
pub mod raw;

pub use serde_json::json;

#[allow(unused_imports)] // not every test binary uses each
pub use backend::{Backend, Store};
#[allow(unused_imports)]
pub use temporal_state_test_support::{
    Clients, TestDb, TestServer, TimescaleDb, for_each_backend, js, st,
};

pub fn player_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "minLength": 3},
            "email": {"type": "string", "format": "email"},
            "score": {"type": "integer", "minimum": 0},
            "level": {"type": "integer", "minimum": 1},
            "achievements": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["username"]
    })
}

/// Polls gRPC health until `service` ("" for the server as a whole) reports `want`.
pub async fn wait_for_health(
    client: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    for _ in 0..150 {
        let got = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} never became {want:?}");
}

/// The Subscribe contract on `server`'s backends: a replay from a version while a writer goes
/// on (no gap, no duplicate, only the subscribed instance), a live-only subscription filtered
/// by entity type and event type, then shutdown with both streams open: the server stops and
/// each stream ends with UNAVAILABLE. Returns the id of the instance it wrote 132 versions to.
pub async fn subscribe_contract(server: TestServer) -> String {
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d", json!({"n": 0})).await;
    let other = c.create_instance("device", "other", json!({})).await;
    for n in 1..=30 {
        c.apply(&inst.id, "Reading", json!({"n": n})).await.unwrap();
    }

    // Replay from version 10, while a writer goes on: versions 10..=131, no gap, no duplicate.
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: inst.id.clone(),
            from_version: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let writer = {
        let mut c = c.clone();
        let id = inst.id.clone();
        let other = other.id.clone();
        tokio::spawn(async move {
            for n in 31..=130 {
                c.apply(&id, "Reading", json!({"n": n})).await.unwrap();
                c.apply(&other, "Noise", json!({"n": n})).await.unwrap();
            }
        })
    };
    let mut versions = Vec::new();
    while versions.last() != Some(&131) {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("events keep arriving")
            .expect("no error")
            .expect("stream open")
            .event
            .unwrap();
        assert_eq!(e.instance_id, inst.id, "only the subscribed instance");
        if e.version > 1 {
            assert_eq!(js(&e.payload), json!({"n": e.version - 1}));
        }
        versions.push(e.version);
    }
    writer.await.unwrap();
    assert_eq!(versions, (10..=131).collect::<Vec<_>>());

    // Filtered by entity type and event type, live only.
    let mut typed = c
        .events
        .subscribe(pb::SubscribeRequest {
            entity_type: "device".into(),
            event_types: vec!["Alarm".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.apply(&other.id, "Noise", json!({})).await.unwrap();
    c.apply(&inst.id, "Alarm", json!({"alarm": true}))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), typed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!((got.event_type.as_str(), got.version), ("Alarm", 132));

    // Shutdown ends open subscriptions with UNAVAILABLE (subscribe again elsewhere), instead of
    // waiting for them forever: SIGTERM stops a server that has subscribers.
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("the server stops while subscriptions are open");
    for open in [&mut stream, &mut typed] {
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), open.message())
                .await
                .expect("the stream ends")
            {
                Ok(Some(_)) => continue, // events sent before shutdown
                other => break other,
            }
        };
        let status = ended.expect_err("a final status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    inst.id
}
