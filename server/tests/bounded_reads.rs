//! Long reads are bounded, on both backends: field timelines page (and start from a snapshot,
//! not from version 1), pages stop before the response size cap, Subscribe replays a long
//! history page by page with no gap and no duplicate, and a Subscribe ends when its client goes
//! away even if nothing ever matches again.

mod common;

use std::time::Duration;

use common::{Backend, Clients, Store, TestServer, for_each_backend, js, json, st};
use prost::Message;
use temporal_state_proto::v1 as pb;
use temporal_state_server::app::{App, DEFAULT_MAX_RESPONSE_BYTES};

for_each_backend!(
    timeline_pages_concatenate_to_the_whole,
    late_timeline_starts_from_a_snapshot,
    pages_stop_before_the_response_cap,
    long_replay_has_no_gap_and_no_duplicate,
    subscription_ends_when_the_client_goes_away,
);

/// Rewrites a stored event's payload behind the server's back, as damage would.
async fn tamper(store: &Store, instance_id: &str, version: i64, payload: serde_json::Value) {
    match store {
        Store::Postgres(db) => {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let id = uuid::Uuid::parse_str(instance_id).unwrap();
            let n = client
                .execute(
                    "UPDATE events SET payload = $3 WHERE instance_id = $1 AND version = $2",
                    &[&id, &version, &payload],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        Store::Embedded(dir) => {
            let path = dir
                .path()
                .join(temporal_state_server::adapters::embedded::DB_FILE);
            let id = instance_id.to_string();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                let n = conn
                    .execute(
                        "UPDATE events SET payload = ?3 WHERE instance_id = ?1 AND version = ?2",
                        rusqlite::params![id, version, payload.to_string()],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            })
            .await
            .unwrap();
        }
    }
}

/// Appends `payloads` as `event_type` events, in batches.
async fn append(c: &mut Clients, id: &str, event_type: &str, payloads: Vec<serde_json::Value>) {
    for chunk in payloads.chunks(1000) {
        c.events
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: id.into(),
                expected_version: None,
                events: chunk
                    .iter()
                    .map(|p| pb::EventInput {
                        event_type: event_type.into(),
                        payload: Some(st(p.clone())),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// A field's timeline as (version, value) pairs, page by page with `page_size`; also returns
/// how many pages it took.
async fn timeline(
    c: &mut Clients,
    mut req: pb::GetFieldTimelineRequest,
    page_size: i32,
) -> (Vec<(i64, Option<serde_json::Value>)>, usize) {
    req.page_size = page_size;
    let mut points = Vec::new();
    let mut pages = 0;
    loop {
        let page = c
            .queries
            .get_field_timeline(req.clone())
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.points.len() <= page_size.max(1) as usize);
        points.extend(page.points.into_iter().map(|p| {
            let value = p.value.map(|v| {
                js(&Some(prost_types::Struct {
                    fields: [("v".to_string(), v)].into(),
                }))["v"]
                    .clone()
            });
            (p.version, value)
        }));
        if page.next_page_token.is_empty() {
            return (points, pages);
        }
        req.page_token = page.next_page_token;
    }
}

/// The timeline computed by hand from the whole history.
fn expected_timeline(
    history: &[pb::Event],
    field: &str,
    versions: std::ops::RangeInclusive<i64>,
) -> Vec<(i64, Option<serde_json::Value>)> {
    let mut state = serde_json::Map::new();
    let mut last = None;
    let mut out = Vec::new();
    for e in history {
        // Every event in these tests is a top-level merge of plain values.
        for (k, v) in js(&e.payload).as_object().unwrap() {
            state.insert(k.clone(), v.clone());
        }
        let now = state.get(field).cloned();
        if now != last {
            if versions.contains(&e.version) {
                out.push((e.version, now.clone()));
            }
            last = now;
        }
    }
    out
}

async fn whole_history(c: &mut Clients, id: &str) -> Vec<pb::Event> {
    let mut req = pb::GetHistoryRequest {
        instance_id: id.into(),
        page_size: 1000,
        ..Default::default()
    };
    let mut events = Vec::new();
    loop {
        let page = c
            .queries
            .get_history(req.clone())
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        req.page_token = page.next_page_token;
    }
}

async fn timeline_pages_concatenate_to_the_whole(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let id = c.create_instance("meter", "m", json!({"n": 0})).await.id;
    // 1200 versions: /n changes every third one, /flag now and then.
    let payloads = (1..1200)
        .map(|v| json!({"n": v / 3, "flag": (v / 97) % 2 == 0, "noise": v}))
        .collect();
    append(&mut c, &id, "Tick", payloads).await;
    let history = whole_history(&mut c, &id).await;
    assert_eq!(history.len(), 1200);
    let req = |field: &str| pb::GetFieldTimelineRequest {
        instance_id: id.clone(),
        field: field.into(),
        ..Default::default()
    };
    for field in ["n", "flag"] {
        let expected = expected_timeline(&history, field, 1..=1200);
        let (one_page, pages) = timeline(&mut c, req(field), 1000).await;
        if expected.len() <= 1000 {
            assert_eq!(pages, 1, "{field}");
        }
        assert_eq!(one_page, expected, "{field}");
        for size in [1, 7, 100] {
            let (paged, pages) = timeline(&mut c, req(field), size).await;
            assert_eq!(paged, expected, "{field} by pages of {size}");
            assert!(pages >= expected.len().div_ceil(size as usize));
        }
    }
    // Ranges page alike: versions, and times (the versions between two recorded moments).
    let ranged = pb::GetFieldTimelineRequest {
        from_version: Some(250),
        to_version: Some(777),
        ..req("n")
    };
    let (paged, _) = timeline(&mut c, ranged.clone(), 13).await;
    assert_eq!(paged, expected_timeline(&history, "n", 250..=777));
    let timed = pb::GetFieldTimelineRequest {
        start_time: history[299].recorded_at,
        end_time: history[899].recorded_at,
        ..req("n")
    };
    let within: Vec<i64> = history
        .iter()
        .filter(|e| {
            let t = |ts: &Option<prost_types::Timestamp>| {
                let ts = ts.unwrap();
                (ts.seconds, ts.nanos)
            };
            t(&e.recorded_at) >= t(&history[299].recorded_at)
                && t(&e.recorded_at) <= t(&history[899].recorded_at)
        })
        .map(|e| e.version)
        .collect();
    let lo = *within.first().unwrap();
    let hi = *within.last().unwrap();
    let (paged, _) = timeline(&mut c, timed.clone(), 9).await;
    assert_eq!(paged, expected_timeline(&history, "n", lo..=hi));
    let (whole, _) = timeline(&mut c, timed, 1000).await;
    assert_eq!(paged, whole);
    // A token that is not one is refused as the client's mistake.
    let bad = c
        .queries
        .get_field_timeline(pb::GetFieldTimelineRequest {
            page_token: "bm90LWEtdmVyc2lvbg".into(), // "not-a-version"
            ..req("n")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
}

/// A timeline from a late start time begins at the snapshot before it: damage early in the
/// history (which folding from version 1 would run into) does not change it.
async fn late_timeline_starts_from_a_snapshot(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let id = c
        .create_instance("meter", "m", json!({"tag": "a", "n": 0}))
        .await
        .id;
    // v2 sets tag "b"; v3..=2999 count; v3000 sets tag "b" again (no change); then more counting.
    let mut payloads = vec![json!({"tag": "b"})];
    payloads.extend((3..3000).map(|v| json!({"n": v})));
    payloads.push(json!({"tag": "b"}));
    payloads.extend((3001..=3050).map(|v| json!({"n": v})));
    append(&mut c, &id, "Tick", payloads).await;
    let history = whole_history(&mut c, &id).await;
    assert_eq!(history.len(), 3050);

    let late = pb::GetFieldTimelineRequest {
        instance_id: id.clone(),
        field: "tag".into(),
        start_time: history[2949].recorded_at,
        ..Default::default()
    };
    let n_late = pb::GetFieldTimelineRequest {
        field: "n".into(),
        ..late.clone()
    };
    let (before, _) = timeline(&mut c, late.clone(), 100).await;
    assert_eq!(before, vec![], "tag does not change after version 2");
    let (n_before, _) = timeline(&mut c, n_late.clone(), 100).await;
    assert_eq!(n_before.last(), Some(&(3050, Some(json!(3050)))));

    // Damage version 2: a fold from version 1 now believes tag was "TAMPERED" until v3000.
    tamper(&store, &id, 2, json!({"tag": "TAMPERED"})).await;
    let (from_one, _) = timeline(
        &mut c,
        pb::GetFieldTimelineRequest {
            start_time: None,
            ..late.clone()
        },
        100,
    )
    .await;
    assert_eq!(
        from_one,
        vec![
            (1, Some(json!("a"))),
            (2, Some(json!("TAMPERED"))),
            (3000, Some(json!("b")))
        ],
        "the damage is visible to a fold from version 1"
    );
    // From a late start the fold begins at the snapshot before it (taken before the damage):
    // the answer is the same as before.
    let (after, _) = timeline(&mut c, late, 100).await;
    assert_eq!(after, before);
    let (n_after, _) = timeline(&mut c, n_late, 100).await;
    assert_eq!(n_after, n_before);
}

/// A ~900 KB string: four of them pass the page budget, none passes a limit on its own.
fn blob(i: usize) -> String {
    format!("{i:04}").repeat(225_000)
}

/// Big states and events: every page of GetHistory, GetFieldTimeline and ListInstances
/// encodes under the response cap (the client's default 4 MiB decoding limit would refuse
/// bigger), has at least one item, and the pages together are everything.
async fn pages_stop_before_the_response_cap(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("bulky", json!({"type": "object"})).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            c.create_instance("bulky", &format!("b{i}"), json!({"blob": blob(i)}))
                .await
                .id,
        );
    }
    let id = ids[0].clone();
    for i in 1..12 {
        c.apply(&id, "Grown", json!({"blob": blob(i)}))
            .await
            .unwrap();
    }
    let cap = DEFAULT_MAX_RESPONSE_BYTES;

    // GetHistory: 12 events of ~900 KB.
    let mut req = pb::GetHistoryRequest {
        instance_id: id.clone(),
        page_size: 1000,
        ..Default::default()
    };
    let mut versions = Vec::new();
    let mut pages = 0;
    loop {
        let page = c
            .queries
            .get_history(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= cap, "{} bytes", page.encoded_len());
        assert!(!page.events.is_empty());
        pages += 1;
        versions.extend(page.events.iter().map(|e| e.version));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(versions, (1..=12).collect::<Vec<_>>());
    assert!(pages >= 3, "{pages} pages");

    // GetFieldTimeline: the blob changes at every version.
    let mut req = pb::GetFieldTimelineRequest {
        instance_id: id.clone(),
        field: "blob".into(),
        page_size: 1000,
        ..Default::default()
    };
    let mut versions = Vec::new();
    loop {
        let page = c
            .queries
            .get_field_timeline(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= cap, "{} bytes", page.encoded_len());
        assert!(!page.points.is_empty());
        versions.extend(page.points.iter().map(|p| p.version));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(versions, (1..=12).collect::<Vec<_>>());

    // ListInstances: 8 states of ~900 KB.
    let mut req = pb::ListInstancesRequest {
        entity_type: "bulky".into(),
        page_size: 1000,
        ..Default::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = c
            .instances
            .list_instances(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= cap, "{} bytes", page.encoded_len());
        assert!(!page.instances.is_empty());
        listed.extend(page.instances.into_iter().map(|i| i.external_id));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(listed, (0..8).map(|i| format!("b{i}")).collect::<Vec<_>>());
}

/// Replaying a long history (several replay pages) while a writer goes on: every version once,
/// in order, then live.
async fn long_replay_has_no_gap_and_no_duplicate(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let id = c.create_instance("meter", "m", json!({"n": 0})).await.id;
    append(
        &mut c,
        &id,
        "Tick",
        (1..3500).map(|n| json!({"n": n})).collect(),
    )
    .await;
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: id.clone(),
            from_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let writer = {
        let mut c = c.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for n in 3500..3600 {
                c.apply(&id, "Tick", json!({"n": n})).await.unwrap();
            }
        })
    };
    let mut versions = Vec::new();
    while versions.last() != Some(&3600) {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("events keep arriving")
            .expect("no error")
            .expect("stream open")
            .event
            .unwrap();
        assert_eq!(js(&e.payload), json!({"n": e.version - 1}));
        versions.push(e.version);
    }
    writer.await.unwrap();
    assert_eq!(versions, (1..=3600).collect::<Vec<_>>());
}

/// Waits (up to a generous bound, polling) until the server has `want` open subscriptions.
async fn open_subscriptions_become(app: &App, want: usize) {
    for _ in 0..400 {
        if app.subscriptions.open() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "open subscriptions stayed at {}, expected {want}",
        app.subscriptions.open()
    );
}

/// A Subscribe whose filter never matches again ends on the server once its client goes away,
/// while writes to the same type go on (so the bus is busy, just not for it).
async fn subscription_ends_when_the_client_goes_away(backend: Backend) {
    let store = Store::create(backend).await;
    let (server, app) = TestServer::start_keeping_app(&store.flags()).await;
    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let id = c.create_instance("meter", "m", json!({"n": 0})).await.id;
    assert_eq!(app.subscriptions.open(), 0);

    // One live subscription that never matches, one replaying, from another connection each.
    let mut subscribers = Vec::new();
    for request in [
        pb::SubscribeRequest {
            entity_type: "meter".into(),
            event_types: vec!["NeverHappens".into()],
            ..Default::default()
        },
        pb::SubscribeRequest {
            instance_id: id.clone(),
            event_types: vec!["NeverHappens".into()],
            from_version: Some(1),
            ..Default::default()
        },
    ] {
        let mut own = server.clients().await;
        let stream = own.events.subscribe(request).await.unwrap().into_inner();
        subscribers.push((own, stream));
    }
    open_subscriptions_become(&app, 2).await;
    c.apply(&id, "Tick", json!({"n": 1})).await.unwrap();

    // The first client hangs up (its stream and connection dropped) with nothing in flight.
    let (first, second) = {
        let mut it = subscribers.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    drop(first);
    open_subscriptions_become(&app, 1).await;
    // Dropping only the stream (the connection stays, shared with other calls) ends it too.
    let (still_connected, stream) = second;
    drop(stream);
    open_subscriptions_become(&app, 0).await;
    let mut still_connected = still_connected;
    still_connected
        .apply(&id, "Tick", json!({"n": 2}))
        .await
        .expect("the connection still works");
}
