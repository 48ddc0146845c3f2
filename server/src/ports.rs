//! The capabilities the application needs from the outside world, one trait per capability.
//!
//! - [`Catalog`]: entity types and instances as they are now (reads only).
//! - [`EventStore`]: the write side: creating types and instances, and atomic, serialized
//!   appends. It extends [`Catalog`]; only the command handlers hold one.
//! - [`HistoryReader`]: the read side for time travel: events, snapshots and past states.
//! - [`AnalyticsReader`]: aggregates over a type's events, computed where the data lives.
//! - [`StateCache`]: current states close to the readers (Redis, or in memory).
//! - [`EventBus`]: committed events to live subscribers, in process or through NATS.
//! - [`Outbox`]: events committed but not yet published, for the relay to NATS.
//! - [`RetentionStore`]: dropping what lies before the retention horizon, keeping what
//!   rebuilding each current state needs.
//!
//! Adapters under `adapters/` implement them for a technology; the same contract tests run
//! against every implementation. Records here are plain data: no SQL, no protobuf.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::domain::field_path::PathStep;
use crate::domain::{ApplyMode, DomainError, State};

/// How an entity type is named in a request: by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKey {
    Id(Uuid),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntityTypeRecord {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub schema: State,
    pub created_at: DateTime<Utc>,
    /// Version of `schema`: 1 at creation, one more at each accepted schema change.
    pub schema_version: i64,
    /// The event types this schema version declares
    /// ([`crate::domain::declared::DeclarationsDoc`] as JSON); None declares none.
    pub declarations: Option<State>,
}

/// One version of a type's schema; a type keeps them all.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaVersionRecord {
    pub version: i64,
    pub schema: State,
    pub created_at: DateTime<Utc>,
    /// The event types this version declares, as [`EntityTypeRecord::declarations`].
    pub declarations: Option<State>,
}

/// How a schema change treats current states that break the new schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Apply only if every current state satisfies the new schema.
    Enforce,
    /// Check and report; change nothing.
    DryRun,
    /// Check and report, and apply anyway.
    AllowInvalid,
}

/// What an entity type update asks of the store.
#[derive(Debug, Clone)]
pub struct TypeUpdate {
    pub entity_type_id: Uuid,
    /// None keeps the description.
    pub description: Option<String>,
    /// None keeps the schema and its version.
    pub schema: Option<State>,
    /// With a new schema: the declarations of the new version (Some(None) declares none);
    /// None carries the current ones over.
    pub declarations: Option<Option<State>>,
    /// When set, the update applies only if the schema is still at this version.
    pub expected_schema_version: Option<i64>,
    pub check: SchemaCheck,
    /// At most this many violating instances are described in the outcome (all are counted).
    pub max_violations: usize,
}

/// Checks one current state against the proposed schema: the violations, empty when it passes.
/// Run by the store on each state as it streams them, so memory holds one state at a time.
pub type StateCheck = Box<dyn Fn(&State) -> Vec<crate::domain::Violation> + Send + Sync + 'static>;

/// A current state that breaks a proposed schema.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceViolation {
    pub instance_id: Uuid,
    pub external_id: String,
    pub version: i64,
    pub violations: Vec<crate::domain::Violation>,
}

/// What an entity type update did.
#[derive(Debug, Clone)]
pub struct TypeUpdateOutcome {
    /// The type after the update, or as it stayed when nothing was applied.
    pub record: EntityTypeRecord,
    /// Whether the update was stored.
    pub applied: bool,
    /// Current states checked (0 when the schema did not change).
    pub checked: i64,
    /// How many of them break the new schema.
    pub invalid: i64,
    /// The first of them, in external id order.
    pub violations: Vec<InstanceViolation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: Uuid,
    pub entity_type_id: Uuid,
    pub entity_type_name: String,
    pub external_id: String,
    pub state: State,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Archived: refuses writes until restored, left out of listings unless asked for.
    pub archived: bool,
    /// Erased (EraseInstance): its state, payloads, metadata and snapshots are destroyed and
    /// `external_id` is empty; only the facts remain (id, versions, event types, timestamps).
    /// It refuses writes and time travel, and is left out of listings.
    pub erased: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub event_id: String,
    pub instance_id: Uuid,
    pub entity_type_id: Uuid,
    pub event_type: String,
    pub version: i64,
    pub payload: State,
    pub metadata: State,
    pub mode: ApplyMode,
    pub recorded_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    /// Who wrote it: the API key's name or the JWT's subject; empty when nobody was identified
    /// (authentication off, or recorded before it existed). Set by the server, never the client.
    pub recorded_by: String,
    /// The version of the type's schema the state after this event was validated against.
    pub schema_version: i64,
    /// Its place in the global event log: strictly increasing in commit order across the whole
    /// store (see `QueryService.ReadEvents`), never reused. 0 only where it is not known (an
    /// event built before it was stored).
    pub position: i64,
}

