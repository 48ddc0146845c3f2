//! Applying one event's payload to a state: RFC 7386 merge patch (the default), full replacement,
//! or an RFC 6902 JSON Patch carried as `{"patch": [...]}`.

use serde_json::Value;

use super::{DomainError, State};

/// How a payload turns the previous state into the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyMode {
    /// RFC 7386: nested objects merge, `null` removes a field.
    MergePatch,
    /// The payload is the new state.
    Replace,
    /// RFC 6902 operations under the payload's `patch` key.
    JsonPatch,
}

impl ApplyMode {
    /// Stable name stored with each event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MergePatch => "merge_patch",
            Self::Replace => "replace",
            Self::JsonPatch => "json_patch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "merge_patch" => Some(Self::MergePatch),
            "replace" => Some(Self::Replace),
            "json_patch" => Some(Self::JsonPatch),
            _ => None,
        }
    }
}

/// Returns the state after applying `payload` to `state` in `mode`. The result is not yet
/// validated against a schema; see [`super::validate::CompiledSchema`].
pub fn apply_event(state: &State, payload: &State, mode: ApplyMode) -> Result<State, DomainError> {
    match mode {
        ApplyMode::Replace => Ok(payload.clone()),
        ApplyMode::MergePatch => {
            let mut doc = Value::Object(state.clone());
            json_patch::merge(&mut doc, &Value::Object(payload.clone()));
            into_object(doc)
        }
        ApplyMode::JsonPatch => {
            let ops = payload.get("patch").ok_or_else(|| {
                DomainError::InvalidPatch(
                    "JSON_PATCH mode expects the operations under the key \"patch\"".into(),
                )
            })?;
            if payload.len() != 1 {
                return Err(DomainError::InvalidPatch(
                    "JSON_PATCH payload must contain only the key \"patch\"".into(),
                ));
            }
            let patch: json_patch::Patch = serde_json::from_value(ops.clone())
                .map_err(|e| DomainError::InvalidPatch(format!("not an RFC 6902 patch: {e}")))?;
            let mut doc = Value::Object(state.clone());
            json_patch::patch(&mut doc, &patch)
                .map_err(|e| DomainError::InvalidPatch(e.to_string()))?;
            into_object(doc)
        }
    }
}

fn into_object(doc: Value) -> Result<State, DomainError> {
    match doc {
        Value::Object(map) => Ok(map),
        other => Err(DomainError::InvalidPatch(format!(
            "the resulting state must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_patch_merges_nested_objects_and_removes_nulls() {
        let state = obj(json!({"a": 1, "stats": {"level": 1, "xp": 5}, "gone": true}));
        let payload = obj(json!({"stats": {"level": 2}, "gone": null, "new": "x"}));
        let next = apply_event(&state, &payload, ApplyMode::MergePatch).unwrap();
        assert_eq!(
            Value::Object(next),
            json!({"a": 1, "stats": {"level": 2, "xp": 5}, "new": "x"})
        );
    }

    #[test]
    fn replace_takes_the_payload() {
        let state = obj(json!({"a": 1}));
        let payload = obj(json!({"b": 2}));
        let next = apply_event(&state, &payload, ApplyMode::Replace).unwrap();
        assert_eq!(Value::Object(next), json!({"b": 2}));
    }

    #[test]
    fn json_patch_applies_operations_atomically() {
        let state = obj(json!({"achievements": ["a"], "score": 1}));
        let payload = obj(json!({"patch": [
            {"op": "add", "path": "/achievements/-", "value": "b"},
            {"op": "replace", "path": "/score", "value": 2}
        ]}));
        let next = apply_event(&state, &payload, ApplyMode::JsonPatch).unwrap();
        assert_eq!(
            Value::Object(next),
            json!({"achievements": ["a", "b"], "score": 2})
        );

        let failing = obj(json!({"patch": [
            {"op": "replace", "path": "/score", "value": 3},
            {"op": "test", "path": "/score", "value": 99}
        ]}));
        let err = apply_event(&state, &failing, ApplyMode::JsonPatch).unwrap_err();
        assert!(matches!(err, DomainError::InvalidPatch(_)), "{err}");
    }

    #[test]
    fn json_patch_rejects_a_payload_without_operations() {
        let state = obj(json!({}));
        for bad in [
            json!({}),
            json!({"patch": {"op": "add"}}),
            json!({"patch": [], "x": 1}),
        ] {
            let err = apply_event(&state, &obj(bad), ApplyMode::JsonPatch).unwrap_err();
            assert!(matches!(err, DomainError::InvalidPatch(_)));
        }
    }

    #[test]
    fn json_patch_cannot_replace_the_root_with_a_non_object() {
        let state = obj(json!({"a": 1}));
        let payload = obj(json!({"patch": [{"op": "replace", "path": "", "value": 5}]}));
        let err = apply_event(&state, &payload, ApplyMode::JsonPatch).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
    }
}
