//! Erasure (EraseInstance, the right to erasure) against a real server, on both stores, with a
//! private Redis as the state cache (and, on PostgreSQL, a private NATS JetStream carrying the
//! events): an instance whose external id, states, payloads and metadata hold unique marker
//! strings is erased, then every RPC's answers, every Redis key and value, every message of
//! the stream and every row of every table (the embedded store: the bytes of its database file
//! and write-ahead log) are searched, and none of the markers is found. Each search first finds
//! the markers before the erasure, so it is a search that can fail.
//!
//! Also: writes and time travel refused with FAILED_PRECONDITION "erased", the remaining facts
//! in the history, a retry answering the same event, another instance untouched, and the
//! external id free for a new instance. (That a writer without admin is refused is in
//! `auth.rs`.)

mod common;

use std::time::Duration;

use common::procs::{Nats, Redis};
use common::*;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use tonic::Code;
use tonic::transport::Channel;

for_each_backend!(
    an_erased_instance_leaves_no_trace_in_any_answer_cache_stream_or_table: 4,
    an_erasure_racing_writers_erases_all_they_committed_and_refuses_the_rest: 4,
);

/// Unique strings this test writes into the instance that it erases, and nowhere else.
struct Markers {
    external_id: String,
    all: Vec<String>,
}

impl Markers {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let m = |what: &str| format!("ERASEME{what}{tag}");
        let external_id = format!("{}@example.org", m("ext"));
        let mut all = vec![external_id.clone()];
        all.extend(
            ["init", "initmeta", "payload", "meta", "nested"]
                .iter()
                .map(|w| m(w)),
        );
        Self { external_id, all }
    }

    fn named(&self, what: &str) -> String {
        self.all
            .iter()
            .find(|m| m.starts_with(&format!("ERASEME{what}")))
            .unwrap()
            .clone()
    }

    /// The markers found in `text`.
    fn found_in(&self, text: &str) -> Vec<String> {
        // Only the distinctive part: a marker split over JSON escapes would still show it.
        self.all
            .iter()
            .filter(|m| text.contains(m.split('@').next().unwrap()))
            .cloned()
            .collect()
    }

    fn found_in_bytes(&self, bytes: &[u8]) -> Vec<String> {
        self.all
            .iter()
            .filter(|m| {
                let needle = m.split('@').next().unwrap().as_bytes();
                bytes.windows(needle.len()).any(|w| w == needle)
            })
            .cloned()
            .collect()
    }
}

/// Every key and value in the test's Redis, as text.
fn redis_dump(redis: &Redis) -> String {
    let keys = redis.command(&["KEYS", "*"]);
    let mut out = String::new();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        out.push_str(key);
        out.push('\n');
        let kind = redis.command(&["TYPE", key]);
        let value = match kind.as_str() {
            "hash" => redis.command(&["HGETALL", key]),
            "string" => redis.command(&["GET", key]),
            other => panic!("unexpected redis key type {other} for {key}"),
        };
        out.push_str(&value);
        out.push('\n');
    }
    out
}

/// Every message still in the events stream, subject, headers and body, as text; and the event
/// types of the instance `id` among them.
async fn stream_dump(nats_url: &str, id: &str) -> (String, Vec<String>) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TEMPORAL_STATE_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = String::new();
    let mut types = Vec::new();
    for seq in 1..=last {
        // Purged messages are gone: only those still stored answer.
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        out.push_str(&format!("{} {:?} ", msg.subject, msg.headers));
        out.push_str(&String::from_utf8_lossy(&msg.payload));
        out.push('\n');
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if body["instance_id"] == id {
            types.push(body["event_type"].as_str().unwrap().to_string());
        }
    }
    (out, types)
}

/// Every row of every table, as text (PostgreSQL: `t::text` of each row; the embedded store:
/// the bytes of its database file and write-ahead log, read from disk).
async fn store_dump(store: &Store) -> Vec<u8> {
    match store {
        Store::Postgres(db) => {
            let client = db.client().await;
            let tables: Vec<String> = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(tables.iter().any(|t| t == "events"), "{tables:?}");
            let mut out = String::new();
            for table in tables {
                for row in client
                    .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
                    .await
                    .unwrap()
                {
                    let text: String = row.get(0);
                    out.push_str(&format!("{table}: {text}\n"));
                }
            }
            out.into_bytes()
        }
        Store::Embedded(dir) => {
            use temporal_state_server::adapters::embedded::DB_FILE;
            let mut bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
            if let Ok(wal) = std::fs::read(dir.path().join(format!("{DB_FILE}-wal"))) {
                bytes.extend(wal);
            }
            bytes
        }
    }
}