/// A new instance; the store records it together with its version 1.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: Uuid,
    pub entity_type_id: Uuid,
    pub external_id: String,
    pub initial_state: State,
    pub metadata: State,
    /// Id of the `InstanceCreated` event (reserved like a client's idempotency key).
    pub event_id: String,
    /// [`crate::domain::idempotency::content_hash`] of the `InstanceCreated` event.
    pub content_hash: Vec<u8>,
    /// Who creates it: [`EventRecord::recorded_by`] of its version 1.
    pub recorded_by: String,
    /// The schema version `initial_state` was validated against; the store refuses the creation
    /// ([`crate::domain::DomainError::StaleSchema`]) if the type has moved on since.
    pub schema_version: i64,
}

/// The instance as seen under its lock, handed to the decision.
#[derive(Debug, Clone)]
pub struct Head {
    pub entity_type_id: Uuid,
    pub version: i64,
    pub state: State,
    /// The store snapshots every version that is a multiple of this: the decision keeps a copy
    /// of the state only at those versions, never one per event.
    pub snapshot_interval: i64,
    /// The type's schema version as read with the head. The decision refuses to validate
    /// against another one ([`crate::domain::DomainError::StaleSchema`]), and the store moves
    /// the head only while the type is still at it, so no state is ever validated against a
    /// schema that a concurrent schema change replaced.
    pub schema_version: i64,
    /// Whether the instance is archived: the decision refuses ordinary events then.
    pub archived: bool,
    /// Whether the instance is erased: the decision refuses everything then.
    pub erased: bool,
}

/// An event decided by the application.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event_id: String,
    pub event_type: String,
    pub payload: State,
    pub metadata: State,
    pub mode: ApplyMode,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The state after this event, only where the store snapshots it (see [`Head`]).
    pub snapshot: Option<State>,
    /// [`crate::domain::idempotency::content_hash`] of the event, kept with its id so a retry
    /// is recognised without reading (or trusting the store's rendering of) its payload.
    pub content_hash: Vec<u8>,
}

/// What the decision asks the store to write: the events and the state after the last one.
#[derive(Debug, Clone)]
pub struct Decision {
    pub events: Vec<PendingEvent>,
    pub state: State,
    /// The archived flag after these events: None keeps it (every ordinary append), Some for
    /// ArchiveInstance / RestoreInstance.
    pub archived: Option<bool>,
}

/// The order of an instance listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InstanceOrder {
    /// By external id, in byte order.
    #[default]
    ExternalId,
    /// Most recently updated first, ties by instance id (descending too).
    RecentlyUpdated,
}

/// Where an instance listing continues: after the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceCursor {
    ExternalId(String),
    Updated(DateTime<Utc>, Uuid),
}

/// Which instances of a type a listing returns. Empty filters match everything.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    pub entity_type_id: Uuid,
    pub include_archived: bool,
    /// Only external ids starting with this.
    pub external_id_prefix: Option<String>,
    /// Only instances with `updated_at >= updated_since`.
    pub updated_since: Option<DateTime<Utc>>,
    /// Only instances with `updated_at < updated_before`.
    pub updated_before: Option<DateTime<Utc>>,
    /// Only instances whose current state holds this JSON value at this path (JSON equality).
    pub state_equals: Option<(Vec<PathStep>, serde_json::Value)>,
    pub order: InstanceOrder,
    /// Continue strictly after this (a cursor of `order`).
    pub after: Option<InstanceCursor>,
    /// Leave the state out: the records carry an empty state, and the store does not read it.
    pub without_state: bool,
}

/// An event id already recorded (a client's idempotency key or a server-generated id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    pub event_id: String,
    pub instance_id: Uuid,
    pub version: i64,
    /// None for events recorded before content hashes were kept.
    pub content_hash: Option<Vec<u8>>,
}

