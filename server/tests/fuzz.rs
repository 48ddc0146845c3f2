//! A fuzz harness over the whole gRPC API, against the real server binary on both backends
//! (PostgreSQL with Redis and NATS, and the embedded store).
//!
//! Each case is one generated request, random or adversarial: deep, wide and huge values,
//! unicode edge cases, NUL characters, boundary integers and timestamps, invalid ids and page
//! tokens, every `ApplyMode` with hostile JSON Patches, declared event types with valid and
//! hostile CEL (loops, bombs, unknown names, token soup) on creates and updates, `dry_run` and
//! `create_if_missing` writes, and raw bytes that are no valid message at all. Whatever comes back must be a client code (never INTERNAL, UNKNOWN, DATA_LOSS or
//! UNAVAILABLE); afterwards the server's log holds no panic, its health is SERVING, it still
//! accepts a write, and its peak resident memory stayed under 512 MiB.
//!
//! `FUZZ_CASES` (default 600 per backend) sets the number of cases, `FUZZ_SEED` replays a run
//! (the seed is printed at the start), so CI runs a bounded number and a developer can run more:
//! `FUZZ_CASES=20000 cargo test -p temporal-state-server --test fuzz -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::bombs::{copy_bomb, json_patch, nesting_bomb};
use common::procs::{Nats, free_port};
use common::raw::raw_call;
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use prost::Message;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue};
use temporal_state_proto::v1 as pb;
use tonic::{Code, Status};

/// Peak resident memory the server may reach under the whole run (the issue's goal).
const MAX_PEAK_RSS_KIB: u64 = 512 * 1024;

fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Codes a client may legitimately get for a request it made up.
fn is_client_code(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::Aborted
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

const UNARY_METHODS: &[&str] = &[
    "/temporal_state.v1.EntityTypeService/CreateEntityType",
    "/temporal_state.v1.EntityTypeService/ListEntityTypes",
    "/temporal_state.v1.EntityTypeService/GetEntityType",
    "/temporal_state.v1.EntityTypeService/UpdateEntityType",
    "/temporal_state.v1.EntityTypeService/DeleteEntityType",
    "/temporal_state.v1.InstanceService/CreateInstance",
    "/temporal_state.v1.InstanceService/ListInstances",
    "/temporal_state.v1.InstanceService/GetInstance",
    "/temporal_state.v1.InstanceService/GetCurrentState",
    "/temporal_state.v1.InstanceService/ArchiveInstance",
    "/temporal_state.v1.InstanceService/RestoreInstance",
    "/temporal_state.v1.InstanceService/EraseInstance",
    "/temporal_state.v1.EventService/ApplyEvent",
    "/temporal_state.v1.EventService/ApplyEvents",
    "/temporal_state.v1.QueryService/GetHistory",
    "/temporal_state.v1.QueryService/GetStateAtVersion",
    "/temporal_state.v1.QueryService/GetStateAtTime",
    "/temporal_state.v1.QueryService/CompareVersions",
    "/temporal_state.v1.QueryService/GetFieldTimeline",
    "/temporal_state.v1.AnalyticsService/GetEventCounts",
    "/temporal_state.v1.AnalyticsService/GetEventTimeSeries",
    "/temporal_state.v1.AnalyticsService/GetFieldAggregation",
    "/temporal_state.v1.AnalyticsService/GetMostActive",
    "/temporal_state.v1.AnalyticsService/GetSummary",
    "/temporal_state.v1.AuthService/GetCaller",
];

// ---------------------------------------------------------------------------------------------
// Generators.

/// What the generators know about the data set up before the run: real ids and names, so that
/// part of the requests reach deep into the server instead of failing at the first lookup.
#[derive(Clone, Debug)]
struct Known {
    strings: Vec<String>,
    instance_ids: Vec<String>,
    type_names: Vec<String>,
    /// Instances of `fuzz_declared`, whose event types declare guards and transforms.
    declared_ids: Vec<String>,
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> proptest::sample::Select<T> {
    proptest::sample::select(items.to_vec())
}

fn text(known: &Known) -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&known.strings),
        1 => Just(String::new()),
        1 => Just("\0".to_string()),
        1 => Just("ok\0tail".to_string()),
        1 => "[a-z][a-z0-9_]{0,70}",
        1 => any::<String>(),
        1 => Just("\u{202e}\u{feff}\u{fffd}\u{10ffff}😀e\u{301}".to_string()),
        1 => (1usize..200_000).prop_map(|n| "x".repeat(n)),
        1 => Just("/list/-1".to_string()),
        1 => Just("/~1~0/../%00".to_string()),
        1 => Just("AA==".to_string()),
        1 => Just("AA".to_string()),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        }),
        1 => Just(uuid::Uuid::new_v4().to_string()),
        1 => Just(uuid::Uuid::nil().to_string()),
    ]
    .boxed()
}

/// Mostly a well-formed identifier matching `pattern`, so the request gets past parsing; at
/// times any hostile text.
fn word(known: &Known, pattern: &'static str) -> BoxedStrategy<String> {
    prop_oneof![3 => pattern, 1 => text(known)].boxed()
}

