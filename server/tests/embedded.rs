//! The product on a bare machine: the built server binary with no DATABASE_URL, REDIS_URL or
//! NATS_URL runs on the embedded store with its console, answers the README walk-through (run
//! with the real grpcurl), keeps its data across a restart, refuses a damaged DATA_DIR with an error naming the
//! path, and serves Subscribe from its in-process bus.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::Binary;
use common::*;
use temporal_state_proto::v1 as pb;
use temporal_state_server::adapters::embedded::DB_FILE;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// PATH with the repo's tool folder first, where scripts/ensure-tools.sh puts grpcurl.
fn tool_path() -> String {
    let tools = workspace_root().join("tools/bin");
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The README's walk-through block, exactly as `server/tests/grpcurl.rs` extracts it.
fn walkthrough_script() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(body, _)| body.to_string())
        .expect("a ```sh block between the markers")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The TCP sockets the process `pid` holds, as (local port, remote port), from /proc.
fn tcp_sockets_of(pid: u32) -> Vec<(u16, u16)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let port = |address: &str| {
        u16::from_str_radix(address.rsplit_once(':').unwrap().1, 16).expect("a hex port")
    };
    let mut sockets = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.iter().any(|i| i == fields[9]) {
                sockets.push((port(fields[1]), port(fields[2])));
            }
        }
    }
    sockets
}

