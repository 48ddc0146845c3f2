//! gRPC-web calls through a real gateway to a real engine (embedded store, 127.0.0.1:0): unary
//! calls in both gRPC-web modes, errors with their codes, a Subscribe stream that receives an
//! event written by another client, and what the gateway adds or refuses on its own: size
//! limits, deadlines, unknown services, other content types. Where only the engine's side can
//! show it (the headers it received), a raw HTTP upstream records them.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full, StreamBody};
use prost::Message as _;
use serde_json::json;
use temporal_state_test_support::st;

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0}},
        "required": ["score"]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_is_forwarded_and_its_result_is_real() {
    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    let name = unique("gw_unary");

    let answer = unary(
        &gw,
        "/temporal_state.v1.EntityTypeService/CreateEntityType",
        &pb::CreateEntityTypeRequest {
            declarations: None,
            name: name.clone(),
            description: "through the gateway".into(),
            schema: Some(st(schema())),
        },
        &[],
    )
    .await;
    assert_eq!(answer.http, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{answer:?}"
    );
    let created: pb::CreateEntityTypeResponse = answer.decode();
    assert_eq!(created.entity_type.unwrap().name, name);

    // The engine has it: asked directly over gRPC, not through the gateway.
    let mut direct = engine.clients().await;
    let stored = direct
        .types
        .get_entity_type(pb::GetEntityTypeRequest {
            entity_type: name.clone(),
        })
        .await
        .expect("the type exists on the engine")
        .into_inner()
        .entity_type
        .unwrap();
    assert_eq!(stored.description, "through the gateway");

    // An engine error keeps its code and message.
    let again = unary(
        &gw,
        "/temporal_state.v1.EntityTypeService/CreateEntityType",
        &pb::CreateEntityTypeRequest {
            declarations: None,
            name: name.clone(),
            description: String::new(),
            schema: Some(st(schema())),
        },
        &[],
    )
    .await;
    assert_eq!(again.http, StatusCode::OK);
    assert_eq!(again.status, tonic::Code::AlreadyExists as i32, "{again:?}");
    assert!(again.message.contains(&name), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_mode_is_forwarded_too() {
    let (engine, _dir) = engine().await;
    let mut direct = engine.clients().await;
    let name = unique("gw_text");
    direct.create_type(&name, schema()).await;
    direct
        .create_instance(&name, "player-1", json!({"score": 7}))
        .await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;

    let b64 = base64::engine::general_purpose::STANDARD;
    let request = http::Request::builder()
        .method("POST")
        .uri(gw.url("/temporal_state.v1.InstanceService/GetCurrentState"))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .body(
            Full::new(Bytes::from(b64.encode(frame(
                &pb::GetCurrentStateRequest {
                    entity_type: name.clone(),
                    external_id: "player-1".into(),
                },
            ))))
            .boxed(),
        )
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web-text")
    );
    let text = response.into_body().collect().await.unwrap().to_bytes();
    // Each frame is base64 on its own, padded: decode up to the end of each padding.
    let mut binary = Vec::new();
    let mut rest = &text[..];
    while !rest.is_empty() {
        let mut end = rest.iter().position(|&b| b == b'=').unwrap_or(rest.len());
        while end < rest.len() && rest[end] == b'=' {
            end += 1;
        }
        binary.extend(b64.decode(&rest[..end]).expect("base64"));
        rest = &rest[end..];
    }
    let (messages, trailers) = parse_frames(Bytes::from(binary));
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let current = pb::GetCurrentStateResponse::decode(messages[0].clone()).unwrap();
    let instance = current.instance.unwrap();
    assert_eq!(instance.external_id, "player-1");
    assert_eq!(instance.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_stream_receives_an_event_written_by_another_client() {
    let (engine, _dir) = engine().await;
    let mut direct = engine.clients().await;
    let name = unique("gw_stream");
    direct.create_type(&name, schema()).await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;

    let request = grpc_web_request(
        &gw,
        "/temporal_state.v1.EventService/Subscribe",
        Full::new(frame(&pb::SubscribeRequest {
            entity_type: name.clone(),
            ..Default::default()
        }))
        .boxed(),
        &[],
    );
    let response = tokio::time::timeout(Duration::from_secs(10), client().request(request))
        .await
        .expect("the stream's headers arrive")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("grpc-status").is_none(),
        "the stream is open, not answered at once: {:?}",
        response.headers()
    );
    let mut frames = FrameReader::new(response.into_body());

    // Another client writes, directly to the engine, after the stream opened. The subscription
    // may register a moment after the headers: write until an event arrives.
    let instance = direct
        .create_instance(&name, "streamed", json!({"score": 0}))
        .await;
    let instance_id = instance.id.clone();
    let writer = tokio::spawn(async move {
        for score in 1..=50 {
            direct
                .apply(&instance.id, "ScoreIncreased", json!({"score": score}))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let event = loop {
        let (flags, payload) = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("an event arrives through the gateway")
            .expect("the stream stays open");
        assert_eq!(flags, 0, "a message, not the end of the stream");
        let event = pb::SubscribeResponse::decode(payload)
            .unwrap()
            .event
            .unwrap();
        if event.event_type == "ScoreIncreased" {
            break event;
        }
    };
    assert_eq!(event.instance_id, instance_id);
    assert!(event.version >= 2);
    // A second one follows on the same stream: it is live, not a one-off answer.
    let next = loop {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("the next event arrives")
            .expect("open");
        let e = pb::SubscribeResponse::decode(payload)
            .unwrap()
            .event
            .unwrap();
        if e.event_type == "ScoreIncreased" {
            break e;
        }
    };
    assert_eq!(next.version, event.version + 1);
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_open_streams_do_not_hold_up_other_calls() {
    // More open Subscribe streams than an HTTP/2 server allows on one connection by default
    // (hyper's 200): the calls after them still go through at once.
    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    let http = client();
    let mut open = Vec::new();
    for _ in 0..210 {
        let request = grpc_web_request(
            &gw,
            "/temporal_state.v1.EventService/Subscribe",
            Full::new(frame(&pb::SubscribeRequest::default())).boxed(),
            &[],
        );
        let response = tokio::time::timeout(Duration::from_secs(10), http.request(request))
            .await
            .expect("the stream opens")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers().get("grpc-status").is_none(),
            "open, not refused"
        );
        open.push(response);
    }
    let answer = unary(
        &gw,
        "/temporal_state.v1.EntityTypeService/ListEntityTypes",
        &pb::ListEntityTypesRequest::default(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 0, "{answer:?}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_and_all_other_metadata_reach_the_engine_untouched() {
    let upstream = RawUpstream::start().await;
    let gw = Gw::start(&[upstream.addr], |_| {}).await;
    let answer = unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &pb::GetInstanceRequest::default(),
        &[
            ("authorization", "Bearer eyJhbGciOi.payload.sig"),
            ("x-request-id", "req-42"),
            ("x-trace-bin", "AAEC"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(answer.status, 0, "{answer:?}");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let seen = &calls[0];
    assert_eq!(seen.path, "/temporal_state.v1.InstanceService/GetInstance");
    assert_eq!(
        seen.headers["authorization"],
        "Bearer eyJhbGciOi.payload.sig"
    );
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["x-trace-bin"], "AAEC");
    assert_eq!(seen.headers["x-grpc-web"], "1");
    assert_eq!(seen.headers["content-type"], "application/grpc-web+proto");
    // The browser's address is added after those the request already named.
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // A unary call without a deadline gets the gateway's (30 s by default).
    assert_eq!(seen.headers["grpc-timeout"], "30000m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_follow_grpc_timeout_and_streams_have_none_of_their_own() {
    let upstream = RawUpstream::start().await;
    let gw = Gw::start(&[upstream.addr], |c| c.request_timeout_secs = 5).await;

    // The engine never answers: the client's deadline ends the call, with its code.
    let started = Instant::now();
    let answer = unary(
        &gw,
        "/temporal_state.v1.Test/Hang",
        &pb::GetInstanceRequest::default(),
        &[("grpc-timeout", "300m")],
    )
    .await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(
        answer.status,
        tonic::Code::DeadlineExceeded as i32,
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the client's 300 ms won over the gateway's 5 s: {:?}",
        started.elapsed()
    );

    // A client deadline within the cap passes as it is; a longer one is cut to the cap.
    unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &pb::GetInstanceRequest::default(),
        &[("grpc-timeout", "2S")],
    )
    .await;
    unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &pb::GetInstanceRequest::default(),
        &[("grpc-timeout", "1H")],
    )
    .await;
    // A Subscribe without a deadline gets none: it lives as long as its browser tab.
    unary(
        &gw,
        "/temporal_state.v1.EventService/Subscribe",
        &pb::SubscribeRequest::default(),
        &[],
    )
    .await;
    let calls = upstream.calls();
    let timeouts: Vec<Option<&str>> = calls
        .iter()
        .map(|c| c.headers.get("grpc-timeout").map(|v| v.to_str().unwrap()))
        .collect();
    assert_eq!(
        timeouts,
        [Some("300m"), Some("2S"), Some("5000m"), None],
        "{calls:?}"
    );

    // A malformed deadline is the client's mistake, said as such.
    let bad = unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &pb::GetInstanceRequest::default(),
        &[("grpc-timeout", "soon")],
    )
    .await;
    assert_eq!(bad.status, tonic::Code::InvalidArgument as i32, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_refused_before_any_engine_sees_it() {
    let upstream = RawUpstream::start().await;
    let gw = Gw::start(&[upstream.addr], |c| c.max_request_bytes = 1024).await;
    let big = pb::GetInstanceRequest {
        instance_id: "x".repeat(2000),
    };

    // With a Content-Length.
    let answer = unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &big,
        &[],
    )
    .await;
    assert_eq!(
        answer.http,
        StatusCode::OK,
        "a gRPC status, not an HTTP error"
    );
    assert_eq!(
        answer.status,
        tonic::Code::ResourceExhausted as i32,
        "{answer:?}"
    );
    assert!(answer.message.contains("1024"), "{answer:?}");

    // Streamed (chunked, no length announced): cut off once past the limit.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = frame(&big)
        .chunks(256)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let answer = call(grpc_web_request(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        body,
        &[],
    ))
    .await;
    assert_eq!(
        answer.status,
        tonic::Code::ResourceExhausted as i32,
        "{answer:?}"
    );

    // Under the limit, it goes through.
    let small = unary(
        &gw,
        "/temporal_state.v1.InstanceService/GetInstance",
        &pb::GetInstanceRequest {
            instance_id: "x".repeat(100),
        },
        &[],
    )
    .await;
    assert_eq!(small.status, 0, "{small:?}");
    assert_eq!(
        upstream.calls().len(),
        1,
        "only the small call reached the engine"
    );

    // Any other request with a body over the limit: 413.
    let (status, headers, _) = send(
        "POST",
        &gw.url("/upload"),
        &[("content-type", "application/octet-stream")],
        Bytes::from(vec![0u8; 4096]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_grpc_web_call_to_the_api_is_not_forwarded() {
    let upstream = RawUpstream::start().await;
    let gw = Gw::start(&[upstream.addr], |_| {}).await;

    let other = unary(
        &gw,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        &pb::GetInstanceRequest::default(),
        &[],
    )
    .await;
    assert_eq!(other.status, tonic::Code::Unimplemented as i32, "{other:?}");

    let (status, _, body) = send(
        "POST",
        &gw.url("/temporal_state.v1.InstanceService/GetInstance"),
        &[("content-type", "application/grpc")],
        frame(&pb::GetInstanceRequest::default()),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&body).contains("gRPC-web"));
    assert!(upstream.calls().is_empty(), "{:?}", upstream.calls());

    // The health service is offered, as a real engine answers it.
    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    let health = unary(
        &gw,
        "/grpc.health.v1.Health/Check",
        &tonic_health::pb::HealthCheckRequest::default(),
        &[],
    )
    .await;
    let health: tonic_health::pb::HealthCheckResponse = health.decode();
    assert_eq!(health.status, 1, "SERVING");
}
