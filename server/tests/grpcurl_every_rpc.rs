//! The real grpcurl calls every RPC of the six services through reflection alone (no .proto
//! files), against a real server on PostgreSQL. The methods called are checked against what
//! reflection lists, so a new RPC without a call here fails the test.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

const SERVICES: [&str; 6] = [
    "temporal_state.v1.EntityTypeService",
    "temporal_state.v1.InstanceService",
    "temporal_state.v1.EventService",
    "temporal_state.v1.QueryService",
    "temporal_state.v1.AnalyticsService",
    "temporal_state.v1.AuthService",
];

/// PATH with the repo's tool folder first, where scripts/ensure-tools.sh puts grpcurl.
fn tool_path() -> String {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/bin");
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

struct Grpcurl {
    addr: String,
    called: BTreeSet<String>,
}

struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Grpcurl {
    fn run(&self, args: &[&str]) -> Answer {
        let out = Command::new("grpcurl")
            .args(args)
            .env("PATH", tool_path())
            .output()
            .expect("grpcurl must be installed: run scripts/ensure-tools.sh (or scripts/test.sh)");
        Answer {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Calls `Service/Method` with a JSON request, recording that it was called.
    fn call_raw(&mut self, method: &str, request: Value, extra: &[&str]) -> Answer {
        self.called.insert(format!("temporal_state.v1.{method}"));
        let data = request.to_string();
        let mut args = vec!["-plaintext", "-d", &data];
        args.extend(extra);
        let target = format!("temporal_state.v1.{method}");
        args.extend([self.addr.as_str(), target.as_str()]);
        self.run(&args)
    }

    /// Subscribes with grpcurl and reads the versions it prints until `last` (grpcurl prints
    /// each message as an indented JSON object ending with a line `}`); then ends grpcurl. A
    /// stream that stops short fails at grpcurl's generous `-max-time`.
    fn subscribe_until(&mut self, request: Value, last: i64) -> Vec<i64> {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let method = "EventService/Subscribe";
        self.called.insert(format!("temporal_state.v1.{method}"));
        let data = request.to_string();
        let target = format!("temporal_state.v1.{method}");
        let mut child = Command::new("grpcurl")
            .args(["-plaintext", "-max-time", "120", "-d", &data])
            .args([self.addr.as_str(), target.as_str()])
            .env("PATH", tool_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("grpcurl must be installed: run scripts/ensure-tools.sh (or scripts/test.sh)");
        let mut versions = Vec::new();
        let mut message = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            message.push_str(&line);
            message.push('\n');
            if line == "}" {
                let m: Value = serde_json::from_str(&message)
                    .unwrap_or_else(|e| panic!("not JSON ({e}):\n{message}"));
                versions.push(int(&m["event"]["version"]));
                message.clear();
                if versions.last() == Some(&last) {
                    break;
                }
            }
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            versions.last(),
            Some(&last),
            "the stream ended at {versions:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        versions
    }

    /// A unary call that must succeed; its answer as JSON.
    fn call(&mut self, method: &str, request: Value) -> Value {
        let a = self.call_raw(method, request, &[]);
        assert!(a.ok, "{method} failed:\n{}\n{}", a.stdout, a.stderr);
        serde_json::from_str(&a.stdout)
            .unwrap_or_else(|e| panic!("{method}: not JSON ({e}):\n{}", a.stdout))
    }

    /// Every method reflection lists for the six services.
    fn listed(&self) -> BTreeSet<String> {
        let mut methods = BTreeSet::new();
        for service in SERVICES {
            let a = self.run(&["-plaintext", &self.addr, "list", service]);
            assert!(a.ok, "list {service}: {}", a.stderr);
            methods.extend(
                a.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        // grpcurl prints `pkg.Service.Method`; calls are named `pkg.Service/Method`.
                        let (service, method) = l.rsplit_once('.').unwrap();
                        format!("{service}/{method}")
                    }),
            );
        }
        methods
    }
}

/// int64 fields are JSON strings in the proto3 JSON mapping.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        Value::Null => 0,
        other => panic!("not an int64: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_calls_every_rpc_through_reflection() {
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let addr = server.addr.to_string();
    // grpcurl blocks; the server runs on this runtime, so the calls go to a thread of their own.
    let called = tokio::task::spawn_blocking(move || every_rpc(addr))
        .await
        .unwrap();
    let listed = Grpcurl {
        addr: server.addr.to_string(),
        called: BTreeSet::new(),
    }
    .listed();
    assert_eq!(listed.len(), 27, "{listed:?}");
    assert_eq!(called, listed, "every listed RPC is called, and only those");
    server.stop().await;
}

fn every_rpc(addr: String) -> BTreeSet<String> {
    let mut g = Grpcurl {
        addr,
        called: BTreeSet::new(),
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "minLength": 3},
            "score": {"type": "integer", "minimum": 0},
            "level": {"type": "integer", "minimum": 1}
        },
        "required": ["username"]
    });

    // EntityTypeService
    let created = g.call(
        "EntityTypeService/CreateEntityType",
        serde_json::json!({"name": "player_profile", "description": "players", "schema": schema}),
    );
    let type_id = created["entityType"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["entityType"]["schema"], schema);
    let listed = g.call(
        "EntityTypeService/ListEntityTypes",
        serde_json::json!({"page_size": 10}),
    );
    assert_eq!(listed["entityTypes"][0]["id"], type_id.as_str());
    let got = g.call(
        "EntityTypeService/GetEntityType",
        serde_json::json!({"entity_type": "player_profile"}),
    );
    assert_eq!(got["entityType"]["id"], type_id.as_str());
    assert_eq!(int(&got["schemaVersions"][0]["version"]), 1);
    let scratch = g.call(
        "EntityTypeService/CreateEntityType",
        serde_json::json!({"name": "scratch", "schema": {"type": "object"}}),
    );
    let updated = g.call(
        "EntityTypeService/UpdateEntityType",
        serde_json::json!({
            "entity_type": "scratch", "description": "for a while",
            "schema": {"type": "object", "required": ["a"]}, "expected_schema_version": 1
        }),
    );
    assert_eq!(updated["applied"], true);
    assert_eq!(int(&updated["entityType"]["schemaVersion"]), 2);
    g.call(
        "EntityTypeService/DeleteEntityType",
        serde_json::json!({"entity_type": scratch["entityType"]["id"]}),
    );

    // InstanceService
    let created = g.call(
        "InstanceService/CreateInstance",
        serde_json::json!({
            "entity_type": type_id, "external_id": "player-001",
            "initial_state": {"username": "alice", "score": 0, "level": 1},
            "metadata": {"actor": "grpcurl"}
        }),
    );
    let id = created["instance"]["id"].as_str().unwrap().to_string();
    assert_eq!(int(&created["instance"]["version"]), 1);
    assert_eq!(created["event"]["eventType"], "InstanceCreated");
    let listed = g.call(
        "InstanceService/ListInstances",
        serde_json::json!({"entity_type": "player_profile"}),
    );
    assert_eq!(listed["instances"][0]["externalId"], "player-001");
    let got = g.call(
        "InstanceService/GetInstance",
        serde_json::json!({"instance_id": id}),
    );
    assert_eq!(got["instance"]["state"]["username"], "alice");
    let current = g.call(
        "InstanceService/GetCurrentState",
        serde_json::json!({"entity_type": "player_profile", "external_id": "player-001"}),
    );
    assert_eq!(current["instance"]["id"], id.as_str());
    // Archived and restored in a type of its own, so the analytics below count one instance.
    g.call(
        "EntityTypeService/CreateEntityType",
        serde_json::json!({"name": "shelf", "schema": {"type": "object"}}),
    );
    let second = g.call(
        "InstanceService/CreateInstance",
        serde_json::json!({
            "entity_type": "shelf", "external_id": "item-1", "initial_state": {"n": 1}
        }),
    );
    let second = second["instance"]["id"].as_str().unwrap().to_string();
    let archived = g.call(
        "InstanceService/ArchiveInstance",
        serde_json::json!({"instance_id": second, "metadata": {"why": "left"}}),
    );
    assert_eq!(archived["instance"]["archived"], true);
    assert_eq!(archived["event"]["eventType"], "InstanceArchived");
    let restored = g.call(
        "InstanceService/RestoreInstance",
        serde_json::json!({"instance_id": second}),
    );
    assert_eq!(restored["event"]["eventType"], "InstanceRestored");
    let erased = g.call(
        "InstanceService/EraseInstance",
        serde_json::json!({"instance_id": second, "reason": "asked to be forgotten"}),
    );
    assert_eq!(erased["instance"]["erased"], true);
    assert_eq!(erased["event"]["eventType"], "InstanceErased");
    assert_eq!(
        erased["event"]["metadata"]["reason"],
        "asked to be forgotten"
    );

    // EventService
    let applied = g.call(
        "EventService/ApplyEvent",
        serde_json::json!({
            "instance_id": id, "event_type": "ScoreIncreased", "payload": {"score": 150, "level": 2},
            "expected_version": 1, "event_id": "score-1", "occurred_at": "2030-01-01T10:00:00Z",
            "mode": "APPLY_MODE_MERGE_PATCH"
        }),
    );
    assert_eq!(int(&applied["event"]["version"]), 2);
    assert_eq!(applied["state"]["score"], 150.0);
    let batch = g.call(
        "EventService/ApplyEvents",
        serde_json::json!({
            "instance_id": id, "expected_version": 2,
            "events": [
                {"event_type": "LevelUp", "payload": {"level": 3}},
                {"event_type": "Renamed", "mode": "APPLY_MODE_JSON_PATCH",
                 "payload": {"patch": [{"op": "replace", "path": "/username", "value": "alice2"}]}}
            ]
        }),
    );
    assert_eq!(batch["events"].as_array().unwrap().len(), 2);
    assert_eq!(batch["state"]["username"], "alice2");
    // Subscribe streams: the replay of versions 1..=4, then it waits for live events. Read as
    // grpcurl prints it, and ended once version 4 arrived (`-max-time` only stops a hang).
    let versions = g.subscribe_until(serde_json::json!({"instance_id": id, "from_version": 1}), 4);
    assert_eq!(versions, vec![1, 2, 3, 4]);

    // QueryService
    let history = g.call(
        "QueryService/GetHistory",
        serde_json::json!({"instance_id": id, "from_version": 2, "event_types": ["LevelUp", "Renamed"], "descending": true}),
    );
    let versions: Vec<i64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| int(&e["version"]))
        .collect();
    assert_eq!(versions, vec![4, 3]);
    let log = g.call(
        "QueryService/ReadEvents",
        serde_json::json!({"from_position": 0, "entity_types": ["player_profile"], "event_types": ["LevelUp"]}),
    );
    let positions: Vec<i64> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| int(&e["position"]))
        .collect();
    assert_eq!(positions.len(), 1, "{log}");
    assert!(int(&log["nextPosition"]) >= positions[0], "{log}");
    let at1 = g.call(
        "QueryService/GetStateAtVersion",
        serde_json::json!({"instance_id": id, "version": 1}),
    );
    assert_eq!(at1["state"]["score"], 0.0);
    let at_time = g.call(
        "QueryService/GetStateAtTime",
        serde_json::json!({"instance_id": id, "timestamp": "9999-12-31T00:00:00Z"}),
    );
    assert_eq!(int(&at_time["version"]), 4);
    let diff = g.call(
        "QueryService/CompareVersions",
        serde_json::json!({"instance_id": id, "version1": 1, "version2": 2}),
    );
    assert!(
        diff["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "/score" && c["kind"] == "CHANGE_KIND_CHANGED"),
        "{diff}"
    );
    let timeline = g.call(
        "QueryService/GetFieldTimeline",
        serde_json::json!({"instance_id": id, "field": "level"}),
    );
    assert_eq!(
        timeline["points"].as_array().unwrap().len(),
        3,
        "{timeline}"
    );

    // AnalyticsService (business time: the ScoreIncreased event occurred in 2030).
    let counts = g.call(
        "AnalyticsService/GetEventCounts",
        serde_json::json!({"entity_type": "player_profile", "start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-02T00:00:00Z"}),
    );
    assert_eq!(counts["counts"][0]["eventType"], "ScoreIncreased");
    assert_eq!(int(&counts["counts"][0]["count"]), 1);
    let series = g.call(
        "AnalyticsService/GetEventTimeSeries",
        serde_json::json!({
            "entity_type": "player_profile", "interval": "3600s",
            "start_time": "2030-01-01T08:00:00Z", "end_time": "2030-01-01T12:00:00Z"
        }),
    );
    let buckets: Vec<i64> = series["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| int(&b["count"]))
        .collect();
    assert_eq!(buckets, vec![0, 0, 1, 0], "{series}");
    let levels = g.call(
        "AnalyticsService/GetFieldAggregation",
        serde_json::json!({"entity_type": "player_profile", "field": "/level"}),
    );
    assert_eq!(int(&levels["count"]), 1);
    assert_eq!(levels["max"], 3.0);
    let active = g.call(
        "AnalyticsService/GetMostActive",
        serde_json::json!({"entity_type": "player_profile", "limit": 5}),
    );
    assert_eq!(int(&active["entries"][0]["eventCount"]), 4);
    let summary = g.call(
        "AnalyticsService/GetSummary",
        serde_json::json!({"entity_type": "player_profile"}),
    );
    assert_eq!(int(&summary["instanceCount"]), 1);
    assert_eq!(int(&summary["eventCount"]), 4);

    // AuthService: without authentication configured, everyone is the anonymous caller.
    let me = g.call("AuthService/GetCaller", serde_json::json!({}));
    assert_eq!(me["kind"], "CALLER_KIND_ANONYMOUS", "{me}");
    assert_eq!(me["scopes"], serde_json::json!(["admin"]), "{me}");
    assert!(
        me.get("authenticationEnabled").is_none(),
        "false is omitted: {me}"
    );

    g.called
}
