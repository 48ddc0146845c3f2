//! What the calls return: the API's records with JSON values ([`serde_json::Value`]) where the
//! wire has `google.protobuf.Struct`, [`SystemTime`] where it has a `Timestamp`, and `*_as`
//! accessors that deserialize a value into your own type.

use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde_json::Value;
use temporal_state_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::json::{from_value, struct_to_json, value_to_json};

/// A moment the server must have sent.
pub(crate) fn time(what: &str, t: Option<prost_types::Timestamp>) -> Result<SystemTime> {
    opt_time(what, t)?.ok_or_else(|| Error::decode(what, "missing"))
}

/// A moment the server may leave out.
pub(crate) fn opt_time(
    what: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>> {
    t.map(|t| SystemTime::try_from(t).map_err(|e| Error::decode(what, e)))
        .transpose()
}

/// A record the server must have sent.
pub(crate) fn required<T>(what: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::decode(what, "missing from the answer"))
}

/// How an event's payload turns the previous state into the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApplyMode {
    /// RFC 7386 JSON merge patch: nested objects merge, `null` removes a field. The default.
    #[default]
    MergePatch,
    /// The payload becomes the whole new state.
    Replace,
    /// RFC 6902 JSON Patch; the payload is `{"patch": [{"op": ..., "path": ..., ...}, ...]}`.
    JsonPatch,
}

impl ApplyMode {
    pub(crate) fn to_proto(self) -> pb::ApplyMode {
        match self {
            Self::MergePatch => pb::ApplyMode::MergePatch,
            Self::Replace => pb::ApplyMode::Replace,
            Self::JsonPatch => pb::ApplyMode::JsonPatch,
        }
    }

    fn from_proto(raw: i32) -> Self {
        match pb::ApplyMode::try_from(raw) {
            Ok(pb::ApplyMode::Replace) => Self::Replace,
            Ok(pb::ApplyMode::JsonPatch) => Self::JsonPatch,
            // Unspecified means merge patch; an unknown future mode is reported as the default.
            _ => Self::MergePatch,
        }
    }
}

/// A user-defined kind of entity, with the JSON Schema every state of its instances satisfies.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EntityType {
    /// Server-assigned UUID.
    pub id: String,
    /// Unique name (`[a-z][a-z0-9_]{0,62}`), usable wherever an entity type is asked for.
    pub name: String,
    /// Free text for humans.
    pub description: String,
    /// The JSON Schema.
    pub schema: Value,
    /// When it was created (server clock).
    pub created_at: SystemTime,
    /// Version of `schema`: 1 at creation, one more at each accepted schema change.
    pub schema_version: i64,
    /// The event types the current schema version declares (payload schemas, CEL transforms
    /// and guards, strict mode); None when it declares none.
    pub declarations: Option<pb::EventDeclarations>,
}

impl TryFrom<pb::EntityType> for EntityType {
    type Error = Error;
    fn try_from(t: pb::EntityType) -> Result<Self> {
        Ok(Self {
            created_at: time("entity_type.created_at", t.created_at)?,
            id: t.id,
            name: t.name,
            description: t.description,
            schema: struct_to_json(t.schema),
            schema_version: t.schema_version,
            declarations: t.declarations,
        })
    }
}

/// One version of an entity type's schema; a type keeps every version it had.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SchemaVersion {
    /// 1 for the schema the type was created with, then 2, 3...
    pub version: i64,
    /// The JSON Schema of this version.
    pub schema: Value,
    /// When it was accepted (server clock).
    pub created_at: SystemTime,
    /// The event types this version declares; None when it declares none.
    pub declarations: Option<pb::EventDeclarations>,
}

impl TryFrom<pb::SchemaVersion> for SchemaVersion {
    type Error = Error;
    fn try_from(v: pb::SchemaVersion) -> Result<Self> {
        Ok(Self {
            created_at: time("schema_version.created_at", v.created_at)?,
            version: v.version,
            schema: struct_to_json(v.schema),
            declarations: v.declarations,
        })
    }
}

/// A current state that breaks a proposed schema.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SchemaViolation {
    /// UUID of the instance.
    pub instance_id: String,
    /// Its external id.
    pub external_id: String,
    /// Its current version.
    pub version: i64,
    /// (JSON pointer, what is wrong) for each violating location of its state.
    pub violations: Vec<(String, String)>,
}

