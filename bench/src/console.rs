//! `console`: what the web gateway (`web-gateway/`) costs a browser. The same gRPC-web requests,
//! over HTTP/1.1 keep-alive connections as a browser makes them, go straight to the engine (which
//! answers gRPC-web itself), through the server's own console (the gateway library in the
//! engine's process, calling its service stack directly), and through a separate gateway in
//! front of it (one more HTTP/2 hop, as a deployment with its own gateway has), in rotating
//! rounds: GetCurrentState latency (one client, then several at once), and the rate at which a
//! Subscribe stream delivers events (the replay of a long history, which the engine sends as
//! fast as the reader takes it). The engine runs on the embedded store; gateway, engine and the
//! clients share this process and its CPUs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use tokio::net::TcpListener;

use crate::harness::{
    Measured, RunningServer, Table, clients, fmt_rate, machine, ratio, sample, split, to_struct,
    with_dir,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured GetCurrentState calls per path and round, one client.
    #[arg(long, default_value_t = 2_000)]
    pub reads: usize,
    /// Unmeasured calls before each measurement.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Concurrent clients in the second GetCurrentState measurement (each with its own
    /// connection, as separate browser tabs would have).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Events of the history a Subscribe stream replays.
    #[arg(long, default_value_t = 20_000)]
    pub events: i64,
    /// Rounds; the two paths alternate which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where the benchmark's fresh DATA_DIR is created (and removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

const TYPE_NAME: &str = "console_bench_player";
const GET_CURRENT_STATE: &str = "/temporal_state.v1.InstanceService/GetCurrentState";
const SUBSCRIBE: &str = "/temporal_state.v1.EventService/Subscribe";

pub async fn run(args: Args) -> Result<()> {
    ensure!(
        args.reads > 0 && args.clients > 0 && args.rounds > 0,
        "counts must be positive"
    );
    ensure!(args.events >= 2, "--events must be at least 2");
    let args = &args;
    with_dir(&args.dir, "console", |root| async move {
        run_in(args, &root).await
    })
    .await
}

async fn run_in(args: &Args, root: &Path) -> Result<()> {
    let console = {
        let free = std::net::TcpListener::bind("127.0.0.1:0")?;
        free.local_addr()?
    };
    let server = RunningServer::embedded_with_console(&root.join("data"), console).await?;
    let result = async {
        wait_ready(console).await?;
        with_gateway(args, &server, console).await
    }
    .await;
    server.stop_after(result).await
}

/// Waits until the console at `addr` says it is ready (its engine answered a health check).
async fn wait_ready(addr: SocketAddr) -> Result<()> {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = http::Request::get(format!("http://{addr}/readyz"))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        if let Ok(response) = client.request(request).await
            && response.status() == 200
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the console at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A separate gateway in front of `server`, as a deployment with its own gateway runs it.
async fn with_gateway(args: &Args, server: &RunningServer, console: SocketAddr) -> Result<()> {
    let upstream = temporal_state_gateway::config::upstream_arg(&server.addr.to_string())
        .map_err(anyhow::Error::msg)?;
    let gateway =
        temporal_state_gateway::Gateway::new(temporal_state_gateway::GatewayConfig::new(vec![
            upstream,
        ]))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let result = measure(args, server, console, gateway_addr).await;
    let _ = stop.send(());
    handle.await?;
    result
}

/// The two ways a browser may reach the engine.
#[derive(Clone, Copy)]
struct Route {
    name: &'static str,
    addr: SocketAddr,
}

async fn measure(
    args: &Args,
    server: &RunningServer,
    console: SocketAddr,
    gateway: SocketAddr,
) -> Result<()> {
    let channel = server.channel().await?;
    EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: TYPE_NAME.into(),
            description: "console benchmark".into(),
            schema: Some(to_struct(json!({
                "type": "object",
                "properties": {"score": {"type": "integer"}, "username": {"type": "string"}}
            }))),
        })
        .await?;
    let instance = InstanceServiceClient::new(channel.clone())
        .create_instance(pb::CreateInstanceRequest {
            entity_type: TYPE_NAME.into(),
            external_id: "player-001".into(),
            initial_state: Some(to_struct(json!({"username": "alice", "score": 0}))),
            metadata: None,
        })
        .await?
        .into_inner()
        .instance
        .context("no instance")?;
    // The history the Subscribe streams replay, written in batches of 1,000.
    let mut events = EventServiceClient::new(channel);
    let mut version = 1;
    while version < args.events {
        let n = (args.events - version).min(1_000);
        let batch = (0..n)
            .map(|i| pb::EventInput {
                event_type: "ScoreIncreased".into(),
                payload: Some(to_struct(json!({"score": version + i + 1}))),
                ..Default::default()
            })
            .collect();
        events
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: instance.id.clone(),
                expected_version: Some(version),
                events: batch,
                ..Default::default()
            })
            .await?;
        version += n;
    }

    let routes = [
        Route {
            name: "straight to the engine",
            addr: server.addr,
        },
        Route {
            name: "the server's console (in process)",
            addr: console,
        },
        Route {
            name: "a separate gateway (HTTP/2 hop)",
            addr: gateway,
        },
    ];
    let read = pb::GetCurrentStateRequest {
        entity_type: TYPE_NAME.into(),
        external_id: "player-001".into(),
    };
    let subscribe = pb::SubscribeRequest {
        instance_id: instance.id.clone(),
        from_version: Some(1),
        ..Default::default()
    };

    let mut one = [Measured::empty(), Measured::empty(), Measured::empty()];
    let mut many = [Measured::empty(), Measured::empty(), Measured::empty()];
    let mut streamed = [(0u64, Duration::ZERO); 3];
    for round in 0..args.rounds {
        // Each route goes first, second and last in turn.
        for offset in 0..routes.len() {
            let which = (round + offset) % routes.len();
            let path = routes[which];
            one[which].absorb(read_one(path, &read, args).await?)?;
            many[which].absorb(read_many(path, &read, args).await?)?;
            let (n, took) = stream_replay(path, &subscribe, args.events).await?;
            streamed[which].0 += n;
            streamed[which].1 += took;
        }
    }

    println!(
        "console gateway: gRPC-web over HTTP/1.1 keep-alive, embedded store; {}",
        machine()
    );
    let mut table = Table::new(&[
        "GetCurrentState",
        "clients",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "CPU µs/call",
    ]);
    for (clients, measured) in [(1, &one), (args.clients, &many)] {
        for (route, m) in routes.iter().zip(measured) {
            table.row(vec![
                route.name.to_string(),
                clients.to_string(),
                fmt_rate(m.per_sec()),
                m.p50().to_string(),
                m.p99().to_string(),
                format!("{:.0}", m.cpu_per_op()),
            ]);
        }
    }
    table.print();
    for (clients, m) in [(1, &one), (args.clients, &many)] {
        for which in [1, 2] {
            println!(
                "GetCurrentState {} / direct, {clients} client(s): p50 {}x, p99 {}x (goal <= 1.3x)",
                routes[which].name,
                ratio(m[which].p50() as f64, m[0].p50() as f64),
                ratio(m[which].p99() as f64, m[0].p99() as f64),
            );
        }
    }
    let rate = |(n, took): (u64, Duration)| n as f64 / took.as_secs_f64();
    let mut table = Table::new(&["Subscribe replay", "events", "events/s"]);
    for (route, s) in routes.iter().zip(streamed) {
        table.row(vec![
            route.name.to_string(),
            s.0.to_string(),
            fmt_rate(rate(s)),
        ]);
    }
    table.print();
    for which in [1, 2] {
        println!(
            "Subscribe events/s {} / direct: {}x (goal >= 0.8x)",
            routes[which].name,
            ratio(rate(streamed[which]), rate(streamed[0]))
        );
    }
    Ok(())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A binary gRPC-web request as a browser's transport sends it.
