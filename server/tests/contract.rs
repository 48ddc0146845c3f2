//! The contract of the store ports (`EventStore`, `HistoryReader`), written once and run against
//! every implementation: PostgreSQL (a fresh database per test) and the embedded SQLite store
//! (a fresh directory per test). A behaviour that differs between the backends fails here.
//!
//! Each contract is a generic async function taking a [`Backend`]; it only sees the three ports
//! (`Arc<dyn EventStore>`, `Arc<dyn HistoryReader>`, `Arc<dyn AnalyticsReader>`). The
//! `contract!` macro at the bottom runs each one in `postgres::` and `embedded::`.
//! `embedded_only::` checks what only the embedded store has: a directory, a file, reopening.
//!
//! The same is done for the other ports: `StateCache` against Redis (a private redis-server per
//! test) and the in-memory cache (`redis_cache::`, `memory_cache::`, plus `redis_only::` for
//! expiry and outages), and `EventBus` against NATS (a private nats-server per test) and the
//! in-process bus (`nats_bus::`, `local_bus::`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{TestDb, json};
use futures::StreamExt;
use serde_json::Value;
use temporal_state_server::adapters::embedded::{DB_FILE, EmbeddedError, EmbeddedStore};
use temporal_state_server::adapters::memory::{LocalBus, MemoryCache};
use temporal_state_server::adapters::nats::{NatsBus, WireEvent, subject as nats_subject};
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
use temporal_state_server::adapters::redis::{RedisCache, RedisCacheConfig};
use temporal_state_server::domain::analytics::FieldStats;
use temporal_state_server::domain::{ApplyMode, DomainError, State, apply_event};
use temporal_state_server::ports::Decision;
use temporal_state_server::ports::{
    ActiveInstance, AnalyticsReader, AppendOutcome, AppendRequest, BusError, EntityTypeRecord,
    EventBus, EventRecord, EventStore, EventTypeCount, Head, HistoryFilter, HistoryReader,
    InstanceRecord, LiveEvent, LiveFilter, LiveStream, NewInstance, PendingEvent, RecordedKey,
    Snapshot, StateCache, StoreError, TimeRange, TypeKey, TypeSummary,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures

#[derive(Debug, Clone, Copy)]
enum Backend {
    Postgres,
    Embedded,
}

/// Both ports of one fresh store; whatever keeps its storage alive is dropped last.
struct Fixture {
    store: Arc<dyn EventStore>,
    history: Arc<dyn HistoryReader>,
    analytics: Arc<dyn AnalyticsReader>,
    _storage: Storage,
}

enum Storage {
    Postgres(#[allow(dead_code)] TestDb),
    Embedded(#[allow(dead_code)] tempfile::TempDir),
}

impl Backend {
    async fn open(self, snapshot_interval: i64) -> Fixture {
        match self {
            Backend::Postgres => {
                let db = TestDb::create().await;
                let store = PgStore::new(&PgStoreConfig {
                    url: db.url.clone(),
                    pool_size: 24,
                    snapshot_interval,
                    connect_timeout: Duration::from_secs(5),
                })
                .expect("PgStore::new");
                store.migrate().await.expect("migrate");
                let store = Arc::new(store);
                Fixture {
                    store: store.clone(),
                    history: store.clone(),
                    analytics: store,
                    _storage: Storage::Postgres(db),
                }
            }
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store =
                    EmbeddedStore::open(dir.path(), snapshot_interval).expect("open embedded");
                let store = Arc::new(store);
                Fixture {
                    store: store.clone(),
                    history: store.clone(),
                    analytics: store,
                    _storage: Storage::Embedded(dir),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn obj(v: Value) -> State {
    v.as_object().expect("a JSON object").clone()
}

fn micros_only(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos().is_multiple_of(1000)
}

/// One event an append should decide.
#[derive(Debug, Clone)]
struct Ev {
    id: String,
    /// A client-supplied idempotency key (looked up), or a server-generated id (not looked up).
    client: bool,
    event_type: String,
    payload: State,
    metadata: State,
    mode: ApplyMode,
    occurred_at: Option<DateTime<Utc>>,
}

fn ev(event_type: &str, payload: Value) -> Ev {
    Ev {
        id: Uuid::now_v7().to_string(),
        client: false,
        event_type: event_type.into(),
        payload: obj(payload),
        metadata: State::new(),
        mode: ApplyMode::MergePatch,
        occurred_at: None,
    }
}

fn keyed(key: &str, event_type: &str, payload: Value) -> Ev {
    Ev {
        id: key.into(),
        client: true,
        ..ev(event_type, payload)
    }
}

/// Counts the decisions made and remembers the last head seen.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    head: std::sync::Mutex<Option<(Uuid, i64, State)>>,
}

impl Seen {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn head(&self) -> (Uuid, i64, State) {
        self.head
            .lock()
            .unwrap()
            .clone()
            .expect("a decision was made")
    }
}

/// Appends `evs` as the application would: each payload applied to the locked head.
async fn append_seen(
    store: &dyn EventStore,
    instance_id: Uuid,
    expected_version: Option<i64>,
    evs: Vec<Ev>,
    seen: Arc<Seen>,
) -> Result<AppendOutcome, StoreError> {
    let client_event_ids = evs
        .iter()
        .filter(|e| e.client)
        .map(|e| e.id.clone())
        .collect();
    store
        .append(
            AppendRequest {
                instance_id,
                expected_version,
                client_event_ids,
            },
            Box::new(move |head: &Head| {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                *seen.head.lock().unwrap() =
                    Some((head.entity_type_id, head.version, head.state.clone()));
                let mut state = head.state.clone();
                let mut pending = Vec::new();
                for (i, e) in evs.iter().enumerate() {
                    state = apply_event(&state, &e.payload, e.mode)?;
                    let version = head.version + 1 + i as i64;
                    pending.push(PendingEvent {
                        event_id: e.id.clone(),
                        event_type: e.event_type.clone(),
                        payload: e.payload.clone(),
                        metadata: e.metadata.clone(),
                        mode: e.mode,
                        occurred_at: e.occurred_at,
                        snapshot: (version % head.snapshot_interval == 0).then(|| state.clone()),
                        content_hash: vec![i as u8],
                    });
                }
                Ok(Decision {
                    events: pending,
                    state,
                })
            }),
        )
        .await
}

async fn append(
    store: &dyn EventStore,
    instance_id: Uuid,
    expected_version: Option<i64>,
    evs: Vec<Ev>,
) -> Result<AppendOutcome, StoreError> {
    append_seen(
        store,
        instance_id,
        expected_version,
        evs,
        Arc::new(Seen::default()),
    )
    .await
}

/// Appends and expects the events to be stored.
async fn appended(
    store: &dyn EventStore,
    instance_id: Uuid,
    evs: Vec<Ev>,
) -> (Vec<EventRecord>, State) {
    match append(store, instance_id, None, evs).await {
        Ok(AppendOutcome::Appended { events, state }) => (events, state),
        other => panic!("expected Appended, got {other:?}"),
    }
}

fn expect_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(m)) => assert_eq!(m, what),
        other => panic!("expected NotFound({what:?}), got {other:?}"),
    }
}

fn expect_already_exists<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::AlreadyExists(m)) => assert_eq!(m, what),
        other => panic!("expected AlreadyExists({what:?}), got {other:?}"),
    }
}

async fn new_type(store: &dyn EventStore, name: &str) -> EntityTypeRecord {
    store
        .create_entity_type(Uuid::now_v7(), name, "", &obj(json!({"type": "object"})))
        .await
        .expect("create entity type")
}

fn new_instance(entity_type_id: Uuid, external_id: &str, state: Value) -> NewInstance {
    NewInstance {
        id: Uuid::now_v7(),
        entity_type_id,
        external_id: external_id.into(),
        initial_state: obj(state),
        metadata: State::new(),
        event_id: Uuid::now_v7().to_string(),
        content_hash: vec![0],
    }
}

