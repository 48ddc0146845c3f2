//! The one in-process starter of a real server: `temporal_state_server::run` on a loopback port
//! of its own, for the server's and the SDK's integration tests alike. (Tests that need what only
//! a process shows — exit codes, signals, a SIGKILL — run the built binary instead, through the
//! server's `tests/common/binary.rs`: only the server's own tests know where cargo put it.)

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::app::App;
use temporal_state_server::config::Cli;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Completes when a [`TestServer`] is stopped or dropped: its shutdown signal.
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A real server on a loopback port of its own, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin HTTP server's address (`/metrics`, `/healthz`, `/readyz`), when the flags
    /// asked for one (`--admin-addr 127.0.0.1:0`); none by default.
    pub admin: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `database_url`, with extra command-line flags.
    pub async fn start(database_url: &str, extra_args: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, database_url, extra_args).await
    }

    /// Starts a server on `database_url` on a listener the test bound itself (to restart a
    /// server on the same port, or to hold the port before the server answers).
    pub async fn start_on(listener: TcpListener, database_url: &str, extra_args: &[&str]) -> Self {
        let mut args = vec!["--database-url", database_url];
        args.extend(extra_args);
        let config = config_from_flags(&args);
        Self::serve_on(listener, config).await
    }

    /// Starts a server on the embedded store in `data_dir` (no PostgreSQL, Redis or NATS), with
    /// extra command-line flags.
    pub async fn start_embedded(data_dir: &Path, extra_args: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_embedded_on(listener, data_dir, extra_args).await
    }

    /// [`TestServer::start_embedded`] on a listener the test bound itself (to restart a server
    /// on the same port).
    pub async fn start_embedded_on(
        listener: TcpListener,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        assert!(
            !extra_args.contains(&"--database-url"),
            "an embedded test server takes no --database-url"
        );
        let dir = data_dir.display().to_string();
        let mut args = vec!["--data-dir", &dir];
        args.extend(extra_args);
        let config = config_from_flags(&args);
        assert!(config.database_url.is_none());
        assert_eq!(config.data_dir, data_dir);
        Self::serve_on(listener, config).await
    }

    /// Starts a server configured by `flags` alone (see [`config_from_flags`]) and keeps its
    /// [`App`]: for tests that look at what clients cannot see, such as open subscriptions.
    pub async fn start_keeping_app(flags: &[&str]) -> (Self, App) {
        let config = config_from_flags(flags);
        let backends = build(&config).await;
        let app = backends.app.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (Self::serve_built(listener, config, backends).await, app)
    }

    /// Builds the server on `config` and runs it on `listener`; returns once it answers.
    async fn serve_on(listener: TcpListener, config: temporal_state_server::Config) -> Self {
        let backends = build(&config).await;
        Self::serve_built(listener, config, backends).await
    }

    /// Runs the server on its built `backends` on `listener`; returns once it answers.
    async fn serve_built(
        listener: TcpListener,
        config: temporal_state_server::Config,
        backends: temporal_state_server::server::Backends,
    ) -> Self {
        let (admin, admin_addr) = admin_listener(&config).await;
        let mut server = Self::spawn(listener, |listener, stopped| async move {
            temporal_state_server::server::serve_with_admin(
                &config, backends, listener, admin, stopped,
            )
            .await
            .expect("server failed");
        })
        .await;
        server.admin = admin_addr;
        server
    }

    /// Spawns `serve(listener, stopped)`, where `stopped` completes when the server is stopped or
    /// dropped; returns once the server answers.
    async fn spawn<F>(
        listener: TcpListener,
        serve: impl FnOnce(TcpListener, BoxFuture) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let stopped: BoxFuture = Box::pin(async {
            let _ = rx.await;
        });
        let handle = tokio::spawn(serve(listener, stopped));
        let server = Self {
            addr,
            admin: None,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        Clients::wait_ready(server.addr, Duration::from_secs(10)).await;
        server
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
        Clients::new(self.channel().await)
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

/// The admin listener `config` asks for (bound here, so the test learns its port), if any.
/// The server's backends for `config`, connected and migrated.
async fn build(config: &temporal_state_server::Config) -> temporal_state_server::server::Backends {
    temporal_state_server::server::build(config)
        .await
        .expect("build the server")
}

async fn admin_listener(
    config: &temporal_state_server::Config,
) -> (Option<TcpListener>, Option<SocketAddr>) {
    match config.admin_addr() {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.expect("bind the admin port");
            let addr = listener.local_addr().unwrap();
            (Some(listener), Some(addr))
        }
        None => (None, None),
    }
}

/// The server's configuration from `flags` alone: `DATABASE_URL`, `REDIS_URL` and `NATS_URL`
/// left set in the shell are ignored, so a variable can never turn an embedded test server into
/// a PostgreSQL one, or wire a test server to Redis or NATS, unnoticed. Unless the flags say
/// otherwise, there is no console and no admin port (tests run many servers at once; the default
/// ports would clash) and no drain grace period (a stopped test server stops at once).
pub fn config_from_flags(flags: &[&str]) -> temporal_state_server::Config {
    let mut args = vec!["temporal-state-server", "--grpc-addr", "127.0.0.1:0"];
    for (flag, default) in [
        ("--console-addr", "--console-addr="),
        ("--admin-addr", "--admin-addr="),
        ("--shutdown-grace-secs", "--shutdown-grace-secs=0"),
    ] {
        if !flags.iter().any(|f| f.starts_with(flag)) {
            args.push(default);
        }
    }
    args.extend(flags);
    let matches = Cli::command()
        .try_get_matches_from(args)
        .expect("valid test flags");
    let mut cli = Cli::from_arg_matches(&matches).expect("valid test flags");
    let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
    if from_env("database_url") {
        cli.config.database_url = None;
    }
    if from_env("redis_url") {
        cli.config.redis_url = None;
    }
    if from_env("nats_url") {
        cli.config.nats_url = None;
    }
    cli.config
}

/// A gRPC client of each of the server's services, over one channel.
#[derive(Clone)]
pub struct Clients {
    pub types: EntityTypeServiceClient<Channel>,
    pub instances: InstanceServiceClient<Channel>,
    pub events: EventServiceClient<Channel>,
    pub queries: QueryServiceClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Self {
            types: EntityTypeServiceClient::new(channel.clone()),
            instances: InstanceServiceClient::new(channel.clone()),
            events: EventServiceClient::new(channel.clone()),
            queries: QueryServiceClient::new(channel),
        }
    }

    /// Clients of the server at `addr`, once it answers a gRPC call; panics after `within`.
    pub async fn wait_ready(addr: SocketAddr, within: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(clients) = Self::answering(addr).await {
                return clients;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server on {addr} did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clients of the server at `addr` if it answers a gRPC call now.
    pub async fn answering(addr: SocketAddr) -> Option<Self> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let mut clients = Self::new(channel);
        match clients
            .types
            .list_entity_types(pb::ListEntityTypesRequest::default())
            .await
        {
            Ok(_) => Some(clients),
            // A server with authentication on answers, refusing a call without credentials; a
            // rate-limited one may refuse it as one call too many.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted
                ) =>
            {
                Some(clients)
            }
            Err(_) => None,
        }
    }

    pub async fn create_type(&mut self, name: &str, schema: serde_json::Value) -> pb::EntityType {
        self.types
            .create_entity_type(pb::CreateEntityTypeRequest {
                declarations: None,
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

/// A JSON object as a protobuf Struct.
pub fn st(v: serde_json::Value) -> prost_types::Struct {
    temporal_state_server::grpc::struct_from_state(v.as_object().expect("an object"))
}

/// A protobuf Struct as JSON.
pub fn js(s: &Option<prost_types::Struct>) -> serde_json::Value {
    serde_json::Value::Object(
        temporal_state_server::grpc::state_from_struct("x", s.clone()).unwrap(),
    )
}
