//! Applying one event's payload to a state: RFC 7386 merge patch (the default), full replacement,
//! or an RFC 6902 JSON Patch carried as `{"patch": [...]}`.

use json_patch::PatchOperation;
use json_patch::jsonptr::Pointer;
use json_patch::jsonptr::index::Index;
use serde::Deserialize;
use serde_json::Value;

use super::limits::{Measure, Meter, json_str_len, measure, measure_object};
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
    /// Stored form of an event whose declared transform computed its change: the payload is
    /// `{"payload": <what the client sent>, "change": <the fields set>}` and applying it merges
    /// `change` (RFC 7386). Never asked for by a client; folding it never runs the transform
    /// again, so a later transform cannot rewrite history.
    Transformed,
}

impl ApplyMode {
    /// Stable name stored with each event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MergePatch => "merge_patch",
            Self::Replace => "replace",
            Self::JsonPatch => "json_patch",
            Self::Transformed => "transformed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "merge_patch" => Some(Self::MergePatch),
            "replace" => Some(Self::Replace),
            "json_patch" => Some(Self::JsonPatch),
            "transformed" => Some(Self::Transformed),
            _ => None,
        }
    }
}

/// Key of a transformed event's stored payload holding what the client sent.
pub const TRANSFORMED_PAYLOAD: &str = "payload";
/// Key of a transformed event's stored payload holding the change it made.
pub const TRANSFORMED_CHANGE: &str = "change";

/// The stored payload of a transformed event: what the client sent beside the change made.
pub fn transformed_payload(sent: State, change: State) -> State {
    let mut stored = State::new();
    stored.insert(TRANSFORMED_PAYLOAD.into(), Value::Object(sent));
    stored.insert(TRANSFORMED_CHANGE.into(), Value::Object(change));
    stored
}

/// Splits a stored payload into what the client sent and, for a transformed event, the change
/// recorded beside it.
pub fn split_recorded(mode: ApplyMode, mut stored: State) -> (State, Option<State>) {
    if mode != ApplyMode::Transformed {
        return (stored, None);
    }
    let mut part = |key: &str| match stored.remove(key) {
        Some(Value::Object(o)) => o,
        _ => State::new(),
    };
    (part(TRANSFORMED_PAYLOAD), Some(part(TRANSFORMED_CHANGE)))
}

/// Returns the state after applying `payload` to `state` in `mode`, without limits (for
/// folding stored events, which were checked when written). The result is not yet validated
/// against a schema; see [`super::validate::CompiledSchema`].
pub fn apply_event(state: &State, payload: &State, mode: ApplyMode) -> Result<State, DomainError> {
    let mut next = state.clone();
    apply_in_place(&mut next, payload, mode, &mut Meter::unlimited())?;
    Ok(next)
}

/// Folds a stored event into `state` in place, without limits (it was checked when written)
/// and without copying the state: the fold of time travel, history and analytics. On error
/// `state` is half-applied; every caller discards it.
pub fn fold_event(state: &mut State, payload: &State, mode: ApplyMode) -> Result<(), DomainError> {
    apply_in_place(state, payload, mode, &mut Meter::unlimited())
}

/// Applies `payload` to `state` in place, within the limits `meter` keeps. Each operation's
/// growth is checked before it runs, so a payload that would blow the state up is refused
/// before it allocates. On error `state` is left half-applied: the caller discards it (a
/// batch is all or nothing).
pub fn apply_in_place(
    state: &mut State,
    payload: &State,
    mode: ApplyMode,
    meter: &mut Meter,
) -> Result<(), DomainError> {
    match mode {
        ApplyMode::Transformed => {
            let Some(Value::Object(change)) = payload.get(TRANSFORMED_CHANGE) else {
                return Err(DomainError::InvalidPatch(
                    "a transformed event holds no recorded change".into(),
                ));
            };
            apply_in_place(state, change, ApplyMode::MergePatch, meter)
        }
        ApplyMode::Replace => {
            let m = measure_object(payload);
            meter.limits().check("the resulting state", m)?;
            meter.reset(m);
            *state = payload.clone();
            Ok(())
        }
        ApplyMode::MergePatch => {
            // A merge patch places the payload's members where they are in the payload: the
            // result is no deeper than the state or the payload, and grows by at most the
            // payload's size. Each replaced or removed member is subtracted as it goes.
            let mut doc = Value::Object(std::mem::take(state));
            let Value::Object(map) = &mut doc else {
                unreachable!("just built as an object")
            };
            merge(map, payload, 1, meter);
            meter.settle(&doc)?;
            *state = into_object(doc)?;
            Ok(())
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
            let patch = json_patch::Patch::deserialize(ops)
                .map_err(|e| DomainError::InvalidPatch(format!("not an RFC 6902 patch: {e}")))?;
            let mut doc = Value::Object(std::mem::take(state));
            for (i, op) in patch.0.iter().enumerate() {
                account(&doc, op, meter)?;
                json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op))
                    .map_err(|e| DomainError::InvalidPatch(format!("operation {i}: {}", e.kind)))?;
                if matches!(op, PatchOperation::Move(_)) {
                    meter.settle(&doc)?;
                }
            }
            *state = into_object(doc)?;
            Ok(())
        }
    }
}

