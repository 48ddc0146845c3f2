//! [`HistoryReader`] for [`PgStore`]: an instance's events, the snapshot-and-tail read behind a
//! past state, the version at a time, and the global log. Their statements are public for the benchmark.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{PgError, PgStore, rows};
use crate::ports::{
    EventRecord, HistoryFilter, HistoryReader, LogFilter, LogPage, Snapshot, StoreError,
};

#[async_trait]
impl HistoryReader for PgStore {
    async fn events(
        &self,
        instance_id: Uuid,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let client = self.client().await?;
        // Only the filters that are set become conditions: with `($n IS NULL OR ...)` a generic
        // plan cannot use the version bound as an index range, and a deep page then scans
        // the instance from its first event. One cached statement per shape (at most 128).
        let limit = limit as i64;
        let (sql, params) = history_query(&instance_id, filter, &limit);
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let mut events = Vec::with_capacity(limit.clamp(0, 1024) as usize);
        as_they_arrive(&client, &stmt, params, |row| {
            events.push(rows::event(row)?);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    async fn snapshot_and_tail(
        &self,
        instance_id: Uuid,
        version: i64,
    ) -> Result<(Option<Snapshot>, Vec<EventRecord>), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&snapshot_and_tail_sql())
            .await
            .map_err(PgError::from)?;
        let found = client
            .query(&stmt, &[&instance_id, &version])
            .await
            .map_err(PgError::from)?;
        let mut snapshot = None;
        let mut tail = Vec::with_capacity(found.len());
        for row in &found {
            if snapshot.is_none() {
                let snap_version: Option<i64> = row.try_get(0).map_err(PgError::from)?;
                if let Some(v) = snap_version {
                    let state: Value = row.try_get(1).map_err(PgError::from)?;
                    snapshot = Some(Snapshot {
                        version: v,
                        state: rows::object(state, "snapshot")?,
                    });
                }
            }
            let event_version: Option<i64> = row.try_get(6).map_err(PgError::from)?;
            if event_version.is_some() {
                tail.push(rows::event_at(row, 2)?);
            }
        }
        Ok((snapshot, tail))
    }

    async fn version_at(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT version FROM events WHERE instance_id = $1 AND recorded_at <= $2 \
                 ORDER BY recorded_at DESC, version DESC LIMIT 1",
            )
            .await
            .map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[&instance_id, &at])
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn events_occurred_by(
        &self,
        instance_id: Uuid,
        at: DateTime<Utc>,
        up_to: i64,
        after: Option<(DateTime<Utc>, i64)>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM events e WHERE e.instance_id = $1 AND e.version <= $3 \
             AND e.occurred_at <= $2 \
             AND ($4::timestamptz IS NULL OR (e.occurred_at, e.version) > ($4, $5)) \
             ORDER BY e.occurred_at, e.version LIMIT $6",
            rows::EVENT_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let (after_at, after_version) = match after {
            Some((t, v)) => (Some(t), v),
            None => (None, 0),
        };
        let found = client
            .query(
                &stmt,
                &[
                    &instance_id,
                    &at,
                    &up_to,
                    &after_at,
                    &after_version,
                    &(limit as i64),
                ],
            )
            .await
            .map_err(PgError::from)?;
        Ok(found.iter().map(rows::event).collect::<Result<_, _>>()?)
    }

    async fn horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT horizon FROM retention_horizon")
            .await
            .map_err(PgError::from)?;
        let row = client.query_opt(&stmt, &[]).await.map_err(PgError::from)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn read_log(&self, filter: &LogFilter, limit: usize) -> Result<LogPage, StoreError> {
        let client = self.client().await?;
        let limit = limit as i64;
        let (sql, params) = log_query(filter, &limit);
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let mut page = LogPage {
            head: 0,
            dropped_through: 0,
            events: Vec::with_capacity(limit.clamp(0, 1024) as usize),
        };
        as_they_arrive(&client, &stmt, params, |row| {
            page.head = row.get(0);
            page.dropped_through = row.get(1);
            if row.get::<_, Option<String>>(2).is_some() {
                page.events.push(rows::event_at(row, 2)?);
            }
            Ok(())
        })
        .await?;
        Ok(page)
    }

    async fn dropped_through(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT dropped_through FROM retention_horizon")
            .await
            .map_err(PgError::from)?;
        let row = client.query_opt(&stmt, &[]).await.map_err(PgError::from)?;
        Ok(row.map_or(0, |r| r.get(0)))
    }
}

/// Runs `stmt` and hands each row to `each` as it arrives, while PostgreSQL is still sending
/// the rest (a page is decoded alongside its transfer, not after its last row).
async fn as_they_arrive(
    client: &deadpool_postgres::Object,
    stmt: &tokio_postgres::Statement,
    params: Vec<&(dyn ToSql + Sync)>,
    mut each: impl FnMut(&tokio_postgres::Row) -> Result<(), PgError>,
) -> Result<(), PgError> {
    let found = client.query_raw(stmt, params).await?;
    futures::pin_mut!(found);
    while let Some(row) = found.try_next().await? {
        each(&row)?;
    }
    Ok(())
}

