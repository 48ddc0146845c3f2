//! The write side: entity types, instances and events.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tracing::{Instrument as _, instrument};
use uuid::Uuid;

use super::current::CurrentStates;
use super::error::{require, require_some};
use super::queries::Queries;
use super::registry::{TypeEntry, TypeRegistry};
use super::{AppError, Limits};
use crate::domain::apply::transformed_payload;
use crate::domain::cel::Inputs;
use crate::domain::declared::{Declarations, DeclarationsDoc, GuardOutcome};
use crate::domain::entity_type::check_event_id;
use crate::domain::idempotency::content_hash;
use crate::domain::limits::measure_object;
use crate::domain::validate::CompiledSchema;
use crate::domain::{
    Access, ApplyMode, DomainError, EntityTypeName, EventType, ExternalId, Meter, Principal, State,
    apply_in_place,
};
use crate::ports::{
    AppendOutcome, AppendRequest, Decide, Decision, EntityTypeRecord, EventBus, EventRecord,
    EventStore, InstanceRecord, InstanceViolation, LiveEvent, NewInstance, PendingEvent,
    RecordedKey, SchemaCheck, StateCheck, StoreError, TypeKey, TypeUpdate, TypeUpdateOutcome,
};

/// One event to apply, as the caller described it.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub event_type: String,
    pub payload: State,
    pub metadata: State,
    /// Client idempotency key; None lets the server generate one.
    pub event_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// None: the declared event type's mode, or merge patch.
    pub mode: Option<ApplyMode>,
}

/// What ApplyEvent(s) answers: the events recorded (or, in a dry run, as they would be), the
/// state after the last one, and every guard evaluated on the way.
#[derive(Debug, Clone)]
pub struct Applied {
    pub events: Vec<EventRecord>,
    pub state: State,
    pub guards: Vec<GuardOutcome>,
    pub dry_run: bool,
}

/// Where a dry run's decide keeps its decision (with the version of its first event) before
/// refusing to commit it.
type Preview = Arc<Mutex<Option<(i64, Decision)>>>;

/// What a decision hands back beside itself: the guards it evaluated and, in a dry run, the
/// decision it refused to commit.
struct Outlets {
    guards: Arc<Mutex<Vec<GuardOutcome>>>,
    preview: Option<Preview>,
}

/// Which instance a write goes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// By its id.
    Id(Uuid),
    /// By the caller's identifier; with `create`, a missing instance is created (with that
    /// initial state) and written in one atomic step.
    External {
        entity_type: TypeKey,
        external_id: ExternalId,
        create: Option<Creation>,
    },
}

/// How a write by external id creates a missing instance.
#[derive(Debug, Clone, Default)]
pub struct Creation {
    pub initial_state: State,
    pub metadata: State,
}

