//! What changed between two states (CompareVersions): an RFC 6902 patch that turns one into the
//! other, for machines, and a flat list of changed fields with old and new values, for people.

use serde_json::{Map, Value};

use super::State;
use super::field_path::push_token;

/// How one field differs between the two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Present only in the newer state.
    Added,
    /// Present only in the older state.
    Removed,
    /// Present in both with different values (including a different type).
    Changed,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// RFC 6901 pointer to the field, escaped (`/a~1b` for the key `a/b`).
    pub path: String,
    pub kind: ChangeKind,
    /// The value in the older state; `None` when [`ChangeKind::Added`].
    pub old_value: Option<Value>,
    /// The value in the newer state; `None` when [`ChangeKind::Removed`].
    pub new_value: Option<Value>,
}

/// The difference between two states, in two forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// RFC 6902 operation objects (`{"op":"replace","path":"/score","value":150}`) that turn the
    /// older state into the newer one when applied in order.
    pub patch: Vec<Value>,
    /// Changed fields sorted by path; see [`compare`] for what counts as a field.
    pub changes: Vec<FieldChange>,
}

impl Comparison {
    /// True when the two states are equal.
    pub fn is_empty(&self) -> bool {
        self.patch.is_empty() && self.changes.is_empty()
    }
}

/// Compares `from` (the older state) with `to` (the newer one).
///
/// `changes` lists the changed leaves: objects present on both sides are walked into, everything
/// else is compared whole. In particular arrays are NOT walked into: a changed array is one
/// `Changed` entry at the array's path. Index-by-index entries would misreport an insertion at
/// the front as a change of every later element, and the patch already carries the precise
/// per-index edit for machines. Likewise a key present on one side only is one `Added` or
/// `Removed` entry carrying the whole value, even when that value is an object.
///
/// Values are compared with serde_json's equality, under which `1` and `1.0` differ.
///
/// `changes` is sorted by the pointer string, so the output does not depend on the map order
/// serde_json happens to be built with.
pub fn compare(from: &State, to: &State) -> Comparison {
    let ops = json_patch::diff(&Value::Object(from.clone()), &Value::Object(to.clone()));
    let patch = ops
        .0
        .iter()
        .map(|op| serde_json::to_value(op).expect("a JSON patch operation always serializes"))
        .collect();

    let mut changes = Vec::new();
    let mut path = String::new();
    walk(from, to, &mut path, &mut changes);
    changes.sort_unstable_by(|a, b| a.path.cmp(&b.path));

    Comparison { patch, changes }
}

/// Appends the changes under the object at `path` (the pointer of both `from` and `to`).
/// `path` is used as a stack and is restored before returning.
fn walk(
    from: &Map<String, Value>,
    to: &Map<String, Value>,
    path: &mut String,
    out: &mut Vec<FieldChange>,
) {
    let parent_len = path.len();
    for (key, old) in from {
        push_token(path, key);
        match (old, to.get(key)) {
            (_, None) => out.push(change(path, ChangeKind::Removed, Some(old), None)),
            (Value::Object(old_obj), Some(Value::Object(new_obj))) => {
                walk(old_obj, new_obj, path, out)
            }
            (_, Some(new)) if new != old => {
                out.push(change(path, ChangeKind::Changed, Some(old), Some(new)))
            }
            (_, Some(_)) => {}
        }
        path.truncate(parent_len);
    }
    for (key, new) in to {
        if !from.contains_key(key) {
            push_token(path, key);
            out.push(change(path, ChangeKind::Added, None, Some(new)));
            path.truncate(parent_len);
        }
    }
}

