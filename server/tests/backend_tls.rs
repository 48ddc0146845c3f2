//! TLS to the backends (issue 15, item 5): PostgreSQL as `sslmode`/`sslrootcert` in DATABASE_URL
//! say, Redis over `rediss://` and NATS over `tls://`, against a Redis and a NATS this test
//! starts with TLS on loopback ports (certificates from rcgen) and the machine's PostgreSQL
//! (Debian's, which serves TLS with its `ssl-cert-snakeoil` certificate for `localhost`).
//! A server whose certificate does not match what the URL asks is refused at start.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::procs::free_port;
use common::{TestDb, TestServer, json};
use temporal_state_proto::v1 as pb;

/// Debian's PostgreSQL serves this self-signed certificate (CN and SAN `localhost`).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "backend test ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A server certificate for localhost and 127.0.0.1, and its key, in PEM.
    fn server(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// The files of a TLS-serving backend: CA, certificate and key.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.server();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn redis_tls(files: &Files) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string()])
        .args(["--tls-cert-file", &files.path("tls.crt")])
        .args(["--tls-key-file", &files.path("tls.key")])
        .args(["--tls-ca-cert-file", &files.path("ca.pem")])
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/ensure-services.sh installs it)");
    let proc = Proc(child);
    wait_for_port(port);
    (proc, port)
}

fn nats_tls(files: &Files, store: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .args(["--tls", "--tlscert", &files.path("tls.crt")])
        .args(["--tlskey", &files.path("tls.key")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (scripts/ensure-services.sh installs it)");
    let proc = Proc(child);
    wait_for_port(port);
    (proc, port)
}

/// The test database's URL with `host` and a query of TLS parameters.
fn with_tls(db: &TestDb, host: &str, query: &str) -> String {
    let url = url_without_host(&db.url);
    format!("postgres://{}@{host}:{}/{}?{query}", url.0, url.1, url.2)
}

/// (user, port, database) of a `postgres://user@host:port/database` URL.
fn url_without_host(url: &str) -> (String, String, String) {
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let (user, rest) = rest.split_once('@').expect("a user");
    let (hostport, db) = rest.split_once('/').expect("a database");
    let port = hostport.rsplit_once(':').map_or("5432", |(_, p)| p);
    let db = db.split('?').next().unwrap();
    (user.to_string(), port.to_string(), db.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_redis_and_nats_over_tls() {
    let ssl: String = {
        let db = TestDb::create().await;
        let client = db.client().await;
        client.query_one("SHOW ssl", &[]).await.unwrap().get(0)
    };
    assert_eq!(
        ssl, "on",
        "the local PostgreSQL must serve TLS (Debian's default: ssl = on, snakeoil certificate)"
    );
    let ca = Ca::new();
    let files = Files::new(&ca);
    let (_redis, redis_port) = redis_tls(&files);
    let nats_store = tempfile::tempdir().unwrap();
    let (_nats, nats_port) = nats_tls(&files, nats_store.path());

    let db = TestDb::create().await;
    let database_url = with_tls(
        &db,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    let redis_url = format!("rediss://localhost:{redis_port}");
    let nats_url = format!("tls://127.0.0.1:{nats_port}");
    let ca_file = files.path("ca.pem");
    let server = TestServer::start(
        &database_url,
        &[
            "--redis-url",
            &redis_url,
            "--redis-tls-ca-file",
            &ca_file,
            "--nats-url",
            &nats_url,
            "--nats-tls-ca-file",
            &ca_file,
        ],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("sealed", json!({"type": "object"})).await;
    let id = c.create_instance("sealed", "s-1", json!({"n": 0})).await.id;
    for n in 1..=3 {
        c.apply(&id, "Set", json!({"n": n})).await.unwrap();
    }
    for _ in 0..2 {
        let read = c
            .instances
            .get_current_state(pb::GetCurrentStateRequest {
                entity_type: "sealed".into(),
                external_id: "s-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.instance.unwrap().version, 4);
    }

    // PostgreSQL: every connection of the server is encrypted.
    let admin = db.client().await;
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database() AND a.application_name = 'temporal-state-server'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0, "the server holds connections to its database");
    assert_eq!(encrypted, all, "every server connection uses TLS");

    // Redis: the state was cached over TLS (read back through redis-cli over TLS).
    let mut cached = String::new();
    for _ in 0..100 {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", &ca_file, "-h", "localhost"])
            .args(["-p", &redis_port.to_string(), "--scan"])
            .output()
            .expect("redis-cli");
        cached = String::from_utf8_lossy(&out.stdout).to_string();
        if cached.contains("tse:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cached.contains("tse:"),
        "no cache entry in the TLS Redis: {cached:?}"
    );

    // NATS: the four events reached the stream over TLS.
    let nats = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca_file.clone().into())
        .connect(&nats_url)
        .await
        .expect("a TLS client of the test's NATS");
    let js = async_nats::jetstream::new(nats);
    let mut messages = 0;
    for _ in 0..200 {
        if let Ok(mut stream) = js.get_stream("TEMPORAL_STATE_EVENTS").await {
            messages = stream.info().await.unwrap().state.messages;
            if messages >= 4 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages, 4, "every event was published over TLS");
}

/// The server built on `flags` (as the binary would start), or why it refused.
async fn start_error(flags: &[&str]) -> String {
    let config = temporal_state_test_support::server::config_from_flags(flags);
    match temporal_state_server::server::build(&config).await {
        Ok(_) => panic!("started with {flags:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_does_not_match_the_url_is_refused() {
    let db = TestDb::create().await;
    // The snakeoil certificate names localhost, not 127.0.0.1: verify-full refuses it...
    let wrong_name = with_tls(
        &db,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    let error = start_error(&["--database-url", &wrong_name]).await;
    assert!(error.contains("certificate"), "{error}");
    // ... verify-ca does not check the name, and takes it.
    let ca_only = with_tls(
        &db,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}"),
    );
    let server = TestServer::start(&ca_only, &[]).await;
    server
        .clients()
        .await
        .create_type("checked", json!({}))
        .await;
    drop(server);
    // A CA that did not sign it: refused.
    let stranger = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let stranger_pem = dir.path().join("stranger.pem");
    std::fs::write(&stranger_pem, stranger.cert.pem()).unwrap();
    let foreign = with_tls(
        &db,
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", stranger_pem.display()),
    );
    let error = start_error(&["--database-url", &foreign]).await;
    assert!(error.contains("certificate"), "{error}");
    // A Redis CA file for a plaintext URL is a mistake, said at start.
    let error = start_error(&[
        "--database-url",
        &db.url,
        "--redis-url",
        "redis://127.0.0.1:1",
        "--redis-tls-ca-file",
        stranger_pem.to_str().unwrap(),
    ])
    .await;
    assert!(error.contains("rediss://"), "{error}");
}