fn int64() -> BoxedStrategy<i64> {
    prop_oneof![
        3 => -3i64..300,
        1 => pick(&[i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, -1, 0, 1, 100, 101, i32::MAX as i64, 1 << 53]),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn int32() -> BoxedStrategy<i32> {
    prop_oneof![
        3 => -3i32..2000,
        1 => pick(&[i32::MIN, i32::MAX, -1, 0, 1, 1000, 1001]),
        1 => any::<i32>(),
    ]
    .boxed()
}

fn timestamp() -> BoxedStrategy<Option<Timestamp>> {
    let seconds = prop_oneof![
        2 => 1_700_000_000i64..1_900_000_000,
        1 => pick(&[i64::MIN, i64::MAX, -62_135_596_801, -62_135_596_800, 0, 253_402_300_799, 253_402_300_800]),
        1 => any::<i64>(),
    ];
    let nanos = prop_oneof![
        3 => 0i32..1_000_000_000,
        1 => pick(&[i32::MIN, -1, 999_999_999, 1_000_000_000, i32::MAX]),
    ];
    prop_oneof![
        1 => Just(None),
        3 => (seconds, nanos).prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
    ]
    .boxed()
}

fn duration() -> BoxedStrategy<Option<prost_types::Duration>> {
    let seconds = prop_oneof![
        2 => 0i64..200_000,
        1 => pick(&[i64::MIN, -1, 0, 1, 9_223_372_036_854_775, i64::MAX, 315_576_000_000, 315_576_000_001]),
        1 => any::<i64>(),
    ];
    let nanos = prop_oneof![
        3 => 0i32..1_000_000_000,
        1 => pick(&[i32::MIN, -1, 1, 999_999_999, 1_000_000_000, i32::MAX]),
    ];
    prop_oneof![
        1 => Just(None),
        4 => (seconds, nanos).prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos })),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => -1000.0f64..1000.0,
        2 => (-1000i64..1000).prop_map(|n| n as f64),
        1 => pick(&[
            0.0, -0.0, 1e18, -1e18, 1e308, -1e308, f64::MAX, f64::MIN, f64::MIN_POSITIVE,
            5e-324, 1e-7, 9_007_199_254_740_993.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY,
        ]),
        1 => any::<f64>(),
    ]
    .boxed()
}

fn pb_value(known: &Known) -> BoxedStrategy<PbValue> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        number().prop_map(Kind::NumberValue),
        number().prop_map(Kind::NumberValue),
        prop_oneof![
            5 => "[a-z ]{0,12}",
            1 => text(known),
        ]
        .prop_map(Kind::StringValue),
        any::<i32>().prop_map(Kind::NullValue),
    ]
    .prop_map(|k| PbValue { kind: Some(k) });
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(|values| PbValue {
                kind: Some(Kind::ListValue(ListValue { values }))
            }),
            proptest::collection::btree_map(key(), inner, 0..8).prop_map(|m| PbValue {
                kind: Some(Kind::StructValue(Struct {
                    fields: m.into_iter().collect()
                }))
            }),
        ]
    })
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        6 => pick(&["score", "level", "username", "email", "tags", "list", "a", "b", "nested", "amount", "points", "balance"].map(String::from)),
        1 => "[a-z]{1,8}",
        1 => any::<String>(),
        1 => Just("k\0".to_string()),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A value nested `depth` levels deep, through objects or lists.
fn nested(depth: usize, lists: bool) -> PbValue {
    let mut v = PbValue {
        kind: Some(Kind::NumberValue(1.0)),
    };
    for _ in 0..depth {
        v = if lists {
            PbValue {
                kind: Some(Kind::ListValue(ListValue { values: vec![v] })),
            }
        } else {
            PbValue {
                kind: Some(Kind::StructValue(Struct {
                    fields: [("n".to_string(), v)].into_iter().collect(),
                })),
            }
        };
    }
    v
}

fn object(fields: Vec<(String, PbValue)>) -> Struct {
    Struct {
        fields: fields.into_iter().collect(),
    }
}

fn s(v: impl Into<String>) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(v.into())),
    }
}

/// A struct for a payload, state, metadata or schema: random, or one of the shapes an attacker
/// would send.
fn pb_struct(known: &Known) -> BoxedStrategy<Option<Struct>> {
    let random = proptest::collection::btree_map(key(), pb_value(known), 0..6).prop_map(|m| {
        Some(Struct {
            fields: m.into_iter().collect(),
        })
    });
    prop_oneof![
        6 => random,
        1 => Just(None),
        1 => (prop_oneof![Just(30usize), Just(31), Just(32), Just(33), Just(40), Just(63), Just(64), Just(99), Just(150), Just(400)], any::<bool>())
            .prop_map(|(d, lists)| Some(object(vec![("deep".into(), nested(d, lists))]))),
        1 => (1usize..30_000).prop_map(|n| Some(Struct {
            fields: (0..n).map(|i| (format!("k{i}"), PbValue { kind: Some(Kind::NumberValue(i as f64)) })).collect(),
        })),
        1 => prop_oneof![Just(900_000usize), Just(1_048_000), Just(1_100_000), Just(3_000_000)]
            .prop_map(|n| Some(object(vec![("blob".into(), s("y".repeat(n)))]))),
        1 => arb_json_patch(known).prop_map(Some),
    ]
    .boxed()
}

/// `{"patch": [...]}` with operations that copy, nest and point at odd places.
fn arb_json_patch(known: &Known) -> BoxedStrategy<Struct> {
    let path = prop_oneof![
        pick(
            &[
                "",
                "/",
                "/score",
                "/tags",
                "/tags/-",
                "/tags/0",
                "/list/-1",
                "/a",
                "/a/b",
                "/~1",
                "/~0",
                "/nested/x",
                "/deep"
            ]
            .map(String::from)
        ),
        text(known),
    ];
    let op = (
        pick(&["add", "remove", "replace", "move", "copy", "test", "bogus"].map(String::from)),
        path.clone(),
        path,
        pb_value(known),
    )
        .prop_map(|(op, path, from, value)| PbValue {
            kind: Some(Kind::StructValue(object(vec![
                ("op".into(), s(op)),
                ("path".into(), s(path)),
                ("from".into(), s(from)),
                ("value".into(), value),
            ]))),
        });
    let ops = prop_oneof![
        4 => proptest::collection::vec(op, 0..12),
        // A bomb: copy the whole state into itself again and again.
        1 => (1usize..40).prop_map(|n| {
            (0..n)
                .map(|i| PbValue {
                    kind: Some(Kind::StructValue(object(vec![
                        ("op".into(), s("copy")),
                        ("from".into(), s("")),
                        ("path".into(), s(format!("/c{i}"))),
                    ]))),
                })
                .collect()
        }),
        // Nesting one `add` inside the last, deeper than any client can decode.
        1 => (50usize..250).prop_map(|n| {
            let mut path = String::new();
            (0..n)
                .map(|_| {
                    path.push_str("/n");
                    PbValue {
                        kind: Some(Kind::StructValue(object(vec![
                            ("op".into(), s("add")),
                            ("path".into(), s(path.clone())),
                            ("value".into(), PbValue { kind: Some(Kind::StructValue(Struct::default())) }),
                        ]))),
                    }
                })
                .collect()
        }),
    ];
    ops.prop_map(|values| {
        object(vec![(
            "patch".into(),
            PbValue {
                kind: Some(Kind::ListValue(ListValue { values })),
            },
        )])
    })
    .boxed()
}

