//! The admin port (issue 16, item 4): a real server on PostgreSQL with a private Redis and NATS,
//! known traffic, then `/metrics` scraped over HTTP must show exactly that traffic; `/healthz`
//! and `/readyz` answer. One test in this binary: the metrics registry is the process's, so no
//! other server may add to the counts.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::procs::{Nats, Redis};
use common::{TestDb, TestServer, json, st};
use temporal_state_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` on `addr` over HTTP/1.1: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// Every sample of the exposition: `name{labels}` (labels sorted) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().expect("a number"));
    }
    out
}

/// The sample `name` with `labels` (any order), if exported.
fn sample(all: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        l.sort();
        format!("{name}{{{}}}", l.join(","))
    };
    all.get(&key).copied()
}

async fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

/// Scrapes until `done` holds; panics with the last scrape after 30 s.
async fn scrape_until(
    admin: SocketAddr,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = scrape(admin).await;
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened; last scrape:\n{all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const APPLY: &str = "/temporal_state.v1.EventService/ApplyEvent";
const APPLY_BATCH: &str = "/temporal_state.v1.EventService/ApplyEvents";
const GET_INSTANCE: &str = "/temporal_state.v1.InstanceService/GetInstance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_traffic_the_server_handled() {
    let db = TestDb::create().await;
    let redis = Redis::start();
    let mut nats = Nats::start();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let server = TestServer::start(
        &db.url,
        &[
            "--redis-url",
            &redis_url,
            "--nats-url",
            &nats_url,
            "--snapshot-interval",
            "5",
            "--pool-size",
            "4",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    )
    .await;
    let admin = server.admin.expect("an admin port was bound");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, body) = get(admin, "/nothing-here").await;
    assert_eq!(status, 404, "{body}");
    // Ready once the health watcher has pinged the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(admin, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut c = server.clients().await;
    c.create_type("meter", json!({"type": "object"})).await;
    let inst = c.create_instance("meter", "m-1", json!({"n": 0})).await;
    // Versions 2..=10 one by one (snapshots at 5 and 10), then 11..=13 in one batch.
    for n in 1..=9 {
        c.apply(&inst.id, "Read", json!({"n": n})).await.unwrap();
    }
    c.events
        .apply_events(pb::ApplyEventsRequest {
            instance_id: inst.id.clone(),
            events: (0..3)
                .map(|n| pb::EventInput {
                    event_type: "Read".into(),
                    payload: Some(st(json!({"batch": n}))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let missing = uuid::Uuid::new_v4().to_string();
    let err = c.apply(&missing, "Read", json!({})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Two reads the cache answers (the commit wrote the state there), one it cannot.
    for id in [&inst.id, &inst.id, &missing] {
        let _ = c
            .instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
            })
            .await;
    }
    let _subscription = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: inst.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The relay publishes all 13 events (version 1 included) and empties the outbox.
    let all = scrape_until(admin, "the outbox drained", |all| {
        sample(all, "tse_relay_published_total", &[]) == Some(13.0)
            && sample(all, "tse_outbox_rows", &[]) == Some(0.0)
    })
    .await;
    let at = |name: &str, labels: &[(&str, &str)]| sample(&all, name, labels);
    assert_eq!(at("tse_outbox_oldest_age_seconds", &[]), Some(0.0));
    let last_publish = at("tse_relay_last_publish_timestamp_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_publish),
        "{last_publish} vs {now}"
    );

    // Calls by method and code, and their durations.
    assert_eq!(
        at(
            "tse_grpc_requests_total",
            &[("method", APPLY), ("code", "Ok")]
        ),
        Some(9.0)
    );
    assert_eq!(
        at(
            "tse_grpc_requests_total",
            &[("method", APPLY), ("code", "NotFound")]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "tse_grpc_requests_total",
            &[("method", APPLY_BATCH), ("code", "Ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "tse_grpc_requests_total",
            &[("method", GET_INSTANCE), ("code", "Ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        at(
            "tse_grpc_requests_total",
            &[("method", GET_INSTANCE), ("code", "NotFound")]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "tse_grpc_request_duration_seconds_count",
            &[("method", APPLY)]
        ),
        Some(10.0)
    );
    assert_eq!(
        at(
            "tse_grpc_request_duration_seconds_bucket",
            &[("method", APPLY), ("le", "+Inf")]
        ),
        Some(10.0)
    );
    assert!(
        at(
            "tse_grpc_request_duration_seconds_sum",
            &[("method", APPLY)]
        )
        .unwrap()
            > 0.0
    );

    // Append batch sizes: ten appends, twelve events; nine of one event.
    assert_eq!(at("tse_append_batch_events_count", &[]), Some(10.0));
    assert_eq!(at("tse_append_batch_events_sum", &[]), Some(12.0));
    assert_eq!(
        at("tse_append_batch_events_bucket", &[("le", "1")]),
        Some(9.0)
    );
    // Group commits: the calls came one after another, so each commit held one append.
    let commits = at("tse_group_commit_appends_count", &[]).unwrap();
    assert!(commits >= 10.0, "{commits} group commits for ten appends");
    assert_eq!(at("tse_group_commit_appends_sum", &[]), Some(commits));
    assert_eq!(
        at("tse_group_commit_appends_bucket", &[("le", "1")]),
        Some(commits)
    );
    assert_eq!(at("tse_snapshots_written_total", &[]), Some(2.0));
    assert_eq!(at("tse_cache_hits_total", &[]), Some(2.0));
    assert_eq!(at("tse_cache_misses_total", &[]), Some(1.0));
    assert_eq!(at("tse_subscriptions_open", &[]), Some(1.0));
    assert_eq!(at("tse_db_pool_size", &[]), Some(4.0));
    let in_use = at("tse_db_pool_in_use", &[]).unwrap();
    assert!((0.0..=4.0).contains(&in_use), "{in_use}");
    assert_eq!(at("tse_db_pool_waiting", &[]), Some(0.0));
    assert_eq!(at("tse_relay_publish_failures_total", &[]), None);

    // NATS down: the next event waits in the outbox, ages, and publishing it fails.
    nats.stop();
    c.apply(&inst.id, "Read", json!({"n": 14})).await.unwrap();
    let all = scrape_until(admin, "a publish failure with the event waiting", |all| {
        sample(all, "tse_relay_publish_failures_total", &[]).unwrap_or(0.0) >= 1.0
            && sample(all, "tse_outbox_rows", &[]) == Some(1.0)
            && sample(all, "tse_outbox_oldest_age_seconds", &[]).unwrap_or(0.0) > 0.0
    })
    .await;
    assert_eq!(sample(&all, "tse_relay_published_total", &[]), Some(13.0));
    nats.restart();
    scrape_until(admin, "the waiting event published", |all| {
        sample(all, "tse_relay_published_total", &[]) == Some(14.0)
            && sample(all, "tse_outbox_rows", &[]) == Some(0.0)
    })
    .await;

    // The subscription ends with the client: the gauge follows.
    drop(_subscription);
    scrape_until(admin, "the subscription closed", |all| {
        sample(all, "tse_subscriptions_open", &[]) == Some(0.0)
    })
    .await;
    server.stop().await;
}
