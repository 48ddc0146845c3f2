//! Row to record conversions: the column lists and the one place that reads them.

use serde_json::Value;
use tokio_postgres::Row;

use super::PgError;
use crate::domain::{ApplyMode, State};
use crate::ports::{EntityTypeRecord, EventRecord, InstanceRecord};

pub const ENTITY_TYPE_COLUMNS: &str =
    "id, name, description, schema, created_at, schema_version, declarations";

pub const INSTANCE_COLUMNS: &str = "i.id, i.entity_type_id, t.name, i.external_id, i.state, \
     i.version, i.created_at, i.updated_at, i.archived, i.erased";

pub const EVENT_COLUMNS: &str = "e.event_id, e.instance_id, e.entity_type_id, e.event_type, \
     e.version, e.payload, e.metadata, e.mode, e.recorded_at, e.occurred_at, e.recorded_by, \
     e.schema_version, COALESCE(e.position, 0)";

pub fn object(value: Value, what: &str) -> Result<State, PgError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(PgError::Data(format!(
            "{what} is not a JSON object: {other}"
        ))),
    }
}

pub fn entity_type(row: &Row) -> Result<EntityTypeRecord, PgError> {
    Ok(EntityTypeRecord {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        schema: object(row.try_get(3)?, "schema")?,
        created_at: row.try_get(4)?,
        schema_version: row.try_get(5)?,
        declarations: row
            .try_get::<_, Option<Value>>(6)?
            .map(|d| object(d, "declarations"))
            .transpose()?,
    })
}

pub fn instance(row: &Row) -> Result<InstanceRecord, PgError> {
    let erased: bool = row.try_get(9)?;
    Ok(InstanceRecord {
        id: row.try_get(0)?,
        entity_type_id: row.try_get(1)?,
        entity_type_name: row.try_get(2)?,
        // An erased instance's stored external id is a placeholder no client chose: shown empty.
        external_id: if erased {
            String::new()
        } else {
            row.try_get(3)?
        },
        state: object(row.try_get(4)?, "state")?,
        version: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        archived: row.try_get(8)?,
        erased,
    })
}

/// Reads an event whose [`EVENT_COLUMNS`] start at column `at`.
pub fn event_at(row: &Row, at: usize) -> Result<EventRecord, PgError> {
    let mode: String = row.try_get(at + 7)?;
    Ok(EventRecord {
        event_id: row.try_get(at)?,
        instance_id: row.try_get(at + 1)?,
        entity_type_id: row.try_get(at + 2)?,
        event_type: row.try_get(at + 3)?,
        version: row.try_get(at + 4)?,
        payload: object(row.try_get(at + 5)?, "payload")?,
        metadata: object(row.try_get(at + 6)?, "metadata")?,
        mode: ApplyMode::parse(&mode)
            .ok_or_else(|| PgError::Data(format!("unknown apply mode {mode:?}")))?,
        recorded_at: row.try_get(at + 8)?,
        occurred_at: row.try_get(at + 9)?,
        recorded_by: row.try_get(at + 10)?,
        schema_version: row.try_get(at + 11)?,
        position: row.try_get(at + 12)?,
    })
}

pub fn event(row: &Row) -> Result<EventRecord, PgError> {
    event_at(row, 0)
}
