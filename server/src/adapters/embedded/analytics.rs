//! Analytics on the embedded store, with the answers PostgreSQL gives for the same data (the
//! contract tests in `server/tests/contract/analytics.rs` compare both against a naive
//! computation).
//!
//! - Counts, time series, most active and the summary are one SQL statement each, answered
//!   from the covering index `events_type_analytics (entity_type_id, occurred_at, event_type,
//!   instance_id)` (`migrations/embedded/0002_analytics_index.sql`) without reading event rows,
//!   with only the conditions in use in the SQL so that a range is an index seek. Text orders
//!   (`event_type`, instance ids) are SQLite's BINARY collation, which is byte order like
//!   PostgreSQL's `COLLATE "C"`; ids are stored as lowercase hyphenated text, whose byte order is
//!   PostgreSQL's uuid order.
//! - Buckets are `start + k * interval` over integer microseconds, exactly as `date_bin`.
//! - Field statistics read the current states and evaluate the field the way PostgreSQL's
//!   `jsonb #> text[]` does ([`pg_path`]: object keys verbatim, array indices parsed like
//!   `strtol`, negative ones counting from the end), then aggregate with
//!   [`FieldStats::from_values`] (numbers as f64, top strings and booleans ordered by count, then
//!   by their JSON text in byte order).
//! - Values as of a moment fold each instance from its latest snapshot at or before its version
//!   at that moment (recorded time), as PgStore does.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;
use uuid::Uuid;

use super::store::EmbeddedStore;
use super::{EmbeddedError, rows};
use crate::domain::analytics::{FieldStats, FieldStatsAccumulator, pointer_segments};
use crate::domain::{ApplyMode, State, field_path, fold_event};
use crate::ports::{
    ActiveInstance, AnalyticsReader, EventTypeCount, StoreError, TimeRange, TypeSummary,
};

