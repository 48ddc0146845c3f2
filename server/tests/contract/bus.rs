//! The `EventBus` contract, on NATS (a nats-server of the test's own, fed the way the relay
//! publishes, `nats_bus::`) and the in-process bus (fed through `committed`, `local_bus::`).

use std::sync::Arc;
use std::time::Duration;

use crate::common::{for_each_backend, json};
use chrono::{TimeDelta, TimeZone, Utc};
use futures::StreamExt;
use temporal_state_server::adapters::memory::LocalBus;
use temporal_state_server::adapters::nats::{NatsBus, WireEvent, subject as nats_subject};
use temporal_state_server::domain::ApplyMode;
use temporal_state_server::ports::{
    BusError, EventBus, EventRecord, LiveEvent, LiveFilter, LiveStream,
};
use uuid::Uuid;

use super::fixture::obj;

for_each_backend!(
    BusBackend { nats_bus => Nats, local_bus => Local };
    bus_filters_select_events,
    bus_preserves_publication_order,
    bus_laggard_is_cut_off_without_blocking_anyone,
    bus_laggard_reading_late_still_learns_it_lagged,
);

// ---------------------------------------------------------------------------------------------
// EventBus: NATS (a nats-server of the test's own, fed the way the relay publishes) and the
// in-process bus (fed through `committed`).

#[derive(Debug, Clone, Copy)]
enum BusBackend {
    Nats,
    Local,
}

struct BusFixture {
    bus: Arc<dyn EventBus>,
    feed: Feed,
    _nats: Option<crate::common::procs::Nats>,
}

enum Feed {
    Local,
    /// Publishes on the bus's own connection, so a subscription made before is in place.
    Nats(async_nats::Client),
}

impl BusBackend {
    async fn open(self, buffer: usize) -> BusFixture {
        match self {
            BusBackend::Nats => {
                let nats = crate::common::procs::Nats::start();
                let client = async_nats::connect(nats.url())
                    .await
                    .expect("connect to nats");
                let bus =
                    NatsBus::new(client.clone(), Arc::new(tokio::sync::Notify::new()), buffer);
                BusFixture {
                    bus: Arc::new(bus),
                    feed: Feed::Nats(client),
                    _nats: Some(nats),
                }
            }
            BusBackend::Local => BusFixture {
                bus: Arc::new(LocalBus::new(buffer)),
                feed: Feed::Local,
                _nats: None,
            },
        }
    }
}

impl BusFixture {
    /// Commits `events`: hands them to the bus and, for NATS, publishes them as the relay does.
    async fn publish(&self, events: &[LiveEvent]) {
        self.bus.committed(events).await;
        if let Feed::Nats(client) = &self.feed {
            for live in events {
                let body = serde_json::to_vec(&WireEvent::from_live(live)).unwrap();
                client
                    .publish(
                        nats_subject(&live.entity_type_name, live.event.instance_id),
                        body.into(),
                    )
                    .await
                    .expect("publish");
            }
            client.flush().await.expect("flush");
        }
    }

    async fn subscribe(&self, filter: LiveFilter) -> LiveStream {
        let stream = self.bus.subscribe(filter).await.expect("subscribe");
        if let Feed::Nats(client) = &self.feed {
            // The subscription has reached the server before anything is published.
            client.flush().await.expect("flush");
        }
        stream
    }
}

fn live(type_name: &str, instance_id: Uuid, event_type: &str, version: i64) -> LiveEvent {
    let at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(version);
    LiveEvent {
        entity_type_name: type_name.into(),
        event: EventRecord {
            event_id: Uuid::now_v7().to_string(),
            instance_id,
            entity_type_id: Uuid::nil(),
            event_type: event_type.into(),
            version,
            payload: obj(json!({"v": version, "nested": {"x": [1, null]}})),
            metadata: obj(json!({"by": "contract"})),
            mode: ApplyMode::MergePatch,
            recorded_at: at,
            occurred_at: at - TimeDelta::days(1),
            recorded_by: "bus writer".into(),
            schema_version: 1,
            position: 0,
        },
    }
}

