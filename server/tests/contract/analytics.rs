//! The `AnalyticsReader` contract, on PostgreSQL (`postgres::`) and the embedded store
//! (`embedded::`), and on TimescaleDB (`timescaledb::`, in the `timescaledb` test binary), each
//! answer checked against a naive computation over the stored history.

use std::collections::{BTreeMap, HashMap};

use crate::common::json;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use temporal_state_server::domain::analytics::FieldStats;
use temporal_state_server::domain::{ApplyMode, State, apply_event};
use temporal_state_server::ports::{
    ActiveInstance, EntityTypeRecord, EventRecord, EventStore, EventTypeCount, InstanceRecord,
    NewInstance, TimeRange, TypeSummary,
};
use uuid::Uuid;

use super::fixture::*;

on_each_store!(
    analytics_event_counts_follow_occurred_at,
    analytics_time_series_buckets_from_start,
    analytics_field_stats_over_current_states,
    analytics_field_values_as_of_fold_from_snapshots,
    analytics_most_active_ranks_with_ties_by_id,
    analytics_summary_totals,
    analytics_rollups_answer_as_the_raw_events_for_any_range,
);

// ---------------------------------------------------------------------------------------------
// Analytics
//
// One dataset, built through the EventStore port: a `player` type whose instances hold every
// kind of value (numbers, strings, booleans, nulls, objects, arrays, missing fields, keys that
// need escaping), events of several types spread over days of occurred_at (with ties in every
// ranking), folded from snapshots (interval 3); an `order` type whose events must never leak
// into `player`'s figures; an `empty` type. Every answer is checked against a naive
// computation over the stored history.

struct Dataset {
    f: Fixture,
    player: EntityTypeRecord,
    order: EntityTypeRecord,
    empty: EntityTypeRecord,
    /// 2024-03-04T00:00:00Z; phase-one events occur over the five days after it.
    base: DateTime<Utc>,
    /// A recorded time between the two loading phases.
    between: DateTime<Utc>,
    /// Every event of `player`, as stored.
    events: Vec<EventRecord>,
    /// Every event of `order`, as stored.
    order_events: Vec<EventRecord>,
    /// The current `player` instances.
    instances: Vec<InstanceRecord>,
    /// The instance created in phase two.
    late: InstanceRecord,
}

const EVENT_TYPES: [&str; 6] = [
    "ScoreIncreased",
    "LevelUp",
    "AchievementUnlocked",
    "Zeta",
    "alpha",
    "B",
];

fn player_states() -> Vec<Value> {
    vec![
        json!({
            "score": 10, "name": "alice", "active": true, "ratio": 0.25, "tags": ["a", "b", "c"],
            "nested": {"level": 3, "a.b": "dot", "deep": {"x": [1, {"y": "z"}]}},
            "q\"uote": 1, "br[0]": "x", "sl/ash": 2, "til~de": "t", "": "empty", "ключ": "знач",
            "mixed": 5, "big": 9007199254740993_u64, "zero": -0.0, "ctl": "\u{1}"
        }),
        json!({
            "score": 20.5, "name": "bob", "active": false, "ratio": -1.5, "tags": [],
            "nested": {"level": null, "a.b": "dot"}, "q\"uote": "v", "sl/ash": 2, "": "empty",
            "mixed": "5", "big": 1e100, "zero": 0, "ctl": "\t"
        }),
        json!({
            "score": -3, "name": "alice", "active": true, "tags": ["b"], "nested": null,
            "br[0]": "x", "til~de": "t", "mixed": true, "big": 1, "ctl": "A"
        }),
        json!({
            "name": "Bob", "active": null, "mixed": null, "": false, "ctl": "~",
            "nested": {"level": 7.75, "deep": {"x": [2, {"y": "w"}]}}
        }),
        json!({
            "score": 0, "name": "a\"b", "tags": ["x", "y"], "mixed": [1, 2], "ключ": "знач",
            "sl/ash": 4.5
        }),
        json!({"name": "é", "mixed": {"k": 1}, "score": 2.75, "active": false, "til~de": "u"}),
    ]
}