/// An event type: often one the declared type declares, so guards and transforms run.
fn event_type(known: &Known) -> BoxedStrategy<String> {
    prop_oneof![
        2 => pick(&DECLARED_EVENT_TYPES.map(String::from)),
        3 => word(known, "[A-Z][A-Za-z]{0,15}"),
    ]
    .boxed()
}

fn event_input(known: &Known) -> BoxedStrategy<pb::EventInput> {
    (
        event_type(known),
        pb_struct(known),
        pb_struct(known),
        prop_oneof![3 => Just(String::new()), 1 => text(known)],
        timestamp(),
        prop_oneof![4 => 0i32..4, 1 => any::<i32>()],
    )
        .prop_map(
            |(event_type, payload, metadata, event_id, occurred_at, mode)| pb::EventInput {
                event_type,
                payload,
                metadata,
                event_id,
                occurred_at,
                mode,
            },
        )
        .boxed()
}

/// The event types `fuzz_declared` declares.
const DECLARED_EVENT_TYPES: [&str; 3] = ["Deposited", "Withdrawn", "ScoreIncreased"];

/// CEL sources: valid ones over the fuzzed types' fields, and hostile ones a declaration must
/// refuse (loops, nesting and size bombs, unknown names and functions, NUL, wrong shapes), then
/// token soup and any text.
fn cel_source(known: &Known) -> BoxedStrategy<String> {
    let valid = pick(
        &[
            r#"{"balance": state.balance + payload.amount}"#,
            r#"{"balance": state.balance - payload.amount}"#,
            r#"{"score": state.score + payload.points, "level": (state.score + payload.points) / 100 + 1}"#,
            r#"{"tags": state.tags + [payload.tag], "n": size(state.tags)}"#,
            r#"{"score": null}"#,
            r#"{"at": event.occurred_at, "v": event.version, "t": event.type}"#,
            r#"{"copy": payload, "meta": metadata}"#,
            "state.balance >= payload.amount",
            "payload.amount <= 100 && payload.amount > 0",
            "has(payload.points) ? payload.points < 1000 : true",
            "size(state.username) > 2 && state.username.startsWith('a')",
            "'x' in state.tags || state.score % 2 == 0",
            "double(payload.amount) / 3.0 < 1e308",
            "int(state.score) * 9223372036854775807 > 0",
            "payload.missing.deeper == 1",
            "string(payload) == ''",
            "true",
        ]
        .map(String::from),
    );
    let hostile = prop_oneof![
        Just("state.tags.all(x, state.tags.all(y, x != y))".to_string()),
        Just("state.list.map(x, state.list.map(y, state.list))".to_string()),
        Just("[1,2,3].exists(x, x > 1)".to_string()),
        Just("unknown > 1".to_string()),
        Just("system('rm -rf /')".to_string()),
        Just("state.score +".to_string()),
        Just("state.\0score > 1".to_string()),
        Just("1 + 2".to_string()),
        Just("state.score".to_string()),
        Just(r#"{state.k: 1}"#.to_string()),
        Just("Msg{a: 1}".to_string()),
        Just(r"b'\xff' == b''".to_string()),
        (1usize..2000).prop_map(|n| format!("{}true{}", "(".repeat(n), ")".repeat(n))),
        (1usize..2000).prop_map(|n| format!("[{}]", "[".repeat(n))),
        (1usize..600).prop_map(|n| format!("true{}", " && state.score > 1".repeat(n))),
        (1usize..40).prop_map(|n| format!("state.tags{}.size() > 0", " + state.tags".repeat(n))),
        (1usize..100).prop_map(|n| format!("'{}' == ''", "ab".repeat(n * 100))),
    ];
    let soup = proptest::collection::vec(
        pick(
            &[
                "state",
                "payload",
                "metadata",
                "event",
                ".",
                "score",
                "amount",
                "(",
                ")",
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                "+",
                "-",
                "*",
                "/",
                "%",
                "==",
                "<",
                ">=",
                "&&",
                "||",
                "!",
                "?",
                "1",
                "-9223372036854775808",
                "1u",
                "2.5",
                "'s'",
                r#""k""#,
                "true",
                "null",
                "size",
                "in",
                "has",
                "all",
                "x",
                r"b'\xff'",
            ]
            .map(String::from),
        ),
        0..30,
    )
    .prop_map(|t| t.join(" "));
    prop_oneof![4 => valid, 3 => hostile, 2 => soup, 1 => text(known)].boxed()
}

/// A payload schema: a real one (open or closed with `additionalProperties: false`), or any
/// struct, which must be a JSON Schema or be refused.
fn payload_schema(known: &Known) -> BoxedStrategy<Option<Struct>> {
    prop_oneof![
        2 => Just(None),
        2 => any::<bool>().prop_map(|closed| {
            let mut schema = json!({
                "type": "object",
                "properties": {"amount": {"type": "integer", "minimum": 1},
                               "points": {"type": "integer"},
                               "to": {"type": "object", "additionalProperties": false,
                                      "properties": {"id": {"type": "string"}}}},
            });
            if closed {
                schema["additionalProperties"] = json!(false);
            }
            Some(st(schema))
        }),
        1 => pb_struct(known),
    ]
    .boxed()
}

fn declarations(known: &Known) -> BoxedStrategy<Option<pb::EventDeclarations>> {
    let guard = (
        cel_source(known),
        prop_oneof![3 => "[a-z ]{0,30}", 1 => text(known)],
    )
        .prop_map(|(expression, message)| pb::EventGuard {
            expression,
            message,
        });
    let declared = (
        event_type(known),
        payload_schema(known),
        prop_oneof![4 => 0i32..4, 1 => any::<i32>()],
        prop_oneof![1 => Just(String::new()), 2 => cel_source(known)],
        prop_oneof![
            6 => proptest::collection::vec(guard.clone(), 0..3),
            1 => proptest::collection::vec(guard, 15..20),
        ],
    )
        .prop_map(|(event_type, payload_schema, mode, transform, guards)| {
            pb::EventTypeDeclaration {
                event_type,
                payload_schema,
                mode,
                transform,
                guards,
            }
        });
    prop_oneof![
        2 => Just(None),
        4 => (any::<bool>(), proptest::collection::vec(declared.clone(), 0..4))
            .prop_map(|(strict, event_types)| Some(pb::EventDeclarations { strict, event_types })),
        // Over the limit of 64 event types.
        1 => proptest::collection::vec(declared, 60..70)
            .prop_map(|event_types| Some(pb::EventDeclarations { strict: true, event_types })),
    ]
    .boxed()
}

/// Who a write is for: a known instance by id, or a type and an external id (which may not
/// exist yet), with or without `create_if_missing` and its initial state.
fn target(known: &Known) -> BoxedStrategy<(String, String, String, bool, Option<Struct>)> {
    let id = prop_oneof![4 => pick(&known.instance_ids), 1 => text(known)];
    let ty = prop_oneof![4 => pick(&known.type_names), 1 => text(known)];
    prop_oneof![
        4 => id.prop_map(|id| (id, String::new(), String::new(), false, None)),
        2 => (ty, word(known, "[a-z0-9-]{1,12}"), any::<bool>(), pb_struct(known))
            .prop_map(|(ty, ext, create, initial)| (String::new(), ty, ext, create, initial)),
        1 => (text(known), text(known), text(known), any::<bool>(), pb_struct(known)),
    ]
    .boxed()
}

/// A write that gets past parsing to a declared event type: its payload schema, every guard
/// and the transform run on a real state, as a dry run or for real, by id or by external id
/// (created when missing).
fn declared_write(known: &Known) -> BoxedStrategy<pb::ApplyEventRequest> {
    let amount = prop_oneof![
        4 => (-5i64..200).prop_map(|n| n as f64),
        1 => number(),
    ];
    let payload = (
        pick(&["amount", "points", "amount"].map(String::from)),
        amount,
        proptest::option::of(key()),
    )
        .prop_map(|(field, n, extra)| {
            let mut fields = vec![(
                field,
                PbValue {
                    kind: Some(Kind::NumberValue(n)),
                },
            )];
            if let Some(extra) = extra {
                fields.push((extra, s("x")));
            }
            Some(object(fields))
        });
    let by = prop_oneof![
        3 => pick(&known.declared_ids).prop_map(|id| (id, String::new(), String::new(), false)),
        1 => ("[a-z0-9-]{1,8}", any::<bool>()).prop_map(|(ext, create)| (String::new(), "fuzz_declared".to_string(), ext, create)),
    ];
    (
        by,
        pick(&DECLARED_EVENT_TYPES.map(String::from)),
        payload,
        any::<bool>(),
        proptest::option::of(0i64..6),
        prop_oneof![4 => Just(0i32), 1 => 1i32..4],
    )
        .prop_map(
            |(
                (instance_id, entity_type, external_id, create_if_missing),
                event_type,
                payload,
                dry_run,
                expected_version,
                mode,
            )| pb::ApplyEventRequest {
                instance_id,
                entity_type,
                external_id,
                create_if_missing,
                initial_state: create_if_missing.then(|| {
                    object(vec![
                        (
                            "balance".into(),
                            PbValue {
                                kind: Some(Kind::NumberValue(10.0)),
                            },
                        ),
                        (
                            "score".into(),
                            PbValue {
                                kind: Some(Kind::NumberValue(0.0)),
                            },
                        ),
                    ])
                }),
                event_type,
                payload,
                dry_run,
                expected_version,
                mode,
                ..Default::default()
            },
        )
        .boxed()
}

/// One generated request.
#[derive(Debug)]
enum Call {
    CreateEntityType(pb::CreateEntityTypeRequest),
    UpdateEntityType(pb::UpdateEntityTypeRequest),
    ListEntityTypes(pb::ListEntityTypesRequest),
    GetEntityType(pb::GetEntityTypeRequest),
    CreateInstance(pb::CreateInstanceRequest),
    ListInstances(pb::ListInstancesRequest),
    GetInstance(pb::GetInstanceRequest),
    GetCurrentState(pb::GetCurrentStateRequest),
    ApplyEvent(pb::ApplyEventRequest),
    ApplyEvents(pb::ApplyEventsRequest),
    Subscribe(pb::SubscribeRequest),
    GetHistory(pb::GetHistoryRequest),
    GetStateAtVersion(pb::GetStateAtVersionRequest),
    GetStateAtTime(pb::GetStateAtTimeRequest),
    CompareVersions(pb::CompareVersionsRequest),
    GetFieldTimeline(pb::GetFieldTimelineRequest),
    GetEventCounts(pb::GetEventCountsRequest),
    GetEventTimeSeries(pb::GetEventTimeSeriesRequest),
    GetFieldAggregation(pb::GetFieldAggregationRequest),
    GetMostActive(pb::GetMostActiveRequest),
    GetSummary(pb::GetSummaryRequest),
    Raw(&'static str, Vec<u8>),
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::CreateEntityType(_) => "CreateEntityType",
            Call::UpdateEntityType(_) => "UpdateEntityType",
            Call::ListEntityTypes(_) => "ListEntityTypes",
            Call::GetEntityType(_) => "GetEntityType",
            Call::CreateInstance(_) => "CreateInstance",
            Call::ListInstances(_) => "ListInstances",
            Call::GetInstance(_) => "GetInstance",
            Call::GetCurrentState(_) => "GetCurrentState",
            Call::ApplyEvent(_) => "ApplyEvent",
            Call::ApplyEvents(_) => "ApplyEvents",
            Call::Subscribe(_) => "Subscribe",
            Call::GetHistory(_) => "GetHistory",
            Call::GetStateAtVersion(_) => "GetStateAtVersion",
            Call::GetStateAtTime(_) => "GetStateAtTime",
            Call::CompareVersions(_) => "CompareVersions",
            Call::GetFieldTimeline(_) => "GetFieldTimeline",
            Call::GetEventCounts(_) => "GetEventCounts",
            Call::GetEventTimeSeries(_) => "GetEventTimeSeries",
            Call::GetFieldAggregation(_) => "GetFieldAggregation",
            Call::GetMostActive(_) => "GetMostActive",
            Call::GetSummary(_) => "GetSummary",
            Call::Raw(..) => "raw bytes",
        }
    }

    /// A short description for failure messages (requests can be megabytes).
    fn describe(&self) -> String {
        let full = format!("{self:?}");
        if full.len() > 2000 {
            let short: String = full.chars().take(2000).collect();
            format!("{short}… ({} bytes of Debug)", full.len())
        } else {
            full
        }
    }
}