/// What a store reports of recorded events when their ids come back.
fn keys_of(events: &[EventRecord]) -> Vec<(String, Uuid, i64)> {
    events
        .iter()
        .map(|e| (e.event_id.clone(), e.instance_id, e.version))
        .collect()
}

fn key_triples(keys: &[RecordedKey]) -> Vec<(String, Uuid, i64)> {
    keys.iter()
        .map(|k| (k.event_id.clone(), k.instance_id, k.version))
        .collect()
}

async fn instance(
    store: &dyn EventStore,
    entity_type_id: Uuid,
    external_id: &str,
    state: Value,
) -> (InstanceRecord, EventRecord) {
    store
        .create_instance(new_instance(entity_type_id, external_id, state))
        .await
        .expect("create instance")
}

async fn all_events(history: &dyn HistoryReader, id: Uuid) -> Vec<EventRecord> {
    history
        .events(id, &HistoryFilter::default(), 100_000)
        .await
        .expect("history")
}

fn versions(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.version).collect()
}

/// Long enough for two appends to get different recorded_at microseconds.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

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
        .create_entity_type(id, "player", "Players of the game", &schema)
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
        f.store.list_instances(a.id, None, 10).await.unwrap(),
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
        ids(s.list_instances(t.id, None, 100).await.unwrap()),
        ["10", "9", "B", "a", "a-1", "a_1", "b", "é"]
    );
    assert_eq!(
        ids(s.list_instances(t.id, None, 3).await.unwrap()),
        ["10", "9", "B"]
    );
    assert_eq!(
        ids(s.list_instances(t.id, Some("B"), 3).await.unwrap()),
        ["a", "a-1", "a_1"]
    );
    assert_eq!(
        ids(s.list_instances(t.id, Some("a_1"), 3).await.unwrap()),
        ["b", "é"]
    );
    assert!(
        s.list_instances(t.id, Some("é"), 3)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = s.list_instances(t.id, None, 1).await.unwrap();
    assert_eq!(listed[0], s.find_instance(t.id, "10").await.unwrap());
    assert!(
        s.list_instances(Uuid::now_v7(), None, 10)
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
            },
            Box::new(|_head: &Head| {
                Ok(Decision {
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
                        },
                        Box::new(move |head: &Head| {
                            let count = head.state["count"].as_i64().unwrap();
                            let payload = obj(json!({ "count": count + 1, "by": task }));
                            let state = apply_event(&head.state, &payload, ApplyMode::MergePatch)?;
                            let version = head.version + 1;
                            Ok(Decision {
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

// ---------------------------------------------------------------------------------------------
// Analytics
//
// One dataset, built through the EventStore port: a `player` type whose instances hold every
// kind of value (numbers, strings, booleans, nulls, objects, arrays, missing fields, keys that
// need escaping), events of several types spread over days of occurred_at (with ties in every
// ranking), folded from snapshots (interval 3); an `order` type whose events must never leak
// into `player`'s figures; an `empty` type. Every answer is checked against a naive
// computation over the stored history.

struct Dataset {
    f: Fixture,
    player: EntityTypeRecord,
    order: EntityTypeRecord,
    empty: EntityTypeRecord,
    /// 2024-03-04T00:00:00Z; phase-one events occur over the five days after it.
    base: DateTime<Utc>,
    /// A recorded time between the two loading phases.
    between: DateTime<Utc>,
    /// Every event of `player`, as stored.
    events: Vec<EventRecord>,
    /// Every event of `order`, as stored.
    order_events: Vec<EventRecord>,
    /// The current `player` instances.
    instances: Vec<InstanceRecord>,
    /// The instance created in phase two.
    late: InstanceRecord,
}

const EVENT_TYPES: [&str; 6] = [
    "ScoreIncreased",
    "LevelUp",
    "AchievementUnlocked",
    "Zeta",
    "alpha",
    "B",
];

fn player_states() -> Vec<Value> {
    vec![
        json!({
            "score": 10, "name": "alice", "active": true, "ratio": 0.25, "tags": ["a", "b", "c"],
            "nested": {"level": 3, "a.b": "dot", "deep": {"x": [1, {"y": "z"}]}},
            "q\"uote": 1, "br[0]": "x", "sl/ash": 2, "til~de": "t", "": "empty", "ключ": "знач",
            "mixed": 5, "big": 9007199254740993_u64, "zero": -0.0, "ctl": "\u{1}"
        }),
        json!({
            "score": 20.5, "name": "bob", "active": false, "ratio": -1.5, "tags": [],
            "nested": {"level": null, "a.b": "dot"}, "q\"uote": "v", "sl/ash": 2, "": "empty",
            "mixed": "5", "big": 1e100, "zero": 0, "ctl": "\t"
        }),
        json!({
            "score": -3, "name": "alice", "active": true, "tags": ["b"], "nested": null,
            "br[0]": "x", "til~de": "t", "mixed": true, "big": 1, "ctl": "A"
        }),
        json!({
            "name": "Bob", "active": null, "mixed": null, "": false, "ctl": "~",
            "nested": {"level": 7.75, "deep": {"x": [2, {"y": "w"}]}}
        }),
        json!({
            "score": 0, "name": "a\"b", "tags": ["x", "y"], "mixed": [1, 2], "ключ": "знач",
            "sl/ash": 4.5
        }),
        json!({"name": "é", "mixed": {"k": 1}, "score": 2.75, "active": false, "til~de": "u"}),
    ]
}

async fn create_with_random_id(
    store: &dyn EventStore,
    entity_type_id: Uuid,
    external_id: &str,
    state: Value,
) -> InstanceRecord {
    // Random ids, so that id order (the tie-break) is neither creation nor external id order.
    let new = NewInstance {
        id: Uuid::new_v4(),
        ..new_instance(entity_type_id, external_id, state)
    };
    store.create_instance(new).await.expect("create instance").0
}

async fn dataset(b: Backend) -> Dataset {
    let f = b.open(3).await;
    let s = f.store.as_ref();
    let player = new_type(s, "player").await;
    let order = new_type(s, "order").await;
    let empty = new_type(s, "empty").await;
    let base = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();

    let mut ids = Vec::new();
    for (k, state) in player_states().into_iter().enumerate() {
        let inst = create_with_random_id(s, player.id, &format!("player-{}", 9 - k), state).await;
        ids.push(inst.id);
    }
    // Phase one: instance k gets counts[k] events of every apply mode; occurred_at spread over
    // five days (the first one exactly at `base`), event types in turn, so they tie.
    let counts = [5_usize, 7, 7, 3, 7, 1];
    let mut n: i64 = 0;
    for (k, id) in ids.iter().enumerate() {
        let mut evs = Vec::new();
        for j in 0..counts[k] {
            let e = if k == 4 && j == counts[k] - 1 {
                Ev {
                    mode: ApplyMode::Replace,
                    ..ev(
                        "",
                        json!({"name": "a\"b", "score": 1.5, "mixed": [1, 2], "replaced": true}),
                    )
                }
            } else {
                match j % 3 {
                    0 => ev(
                        "",
                        json!({"score": (k * 100 + j) as f64 / 4.0, "counter": j}),
                    ),
                    1 => Ev {
                        mode: ApplyMode::JsonPatch,
                        ..ev(
                            "",
                            json!({"patch": [{"op": "add", "path": "/counter", "value": j * 10}]}),
                        )
                    },
                    _ => ev("", json!({"active": j % 2 == 0, "ratio": null})),
                }
            };
            let minutes = (n * 7919) % (5 * 24 * 60);
            evs.push(Ev {
                event_type: EVENT_TYPES[(n % 6) as usize].into(),
                occurred_at: Some(
                    base + TimeDelta::minutes(minutes) + TimeDelta::microseconds(n * 1001),
                ),
                ..e
            });
            n += 1;
        }
        if k == 3 {
            // Exactly on the end of the five days, and before the Unix epoch.
            let mut edge = ev("", json!({"edge": 1}));
            edge.event_type = "B".into();
            edge.occurred_at = Some(base + TimeDelta::days(5));
            evs.push(edge);
            let mut old = ev("", json!({"edge": 2}));
            old.event_type = "Zeta".into();
            old.occurred_at = Some(Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap());
            evs.push(old);
        }
        // Two appends, so that recorded times differ within an instance.
        let second = evs.split_off(evs.len() / 2);
        if !evs.is_empty() {
            appended(s, *id, evs).await;
        }
        tick().await;
        appended(s, *id, second).await;
    }
    tick().await;
    let between = Utc::now();
    tick().await;

    // Phase two: changes that values as of `between` must not see, and a new instance.
    appended(
        s,
        ids[0],
        vec![ev("Renamed", json!({"name": "zed", "score": 5000}))],
    )
    .await;
    appended(
        s,
        ids[1],
        vec![ev("ScoreIncreased", json!({"active": null}))],
    )
    .await;
    appended(
        s,
        ids[2],
        vec![Ev {
            mode: ApplyMode::JsonPatch,
            ..ev(
                "Renamed",
                json!({"patch": [{"op": "remove", "path": "/name"}]}),
            )
        }],
    )
    .await;
    let late = create_with_random_id(
        s,
        player.id,
        "player-late",
        json!({"name": "alice", "score": 7, "tags": ["z"]}),
    )
    .await;
    appended(s, late.id, vec![ev("Renamed", json!({"name": "zed"}))]).await;
    // Another type's events, over the same days and with the same event types.
    let o = create_with_random_id(s, order.id, "order-1", json!({"total": 5})).await;
    for day in 0..4 {
        let mut e = ev(EVENT_TYPES[day % 2], json!({"total": 6 + day}));
        e.occurred_at = Some(base + TimeDelta::days(day as i64) + TimeDelta::hours(5));
        appended(s, o.id, vec![e]).await;
    }

    let instances = s.list_instances(player.id, None, 1000).await.unwrap();
    assert_eq!(instances.len(), 7);
    let mut events = Vec::new();
    for i in &instances {
        events.extend(all_events(f.history.as_ref(), i.id).await);
    }
    let order_events = all_events(f.history.as_ref(), o.id).await;
    let late = s.get_instance(late.id).await.unwrap();
    Dataset {
        f,
        player,
        order,
        empty,
        base,
        between,
        events,
        order_events,
        instances,
        late,
    }
}

/// A time as the stores compare it: sub-microsecond digits truncated toward PostgreSQL's epoch
/// (2000-01-01), as tokio-postgres sends it.
fn stored_micros(t: DateTime<Utc>) -> i64 {
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    (t - epoch).num_microseconds().unwrap() + epoch.timestamp_micros()
}

fn in_range(t: DateTime<Utc>, range: TimeRange) -> bool {
    let t = t.timestamp_micros();
    range.start.is_none_or(|s| t >= stored_micros(s))
        && range.end.is_none_or(|e| t < stored_micros(e))
}

impl Dataset {
    /// Ranges with both, one or no side, edges exactly on events, sub-microsecond edges, empty
    /// ranges and one before the Unix epoch.
    fn ranges(&self) -> Vec<TimeRange> {
        let day = TimeDelta::days(1);
        let us = TimeDelta::microseconds(1);
        let ns = TimeDelta::nanoseconds(1);
        let base = self.base;
        let r = |start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>| TimeRange { start, end };
        let epoch = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        vec![
            r(None, None),
            r(Some(base + day), Some(base + day * 3)),
            r(Some(base + day * 2), None),
            r(None, Some(base + day * 2)),
            r(Some(base), Some(base + day * 5)),
            r(Some(base + day * 5), Some(base + day * 5 + us)),
            r(Some(base + ns * 999), Some(base + us)),
            r(Some(base + us), Some(base + day * 5 + ns * 999)),
            r(Some(base + day), Some(base + day)),
            r(Some(base + day * 3650), None),
            r(Some(epoch - day), Some(epoch)),
            r(Some(Utc::now() - TimeDelta::hours(1)), None),
        ]
    }
}

fn naive_counts(events: &[EventRecord], range: TimeRange) -> Vec<EventTypeCount> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events.iter().filter(|e| in_range(e.occurred_at, range)) {
        *counts.entry(&e.event_type).or_default() += 1;
    }
    let mut v: Vec<EventTypeCount> = counts
        .into_iter()
        .map(|(t, count)| EventTypeCount {
            event_type: t.to_string(),
            count,
        })
        .collect();
    // Byte order for ties: "B" < "LevelUp" < "Zeta" < "alpha" (a locale would differ).
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.event_type.as_bytes().cmp(b.event_type.as_bytes()))
    });
    v
}

async fn analytics_event_counts_follow_occurred_at(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let whole = naive_counts(&d.events, TimeRange::default());
    assert!(
        whole.windows(2).any(|w| w[0].count == w[1].count),
        "the dataset must have ties: {whole:?}"
    );
    for range in d.ranges() {
        assert_eq!(
            a.event_counts(d.player.id, range).await.unwrap(),
            naive_counts(&d.events, range),
            "player {range:?}"
        );
        assert_eq!(
            a.event_counts(d.order.id, range).await.unwrap(),
            naive_counts(&d.order_events, range),
            "order {range:?}"
        );
    }
    assert!(
        a.event_counts(d.empty.id, TimeRange::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.event_counts(Uuid::now_v7(), TimeRange::default())
            .await
            .unwrap()
            .is_empty()
    );
}

fn naive_series(
    events: &[EventRecord],
    interval: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    event_type: Option<&str>,
) -> Vec<(DateTime<Utc>, i64)> {
    let (s, e) = (start.timestamp_micros(), end.timestamp_micros());
    let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
    for ev in events {
        let t = ev.occurred_at.timestamp_micros();
        if t >= s && t < e && event_type.is_none_or(|x| x == ev.event_type) {
            *buckets.entry((t - s) / interval).or_default() += 1;
        }
    }
    buckets
        .into_iter()
        .map(|(k, n)| (start + TimeDelta::microseconds(k * interval), n))
        .collect()
}

type SeriesCase = (i64, DateTime<Utc>, DateTime<Utc>, Option<&'static str>);

async fn analytics_time_series_buckets_from_start(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let (base, day, hour) = (d.base, TimeDelta::days(1), 3_600_000_000_i64);
    let epoch = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
    // (interval in microseconds, start, end, event type)
    let cases: Vec<SeriesCase> = vec![
        (6 * hour, base, base + day * 5, None),
        (6 * hour, base, base + day * 5, Some("LevelUp")),
        (24 * hour, base - day, base + day * 6, None),
        // Buckets not aligned to anything, an interval that does not divide the range.
        (
            7_919_000_013,
            base + TimeDelta::minutes(37) + TimeDelta::microseconds(5),
            base + day * 3,
            None,
        ),
        // The end is exclusive and the start inclusive, to the microsecond.
        (
            hour,
            base + TimeDelta::microseconds(1),
            base + day * 5,
            None,
        ),
        (
            hour,
            base,
            base + day * 5 + TimeDelta::microseconds(1),
            Some("B"),
        ),
        (1, base, base + day * 5, Some("B")),
        (
            100 * 365 * 24 * hour,
            epoch - day * 365,
            Utc::now() + day,
            None,
        ),
        (24 * hour, epoch - day, epoch + day, None),
        (6 * hour, base, base + day * 5, Some("Nope")),
        (6 * hour, base + day * 3650, base + day * 3651, None),
    ];
    for (interval, start, end, event_type) in cases {
        let got = a
            .time_series(d.player.id, interval, start, end, event_type)
            .await
            .unwrap();
        let naive = naive_series(&d.events, interval, start, end, event_type);
        assert_eq!(got, naive, "{interval}us {start}..{end} {event_type:?}");
        let got = a
            .time_series(d.order.id, interval, start, end, event_type)
            .await
            .unwrap();
        let naive = naive_series(&d.order_events, interval, start, end, event_type);
        assert_eq!(
            got, naive,
            "order {interval}us {start}..{end} {event_type:?}"
        );
    }
    // The dataset exercises what it should: several non-empty buckets, and gaps between them.
    let series = naive_series(&d.events, 6 * hour, base, base + day * 5, None);
    assert!(series.len() > 5 && series.len() < 20, "{series:?}");
    assert!(
        a.time_series(d.empty.id, hour, base, base + day, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The statistics of `values` (None = field absent), computed the obvious way.
fn naive_stats(values: &[Option<Value>], top: usize) -> FieldStats {
    let present: Vec<&Value> = values.iter().flatten().collect();
    let numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
    let sum = (!numbers.is_empty()).then(|| numbers.iter().sum::<f64>());
    let mut frequency: BTreeMap<String, (Value, i64)> = BTreeMap::new();
    for v in present.iter().filter(|v| v.is_string() || v.is_boolean()) {
        frequency
            .entry(v.to_string())
            .or_insert(((*v).clone(), 0))
            .1 += 1;
    }
    // BTreeMap iterates in byte order of the JSON text; a stable sort by count keeps it for ties.
    let mut ranked: Vec<(Value, i64)> = frequency.into_values().collect();
    ranked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    ranked.truncate(top);
    FieldStats {
        count: present.len() as i64,
        missing: (values.len() - present.len()) as i64,
        min: numbers.iter().copied().reduce(f64::min),
        max: numbers.iter().copied().reduce(f64::max),
        sum,
        mean: sum.map(|s| s / numbers.len() as f64),
        top_values: ranked,
    }
}

fn pointer_value(state: &State, pointer: &str) -> Option<Value> {
    Value::Object(state.clone()).pointer(pointer).cloned()
}

async fn analytics_field_stats_over_current_states(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let states: Vec<&State> = d.instances.iter().map(|i| &i.state).collect();
    let pointers = [
        "/score",
        "/name",
        "/active",
        "/ratio",
        "/mixed",
        "/counter",
        "/big",
        "/zero",
        "/ctl",
        "/nested",
        "/nested/level",
        "/nested/a.b",
        "/nested/deep/x/1/y",
        "/nested/deep/x/0",
        "/tags",
        "/tags/0",
        "/tags/1",
        "/tags/9",
        "/q\"uote",
        "/br[0]",
        "/sl~1ash",
        "/til~0de",
        "/",
        "/ключ",
        "/score/x",
        "/name/0",
        "/missing",
        "/missing/deeper",
    ];
    for pointer in pointers {
        let values: Vec<Option<Value>> = states.iter().map(|s| pointer_value(s, pointer)).collect();
        for top in [10, 2, 0] {
            let got = a.field_stats(d.player.id, pointer, top).await.unwrap();
            assert_eq!(got, naive_stats(&values, top), "{pointer} top {top}");
        }
    }
    // Array indices are read as PostgreSQL's `#>` reads them: negative ones count from the end,
    // leading zeros, a sign and leading whitespace are accepted (unlike the RFC 6901 lookup of
    // the as_of path below, which finds nothing there).
    let element = |f: fn(&[Value]) -> Option<&Value>| -> Vec<Option<Value>> {
        states
            .iter()
            .map(|s| {
                s.get("tags")
                    .and_then(Value::as_array)
                    .and_then(|t| f(t))
                    .cloned()
            })
            .collect()
    };
    for (pointer, values) in [
        ("/tags/-1", element(|t| t.last())),
        (
            "/tags/-2",
            element(|t| t.len().checked_sub(2).and_then(|i| t.get(i))),
        ),
        ("/tags/01", element(|t| t.get(1))),
        ("/tags/+0", element(|t| t.first())),
        ("/tags/ 1", element(|t| t.get(1))),
        ("/tags/1 ", element(|_| None)),
        ("/tags/-0", element(|t| t.first())),
    ] {
        let got = a.field_stats(d.player.id, pointer, 10).await.unwrap();
        assert_eq!(got, naive_stats(&values, 10), "{pointer}");
    }
    // Ties among the top values are in byte order of their JSON text; nulls are present.
    let names = a.field_stats(d.player.id, "/name", 10).await.unwrap();
    assert_eq!(names.top_values[0], (json!("zed"), 2));
    assert_eq!(
        names.top_values[1..]
            .iter()
            .map(|(v, _)| v.clone())
            .collect::<Vec<_>>(),
        [json!("Bob"), json!("a\"b"), json!("bob"), json!("é")]
    );
    // By the JSON text, escapes included: `"A"` < `"\t"` < `"\u0001"` < `"~"` (the raw strings
    // would order the other way round).
    let ctl = a.field_stats(d.player.id, "/ctl", 10).await.unwrap();
    assert_eq!(
        ctl.top_values,
        [
            (json!("A"), 1),
            (json!("\t"), 1),
            (json!("\u{1}"), 1),
            (json!("~"), 1)
        ]
    );
    let active = a.field_stats(d.player.id, "/active", 10).await.unwrap();
    assert!(active.top_values.iter().all(|(v, _)| v.is_boolean()));
    let level = a
        .field_stats(d.player.id, "/nested/level", 10)
        .await
        .unwrap();
    assert_eq!(
        (level.count, level.missing),
        (3, 4),
        "a JSON null is present"
    );
    // PostgreSQL's numeric zero has no sign.
    let zero = a.field_stats(d.player.id, "/zero", 10).await.unwrap();
    for x in [zero.min, zero.max, zero.sum, zero.mean] {
        assert!(x == Some(0.0) && x.unwrap().is_sign_positive(), "{zero:?}");
    }
    // Other types, an empty type and an unknown one.
    let totals: Vec<Option<Value>> = vec![Some(json!(9))];
    assert_eq!(
        a.field_stats(d.order.id, "/total", 10).await.unwrap(),
        naive_stats(&totals, 10)
    );
    for id in [d.empty.id, Uuid::now_v7()] {
        assert_eq!(
            a.field_stats(id, "/score", 10).await.unwrap(),
            FieldStats::default()
        );
    }
}

/// The field in each instance's state as of `at` (recorded time), folded naively from every
/// event recorded by then, in instance id order.
fn naive_as_of(d: &Dataset, pointer: &str, at: DateTime<Utc>) -> Vec<Option<Value>> {
    let at = stored_micros(at);
    let mut by_instance: BTreeMap<String, State> = BTreeMap::new();
    for i in &d.instances {
        let mut events: Vec<&EventRecord> = d
            .events
            .iter()
            .filter(|e| e.instance_id == i.id && e.recorded_at.timestamp_micros() <= at)
            .collect();
        if events.is_empty() {
            continue;
        }
        events.sort_by_key(|e| e.version);
        let state = events.iter().fold(State::new(), |s, e| {
            apply_event(&s, &e.payload, e.mode).unwrap()
        });
        by_instance.insert(i.id.to_string(), state);
    }
    by_instance
        .values()
        .map(|s| pointer_value(s, pointer))
        .collect()
}

async fn analytics_field_values_as_of_fold_from_snapshots(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let created = d.late.created_at;
    let us = TimeDelta::microseconds(1);
    let ns = TimeDelta::nanoseconds(1);
    let moments = [
        d.base,
        d.between,
        created - us,
        created,
        created + ns * 999,
        created - ns,
        Utc::now() + TimeDelta::hours(1),
    ];
    let pointers = [
        "/score",
        "/name",
        "/counter",
        "/active",
        "/ratio",
        "/nested/level",
        "/tags/0",
        "/tags/-1",
        "/sl~1ash",
        "/",
        "/missing",
    ];
    for at in moments {
        for pointer in pointers {
            let got = a
                .field_stats_as_of(d.player.id, pointer, at, 10)
                .await
                .unwrap();
            let naive = naive_as_of(&d, pointer, at);
            assert_eq!(
                got,
                FieldStats::from_values(naive.iter().map(Option::as_ref), 10),
                "{pointer} as of {at}"
            );
        }
    }
    // What the moments select: nothing before any instance, six between the phases, the late
    // instance from its creation on, and the current states after everything.
    let count = |at| async move {
        let stats = a
            .field_stats_as_of(d.player.id, "/name", at, 10)
            .await
            .unwrap();
        stats.count + stats.missing
    };
    assert_eq!(count(d.base).await, 0);
    assert_eq!(count(d.between).await, 6);
    assert_eq!(count(created - us).await, 6);
    assert_eq!(count(created).await, 7);
    let mut current: Vec<&InstanceRecord> = d.instances.iter().collect();
    current.sort_by_key(|i| i.id.to_string());
    let now = Utc::now() + TimeDelta::hours(1);
    let current: Vec<Option<Value>> = current
        .iter()
        .map(|i| pointer_value(&i.state, "/score"))
        .collect();
    assert_eq!(
        a.field_stats_as_of(d.player.id, "/score", now, 10)
            .await
            .unwrap(),
        FieldStats::from_values(current.iter().map(Option::as_ref), 10)
    );
    assert_ne!(
        naive_as_of(&d, "/name", d.between),
        naive_as_of(&d, "/name", now),
        "phase two must change something"
    );
    assert_eq!(
        a.field_stats_as_of(d.empty.id, "/score", now, 10)
            .await
            .unwrap(),
        FieldStats::default()
    );
}

fn naive_most_active(d: &Dataset, range: TimeRange, limit: usize) -> Vec<ActiveInstance> {
    let mut per: HashMap<Uuid, (i64, DateTime<Utc>)> = HashMap::new();
    for e in d.events.iter().filter(|e| in_range(e.occurred_at, range)) {
        let entry = per.entry(e.instance_id).or_insert((0, e.occurred_at));
        entry.0 += 1;
        entry.1 = entry.1.max(e.occurred_at);
    }
    let mut v: Vec<ActiveInstance> = per
        .into_iter()
        .map(|(id, (n, last))| ActiveInstance {
            instance_id: id,
            external_id: d
                .instances
                .iter()
                .find(|i| i.id == id)
                .unwrap()
                .external_id
                .clone(),
            event_count: n,
            last_event_at: last,
        })
        .collect();
    // Ties by the id's lowercase text, byte by byte.
    v.sort_by(|a, b| {
        b.event_count
            .cmp(&a.event_count)
            .then_with(|| a.instance_id.to_string().cmp(&b.instance_id.to_string()))
    });
    v.truncate(limit);
    v
}

async fn analytics_most_active_ranks_with_ties_by_id(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let whole = naive_most_active(&d, TimeRange::default(), 100);
    assert!(
        whole
            .windows(2)
            .any(|w| w[0].event_count == w[1].event_count),
        "the dataset must have ties: {whole:?}"
    );
    for range in d.ranges() {
        for limit in [1, 2, 3, 100] {
            assert_eq!(
                a.most_active(d.player.id, range, limit).await.unwrap(),
                naive_most_active(&d, range, limit),
                "{range:?} limit {limit}"
            );
        }
    }
    let orders = a
        .most_active(d.order.id, TimeRange::default(), 10)
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].event_count, d.order_events.len() as i64);
    assert!(
        a.most_active(d.empty.id, TimeRange::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn naive_summary(instances: i64, events: &[EventRecord], since: DateTime<Utc>) -> TypeSummary {
    let mut types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
    types.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    types.dedup();
    TypeSummary {
        instance_count: instances,
        event_count: events.len() as i64,
        first_event_at: events.iter().map(|e| e.occurred_at).min(),
        last_event_at: events.iter().map(|e| e.occurred_at).max(),
        events_since: events
            .iter()
            .filter(|e| e.occurred_at.timestamp_micros() >= stored_micros(since))
            .count() as i64,
        event_types: types,
    }
}

async fn analytics_summary_totals(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let on_event = d.base + TimeDelta::days(5);
    for since in [
        d.base - TimeDelta::days(1000),
        d.base + TimeDelta::days(2),
        on_event,
        on_event + TimeDelta::nanoseconds(999),
        on_event + TimeDelta::microseconds(1),
        Utc::now() - TimeDelta::hours(24),
        Utc::now() + TimeDelta::days(1),
    ] {
        assert_eq!(
            a.summary(d.player.id, since).await.unwrap(),
            naive_summary(7, &d.events, since),
            "player since {since}"
        );
        assert_eq!(
            a.summary(d.order.id, since).await.unwrap(),
            naive_summary(1, &d.order_events, since),
            "order since {since}"
        );
    }
    let types = a.summary(d.player.id, d.base).await.unwrap().event_types;
    assert_eq!(
        types,
        [
            "AchievementUnlocked",
            "B",
            "InstanceCreated",
            "LevelUp",
            "Renamed",
            "ScoreIncreased",
            "Zeta",
            "alpha"
        ]
    );
    for id in [d.empty.id, Uuid::now_v7()] {
        assert_eq!(
            a.summary(id, d.base).await.unwrap(),
            TypeSummary {
                instance_count: 0,
                event_count: 0,
                first_event_at: None,
                last_event_at: None,
                events_since: 0,
                event_types: vec![],
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every contract, against every backend.

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )*
        }
    };
}

contract!(
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
    analytics_event_counts_follow_occurred_at,
    analytics_time_series_buckets_from_start,
    analytics_field_stats_over_current_states,
    analytics_field_values_as_of_fold_from_snapshots,
    analytics_most_active_ranks_with_ties_by_id,
    analytics_summary_totals,
);

// ---------------------------------------------------------------------------------------------
// StateCache: Redis (a redis-server of the test's own) and the in-memory cache.

#[derive(Debug, Clone, Copy)]
enum CacheBackend {
    Redis,
    Memory,
}

/// How long a Redis command may take before the cache gives up (the server's default).
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

struct CacheFixture {
    cache: Arc<dyn StateCache>,
    /// The redis-server, killed when the fixture is dropped.
    redis: Option<common::procs::Redis>,
}

impl CacheBackend {
    async fn open(self, ttl: Duration) -> CacheFixture {
        match self {
            CacheBackend::Redis => {
                let redis = common::procs::Redis::start();
                let cache = RedisCache::connect(&RedisCacheConfig {
                    url: redis.url(),
                    ttl,
                    command_timeout: REDIS_TIMEOUT,
                })
                .await
                .expect("connect to redis");
                CacheFixture {
                    cache: Arc::new(cache),
                    redis: Some(redis),
                }
            }
            CacheBackend::Memory => CacheFixture {
                cache: Arc::new(MemoryCache::default()),
                redis: None,
            },
        }
    }
}

fn cached(id: Uuid, entity_type_id: Uuid, external_id: &str, version: i64) -> InstanceRecord {
    let created = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(7);
    InstanceRecord {
        id,
        entity_type_id,
        entity_type_name: "player".into(),
        external_id: external_id.into(),
        state: obj(json!({
            "version": version,
            "nested": {"list": [1, "two", null, {"k": true}], "f": 1.5},
            "text": "héllo ✓ \"q\""
        })),
        version,
        created_at: created,
        updated_at: created + TimeDelta::seconds(version),
    }
}

/// The record under both keys: by id and by (entity type, external id).
async fn cached_both(
    cache: &dyn StateCache,
    r: &InstanceRecord,
) -> (Option<InstanceRecord>, Option<InstanceRecord>) {
    (
        cache.get(r.id).await.expect("get"),
        cache
            .get_by_external_id(r.entity_type_id, &r.external_id)
            .await
            .expect("get by external id"),
    )
}

async fn cache_misses_then_hits_by_both_keys(b: CacheBackend) {
    let f = b.open(Duration::from_secs(60)).await;
    let c = f.cache.as_ref();
    let (t, other) = (Uuid::now_v7(), Uuid::now_v7());
    let r = cached(Uuid::now_v7(), t, "p-1: with spaces/and:colons é", 3);
    assert_eq!(cached_both(c, &r).await, (None, None));

    c.put(&r).await.unwrap();
    assert_eq!(cached_both(c, &r).await, (Some(r.clone()), Some(r.clone())));
    // The same external id under another type, another external id, another id: misses.
    assert_eq!(
        c.get_by_external_id(other, &r.external_id).await.unwrap(),
        None
    );
    assert_eq!(c.get_by_external_id(t, "p-1").await.unwrap(), None);
    assert_eq!(c.get(Uuid::now_v7()).await.unwrap(), None);

    // Another instance with that external id under the other type is another entry.
    let s = cached(Uuid::now_v7(), other, &r.external_id, 1);
    c.put(&s).await.unwrap();
    assert_eq!(cached_both(c, &s).await, (Some(s.clone()), Some(s.clone())));
    assert_eq!(cached_both(c, &r).await, (Some(r.clone()), Some(r)));
}

async fn cache_never_replaces_a_newer_version(b: CacheBackend) {
    let f = b.open(Duration::from_secs(60)).await;
    let c = f.cache.as_ref();
    let (id, t) = (Uuid::now_v7(), Uuid::now_v7());
    let v5 = cached(id, t, "p-1", 5);
    c.put(&v5).await.unwrap();
    // Older: ignored.
    c.put(&cached(id, t, "p-1", 3)).await.unwrap();
    assert_eq!(
        cached_both(c, &v5).await,
        (Some(v5.clone()), Some(v5.clone()))
    );
    // As new, but different: the first one stays.
    let mut other_v5 = v5.clone();
    other_v5.state = obj(json!({"other": true}));
    c.put(&other_v5).await.unwrap();
    assert_eq!(
        cached_both(c, &v5).await,
        (Some(v5.clone()), Some(v5.clone()))
    );
    // Newer: replaces, under both keys.
    let v6 = cached(id, t, "p-1", 6);
    c.put(&v6).await.unwrap();
    assert_eq!(
        cached_both(c, &v6).await,
        (Some(v6.clone()), Some(v6.clone()))
    );
    c.put(&v5).await.unwrap();
    assert_eq!(cached_both(c, &v6).await, (Some(v6.clone()), Some(v6)));
}

/// A deterministic shuffle (an LCG; the order only has to be scrambled, not random).
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..items.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
    }
    items
}

async fn cache_concurrent_shuffled_puts_keep_the_newest(b: CacheBackend) {
    const INSTANCES: usize = 8;
    const VERSIONS: i64 = 40;
    const WRITERS: usize = 8;
    let f = b.open(Duration::from_secs(60)).await;
    let t = Uuid::now_v7();
    for round in 0..3_u64 {
        let ids: Vec<Uuid> = (0..INSTANCES).map(|_| Uuid::now_v7()).collect();
        let mut puts = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            for v in 1..=VERSIONS {
                puts.push(cached(*id, t, &format!("r{round}-{k}"), v));
            }
        }
        let puts = shuffled(puts, round + 1);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let cache = f.cache.clone();
            let mine: Vec<InstanceRecord> = puts.iter().skip(w).step_by(WRITERS).cloned().collect();
            tasks.push(tokio::spawn(async move {
                for r in mine {
                    cache.put(&r).await.expect("put");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for (k, id) in ids.iter().enumerate() {
            let newest = cached(*id, t, &format!("r{round}-{k}"), VERSIONS);
            assert_eq!(
                cached_both(f.cache.as_ref(), &newest).await,
                (Some(newest.clone()), Some(newest)),
                "round {round}, instance {k}"
            );
        }
    }
}

mod redis_only {
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_expire_after_the_ttl() {
        let f = CacheBackend::Redis.open(Duration::from_millis(300)).await;
        let c = f.cache.as_ref();
        let r = cached(Uuid::now_v7(), Uuid::now_v7(), "p-1", 2);
        c.put(&r).await.unwrap();
        assert_eq!(cached_both(c, &r).await, (Some(r.clone()), Some(r.clone())));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(cached_both(c, &r).await, (None, None));
        // Once expired, any version may be cached again.
        let older = cached(r.id, r.entity_type_id, "p-1", 1);
        c.put(&older).await.unwrap();
        assert_eq!(cached_both(c, &older).await.0, Some(older));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_redis_errs_promptly_and_recovers() {
        let mut f = CacheBackend::Redis.open(Duration::from_secs(60)).await;
        let c = f.cache.clone();
        let r = cached(Uuid::now_v7(), Uuid::now_v7(), "p-1", 1);
        c.put(&r).await.unwrap();
        f.redis.as_mut().unwrap().stop();
        // Every call answers Err, within the command timeout (plus scheduling slack).
        let limit = REDIS_TIMEOUT + Duration::from_secs(1);
        let mut slowest = Duration::ZERO;
        for _ in 0..3 {
            let started = Instant::now();
            assert!(c.get(r.id).await.is_err());
            slowest = slowest.max(started.elapsed());
            let started = Instant::now();
            assert!(c.get_by_external_id(r.entity_type_id, "p-1").await.is_err());
            slowest = slowest.max(started.elapsed());
            let started = Instant::now();
            let newer = cached(r.id, r.entity_type_id, "p-1", 2);
            assert!(c.put(&newer).await.is_err());
            slowest = slowest.max(started.elapsed());
        }
        eprintln!("slowest call while redis was down: {slowest:?}");
        assert!(slowest < limit, "a call took {slowest:?}");
        // Started again (empty: nothing is persisted), the same cache works again by itself.
        f.redis.as_mut().unwrap().restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.get(r.id).await {
                Ok(found) => {
                    assert_eq!(found, None);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("redis did not come back: {e}"),
            }
        }
        let v3 = cached(r.id, r.entity_type_id, "p-1", 3);
        c.put(&v3).await.unwrap();
        assert_eq!(
            cached_both(c.as_ref(), &v3).await,
            (Some(v3.clone()), Some(v3))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// EventBus: NATS (a nats-server of the test's own, fed the way the relay publishes) and the
// in-process bus (fed through `committed`).

#[derive(Debug, Clone, Copy)]
enum BusBackend {
    Nats,
    Local,
}

struct BusFixture {
    bus: Arc<dyn EventBus>,
    feed: Feed,
    _nats: Option<common::procs::Nats>,
}

enum Feed {
    Local,
    /// Publishes on the bus's own connection, so a subscription made before is in place.
    Nats(async_nats::Client),
}

impl BusBackend {
    async fn open(self, buffer: usize) -> BusFixture {
        match self {
            BusBackend::Nats => {
                let nats = common::procs::Nats::start();
                let client = async_nats::connect(nats.url())
                    .await
                    .expect("connect to nats");
                let bus =
                    NatsBus::new(client.clone(), Arc::new(tokio::sync::Notify::new()), buffer);
                BusFixture {
                    bus: Arc::new(bus),
                    feed: Feed::Nats(client),
                    _nats: Some(nats),
                }
            }
            BusBackend::Local => BusFixture {
                bus: Arc::new(LocalBus::new(buffer)),
                feed: Feed::Local,
                _nats: None,
            },
        }
    }
}

impl BusFixture {
    /// Commits `events`: hands them to the bus and, for NATS, publishes them as the relay does.
    async fn publish(&self, events: &[LiveEvent]) {
        self.bus.committed(events).await;
        if let Feed::Nats(client) = &self.feed {
            for live in events {
                let body = serde_json::to_vec(&WireEvent::from_live(live)).unwrap();
                client
                    .publish(
                        nats_subject(&live.entity_type_name, live.event.instance_id),
                        body.into(),
                    )
                    .await
                    .expect("publish");
            }
            client.flush().await.expect("flush");
        }
    }

    async fn subscribe(&self, filter: LiveFilter) -> LiveStream {
        let stream = self.bus.subscribe(filter).await.expect("subscribe");
        if let Feed::Nats(client) = &self.feed {
            // The subscription has reached the server before anything is published.
            client.flush().await.expect("flush");
        }
        stream
    }
}

fn live(type_name: &str, instance_id: Uuid, event_type: &str, version: i64) -> LiveEvent {
    let at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(version);
    LiveEvent {
        entity_type_name: type_name.into(),
        event: EventRecord {
            event_id: Uuid::now_v7().to_string(),
            instance_id,
            entity_type_id: Uuid::nil(),
            event_type: event_type.into(),
            version,
            payload: obj(json!({"v": version, "nested": {"x": [1, null]}})),
            metadata: obj(json!({"by": "contract"})),
            mode: ApplyMode::MergePatch,
            recorded_at: at,
            occurred_at: at - TimeDelta::days(1),
        },
    }
}

/// The next `n` items of a stream, each within a few seconds.
async fn next_events(stream: &mut LiveStream, n: usize, what: &str) -> Vec<LiveEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            other => panic!("{what}: after {} of {n} events: {other:?}", out.len()),
        }
    }
    out
}

/// Nothing more arrives for a while.
async fn assert_quiet(stream: &mut LiveStream, what: &str) {
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "{what}: unexpected {extra:?}");
}

async fn bus_filters_select_events(b: BusBackend) {
    let f = b.open(1024).await;
    let (a1, a2, b1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let before = vec![live("alpha_t", a1, "X", 1)];
    // Not delivered to anyone: published before they subscribed.
    f.publish(&before).await;

    let filter = |t: Option<&str>, i: Option<Uuid>, types: &[&str]| LiveFilter {
        entity_type_name: t.map(String::from),
        instance_id: i,
        event_types: types.iter().map(|s| s.to_string()).collect(),
    };
    let filters = vec![
        filter(None, None, &[]),
        filter(Some("alpha_t"), None, &[]),
        filter(None, Some(a2), &[]),
        filter(None, None, &["X", "Z"]),
        filter(Some("alpha_t"), None, &["Y"]),
        filter(Some("beta_t"), Some(b1), &["Z"]),
        filter(Some("alpha_t"), Some(b1), &[]),
        filter(None, None, &["Never"]),
    ];
    let mut streams = Vec::new();
    for flt in &filters {
        streams.push(f.subscribe(flt.clone()).await);
    }
    let mut published = Vec::new();
    for batch in 0..3 {
        let mut events = Vec::new();
        for j in 0..20_i64 {
            let n = batch * 20 + j;
            let (t, i) = match n % 3 {
                0 => ("alpha_t", a1),
                1 => ("alpha_t", a2),
                _ => ("beta_t", b1),
            };
            events.push(live(t, i, ["X", "Y", "Z"][(n % 5 % 3) as usize], n + 2));
        }
        f.publish(&events).await;
        published.extend(events);
    }
    for (flt, stream) in filters.iter().zip(streams.iter_mut()) {
        let expected: Vec<LiveEvent> = published
            .iter()
            .filter(|e| {
                flt.entity_type_name
                    .as_deref()
                    .is_none_or(|t| t == e.entity_type_name)
                    && flt.instance_id.is_none_or(|i| i == e.event.instance_id)
                    && (flt.event_types.is_empty() || flt.event_types.contains(&e.event.event_type))
            })
            .cloned()
            .collect();
        let what = format!("{flt:?}");
        let got = next_events(stream, expected.len(), &what).await;
        assert_eq!(got, expected, "{what}");
    }
    // And nothing more, for anyone (checked together: one quiet period for all).
    futures::future::join_all(
        filters
            .iter()
            .zip(streams.iter_mut())
            .map(|(flt, stream)| async move { assert_quiet(stream, &format!("{flt:?}")).await }),
    )
    .await;
    // The filters chosen select something, and not everything.
    assert!(published.iter().any(|e| e.event.instance_id == a2));
}

async fn bus_preserves_publication_order(b: BusBackend) {
    const EVENTS: i64 = 2000;
    let f = b.open(4096).await;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let filters = [
        LiveFilter::default(),
        LiveFilter {
            instance_id: Some(ids[1]),
            ..Default::default()
        },
        LiveFilter {
            entity_type_name: Some("beta_t".into()),
            ..Default::default()
        },
    ];
    let published: Vec<LiveEvent> = (0..EVENTS)
        .map(|n| {
            let k = (n * 7 % 4) as usize;
            live(if k < 2 { "alpha_t" } else { "beta_t" }, ids[k], "E", n + 1)
        })
        .collect();
    let mut readers = Vec::new();
    for flt in filters {
        let expected: Vec<LiveEvent> = published
            .iter()
            .filter(|e| {
                flt.entity_type_name
                    .as_deref()
                    .is_none_or(|t| t == e.entity_type_name)
                    && flt.instance_id.is_none_or(|i| i == e.event.instance_id)
            })
            .cloned()
            .collect();
        let mut stream = f.subscribe(flt).await;
        readers.push(tokio::spawn(async move {
            let got = next_events(&mut stream, expected.len(), "reader").await;
            assert!(got == expected, "events out of order or altered");
            got.len()
        }));
    }
    let started = std::time::Instant::now();
    for chunk in published.chunks(100) {
        f.publish(chunk).await;
    }
    let mut received = Vec::new();
    for r in readers {
        received.push(r.await.unwrap());
    }
    eprintln!(
        "{b:?}: {EVENTS} events to 3 subscribers ({received:?}) in {:?}",
        started.elapsed()
    );
}

/// Reads a subscriber that fell behind to its end: at most `buffer` of the published events, in
/// order, then `Lagged`, then the end of the stream.
async fn assert_cut_off(stream: &mut LiveStream, published: &[LiveEvent], buffer: usize) {
    let mut delivered = Vec::new();
    let lagged = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) => delivered.push(e),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!(
                "the stream ended without Lagged after {} events",
                delivered.len()
            ),
            Err(_) => panic!("the laggard got neither Lagged nor its end within 5 s"),
        }
    };
    assert!(
        matches!(lagged, BusError::Lagged(n) if n == buffer as u64),
        "{lagged:?}"
    );
    assert!(
        delivered.len() <= buffer,
        "{} events delivered",
        delivered.len()
    );
    // What was delivered is a subsequence of what was published, in order.
    let mut rest = published.iter();
    for e in &delivered {
        assert!(
            rest.any(|p| p == e),
            "event {} out of order or unknown",
            e.event.version
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(None) => {}
        other => panic!("the stream must end after Lagged, got {other:?}"),
    }
}

async fn bus_laggard_is_cut_off_without_blocking_anyone(b: BusBackend) {
    const BUFFER: usize = 8;
    let f = b.open(BUFFER).await;
    let instance = Uuid::now_v7();
    let mut laggard = f.subscribe(LiveFilter::default()).await;
    let mut attentive = f.subscribe(LiveFilter::default()).await;
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0_usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(item) = attentive.next().await {
            got.push(item.expect("the attentive subscriber never lags"));
            let _ = seen_tx.send(got.len());
            if got.len() == 80 {
                break;
            }
        }
        got
    });
    let mut published = Vec::new();
    let mut slowest = Duration::ZERO;
    for chunk in 0..20_i64 {
        let events: Vec<LiveEvent> = (0..4)
            .map(|j| live("alpha_t", instance, "E", chunk * 4 + j + 1))
            .collect();
        let started = std::time::Instant::now();
        f.publish(&events).await;
        slowest = slowest.max(started.elapsed());
        published.extend(events);
        // The attentive subscriber keeps up (so only the laggard falls behind).
        let total = published.len();
        tokio::time::timeout(Duration::from_secs(5), seen_rx.wait_for(|n| *n >= total))
            .await
            .expect("the attentive subscriber keeps receiving")
            .unwrap();
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a publication took {slowest:?}"
    );
    assert_eq!(reader.await.unwrap(), published);
    assert_cut_off(&mut laggard, &published, BUFFER).await;
}

async fn bus_laggard_reading_late_still_learns_it_lagged(b: BusBackend) {
    const BUFFER: usize = 4;
    let f = b.open(BUFFER).await;
    let instance = Uuid::now_v7();
    let mut laggard = f.subscribe(LiveFilter::default()).await;
    let published: Vec<LiveEvent> = (1..=20)
        .map(|v| live("alpha_t", instance, "E", v))
        .collect();
    let started = std::time::Instant::now();
    f.publish(&published).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publishing took {:?}",
        started.elapsed()
    );
    // Long past any grace period an adapter might give a slow reader.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_cut_off(&mut laggard, &published, BUFFER).await;
}

// ---------------------------------------------------------------------------------------------
// Every cache and bus contract, against every implementation.

macro_rules! contract_of {
    (
        $backend:ident, $first:ident => $a:ident, $second:ident => $b:ident;
        $($name:ident),* $(,)?
    ) => {
        mod $first {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::$backend::$a).await;
                }
            )*
        }
        mod $second {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::$backend::$b).await;
                }
            )*
        }
    };
}

contract_of!(
    CacheBackend, redis_cache => Redis, memory_cache => Memory;
    cache_misses_then_hits_by_both_keys,
    cache_never_replaces_a_newer_version,
    cache_concurrent_shuffled_puts_keep_the_newest,
);

contract_of!(
    BusBackend, nats_bus => Nats, local_bus => Local;
    bus_filters_select_events,
    bus_preserves_publication_order,
    bus_laggard_is_cut_off_without_blocking_anyone,
    bus_laggard_reading_late_still_learns_it_lagged,
);

// ---------------------------------------------------------------------------------------------
// What only the embedded store has: a directory, a file, and reopening them.

mod embedded_only {
    use std::path::Path;

    use super::*;

    fn open_err(dir: &Path) -> EmbeddedError {
        match EmbeddedStore::open(dir, 100) {
            Ok(_) => panic!("opening {} should fail", dir.display()),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (t, inst, events, snapshot_and_tail) = {
            let store = EmbeddedStore::open(dir.path(), 2).unwrap();
            assert_eq!(store.applied_migrations(), [1, 2, 3]);
            assert_eq!(store.path(), dir.path().join(DB_FILE));
            let t = new_type(&store, "player").await;
            let (inst, _) = instance(&store, t.id, "p-1", json!({"n": 0})).await;
            appended(
                &store,
                inst.id,
                vec![
                    keyed("k1", "N", json!({"n": 1})),
                    keyed("k2", "N", json!({"n": 2})),
                ],
            )
            .await;
            let inst = store.get_instance(inst.id).await.unwrap();
            let events = all_events(&store, inst.id).await;
            let sat = store.snapshot_and_tail(inst.id, 3).await.unwrap();
            (t, inst, events, sat)
        };
        // Reopened, as after a restart: everything is there, and the keys are still recorded.
        let store = EmbeddedStore::open(dir.path(), 2).unwrap();
        assert!(store.applied_migrations().is_empty());
        assert_eq!(
            store
                .get_entity_type(&TypeKey::Name("player".into()))
                .await
                .unwrap(),
            t
        );
        assert_eq!(store.get_instance(inst.id).await.unwrap(), inst);
        assert_eq!(all_events(&store, inst.id).await, events);
        assert_eq!(
            store.snapshot_and_tail(inst.id, 3).await.unwrap(),
            snapshot_and_tail
        );
        assert_eq!(snapshot_and_tail.0.map(|s| s.version), Some(2));
        let retry = append(
            &store,
            inst.id,
            None,
            vec![keyed("k2", "N", json!({"n": 2}))],
        )
        .await
        .unwrap();
        assert!(
            matches!(retry, AppendOutcome::AlreadyRecorded { ref keys } if keys[0].version == 3)
        );
        let (next, _) = appended(&store, inst.id, vec![ev("N", json!({"n": 3}))]).await;
        assert_eq!(versions(&next), [4]);
    }

    #[tokio::test]
    async fn a_missing_data_dir_is_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("data");
        let store = EmbeddedStore::open(&dir, 100).unwrap();
        assert!(dir.join(DB_FILE).is_file());
        store.ping().await.unwrap();
    }

    #[test]
    fn a_garbage_database_file_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DB_FILE);
        for garbage in [
            (0..8192_u32)
                .map(|i| (i * 7 + 3) as u8)
                .collect::<Vec<u8>>(),
            b"not a database at all".to_vec(),
        ] {
            std::fs::write(&file, &garbage).unwrap();
            let e = open_err(dir.path());
            let message = e.to_string();
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains("not a database"), "{message}");
            // Never recreated or overwritten.
            assert_eq!(std::fs::read(&file).unwrap(), garbage);
        }
    }

    #[test]
    fn a_foreign_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DB_FILE);
        {
            let conn = rusqlite::Connection::open(&file).unwrap();
            conn.execute_batch(
                "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');",
            )
            .unwrap();
        }
        let message = open_err(dir.path()).to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("another application"), "{message}");
        let conn = rusqlite::Connection::open(&file).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path(), 100).unwrap());
        {
            let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
                [],
            )
            .unwrap();
        }
        let message = open_err(dir.path()).to_string();
        assert!(message.contains("newer"), "{message}");
        assert!(message.contains(DB_FILE), "{message}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("data");
        std::fs::write(&file, b"precious").unwrap();
        let message = open_err(&file).to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("not a directory"), "{message}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");

        // A path through a regular file cannot be created either.
        let below = file.join("nested");
        let message = open_err(&below).to_string();
        assert!(message.contains(&below.display().to_string()), "{message}");
    }

    #[test]
    fn a_database_path_that_is_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(DB_FILE)).unwrap();
        let message = open_err(dir.path()).to_string();
        assert!(message.contains(DB_FILE), "{message}");
        assert!(message.contains("not a regular file"), "{message}");
    }

    /// Root ignores permissions, so where this runs as root the check runs the server binary
    /// as `nobody` (through `setpriv`), which is how a misconfigured deployment would meet it.
    #[test]
    fn an_unwritable_data_dir_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = root.path().join("readonly");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let missing = dir.join("data");
        if std::fs::write(dir.join("probe"), b"").is_err() {
            // Permissions apply to this process: the store itself must refuse.
            for path in [&dir, &missing] {
                let message = open_err(path).to_string();
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
            return;
        }
        let _ = std::fs::remove_file(dir.join("probe"));
        let as_nobody = |data_dir: &Path| {
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_temporal-state-server"))
                .arg("migrate")
                .env_remove("DATABASE_URL")
                .env("DATA_DIR", data_dir)
                .env("RUST_BACKTRACE", "0")
                .output()
        };
        let Ok(probe) = as_nobody(&dir) else {
            eprintln!("skipped: running as root and setpriv is not available");
            return;
        };
        let mut outputs = vec![probe];
        outputs.push(as_nobody(&missing).unwrap());
        for (path, out) in [&dir, &missing].into_iter().zip(outputs) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{stderr}");
            assert!(stderr.contains(&path.display().to_string()), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    /// Another process holding SQLite's write lock past busy_timeout: UNAVAILABLE, not INTERNAL.
    #[tokio::test]
    async fn a_held_write_lock_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let r = store
            .create_entity_type(Uuid::now_v7(), "player", "", &State::new())
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        other.execute_batch("ROLLBACK").unwrap();
        // Reads never waited, and the store works again once the lock is released.
        store.ping().await.unwrap();
        new_type(&store, "player").await;
    }
}