/// The read of the global log ([`HistoryReader::read_log`]): its SQL and parameters. One
/// statement, so one snapshot: the head (column 0, the highest position committed), the
/// retention horizon (column 1), then [`rows::EVENT_COLUMNS`] of each matching event up to the
/// head (all NULL when none matches), by
/// keyset on the position index. Only the filters in use become conditions.
pub fn log_query<'a>(
    filter: &'a LogFilter,
    limit: &'a i64,
) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&filter.after, &filter.through];
    let mut conditions = String::new();
    if let Some(ids) = &filter.entity_type_ids {
        params.push(ids);
        conditions.push_str(&format!(" AND e.entity_type_id = ANY(${})", params.len()));
    }
    if !filter.event_types.is_empty() {
        params.push(&filter.event_types);
        conditions.push_str(&format!(" AND e.event_type = ANY(${})", params.len()));
    }
    params.push(limit);
    let sql = format!(
        "WITH h AS (SELECT COALESCE(max(position), 0) AS head,
                           (SELECT COALESCE(max(dropped_through), 0) FROM retention_horizon)
                               AS dropped FROM events)
         SELECT h.head, h.dropped, x.* FROM h LEFT JOIN LATERAL (
             SELECT {} FROM events e
             WHERE e.position > $1 AND e.position <= LEAST($2, h.head){conditions}
             ORDER BY e.position LIMIT ${}
         ) x ON true
         ORDER BY 15",
        rows::EVENT_COLUMNS,
        params.len()
    );
    (sql, params)
}

/// The history read of one instance ([`HistoryReader::events`]): its SQL and parameters for
/// `filter`. Only the filters that are set become conditions: with `($n IS NULL OR ...)` a
/// generic plan cannot use the version bound as an index range, and a deep page then scans the
/// instance from its first event. One cached statement per shape (at most 128).
pub fn history_query<'a>(
    instance_id: &'a Uuid,
    filter: &'a HistoryFilter,
    limit: &'a i64,
) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![instance_id];
    let mut sql = format!(
        "SELECT {} FROM events e WHERE e.instance_id = $1",
        rows::EVENT_COLUMNS
    );
    let mut condition = |sql: &mut String, expr: &str, value| {
        params.push(value);
        sql.push_str(&format!(" AND {expr} ${}", params.len()));
    };
    if let Some(v) = &filter.from_version {
        condition(&mut sql, "e.version >=", v);
    }
    if let Some(v) = &filter.to_version {
        condition(&mut sql, "e.version <=", v);
    }
    if let Some(t) = &filter.start_time {
        condition(&mut sql, "e.recorded_at >=", t);
    }
    if let Some(t) = &filter.end_time {
        condition(&mut sql, "e.recorded_at <=", t);
    }
    if let Some(v) = &filter.after_version {
        let op = if filter.descending {
            "e.version <"
        } else {
            "e.version >"
        };
        condition(&mut sql, op, v);
    }
    if !filter.event_types.is_empty() {
        params.push(&filter.event_types);
        sql.push_str(&format!(" AND e.event_type = ANY(${})", params.len()));
    }
    params.push(limit);
    sql.push_str(&format!(
        " ORDER BY e.version {} LIMIT ${}",
        if filter.descending { "DESC" } else { "ASC" },
        params.len()
    ));
    (sql, params)
}

/// The snapshot-and-tail read ([`HistoryReader::snapshot_and_tail`]): $1 instance id,
/// $2 version. Column 0 and 1 are the snapshot's version and state (NULL when there is none),
/// then [`rows::EVENT_COLUMNS`] of each tail event.
pub fn snapshot_and_tail_sql() -> String {
    format!(
        "{SNAPSHOT_AND_TAIL_SQL_HEAD} {} {SNAPSHOT_AND_TAIL_SQL_TAIL}",
        rows::EVENT_COLUMNS
    )
}

/// The latest snapshot at or before $2 and the events after it up to $2, in one round trip.
/// The outer LEFT JOINs keep the snapshot row even when the tail is empty. An erased instance
/// has no tail: the caller then reads the instance and refuses the time travel.
const SNAPSHOT_AND_TAIL_SQL_HEAD: &str = "
WITH s AS (
    SELECT version, state FROM snapshots
    WHERE instance_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1
)
SELECT s.version, s.state,";
const SNAPSHOT_AND_TAIL_SQL_TAIL: &str = "
FROM (SELECT 1) AS one
LEFT JOIN s ON true
LEFT JOIN events e ON e.instance_id = $1 AND e.version >= COALESCE(s.version, 1)
                  AND e.version <= $2
                  AND NOT EXISTS (SELECT 1 FROM instances WHERE id = $1 AND erased)
ORDER BY e.version";
