//! `timescale`: the analytics that TimescaleDB changes, over the same 1,000,000 events in plain
//! PostgreSQL and in PostgreSQL with TimescaleDB, in one run (issue 19).
//!
//! TimescaleDB here is the one the tests use (`temporal_state_test_support::timescaledb`):
//! PostgreSQL 17 with TimescaleDB 2.23 compiled to WASM (PGlite), serving one connection at a
//! time. So both sides are measured through the store (`PgStore`, the server's own adapter, with
//! a pool of one) rather than through gRPC, and each side's hand-written SQL runs on that same
//! connection. The dataset is the `analytics` scenario's, bulk-loaded in SQL; on TimescaleDB the
//! hourly continuous aggregate is then refreshed and every chunk compressed, which is what its
//! policies would do in production.
//!
//! Two ratios matter and are printed:
//! - TimescaleDB's store against the raw SQL over its own hypertable (same engine, same data):
//!   what the continuous aggregate buys;
//! - TimescaleDB's store against plain PostgreSQL's store: what a user of each sees. This one
//!   also compares a WASM build with a native one, so read it with that in mind.
//!
//! Before any timing, every answer is checked: the store's time series against the raw SQL on
//! each side, and both sides against each other.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use serde_json::json;
use temporal_state_server::adapters::postgres::{PgStore, PgStoreConfig, TimescaleSettings};
use temporal_state_server::domain::analytics::FieldStats;
use temporal_state_server::ports::{AnalyticsReader, EventStore};
use temporal_state_test_support::timescaledb::TimescaleDb;
use uuid::Uuid;

use crate::analytics::{
    Args, BASE, RAW_SCORE_STATS_SQL, RAW_SCORE_TOP_SQL, RAW_TIME_SERIES_SQL, load,
};
use crate::harness::{Measured, Table, environment, ratio, sample, with_dbs};

type Series = Vec<(DateTime<Utc>, i64)>;

/// One side of the comparison: a store on its database with the type loaded.
struct Side {
    name: &'static str,
    store: PgStore,
    type_id: Uuid,
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.instances > 0 && args.versions >= 2 && args.samples > 0,
        "sizes must be positive"
    );
    with_dbs(admin_url, 1, |urls| async move {
        println!("{}", environment(admin_url).await?);
        let tsdb = TimescaleDb::start().await;
        println!(
            "TimescaleDB (PGlite WASM, PostgreSQL 17 + TimescaleDB 2.23) answered in {:.1} s",
            tsdb.started_in.as_secs_f64()
        );
        let plain = prepare("PostgreSQL", &urls[0], &args).await?;
        let timescale = prepare("TimescaleDB", &tsdb.url, &args).await?;
        ensure!(
            timescale.store.has_timescaledb() && !plain.store.has_timescaledb(),
            "expected the extension on one side only"
        );
        maintain(&timescale).await?;
        compare(&plain, &timescale, &args).await
    })
    .await
}

/// Opens a store on `url` (pool of one), migrates, creates the type and loads the dataset.
async fn prepare(name: &'static str, url: &str, args: &Args) -> Result<Side> {
    let store = PgStore::new(&PgStoreConfig {
        url: url.to_string(),
        pool_size: 1,
        snapshot_interval: 100,
        connect_timeout: Duration::from_secs(600),
    })?
    // The server's defaults: compression after 30 days, no retention.
    .with_timescale(TimescaleSettings {
        compress_after: Some(Duration::from_secs(30 * 86_400)),
    });
    store.migrate().await.context("migrating")?;
    let type_id = Uuid::new_v4();
    let schema = json!({"type": "object"})
        .as_object()
        .cloned()
        .context("schema object")?;
    store
        .create_entity_type(type_id, "player", "", &schema, None)
        .await?;
    let loading = Instant::now();
    {
        let client = store.pool().get().await?;
        load(&client, type_id, args)
            .await
            .with_context(|| format!("loading {name}"))?;
    }
    println!(
        "{name}: {} events loaded in {:.1} s",
        args.instances * args.versions,
        loading.elapsed().as_secs_f64()
    );
    Ok(Side {
        name,
        store,
        type_id,
    })
}

