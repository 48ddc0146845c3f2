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
    // Published rows are deleted by the relay's next read of the outbox (woken by the next
    // commit, or its poll within 100 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let backlog: i64 = sql
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .unwrap()
            .get(0);
        if backlog == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backlog} outbox rows left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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

/// Two publishing servers on one database: the relay lease lets one publish at a time, so each
/// event is published once (counted on the plain NATS subject, which sees every publish, the
/// ones JetStream's de-duplication would hide included), the stream holds each instance's events
/// once and in order, and a subscriber on one server sees the events written through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishing_servers_on_one_database_publish_each_event_once_in_order() {
    use futures::StreamExt;
    let nats = Nats::start();
    let db = TestDb::create().await;
    // A one-second window: a second relay's re-send a second later would be stored again.
    let flags = [
        "--nats-url",
        &nats.url(),
        "--nats-duplicate-window-secs",
        "1",
    ];
    let a = TestServer::start(&db.url, &flags).await;
    let b = TestServer::start(&db.url, &flags).await;
    let mut ca = a.clients().await;
    let mut cb = b.clients().await;
    ca.create_type("device", json!({"type": "object"})).await;
    ca.create_type("probe", json!({"type": "object"})).await;
    let probe = ca.create_instance("probe", "p", json!({})).await.id;

    // Every publish attempt of a device event, as the NATS server routes it.
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let mut wire = raw
        .subscribe("temporal_state.events.device.>")
        .await
        .unwrap();
    raw.flush().await.unwrap();
    // A subscriber on b, live only; ready once a probe written through a reaches it.
    let mut on_b = cb
        .events
        .subscribe(pb::SubscribeRequest {
            event_types: vec!["Probe".into(), "Reading".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ready = false;
    for _ in 0..30 {
        ca.apply(&probe, "Probe", json!({})).await.unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_secs(1), on_b.message()).await {
            got.unwrap().expect("the stream is open");
            ready = true;
            break;
        }
    }
    assert!(ready, "a subscriber on b never saw a write through a");

    // Writers on both servers, each instance written through both.
    const INSTANCES: usize = 4;
    const ROUNDS: i64 = 25;
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        ids.push(
            ca.create_instance("device", &format!("d{i}"), json!({}))
                .await
                .id,
        );
    }
    let mut writers = Vec::new();
    for (w, c) in [ca.clone(), cb.clone(), ca.clone(), cb.clone()]
        .into_iter()
        .enumerate()
    {
        let ids = ids.clone();
        writers.push(tokio::spawn(async move {
            let mut c = c;
            for n in 0..ROUNDS {
                for id in &ids {
                    c.apply(id, "Reading", json!({ format!("w{w}"): n }))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let last = 1 + 4 * ROUNDS;
    let want: Vec<(&str, Vec<i64>)> = ids
        .iter()
        .map(|id| (id.as_str(), (1..=last).collect()))
        .collect();
    wait_published(&nats.url(), &want).await;

    // Each event was put on the wire once: the stream is complete, so a second relay's copy
    // would have been routed by now; a short quiet period catches one still in flight.
    let total = INSTANCES * last as usize;
    let mut sent: HashMap<String, usize> = HashMap::new();
    while sent.values().sum::<usize>() < total {
        let msg = tokio::time::timeout(Duration::from_secs(30), wire.next())
            .await
            .expect("every event crosses the wire")
            .unwrap();
        let id = msg.headers.unwrap().get("Nats-Msg-Id").unwrap().to_string();
        *sent.entry(id).or_default() += 1;
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_secs(2), wire.next()).await {
        let id = extra
            .headers
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .to_string();
        *sent.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} of {total} events were published more than once (two relays at once?): {:?}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(sent.len(), total);

    // The subscriber on b saw every event of every instance, a's writes included, in order.
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut count = 0;
    while count < INSTANCES * 4 * ROUNDS as usize {
        let e = tokio::time::timeout(Duration::from_secs(30), on_b.message())
            .await
            .expect("events reach the subscriber on b")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        if e.event_type == "Reading" {
            seen.entry(e.instance_id.clone())
                .or_default()
                .push(e.version);
            count += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            seen[id],
            (2..=last).collect::<Vec<_>>(),
            "instance {id} on b"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// The wire format as the README prints it, read raw: the subject, the headers and the body's
/// field names and values, decoded as plain JSON rather than with the adapter's own types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_has_the_documented_subject_headers_and_body() {
    let nats = Nats::start();
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--nats-url", &nats.url()]).await;
    let mut c = server.clients().await;
    let entity_type = c
        .create_type("player_profile", json!({"type": "object"}))
        .await;
    let inst = c
        .create_instance("player_profile", "player-001", json!({"score": 100}))
        .await;
    let applied = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: inst.id.clone(),
            event_type: "ScoreIncreased".into(),
            payload: Some(st(json!({"score": 150, "level": 2}))),
            metadata: Some(st(json!({"source": "golden"}))),
            event_id: "player-001-score-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    wait_published(&nats.url(), &[(inst.id.as_str(), vec![1, 2])]).await;

    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream(STREAM).await.unwrap();
    let msg = stream.get_raw_message(2).await.unwrap();
    assert_eq!(
        msg.subject.as_str(),
        format!("temporal_state.events.player_profile.{}", inst.id)
    );
    let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some("player-001-score-1"));
    assert_eq!(header("Tse-Version").as_deref(), Some("2"));
    assert_eq!(header("Tse-Event-Type").as_deref(), Some("ScoreIncreased"));

    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "entity_type",
            "entity_type_id",
            "event_type",
            "id",
            "instance_id",
            "metadata",
            "mode",
            "occurred_at",
            "payload",
            "position",
            "recorded_at",
            "recorded_by",
            "schema_version",
            "version"
        ]
    );
    assert_eq!(body["id"], "player-001-score-1");
    assert_eq!(body["instance_id"], inst.id.as_str());
    assert_eq!(body["entity_type_id"], entity_type.id.as_str());
    assert_eq!(body["entity_type"], "player_profile");
    assert_eq!(body["event_type"], "ScoreIncreased");
    assert_eq!(body["version"], 2);
    assert_eq!(body["payload"], json!({"score": 150, "level": 2}));
    assert_eq!(body["metadata"], json!({"source": "golden"}));
    assert_eq!(body["mode"], "merge_patch");
    // Who wrote it (authentication is off here: nobody).
    assert_eq!(body["recorded_by"], "");
    // The schema version that validated it: the type's first.
    assert_eq!(body["schema_version"], 1);
    // Its place in the global log, as the API answered.
    assert_eq!(body["position"], applied.position);
    // RFC 3339 in UTC with a Z, as the README shows; the same instant the API answered.
    let recorded_at = body["recorded_at"].as_str().unwrap();
    assert!(recorded_at.ends_with('Z'), "{recorded_at}");
    let parsed = chrono::DateTime::parse_from_rfc3339(recorded_at).unwrap();
    let api = applied.recorded_at.unwrap();
    assert_eq!(
        (parsed.timestamp(), parsed.timestamp_subsec_nanos() as i32),
        (api.seconds, api.nanos)
    );
    assert_eq!(body["occurred_at"], body["recorded_at"]);
    server.stop().await;
}