/// What [`crate::Client::update_entity_type`] did, or (on a dry run) would do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EntityTypeUpdate {
    /// The type after the update (unchanged on a dry run).
    pub entity_type: EntityType,
    /// Current states checked against the new schema (0 when the schema did not change).
    pub checked_instances: i64,
    /// How many of them break it.
    pub invalid_instances: i64,
    /// The first of them (at most 20), in external id order.
    pub violations: Vec<SchemaViolation>,
    /// Whether the update was stored (false on a dry run).
    pub applied: bool,
}

impl TryFrom<pb::UpdateEntityTypeResponse> for EntityTypeUpdate {
    type Error = Error;
    fn try_from(r: pb::UpdateEntityTypeResponse) -> Result<Self> {
        Ok(Self {
            entity_type: required("entity_type", r.entity_type)?.try_into()?,
            checked_instances: r.checked_instances,
            invalid_instances: r.invalid_instances,
            violations: r
                .violations
                .into_iter()
                .map(|v| SchemaViolation {
                    instance_id: v.instance_id,
                    external_id: v.external_id,
                    version: v.version,
                    violations: v.paths.into_iter().zip(v.messages).collect(),
                })
                .collect(),
            applied: r.applied,
        })
    }
}

/// One entity and its current state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Instance {
    /// Server-assigned UUID.
    pub id: String,
    /// UUID of its entity type.
    pub entity_type_id: String,
    /// Name of its entity type.
    pub entity_type_name: String,
    /// Your identifier, unique within the entity type (for example `player-001`).
    pub external_id: String,
    /// The current state: the fold of events 1..=`version`.
    pub state: Value,
    /// Version of the latest event; 1 right after creation.
    pub version: i64,
    /// When it was created (when version 1 was recorded).
    pub created_at: SystemTime,
    /// When its latest event was recorded.
    pub updated_at: SystemTime,
    /// Archived ([`crate::Client::archive_instance`]): it refuses writes until restored and is
    /// left out of listings unless asked for.
    pub archived: bool,
    /// Erased ([`crate::Client::erase_instance`]): its state, payloads and metadata are gone
    /// and `external_id` is empty; it refuses writes and time travel.
    pub erased: bool,
}

impl Instance {
    /// The state as your own type.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Player { username: String, score: u32 }
    ///
    /// let instance = client.get_current_state("player_profile", "player-001", &Default::default()).await?;
    /// let player: Player = instance.state_as()?;
    /// println!("{} has {} points", player.username, player.score);
    /// # Ok(())
    /// # }
    /// ```
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("instance state", &self.state)
    }
}

impl TryFrom<pb::Instance> for Instance {
    type Error = Error;
    fn try_from(i: pb::Instance) -> Result<Self> {
        Ok(Self {
            created_at: time("instance.created_at", i.created_at)?,
            updated_at: time("instance.updated_at", i.updated_at)?,
            id: i.id,
            entity_type_id: i.entity_type_id,
            entity_type_name: i.entity_type_name,
            external_id: i.external_id,
            state: struct_to_json(i.state),
            version: i.version,
            archived: i.archived,
            erased: i.erased,
        })
    }
}

/// An immutable, versioned change to one instance.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// Its id: the `event_id` it was applied with (the SDK generates one when you do not).
    pub id: String,
    /// UUID of its instance.
    pub instance_id: String,
    /// UUID of the instance's entity type.
    pub entity_type_id: String,
    /// What happened, for example `ScoreIncreased`; version 1 is always `InstanceCreated`.
    pub event_type: String,
    /// Position in the instance's history, 1..N without gaps.
    pub version: i64,
    /// The change, as applied according to `mode`.
    pub payload: Value,
    /// Context stored with it (actor, trace id, ...); `{}` when none.
    pub metadata: Value,
    /// How the payload was applied.
    pub mode: ApplyMode,
    /// When the server committed it; time travel follows this clock.
    pub recorded_at: SystemTime,
    /// Business time given when applying it, `recorded_at` otherwise; analytics follow this.
    pub occurred_at: SystemTime,
    /// Who wrote it, as the server authenticated them (an API key's name, a JWT's subject);
    /// empty when the server runs without authentication.
    pub recorded_by: String,
    /// The version of the entity type's schema the state after it was validated against.
    pub schema_version: i64,
    /// The change its declared transform computed (fields set as a merge patch), recorded
    /// beside `payload`, what the client sent; None when the payload itself was the change.
    pub change: Option<Value>,
    /// Its place in the global event log ([`Client::read_events`](crate::Client::read_events)):
    /// strictly increasing in commit order across the whole store; 0 where unknown.
    pub position: i64,
}

