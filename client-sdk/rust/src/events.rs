//! EventService writes: applying one event or an atomic batch, each event carrying an `event_id`
//! fixed before the first attempt so that retries are idempotent.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::event_service_client::EventServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::json::{encode, encoded_to_struct, struct_to_json, to_struct};
use crate::model::{AppliedEvent, AppliedEvents, ApplyMode, Event, events, required};
use crate::options::{CallOptions, call_options};

/// A fresh idempotency key: time-ordered, so ids sort roughly by creation.
fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Options of [`Client::apply_event`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyEventOptions {
    initial_state: Option<std::result::Result<Value, String>>,
    metadata: Option<std::result::Result<Value, String>>,
    expected_version: Option<i64>,
    event_id: Option<String>,
    occurred_at: Option<SystemTime>,
    /// None: unspecified on the wire (the declared event type's mode, or merge patch).
    mode: Option<ApplyMode>,
    dry_run: bool,
    call: CallOptions,
}

impl ApplyEventOptions {
    /// Context stored with the event (actor, trace id, ...): any value that serializes to a JSON
    /// object. Default: none (`{}`).
    pub fn metadata(mut self, metadata: &impl Serialize) -> Self {
        self.metadata = Some(encode(metadata));
        self
    }

    /// Apply only if the instance is at exactly this version; otherwise the call fails with
    /// [`Error::Conflict`] naming the current version. Default: none — the event applies to
    /// whatever the latest state is (still never a lost update: writes to one instance are
    /// serialized).
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Idempotency key (1 to 128 characters): applying again with the same id returns the event
    /// recorded the first time, even across server restarts; the same id with other content is
    /// [`Error::AlreadyExists`]. Default: a new UUID (v7) made by the client before the first
    /// attempt, so the client's own retries are idempotent; set your own to make retries of
    /// your whole operation idempotent too.
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// Business time of the event (analytics follow it). Default: when the server records it.
    pub fn occurred_at(mut self, at: SystemTime) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// How the payload changes the state. Default: the mode the event type declares, otherwise
    /// [`ApplyMode::MergePatch`] (the request leaves it unspecified).
    pub fn mode(mut self, mode: ApplyMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Preview: the server decides the event (payload schema, guards, transform, schema) and
    /// answers it as it would be recorded, storing nothing. Default: false.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// With [`Client::apply_event_by_external_id`]: when no instance has that external id,
    /// create it with this initial state and apply the event to it, in one atomic step (both or
    /// neither). Racing creators end with one instance and every event applied once. Default:
    /// none — a missing instance is [`Error::NotFound`]. Refused (INVALID_ARGUMENT) on writes
    /// by instance id.
    pub fn create_if_missing(mut self, initial_state: &impl Serialize) -> Self {
        self.initial_state = Some(encode(initial_state));
        self
    }
}
call_options!(ApplyEventOptions);

/// Options of [`Client::apply_events`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyEventsOptions {
    expected_version: Option<i64>,
    dry_run: bool,
    initial_state: Option<std::result::Result<Value, String>>,
    call: CallOptions,
}

impl ApplyEventsOptions {
    /// With [`Client::apply_events_by_external_id`]: create a missing instance with this
    /// initial state and apply the batch to it atomically, as
    /// [`ApplyEventOptions::create_if_missing`]. Default: none.
    pub fn create_if_missing(mut self, initial_state: &impl Serialize) -> Self {
        self.initial_state = Some(encode(initial_state));
        self
    }

    /// Apply the batch only if the instance is at exactly this version before its first event;
    /// otherwise [`Error::Conflict`]. Default: none.
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Preview the batch, storing nothing, as [`ApplyEventOptions::dry_run`]. Default: false.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}
call_options!(ApplyEventsOptions);

/// One event of an [`Client::apply_events`] batch; its settings mean what the same settings of
/// [`ApplyEventOptions`] mean.
///
/// ```
/// use serde_json::json;
/// use temporal_state_client::{ApplyMode, NewEvent};
///
/// let events = vec![
///     NewEvent::new("ScoreIncreased", &json!({"score": 10})),
///     NewEvent::new("Renamed", &json!({"username": "alice2"})).event_id("rename-7"),
///     NewEvent::new("Reset", &json!({"username": "alice2", "score": 0})).mode(ApplyMode::Replace),
/// ];
/// # assert_eq!(events.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    event_type: String,
    payload: std::result::Result<Value, String>,
    metadata: Option<std::result::Result<Value, String>>,
    event_id: Option<String>,
    occurred_at: Option<SystemTime>,
    /// None: unspecified on the wire (the declared event type's mode, or merge patch).
    mode: Option<ApplyMode>,
}

