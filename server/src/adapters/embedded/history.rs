//! [`HistoryReader`] for [`EmbeddedStore`]: an instance's events, the snapshot-and-tail read
//! behind a past state, and the version at a time, on the read connections.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::store::{limit, sql};
use super::{EmbeddedError, EmbeddedStore, rows};
use crate::ports::{
    EventRecord, HistoryFilter, HistoryReader, LogFilter, LogPage, Snapshot, StoreError,
};

/// The snapshot-and-tail read, two statements in one read transaction. The latest snapshot at
/// or before a version: ?1 instance id, ?2 version.
pub const SNAPSHOT_SQL: &str = "SELECT version, state FROM snapshots WHERE instance_id = ?1 \
     AND version <= ?2 ORDER BY version DESC LIMIT 1";

/// The tail, starting AT the snapshot's version as PgStore's does: ?1 instance id, ?2 first
/// version, ?3 last version; [`rows::EVENT_COLUMNS`].
pub fn tail_sql() -> String {
    format!(
        "SELECT {} FROM events e WHERE e.instance_id = ?1 \
         AND e.version >= ?2 AND e.version <= ?3 \
         AND NOT EXISTS (SELECT 1 FROM instances WHERE id = ?1 AND erased = 1) \
         ORDER BY e.version",
        rows::EVENT_COLUMNS
    )
}