fn raw_body(known: &Known) -> BoxedStrategy<Vec<u8>> {
    let instance = pick(&known.instance_ids);
    prop_oneof![
        // Random bytes.
        proptest::collection::vec(any::<u8>(), 0..256),
        // A valid ApplyEvent with a payload nested past any decoder's recursion limit.
        (
            instance.clone(),
            prop_oneof![Just(101usize), Just(200), Just(1000)],
            any::<bool>()
        )
            .prop_map(|(id, d, lists)| {
                pb::ApplyEventRequest {
                    instance_id: id,
                    event_type: "Deep".into(),
                    payload: Some(object(vec![("deep".into(), nested(d, lists))])),
                    ..Default::default()
                }
                .encode_to_vec()
            }),
        // A valid message cut short.
        (instance, 1usize..40).prop_map(|(id, cut)| {
            let mut b = pb::ApplyEventRequest {
                instance_id: id,
                event_type: "Cut".into(),
                payload: Some(object(vec![(
                    "score".into(),
                    PbValue {
                        kind: Some(Kind::NumberValue(1.0)),
                    },
                )])),
                ..Default::default()
            }
            .encode_to_vec();
            b.truncate(b.len().saturating_sub(cut));
            b
        }),
        // A length-delimited field claiming gigabytes; invalid UTF-8 in a string field.
        Just(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41]),
        Just(vec![0x0a, 0x03, 0xff, 0xfe, 0x00]),
        // Unknown fields and wire types.
        Just(vec![0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x0b, 0x0c]),
    ]
    .boxed()
}