/// What an append asks of the store.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub instance_id: Uuid,
    pub expected_version: Option<i64>,
    /// The client-supplied idempotency keys of the batch, looked up before anything is written.
    /// Every event id of the batch (server-generated ones too) is recorded as a key.
    pub client_event_ids: Vec<String>,
    /// Who writes the batch: [`EventRecord::recorded_by`] of each of its events.
    pub recorded_by: String,
}

/// Turns the locked head into the events to store, or rejects the command. Runs while the
/// instance is locked, so it sees the latest state and nobody else appends meanwhile.
/// It may run more than once if the store retries the transaction. Owned (`'static`), so a
/// store may run it wherever its transaction runs (the embedded store: on its writer thread).
pub type Decide = Box<dyn Fn(&Head) -> Result<Decision, DomainError> + Send + Sync + 'static>;

#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// The events were stored; `state` is the state after the last one.
    Appended {
        events: Vec<EventRecord>,
        state: State,
    },
    /// Some client-supplied ids were already recorded: nothing was stored. Holds those keys
    /// (not the events: a clash must not load megabytes of payloads) so the application can
    /// tell a retry from a clash.
    AlreadyRecorded { keys: Vec<RecordedKey> },
}

/// Why a store operation failed. Adapters map their own errors into these.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("expected version {expected} but the instance is at version {current}")]
    Conflict { expected: i64, current: i64 },
    /// An entity type update's `expected_schema_version` is not the current one.
    #[error(
        "expected schema version {expected} but the entity type is at schema version {current}"
    )]
    SchemaConflict { expected: i64, current: i64 },
    /// The operation is refused in the current state of what it addresses (a type that still
    /// has instances); the message says why.
    #[error("{0}")]
    Precondition(String),
    #[error("the domain rejected the command: {0}")]
    Rejected(#[from] DomainError),
    /// The backend cannot be reached right now; retrying later is safe.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend gave up on the operation at its time bound (a statement or read timeout); it
    /// was rolled back, nothing was stored, and retrying is safe.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The stored data is damaged (a corrupt page, a broken index): retrying cannot help, the
    /// data must be restored. The message names what and where, for the log.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// A bug or an unexpected backend answer; the cause is logged, never sent to clients.
    #[error("internal store error: {0}")]
    Internal(String),
}