impl Event {
    /// The payload as your own type.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("event payload", &self.payload)
    }

    /// The metadata as your own type.
    pub fn metadata_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("event metadata", &self.metadata)
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = Error;
    fn try_from(e: pb::Event) -> Result<Self> {
        Ok(Self {
            recorded_at: time("event.recorded_at", e.recorded_at)?,
            occurred_at: time("event.occurred_at", e.occurred_at)?,
            id: e.id,
            instance_id: e.instance_id,
            entity_type_id: e.entity_type_id,
            event_type: e.event_type,
            version: e.version,
            payload: struct_to_json(e.payload),
            metadata: struct_to_json(e.metadata),
            mode: ApplyMode::from_proto(e.mode),
            recorded_by: e.recorded_by,
            schema_version: e.schema_version,
            change: e.change.map(|c| struct_to_json(Some(c))),
            position: e.position,
        })
    }
}

pub(crate) fn events(events: Vec<pb::Event>) -> Result<Vec<Event>> {
    events.into_iter().map(Event::try_from).collect()
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass it as the next call's `page_token`; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, token: String) -> Self {
        Self {
            items,
            next_page_token: (!token.is_empty()).then_some(token),
        }
    }
}

/// A newly created instance and its version-1 `InstanceCreated` event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CreatedInstance {
    /// The instance, at version 1 (or later, when a retried create found it already written to).
    pub instance: Instance,
    /// The `InstanceCreated` event, whose payload is the initial state.
    pub event: Event,
}

/// An instance archived, restored or erased, and the `InstanceArchived` / `InstanceRestored` /
/// `InstanceErased` event that did it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InstanceLifecycle {
    /// The instance after the change.
    pub instance: Instance,
    /// The event recorded in its history.
    pub event: Event,
}

/// An applied event and the state right after it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AppliedEvent {
    /// The recorded event (the first recording, when its `event_id` was seen before).
    pub event: Event,
    /// The instance's state right after the event.
    pub state: Value,
}

impl AppliedEvent {
    /// The state after the event as your own type.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("state", &self.state)
    }
}

/// A batch of applied events and the state after the last one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AppliedEvents {
    /// The recorded events, in version order.
    pub events: Vec<Event>,
    /// The instance's state after the last event.
    pub state: Value,
}

impl AppliedEvents {
    /// The state after the batch as your own type.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("state", &self.state)
    }
}

/// An instance's state as it was at one version.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateAt {
    /// The state right after `version`.
    pub state: Value,
    /// The version the state belongs to.
    pub version: i64,
    /// When that version was recorded.
    pub recorded_at: SystemTime,
    /// When that version occurred (its business time), where the server says (GetStateAtTime).
    pub occurred_at: Option<SystemTime>,
}

impl StateAt {
    /// The state as your own type.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("state", &self.state)
    }
}

/// What happened to one path between two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The path exists only in the second state.
    Added,
    /// The path exists only in the first state.
    Removed,
    /// The path exists in both, with different values.
    Changed,
    /// A kind this version of the SDK does not know, with its wire number.
    Unknown(i32),
}

impl ChangeKind {
    fn from_proto(raw: i32) -> Self {
        match pb::ChangeKind::try_from(raw) {
            Ok(pb::ChangeKind::Added) => Self::Added,
            Ok(pb::ChangeKind::Removed) => Self::Removed,
            Ok(pb::ChangeKind::Changed) => Self::Changed,
            _ => Self::Unknown(raw),
        }
    }
}

/// One changed leaf between two states.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FieldChange {
    /// JSON pointer of the path, for example `/stats/level`.
    pub path: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// Value in the first state; `None` when added.
    pub old_value: Option<Value>,
    /// Value in the second state; `None` when removed.
    pub new_value: Option<Value>,
}

/// Two states of one instance and how to get from the first to the second.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Comparison {
    /// State at the first version.
    pub state1: Value,
    /// State at the second version.
    pub state2: Value,
    /// RFC 6902 operations that turn `state1` into `state2`.
    pub patch: Vec<Value>,
    /// Each changed leaf.
    pub changes: Vec<FieldChange>,
}