fn change(path: &str, kind: ChangeKind, old: Option<&Value>, new: Option<&Value>) -> FieldChange {
    FieldChange {
        path: path.to_string(),
        kind,
        old_value: old.cloned(),
        new_value: new.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    fn changed(path: &str, old: Value, new: Value) -> FieldChange {
        FieldChange {
            path: path.into(),
            kind: ChangeKind::Changed,
            old_value: Some(old),
            new_value: Some(new),
        }
    }

    #[test]
    fn a_changed_scalar_is_one_replace_and_one_change() {
        let c = compare(
            &obj(json!({"score": 100, "name": "a"})),
            &obj(json!({"score": 150, "name": "a"})),
        );
        assert_eq!(
            c.patch,
            vec![json!({"op": "replace", "path": "/score", "value": 150})]
        );
        assert_eq!(c.changes, vec![changed("/score", json!(100), json!(150))]);
        assert!(!c.is_empty());
    }

    #[test]
    fn equal_states_compare_empty() {
        let s = obj(json!({"a": {"b": [1, {"c": null}]}, "d": true}));
        let c = compare(&s, &s);
        assert!(c.is_empty());
        assert!(compare(&State::new(), &State::new()).is_empty());
    }

    #[test]
    fn added_and_removed_keys_carry_their_whole_value() {
        let c = compare(
            &obj(json!({"gone": {"x": 1}, "kept": 1})),
            &obj(json!({"kept": 1, "new": {"y": [2]}})),
        );
        assert_eq!(
            c.changes,
            vec![
                FieldChange {
                    path: "/gone".into(),
                    kind: ChangeKind::Removed,
                    old_value: Some(json!({"x": 1})),
                    new_value: None,
                },
                FieldChange {
                    path: "/new".into(),
                    kind: ChangeKind::Added,
                    old_value: None,
                    new_value: Some(json!({"y": [2]})),
                },
            ]
        );
    }

    #[test]
    fn nested_objects_are_walked_into() {
        let c = compare(
            &obj(json!({"stats": {"level": 1, "xp": 5, "old": 0}})),
            &obj(json!({"stats": {"level": 2, "xp": 5, "hp": 9}})),
        );
        let summary: Vec<_> = c
            .changes
            .iter()
            .map(|ch| (ch.path.as_str(), ch.kind))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("/stats/hp", ChangeKind::Added),
                ("/stats/level", ChangeKind::Changed),
                ("/stats/old", ChangeKind::Removed),
            ]
        );
    }

    #[test]
    fn arrays_are_one_change_even_when_the_patch_is_per_index() {
        let c = compare(
            &obj(json!({"achievements": ["a", "b"]})),
            &obj(json!({"achievements": ["z", "a", "b"]})),
        );
        assert_eq!(
            c.changes,
            vec![changed(
                "/achievements",
                json!(["a", "b"]),
                json!(["z", "a", "b"])
            )]
        );
        assert!(
            c.patch.len() > 1,
            "json_patch diffs arrays index by index: {:?}",
            c.patch
        );
    }

    #[test]
    fn a_type_change_is_a_change_at_that_path() {
        let c = compare(
            &obj(json!({"s": {"a": 1}, "t": 5})),
            &obj(json!({"s": 3, "t": {"b": 2}})),
        );
        assert_eq!(
            c.changes,
            vec![
                changed("/s", json!({"a": 1}), json!(3)),
                changed("/t", json!(5), json!({"b": 2})),
            ]
        );
    }

    #[test]
    fn null_is_a_value_not_an_absence() {
        let c = compare(&obj(json!({"a": null})), &obj(json!({})));
        assert_eq!(c.changes[0].kind, ChangeKind::Removed);
        assert_eq!(c.changes[0].old_value, Some(Value::Null));
        let c = compare(&obj(json!({"a": null})), &obj(json!({"a": 0})));
        assert_eq!(c.changes, vec![changed("/a", Value::Null, json!(0))]);
    }

    #[test]
    fn paths_are_escaped_pointers() {
        let c = compare(
            &obj(json!({"a/b": {"c~d": 1}})),
            &obj(json!({"a/b": {"c~d": 2}})),
        );
        assert_eq!(c.changes[0].path, "/a~1b/c~0d");
        assert_eq!(
            c.patch,
            vec![json!({"op": "replace", "path": "/a~1b/c~0d", "value": 2})]
        );
    }

    #[test]
    fn changes_are_sorted_by_path() {
        let c = compare(
            &obj(json!({"b": 1, "a": {"z": 1, "y": 1}, "c": 1})),
            &obj(json!({"b": 2, "a": {"z": 2, "y": 2}})),
        );
        let paths: Vec<_> = c.changes.iter().map(|ch| ch.path.as_str()).collect();
        assert_eq!(paths, ["/a/y", "/a/z", "/b", "/c"]);
    }
}

