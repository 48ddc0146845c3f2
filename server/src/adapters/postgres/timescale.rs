//! TimescaleDB extras, set up only where the extension is installed (the tests run them on
//! TimescaleDB 2.23, a WASM build: `server/tests/timescaledb.rs`):
//!
//! - `events_hourly`: a continuous aggregate of per-type, per-event-type hourly counts by
//!   occurred_at, with real-time aggregation so recent events count too. Time series over wide,
//!   hour-aligned ranges read it instead of the raw events.
//! - compression of event chunks older than a configurable age;
//! - backfilled hours re-materialized as they are written ([`refresh_backfilled`]).
//!
//! Retention is not a TimescaleDB policy: `add_retention_policy` drops chunks by `occurred_at`
//! blindly, including events that current states still need. RETENTION_DAYS runs the server's
//! own pass instead (`retention.rs`, which ends with `drop_chunks` where that is safe), and
//! [`configure`] removes a policy an older server (TIMESCALE_RETENTION_DAYS) had added.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio_postgres::Client;
use tracing::{info, warn};

use super::PgError;

/// Compression of the event hypertable.
#[derive(Debug, Clone, Default)]
pub struct TimescaleSettings {
    /// Compress event chunks older than this; None leaves chunks uncompressed.
    pub compress_after: Option<Duration>,
}

const CONTINUOUS_AGGREGATE: &str = "
CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT entity_type_id, event_type, time_bucket(INTERVAL '1 hour', occurred_at) AS bucket,
       count(*) AS n
FROM events
GROUP BY entity_type_id, event_type, bucket
WITH NO DATA";

/// Time series over at least this span, hour-aligned, read the hourly aggregate.
pub const WIDE_RANGE_MICROS: i64 = 7 * 24 * 3_600_000_000;
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// Buckets from the hourly aggregate; same shape as the raw time series query (and its bounds
/// cast the same way).
pub const TIME_SERIES_FROM_AGGREGATE_SQL: &str = "
SELECT date_bin($2::bigint * interval '1 microsecond', bucket, $3::timestamptz) AS b,
       sum(n)::bigint
FROM events_hourly
WHERE entity_type_id = $1 AND bucket >= $3::timestamptz AND bucket < $4::timestamptz {event_type}
GROUP BY b ORDER BY b";

fn interval(d: Duration) -> String {
    format!("{} seconds", d.as_secs())
}

/// Creates the continuous aggregate and makes the policies match `settings`; idempotent, safe at
/// every start.
pub async fn configure(client: &Client, settings: &TimescaleSettings) -> Result<(), PgError> {
    client.batch_execute(CONTINUOUS_AGGREGATE).await?;
    client
        .batch_execute(
            "SELECT add_continuous_aggregate_policy('events_hourly', start_offset => NULL, \
             end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', \
             if_not_exists => true)",
        )
        .await?;
    if settings.compress_after.is_some() {
        client
            .batch_execute(
                "ALTER TABLE events SET (timescaledb.compress, \
                 timescaledb.compress_segmentby = 'entity_type_id, instance_id', \
                 timescaledb.compress_orderby = 'occurred_at DESC, version')",
            )
            .await?;
    }
    set_policy(client, &COMPRESSION, settings.compress_after).await?;
    // Never a blind retention policy (see the module's doc): one left by an older server goes.
    set_policy(client, &RETENTION, None).await?;
    info!(
        ?settings,
        "timescaledb continuous aggregate and policies configured"
    );
    Ok(())
}

/// A policy on the events hypertable: its job, the config key holding its age, and the functions
/// that add and remove it.
struct Policy {
    job: &'static str,
    age_key: &'static str,
    add: &'static str,
    remove: &'static str,
}

const COMPRESSION: Policy = Policy {
    job: "policy_compression",
    age_key: "compress_after",
    add: "add_compression_policy",
    remove: "remove_compression_policy",
};

const RETENTION: Policy = Policy {
    job: "policy_retention",
    age_key: "drop_after",
    add: "add_retention_policy",
    remove: "remove_retention_policy",
};

