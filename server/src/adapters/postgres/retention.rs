//! [`RetentionStore`] for [`PgStore`]: batched deletes on plain PostgreSQL and on TimescaleDB
//! alike, then, on TimescaleDB, `drop_chunks` of the chunks the deletes left empty.
//!
//! Why not `drop_chunks` (or TimescaleDB's retention policy) alone: chunks follow `occurred_at`,
//! a client's business time that may lie anywhere relative to when the engine recorded the
//! event, while what a current state needs is per instance (its last snapshot before the
//! horizon and every event after it). Dropping chunks by age would drop events that states
//! still need. The deletes know each instance's snapshot; once they ran, every chunk wholly
//! below the oldest remaining event is empty and can go with `drop_chunks`, under a lock that
//! keeps a back-dated append from landing in one meanwhile.
//!
//! One pass at a time across replicas: every `trim` transaction first takes a transaction-level
//! advisory lock, and a pass that finds it taken stops (`busy`): another server is at work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{PgError, PgStore};
use crate::ports::{RetentionCandidate, RetentionStore, StoreError, Trim, TrimOutcome};

/// Arbitrary but fixed key of the advisory lock held by each retention transaction.
pub const RETENTION_LOCK_KEY: i64 = 0x7465_6d70_5245_5400;

/// $1 horizon, $2 the last instance id already examined, $3 how many instances to examine.
/// For each: the version to keep (the last recorded before the horizon, capped below versions
/// still waiting for publication), whether it has a snapshot, and whether anything is older.
const CANDIDATES_SQL: &str = "
WITH b AS (
    SELECT id, erased FROM instances WHERE id > $2 ORDER BY id LIMIT $3
), p AS (
    SELECT instance_id, min(version) AS v FROM (
        SELECT instance_id, version FROM outbox
        UNION ALL SELECT instance_id, version FROM outbox_dead_letters
    ) x WHERE instance_id IN (SELECT id FROM b) GROUP BY instance_id
), m AS (
    SELECT b.id, b.erased, (SELECT e.version FROM events e WHERE e.instance_id = b.id AND e.recorded_at < $1
                  ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) AS k
    FROM b
), c AS (
    SELECT m.id, m.erased, CASE WHEN m.k IS NULL THEN NULL ELSE LEAST(m.k, p.v) END AS k
    FROM m LEFT JOIN p ON p.instance_id = m.id
)
SELECT c.id, c.k,
       EXISTS (SELECT 1 FROM snapshots s WHERE s.instance_id = c.id AND s.version = c.k),
       c.k IS NOT NULL AND (
           EXISTS (SELECT 1 FROM events e WHERE e.instance_id = c.id AND e.version < c.k)
           OR EXISTS (SELECT 1 FROM snapshots s WHERE s.instance_id = c.id AND s.version < c.k)),
       c.erased
FROM c ORDER BY c.id";

/// $1 ids, $2 versions, $3 states: snapshots retention writes (at versions appends never
/// write again, so an existing one is the same state).
const INSERT_SNAPSHOTS_SQL: &str = "
INSERT INTO snapshots (instance_id, version, state)
SELECT u.id, u.v, u.st FROM UNNEST($1::uuid[], $2::bigint[], $3::jsonb[]) AS u(id, v, st)
ON CONFLICT (instance_id, version) DO NOTHING";

/// The instances of $1/$2 (ids, versions to keep) whose snapshot at the kept version is stored:
/// only those lose anything.
const KEPT: &str = "
t AS (
    SELECT u.id, u.k FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, k)
    WHERE EXISTS (SELECT 1 FROM snapshots s WHERE s.instance_id = u.id AND s.version = u.k)
)";

/// Up to $3 events before the kept versions, oldest first per instance; the highest position
/// deleted moves `retention_horizon.dropped_through` (a log read from before it is refused).
/// Returns the number of events deleted.
fn delete_events_sql() -> String {
    format!(
        "WITH {KEPT}, d AS (
            SELECT x.instance_id, x.version FROM t CROSS JOIN LATERAL (
                SELECT e.instance_id, e.version FROM events e
                WHERE e.instance_id = t.id AND e.version < t.k ORDER BY e.version LIMIT $3
            ) x LIMIT $3
        )
        , x AS (
            DELETE FROM events e USING d WHERE e.instance_id = d.instance_id AND e.version = d.version
            RETURNING e.position
        ), m AS (
            UPDATE retention_horizon
            SET dropped_through = GREATEST(dropped_through, (SELECT max(position) FROM x))
            WHERE EXISTS (SELECT 1 FROM x)
        )
        SELECT count(*) FROM x"
    )
}

