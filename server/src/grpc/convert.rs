//! Protobuf <-> domain conversions: `google.protobuf.Struct` <-> JSON objects, timestamps,
//! apply modes and records.
//!
//! Protobuf carries every number as a double. An integral double within ±2^53 becomes a JSON
//! integer, so `150` stays `150` whichever way it came in, and schemas asking for integers work.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue, value::Kind};
use serde_json::{Map, Number, Value};
use temporal_state_proto::v1 as pb;

use uuid::Uuid;

use crate::app::{AppError, Creation, Page, Target};
use crate::domain::apply::split_recorded;
use crate::domain::declared::{DeclarationsDoc, EventTypeDoc, GuardDoc, GuardOutcome};
use crate::domain::{ApplyMode, EntityTypeName, ExternalId, State};
use crate::ports::{
    EntityTypeRecord, EventRecord, InstanceRecord, SchemaVersionRecord, TypeKey, TypeUpdateOutcome,
};

/// Largest integer a double represents exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A required UUID request field.
pub fn id_from_field(field: &str, raw: &str) -> Result<Uuid, AppError> {
    if raw.is_empty() {
        return Err(AppError::invalid(field, "is required"));
    }
    Uuid::parse_str(raw).map_err(|_| AppError::invalid(field, format!("{raw:?} is not a UUID")))
}

/// An optional UUID request field: empty is None.
pub fn optional_id_from_field(field: &str, raw: &str) -> Result<Option<Uuid>, AppError> {
    if raw.is_empty() {
        return Ok(None);
    }
    id_from_field(field, raw).map(Some)
}

/// The `entity_type` request field: a type named by id or by name.
pub fn type_key_from_field(raw: &str) -> Result<TypeKey, AppError> {
    if raw.is_empty() {
        return Err(AppError::invalid(
            "entity_type",
            "is required (an id or a name)",
        ));
    }
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(TypeKey::Id(id));
    }
    EntityTypeName::parse(raw)
        .map(|n| TypeKey::Name(n.as_str().to_string()))
        .map_err(|_| {
            AppError::invalid(
                "entity_type",
                format!("{raw:?} is neither a UUID nor a valid entity type name"),
            )
        })
}

/// The `external_id` request field.
pub fn external_id_from_field(raw: &str) -> Result<ExternalId, AppError> {
    Ok(ExternalId::parse(raw)?)
}

/// A page request from `page_size` and `page_token`.
/// Entity types named in a repeated field (ids or names); at most
/// [`crate::app::GlobalLog`]'s bound, checked there.
pub fn type_keys_from_field(field: &str, raw: &[String]) -> Result<Vec<TypeKey>, AppError> {
    if raw.len() > 100 {
        return Err(AppError::invalid(
            field,
            format!("lists {} entity types, more than 100", raw.len()),
        ));
    }
    raw.iter()
        .map(|r| {
            if r.is_empty() {
                return Err(AppError::invalid(
                    field,
                    "holds an empty entry (an id or a name)",
                ));
            }
            type_key_from_field(r)
        })
        .collect()
}

pub fn page_from_fields(page_size: i32, page_token: &str) -> Result<Page, AppError> {
    Page::parse(page_size, page_token)
}

pub fn state_from_struct(field: &str, s: Option<Struct>) -> Result<State, AppError> {
    let mut map = Map::new();
    if let Some(s) = s {
        for (k, v) in s.fields {
            map.insert(k, json_from_value(field, v)?);
        }
    }
    Ok(map)
}

