//! Property tests over the pure functions a client's input reaches: applying an event in every
//! mode, parsing and looking up field paths, compiling and applying schemas. Whatever the input,
//! each returns a value or a `DomainError` — never a panic — and keeps its documented laws.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::diff::strategies::{arb_state, arb_value};
use super::field_path::{lookup, parse_field_path};
use super::validate::CompiledSchema;
use super::{ApplyMode, State, apply_event};

fn arb_mode() -> impl Strategy<Value = ApplyMode> {
    prop_oneof![
        Just(ApplyMode::MergePatch),
        Just(ApplyMode::Replace),
        Just(ApplyMode::JsonPatch),
    ]
}

/// Paths as a client might write them: pointers, dotted paths, escapes, indices, `-`, junk.
fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "/", "/a", "/a/b", "/a/0", "/a/-", "/~0", "/~1", "/~2", "/a~", "a.b", "a..b", ".a",
            "a.", "0", "a/b", "~", "/0/0/0",
        ])
        .prop_map(String::from),
        "[/a-c0-9~.-]{0,12}",
        any::<String>(),
    ]
}

/// RFC 6902 operations, well-formed or not, over the same few keys the states use.
fn arb_patch() -> impl Strategy<Value = State> {
    let op = (
        prop::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "nope",
        ]),
        arb_path(),
        arb_path(),
        arb_value(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        );
    prop::collection::vec(op, 0..6).prop_map(|ops| {
        let mut payload = State::new();
        payload.insert("patch".into(), Value::Array(ops));
        payload
    })
}

/// Schemas made of real keywords with values of any type, so some compile and most do not.
fn arb_schema() -> impl Strategy<Value = State> {
    let keyword = prop::sample::select(vec![
        "type",
        "properties",
        "required",
        "items",
        "minimum",
        "maxLength",
        "pattern",
        "enum",
        "format",
        "$ref",
        "allOf",
        "additionalProperties",
        "$schema",
    ]);
    let value = prop_oneof![
        arb_value(),
        prop::sample::select(vec![
            json!("object"),
            json!("string"),
            json!(["integer", "null"]),
            json!({"a": {"type": "integer"}}),
            json!(["a"]),
            json!("(unclosed"),
            json!("#/definitions/nowhere"),
            json!("email"),
            json!("https://json-schema.org/draft/2020-12/schema"),
            json!("http://example.com/unknown-draft"),
        ]),
    ];
    prop::collection::btree_map(keyword.prop_map(String::from), value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(crate::domain::proptest_config(512))]

    #[test]
    fn applying_any_payload_in_any_mode_never_panics(
        state in arb_state(),
        payload in prop_oneof![arb_state(), arb_patch()],
        mode in arb_mode(),
    ) {
        let _ = apply_event(&state, &payload, mode);
    }

    #[test]
    fn a_merge_patch_without_nulls_keeps_every_untouched_field(
        state in arb_state(),
        payload in arb_state(),
    ) {
        prop_assume!(!payload.values().any(Value::is_null));
        let next = apply_event(&state, &payload, ApplyMode::MergePatch).unwrap();
        for (k, v) in &state {
            if !payload.contains_key(k) {
                prop_assert_eq!(next.get(k), Some(v));
            }
        }
        for k in payload.keys() {
            prop_assert!(next.contains_key(k));
        }
    }

    #[test]
    fn replace_gives_the_payload(state in arb_state(), payload in arb_state()) {
        prop_assert_eq!(apply_event(&state, &payload, ApplyMode::Replace).unwrap(), payload);
    }

    #[test]
    fn a_json_patch_adding_fresh_keys_adds_exactly_them(
        state in arb_state(),
        values in prop::collection::vec(arb_value(), 1..4),
    ) {
        let ops: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"op": "add", "path": format!("/fresh{i}"), "value": v}))
            .collect();
        let payload: State = [("patch".to_string(), Value::Array(ops))].into_iter().collect();
        let next = apply_event(&state, &payload, ApplyMode::JsonPatch).unwrap();
        prop_assert_eq!(next.len(), state.len() + values.len());
        for (i, v) in values.iter().enumerate() {
            prop_assert_eq!(next.get(&format!("fresh{i}")), Some(v));
        }
    }

    #[test]
    fn field_paths_parse_to_one_canonical_pointer(raw in arb_path(), state in arb_state()) {
        if let Ok(pointer) = parse_field_path(&raw) {
            prop_assert!(pointer.starts_with('/'), "{pointer:?}");
            // Canonical: parsing the pointer again gives the same pointer.
            prop_assert_eq!(parse_field_path(&pointer).unwrap(), pointer.clone());
            let _ = lookup(&state, &pointer);
        }
        let _ = lookup(&state, &raw);
    }

    #[test]
    fn any_schema_compiles_or_is_refused_and_validates_any_state(
        schema in arb_schema(),
        state in arb_state(),
    ) {
        if let Ok(compiled) = CompiledSchema::compile(&schema) {
            let _ = compiled.validate("t", &state);
        }
    }
}
