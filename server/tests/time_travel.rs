//! Time travel over gRPC against a real server and PostgreSQL: GetHistory, GetStateAtVersion,
//! GetStateAtTime, CompareVersions and GetFieldTimeline.
//!
//! One property test replays random histories (merge patches, replacements and JSON patches over
//! a small key set, in single events and in batches) against servers with random snapshot
//! intervals and checks every answer against a naive fold computed here. The other tests pin
//! concrete answers on a hand-written history, and every kind of bad input with its code and
//! message.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{Backend, Clients, Store, TestDb, TestServer, for_each_backend, js, json, st};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{
    Config as PropConfig, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};
use prost_types::Timestamp;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_server::domain::{ApplyMode, State, apply_event};
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn obj(v: Value) -> State {
    v.as_object().expect("an object").clone()
}

/// A protobuf Value as JSON.
fn jv(v: &prost_types::Value) -> Value {
    let s = prost_types::Struct {
        fields: [("v".to_string(), v.clone())].into_iter().collect(),
    };
    js(&Some(s))["v"].clone()
}

fn to_dt(t: &Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("a valid timestamp")
}

fn to_ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// `t` moved by `nanos` nanoseconds.
fn shift(t: &Timestamp, nanos: i64) -> Timestamp {
    to_ts(to_dt(t) + chrono::Duration::nanoseconds(nanos))
}

fn pb_mode(mode: ApplyMode) -> pb::ApplyMode {
    match mode {
        // A transformed event's change is a merge patch (the test generates none).
        ApplyMode::MergePatch | ApplyMode::Transformed => pb::ApplyMode::MergePatch,
        ApplyMode::Replace => pb::ApplyMode::Replace,
        ApplyMode::JsonPatch => pb::ApplyMode::JsonPatch,
    }
}

/// The value at an RFC 6901 pointer, looked up by serde_json (independently of the server's own
/// lookup).
fn at(state: &State, pointer: &str) -> Option<Value> {
    Value::Object(state.clone()).pointer(pointer).cloned()
}

/// Appends one escaped reference token.
fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

/// Asserts an error with `code` whose message contains every needle and, for INVALID_ARGUMENT
/// with a `field`, a BadRequest field violation naming it.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
    field: Option<&str>,
    needles: &[&str],
) -> Status {
    let status = match result {
        Ok(r) => panic!("expected {code:?}, got {:?}", r.into_inner()),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "message {:?} lacks {needle:?}",
            status.message()
        );
    }
    if let Some(field) = field {
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
        assert!(
            details.field_violations.iter().any(|v| v.field == field),
            "no violation for {field:?} in {:?}",
            details.field_violations
        );
    }
    status
}

/// INVALID_ARGUMENT naming `field` (in the message and as a BadRequest field violation), with
/// every needle in the message.
#[track_caller]
fn invalid_argument<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    field: &str,
    needles: &[&str],
) -> Status {
    expect_err(result, Code::InvalidArgument, Some(field), needles)
}

/// NOT_FOUND with every needle in the message.
#[track_caller]
fn not_found<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, needles: &[&str]) {
    expect_err(result, Code::NotFound, None, needles);
}

fn history_req(id: &str) -> pb::GetHistoryRequest {
    pb::GetHistoryRequest {
        instance_id: id.into(),
        ..Default::default()
    }
}

fn version_req(id: &str, version: i64) -> pb::GetStateAtVersionRequest {
    pb::GetStateAtVersionRequest {
        instance_id: id.into(),
        version,
    }
}

fn compare_req(id: &str, version1: i64, version2: i64) -> pb::CompareVersionsRequest {
    pb::CompareVersionsRequest {
        instance_id: id.into(),
        version1,
        version2,
    }
}

fn time_req(id: &str, timestamp: Option<Timestamp>) -> pb::GetStateAtTimeRequest {
    pb::GetStateAtTimeRequest {
        instance_id: id.into(),
        timestamp,
        ..Default::default()
    }
}

fn timeline_req(id: &str, field: &str) -> pb::GetFieldTimelineRequest {
    pb::GetFieldTimelineRequest {
        instance_id: id.into(),
        field: field.into(),
        ..Default::default()
    }
}

/// Every page of a history request, followed through next_page_token; returns the pages.
async fn all_pages(c: &mut Clients, mut req: pb::GetHistoryRequest) -> Vec<Vec<pb::Event>> {
    let mut pages = Vec::new();
    loop {
        let page = c
            .queries
            .get_history(req.clone())
            .await
            .expect("history page")
            .into_inner();
        pages.push(page.events);
        assert!(pages.len() <= 1000, "paging does not end");
        if page.next_page_token.is_empty() {
            return pages;
        }
        req.page_token = page.next_page_token;
    }
}

fn versions(events: &[pb::Event]) -> Vec<i64> {
    events.iter().map(|e| e.version).collect()
}

async fn state_at_version(
    c: &mut Clients,
    id: &str,
    version: i64,
) -> pb::GetStateAtVersionResponse {
    c.queries
        .get_state_at_version(version_req(id, version))
        .await
        .unwrap_or_else(|e| panic!("state at version {version}: {e:?}"))
        .into_inner()
}

async fn state_at_time(
    c: &mut Clients,
    id: &str,
    at: Timestamp,
) -> Result<pb::GetStateAtTimeResponse, Status> {
    c.queries
        .get_state_at_time(time_req(id, Some(at)))
        .await
        .map(|r| r.into_inner())
}

async fn compare(c: &mut Clients, id: &str, v1: i64, v2: i64) -> pb::CompareVersionsResponse {
    c.queries
        .compare_versions(compare_req(id, v1, v2))
        .await
        .unwrap_or_else(|e| panic!("compare {v1} {v2}: {e:?}"))
        .into_inner()
}

/// A timeline as (version, event_type, value) triples.
async fn timeline(
    c: &mut Clients,
    req: pb::GetFieldTimelineRequest,
) -> Vec<(i64, String, Option<Value>)> {
    c.queries
        .get_field_timeline(req)
        .await
        .expect("field timeline")
        .into_inner()
        .points
        .into_iter()
        .map(|p| (p.version, p.event_type, p.value.as_ref().map(jv)))
        .collect()
}

/// Applies the RFC 6902 operations of a CompareVersions answer to `from`.
fn apply_patch(from: &Value, ops: &[prost_types::Struct]) -> Result<Value, String> {
    let ops: Vec<Value> = ops.iter().map(|op| js(&Some(op.clone()))).collect();
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.clone())).map_err(|e| format!("{e}: {ops:?}"))?;
    let mut doc = from.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| format!("{e}: {ops:?}"))?;
    Ok(doc)
}

// ---------------------------------------------------------------------------------------------
// Property test: random histories against a naive fold
// ---------------------------------------------------------------------------------------------

/// Few keys, so events often touch the same fields; `/` and `~` exercise pointer escaping.
const KEYS: &[&str] = &["a", "b", "c", "stats", "x/y", "t~1"];
/// Tokens of the tracked fields: keys and array indices.
const FIELD_TOKENS: &[&str] = &["a", "b", "c", "stats", "x/y", "t~1", "0", "1"];
const EVENT_TYPES: &[&str] = &["Alpha", "Beta", "Gamma"];

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