/// Which instance a write names: `instance_id`, or `entity_type` + `external_id` (with
/// `create_if_missing` and `initial_state` for a missing one). Exactly one way.
pub fn target_from_fields(
    instance_id: &str,
    entity_type: &str,
    external_id: &str,
    create_if_missing: bool,
    initial_state: Option<Struct>,
) -> Result<Target, AppError> {
    let by_external = !entity_type.is_empty() || !external_id.is_empty();
    if !by_external {
        if create_if_missing {
            return Err(AppError::invalid(
                "create_if_missing",
                "needs the target as entity_type + external_id (an instance id names an \
                 instance that exists)",
            ));
        }
        if initial_state.is_some() {
            return Err(AppError::invalid(
                "initial_state",
                "is only for create_if_missing",
            ));
        }
        return Ok(Target::Id(id_from_field("instance_id", instance_id)?));
    }
    if !instance_id.is_empty() {
        return Err(AppError::invalid(
            "instance_id",
            "give either instance_id or entity_type + external_id, not both",
        ));
    }
    if entity_type.is_empty() {
        return Err(AppError::invalid(
            "entity_type",
            "is required with external_id",
        ));
    }
    let entity_type = type_key_from_field(entity_type)?;
    let external_id = external_id_from_field(external_id)?;
    let create = if create_if_missing {
        Some(Creation {
            initial_state: state_from_struct("initial_state", initial_state)?,
            metadata: State::new(),
        })
    } else if initial_state.is_some() {
        return Err(AppError::invalid(
            "initial_state",
            "is only for create_if_missing",
        ));
    } else {
        None
    };
    Ok(Target::External {
        entity_type,
        external_id,
        create,
    })
}

/// A JSON value from a protobuf Value (`field` names it in errors).
pub fn json_from_pb(field: &str, v: PbValue) -> Result<Value, AppError> {
    json_from_value(field, v)
}

fn json_from_value(field: &str, v: PbValue) -> Result<Value, AppError> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => json_from_number(field, n)?,
        Some(Kind::StructValue(s)) => Value::Object(state_from_struct(field, Some(s))?),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .into_iter()
                .map(|v| json_from_value(field, v))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn json_from_number(field: &str, n: f64) -> Result<Value, AppError> {
    if !n.is_finite() {
        return Err(AppError::invalid(
            field,
            format!("{n} is not a JSON number"),
        ));
    }
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Ok(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| AppError::invalid(field, format!("{n} is not a JSON number")))
}

pub fn struct_from_state(state: &State) -> Struct {
    Struct {
        fields: state
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v)))
            .collect(),
    }
}

/// [`struct_from_state`] for a state the caller no longer needs: keys and strings move into
/// the message instead of being copied (a history page holds thousands of them).
pub fn struct_from_owned(state: State) -> Struct {
    Struct {
        fields: state
            .into_iter()
            .map(|(k, v)| (k, value_from_owned(v)))
            .collect(),
    }
}

fn value_from_owned(v: Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(value_from_owned).collect(),
        }),
        Value::Object(o) => Kind::StructValue(struct_from_owned(o)),
    };
    PbValue { kind: Some(kind) }
}

pub fn value_from_json(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(value_from_json).collect(),
        }),
        Value::Object(o) => Kind::StructValue(struct_from_state(o)),
    };
    PbValue { kind: Some(kind) }
}

pub fn timestamp_from_time(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A request timestamp; out-of-range values are INVALID_ARGUMENT naming the field.
pub fn time_from_timestamp(
    field: &str,
    t: Option<Timestamp>,
) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(t) = t else { return Ok(None) };
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(AppError::invalid(
            field,
            format!("nanos {} is out of range 0..999999999", t.nanos),
        ));
    }
    // RFC 3339 range, as google.protobuf.Timestamp documents: 0001-01-01 to 9999-12-31.
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(AppError::invalid(
            field,
            format!("seconds {} is outside years 1 to 9999", t.seconds),
        ));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .map(Some)
        .ok_or_else(|| AppError::invalid(field, "is not a valid timestamp"))
}

/// A request's mode; None when unspecified (the declared event type's mode, or merge patch).
pub fn mode_from_pb(field: &str, raw: i32) -> Result<Option<ApplyMode>, AppError> {
    match pb::ApplyMode::try_from(raw) {
        Ok(pb::ApplyMode::Unspecified) => Ok(None),
        Ok(pb::ApplyMode::MergePatch) => Ok(Some(ApplyMode::MergePatch)),
        Ok(pb::ApplyMode::Replace) => Ok(Some(ApplyMode::Replace)),
        Ok(pb::ApplyMode::JsonPatch) => Ok(Some(ApplyMode::JsonPatch)),
        Err(_) => Err(AppError::invalid(
            field,
            format!("{raw} is not an ApplyMode"),
        )),
    }
}

