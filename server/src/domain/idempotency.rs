//! What makes two events "the same" for idempotency: a hash of their event type, apply mode and
//! payload in a canonical form.
//!
//! Every number is hashed as the double it denotes (protobuf carries numbers as doubles, and
//! `grpc::convert` turns integral ones into JSON integers), with `-0` as `0`: so a payload and
//! its rendering by a store (PostgreSQL jsonb writes `1e18` as `1000000000000000000` and `1.0`
//! as `1.0`, drops `-0`'s sign) hash alike. Object members are hashed in key order, so member
//! order never matters either. Metadata is not part of the content: a retry may carry a new
//! trace id. The hash is stored with the event id, so a retry is recognised without loading
//! the recorded payload.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ApplyMode, State};

/// Version tag of the canonical form; changing the form means changing the tag.
const FORM: &[u8] = b"tse-event-content-v1";

/// SHA-256 of the event's content in canonical form.
pub fn content_hash(event_type: &str, mode: ApplyMode, payload: &State) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(FORM);
    text(&mut h, event_type);
    text(&mut h, mode.as_str());
    object(&mut h, payload);
    h.finalize().to_vec()
}

fn text(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn object(h: &mut Sha256, map: &State) {
    h.update(b"o");
    h.update((map.len() as u64).to_be_bytes());
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (k, v) in members {
        text(h, k);
        value(h, v);
    }
}

fn value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            // Every JSON number a store gives back parses to the same double as the one it was
            // given (shortest round-trip rendering), so the double is the canonical number.
            let d = n.as_f64().unwrap_or(f64::NAN);
            let d = if d == 0.0 { 0.0 } else { d };
            h.update(b"d");
            h.update(d.to_bits().to_be_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            text(h, s);
        }
        Value::Array(items) => {
            h.update(b"a");
            h.update((items.len() as u64).to_be_bytes());
            for item in items {
                value(h, item);
            }
        }
        Value::Object(map) => object(h, map),
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
    fn a_store_rendering_of_numbers_hashes_alike() {
        // What convert.rs makes of protobuf doubles, and what jsonb gives back for them.
        let sent = obj(json!({"a": 1e18, "b": 1, "c": 1e-7, "d": 0, "e": 1e20, "f": [2.5]}));
        let stored: State = serde_json::from_str(
            r#"{"f": [2.50], "e": 100000000000000000000, "d": -0, "c": 0.0000001,
                "b": 1.0, "a": 1000000000000000000}"#,
        )
        .unwrap();
        assert_eq!(
            content_hash("T", ApplyMode::MergePatch, &sent),
            content_hash("T", ApplyMode::MergePatch, &stored)
        );
    }

    #[test]
    fn type_mode_and_payload_each_count() {
        let p = obj(json!({"a": 1}));
        let base = content_hash("T", ApplyMode::MergePatch, &p);
        assert_ne!(base, content_hash("U", ApplyMode::MergePatch, &p));
        assert_ne!(base, content_hash("T", ApplyMode::Replace, &p));
        assert_ne!(
            base,
            content_hash("T", ApplyMode::MergePatch, &obj(json!({"a": 2})))
        );
        assert_ne!(
            base,
            content_hash("T", ApplyMode::MergePatch, &obj(json!({"a": "1"})))
        );
        assert_ne!(
            content_hash("T", ApplyMode::MergePatch, &obj(json!({"a": [], "b": {}}))),
            content_hash("T", ApplyMode::MergePatch, &obj(json!({"a": {}, "b": []})))
        );
    }
}
