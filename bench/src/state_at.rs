//! `state-at-version`: GetStateAtVersion on a short and a long history, against the store's own
//! snapshot-plus-tail statement (`sql::snapshot_and_tail_sql`) issued directly (rows fetched, not
//! folded); then GetHistory read page by page against the store's own history statement for an
//! unfiltered read (`sql::history_query`) issued directly, each row decoded by the server's own
//! reader (`sql::event_at`): the same rows and decoding, minus gRPC, protobuf and the
//! application.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deadpool_postgres::Pool;
use prost_types::value::Kind;
use serde_json::{Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::adapters::postgres::sql;
use temporal_state_server::ports::HistoryFilter;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::apply::{EVENT_TYPE, TYPE_NAME, schema};
use crate::harness::{
    Measured, RunningServer, Table, backends, baseline_store, environment, fmt_rate, histogram,
    micros, ratio, sample, to_struct, with_dbs,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events of the short history (version 1 is InstanceCreated).
    #[arg(long, default_value_t = 1000)]
    pub small: i64,
    /// Events of the long history.
    #[arg(long, default_value_t = 100_000)]
    pub large: i64,
    /// Events per ApplyEvents call while loading.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Measured calls per (instance, version) and path.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Unmeasured calls before each measurement.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// GetHistory page size (the server's maximum is 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: i32,
    /// Full reads of the long history per path.
    #[arg(long, default_value_t = 3)]
    pub history_passes: usize,
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.small >= 4 && args.large >= args.small,
        "need 4 <= --small <= --large"
    );
    ensure!(
        args.samples > 0 && args.batch > 0,
        "--samples and --batch must be positive"
    );
    with_dbs(admin_url, 1, |urls| async move {
        // Default server configuration: snapshot interval, pool size and all.
        let server = RunningServer::postgres(&urls[0], &[]).await?;
        let result = measure(admin_url, &args, &server, &urls[0]).await;
        server.stop_after(result).await
    })
    .await
}

/// The payload that produces version `v`: `score` is always `v`, so a state tells its version.
pub fn payload(v: i64) -> Value {
    let mut p = json!({"score": v, "level": v % 50 + 1});
    if v % 10 == 0 {
        p["stats"] = json!({"wins": v / 10});
    }
    p
}

/// An instance loaded through ApplyEvents, and how long loading took.
pub struct Loaded {
    pub id: String,
    pub events: i64,
    pub elapsed: Duration,
}

/// Creates instance `name` and applies versions 2..=events to it, `batch` per ApplyEvents call;
/// checks that it ends at version `events` with that version's state.
pub async fn load(
    channel: &Channel,
    type_id: &str,
    name: &str,
    events: i64,
    batch: usize,
) -> Result<Loaded> {
    let mut instances = InstanceServiceClient::new(channel.clone());
    let mut writer = EventServiceClient::new(channel.clone());
    let start = Instant::now();
    let id = instances
        .create_instance(pb::CreateInstanceRequest {
            entity_type: type_id.into(),
            external_id: name.into(),
            initial_state: Some(to_struct(json!({"name": name, "score": 1, "level": 1}))),
            metadata: None,
        })
        .await?
        .into_inner()
        .instance
        .context("no instance")?
        .id;
    let mut next = 2;
    while next <= events {
        let last = (next + batch as i64 - 1).min(events);
        let inputs = (next..=last)
            .map(|v| pb::EventInput {
                event_type: EVENT_TYPE.into(),
                payload: Some(to_struct(payload(v))),
                ..Default::default()
            })
            .collect();
        writer
            .apply_events(pb::ApplyEventsRequest {
                dry_run: false,
                instance_id: id.clone(),
                expected_version: Some(next - 1),
                events: inputs,
                ..Default::default()
            })
            .await
            .with_context(|| format!("ApplyEvents {next}..={last} on {name}"))?;
        next = last + 1;
    }
    let elapsed = start.elapsed();
    // The instance really has `events` events and the state of the last one.
    let instance = instances
        .get_instance(pb::GetInstanceRequest {
            instance_id: id.clone(),
        })
        .await?
        .into_inner()
        .instance
        .context("no instance")?;
    ensure!(
        instance.version == events,
        "{name}: GetInstance says version {}, expected {events}",
        instance.version
    );
    ensure!(
        score_of(instance.state.as_ref()) == Some(events),
        "{name}: current state's score is not {events}"
    );
    Ok(Loaded {
        id,
        events,
        elapsed,
    })
}