/// Random states for property tests, shared with the timeline's tests.
#[cfg(test)]
pub(super) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::State;

    /// Few distinct keys, so two random states often share fields and nested objects; `/` and `~`
    /// exercise pointer escaping, `""` the empty key.
    fn arb_key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "0", "1", "a/b", "~1", ""]).prop_map(String::from)
    }

    /// Any JSON value but floats, nested at most three levels deep. Small ints and short strings
    /// make equal values (and so unchanged fields) common.
    pub fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-2i64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ab]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(arb_key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    pub fn arb_state() -> impl Strategy<Value = State> {
        prop::collection::btree_map(arb_key(), arb_value(), 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    /// Two states: either independent, or the second derived from the first by a random merge
    /// patch — the way events really produce versions, sharing most of their structure.
    pub fn arb_state_pair() -> impl Strategy<Value = (State, State)> {
        prop_oneof![
            (arb_state(), arb_state()),
            (arb_state(), arb_state()).prop_map(|(a, patch)| {
                let mut b = Value::Object(a.clone());
                json_patch::merge(&mut b, &Value::Object(patch));
                let b = b
                    .as_object()
                    .expect("merging objects gives an object")
                    .clone();
                (a, b)
            }),
        ]
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::field_path::lookup;
    use super::strategies::{arb_state, arb_state_pair};
    use super::*;

    proptest! {
        #![proptest_config(crate::domain::proptest_config(256))]

        #[test]
        fn the_patch_turns_from_into_to((a, b) in arb_state_pair()) {
            let c = compare(&a, &b);
            // Through the serialized form, as a client would receive and replay it.
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(c.patch)).unwrap();
            let mut doc = Value::Object(a);
            json_patch::patch(&mut doc, &patch).unwrap();
            prop_assert_eq!(doc, Value::Object(b));
        }

        #[test]
        fn a_state_compared_with_itself_has_no_changes(a in arb_state()) {
            let c = compare(&a, &a);
            prop_assert!(c.patch.is_empty());
            prop_assert!(c.changes.is_empty());
        }

        #[test]
        fn every_change_reports_the_values_at_its_path((a, b) in arb_state_pair()) {
            let c = compare(&a, &b);
            prop_assert_eq!(c.changes.is_empty(), a == b);
            for ch in &c.changes {
                prop_assert_eq!(ch.old_value.as_ref(), lookup(&a, &ch.path), "{:?}", ch);
                prop_assert_eq!(ch.new_value.as_ref(), lookup(&b, &ch.path), "{:?}", ch);
                let expected = match (&ch.old_value, &ch.new_value) {
                    (None, Some(_)) => ChangeKind::Added,
                    (Some(_), None) => ChangeKind::Removed,
                    (Some(old), Some(new)) => {
                        prop_assert_ne!(old, new);
                        // Leaves only: objects on both sides are walked into, never reported.
                        prop_assert!(!(old.is_object() && new.is_object()), "{:?}", ch);
                        ChangeKind::Changed
                    }
                    (None, None) => unreachable!("a change has at least one side"),
                };
                prop_assert_eq!(ch.kind, expected);
            }
            prop_assert!(c.changes.windows(2).all(|w| w[0].path < w[1].path), "sorted, no duplicates");
        }

        #[test]
        fn the_changes_alone_turn_from_into_to((a, b) in arb_state_pair()) {
            // Completeness: nothing changed is left out. The paths are disjoint (nothing is
            // reported below an added, removed or changed value), so the order does not matter.
            let ops: Vec<Value> = compare(&a, &b)
                .changes
                .into_iter()
                .map(|ch| match ch.kind {
                    ChangeKind::Added => json!({"op": "add", "path": ch.path, "value": ch.new_value}),
                    ChangeKind::Removed => json!({"op": "remove", "path": ch.path}),
                    ChangeKind::Changed => json!({"op": "replace", "path": ch.path, "value": ch.new_value}),
                })
                .collect();
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
            let mut doc = Value::Object(a);
            json_patch::patch(&mut doc, &patch).unwrap();
            prop_assert_eq!(doc, Value::Object(b));
        }
    }
}