/// RFC 7386 merge of `patch` into the object `target`, which sits `level` levels deep (the root
/// is 1), keeping `meter`'s size exact. Same result as `json_patch::merge`.
fn merge(target: &mut State, patch: &State, level: usize, meter: &mut Meter) {
    for (key, value) in patch {
        if value.is_null() {
            let len = target.len();
            if let Some(old) = target.remove(key) {
                let removed = json_str_len(key) + 1 + measure(&old).bytes + usize::from(len >= 2);
                meter.change(0, removed, 0);
            }
            continue;
        }
        if let (Some(Value::Object(inner)), Value::Object(p)) = (target.get_mut(key), value) {
            merge(inner, p, level + 1, meter);
            continue;
        }
        // A new member, or one replaced wholesale: an object patch applied to a non-object is
        // applied to `{}`, which drops its nulls.
        let new = match value {
            Value::Object(p) => {
                let mut fresh = State::new();
                merge(&mut fresh, p, level + 1, &mut Meter::unlimited());
                Value::Object(fresh)
            }
            other => other.clone(),
        };
        let m = measure(&new);
        let len = target.len();
        match target.insert(key.clone(), new) {
            Some(old) => meter.change(m.bytes, measure(&old).bytes, level + m.depth),
            None => meter.change(
                json_str_len(key) + 1 + m.bytes + usize::from(len >= 1),
                0,
                level + m.depth,
            ),
        }
    }
}

/// Where an operation's path lands in `doc`, as far as its size is concerned.
enum Slot<'a> {
    /// The whole document.
    Root,
    /// A member of an object of `len` members; `key_bytes` counts `"key":`.
    Member {
        len: usize,
        key_bytes: usize,
        old: Option<&'a Value>,
    },
    /// An element of an array of `len` elements; `old` is the element at a numeric index.
    Element { len: usize, old: Option<&'a Value> },
}

impl Slot<'_> {
    /// Bytes added by inserting a value of `bytes` here (replacing what is there, if anything).
    fn insert(&self, bytes: usize) -> (usize, usize) {
        match self {
            Slot::Root => (bytes, 0),
            Slot::Member { old: Some(old), .. } => (bytes, measure(old).bytes),
            Slot::Member { len, key_bytes, .. } => (key_bytes + bytes + usize::from(*len >= 1), 0),
            Slot::Element { len, .. } => (bytes + usize::from(*len >= 1), 0),
        }
    }

    /// Bytes removed by removing what is here.
    fn remove(&self) -> usize {
        match self {
            Slot::Root => 0,
            Slot::Member {
                len,
                key_bytes,
                old: Some(old),
            } => key_bytes + measure(old).bytes + usize::from(*len >= 2),
            Slot::Element {
                len,
                old: Some(old),
            } => measure(old).bytes + usize::from(*len >= 2),
            _ => 0,
        }
    }

    /// Bytes of what a `replace` replaces.
    fn replaced(&self) -> usize {
        match self {
            Slot::Member { old: Some(old), .. } | Slot::Element { old: Some(old), .. } => {
                measure(old).bytes
            }
            _ => 0,
        }
    }
}

fn slot<'a>(doc: &'a Value, path: &Pointer) -> Option<Slot<'a>> {
    let Some((parent, last)) = path.split_back() else {
        return Some(Slot::Root);
    };
    match doc.pointer(parent.as_str())? {
        Value::Object(map) => {
            let key = last.decoded();
            Some(Slot::Member {
                len: map.len(),
                key_bytes: json_str_len(&key) + 1,
                old: map.get(key.as_ref()),
            })
        }
        Value::Array(items) => Some(Slot::Element {
            len: items.len(),
            old: match last.to_index() {
                Ok(Index::Num(n)) => items.get(n),
                _ => None,
            },
        }),
        _ => None,
    }
}

/// Nesting of a value of depth `depth` placed at `path` (the root is level 1).
fn depth_at(path: &Pointer, depth: usize) -> usize {
    path.count() + depth
}