/// The answers of every read RPC about the instance `id` (and its type), as text; each refusal
/// is checked to be FAILED_PRECONDITION naming "erased" where `erased`.
async fn every_answer(
    c: &mut Clients,
    analytics: &mut AnalyticsServiceClient<Channel>,
    id: &str,
    external_id: &str,
    erased: bool,
) -> String {
    let mut out = String::new();
    let mut record = |what: &str, answer: String| {
        out.push_str(what);
        out.push_str(": ");
        out.push_str(&answer);
        out.push('\n');
    };
    let refused = |what: &str, status: tonic::Status| {
        assert!(erased, "{what} refused before the erasure: {status:?}");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        assert!(status.message().contains("erased"), "{what}: {status:?}");
        format!("{status:?}")
    };
    let got = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: id.into(),
        })
        .await
        .unwrap();
    record("GetInstance", format!("{got:?}"));
    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "person".into(),
            external_id: external_id.into(),
        })
        .await;
    match current {
        Ok(r) => {
            assert!(!erased, "the former external id still finds {r:?}");
            record("GetCurrentState", format!("{r:?}"));
        }
        Err(s) => {
            assert!(erased, "{s:?}");
            assert_eq!(s.code(), Code::NotFound, "{s:?}");
            // Its message quotes the external id the caller sent (not anything stored).
            record("GetCurrentState", format!("{:?}", s.code()));
        }
    }
    for include_archived in [false, true] {
        let listed = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                entity_type: "person".into(),
                include_archived,
                ..Default::default()
            })
            .await
            .unwrap();
        record("ListInstances", format!("{listed:?}"));
    }
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    record("GetHistory", format!("{history:?}"));
    let at_version = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: id.into(),
            version: 5,
        })
        .await;
    record(
        "GetStateAtVersion",
        match at_version {
            Ok(r) => format!("{r:?}"),
            Err(s) => refused("GetStateAtVersion", s),
        },
    );
    let at_time = c
        .queries
        .get_state_at_time(pb::GetStateAtTimeRequest {
            instance_id: id.into(),
            timestamp: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        })
        .await;
    record(
        "GetStateAtTime",
        match at_time {
            Ok(r) => format!("{r:?}"),
            Err(s) => refused("GetStateAtTime", s),
        },
    );
    let compared = c
        .queries
        .compare_versions(pb::CompareVersionsRequest {
            instance_id: id.into(),
            version1: 2,
            version2: 7,
        })
        .await;
    record(
        "CompareVersions",
        match compared {
            Ok(r) => format!("{r:?}"),
            Err(s) => refused("CompareVersions", s),
        },
    );
    let timeline = c
        .queries
        .get_field_timeline(pb::GetFieldTimelineRequest {
            instance_id: id.into(),
            field: "note".into(),
            ..Default::default()
        })
        .await;
    record(
        "GetFieldTimeline",
        match timeline {
            Ok(r) => format!("{r:?}"),
            Err(s) => refused("GetFieldTimeline", s),
        },
    );
    for field in ["note", "email", "profile.nick", "n"] {
        for as_of in [None, Some(std::time::SystemTime::now().into())] {
            let stats = analytics
                .get_field_aggregation(pb::GetFieldAggregationRequest {
                    entity_type: "person".into(),
                    field: field.into(),
                    as_of,
                })
                .await
                .unwrap();
            record("GetFieldAggregation", format!("{stats:?}"));
        }
    }
    let active = analytics
        .get_most_active(pb::GetMostActiveRequest {
            entity_type: "person".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    record("GetMostActive", format!("{active:?}"));
    let counts = analytics
        .get_event_counts(pb::GetEventCountsRequest {
            entity_type: "person".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    record("GetEventCounts", format!("{counts:?}"));
    let summary = analytics
        .get_summary(pb::GetSummaryRequest {
            entity_type: "person".into(),
        })
        .await
        .unwrap();
    record("GetSummary", format!("{summary:?}"));
    // Subscribe's replay of the whole history.
    let mut replay = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: id.into(),
            from_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let last = got.into_inner().instance.unwrap().version;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), replay.message())
            .await
            .expect("the replay goes on")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        let version = e.version;
        record("Subscribe", format!("{e:?}"));
        if version == last {
            break;
        }
    }
    out
}

