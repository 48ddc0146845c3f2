//! `read-events`: QueryService.ReadEvents over the global log of 1,000,000 events, read from
//! position 0 to the head in pages of 1,000, next to the raw keyset SQL a hand-written reader
//! would issue on the same table (`WHERE position > $1 ORDER BY position LIMIT 1000`, each row
//! decoded into the same record with the server's own row reader), in the same run. The passes
//! alternate (server, SQL, server, SQL, ...) so both see the same cache; each pass checks that
//! it read every event, in increasing position order. The dataset is bulk-loaded in SQL in
//! chunks, with progress, as the server would have written it (positions in recorded order).

use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;
use temporal_state_server::adapters::postgres::sql;
use uuid::Uuid;

use crate::harness::{RunningServer, Table, environment, fmt_rate, ratio, to_struct, with_dbs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events in the log (instances × versions, rounded down).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: i64,
    /// Instances the events are spread over.
    #[arg(long, default_value_t = 1000)]
    pub instances: i64,
    /// Events per page (ReadEvents page_size, and the SQL's LIMIT).
    #[arg(long, default_value_t = 1000)]
    pub page_size: i64,
    /// Full passes per path.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
}

/// Events loaded per statement: progress is printed after each.
const CHUNK: i64 = 50_000;

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.events > 0 && args.instances > 0 && args.passes > 0,
        "sizes must be positive"
    );
    ensure!(
        (1..=1000).contains(&args.page_size),
        "page size must be 1 to 1000"
    );
    with_dbs(admin_url, 1, |urls| async move {
        let server = RunningServer::postgres_only(&urls[0], &[]).await?;
        let result = measure(admin_url, &args, &server, &urls[0]).await;
        server.stop_after(result).await
    })
    .await
}

/// The raw keyset read: the columns the server reads, after a position, by the position index.
fn raw_keyset_sql() -> String {
    format!(
        "SELECT {} FROM events e WHERE e.position > $1 ORDER BY e.position LIMIT $2",
        sql::EVENT_COLUMNS
    )
}

