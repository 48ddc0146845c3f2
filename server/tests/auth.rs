//! Authentication and authorization against a real server on 127.0.0.1:0: every RPC refuses a
//! call without credentials (health still answers), scopes decide what a valid caller may do and
//! nothing is stored when they do not allow it, every kind of bad JWT is refused, a key removed
//! from the API keys file stops working while the server runs, and JWKS rotation works without
//! a restart (against a JWKS server this test runs on loopback).
//!
//! Keys: `fixtures/auth/rs256_*.pem` is an RSA key pair made for these tests only (ring, the
//! crypto provider here, cannot generate RSA keys); EC keys are generated per test with rcgen.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;
use temporal_state_proto::v1::auth_service_client::AuthServiceClient;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

const RSA_PRIVATE: &str = include_str!("fixtures/auth/rs256_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/auth/rs256_public.pem");

/// A request carrying `authorization: Bearer <token>`.
fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("an ASCII token"),
    );
    request
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An API keys file of (name, key, scopes), as the server reads it.
fn keys_file(keys: &[(&str, &str, &[&str])]) -> String {
    let entries: Vec<serde_json::Value> = keys
        .iter()
        .map(|(name, key, scopes)| json!({"name": name, "sha256": sha256_hex(key), "scopes": scopes}))
        .collect();
    serde_json::Value::Array(entries).to_string()
}

