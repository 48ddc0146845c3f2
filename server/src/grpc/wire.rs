//! JSON documents written straight into the protobuf encoding of `google.protobuf.Struct`, for
//! the responses that carry thousands of them (ReadEvents, GetHistory) or are called the most
//! (GetCurrentState, GetStateAtVersion).
//!
//! The generated messages hold a `prost_types::Struct`: a tree of `BTreeMap`s and boxed values
//! built from the state's `serde_json` tree only to be encoded once and dropped. [`JsonStruct`]
//! is a message that encodes the `serde_json` map itself, with the same wire format, so a client
//! decodes exactly what it decoded before. [`Fast`] routes the hot methods to handlers whose
//! responses are mirror messages ([`EventWire`], ...) that hold [`JsonStruct`]s where the
//! generated ones hold Structs: field for field the same numbers and types, so the bytes on the
//! wire decode as the generated message.
//!
//! Only the server encodes these: decoding one is refused ([`JsonStruct`] is never read back).

use bytes::{Buf, BufMut};
use prost::encoding::{
    self, DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use prost::{DecodeError, Message};
use prost_types::Timestamp;
use serde_json::{Map, Value};

use super::convert;
use crate::domain::apply::split_recorded;
use crate::ports::{EventRecord, InstanceRecord};

/// A JSON object encoded as a `google.protobuf.Struct`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JsonStruct(pub Map<String, Value>);

// google.protobuf.Struct: map<string, Value> fields = 1; each entry a message with key = 1,
// value = 2. google.protobuf.Value: oneof kind { NullValue null_value = 1; double number_value
// = 2; string string_value = 3; bool bool_value = 4; Struct struct_value = 5; ListValue
// list_value = 6; }. google.protobuf.ListValue: repeated Value values = 1.

/// Length of a length-delimited field's tag, length prefix and body.
fn delimited(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Encoded length of a Struct body holding `map`.
fn struct_len(map: &Map<String, Value>) -> usize {
    map.iter().map(|(k, v)| delimited(1, entry_len(k, v))).sum()
}

/// Encoded length of one map entry (key, then value).
fn entry_len(key: &str, value: &Value) -> usize {
    // prost leaves an empty key out of the entry; a decoder reads it back as "".
    let key = if key.is_empty() {
        0
    } else {
        delimited(1, key.len())
    };
    key + delimited(2, value_len(value))
}

/// Encoded length of a Value body holding `v`.
fn value_len(v: &Value) -> usize {
    match v {
        // null_value = 0 (varint) and bool_value: tag + one byte.
        Value::Null | Value::Bool(_) => 2,
        // number_value: tag + 8 bytes.
        Value::Number(_) => 9,
        Value::String(s) => delimited(3, s.len()),
        Value::Object(m) => delimited(5, struct_len(m)),
        Value::Array(items) => delimited(6, list_len(items)),
    }
}

/// Encoded length of a ListValue body holding `items`.
fn list_len(items: &[Value]) -> usize {
    items.iter().map(|i| delimited(1, value_len(i))).sum()
}

fn encode_struct(map: &Map<String, Value>, buf: &mut impl BufMut) {
    for (k, v) in map {
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(entry_len(k, v) as u64, buf);
        if !k.is_empty() {
            encoding::string::encode(1, k, buf);
        }
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(value_len(v) as u64, buf);
        encode_value(v, buf);
    }
}

fn encode_value(v: &Value, buf: &mut impl BufMut) {
    match v {
        Value::Null => {
            encode_key(1, WireType::Varint, buf);
            buf.put_u8(0);
        }
        Value::Bool(b) => {
            encode_key(4, WireType::Varint, buf);
            buf.put_u8(u8::from(*b));
        }
        // As the generated conversion does: every JSON number is a double on the wire.
        Value::Number(n) => encoding::double::encode(2, &n.as_f64().unwrap_or(0.0), buf),
        Value::String(s) => encoding::string::encode(3, s, buf),
        Value::Object(m) => {
            encode_key(5, WireType::LengthDelimited, buf);
            encode_varint(struct_len(m) as u64, buf);
            encode_struct(m, buf);
        }
        Value::Array(items) => {
            encode_key(6, WireType::LengthDelimited, buf);
            encode_varint(list_len(items) as u64, buf);
            for item in items {
                encode_key(1, WireType::LengthDelimited, buf);
                encode_varint(value_len(item) as u64, buf);
                encode_value(item, buf);
            }
        }
    }
}

impl Message for JsonStruct {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_struct(&self.0, buf);
    }

    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: WireType,
        _buf: &mut impl Buf,
        _ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Never reached: no handler decodes one (a derived `Message` needs the method). prost
        // offers no other way to build a decode error.
        #[allow(deprecated)]
        Err(DecodeError::new(
            "JsonStruct is only encoded: decode a google.protobuf.Struct instead",
        ))
    }

    fn encoded_len(&self) -> usize {
        struct_len(&self.0)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `temporal_state.v1.Event`, its documents encoded straight from the record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventWire {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub instance_id: String,
    #[prost(string, tag = "3")]
    pub entity_type_id: String,
    #[prost(string, tag = "4")]
    pub event_type: String,
    #[prost(int64, tag = "5")]
    pub version: i64,
    #[prost(message, optional, tag = "6")]
    pub payload: Option<JsonStruct>,
    #[prost(message, optional, tag = "7")]
    pub metadata: Option<JsonStruct>,
    #[prost(int32, tag = "8")]
    pub mode: i32,
    #[prost(message, optional, tag = "9")]
    pub recorded_at: Option<Timestamp>,
    #[prost(message, optional, tag = "10")]
    pub occurred_at: Option<Timestamp>,
    #[prost(string, tag = "11")]
    pub recorded_by: String,
    #[prost(int64, tag = "12")]
    pub schema_version: i64,
    #[prost(int64, tag = "13")]
    pub position: i64,
    #[prost(message, optional, tag = "14")]
    pub change: Option<JsonStruct>,
}

impl From<EventRecord> for EventWire {
    /// What [`convert::event_from_record`] builds, field for field.
    fn from(r: EventRecord) -> Self {
        let (payload, change) = split_recorded(r.mode, r.payload);
        Self {
            id: r.event_id,
            instance_id: r.instance_id.to_string(),
            entity_type_id: r.entity_type_id.to_string(),
            event_type: r.event_type,
            version: r.version,
            payload: Some(JsonStruct(payload)),
            metadata: Some(JsonStruct(r.metadata)),
            mode: convert::pb_from_mode(r.mode) as i32,
            recorded_at: Some(convert::timestamp_from_time(r.recorded_at)),
            occurred_at: Some(convert::timestamp_from_time(r.occurred_at)),
            recorded_by: r.recorded_by,
            schema_version: r.schema_version,
            position: r.position,
            change: change.map(JsonStruct),
        }
    }
}

/// `temporal_state.v1.Instance`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstanceWire {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub entity_type_id: String,
    #[prost(string, tag = "3")]
    pub entity_type_name: String,
    #[prost(string, tag = "4")]
    pub external_id: String,
    #[prost(message, optional, tag = "5")]
    pub state: Option<JsonStruct>,
    #[prost(int64, tag = "6")]
    pub version: i64,
    #[prost(message, optional, tag = "7")]
    pub created_at: Option<Timestamp>,
    #[prost(message, optional, tag = "8")]
    pub updated_at: Option<Timestamp>,
    #[prost(bool, tag = "9")]
    pub archived: bool,
    #[prost(bool, tag = "10")]
    pub erased: bool,
}

impl From<InstanceRecord> for InstanceWire {
    /// What [`convert::instance_from_record`] builds, field for field.
    fn from(r: InstanceRecord) -> Self {
        Self {
            id: r.id.to_string(),
            entity_type_id: r.entity_type_id.to_string(),
            entity_type_name: r.entity_type_name,
            external_id: r.external_id,
            state: Some(JsonStruct(r.state)),
            version: r.version,
            created_at: Some(convert::timestamp_from_time(r.created_at)),
            updated_at: Some(convert::timestamp_from_time(r.updated_at)),
            archived: r.archived,
            erased: r.erased,
        }
    }
}

/// `temporal_state.v1.ReadEventsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadEventsResponseWire {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<EventWire>,
    #[prost(int64, tag = "2")]
    pub next_position: i64,
    #[prost(int64, tag = "3")]
    pub head_position: i64,
}