/// Read side of the catalog: entity types and instances as they are now. Every use case may
/// read it; only [`EventStore`] (which extends it) writes.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    async fn get_entity_type(&self, key: &TypeKey) -> Result<EntityTypeRecord, StoreError>;
    /// Types ordered by name, strictly after `after_name`.
    async fn list_entity_types(
        &self,
        after_name: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityTypeRecord>, StoreError>;
    async fn get_instance(&self, id: Uuid) -> Result<InstanceRecord, StoreError>;
    async fn find_instance(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<InstanceRecord, StoreError>;
    /// Up to `limit` instances of a type matching `query`, in its order, strictly after its
    /// cursor; archived ones only with `include_archived`, erased ones never.
    async fn list_instances(
        &self,
        query: &InstanceQuery,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// The entity type of an instance (never changes, so callers may cache it).
    async fn instance_type(&self, instance_id: Uuid) -> Result<Uuid, StoreError>;
    /// Every version of a type's schema, oldest first.
    async fn schema_versions(
        &self,
        entity_type_id: Uuid,
    ) -> Result<Vec<SchemaVersionRecord>, StoreError>;
}

/// Write side: creating entity types and instances, and serialized, atomic appends. It extends
/// [`Catalog`] because a write must read what it writes to.
#[async_trait]
pub trait EventStore: Catalog {
    /// Cheap liveness probe for health reporting.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn create_entity_type(
        &self,
        id: Uuid,
        name: &str,
        description: &str,
        schema: &State,
        declarations: Option<&State>,
    ) -> Result<EntityTypeRecord, StoreError>;

    /// Changes a type's description and/or schema. A new schema becomes version current + 1;
    /// before it is stored, every current state of the type is passed to `check`, streaming,
    /// with the type locked against appends and creations (which wait), so no state escapes the
    /// check. Whether it is stored then follows `update.check`.
    async fn update_entity_type(
        &self,
        update: TypeUpdate,
        check: StateCheck,
    ) -> Result<TypeUpdateOutcome, StoreError>;

    /// Deletes a type and its schema versions; [`StoreError::Precondition`] while it has
    /// instances.
    async fn delete_entity_type(&self, entity_type_id: Uuid) -> Result<(), StoreError>;

    /// Stores the instance and its `InstanceCreated` event (version 1) atomically.
    async fn create_instance(
        &self,
        new: NewInstance,
    ) -> Result<(InstanceRecord, EventRecord), StoreError>;

    /// Locks the instance, checks idempotency keys and the expected version, asks `decide` for
    /// the events, and stores them with a snapshot at every multiple of the snapshot interval —
    /// all in one transaction.
    async fn append(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError>;

    /// Creates the instance as [`EventStore::create_instance`] and, in the same transaction,
    /// appends to it as [`EventStore::append`] (`request.instance_id` is `new.id`): both are
    /// stored, or neither. [`StoreError::AlreadyExists`] when the external id is taken (the
    /// caller then appends to the instance that took it). Returns the `InstanceCreated` event
    /// (None when nothing was stored: on [`AppendOutcome::AlreadyRecorded`]) and the append's
    /// outcome.
    async fn create_and_append(
        &self,
        new: NewInstance,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<(Option<EventRecord>, AppendOutcome), StoreError>;

    /// Erases an instance: as [`EventStore::append`] (its lock, its decision, which records the
    /// `InstanceErased` event with an empty state), and in the same transaction destroys what it
    /// held: every earlier event's payload and metadata are emptied, its snapshots and
    /// unpublished outbox rows deleted, and its external id replaced by one no client can name
    /// (so it can no longer be found by it, and a new instance may take it). The instance stays
    /// erased: [`Head::erased`] for every later decision.
    async fn erase_instance(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError>;
}

/// The external id an erased instance keeps in place of its own: unique per instance, and
/// never one a client can create or look up (external ids may not contain control characters).
pub fn erased_external_id(instance_id: Uuid) -> String {
    format!("\u{1}erased:{instance_id}")
}

/// Which events of one instance a history read returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub event_types: Vec<String>,
    pub descending: bool,
    /// Continue strictly after this version (in the direction of the read).
    pub after_version: Option<i64>,
}

/// Which events of the global log a read returns: those with a position in `(after, through]`,
/// in position order. `through` bounds how far one read scans past events the filters skip.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub after: i64,
    pub through: i64,
    /// Only events of these entity types; None: every type (Some(empty): none).
    pub entity_type_ids: Option<Vec<Uuid>>,
    /// Only events of these types; empty: every type.
    pub event_types: Vec<String>,
}

/// A read of the global log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    /// The matching events, in position order.
    pub events: Vec<EventRecord>,
    /// The highest position committed when the read started: every position at or below it is
    /// final (committed, or never to be used), so a reader that has read through it has missed
    /// nothing. The read never returns events past it.
    pub head: i64,
    /// The highest position retention had deleted, read in the same snapshot (0 when it never
    /// deleted one): a read from before it missed events, and is refused.
    pub dropped_through: i64,
}

/// A stored snapshot: the state right after `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: i64,
    pub state: State,
}

/// Read side of time travel.
#[async_trait]
pub trait HistoryReader: Send + Sync + 'static {
    /// Events matching the filter, at most `limit`.
    async fn events(
        &self,
        instance_id: Uuid,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// The latest snapshot at or before `version` (None when there is none), and the events
    /// after it up to `version` inclusive, read consistently. No events for an erased
    /// instance: its states are gone, and the caller reads the instance to say so.
    async fn snapshot_and_tail(
        &self,
        instance_id: Uuid,
        version: i64,
    ) -> Result<(Option<Snapshot>, Vec<EventRecord>), StoreError>;
    /// The version of the last event recorded at or before `at`; None when the instance did not
    /// exist yet.
    async fn version_at(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;
    /// Events of versions at or below `up_to` that occurred (business time) at or before
    /// `at`, in business-time order: by (`occurred_at`, version), strictly after `after`; at
    /// most `limit`.
    async fn events_occurred_by(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
        up_to: i64,
        after: Option<(DateTime<Utc>, i64)>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// The retention horizon in force ([`RetentionStore::advance_horizon`]): events recorded
    /// before it may have been dropped. None while retention never ran.
    async fn horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// The global log: at most `limit` events matching `filter` (never past
    /// [`LogPage::head`]), in position order, with the head read first.
    async fn read_log(&self, filter: &LogFilter, limit: usize) -> Result<LogPage, StoreError>;
    /// The highest position retention ever deleted (0 when it never deleted an event): a read
    /// of the log from before it would miss events.
    async fn dropped_through(&self) -> Result<i64, StoreError>;
}

/// Events of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeCount {
    pub event_type: String,
    pub count: i64,
}

/// An instance ranked by its number of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveInstance {
    pub instance_id: Uuid,
    pub external_id: String,
    pub event_count: i64,
    pub last_event_at: DateTime<Utc>,
}