/// What the bus carries of committed `events` of an instance of `entry`'s type.
fn live_events(entry: &TypeEntry, events: &[EventRecord]) -> Vec<LiveEvent> {
    events
        .iter()
        .map(|e| LiveEvent {
            entity_type_name: entry.record.name.clone(),
            event: e.clone(),
        })
        .collect()
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// How often a write is decided when a schema change keeps committing under it; past that it
/// is ABORTED (safe to retry).
const SCHEMA_ATTEMPTS: usize = 3;

/// Most violating instances an entity type update describes (all are counted).
pub const MAX_SCHEMA_VIOLATIONS: usize = 20;

/// A change to an entity type, as the caller described it.
#[derive(Debug, Clone, Default)]
pub struct TypeChange {
    /// None keeps the description.
    pub description: Option<String>,
    /// None keeps the schema and its version.
    pub schema: Option<State>,
    /// When set, the change applies only if the schema is still at this version (ABORTED
    /// otherwise).
    pub expected_schema_version: Option<i64>,
    /// Check and report, change nothing.
    pub dry_run: bool,
    /// Accept a schema that current states break; their next event must fix them.
    pub allow_invalid_existing: bool,
    /// Some: the new schema version declares these event types (the schema is kept when none is
    /// given); None keeps the current declarations.
    pub declarations: Option<DeclarationsDoc>,
}

/// What a declared event type makes of `input` on `state` (the state before it, at `version`
/// less one): the payload to store when its transform computed the change (what the client sent
/// beside the change), and the mode to apply it in. Guards evaluated are added to `evaluated`.
fn declared_change(
    entry: &TypeEntry,
    input: &EventInput,
    state: &State,
    version: i64,
    evaluated: &mut Vec<GuardOutcome>,
) -> Result<(Option<State>, ApplyMode), DomainError> {
    let Some(declared) = entry.declarations.lookup(&input.event_type)? else {
        return Ok((None, input.mode.unwrap_or(ApplyMode::MergePatch)));
    };
    if declared.transform.is_some() && input.mode.is_some_and(|m| m != ApplyMode::MergePatch) {
        return Err(DomainError::invalid(
            "mode",
            format!(
                "{} declares a transform, whose fields are applied as a merge patch: leave the \
                 mode unspecified",
                input.event_type
            ),
        ));
    }
    let mut event = State::new();
    event.insert("type".into(), input.event_type.clone().into());
    event.insert(
        "occurred_at".into(),
        input
            .occurred_at
            .map(|t| serde_json::Value::String(t.to_rfc3339()))
            .unwrap_or(serde_json::Value::Null),
    );
    event.insert("version".into(), version.into());
    let decided = declared.decide(
        &entry.record.name,
        &input.event_type,
        &Inputs {
            state,
            payload: &input.payload,
            metadata: &input.metadata,
            event: &event,
        },
    )?;
    evaluated.extend(decided.guards);
    Ok(match decided.change {
        Some(change) => (
            Some(transformed_payload(input.payload.clone(), change)),
            ApplyMode::Transformed,
        ),
        None => (
            None,
            input.mode.or(decided.mode).unwrap_or(ApplyMode::MergePatch),
        ),
    })
}

/// An erased instance refuses every write, whatever it is.
fn refuse_erased(instance_id: Uuid, head: &crate::ports::Head) -> Result<(), DomainError> {
    if head.erased {
        return Err(DomainError::NotNow(format!(
            "instance {instance_id} is erased: it refuses writes, and its data is gone"
        )));
    }
    Ok(())
}

fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

/// The write side. The only handler holding the [`EventStore`]; after a commit it tells the bus
/// and moves the cached state forward.
#[derive(Clone)]
pub struct Commands {
    store: Arc<dyn EventStore>,
    registry: Arc<TypeRegistry>,
    /// The cached current states a commit moves forward.
    current: CurrentStates,
    /// Reads back what a faithful retry recorded the first time.
    queries: Queries,
    /// Where committed events go for subscribers.
    bus: Arc<dyn EventBus>,
    limits: Limits,
}

impl Commands {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        registry: Arc<TypeRegistry>,
        current: CurrentStates,
        queries: Queries,
        bus: Arc<dyn EventBus>,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            registry,
            current,
            queries,
            bus,
            limits,
        }
    }

    /// Needs `admin` (or `admin:<name>`).
    #[instrument(skip(self, principal, description, schema, declarations))]
    pub async fn create_entity_type(
        &self,
        principal: &Principal,
        name: &str,
        description: &str,
        schema: State,
        declarations: Option<DeclarationsDoc>,
    ) -> Result<EntityTypeRecord, AppError> {
        require_some(principal, Access::Admin)?;
        let name = EntityTypeName::parse(name)?;
        require(principal, Access::Admin, name.as_str())?;
        check_description(description)?;
        self.check_size("schema", &schema)?;
        let compiled = CompiledSchema::compile(&schema)?;
        let declarations = self.check_declarations(declarations)?;
        let doc = declarations.as_ref().map(|(doc, _)| doc.clone());
        let record = self
            .store
            .create_entity_type(
                Uuid::now_v7(),
                name.as_str(),
                description,
                &schema,
                doc.as_ref(),
            )
            .await?;
        self.registry.put_type(Arc::new(TypeEntry {
            record: record.clone(),
            schema: compiled,
            declarations: declarations.map(|(_, d)| d).unwrap_or_default(),
        }));
        Ok(record)
    }

    /// Compiles declarations (refusing them with the failing expression's position) and sizes
    /// their stored form; None, or none declared, stores nothing.
    fn check_declarations(
        &self,
        declarations: Option<DeclarationsDoc>,
    ) -> Result<Option<(State, Declarations)>, AppError> {
        let Some(doc) = declarations.filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let compiled = Declarations::compile(&doc)?;
        let json = doc.to_json();
        self.check_size("declarations", &json)?;
        Ok(Some((json, compiled)))
    }

    /// Changes a type's description and/or schema (a new schema version). A new schema is
    /// checked against every current state of the type, in the store: with violations and
    /// neither `dry_run` nor `allow_invalid_existing`, FAILED_PRECONDITION listing the first
    /// violating instances and paths. Needs `admin` (or `admin:<name>`).
    #[instrument(skip(self, principal, change), fields(dry_run = change.dry_run))]
    pub async fn update_entity_type(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        mut change: TypeChange,
    ) -> Result<TypeUpdateOutcome, AppError> {
        require_some(principal, Access::Admin)?;
        if let Some(description) = &change.description {
            check_description(description)?;
        }
        if let Some(v) = change.expected_schema_version
            && v < 1
        {
            return Err(AppError::invalid(
                "expected_schema_version",
                format!("{v} is not a schema version: versions start at 1"),
            ));
        }
        if change.description.is_none() && change.schema.is_none() && change.declarations.is_none()
        {
            return Err(AppError::invalid(
                "schema",
                "nothing to change: give a description, a schema, declarations or several",
            ));
        }
        let declarations = match change.declarations.take() {
            Some(doc) => Some(self.check_declarations(Some(doc))?.map(|(json, _)| json)),
            None => None,
        };
        let compiled = match &change.schema {
            Some(schema) => {
                self.check_size("schema", schema)?;
                Some(Arc::new(CompiledSchema::compile(schema)?))
            }
            None => None,
        };
        let entry = self.registry.resolve(entity_type).await?;
        require(principal, Access::Admin, &entry.record.name)?;
        // New declarations make a new schema version; without a new schema it keeps the schema.
        if declarations.is_some() && change.schema.is_none() {
            change.schema = Some(entry.record.schema.clone());
        }
        let name = entry.record.name.clone();
        let check: StateCheck = match compiled {
            Some(schema) => Box::new(move |state| match schema.validate(&name, state) {
                Ok(()) => Vec::new(),
                Err(e) => e.violations(),
            }),
            None => Box::new(|_| Vec::new()),
        };
        let mode = if change.dry_run {
            SchemaCheck::DryRun
        } else if change.allow_invalid_existing {
            SchemaCheck::AllowInvalid
        } else {
            SchemaCheck::Enforce
        };
        let outcome = self
            .store
            .update_entity_type(
                TypeUpdate {
                    entity_type_id: entry.record.id,
                    description: change.description,
                    schema: change.schema,
                    declarations,
                    expected_schema_version: change.expected_schema_version,
                    check: mode,
                    max_violations: MAX_SCHEMA_VIOLATIONS,
                },
                check,
            )
            .await?;
        self.registry.remember_record(outcome.record.clone())?;
        if mode == SchemaCheck::Enforce && !outcome.applied {
            let first = &outcome.violations;
            return Err(AppError::FailedPrecondition {
                message: format!(
                    "the new schema of entity type {} is refused: {} of {} current states break \
                     it (first: {}); fix them, or pass allow_invalid_existing",
                    outcome.record.name,
                    outcome.invalid,
                    outcome.checked,
                    first
                        .iter()
                        .take(3)
                        .map(describe_violation)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                violations: first
                    .iter()
                    .flat_map(|i| {
                        i.violations.iter().map(move |v| {
                            (
                                format!(
                                    "instance {} ({:?}) {}",
                                    i.instance_id, i.external_id, v.path
                                ),
                                v.message.clone(),
                            )
                        })
                    })
                    .collect(),
            });
        }
        Ok(outcome)
    }

    /// Deletes a type that has no instances (FAILED_PRECONDITION otherwise). Needs `admin` (or
    /// `admin:<name>`).
    #[instrument(skip(self, principal))]
    pub async fn delete_entity_type(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
    ) -> Result<(), AppError> {
        let entry = self
            .registry
            .resolve_for(principal, Access::Admin, entity_type)
            .await?;
        let result = self.store.delete_entity_type(entry.record.id).await;
        if matches!(result, Ok(()) | Err(StoreError::NotFound(_))) {
            self.registry
                .forget_type(entry.record.id, &entry.record.name);
        }
        result.map_err(|e| match e {
            StoreError::Precondition(why) => AppError::FailedPrecondition {
                message: format!("entity type {} cannot be deleted: {why}", entry.record.name),
                violations: Vec::new(),
            },
            other => other.into(),
        })
    }

    /// Needs `write` on the type.
    #[instrument(skip(self, principal, initial_state, metadata))]
    pub async fn create_instance(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        external_id: &ExternalId,
        initial_state: State,
        metadata: State,
    ) -> Result<(InstanceRecord, EventRecord), AppError> {
        require_some(principal, Access::Write)?;
        self.check_size("initial_state", &initial_state)?;
        self.check_size("metadata", &metadata)?;
        self.limits
            .state
            .check("initial_state", measure_object(&initial_state))?;
        self.check_event_bytes(&initial_state, &metadata)?;
        let mut entry = self.registry.resolve(entity_type).await?;
        require(principal, Access::Write, &entry.record.name)?;
        let hash = content_hash(
            EventType::INSTANCE_CREATED,
            ApplyMode::Replace,
            &initial_state,
        );
        let new = NewInstance {
            id: Uuid::now_v7(),
            entity_type_id: entry.record.id,
            external_id: external_id.as_str().to_string(),
            initial_state,
            metadata,
            event_id: new_event_id(),
            content_hash: hash,
            recorded_by: principal.recorded_as().to_string(),
            schema_version: entry.record.schema_version,
        };
        let mut attempt = 1;
        let (instance, event) = loop {
            entry
                .schema
                .validate(&entry.record.name, &new.initial_state)?;
            let new = NewInstance {
                schema_version: entry.record.schema_version,
                ..new.clone()
            };
            match self.store.create_instance(new).await {
                // A schema change committed since this server read the type: validate again.
                Err(StoreError::Rejected(DomainError::StaleSchema { .. }))
                    if attempt < SCHEMA_ATTEMPTS =>
                {
                    attempt += 1;
                    entry = self.registry.reload(entry.record.id).await?;
                }
                other => break other?,
            }
        };
        self.registry
            .put_instance_type(instance.id, instance.entity_type_id);
        Ok((instance, event))
    }

    /// Applies events to one instance atomically. Returns the recorded events and the state
    /// after the last one; a retry of recorded events returns them as they were recorded.
    /// With `dry_run` the events are decided on the instance's locked head exactly as for a
    /// write (declarations, guards, transforms, schema), then rolled back: the answer is what
    /// would be recorded. Needs `write` on the instance's type.
    #[instrument(skip(self, principal, inputs), fields(events = inputs.len()))]
    ///
    /// By external id with a [`Creation`], a missing instance is created and the events applied
    /// to it in one transaction (both or neither); a creator that loses the race to another
    /// appends to the instance the other created, so racing creators end with one instance and
    /// every event applied once. `expected_version` then counts the created instance as at
    /// version 1.
    pub async fn apply_events(
        &self,
        principal: &Principal,
        target: Target,
        expected_version: Option<i64>,
        inputs: Vec<EventInput>,
        dry_run: bool,
    ) -> Result<Applied, AppError> {
        require_some(principal, Access::Write)?;
        if inputs.is_empty() {
            return Err(AppError::invalid(
                "events",
                "at least one event is required",
            ));
        }
        if inputs.len() > self.limits.max_batch_events {
            return Err(AppError::TooLarge(format!(
                "{} events in one batch, over the limit of {}",
                inputs.len(),
                self.limits.max_batch_events
            )));
        }
        if let Some(v) = expected_version
            && v < 1
        {
            return Err(AppError::invalid(
                "expected_version",
                format!("{v} is not a version: versions start at 1"),
            ));
        }
        let mut client_ids = Vec::new();
        let mut seen = HashSet::new();
        for input in &inputs {
            EventType::parse(&input.event_type)?;
            if EventType::LIFECYCLE.contains(&input.event_type.as_str()) {
                return Err(AppError::invalid(
                    "event_type",
                    format!(
                        "{:?} is recorded by the server only (ArchiveInstance, RestoreInstance, \
                         EraseInstance)",
                        input.event_type
                    ),
                ));
            }
            self.check_size("payload", &input.payload)?;
            self.check_size("metadata", &input.metadata)?;
            self.check_event_bytes(&input.payload, &input.metadata)?;
            if let Some(id) = &input.event_id {
                check_event_id(id)?;
                if !seen.insert(id.as_str()) {
                    return Err(AppError::invalid(
                        "event_id",
                        format!("{id:?} appears twice in one batch"),
                    ));
                }
                client_ids.push(id.clone());
            }
        }

        let (instance_id, create) = match target {
            Target::Id(id) => (id, None),
            Target::External {
                entity_type,
                external_id,
                create,
            } => {
                let entry = self.registry.resolve(&entity_type).await?;
                require(principal, Access::Write, &entry.record.name)?;
                if let Some(c) = &create {
                    self.check_size("initial_state", &c.initial_state)?;
                    self.check_size("metadata", &c.metadata)?;
                    self.limits
                        .state
                        .check("initial_state", measure_object(&c.initial_state))?;
                    self.check_event_bytes(&c.initial_state, &c.metadata)?;
                }
                match self
                    .store
                    .find_instance(entry.record.id, external_id.as_str())
                    .await
                {
                    Ok(found) => (found.id, None),
                    Err(StoreError::NotFound(_)) if create.is_some() => {
                        (Uuid::now_v7(), create.map(|c| (entry, external_id, c)))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut entry = match &create {
            Some((entry, ..)) => entry.clone(),
            None => self.registry.type_of(instance_id).await?,
        };
        require(principal, Access::Write, &entry.record.name)?;
        let pending_ids: Arc<Vec<String>> = Arc::new(
            inputs
                .iter()
                .map(|i| i.event_id.clone().unwrap_or_else(new_event_id))
                .collect(),
        );

        let hashes: Vec<Vec<u8>> = inputs
            .iter()
            .map(|i| {
                content_hash(
                    &i.event_type,
                    i.mode.unwrap_or(ApplyMode::MergePatch),
                    &i.payload,
                )
            })
            .collect();

        let inputs = Arc::new(inputs);
        let hashes = Arc::new(hashes);
        let request = AppendRequest {
            instance_id,
            expected_version,
            client_event_ids: client_ids,
            recorded_by: principal.recorded_as().to_string(),
        };
        let guards: Arc<Mutex<Vec<GuardOutcome>>> = Arc::default();
        // A dry run keeps its decision here and refuses to commit it.
        let preview: Preview = Arc::default();
        let (mut instance_id, mut request) = (instance_id, request);
        if let Some((_, external_id, creation)) = create {
            if dry_run {
                // A preview decides on a stored head; this instance has none yet.
                return Err(AppError::invalid(
                    "dry_run",
                    format!(
                        "no instance has external_id {:?} yet: create_if_missing cannot be \
                         previewed (preview it once the instance exists)",
                        external_id.as_str()
                    ),
                ));
            }
            let created_hash = content_hash(
                EventType::INSTANCE_CREATED,
                ApplyMode::Replace,
                &creation.initial_state,
            );
            let mut attempt = 1;
            loop {
                entry
                    .schema
                    .validate(&entry.record.name, &creation.initial_state)?;
                let new = NewInstance {
                    id: instance_id,
                    entity_type_id: entry.record.id,
                    external_id: external_id.as_str().to_string(),
                    initial_state: creation.initial_state.clone(),
                    metadata: creation.metadata.clone(),
                    event_id: new_event_id(),
                    content_hash: created_hash.clone(),
                    recorded_by: principal.recorded_as().to_string(),
                    schema_version: entry.record.schema_version,
                };
                let decide = self.decider(
                    instance_id,
                    &entry,
                    &inputs,
                    &hashes,
                    &pending_ids,
                    Outlets {
                        guards: guards.clone(),
                        preview: None,
                    },
                );
                match self
                    .create_in_task(new, request.clone(), decide, entry.clone())
                    .await
                {
                    Err(StoreError::Rejected(DomainError::StaleSchema { .. }))
                        if attempt < SCHEMA_ATTEMPTS =>
                    {
                        attempt += 1;
                        entry = self.registry.reload(entry.record.id).await?;
                    }
                    // Another creator took the external id first: write to its instance.
                    Err(StoreError::AlreadyExists(_)) => {
                        let found = self
                            .store
                            .find_instance(entry.record.id, external_id.as_str())
                            .await?;
                        instance_id = found.id;
                        request.instance_id = found.id;
                        break;
                    }
                    Ok(outcome) => {
                        let (events, state) = match outcome {
                            AppendOutcome::Appended { events, state } => (events, state),
                            AppendOutcome::AlreadyRecorded { keys } => {
                                self.replay_retry(instance_id, &inputs, &hashes, keys)
                                    .await?
                            }
                        };
                        let guards =
                            std::mem::take(&mut *guards.lock().unwrap_or_else(|p| p.into_inner()));
                        return Ok(Applied {
                            events,
                            state,
                            guards,
                            dry_run: false,
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut attempt = 1;
        let outcome = loop {
            let decide = self.decider(
                instance_id,
                &entry,
                &inputs,
                &hashes,
                &pending_ids,
                Outlets {
                    guards: guards.clone(),
                    preview: dry_run.then(|| preview.clone()),
                },
            );
            let appended = if dry_run {
                self.store.append(request.clone(), decide).await
            } else {
                self.append_in_task(request.clone(), decide, entry.clone())
                    .await
            };
            match appended {
                // The type's schema changed since this server last read it: read it again and
                // decide again against the current version.
                Err(StoreError::Rejected(DomainError::StaleSchema { .. }))
                    if attempt < SCHEMA_ATTEMPTS =>
                {
                    attempt += 1;
                    entry = self.registry.reload(entry.record.id).await?;
                }
                other => break other,
            }
        };
        let guards = std::mem::take(&mut *guards.lock().unwrap_or_else(|p| p.into_inner()));
        let (events, state) = match outcome {
            Err(StoreError::Rejected(DomainError::DryRun)) if dry_run => {
                let (first, decision) = preview
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| AppError::Internal("a dry run kept no decision".into()))?;
                self.previewed(instance_id, &entry, principal, first, decision)
            }
            other => match other? {
                AppendOutcome::Appended { events, state } => (events, state),
                AppendOutcome::AlreadyRecorded { keys } => {
                    self.replay_retry(instance_id, &inputs, &hashes, keys)
                        .await?
                }
            },
        };
        Ok(Applied {
            events,
            state,
            guards,
            dry_run,
        })
    }

    /// The events a dry run would record, as history would show them.
    fn previewed(
        &self,
        instance_id: Uuid,
        entry: &TypeEntry,
        principal: &Principal,
        first: i64,
        decision: Decision,
    ) -> (Vec<EventRecord>, State) {
        let now = truncate_micros(Utc::now());
        let events = decision
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| EventRecord {
                event_id: e.event_id,
                instance_id,
                entity_type_id: entry.record.id,
                event_type: e.event_type,
                version: first + i as i64,
                payload: e.payload,
                metadata: e.metadata,
                mode: e.mode,
                recorded_at: now,
                occurred_at: e.occurred_at.unwrap_or(now),
                recorded_by: principal.recorded_as().to_string(),
                schema_version: entry.record.schema_version,
                // Not stored, so no place in the log.
                position: 0,
            })
            .collect();
        (events, decision.state)
    }

    /// The decision of an append: folds the inputs onto the locked head and validates each
    /// resulting state against `entry`'s schema, refusing a head read at another schema version.
    fn decider(
        &self,
        instance_id: Uuid,
        entry: &Arc<TypeEntry>,
        inputs: &Arc<Vec<EventInput>>,
        hashes: &Arc<Vec<Vec<u8>>>,
        pending_ids: &Arc<Vec<String>>,
        outlets: Outlets,
    ) -> Decide {
        let limits = self.limits.state;
        let max_event_bytes = self.limits.max_event_bytes;
        let Outlets { guards, preview } = outlets;
        let inputs = inputs.clone();
        let hashes = hashes.clone();
        let pending_ids = pending_ids.clone();
        let entry = entry.clone();
        Box::new(move |head| {
            refuse_erased(instance_id, head)?;
            if head.archived {
                return Err(DomainError::NotNow(format!(
                    "instance {instance_id} is archived: it refuses writes until RestoreInstance"
                )));
            }
            if head.schema_version != entry.record.schema_version {
                return Err(DomainError::StaleSchema {
                    entity_type: entry.record.name.clone(),
                    decided: entry.record.schema_version,
                    current: head.schema_version,
                });
            }
            // One working copy of the state, changed in place event after event; a copy is
            // kept only where the store snapshots, never one per event.
            let mut meter = Meter::new(limits, &head.state);
            let mut state = head.state.clone();
            let mut pending = Vec::with_capacity(inputs.len());
            let events = inputs.iter().zip(pending_ids.iter()).zip(hashes.iter());
            let mut evaluated = Vec::new();
            for (i, ((input, id), hash)) in events.enumerate() {
                let version = head.version + 1 + i as i64;
                let (payload, mode) =
                    declared_change(&entry, input, &state, version, &mut evaluated)?;
                let payload = match payload {
                    Some(stored) => {
                        if let Some(max) = max_event_bytes {
                            let size = measure_object(&stored)
                                .bytes
                                .saturating_add(measure_object(&input.metadata).bytes);
                            if size > max {
                                return Err(DomainError::TooLarge(format!(
                                    "the event with its recorded change is {size} bytes, over \
                                     the {max} bytes one published event may carry"
                                )));
                            }
                        }
                        stored
                    }
                    None => input.payload.clone(),
                };
                apply_in_place(&mut state, &payload, mode, &mut meter)?;
                entry.schema.validate(&entry.record.name, &state)?;
                let snapshot = if version % head.snapshot_interval.max(1) == 0 {
                    // A stored state: measured exactly, not estimated.
                    limits.check("the resulting state", measure_object(&state))?;
                    Some(state.clone())
                } else {
                    None
                };
                pending.push(PendingEvent {
                    event_id: id.clone(),
                    event_type: input.event_type.clone(),
                    payload,
                    metadata: input.metadata.clone(),
                    mode,
                    // Stored with microseconds: answer what history will show.
                    occurred_at: input.occurred_at.map(truncate_micros),
                    snapshot,
                    content_hash: hash.clone(),
                });
            }
            limits.check("the resulting state", measure_object(&state))?;
            *guards.lock().unwrap_or_else(|p| p.into_inner()) = evaluated;
            let decision = Decision {
                events: pending,
                state,
                archived: None,
            };
            match &preview {
                Some(keep) => {
                    *keep.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((head.version + 1, decision));
                    Err(DomainError::DryRun)
                }
                None => Ok(decision),
            }
        })
    }

    /// Archives (`archived`) or restores an instance: one `InstanceArchived` /
    /// `InstanceRestored` event with an empty payload (the state is unchanged), through the
    /// same append as every event, so history, bus, cache and idempotency treat it alike.
    /// FAILED_PRECONDITION when the instance already is in that state, unless `client_id` names
    /// the event recorded first (a retry): then that event is the answer, as for ApplyEvent.
    /// Needs `write` on the instance's type.
    #[instrument(skip(self, principal, metadata))]
    pub async fn set_archived(
        &self,
        principal: &Principal,
        instance_id: Uuid,
        archived: bool,
        expected_version: Option<i64>,
        client_id: Option<String>,
        metadata: State,
    ) -> Result<(InstanceRecord, EventRecord), AppError> {
        require_some(principal, Access::Write)?;
        if let Some(id) = &client_id {
            check_event_id(id)?;
        }
        self.check_size("metadata", &metadata)?;
        self.check_event_bytes(&State::new(), &metadata)?;
        if let Some(v) = expected_version
            && v < 1
        {
            return Err(AppError::invalid(
                "expected_version",
                format!("{v} is not a version: versions start at 1"),
            ));
        }
        let entry = self.registry.type_of(instance_id).await?;
        require(principal, Access::Write, &entry.record.name)?;
        let event_type = if archived {
            EventType::INSTANCE_ARCHIVED
        } else {
            EventType::INSTANCE_RESTORED
        };
        let event_id = client_id.clone().unwrap_or_else(new_event_id);
        let hash = content_hash(event_type, ApplyMode::MergePatch, &State::new());
        let retry = EventInput {
            event_type: event_type.to_string(),
            payload: State::new(),
            metadata: metadata.clone(),
            event_id: client_id.clone(),
            occurred_at: None,
            mode: Some(ApplyMode::MergePatch),
        };
        let retry_hash = hash.clone();
        let decide: Decide = Box::new(move |head| {
            refuse_erased(instance_id, head)?;
            if head.archived == archived {
                return Err(DomainError::NotNow(if archived {
                    format!("instance {instance_id} is already archived")
                } else {
                    format!("instance {instance_id} is not archived: there is nothing to restore")
                }));
            }
            let version = head.version + 1;
            let snapshot =
                (version % head.snapshot_interval.max(1) == 0).then(|| head.state.clone());
            Ok(Decision {
                events: vec![PendingEvent {
                    event_id: event_id.clone(),
                    event_type: event_type.to_string(),
                    payload: State::new(),
                    metadata: metadata.clone(),
                    mode: ApplyMode::MergePatch,
                    occurred_at: None,
                    snapshot,
                    content_hash: hash.clone(),
                }],
                state: head.state.clone(),
                archived: Some(archived),
            })
        });
        let request = AppendRequest {
            instance_id,
            expected_version,
            client_event_ids: client_id.into_iter().collect(),
            recorded_by: principal.recorded_as().to_string(),
        };
        let mut events = match self.append_in_task(request, decide, entry).await? {
            AppendOutcome::Appended { events, .. } => events,
            // A retry: the event recorded first, if it is this very one (same type).
            AppendOutcome::AlreadyRecorded { keys } => {
                self.replay_retry(instance_id, &[retry], &[retry_hash], keys)
                    .await?
                    .0
            }
        };
        let event = events
            .pop()
            .ok_or_else(|| AppError::Internal("an archive stored no event".into()))?;
        let instance = self.store.get_instance(instance_id).await?;
        Ok((instance, event))
    }

    /// Erases an instance (the right to erasure): one `InstanceErased` event, recorded under the
    /// instance's lock like every append, whose transaction destroys the instance's state,
    /// payloads, metadata, snapshots, unpublished outbox rows and external id; then the cached
    /// entries go (the entry by id becomes the erased record, so no stale state can be put
    /// back). Its metadata holds `reason` when one is given; `recorded_by` says who erased it.
    /// With NATS, the relay purges the instance's subject from the stream before it publishes
    /// the `InstanceErased` event. Erasing an erased instance is a success that changes
    /// nothing and answers the same event. Needs `admin` on the instance's type.
    #[instrument(skip(self, principal, reason))]
    pub async fn erase_instance(
        &self,
        principal: &Principal,
        instance_id: Uuid,
        reason: Option<String>,
    ) -> Result<(InstanceRecord, EventRecord), AppError> {
        require_some(principal, Access::Admin)?;
        let mut metadata = State::new();
        if let Some(reason) = reason {
            check_reason(&reason)?;
            metadata.insert("reason".into(), serde_json::Value::String(reason));
        }
        let entry = self.registry.type_of(instance_id).await?;
        require(principal, Access::Admin, &entry.record.name)?;
        // The external id is about to be destroyed: its cache key must be known to delete it.
        let before = self.store.get_instance(instance_id).await?;
        if before.erased {
            return self.erased_already(instance_id).await;
        }
        let event_id = new_event_id();
        let hash = content_hash(
            EventType::INSTANCE_ERASED,
            ApplyMode::Replace,
            &State::new(),
        );
        let decide: Decide = Box::new(move |head| {
            refuse_erased(instance_id, head)?;
            let version = head.version + 1;
            Ok(Decision {
                events: vec![PendingEvent {
                    event_id: event_id.clone(),
                    event_type: EventType::INSTANCE_ERASED.to_string(),
                    payload: State::new(),
                    metadata: metadata.clone(),
                    mode: ApplyMode::Replace,
                    occurred_at: None,
                    snapshot: (version % head.snapshot_interval.max(1) == 0).then(State::new),
                    content_hash: hash.clone(),
                }],
                state: State::new(),
                archived: Some(false),
            })
        });
        let request = AppendRequest {
            instance_id,
            expected_version: None,
            client_event_ids: Vec::new(),
            recorded_by: principal.recorded_as().to_string(),
        };
        let app = self.clone();
        let former = before.external_id;
        // In a task of its own, as appends: a caller gone away never stops the scrub of the
        // cache half-way.
        let outcome = tokio::spawn(
            async move {
                let outcome = app.store.erase_instance(request, decide).await;
                let committed = match &outcome {
                    Ok(AppendOutcome::Appended { events, .. }) => {
                        app.bus.committed(&live_events(&entry, events)).await;
                        true
                    }
                    // Whether it committed is unknown: scrub the cache if it did (the former
                    // external id is known only now).
                    Err(
                        StoreError::Unavailable(_)
                        | StoreError::TimedOut(_)
                        | StoreError::Internal(_),
                    ) => true,
                    _ => false,
                };
                if committed {
                    match app.store.get_instance(instance_id).await {
                        Ok(erased) if erased.erased => {
                            app.registry.forget_instance(instance_id);
                            app.current.erased(&erased, &former).await;
                        }
                        Ok(_) => {}
                        Err(_) => app.current.outcome_unknown(instance_id),
                    }
                }
                outcome
            }
            .in_current_span(),
        )
        .await
        .map_err(|e| AppError::Internal(format!("erase task failed: {e}")))?;
        match outcome {
            Ok(AppendOutcome::Appended { mut events, .. }) => {
                let event = events
                    .pop()
                    .ok_or_else(|| AppError::Internal("an erasure stored no event".into()))?;
                let instance = self.store.get_instance(instance_id).await?;
                Ok((instance, event))
            }
            Ok(AppendOutcome::AlreadyRecorded { .. }) => Err(AppError::Internal(
                "an erasure without idempotency keys found one recorded".into(),
            )),
            // A concurrent erasure won the lock: this one is its retry.
            Err(StoreError::Rejected(DomainError::NotNow(_))) => {
                self.erased_already(instance_id).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to erasing an erased instance: as it is, with its `InstanceErased` event (its
    /// last: nothing is recorded after it). The cache entry by id is written again, in case the
    /// first erasure could not reach the cache.
    async fn erased_already(
        &self,
        instance_id: Uuid,
    ) -> Result<(InstanceRecord, EventRecord), AppError> {
        let instance = self.store.get_instance(instance_id).await?;
        if !instance.erased {
            return Err(AppError::Internal(format!(
                "instance {instance_id} refused an erasure but is not erased"
            )));
        }
        let event = self
            .queries
            .recorded_events(instance_id, &[instance.version])
            .await?
            .pop()
            .ok_or_else(|| AppError::Internal("an erased instance has no last event".into()))?;
        self.current.erased(&instance, "").await;
        Ok((instance, event))
    }

    /// The append and its after-commit work (bus, cache) run in a task of their own: a caller
    /// that hangs up, or whose deadline passes, drops only its wait. The append still ends
    /// (committed or rolled back) and what it committed still reaches subscribers and the
    /// cache, with no second look at the store.
    async fn append_in_task(
        &self,
        request: AppendRequest,
        decide: Decide,
        entry: Arc<TypeEntry>,
    ) -> Result<AppendOutcome, StoreError> {
        let app = self.clone();
        let instance_id = request.instance_id;
        tokio::spawn(
            async move {
                match app.store.append(request, decide).await {
                    Ok(AppendOutcome::Appended { events, state }) => {
                        metrics::histogram!(super::metrics::APPEND_BATCH_EVENTS)
                            .record(events.len() as f64);
                        app.after_commit(&entry, instance_id, &events, &state).await;
                        Ok(AppendOutcome::Appended { events, state })
                    }
                    Ok(recorded) => Ok(recorded),
                    Err(e) => {
                        if matches!(
                            e,
                            StoreError::Unavailable(_)
                                | StoreError::TimedOut(_)
                                | StoreError::Internal(_)
                        ) {
                            // Whether it committed is unknown: stop trusting the cached state until
                            // the background repair has read the store again.
                            app.current.outcome_unknown(instance_id);
                        }
                        Err(e)
                    }
                }
            }
            // The store's and the cache's spans stay in the caller's trace.
            .in_current_span(),
        )
        .await
        .map_err(|e| StoreError::Internal(format!("append task failed: {e}")))?
    }

    /// [`Commands::append_in_task`] for a creation and its first append
    /// ([`EventStore::create_and_append`]): the bus hears of the `InstanceCreated` event and
    /// the appended ones, the cache gets the state after the last.
    async fn create_in_task(
        &self,
        new: NewInstance,
        request: AppendRequest,
        decide: Decide,
        entry: Arc<TypeEntry>,
    ) -> Result<AppendOutcome, StoreError> {
        let app = self.clone();
        let instance_id = new.id;
        let entity_type_id = new.entity_type_id;
        tokio::spawn(
            async move {
                let (created, outcome) = app.store.create_and_append(new, request, decide).await?;
                if let (Some(created), AppendOutcome::Appended { events, state }) =
                    (created, &outcome)
                {
                    app.registry.put_instance_type(instance_id, entity_type_id);
                    metrics::histogram!(super::metrics::APPEND_BATCH_EVENTS)
                        .record(events.len() as f64);
                    let mut all = Vec::with_capacity(events.len() + 1);
                    all.push(created);
                    all.extend(events.iter().cloned());
                    app.after_commit(&entry, instance_id, &all, state).await;
                }
                Ok(outcome)
            }
            .in_current_span(),
        )
        .await
        .map_err(|e| StoreError::Internal(format!("create task failed: {e}")))?
    }

    /// Some idempotency keys were already recorded. A faithful retry (every event keyed, each
    /// recorded on this instance with the same content: event type, mode and payload, compared
    /// by their canonical hash) gets the recorded events back; anything else is ALREADY_EXISTS.
    /// Payloads are read only once the retry is known to be faithful, so a clash never loads
    /// them, and a retry loads about what it sent.
    async fn replay_retry(
        &self,
        instance_id: Uuid,
        inputs: &[EventInput],
        hashes: &[Vec<u8>],
        recorded: Vec<RecordedKey>,
    ) -> Result<(Vec<EventRecord>, State), AppError> {
        let first = recorded
            .first()
            .map(|k| k.event_id.clone())
            .unwrap_or_default();
        let mut versions = Vec::with_capacity(inputs.len());
        for (input, hash) in inputs.iter().zip(hashes) {
            let Some(id) = &input.event_id else {
                return Err(AppError::AlreadyExists(format!(
                    "part of this batch was already recorded (event_id {first:?})"
                )));
            };
            let Some(found) = recorded.iter().find(|k| &k.event_id == id) else {
                return Err(AppError::AlreadyExists(format!(
                    "part of this batch was already recorded (event_id {first:?}) but event_id {id:?} was not"
                )));
            };
            let same = found.instance_id == instance_id
                && match &found.content_hash {
                    Some(recorded_hash) => recorded_hash == hash,
                    // Recorded before hashes were kept: hash what the store kept.
                    None => self.recorded_hash(found).await? == *hash,
                };
            if !same {
                return Err(AppError::AlreadyExists(format!(
                    "event_id {id:?} was already recorded with different content \
                     (instance {}, version {})",
                    found.instance_id, found.version
                )));
            }
            versions.push(found.version);
        }
        let replay = self.queries.recorded_events(instance_id, &versions).await?;
        let last = versions.iter().copied().max().unwrap_or(1);
        let state = self.queries.state_at(instance_id, last).await?.state;
        Ok((replay, state))
    }

    /// The content hash of an event recorded before hashes were kept.
    async fn recorded_hash(&self, key: &RecordedKey) -> Result<Vec<u8>, AppError> {
        let event = self
            .queries
            .recorded_events(key.instance_id, &[key.version])
            .await?
            .pop()
            .ok_or_else(|| {
                AppError::Internal(format!("event_id {:?} has no event", key.event_id))
            })?;
        Ok(content_hash(&event.event_type, event.mode, &event.payload))
    }

    /// After a commit: tells the bus, then moves the cached state forward.
    async fn after_commit(
        &self,
        entry: &TypeEntry,
        instance_id: Uuid,
        events: &[EventRecord],
        state: &State,
    ) {
        self.bus.committed(&live_events(entry, events)).await;
        self.current
            .committed(entry, instance_id, events, state)
            .await;
    }

    /// Checks a JSON document's size and depth against the limits, and that it holds no NUL
    /// character (PostgreSQL cannot store one; every backend refuses it alike). Measured
    /// without serializing it.
    fn check_size(&self, field: &str, value: &State) -> Result<(), AppError> {
        if value.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(AppError::invalid(
                field,
                "contains a NUL character (\\u0000), which cannot be stored",
            ));
        }
        let measured = measure_object(value);
        // Deeper documents could not be read back through protobuf by every client.
        if measured.depth > self.limits.state.max_depth {
            return Err(AppError::invalid(
                field,
                format!(
                    "nests objects and arrays {} levels deep, over MAX_STATE_DEPTH ({})",
                    measured.depth, self.limits.state.max_depth
                ),
            ));
        }
        let size = measured.bytes;
        if size > self.limits.max_payload_bytes {
            return Err(AppError::TooLarge(format!(
                "{field} is {size} bytes, over the limit of {} bytes",
                self.limits.max_payload_bytes
            )));
        }
        Ok(())
    }

    /// Refuses an event the event stream could not carry, before anything is stored: a
    /// published event that could never be delivered would otherwise wait in the outbox.
    fn check_event_bytes(&self, payload: &State, metadata: &State) -> Result<(), AppError> {
        let Some(max) = self.limits.max_event_bytes else {
            return Ok(());
        };
        // The domain's measure counts the bytes of the compact JSON without building it.
        let size = measure_object(payload)
            .bytes
            .saturating_add(measure_object(metadata).bytes);
        if size > max {
            return Err(AppError::TooLarge(format!(
                "payload and metadata are {size} bytes of JSON together, over the {max} bytes \
                 one published event may carry (the NATS server's max_payload less the envelope)"
            )));
        }
        Ok(())
    }
}

/// Longest erasure reason, in characters: it is stored, so it is bounded like a description.
const MAX_REASON_CHARS: usize = 1024;

fn check_reason(reason: &str) -> Result<(), AppError> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::invalid(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.contains('\0') {
        return Err(AppError::invalid(
            "reason",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), AppError> {
    if description.len() > 4096 {
        return Err(AppError::invalid(
            "description",
            "must be at most 4096 bytes",
        ));
    }
    if description.contains('\0') {
        return Err(AppError::invalid("description", "contains a NUL character"));
    }
    Ok(())
}

fn describe_violation(i: &InstanceViolation) -> String {
    let paths: Vec<String> = i.violations.iter().map(ToString::to_string).collect();
    format!(
        "instance {} ({:?}) at version {}: {}",
        i.instance_id,
        i.external_id,
        i.version,
        paths.join(", ")
    )
}

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! A caller that goes away while the store commits: deterministic, with a store whose
    //! commit succeeds but whose answer is held back until the caller is gone.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
    use crate::adapters::memory::MemoryCache;
    use crate::app::{App, Limits, Ports};
    use crate::ports::{
        BusError, Catalog, Decide, EventBus, EventStore, LiveEvent, LiveFilter, LiveStream,
        StateCache, StoreError,
    };

    /// Commits through the embedded store, then (once) holds its answer back until released.
    struct LateAnswer {
        inner: EmbeddedStore,
        hang_once: AtomicBool,
        committed: Notify,
        release: Notify,
    }

    #[async_trait]
    impl Catalog for LateAnswer {
        async fn get_entity_type(&self, key: &TypeKey) -> Result<EntityTypeRecord, StoreError> {
            self.inner.get_entity_type(key).await
        }
        async fn list_entity_types(
            &self,
            after_name: Option<&str>,
            limit: usize,
        ) -> Result<Vec<EntityTypeRecord>, StoreError> {
            self.inner.list_entity_types(after_name, limit).await
        }
        async fn get_instance(&self, id: Uuid) -> Result<InstanceRecord, StoreError> {
            self.inner.get_instance(id).await
        }
        async fn find_instance(
            &self,
            entity_type_id: Uuid,
            external_id: &str,
        ) -> Result<InstanceRecord, StoreError> {
            self.inner.find_instance(entity_type_id, external_id).await
        }
        async fn list_instances(
            &self,
            query: &crate::ports::InstanceQuery,
            limit: usize,
        ) -> Result<Vec<InstanceRecord>, StoreError> {
            self.inner.list_instances(query, limit).await
        }
        async fn instance_type(&self, instance_id: Uuid) -> Result<Uuid, StoreError> {
            self.inner.instance_type(instance_id).await
        }
        async fn schema_versions(
            &self,
            entity_type_id: Uuid,
        ) -> Result<Vec<crate::ports::SchemaVersionRecord>, StoreError> {
            self.inner.schema_versions(entity_type_id).await
        }
    }

    #[async_trait]
    impl EventStore for LateAnswer {
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn create_entity_type(
            &self,
            id: Uuid,
            name: &str,
            description: &str,
            schema: &State,
            declarations: Option<&State>,
        ) -> Result<EntityTypeRecord, StoreError> {
            self.inner
                .create_entity_type(id, name, description, schema, declarations)
                .await
        }
        async fn create_instance(
            &self,
            new: NewInstance,
        ) -> Result<(InstanceRecord, EventRecord), StoreError> {
            self.inner.create_instance(new).await
        }
        async fn update_entity_type(
            &self,
            update: TypeUpdate,
            check: StateCheck,
        ) -> Result<TypeUpdateOutcome, StoreError> {
            self.inner.update_entity_type(update, check).await
        }
        async fn delete_entity_type(&self, entity_type_id: Uuid) -> Result<(), StoreError> {
            self.inner.delete_entity_type(entity_type_id).await
        }
        async fn append(
            &self,
            request: AppendRequest,
            decide: Decide,
        ) -> Result<AppendOutcome, StoreError> {
            let outcome = self.inner.append(request, decide).await;
            if self.hang_once.swap(false, Ordering::SeqCst) {
                self.committed.notify_one();
                self.release.notified().await;
            }
            outcome
        }
        async fn erase_instance(
            &self,
            request: AppendRequest,
            decide: Decide,
        ) -> Result<AppendOutcome, StoreError> {
            self.inner.erase_instance(request, decide).await
        }
        async fn create_and_append(
            &self,
            new: NewInstance,
            request: AppendRequest,
            decide: Decide,
        ) -> Result<(Option<EventRecord>, AppendOutcome), StoreError> {
            self.inner.create_and_append(new, request, decide).await
        }
    }
    /// Remembers what it was told.
    #[derive(Default)]
    struct RecordingBus(Mutex<Vec<LiveEvent>>);

    #[async_trait]
    impl EventBus for RecordingBus {
        async fn committed(&self, events: &[LiveEvent]) {
            self.0.lock().unwrap().extend_from_slice(events);
        }
        async fn subscribe(&self, _filter: LiveFilter) -> Result<LiveStream, BusError> {
            Err(BusError::Unavailable("not in this test".into()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_gone_during_the_commit_still_gets_bus_and_cache_updated() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedStore::open(dir.path(), 100).unwrap();
        let store = Arc::new(LateAnswer {
            inner: embedded.clone(),
            hang_once: AtomicBool::new(false),
            committed: Notify::new(),
            release: Notify::new(),
        });
        let bus = Arc::new(RecordingBus::default());
        let cache = Arc::new(MemoryCache::default());
        let embedded = Arc::new(embedded);
        let app = App::new(
            Ports {
                store: store.clone(),
                catalog: embedded.clone(),
                history: embedded,
                analytics: None,
                state_cache: Some(cache.clone()),
                bus: bus.clone(),
            },
            Limits::default(),
        );
        let anyone = Principal::anonymous();
        app.commands
            .create_entity_type(
                &anyone,
                "doc",
                "",
                json!({"type": "object"}).as_object().unwrap().clone(),
                None,
            )
            .await
            .unwrap();
        let (inst, _) = app
            .commands
            .create_instance(
                &anyone,
                &TypeKey::Name("doc".into()),
                &ExternalId::parse("d").unwrap(),
                State::new(),
                State::new(),
            )
            .await
            .unwrap();

        store.hang_once.store(true, Ordering::SeqCst);
        let write = {
            let app = app.clone();
            let id = inst.id;
            tokio::spawn(async move {
                let input = EventInput {
                    event_type: "Set".into(),
                    payload: json!({"n": 1}).as_object().unwrap().clone(),
                    metadata: State::new(),
                    event_id: None,
                    occurred_at: None,
                    mode: None,
                };
                app.commands
                    .apply_events(
                        &Principal::anonymous(),
                        Target::Id(id),
                        None,
                        vec![input],
                        false,
                    )
                    .await
            })
        };
        store.committed.notified().await;
        // The caller hangs up with the commit made and its answer not yet back.
        write.abort();
        assert!(write.await.unwrap_err().is_cancelled());
        store.release.notify_one();

        // The append's own task goes on without its caller; wait for it (bounded, no timing
        // asserted).
        // The bus is told first, then the cache is written: wait for both.
        for _ in 0..500 {
            let cached = cache.get(inst.id).await.unwrap();
            if !bus.0.lock().unwrap().is_empty() && cached.is_some_and(|c| c.version == 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let told = bus.0.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "the committed event reached the bus once");
        assert_eq!(told[0].event.version, 2);
        let cached = cache.get(inst.id).await.unwrap().expect("cached");
        assert_eq!(cached.version, 2);
        assert_eq!(Value::Object(cached.state), json!({"n": 1}));
    }
}