pub fn score_of(state: Option<&prost_types::Struct>) -> Option<i64> {
    match state?.fields.get("score")?.kind {
        Some(Kind::NumberValue(n)) => Some(n as i64),
        _ => None,
    }
}

struct VersionRow {
    events: i64,
    label: &'static str,
    version: i64,
    tail_rows: usize,
    server: Measured,
    sql: Measured,
    /// The server's store call alone (`HistoryReader::snapshot_and_tail`, rows decoded), called
    /// in process: what the server adds to the SQL before gRPC.
    store: Measured,
}

async fn measure(admin_url: &str, args: &Args, server: &RunningServer, url: &str) -> Result<()> {
    let env = environment(admin_url).await?;
    let interval = server.config.snapshot_interval;
    let channel = server.channel().await?;
    let mut types = EntityTypeServiceClient::new(channel.clone());
    let type_id = types
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: TYPE_NAME.into(),
            description: "benchmark player profile".into(),
            schema: Some(to_struct(schema())),
        })
        .await?
        .into_inner()
        .entity_type
        .context("no entity type")?
        .id;
    let small = load(&channel, &type_id, "small", args.small, args.batch).await?;
    let large = load(&channel, &type_id, "large", args.large, args.batch).await?;

    let raw_store = baseline_store(url, 1, &server.config).await?;
    let raw = raw_store.pool().clone();
    {
        // Fresh statistics, as autovacuum would eventually provide, so both paths see the same plans.
        let client = raw.get().await?;
        client
            .batch_execute("ANALYZE events; ANALYZE snapshots")
            .await?;
    }

    let mut reader = QueryServiceClient::new(channel.clone());
    let mut rows = Vec::new();
    for loaded in [&small, &large] {
        let n = loaded.events;
        for (label, version) in [("latest", n), ("middle", n / 2), ("middle-1", n / 2 - 1)] {
            let server_m =
                server_state_at(&mut reader, &loaded.id, version, args.warmup, args.samples)
                    .await?;
            let (sql_m, tail_rows) = sql_state_at(&raw, &loaded.id, version, args).await?;
            let store_m = store_state_at(&raw_store, &loaded.id, version, args).await?;
            rows.push(VersionRow {
                events: n,
                label,
                version,
                tail_rows,
                server: server_m,
                sql: sql_m,
                store: store_m,
            });
        }
    }

    let history = history(&channel, &raw, &large, args).await?;

    println!("== state-at-version: GetStateAtVersion (snapshot + tail, folded by the server) ==");
    println!("{env}");
    println!(
        "server on {}, snapshot interval {interval} (server default), pool {}; {} sequential calls per row after {} warm-up; sql = the store's own snapshot+tail statement (adapters::postgres::sql) issued directly, rows fetched, not folded",
        backends(&server.config),
        server.config.pool_size,
        args.samples,
        args.warmup
    );
    println!(
        "loaded through ApplyEvents x{}: {} events in {:.1} s ({} events/s), {} events in {:.1} s ({} events/s); GetInstance versions {} and {} as expected",
        args.batch,
        small.events,
        small.elapsed.as_secs_f64(),
        fmt_rate(small.events as f64 / small.elapsed.as_secs_f64()),
        large.events,
        large.elapsed.as_secs_f64(),
        fmt_rate(large.events as f64 / large.elapsed.as_secs_f64()),
        small.events,
        large.events,
    );
    let mut table = Table::new(&[
        "events",
        "version",
        "at",
        "rows",
        "server p50 µs",
        "server p99 µs",
        "sql p50 µs",
        "sql p99 µs",
        "store call p50 µs",
        "server/sql p50",
    ]);
    for r in &rows {
        table.row(vec![
            r.events.to_string(),
            r.version.to_string(),
            r.label.to_string(),
            r.tail_rows.to_string(),
            r.server.p50().to_string(),
            r.server.p99().to_string(),
            r.sql.p50().to_string(),
            r.sql.p99().to_string(),
            r.store.p50().to_string(),
            ratio(r.server.p50() as f64, r.sql.p50() as f64),
        ]);
    }
    table.print();
    println!(
        "(rows = rows the snapshot+tail query returns; middle-1 sits just before a snapshot: the longest tail; store call = the server's store method on the same statement, rows decoded, called in process without gRPC)"
    );
    for label in ["latest", "middle", "middle-1"] {
        let find = |n: i64| rows.iter().find(|r| r.events == n && r.label == label);
        if let (Some(s), Some(l)) = (find(small.events), find(large.events)) {
            println!(
                "ratio server {}/{} p50 ({label}) = {}   (p99 {})",
                short(large.events),
                short(small.events),
                ratio(l.server.p50() as f64, s.server.p50() as f64),
                ratio(l.server.p99() as f64, s.server.p99() as f64),
            );
        }
    }
    let (lo, hi) = rows.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
        let x = r.server.p50() as f64 / r.sql.p50() as f64;
        (lo.min(x), hi.max(x))
    });
    println!("ratio server/raw-SQL p50 = {lo:.2} .. {hi:.2} over the rows above");

    println!();
    println!(
        "== history: GetHistory over the {}-event instance, page_size {}, {} full passes per path after 1 warm-up pass ==",
        large.events, args.page_size, args.history_passes
    );
    let mut table = Table::new(&[
        "path",
        "events",
        "events/s",
        "page p50 µs",
        "page p99 µs",
        "first 10 pages µs",
        "last 10 pages µs",
    ]);
    for h in &history {
        table.row(vec![
            h.path.to_string(),
            h.m.ops.to_string(),
            fmt_rate(h.m.per_sec()),
            h.pages.value_at_quantile(0.5).to_string(),
            h.pages.value_at_quantile(0.99).to_string(),
            format!("{:.0}", h.first10),
            format!("{:.0}", h.last10),
        ]);
    }
    table.print();
    println!("(first/last 10 pages µs = mean latency of the history's first and last ten pages)");
    if let (Some(s), Some(k)) = (history.first(), history.get(1)) {
        println!(
            "ratio server/raw-SQL history throughput = {}",
            ratio(s.m.per_sec(), k.m.per_sec())
        );
    }
    Ok(())
}

