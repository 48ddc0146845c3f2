//! QueryService.ReadEvents and Subscribe from a position, on PostgreSQL and on the embedded
//! store: paging and filters, the position every write answers with, erased instances, and
//! clear refusals of bad requests. (The consumer under concurrent writers, and its restart from
//! a checkpoint, are `client-sdk/rust/tests/consumer.rs`.)

mod common;

use common::{Backend, Store, for_each_backend, js, json, st};
use futures::StreamExt;
use std::time::Duration;
use temporal_state_proto::v1 as pb;
use tonic::Code;

for_each_backend!(
    read_events_pages_filters_and_refuses,
    subscribe_from_a_position_catches_up_then_follows,
);

fn read(
    from_position: i64,
    entity_types: &[&str],
    event_types: &[&str],
    page_size: i32,
) -> pb::ReadEventsRequest {
    pb::ReadEventsRequest {
        from_position,
        entity_types: entity_types.iter().map(|s| s.to_string()).collect(),
        event_types: event_types.iter().map(|s| s.to_string()).collect(),
        page_size,
    }
}

async fn read_events_pages_filters_and_refuses(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    let player = c.create_type("player", json!({"type": "object"})).await;
    c.create_type("team", json!({"type": "object"})).await;
    let p1 = c.create_instance("player", "p1", json!({"n": 0})).await;
    let t1 = c.create_instance("team", "t1", json!({})).await;
    let p2 = c.create_instance("player", "p2", json!({"n": 0})).await;
    let mut written = Vec::new();
    for (id, kind) in [
        (&p1.id, "Scored"),
        (&t1.id, "Joined"),
        (&p2.id, "Scored"),
        (&p1.id, "Renamed"),
    ] {
        let applied = c
            .events
            .apply_event(pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: kind.into(),
                payload: Some(st(json!({"n": 1}))),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        written.push(applied.event.unwrap());
    }
    // Every write answers with its position, increasing in commit order.
    assert!(
        written.windows(2).all(|w| w[0].position < w[1].position),
        "{written:?}"
    );

    // Everything, two at a time: 3 creations and 4 events, in position order, each page
    // continuing where the last ended.
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = c
            .queries
            .read_events(read(from, &[], &[], 2))
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 2);
        all.extend(page.events);
        from = page.next_position;
        if from >= page.head_position {
            break;
        }
    }
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(&all[3..], &written[..]);

    // By entity type (name or id) and by event type.
    let players = c
        .queries
        .read_events(read(0, &["player"], &[], 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(players.events.len(), 5);
    assert_eq!(players.next_position, players.head_position);
    let by_id = c
        .queries
        .read_events(read(0, &[&player.id], &["Scored"], 100))
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<(String, i64)> = by_id
        .events
        .iter()
        .map(|e| (e.instance_id.clone(), e.version))
        .collect();
    assert_eq!(versions, vec![(p1.id.clone(), 2), (p2.id.clone(), 2)]);
    // From a position: strictly after it.
    let after = c
        .queries
        .read_events(read(written[1].position, &[], &[], 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.events, written[2..].to_vec());
    // Past the head: nothing, and the position stays.
    let past = c
        .queries
        .read_events(read(1_000_000, &[], &[], 100))
        .await
        .unwrap()
        .into_inner();
    assert!(past.events.is_empty());
    assert_eq!(past.next_position, 1_000_000);

    // An erased instance keeps its facts in the log, not its payloads.
    c.instances
        .erase_instance(pb::EraseInstanceRequest {
            instance_id: p2.id.clone(),
            reason: Some("asked".into()),
        })
        .await
        .unwrap();
    let erased = c
        .queries
        .read_events(read(0, &["player"], &[], 100))
        .await
        .unwrap()
        .into_inner();
    let of_p2: Vec<&pb::Event> = erased
        .events
        .iter()
        .filter(|e| e.instance_id == p2.id)
        .collect();
    assert_eq!(of_p2.len(), 3, "created, scored, erased");
    for e in &of_p2[..2] {
        assert_eq!(js(&e.payload), json!({}));
    }

    // Bad requests: clear codes, never INTERNAL.
    let code =
        |r: Result<tonic::Response<pb::ReadEventsResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(c.queries.read_events(read(-1, &[], &[], 10)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.queries.read_events(read(0, &[], &[], 1001)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.queries.read_events(read(0, &["nope"], &[], 10)).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.queries.read_events(read(0, &[""], &[], 10)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.queries.read_events(read(0, &["Bad Name"], &[], 10)).await),
        Code::InvalidArgument
    );
    let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        code(c.queries.read_events(read(0, &many, &[], 10)).await),
        Code::InvalidArgument
    );
    let with_instance = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: p1.id.clone(),
            from_position: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        with_instance.code(),
        Code::InvalidArgument,
        "{with_instance:?}"
    );
    let types_without_position = c
        .events
        .subscribe(pb::SubscribeRequest {
            entity_types: vec!["player".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(types_without_position.code(), Code::InvalidArgument);
    server.stop().await;
}

async fn subscribe_from_a_position_catches_up_then_follows(backend: Backend) {
    let store = Store::create(backend).await;
    let server = store.start(&[]).await;
    let mut c = server.clients().await;
    c.create_type("player", json!({"type": "object"})).await;
    c.create_type("team", json!({"type": "object"})).await;
    let p1 = c.create_instance("player", "p1", json!({"n": 0})).await;
    let t1 = c.create_instance("team", "t1", json!({})).await;
    let apply = |id: String, n: i64| pb::ApplyEventRequest {
        instance_id: id,
        event_type: "Scored".into(),
        payload: Some(st(json!({"n": n}))),
        ..Default::default()
    };
    for n in 1..=3 {
        c.events.apply_event(apply(p1.id.clone(), n)).await.unwrap();
        c.events.apply_event(apply(t1.id.clone(), n)).await.unwrap();
    }
    // From the start, two types named: the 8 stored events, then live ones.
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            entity_types: vec!["player".into(), "team".into()],
            from_position: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(next(&mut stream).await);
    }
    for n in 4..=5 {
        c.events.apply_event(apply(p1.id.clone(), n)).await.unwrap();
        c.events.apply_event(apply(t1.id.clone(), n)).await.unwrap();
    }
    for _ in 0..4 {
        seen.push(next(&mut stream).await);
    }
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let p1_versions: Vec<i64> = seen
        .iter()
        .filter(|e| e.instance_id == p1.id)
        .map(|e| e.version)
        .collect();
    assert_eq!(p1_versions, vec![1, 2, 3, 4, 5, 6]);
    // Nothing more than was written.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err()
    );

    // One type, from a position in the middle: only what follows it.
    let middle = seen[5].position;
    let mut teams = c
        .events
        .subscribe(pb::SubscribeRequest {
            entity_type: "team".into(),
            from_position: Some(middle),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let expected: Vec<i64> = seen
        .iter()
        .filter(|e| e.position > middle && e.instance_id == t1.id)
        .map(|e| e.position)
        .collect();
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next(&mut teams).await.position);
    }
    assert_eq!(got, expected);
    server.stop().await;
}

async fn next(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("no error")
        .event
        .unwrap()
}