fn grpc_web(path: Route, method: &str, message: &impl Message) -> http::Request<Full<Bytes>> {
    let payload = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + payload.len());
    framed.push(0);
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{method}", path.addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(framed)))
        .expect("a valid request")
}

/// One GetCurrentState over gRPC-web, checked: a message, then status 0.
async fn get_current_state(
    client: &HttpClient,
    path: Route,
    read: &pb::GetCurrentStateRequest,
) -> Result<()> {
    let response = client
        .request(grpc_web(path, GET_CURRENT_STATE, read))
        .await?;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    let mut frames = Frames::default();
    frames.push(&body);
    let Some((0, message)) = frames.next() else {
        bail!("no message: {body:?}");
    };
    let answer = pb::GetCurrentStateResponse::decode(message)?;
    ensure!(answer.instance.is_some(), "no instance");
    match frames.next() {
        Some((flags, trailer)) if flags & 0x80 != 0 => {
            let text = String::from_utf8_lossy(&trailer);
            ensure!(
                text.contains("grpc-status:0") || text.contains("grpc-status: 0"),
                "{text}"
            );
        }
        other => bail!("no status frame: {other:?}"),
    }
    Ok(())
}

async fn read_one(path: Route, read: &pb::GetCurrentStateRequest, args: &Args) -> Result<Measured> {
    let client = http_client();
    let (measured, ()) = sample(args.warmup, args.reads, || {
        get_current_state(&client, path, read)
    })
    .await?;
    Ok(measured)
}

async fn read_many(
    path: Route,
    read: &pb::GetCurrentStateRequest,
    args: &Args,
) -> Result<Measured> {
    let per_client = split(args.reads, args.clients);
    clients(&per_client, |_| {
        let client = http_client();
        let read = read.clone();
        move |_| {
            let client = client.clone();
            let read = read.clone();
            async move { get_current_state(&client, path, &read).await }
        }
    })
    .await
}

/// Opens a Subscribe replaying the instance from version 1 and times the arrival of `events`
/// events, checking they come in version order; returns (events, time).
async fn stream_replay(
    path: Route,
    subscribe: &pb::SubscribeRequest,
    events: i64,
) -> Result<(u64, Duration)> {
    let client = http_client();
    let started = Instant::now();
    let response = client.request(grpc_web(path, SUBSCRIBE, subscribe)).await?;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let mut body = response.into_body();
    let mut frames = Frames::default();
    let mut expected = 1;
    while expected <= events {
        while let Some((flags, message)) = frames.next() {
            ensure!(
                flags == 0,
                "the stream ended: {:?}",
                String::from_utf8_lossy(&message)
            );
            let event = pb::SubscribeResponse::decode(message)?
                .event
                .context("no event")?;
            ensure!(
                event.version == expected,
                "version {} after {}",
                event.version,
                expected - 1
            );
            expected += 1;
        }
        if expected > events {
            break;
        }
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .context("the stream stalled")?
            .context("the stream ended")??;
        if let Ok(data) = frame.into_data() {
            frames.push(&data);
        }
    }
    Ok((events as u64, started.elapsed()))
}

/// gRPC-web frames cut out of a body as it arrives.
#[derive(Default)]
struct Frames {
    buffer: BytesMut,
}

impl Frames {
    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    fn next(&mut self) -> Option<(u8, Bytes)> {
        if self.buffer.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + len {
            return None;
        }
        let flags = self.buffer[0];
        self.buffer.advance(5);
        Some((flags, self.buffer.split_to(len).freeze()))
    }
}