fn call(known: &Known) -> BoxedStrategy<Call> {
    let k = known.clone();
    let id = prop_oneof![4 => pick(&known.instance_ids), 1 => text(known)].boxed();
    let ty = prop_oneof![4 => pick(&known.type_names), 1 => text(known)].boxed();
    let opt64 = proptest::option::of(int64()).boxed();
    prop_oneof![
        1 => (word(&k, "[a-z][a-z0-9_]{0,20}"), text(&k), pb_struct(&k), declarations(&k)).prop_map(|(name, description, schema, declarations)| Call::CreateEntityType(pb::CreateEntityTypeRequest { name, description, schema, declarations })),
        // Updates keep the schema mostly (so later writes still get past it) and try new
        // declarations, mostly as dry runs.
        1 => (ty.clone(), prop_oneof![3 => Just(None), 1 => pb_struct(&k)], declarations(&k), any::<bool>(), proptest::option::of(int64()), proptest::option::of(text(&k)))
            .prop_map(|(entity_type, schema, declarations, dry_run, expected_schema_version, description)| Call::UpdateEntityType(pb::UpdateEntityTypeRequest {
                entity_type,
                description,
                schema,
                expected_schema_version,
                dry_run,
                allow_invalid_existing: false,
                declarations,
            })),
        1 => (int32(), text(&k)).prop_map(|(page_size, page_token)| Call::ListEntityTypes(pb::ListEntityTypesRequest { page_size, page_token })),
        1 => ty.clone().prop_map(|entity_type| Call::GetEntityType(pb::GetEntityTypeRequest { entity_type })),
        1 => (ty.clone(), word(&k, "[a-z0-9-]{1,20}"), pb_struct(&k), pb_struct(&k)).prop_map(|(entity_type, external_id, initial_state, metadata)| Call::CreateInstance(pb::CreateInstanceRequest { entity_type, external_id, initial_state, metadata })),
        1 => (ty.clone(), int32(), text(&k)).prop_map(|(entity_type, page_size, page_token)| Call::ListInstances(pb::ListInstancesRequest { include_archived: false, entity_type, page_size, page_token, ..Default::default() })),
        1 => id.clone().prop_map(|instance_id| Call::GetInstance(pb::GetInstanceRequest { instance_id })),
        1 => (ty.clone(), text(&k)).prop_map(|(entity_type, external_id)| Call::GetCurrentState(pb::GetCurrentStateRequest { entity_type, external_id })),
        4 => (target(&k), event_input(&k), opt64.clone(), any::<bool>()).prop_map(|((instance_id, entity_type, external_id, create_if_missing, initial_state), e, expected_version, dry_run)| Call::ApplyEvent(pb::ApplyEventRequest {
            dry_run,
            instance_id,
            event_type: e.event_type,
            payload: e.payload,
            metadata: e.metadata,
            expected_version,
            event_id: e.event_id,
            occurred_at: e.occurred_at,
            mode: e.mode,
            entity_type,
            external_id,
            create_if_missing,
            initial_state,
        })),
        3 => declared_write(&k).prop_map(Call::ApplyEvent),
        2 => (target(&k), opt64.clone(), prop_oneof![4 => proptest::collection::vec(event_input(&k), 0..6), 1 => (1000usize..1100).prop_map(|n| vec![pb::EventInput { event_type: "Bulk".into(), ..Default::default() }; n])], any::<bool>())
            .prop_map(|((instance_id, entity_type, external_id, create_if_missing, initial_state), expected_version, events, dry_run)| Call::ApplyEvents(pb::ApplyEventsRequest { instance_id, expected_version, events, entity_type, external_id, create_if_missing, initial_state, dry_run })),
        1 => (ty.clone(), id.clone(), proptest::collection::vec(text(&k), 0..3), opt64.clone()).prop_map(|(entity_type, instance_id, event_types, from_version)| Call::Subscribe(pb::SubscribeRequest { entity_type, instance_id, event_types, from_version, ..Default::default() })),
        2 => (id.clone(), int32(), text(&k), opt64.clone(), opt64.clone(), timestamp(), timestamp(), proptest::collection::vec(text(&k), 0..3), any::<bool>())
            .prop_map(|(instance_id, page_size, page_token, from_version, to_version, start_time, end_time, event_types, descending)| Call::GetHistory(pb::GetHistoryRequest { instance_id, page_size, page_token, from_version, to_version, start_time, end_time, event_types, descending })),
        1 => (id.clone(), int64()).prop_map(|(instance_id, version)| Call::GetStateAtVersion(pb::GetStateAtVersionRequest { instance_id, version })),
        1 => (id.clone(), timestamp()).prop_map(|(instance_id, timestamp)| Call::GetStateAtTime(pb::GetStateAtTimeRequest { instance_id, timestamp, ..Default::default() })),
        1 => (id.clone(), int64(), int64()).prop_map(|(instance_id, version1, version2)| Call::CompareVersions(pb::CompareVersionsRequest { instance_id, version1, version2 })),
        1 => (id.clone(), text(&k), opt64.clone(), opt64.clone(), timestamp(), timestamp()).prop_map(|(instance_id, field, from_version, to_version, start_time, end_time)| Call::GetFieldTimeline(pb::GetFieldTimelineRequest { instance_id, field, from_version, to_version, start_time, end_time, ..Default::default() })),
        1 => (ty.clone(), timestamp(), timestamp()).prop_map(|(entity_type, start_time, end_time)| Call::GetEventCounts(pb::GetEventCountsRequest { entity_type, start_time, end_time })),
        2 => (ty.clone(), duration(), timestamp(), timestamp(), proptest::option::of(text(&k))).prop_map(|(entity_type, interval, start_time, end_time, event_type)| Call::GetEventTimeSeries(pb::GetEventTimeSeriesRequest { entity_type, interval, start_time, end_time, event_type })),
        1 => (ty.clone(), text(&k), timestamp()).prop_map(|(entity_type, field, as_of)| Call::GetFieldAggregation(pb::GetFieldAggregationRequest { entity_type, field, as_of })),
        1 => (ty.clone(), int32(), timestamp(), timestamp()).prop_map(|(entity_type, limit, start_time, end_time)| Call::GetMostActive(pb::GetMostActiveRequest { entity_type, limit, start_time, end_time })),
        1 => ty.prop_map(|entity_type| Call::GetSummary(pb::GetSummaryRequest { entity_type })),
        2 => (pick(UNARY_METHODS), raw_body(&k)).prop_map(|(path, body)| Call::Raw(path, body)),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Running.

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(20));
    request
}