/// Checks one JSON Patch operation's effect on size and depth against `meter` before it runs,
/// and records it. A path that does not resolve is left to `json_patch`, which refuses it.
fn account(doc: &Value, op: &PatchOperation, meter: &mut Meter) -> Result<(), DomainError> {
    match op {
        PatchOperation::Add(op) => {
            let Some(slot) = slot(doc, &op.path) else {
                return Ok(());
            };
            let m = measure(&op.value);
            place(doc, &op.path, &slot, m, meter)
        }
        PatchOperation::Copy(op) => {
            let (Some(source), Some(slot)) = (doc.pointer(op.from.as_str()), slot(doc, &op.path))
            else {
                return Ok(());
            };
            // The copy is paid for before it is made: this is what stops a doubling bomb.
            let m = measure(source);
            meter.spend(m.bytes)?;
            place(doc, &op.path, &slot, m, meter)
        }
        PatchOperation::Replace(op) => {
            let Some(slot) = slot(doc, &op.path) else {
                return Ok(());
            };
            let m = measure(&op.value);
            let depth = if matches!(slot, Slot::Root) {
                m.depth
            } else {
                depth_at(&op.path, m.depth)
            };
            let removed = slot.replaced();
            if matches!(slot, Slot::Root) {
                meter.limits().check("the resulting state", m)?;
                meter.reset(m);
                return Ok(());
            }
            meter.admit(doc, m.bytes.saturating_sub(removed), depth)?;
            meter.change(m.bytes, removed, depth);
            Ok(())
        }
        PatchOperation::Remove(op) => {
            if let Some(slot) = slot(doc, &op.path) {
                let removed = slot.remove();
                meter.change(0, removed, 0);
            }
            Ok(())
        }
        PatchOperation::Move(op) => {
            // The moved value keeps its size; only its key, a comma and a replaced target
            // change, so its size is not measured (a value moved back and forth would be
            // measured every time). Bound the growth and confirm once it has run.
            let Some(slot) = slot(doc, &op.path) else {
                return Ok(());
            };
            let added = match slot {
                Slot::Member { key_bytes, .. } => key_bytes + 1,
                _ => 1,
            };
            let shift = op.path.count().saturating_sub(op.from.count());
            meter.admit(doc, added, 0)?;
            let deeper = meter.estimate().depth + shift;
            meter.loosen(added, deeper);
            Ok(())
        }
        PatchOperation::Test(_) => Ok(()),
    }
}