fn sql(e: rusqlite::Error) -> StoreError {
    EmbeddedError::from(e).into()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `AND occurred_at >= ? AND occurred_at < ?` conditions of a range, only the sides in use
/// (so SQLite seeks the index), with their values appended to `values`.
fn range_conditions(range: TimeRange, values: &mut Vec<SqlValue>) -> String {
    let mut conditions = String::new();
    if let Some(start) = range.start {
        conditions.push_str(" AND occurred_at >= ?");
        values.push(SqlValue::Integer(rows::micros(start)));
    }
    if let Some(end) = range.end {
        conditions.push_str(" AND occurred_at < ?");
        values.push(SqlValue::Integer(rows::micros(end)));
    }
    conditions
}

/// An hour in microseconds: the width of a row of `event_rollups` (migration 0012).
const HOUR: i64 = 3_600_000_000;

/// `t` rounded down to a whole hour since the Unix epoch.
fn hour_floor(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

/// `t` rounded up to a whole hour since the Unix epoch (itself when already whole).
fn hour_ceil(t: i64) -> i64 {
    match t.rem_euclid(HOUR) {
        0 => t,
        r => t.saturating_add(HOUR - r),
    }
}

/// Event counts from the rollups: the whole hours `[a, b)` inside the range from
/// `event_rollups`, the partial hour at each edge (`[start, a)`, `[b, end)`) from the events.
/// When the range lies within less than a whole hour, `a > b`: the rollups give nothing and the
/// left edge alone covers `[start, end)`. Returns the statement and its values.
fn event_counts_from_rollups(entity_type_id: &str, range: TimeRange) -> (String, Vec<SqlValue>) {
    let start = range.start.map(rows::micros);
    let end = range.end.map(rows::micros);
    let a = start.map_or(i64::MIN, hour_ceil);
    let b = end.map_or(i64::MAX, hour_floor);
    let mut values = vec![
        SqlValue::Text(entity_type_id.to_string()),
        SqlValue::Integer(a),
        SqlValue::Integer(b),
    ];
    let mut parts = vec![
        "SELECT event_type, events AS n FROM event_rollups \
         WHERE entity_type_id = ?1 AND hour >= ?2 AND hour < ?3"
            .to_string(),
    ];
    let mut raw = |lower: i64, upper: i64, values: &mut Vec<SqlValue>| {
        let n = values.len();
        values.push(SqlValue::Integer(lower));
        values.push(SqlValue::Integer(upper));
        parts.push(format!(
            "SELECT event_type, count(*) FROM events \
             WHERE entity_type_id = ?1 AND occurred_at >= ?{} AND occurred_at < ?{} \
             GROUP BY event_type",
            n + 1,
            n + 2
        ));
    };
    if let Some(s) = start {
        raw(s, end.map_or(a, |e| e.min(a)), &mut values);
    }
    if let Some(e) = end {
        raw(b.max(a), e, &mut values);
    }
    (
        format!(
            "SELECT event_type, sum(n) AS n FROM ({}) \
             GROUP BY event_type HAVING sum(n) > 0 ORDER BY n DESC, event_type",
            parts.join(" UNION ALL ")
        ),
        values,
    )
}

/// An array index as PostgreSQL's `#>` reads a path element: `strtol` semantics (leading
/// whitespace, an optional sign, decimal digits and nothing after them, within `int`), negative
/// indices counting from the end. None where PostgreSQL yields SQL NULL.
fn pg_array_index(segment: &str, len: usize) -> Option<usize> {
    let s = segment.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too long for an i64 is out of range for an int as well.
    let magnitude: i64 = digits.parse().ok()?;
    // `strtoint` refuses what does not fit an int; `INT_MIN` itself is refused afterwards.
    if magnitude > i64::from(i32::MAX) {
        return None;
    }
    let magnitude = usize::try_from(magnitude).ok()?;
    if negative && magnitude > 0 {
        len.checked_sub(magnitude)
    } else {
        (magnitude < len).then_some(magnitude)
    }
}

/// The value at `segments` in `state`, as PostgreSQL's `state #> segments` finds it: None where
/// it yields SQL NULL (a missing key, an index out of range or not a number, a path through a
/// scalar); a present JSON null is `Some(Value::Null)`.
fn pg_path(state: &State, segments: &[String]) -> Option<Value> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(Value::Object(state.clone()));
    };
    let mut node = state.get(first)?;
    for segment in rest {
        node = match node {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(pg_array_index(segment, items.len())?)?,
            _ => return None,
        };
    }
    Some(node.clone())
}

/// A value as PostgreSQL's numeric sees it: zero has no sign there (`-0.0` is `0`).
fn normalized(value: Option<Value>) -> Option<Value> {
    match value {
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) && n.is_f64() => Some(Value::from(0)),
        other => other,
    }
}

/// An aggregate that is not finite is left out, as PgStore does.
fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

/// Per instance that existed at `as_of` (in id order): the events from its latest snapshot at
/// or before its version then, up to that version, the snapshot's state riding on the row of the
/// snapshot's own version.
const STATES_AS_OF_SQL: &str = "
WITH h AS (
    SELECT i.id,
           (SELECT e.version FROM events e
            WHERE e.instance_id = i.id AND e.recorded_at <= ?2
            ORDER BY e.recorded_at DESC, e.version DESC LIMIT 1) AS target
    FROM instances i
    WHERE i.entity_type_id = ?1 AND i.created_at <= ?2 AND i.erased = 0
), s AS (
    SELECT h.id, h.target,
           (SELECT sn.version FROM snapshots sn
            WHERE sn.instance_id = h.id AND sn.version <= h.target
            ORDER BY sn.version DESC LIMIT 1) AS snap_version
    FROM h WHERE h.target IS NOT NULL
)
SELECT s.id, e.version,
       CASE WHEN e.version = s.snap_version THEN
           (SELECT sn.state FROM snapshots sn
            WHERE sn.instance_id = s.id AND sn.version = s.snap_version)
       END,
       e.payload, e.mode
FROM s JOIN events e ON e.instance_id = s.id
    AND e.version >= COALESCE(s.snap_version, 1) AND e.version <= s.target