/// The next `n` items of a stream, each within a few seconds.
async fn next_events(stream: &mut LiveStream, n: usize, what: &str) -> Vec<LiveEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            other => panic!("{what}: after {} of {n} events: {other:?}", out.len()),
        }
    }
    out
}

/// Nothing more arrives for a while.
async fn assert_quiet(stream: &mut LiveStream, what: &str) {
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "{what}: unexpected {extra:?}");
}

async fn bus_filters_select_events(b: BusBackend) {
    let f = b.open(1024).await;
    let (a1, a2, b1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let before = vec![live("alpha_t", a1, "X", 1)];
    // Not delivered to anyone: published before they subscribed.
    f.publish(&before).await;

    let filter = |t: Option<&str>, i: Option<Uuid>, types: &[&str]| LiveFilter {
        entity_type_name: t.map(String::from),
        instance_id: i,
        event_types: types.iter().map(|s| s.to_string()).collect(),
    };
    let filters = vec![
        filter(None, None, &[]),
        filter(Some("alpha_t"), None, &[]),
        filter(None, Some(a2), &[]),
        filter(None, None, &["X", "Z"]),
        filter(Some("alpha_t"), None, &["Y"]),
        filter(Some("beta_t"), Some(b1), &["Z"]),
        filter(Some("alpha_t"), Some(b1), &[]),
        filter(None, None, &["Never"]),
    ];
    let mut streams = Vec::new();
    for flt in &filters {
        streams.push(f.subscribe(flt.clone()).await);
    }
    let mut published = Vec::new();
    for batch in 0..3 {
        let mut events = Vec::new();
        for j in 0..20_i64 {
            let n = batch * 20 + j;
            let (t, i) = match n % 3 {
                0 => ("alpha_t", a1),
                1 => ("alpha_t", a2),
                _ => ("beta_t", b1),
            };
            events.push(live(t, i, ["X", "Y", "Z"][(n % 5 % 3) as usize], n + 2));
        }
        f.publish(&events).await;
        published.extend(events);
    }
    for (flt, stream) in filters.iter().zip(streams.iter_mut()) {
        let expected: Vec<LiveEvent> = published
            .iter()
            .filter(|e| {
                flt.entity_type_name
                    .as_deref()
                    .is_none_or(|t| t == e.entity_type_name)
                    && flt.instance_id.is_none_or(|i| i == e.event.instance_id)
                    && (flt.event_types.is_empty() || flt.event_types.contains(&e.event.event_type))
            })
            .cloned()
            .collect();
        let what = format!("{flt:?}");
        let got = next_events(stream, expected.len(), &what).await;
        assert_eq!(got, expected, "{what}");
    }
    // And nothing more, for anyone (checked together: one quiet period for all).
    futures::future::join_all(
        filters
            .iter()
            .zip(streams.iter_mut())
            .map(|(flt, stream)| async move { assert_quiet(stream, &format!("{flt:?}")).await }),
    )
    .await;
    // The filters chosen select something, and not everything.
    assert!(published.iter().any(|e| e.event.instance_id == a2));
}

async fn bus_preserves_publication_order(b: BusBackend) {
    const EVENTS: i64 = 2000;
    let f = b.open(4096).await;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let filters = [
        LiveFilter::default(),
        LiveFilter {
            instance_id: Some(ids[1]),
            ..Default::default()
        },
        LiveFilter {
            entity_type_name: Some("beta_t".into()),
            ..Default::default()
        },
    ];
    let published: Vec<LiveEvent> = (0..EVENTS)
        .map(|n| {
            let k = (n * 7 % 4) as usize;
            live(if k < 2 { "alpha_t" } else { "beta_t" }, ids[k], "E", n + 1)
        })
        .collect();
    let mut readers = Vec::new();
    for flt in filters {
        let expected: Vec<LiveEvent> = published
            .iter()
            .filter(|e| {
                flt.entity_type_name
                    .as_deref()
                    .is_none_or(|t| t == e.entity_type_name)
                    && flt.instance_id.is_none_or(|i| i == e.event.instance_id)
            })
            .cloned()
            .collect();
        let mut stream = f.subscribe(flt).await;
        readers.push(tokio::spawn(async move {
            let got = next_events(&mut stream, expected.len(), "reader").await;
            assert!(got == expected, "events out of order or altered");
            got.len()
        }));
    }
    let started = std::time::Instant::now();
    for chunk in published.chunks(100) {
        f.publish(chunk).await;
    }
    let mut received = Vec::new();
    for r in readers {
        received.push(r.await.unwrap());
    }
    eprintln!(
        "{b:?}: {EVENTS} events to 3 subscribers ({received:?}) in {:?}",
        started.elapsed()
    );
}

/// Reads a subscriber that fell behind to its end: at most `buffer` of the published events, in
/// order, then `Lagged`, then the end of the stream.
async fn assert_cut_off(stream: &mut LiveStream, published: &[LiveEvent], buffer: usize) {
    let mut delivered = Vec::new();
    let lagged = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) => delivered.push(e),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!(
                "the stream ended without Lagged after {} events",
                delivered.len()
            ),
            Err(_) => panic!("the laggard got neither Lagged nor its end within 5 s"),
        }
    };
    assert!(
        matches!(lagged, BusError::Lagged(n) if n == buffer as u64),
        "{lagged:?}"
    );
    assert!(
        delivered.len() <= buffer,
        "{} events delivered",
        delivered.len()
    );
    // What was delivered is a subsequence of what was published, in order.
    let mut rest = published.iter();
    for e in &delivered {
        assert!(
            rest.any(|p| p == e),
            "event {} out of order or unknown",
            e.event.version
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(None) => {}
        other => panic!("the stream must end after Lagged, got {other:?}"),
    }
}