/// Any JSON value up to three levels deep. Numbers are small integers or floats that survive
/// protobuf's doubles exactly.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        prop::sample::select(vec![0.5, -1.5, 2.25, 0.1]).prop_map(Value::from),
        "[ab]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_state() -> impl Strategy<Value = State> {
    prop::collection::btree_map(arb_key(), arb_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// A merge patch: top-level nulls (removals) are frequent; nested ones come from [`arb_value`].
fn arb_merge_patch() -> impl Strategy<Value = State> {
    prop::collection::btree_map(
        arb_key(),
        prop_oneof![2 => Just(Value::Null), 3 => arb_value()],
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// One JSON Patch operation, resolved against the state it will apply to (see [`resolve_op`]).
#[derive(Debug, Clone)]
struct OpSeed {
    kind: u8,
    at: Index,
    to: Index,
    key: String,
    value: Value,
}

#[derive(Debug, Clone)]
enum Seed {
    Merge(State),
    Replace(State),
    Patch(Vec<OpSeed>),
}

#[derive(Debug, Clone)]
struct EventSeed {
    event_type: &'static str,
    seed: Seed,
    /// Sent in one ApplyEvents call with the previous event.
    batch_with_previous: bool,
}

#[derive(Debug, Clone)]
struct FieldSeed {
    tokens: Vec<&'static str>,
    /// Asked as `a.b` rather than `/a/b`.
    dotted: bool,
}

#[derive(Debug, Clone)]
struct Case {
    snapshot_interval: i64,
    initial: State,
    events: Vec<EventSeed>,
    pairs: Vec<(Index, Index)>,
    fields: Vec<FieldSeed>,
    range: (Index, Index),
}

fn arb_op() -> impl Strategy<Value = OpSeed> {
    (
        0u8..6,
        any::<Index>(),
        any::<Index>(),
        arb_key(),
        arb_value(),
    )
        .prop_map(|(kind, at, to, key, value)| OpSeed {
            kind,
            at,
            to,
            key,
            value,
        })
}

fn arb_event() -> impl Strategy<Value = EventSeed> {
    let seed = prop_oneof![
        5 => arb_merge_patch().prop_map(Seed::Merge),
        1 => arb_state().prop_map(Seed::Replace),
        3 => prop::collection::vec(arb_op(), 1..4).prop_map(Seed::Patch),
    ];
    (
        prop::sample::select(EVENT_TYPES),
        seed,
        prop::bool::weighted(0.3),
    )
        .prop_map(|(event_type, seed, batch_with_previous)| EventSeed {
            event_type,
            seed,
            batch_with_previous,
        })
}

fn arb_field() -> impl Strategy<Value = FieldSeed> {
    (
        prop::sample::select(KEYS),
        prop::collection::vec(prop::sample::select(FIELD_TOKENS), 0..3),
        any::<bool>(),
    )
        .prop_map(|(first, rest, dotted)| {
            let mut tokens = vec![first];
            tokens.extend(rest);
            FieldSeed { tokens, dotted }
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        1i64..=10,
        arb_state(),
        prop::collection::vec(arb_event(), 0..60),
        prop::collection::vec(any::<(Index, Index)>(), 4),
        prop::collection::vec(arb_field(), 4),
        any::<(Index, Index)>(),
    )
        .prop_map(
            |(snapshot_interval, initial, events, pairs, fields, range)| Case {
                snapshot_interval,
                initial,
                events,
                pairs,
                fields,
                range,
            },
        )
}

/// Every pointer inside `v` below `prefix` (not `prefix` itself).
fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = prefix.to_string();
                push_token(&mut p, k);
                out.push(p.clone());
                paths(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                paths(child, &p, out);
            }
        }
        _ => {}
    }
}

/// Every object or array in `doc` (the root included), with its pointer.
fn containers(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    if v.is_object() || v.is_array() {
        out.push((prefix.to_string(), v.clone()));
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = prefix.to_string();
                push_token(&mut p, k);
                containers(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                containers(child, &format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A location where `add` can put a value: a key of an object or a position in an array.
fn add_location(doc: &Value, pick: &Index, key: &str) -> String {
    let mut all = Vec::new();
    containers(doc, "", &mut all);
    let (pointer, container) = &all[pick.index(all.len())];
    match container {
        Value::Array(a) => {
            let i = pick.index(a.len() + 2);
            if i > a.len() {
                format!("{pointer}/-")
            } else {
                format!("{pointer}/{i}")
            }
        }
        _ => {
            let mut p = pointer.clone();
            push_token(&mut p, key);
            p
        }
    }
}

/// Turns an operation seed into a valid RFC 6902 operation on `doc`.
fn resolve_op(doc: &Value, seed: &OpSeed) -> Value {
    let mut existing = Vec::new();
    paths(doc, "", &mut existing);
    let fallback = || {
        let mut p = String::new();
        push_token(&mut p, &seed.key);
        json!({"op": "add", "path": p, "value": seed.value})
    };
    if existing.is_empty() && seed.kind != 0 {
        return fallback();
    }
    let chosen = || existing[seed.at.index(existing.len())].clone();
    let op = match seed.kind {
        0 => {
            json!({"op": "add", "path": add_location(doc, &seed.to, &seed.key), "value": seed.value})
        }
        1 => json!({"op": "remove", "path": chosen()}),
        2 => json!({"op": "replace", "path": chosen(), "value": seed.value}),
        3 => {
            json!({"op": "move", "from": chosen(), "path": add_location(doc, &seed.to, &seed.key)})
        }
        4 => {
            json!({"op": "copy", "from": chosen(), "path": add_location(doc, &seed.to, &seed.key)})
        }
        _ => {
            let p = chosen();
            json!({"op": "test", "path": p, "value": doc.pointer(&p).unwrap()})
        }
    };
    // Some combinations are invalid (moving a value into itself, an index shifted by the
    // removal of a move...): those fall back to a plain add at the top level.
    let patch: json_patch::Patch = serde_json::from_value(json!([op.clone()])).unwrap();
    let mut scratch = doc.clone();
    match json_patch::patch(&mut scratch, &patch) {
        Ok(()) if scratch.is_object() => op,
        _ => fallback(),
    }
}

/// The payload and mode of an event seed, given the state it applies to.
fn resolve(state: &State, seed: &Seed) -> (ApplyMode, State) {
    match seed {
        Seed::Merge(p) => (ApplyMode::MergePatch, p.clone()),
        Seed::Replace(p) => (ApplyMode::Replace, p.clone()),
        Seed::Patch(ops) => {
            let mut doc = Value::Object(state.clone());
            let mut resolved = Vec::new();
            for op in ops {
                let op = resolve_op(&doc, op);
                let patch: json_patch::Patch = serde_json::from_value(json!([op.clone()])).unwrap();
                json_patch::patch(&mut doc, &patch).unwrap();
                resolved.push(op);
            }
            (ApplyMode::JsonPatch, obj(json!({"patch": resolved})))
        }
    }
}

/// One server (and database) per snapshot interval, shared by the cases that use it.
struct Env {
    clients: Clients,
    server: TestServer,
    _db: TestDb,
}

impl Env {
    async fn start(snapshot_interval: i64) -> Self {
        let db = TestDb::create().await;
        let server = TestServer::start(
            &db.url,
            &["--snapshot-interval", &snapshot_interval.to_string()],
        )
        .await;
        let mut clients = server.clients().await;
        clients.create_type("doc", json!({"type": "object"})).await;
        Self {
            clients,
            server,
            _db: db,
        }
    }
}

macro_rules! rpc {
    ($call:expr, $what:expr) => {
        $call
            .await
            .map_err(|e| TestCaseError::fail(format!("{}: {e:?}", $what)))?
            .into_inner()
    };
}

/// Builds the case's history on the server, then checks every query against the naive fold.
async fn check_case(env: &Env, case: Case) -> Result<(), TestCaseError> {
    let mut c = env.clients.clone();
    let instance = c
        .instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "doc".into(),
            external_id: uuid::Uuid::new_v4().to_string(),
            initial_state: Some(st(Value::Object(case.initial.clone()))),
            metadata: None,
        })
        .await
        .map_err(|e| TestCaseError::fail(format!("create instance: {e:?}")))?
        .into_inner()
        .instance
        .unwrap();
    let id = instance.id.clone();

    // The naive fold: states[v - 1] is the state right after version v.
    let mut states = vec![case.initial.clone()];
    let mut sent: Vec<(String, ApplyMode, State)> = vec![(
        "InstanceCreated".into(),
        ApplyMode::Replace,
        case.initial.clone(),
    )];
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    for seed in &case.events {
        let previous = states.last().unwrap();
        let (mode, payload) = resolve(previous, &seed.seed);
        let next = apply_event(previous, &payload, mode)
            .map_err(|e| TestCaseError::fail(format!("generated an invalid event: {e}")))?;
        states.push(next);
        sent.push((seed.event_type.to_string(), mode, payload));
        let index = sent.len() - 1;
        match chunks.last_mut() {
            Some(chunk) if seed.batch_with_previous && chunk.len() < 5 => chunk.push(index),
            _ => chunks.push(vec![index]),
        }
    }
    for chunk in &chunks {
        let last = *chunk.last().unwrap();
        let state = if let [single] = chunk[..] {
            let (event_type, mode, payload) = &sent[single];
            rpc!(
                c.events.apply_event(pb::ApplyEventRequest {
                    instance_id: id.clone(),
                    event_type: event_type.clone(),
                    payload: Some(st(Value::Object(payload.clone()))),
                    mode: pb_mode(*mode) as i32,
                    ..Default::default()
                }),
                format!("apply event {}", single + 1)
            )
            .state
        } else {
            rpc!(
                c.events.apply_events(pb::ApplyEventsRequest {
                    dry_run: false,
                    instance_id: id.clone(),
                    expected_version: Some(chunk[0] as i64),
                    events: chunk
                        .iter()
                        .map(|&i| pb::EventInput {
                            event_type: sent[i].0.clone(),
                            payload: Some(st(Value::Object(sent[i].2.clone()))),
                            mode: pb_mode(sent[i].1) as i32,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                format!("apply events {chunk:?}")
            )
            .state
        };
        prop_assert_eq!(js(&state), Value::Object(states[last].clone()));
    }
    let n = states.len() as i64;

    // GetHistory, ascending, in pages of 7.
    let page_size = 7;
    let mut pages = Vec::new();
    let mut req = pb::GetHistoryRequest {
        page_size,
        ..history_req(&id)
    };
    loop {
        let page = rpc!(c.queries.get_history(req.clone()), "history page");
        prop_assert!(page.events.len() <= page_size as usize);
        pages.push(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        prop_assert!(pages.len() <= 20, "paging does not end");
        req.page_token = page.next_page_token;
    }
    prop_assert_eq!(pages.len() as i64, (n + 6) / 7, "number of pages");
    let ascending: Vec<pb::Event> = pages.concat();
    prop_assert_eq!(versions(&ascending), (1..=n).collect::<Vec<_>>());
    for (e, (event_type, mode, payload)) in ascending.iter().zip(&sent) {
        prop_assert_eq!(&e.instance_id, &id);
        prop_assert_eq!(&e.event_type, event_type, "version {}", e.version);
        prop_assert_eq!(e.mode, pb_mode(*mode) as i32, "version {}", e.version);
        prop_assert_eq!(
            js(&e.payload),
            Value::Object(payload.clone()),
            "version {}",
            e.version
        );
    }
    let recorded: Vec<Timestamp> = ascending.iter().map(|e| e.recorded_at.unwrap()).collect();
    prop_assert!(
        recorded.windows(2).all(|w| to_dt(&w[0]) <= to_dt(&w[1])),
        "recorded_at never decreases"
    );
    prop_assert_eq!(recorded[0], instance.created_at.unwrap());

    // The same, newest first.
    let mut req = pb::GetHistoryRequest {
        page_size,
        descending: true,
        ..history_req(&id)
    };
    let mut descending = Vec::new();
    loop {
        let page = rpc!(c.queries.get_history(req.clone()), "history page");
        descending.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        prop_assert!(descending.len() <= 100, "paging does not end");
        req.page_token = page.next_page_token;
    }
    let mut reversed = ascending.clone();
    reversed.reverse();
    prop_assert_eq!(&descending, &reversed);

    // GetStateAtVersion for every version.
    for v in 1..=n {
        let got = rpc!(
            c.queries.get_state_at_version(version_req(&id, v)),
            format!("state at version {v}")
        );
        prop_assert_eq!(
            js(&got.state),
            Value::Object(states[v as usize - 1].clone()),
            "state at version {} (snapshot interval {})",
            v,
            case.snapshot_interval
        );
        prop_assert_eq!(got.version, v);
        prop_assert_eq!(got.recorded_at, Some(recorded[v as usize - 1]));
    }

    // GetStateAtTime at every recorded_at: the last version recorded at or before it.
    for v in 1..=n as usize {
        let t = recorded[v - 1];
        let expected = (1..=n as usize)
            .filter(|&u| to_dt(&recorded[u - 1]) <= to_dt(&t))
            .max()
            .unwrap();
        let got = rpc!(
            c.queries.get_state_at_time(time_req(&id, Some(t))),
            format!("state at the time of version {v}")
        );
        prop_assert_eq!(got.version, expected as i64);
        prop_assert_eq!(js(&got.state), Value::Object(states[expected - 1].clone()));
        prop_assert_eq!(got.recorded_at, Some(t));
    }

    // CompareVersions in both orders.
    for (i, j) in &case.pairs {
        let (a, b) = (i.index(n as usize) + 1, j.index(n as usize) + 1);
        for (v1, v2) in [(a, b), (b, a)] {
            let got = rpc!(
                c.queries
                    .compare_versions(compare_req(&id, v1 as i64, v2 as i64)),
                format!("compare {v1} {v2}")
            );
            let (s1, s2) = (&states[v1 - 1], &states[v2 - 1]);
            prop_assert_eq!(js(&got.state1), Value::Object(s1.clone()));
            prop_assert_eq!(js(&got.state2), Value::Object(s2.clone()));
            let patched = apply_patch(&Value::Object(s1.clone()), &got.patch).map_err(|e| {
                TestCaseError::fail(format!("patch {v1}->{v2} does not apply: {e}"))
            })?;
            prop_assert_eq!(patched, Value::Object(s2.clone()), "patch {} -> {}", v1, v2);
            prop_assert_eq!(got.patch.is_empty(), s1 == s2);
            prop_assert_eq!(got.changes.is_empty(), s1 == s2);
            prop_assert!(
                got.changes.windows(2).all(|w| w[0].path < w[1].path),
                "changes sorted by path"
            );
            let mut ops = Vec::new();
            for ch in &got.changes {
                let old = ch.old_value.as_ref().map(jv);
                let new = ch.new_value.as_ref().map(jv);
                prop_assert_eq!(&old, &at(s1, &ch.path), "old value of {}", ch.path);
                prop_assert_eq!(&new, &at(s2, &ch.path), "new value of {}", ch.path);
                let kind = match (&old, &new) {
                    (None, Some(new)) => {
                        ops.push(json!({"op": "add", "path": ch.path, "value": new}));
                        pb::ChangeKind::Added
                    }
                    (Some(_), None) => {
                        ops.push(json!({"op": "remove", "path": ch.path}));
                        pb::ChangeKind::Removed
                    }
                    (Some(old), Some(new)) => {
                        prop_assert_ne!(old, new);
                        ops.push(json!({"op": "replace", "path": ch.path, "value": new}));
                        pb::ChangeKind::Changed
                    }
                    (None, None) => {
                        return Err(TestCaseError::fail(format!("empty change {ch:?}")));
                    }
                };
                prop_assert_eq!(ch.kind, kind as i32, "kind of {}", ch.path);
            }
            // The flat changes alone also turn state1 into state2: nothing is left out.
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
            let mut doc = Value::Object(s1.clone());
            json_patch::patch(&mut doc, &patch)
                .map_err(|e| TestCaseError::fail(format!("changes {v1}->{v2}: {e}")))?;
            prop_assert_eq!(doc, Value::Object(s2.clone()), "changes {} -> {}", v1, v2);
        }
    }

    // GetFieldTimeline against a naive scan of the folded states.
    let (lo, hi) = {
        let (x, y) = (
            case.range.0.index(n as usize) + 1,
            case.range.1.index(n as usize) + 1,
        );
        (x.min(y), x.max(y))
    };
    for field in &case.fields {
        let mut pointer = String::new();
        for t in &field.tokens {
            push_token(&mut pointer, t);
        }
        let asked = if field.dotted {
            field.tokens.join(".")
        } else {
            pointer.clone()
        };
        let mut naive = Vec::new();
        let mut previous = None;
        for (i, s) in states.iter().enumerate() {
            let current = at(s, &pointer);
            if current != previous {
                naive.push((i + 1, current.clone()));
            }
            previous = current;
        }
        let expect =
            |keep: &dyn Fn(usize) -> bool| -> Vec<(i64, String, Option<Value>, Timestamp)> {
                naive
                    .iter()
                    .filter(|(v, _)| keep(*v))
                    .map(|(v, value)| {
                        (
                            *v as i64,
                            sent[v - 1].0.clone(),
                            value.clone(),
                            recorded[v - 1],
                        )
                    })
                    .collect()
            };
        let points =
            |r: pb::GetFieldTimelineResponse| -> Vec<(i64, String, Option<Value>, Timestamp)> {
                r.points
                    .into_iter()
                    .map(|p| {
                        (
                            p.version,
                            p.event_type,
                            p.value.as_ref().map(jv),
                            p.recorded_at.unwrap(),
                        )
                    })
                    .collect()
            };

        let full = rpc!(
            c.queries.get_field_timeline(timeline_req(&id, &asked)),
            format!("timeline of {asked}")
        );
        prop_assert_eq!(points(full), expect(&|_| true), "timeline of {}", asked);

        let by_version = rpc!(
            c.queries.get_field_timeline(pb::GetFieldTimelineRequest {
                from_version: Some(lo as i64),
                to_version: Some(hi as i64),
                ..timeline_req(&id, &asked)
            }),
            format!("timeline of {asked} in versions {lo}..={hi}")
        );
        prop_assert_eq!(
            points(by_version),
            expect(&|v| (lo..=hi).contains(&v)),
            "timeline of {} in versions {}..={}",
            asked,
            lo,
            hi
        );

        let (start, end) = (recorded[lo - 1], recorded[hi - 1]);
        let by_time = rpc!(
            c.queries.get_field_timeline(pb::GetFieldTimelineRequest {
                start_time: Some(start),
                end_time: Some(end),
                ..timeline_req(&id, &asked)
            }),
            format!("timeline of {asked} in a time range")
        );
        let in_time = |v: usize| {
            let t = to_dt(&recorded[v - 1]);
            to_dt(&start) <= t && t <= to_dt(&end)
        };
        prop_assert_eq!(
            points(by_time),
            expect(&in_time),
            "timeline of {} between the times of versions {} and {}",
            asked,
            lo,
            hi
        );
    }
    Ok(())
}

/// The property test's seed: `PROPTEST_RNG_SEED` when set, otherwise a fixed one, so every run
/// checks the same histories and a failure reproduces (`PROPTEST_RNG_SEED=<n>` explores others).
const TIME_TRAVEL_SEED: u64 = 0x7465_6d70_7374_6174;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_matches_a_naive_fold_of_random_histories() {
    let cases = std::env::var("TIME_TRAVEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rng_seed = match PropConfig::default().rng_seed {
        RngSeed::Random => RngSeed::Fixed(TIME_TRAVEL_SEED),
        fixed => fixed,
    };
    println!("{cases} cases, PROPTEST_RNG_SEED={rng_seed}");
    let envs: Arc<tokio::sync::Mutex<HashMap<i64, Env>>> = Arc::default();
    let handle = tokio::runtime::Handle::current();
    let shared = envs.clone();
    // The runner's error carries the whole failing case; it is only ever printed.
    #[allow(clippy::result_large_err)]
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(PropConfig {
            cases,
            max_shrink_iters: 64,
            // Next to the crate's other regressions: server/proptest-regressions/.
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/time_travel.txt"
            )))),
            source_file: Some(file!()),
            rng_seed,
            ..PropConfig::default()
        });
        runner.run(&arb_case(), |case| {
            handle.block_on(async {
                let mut envs = shared.lock().await;
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    envs.entry(case.snapshot_interval)
                {
                    slot.insert(Env::start(case.snapshot_interval).await);
                }
                check_case(&envs[&case.snapshot_interval], case).await
            })
        })
    })
    .await
    .expect("the property runner panicked");
    let mut envs = envs.lock().await;
    for (_, env) in envs.drain() {
        env.server.stop().await;
    }
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{reason}\nminimal failing case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots: a non-idempotent event landing exactly on a snapshot version
// ---------------------------------------------------------------------------------------------

for_each_backend!(an_append_landing_on_a_snapshot_version_is_applied_once);

/// `add /tags/-` appends each time it is applied, so a past state that folded the snapshot's own
/// event again (on top of the snapshot that already holds it) would show its tag twice. Every
/// version is read, those a snapshot was taken at included (read from the store, not assumed).
async fn an_append_landing_on_a_snapshot_version_is_applied_once(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&["--snapshot-interval", "3"]).await;
    let mut c = server.clients().await;
    c.create_type("tagged", json!({"type": "object"})).await;
    let inst = c.create_instance("tagged", "t", json!({"tags": []})).await;
    const LAST: i64 = 10;
    for n in 2..=LAST {
        c.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: inst.id.clone(),
                event_type: "Tagged".into(),
                payload: Some(st(json!({"patch": [
                    {"op": "add", "path": "/tags/-", "value": n}
                ]}))),
                mode: pb::ApplyMode::JsonPatch as i32,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("version {n}: {e:?}"));
    }
    let snapshots: Vec<i64> = store.snapshots().await.iter().map(|(v, _)| *v).collect();
    assert!(
        snapshots.iter().filter(|v| (2..LAST).contains(*v)).count() >= 2,
        "snapshots inside the history: {snapshots:?}"
    );
    for version in 1..=LAST {
        let got = state_at_version(&mut c, &inst.id, version).await;
        let tags: Vec<i64> = (2..=version).collect();
        assert_eq!(
            js(&got.state),
            json!({ "tags": tags }),
            "state at version {version} (snapshots at {snapshots:?})"
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A hand-written history with concrete expectations
// ---------------------------------------------------------------------------------------------

struct Fixture {
    c: Clients,
    id: String,
    /// The whole history, ascending.
    events: Vec<pb::Event>,
    created_at: Timestamp,
    _server: TestServer,
    _db: TestDb,
}

impl Fixture {
    fn recorded(&self, version: i64) -> Timestamp {
        self.events[version as usize - 1].recorded_at.unwrap()
    }

    /// The page GetHistory answers `req` with.
    async fn history(&mut self, req: pb::GetHistoryRequest) -> pb::GetHistoryResponse {
        self.c
            .queries
            .get_history(req)
            .await
            .expect("history")
            .into_inner()
    }

    /// The versions of the page GetHistory answers `req` with.
    async fn history_versions(&mut self, req: pb::GetHistoryRequest) -> Vec<i64> {
        versions(&self.history(req).await.events)
    }
}

/// The states after each version of [`fixture`]'s history.
fn fixture_states() -> Vec<Value> {
    vec![
        json!({"name": "ann", "score": 10, "stats": {"level": 1, "xp": 0}, "tags": ["a"]}),
        json!({"name": "ann", "score": 20, "stats": {"level": 1, "xp": 0}, "tags": ["a"]}),
        json!({"name": "ann", "score": 20, "stats": {"level": 2, "xp": 0}, "tags": ["a"]}),
        json!({"name": "bob", "stats": {"level": 2, "xp": 0}, "tags": ["a"]}),
        json!({"name": "bob", "score": 5, "stats": {"level": 2, "xp": 0}, "tags": ["a", "b"]}),
        json!({"name": "bob", "stats": {"level": 2, "xp": 7}}),
        json!({"name": "bob", "score": 5, "stats": {"level": 2, "xp": 7}}),
    ]
}

const FIXTURE_TYPES: [&str; 7] = [
    "InstanceCreated",
    "ScoreChanged",
    "LevelUp",
    "Renamed",
    "ScoreChanged",
    "Reset",
    "ScoreChanged",
];

/// Seven versions, 20 ms apart, snapshot interval 3:
///
/// 1. InstanceCreated  {name: ann, score: 10, stats: {level: 1, xp: 0}, tags: [a]}
/// 2. ScoreChanged     merge {score: 20}
/// 3. LevelUp          merge {stats: {level: 2}}
/// 4. Renamed          merge {name: bob, score: null}           (score removed)
/// 5. ScoreChanged     JSON patch add /score 5, add /tags/- b
/// 6. Reset            replace {name: bob, stats: {level: 2, xp: 7}} (score and tags removed)
/// 7. ScoreChanged     merge {score: 5}
async fn fixture() -> Fixture {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--snapshot-interval", "3"]).await;
    let mut c = server.clients().await;
    c.create_type("player", json!({"type": "object"})).await;
    let instance = c
        .create_instance("player", "p1", fixture_states()[0].clone())
        .await;
    let id = instance.id.clone();
    let steps: [(&str, pb::ApplyMode, Value); 6] = [
        (
            "ScoreChanged",
            pb::ApplyMode::MergePatch,
            json!({"score": 20}),
        ),
        (
            "LevelUp",
            pb::ApplyMode::MergePatch,
            json!({"stats": {"level": 2}}),
        ),
        (
            "Renamed",
            pb::ApplyMode::MergePatch,
            json!({"name": "bob", "score": null}),
        ),
        (
            "ScoreChanged",
            pb::ApplyMode::JsonPatch,
            json!({"patch": [
                {"op": "add", "path": "/score", "value": 5},
                {"op": "add", "path": "/tags/-", "value": "b"}
            ]}),
        ),
        (
            "Reset",
            pb::ApplyMode::Replace,
            json!({"name": "bob", "stats": {"level": 2, "xp": 7}}),
        ),
        (
            "ScoreChanged",
            pb::ApplyMode::Unspecified,
            json!({"score": 5}),
        ),
    ];
    for (i, (event_type, mode, payload)) in steps.into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = c
            .events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: event_type.into(),
                payload: Some(st(payload)),
                mode: mode as i32,
                ..Default::default()
            })
            .await
            .expect("apply")
            .into_inner();
        assert_eq!(
            js(&r.state),
            fixture_states()[i + 1],
            "state after {}",
            i + 2
        );
    }
    let events = c
        .queries
        .get_history(history_req(&id))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(versions(&events), [1, 2, 3, 4, 5, 6, 7]);
    for w in events.windows(2) {
        assert!(
            to_dt(w[0].recorded_at.as_ref().unwrap()) < to_dt(w[1].recorded_at.as_ref().unwrap()),
            "events 20 ms apart have distinct recorded_at"
        );
    }
    Fixture {
        c,
        id,
        events,
        created_at: instance.created_at.unwrap(),
        _server: server,
        _db: db,
    }
}

#[tokio::test]
async fn history_lists_every_event_with_its_payload_in_both_orders() {
    let mut f = fixture().await;
    let events = &f.events;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, FIXTURE_TYPES);
    let modes: Vec<i32> = events.iter().map(|e| e.mode).collect();
    assert_eq!(
        modes,
        [
            pb::ApplyMode::Replace,
            pb::ApplyMode::MergePatch,
            pb::ApplyMode::MergePatch,
            pb::ApplyMode::MergePatch,
            pb::ApplyMode::JsonPatch,
            pb::ApplyMode::Replace,
            pb::ApplyMode::MergePatch,
        ]
        .map(|m| m as i32)
    );
    assert_eq!(js(&events[0].payload), fixture_states()[0]);
    assert_eq!(
        js(&events[3].payload),
        json!({"name": "bob", "score": null})
    );
    assert_eq!(
        js(&events[4].payload)["patch"][1],
        json!({"op": "add", "path": "/tags/-", "value": "b"})
    );
    assert_eq!(events[0].recorded_at, Some(f.created_at));
    assert!(events.iter().all(|e| e.instance_id == f.id));

    // Pages of 3: 3 + 3 + 1, ascending and descending.
    let mut req = history_req(&f.id);
    req.page_size = 3;
    let pages = all_pages(&mut f.c, req.clone()).await;
    let page_versions: Vec<Vec<i64>> = pages.iter().map(|p| versions(p)).collect();
    assert_eq!(page_versions, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    assert_eq!(pages.concat(), f.events);
    req.descending = true;
    let pages = all_pages(&mut f.c, req.clone()).await;
    let page_versions: Vec<Vec<i64>> = pages.iter().map(|p| versions(p)).collect();
    assert_eq!(page_versions, [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);
    let mut reversed = f.events.clone();
    reversed.reverse();
    assert_eq!(pages.concat(), reversed);

    // A page size equal to the count: one page, no token.
    req.descending = false;
    req.page_size = 7;
    let page = f.history(req).await;
    assert_eq!(page.events.len(), 7);
    assert_eq!(page.next_page_token, "");
}

#[tokio::test]
async fn history_filters_by_versions_types_and_times() {
    let mut f = fixture().await;
    let id = f.id.clone();

    let mut req = history_req(&id);
    req.from_version = Some(3);
    req.to_version = Some(5);
    let got = f.history(req.clone()).await;
    assert_eq!(versions(&got.events), [3, 4, 5]);
    req.descending = true;
    let got = f.history(req).await;
    assert_eq!(versions(&got.events), [5, 4, 3]);

    let mut req = history_req(&id);
    req.from_version = Some(6);
    assert_eq!(f.history_versions(req).await, [6, 7]);
    let mut req = history_req(&id);
    req.to_version = Some(2);
    assert_eq!(f.history_versions(req).await, [1, 2]);

    // Event types, with paging across the filtered result, both ways.
    let mut req = history_req(&id);
    req.event_types = vec!["ScoreChanged".into()];
    req.page_size = 2;
    let pages = all_pages(&mut f.c, req.clone()).await;
    let page_versions: Vec<Vec<i64>> = pages.iter().map(|p| versions(p)).collect();
    assert_eq!(page_versions, [vec![2, 5], vec![7]]);
    req.descending = true;
    let pages = all_pages(&mut f.c, req).await;
    let page_versions: Vec<Vec<i64>> = pages.iter().map(|p| versions(p)).collect();
    assert_eq!(page_versions, [vec![7, 5], vec![2]]);

    let mut req = history_req(&id);
    req.event_types = vec!["Reset".into(), "InstanceCreated".into(), "Nope".into()];
    assert_eq!(f.history_versions(req).await, [1, 6]);
    let mut req = history_req(&id);
    req.event_types = vec!["Nope".into()];
    let got = f.history(req).await;
    assert!(got.events.is_empty());
    assert_eq!(got.next_page_token, "");

    // Time ranges are inclusive at both ends, on recorded_at.
    let mut req = history_req(&id);
    req.start_time = Some(f.recorded(2));
    req.end_time = Some(f.recorded(4));
    assert_eq!(f.history_versions(req.clone()).await, [2, 3, 4]);
    // One microsecond inside each bound excludes the boundary events (PostgreSQL keeps
    // microseconds; the nanosecond case is `history_time_bounds_are_exact_to_the_nanosecond`).
    req.start_time = Some(shift(&f.recorded(2), 1_000));
    req.end_time = Some(shift(&f.recorded(4), -1_000));
    assert_eq!(f.history_versions(req).await, [3]);
    let mut req = history_req(&id);
    req.start_time = Some(f.recorded(6));
    assert_eq!(f.history_versions(req).await, [6, 7]);
    let mut req = history_req(&id);
    req.end_time = Some(shift(&f.created_at, -1_000));
    assert!(f.history(req).await.events.is_empty());

    // All filters together.
    let mut req = history_req(&id);
    req.from_version = Some(2);
    req.to_version = Some(6);
    req.start_time = Some(f.recorded(3));
    req.event_types = vec!["ScoreChanged".into(), "LevelUp".into()];
    req.descending = true;
    assert_eq!(f.history_versions(req).await, [5, 3]);

    // A version range past the latest is an empty page, not an error.
    let mut req = history_req(&id);
    req.from_version = Some(100);
    let got = f.history(req).await;
    assert!(got.events.is_empty());
}

/// `start_time` one nanosecond after an event's recorded_at must exclude that event ("only events
/// recorded at or after this moment"), as GetFieldTimeline and GetStateAtTime already do.
#[tokio::test]
async fn history_time_bounds_are_exact_to_the_nanosecond() {
    let mut f = fixture().await;
    let mut req = history_req(&f.id);
    req.start_time = Some(shift(&f.recorded(2), 1));
    req.end_time = Some(shift(&f.recorded(4), -1));
    let got = f.history(req).await;
    assert_eq!(versions(&got.events), [3]);
    // The same range on a field timeline, filtered in the application, is already exact.
    let mut req = timeline_req(&f.id, "/stats/level");
    req.start_time = Some(shift(&f.recorded(1), 1));
    assert_eq!(
        timeline(&mut f.c, req).await,
        [(3, "LevelUp".to_string(), Some(json!(2)))]
    );
}

#[tokio::test]
async fn state_at_version_returns_each_version_with_its_time() {
    let mut f = fixture().await;
    let states = fixture_states();
    for v in 1..=7 {
        let got = state_at_version(&mut f.c, &f.id, v).await;
        assert_eq!(js(&got.state), states[v as usize - 1], "version {v}");
        assert_eq!(got.version, v);
        assert_eq!(got.recorded_at, Some(f.recorded(v)));
    }
}

#[tokio::test]
async fn state_at_time_follows_recorded_at() {
    let mut f = fixture().await;
    let states = fixture_states();
    let id = f.id.clone();

    // Exactly at each event's recorded_at: that version.
    for v in 1..=7 {
        let t = f.recorded(v);
        let got = state_at_time(&mut f.c, &id, t).await.unwrap();
        assert_eq!(got.version, v);
        assert_eq!(js(&got.state), states[v as usize - 1]);
        assert_eq!(got.recorded_at, Some(f.recorded(v)));
    }

    // Between two events: the earlier one. Also one nanosecond before the next one, and half a
    // microsecond after the earlier one (PostgreSQL keeps microseconds).
    let (t3, t4) = (to_dt(&f.recorded(3)), to_dt(&f.recorded(4)));
    let middle = to_ts(t3 + (t4 - t3) / 2);
    for at in [
        middle,
        shift(&f.recorded(4), -1),
        shift(&f.recorded(3), 500),
    ] {
        let got = state_at_time(&mut f.c, &id, at).await.unwrap();
        assert_eq!(got.version, 3, "at {at:?}");
        assert_eq!(js(&got.state), states[2]);
        assert_eq!(got.recorded_at, Some(f.recorded(3)));
    }

    // Far in the future, and just now: the latest.
    for at in [
        Timestamp {
            seconds: 253_402_300_799, // 9999-12-31T23:59:59Z
            nanos: 999_999_999,
        },
        to_ts(Utc::now()),
    ] {
        let got = state_at_time(&mut f.c, &id, at).await.unwrap();
        assert_eq!(got.version, 7);
        assert_eq!(js(&got.state), states[6]);
    }
}

#[tokio::test]
async fn state_at_time_before_creation_is_not_found_saying_when_it_was_created() {
    let mut f = fixture().await;
    let id = f.id.clone();
    let created = to_dt(&f.created_at).to_rfc3339();
    for at in [
        shift(&f.created_at, -1),
        shift(&f.created_at, -3_600_000_000_000),
        Timestamp {
            seconds: 0,
            nanos: 0,
        },
    ] {
        let status = state_at_time(&mut f.c, &id, at).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(
            status.message().contains(&created),
            "{:?} does not say when it was created ({created})",
            status.message()
        );
        assert!(status.message().contains(&id), "{:?}", status.message());
        assert!(
            status.message().contains("created"),
            "{:?}",
            status.message()
        );
    }
    // The creation instant itself is version 1.
    let created_at = f.created_at;
    let got = state_at_time(&mut f.c, &id, created_at).await.unwrap();
    assert_eq!(got.version, 1);
}

#[tokio::test]
async fn compare_versions_gives_both_states_a_patch_and_changes_in_either_order() {
    let mut f = fixture().await;
    let states = fixture_states();
    let id = f.id.clone();
    let kinds =
        |r: &pb::CompareVersionsResponse| -> Vec<(String, i32, Option<Value>, Option<Value>)> {
            r.changes
                .iter()
                .map(|c| {
                    (
                        c.path.clone(),
                        c.kind,
                        c.old_value.as_ref().map(jv),
                        c.new_value.as_ref().map(jv),
                    )
                })
                .collect()
        };
    let ch = |path: &str, kind: i32, old: Option<Value>, new: Option<Value>| {
        (path.to_string(), kind, old, new)
    };
    let added = pb::ChangeKind::Added as i32;
    let removed = pb::ChangeKind::Removed as i32;
    let changed = pb::ChangeKind::Changed as i32;

    let forward = compare(&mut f.c, &id, 2, 6).await;
    assert_eq!(js(&forward.state1), states[1]);
    assert_eq!(js(&forward.state2), states[5]);
    assert_eq!(apply_patch(&states[1], &forward.patch).unwrap(), states[5]);
    assert_eq!(
        kinds(&forward),
        [
            ch("/name", changed, Some(json!("ann")), Some(json!("bob"))),
            ch("/score", removed, Some(json!(20)), None),
            ch("/stats/level", changed, Some(json!(1)), Some(json!(2))),
            ch("/stats/xp", changed, Some(json!(0)), Some(json!(7))),
            ch("/tags", removed, Some(json!(["a"])), None),
        ]
    );

    // version2 < version1: the diff goes from version1's state to version2's.
    let backward = compare(&mut f.c, &id, 6, 2).await;
    assert_eq!(js(&backward.state1), states[5]);
    assert_eq!(js(&backward.state2), states[1]);
    assert_eq!(apply_patch(&states[5], &backward.patch).unwrap(), states[1]);
    assert_eq!(
        kinds(&backward),
        [
            ch("/name", changed, Some(json!("bob")), Some(json!("ann"))),
            ch("/score", added, None, Some(json!(20))),
            ch("/stats/level", changed, Some(json!(2)), Some(json!(1))),
            ch("/stats/xp", changed, Some(json!(7)), Some(json!(0))),
            ch("/tags", added, None, Some(json!(["a"]))),
        ]
    );

    // An array that grew is one change at the array's path.
    let grew = compare(&mut f.c, &id, 4, 5).await;
    assert_eq!(apply_patch(&states[3], &grew.patch).unwrap(), states[4]);
    assert_eq!(
        kinds(&grew),
        [
            ch("/score", added, None, Some(json!(5))),
            ch(
                "/tags",
                changed,
                Some(json!(["a"])),
                Some(json!(["a", "b"]))
            ),
        ]
    );

    // Equal versions and equal states at different versions: nothing changed.
    for (v1, v2) in [(3, 3), (1, 1), (7, 7)] {
        let same = compare(&mut f.c, &id, v1, v2).await;
        assert_eq!(js(&same.state1), states[v1 as usize - 1]);
        assert!(same.patch.is_empty(), "{:?}", same.patch);
        assert!(same.changes.is_empty(), "{:?}", same.changes);
    }
    let exact_patch = compare(&mut f.c, &id, 1, 2).await;
    assert_eq!(
        exact_patch
            .patch
            .iter()
            .map(|op| js(&Some(op.clone())))
            .collect::<Vec<_>>(),
        [json!({"op": "replace", "path": "/score", "value": 20})]
    );
}

#[tokio::test]
async fn field_timeline_by_pointer_and_dotted_path_with_removals_and_ranges() {
    let mut f = fixture().await;
    let id = f.id.clone();
    let p = |v: i64, t: &str, value: Option<Value>| (v, t.to_string(), value);

    let score = vec![
        p(1, "InstanceCreated", Some(json!(10))),
        p(2, "ScoreChanged", Some(json!(20))),
        p(4, "Renamed", None),
        p(5, "ScoreChanged", Some(json!(5))),
        p(6, "Reset", None),
        p(7, "ScoreChanged", Some(json!(5))),
    ];
    assert_eq!(timeline(&mut f.c, timeline_req(&id, "/score")).await, score);
    assert_eq!(timeline(&mut f.c, timeline_req(&id, "score")).await, score);

    // recorded_at of each point is its event's.
    let full =
        f.c.queries
            .get_field_timeline(timeline_req(&id, "score"))
            .await
            .unwrap()
            .into_inner();
    for point in &full.points {
        assert_eq!(point.recorded_at, Some(f.recorded(point.version)));
    }
    // A removal is a point without a value.
    assert!(full.points[2].value.is_none());

    let level = vec![
        p(1, "InstanceCreated", Some(json!(1))),
        p(3, "LevelUp", Some(json!(2))),
    ];
    assert_eq!(
        timeline(&mut f.c, timeline_req(&id, "stats.level")).await,
        level
    );
    assert_eq!(
        timeline(&mut f.c, timeline_req(&id, "/stats/level")).await,
        level
    );
    assert_eq!(
        timeline(&mut f.c, timeline_req(&id, "stats.xp")).await,
        [
            p(1, "InstanceCreated", Some(json!(0))),
            p(6, "Reset", Some(json!(7)))
        ]
    );
    // An array element and a whole object.
    assert_eq!(
        timeline(&mut f.c, timeline_req(&id, "tags.1")).await,
        [p(5, "ScoreChanged", Some(json!("b"))), p(6, "Reset", None)]
    );
    assert_eq!(
        timeline(&mut f.c, timeline_req(&id, "/stats")).await,
        [
            p(1, "InstanceCreated", Some(json!({"level": 1, "xp": 0}))),
            p(3, "LevelUp", Some(json!({"level": 2, "xp": 0}))),
            p(6, "Reset", Some(json!({"level": 2, "xp": 7}))),
        ]
    );
    // A field that never existed: an empty timeline, not an error.
    assert!(
        timeline(&mut f.c, timeline_req(&id, "missing.field"))
            .await
            .is_empty()
    );

    // Version ranges: the first point is a change relative to the version before the range.
    let mut req = timeline_req(&id, "score");
    req.from_version = Some(3);
    req.to_version = Some(6);
    assert_eq!(
        timeline(&mut f.c, req).await,
        [
            p(4, "Renamed", None),
            p(5, "ScoreChanged", Some(json!(5))),
            p(6, "Reset", None)
        ]
    );
    let mut req = timeline_req(&id, "score");
    req.from_version = Some(5);
    assert_eq!(
        timeline(&mut f.c, req).await,
        [
            p(5, "ScoreChanged", Some(json!(5))),
            p(6, "Reset", None),
            p(7, "ScoreChanged", Some(json!(5))),
        ]
    );
    let mut req = timeline_req(&id, "score");
    req.from_version = Some(3);
    req.to_version = Some(3);
    assert!(timeline(&mut f.c, req).await.is_empty());
    let mut req = timeline_req(&id, "score");
    req.to_version = Some(2);
    assert_eq!(timeline(&mut f.c, req).await, score[..2]);

    // Time ranges, inclusive, on recorded_at.
    let mut req = timeline_req(&id, "/score");
    req.start_time = Some(f.recorded(4));
    req.end_time = Some(f.recorded(6));
    assert_eq!(timeline(&mut f.c, req.clone()).await, score[2..5]);
    req.start_time = Some(shift(&f.recorded(4), 1));
    req.end_time = Some(shift(&f.recorded(6), -1));
    assert_eq!(timeline(&mut f.c, req).await, score[3..4]);
    let mut req = timeline_req(&id, "/score");
    req.end_time = Some(f.recorded(1));
    assert_eq!(timeline(&mut f.c, req).await, score[..1]);
}

#[tokio::test]
async fn field_paths_with_escapes_name_the_same_field_either_way() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    c.create_type("doc", json!({"type": "object"})).await;
    let instance = c
        .create_instance("doc", "d1", json!({"a/b": {"c~d": 1}, "n": null}))
        .await;
    let id = instance.id;
    c.apply(&id, "Bump", json!({"a/b": {"c~d": 2}, "n": 0}))
        .await
        .unwrap();
    c.apply(&id, "Drop", json!({"a/b": null})).await.unwrap();
    let expected = vec![
        (1, "InstanceCreated".to_string(), Some(json!(1))),
        (2, "Bump".to_string(), Some(json!(2))),
        (3, "Drop".to_string(), None),
    ];
    assert_eq!(
        timeline(&mut c, timeline_req(&id, "/a~1b/c~0d")).await,
        expected
    );
    assert_eq!(
        timeline(&mut c, timeline_req(&id, "a/b.c~d")).await,
        expected
    );
    // A field present with the value null is not absent.
    assert_eq!(
        timeline(&mut c, timeline_req(&id, "n")).await,
        [
            (1, "InstanceCreated".to_string(), Some(Value::Null)),
            (2, "Bump".to_string(), Some(json!(0))),
        ]
    );
    let cmp = compare(&mut c, &id, 1, 2).await;
    let paths: Vec<&str> = cmp.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/a~1b/c~0d", "/n"]);
    assert_eq!(cmp.changes[1].old_value.as_ref().map(jv), Some(Value::Null));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn version_zero_or_negative_is_invalid_argument() {
    let mut f = fixture().await;
    let id = f.id.clone();
    for v in [0, -1, i64::MIN] {
        invalid_argument(
            f.c.queries.get_state_at_version(version_req(&id, v)).await,
            "version",
            &["version", &format!("{v} is not a version"), "start at 1"],
        );
    }
    invalid_argument(
        f.c.queries.compare_versions(compare_req(&id, 0, 3)).await,
        "version1",
        &["version1", "0 is not a version"],
    );
    invalid_argument(
        f.c.queries.compare_versions(compare_req(&id, 3, 0)).await,
        "version2",
        &["version2", "0 is not a version"],
    );
    let mut req = history_req(&id);
    req.from_version = Some(0);
    invalid_argument(
        f.c.queries.get_history(req).await,
        "from_version",
        &["from_version", "0 is not a version"],
    );
    let mut req = history_req(&id);
    req.to_version = Some(-5);
    invalid_argument(
        f.c.queries.get_history(req).await,
        "to_version",
        &["to_version", "-5 is not a version"],
    );
    let mut req = timeline_req(&id, "score");
    req.from_version = Some(0);
    invalid_argument(
        f.c.queries.get_field_timeline(req).await,
        "from_version",
        &["from_version", "0 is not a version"],
    );
    let mut req = timeline_req(&id, "score");
    req.to_version = Some(0);
    invalid_argument(
        f.c.queries.get_field_timeline(req).await,
        "to_version",
        &["to_version", "0 is not a version"],
    );
}

#[tokio::test]
async fn version_past_the_latest_is_invalid_argument_naming_the_latest() {
    let mut f = fixture().await;
    let id = f.id.clone();
    for v in [8, 1_000_000, i64::MAX] {
        invalid_argument(
            f.c.queries.get_state_at_version(version_req(&id, v)).await,
            "version",
            &[&format!("version {v} is past the latest version 7"), &id],
        );
    }
    invalid_argument(
        f.c.queries.compare_versions(compare_req(&id, 2, 9)).await,
        "version2",
        &["version2", "version 9 is past the latest version 7"],
    );
    invalid_argument(
        f.c.queries.compare_versions(compare_req(&id, 9, 2)).await,
        "version1",
        &["version1", "version 9 is past the latest version 7"],
    );
}

#[tokio::test]
async fn inverted_ranges_and_missing_or_invalid_timestamps_are_invalid_argument() {
    let mut f = fixture().await;
    let id = f.id.clone();
    let mut req = history_req(&id);
    req.from_version = Some(5);
    req.to_version = Some(2);
    invalid_argument(
        f.c.queries.get_history(req).await,
        "from_version",
        &["from_version", "5 is after to_version 2"],
    );
    let mut req = timeline_req(&id, "score");
    req.from_version = Some(5);
    req.to_version = Some(2);
    invalid_argument(
        f.c.queries.get_field_timeline(req).await,
        "from_version",
        &["from_version", "5 is after to_version 2"],
    );
    let mut req = history_req(&id);
    req.start_time = Some(f.recorded(5));
    req.end_time = Some(f.recorded(2));
    invalid_argument(
        f.c.queries.get_history(req).await,
        "start_time",
        &["start_time", "is after end_time"],
    );
    let mut req = timeline_req(&id, "score");
    req.start_time = Some(f.recorded(5));
    req.end_time = Some(f.recorded(2));
    invalid_argument(
        f.c.queries.get_field_timeline(req).await,
        "start_time",
        &["start_time", "is after end_time"],
    );

    invalid_argument(
        f.c.queries.get_state_at_time(time_req(&id, None)).await,
        "timestamp",
        &["timestamp", "is required"],
    );
    invalid_argument(
        f.c.queries
            .get_state_at_time(time_req(
                &id,
                Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
            ))
            .await,
        "timestamp",
        &["timestamp", "nanos -1 is out of range"],
    );
    invalid_argument(
        f.c.queries
            .get_state_at_time(time_req(
                &id,
                Some(Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                }),
            ))
            .await,
        "timestamp",
        &["timestamp", "outside years 1 to 9999"],
    );
    let mut req = history_req(&id);
    req.end_time = Some(Timestamp {
        seconds: i64::MIN,
        nanos: 0,
    });
    invalid_argument(
        f.c.queries.get_history(req).await,
        "end_time",
        &["end_time", "outside years 1 to 9999"],
    );
}

#[tokio::test]
async fn an_unparseable_field_path_is_invalid_argument_quoting_it() {
    let mut f = fixture().await;
    let id = f.id.clone();
    for (field, reason) in [
        ("a..b", "empty segment"),
        (".score", "empty segment"),
        ("score.", "empty segment"),
        ("/a~2", "must be followed by 0"),
        ("/stats/level~", "must be followed by 0"),
        ("", "empty"),
        ("/", "whole state"),
    ] {
        invalid_argument(
            f.c.queries
                .get_field_timeline(timeline_req(&id, field))
                .await,
            "field",
            &["field", &format!("{field:?}"), reason],
        );
    }
    let long = "a.".repeat(700) + "a";
    let status = invalid_argument(
        f.c.queries
            .get_field_timeline(timeline_req(&id, &long))
            .await,
        "field",
        &["field", "1401 characters", "at most 1024"],
    );
    assert!(status.message().len() < 300, "{}", status.message());
}

#[tokio::test]
async fn an_unknown_instance_is_not_found_for_every_rpc() {
    let mut f = fixture().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let needles = [format!("instance {unknown}"), "not found".to_string()];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    not_found(
        f.c.queries.get_history(history_req(&unknown)).await,
        &needles,
    );
    // Even with filters that would match nothing anyway.
    let mut req = history_req(&unknown);
    req.event_types = vec!["Nope".into()];
    req.descending = true;
    not_found(f.c.queries.get_history(req).await, &needles);
    for version in [1, 5] {
        not_found(
            f.c.queries
                .get_state_at_version(version_req(&unknown, version))
                .await,
            &needles,
        );
    }
    not_found(
        f.c.queries
            .get_state_at_time(time_req(&unknown, Some(to_ts(Utc::now()))))
            .await,
        &needles,
    );
    not_found(
        f.c.queries
            .compare_versions(compare_req(&unknown, 1, 2))
            .await,
        &needles,
    );
    not_found(
        f.c.queries
            .get_field_timeline(timeline_req(&unknown, "score"))
            .await,
        &needles,
    );
    let mut req = timeline_req(&unknown, "score");
    req.from_version = Some(3);
    not_found(f.c.queries.get_field_timeline(req).await, &needles);
}

#[tokio::test]
async fn a_malformed_instance_id_is_invalid_argument_for_every_rpc() {
    let mut f = fixture().await;
    for (raw, needle) in [
        ("not-a-uuid", "\"not-a-uuid\" is not a UUID"),
        ("", "is required"),
    ] {
        let needles = ["instance_id", needle];
        invalid_argument(
            f.c.queries.get_history(history_req(raw)).await,
            "instance_id",
            &needles,
        );
        invalid_argument(
            f.c.queries.get_state_at_version(version_req(raw, 1)).await,
            "instance_id",
            &needles,
        );
        invalid_argument(
            f.c.queries
                .get_state_at_time(time_req(raw, Some(to_ts(Utc::now()))))
                .await,
            "instance_id",
            &needles,
        );
        invalid_argument(
            f.c.queries.compare_versions(compare_req(raw, 1, 2)).await,
            "instance_id",
            &needles,
        );
        invalid_argument(
            f.c.queries
                .get_field_timeline(timeline_req(raw, "score"))
                .await,
            "instance_id",
            &needles,
        );
    }
}

#[tokio::test]
async fn page_sizes_out_of_range_are_invalid_argument() {
    let mut f = fixture().await;
    let id = f.id.clone();
    for size in [10_000_000, 1001, -1, i32::MIN] {
        let mut req = history_req(&id);
        req.page_size = size;
        invalid_argument(
            f.c.queries.get_history(req).await,
            "page_size",
            &["page_size", &format!("{size} is out of range"), "1 to 1000"],
        );
    }
    // The bounds themselves are fine; 0 is the default.
    for size in [0, 1, 1000] {
        let mut req = history_req(&id);
        req.page_size = size;
        let got = f.history(req).await;
        assert_eq!(got.events.len(), if size == 1 { 1 } else { 7 });
    }
}

#[tokio::test]
async fn a_malformed_page_token_is_invalid_argument() {
    let mut f = fixture().await;
    let id = f.id.clone();
    use base64::Engine;
    let not_a_version = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("player-002");
    let not_utf8 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff, 0xfe]);
    for token in ["!!not a token!!", not_a_version.as_str(), not_utf8.as_str()] {
        let mut req = history_req(&id);
        req.page_token = token.into();
        req.page_size = 2;
        invalid_argument(
            f.c.queries.get_history(req).await,
            "page_token",
            &["page_token", "malformed", "next_page_token"],
        );
    }
    // A real token still works after the failures.
    let mut req = history_req(&id);
    req.page_size = 2;
    let first = f.history(req.clone()).await;
    req.page_token = first.next_page_token;
    let second = f.history(req).await;
    assert_eq!(versions(&second.events), [3, 4]);
}

/// A from_version past the latest: GetHistory answers an empty page; the timeline should too, or
/// at least name the request field and the number the caller sent.
#[tokio::test]
async fn field_timeline_from_version_past_the_latest_is_empty_or_names_from_version() {
    let mut f = fixture().await;
    for from in [8, 9, 100] {
        let mut req = timeline_req(&f.id, "score");
        req.from_version = Some(from);
        match f.c.queries.get_field_timeline(req).await {
            Ok(r) => assert!(r.into_inner().points.is_empty(), "from_version {from}"),
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(
                    status.message().contains("from_version")
                        && status.message().contains(&from.to_string()),
                    "from_version {from}: {:?}",
                    status.message()
                );
            }
        }
    }
}

/// An unknown instance is NOT_FOUND on every page, not only the first.
#[tokio::test]
async fn an_unknown_instance_with_a_page_token_is_not_found() {
    let mut f = fixture().await;
    let mut req = history_req(&f.id);
    req.page_size = 2;
    let token = f.history(req).await.next_page_token;
    assert!(!token.is_empty());
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut req = history_req(&unknown);
    req.page_size = 2;
    req.page_token = token;
    not_found(
        f.c.queries.get_history(req).await,
        &[&format!("instance {unknown}"), "not found"],
    );
}