/// Makes the hypertable's policy match the setting: added when missing, replaced when its age
/// differs (a changed `TIMESCALE_*_DAYS` takes effect at the next start), removed when the
/// setting is off. A policy that already matches is left alone, so its schedule is not reset by
/// every restart.
async fn set_policy(
    client: &Client,
    policy: &Policy,
    age: Option<Duration>,
) -> Result<(), PgError> {
    let current: Vec<Option<bool>> = client
        .query(
            &format!(
                "SELECT (config->>'{key}')::interval = $1::text::interval \
                 FROM timescaledb_information.jobs \
                 WHERE proc_name = '{job}' AND hypertable_name = 'events'",
                key = policy.age_key,
                job = policy.job
            ),
            &[&age.map_or_else(|| "0".to_string(), interval)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let matches = age.is_some() && current.len() == 1 && current[0] == Some(true);
    if matches || (age.is_none() && current.is_empty()) {
        return Ok(());
    }
    if !current.is_empty() {
        client
            .batch_execute(&format!(
                "SELECT {}('events', if_exists => true)",
                policy.remove
            ))
            .await?;
    }
    if let Some(age) = age {
        client
            .batch_execute(&format!(
                "SELECT {}('events', INTERVAL '{}', if_not_exists => true)",
                policy.add,
                interval(age)
            ))
            .await?;
    }
    info!(policy = policy.job, ?age, "timescaledb policy set");
    Ok(())
}

/// Re-materializes the hours of the aggregate that just-written events fall into, where they lie
/// below what the refresh policy keeps materialized (up to an hour ago). Such events (imports,
/// late business times) land in hours already materialized, and the aggregate would miss them
/// until the policy's next run: time series would differ from the events for up to its 30
/// minutes (found when the aggregate first ran, on TimescaleDB 2.23). Live events, newer than
/// an hour, are counted in real time and cost nothing here. A failure is logged, not returned:
/// the events are stored, and the policy's next run catches up.
pub async fn refresh_backfilled(client: &Client, occurred: impl Iterator<Item = DateTime<Utc>>) {
    let hour = TimeDelta::hours(1);
    let (mut lo, mut hi) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for t in occurred {
        lo = Some(lo.map_or(t, |l| l.min(t)));
        hi = Some(hi.map_or(t, |h| h.max(t)));
    }
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return;
    };
    let Ok(horizon) = (Utc::now() - hour).duration_trunc(hour) else {
        return;
    };
    let (Ok(lo), Ok(hi)) = (lo.duration_trunc(hour), hi.duration_trunc(hour)) else {
        return;
    };
    let hi = (hi + hour).min(horizon);
    if lo >= hi {
        return;
    }
    let sql = format!(
        "CALL refresh_continuous_aggregate('events_hourly', '{}'::timestamptz, '{}'::timestamptz)",
        lo.to_rfc3339(),
        hi.to_rfc3339()
    );
    if let Err(e) = client.batch_execute(&sql).await {
        warn!(error = %PgError::from(e), %lo, %hi, "refreshing the hourly aggregate over backfilled hours failed");
    }
}

/// Whether a time series can be answered from the hourly aggregate: hour-multiple buckets over a
/// wide range whose bounds fall on hours, so every hourly row lies inside one bucket.
pub fn use_aggregate(interval_micros: i64, start_micros: i64, end_micros: i64) -> bool {
    interval_micros % HOUR_MICROS == 0
        && start_micros % HOUR_MICROS == 0
        && end_micros % HOUR_MICROS == 0
        && end_micros - start_micros >= WIDE_RANGE_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wide_hour_aligned_series_use_the_aggregate() {
        let day = 24 * HOUR_MICROS;
        assert!(use_aggregate(HOUR_MICROS, 0, 30 * day));
        assert!(use_aggregate(
            6 * HOUR_MICROS,
            5 * HOUR_MICROS,
            5 * HOUR_MICROS + 8 * day
        ));
        assert!(!use_aggregate(HOUR_MICROS, 0, day), "narrow range");
        assert!(
            !use_aggregate(HOUR_MICROS / 2, 0, 30 * day),
            "sub-hour buckets"
        );
        assert!(!use_aggregate(HOUR_MICROS, 1, 30 * day), "unaligned start");
    }
}