async fn run_call(
    clients: &mut Clients,
    analytics: &mut pb::analytics_service_client::AnalyticsServiceClient<tonic::transport::Channel>,
    channel: &tonic::transport::Channel,
    call: Call,
) -> Result<(), Status> {
    let c = clients;
    match call {
        Call::CreateEntityType(r) => c.types.create_entity_type(with_timeout(r)).await.map(drop),
        Call::UpdateEntityType(r) => c.types.update_entity_type(with_timeout(r)).await.map(drop),
        Call::ListEntityTypes(r) => c.types.list_entity_types(with_timeout(r)).await.map(drop),
        Call::GetEntityType(r) => c.types.get_entity_type(with_timeout(r)).await.map(drop),
        Call::CreateInstance(r) => c.instances.create_instance(with_timeout(r)).await.map(drop),
        Call::ListInstances(r) => c.instances.list_instances(with_timeout(r)).await.map(drop),
        Call::GetInstance(r) => c.instances.get_instance(with_timeout(r)).await.map(drop),
        Call::GetCurrentState(r) => c
            .instances
            .get_current_state(with_timeout(r))
            .await
            .map(drop),
        Call::ApplyEvent(r) => c.events.apply_event(with_timeout(r)).await.map(drop),
        Call::ApplyEvents(r) => c.events.apply_events(with_timeout(r)).await.map(drop),
        Call::Subscribe(r) => {
            let mut stream = c.events.subscribe(with_timeout(r)).await?.into_inner();
            // Read what comes within a moment, then hang up.
            let until = Instant::now() + Duration::from_millis(100);
            for _ in 0..50 {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(status)) => return Err(status),
                }
            }
            Ok(())
        }
        Call::GetHistory(r) => c.queries.get_history(with_timeout(r)).await.map(drop),
        Call::GetStateAtVersion(r) => c
            .queries
            .get_state_at_version(with_timeout(r))
            .await
            .map(drop),
        Call::GetStateAtTime(r) => c.queries.get_state_at_time(with_timeout(r)).await.map(drop),
        Call::CompareVersions(r) => c.queries.compare_versions(with_timeout(r)).await.map(drop),
        Call::GetFieldTimeline(r) => c
            .queries
            .get_field_timeline(with_timeout(r))
            .await
            .map(drop),
        Call::GetEventCounts(r) => analytics.get_event_counts(with_timeout(r)).await.map(drop),
        Call::GetEventTimeSeries(r) => analytics
            .get_event_time_series(with_timeout(r))
            .await
            .map(drop),
        Call::GetFieldAggregation(r) => analytics
            .get_field_aggregation(with_timeout(r))
            .await
            .map(drop),
        Call::GetMostActive(r) => analytics.get_most_active(with_timeout(r)).await.map(drop),
        Call::GetSummary(r) => analytics.get_summary(with_timeout(r)).await.map(drop),
        Call::Raw(path, body) => raw_call(channel.clone(), path, body).await.map(drop),
    }
}

