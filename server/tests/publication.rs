//! Publication never wedges: an event NATS cannot carry is refused at write time, a row the
//! stream will not take is dead-lettered while every other instance's events keep flowing, and
//! an instance's events reach the stream in version order even when JetStream refuses one.
//! Each test runs a nats-server of its own, so stream settings and refusals touch nothing else.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::procs::Nats;
use common::*;
use temporal_state_proto::v1 as pb;
use temporal_state_server::adapters::nats::WireEvent;
use tonic::Code;

const STREAM: &str = "TEMPORAL_STATE_EVENTS";

/// Versions in the stream per instance id, in stream order.
async fn published(nats_url: &str) -> HashMap<String, Vec<i64>> {
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    let Ok(client) = async_nats::connect(nats_url).await else {
        return per;
    };
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(STREAM).await else {
        return per;
    };
    let Ok(info) = stream.info().await else {
        return per;
    };
    for seq in 1..=info.state.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            let e: WireEvent = serde_json::from_slice(&msg.payload).unwrap();
            per.entry(e.instance_id.to_string())
                .or_default()
                .push(e.version);
        }
    }
    per
}

/// Waits until the stream holds exactly `want` (instance -> versions in stream order) for the
/// instances named in it; panics with what it holds otherwise.
async fn wait_published(nats_url: &str, want: &[(&str, Vec<i64>)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = HashMap::new();
    while Instant::now() < deadline {
        seen = published(nats_url).await;
        if want
            .iter()
            .all(|(id, versions)| seen.get(*id).is_some_and(|v| v == versions))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream never held {want:?}; it holds {seen:?}");
}

/// A stream created before the server, with messages limited to `max_message_size` bytes:
/// JetStream refuses larger ones (the relay finds the stream and keeps its settings).
async fn create_small_stream(nats_url: &str, max_message_size: i32) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(nats_url).await.unwrap());
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["temporal_state.events.>".into()],
        max_message_size,
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// (instance_id, version, attempts, error) of every dead letter.
async fn dead_letters(db_url: &str) -> Vec<(String, i64, i32, String)> {
    pg(db_url)
        .await
        .query(
            "SELECT instance_id::text, version, attempts, error FROM outbox_dead_letters ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn blob(bytes: usize) -> serde_json::Value {
    json!({ "blob": "x".repeat(bytes) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_nats_cannot_carry_is_refused_at_write_time_and_publication_goes_on() {
    let nats = Nats::start(); // max_payload: the NATS default, 1 MiB
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--nats-url", &nats.url()]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let a = c.create_instance("doc", "a", json!({"n": 0})).await;
    let b = c.create_instance("doc", "b", json!({"n": 0})).await;

    // Payload and metadata are each under MAX_PAYLOAD_BYTES (1 MiB), together about 1.1 MB.
    let Err(refused) = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: a.id.clone(),
            event_type: "Big".into(),
            payload: Some(st(blob(600_000))),
            metadata: Some(st(blob(500_000))),
            ..Default::default()
        })
        .await
    else {
        panic!("refused, not stored");
    };
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("max_payload"),
        "{}",
        refused.message()
    );
    assert!(refused.message().len() < 1024);

    let Err(refused) = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "doc".into(),
            external_id: "big".into(),
            initial_state: Some(st(blob(600_000))),
            metadata: Some(st(blob(500_000))),
        })
        .await
    else {
        panic!("refused, not stored");
    };
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "{}",
        refused.message()
    );

    // Nothing was stored, and every instance's later events are published.
    c.apply(&a.id, "Tick", json!({"n": 1})).await.unwrap();
    c.apply(&b.id, "Tick", json!({"n": 1})).await.unwrap();
    let after = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(after.version, 2, "the refused event was not stored");
    wait_published(&nats.url(), &[(&a.id, vec![1, 2]), (&b.id, vec![1, 2])]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_too_big_for_nats_is_dead_lettered_and_publication_goes_on() {
    let nats = Nats::start();
    let db = TestDb::create().await;
    // Events written without publication, then one of them grown past max_payload behind the
    // server's back (as an event written before NATS's limit was lowered would be), then all of
    // them queued for publication.
    let plain = TestServer::start(&db.url, &[]).await;
    let mut c = plain.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let x = c.create_instance("doc", "x", json!({"n": 0})).await;
    let y = c.create_instance("doc", "y", json!({"n": 0})).await;
    c.apply(&x.id, "Tick", json!({"n": 1})).await.unwrap();
    plain.stop().await;
    let sql = pg(&db.url).await;
    sql.batch_execute(&format!(
        "UPDATE events SET payload = jsonb_build_object('blob', repeat('z', 1200000)) \
         WHERE instance_id = '{}' AND version = 2;
         INSERT INTO outbox (instance_id, version)
         SELECT instance_id, version FROM events ORDER BY recorded_at, version;",
        x.id
    ))
    .await
    .unwrap();

    let before = temporal_state_server::adapters::nats::relay::dead_lettered_total();
    let server = TestServer::start(&db.url, &["--nats-url", &nats.url()]).await;
    let mut c = server.clients().await;
    c.apply(&x.id, "Tick", json!({"n": 2})).await.unwrap();
    c.apply(&y.id, "Tick", json!({"n": 1})).await.unwrap();
    wait_published(&nats.url(), &[(&x.id, vec![1, 3]), (&y.id, vec![1, 2])]).await;

    let dead = dead_letters(&db.url).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (instance, version, _, error) = &dead[0];
    assert_eq!((instance.as_str(), *version), (x.id.as_str(), 2));
    assert!(error.contains("exceeded"), "{error}");
    assert!(temporal_state_server::adapters::nats::relay::dead_lettered_total() > before);
    let backlog: i64 = sql
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(backlog, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_jetstream_keeps_refusing_is_dead_lettered_after_n_attempts() {
    let nats = Nats::start();
    create_small_stream(&nats.url(), 32 * 1024).await;
    let db = TestDb::create().await;
    let server = TestServer::start(
        &db.url,
        &["--nats-url", &nats.url(), "--outbox-max-attempts", "3"],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let x = c.create_instance("doc", "x", json!({"n": 0})).await;
    let y = c.create_instance("doc", "y", json!({"n": 0})).await;
    // Fits NATS's max_payload (so it is accepted), not the stream's message limit.
    c.apply(&x.id, "Big", blob(40 * 1024)).await.unwrap();
    c.apply(&x.id, "Tick", json!({"n": 1})).await.unwrap();
    c.apply(&y.id, "Tick", json!({"n": 1})).await.unwrap();

    wait_published(&nats.url(), &[(&x.id, vec![1, 3]), (&y.id, vec![1, 2])]).await;
    let dead = dead_letters(&db.url).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (instance, version, attempts, _) = &dead[0];
    assert_eq!(
        (instance.as_str(), *version, *attempts),
        (x.id.as_str(), 2, 3)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_keeps_its_order_when_jetstream_refuses_one_of_its_events() {
    let nats = Nats::start();
    let js = create_small_stream(&nats.url(), 32 * 1024).await;
    let db = TestDb::create().await;
    let server = TestServer::start(
        &db.url,
        &[
            "--nats-url",
            &nats.url(),
            "--outbox-max-attempts",
            "1000000",
        ],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let x = c.create_instance("doc", "x", json!({"n": 0})).await;
    let y = c.create_instance("doc", "y", json!({"n": 0})).await;
    wait_published(&nats.url(), &[(&x.id, vec![1]), (&y.id, vec![1])]).await;

    // x's version 2 is refused by the stream until its limit is raised; version 3 is small.
    c.apply(&x.id, "Big", blob(40 * 1024)).await.unwrap();
    c.apply(&x.id, "Tick", json!({"n": 1})).await.unwrap();
    c.apply(&y.id, "Tick", json!({"n": 1})).await.unwrap();
    // y's event, committed after x's, is published: the relay has tried x's version 2 by now
    // (and without per-instance order would have sent version 3 past it).
    wait_published(&nats.url(), &[(&y.id, vec![1, 2])]).await;
    assert_eq!(published(&nats.url()).await[&x.id], vec![1]);

    let mut config = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_message_size = -1;
    js.update_stream(config).await.unwrap();
    wait_published(&nats.url(), &[(&x.id, vec![1, 2, 3]), (&y.id, vec![1, 2])]).await;
    assert!(dead_letters(&db.url).await.is_empty());
    server.stop().await;
}
