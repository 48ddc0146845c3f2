//! Test harness: a PostgreSQL database of its own per test and a real server on 127.0.0.1:0
//! (the server's own tests share TestDb from test-support/), plus paths of the repository's tools.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use temporal_state_client::Client;
use temporal_state_server::config::Cli;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // not every test binary uses it
pub use temporal_state_test_support::TestDb;

/// A real server on a loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `database_url` on a free port, with extra command-line flags.
    pub async fn start(database_url: &str, flags: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, database_url, flags).await
    }

    /// Starts a server on a listener the test bound itself.
    pub async fn start_on(listener: TcpListener, database_url: &str, flags: &[&str]) -> Self {
        let mut args = vec!["--database-url", database_url];
        args.extend(flags);
        Self::start_with(listener, &args).await
    }

    /// Only the flags count: DATABASE_URL, REDIS_URL or NATS_URL left set in the environment
    /// must not change what the test runs against.
    async fn start_with(listener: TcpListener, flags: &[&str]) -> Self {
        let mut args = vec![
            "temporal-state-server".to_string(),
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
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

    async fn wait_ready(&self) {
        for _ in 0..400 {
            if let Ok(client) = Client::connect(self.endpoint()).await
                && client.list_entity_types(&Default::default()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server on {} did not become ready", self.addr);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.endpoint()).await.expect("connect")
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

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The walk-through's schema, as in the README.
pub fn player_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "username":     {"type": "string", "minLength": 3},
            "email":        {"type": "string", "format": "email"},
            "score":        {"type": "integer", "minimum": 0},
            "level":        {"type": "integer", "minimum": 1},
            "achievements": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["username", "email"]
    })
}

/// The first ```` ```{lang} ```` block after the README line that starts with `heading`, with the
/// README's server address `127.0.0.1:50051` replaced by `addr`: the README's examples are run
/// as they are written.
pub fn readme_example(heading: &str, lang: &str, addr: SocketAddr) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .lines()
        .skip_while(|line| !line.starts_with(heading))
        .collect::<Vec<_>>();
    assert!(!section.is_empty(), "README has no heading {heading:?}");
    let fence = format!("```{lang}");
    let code: Vec<&str> = section
        .iter()
        .skip_while(|line| line.trim_end() != fence)
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .copied()
        .collect();
    assert!(
        !code.is_empty(),
        "README's {heading:?} has no {fence} block"
    );
    let code = code.join("\n") + "\n";
    assert!(
        code.contains("127.0.0.1:50051"),
        "README's {heading:?} example no longer names 127.0.0.1:50051:\n{code}"
    );
    code.replace("127.0.0.1:50051", &addr.to_string())
}

/// What a finished command printed, for an assertion message.
pub fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies a folder, without caches and build leftovers.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "__pycache__" | "build" | ".pytest_cache")
            || name.ends_with(".egg-info")
        {
            continue;
        }
        let target = to.join(&*name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