/// Types and instances for the generators to aim at: a free-form type and a strict one.
async fn set_up(c: &mut Clients) -> Known {
    let mut known = Known {
        strings: vec![],
        instance_ids: vec![],
        type_names: vec![],
        declared_ids: vec![],
    };
    // A type with declared event types, so writes reach payload schemas, guards and transforms.
    let amount = || {
        Some(st(json!({
            "type": "object", "required": ["amount"], "additionalProperties": false,
            "properties": {"amount": {"type": "integer", "minimum": 1}}
        })))
    };
    let declared = pb::EventDeclarations {
        strict: false,
        event_types: vec![
            pb::EventTypeDeclaration {
                event_type: "Deposited".into(),
                payload_schema: amount(),
                transform: r#"{"balance": state.balance + payload.amount}"#.into(),
                ..Default::default()
            },
            pb::EventTypeDeclaration {
                event_type: "Withdrawn".into(),
                payload_schema: amount(),
                transform: r#"{"balance": state.balance - payload.amount}"#.into(),
                guards: vec![pb::EventGuard {
                    expression: "state.balance >= payload.amount".into(),
                    message: "insufficient funds".into(),
                }],
                ..Default::default()
            },
            pb::EventTypeDeclaration {
                event_type: "ScoreIncreased".into(),
                transform: r#"{"score": state.score + payload.points, "level": (state.score + payload.points) / 100 + 1}"#.into(),
                guards: vec![pb::EventGuard {
                    expression: "payload.points <= 1000".into(),
                    message: "at most 1000 points".into(),
                }],
                ..Default::default()
            },
        ],
    };
    for (name, schema, declarations) in [
        ("fuzz_free", json!({"type": "object"}), None),
        ("fuzz_strict", player_schema(), None),
        ("fuzz_declared", json!({"type": "object"}), Some(declared)),
    ] {
        let t = c
            .types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations,
                name: name.into(),
                description: "fuzzed".into(),
                schema: Some(st(schema)),
            })
            .await
            .unwrap()
            .into_inner()
            .entity_type
            .unwrap();
        known.type_names.push(t.name.clone());
        known.strings.extend([t.name.clone(), t.id.clone()]);
        for n in 0..3 {
            let external_id = format!("{name}-{n}");
            let i = c
                .instances
                .create_instance(pb::CreateInstanceRequest {
                    entity_type: t.name.clone(),
                    external_id: external_id.clone(),
                    initial_state: Some(st(json!({
                        "username": "alice", "email": "a@example.com", "score": 1, "level": 1,
                        "balance": 100,
                        "achievements": [], "tags": ["x"], "list": [1, 2, 3], "nested": {"x": 1}
                    }))),
                    metadata: None,
                })
                .await
                .unwrap()
                .into_inner()
                .instance
                .unwrap();
            known.instance_ids.push(i.id.clone());
            if name == "fuzz_declared" {
                known.declared_ids.push(i.id.clone());
            }
            known.strings.extend([i.id, external_id]);
        }
    }
    known.strings.extend(
        [
            "score",
            "level",
            "/score",
            "tags",
            "nested.x",
            "ScoreIncreased",
            "Deposited",
            "Withdrawn",
        ]
        .map(String::from),
    );
    known
}