/// Writes `text` to `path` the way a careful operator (or a Secret update) does: a new file
/// renamed over the old one.
fn replace_file(path: &std::path::Path, text: &str) {
    let next = path.with_extension("new");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Every key a test below uses, with its scopes.
const ADMIN: &str = "admin-key-0123456789";
const READER: &str = "reader-key-0123456789";
const ORDERS_WRITER: &str = "orders-writer-key-0123";
const ORDERS_READER: &str = "orders-reader-key-0123";
const NOBODY: &str = "no-scope-key-0123456789";

struct Fixture {
    _dir: tempfile::TempDir,
    keys_path: std::path::PathBuf,
    _server: TestServer,
    channel: Channel,
}

impl Fixture {
    /// An embedded server with the API keys above, and more flags.
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys_path = dir.path().join("keys.json");
        std::fs::write(
            &keys_path,
            keys_file(&[
                ("admin", ADMIN, &["admin"]),
                ("reader", READER, &["read"]),
                ("orders-writer", ORDERS_WRITER, &["write:orders"]),
                ("orders-reader", ORDERS_READER, &["read:orders"]),
                ("nobody", NOBODY, &[]),
            ]),
        )
        .unwrap();
        let data = dir.path().join("data");
        let keys = keys_path.to_str().unwrap().to_string();
        let mut flags = vec!["--auth-api-keys-file", keys.as_str()];
        flags.extend(extra);
        let server = TestServer::start_embedded(&data, &flags).await;
        let channel = server.channel().await;
        Self {
            _dir: dir,
            keys_path,
            _server: server,
            channel,
        }
    }

    fn types(&self) -> EntityTypeServiceClient<Channel> {
        EntityTypeServiceClient::new(self.channel.clone())
    }
    fn instances(&self) -> InstanceServiceClient<Channel> {
        InstanceServiceClient::new(self.channel.clone())
    }
    fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }
    fn queries(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel.clone())
    }

    async fn create_type(&self, token: &str, name: &str) -> Result<pb::EntityType, tonic::Status> {
        self.types()
            .create_entity_type(authed(
                token,
                pb::CreateEntityTypeRequest {
                    declarations: None,
                    name: name.into(),
                    description: String::new(),
                    schema: Some(st(json!({"type": "object"}))),
                },
            ))
            .await
            .map(|r| r.into_inner().entity_type.unwrap())
    }

    async fn create_instance(
        &self,
        token: &str,
        entity_type: &str,
        external_id: &str,
    ) -> Result<pb::CreateInstanceResponse, tonic::Status> {
        self.instances()
            .create_instance(authed(
                token,
                pb::CreateInstanceRequest {
                    entity_type: entity_type.into(),
                    external_id: external_id.into(),
                    initial_state: Some(st(json!({"n": 0}))),
                    metadata: None,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn apply(
        &self,
        token: &str,
        instance_id: &str,
        n: i64,
    ) -> Result<pb::ApplyEventResponse, tonic::Status> {
        self.events()
            .apply_event(authed(
                token,
                pb::ApplyEventRequest {
                    instance_id: instance_id.into(),
                    event_type: "Set".into(),
                    payload: Some(st(json!({"n": n}))),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn history(&self, token: &str, instance_id: &str) -> Vec<pb::Event> {
        self.queries()
            .get_history(authed(
                token,
                pb::GetHistoryRequest {
                    instance_id: instance_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("history")
            .into_inner()
            .events
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_without_credentials_is_unauthenticated_and_health_answers() {
    let f = Fixture::start(&[]).await;
    let t = f.create_type(ADMIN, "player_profile").await.unwrap();
    let created = f
        .create_instance(ADMIN, "player_profile", "p1")
        .await
        .unwrap();
    let id = created.instance.unwrap().id;

    let ch = f.channel.clone();
    let mut types = EntityTypeServiceClient::new(ch.clone());
    let mut instances = InstanceServiceClient::new(ch.clone());
    let mut events = EventServiceClient::new(ch.clone());
    let mut queries = QueryServiceClient::new(ch.clone());
    let mut analytics = AnalyticsServiceClient::new(ch.clone());
    let name = || "player_profile".to_string();
    let mut refused = Vec::new();
    macro_rules! refused {
        ($call:expr) => {
            refused.push((stringify!($call), $call.await.map(|_| ()).unwrap_err()));
        };
    }
    refused!(types.create_entity_type(pb::CreateEntityTypeRequest {
        declarations: None,
        name: "other".into(),
        description: String::new(),
        schema: Some(st(json!({})))
    }));
    refused!(types.list_entity_types(pb::ListEntityTypesRequest::default()));
    refused!(types.get_entity_type(pb::GetEntityTypeRequest {
        entity_type: t.id.clone()
    }));
    refused!(types.update_entity_type(pb::UpdateEntityTypeRequest {
        entity_type: t.id.clone(),
        description: Some("x".into()),
        ..Default::default()
    }));
    refused!(types.delete_entity_type(pb::DeleteEntityTypeRequest {
        entity_type: t.id.clone()
    }));
    refused!(instances.create_instance(pb::CreateInstanceRequest {
        entity_type: name(),
        external_id: "p2".into(),
        ..Default::default()
    }));
    refused!(instances.list_instances(pb::ListInstancesRequest {
        entity_type: name(),
        ..Default::default()
    }));
    refused!(instances.get_instance(pb::GetInstanceRequest {
        instance_id: id.clone()
    }));
    refused!(instances.archive_instance(pb::ArchiveInstanceRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(instances.restore_instance(pb::RestoreInstanceRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(instances.erase_instance(pb::EraseInstanceRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(instances.get_current_state(pb::GetCurrentStateRequest {
        entity_type: name(),
        external_id: "p1".into()
    }));
    refused!(events.apply_event(pb::ApplyEventRequest {
        instance_id: id.clone(),
        event_type: "Set".into(),
        payload: Some(st(json!({"n": 1}))),
        ..Default::default()
    }));
    refused!(events.apply_events(pb::ApplyEventsRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(events.subscribe(pb::SubscribeRequest {
        entity_type: name(),
        ..Default::default()
    }));
    refused!(queries.get_history(pb::GetHistoryRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(queries.get_state_at_version(pb::GetStateAtVersionRequest {
        instance_id: id.clone(),
        version: 1
    }));
    refused!(queries.get_state_at_time(pb::GetStateAtTimeRequest {
        instance_id: id.clone(),
        ..Default::default()
    }));
    refused!(queries.compare_versions(pb::CompareVersionsRequest {
        instance_id: id.clone(),
        version1: 1,
        version2: 1
    }));
    refused!(queries.get_field_timeline(pb::GetFieldTimelineRequest {
        instance_id: id.clone(),
        field: "n".into(),
        ..Default::default()
    }));
    refused!(analytics.get_event_counts(pb::GetEventCountsRequest {
        entity_type: name(),
        ..Default::default()
    }));
    refused!(
        analytics.get_event_time_series(pb::GetEventTimeSeriesRequest {
            entity_type: name(),
            ..Default::default()
        })
    );
    refused!(
        analytics.get_field_aggregation(pb::GetFieldAggregationRequest {
            entity_type: name(),
            field: "n".into(),
            ..Default::default()
        })
    );
    refused!(analytics.get_most_active(pb::GetMostActiveRequest {
        entity_type: name(),
        limit: 1,
        ..Default::default()
    }));
    refused!(analytics.get_summary(pb::GetSummaryRequest {
        entity_type: name()
    }));
    refused!(AuthServiceClient::new(ch.clone()).get_caller(pb::GetCallerRequest {}));
    assert_eq!(refused.len(), 26, "every RPC of the six services");
    for (call, status) in &refused {
        assert_eq!(status.code(), Code::Unauthenticated, "{call}: {status:?}");
    }
    // A wrong key and a wrong scheme are refused the same way.
    let mut wrong = tonic::Request::new(pb::ListEntityTypesRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Basic YWRtaW46YWRtaW4=".parse().unwrap());
    assert_eq!(
        code(types.list_entity_types(wrong).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            types
                .list_entity_types(authed("not-a-key", pb::ListEntityTypesRequest::default()))
                .await
        ),
        Code::Unauthenticated
    );

    // Nothing was written by any of those calls.
    assert_eq!(f.history(ADMIN, &id).await.len(), 1);

    // Health answers without credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    wait_for_health(
        &mut health,
        "",
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_caller_names_the_key_and_its_scopes_whatever_they_are() {
    let f = Fixture::start(&[]).await;
    let mut auth = AuthServiceClient::new(f.channel.clone());
    for (key, name, scopes) in [
        (ADMIN, "admin", &["admin"][..]),
        (ORDERS_WRITER, "orders-writer", &["write:orders"][..]),
        // A key without any scope may still ask who it is.
        (NOBODY, "nobody", &[][..]),
    ] {
        let me = auth
            .get_caller(authed(key, pb::GetCallerRequest {}))
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"))
            .into_inner();
        assert_eq!(me.name, name);
        assert_eq!(me.kind(), pb::CallerKind::ApiKey);
        assert_eq!(me.scopes, scopes, "{name}");
        assert!(me.authentication_enabled);
    }
    assert_eq!(
        code(
            auth.get_caller(authed("not-a-key", pb::GetCallerRequest {}))
                .await
        ),
        Code::Unauthenticated
    );

    // Without authentication: the anonymous caller, no credentials needed.
    let dir = tempfile::tempdir().unwrap();
    let open = TestServer::start_embedded(&dir.path().join("data"), &[]).await;
    let me = AuthServiceClient::new(open.channel().await)
        .get_caller(pb::GetCallerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!me.authentication_enabled);
    assert_eq!(me.kind(), pb::CallerKind::Anonymous);
    assert_eq!(me.name, "");
    assert_eq!(me.scopes, ["admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_and_nothing_is_stored_when_they_do_not_allow() {
    let f = Fixture::start(&[]).await;
    // Only admin creates types.
    assert_eq!(
        code(f.create_type(READER, "orders").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(f.create_type(ORDERS_WRITER, "orders").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(f.create_type(NOBODY, "orders").await),
        Code::PermissionDenied
    );
    f.create_type(ADMIN, "orders").await.unwrap();
    f.create_type(ADMIN, "player_profile").await.unwrap();

    // read cannot write: neither an instance nor an event, and nothing is stored.
    assert_eq!(
        code(f.create_instance(READER, "orders", "o1").await),
        Code::PermissionDenied
    );
    let order = f
        .create_instance(ORDERS_WRITER, "orders", "o1")
        .await
        .unwrap();
    let order_id = order.instance.unwrap().id;
    let player = f
        .create_instance(ADMIN, "player_profile", "p1")
        .await
        .unwrap();
    let player_id = player.instance.unwrap().id;
    let denied = f.apply(READER, &order_id, 1).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("write"), "{}", denied.message());

    // write:orders writes orders, not player_profile.
    f.apply(ORDERS_WRITER, &order_id, 1).await.unwrap();
    // Erasure needs admin: a writer of the type (and a reader) is refused, nothing is stored.
    for token in [ORDERS_WRITER, READER, NOBODY] {
        let erase = f
            .instances()
            .erase_instance(authed(
                token,
                pb::EraseInstanceRequest {
                    instance_id: order_id.clone(),
                    reason: Some("asked".into()),
                },
            ))
            .await;
        let denied = erase.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{token}: {denied:?}");
    }
    assert_eq!(
        code(f.apply(ORDERS_WRITER, &player_id, 1).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            f.create_instance(ORDERS_WRITER, "player_profile", "p2")
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(f.history(ADMIN, &order_id).await.len(), 2);
    assert_eq!(
        f.history(ADMIN, &player_id).await.len(),
        1,
        "nothing stored"
    );
    let listed = f
        .instances()
        .list_instances(authed(
            ADMIN,
            pb::ListInstancesRequest {
                entity_type: "player_profile".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert_eq!(listed.len(), 1, "p2 was not created");

    // Reads follow the narrowing too: write includes read of its own type only.
    let own = f
        .queries()
        .get_history(authed(
            ORDERS_WRITER,
            pb::GetHistoryRequest {
                instance_id: order_id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert!(own.is_ok());
    for token in [ORDERS_READER, ORDERS_WRITER, NOBODY] {
        let other = f
            .queries()
            .get_history(authed(
                token,
                pb::GetHistoryRequest {
                    instance_id: player_id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(code(other), Code::PermissionDenied, "{token}");
        let other = f
            .instances()
            .get_current_state(authed(
                token,
                pb::GetCurrentStateRequest {
                    entity_type: "player_profile".into(),
                    external_id: "p1".into(),
                },
            ))
            .await;
        assert_eq!(code(other), Code::PermissionDenied, "{token}");
    }

    // List calls return only what the caller may read.
    let list = |token: &'static str| {
        let mut types = f.types();
        async move {
            types
                .list_entity_types(authed(token, pb::ListEntityTypesRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .entity_types
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(ADMIN).await, ["orders", "player_profile"]);
    assert_eq!(list(READER).await, ["orders", "player_profile"]);
    assert_eq!(list(ORDERS_READER).await, ["orders"]);
    assert!(list(NOBODY).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_events_with_read_orders_reads_only_orders() {
    let f = Fixture::start(&[]).await;
    f.create_type(ADMIN, "orders").await.unwrap();
    f.create_type(ADMIN, "player_profile").await.unwrap();
    let order = f.create_instance(ADMIN, "orders", "o1").await.unwrap();
    let order_id = order.instance.unwrap().id;
    f.create_instance(ADMIN, "player_profile", "p1")
        .await
        .unwrap();
    let read = |token: &'static str, entity_types: Vec<String>| {
        let mut q = f.queries();
        async move {
            q.read_events(authed(
                token,
                pb::ReadEventsRequest {
                    entity_types,
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    // Naming another type is refused; naming none reads only orders; a reader of everything
    // reads both; nobody reads nothing.
    let named = read(ORDERS_READER, vec!["player_profile".into()]).await;
    assert_eq!(code(named.map(|_| ())), Code::PermissionDenied);
    let narrowed = read(ORDERS_READER, Vec::new()).await.unwrap();
    let ids: Vec<String> = narrowed
        .events
        .iter()
        .map(|e| e.instance_id.clone())
        .collect();
    assert_eq!(ids, [order_id]);
    assert_eq!(read(READER, Vec::new()).await.unwrap().events.len(), 2);
    assert_eq!(
        code(read(NOBODY, Vec::new()).await.map(|_| ())),
        Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_read_orders_sees_no_other_types_events() {
    let f = Fixture::start(&[]).await;
    f.create_type(ADMIN, "orders").await.unwrap();
    f.create_type(ADMIN, "player_profile").await.unwrap();
    let order = f.create_instance(ADMIN, "orders", "o1").await.unwrap();
    let order_id = order.instance.unwrap().id;
    let player = f
        .create_instance(ADMIN, "player_profile", "p1")
        .await
        .unwrap();
    let player_id = player.instance.unwrap().id;

    // Naming another type is refused; naming none hears only orders.
    let named = f
        .events()
        .subscribe(authed(
            ORDERS_READER,
            pb::SubscribeRequest {
                entity_type: "player_profile".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(code(named.map(|_| ())), Code::PermissionDenied);
    let named = f
        .events()
        .subscribe(authed(
            ORDERS_READER,
            pb::SubscribeRequest {
                instance_id: player_id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(code(named.map(|_| ())), Code::PermissionDenied);

    let mut stream = f
        .events()
        .subscribe(authed(ORDERS_READER, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // The subscription is live once the server answered; a player event, then an order event.
    f.apply(ADMIN, &player_id, 1).await.unwrap();
    f.apply(ADMIN, &order_id, 2).await.unwrap();
    f.apply(ADMIN, &player_id, 3).await.unwrap();
    f.apply(ADMIN, &order_id, 4).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        seen.push((event.instance_id, js(&event.payload)));
    }
    assert_eq!(
        seen,
        [
            (order_id.clone(), json!({"n": 2})),
            (order_id.clone(), json!({"n": 4}))
        ],
        "only orders events, in order"
    );
    // A reader of everything hears both types (the filter is the scope, not the subscription).
    let mut all = f
        .events()
        .subscribe(authed(READER, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    f.apply(ADMIN, &player_id, 5).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), all.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(event.instance_id, player_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_file_while_the_server_runs_is_refused() {
    let f = Fixture::start(&[]).await;
    let list = |token: &'static str| {
        let mut types = f.types();
        async move {
            types
                .list_entity_types(authed(token, pb::ListEntityTypesRequest::default()))
                .await
                .map(|_| ())
        }
    };
    list(READER).await.unwrap();
    list(ADMIN).await.unwrap();
    replace_file(&f.keys_path, &keys_file(&[("admin", ADMIN, &["admin"])]));
    assert_eq!(
        code(list(READER).await),
        Code::Unauthenticated,
        "revoked at once"
    );
    list(ADMIN).await.unwrap();
    // A key added to the file works without a restart too.
    replace_file(
        &f.keys_path,
        &keys_file(&[
            ("admin", ADMIN, &["admin"]),
            ("new", "a-new-key-0123456789", &["read"]),
        ]),
    );
    list("a-new-key-0123456789").await.unwrap();
}

/// The RetryInfo delay of a RESOURCE_EXHAUSTED answer.
fn retry_delay(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_has_its_own_rate_limit_and_health_has_none() {
    // 1 call per second with bursts of 3: a client that sends 4 at once is refused its 4th.
    let f = Fixture::start(&["--rate-limit-per-second", "1", "--rate-limit-burst", "3"]).await;
    let list = |token: &'static str| {
        let mut types = f.types();
        async move {
            types
                .list_entity_types(authed(token, pb::ListEntityTypesRequest::default()))
                .await
                .map(|_| ())
        }
    };
    for _ in 0..3 {
        list(READER).await.unwrap();
    }
    let refused = list(READER).await.unwrap_err();
    let delay = retry_delay(&refused);
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_millis(1001),
        "the next call's credit comes within a second at 1/s: {delay:?}"
    );
    assert!(
        refused.message().contains("reader"),
        "{}",
        refused.message()
    );
    // A write over the limit stores nothing.
    for _ in 0..3 {
        let _ = f.create_type(ADMIN, "limited").await;
    }
    let over = f
        .create_instance(ADMIN, "limited", "never")
        .await
        .unwrap_err();
    retry_delay(&over);
    // Another principal has its own bucket.
    list(ORDERS_READER).await.unwrap();
    // Health is never limited.
    let mut health = tonic_health::pb::health_client::HealthClient::new(f.channel.clone());
    for _ in 0..10 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health is not rate limited");
    }
    // After the delay it said, the refused caller is served again.
    tokio::time::sleep(delay).await;
    list(READER).await.expect("served after the retry delay");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = f
        .instances()
        .list_instances(authed(
            ADMIN,
            pb::ListInstancesRequest {
                entity_type: "limited".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.instances.is_empty(),
        "the refused create stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_the_rate_limit_is_per_peer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_embedded(
        &dir.path().join("data"),
        &["--rate-limit-per-second", "0.5", "--rate-limit-burst", "2"],
    )
    .await;
    // Two peers: clients bound to two other loopback addresses.
    let from = |ip: &str| {
        let endpoint = tonic::transport::Endpoint::from_shared(server.endpoint())
            .unwrap()
            .local_address(Some(ip.parse().unwrap()));
        async move { EntityTypeServiceClient::new(endpoint.connect().await.unwrap()) }
    };
    let mut first = from("127.0.0.2").await;
    for _ in 0..2 {
        first
            .list_entity_types(pb::ListEntityTypesRequest::default())
            .await
            .unwrap();
    }
    let refused = first
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .unwrap_err();
    assert!(retry_delay(&refused) > Duration::from_millis(1000));
    assert!(
        refused.message().contains("127.0.0.2"),
        "{}",
        refused.message()
    );
    // Another peer is not held back by the first one's calls.
    let mut second = from("127.0.0.3").await;
    second
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .expect("another peer has its own bucket");
}

// ------------------------------------------------------------------------------------- JWTs

/// JWT claims as an issuer would write them.
fn claims(sub: &str, scope: &str, exp_in: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": sub,
        "scope": scope,
        "iss": "https://issuer.test",
        "aud": "temporal-state",
        "iat": now,
        "exp": now + exp_in,
    })
}

fn rs256(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new P-256 key: its signing key, and its public JWK under `kid`.
fn ec_key(kid: &str) -> (EncodingKey, serde_json::Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw(); // 0x04 || x || y
    assert_eq!(raw.len(), 65);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

fn es256(key: &EncodingKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Starts a server whose JWTs are checked against the RSA public key fixture (and JWKS URL).
async fn jwt_server(dir: &tempfile::TempDir, jwks_url: Option<&str>) -> (TestServer, Channel) {
    let key = dir.path().join("rs256.pem");
    std::fs::write(&key, RSA_PUBLIC).unwrap();
    let key = key.to_str().unwrap().to_string();
    let mut flags = vec![
        "--auth-jwt-key-file",
        key.as_str(),
        "--auth-jwt-issuer",
        "https://issuer.test",
        "--auth-jwt-audience",
        "temporal-state",
    ];
    if let Some(url) = jwks_url {
        flags.extend(["--auth-jwks-url", url]);
    }
    let data = dir.path().join("data");
    let server = TestServer::start_embedded(&data, &flags).await;
    let channel = server.channel().await;
    (server, channel)
}

async fn list_types(channel: &Channel, token: &str) -> Result<Vec<String>, tonic::Status> {
    EntityTypeServiceClient::new(channel.clone())
        .list_entity_types(authed(token, pb::ListEntityTypesRequest::default()))
        .await
        .map(|r| {
            r.into_inner()
                .entity_types
                .into_iter()
                .map(|t| t.name)
                .collect()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_and_every_forgery_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, ch) = jwt_server(&dir, None).await;

    // A good token: `scope` (space-separated) or `scp` (a list), the subject is the principal.
    let good = rs256(&claims("alice", "openid admin", 300));
    let mut types = EntityTypeServiceClient::new(ch.clone());
    types
        .create_entity_type(authed(
            &good,
            pb::CreateEntityTypeRequest {
                declarations: None,
                name: "orders".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "object"}))),
            },
        ))
        .await
        .unwrap();
    let mut scp = claims("bob", "", 300);
    scp["scp"] = json!(["read:orders"]);
    assert_eq!(list_types(&ch, &rs256(&scp)).await.unwrap(), ["orders"]);
    // A valid token with no scope of ours is PERMISSION_DENIED on a write.
    let no_scope = rs256(&claims("carol", "openid profile", 300));
    assert_eq!(
        list_types(&ch, &no_scope).await.unwrap(),
        Vec::<String>::new()
    );
    let denied = types
        .create_entity_type(authed(
            &no_scope,
            pb::CreateEntityTypeRequest {
                declarations: None,
                name: "more".into(),
                description: String::new(),
                schema: Some(st(json!({}))),
            },
        ))
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);

    let mut refused: Vec<(&str, String)> = Vec::new();
    // Expired, beyond the leeway.
    refused.push(("expired", rs256(&claims("alice", "admin", -600))));
    // Not yet valid.
    let mut early = claims("alice", "admin", 600);
    early["nbf"] = json!(chrono::Utc::now().timestamp() + 300);
    refused.push(("not yet valid", rs256(&early)));
    // Wrong issuer, wrong audience, no expiry, no subject.
    let mut iss = claims("alice", "admin", 300);
    iss["iss"] = json!("https://evil.test");
    refused.push(("wrong issuer", rs256(&iss)));
    let mut aud = claims("alice", "admin", 300);
    aud["aud"] = json!("another-service");
    refused.push(("wrong audience", rs256(&aud)));
    let mut no_exp = claims("alice", "admin", 300);
    no_exp.as_object_mut().unwrap().remove("exp");
    refused.push(("no exp", rs256(&no_exp)));
    let mut no_sub = claims("alice", "admin", 300);
    no_sub.as_object_mut().unwrap().remove("sub");
    refused.push(("no sub", rs256(&no_sub)));
    // Signed by a key the server does not know.
    let (unknown, _) = ec_key("unknown");
    refused.push((
        "unknown key",
        es256(&unknown, "unknown", &claims("alice", "admin", 300)),
    ));
    // alg: none, with and without a signature part.
    let body = b64(claims("alice", "admin", 300).to_string().as_bytes());
    let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    refused.push(("alg none", format!("{none}.{body}.")));
    refused.push(("alg none, signed", format!("{none}.{body}.{}", b64(b"x"))));
    // Algorithm confusion: HS256 with the RSA public key (as the server holds it) as secret.
    for secret in [RSA_PUBLIC.as_bytes(), RSA_PUBLIC.trim_end().as_bytes()] {
        refused.push((
            "HS256 with the RS256 public key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims("alice", "admin", 300),
                &EncodingKey::from_secret(secret),
            )
            .unwrap(),
        ));
    }
    // A good token with its payload changed.
    let parts: Vec<&str> = good.split('.').collect();
    let forged = b64(claims("mallory", "admin", 300).to_string().as_bytes());
    refused.push((
        "payload swapped",
        format!("{}.{forged}.{}", parts[0], parts[2]),
    ));
    for (what, token) in refused {
        let status = list_types(&ch, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    // Still fine after all that.
    assert_eq!(list_types(&ch, &good).await.unwrap(), ["orders"]);
}

/// A JWKS document served over HTTP on loopback; the test changes what it serves.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let document = Arc::new(Mutex::new(document));
        let served = document.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let body = served.lock().unwrap().clone();
                tokio::spawn(async move {
                    // One request per connection; its head ends with an empty line.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            url,
            document,
            task,
        }
    }

    fn serve(&self, keys: &[&serde_json::Value]) {
        *self.document.lock().unwrap() = json!({ "keys": keys }).to_string();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_works_without_a_restart() {
    let (first, first_jwk) = ec_key("key-1");
    let (second, second_jwk) = ec_key("key-2");
    let jwks = JwksServer::start(String::new()).await;
    jwks.serve(&[&first_jwk]);
    let dir = tempfile::tempdir().unwrap();
    let (_server, ch) = jwt_server(&dir, Some(&jwks.url)).await;

    let token = |key: &EncodingKey, kid: &str| es256(key, kid, &claims("svc", "read", 300));
    list_types(&ch, &token(&first, "key-1")).await.unwrap();
    // A key the set does not hold yet is refused...
    assert_eq!(
        code(list_types(&ch, &token(&second, "key-2")).await),
        Code::Unauthenticated
    );
    // ...a key signed with the wrong key under a known kid too...
    assert_eq!(
        code(list_types(&ch, &token(&second, "key-1")).await),
        Code::Unauthenticated
    );
    // ...and once the issuer publishes it, it works: the server fetches the set again for an
    // unknown kid (at most once a second, so this may take a second try).
    jwks.serve(&[&first_jwk, &second_jwk]);
    let mut accepted = false;
    for _ in 0..50 {
        if list_types(&ch, &token(&second, "key-2")).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the rotated-in key was never accepted");
    // The RSA key file still works beside the JWKS.
    list_types(&ch, &rs256(&claims("alice", "read", 300)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_beyond_loopback_without_auth_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let dir_flag = dir.path().to_str().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = temporal_state_test_support::server::config_from_flags(&["--data-dir", &dir_flag]);
    let err = temporal_state_server::run(config, listener, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
    // Nothing was opened: the refusal comes before the store.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    // Said explicitly, it serves (and stops at once here).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = temporal_state_test_support::server::config_from_flags(&[
        "--data-dir",
        &dir_flag,
        "--insecure-no-auth",
    ]);
    temporal_state_server::run(config, listener, async {})
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------------ audit

/// Every event of a type's stream in a NATS server of the test's own, as published.
async fn published_events(nats_url: &str) -> Vec<temporal_state_server::adapters::nats::WireEvent> {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return Vec::new();
    };
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream("TEMPORAL_STATE_EVENTS").await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for seq in 1..=info.state.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&msg.payload).unwrap());
        }
    }
    out
}

/// `recorded_by` of each version, read from the store itself.
async fn stored_writers(store: &Store) -> Vec<(i64, String)> {
    const SQL: &str = "SELECT version, recorded_by FROM events ORDER BY version";
    match store {
        Store::Postgres(db) => db
            .client()
            .await
            .query(SQL, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        Store::Embedded(dir) => {
            let conn = Store::sqlite(dir);
            let mut stmt = conn.prepare(SQL).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
    }
}

/// Every event records who wrote it, from the credentials (an API key's name, a JWT's subject),
/// whatever the request says: stored, returned by writes and history, carried by Subscribe, and,
/// on PostgreSQL with NATS, in the published message.
async fn recorded_by_is_set_on_every_event(backend: Backend) {
    let store = Store::create(backend).await;
    let nats = matches!(backend, Backend::Postgres).then(common::procs::Nats::start);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        keys_file(&[("ingest@ci", "ingest-key-0123456789", &["admin"])]),
    )
    .unwrap();
    let rsa = dir.path().join("rs256.pem");
    std::fs::write(&rsa, RSA_PUBLIC).unwrap();
    let (keys, rsa) = (
        keys.to_str().unwrap().to_string(),
        rsa.to_str().unwrap().to_string(),
    );
    let nats_url = nats.as_ref().map(|n| n.url());
    let mut flags = vec![
        "--auth-api-keys-file",
        keys.as_str(),
        "--auth-jwt-key-file",
        rsa.as_str(),
    ];
    if let Some(url) = &nats_url {
        flags.extend(["--nats-url", url.as_str()]);
    }
    let server = store.start(&flags).await;
    let ch = server.channel().await;
    let key = "ingest-key-0123456789";
    let mut jwt_claims = claims("alice", "write:orders", 300);
    jwt_claims.as_object_mut().unwrap().remove("iss");
    jwt_claims.as_object_mut().unwrap().remove("aud");
    let jwt = rs256(&jwt_claims);

    EntityTypeServiceClient::new(ch.clone())
        .create_entity_type(authed(
            key,
            pb::CreateEntityTypeRequest {
                declarations: None,
                name: "orders".into(),
                description: String::new(),
                schema: Some(st(json!({"type": "object"}))),
            },
        ))
        .await
        .unwrap();
    let created = InstanceServiceClient::new(ch.clone())
        .create_instance(authed(
            key,
            pb::CreateInstanceRequest {
                entity_type: "orders".into(),
                external_id: "o1".into(),
                initial_state: Some(st(json!({"n": 0}))),
                metadata: Some(st(json!({"recorded_by": "mallory"}))),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.event.unwrap().recorded_by, "ingest@ci");
    let id = created.instance.unwrap().id;
    let mut live = EventServiceClient::new(ch.clone())
        .subscribe(authed(
            key,
            pb::SubscribeRequest {
                instance_id: id.clone(),
                // Replayed from the store, then live (on PostgreSQL with NATS, through it).
                from_version: Some(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = EventServiceClient::new(ch.clone());
    let applied = events
        .apply_event(authed(
            &jwt,
            pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Set".into(),
                payload: Some(st(json!({"n": 1}))),
                // A client's claim in the metadata is only metadata.
                metadata: Some(st(json!({"recorded_by": "mallory"}))),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.event.unwrap().recorded_by, "alice");
    let batch = events
        .apply_events(authed(
            key,
            pb::ApplyEventsRequest {
                instance_id: id.clone(),
                events: (2..=3)
                    .map(|n| pb::EventInput {
                        event_type: "Set".into(),
                        payload: Some(st(json!({ "n": n }))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(batch.events.iter().all(|e| e.recorded_by == "ingest@ci"));

    let want = [
        (1, "ingest@ci".to_string()),
        (2, "alice".to_string()),
        (3, "ingest@ci".to_string()),
        (4, "ingest@ci".to_string()),
    ];
    let history: Vec<(i64, String)> = QueryServiceClient::new(ch.clone())
        .get_history(authed(
            key,
            pb::GetHistoryRequest {
                instance_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| (e.version, e.recorded_by))
        .collect();
    assert_eq!(history, want, "history");
    assert_eq!(stored_writers(&store).await, want, "stored");
    let mut heard = Vec::new();
    while heard.len() < want.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), live.message())
            .await
            .expect("a live event within 10 s")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        heard.push((e.version, e.recorded_by));
    }
    assert_eq!(heard, want, "subscribe");

    if let Some(url) = &nats_url {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut published = Vec::new();
        while std::time::Instant::now() < deadline {
            published = published_events(url)
                .await
                .into_iter()
                .map(|e| (e.version, e.recorded_by))
                .collect();
            if published.len() >= want.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(published, want, "published to NATS");
    }
}

for_each_backend!(recorded_by_is_set_on_every_event);

// -------------------------------------------------------------------------------------- TLS

/// A certificate authority of the test's own (rcgen).
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, in PEM: a server's (for localhost and 127.0.0.1) or a
    /// client's.
    fn issue(&self, name: &str, server: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A server on 127.0.0.1:0 configured by `flags`, until the returned sender is dropped.
async fn start_raw(flags: &[&str]) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = temporal_state_test_support::server::config_from_flags(flags);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        temporal_state_server::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("server failed");
    });
    (addr, stop)
}

/// Whether the console at `addr` answers `GET /readyz` with 200.
async fn console_ready(addr: std::net::SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET /readyz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(answer.into_owned())
    }
}

/// An embedded server in `dir` speaking mutual TLS: a certificate from `server_ca`, clients'
/// certificates from `client_ca`, and the API keys file `keys` if given.
async fn start_mtls(
    dir: &tempfile::TempDir,
    server_ca: &Ca,
    client_ca: &Ca,
    keys: Option<&str>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (cert, key) = server_ca.issue("server", true);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let data = dir.path().join("data");
    let mut flags = vec![
        "--data-dir".to_string(),
        data.to_str().unwrap().to_string(),
        "--tls-cert-file".into(),
        write("tls.crt", &cert),
        "--tls-key-file".into(),
        write("tls.key", &key),
        "--tls-client-ca-file".into(),
        write("clients.pem", &client_ca.pem()),
    ];
    if let Some(keys) = keys {
        flags.push("--auth-api-keys-file".into());
        flags.push(write("keys.json", keys));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_raw(&flags).await
}

/// A channel over TLS, trusting `ca` and presenting `identity` if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// ListEntityTypes over TLS, trusting `ca` and presenting `identity` if given.
async fn list_over_tls(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<(), String> {
    let channel = tls_channel(addr, ca, identity).await?;
    EntityTypeServiceClient::new(channel)
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e:?}"))
}

/// Waits (bounded) until `f` succeeds; panics with its last error.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match f().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_reloads_its_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new("first ca");
    let (cert, key) = first.issue("server one", true);
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let data = dir.path().join("data");
    let console = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let (addr, _stop) = start_raw(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert-file",
        cert_path.to_str().unwrap(),
        "--tls-key-file",
        key_path.to_str().unwrap(),
        "--console-addr",
        &console.to_string(),
    ])
    .await;
    let first_pem = first.pem();
    eventually("a TLS call", || list_over_tls(addr, &first_pem, None)).await;
    // The server's console reaches the engine in process, so TLS on the gRPC port does not stand
    // between them: it becomes ready (its health check of the engine says SERVING).
    eventually("the console ready behind a TLS engine", || async move {
        console_ready(console).await
    })
    .await;

    // Plain HTTP/2 is not served, and a client that does not trust the CA refuses the server.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let answer = EntityTypeServiceClient::new(channel)
            .list_entity_types(pb::ListEntityTypesRequest::default())
            .await;
        assert!(answer.is_err(), "plaintext was answered");
    }
    let stranger = Ca::new("stranger ca");
    assert!(list_over_tls(addr, &stranger.pem(), None).await.is_err());

    // Rotation: a certificate from another CA replaces the files (key first, as a half-done
    // rotation would); new connections get it, without a restart.
    let second = Ca::new("second ca");
    let (cert, key) = second.issue("server two", true);
    replace_file(&key_path, &key);
    replace_file(&cert_path, &cert);
    let second_pem = second.pem();
    eventually("the rotated certificate", || {
        list_over_tls(addr, &second_pem, None)
    })
    .await;
    assert!(
        list_over_tls(addr, &first.pem(), None).await.is_err(),
        "the old certificate is no longer served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let (addr, _stop) = start_mtls(&dir, &server_ca, &client_ca, None).await;
    let good = client_ca.issue("svc-a", false);
    let server_pem = server_ca.pem();
    eventually("an mTLS call", || {
        list_over_tls(addr, &server_pem, Some(&good))
    })
    .await;
    // No client certificate, or one from another CA: refused.
    let err = list_over_tls(addr, &server_ca.pem(), None)
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    let forged = Ca::new("client ca").issue("svc-a", false);
    assert!(
        list_over_tls(addr, &server_ca.pem(), Some(&forged))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificates_subject_is_the_principal_of_a_call_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let keys = serde_json::json!([
        {"name": "reporting", "tls_subject": "CN=reporting", "scopes": ["read"]},
        {"name": "ingest", "tls_subject": "CN = ingest", "scopes": ["admin"]},
        {"name": "admin", "sha256": sha256_hex(ADMIN), "scopes": ["admin"]},
    ]);
    let keys = keys.to_string();
    let (addr, _stop) = start_mtls(&dir, &server_ca, &client_ca, Some(&keys)).await;
    let server_pem = server_ca.pem();
    let as_cert = |name: &str| {
        let identity = client_ca.issue(name, false);
        let server_pem = server_pem.clone();
        let name = name.to_string();
        async move {
            let mut last = String::new();
            for _ in 0..100 {
                match tls_channel(addr, &server_pem, Some(&identity)).await {
                    Ok(channel) => return channel,
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no TLS connection as {name}: {last}");
        }
    };
    let new_type = |name: &str| pb::CreateEntityTypeRequest {
        declarations: None,
        name: name.into(),
        description: String::new(),
        schema: Some(st(json!({"type": "object"}))),
    };

    // "ingest" (admin, its subject written with spaces in the file) writes; its events record
    // the entry's name.
    let ingest = as_cert("ingest").await;
    EntityTypeServiceClient::new(ingest.clone())
        .create_entity_type(new_type("by_cert"))
        .await
        .expect("the ingest certificate may create a type");
    let created = InstanceServiceClient::new(ingest)
        .create_instance(pb::CreateInstanceRequest {
            entity_type: "by_cert".into(),
            external_id: "one".into(),
            initial_state: Some(st(json!({}))),
            metadata: None,
        })
        .await
        .expect("and an instance")
        .into_inner();
    assert_eq!(created.event.unwrap().recorded_by, "ingest");

    // "reporting" (read) reads and may not write.
    let reporting = as_cert("reporting").await;
    let listed = EntityTypeServiceClient::new(reporting.clone())
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .expect("the reporting certificate reads")
        .into_inner();
    assert_eq!(listed.entity_types.len(), 1);
    let refused = EntityTypeServiceClient::new(reporting)
        .create_entity_type(new_type("by_reporting"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A certificate the CA signed but no entry names: UNAUTHENTICATED without a token, saying
    // which subject; with a token, the token decides.
    let stranger = as_cert("stranger").await;
    let refused = EntityTypeServiceClient::new(stranger.clone())
        .list_entity_types(pb::ListEntityTypesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("CN=stranger"),
        "{}",
        refused.message()
    );
    EntityTypeServiceClient::new(stranger)
        .create_entity_type(authed(ADMIN, new_type("by_token")))
        .await
        .expect("a bearer token is used when one is sent");
}