fn delete_snapshots_sql() -> String {
    format!(
        "WITH {KEPT} DELETE FROM snapshots s USING t WHERE s.instance_id = t.id AND s.version < t.k"
    )
}

#[async_trait]
impl RetentionStore for PgStore {
    async fn advance_horizon(&self, horizon: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO retention_horizon (id, horizon) VALUES (true, $1) \
                 ON CONFLICT (id) DO UPDATE \
                 SET horizon = GREATEST(retention_horizon.horizon, EXCLUDED.horizon) \
                 RETURNING horizon",
                &[&horizon],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.get(0))
    }

    async fn retention_candidates(
        &self,
        horizon: DateTime<Utc>,
        after: Uuid,
        limit: usize,
    ) -> Result<(Vec<RetentionCandidate>, Option<Uuid>), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(CANDIDATES_SQL)
            .await
            .map_err(PgError::from)?;
        let found = client
            .query(&stmt, &[&horizon, &after, &(limit as i64)])
            .await
            .map_err(PgError::from)?;
        let last = found.last().map(|r| r.get::<_, Uuid>(0));
        let candidates = found
            .iter()
            .filter(|r| r.get::<_, bool>(3))
            .map(|r| RetentionCandidate {
                instance_id: r.get(0),
                keep: r.get(1),
                has_snapshot: r.get(2),
                erased: r.get(4),
            })
            .collect();
        Ok((candidates, last))
    }

    async fn trim(&self, trims: &[Trim], max_events: usize) -> Result<TrimOutcome, StoreError> {
        let mut outcome = TrimOutcome::default();
        if trims.is_empty() {
            return Ok(outcome);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&RETENTION_LOCK_KEY],
            )
            .await
            .map_err(PgError::from)?
            .get(0);
        if !locked {
            outcome.busy = true;
            return Ok(outcome);
        }
        let (mut ids, mut versions, mut states) = (Vec::new(), Vec::new(), Vec::new());
        for t in trims {
            if let Some(state) = &t.snapshot {
                ids.push(t.instance_id);
                versions.push(t.keep);
                states.push(Value::Object(state.clone()));
            }
        }
        if !ids.is_empty() {
            outcome.snapshots_written = tx
                .execute(INSERT_SNAPSHOTS_SQL, &[&ids, &versions, &states])
                .await
                .map_err(PgError::from)?;
        }
        let ids: Vec<Uuid> = trims.iter().map(|t| t.instance_id).collect();
        let keeps: Vec<i64> = trims.iter().map(|t| t.keep).collect();
        outcome.snapshots_deleted = tx
            .execute(&delete_snapshots_sql(), &[&ids, &keeps])
            .await
            .map_err(PgError::from)?;
        let bound = max_events.max(1) as i64;
        outcome.events_deleted = tx
            .query_one(&delete_events_sql(), &[&ids, &keeps, &bound])
            .await
            .map_err(PgError::from)?
            .get::<_, i64>(0) as u64;
        outcome.more = outcome.events_deleted >= bound as u64;
        tx.commit().await.map_err(PgError::from)?;
        Ok(outcome)
    }

    async fn reclaim(&self, horizon: DateTime<Utc>) -> Result<u64, StoreError> {
        if !self.has_timescaledb() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        // Appends wait until the chunks are dropped: one that landed a back-dated event in a
        // chunk found empty below would be dropped with it.
        tx.batch_execute("LOCK TABLE events IN SHARE MODE")
            .await
            .map_err(PgError::from)?;
        let oldest: Option<DateTime<Utc>> = tx
            .query_one("SELECT min(occurred_at) FROM events", &[])
            .await
            .map_err(PgError::from)?
            .get(0);
        let below = oldest.map_or(horizon, |o| o.min(horizon));
        let dropped = tx
            .query(
                "SELECT c FROM drop_chunks('events', older_than => $1::timestamptz) AS c",
                &[&below],
            )
            .await
            .map_err(PgError::from)?
            .len() as u64;
        tx.commit().await.map_err(PgError::from)?;
        Ok(dropped)
    }
}
