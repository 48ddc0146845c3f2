//! The Redis cache, NATS JetStream publication through the outbox, and Subscribe — against
//! real redis-server and nats-server processes of each test's own, so stopping one never
//! disturbs another test.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::procs::{Nats, Redis, free_port};
use common::*;
use fred::prelude::*;
use futures::StreamExt;
use temporal_state_proto::v1 as pb;
use temporal_state_server::adapters::nats::WireEvent;
use tonic::Code;

/// Every message of the events stream: (Nats-Msg-Id, event).
async fn stream_messages(nats_url: &str) -> Vec<(String, WireEvent)> {
    try_stream_messages(nats_url)
        .await
        .expect("the events stream exists")
}

/// The same, or None while the relay has not created the stream yet.
async fn try_stream_messages(nats_url: &str) -> Option<Vec<(String, WireEvent)>> {
    let client = async_nats::connect(nats_url).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TEMPORAL_STATE_EVENTS").await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&msg.payload).unwrap()));
    }
    Some(out)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Checks that the stream holds each event of `expected` (instance -> last version) exactly once,
/// in version order per instance.
fn assert_published_once_in_order(
    messages: &[(String, WireEvent)],
    expected: &HashMap<String, i64>,
) {
    let ids: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id appears twice");
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (id, e) in messages {
        assert_eq!(id, &e.id, "Nats-Msg-Id is the event id");
        per.entry(e.instance_id.to_string())
            .or_default()
            .push(e.version);
    }
    for (instance, last) in expected {
        let versions = per.remove(instance).unwrap_or_default();
        assert_eq!(
            versions,
            (1..=*last).collect::<Vec<_>>(),
            "instance {instance}"
        );
    }
    assert!(
        per.is_empty(),
        "unexpected instances in the stream: {:?}",
        per.keys()
    );
}

async fn redis_version(redis: &Redis, instance_id: &str) -> Option<i64> {
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.ok()?;
    let v: Option<i64> = client
        .hget(
            temporal_state_server::adapters::redis::id_key(instance_id.parse().unwrap()),
            "v",
        )
        .await
        .ok()?;
    let _ = client.quit().await;
    v
}