#[async_trait]
impl HistoryReader for EmbeddedStore {
    async fn events(
        &self,
        instance_id: Uuid,
        filter: &HistoryFilter,
        limit_n: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // Only the conditions in use go into the SQL, so SQLite turns the version bounds into a
        // range scan of the primary key; each shape is prepared once per connection.
        let mut sql_text = format!(
            "SELECT {} FROM events e WHERE e.instance_id = ?",
            rows::EVENT_COLUMNS
        );
        let mut values = vec![SqlValue::Text(rows::id(instance_id))];
        let mut bound = |sql_text: &mut String, condition: &str, value: SqlValue| {
            sql_text.push_str(" AND ");
            sql_text.push_str(condition);
            values.push(value);
        };
        if let Some(v) = filter.from_version {
            bound(&mut sql_text, "e.version >= ?", SqlValue::Integer(v));
        }
        if let Some(v) = filter.to_version {
            bound(&mut sql_text, "e.version <= ?", SqlValue::Integer(v));
        }
        if let Some(t) = filter.start_time {
            bound(
                &mut sql_text,
                "e.recorded_at >= ?",
                SqlValue::Integer(rows::micros(t)),
            );
        }
        if let Some(t) = filter.end_time {
            bound(
                &mut sql_text,
                "e.recorded_at <= ?",
                SqlValue::Integer(rows::micros(t)),
            );
        }
        if !filter.event_types.is_empty() {
            let types = serde_json::to_string(&filter.event_types)
                .map_err(|e| StoreError::Internal(format!("encoding event types: {e}")))?;
            bound(
                &mut sql_text,
                "e.event_type IN (SELECT value FROM json_each(?))",
                SqlValue::Text(types),
            );
        }
        let (op, order) = if filter.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(v) = filter.after_version {
            bound(
                &mut sql_text,
                &format!("e.version {op} ?"),
                SqlValue::Integer(v),
            );
        }
        sql_text.push_str(&format!(" ORDER BY e.version {order} LIMIT ?"));
        values.push(SqlValue::Integer(limit(limit_n)));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt
                .query(rusqlite::params_from_iter(values))
                .map_err(sql)?;
            Ok(rows::collect(found, rows::event)?)
        })
        .await
    }

    async fn snapshot_and_tail(
        &self,
        instance_id: Uuid,
        version: i64,
    ) -> Result<(Option<Snapshot>, Vec<EventRecord>), StoreError> {
        self.read(move |conn| {
            // One read transaction: both reads see the same committed state.
            let tx = conn.transaction().map_err(sql)?;
            let id = rows::id(instance_id);
            let snapshot = tx
                .prepare_cached(SNAPSHOT_SQL)
                .map_err(sql)?
                .query_row(params![id, version], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
                .map_err(sql)?
                .map(|(v, state)| {
                    Ok::<_, EmbeddedError>(Snapshot {
                        version: v,
                        state: rows::object(&state, "snapshot")?,
                    })
                })
                .transpose()?;
            // The tail starts AT the snapshot's version, as PgStore's does.
            let from = snapshot.as_ref().map_or(1, |s| s.version);
            let tail = {
                let mut stmt = tx.prepare_cached(&tail_sql()).map_err(sql)?;
                let found = stmt.query(params![id, from, version]).map_err(sql)?;
                rows::collect(found, rows::event)?
            };
            tx.commit().map_err(sql)?;
            Ok((snapshot, tail))
        })
        .await
    }

    async fn version_at(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT version FROM events WHERE instance_id = ?1 AND recorded_at <= ?2 \
                 ORDER BY recorded_at DESC, version DESC LIMIT 1",
            )
            .map_err(sql)?
            .query_row(params![rows::id(instance_id), rows::micros(at)], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn events_occurred_by(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
        up_to: i64,
        after: Option<(DateTime<Utc>, i64)>,
        limit_n: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (after_at, after_version) = match after {
            Some((t, v)) => (Some(rows::micros(t)), v),
            None => (None, 0),
        };
        self.read(move |conn| {
            let sql_text = format!(
                "SELECT {} FROM events e WHERE e.instance_id = ?1 AND e.version <= ?3 \
                 AND e.occurred_at <= ?2 \
                 AND (?4 IS NULL OR (e.occurred_at, e.version) > (?4, ?5)) \
                 ORDER BY e.occurred_at, e.version LIMIT ?6",
                rows::EVENT_COLUMNS
            );
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt
                .query(params![
                    rows::id(instance_id),
                    rows::micros(at),
                    up_to,
                    after_at,
                    after_version,
                    super::store::limit(limit_n)
                ])
                .map_err(sql)?;
            Ok(rows::collect(found, rows::event)?)
        })
        .await
    }

    async fn horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let micros: Option<i64> = self
            .read(|conn| {
                conn.prepare_cached("SELECT horizon FROM retention_horizon")
                    .map_err(sql)?
                    .query_row([], |r| r.get(0))
                    .optional()
                    .map_err(sql)
            })
            .await?;
        Ok(micros
            .map(|m| rows::time(m, "retention horizon"))
            .transpose()?)
    }

    async fn read_log(&self, filter: &LogFilter, limit_n: usize) -> Result<LogPage, StoreError> {
        let mut sql_text = format!(
            "SELECT {} FROM events e WHERE e.position > ?1 AND e.position <= ?2",
            rows::EVENT_COLUMNS
        );
        let mut values = Vec::new();
        if let Some(ids) = &filter.entity_type_ids {
            let ids: Vec<String> = ids.iter().map(|id| rows::id(*id)).collect();
            let ids = serde_json::to_string(&ids)
                .map_err(|e| StoreError::Internal(format!("encoding type ids: {e}")))?;
            values.push(SqlValue::Text(ids));
            sql_text.push_str(&format!(
                " AND e.entity_type_id IN (SELECT value FROM json_each(?{}))",
                values.len() + 2
            ));
        }
        if !filter.event_types.is_empty() {
            let types = serde_json::to_string(&filter.event_types)
                .map_err(|e| StoreError::Internal(format!("encoding event types: {e}")))?;
            values.push(SqlValue::Text(types));
            sql_text.push_str(&format!(
                " AND e.event_type IN (SELECT value FROM json_each(?{}))",
                values.len() + 2
            ));
        }
        sql_text.push_str(&format!(" ORDER BY e.position LIMIT ?{}", values.len() + 3));
        values.push(SqlValue::Integer(limit(limit_n)));
        let (after, through) = (filter.after, filter.through);
        self.read(move |conn| {
            // The head first: every position at or below it is final (the single writer
            // commits in position order), so the page read next, bounded by it, misses none.
            let head: i64 = conn
                .prepare_cached(LOG_HEAD_SQL)
                .map_err(sql)?
                .query_row([], |r| r.get(0))
                .map_err(sql)?;
            let mut all = vec![
                SqlValue::Integer(after),
                SqlValue::Integer(through.min(head)),
            ];
            all.extend(values);
            let dropped_through = dropped_through(conn)?;
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt.query(rusqlite::params_from_iter(all)).map_err(sql)?;
            Ok(LogPage {
                events: rows::collect(found, rows::event)?,
                head,
                dropped_through,
            })
        })
        .await
    }

    async fn dropped_through(&self) -> Result<i64, StoreError> {
        self.read(|conn| dropped_through(conn)).await
    }
}

/// The highest position retention deleted (0 when it never deleted one).
fn dropped_through(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    let dropped: Option<i64> = conn
        .prepare_cached("SELECT dropped_through FROM retention_horizon")
        .map_err(sql)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    Ok(dropped.unwrap_or(0))
}

/// The head of the global log: the highest position committed (0 when empty).
pub const LOG_HEAD_SQL: &str = "SELECT IFNULL(MAX(position), 0) FROM events";