/// Checks and records a value of measure `m` inserted at `path` (add, copy).
fn place(
    doc: &Value,
    path: &Pointer,
    slot: &Slot<'_>,
    m: Measure,
    meter: &mut Meter,
) -> Result<(), DomainError> {
    if matches!(slot, Slot::Root) {
        meter.limits().check("the resulting state", m)?;
        meter.reset(m);
        return Ok(());
    }
    let depth = depth_at(path, m.depth);
    let (added, removed) = slot.insert(m.bytes);
    meter.admit(doc, added.saturating_sub(removed), depth)?;
    meter.change(added, removed, depth);
    Ok(())
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
    use crate::domain::StateLimits;
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

    fn limited(bytes: usize, depth: usize) -> StateLimits {
        StateLimits {
            max_bytes: bytes,
            max_depth: depth,
        }
    }

    #[test]
    fn a_copy_bomb_is_refused_before_it_allocates() {
        let state = obj(json!({"": "x".repeat(1000)}));
        // Each op copies the whole state beside itself: 20 of them make it a million times
        // larger.
        let ops: Vec<Value> = (0..20)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/a{i}")}))
            .collect();
        let payload = obj(json!({ "patch": ops }));
        let mut working = state.clone();
        let mut meter = Meter::new(limited(64 * 1024, 32), &working);
        let err =
            apply_in_place(&mut working, &payload, ApplyMode::JsonPatch, &mut meter).unwrap_err();
        assert!(matches!(err, DomainError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("MAX_STATE_BYTES"), "{err}");
        // Refused at the copy that would cross the limit: the state never got past it.
        assert!(measure_object(&working).bytes <= 64 * 1024);
    }

    #[test]
    fn a_depth_bomb_is_refused_at_the_limit() {
        let mut ops = Vec::new();
        let mut path = String::new();
        for _ in 0..200 {
            path.push_str("/a");
            ops.push(json!({"op": "add", "path": path, "value": {}}));
        }
        let payload = obj(json!({ "patch": ops }));
        let mut working = State::new();
        let mut meter = Meter::new(limited(1 << 20, 32), &working);
        let err =
            apply_in_place(&mut working, &payload, ApplyMode::JsonPatch, &mut meter).unwrap_err();
        assert!(err.to_string().contains("MAX_STATE_DEPTH (32)"), "{err}");
        assert!(measure_object(&working).depth <= 32);
        // Moving a branch deeper is caught too.
        let state = obj(json!({"a": {"b": {"c": {}}}, "d": {"e": {"f": {}}}}));
        let payload = obj(json!({"patch": [{"op": "move", "from": "/a", "path": "/d/e/f/g"}]}));
        let mut working = state.clone();
        let mut meter = Meter::new(limited(1 << 20, 5), &working);
        let err =
            apply_in_place(&mut working, &payload, ApplyMode::JsonPatch, &mut meter).unwrap_err();
        assert!(err.to_string().contains("MAX_STATE_DEPTH"), "{err}");
        // ... while a move that stays within the limit passes.
        let payload = obj(json!({"patch": [{"op": "move", "from": "/a", "path": "/d/g"}]}));
        let mut working = state;
        let mut meter = Meter::new(limited(1 << 20, 5), &working);
        apply_in_place(&mut working, &payload, ApplyMode::JsonPatch, &mut meter).unwrap();
    }

    #[test]
    fn the_running_size_stays_exact_through_every_kind_of_operation() {
        let state = obj(json!({"a": [1, 2, {"x": "y"}], "b": {"c": true}, "k~/": null}));
        let ops = [
            json!({"op": "add", "path": "/a/-", "value": "new"}),
            json!({"op": "add", "path": "/a/0", "value": [1]}),
            json!({"op": "add", "path": "/b/c", "value": {"replaced": 1}}),
            json!({"op": "add", "path": "/b/d", "value": 12.5}),
            json!({"op": "remove", "path": "/a/1"}),
            json!({"op": "replace", "path": "/a/0", "value": "s\"q"}),
            json!({"op": "copy", "from": "/a", "path": "/e"}),
            json!({"op": "copy", "from": "/b", "path": "/e/1"}),
            json!({"op": "remove", "path": "/k~0~1"}),
            json!({"op": "test", "path": "/b/d", "value": 12.5}),
            json!({"op": "remove", "path": "/b/c"}),
            json!({"op": "remove", "path": "/b/d"}),
            json!({"op": "add", "path": "/b/only", "value": 1}),
            json!({"op": "remove", "path": "/e"}),
            json!({"op": "replace", "path": "", "value": {"fresh": [[]]}}),
            json!({"op": "add", "path": "/fresh/0/-", "value": {}}),
        ];
        let mut working = state;
        let mut meter = Meter::new(StateLimits::default(), &working);
        for op in ops {
            let payload = obj(json!({ "patch": [op.clone()] }));
            apply_in_place(&mut working, &payload, ApplyMode::JsonPatch, &mut meter).unwrap();
            let exact = measure_object(&working);
            assert_eq!(meter.estimate().bytes, exact.bytes, "after {op}");
            assert!(meter.estimate().depth >= exact.depth, "after {op}");
        }
    }

    #[test]
    fn replace_and_merge_results_over_the_limit_are_refused() {
        let mut working = obj(json!({"a": "x".repeat(50)}));
        let mut meter = Meter::new(limited(100, 32), &working);
        let big = obj(json!({"b": "y".repeat(60)}));
        let err =
            apply_in_place(&mut working, &big, ApplyMode::MergePatch, &mut meter).unwrap_err();
        assert!(matches!(err, DomainError::TooLarge(_)), "{err}");
        let mut working = obj(json!({}));
        let mut meter = Meter::new(limited(100, 32), &working);
        let big = obj(json!({"b": "y".repeat(100)}));
        let err = apply_in_place(&mut working, &big, ApplyMode::Replace, &mut meter).unwrap_err();
        assert!(matches!(err, DomainError::TooLarge(_)), "{err}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-1000i64..1000).prop_map(|n| json!(n)),
                (-1e6f64..1e6).prop_map(|f| json!(f)),
                "[a-c\"é]{0,3}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-d]", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn json_object() -> impl Strategy<Value = State> {
            prop::collection::btree_map("[a-d]", json_value(), 0..5)
                .prop_map(|m| m.into_iter().collect())
        }

        proptest! {
            #![proptest_config(crate::domain::proptest_config(256))]

            /// The metered merge is RFC 7386 (as json_patch implements it) and keeps the
            /// running size exact.
            #[test]
            fn metered_merge_is_rfc_7386_with_an_exact_size(state in json_object(), patch in json_object()) {
                let mut expected = Value::Object(state.clone());
                json_patch::merge(&mut expected, &Value::Object(patch.clone()));
                let mut working = state;
                let mut meter = Meter::new(StateLimits::default(), &working);
                apply_in_place(&mut working, &patch, ApplyMode::MergePatch, &mut meter).unwrap();
                let exact = measure_object(&working);
                prop_assert_eq!(Value::Object(working), expected);
                prop_assert_eq!(meter.estimate().bytes, exact.bytes);
                prop_assert!(meter.estimate().depth >= exact.depth);
            }
        }
    }
}