/// A transformed event's change is a merge patch.
pub fn pb_from_mode(mode: ApplyMode) -> pb::ApplyMode {
    match mode {
        ApplyMode::MergePatch | ApplyMode::Transformed => pb::ApplyMode::MergePatch,
        ApplyMode::Replace => pb::ApplyMode::Replace,
        ApplyMode::JsonPatch => pb::ApplyMode::JsonPatch,
    }
}

pub fn declarations_from_pb(d: pb::EventDeclarations) -> Result<DeclarationsDoc, AppError> {
    let event_types = d
        .event_types
        .into_iter()
        .map(|t| {
            let field = format!("declarations.event_types[{}]", t.event_type);
            Ok(EventTypeDoc {
                payload_schema: t
                    .payload_schema
                    .map(|s| state_from_struct(&format!("{field}.payload_schema"), Some(s)))
                    .transpose()?,
                mode: mode_from_pb(&format!("{field}.mode"), t.mode)?
                    .map(|m| m.as_str().to_string()),
                transform: (!t.transform.is_empty()).then_some(t.transform),
                guards: t
                    .guards
                    .into_iter()
                    .map(|g| GuardDoc {
                        expression: g.expression,
                        message: g.message,
                    })
                    .collect(),
                event_type: t.event_type,
            })
        })
        .collect::<Result<_, AppError>>()?;
    Ok(DeclarationsDoc {
        strict: d.strict,
        event_types,
    })
}

/// Stored declarations as the API shows them; None when there are none (or they are damaged,
/// which the registry reports when it compiles them).
pub fn pb_from_declarations(doc: &State) -> Option<pb::EventDeclarations> {
    let doc = DeclarationsDoc::from_json(doc).ok()?;
    Some(pb::EventDeclarations {
        strict: doc.strict,
        event_types: doc
            .event_types
            .into_iter()
            .map(|t| pb::EventTypeDeclaration {
                event_type: t.event_type,
                payload_schema: t.payload_schema.as_ref().map(struct_from_state),
                mode: t
                    .mode
                    .as_deref()
                    .and_then(ApplyMode::parse)
                    .map(|m| pb_from_mode(m) as i32)
                    .unwrap_or_default(),
                transform: t.transform.unwrap_or_default(),
                guards: t
                    .guards
                    .into_iter()
                    .map(|g| pb::EventGuard {
                        expression: g.expression,
                        message: g.message,
                    })
                    .collect(),
            })
            .collect(),
    })
}

pub fn pb_from_guards(guards: Vec<GuardOutcome>) -> Vec<pb::GuardResult> {
    guards
        .into_iter()
        .map(|g| pb::GuardResult {
            expression: g.expression,
            message: g.message,
            passed: g.passed,
        })
        .collect()
}

pub fn entity_type_from_record(r: EntityTypeRecord) -> pb::EntityType {
    pb::EntityType {
        id: r.id.to_string(),
        name: r.name,
        description: r.description,
        schema: Some(struct_from_owned(r.schema)),
        created_at: Some(timestamp_from_time(r.created_at)),
        schema_version: r.schema_version,
        declarations: r.declarations.as_ref().and_then(pb_from_declarations),
    }
}

pub fn schema_version_from_record(r: SchemaVersionRecord) -> pb::SchemaVersion {
    pb::SchemaVersion {
        version: r.version,
        schema: Some(struct_from_owned(r.schema)),
        created_at: Some(timestamp_from_time(r.created_at)),
        declarations: r.declarations.as_ref().and_then(pb_from_declarations),
    }
}