ORDER BY s.id, e.version";

/// Folds the rows of [`STATES_AS_OF_SQL`] into each instance's state, one instance at a time as
/// the rows are stepped through, and counts the field's value in the statistics: memory holds one
/// state and the totals, never the type's rows.
fn stats_as_of(
    conn: &Connection,
    entity_type_id: Uuid,
    pointer: &str,
    as_of: i64,
    top: usize,
) -> Result<FieldStats, StoreError> {
    let mut stmt = conn.prepare_cached(STATES_AS_OF_SQL).map_err(sql)?;
    let mut found = stmt
        .query(params![rows::id(entity_type_id), as_of])
        .map_err(sql)?;
    let mut stats = FieldStatsAccumulator::default();
    let mut current: Option<(String, State)> = None;
    while let Some(row) = found.next().map_err(sql)? {
        let id: String = row.get(0).map_err(sql)?;
        if current.as_ref().is_none_or(|(c, _)| *c != id) {
            if let Some((_, state)) = current.take() {
                stats.add(field_path::lookup(&state, pointer));
            }
            current = Some((id.clone(), State::new()));
        }
        let Some((_, state)) = current.as_mut() else {
            continue;
        };
        let snapshot: Option<String> = row.get(2).map_err(sql)?;
        if let Some(snapshot) = snapshot {
            *state = rows::object(&snapshot, "snapshot")?;
            continue;
        }
        let payload: String = row.get(3).map_err(sql)?;
        let payload = rows::object(&payload, "payload")?;
        let mode: String = row.get(4).map_err(sql)?;
        let mode = ApplyMode::parse(&mode)
            .ok_or_else(|| EmbeddedError::Data(format!("unknown apply mode {mode:?}")))?;
        fold_event(state, &payload, mode).map_err(|e| {
            StoreError::Internal(format!("stored event of instance {id} does not apply: {e}"))
        })?;
    }
    if let Some((_, state)) = current {
        stats.add(field_path::lookup(&state, pointer));
    }
    Ok(stats.finish(top))
}

