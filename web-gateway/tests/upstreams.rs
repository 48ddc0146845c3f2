//! Several engines behind one gateway: calls spread over the healthy ones, an engine that goes
//! away is answered UNAVAILABLE at once (never a hang, never an HTML page) and used again when it
//! comes back, and `/healthz` / `/readyz` say so.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;
use temporal_state_test_support::st;

fn list_types() -> pb::ListEntityTypesRequest {
    pb::ListEntityTypesRequest::default()
}

const LIST: &str = "/temporal_state.v1.EntityTypeService/ListEntityTypes";
const GET: &str = "/temporal_state.v1.EntityTypeService/GetEntityType";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_goes_away_is_unavailable_at_once_and_used_again_when_it_is_back() {
    let dir = data_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = TestServer::start_embedded_on(listener, dir.path(), &[]).await;
    let gw = Gw::start(&[addr], |_| {}).await;
    gw.wait_ready().await;
    assert_eq!(unary(&gw, LIST, &list_types(), &[]).await.status, 0);

    engine.stop().await;
    let answer = tokio::time::timeout(Duration::from_secs(5), unary(&gw, LIST, &list_types(), &[]))
        .await
        .expect("an answer at once, not a hang");
    assert_eq!(
        answer.http,
        StatusCode::OK,
        "a gRPC-web answer, not an HTTP error"
    );
    assert_eq!(answer.status, tonic::Code::Unavailable as i32, "{answer:?}");
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    // Taken out of rotation: the next call does not even try it.
    let answer = unary(&gw, LIST, &list_types(), &[]).await;
    assert_eq!(answer.status, tonic::Code::Unavailable as i32, "{answer:?}");
    let (status, _, _) = get(&gw.url("/readyz"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = get(&gw.url("/healthz"), &[]).await;
    assert_eq!(status, StatusCode::OK, "the gateway itself is alive");

    // The same engine, same port, same data.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _engine = TestServer::start_embedded_on(listener, dir.path(), &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = unary(&gw, LIST, &list_types(), &[]).await;
        if answer.status == 0 {
            break;
        }
        assert_eq!(answer.status, tonic::Code::Unavailable as i32, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine was never used again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_finding_no_engine_asks_again_instead_of_waiting_for_the_periodic_check() {
    // Periodic checks an hour apart: only a call's own re-check can bring the engine back. This
    // is what a browser meets when it opens the console just as the engine finishes starting.
    let dir = data_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = TestServer::start_embedded_on(listener, dir.path(), &[]).await;
    // SERVING before the gateway's first check, the only periodic one this test will see.
    wait_serving(addr).await;
    let gw = Gw::start(&[addr], |c| c.health_interval_ms = 3_600_000).await;
    gw.wait_ready().await;
    engine.stop().await;
    let answer = unary(&gw, LIST, &list_types(), &[]).await;
    assert_eq!(answer.status, tonic::Code::Unavailable as i32, "{answer:?}");

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _engine = TestServer::start_embedded_on(listener, dir.path(), &[]).await;
    wait_serving(addr).await;
    // Past the least gap between two re-checks, so this call may ask.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = unary(&gw, LIST, &list_types(), &[]).await;
    assert_eq!(answer.status, 0, "used again on the first call: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_spread_over_every_healthy_engine() {
    // Two engines with data of their own: the same type name, told apart by its description.
    let (a, _dir_a) = engine().await;
    let (b, _dir_b) = engine().await;
    let name = unique("gw_spread");
    for (engine, label) in [(&a, "engine A"), (&b, "engine B")] {
        engine
            .clients()
            .await
            .types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
                name: name.clone(),
                description: label.into(),
                schema: Some(st(json!({"type": "object"}))),
            })
            .await
            .unwrap();
    }
    let gw = Gw::start(&[a.addr, b.addr], |_| {}).await;
    gw.wait_ready().await;

    let mut served_by = Vec::new();
    for _ in 0..10 {
        let answer = unary(
            &gw,
            GET,
            &pb::GetEntityTypeRequest {
                entity_type: name.clone(),
            },
            &[],
        )
        .await;
        let got: pb::GetEntityTypeResponse = answer.decode();
        served_by.push(got.entity_type.unwrap().description);
    }
    let from_a = served_by.iter().filter(|d| *d == "engine A").count();
    let from_b = served_by.iter().filter(|d| *d == "engine B").count();
    assert_eq!(from_a + from_b, 10, "{served_by:?}");
    assert!(
        from_a >= 3 && from_b >= 3,
        "both engines take calls: {served_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_refuses_connections_costs_no_call() {
    let (engine, _dir) = engine().await;
    // A port nobody listens on (bound, then released).
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Slow health checks: only the refused connections can take the dead engine out.
    let gw = Gw::start(&[dead, engine.addr], |c| c.health_interval_ms = 3_600_000).await;
    for i in 0..6 {
        let answer = unary(&gw, LIST, &list_types(), &[]).await;
        assert_eq!(
            answer.status, 0,
            "call {i} went to the live engine: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_engines_health_and_liveness_does_not() {
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = Gw::start(&[dead], |_| {}).await;
    let (status, headers, body) = get(&gw.url("/healthz"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    assert_eq!(headers["cache-control"], "no-store");
    let (status, _, body) = get(&gw.url("/readyz"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no engine is serving\n");
    // And a call finds no engine: UNAVAILABLE, at once.
    let answer = tokio::time::timeout(Duration::from_secs(5), unary(&gw, LIST, &list_types(), &[]))
        .await
        .expect("no hang");
    assert_eq!(answer.status, tonic::Code::Unavailable as i32, "{answer:?}");

    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    gw.wait_ready().await;
    let (status, _, body) = get(&gw.url("/readyz"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ready\n");
}