/// A server on `backend` with a private Redis, and on PostgreSQL a private NATS (the embedded
/// store publishes to none): every place an erasure must reach. Holding `nats` keeps it running.
struct Served {
    redis: Redis,
    nats: Option<Nats>,
    nats_url: Option<String>,
    store: Store,
    server: TestServer,
}

async fn served(backend: Backend, snapshot_interval: &str) -> Served {
    let redis = Redis::start();
    let nats = matches!(backend, Backend::Postgres).then(Nats::start);
    let store = Store::create(backend).await;
    let redis_url = redis.url();
    let mut flags = vec![
        "--snapshot-interval",
        snapshot_interval,
        "--redis-url",
        redis_url.as_str(),
    ];
    let nats_url = nats.as_ref().map(|n| n.url());
    if let Some(url) = &nats_url {
        flags.extend(["--nats-url", url.as_str()]);
    }
    let server = store.start(&flags).await;
    Served {
        redis,
        nats,
        nats_url,
        store,
        server,
    }
}

async fn an_erased_instance_leaves_no_trace_in_any_answer_cache_stream_or_table(backend: Backend) {
    let markers = Markers::new();
    let Served {
        redis,
        nats: _nats,
        nats_url,
        store,
        server,
    } = served(backend, "3").await;
    let mut c = server.clients().await;
    let mut analytics = AnalyticsServiceClient::new(server.channel().await);
    // Every field declared, so field statistics answer (empty) once no state has it.
    c.create_type(
        "person",
        json!({
            "type": "object",
            "properties": {
                "email": {"type": "string"},
                "note": {"type": "string"},
                "n": {"type": "integer"},
                "profile": {"type": "object", "properties": {"nick": {"type": "string"}}}
            }
        }),
    )
    .await;

    // The instance to erase: its external id, initial state, every payload and metadata carry
    // markers; 10 events past the snapshot interval of 3, so snapshots exist.
    let created = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "person".into(),
            external_id: markers.external_id.clone(),
            initial_state: Some(st(json!({
                "email": markers.named("init"),
                "profile": {"nick": markers.named("nested")},
                "n": 0
            }))),
            metadata: Some(st(json!({"ip": markers.named("initmeta")}))),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    let id = created.id.clone();
    for n in 1..=10 {
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Noted".into(),
                payload: Some(st(
                    json!({"note": format!("{}-{n}", markers.named("payload")), "n": n}),
                )),
                metadata: Some(st(json!({"by": markers.named("meta")}))),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Another instance of the same type, which the erasure must leave alone.
    let other = c
        .create_instance("person", "bob", json!({"note": "keep me", "n": 1}))
        .await;
    c.apply(&other.id, "Noted", json!({"note": "still here"}))
        .await
        .unwrap();
    // Before: every search finds the markers (so each one can fail).
    let before = every_answer(&mut c, &mut analytics, &id, &markers.external_id, false).await;
    assert_eq!(
        markers.found_in(&before).len(),
        markers.all.len(),
        "{before}"
    );
    let cached = redis_dump(&redis);
    assert!(!markers.found_in(&cached).is_empty(), "{cached}");
    assert_eq!(
        store
            .snapshots()
            .await
            .iter()
            .map(|s| s.0)
            .collect::<Vec<_>>(),
        [3, 6, 9]
    );
    let stored = store_dump(&store).await;
    assert_eq!(
        markers.found_in_bytes(&stored).len(),
        markers.all.len(),
        "the store holds every marker before the erasure"
    );
    if let Some(url) = &nats_url {
        let mut published = String::new();
        for _ in 0..200 {
            let (text, types) = stream_dump(url, &id).await;
            published = text;
            if types.len() == 11 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every marker but the external id, which no message carries.
        assert_eq!(
            markers.found_in(&published).len(),
            markers.all.len() - 1,
            "{published}"
        );
    }
    // A live subscriber from before the erasure (once every earlier event was published, so
    // the next one it hears is the erasure).
    let mut live = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The erasure.
    let erased = c
        .instances
        .erase_instance(pb::EraseInstanceRequest {
            instance_id: id.clone(),
            reason: Some("the person asked (ticket 42)".into()),
        })
        .await
        .unwrap()
        .into_inner();
    let instance = erased.instance.unwrap();
    assert!(instance.erased);
    assert_eq!(instance.external_id, "");
    assert_eq!(js(&instance.state), json!({}));
    assert_eq!(instance.version, 12);
    let event = erased.event.unwrap();
    assert_eq!(event.event_type, "InstanceErased");
    assert_eq!(event.version, 12);
    assert_eq!(
        js(&event.metadata),
        json!({"reason": "the person asked (ticket 42)"})
    );
    assert_eq!(js(&event.payload), json!({}));

    // A retry succeeds, changes nothing and answers the same event.
    let again = c
        .instances
        .erase_instance(pb::EraseInstanceRequest {
            instance_id: id.clone(),
            reason: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.event.unwrap().id, event.id);
    assert_eq!(again.instance.unwrap().version, 12);

    // Writes are refused, naming the erasure.
    let writes = [
        c.apply(&id, "Noted", json!({"note": "again"}))
            .await
            .map(|_| ()),
        c.events
            .apply_events(pb::ApplyEventsRequest {
                instance_id: id.clone(),
                events: vec![pb::EventInput {
                    event_type: "Noted".into(),
                    payload: Some(st(json!({"n": 1}))),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .map(|_| ()),
        c.instances
            .archive_instance(pb::ArchiveInstanceRequest {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ];
    for refused in writes {
        let s = refused.unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        assert!(s.message().contains("erased"), "{s:?}");
    }

    // The live subscriber sees the erasure, and nothing of the erased data.
    let seen = tokio::time::timeout(Duration::from_secs(20), live.message())
        .await
        .expect("the erasure is delivered live")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(seen.event_type, "InstanceErased");
    assert!(
        markers.found_in(&format!("{seen:?}")).is_empty(),
        "{seen:?}"
    );

    // After: no marker in any answer (time travel refused), the cache, the stream or the store.
    let after = every_answer(&mut c, &mut analytics, &id, &markers.external_id, true).await;
    assert!(
        markers.found_in(&after).is_empty(),
        "{:?} in\n{after}",
        markers.found_in(&after)
    );
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    // The facts remain: versions, types, times; payloads and metadata are empty.
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(history[0].event_type, "InstanceCreated");
    assert_eq!(history[5].event_type, "Noted");
    assert!(history[..11].iter().all(|e| js(&e.payload) == json!({})
        && js(&e.metadata) == json!({})
        && e.recorded_at.is_some()));
    let cached = redis_dump(&redis);
    assert!(
        markers.found_in(&cached).is_empty(),
        "{:?} in redis:\n{cached}",
        markers.found_in(&cached)
    );
    let stored = store_dump(&store).await;
    assert!(
        markers.found_in_bytes(&stored).is_empty(),
        "{:?} in the store",
        markers.found_in_bytes(&stored)
    );
    // The erasure's own version is a multiple of the interval: its snapshot is the empty state.
    assert_eq!(store.snapshots().await, [(12, json!({}))]);
    if let Some(url) = &nats_url {
        // The relay purges the subject before it publishes the InstanceErased event.
        let mut published = (String::new(), Vec::new());
        for _ in 0..200 {
            published = stream_dump(url, &id).await;
            if published.1.contains(&"InstanceErased".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (text, types) = published;
        assert_eq!(types, ["InstanceErased"], "{text}");
        assert!(
            markers.found_in(&text).is_empty(),
            "{:?} in the stream:\n{text}",
            markers.found_in(&text)
        );
        assert!(
            text.contains("still here"),
            "the other instance's messages stay"
        );
    }

    // The other instance is untouched.
    let kept = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: other.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(js(&kept.state), json!({"note": "still here", "n": 1}));
    assert!(!kept.erased);
    let at_one = c
        .queries
        .get_state_at_version(pb::GetStateAtVersionRequest {
            instance_id: other.id.clone(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(js(&at_one.state), json!({"note": "keep me", "n": 1}));

    // An erased instance's empty state is not a current state: a schema the other instance
    // satisfies is accepted, though `{}` breaks it.
    let updated = c
        .types
        .update_entity_type(pb::UpdateEntityTypeRequest {
            entity_type: "person".into(),
            schema: Some(st(json!({"type": "object", "required": ["n"]}))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.applied);
    assert_eq!(updated.checked_instances, 1, "only the other instance");

    // The former external id is free: a new instance may take it.
    let reborn = c
        .create_instance("person", &markers.external_id, json!({"n": 1}))
        .await;
    assert_ne!(reborn.id, id);
    assert_eq!(reborn.version, 1);
    server.stop().await;
}

/// Writers keep appending to an instance while it is erased: each of their events either
/// committed before the erasure (and is erased with the rest) or is refused after it; the
/// history stays 1..N without a gap, ending with `InstanceErased`, and no value of any writer
/// is left in the answers, the cache, the stream or the store.
async fn an_erasure_racing_writers_erases_all_they_committed_and_refuses_the_rest(
    backend: Backend,
) {
    let markers = Markers::new();
    let Served {
        redis,
        nats: _nats,
        nats_url,
        store,
        server,
    } = served(backend, "5").await;
    let mut c = server.clients().await;
    c.create_type("person", json!({"type": "object"})).await;
    let id = c
        .create_instance(
            "person",
            &markers.external_id,
            json!({"email": markers.named("init")}),
        )
        .await
        .id;

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = c.clone();
            let id = id.clone();
            let payload = markers.named("payload");
            let external_id = markers.external_id.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for n in 0..5000 {
                    let written = c
                        .apply(
                            &id,
                            "Noted",
                            json!({ "note": format!("{payload}-{w}-{n}") }),
                        )
                        .await;
                    match written {
                        Ok(r) => versions.push(r.event.unwrap().version),
                        Err(refused) => return (versions, refused),
                    }
                    // Every writer reads too, by external id: a miss fills the cache from
                    // the store, racing the erasure's scrub.
                    c.instances
                        .get_current_state(pb::GetCurrentStateRequest {
                            entity_type: "person".into(),
                            external_id: external_id.clone(),
                        })
                        .await
                        .ok();
                }
                panic!("writer {w} was never refused");
            })
        })
        .collect();
    // Erase in the middle of the writes.
    loop {
        let got = c
            .instances
            .get_current_state(pb::GetCurrentStateRequest {
                entity_type: "person".into(),
                external_id: markers.external_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .instance
            .unwrap();
        if got.version >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let erased = c
        .instances
        .erase_instance(pb::EraseInstanceRequest {
            instance_id: id.clone(),
            reason: None,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    let mut committed = Vec::new();
    for w in writers {
        let (versions, refused) = w.await.unwrap();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("erased"), "{refused:?}");
        committed.extend(versions);
    }
    committed.sort_unstable();
    assert_eq!(
        committed,
        (2..erased.version).collect::<Vec<_>>(),
        "every version before the erasure was a writer's, none after"
    );
    let history = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: id.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=erased.version).collect::<Vec<_>>()
    );
    assert_eq!(history.last().unwrap().event_type, "InstanceErased");
    let answers = format!("{history:?}");
    assert!(markers.found_in(&answers).is_empty(), "{answers}");
    let cached = redis_dump(&redis);
    assert!(
        markers.found_in(&cached).is_empty(),
        "{:?} in redis:\n{cached}",
        markers.found_in(&cached)
    );
    let stored = store_dump(&store).await;
    assert!(
        markers.found_in_bytes(&stored).is_empty(),
        "{:?} in the store",
        markers.found_in_bytes(&stored)
    );
    if let Some(url) = &nats_url {
        let mut published = (String::new(), Vec::new());
        for _ in 0..200 {
            published = stream_dump(url, &id).await;
            if published.1.contains(&"InstanceErased".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (text, types) = published;
        assert_eq!(types, ["InstanceErased"], "{text}");
        assert!(markers.found_in(&text).is_empty(), "{text}");
    }
    server.stop().await;
}
