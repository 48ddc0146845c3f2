//! The store side of overload: a PostgreSQL statement that runs past REQUEST_TIMEOUT_SECS is
//! cancelled by the database (statement_timeout), answered with a client-visible timeout code
//! rather than INTERNAL, and its connection goes back to the pool for the next caller.

mod common;

use std::time::Duration;

use common::*;
use temporal_state_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_past_the_request_timeout_is_cancelled_and_frees_its_connection() {
    let db = TestDb::create().await;
    // One connection: had the blocked statement kept it, nothing else could run.
    let server = TestServer::start(
        &db.url,
        &["--request-timeout-secs", "1", "--pool-size", "1"],
    )
    .await;
    let mut c = server.clients().await;
    c.create_type("counter", json!({"type": "object"})).await;
    let locked = c
        .create_instance("counter", "locked", json!({"n": 0}))
        .await;
    let free = c.create_instance("counter", "free", json!({"n": 0})).await;

    // Another session holds the instance's row lock, so the append waits for it.
    let (mut holder, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = holder.transaction().await.unwrap();
    let id: uuid::Uuid = locked.id.parse().unwrap();
    tx.execute("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();

    let blocked = tokio::time::timeout(
        Duration::from_secs(20),
        c.apply(&locked.id, "Tick", json!({"n": 1})),
    )
    .await
    .expect("the append must not wait for the lock beyond the request timeout")
    .unwrap_err();
    assert!(
        matches!(blocked.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{blocked:?}"
    );

    // The lock is still held: the connection was freed by the cancellation, not by the lock.
    let applied = tokio::time::timeout(
        Duration::from_secs(20),
        c.apply(&free.id, "Tick", json!({"n": 1})),
    )
    .await
    .expect("the pool's only connection is free again")
    .unwrap();
    assert_eq!(applied.event.unwrap().version, 2);

    tx.rollback().await.unwrap();
    let current = c
        .instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: locked.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(current.version, 1, "nothing was stored");
    server.stop().await;
}
