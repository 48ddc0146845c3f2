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
