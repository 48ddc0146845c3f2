//! Logs and traces (issue 16, item 5): the real binary with OTEL_EXPORTER_OTLP_ENDPOINT pointing
//! at a test collector on loopback (an OTLP/gRPC TraceService decoding what it receives with
//! `opentelemetry-proto`) and LOG_FORMAT=json. Calls carrying a W3C `traceparent` must come back
//! as one server span per RPC, child of the caller's span, with child spans for PostgreSQL, Redis
//! and NATS; every log line is a JSON object.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::Binary;
use common::procs::{Nats, Redis, free_port};
use common::{TestDb, json, st};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use temporal_state_proto::v1 as pb;
use tonic::metadata::MetadataValue;

/// A collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `request` with a W3C traceparent naming `trace` and the caller's span `parent`.
fn traced<T>(message: T, trace: &str, parent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("00-{trace}-{parent}-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(value.as_str()).unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_spans_with_backend_children_reach_an_otlp_collector_and_logs_are_json() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = TestDb::create().await;
    let redis = Redis::start();
    let nats = Nats::start();
    let logs = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("http://{otlp}");
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let mut server = Binary::spawn(
        logs.path(),
        logs.path(),
        "server",
        &[
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", &redis_url),
            ("NATS_URL", &nats_url),
            ("GRPC_ADDR", &grpc),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("LOG_FORMAT", "json"),
            ("SHUTDOWN_GRACE_SECS", "0"),
            ("RUST_LOG", "info"),
        ],
    );
    let mut c = server.wait_ready(&grpc).await;
    c.create_type("lamp", json!({"type": "object"})).await;
    let inst = c.create_instance("lamp", "l-1", json!({"on": false})).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (apply_parent, get_parent, subscribe_parent) =
        ("00f067aa0ba902b7", "00f067aa0ba902b8", "00f067aa0ba902b9");
    c.events
        .apply_event(traced(
            pb::ApplyEventRequest {
                instance_id: inst.id.clone(),
                event_type: "Switched".into(),
                payload: Some(st(json!({"on": true}))),
                ..Default::default()
            },
            trace,
            apply_parent,
        ))
        .await
        .unwrap();
    // The commit wrote the state to Redis: this read is a cache hit.
    c.instances
        .get_instance(traced(
            pb::GetInstanceRequest {
                instance_id: inst.id.clone(),
            },
            trace,
            get_parent,
        ))
        .await
        .unwrap();
    let subscription = c
        .events
        .subscribe(traced(
            pb::SubscribeRequest {
                instance_id: inst.id.clone(),
                ..Default::default()
            },
            trace,
            subscribe_parent,
        ))
        .await
        .unwrap();
    drop(subscription);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // SIGTERM: the server flushes its spans before it exits.
    server.terminate();
    let spans = collector.0.lock().unwrap().clone();
    serving.abort();

    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    let by_id: HashMap<String, &Span> = ours.iter().map(|s| (hex(&s.span_id), *s)).collect();
    let names: Vec<(&str, String)> = ours
        .iter()
        .map(|s| (s.name.as_str(), hex(&s.parent_span_id)))
        .collect();
    // The server span of each call: its caller's span is its parent.
    let rpc = |method: &str, parent: &str| -> &Span {
        ours.iter()
            .find(|s| s.name == method && hex(&s.parent_span_id) == parent)
            .unwrap_or_else(|| panic!("no span {method} under {parent}: {names:?}"))
    };
    let apply = rpc("temporal_state.v1.EventService/ApplyEvent", apply_parent);
    let get = rpc("temporal_state.v1.InstanceService/GetInstance", get_parent);
    let subscribe = rpc("temporal_state.v1.EventService/Subscribe", subscribe_parent);
    assert_eq!(apply.kind, 2, "a server span (SPAN_KIND_SERVER)");
    // A span below `ancestor`, named `name`.
    let below = |ancestor: &Span, name: &str| {
        ours.iter().any(|s| {
            if s.name != name {
                return false;
            }
            let mut parent = hex(&s.parent_span_id);
            while let Some(p) = by_id.get(&parent) {
                if p.span_id == ancestor.span_id {
                    return true;
                }
                parent = hex(&p.parent_span_id);
            }
            false
        })
    };
    assert!(
        below(apply, "append"),
        "a PostgreSQL span under ApplyEvent: {names:?}"
    );
    assert!(
        below(apply, "redis put"),
        "a Redis span under ApplyEvent: {names:?}"
    );
    assert!(
        below(get, "redis get"),
        "a Redis span under GetInstance: {names:?}"
    );
    assert!(
        below(subscribe, "nats subscribe"),
        "a NATS span under Subscribe: {names:?}"
    );

    // Every log line is one JSON object with a level and a message.
    let stdout = std::fs::read_to_string(&server.stdout).unwrap();
    let mut lines = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(stdout.contains("\"effective configuration\""), "{stdout}");
    println!(
        "{lines} JSON log lines, {} spans of the test's trace",
        ours.len()
    );
}