#[async_trait]
impl AnalyticsReader for EmbeddedStore {
    async fn event_counts(
        &self,
        entity_type_id: Uuid,
        range: TimeRange,
    ) -> Result<Vec<EventTypeCount>, StoreError> {
        let (sql_text, values) = event_counts_from_rollups(&rows::id(entity_type_id), range);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt.query(params_from_iter(values)).map_err(sql)?;
            Ok(rows::collect(found, |r| {
                Ok(EventTypeCount {
                    event_type: r.get(0)?,
                    count: r.get(1)?,
                })
            })?)
        })
        .await
    }

    async fn time_series(
        &self,
        entity_type_id: Uuid,
        interval_micros: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        event_type: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError> {
        if interval_micros <= 0 {
            return Err(StoreError::Internal(format!(
                "time series interval must be positive, got {interval_micros}"
            )));
        }
        let start = rows::micros(start);
        let mut values = vec![
            SqlValue::Text(rows::id(entity_type_id)),
            SqlValue::Integer(start),
            SqlValue::Integer(interval_micros),
            SqlValue::Integer(rows::micros(end)),
        ];
        let filter = if let Some(t) = event_type {
            values.push(SqlValue::Text(t.to_string()));
            " AND event_type = ?5"
        } else {
            ""
        };
        // Buckets that are unions of whole hours: the hours before the end's from the rollups,
        // that last partial hour from the events (?6: the end's hour, or the start if later).
        let sql_text = if interval_micros % HOUR == 0 && start.rem_euclid(HOUR) == 0 {
            if event_type.is_none() {
                values.push(SqlValue::Null); // ?5, unused
            }
            values.push(SqlValue::Integer(hour_floor(rows::micros(end)).max(start)));
            format!(
                "SELECT k, sum(n) FROM (
                    SELECT (hour - ?2) / ?3 AS k, events AS n FROM event_rollups
                    WHERE entity_type_id = ?1 AND hour >= ?2 AND hour < ?6{filter}
                    UNION ALL
                    SELECT (occurred_at - ?2) / ?3 AS k, count(*) FROM events
                    WHERE entity_type_id = ?1 AND occurred_at >= ?6 AND occurred_at < ?4{filter}
                    GROUP BY k
                 ) GROUP BY k HAVING sum(n) > 0 ORDER BY k"
            )
        } else {
            format!(
                "SELECT (occurred_at - ?2) / ?3 AS k, count(*) FROM events \
                 WHERE entity_type_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?4{filter} \
                 GROUP BY k ORDER BY k"
            )
        };
        let found: Vec<(i64, i64)> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
                let found = stmt.query(params_from_iter(values)).map_err(sql)?;
                Ok(rows::collect(found, |r| Ok((r.get(0)?, r.get(1)?)))?)
            })
            .await?;
        found
            .into_iter()
            .map(|(k, count)| {
                let at = k
                    .checked_mul(interval_micros)
                    .and_then(|d| d.checked_add(start))
                    .ok_or_else(|| StoreError::Internal(format!("bucket {k} is out of range")))?;
                Ok((rows::time(at, "bucket")?, count))
            })
            .collect()
    }

    async fn field_stats(
        &self,
        entity_type_id: Uuid,
        pointer: &str,
        top: usize,
    ) -> Result<FieldStats, StoreError> {
        let segments = pointer_segments(pointer);
        let mut stats = self
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT state FROM instances WHERE entity_type_id = ?1 AND erased = 0",
                    )
                    .map_err(sql)?;
                let mut found = stmt.query([rows::id(entity_type_id)]).map_err(sql)?;
                // Only the running totals are kept, not the states nor their values.
                let mut stats = FieldStatsAccumulator::default();
                while let Some(row) = found.next().map_err(sql)? {
                    let text: String = row.get(0).map_err(sql)?;
                    let state = rows::object(&text, "state")?;
                    stats.add(normalized(pg_path(&state, &segments)).as_ref());
                }
                Ok(stats.finish(top))
            })
            .await?;
        stats.min = finite(stats.min);
        stats.max = finite(stats.max);
        stats.sum = finite(stats.sum);
        stats.mean = finite(stats.mean);
        Ok(stats)
    }

    async fn field_stats_as_of(
        &self,
        entity_type_id: Uuid,
        pointer: &str,
        as_of: DateTime<Utc>,
        top: usize,
    ) -> Result<FieldStats, StoreError> {
        let pointer = pointer.to_string();
        let as_of = rows::micros(as_of);
        self.read(move |conn| stats_as_of(conn, entity_type_id, &pointer, as_of, top))
            .await
    }

    async fn most_active(
        &self,
        entity_type_id: Uuid,
        range: TimeRange,
        limit_n: usize,
    ) -> Result<Vec<ActiveInstance>, StoreError> {
        let mut values = vec![SqlValue::Text(rows::id(entity_type_id))];
        let conditions = range_conditions(range, &mut values);
        values.push(SqlValue::Integer(limit(limit_n)));
        let sql_text = format!(
            "SELECT a.instance_id, CASE WHEN i.erased THEN '' ELSE i.external_id END, a.n, a.last
             FROM (
                 SELECT instance_id, count(*) AS n, max(occurred_at) AS last FROM events
                 WHERE entity_type_id = ?{conditions}
                 GROUP BY instance_id ORDER BY n DESC, instance_id LIMIT ?
             ) AS a JOIN instances i ON i.id = a.instance_id
             ORDER BY a.n DESC, a.instance_id"
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt.query(params_from_iter(values)).map_err(sql)?;
            Ok(rows::collect(found, |r| {
                Ok(ActiveInstance {
                    instance_id: rows::uuid(&r.get::<_, String>(0)?, "instance id")?,
                    external_id: r.get(1)?,
                    event_count: r.get(2)?,
                    last_event_at: rows::time(r.get(3)?, "occurred_at")?,
                })
            })?)
        })
        .await
    }

    async fn summary(
        &self,
        entity_type_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<TypeSummary, StoreError> {
        let id = rows::id(entity_type_id);
        let since = rows::micros(since);
        self.read(move |conn| {
            // One read transaction: the totals and the event types see the same data.
            let tx = conn.transaction().map_err(sql)?;
            // Counts from the rollups (events since: whole hours from the rollups, the partial
            // hour after `since` from the events); first and last are one index probe each.
            let totals = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM instances WHERE entity_type_id = ?1),
                            (SELECT COALESCE(sum(events), 0) FROM event_rollups
                             WHERE entity_type_id = ?1),
                            (SELECT min(occurred_at) FROM events WHERE entity_type_id = ?1),
                            (SELECT max(occurred_at) FROM events WHERE entity_type_id = ?1),
                            (SELECT COALESCE(sum(events), 0) FROM event_rollups
                             WHERE entity_type_id = ?1 AND hour >= ?3)
                            + (SELECT count(*) FROM events
                               WHERE entity_type_id = ?1 AND occurred_at >= ?2
                                 AND occurred_at < ?3)",
                )
                .map_err(sql)?
                .query_row(params![id, since, hour_ceil(since)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()
                .map_err(sql)?
                .ok_or_else(|| StoreError::Internal("summary returned no row".into()))?;
            let event_types = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT event_type FROM event_rollups WHERE entity_type_id = ?1 \
                         GROUP BY event_type HAVING sum(events) > 0 ORDER BY event_type",
                    )
                    .map_err(sql)?;
                let found = stmt.query([&id]).map_err(sql)?;
                rows::collect(found, |r| Ok(r.get::<_, String>(0)?))?
            };
            tx.commit().map_err(sql)?;
            let (instance_count, event_count, first, last, events_since) = totals;
            Ok(TypeSummary {
                instance_count,
                event_count,
                first_event_at: first.map(|t| rows::time(t, "occurred_at")).transpose()?,
                last_event_at: last.map(|t| rows::time(t, "occurred_at")).transpose()?,
                events_since,
                event_types,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn segs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_follow_postgres_jsonb_extraction() {
        let state = json!({"a": [10, 20, 30], "1": "k", "o": {"x.y": null, "q\"[": 1}, "s": "t"});
        let state = state.as_object().unwrap();
        let at = |p: &[&str]| pg_path(state, &segs(p));
        // Array indices as `strtol` reads them; negative ones from the end.
        for (index, expected) in [
            ("0", Some(json!(10))),
            ("-1", Some(json!(30))),
            (" 1", Some(json!(20))),
            ("\t2", Some(json!(30))),
            ("+1", Some(json!(20))),
            ("01", Some(json!(20))),
            ("-0", Some(json!(10))),
            ("-3", Some(json!(10))),
            ("-4", None),
            ("3", None),
            ("1 ", None),
            ("0x1", None),
            ("", None),
            ("1.0", None),
            ("- 1", None),
            ("2147483648", None),
            ("-2147483648", None),
            ("99999999999999999999999", None),
        ] {
            assert_eq!(at(&["a", index]), expected, "index {index:?}");
        }
        // Object keys verbatim, whatever they look like.
        assert_eq!(at(&["1"]), Some(json!("k")));
        assert_eq!(at(&["o", "x.y"]), Some(Value::Null));
        assert_eq!(at(&["o", "q\"["]), Some(json!(1)));
        assert_eq!(at(&["o", "x"]), None);
        // Through a scalar: nothing.
        assert_eq!(at(&["s", "0"]), None);
        assert_eq!(at(&["a", "0", "x"]), None);
        assert_eq!(at(&[]), Some(Value::Object(state.clone())));
    }

    #[test]
    fn negative_zero_counts_as_zero() {
        assert_eq!(normalized(Some(json!(-0.0))), Some(json!(0)));
        assert_eq!(normalized(Some(json!(0.5))), Some(json!(0.5)));
        assert_eq!(normalized(None), None);
    }
}
