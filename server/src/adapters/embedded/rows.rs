//! Value and row conversions: the column lists, the one place that reads them, and the encoding
//! of times (integer microseconds), JSON (TEXT) and UUIDs (TEXT).

use chrono::{DateTime, Utc};
use rusqlite::Row;
use uuid::Uuid;

use super::EmbeddedError;
use crate::domain::{ApplyMode, State};
use crate::ports::{EntityTypeRecord, EventRecord, InstanceRecord};

pub const ENTITY_TYPE_COLUMNS: &str =
    "id, name, description, schema, created_at, schema_version, declarations";

pub const INSTANCE_COLUMNS: &str = "i.id, i.entity_type_id, t.name, i.external_id, i.state, \
     i.version, i.created_at, i.updated_at, i.archived, i.erased";

pub const EVENT_COLUMNS: &str = "e.event_id, e.instance_id, e.entity_type_id, e.event_type, \
     e.version, e.payload, e.metadata, e.mode, e.recorded_at, e.occurred_at, e.recorded_by, \
     e.schema_version, IFNULL(e.position, 0)";

/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A time as stored: microseconds since the Unix epoch, with sub-microsecond digits dropped
/// exactly as tokio-postgres does when it sends a time to PostgreSQL (truncation toward
/// PostgreSQL's epoch, 2000-01-01), so a time compares to stored times as it does there.
pub fn micros(t: DateTime<Utc>) -> i64 {
    let base = DateTime::from_timestamp_micros(PG_EPOCH_MICROS).unwrap_or_default();
    match t.signed_duration_since(base).num_microseconds() {
        Some(m) => m.saturating_add(PG_EPOCH_MICROS),
        // Unreachable for chrono's range of years; keeps the order anyway.
        None if t > base => i64::MAX,
        None => i64::MIN,
    }
}

pub fn time(micros: i64, what: &str) -> Result<DateTime<Utc>, EmbeddedError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| EmbeddedError::Data(format!("{what} {micros} is not a time")))
}

pub fn json(state: &State) -> Result<String, EmbeddedError> {
    serde_json::to_string(state).map_err(|e| EmbeddedError::Data(format!("JSON encoding: {e}")))
}

pub fn object(text: &str, what: &str) -> Result<State, EmbeddedError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(EmbeddedError::Data(format!(
            "{what} is not a JSON object: {other}"
        ))),
        Err(e) => Err(EmbeddedError::Data(format!("{what} is not JSON: {e}"))),
    }
}

pub fn uuid(text: &str, what: &str) -> Result<Uuid, EmbeddedError> {
    Uuid::parse_str(text).map_err(|_| EmbeddedError::Data(format!("{what} {text:?} is not a UUID")))
}

/// How a UUID is stored: lowercase and hyphenated, so that text order is PostgreSQL's uuid order.
pub fn id(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn text(row: &Row, i: usize) -> Result<String, EmbeddedError> {
    Ok(row.get::<_, String>(i)?)
}

pub fn entity_type(row: &Row) -> Result<EntityTypeRecord, EmbeddedError> {
    Ok(EntityTypeRecord {
        id: uuid(&text(row, 0)?, "entity type id")?,
        name: row.get(1)?,
        description: row.get(2)?,
        schema: object(&text(row, 3)?, "schema")?,
        created_at: time(row.get(4)?, "created_at")?,
        schema_version: row.get(5)?,
        declarations: row
            .get::<_, Option<String>>(6)?
            .map(|d| object(&d, "declarations"))
            .transpose()?,
    })
}

pub fn instance(row: &Row) -> Result<InstanceRecord, EmbeddedError> {
    let erased: bool = row.get(9)?;
    Ok(InstanceRecord {
        id: uuid(&text(row, 0)?, "instance id")?,
        entity_type_id: uuid(&text(row, 1)?, "entity type id")?,
        entity_type_name: row.get(2)?,
        // An erased instance's stored external id is a placeholder no client chose: shown empty.
        external_id: if erased { String::new() } else { row.get(3)? },
        state: object(&text(row, 4)?, "state")?,
        version: row.get(5)?,
        created_at: time(row.get(6)?, "created_at")?,
        updated_at: time(row.get(7)?, "updated_at")?,
        archived: row.get(8)?,
        erased,
    })
}

/// Reads an event selected with [`EVENT_COLUMNS`].
pub fn event(row: &Row) -> Result<EventRecord, EmbeddedError> {
    let mode = text(row, 7)?;
    Ok(EventRecord {
        event_id: row.get(0)?,
        instance_id: uuid(&text(row, 1)?, "instance id")?,
        entity_type_id: uuid(&text(row, 2)?, "entity type id")?,
        event_type: row.get(3)?,
        version: row.get(4)?,
        payload: object(&text(row, 5)?, "payload")?,
        metadata: object(&text(row, 6)?, "metadata")?,
        mode: ApplyMode::parse(&mode)
            .ok_or_else(|| EmbeddedError::Data(format!("unknown apply mode {mode:?}")))?,
        recorded_at: time(row.get(8)?, "recorded_at")?,
        occurred_at: time(row.get(9)?, "occurred_at")?,
        recorded_by: row.get(10)?,
        schema_version: row.get(11)?,
        position: row.get(12)?,
    })
}

/// Every row of a prepared query, converted.
pub fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    convert: impl Fn(&Row) -> Result<T, EmbeddedError>,
) -> Result<Vec<T>, EmbeddedError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(convert(row)?);
    }
    Ok(out)
}