/// Clients of a server with no client-side size limits, so the server's own limits are what
/// the requests meet: the service clients, the analytics client and the channel itself.
async fn unlimited_clients(
    server: &mut Binary,
    addr: &str,
) -> (
    Clients,
    pb::analytics_service_client::AnalyticsServiceClient<tonic::transport::Channel>,
    tonic::transport::Channel,
) {
    let c = server.wait_ready(addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let max = 64 * 1024 * 1024;
    let c = Clients {
        types: c
            .types
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        instances: c
            .instances
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        events: c
            .events
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        queries: c
            .queries
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    };
    let analytics = pb::analytics_service_client::AnalyticsServiceClient::new(channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    (c, analytics, channel)
}

async fn fuzz(mut server: Binary, addr: &str, backend: &str) {
    let (mut c, mut analytics, channel) = unlimited_clients(&mut server, addr).await;
    let known = set_up(&mut c).await;

    let seed = seed();
    let n = cases();
    println!("{backend}: {n} cases, FUZZ_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PropConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = call(&known);
    let mut codes: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let call = strategy.new_tree(&mut runner).unwrap().current();
        let name = call.name();
        let description = call.describe();
        let result = run_call(&mut c, &mut analytics, &channel, call).await;
        let (code, message) = match &result {
            Ok(()) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_string()),
        };
        *codes.entry((name, format!("{code:?}"))).or_default() += 1;
        if !is_client_code(code) {
            failures.push(format!(
                "case {i}: {name} -> {code:?} {message:?}\n  request: {description}"
            ));
        } else if message.len() > 1024 {
            failures.push(format!(
                "case {i}: {name} -> {code:?} with a {} byte message\n  request: {description}",
                message.len()
            ));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{backend}: {n} cases in {:.1} s ({:.0} cases/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    for ((name, code), count) in &codes {
        println!("  {name:<20} {code:<18} {count}");
    }

    // Still healthy and writable.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    wait_for_health(
        &mut health,
        "",
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    // A fresh type and instance: the run may have erased the instances it knew (a raw
    // ApplyEvent body is also a valid EraseInstance request) and declared strict event types
    // or new schemas on the types.
    c.create_type("fuzz_after", json!({"type": "object"})).await;
    let id = c
        .create_instance("fuzz_after", "after-fuzz", json!({}))
        .await
        .id;
    c.events
        .apply_event(pb::ApplyEventRequest {
            instance_id: id,
            event_type: "AfterFuzz".into(),
            payload: Some(st(json!({"after": "fuzz"}))),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| {
            panic!("{backend}: the server no longer takes a write after the run: {s:?}")
        });
    let peak = server.peak_rss_kib();
    println!("{backend}: peak RSS {} MiB", peak.unwrap_or(0) / 1024);
    let logs = server.logs();
    assert!(
        !logs.contains("panicked"),
        "{backend}: the server panicked (FUZZ_SEED={seed}):\n{logs}"
    );
    assert!(
        failures.is_empty(),
        "{backend}: {} of {n} cases got a code a client should never get (FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    if let Some(peak) = peak {
        assert!(
            peak < MAX_PEAK_RSS_KIB,
            "{backend}: peak RSS {peak} KiB is over {MAX_PEAK_RSS_KIB} KiB (FUZZ_SEED={seed})"
        );
    }
    server.terminate();
}

fn spawn(dir: &Path, name: &str, env: &[(&str, &str)]) -> (Binary, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = env.to_vec();
    env.push(("GRPC_ADDR", &addr));
    env.push(("RUST_LOG", "info"));
    let server = Binary::spawn(dir, dir, name, &env);
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_get_client_codes_on_postgres_with_redis_and_nats() {
    let db = TestDb::create().await;
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (server, addr) = spawn(
        dir.path(),
        "postgres",
        &[
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", &redis),
            ("NATS_URL", &nats.url()),
        ],
    );
    fuzz(server, &addr, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_get_client_codes_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.display().to_string();
    let (server, addr) = spawn(dir.path(), "embedded", &[("DATA_DIR", &data)]);
    fuzz(server, &addr, "embedded").await;
}

/// The hostile requests of the issue that made the server build the most, one after another
/// against the real binary, with its peak resident memory printed after each: the figure the
/// limits are for. Each gets its client code and the server stays healthy and writable.
async fn worst_cases(mut server: Binary, addr: &str, backend: &str) {
    let (mut c, mut analytics, channel) = unlimited_clients(&mut server, addr).await;
    let mut peaks = Vec::new();
    let mut step = |server: &Binary, what: &str, result: Result<(), Status>, want: Code| {
        let code = result.err().map_or(Code::Ok, |s| s.code());
        assert_eq!(code, want, "{backend}: {what}");
        let peak = server.peak_rss_kib().unwrap_or(0);
        println!(
            "{backend}: {what:<60} {code:?}, peak RSS so far {} MiB",
            peak / 1024
        );
        peaks.push(peak);
    };

    c.create_type("big", json!({"type": "object"})).await;
    let big = c
        .create_instance("big", "big-1", json!({"blob": "x".repeat(900_000), "n": 0}))
        .await;
    let id = big.id.clone();

    let thousand = pb::ApplyEventsRequest {
        dry_run: false,
        instance_id: id.clone(),
        expected_version: None,
        events: (0..1000)
            .map(|i| pb::EventInput {
                event_type: "Empty".into(),
                payload: Some(st(json!({}))),
                event_id: format!("empty-{i}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let r = c.events.apply_events(thousand.clone()).await.map(drop);
    step(
        &server,
        "ApplyEvents: 1000 {} events on a 900 KB state",
        r,
        Code::Ok,
    );
    let r = c.events.apply_events(thousand).await.map(drop);
    step(
        &server,
        "the same batch again (a faithful retry)",
        r,
        Code::Ok,
    );

    let r = c
        .events
        .apply_event(json_patch(&id, "Bomb", copy_bomb(20)))
        .await
        .map(drop);
    step(
        &server,
        "JSON Patch: 20 copies of the whole state",
        r,
        Code::ResourceExhausted,
    );

    let r = c
        .events
        .apply_event(json_patch(&id, "Deep", nesting_bomb(200)))
        .await
        .map(drop);
    step(
        &server,
        "JSON Patch: add nested 200 levels deep",
        r,
        Code::InvalidArgument,
    );

    let r = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: id.clone(),
            event_type: "Huge".into(),
            payload: Some(st(json!({"blob": "y".repeat(8 * 1024 * 1024)}))),
            ..Default::default()
        })
        .await
        .map(drop);
    step(&server, "an 8 MB request", r, Code::ResourceExhausted);

    let growing = pb::ApplyEventsRequest {
        dry_run: false,
        instance_id: id.clone(),
        expected_version: None,
        events: (0..5)
            .map(|i| pb::EventInput {
                event_type: "Grow".into(),
                payload: Some(st(json!({format!("blob{i}"): "z".repeat(1_000_000)}))),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let r = c.events.apply_events(growing).await.map(drop);
    step(
        &server,
        "ApplyEvents: five 1 MB merges (state past 4 MiB)",
        r,
        Code::ResourceExhausted,
    );

    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = c
            .queries
            .get_history(pb::GetHistoryRequest {
                instance_id: id.clone(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    step(
        &server,
        &format!("GetHistory: every page ({pages})"),
        Ok(()),
        Code::Ok,
    );

    let r = async {
        let mut stream = c
            .events
            .subscribe(pb::SubscribeRequest {
                instance_id: id.clone(),
                from_version: Some(1),
                ..Default::default()
            })
            .await?
            .into_inner();
        for _ in 0..1001 {
            stream.message().await?;
        }
        Ok(())
    }
    .await;
    step(
        &server,
        "Subscribe: replay 1001 events of a 900 KB state",
        r,
        Code::Ok,
    );

    let r = analytics
        .get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: "big".into(),
            field: "blob".into(),
            // Now to the nanosecond: cut to the second, it fell before the instance's creation
            // whenever both happened in the same second (NOT_FOUND: no state had the field).
            as_of: Some(std::time::SystemTime::now().into()),
        })
        .await
        .map(drop);
    step(&server, "GetFieldAggregation as_of now", r, Code::Ok);

    let r = analytics
        .get_event_time_series(pb::GetEventTimeSeriesRequest {
            entity_type: "big".into(),
            interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            start_time: Some(Timestamp {
                seconds: -62_135_596_800,
                nanos: 0,
            }),
            end_time: Some(Timestamp {
                seconds: 253_402_300_799,
                nanos: 0,
            }),
            event_type: None,
        })
        .await
        .map(drop);
    let code = r.as_ref().err().map_or(Code::Ok, |s| s.code());
    assert!(
        matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
        "{backend}: a 1 s interval over 10,000 years: {r:?}"
    );
    step(
        &server,
        "GetEventTimeSeries: 1 s buckets over 10,000 years",
        r,
        code,
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    wait_for_health(
        &mut health,
        "",
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    c.apply(&id, "After", json!({"n": 1}))
        .await
        .expect("still writable");
    let peak = peaks.into_iter().max().unwrap_or(0);
    println!("{backend}: worst hostile case peak RSS {} MiB", peak / 1024);
    assert!(
        !server.logs().contains("panicked"),
        "{backend}: the server panicked:\n{}",
        server.logs()
    );
    if peak > 0 {
        assert!(
            peak < MAX_PEAK_RSS_KIB,
            "{backend}: peak RSS {peak} KiB is over {MAX_PEAK_RSS_KIB} KiB"
        );
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worst_hostile_requests_stay_under_512_mib_on_postgres() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn(dir.path(), "postgres-worst", &[("DATABASE_URL", &db.url)]);
    worst_cases(server, &addr, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worst_hostile_requests_stay_under_512_mib_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let (server, addr) = spawn(dir.path(), "embedded-worst", &[("DATA_DIR", &data)]);
    worst_cases(server, &addr, "embedded").await;
}