async fn version_of(c: &mut Clients, id: &str) -> i64 {
    c.instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_racing_leave_the_cache_at_the_database_version() {
    let redis = Redis::start();
    let db = TestDb::create().await;
    let a = TestServer::start(&db.url, &["--redis-url", &redis.url()]).await;
    let b = TestServer::start(&db.url, &["--redis-url", &redis.url()]).await;
    let mut ca = a.clients().await;
    ca.create_type("counter", json!({"type": "object"})).await;
    let inst = ca.create_instance("counter", "c", json!({"n": 0})).await;

    let mut tasks = Vec::new();
    for w in 0..8 {
        let server = if w % 2 == 0 { &a } else { &b };
        let mut c = server.clients().await;
        let id = inst.id.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..40 {
                c.apply(&id, "Tick", json!({ format!("w{w}"): n }))
                    .await
                    .unwrap();
                // Reads through either server fill the cache too, racing the writers.
                c.instances
                    .get_current_state(pb::GetCurrentStateRequest {
                        entity_type: "counter".into(),
                        external_id: "c".into(),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let db_version: i64 = db
        .client()
        .await
        .query_one(
            "SELECT version FROM instances WHERE id = $1::text::uuid",
            &[&inst.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(db_version, 1 + 8 * 40);
    assert_eq!(redis_version(&redis, &inst.id).await, Some(db_version));
    let mut cb = b.clients().await;
    assert_eq!(version_of(&mut ca, &inst.id).await, db_version);
    assert_eq!(version_of(&mut cb, &inst.id).await, db_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_falls_back_to_postgres_and_the_cache_refills() {
    let mut redis = Redis::start();
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--redis-url", &redis.url()]).await;
    let mut c = server.clients().await;
    c.create_type("counter", json!({"type": "object"})).await;
    let inst = c.create_instance("counter", "c", json!({"n": 0})).await;

    let mut acknowledged = 1;
    let step = |c: &mut Clients| {
        let mut c = c.clone();
        let id = inst.id.clone();
        async move {
            let r = c
                .apply(&id, "Tick", json!({"n": 1}))
                .await
                .expect("writes carry on");
            let written = r.event.unwrap().version;
            // Every read sees at least what was acknowledged, whichever path answers it.
            let by_id = version_of(&mut c, &id).await;
            let by_external = c
                .instances
                .get_current_state(pb::GetCurrentStateRequest {
                    entity_type: "counter".into(),
                    external_id: "c".into(),
                })
                .await
                .expect("reads carry on")
                .into_inner()
                .instance
                .unwrap()
                .version;
            (written, by_id, by_external)
        }
    };
    for _ in 0..20 {
        let (w, x, y) = step(&mut c).await;
        assert!(w > acknowledged && x >= w && y >= w, "{w} {x} {y}");
        acknowledged = w;
    }
    assert_eq!(redis_version(&redis, &inst.id).await, Some(acknowledged));

    redis.stop();
    for _ in 0..20 {
        let (w, x, y) = step(&mut c).await;
        assert!(
            w > acknowledged && x >= w && y >= w,
            "during the outage: {w} {x} {y}"
        );
        acknowledged = w;
    }

    redis.restart();
    for _ in 0..20 {
        let (w, x, y) = step(&mut c).await;
        assert!(
            w > acknowledged && x >= w && y >= w,
            "after the outage: {w} {x} {y}"
        );
        acknowledged = w;
    }
    let final_version = acknowledged;
    wait_until(
        "the cache holds the latest version again",
        Duration::from_secs(20),
        || {
            let redis = &redis;
            let id = inst.id.clone();
            async move { redis_version(redis, &id).await == Some(final_version) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_outage_delays_publication_but_loses_and_duplicates_nothing() {
    let mut nats = Nats::start();
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--nats-url", &nats.url()]).await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            c.create_instance("device", &format!("d-{i}"), json!({"n": 0}))
                .await
                .id,
        );
    }
    wait_until(
        "the first events are published",
        Duration::from_secs(20),
        || {
            let url = nats.url();
            async move {
                tokio::time::timeout(Duration::from_secs(2), try_stream_messages(&url))
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.len() == 4)
            }
        },
    )
    .await;

    // 1,000 events; NATS goes away after the first 300 and comes back after 700.
    for n in 0..1000 {
        if n == 300 {
            nats.stop();
        }
        if n == 700 {
            nats.restart();
        }
        let id = &ids[n % 4];
        c.apply(id, "Reading", json!({"n": n}))
            .await
            .expect("writes never wait for NATS");
    }
    wait_until("the outbox is empty", Duration::from_secs(60), || {
        let db = &db;
        async move { db.count("outbox").await == 0 }
    })
    .await;
    let messages = stream_messages(&nats.url()).await;
    let expected: HashMap<String, i64> = ids.iter().map(|id| (id.clone(), 251)).collect();
    assert_published_once_in_order(&messages, &expected);
    let first = &messages[0].1;
    assert_eq!(first.entity_type, "device");
    assert_eq!(first.event_type, "InstanceCreated");
}

/// The built server binary on `port`, on PostgreSQL and NATS only: a process, so the test can
/// SIGKILL it mid-write. Its logs go to files in `logs`, shown if it fails to start.
fn spawn_server(
    logs: &std::path::Path,
    name: &str,
    db_url: &str,
    nats_url: &str,
    port: u16,
) -> Binary {
    let addr = format!("127.0.0.1:{port}");
    Binary::spawn(
        logs,
        logs,
        name,
        &[
            ("DATABASE_URL", db_url),
            ("NATS_URL", nats_url),
            ("GRPC_ADDR", &addr),
            ("RUST_LOG", "warn"),
        ],
    )
}

/// What a SIGKILL under load left: each writer's instance with the last version the server
/// acknowledged to it, and each instance's version as stored after the restart.
struct AfterKill {
    acknowledged: Vec<(String, i64)>,
    stored: HashMap<String, i64>,
}

/// Starts a server on a fresh database with a private NATS, sets `writers` writers going (each
/// on an instance of its own, one call at a time, at most `per_writer` events), SIGKILLs the
/// server once more than `committed` events are stored (waiting at most `wait`), restarts it,
/// and waits for its outbox to drain. Checks what holds whatever the load: the stored versions
/// account for every stored event, and JetStream holds each stored event once, in order.
async fn kill_under_writers(
    writers: usize,
    per_writer: usize,
    committed: i64,
    wait: Duration,
) -> AfterKill {
    let nats = Nats::start();
    let db = TestDb::create().await;
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let mut server = spawn_server(logs.path(), "first", &db.url, &nats.url(), port);
    let mut c = server.wait_ready(&format!("127.0.0.1:{port}")).await;
    c.create_type("device", json!({"type": "object"})).await;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let id = c
            .create_instance("device", &format!("d-{i}"), json!({}))
            .await
            .id;
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            // The last version the server acknowledged to this writer (each writer is its
            // instance's only one, one call at a time).
            let mut acknowledged = 1;
            for n in 0..per_writer {
                match c.apply(&id, "Reading", json!({"n": n})).await {
                    Ok(r) => acknowledged = r.event.unwrap().version,
                    Err(_) => break,
                }
            }
            (id, acknowledged)
        }));
    }
    wait_until("events are committed", wait, || {
        let db = &db;
        async move { db.count("events").await > committed }
    })
    .await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.push(t.await.unwrap());
    }

    let mut server = spawn_server(logs.path(), "restarted", &db.url, &nats.url(), port);
    wait_until(
        "the outbox is drained after the restart",
        Duration::from_secs(60),
        || {
            let db = &db;
            async move { db.count("outbox").await == 0 }
        },
    )
    .await;
    let client = db.client().await;
    let mut stored = HashMap::new();
    for row in client
        .query("SELECT id::text, version FROM instances", &[])
        .await
        .unwrap()
    {
        stored.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    // Counted now, not right after the kill: a COMMIT the killed server had already sent may
    // still be finishing inside PostgreSQL at that moment.
    assert_eq!(stored.values().sum::<i64>(), db.count("events").await);
    assert_published_once_in_order(&stream_messages(&nats.url()).await, &stored);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    AfterKill {
        acknowledged,
        stored,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_while_publishing_publishes_everything_after_a_restart() {
    let after = kill_under_writers(3, 400, 200, Duration::from_secs(30)).await;
    // Every acknowledged event is stored (an unacknowledged one may be too: its answer was lost).
    for (id, version) in &after.acknowledged {
        assert!(
            after.stored[id] >= *version,
            "{id}: version {version} was acknowledged but only {} is stored",
            after.stored[id]
        );
    }
}

/// SIGKILL while 32 writers keep the group committer's batches full: after a restart every
/// acknowledged event is stored and published once, in order; and nothing beyond what was
/// acknowledged is visible except, per writer, the one append whose answer the kill cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_during_loaded_batches_keeps_exactly_what_it_acknowledged() {
    let after = kill_under_writers(32, 2000, 1500, Duration::from_secs(60)).await;
    for (id, version) in &after.acknowledged {
        let stored = after.stored[id];
        assert!(
            stored == *version || stored == *version + 1,
            "{id}: version {version} was acknowledged, {stored} is stored"
        );
    }
}

async fn subscribe(
    c: &mut Clients,
    instance_id: &str,
    from_version: Option<i64>,
) -> tonic::Streaming<pb::SubscribeResponse> {
    c.events
        .subscribe(pb::SubscribeRequest {
            instance_id: instance_id.into(),
            from_version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The Subscribe contract (common::subscribe_contract), on the in-process bus (`extra` empty)
/// or on NATS.
async fn subscribe_contract(extra: &[&str]) {
    let db = TestDb::create().await;
    common::subscribe_contract(TestServer::start(&db.url, extra).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_replays_then_follows_live_in_process() {
    subscribe_contract(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_replays_then_follows_live_through_nats() {
    let nats = Nats::start();
    subscribe_contract(&["--nats-url", &nats.url()]).await;
}

async fn stalled_subscriber(extra: &[&str]) {
    let db = TestDb::create().await;
    let mut flags = vec!["--subscriber-buffer", "16"];
    flags.extend_from_slice(extra);
    let server = TestServer::start(&db.url, &flags).await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    let inst = c.create_instance("device", "d", json!({})).await;
    let mut stalled = subscribe(&mut c, &inst.id, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The writer is never held back by the subscriber that does not read. 1,500 events of 8 KiB
    // (12 MiB) overflow every HTTP/2 window between the server and the stalled client, so the
    // server-side buffer of 16 events fills up. A writer held back would hang here: the bound,
    // far above what 1,500 writes take on a loaded machine, turns that into a failure.
    let pad = "x".repeat(8192);
    let writes = async {
        for n in 0..1500 {
            c.apply(&inst.id, "Reading", json!({"n": n, "pad": pad}))
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(300), writes)
        .await
        .expect("the writer was held back by a subscriber that does not read");
    assert_eq!(version_of(&mut c, &inst.id).await, 1501);

    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(20), stalled.next()).await {
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(status))) => break status,
            Ok(None) => panic!("stream ended without an error after {received} events"),
            Err(_) => panic!("no cut-off after {received} events"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("behind"), "{}", status.message());
    assert!(
        received < 1500,
        "the laggard was cut off, not served everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_cut_off_in_process() {
    stalled_subscriber(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_cut_off_on_nats() {
    let nats = Nats::start();
    stalled_subscriber(&["--nats-url", &nats.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_rejects_bad_input() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let mut c = server.clients().await;
    c.create_type("device", json!({"type": "object"})).await;
    for (req, code, needle) in [
        (
            pb::SubscribeRequest {
                from_version: Some(3),
                ..Default::default()
            },
            Code::InvalidArgument,
            "from_version",
        ),
        (
            pb::SubscribeRequest {
                instance_id: "nope".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "instance_id",
        ),
        (
            pb::SubscribeRequest {
                instance_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            Code::NotFound,
            "instance",
        ),
        (
            pb::SubscribeRequest {
                entity_type: "no_such".into(),
                ..Default::default()
            },
            Code::NotFound,
            "no_such",
        ),
    ] {
        let status = c.events.subscribe(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{}", status.message());
    }
}

/// A one-node Redis Cluster of the test's own, holding every slot: it refuses a script whose
/// keys are in different slots (CROSSSLOT) exactly as a many-node cluster does.
struct ClusterRedis {
    port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl ClusterRedis {
    fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                // Alone, a node does not know its own address, and clients learn it from
                // CLUSTER SLOTS.
                "--cluster-announce-ip",
                "127.0.0.1",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let cluster = Self {
            port,
            _dir: dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while cluster.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The Redis answering is this child, not another process that took the port first.
        let info = common::procs::redis_command(port, &["INFO", "server"]);
        assert!(
            info.lines()
                .any(|l| l.trim() == format!("process_id:{}", cluster.child.id())),
            "the Redis on port {port} is not the one this test started"
        );
        assert_eq!(
            cluster.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
            "OK"
        );
        while !cluster
            .cli(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// One command through redis-cli; its answer, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn slot(&self, key: &str) -> String {
        self.cli(&["CLUSTER", "KEYSLOT", key])
    }
}

impl Drop for ClusterRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cache_keys_are_hash_tagged_by_the_server_not_by_the_external_id() {
    use temporal_state_server::adapters::redis::{external_key, id_key};
    let redis = ClusterRedis::start();
    let instance = uuid::Uuid::now_v7();
    let entity_type = uuid::Uuid::now_v7();
    assert_eq!(
        redis.slot(&id_key(instance)),
        redis.slot(&instance.to_string())
    );
    // Braces in an external id never choose the slot: the tag is the type and the whole id.
    let key = external_key(entity_type, "{a}b}c%");
    assert_eq!(
        redis.slot(&key),
        redis.slot(&format!("{entity_type}:%7Ba%7Db%7Dc%25"))
    );
    assert_ne!(redis.slot(&key), redis.slot("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_works_on_redis_cluster() {
    cache_on_cluster("redis-cluster").await;
}

/// A cluster node named by a `redis://` URL: the server takes it for one Redis and sends both
/// keys in one script call, which the cluster refuses (CROSSSLOT); from then on it writes each
/// key on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_works_on_a_cluster_node_named_by_a_plain_redis_url() {
    cache_on_cluster("redis").await;
}

/// Creates an instance and appends one event through a server whose cache is a one-node Redis
/// Cluster reached by `scheme`://; both cache keys must hold the new version.
async fn cache_on_cluster(scheme: &str) {
    use temporal_state_server::adapters::redis::{external_key, id_key};
    let redis = ClusterRedis::start();
    let db = TestDb::create().await;
    let url = format!("{scheme}://127.0.0.1:{}", redis.port);
    let server = TestServer::start(&db.url, &["--redis-url", &url]).await;
    let mut c = server.clients().await;
    let entity_type = c.create_type("counter", json!({"type": "object"})).await;
    let inst = c.create_instance("counter", "c{1}", json!({"n": 0})).await;
    c.apply(&inst.id, "Tick", json!({"n": 1})).await.unwrap();
    assert_eq!(version_of(&mut c, &inst.id).await, 2);

    // Both keys were written by the compare-and-set: a CROSSSLOT refusal would leave them absent.
    let by_id = id_key(inst.id.parse().unwrap());
    let by_external = external_key(entity_type.id.parse().unwrap(), "c{1}");
    wait_until(
        "both cache keys hold version 2",
        Duration::from_secs(20),
        || {
            let ok = redis.cli(&["HGET", &by_id, "v"]) == "2"
                && redis.cli(&["HGET", &by_external, "v"]) == "2";
            async move { ok }
        },
    )
    .await;
    let state = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "counter".into(),
            external_id: "c{1}".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(state.version, 2);
    server.stop().await;
}

/// The versions GetInstance and GetCurrentState answer for `id` (external id "c" of "counter").
async fn read_both(c: &mut Clients, id: &str) -> (i64, i64) {
    let by_id = version_of(c, id).await;
    let by_external = c
        .instances
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "counter".into(),
            external_id: "c".into(),
        })
        .await
        .expect("reads carry on")
        .into_inner()
        .instance
        .unwrap()
        .version;
    (by_id, by_external)
}

/// A Redis that hangs (SIGSTOP) rather than refuses: calls still answer, bounded by
/// REDIS_TIMEOUT_MS, and the cache write that timed out leaves an older entry in Redis (its
/// queued command is refused by a full Redis once the process runs again). That entry is on
/// offer to every read, and the server must not serve it until its repair has rewritten it.
/// CACHE_TTL_SECS is the lifetime of what the server writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_times_out_and_its_stale_entry_is_never_served_before_the_repair() {
    let redis = Redis::start();
    let db = TestDb::create().await;
    let server = TestServer::start(
        &db.url,
        &[
            "--redis-url",
            &redis.url(),
            "--redis-timeout-ms",
            "300",
            "--cache-ttl-secs",
            "777",
        ],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("counter", json!({"type": "object"})).await;
    let inst = c.create_instance("counter", "c", json!({"n": 0})).await;
    c.apply(&inst.id, "Tick", json!({"n": 1})).await.unwrap();
    assert_eq!(read_both(&mut c, &inst.id).await, (2, 2));
    assert_eq!(redis_version(&redis, &inst.id).await, Some(2));
    // CACHE_TTL_SECS: the entry lives 777 s, not the default hour.
    let key = temporal_state_server::adapters::redis::id_key(inst.id.parse().unwrap());
    let ttl: i64 = redis.command(&["PTTL", &key]).parse().unwrap();
    assert!((770_000..=777_000).contains(&ttl), "PTTL {ttl}");

    // Full: every write (the cache's compare-and-set script included) is refused from now on,
    // reads are served. Then the process hangs, with the entry at version 2.
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    redis.pause();
    // Every call answers while Redis hangs: a bound far above REDIS_TIMEOUT_MS that only a
    // call waiting on Redis for ever would reach.
    let bound = Duration::from_secs(20);
    let written = tokio::time::timeout(bound, c.apply(&inst.id, "Tick", json!({"n": 2})))
        .await
        .expect("a write answers while Redis hangs")
        .unwrap()
        .event
        .unwrap()
        .version;
    assert_eq!(written, 3);
    let during = tokio::time::timeout(bound, read_both(&mut c, &inst.id))
        .await
        .expect("reads answer while Redis hangs");
    assert_eq!(during, (3, 3), "reads while Redis hangs");
    redis.resume();

    // Redis answers again and still holds version 2 (the queued write was refused): a read that
    // trusted the cache would now answer 2. Read through several repair rounds (each fails on
    // the full Redis), checking the stale entry is still there after each read.
    for round in 0..15 {
        let (by_id, by_external) = read_both(&mut c, &inst.id).await;
        let cached = redis_version(&redis, &inst.id).await;
        assert_eq!(cached, Some(2), "round {round}: Redis keeps the old entry");
        assert_eq!(
            (by_id, by_external),
            (3, 3),
            "round {round}: the server served the entry its failed write left stale"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Writes accepted again: the repair rewrites the entry, and reads are cache hits again.
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until(
        "the repair writes version 3 to Redis",
        Duration::from_secs(30),
        || {
            let redis = &redis;
            let id = inst.id.clone();
            async move { redis_version(redis, &id).await == Some(3) }
        },
    )
    .await;
    assert_eq!(read_both(&mut c, &inst.id).await, (3, 3));
}

/// The cache's keys and entries as the README prints them, read raw from Redis (key names
/// written out here, the entry decoded as plain JSON, not with the adapter's types).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_entries_have_the_documented_keys_and_fields() {
    let redis = Redis::start();
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--redis-url", &redis.url()]).await;
    let mut c = server.clients().await;
    let entity_type = c.create_type("counter", json!({"type": "object"})).await;
    let inst = c
        .create_instance("counter", "a{b}%c", json!({"n": 0}))
        .await;
    c.apply(&inst.id, "Tick", json!({"n": 1})).await.unwrap();
    version_of(&mut c, &inst.id).await;

    let by_id = format!("tse:instance:{{{}}}", inst.id);
    let by_external = format!("tse:external:{{{}:a%7Bb%7D%25c}}", entity_type.id);
    let mut keys: Vec<String> = redis
        .command(&["KEYS", "*"])
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    let mut want = vec![by_external.clone(), by_id.clone()];
    want.sort();
    assert_eq!(keys, want);
    for key in [&by_id, &by_external] {
        assert_eq!(redis.command(&["HGET", key, "v"]), "2", "{key}");
        assert_eq!(redis.command(&["HLEN", key]), "2", "{key}: only v and d");
        let d: serde_json::Value =
            serde_json::from_str(&redis.command(&["HGET", key, "d"])).unwrap();
        let mut fields: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "archived",
                "created_at",
                "entity_type_id",
                "entity_type_name",
                "erased",
                "external_id",
                "id",
                "state",
                "updated_at",
                "version"
            ],
            "{key}"
        );
        assert_eq!(d["archived"], false);
        assert_eq!(d["erased"], false);
        assert_eq!(d["id"], inst.id.as_str());
        assert_eq!(d["entity_type_id"], entity_type.id.as_str());
        assert_eq!(d["entity_type_name"], "counter");
        assert_eq!(d["external_id"], "a{b}%c");
        assert_eq!(d["state"], json!({"n": 1}));
        assert_eq!(d["version"], 2);
    }
    server.stop().await;
}