/// Totals of one entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSummary {
    pub instance_count: i64,
    pub event_count: i64,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub events_since: i64,
    pub event_types: Vec<String>,
}

/// A half-open range of `occurred_at`: `[start, end)`; either side may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Aggregates over all instances of an entity type. Event analytics follow `occurred_at`.
#[async_trait]
pub trait AnalyticsReader: Send + Sync + 'static {
    /// Events per event type in the range, most frequent first (ties by name).
    async fn event_counts(
        &self,
        entity_type_id: Uuid,
        range: TimeRange,
    ) -> Result<Vec<EventTypeCount>, StoreError>;
    /// Non-empty buckets `[start + k * interval, start + (k + 1) * interval)` within
    /// `[start, end)`, as (bucket start, count) in time order.
    async fn time_series(
        &self,
        entity_type_id: Uuid,
        interval_micros: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        event_type: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError>;
    /// Statistics of the value at `pointer` over the current states of the type's instances.
    async fn field_stats(
        &self,
        entity_type_id: Uuid,
        pointer: &str,
        top: usize,
    ) -> Result<crate::domain::analytics::FieldStats, StoreError>;
    /// Statistics of the value at `pointer` over each instance's state as it was at `as_of`
    /// (recorded time), for instances that existed then. Implementations fold one instance at a
    /// time from its latest snapshot, streaming the rows: memory holds one state and the
    /// running totals, never the whole type.
    async fn field_stats_as_of(
        &self,
        entity_type_id: Uuid,
        pointer: &str,
        as_of: DateTime<Utc>,
        top: usize,
    ) -> Result<crate::domain::analytics::FieldStats, StoreError>;
    /// Instances ranked by number of events in the range (ties by instance id).
    async fn most_active(
        &self,
        entity_type_id: Uuid,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<ActiveInstance>, StoreError>;
    /// Totals; `events_since` counts events that occurred at or after `since`.
    async fn summary(
        &self,
        entity_type_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<TypeSummary, StoreError>;
}

/// Why the cache could not answer. The application never fails a request for it: it falls back
/// to the store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(pub String);

/// Current state of instances, kept close to the readers.
#[async_trait]
pub trait StateCache: Send + Sync + 'static {
    async fn get(&self, instance_id: Uuid) -> Result<Option<InstanceRecord>, CacheError>;
    /// One round trip: the same record, keyed by entity type and external id.
    async fn get_by_external_id(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<Option<InstanceRecord>, CacheError>;
    /// Stores the record under both keys unless a version at least as new is already there, so
    /// racing writers never replace a newer state with an older one.
    async fn put(&self, instance: &InstanceRecord) -> Result<(), CacheError>;
    /// After an erasure: `erased` (its record as erased, at the erasure's version) replaces the
    /// entry by id, so no older state can be put back there; the entry under the instance's
    /// former external id is deleted (its key would name the erased external id).
    async fn erase(
        &self,
        erased: &InstanceRecord,
        former_external_id: &str,
    ) -> Result<(), CacheError>;
}

/// A committed event on its way to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub entity_type_name: String,
    pub event: EventRecord,
}

/// Which live events a subscriber wants; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    pub entity_type_name: Option<String>,
    pub instance_id: Option<Uuid>,
    pub event_types: Vec<String>,
}

impl LiveFilter {
    pub fn matches(&self, live: &LiveEvent) -> bool {
        self.entity_type_name
            .as_ref()
            .is_none_or(|t| *t == live.entity_type_name)
            && self.instance_id.is_none_or(|i| i == live.event.instance_id)
            && (self.event_types.is_empty() || self.event_types.contains(&live.event.event_type))
    }
}

/// Why a live stream ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The subscriber fell too far behind and was cut off.
    #[error("subscriber fell behind by more than {0} events")]
    Lagged(u64),
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

pub type LiveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LiveEvent, BusError>> + Send>>;

/// Carries committed events to subscribers, on this server and (with NATS) on every replica.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Told after every commit. With a transactional outbox the events are already on their way
    /// and this only wakes the relay; an in-process bus delivers them here.
    async fn committed(&self, events: &[LiveEvent]);
    /// Live events matching the filter, from now on. A subscriber that falls behind by more than
    /// the bus's buffer gets [`BusError::Lagged`] and its stream ends; writers never wait for it.
    async fn subscribe(&self, filter: LiveFilter) -> Result<LiveStream, BusError>;
}

