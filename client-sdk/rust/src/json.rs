//! serde values <-> `google.protobuf.Struct` / `google.protobuf.Value`, the wire form of every
//! state, payload, metadata and schema.
//!
//! Protobuf carries every number as a double. An integral double within ±2^53 comes back as a
//! JSON integer, so `150` stays `150` and deserializes into an integer field of your type;
//! integers beyond ±2^53 lose precision on the way, as they do in JavaScript.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as PbValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Largest integer a double represents exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A caller's value that must be a JSON object on the wire.
pub(crate) fn to_struct(what: &'static str, value: &impl Serialize) -> Result<Struct> {
    match serde_json::to_value(value).map_err(|e| Error::encode(what, e))? {
        Value::Object(map) => Ok(map_to_struct(&map)),
        other => Err(Error::encode(
            what,
            format!("must be a JSON object, not {}", kind_name(&other)),
        )),
    }
}

/// An optional caller's object already converted to JSON (options keep them that way).
pub(crate) fn encoded_to_struct(
    what: &'static str,
    value: &Option<Result<Value, String>>,
) -> Result<Option<Struct>> {
    match value {
        None => Ok(None),
        Some(Ok(v)) => to_struct(what, v).map(Some),
        Some(Err(reason)) => Err(Error::encode(what, reason)),
    }
}

/// Serializes eagerly; the error is kept for the call to report.
pub(crate) fn encode(value: &impl Serialize) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn map_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

pub(crate) fn json_to_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(map_to_struct(o)),
    };
    PbValue { kind: Some(kind) }
}

/// A Struct from the server as a JSON object; an absent Struct is the empty object.
pub(crate) fn struct_to_json(s: Option<Struct>) -> Value {
    Value::Object(struct_to_map(s.unwrap_or_default()))
}

fn struct_to_map(s: Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

pub(crate) fn value_to_json(v: PbValue) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number(n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Value::Number(Number::from(n as i64));
    }
    // NaN and infinities have no JSON form; the server never sends them.
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// Deserializes a value of a response into the caller's type.
pub(crate) fn from_value<T: DeserializeOwned>(what: &str, v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| Error::decode(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_round_trip_with_integers_kept_integral() {
        let v = json!({
            "username": "alice", "score": 150, "ratio": 0.5, "big": -9_007_199_254_740_992i64,
            "tags": ["a", null, true], "nested": {"level": 2, "empty": {}}
        });
        assert_eq!(struct_to_json(Some(to_struct("state", &v).unwrap())), v);
    }

    #[test]
    fn non_objects_are_refused_naming_the_argument() {
        let e = to_struct("payload", &json!([1, 2])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot encode payload: must be a JSON object, not an array"
        );
    }

    #[test]
    fn absent_structs_are_empty_objects() {
        assert_eq!(struct_to_json(None), json!({}));
    }
}
