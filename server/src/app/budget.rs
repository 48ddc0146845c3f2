//! Response size budgets for pages: how many bytes an item will take in the gRPC response, so a
//! page stops early (with a next_page_token) instead of growing past the server's maximum
//! encoded message size.
//!
//! The sizes are those of the protobuf encoding the gRPC layer produces (google.protobuf.Struct
//! for JSON documents), computed from the JSON values without building the messages: the app
//! stays free of protobuf. They err on the large side (every field counted as present, a generous
//! allowance for numbers, timestamps and enums), so a page measured here never encodes bigger.

use serde_json::Value;

use crate::domain::State;
use crate::ports::{EntityTypeRecord, EventRecord, InstanceRecord};

/// What a page may carry, out of [`super::Limits::max_response_bytes`]: a quarter is left for
/// the envelope, the page token and what the estimate might miss.
pub(crate) fn page_budget(max_response_bytes: usize) -> usize {
    max_response_bytes - max_response_bytes / 4
}

/// Bytes of a varint.
fn varint(n: usize) -> usize {
    let mut n = n as u64;
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// A length-delimited field (tag, length, body) whose body is `len` bytes.
fn delimited(len: usize) -> usize {
    // Tags of field numbers below 16 take one byte; every field here is below 16.
    1 + varint(len) + len
}

/// Encoded body of a google.protobuf.Value holding `v`.
pub(crate) fn value_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 2,
        Value::Number(_) => 9,
        Value::String(s) => delimited(s.len()),
        Value::Array(items) => delimited(items.iter().map(|i| delimited(value_len(i))).sum()),
        Value::Object(map) => delimited(object_len(map)),
    }
}

/// Encoded body of a google.protobuf.Struct holding `map`.
fn object_len(map: &serde_json::Map<String, Value>) -> usize {
    map.iter()
        .map(|(k, v)| delimited(delimited(k.len()) + delimited(value_len(v))))
        .sum()
}

/// A Struct field holding `state`.
pub(crate) fn state_len(state: &State) -> usize {
    delimited(object_len(state))
}

/// Numbers, timestamps, enums and the repeated-field wrapper of one item, generously.
const FIXED: usize = 96;

pub(crate) fn event_len(e: &EventRecord) -> usize {
    FIXED
        + delimited(e.event_id.len())
        + 2 * delimited(36)
        + delimited(e.event_type.len())
        + state_len(&e.payload)
        + state_len(&e.metadata)
        // The global position: a tag and a varint of at most 10 bytes.
        + 11
}

pub(crate) fn instance_len(i: &InstanceRecord) -> usize {
    FIXED
        + 2 * delimited(36)
        + delimited(i.entity_type_name.len())
        + delimited(i.external_id.len())
        + state_len(&i.state)
}

pub(crate) fn entity_type_len(t: &EntityTypeRecord) -> usize {
    FIXED
        + delimited(36)
        + delimited(t.name.len())
        + delimited(t.description.len())
        + state_len(&t.schema)
}

/// Items taken so far against a byte budget. The first item is always taken, however big, so
/// a page always makes progress.
pub(crate) struct Budget {
    left: usize,
    taken: usize,
}

impl Budget {
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            left: bytes,
            taken: 0,
        }
    }

    /// Whether an item of `len` bytes still fits; if it does, it is counted.
    pub(crate) fn take(&mut self, len: usize) -> bool {
        if self.taken > 0 && len > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(len);
        self.taken += 1;
        true
    }
}

/// Keeps the longest prefix of `items` that fits the budget (at least one item). Returns
/// whether anything was cut.
pub(crate) fn fit<T>(items: &mut Vec<T>, bytes: usize, len: impl Fn(&T) -> usize) -> bool {
    let mut budget = Budget::new(bytes);
    let keep = items.iter().take_while(|i| budget.take(len(i))).count();
    let cut = keep < items.len();
    items.truncate(keep);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The estimate matches prost's encoding of the same Struct exactly: the helpers above
    /// are the protobuf rules, not a guess.
    #[test]
    fn state_len_is_the_encoded_struct_size() {
        use prost::Message;
        let samples = [
            json!({}),
            json!({"a": 1, "b": "x", "c": null, "d": true}),
            json!({"list": [1, "two", [3], {"four": 4}], "deep": {"er": {"est": "é".repeat(200)}}}),
            json!({"long": "x".repeat(20_000), "nums": (0..500).collect::<Vec<_>>()}),
        ];
        for sample in samples {
            let state = sample.as_object().unwrap().clone();
            let encoded = encode(&state);
            let msg = prost_types::Struct {
                fields: encoded.fields,
            };
            assert_eq!(object_len(&state), msg.encoded_len(), "{sample}");
        }
    }

    fn encode(state: &State) -> prost_types::Struct {
        prost_types::Struct {
            fields: state.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        }
    }

    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            Value::Object(o) => Kind::StructValue(encode(o)),
        };
        prost_types::Value { kind: Some(kind) }
    }

    #[test]
    fn a_budget_always_takes_the_first_item_and_stops_before_passing() {
        let mut items = vec![10, 10, 10];
        assert!(fit(&mut items, 25, |n| *n));
        assert_eq!(items, vec![10, 10]);
        let mut huge = vec![100, 1];
        assert!(fit(&mut huge, 25, |n| *n));
        assert_eq!(huge, vec![100]);
        let mut all = vec![1, 2];
        assert!(!fit(&mut all, 25, |n| *n));
    }
}