/// Proves no backend service is used: every TCP socket of the server is its gRPC listener, its
/// console's listener (when it runs one), or a connection accepted on one of them. It holds no
/// connection to PostgreSQL, Redis, NATS or anything else, nor one of its console to its own
/// gRPC port: the console calls the engine in process.
fn assert_only_own_sockets(pid: u32, grpc_port: u16, console_port: Option<u16>) {
    if !Path::new("/proc/self/net/tcp").exists() {
        eprintln!("no /proc: socket check skipped");
        return;
    }
    let sockets = tcp_sockets_of(pid);
    let listeners = [(Some(grpc_port), "gRPC"), (console_port, "console")];
    for (port, what) in listeners.into_iter().filter_map(|(p, w)| Some((p?, w))) {
        assert!(
            sockets
                .iter()
                .any(|&(local, remote)| local == port && remote == 0),
            "the {what} listener is among the server's sockets: {sockets:?}"
        );
    }
    for (local, remote) in &sockets {
        assert!(
            *local == grpc_port || Some(*local) == console_port,
            "the server holds a TCP connection of its own making (to port {remote}): {sockets:?}"
        );
        assert!(
            ![5432, 6379, 4222].contains(remote),
            "the server talks to a backend service: {sockets:?}"
        );
    }
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the console");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_readme_walkthrough_with_no_services_and_keeps_it_across_a_restart() {
    let script = walkthrough_script();
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // First run: exactly the README's command in a fresh directory, so DATA_DIR is its default,
    // ./data, and the console comes up too. Only the listen addresses are set (the default ports
    // may be taken on this machine).
    let cwd = root.path().join("checkout");
    std::fs::create_dir(&cwd).unwrap();
    let data_dir = cwd.join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let console_port = free_port();
    let console = format!("127.0.0.1:{console_port}");
    let mut server = Binary::spawn(
        &cwd,
        &logs,
        "first",
        &[("GRPC_ADDR", &addr), ("CONSOLE_ADDR", &console)],
    );
    let mut c = server.wait_ready(&addr).await;
    // The console answers on its address, says so in the log, and is ready once its health check
    // of this very server says SERVING.
    assert!(
        server
            .logs()
            .contains(&format!("console: http://{console}")),
        "{}",
        server.logs()
    );
    assert_eq!(http_get(&console, "/healthz").0, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(&console, "/readyz");
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the console never became ready: {status} {body}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        data_dir.join(DB_FILE).is_file(),
        "the store is under ./data\n{}",
        server.logs()
    );
    assert!(
        server
            .logs()
            .contains("no DATABASE_URL: using the embedded store"),
        "{}",
        server.logs()
    );

    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("ADDR", &addr)
        .env("PATH", tool_path())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{stderr}\n{}",
        server.logs()
    );
    // The same answers as on PostgreSQL (server/tests/grpcurl.rs).
    assert!(
        stdout.contains("temporal_state.v1.EventService"),
        "{stdout}"
    );
    assert!(stdout.contains(r#""name": "player_profile""#), "{stdout}");
    assert!(
        stdout.contains(r#""eventType": "ScoreIncreased""#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""version": "2""#), "{stdout}");
    assert!(stdout.contains(r#""op": "replace""#), "{stdout}");
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("/score"),
        "{stderr}"
    );
    assert!(stderr.contains("fieldViolations"), "{stderr}");

    // With a client connected, the server's only TCP sockets are gRPC ones.
    c.types
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .unwrap();
    assert_only_own_sockets(server.child.id(), port, Some(console_port));
    drop(c);
    server.terminate();

    // Second run: from another directory, pointed at the same store through DATA_DIR.
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let data_dir_text = data_dir.display().to_string();
    let mut server = Binary::spawn(
        &elsewhere,
        &logs,
        "second",
        &[("GRPC_ADDR", &addr), ("DATA_DIR", &data_dir_text)],
    );
    let mut c = server.wait_ready(&addr).await;
    assert!(
        !elsewhere.join("data").exists(),
        "DATA_DIR was followed, not ./data"
    );
    let current = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player_profile".into(),
            external_id: "player-001".into(),
        })
        .await
        .expect("the instance survived the restart")
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(current.version, 2);
    let state = js(&current.state);
    assert_eq!(state["score"], json!(150));
    assert_eq!(state["level"], json!(2));
    assert_eq!(state["username"], json!("alice"));

    // Subscribe from version 1 replays both events (the refused one stored nothing).
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: current.id.clone(),
            from_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the replay arrives")
            .expect("no error")
            .expect("stream open");
        replayed.push(msg.event.unwrap());
    }
    let seen: Vec<(i64, &str, &str)> = replayed
        .iter()
        .map(|e| (e.version, e.event_type.as_str(), e.id.as_str()))
        .collect();
    assert_eq!(seen[0].0, 1);
    assert_eq!(seen[0].1, "InstanceCreated");
    assert_eq!(
        (seen[1].0, seen[1].1, seen[1].2),
        (2, "ScoreIncreased", "player-001-score-1")
    );
    assert_eq!(js(&replayed[1].payload), json!({"score": 150, "level": 2}));
    // Nothing beyond version 2 follows.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );

    // The walk-through's event_id is still recorded: a retry returns version 2, not a third.
    let retry = c
        .events
        .apply_event(pb::ApplyEventRequest {
            instance_id: current.id.clone(),
            event_type: "ScoreIncreased".into(),
            payload: Some(st(json!({"score": 150, "level": 2}))),
            expected_version: Some(1),
            event_id: "player-001-score-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.event.unwrap().version, 2);
    assert_only_own_sockets(server.child.id(), port, None);
    drop((stream, c));
    server.terminate();
}

/// Runs the binary on `data_dir` and expects it to refuse to start: exit status non-zero, an
/// error on stderr naming `named`, and no panic.
fn assert_refused(root: &Path, name: &str, data_dir: &Path, named: &Path) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let data_dir_text = data_dir.display().to_string();
    let mut server = Binary::spawn(
        root,
        root,
        name,
        &[
            ("GRPC_ADDR", &addr),
            ("DATA_DIR", &data_dir_text),
            ("RUST_BACKTRACE", "1"),
        ],
    );
    let status = server.wait_exit(Duration::from_secs(30));
    let stderr = server.stderr();
    assert!(
        !status.success(),
        "{name}: started anyway\n{}",
        server.logs()
    );
    assert!(
        stderr.contains(&named.display().to_string()),
        "{name}: the error names {}\n{}",
        named.display(),
        server.logs()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{name}: no panic\n{}",
        server.logs()
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "{name}: nothing listens"
    );
    stderr
}

#[test]
fn the_binary_refuses_a_damaged_data_dir_naming_the_path() {
    let root = tempfile::tempdir().unwrap();

    // A database file that is not a database: refused, and never overwritten.
    let data_dir = root.path().join("garbage");
    std::fs::create_dir(&data_dir).unwrap();
    let file = data_dir.join(DB_FILE);
    let garbage: Vec<u8> = (0..8192_u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&file, &garbage).unwrap();
    let stderr = assert_refused(root.path(), "garbage", &data_dir, &file);
    assert!(stderr.contains("not a database"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "the file is intact");

    // A real store whose pages past the header were overwritten: refused at start-up.
    let data_dir = root.path().join("damaged");
    drop(
        temporal_state_server::adapters::embedded::EmbeddedStore::open(&data_dir, 100)
            .expect("a fresh store"),
    );
    let file = data_dir.join(DB_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096, "more than one page");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(&file, &bytes).unwrap();
    let stderr = assert_refused(root.path(), "damaged", &data_dir, &file);
    assert!(stderr.contains("malformed"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the file is intact");

    // DATA_DIR is a regular file: refused, and the file is untouched.
    let not_a_dir = root.path().join("a-file");
    std::fs::write(&not_a_dir, b"precious").unwrap();
    let stderr = assert_refused(root.path(), "file", &not_a_dir, &not_a_dir);
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"precious");

    // Another application's SQLite database: refused, and left as it was.
    let data_dir = root.path().join("foreign");
    std::fs::create_dir(&data_dir).unwrap();
    let file = data_dir.join(DB_FILE);
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    let stderr = assert_refused(root.path(), "foreign", &data_dir, &file);
    assert!(stderr.contains("another application"), "{stderr}");
    let kept: String = rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_that_start_up_does_not_read_is_data_loss_and_unhealthy() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_embedded(dir.path(), &[]).await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d", json!({})).await;
    let filler = "x".repeat(2000);
    for n in 0..300 {
        c.apply(&inst.id, "Reading", json!({"n": n, "filler": filler}))
            .await
            .unwrap();
    }
    drop(c);
    server.stop().await;

    // Overwrite the last third of the file: the header and the schema's pages stay intact.
    let file = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    assert!(
        len > 400 * 1024,
        "the history spans many pages ({len} bytes)"
    );
    for (i, b) in bytes.iter_mut().enumerate().skip(len * 2 / 3) {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(&file, &bytes).unwrap();

    // It starts (reading every page at start-up would make start-up as slow as the store is
    // large), but the first read of a damaged page is DATA_LOSS, not INTERNAL, and from then
    // on the server reports NOT_SERVING.
    let server = TestServer::start_embedded(dir.path(), &[]).await;
    let mut c = server.clients().await;
    let err = c
        .queries
        .get_history(pb::GetHistoryRequest {
            instance_id: inst.id.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        !err.message().contains(&dir.path().display().to_string()),
        "the path is for the log, not for clients: {err:?}"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    wait_for_health(&mut health, "", ServingStatus::NotServing).await;
    drop((c, health));
    server.stop().await;
}

/// Also: with the embedded store NATS_URL is ignored. A reachable nats-server of the test's own
/// is named, and live events still come from the in-process bus while nothing reaches NATS (no
/// stream is created, no message published).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_replays_then_follows_live_on_the_embedded_store() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let nats = common::procs::Nats::start();
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut published = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();
    let inst = subscribe_contract(
        TestServer::start_embedded(dir.path(), &["--nats-url", &nats.url()]).await,
    )
    .await;
    // Anything the server sent (a publish, a stream creation) was routed before its calls
    // returned; the short wait only covers delivery to this subscriber.
    let stray = tokio::time::timeout(Duration::from_millis(500), published.next()).await;
    assert!(
        stray.is_err(),
        "the embedded store sent to NATS: {:?}",
        stray.map(|m| m.map(|m| m.subject))
    );
    let js = async_nats::jetstream::new(watcher.clone());
    let streams: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
        .await
        .unwrap();
    assert!(
        streams.is_empty(),
        "the embedded store created JetStream streams {streams:?}"
    );

    // After a restart on the same DATA_DIR, a replay from the start has every event.
    let server = TestServer::start_embedded(dir.path(), &[]).await;
    let mut c = server.clients().await;
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest {
            instance_id: inst.clone(),
            from_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut versions = Vec::new();
    while versions.last() != Some(&132) {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the replay arrives")
            .expect("no error")
            .expect("stream open")
            .event
            .unwrap();
        versions.push(e.version);
    }
    assert_eq!(versions, (1..=132).collect::<Vec<_>>());
}

/// The server's own console calls its service stack in process (`assert_only_own_sockets` above
/// shows there is no connection to the gRPC port): every layer still applies (authentication
/// here, as on the gRPC port), a Subscribe stream follows live events through it, and at shutdown
/// the stream ends and the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reaches_the_engine_in_process_through_every_layer() {
    use common::raw::{grpc_web_send, grpc_web_status, read_until};
    use prost::Message as _;
    use sha2::Digest as _;
    const KEY: &str = "console-in-process-key";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let sha: String = sha2::Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &keys,
        serde_json::json!([{"name": "console", "sha256": sha, "scopes": ["admin"]}]).to_string(),
    )
    .unwrap();
    let console = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let config = temporal_state_test_support::server::config_from_flags(&[
        "--data-dir",
        &data.display().to_string(),
        "--console-addr",
        &console,
        "--auth-api-keys-file",
        &keys.display().to_string(),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(temporal_state_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let ready = {
        let console = console.clone();
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            // Refused until the server has opened its store and bound the console's port.
            while std::net::TcpStream::connect(&console).is_err()
                || http_get(&console, "/readyz").0 != 200
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the console never became ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    tokio::task::spawn_blocking(ready).await.unwrap();

    // Set up over the gRPC port, with the key.
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    fn authed<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        request
    }
    let mut types =
        temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient::new(
            channel.clone(),
        );
    types
        .create_entity_type(authed(pb::CreateEntityTypeRequest {
            name: "console_player".into(),
            schema: Some(st(player_schema())),
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut instances =
        temporal_state_proto::v1::instance_service_client::InstanceServiceClient::new(
            channel.clone(),
        );
    let instance = instances
        .create_instance(authed(pb::CreateInstanceRequest {
            entity_type: "console_player".into(),
            external_id: "p-1".into(),
            initial_state: Some(st(serde_json::json!({"username": "ann", "score": 1}))),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();

    // Through the console: refused without the key, answered with it.
    const GET_STATE: &str = "/temporal_state.v1.InstanceService/GetCurrentState";
    let read = pb::GetCurrentStateRequest {
        entity_type: "console_player".into(),
        external_id: "p-1".into(),
    };
    assert_eq!(
        grpc_web_status(grpc_web_send(&console, GET_STATE, &read.encode_to_vec(), None).await)
            .await,
        "16",
        "the console's calls pass the engine's authentication"
    );
    assert_eq!(
        grpc_web_status(grpc_web_send(&console, GET_STATE, &read.encode_to_vec(), Some(KEY)).await)
            .await,
        "0"
    );

    // A Subscribe through the console sees an event written over the gRPC port.
    let subscribe = pb::SubscribeRequest {
        instance_id: instance.id.clone(),
        ..Default::default()
    };
    let mut stream = grpc_web_send(
        &console,
        "/temporal_state.v1.EventService/Subscribe",
        &subscribe.encode_to_vec(),
        Some(KEY),
    )
    .await;
    let mut seen = Vec::new();
    // The answer's headers come when the stream is open on the engine.
    assert!(read_until(&mut stream, &mut seen, "\r\n\r\n").await);
    let mut events =
        temporal_state_proto::v1::event_service_client::EventServiceClient::new(channel.clone());
    events
        .apply_event(authed(pb::ApplyEventRequest {
            instance_id: instance.id.clone(),
            event_type: "ConsoleLiveMarker".into(),
            payload: Some(st(serde_json::json!({"score": 2}))),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        read_until(&mut stream, &mut seen, "ConsoleLiveMarker").await,
        "the live event arrives through the console"
    );

    // Shutdown: the stream ends with a status, and the server stops by itself.
    drop(channel);
    let _ = stop.send(());
    assert!(!read_until(&mut stream, &mut seen, "\u{0}never").await);
    assert!(
        String::from_utf8_lossy(&seen).contains("grpc-status"),
        "the stream ends with a status: {}",
        String::from_utf8_lossy(&seen)
    );
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
