//! A field's timeline (GetFieldTimeline): the versions at which one field's value changed.
//!
//! The application folds an instance's events version by version and shows each resulting state
//! to a [`FieldTracker`]; the tracker says whether the field changed at that version. Keeping only
//! the last value seen means a timeline over N versions costs one pass and one value of memory,
//! never N states.

use serde_json::Value;

use super::State;
use super::field_path::lookup;

/// Follows one field through a sequence of states and reports each change of its value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTracker {
    /// Canonical JSON pointer, as returned by [`super::field_path::parse_field_path`].
    pointer: String,
    /// The value in the last observed state; `None` while the field is absent.
    last: Option<Value>,
}

impl FieldTracker {
    /// Starts tracking the field at `pointer`. `initial` is its value before the first state that
    /// will be observed (`None` = absent): `None` when starting from an instance's birth, or the
    /// value at the version before a requested range, so the range's first point is a real change.
    pub fn new(pointer: impl Into<String>, initial: Option<Value>) -> Self {
        Self {
            pointer: pointer.into(),
            last: initial,
        }
    }

    /// Looks at the next state. Returns `Some(value)` when the field's value differs from the last
    /// one seen — `Some(None)` when it was removed, `Some(Some(v))` when it appeared or changed —
    /// and `None` when it is unchanged (absent before and still absent included).
    ///
    /// A field present with the value `null` is not absent: going from absent to `null` is a change.
    pub fn observe(&mut self, state: &State) -> Option<Option<Value>> {
        let current = lookup(state, &self.pointer);
        if current == self.last.as_ref() {
            return None;
        }
        let current = current.cloned();
        self.last.clone_from(&current);
        Some(current)
    }

    /// The pointer being tracked.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::diff::strategies::arb_state;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reports_appearance_change_and_removal() {
        let mut t = FieldTracker::new("/stats/level", None);
        assert_eq!(t.observe(&obj(json!({"name": "a"}))), None);
        assert_eq!(
            t.observe(&obj(json!({"stats": {"level": 1}}))),
            Some(Some(json!(1)))
        );
        assert_eq!(
            t.observe(&obj(json!({"stats": {"level": 1}, "x": 2}))),
            None
        );
        assert_eq!(
            t.observe(&obj(json!({"stats": {"level": 2}}))),
            Some(Some(json!(2)))
        );
        assert_eq!(t.observe(&obj(json!({"stats": {}}))), Some(None));
        assert_eq!(t.observe(&obj(json!({}))), None);
    }

    #[test]
    fn the_initial_value_is_the_baseline() {
        let mut t = FieldTracker::new("/score", Some(json!(10)));
        assert_eq!(t.observe(&obj(json!({"score": 10}))), None);
        let mut t = FieldTracker::new("/score", Some(json!(10)));
        assert_eq!(t.observe(&obj(json!({}))), Some(None));
    }

    #[test]
    fn null_is_distinct_from_absent() {
        let mut t = FieldTracker::new("/a", None);
        assert_eq!(t.observe(&obj(json!({"a": null}))), Some(Some(Value::Null)));
        assert_eq!(t.observe(&obj(json!({"a": null}))), None);
        assert_eq!(t.observe(&obj(json!({}))), Some(None));
    }

    #[test]
    fn tracks_array_elements_and_whole_subtrees() {
        let mut elem = FieldTracker::new("/list/1", None);
        let mut whole = FieldTracker::new("/list", None);
        let states = [
            obj(json!({"list": ["a"]})),
            obj(json!({"list": ["a", "b"]})),
            obj(json!({"list": ["z", "b"]})),
        ];
        let elem_points: Vec<_> = states.iter().map(|s| elem.observe(s)).collect();
        let whole_points: Vec<_> = states.iter().map(|s| whole.observe(s)).collect();
        assert_eq!(elem_points, [None, Some(Some(json!("b"))), None]);
        assert_eq!(
            whole_points,
            [
                Some(Some(json!(["a"]))),
                Some(Some(json!(["a", "b"]))),
                Some(Some(json!(["z", "b"]))),
            ]
        );
        assert_eq!(whole.pointer(), "/list");
    }

    /// Pointers over the same small key alphabet as [`arb_state`], so they often hit.
    fn arb_pointer() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "0", "1", "a/b"]), 1..4).prop_map(
            |tokens| {
                let mut p = String::new();
                for t in tokens {
                    super::super::field_path::push_token(&mut p, t);
                }
                p
            },
        )
    }

    proptest! {
        #![proptest_config(crate::domain::proptest_config(256))]

        /// The tracker reports exactly the versions a naive scan of consecutive states finds.
        #[test]
        fn tracker_matches_a_naive_scan(
            pointer in arb_pointer(),
            initial in prop::option::of(prop_oneof![Just(json!(1)), Just(json!("a")), Just(Value::Null)]),
            states in prop::collection::vec(arb_state(), 0..12),
        ) {
            let mut tracker = FieldTracker::new(pointer.clone(), initial.clone());
            let tracked: Vec<(usize, Option<Value>)> = states
                .iter()
                .enumerate()
                .filter_map(|(i, s)| tracker.observe(s).map(|v| (i, v)))
                .collect();

            let mut naive = Vec::new();
            let mut previous = initial.as_ref();
            for (i, s) in states.iter().enumerate() {
                let current = lookup(s, &pointer);
                if current != previous {
                    naive.push((i, current.cloned()));
                }
                previous = current;
            }
            prop_assert_eq!(tracked, naive);
        }
    }
}
