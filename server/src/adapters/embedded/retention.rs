//! [`RetentionStore`] for [`EmbeddedStore`]: the pass PostgreSQL runs, in SQLite. Candidates are
//! found on a read connection; each trim is one `BEGIN IMMEDIATE` transaction on the writer,
//! so appends wait for at most one bounded batch. One process owns the file, so no lock across
//! servers is needed (a second process would queue on SQLite's write lock).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::store::{limit, sql};
use super::{EmbeddedStore, rows};
use crate::ports::{RetentionCandidate, RetentionStore, StoreError, Trim, TrimOutcome};

/// ?1 horizon (micros), ?2 the last instance id examined, ?3 how many to examine. As
/// PostgreSQL's: the version to keep, capped below nothing (the embedded store has no outbox).
const CANDIDATES_SQL: &str = "
WITH b AS (
    SELECT id, erased FROM instances WHERE id > ?2 ORDER BY id LIMIT ?3
), c AS (
    SELECT b.id, b.erased, (SELECT e.version FROM events e WHERE e.instance_id = b.id AND e.recorded_at < ?1
                  ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) AS k
    FROM b
)
SELECT c.id, c.k,
       EXISTS (SELECT 1 FROM snapshots s WHERE s.instance_id = c.id AND s.version = c.k),
       c.k IS NOT NULL AND (
           EXISTS (SELECT 1 FROM events e WHERE e.instance_id = c.id AND e.version < c.k)
           OR EXISTS (SELECT 1 FROM snapshots s WHERE s.instance_id = c.id AND s.version < c.k)),
       c.erased
FROM c ORDER BY c.id";

#[async_trait]
impl RetentionStore for EmbeddedStore {
    async fn advance_horizon(&self, horizon: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        let micros = rows::micros(horizon);
        let stored: i64 = self
            .write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let stored = tx
                    .query_row(
                        "INSERT INTO retention_horizon (id, horizon) VALUES (1, ?1) \
                         ON CONFLICT (id) DO UPDATE SET horizon = max(horizon, excluded.horizon) \
                         RETURNING horizon",
                        params![micros],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                tx.commit().map_err(sql)?;
                Ok(stored)
            })
            .await?;
        Ok(rows::time(stored, "retention horizon")?)
    }

    async fn retention_candidates(
        &self,
        horizon: DateTime<Utc>,
        after: Uuid,
        limit_n: usize,
    ) -> Result<(Vec<RetentionCandidate>, Option<Uuid>), StoreError> {
        let h = rows::micros(horizon);
        let after = rows::id(after);
        let n = limit(limit_n);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(CANDIDATES_SQL).map_err(sql)?;
            let found = stmt
                .query_map(params![h, after, n], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            let mut last = None;
            let mut candidates = Vec::new();
            for (id, keep, has_snapshot, todo, erased) in found {
                let instance_id = rows::uuid(&id, "instance id")?;
                last = Some(instance_id);
                if let (Some(keep), true) = (keep, todo) {
                    candidates.push(RetentionCandidate {
                        instance_id,
                        keep,
                        has_snapshot,
                        erased,
                    });
                }
            }
            Ok((candidates, last))
        })
        .await
    }

    async fn trim(&self, trims: &[Trim], max_events: usize) -> Result<TrimOutcome, StoreError> {
        let mut encoded = Vec::with_capacity(trims.len());
        for t in trims {
            let snapshot = t.snapshot.as_ref().map(rows::json).transpose()?;
            encoded.push((rows::id(t.instance_id), t.keep, snapshot));
        }
        let mut budget = limit(max_events.max(1));
        self.write(move |conn| {
            let mut outcome = TrimOutcome::default();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            for (id, keep, snapshot) in &encoded {
                if let Some(state) = snapshot {
                    outcome.snapshots_written += tx
                        .prepare_cached(
                            "INSERT INTO snapshots (instance_id, version, state) \
                             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        )
                        .map_err(sql)?
                        .execute(params![id, keep, state])
                        .map_err(sql)? as u64;
                }
                let kept = tx
                    .prepare_cached(
                        "SELECT 1 FROM snapshots WHERE instance_id = ?1 AND version = ?2",
                    )
                    .map_err(sql)?
                    .query_row(params![id, keep], |_| Ok(()))
                    .optional()
                    .map_err(sql)?
                    .is_some();
                if !kept {
                    continue;
                }
                outcome.snapshots_deleted += tx
                    .prepare_cached("DELETE FROM snapshots WHERE instance_id = ?1 AND version < ?2")
                    .map_err(sql)?
                    .execute(params![id, keep])
                    .map_err(sql)? as u64;
                if budget == 0 {
                    outcome.more = true;
                    continue;
                }
                let deleted = tx
                    .prepare_cached(
                        "DELETE FROM events WHERE instance_id = ?1 AND version IN (
                            SELECT version FROM events WHERE instance_id = ?1 AND version < ?2
                            ORDER BY version LIMIT ?3) RETURNING position",
                    )
                    .map_err(sql)?
                    .query_map(params![id, keep, budget], |r| r.get::<_, Option<i64>>(0))
                    .map_err(sql)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql)?;
                // The highest position deleted: a log read from before it would miss events.
                if let Some(highest) = deleted.iter().flatten().max() {
                    tx.prepare_cached(
                        "UPDATE retention_horizon SET dropped_through = MAX(dropped_through, ?1)",
                    )
                    .map_err(sql)?
                    .execute([highest])
                    .map_err(sql)?;
                }
                let deleted = deleted.len() as i64;
                budget -= deleted;
                outcome.events_deleted += deleted as u64;
                if budget == 0 {
                    outcome.more = true;
                }
            }
            tx.commit().map_err(sql)?;
            Ok(outcome)
        })
        .await
    }
}
