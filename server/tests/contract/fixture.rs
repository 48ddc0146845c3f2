//! What the store and analytics contracts share: a fresh store of each backend behind its
//! ports, and helpers that append and read the way the application does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{TestDb, TimescaleDb, json};
use chrono::{DateTime, Utc};
use serde_json::Value;
use temporal_state_server::adapters::embedded::EmbeddedStore;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig};
use temporal_state_server::domain::{ApplyMode, State, apply_event};
use temporal_state_server::ports::Decision;
use temporal_state_server::ports::{
    AnalyticsReader, AppendOutcome, AppendRequest, EntityTypeRecord, EventRecord, EventStore, Head,
    HistoryFilter, HistoryReader, InstanceRecord, NewInstance, PendingEvent, RecordedKey,
    StoreError,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The stores a contract can run on; each test binary names those it runs (`on_each_store!`).
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // each binary constructs only its own
pub enum Backend {
    Postgres,
    Embedded,
    /// PostgreSQL with TimescaleDB (a WASM build of its own per test): one connection at a time,
    /// so the store's pool holds one.
    Timescale,
}

/// Both ports of one fresh store; whatever keeps its storage alive is dropped last.
pub struct Fixture {
    pub store: Arc<dyn EventStore>,
    pub history: Arc<dyn HistoryReader>,
    pub analytics: Arc<dyn AnalyticsReader>,
    _storage: Storage,
}

pub enum Storage {
    Postgres(#[allow(dead_code)] TestDb),
    Embedded(#[allow(dead_code)] tempfile::TempDir),
    Timescale(#[allow(dead_code)] TimescaleDb),
}

impl Backend {
    pub async fn open(self, snapshot_interval: i64) -> Fixture {
        match self {
            Backend::Postgres => {
                let db = TestDb::create().await;
                let store = pg_store(&db.url, 24, snapshot_interval, Duration::from_secs(5)).await;
                Fixture {
                    store: store.clone(),
                    history: store.clone(),
                    analytics: store,
                    _storage: Storage::Postgres(db),
                }
            }
            Backend::Timescale => {
                let db = TimescaleDb::start().await;
                // Callers queue for the one connection: wait as long as a slow WASM query takes.
                let store = pg_store(&db.url, 1, snapshot_interval, Duration::from_secs(120)).await;
                assert!(store.has_timescaledb(), "TimescaleDB is installed");
                Fixture {
                    store: store.clone(),
                    history: store.clone(),
                    analytics: store,
                    _storage: Storage::Timescale(db),
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

/// A migrated [`PgStore`] on `url` with a pool of `pool_size` connections, whose callers wait up
/// to `connect_timeout` for one.
pub async fn pg_store(
    url: &str,
    pool_size: usize,
    snapshot_interval: i64,
    connect_timeout: Duration,
) -> Arc<PgStore> {
    let store = PgStore::new(&PgStoreConfig {
        url: url.into(),
        pool_size,
        snapshot_interval,
        connect_timeout,
    })
    .expect("PgStore::new");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn obj(v: Value) -> State {
    v.as_object().expect("a JSON object").clone()
}

pub fn micros_only(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos().is_multiple_of(1000)
}

/// One event an append should decide.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: String,
    /// A client-supplied idempotency key (looked up), or a server-generated id (not looked up).
    pub client: bool,
    pub event_type: String,
    pub payload: State,
    pub metadata: State,
    pub mode: ApplyMode,
    pub occurred_at: Option<DateTime<Utc>>,
}

pub fn ev(event_type: &str, payload: Value) -> Ev {
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

pub fn keyed(key: &str, event_type: &str, payload: Value) -> Ev {
    Ev {
        id: key.into(),
        client: true,
        ..ev(event_type, payload)
    }
}

/// Counts the decisions made and remembers the last head seen.
#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    pub head: std::sync::Mutex<Option<(Uuid, i64, State)>>,
}

impl Seen {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn head(&self) -> (Uuid, i64, State) {
        self.head
            .lock()
            .unwrap()
            .clone()
            .expect("a decision was made")
    }
}

/// Appends `evs` as the application would: each payload applied to the locked head.
pub async fn append_seen(
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
                recorded_by: WRITER.into(),
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
                    archived: None,
                    events: pending,
                    state,
                })
            }),
        )
        .await
}

pub async fn append(
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
pub async fn appended(
    store: &dyn EventStore,
    instance_id: Uuid,
    evs: Vec<Ev>,
) -> (Vec<EventRecord>, State) {
    match append(store, instance_id, None, evs).await {
        Ok(AppendOutcome::Appended { events, state }) => (events, state),
        other => panic!("expected Appended, got {other:?}"),
    }
}

pub fn expect_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(m)) => assert_eq!(m, what),
        other => panic!("expected NotFound({what:?}), got {other:?}"),
    }
}

pub fn expect_already_exists<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::AlreadyExists(m)) => assert_eq!(m, what),
        other => panic!("expected AlreadyExists({what:?}), got {other:?}"),
    }
}

pub async fn new_type(store: &dyn EventStore, name: &str) -> EntityTypeRecord {
    store
        .create_entity_type(
            Uuid::now_v7(),
            name,
            "",
            &obj(json!({"type": "object"})),
            None,
        )
        .await
        .expect("create entity type")
}

pub fn new_instance(entity_type_id: Uuid, external_id: &str, state: Value) -> NewInstance {
    NewInstance {
        id: Uuid::now_v7(),
        entity_type_id,
        external_id: external_id.into(),
        initial_state: obj(state),
        metadata: State::new(),
        event_id: Uuid::now_v7().to_string(),
        content_hash: vec![0],
        recorded_by: WRITER.into(),
        schema_version: 1,
    }
}

/// Who the fixture's writes are recorded as: every store must give it back as written.
pub const WRITER: &str = "contract writer \u{e9}\u{1F600}";

/// What a store reports of recorded events when their ids come back.
pub fn keys_of(events: &[EventRecord]) -> Vec<(String, Uuid, i64)> {
    events
        .iter()
        .map(|e| (e.event_id.clone(), e.instance_id, e.version))
        .collect()
}

pub fn key_triples(keys: &[RecordedKey]) -> Vec<(String, Uuid, i64)> {
    keys.iter()
        .map(|k| (k.event_id.clone(), k.instance_id, k.version))
        .collect()
}

pub async fn instance(
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

pub async fn all_events(history: &dyn HistoryReader, id: Uuid) -> Vec<EventRecord> {
    history
        .events(id, &HistoryFilter::default(), 100_000)
        .await
        .expect("history")
}

pub fn versions(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.version).collect()
}

/// Long enough for two appends to get different recorded_at microseconds.
pub async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// A listing by external id of a type's instances, after `after`.
pub fn listing(
    entity_type_id: Uuid,
    after: Option<&str>,
    include_archived: bool,
) -> temporal_state_server::ports::InstanceQuery {
    temporal_state_server::ports::InstanceQuery {
        entity_type_id,
        include_archived,
        after: after.map(|a| temporal_state_server::ports::InstanceCursor::ExternalId(a.into())),
        ..Default::default()
    }
}