/// What TimescaleDB's policies would do: refresh the hourly aggregate and compress every chunk.
async fn maintain(side: &Side) -> Result<()> {
    let client = side.store.pool().get().await?;
    let began = Instant::now();
    client
        .batch_execute("CALL refresh_continuous_aggregate('events_hourly', NULL, NULL)")
        .await
        .context("refreshing events_hourly")?;
    let refreshed = began.elapsed();
    let began = Instant::now();
    let chunks = client
        .query(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('events') c",
            &[],
        )
        .await
        .context("compressing the chunks")?
        .len();
    let (compressed, rows): (i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE is_compressed), \
                 (SELECT count(*) FROM events_hourly) \
                 FROM timescaledb_information.chunks WHERE hypertable_name = 'events'",
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    ensure!(
        compressed as usize == chunks && chunks > 0,
        "{compressed} of {chunks} chunks compressed"
    );
    println!(
        "TimescaleDB: aggregate refreshed in {:.1} s ({rows} hourly rows), {chunks} chunks \
         compressed in {:.1} s",
        refreshed.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn compare(plain: &Side, timescale: &Side, args: &Args) -> Result<()> {
    let base: DateTime<Utc> = BASE.parse()?;
    let end = base + chrono::Duration::days(31);
    let day = 86_400_000_000i64;

    // The answers first: each side's store against its raw SQL, and the sides against each other.
    let mut series = Vec::new();
    let mut stats = Vec::new();
    for side in [plain, timescale] {
        let served = store_series(side, day, base, end).await?;
        let raw = raw_series(side, day, base, end).await?;
        ensure!(
            served == raw,
            "{}: the store's time series differs from the raw SQL's",
            side.name
        );
        ensure!(!served.is_empty(), "{}: no buckets", side.name);
        let counted: i64 = served.iter().map(|(_, n)| n).sum();
        ensure!(
            counted == args.instances * args.versions,
            "{}: the buckets hold {counted} events",
            side.name
        );
        series.push(served);
        stats.push(store_stats(side).await?);
    }
    ensure!(
        series[0] == series[1],
        "the time series differ between PostgreSQL and TimescaleDB"
    );
    ensure!(
        format!("{:?}", stats[0]) == format!("{:?}", stats[1]),
        "field statistics differ: {:?} vs {:?}",
        stats[0],
        stats[1]
    );
    println!(
        "answers checked over {} events: equal on both sides, and equal to each side's raw SQL",
        args.instances * args.versions
    );

    let mut table = Table::new(&[
        "query",
        "PG store p50 µs",
        "PG raw SQL p50 µs",
        "TSDB store p50 µs",
        "TSDB raw SQL p50 µs",
        "TSDB store / TSDB raw",
        "TSDB store / PG store",
    ]);
    let mut timed = Vec::new();
    for side in [plain, timescale] {
        let s = time(args.samples, || store_series(side, day, base, end)).await?;
        let q = time(args.samples, || raw_series(side, day, base, end)).await?;
        timed.push((s, q));
    }
    row(&mut table, "time series, 31 daily buckets", &timed);
    let mut timed = Vec::new();
    for side in [plain, timescale] {
        let s = time(args.samples, || store_stats(side)).await?;
        let q = time(args.samples, || raw_stats(side)).await?;
        timed.push((s, q));
    }
    row(&mut table, "field aggregation, current states", &timed);
    table.print();
    Ok(())
}

async fn store_series(
    side: &Side,
    interval: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Series> {
    Ok(side
        .store
        .time_series(side.type_id, interval, start, end, None)
        .await?)
}

async fn raw_series(
    side: &Side,
    interval: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Series> {
    let client = side.store.pool().get().await?;
    let rows = client
        .query(
            RAW_TIME_SERIES_SQL,
            &[&side.type_id, &interval, &start, &end],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn store_stats(side: &Side) -> Result<FieldStats> {
    Ok(side.store.field_stats(side.type_id, "/score", 10).await?)
}

/// The statistics written by hand over the current states: the same two statements.
async fn raw_stats(side: &Side) -> Result<usize> {
    let client = side.store.pool().get().await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&side.type_id];
    let stats = client.query(RAW_SCORE_STATS_SQL, &params);
    let top = client.query(RAW_SCORE_TOP_SQL, &params);
    let (rows, _) = futures::try_join!(stats, top)?;
    Ok(rows.len())
}

/// One warm-up, then `samples` sequential calls; a failing call fails the benchmark.
async fn time<T, F, Fut>(samples: usize, call: F) -> Result<Measured>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    Ok(sample(1, samples, call).await?.0)
}

fn row(table: &mut Table, name: &str, timed: &[(Measured, Measured)]) {
    let [(pg, pg_raw), (ts, ts_raw)] = timed else {
        return;
    };
    table.row(vec![
        name.to_string(),
        pg.p50().to_string(),
        pg_raw.p50().to_string(),
        ts.p50().to_string(),
        ts_raw.p50().to_string(),
        ratio(ts.p50() as f64, ts_raw.p50() as f64),
        ratio(ts.p50() as f64, pg.p50() as f64),
    ]);
}