impl NewEvent {
    /// An event of `event_type` (1 to 128 characters) whose payload is any value that serializes
    /// to a JSON object. A payload that does not is reported by [`Client::apply_events`] as
    /// [`Error::Encode`].
    pub fn new(event_type: impl Into<String>, payload: &impl Serialize) -> Self {
        Self {
            event_type: event_type.into(),
            payload: encode(payload),
            metadata: None,
            event_id: None,
            occurred_at: None,
            mode: None,
        }
    }

    /// Context stored with the event. Default: none (`{}`).
    pub fn metadata(mut self, metadata: &impl Serialize) -> Self {
        self.metadata = Some(encode(metadata));
        self
    }

    /// Idempotency key. Default: a new UUID (v7) made before the first attempt.
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// Business time. Default: when the server records it.
    pub fn occurred_at(mut self, at: SystemTime) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// How the payload changes the state. Default: the mode the event type declares, otherwise
    /// [`ApplyMode::MergePatch`] (the request leaves it unspecified).
    pub fn mode(mut self, mode: ApplyMode) -> Self {
        self.mode = Some(mode);
        self
    }

    fn to_proto(&self) -> Result<pb::EventInput> {
        let payload = match &self.payload {
            Ok(v) => to_struct("payload", v)?,
            Err(reason) => return Err(Error::encode("payload", reason)),
        };
        Ok(pb::EventInput {
            event_type: self.event_type.clone(),
            payload: Some(payload),
            metadata: encoded_to_struct("metadata", &self.metadata)?,
            event_id: self.event_id.clone().unwrap_or_else(new_event_id),
            occurred_at: self.occurred_at.map(Into::into),
            mode: self
                .mode
                .map_or(pb::ApplyMode::Unspecified, ApplyMode::to_proto) as i32,
        })
    }
}

