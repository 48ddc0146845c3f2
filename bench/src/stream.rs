//! `cache-and-stream`: GetCurrentState served from the Redis cache next to a direct fred HGET of
//! the same key (Redis's keyspace hits prove the reads were hits); ApplyEvent throughput with
//! NATS publication (outbox + relay) on and off, the same configuration but for NATS, in
//! alternated rounds timed until the outbox is empty; and commit-to-subscriber latency, through
//! NATS and through the in-process bus. Redis and NATS are processes of the run's own unless
//! URLs are given; then the run creates its own stream and deletes only that.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use fred::cmd;
use fred::prelude::*;
use futures::StreamExt;
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::auth_service_client::AuthServiceClient;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_server::adapters::redis::{STATE_FIELD, external_key};
use uuid::Uuid;

use crate::harness::{
    Measured, RunningServer, Table, clients, environment, fmt_rate, histogram, ratio, to_struct,
    with_dbs,
};
use crate::procs::Private;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Redis to cache in. Unset: a redis-server of this run's own, so the keyspace hits counted
    /// to prove the cache reads were hits are this run's alone.
    #[arg(long, env = "BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// NATS to publish to, on a stream of this run's own (deleted at the end). Unset: a
    /// nats-server of this run's own.
    #[arg(long, env = "BENCH_NATS_URL")]
    pub nats_url: Option<String>,
    /// GetCurrentState calls per concurrency level.
    #[arg(long, default_value_t = 10_000)]
    pub reads: usize,
    /// ApplyEvent calls per client and round in the publication comparison.
    #[arg(long, default_value_t = 50)]
    pub writes_per_client: usize,
    /// Measured rounds of each side of the publication comparison, alternated (after one
    /// unmeasured warm-up round of each).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Events timed from commit to subscriber.
    #[arg(long, default_value_t = 500)]
    pub live_events: usize,
}

/// Longest wait for the outbox to drain after a round: far above what publishing a round takes,
/// it only turns a relay that never publishes (a stream it cannot create) into a failure.
const DRAIN_BOUND: Duration = Duration::from_secs(300);

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.clients > 0,
        "--rounds and --clients must be positive"
    );
    println!("{}", environment(admin_url).await?);
    let private_redis = match &args.redis_url {
        Some(_) => None,
        None => Some(Private::redis()?),
    };
    let private_nats = match &args.nats_url {
        Some(_) => None,
        None => Some(Private::nats()?),
    };
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| private_redis.as_ref().map(|p| p.url.clone()))
        .unwrap_or_default();
    let nats_url = args
        .nats_url
        .clone()
        .or_else(|| private_nats.as_ref().map(|p| p.url.clone()))
        .unwrap_or_default();
    // A stream of this run's own, the only thing it deletes afterwards.
    let stream = format!("TSE_BENCH_{}", Uuid::new_v4().simple());
    let args = &args;
    let urls = Urls {
        redis: &redis_url,
        nats: &nats_url,
        stream: &stream,
    };
    let result = with_dbs(admin_url, 2, |dbs| async move {
        run_in(args, &urls, &dbs[0], &dbs[1]).await
    })
    .await;
    if let Ok(client) = async_nats::connect(&nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
    result
}

struct Urls<'a> {
    redis: &'a str,
    nats: &'a str,
    stream: &'a str,
}

async fn setup(
    server: &RunningServer,
    name: &str,
    instances: usize,
) -> Result<(String, Vec<String>)> {
    let channel = server.channel().await?;
    let t = EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            declarations: None,
            name: name.into(),
            description: String::new(),
            schema: Some(to_struct(
                json!({"type": "object", "properties": {"score": {"type": "integer"}}}),
            )),
        })
        .await?
        .into_inner()
        .entity_type
        .unwrap();
    let mut ids = Vec::new();
    let mut inst = InstanceServiceClient::new(channel);
    for i in 0..instances {
        ids.push(
            inst.create_instance(pb::CreateInstanceRequest {
                entity_type: name.into(),
                external_id: format!("p-{i:04}"),
                initial_state: Some(to_struct(json!({"score": 0}))),
                metadata: None,
            })
            .await?
            .into_inner()
            .instance
            .unwrap()
            .id,
        );
    }
    Ok((t.id, ids))
}

/// Redis's count of lookups that found their key (INFO stats).
async fn keyspace_hits(redis: &Client) -> Result<u64> {
    let info: String = redis.custom(cmd!("INFO"), vec!["stats"]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("keyspace_hits:"))
        .context("INFO stats has no keyspace_hits")?
        .trim()
        .parse()
        .context("keyspace_hits")
}