async fn create_with_random_id(
    store: &dyn EventStore,
    entity_type_id: Uuid,
    external_id: &str,
    state: Value,
) -> InstanceRecord {
    // Random ids, so that id order (the tie-break) is neither creation nor external id order.
    let new = NewInstance {
        id: Uuid::new_v4(),
        ..new_instance(entity_type_id, external_id, state)
    };
    store.create_instance(new).await.expect("create instance").0
}

async fn dataset(b: Backend) -> Dataset {
    let f = b.open(3).await;
    let s = f.store.as_ref();
    let player = new_type(s, "player").await;
    let order = new_type(s, "order").await;
    let empty = new_type(s, "empty").await;
    let base = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();

    let mut ids = Vec::new();
    for (k, state) in player_states().into_iter().enumerate() {
        let inst = create_with_random_id(s, player.id, &format!("player-{}", 9 - k), state).await;
        ids.push(inst.id);
    }
    // Phase one: instance k gets counts[k] events of every apply mode; occurred_at spread over
    // five days (the first one exactly at `base`), event types in turn, so they tie.
    let counts = [5_usize, 7, 7, 3, 7, 1];
    let mut n: i64 = 0;
    for (k, id) in ids.iter().enumerate() {
        let mut evs = Vec::new();
        for j in 0..counts[k] {
            let e = if k == 4 && j == counts[k] - 1 {
                Ev {
                    mode: ApplyMode::Replace,
                    ..ev(
                        "",
                        json!({"name": "a\"b", "score": 1.5, "mixed": [1, 2], "replaced": true}),
                    )
                }
            } else {
                match j % 3 {
                    0 => ev(
                        "",
                        json!({"score": (k * 100 + j) as f64 / 4.0, "counter": j}),
                    ),
                    1 => Ev {
                        mode: ApplyMode::JsonPatch,
                        ..ev(
                            "",
                            json!({"patch": [{"op": "add", "path": "/counter", "value": j * 10}]}),
                        )
                    },
                    _ => ev("", json!({"active": j % 2 == 0, "ratio": null})),
                }
            };
            let minutes = (n * 7919) % (5 * 24 * 60);
            evs.push(Ev {
                event_type: EVENT_TYPES[(n % 6) as usize].into(),
                occurred_at: Some(
                    base + TimeDelta::minutes(minutes) + TimeDelta::microseconds(n * 1001),
                ),
                ..e
            });
            n += 1;
        }
        if k == 3 {
            // Exactly on the end of the five days, and before the Unix epoch.
            let mut edge = ev("", json!({"edge": 1}));
            edge.event_type = "B".into();
            edge.occurred_at = Some(base + TimeDelta::days(5));
            evs.push(edge);
            let mut old = ev("", json!({"edge": 2}));
            old.event_type = "Zeta".into();
            old.occurred_at = Some(Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap());
            evs.push(old);
        }
        // Two appends, so that recorded times differ within an instance.
        let second = evs.split_off(evs.len() / 2);
        if !evs.is_empty() {
            appended(s, *id, evs).await;
        }
        tick().await;
        appended(s, *id, second).await;
    }
    tick().await;
    let between = Utc::now();
    tick().await;

    // Phase two: changes that values as of `between` must not see, and a new instance.
    appended(
        s,
        ids[0],
        vec![ev("Renamed", json!({"name": "zed", "score": 5000}))],
    )
    .await;
    appended(
        s,
        ids[1],
        vec![ev("ScoreIncreased", json!({"active": null}))],
    )
    .await;
    appended(
        s,
        ids[2],
        vec![Ev {
            mode: ApplyMode::JsonPatch,
            ..ev(
                "Renamed",
                json!({"patch": [{"op": "remove", "path": "/name"}]}),
            )
        }],
    )
    .await;
    let late = create_with_random_id(
        s,
        player.id,
        "player-late",
        json!({"name": "alice", "score": 7, "tags": ["z"]}),
    )
    .await;
    appended(s, late.id, vec![ev("Renamed", json!({"name": "zed"}))]).await;
    // Another type's events, over the same days and with the same event types.
    let o = create_with_random_id(s, order.id, "order-1", json!({"total": 5})).await;
    for day in 0..4 {
        let mut e = ev(EVENT_TYPES[day % 2], json!({"total": 6 + day}));
        e.occurred_at = Some(base + TimeDelta::days(day as i64) + TimeDelta::hours(5));
        appended(s, o.id, vec![e]).await;
    }

    let instances = s
        .list_instances(&listing(player.id, None, false), 1000)
        .await
        .unwrap();
    assert_eq!(instances.len(), 7);
    let mut events = Vec::new();
    for i in &instances {
        events.extend(all_events(f.history.as_ref(), i.id).await);
    }
    let order_events = all_events(f.history.as_ref(), o.id).await;
    let late = s.get_instance(late.id).await.unwrap();
    Dataset {
        f,
        player,
        order,
        empty,
        base,
        between,
        events,
        order_events,
        instances,
        late,
    }
}