impl Client {
    /// Applies one event to an instance and returns it with the state right after it.
    ///
    /// The payload is any value that serializes to a JSON object; by default it is a JSON merge
    /// patch (nested objects merge, `null` removes a field). Retries after UNAVAILABLE reuse the
    /// event's `event_id`, so the event is recorded once whatever happens to the answers.
    ///
    /// Errors: [`Error::InvalidArgument`] when the resulting state breaks the schema (nothing is
    /// stored; one violation per path), [`Error::Conflict`] when `expected_version` is not
    /// current, [`Error::AlreadyExists`] when the `event_id` was used for other content,
    /// [`Error::NotFound`] for an unknown instance.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use temporal_state_client::{ApplyEventOptions, Client, Error};
    ///
    /// # async fn run(client: Client, id: String) -> temporal_state_client::Result<()> {
    /// let options = ApplyEventOptions::default()
    ///     .expected_version(1)
    ///     .event_id("player-001-score-1")
    ///     .metadata(&json!({"actor": "game-server"}));
    /// match client.apply_event(&id, "ScoreIncreased", &json!({"score": 150, "level": 2}), &options).await {
    ///     Ok(applied) => println!("now v{}: {}", applied.event.version, applied.state),
    ///     Err(Error::Conflict { current_version, .. }) => println!("moved on to {current_version:?}"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn apply_event(
        &self,
        instance_id: &str,
        event_type: &str,
        payload: &impl Serialize,
        options: &ApplyEventOptions,
    ) -> Result<AppliedEvent> {
        let target = Target::Id(instance_id);
        self.apply_event_to(target, event_type, payload, options)
            .await
    }

    /// [`Client::apply_event`] to the instance of `entity_type` (id or name) with your
    /// `external_id`, without looking its id up first. With
    /// [`ApplyEventOptions::create_if_missing`], a missing instance is created and the event
    /// applied in one atomic step; the event's `instance_id` names the instance.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use temporal_state_client::ApplyEventOptions;
    ///
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let options = ApplyEventOptions::default()
    ///     .create_if_missing(&json!({"username": "alice", "score": 0}));
    /// let applied = client
    ///     .apply_event_by_external_id("player_profile", "player-001", "ScoreIncreased", &json!({"score": 10}), &options)
    ///     .await?;
    /// println!("{} is at v{}", applied.event.instance_id, applied.event.version);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn apply_event_by_external_id(
        &self,
        entity_type: &str,
        external_id: &str,
        event_type: &str,
        payload: &impl Serialize,
        options: &ApplyEventOptions,
    ) -> Result<AppliedEvent> {
        let target = Target::External(entity_type, external_id);
        self.apply_event_to(target, event_type, payload, options)
            .await
    }

    async fn apply_event_to(
        &self,
        target: Target<'_>,
        event_type: &str,
        payload: &impl Serialize,
        options: &ApplyEventOptions,
    ) -> Result<AppliedEvent> {
        let (instance_id, entity_type, external_id) = target.fields();
        let request = pb::ApplyEventRequest {
            instance_id,
            entity_type,
            external_id,
            event_type: event_type.to_string(),
            payload: Some(to_struct("payload", payload)?),
            metadata: encoded_to_struct("metadata", &options.metadata)?,
            expected_version: options.expected_version,
            // Fixed once, before the first attempt: every retry sends the same key.
            event_id: options.event_id.clone().unwrap_or_else(new_event_id),
            occurred_at: options.occurred_at.map(Into::into),
            mode: options
                .mode
                .map_or(pb::ApplyMode::Unspecified, ApplyMode::to_proto) as i32,
            dry_run: options.dry_run,
            create_if_missing: options.initial_state.is_some(),
            initial_state: encoded_to_struct("initial_state", &options.initial_state)?,
        };
        let r = self
            .unary("ApplyEvent", &options.call, request, |t, r| async move {
                EventServiceClient::new(t).apply_event(r).await
            })
            .await
            .0?;
        Ok(AppliedEvent {
            event: Event::try_from(required("event", r.event)?)?,
            state: struct_to_json(r.state),
        })
    }

    /// Applies several events to one instance atomically: all are recorded, in order, or none.
    /// Each event without an `event_id` gets one before the first attempt, as in
    /// [`Client::apply_event`].
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use temporal_state_client::{ApplyEventsOptions, NewEvent};
    ///
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let applied = client
    ///     .apply_events(
    ///         &id,
    ///         &[
    ///             NewEvent::new("ScoreIncreased", &json!({"score": 200})),
    ///             NewEvent::new("LevelUp", &json!({"level": 3})),
    ///         ],
    ///         &ApplyEventsOptions::default().expected_version(2),
    ///     )
    ///     .await?;
    /// assert_eq!(applied.events.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn apply_events(
        &self,
        instance_id: &str,
        events_to_apply: &[NewEvent],
        options: &ApplyEventsOptions,
    ) -> Result<AppliedEvents> {
        self.apply_events_to(Target::Id(instance_id), events_to_apply, options)
            .await
    }

    /// [`Client::apply_events`] to the instance of `entity_type` with your `external_id`; with
    /// [`ApplyEventsOptions::create_if_missing`], a missing instance is created and the batch
    /// applied to it atomically (an `expected_version` then counts the new instance at 1).
    pub async fn apply_events_by_external_id(
        &self,
        entity_type: &str,
        external_id: &str,
        events_to_apply: &[NewEvent],
        options: &ApplyEventsOptions,
    ) -> Result<AppliedEvents> {
        let target = Target::External(entity_type, external_id);
        self.apply_events_to(target, events_to_apply, options).await
    }

    async fn apply_events_to(
        &self,
        target: Target<'_>,
        events_to_apply: &[NewEvent],
        options: &ApplyEventsOptions,
    ) -> Result<AppliedEvents> {
        let (instance_id, entity_type, external_id) = target.fields();
        let request = pb::ApplyEventsRequest {
            instance_id,
            entity_type,
            external_id,
            expected_version: options.expected_version,
            events: events_to_apply
                .iter()
                .map(NewEvent::to_proto)
                .collect::<Result<_>>()?,
            dry_run: options.dry_run,
            create_if_missing: options.initial_state.is_some(),
            initial_state: encoded_to_struct("initial_state", &options.initial_state)?,
        };
        let r = self
            .unary("ApplyEvents", &options.call, request, |t, r| async move {
                EventServiceClient::new(t).apply_events(r).await
            })
            .await
            .0?;
        Ok(AppliedEvents {
            events: events(r.events)?,
            state: struct_to_json(r.state),
        })
    }
}

/// Which instance a write names.
enum Target<'a> {
    Id(&'a str),
    External(&'a str, &'a str),
}

impl Target<'_> {
    /// `instance_id`, `entity_type`, `external_id` of the request.
    fn fields(&self) -> (String, String, String) {
        match self {
            Self::Id(id) => (id.to_string(), String::new(), String::new()),
            Self::External(t, x) => (String::new(), t.to_string(), x.to_string()),
        }
    }
}