async fn bus_laggard_is_cut_off_without_blocking_anyone(b: BusBackend) {
    const BUFFER: usize = 8;
    let f = b.open(BUFFER).await;
    let instance = Uuid::now_v7();
    let mut laggard = f.subscribe(LiveFilter::default()).await;
    let mut attentive = f.subscribe(LiveFilter::default()).await;
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0_usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(item) = attentive.next().await {
            got.push(item.expect("the attentive subscriber never lags"));
            let _ = seen_tx.send(got.len());
            if got.len() == 80 {
                break;
            }
        }
        got
    });
    let mut published = Vec::new();
    for chunk in 0..20_i64 {
        let events: Vec<LiveEvent> = (0..4)
            .map(|j| live("alpha_t", instance, "E", chunk * 4 + j + 1))
            .collect();
        // The laggard reads nothing until every chunk is published: a publication that waited
        // for it would never end. The bound turns that hang into a failure (no clock threshold:
        // a slow machine only takes longer).
        tokio::time::timeout(Duration::from_secs(30), f.publish(&events))
            .await
            .expect("a publication waited for a subscriber that does not read");
        published.extend(events);
        // The attentive subscriber keeps up (so only the laggard falls behind).
        let total = published.len();
        tokio::time::timeout(Duration::from_secs(5), seen_rx.wait_for(|n| *n >= total))
            .await
            .expect("the attentive subscriber keeps receiving")
            .unwrap();
    }
    assert_eq!(reader.await.unwrap(), published);
    assert_cut_off(&mut laggard, &published, BUFFER).await;
}

async fn bus_laggard_reading_late_still_learns_it_lagged(b: BusBackend) {
    const BUFFER: usize = 4;
    let f = b.open(BUFFER).await;
    let instance = Uuid::now_v7();
    let mut laggard = f.subscribe(LiveFilter::default()).await;
    let published: Vec<LiveEvent> = (1..=20)
        .map(|v| live("alpha_t", instance, "E", v))
        .collect();
    // Nobody reads: a publication waiting for the laggard would never end.
    tokio::time::timeout(Duration::from_secs(30), f.publish(&published))
        .await
        .expect("a publication waited for a subscriber that does not read");
    // Long past any grace period an adapter might give a slow reader.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_cut_off(&mut laggard, &published, BUFFER).await;
}
