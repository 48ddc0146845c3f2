//! Test harness: each test gets its own PostgreSQL database and a real server on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::config::Cli;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub mod binary;
pub mod procs;

pub use serde_json::json;

#[allow(unused_imports)] // not every test binary uses it
pub use temporal_state_test_support::TestDb;

/// A real server on a loopback port of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `database_url`, with extra command-line flags.
    pub async fn start(database_url: &str, extra_args: &[&str]) -> Self {
        let mut args = vec![
            "temporal-state-server".to_string(),
            "--database-url".into(),
            database_url.into(),
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(args).expect("valid test flags");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(async move {
            temporal_state_server::run(cli.config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        let server = Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        server.wait_ready().await;
        server
    }

    /// Starts a server on the embedded store in `data_dir` (no PostgreSQL, Redis or NATS), with
    /// extra command-line flags. `DATABASE_URL`, `REDIS_URL` and `NATS_URL` in the environment
    /// are ignored: only flags count, so a variable left set in the shell can never turn an
    /// embedded test server into a PostgreSQL one (or wire it to Redis or NATS) unnoticed.
    pub async fn start_embedded(data_dir: &std::path::Path, extra_args: &[&str]) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        assert!(
            !extra_args.contains(&"--database-url"),
            "an embedded test server takes no --database-url"
        );
        let mut args = vec![
            "temporal-state-server".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let matches = Cli::command()
            .try_get_matches_from(args)
            .expect("valid test flags");
        let mut cli = Cli::from_arg_matches(&matches).expect("valid test flags");
        let from_env =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        if from_env("database_url") {
            cli.config.database_url = None;
        }
        if from_env("redis_url") {
            cli.config.redis_url = None;
        }
        if from_env("nats_url") {
            cli.config.nats_url = None;
        }
        assert!(cli.config.database_url.is_none());
        assert_eq!(cli.config.data_dir, data_dir);
        Self::serve(cli.config).await
    }

    /// Runs the server on `config` on a loopback port of its own; returns once it answers.
    async fn serve(config: temporal_state_server::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(async move {
            temporal_state_server::run(config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        let server = Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(ch) = Channel::from_shared(self.endpoint())
                .unwrap()
                .connect()
                .await
            {
                let mut c = EntityTypeServiceClient::new(ch);
                if c.list_entity_types(pb::ListEntityTypesRequest::default())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server on {} did not become ready", self.addr);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn clients(&self) -> Clients {
        let ch = self.channel().await;
        Clients {
            types: EntityTypeServiceClient::new(ch.clone()),
            instances: InstanceServiceClient::new(ch.clone()),
            events: EventServiceClient::new(ch.clone()),
            queries: QueryServiceClient::new(ch),
        }
    }

    /// Graceful shutdown; waits until the server has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Clone)]
pub struct Clients {
    pub types: EntityTypeServiceClient<Channel>,
    pub instances: InstanceServiceClient<Channel>,
    pub events: EventServiceClient<Channel>,
    pub queries: QueryServiceClient<Channel>,
}

/// A JSON object as a protobuf Struct.
pub fn st(v: serde_json::Value) -> prost_types::Struct {
    temporal_state_server::grpc::convert::state_to_struct(v.as_object().expect("an object"))
}

/// A protobuf Struct as JSON.
pub fn js(s: &Option<prost_types::Struct>) -> serde_json::Value {
    serde_json::Value::Object(
        temporal_state_server::grpc::convert::struct_to_state("x", s.clone()).unwrap(),
    )
}

pub fn player_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "minLength": 3},
            "email": {"type": "string", "format": "email"},
            "score": {"type": "integer", "minimum": 0},
            "level": {"type": "integer", "minimum": 1},
            "achievements": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["username"]
    })
}

impl Clients {
    pub async fn create_type(&mut self, name: &str, schema: serde_json::Value) -> pb::EntityType {
        self.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                name: name.into(),
                description: String::new(),
                schema: Some(st(schema)),
            })
            .await
            .expect("create entity type")
            .into_inner()
            .entity_type
            .unwrap()
    }

    pub async fn create_instance(
        &mut self,
        entity_type: &str,
        external_id: &str,
        state: serde_json::Value,
    ) -> pb::Instance {
        self.instances
            .create_instance(pb::CreateInstanceRequest {
                entity_type: entity_type.into(),
                external_id: external_id.into(),
                initial_state: Some(st(state)),
                metadata: None,
            })
            .await
            .expect("create instance")
            .into_inner()
            .instance
            .unwrap()
    }

    pub async fn apply(
        &mut self,
        instance_id: &str,
        event_type: &str,
        payload: serde_json::Value,
    ) -> Result<pb::ApplyEventResponse, tonic::Status> {
        self.events
            .apply_event(pb::ApplyEventRequest {
                instance_id: instance_id.into(),
                event_type: event_type.into(),
                payload: Some(st(payload)),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// Polls gRPC health until `service` ("" for the server as a whole) reports `want`.
pub async fn wait_for_health(
    client: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    for _ in 0..150 {
        let got = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} never became {want:?}");
}

/// The Subscribe contract on `server`'s backends: a replay from a version while a writer goes
/// on (no gap, no duplicate, only the subscribed instance), a live-only subscription filtered
/// by entity type and event type, then shutdown with both streams open: the server stops and
/// each stream ends with UNAVAILABLE. Returns the id of the instance it wrote 132 versions to.
pub async fn subscribe_contract(server: TestServer) -> String {
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d", json!({"n": 0})).await;
    let other = c.create_instance("device", "other", json!({})).await;
    for n in 1..=30 {
        c.apply(&inst.id, "Reading", json!({"n": n})).await.unwrap();
    }

    // Replay from version 10, while a writer goes on: versions 10..=131, no gap, no duplicate.
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: inst.id.clone(),
            from_version: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let writer = {
        let mut c = c.clone();
        let id = inst.id.clone();
        let other = other.id.clone();
        tokio::spawn(async move {
            for n in 31..=130 {
                c.apply(&id, "Reading", json!({"n": n})).await.unwrap();
                c.apply(&other, "Noise", json!({"n": n})).await.unwrap();
            }
        })
    };
    let mut versions = Vec::new();
    while versions.last() != Some(&131) {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("events keep arriving")
            .expect("no error")
            .expect("stream open")
            .event
            .unwrap();
        assert_eq!(e.instance_id, inst.id, "only the subscribed instance");
        if e.version > 1 {
            assert_eq!(js(&e.payload), json!({"n": e.version - 1}));
        }
        versions.push(e.version);
    }
    writer.await.unwrap();
    assert_eq!(versions, (10..=131).collect::<Vec<_>>());

    // Filtered by entity type and event type, live only.
    let mut typed = c
        .events
        .subscribe(pb::SubscribeRequest {
            entity_type: "device".into(),
            event_types: vec!["Alarm".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.apply(&other.id, "Noise", json!({})).await.unwrap();
    c.apply(&inst.id, "Alarm", json!({"alarm": true}))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), typed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!((got.event_type.as_str(), got.version), ("Alarm", 132));

    // Shutdown ends open subscriptions with UNAVAILABLE (subscribe again elsewhere), instead of
    // waiting for them forever: SIGTERM stops a server that has subscribers.
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("the server stops while subscriptions are open");
    for open in [&mut stream, &mut typed] {
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), open.message())
                .await
                .expect("the stream ends")
            {
                Ok(Some(_)) => continue, // events sent before shutdown
                other => break other,
            }
        };
        let status = ended.expect_err("a final status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    inst.id
}
