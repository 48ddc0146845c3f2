//! The write side: entity types, instances and events.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::instrument;
use uuid::Uuid;

use super::cache::TypeEntry;
use super::{App, AppError, Page, parse_id, parse_type_key};
use crate::domain::entity_type::check_event_id;
use crate::domain::validate::CompiledSchema;
use crate::domain::{ApplyMode, EntityTypeName, EventType, ExternalId, State, apply_event};
use crate::ports::{
    AppendOutcome, AppendRequest, EntityTypeRecord, EventRecord, InstanceRecord, NewInstance,
    PendingEvent, TypeKey,
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
    pub mode: ApplyMode,
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

impl App {
    #[instrument(skip(self, description, schema))]
    pub async fn create_entity_type(
        &self,
        name: &str,
        description: &str,
        schema: State,
    ) -> Result<EntityTypeRecord, AppError> {
        let name = EntityTypeName::parse(name)?;
        if description.len() > 4096 {
            return Err(AppError::invalid(
                "description",
                "must be at most 4096 bytes",
            ));
        }
        if description.contains('\0') {
            return Err(AppError::invalid("description", "contains a NUL character"));
        }
        self.check_size("schema", &schema)?;
        let compiled = CompiledSchema::compile(&schema)?;
        let record = self
            .store
            .create_entity_type(Uuid::now_v7(), name.as_str(), description, &schema)
            .await?;
        self.caches.put_type(Arc::new(TypeEntry {
            record: record.clone(),
            schema: compiled,
        }));
        Ok(record)
    }

    pub async fn get_entity_type(&self, entity_type: &str) -> Result<EntityTypeRecord, AppError> {
        Ok(self
            .resolve_type(&parse_type_key(entity_type)?)
            .await?
            .record
            .clone())
    }

    pub async fn list_entity_types(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<EntityTypeRecord>, String), AppError> {
        let page = Page::parse(page_size, page_token)?;
        let mut found = self
            .store
            .list_entity_types(page.after.as_deref(), page.size + 1)
            .await?;
        let fetched = found.len();
        found.truncate(page.size);
        let token = page.next_token(fetched, found.last().map(|t| t.name.as_str()));
        Ok((found, token))
    }

    /// The type with its compiled schema, from the cache or the store.
    pub(crate) async fn resolve_type(&self, key: &TypeKey) -> Result<Arc<TypeEntry>, AppError> {
        let cached = match key {
            TypeKey::Id(id) => self.caches.type_by_id(*id),
            TypeKey::Name(name) => self.caches.type_by_name(name),
        };
        if let Some(entry) = cached {
            return Ok(entry);
        }
        let record = self.store.get_entity_type(key).await?;
        // A stored schema passed the meta-schema check when it was created.
        let schema = CompiledSchema::compile(&record.schema).map_err(|e| {
            AppError::Internal(format!(
                "stored schema of {} does not compile: {e}",
                record.name
            ))
        })?;
        let entry = Arc::new(TypeEntry { record, schema });
        self.caches.put_type(entry.clone());
        Ok(entry)
    }

    #[instrument(skip(self, initial_state, metadata))]
    pub async fn create_instance(
        &self,
        entity_type: &str,
        external_id: &str,
        initial_state: State,
        metadata: State,
    ) -> Result<(InstanceRecord, EventRecord), AppError> {
        let key = parse_type_key(entity_type)?;
        let external_id = ExternalId::parse(external_id)?;
        self.check_size("initial_state", &initial_state)?;
        self.check_size("metadata", &metadata)?;
        self.check_event_bytes(&initial_state, &metadata)?;
        let entry = self.resolve_type(&key).await?;
        entry.schema.validate(&entry.record.name, &initial_state)?;
        let (instance, event) = self
            .store
            .create_instance(NewInstance {
                id: Uuid::now_v7(),
                entity_type_id: entry.record.id,
                external_id: external_id.as_str().to_string(),
                initial_state,
                metadata,
                event_id: new_event_id(),
            })
            .await?;
        self.caches
            .put_instance_type(instance.id, instance.entity_type_id);
        Ok((instance, event))
    }

    pub async fn list_instances(
        &self,
        entity_type: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<InstanceRecord>, String), AppError> {
        let key = parse_type_key(entity_type)?;
        let page = Page::parse(page_size, page_token)?;
        let entry = self.resolve_type(&key).await?;
        let mut found = self
            .store
            .list_instances(entry.record.id, page.after.as_deref(), page.size + 1)
            .await?;
        let fetched = found.len();
        found.truncate(page.size);
        let token = page.next_token(fetched, found.last().map(|i| i.external_id.as_str()));
        Ok((found, token))
    }

    /// Applies events to one instance atomically. Returns the recorded events and the state
    /// after the last one; a retry of recorded events returns them as they were recorded.
    #[instrument(skip(self, inputs), fields(events = inputs.len()))]
    pub async fn apply_events(
        &self,
        instance_id: &str,
        expected_version: Option<i64>,
        inputs: Vec<EventInput>,
    ) -> Result<(Vec<EventRecord>, State), AppError> {
        let instance_id = parse_id("instance_id", instance_id)?;
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

        let type_id = match self.caches.instance_type(instance_id) {
            Some(t) => t,
            None => {
                let t = self.store.instance_type(instance_id).await?;
                self.caches.put_instance_type(instance_id, t);
                t
            }
        };
        let entry = self.resolve_type(&TypeKey::Id(type_id)).await?;
        let pending_ids: Vec<String> = inputs
            .iter()
            .map(|i| i.event_id.clone().unwrap_or_else(new_event_id))
            .collect();

        let decide_inputs = &inputs;
        let decide_ids = &pending_ids;
        let decide_entry = &entry;
        let outcome = self
            .store
            .append(
                AppendRequest {
                    instance_id,
                    expected_version,
                    client_event_ids: client_ids,
                },
                Box::new(move |head| {
                    let mut state = head.state.clone();
                    let mut pending = Vec::with_capacity(decide_inputs.len());
                    for (input, id) in decide_inputs.iter().zip(decide_ids) {
                        state = apply_event(&state, &input.payload, input.mode)?;
                        decide_entry
                            .schema
                            .validate(&decide_entry.record.name, &state)?;
                        pending.push(PendingEvent {
                            event_id: id.clone(),
                            event_type: input.event_type.clone(),
                            payload: input.payload.clone(),
                            metadata: input.metadata.clone(),
                            mode: input.mode,
                            // Stored with microseconds: answer what history will show.
                            occurred_at: input.occurred_at.map(truncate_micros),
                            state_after: state.clone(),
                        });
                    }
                    Ok(pending)
                }),
            )
            .await?;
        match outcome {
            AppendOutcome::Appended { events, state } => {
                self.after_commit(&entry, instance_id, &events, &state)
                    .await;
                Ok((events, state))
            }
            AppendOutcome::AlreadyRecorded { events } => {
                self.replay_retry(instance_id, &inputs, events).await
            }
        }
    }

    /// Some idempotency keys were already recorded. A faithful retry (every event keyed, each
    /// recorded on this instance with the same content) gets the recorded events back; anything
    /// else is ALREADY_EXISTS.
    async fn replay_retry(
        &self,
        instance_id: Uuid,
        inputs: &[EventInput],
        recorded: Vec<EventRecord>,
    ) -> Result<(Vec<EventRecord>, State), AppError> {
        let mut replay = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Some(id) = &input.event_id else {
                return Err(AppError::AlreadyExists(format!(
                    "part of this batch was already recorded (event_id {:?})",
                    recorded[0].event_id
                )));
            };
            let Some(found) = recorded.iter().find(|e| &e.event_id == id) else {
                return Err(AppError::AlreadyExists(format!(
                    "part of this batch was already recorded (event_id {:?}) but event_id {id:?} was not",
                    recorded[0].event_id
                )));
            };
            let same = found.instance_id == instance_id
                && found.event_type == input.event_type
                && found.payload == input.payload
                && found.mode == input.mode;
            if !same {
                return Err(AppError::AlreadyExists(format!(
                    "event_id {id:?} was already recorded with different content \
                     (instance {}, version {}, event type {:?})",
                    found.instance_id, found.version, found.event_type
                )));
            }
            replay.push(found.clone());
        }
        let last = replay.iter().map(|e| e.version).max().unwrap_or(1);
        let state = self.state_at_version(instance_id, last).await?.state;
        Ok((replay, state))
    }
}