async fn run_in(args: &Args, urls: &Urls<'_>, plain: &str, published: &str) -> Result<()> {
    // 1. GetCurrentState from the cache vs a direct HGET of the same key.
    let cached = RunningServer::postgres(plain, &["--redis-url", urls.redis]).await?;
    let (type_id, ids) = setup(&cached, "player", args.clients).await?;
    let redis = Builder::from_config(Config::from_url(urls.redis)?).build()?;
    redis.init().await.context("connecting to redis")?;
    // The very key and field the server's cache reads (hash-tagged, so Redis Cluster works too).
    let key = external_key(type_id.parse()?, "p-0000");
    // One read fills the cache; the measured ones must all be hits.
    InstanceServiceClient::new(cached.channel().await?)
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player".into(),
            external_id: "p-0000".into(),
        })
        .await?;
    let mut table = Table::new(&["read path", "clients", "calls/s", "p50 µs", "p99 µs"]);
    let mut p99s = Vec::new();
    for clients in [1, args.clients] {
        let channel = cached.channel().await?;
        let hits_before = keyspace_hits(&redis).await?;
        let server = measure(args.reads, clients, move |_| read_cached(channel.clone())).await?;
        // Each hit is one HGET that found its key; a miss would read PostgreSQL instead.
        let hits = keyspace_hits(&redis).await? - hits_before;
        ensure!(
            hits >= server.ops,
            "{} GetCurrentState calls but only {hits} Redis keyspace hits: not every read was a \
             cache hit",
            server.ops
        );
        // The same reads with one HTTP/2 connection per client (as separate client processes
        // would have) instead of all clients sharing one.
        let own = cached.channels(clients).await?;
        let per = args.reads / clients;
        let server_own = measure(args.reads, clients, move |k| {
            read_cached(own[k / per].clone())
        })
        .await?;
        // The floor of any unary call on this machine: GetCaller does no I/O, so this is gRPC,
        // HTTP/2 and the tasks' wake-ups alone, on the shared connection.
        let floor_channel = cached.channel().await?;
        let floor = measure(args.reads, clients, move |_| {
            let mut c = AuthServiceClient::new(floor_channel.clone());
            async move {
                c.get_caller(pb::GetCallerRequest {}).await?;
                Ok(())
            }
        })
        .await?;
        let (redis, key) = (redis.clone(), key.clone());
        let direct = measure(args.reads, clients, move |_| {
            let redis = redis.clone();
            let key = key.clone();
            async move {
                let data: Option<String> = redis.hget(key, STATE_FIELD).await?;
                ensure!(data.is_some(), "the cached state is missing");
                Ok(())
            }
        })
        .await?;
        println!(
            "{clients} client(s): {} GetCurrentState calls, {hits} Redis keyspace hits meanwhile",
            server.ops
        );
        for (name, m) in [
            ("GetCurrentState (cache hit)", &server),
            ("  the same, a connection per client", &server_own),
            ("GetCaller (no I/O: the gRPC floor)", &floor),
            ("fred HGET of the same key", &direct),
        ] {
            table.row(vec![
                name.into(),
                clients.to_string(),
                fmt_rate(m.per_sec()),
                m.p50().to_string(),
                m.p99().to_string(),
            ]);
        }
        p99s.push((clients, server, server_own, floor, direct));
    }
    table.print();
    for (clients, s, own, floor, d) in p99s {
        println!(
            "ratio cache GetCurrentState/fred p99 ({clients} clients) = {}  throughput = {}; \
             a connection per client: p99 {}, throughput {}; the gRPC floor (GetCaller): p99 {}, \
             throughput {}",
            ratio(s.p99() as f64, d.p99() as f64),
            ratio(s.per_sec(), d.per_sec()),
            ratio(own.p99() as f64, d.p99() as f64),
            ratio(own.per_sec(), d.per_sec()),
            ratio(floor.p99() as f64, d.p99() as f64),
            ratio(floor.per_sec(), d.per_sec()),
        );
    }
    let _ = redis.quit().await;

    // 2. ApplyEvent with publication off and on: the same configuration (Redis included) but
    // for NATS, each on a database of its own with the same instances. Rounds alternate after a
    // warm-up of each; a round's clock stops once the outbox is empty, so "on" pays for
    // publishing everything it wrote.
    let on_server = RunningServer::postgres(
        published,
        &[
            "--redis-url",
            urls.redis,
            "--nats-url",
            urls.nats,
            "--nats-stream",
            urls.stream,
        ],
    )
    .await?;
    let (_, on_ids) = setup(&on_server, "player", args.clients).await?;
    let (off_db, on_db) = (pg(plain).await?, pg(published).await?);
    let mut off = Measured::empty();
    let mut on = Measured::empty();
    for round in 0..=args.rounds {
        let o = measure_writes(&cached, &ids, args.writes_per_client, &off_db).await?;
        let n = measure_writes(&on_server, &on_ids, args.writes_per_client, &on_db).await?;
        if round > 0 {
            off.absorb(o)?;
            on.absorb(n)?;
        }
    }
    cached.stop().await?;
    let published_events: i64 = on_db
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'ScoreIncreased'",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        published_events as usize == (args.rounds + 1) * args.writes_per_client * args.clients,
        "the publishing server stored {published_events} events"
    );
    let mut table = Table::new(&["ApplyEvent", "clients", "events/s", "p50 µs", "p99 µs"]);
    for (name, m) in [
        ("publication off (Redis)", &off),
        ("publication on (Redis + outbox + relay)", &on),
    ] {
        table.row(vec![
            name.into(),
            args.clients.to_string(),
            fmt_rate(m.per_sec()),
            m.p50().to_string(),
            m.p99().to_string(),
        ]);
    }
    table.print();
    println!(
        "ratio throughput publication on/off = {} ({} alternated rounds each, until the outbox \
         was empty)",
        ratio(on.per_sec(), off.per_sec()),
        args.rounds
    );

    // 3. Commit-to-subscriber latency: recorded_at (commit, server clock) to arrival.
    let mut table = Table::new(&["commit -> subscriber", "events", "p50 µs", "p99 µs"]);
    let nats = live_latency(&on_server, &on_ids[0], args.live_events).await?;
    on_server.stop().await?;
    let local_server = RunningServer::postgres(plain, &["--redis-url", urls.redis]).await?;
    let local = live_latency(&local_server, &ids[0], args.live_events).await?;
    local_server.stop().await?;
    for (name, m) in [
        ("through NATS JetStream", &nats),
        ("in-process bus", &local),
    ] {
        table.row(vec![
            name.into(),
            m.ops.to_string(),
            m.p50().to_string(),
            m.p99().to_string(),
        ]);
    }
    table.print();
    Ok(())
}