fn short(n: i64) -> String {
    if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// GetStateAtVersion of `version`, `warmup` unmeasured calls then `samples` measured ones, one
/// after the other; checks the first answer (every history here has `score` = version).
pub async fn server_state_at(
    reader: &mut QueryServiceClient<Channel>,
    id: &str,
    version: i64,
    warmup: usize,
    samples: usize,
) -> Result<Measured> {
    let (m, got) = sample(warmup, samples, || {
        let mut reader = reader.clone();
        let request = pb::GetStateAtVersionRequest {
            instance_id: id.into(),
            version,
        };
        async move { Ok(reader.get_state_at_version(request).await?.into_inner()) }
    })
    .await?;
    ensure!(
        got.version == version,
        "asked version {version}, got {}",
        got.version
    );
    ensure!(
        score_of(got.state.as_ref()) == Some(version),
        "state at version {version} does not have score {version}"
    );
    Ok(m)
}

async fn sql_state_at(
    pool: &Pool,
    id: &str,
    version: i64,
    args: &Args,
) -> Result<(Measured, usize)> {
    let id: Uuid = id.parse()?;
    let text = sql::snapshot_and_tail_sql();
    sample(args.warmup, args.samples, || async {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(&text).await?;
        Ok(client.query(&stmt, &[&id, &version]).await?.len())
    })
    .await
}

async fn store_state_at(
    store: &temporal_state_server::adapters::postgres::PgStore,
    id: &str,
    version: i64,
    args: &Args,
) -> Result<Measured> {
    use temporal_state_server::ports::HistoryReader;
    let id: Uuid = id.parse()?;
    Ok(sample(args.warmup, args.samples, || async {
        let (snapshot, tail) = store.snapshot_and_tail(id, version).await?;
        Ok(tail.len() + usize::from(snapshot.is_some()))
    })
    .await?
    .0)
}

struct HistoryRun {
    path: &'static str,
    m: Measured,
    pages: hdrhistogram::Histogram<u64>,
    first10: f64,
    last10: f64,
}

/// Mean page latency by page index, over all passes.
struct PageTimes(Vec<(u64, u64)>);

impl PageTimes {
    fn add(&mut self, page: usize, us: u64) {
        if self.0.len() <= page {
            self.0.resize(page + 1, (0, 0));
        }
        self.0[page].0 += us;
        self.0[page].1 += 1;
    }
    fn mean(&self, pages: impl Iterator<Item = usize>) -> f64 {
        let (sum, n) = pages
            .filter_map(|p| self.0.get(p))
            .fold((0, 0), |(s, n), (ps, pn)| (s + ps, n + pn));
        if n == 0 { 0.0 } else { sum as f64 / n as f64 }
    }
    fn first_last(&self) -> (f64, f64) {
        let len = self.0.len();
        (
            self.mean(0..10.min(len)),
            self.mean(len.saturating_sub(10)..len),
        )
    }
}

async fn history(
    channel: &Channel,
    pool: &Pool,
    large: &Loaded,
    args: &Args,
) -> Result<Vec<HistoryRun>> {
    // Through the server.
    let reader = QueryServiceClient::new(channel.clone());
    let server = read_history(
        "server GetHistory",
        large.events,
        args,
        |token: Option<String>| {
            let mut reader = reader.clone();
            let request = pb::GetHistoryRequest {
                instance_id: large.id.clone(),
                page_size: args.page_size,
                page_token: token.unwrap_or_default(),
                ..Default::default()
            };
            async move {
                let got = reader.get_history(request).await?.into_inner();
                let versions = got.events.iter().map(|e| e.version).collect();
                let next = Some(got.next_page_token).filter(|t| !t.is_empty());
                Ok((versions, next))
            }
        },
    )
    .await?;

    // The store's own statement for an unfiltered read (the history query has a condition only
    // for each filter that is set), issued directly. It asks for one row more than a page, as
    // the server does, to know whether another follows.
    let id: Uuid = large.id.parse()?;
    let page = args.page_size as usize;
    let limit = page as i64 + 1;
    let raw = read_history(
        "raw SQL keyset",
        large.events,
        args,
        |after: Option<i64>| {
            let filter = HistoryFilter {
                after_version: after,
                ..HistoryFilter::default()
            };
            async move {
                let (text, params) = sql::history_query(&id, &filter, &limit);
                let client = pool.get().await?;
                let stmt = client.prepare_cached(&text).await?;
                let found = client.query(&stmt, &params).await?;
                // Every column the server reads, decoded by the server's own row reader: the
                // baseline does the store's work, only gRPC and protobuf are left out.
                let mut versions = Vec::with_capacity(page);
                for r in found.iter().take(page) {
                    versions.push(sql::event_at(r, 0)?.version);
                }
                let next = (found.len() > page)
                    .then(|| versions.last().copied())
                    .flatten();
                Ok((versions, next))
            }
        },
    )
    .await?;
    Ok(vec![server, raw])
}

/// Reads a whole history page by page, one warm-up pass then `history_passes` timed ones;
/// `page(cursor)` fetches a page and answers its versions and the next cursor (none at the end).
/// Checks that every pass sees versions 1..=events in order.
async fn read_history<C, F, Fut>(
    path: &'static str,
    events: i64,
    args: &Args,
    mut page: F,
) -> Result<HistoryRun>
where
    F: FnMut(Option<C>) -> Fut,
    Fut: Future<Output = Result<(Vec<i64>, Option<C>)>>,
{
    let mut pages = histogram();
    let mut times = PageTimes(Vec::new());
    let mut elapsed = Duration::ZERO;
    let mut read = 0u64;
    // Pass 0 warms up and is not counted.
    for pass in 0..=args.history_passes {
        let start = Instant::now();
        let mut cursor = None;
        let mut expect = 1i64;
        let mut n = 0;
        loop {
            let t = Instant::now();
            let (versions, next) = page(cursor).await?;
            let us = micros(t.elapsed());
            if pass > 0 {
                pages.record(us)?;
                times.add(n, us);
                read += versions.len() as u64;
            }
            n += 1;
            for v in versions {
                ensure!(v == expect, "{path}: version {v}, expected {expect}");
                expect += 1;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ensure!(
            expect - 1 == events,
            "{path}: {} events, expected {events}",
            expect - 1
        );
        if pass > 0 {
            elapsed += start.elapsed();
        }
    }
    let (first10, last10) = times.first_last();
    Ok(HistoryRun {
        path,
        m: Measured {
            ops: read,
            elapsed,
            latency: pages.clone(),
            cpu: Duration::ZERO,
        },
        pages,
        first10,
        last10,
    })
}