pub fn update_from_outcome(o: TypeUpdateOutcome) -> pb::UpdateEntityTypeResponse {
    pb::UpdateEntityTypeResponse {
        entity_type: Some(entity_type_from_record(o.record)),
        checked_instances: o.checked,
        invalid_instances: o.invalid,
        violations: o
            .violations
            .into_iter()
            .map(|i| pb::SchemaViolation {
                instance_id: i.instance_id.to_string(),
                external_id: i.external_id,
                version: i.version,
                paths: i.violations.iter().map(|v| v.path.clone()).collect(),
                messages: i.violations.into_iter().map(|v| v.message).collect(),
            })
            .collect(),
        applied: o.applied,
    }
}

pub fn instance_from_record(r: InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: r.id.to_string(),
        entity_type_id: r.entity_type_id.to_string(),
        entity_type_name: r.entity_type_name,
        external_id: r.external_id,
        state: Some(struct_from_owned(r.state)),
        version: r.version,
        created_at: Some(timestamp_from_time(r.created_at)),
        updated_at: Some(timestamp_from_time(r.updated_at)),
        archived: r.archived,
        erased: r.erased,
    }
}

pub fn event_from_record(r: EventRecord) -> pb::Event {
    let (payload, change) = split_recorded(r.mode, r.payload);
    pb::Event {
        id: r.event_id,
        instance_id: r.instance_id.to_string(),
        entity_type_id: r.entity_type_id.to_string(),
        event_type: r.event_type,
        version: r.version,
        payload: Some(struct_from_owned(payload)),
        metadata: Some(struct_from_owned(r.metadata)),
        mode: pb_from_mode(r.mode) as i32,
        change: change.map(struct_from_owned),
        recorded_at: Some(timestamp_from_time(r.recorded_at)),
        occurred_at: Some(timestamp_from_time(r.occurred_at)),
        recorded_by: r.recorded_by,
        position: r.position,
        schema_version: r.schema_version,
    }
}

/// Most event types one filter may list.
const MAX_EVENT_TYPE_FILTERS: usize = 256;

/// An `event_types` filter: each entry is a valid event type (so no NUL or other control
/// character reaches a store), and there are not too many of them.
pub(crate) fn event_type_filters(types: Vec<String>) -> Result<Vec<String>, AppError> {
    if types.len() > MAX_EVENT_TYPE_FILTERS {
        return Err(AppError::invalid(
            "event_types",
            format!(
                "lists {} event types, more than {MAX_EVENT_TYPE_FILTERS}",
                types.len()
            ),
        ));
    }
    for (i, t) in types.iter().enumerate() {
        crate::domain::EventType::parse(t).map_err(|e| match e {
            crate::domain::DomainError::InvalidField { reason, .. } => {
                AppError::invalid(format!("event_types[{i}]"), reason)
            }
            other => AppError::Invalid(other),
        })?;
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_doubles_become_integers_and_round_trip() {
        let state = json!({"score": 150, "ratio": 0.5, "nested": {"list": [1, "a", null, true]}});
        let state = state.as_object().unwrap().clone();
        let back = state_from_struct("payload", Some(struct_from_state(&state))).unwrap();
        assert_eq!(back, state);
        assert!(back["score"].is_i64());
    }

    #[test]
    fn moving_a_state_builds_the_message_copying_builds() {
        let state = json!({
            "score": 150, "ratio": -0.5, "name": "ada", "none": null, "ok": false,
            "nested": {"list": [1, "a", null, true, {"deep": [[]]}], "empty": {}}
        });
        let state = state.as_object().unwrap().clone();
        assert_eq!(struct_from_owned(state.clone()), struct_from_state(&state));
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        let s = Struct {
            fields: [(
                "x".to_string(),
                PbValue {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into_iter()
            .collect(),
        };
        assert!(state_from_struct("payload", Some(s)).is_err());
    }

    #[test]
    fn timestamps_out_of_range_are_rejected() {
        assert!(
            time_from_timestamp(
                "t",
                Some(Timestamp {
                    seconds: 0,
                    nanos: -1
                })
            )
            .is_err()
        );
        assert!(
            time_from_timestamp(
                "t",
                Some(Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                })
            )
            .is_err()
        );
        assert!(
            time_from_timestamp(
                "t",
                Some(Timestamp {
                    seconds: 1,
                    nanos: 5
                })
            )
            .unwrap()
            .is_some()
        );
    }
}