async fn pg(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// One GetCurrentState of the instance every cached read asks for (`p-0000`).
async fn read_cached(channel: tonic::transport::Channel) -> Result<()> {
    InstanceServiceClient::new(channel)
        .get_current_state(pb::GetCurrentStateRequest {
            entity_type: "player".into(),
            external_id: "p-0000".into(),
        })
        .await?;
    Ok(())
}

/// `total` calls spread evenly over `n` concurrent clients; `call(k)` prepares the k-th call
/// of all (client c's i-th is c * per + i).
async fn measure<F, Fut>(total: usize, n: usize, call: F) -> Result<Measured>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let per = total / n;
    clients(&vec![per; n], |c| {
        let call = call.clone();
        move |i| call(c * per + i)
    })
    .await
}

/// One round: `each` ApplyEvent calls per instance, one client per instance; the clock stops
/// once the server's outbox is empty (at once without NATS, which writes none).
async fn measure_writes(
    server: &RunningServer,
    ids: &[String],
    each: usize,
    db: &tokio_postgres::Client,
) -> Result<Measured> {
    let channel = server.channel().await?;
    let total = each * ids.len();
    let ids = ids.to_vec();
    let mut m = measure(total, ids.len(), move |i| {
        let mut c = EventServiceClient::new(channel.clone());
        let request = pb::ApplyEventRequest {
            instance_id: ids[i / each].clone(),
            event_type: "ScoreIncreased".into(),
            payload: Some(to_struct(json!({"score": i}))),
            ..Default::default()
        };
        async move {
            c.apply_event(request).await?;
            Ok(())
        }
    })
    .await?;
    let draining = Instant::now();
    loop {
        let left: i64 = db
            .query_one("SELECT count(*) FROM outbox", &[])
            .await?
            .get(0);
        if left == 0 {
            break;
        }
        ensure!(
            draining.elapsed() < DRAIN_BOUND,
            "the outbox still holds {left} events after {DRAIN_BOUND:?}: publication is stuck"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m.elapsed += draining.elapsed();
    Ok(m)
}

async fn live_latency(server: &RunningServer, id: &str, events: usize) -> Result<Measured> {
    let channel = server.channel().await?;
    let mut stream = EventServiceClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            instance_id: id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut writer = EventServiceClient::new(channel);
    let id = id.to_string();
    let write = tokio::spawn(async move {
        for n in 0..events {
            writer
                .apply_event(pb::ApplyEventRequest {
                    instance_id: id.clone(),
                    event_type: "Live".into(),
                    payload: Some(to_struct(json!({"score": n}))),
                    ..Default::default()
                })
                .await
                .expect("write");
            // Paced: latency, not throughput, is measured here.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    let mut h = histogram();
    let start = Instant::now();
    let mut received = 0;
    while received < events {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .context("subscriber waited 30 s")?
            .context("stream ended")??;
        let e = msg.event.unwrap();
        if e.event_type != "Live" {
            continue;
        }
        let t = e.recorded_at.unwrap();
        let recorded = DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32).unwrap();
        let lag = (Utc::now() - recorded)
            .num_microseconds()
            .unwrap_or(0)
            .max(1) as u64;
        h.record(lag).ok();
        received += 1;
    }
    write.await?;
    Ok(Measured {
        ops: received as u64,
        elapsed: start.elapsed(),
        latency: h,
        cpu: std::time::Duration::ZERO,
    })
}