/// A time as the stores compare it: sub-microsecond digits truncated toward PostgreSQL's epoch
/// (2000-01-01), as tokio-postgres sends it.
fn stored_micros(t: DateTime<Utc>) -> i64 {
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    (t - epoch).num_microseconds().unwrap() + epoch.timestamp_micros()
}

fn in_range(t: DateTime<Utc>, range: TimeRange) -> bool {
    let t = t.timestamp_micros();
    range.start.is_none_or(|s| t >= stored_micros(s))
        && range.end.is_none_or(|e| t < stored_micros(e))
}

impl Dataset {
    /// Ranges with both, one or no side, edges exactly on events, sub-microsecond edges, empty
    /// ranges and one before the Unix epoch.
    fn ranges(&self) -> Vec<TimeRange> {
        let day = TimeDelta::days(1);
        let us = TimeDelta::microseconds(1);
        let ns = TimeDelta::nanoseconds(1);
        let base = self.base;
        let r = |start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>| TimeRange { start, end };
        let epoch = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        vec![
            r(None, None),
            r(Some(base + day), Some(base + day * 3)),
            r(Some(base + day * 2), None),
            r(None, Some(base + day * 2)),
            r(Some(base), Some(base + day * 5)),
            r(Some(base + day * 5), Some(base + day * 5 + us)),
            r(Some(base + ns * 999), Some(base + us)),
            r(Some(base + us), Some(base + day * 5 + ns * 999)),
            r(Some(base + day), Some(base + day)),
            r(Some(base + day * 3650), None),
            r(Some(epoch - day), Some(epoch)),
            r(Some(Utc::now() - TimeDelta::hours(1)), None),
        ]
    }
}

fn naive_counts(events: &[EventRecord], range: TimeRange) -> Vec<EventTypeCount> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events.iter().filter(|e| in_range(e.occurred_at, range)) {
        *counts.entry(&e.event_type).or_default() += 1;
    }
    let mut v: Vec<EventTypeCount> = counts
        .into_iter()
        .map(|(t, count)| EventTypeCount {
            event_type: t.to_string(),
            count,
        })
        .collect();
    // Byte order for ties: "B" < "LevelUp" < "Zeta" < "alpha" (a locale would differ).
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.event_type.as_bytes().cmp(b.event_type.as_bytes()))
    });
    v
}