/// `temporal_state.v1.GetHistoryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetHistoryResponseWire {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<EventWire>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

/// `temporal_state.v1.GetStateAtVersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetStateAtVersionResponseWire {
    #[prost(message, optional, tag = "1")]
    pub state: Option<JsonStruct>,
    #[prost(int64, tag = "2")]
    pub version: i64,
    #[prost(message, optional, tag = "3")]
    pub recorded_at: Option<Timestamp>,
}

/// `temporal_state.v1.GetCurrentStateResponse` (and `GetInstanceResponse`: the same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstanceResponseWire {
    #[prost(message, optional, tag = "1")]
    pub instance: Option<InstanceWire>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApplyMode;
    use proptest::prelude::*;
    use serde_json::json;

    fn to_pb(map: &Map<String, Value>) -> prost_types::Struct {
        crate::grpc::convert::struct_from_state(map)
    }

    #[test]
    fn encodes_what_the_generated_struct_decodes() {
        let doc = json!({
            "": 1, "null": null, "t": true, "f": false, "n": -1.5, "big": 9007199254740993u64,
            "s": "héllo", "empty": "", "o": {"deep": {"x": [1, "two", null, {"y": []}]}},
            "list": [], "obj": {}
        });
        let Value::Object(map) = doc else {
            unreachable!()
        };
        let fast = JsonStruct(map.clone()).encode_to_vec();
        assert_eq!(fast.len(), JsonStruct(map.clone()).encoded_len());
        let back = prost_types::Struct::decode(&fast[..]).unwrap();
        assert_eq!(back, to_pb(&map));
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    fn event(mode: ApplyMode, payload: Map<String, Value>) -> EventRecord {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        EventRecord {
            event_id: "e-1".into(),
            instance_id: uuid::Uuid::new_v4(),
            entity_type_id: uuid::Uuid::new_v4(),
            event_type: "ScoreIncreased".into(),
            version: 7,
            payload,
            metadata: object(json!({"actor": "ann", "trace": [1, 2]})),
            mode,
            recorded_at: at,
            occurred_at: at - chrono::Duration::days(1),
            recorded_by: "key-a".into(),
            schema_version: 3,
            position: 42,
        }
    }

    /// The mirror messages decode as the generated ones the generated handlers build.
    #[test]
    fn events_decode_as_the_generated_event() {
        for record in [
            event(
                ApplyMode::MergePatch,
                object(json!({"score": 5, "tags": ["a"]})),
            ),
            event(ApplyMode::Replace, Map::new()),
            event(
                ApplyMode::Transformed,
                crate::domain::apply::transformed_payload(
                    object(json!({"points": 5})),
                    object(json!({"score": 15, "level": 2})),
                ),
            ),
        ] {
            let expected = convert::event_from_record(record.clone());
            let page = ReadEventsResponseWire {
                events: vec![EventWire::from(record)],
                next_position: 42,
                head_position: 99,
            }
            .encode_to_vec();
            let decoded = temporal_state_proto::v1::ReadEventsResponse::decode(&page[..]).unwrap();
            assert_eq!(decoded.events, vec![expected]);
            assert_eq!((decoded.next_position, decoded.head_position), (42, 99));
        }
    }

    #[test]
    fn instances_decode_as_the_generated_instance() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let record = InstanceRecord {
            id: uuid::Uuid::new_v4(),
            entity_type_id: uuid::Uuid::new_v4(),
            entity_type_name: "player".into(),
            external_id: "p-1".into(),
            state: object(json!({"score": 1.5, "nested": {"a": null}})),
            version: 3,
            created_at: at,
            updated_at: at,
            archived: true,
            erased: false,
        };
        let expected = convert::instance_from_record(record.clone());
        let bytes = InstanceResponseWire {
            instance: Some(record.into()),
        }
        .encode_to_vec();
        let decoded =
            temporal_state_proto::v1::GetCurrentStateResponse::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.instance, Some(expected));
    }

    #[test]
    fn refuses_to_be_decoded() {
        let bytes = to_pb(&Map::from_iter([("a".to_string(), json!(1))])).encode_to_vec();
        assert!(JsonStruct::decode(&bytes[..]).is_err());
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e300f64..1e300).prop_map(|n| json!(n)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_document_decodes_as_the_generated_struct(
            map in prop::collection::btree_map(".{0,8}", json(), 0..8)
        ) {
            let map: Map<String, Value> = map.into_iter().collect();
            let fast = JsonStruct(map.clone()).encode_to_vec();
            prop_assert_eq!(fast.len(), JsonStruct(map.clone()).encoded_len());
            let back = prost_types::Struct::decode(&fast[..]).unwrap();
            prop_assert_eq!(back, to_pb(&map));
        }
    }
}