async fn load(client: &tokio_postgres::Client, type_id: Uuid, args: &Args) -> Result<i64> {
    let versions = (args.events / args.instances).max(1);
    let total = versions * args.instances;
    client
        .execute(
            "INSERT INTO instances (id, entity_type_id, external_id, state, version, created_at, updated_at)
             SELECT md5('i' || g)::uuid, $1, 'player-' || lpad(g::text, 6, '0'),
                    jsonb_build_object('score', 0), $3, now(), now()
             FROM generate_series(1, $2::bigint) g",
            &[&type_id, &args.instances, &versions],
        )
        .await?;
    // Event number n (1..total) is version k = (n - 1) / instances + 1 of instance
    // g = (n - 1) % instances + 1: instances interleave, as concurrent writers would, and its
    // position is n, recorded 1 ms apart.
    let started = Instant::now();
    let mut from = 1;
    while from <= total {
        let to = (from + CHUNK - 1).min(total);
        client
            .execute(
                "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type,
                                     payload, metadata, mode, recorded_at, occurred_at, position)
                 SELECT md5('i' || ((n - 1) % $2 + 1))::uuid, (n - 1) / $2 + 1,
                        md5('e' || n)::uuid::text, $1,
                        CASE WHEN n <= $2 THEN 'InstanceCreated' ELSE 'ScoreIncreased' END,
                        jsonb_build_object('score', n % 997), '{}'::jsonb,
                        CASE WHEN n <= $2 THEN 'replace' ELSE 'merge_patch' END,
                        now() - interval '1 day' + n * interval '1 ms',
                        now() - interval '1 day' + n * interval '1 ms', n
                 FROM generate_series($3::bigint, $4::bigint) n",
                &[&type_id, &args.instances, &from, &to],
            )
            .await?;
        println!(
            "  loaded {to} / {total} events ({:.0} %, {:.1} s)",
            to as f64 * 100.0 / total as f64,
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    client
        .execute(
            "SELECT setval('events_position_seq', $1::bigint + 1, false)",
            &[&total],
        )
        .await?;
    client.batch_execute("ANALYZE events").await?;
    Ok(total)
}

/// One full read through the server: (events, seconds).
async fn server_pass(
    q: &mut QueryServiceClient<tonic::transport::Channel>,
    page_size: i64,
) -> Result<(i64, f64)> {
    let started = Instant::now();
    let (mut from, mut count, mut last) = (0, 0, 0);
    loop {
        let page = q
            .read_events(pb::ReadEventsRequest {
                from_position: from,
                page_size: page_size as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        for e in &page.events {
            ensure!(e.position > last, "position {} after {last}", e.position);
            last = e.position;
        }
        count += page.events.len() as i64;
        from = page.next_position;
        if from >= page.head_position {
            break;
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// One full read with the raw keyset SQL: (events, seconds).
async fn sql_pass(client: &tokio_postgres::Client, page_size: i64) -> Result<(i64, f64)> {
    let stmt = client.prepare(&raw_keyset_sql()).await?;
    let started = Instant::now();
    let (mut from, mut count) = (0_i64, 0);
    loop {
        let rows = client.query(&stmt, &[&from, &page_size]).await?;
        for row in &rows {
            let e = sql::event_at(row, 0)?;
            ensure!(e.position > from, "position {} after {from}", e.position);
            from = e.position;
        }
        count += rows.len() as i64;
        if (rows.len() as i64) < page_size {
            break;
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

async fn measure(admin_url: &str, args: &Args, server: &RunningServer, url: &str) -> Result<()> {
    let channel = server.channel().await?;
    let created = EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: "player".into(),
            description: String::new(),
            schema: Some(to_struct(json!({"type": "object"}))),
            ..Default::default()
        })
        .await?
        .into_inner()
        .entity_type
        .unwrap();
    let type_id: Uuid = created.id.parse()?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let loading = Instant::now();
    let total = load(&client, type_id, args).await?;
    println!(
        "read-events over {total} events ({} instances), loaded in {:.1} s",
        args.instances,
        loading.elapsed().as_secs_f64()
    );
    println!("{}", environment(admin_url).await?);

    let mut q = QueryServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    // Warm both paths once (caches, prepared statements), unmeasured.
    ensure!(
        server_pass(&mut q, args.page_size).await?.0 == total,
        "server read a different log"
    );
    ensure!(
        sql_pass(&client, args.page_size).await?.0 == total,
        "SQL read a different log"
    );
    let (mut server_rates, mut sql_rates) = (Vec::new(), Vec::new());
    for _ in 0..args.passes {
        let (n, s) = server_pass(&mut q, args.page_size).await?;
        ensure!(n == total, "the server read {n} of {total} events");
        server_rates.push(n as f64 / s);
        let (n, s) = sql_pass(&client, args.page_size).await?;
        ensure!(n == total, "the SQL read {n} of {total} events");
        sql_rates.push(n as f64 / s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (server_rate, sql_rate) = (median(&mut server_rates), median(&mut sql_rates));
    let mut table = Table::new(&["path", "events/s (median of passes)", "passes"]);
    table.row(vec![
        "ReadEvents (gRPC, pages of the server)".into(),
        fmt_rate(server_rate),
        format!(
            "{:?}",
            server_rates
                .iter()
                .map(|r| fmt_rate(*r))
                .collect::<Vec<_>>()
        ),
    ]);
    table.row(vec![
        "raw keyset SQL (same table, same decode)".into(),
        fmt_rate(sql_rate),
        format!(
            "{:?}",
            sql_rates.iter().map(|r| fmt_rate(*r)).collect::<Vec<_>>()
        ),
    ]);
    table.print();
    println!(
        "ReadEvents / raw keyset SQL, events/s: {} (goal >= 0.5x)",
        ratio(server_rate, sql_rate)
    );
    Ok(())
}
