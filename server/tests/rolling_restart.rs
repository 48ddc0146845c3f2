//! A rolling restart (issue 16, item 6): two replicas of the real binary on one PostgreSQL
//! database behind the gateway, and the Rust SDK, speaking gRPC-web through the gateway with its
//! retries, writing and reading all the while. Each replica in turn gets SIGTERM, drains (health
//! NOT_SERVING during the grace period, so the gateway moves its calls to the other one), exits
//! 0 and starts again on the same port. No SDK call may fail, calls must keep being answered
//! while a replica is down, and every acknowledged event is stored once, in order.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::procs::free_port;
use common::{Clients, TestDb, js, json};
use temporal_state_client::{ApplyEventOptions, Client, RetryPolicy};
use temporal_state_proto::v1 as pb;

/// The gateway library on a loopback port, forwarding to `upstreams`, checking their health
/// every 100 ms; stopped when the sender is dropped.
async fn start_gateway(upstreams: &[String]) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let uris = upstreams
        .iter()
        .map(|u| temporal_state_gateway::config::upstream_arg(u).unwrap())
        .collect();
    let mut config = temporal_state_gateway::GatewayConfig::new(uris);
    config.health_interval_ms = 100;
    let gateway = temporal_state_gateway::Gateway::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// The SDK as a browser-facing deployment would give it: gRPC-web over HTTP/1.1 to the
/// gateway, with a retry policy that outlasts the gateway's noticing a replica went away.
fn sdk_through_gateway(gateway: SocketAddr) -> Client {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let authority: http::uri::Authority = gateway.to_string().parse().unwrap();
    let service = tower::ServiceBuilder::new()
        // The SDK's requests carry only the method's path; the HTTP client needs the origin.
        .map_request(move |mut request: http::Request<tonic::body::Body>| {
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(authority.clone());
            *request.uri_mut() = http::Uri::from_parts(parts).expect("an absolute URI");
            request
        })
        .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http);
    Client::builder(format!("http://{gateway}"))
        .request_timeout(Duration::from_secs(10))
        .retry(
            RetryPolicy::default()
                .max_attempts(10)
                .initial_backoff(Duration::from_millis(50))
                .max_backoff(Duration::from_millis(500)),
        )
        .with_service(service)
}

/// What a loader saw: the versions acknowledged for its instance (in call order), when each
/// call was answered, and every failure.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<i64>,
    answered_at: Vec<Instant>,
    reads: usize,
    failures: Vec<String>,
}

const LOADERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_behind_the_gateway_fails_no_sdk_call() {
    let db = TestDb::create().await;
    let logs = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let spawn = |replica: usize, generation: usize| {
        Binary::spawn(
            logs.path(),
            logs.path(),
            &format!("replica-{replica}-{generation}"),
            &[
                ("DATABASE_URL", &db.url),
                ("GRPC_ADDR", &addrs[replica]),
                ("SHUTDOWN_GRACE_SECS", "1"),
                ("SHUTDOWN_TIMEOUT_SECS", "20"),
                ("RUST_LOG", "info"),
            ],
        )
    };
    let mut replicas = vec![spawn(0, 0), spawn(1, 0)];
    // The first replica migrates the database; the second may race it: wait for both.
    for (replica, addr) in replicas.iter_mut().zip(&addrs) {
        replica.wait_ready(addr).await;
    }
    let (gateway, _stop_gateway) = start_gateway(&addrs).await;
    let client = sdk_through_gateway(gateway);

    client
        .create_entity_type("counter", &json!({"type": "object"}), &Default::default())
        .await
        .expect("create the type through the gateway");
    let mut ids = Vec::new();
    for i in 0..LOADERS {
        let created = client
            .create_instance(
                "counter",
                &format!("c-{i}"),
                &json!({"n": 0}),
                &Default::default(),
            )
            .await
            .expect("create an instance through the gateway");
        ids.push(created.instance.id);
    }

    // Each loader writes its own instance with expected_version (so a lost or doubled write
    // would show) and reads it back now and then, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    for (i, id) in ids.iter().cloned().enumerate() {
        let client = client.clone();
        let stop = stop.clone();
        loaders.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut version = 1;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let applied = client
                    .apply_event(
                        &id,
                        "Ticked",
                        &json!({"n": n}),
                        &ApplyEventOptions::default().expected_version(version),
                    )
                    .await;
                match applied {
                    Ok(applied) => {
                        version = applied.event.version;
                        seen.acknowledged.push(version);
                        seen.answered_at.push(Instant::now());
                    }
                    Err(e) => {
                        seen.failures.push(format!("apply #{n} on c-{i}: {e}"));
                        return seen;
                    }
                }
                if n % 4 == 0 {
                    match client
                        .get_current_state("counter", &format!("c-{i}"), &Default::default())
                        .await
                    {
                        Ok(read) if read.version >= version => seen.reads += 1,
                        Ok(read) => seen.failures.push(format!(
                            "c-{i} read version {} after version {version} was acknowledged",
                            read.version
                        )),
                        Err(e) => seen.failures.push(format!("read of c-{i}: {e}")),
                    }
                }
            }
            seen
        }));
    }

    // The rolling restart: one replica at a time, the next only once the first is back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut down_windows = Vec::new();
    for replica in 0..2 {
        let down_from = Instant::now();
        replicas[replica].terminate();
        replicas[replica] = spawn(replica, 1);
        replicas[replica].wait_ready(&addrs[replica]).await;
        down_windows.push((down_from, Instant::now()));
        // Long enough for the gateway's health checks to put it back in rotation.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    let mut answered = Vec::new();
    let mut acknowledged_total = 0;
    let mut reads = 0;
    let mut clients = Clients::answering(addrs[0].parse().unwrap())
        .await
        .expect("replica 0 answers");
    let mut seens = Vec::new();
    for loader in loaders {
        let mut seen = loader.await.unwrap();
        failures.append(&mut seen.failures);
        seens.push(seen);
    }
    // A failed call first: it would also explain a stored history one longer than acknowledged.
    assert!(failures.is_empty(), "failed SDK calls: {failures:#?}");
    for (i, seen) in seens.into_iter().enumerate() {
        answered.extend(seen.answered_at);
        acknowledged_total += seen.acknowledged.len();
        reads += seen.reads;
        // Every acknowledged write is stored once and in order: versions 2..=last, gap-free,
        // each carrying the n of the call that was acknowledged with it.
        let expected: Vec<i64> = (2..).take(seen.acknowledged.len()).collect();
        assert_eq!(seen.acknowledged, expected, "c-{i}: acknowledged versions");
        let mut history = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = clients
                .queries
                .get_history(pb::GetHistoryRequest {
                    instance_id: ids[i].clone(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            history.extend(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let versions: Vec<i64> = history.iter().map(|e| e.version).collect();
        let stored: Vec<i64> = (1..=seen.acknowledged.len() as i64 + 1).collect();
        assert_eq!(versions, stored, "c-{i}: stored versions");
        for (k, event) in history.iter().skip(1).enumerate() {
            assert_eq!(
                js(&event.payload),
                json!({"n": k + 1}),
                "c-{i} v{}",
                event.version
            );
        }
    }
    for (replica, (from, until)) in down_windows.iter().enumerate() {
        let during = answered
            .iter()
            .filter(|t| *t >= from && *t <= until)
            .count();
        assert!(
            during > 0,
            "no call was answered while replica {replica} drained, stopped and started ({:?})",
            *until - *from
        );
    }
    println!(
        "rolling restart: {acknowledged_total} writes and {reads} reads through the gateway, 0 failed; \
         replicas were down for {:?} and {:?}",
        down_windows[0].1 - down_windows[0].0,
        down_windows[1].1 - down_windows[1].0
    );
    for mut replica in replicas {
        replica.terminate();
    }
}