async fn analytics_event_counts_follow_occurred_at(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let whole = naive_counts(&d.events, TimeRange::default());
    assert!(
        whole.windows(2).any(|w| w[0].count == w[1].count),
        "the dataset must have ties: {whole:?}"
    );
    for range in d.ranges() {
        assert_eq!(
            a.event_counts(d.player.id, range).await.unwrap(),
            naive_counts(&d.events, range),
            "player {range:?}"
        );
        assert_eq!(
            a.event_counts(d.order.id, range).await.unwrap(),
            naive_counts(&d.order_events, range),
            "order {range:?}"
        );
    }
    assert!(
        a.event_counts(d.empty.id, TimeRange::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.event_counts(Uuid::now_v7(), TimeRange::default())
            .await
            .unwrap()
            .is_empty()
    );
}

fn naive_series(
    events: &[EventRecord],
    interval: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    event_type: Option<&str>,
) -> Vec<(DateTime<Utc>, i64)> {
    let (s, e) = (start.timestamp_micros(), end.timestamp_micros());
    let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
    for ev in events {
        let t = ev.occurred_at.timestamp_micros();
        if t >= s && t < e && event_type.is_none_or(|x| x == ev.event_type) {
            *buckets.entry((t - s) / interval).or_default() += 1;
        }
    }
    buckets
        .into_iter()
        .map(|(k, n)| (start + TimeDelta::microseconds(k * interval), n))
        .collect()
}

type SeriesCase = (i64, DateTime<Utc>, DateTime<Utc>, Option<&'static str>);

async fn analytics_time_series_buckets_from_start(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let (base, day, hour) = (d.base, TimeDelta::days(1), 3_600_000_000_i64);
    let epoch = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
    // (interval in microseconds, start, end, event type)
    let cases: Vec<SeriesCase> = vec![
        (6 * hour, base, base + day * 5, None),
        (6 * hour, base, base + day * 5, Some("LevelUp")),
        (24 * hour, base - day, base + day * 6, None),
        // Buckets not aligned to anything, an interval that does not divide the range.
        (
            7_919_000_013,
            base + TimeDelta::minutes(37) + TimeDelta::microseconds(5),
            base + day * 3,
            None,
        ),
        // The end is exclusive and the start inclusive, to the microsecond.
        (
            hour,
            base + TimeDelta::microseconds(1),
            base + day * 5,
            None,
        ),
        (
            hour,
            base,
            base + day * 5 + TimeDelta::microseconds(1),
            Some("B"),
        ),
        (1, base, base + day * 5, Some("B")),
        (
            100 * 365 * 24 * hour,
            epoch - day * 365,
            Utc::now() + day,
            None,
        ),
        (24 * hour, epoch - day, epoch + day, None),
        (6 * hour, base, base + day * 5, Some("Nope")),
        (6 * hour, base + day * 3650, base + day * 3651, None),
    ];
    for (interval, start, end, event_type) in cases {
        let got = a
            .time_series(d.player.id, interval, start, end, event_type)
            .await
            .unwrap();
        let naive = naive_series(&d.events, interval, start, end, event_type);
        assert_eq!(got, naive, "{interval}us {start}..{end} {event_type:?}");
        let got = a
            .time_series(d.order.id, interval, start, end, event_type)
            .await
            .unwrap();
        let naive = naive_series(&d.order_events, interval, start, end, event_type);
        assert_eq!(
            got, naive,
            "order {interval}us {start}..{end} {event_type:?}"
        );
    }
    // The dataset exercises what it should: several non-empty buckets, and gaps between them.
    let series = naive_series(&d.events, 6 * hour, base, base + day * 5, None);
    assert!(series.len() > 5 && series.len() < 20, "{series:?}");
    assert!(
        a.time_series(d.empty.id, hour, base, base + day, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The statistics of `values` (None = field absent), computed the obvious way.
fn naive_stats(values: &[Option<Value>], top: usize) -> FieldStats {
    let present: Vec<&Value> = values.iter().flatten().collect();
    let numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
    let sum = (!numbers.is_empty()).then(|| numbers.iter().sum::<f64>());
    let mut frequency: BTreeMap<String, (Value, i64)> = BTreeMap::new();
    for v in present.iter().filter(|v| v.is_string() || v.is_boolean()) {
        frequency
            .entry(v.to_string())
            .or_insert(((*v).clone(), 0))
            .1 += 1;
    }
    // BTreeMap iterates in byte order of the JSON text; a stable sort by count keeps it for ties.
    let mut ranked: Vec<(Value, i64)> = frequency.into_values().collect();
    ranked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    ranked.truncate(top);
    FieldStats {
        count: present.len() as i64,
        missing: (values.len() - present.len()) as i64,
        min: numbers.iter().copied().reduce(f64::min),
        max: numbers.iter().copied().reduce(f64::max),
        sum,
        mean: sum.map(|s| s / numbers.len() as f64),
        top_values: ranked,
    }
}

fn pointer_value(state: &State, pointer: &str) -> Option<Value> {
    Value::Object(state.clone()).pointer(pointer).cloned()
}

async fn analytics_field_stats_over_current_states(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let states: Vec<&State> = d.instances.iter().map(|i| &i.state).collect();
    let pointers = [
        "/score",
        "/name",
        "/active",
        "/ratio",
        "/mixed",
        "/counter",
        "/big",
        "/zero",
        "/ctl",
        "/nested",
        "/nested/level",
        "/nested/a.b",
        "/nested/deep/x/1/y",
        "/nested/deep/x/0",
        "/tags",
        "/tags/0",
        "/tags/1",
        "/tags/9",
        "/q\"uote",
        "/br[0]",
        "/sl~1ash",
        "/til~0de",
        "/",
        "/ключ",
        "/score/x",
        "/name/0",
        "/missing",
        "/missing/deeper",
    ];
    for pointer in pointers {
        let values: Vec<Option<Value>> = states.iter().map(|s| pointer_value(s, pointer)).collect();
        for top in [10, 2, 0] {
            let got = a.field_stats(d.player.id, pointer, top).await.unwrap();
            assert_eq!(got, naive_stats(&values, top), "{pointer} top {top}");
        }
    }
    // Array indices are read as PostgreSQL's `#>` reads them: negative ones count from the end,
    // leading zeros, a sign and leading whitespace are accepted (unlike the RFC 6901 lookup of
    // the as_of path below, which finds nothing there).
    let element = |f: fn(&[Value]) -> Option<&Value>| -> Vec<Option<Value>> {
        states
            .iter()
            .map(|s| {
                s.get("tags")
                    .and_then(Value::as_array)
                    .and_then(|t| f(t))
                    .cloned()
            })
            .collect()
    };
    for (pointer, values) in [
        ("/tags/-1", element(|t| t.last())),
        (
            "/tags/-2",
            element(|t| t.len().checked_sub(2).and_then(|i| t.get(i))),
        ),
        ("/tags/01", element(|t| t.get(1))),
        ("/tags/+0", element(|t| t.first())),
        ("/tags/ 1", element(|t| t.get(1))),
        ("/tags/1 ", element(|_| None)),
        ("/tags/-0", element(|t| t.first())),
    ] {
        let got = a.field_stats(d.player.id, pointer, 10).await.unwrap();
        assert_eq!(got, naive_stats(&values, 10), "{pointer}");
    }
    // Ties among the top values are in byte order of their JSON text; nulls are present.
    let names = a.field_stats(d.player.id, "/name", 10).await.unwrap();
    assert_eq!(names.top_values[0], (json!("zed"), 2));
    assert_eq!(
        names.top_values[1..]
            .iter()
            .map(|(v, _)| v.clone())
            .collect::<Vec<_>>(),
        [json!("Bob"), json!("a\"b"), json!("bob"), json!("é")]
    );
    // By the JSON text, escapes included: `"A"` < `"\t"` < `"\u0001"` < `"~"` (the raw strings
    // would order the other way round).
    let ctl = a.field_stats(d.player.id, "/ctl", 10).await.unwrap();
    assert_eq!(
        ctl.top_values,
        [
            (json!("A"), 1),
            (json!("\t"), 1),
            (json!("\u{1}"), 1),
            (json!("~"), 1)
        ]
    );
    let active = a.field_stats(d.player.id, "/active", 10).await.unwrap();
    assert!(active.top_values.iter().all(|(v, _)| v.is_boolean()));
    let level = a
        .field_stats(d.player.id, "/nested/level", 10)
        .await
        .unwrap();
    assert_eq!(
        (level.count, level.missing),
        (3, 4),
        "a JSON null is present"
    );
    // PostgreSQL's numeric zero has no sign.
    let zero = a.field_stats(d.player.id, "/zero", 10).await.unwrap();
    for x in [zero.min, zero.max, zero.sum, zero.mean] {
        assert!(x == Some(0.0) && x.unwrap().is_sign_positive(), "{zero:?}");
    }
    // Other types, an empty type and an unknown one.
    let totals: Vec<Option<Value>> = vec![Some(json!(9))];
    assert_eq!(
        a.field_stats(d.order.id, "/total", 10).await.unwrap(),
        naive_stats(&totals, 10)
    );
    for id in [d.empty.id, Uuid::now_v7()] {
        assert_eq!(
            a.field_stats(id, "/score", 10).await.unwrap(),
            FieldStats::default()
        );
    }
}

/// The field in each instance's state as of `at` (recorded time), folded naively from every
/// event recorded by then, in instance id order.
fn naive_as_of(d: &Dataset, pointer: &str, at: DateTime<Utc>) -> Vec<Option<Value>> {
    let at = stored_micros(at);
    let mut by_instance: BTreeMap<String, State> = BTreeMap::new();
    for i in &d.instances {
        let mut events: Vec<&EventRecord> = d
            .events
            .iter()
            .filter(|e| e.instance_id == i.id && e.recorded_at.timestamp_micros() <= at)
            .collect();
        if events.is_empty() {
            continue;
        }
        events.sort_by_key(|e| e.version);
        let state = events.iter().fold(State::new(), |s, e| {
            apply_event(&s, &e.payload, e.mode).unwrap()
        });
        by_instance.insert(i.id.to_string(), state);
    }
    by_instance
        .values()
        .map(|s| pointer_value(s, pointer))
        .collect()
}

async fn analytics_field_values_as_of_fold_from_snapshots(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let created = d.late.created_at;
    let us = TimeDelta::microseconds(1);
    let ns = TimeDelta::nanoseconds(1);
    let moments = [
        d.base,
        d.between,
        created - us,
        created,
        created + ns * 999,
        created - ns,
        Utc::now() + TimeDelta::hours(1),
    ];
    let pointers = [
        "/score",
        "/name",
        "/counter",
        "/active",
        "/ratio",
        "/nested/level",
        "/tags/0",
        "/tags/-1",
        "/sl~1ash",
        "/",
        "/missing",
    ];
    for at in moments {
        for pointer in pointers {
            let got = a
                .field_stats_as_of(d.player.id, pointer, at, 10)
                .await
                .unwrap();
            let naive = naive_as_of(&d, pointer, at);
            assert_eq!(
                got,
                FieldStats::from_values(naive.iter().map(Option::as_ref), 10),
                "{pointer} as of {at}"
            );
        }
    }
    // What the moments select: nothing before any instance, six between the phases, the late
    // instance from its creation on, and the current states after everything.
    let count = |at| async move {
        let stats = a
            .field_stats_as_of(d.player.id, "/name", at, 10)
            .await
            .unwrap();
        stats.count + stats.missing
    };
    assert_eq!(count(d.base).await, 0);
    assert_eq!(count(d.between).await, 6);
    assert_eq!(count(created - us).await, 6);
    assert_eq!(count(created).await, 7);
    let mut current: Vec<&InstanceRecord> = d.instances.iter().collect();
    current.sort_by_key(|i| i.id.to_string());
    let now = Utc::now() + TimeDelta::hours(1);
    let current: Vec<Option<Value>> = current
        .iter()
        .map(|i| pointer_value(&i.state, "/score"))
        .collect();
    assert_eq!(
        a.field_stats_as_of(d.player.id, "/score", now, 10)
            .await
            .unwrap(),
        FieldStats::from_values(current.iter().map(Option::as_ref), 10)
    );
    assert_ne!(
        naive_as_of(&d, "/name", d.between),
        naive_as_of(&d, "/name", now),
        "phase two must change something"
    );
    assert_eq!(
        a.field_stats_as_of(d.empty.id, "/score", now, 10)
            .await
            .unwrap(),
        FieldStats::default()
    );
}

fn naive_most_active(d: &Dataset, range: TimeRange, limit: usize) -> Vec<ActiveInstance> {
    let mut per: HashMap<Uuid, (i64, DateTime<Utc>)> = HashMap::new();
    for e in d.events.iter().filter(|e| in_range(e.occurred_at, range)) {
        let entry = per.entry(e.instance_id).or_insert((0, e.occurred_at));
        entry.0 += 1;
        entry.1 = entry.1.max(e.occurred_at);
    }
    let mut v: Vec<ActiveInstance> = per
        .into_iter()
        .map(|(id, (n, last))| ActiveInstance {
            instance_id: id,
            external_id: d
                .instances
                .iter()
                .find(|i| i.id == id)
                .unwrap()
                .external_id
                .clone(),
            event_count: n,
            last_event_at: last,
        })
        .collect();
    // Ties by the id's lowercase text, byte by byte.
    v.sort_by(|a, b| {
        b.event_count
            .cmp(&a.event_count)
            .then_with(|| a.instance_id.to_string().cmp(&b.instance_id.to_string()))
    });
    v.truncate(limit);
    v
}

async fn analytics_most_active_ranks_with_ties_by_id(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let whole = naive_most_active(&d, TimeRange::default(), 100);
    assert!(
        whole
            .windows(2)
            .any(|w| w[0].event_count == w[1].event_count),
        "the dataset must have ties: {whole:?}"
    );
    for range in d.ranges() {
        for limit in [1, 2, 3, 100] {
            assert_eq!(
                a.most_active(d.player.id, range, limit).await.unwrap(),
                naive_most_active(&d, range, limit),
                "{range:?} limit {limit}"
            );
        }
    }
    let orders = a
        .most_active(d.order.id, TimeRange::default(), 10)
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].event_count, d.order_events.len() as i64);
    assert!(
        a.most_active(d.empty.id, TimeRange::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn naive_summary(instances: i64, events: &[EventRecord], since: DateTime<Utc>) -> TypeSummary {
    let mut types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
    types.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    types.dedup();
    TypeSummary {
        instance_count: instances,
        event_count: events.len() as i64,
        first_event_at: events.iter().map(|e| e.occurred_at).min(),
        last_event_at: events.iter().map(|e| e.occurred_at).max(),
        events_since: events
            .iter()
            .filter(|e| e.occurred_at.timestamp_micros() >= stored_micros(since))
            .count() as i64,
        event_types: types,
    }
}

async fn analytics_summary_totals(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    let on_event = d.base + TimeDelta::days(5);
    for since in [
        d.base - TimeDelta::days(1000),
        d.base + TimeDelta::days(2),
        on_event,
        on_event + TimeDelta::nanoseconds(999),
        on_event + TimeDelta::microseconds(1),
        Utc::now() - TimeDelta::hours(24),
        Utc::now() + TimeDelta::days(1),
    ] {
        assert_eq!(
            a.summary(d.player.id, since).await.unwrap(),
            naive_summary(7, &d.events, since),
            "player since {since}"
        );
        assert_eq!(
            a.summary(d.order.id, since).await.unwrap(),
            naive_summary(1, &d.order_events, since),
            "order since {since}"
        );
    }
    let types = a.summary(d.player.id, d.base).await.unwrap().event_types;
    assert_eq!(
        types,
        [
            "AchievementUnlocked",
            "B",
            "InstanceCreated",
            "LevelUp",
            "Renamed",
            "ScoreIncreased",
            "Zeta",
            "alpha"
        ]
    );
    for id in [d.empty.id, Uuid::now_v7()] {
        assert_eq!(
            a.summary(id, d.base).await.unwrap(),
            TypeSummary {
                instance_count: 0,
                event_count: 0,
                first_event_at: None,
                last_event_at: None,
                events_since: 0,
                event_types: vec![],
            }
        );
    }
}

/// One generated question: a range, a bucket width and an event type.
#[derive(Debug, Clone)]
struct RangeCase {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    interval: i64,
    event_type: Option<&'static str>,
}

/// Ranges around the dataset's five days, half of their bounds on whole hours (where the
/// rollups answer) and half anywhere to the microsecond (where the edges come from the events),
/// some shorter than two hours (within one hour, or across one boundary); buckets of whole hours
/// (rollups) or of any width (raw events).
fn range_cases(base: DateTime<Utc>, n: usize) -> Vec<RangeCase> {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    const HOUR: i64 = 3_600_000_000;
    let day = 24 * HOUR;
    let instant = prop_oneof![
        (-48_i64..7 * 24).prop_map(move |h| h * HOUR),
        (-2 * day..7 * day),
    ];
    let length = prop_oneof![
        (1_i64..8 * 24).prop_map(move |h| h * HOUR),
        (1..8 * day),
        (1..2 * HOUR),
    ];
    let interval = prop_oneof![
        prop::sample::select(vec![HOUR, 2 * HOUR, 6 * HOUR, 24 * HOUR, 7 * day]),
        (1_000_000_i64..2 * day),
    ];
    let event_type = prop::option::of(prop::sample::select(EVENT_TYPES.to_vec()));
    let strategy = (instant, length, interval, event_type);
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|_| {
            let (s, len, interval, event_type) = strategy.new_tree(&mut runner).unwrap().current();
            RangeCase {
                start: base + TimeDelta::microseconds(s),
                end: base + TimeDelta::microseconds(s + len),
                interval,
                event_type,
            }
        })
        .collect()
}

/// The rollups (hourly counts kept by the store's triggers) give exactly the raw events'
/// answers: event counts over ranges with both, one or no bound, time series of any bucket and
/// the summary since any moment, for generated ranges whose bounds fall on or off whole hours.
async fn analytics_rollups_answer_as_the_raw_events_for_any_range(b: Backend) {
    let d = dataset(b).await;
    let a = d.f.analytics.as_ref();
    // A dense type beside the dataset's sparse one: 600 events over three days, several in
    // most hours, so the partial hours at a range's edges hold events on both sides.
    let s = d.f.store.as_ref();
    let dense = new_type(s, "dense").await;
    let inst = create_with_random_id(s, dense.id, "dense-1", json!({"n": 0})).await;
    let mut offsets: Vec<i64> = (0..600_i64)
        .map(|i| (i * 7_919_000_003 + i * i * 104_729) % (72 * 3_600_000_000))
        .collect();
    offsets.sort_unstable();
    for chunk in offsets.chunks(100) {
        let evs = chunk
            .iter()
            .enumerate()
            .map(|(j, &us)| Ev {
                event_type: EVENT_TYPES[j % 3].into(),
                occurred_at: Some(d.base + TimeDelta::microseconds(us)),
                ..ev("", json!({"n": us}))
            })
            .collect();
        appended(s, inst.id, evs).await;
    }
    let dense_events = all_events(d.f.history.as_ref(), inst.id).await;
    assert_eq!(dense_events.len(), 601);
    let cases = range_cases(d.base, 150);
    let on_hours = cases
        .iter()
        .filter(|c| c.start.timestamp() % 3600 == 0 && c.interval % 3_600_000_000 == 0)
        .count();
    assert!(
        on_hours > 10,
        "too few cases the rollups answer: {on_hours}"
    );
    for c in cases {
        let ranges = [
            TimeRange {
                start: Some(c.start),
                end: Some(c.end),
            },
            TimeRange {
                start: Some(c.start),
                end: None,
            },
            TimeRange {
                start: None,
                end: Some(c.end),
            },
        ];
        for (id, events, instances) in [(d.player.id, &d.events, 7), (dense.id, &dense_events, 1)] {
            for range in ranges {
                assert_eq!(
                    a.event_counts(id, range).await.unwrap(),
                    naive_counts(events, range),
                    "{range:?}"
                );
            }
            assert_eq!(
                a.time_series(id, c.interval, c.start, c.end, c.event_type)
                    .await
                    .unwrap(),
                naive_series(events, c.interval, c.start, c.end, c.event_type),
                "{c:?}"
            );
            assert_eq!(
                a.summary(id, c.start).await.unwrap(),
                naive_summary(instances, events, c.start),
                "since {}",
                c.start
            );
        }
    }
}