impl From<pb::CompareVersionsResponse> for Comparison {
    fn from(r: pb::CompareVersionsResponse) -> Self {
        Self {
            state1: struct_to_json(r.state1),
            state2: struct_to_json(r.state2),
            patch: r
                .patch
                .into_iter()
                .map(|op| struct_to_json(Some(op)))
                .collect(),
            changes: r
                .changes
                .into_iter()
                .map(|c| FieldChange {
                    path: c.path,
                    kind: ChangeKind::from_proto(c.kind),
                    old_value: c.old_value.map(value_to_json),
                    new_value: c.new_value.map(value_to_json),
                })
                .collect(),
        }
    }
}

/// One change of a field's value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TimelinePoint {
    /// The version whose event changed the field.
    pub version: i64,
    /// When that version was recorded.
    pub recorded_at: SystemTime,
    /// The event type of that version.
    pub event_type: String,
    /// The field's value from this version on; `None` when the field was removed.
    pub value: Option<Value>,
}

impl TryFrom<pb::TimelinePoint> for TimelinePoint {
    type Error = Error;
    fn try_from(p: pb::TimelinePoint) -> Result<Self> {
        Ok(Self {
            recorded_at: time("timeline point recorded_at", p.recorded_at)?,
            version: p.version,
            event_type: p.event_type,
            value: p.value.map(value_to_json),
        })
    }
}

/// Number of events of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventTypeCount {
    /// The event type.
    pub event_type: String,
    /// How many events of it.
    pub count: i64,
}

/// Events in one bucket of a time series.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeBucket {
    /// Start of the bucket; it lasts one interval.
    pub bucket_start: SystemTime,
    /// Events that occurred in it.
    pub count: i64,
}

/// How often one value occurs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ValueFrequency {
    /// The value.
    pub value: Value,
    /// How many instances have it.
    pub count: i64,
}

/// Statistics of one field over the states of an entity type's instances.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FieldAggregation {
    /// Instances whose state has the field.
    pub count: i64,
    /// Instances whose state lacks it.
    pub missing: i64,
    /// Smallest numeric value, if any value is numeric.
    pub min: Option<f64>,
    /// Largest numeric value.
    pub max: Option<f64>,
    /// Sum of the numeric values.
    pub sum: Option<f64>,
    /// Mean of the numeric values.
    pub mean: Option<f64>,
    /// Most frequent string and boolean values, most frequent first.
    pub top_values: Vec<ValueFrequency>,
}

impl From<pb::GetFieldAggregationResponse> for FieldAggregation {
    fn from(r: pb::GetFieldAggregationResponse) -> Self {
        Self {
            count: r.count,
            missing: r.missing,
            min: r.min,
            max: r.max,
            sum: r.sum,
            mean: r.mean,
            top_values: r
                .top_values
                .into_iter()
                .map(|v| ValueFrequency {
                    value: v.value.map_or(Value::Null, value_to_json),
                    count: v.count,
                })
                .collect(),
        }
    }
}

/// One instance of a most-active ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActiveInstance {
    /// UUID of the instance.
    pub instance_id: String,
    /// Your identifier of the instance.
    pub external_id: String,
    /// Its events in the range.
    pub event_count: i64,
    /// When its latest event in the range occurred.
    pub last_event_at: SystemTime,
}

/// Totals of one entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Instances of the type.
    pub instance_count: i64,
    /// Events of the type.
    pub event_count: i64,
    /// When the earliest event occurred; `None` without events.
    pub first_event_at: Option<SystemTime>,
    /// When the latest event occurred; `None` without events.
    pub last_event_at: Option<SystemTime>,
    /// Events that occurred in the last 24 hours.
    pub events_last_24h: i64,
    /// Every event type seen, sorted.
    pub event_types: Vec<String>,
    /// Where the counted events begin: the server's retention horizon (events recorded before it
    /// are no longer kept, so what occurred before it is counted in part); `None` while nothing
    /// was ever dropped.
    pub covered_from: Option<SystemTime>,
}

impl TryFrom<pb::GetSummaryResponse> for Summary {
    type Error = Error;
    fn try_from(r: pb::GetSummaryResponse) -> Result<Self> {
        Ok(Self {
            first_event_at: opt_time("summary first_event_at", r.first_event_at)?,
            last_event_at: opt_time("summary last_event_at", r.last_event_at)?,
            instance_count: r.instance_count,
            event_count: r.event_count,
            events_last_24h: r.events_last_24h,
            event_types: r.event_types,
            covered_from: opt_time("summary covered_from", r.covered_from)?,
        })
    }
}