/// Committed events waiting for publication (the transactional outbox): written in the same
/// transaction as the events, removed once the broker acknowledged them.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Whether this server holds the relay lease (one relay at a time keeps publication in
    /// commit order and avoids duplicate work); re-checks or takes it.
    async fn hold_lease(&self) -> Result<bool, StoreError>;
    /// Forgets the published entries `done`, then answers the oldest pending events after
    /// them, in commit order per instance, with their outbox ids: one round trip for the
    /// relay's bookkeeping of one batch and its reading of the next.
    async fn pending(
        &self,
        limit: usize,
        done: &[i64],
    ) -> Result<Vec<(i64, LiveEvent)>, StoreError>;
    /// Forgets published entries.
    async fn done(&self, ids: &[i64]) -> Result<(), StoreError>;
    /// Moves an entry that cannot be published to the dead letters, so it stops holding up
    /// publication; `attempts` and `error` say why, for whoever looks into it.
    async fn dead_letter(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError>;
    /// How many entries wait, and since when the oldest does.
    async fn backlog(&self) -> Result<Backlog, StoreError>;
}

/// The outbox's backlog, for the operator's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Entries waiting.
    pub rows: i64,
    /// When the oldest waiting entry's event was recorded; None when nothing waits.
    pub oldest_recorded_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One instance as a retention pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionCandidate {
    pub instance_id: Uuid,
    /// The version whose state is kept: the last one recorded before the horizon, or an earlier
    /// one still waiting in the outbox (or its dead letters), which must stay readable. Every
    /// version before it may go; it stays, as a snapshot and as its event.
    pub keep: i64,
    /// Whether a snapshot at `keep` is stored already.
    pub has_snapshot: bool,
    /// Whether the instance was erased: its kept state is then the empty one (its payloads are
    /// gone, so no fold could rebuild it), and its old facts go like any instance's.
    pub erased: bool,
}

/// What a retention pass asks the store to drop from one instance.
#[derive(Debug, Clone)]
pub struct Trim {
    pub instance_id: Uuid,
    /// See [`RetentionCandidate::keep`].
    pub keep: i64,
    /// The state at `keep`, to store as its snapshot when none is stored yet.
    pub snapshot: Option<State>,
}

/// What one [`RetentionStore::trim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimOutcome {
    pub events_deleted: u64,
    pub snapshots_deleted: u64,
    pub snapshots_written: u64,
    /// The event bound was reached: call again for the rest.
    pub more: bool,
    /// Another server is running retention now: nothing was done.
    pub busy: bool,
}

/// The write side of retention. A pass moves the horizon forward, then walks the instances in
/// bounded batches: for each, the state at [`RetentionCandidate::keep`] is made a snapshot
/// before the events and snapshots older than it are deleted, so the current state (and every
/// state from `keep` on) can always be rebuilt.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Moves the stored horizon to `horizon` unless it is already later; returns the horizon in
    /// force. Written before anything is deleted, so readers never take a dropped version for
    /// one that never existed.
    async fn advance_horizon(&self, horizon: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError>;
    /// Examines up to `limit` instances with ids after `after`, in id order. Returns those with
    /// something to drop before `horizon` (older events or snapshots than their `keep`), and
    /// the last id examined (None when no instance was left).
    async fn retention_candidates(
        &self,
        horizon: DateTime<Utc>,
        after: Uuid,
        limit: usize,
    ) -> Result<(Vec<RetentionCandidate>, Option<Uuid>), StoreError>;
    /// In one transaction: stores the given snapshots, then, for each instance whose snapshot
    /// at `keep` is stored, deletes its older snapshots and up to `max_events` of its events
    /// before `keep` in all (oldest first). Idempotency keys stay, so a retry of a dropped
    /// event is still never applied twice.
    async fn trim(&self, trims: &[Trim], max_events: usize) -> Result<TrimOutcome, StoreError>;
    /// After a pass: gives back the space of what is left empty where the backend needs it
    /// (TimescaleDB: drops the chunks wholly below the oldest remaining event). Returns the
    /// number of chunks dropped.
    async fn reclaim(&self, horizon: DateTime<Utc>) -> Result<u64, StoreError> {
        let _ = horizon;
        Ok(0)
    }
}
