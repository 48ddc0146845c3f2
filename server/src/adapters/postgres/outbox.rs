//! The outbox port on PostgreSQL. The relay lease is a session advisory lock held on a
//! connection taken out of the pool, so it dies with the connection (or the process).
//!
//! That connection is the relay's own: it reads the pending rows and deletes the published ones
//! on it (so a broken lease fails the relay's next read, and no `SELECT 1` per round is needed
//! to notice), and it commits without waiting for the WAL flush (`synchronous_commit = off`):
//! it only deletes rows already published. A crash can lose the last few deletes (at most a
//! few hundred milliseconds of them), and then those events are published again, with the same `Nats-Msg-Id`, which JetStream's duplicate window drops; the
//! events themselves were committed durably by their appends. Waiting for a flush per published
//! batch instead made every append's commit queue behind the relay's (one client: about a
//! third of the appends' rate).

use std::ops::Deref;

use async_trait::async_trait;
use deadpool_postgres::ClientWrapper;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::{PgError, PgStore, rows};
use crate::ports::{Backlog, LiveEvent, Outbox, StoreError};

/// Arbitrary but fixed key of the relay lease.
const RELAY_LEASE_KEY: i64 = 0x7465_6d70_5354_4501;

/// The outbox of one [`PgStore`].
pub struct PgOutbox {
    store: PgStore,
    lease: Mutex<Option<ClientWrapper>>,
}

impl PgOutbox {
    pub fn new(store: PgStore) -> Self {
        Self {
            store,
            lease: Mutex::new(None),
        }
    }

    /// The connection for the relay's reads and deletes, with the lease held locked meanwhile:
    /// the lease's own, or a pooled one when it holds no lease (lost in between), which commits
    /// with the WAL flush, as usual.
    async fn conn(&self) -> Result<RelayConn<'_>, StoreError> {
        match MutexGuard::try_map(self.lease.lock().await, Option::as_mut) {
            Ok(lease) => Ok(RelayConn::Lease(lease)),
            Err(none) => {
                let conn = self.store.pool().get().await.map_err(PgError::from)?;
                Ok(RelayConn::Pooled {
                    _lease: none,
                    conn: Box::new(conn),
                })
            }
        }
    }
}

/// See [`PgOutbox::conn`].
enum RelayConn<'a> {
    Lease(MappedMutexGuard<'a, ClientWrapper>),
    /// The lease stays locked while this connection is used (boxed: a rare path).
    Pooled {
        _lease: MutexGuard<'a, Option<ClientWrapper>>,
        conn: Box<deadpool_postgres::Object>,
    },
}

impl Deref for RelayConn<'_> {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        match self {
            Self::Lease(conn) => conn,
            Self::Pooled { conn, .. } => conn,
        }
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn hold_lease(&self) -> Result<bool, StoreError> {
        let mut lease = self.lease.lock().await;
        if lease.as_ref().is_some_and(|conn| !conn.is_closed()) {
            // The relay's reads and deletes run on this connection: if it breaks, they fail,
            // and the next call here finds it closed.
            return Ok(true);
        }
        *lease = None;
        let conn = self.store.pool().get().await.map_err(PgError::from)?;
        let got: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LEASE_KEY])
            .await
            .map_err(PgError::from)?
            .get(0);
        if got {
            conn.batch_execute("SET synchronous_commit = off")
                .await
                .map_err(PgError::from)?;
            // Out of the pool for good: the lock (and that setting) must never travel to
            // another user.
            *lease = Some(deadpool_postgres::Object::take(conn));
        }
        Ok(got)
    }

    async fn pending(
        &self,
        limit: usize,
        done: &[i64],
    ) -> Result<Vec<(i64, LiveEvent)>, StoreError> {
        let sql = format!(
            "WITH d AS (DELETE FROM outbox WHERE id = ANY($2)) \
             SELECT o.id, t.name, {} FROM outbox o \
             JOIN events e ON e.instance_id = o.instance_id AND e.version = o.version \
             JOIN entity_types t ON t.id = e.entity_type_id \
             WHERE o.id <> ALL($2) \
             ORDER BY o.id LIMIT $1",
            rows::EVENT_COLUMNS
        );
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(PgError::from)?;
        let found = conn
            .query(&stmt, &[&(limit as i64), &done])
            .await
            .map_err(PgError::from)?;
        found
            .iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    LiveEvent {
                        entity_type_name: r.get(1),
                        event: rows::event_at(r, 2)?,
                    },
                ))
            })
            .collect()
    }

    async fn done(&self, ids: &[i64]) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM outbox WHERE id = ANY($1)")
            .await
            .map_err(PgError::from)?;
        conn.execute(&stmt, &[&ids]).await.map_err(PgError::from)?;
        Ok(())
    }

    async fn dead_letter(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        let client = self.store.pool().get().await.map_err(PgError::from)?;
        // One statement: the row leaves the outbox exactly when it enters the dead letters.
        let stmt = client
            .prepare_cached(
                "WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING id, instance_id, version) \
                 INSERT INTO outbox_dead_letters (id, instance_id, version, attempts, error) \
                 SELECT id, instance_id, version, $2, $3 FROM moved \
                 ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(PgError::from)?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        // A very long error text helps nobody and must not bloat the table.
        let error: String = error.chars().take(1000).collect();
        client
            .execute(&stmt, &[&id, &attempts, &error])
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let client = self.store.pool().get().await.map_err(PgError::from)?;
        // The oldest row by id is the oldest commit; its event says when that was.
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM outbox), \
                        (SELECT e.recorded_at FROM outbox o \
                           JOIN events e ON e.instance_id = o.instance_id AND e.version = o.version \
                          ORDER BY o.id LIMIT 1)",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(Backlog {
            rows: row.get(0),
            oldest_recorded_at: row.get(1),
        })
    }
}
