//! `cache-and-stream`: GetCurrentState served from the Redis cache next to a direct fred HGET of
//! the same key; ApplyEvent throughput with NATS publication (outbox + relay) on and off; and
//! commit-to-subscriber latency, through NATS and through the in-process bus.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use fred::prelude::*;
use futures::StreamExt;
use serde_json::json;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use temporal_state_server::adapters::redis::{STATE_FIELD, external_key};

use crate::harness::{
    Measured, RunningServer, Services, Table, clients, environment, fmt_rate, histogram, ratio,
    to_struct, with_dbs,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub services: Services,
    /// GetCurrentState calls per concurrency level.
    #[arg(long, default_value_t = 10_000)]
    pub reads: usize,
    /// ApplyEvent calls per client in the publication comparison.
    #[arg(long, default_value_t = 150)]
    pub writes_per_client: usize,
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Events timed from commit to subscriber.
    #[arg(long, default_value_t = 500)]
    pub live_events: usize,
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    println!("{}", environment(admin_url).await?);
    let args = &args;
    let result = with_dbs(admin_url, 2, |urls| async move {
        run_in(args, &urls[0], &urls[1]).await
    })
    .await;
    // Leave the shared NATS as found: the stream was made by this run.
    if let Ok(client) = async_nats::connect(&args.services.nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream("TEMPORAL_STATE_EVENTS")
            .await;
    }
    result
}

async fn setup(
    server: &RunningServer,
    name: &str,
    instances: usize,
) -> Result<(String, Vec<String>)> {
    let channel = server.channel().await?;
    let t = EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
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

async fn run_in(args: &Args, plain: &str, published: &str) -> Result<()> {
    // 1. GetCurrentState from the cache vs a direct HGET of the same key.
    let cached = RunningServer::postgres(plain, &["--redis-url", &args.services.redis_url]).await?;
    let (type_id, ids) = setup(&cached, "player", args.clients).await?;
    let redis = Builder::from_config(Config::from_url(&args.services.redis_url)?).build()?;
    redis.init().await.context("connecting to redis")?;
    // The very key and field the server's cache reads (hash-tagged, so Redis Cluster works too).
    let key = external_key(type_id.parse()?, "p-0000");
    let mut table = Table::new(&["read path", "clients", "calls/s", "p50 µs", "p99 µs"]);
    let mut p99s = Vec::new();
    for clients in [1, args.clients] {
        let channel = cached.channel().await?;
        let server = measure(args.reads, clients, move |_| {
            let mut c = InstanceServiceClient::new(channel.clone());
            async move {
                c.get_current_state(pb::GetCurrentStateRequest {
                    entity_type: "player".into(),
                    external_id: "p-0000".into(),
                })
                .await?;
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
        for (name, m) in [
            ("GetCurrentState (cache hit)", &server),
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
        p99s.push((
            clients,
            server.p99(),
            direct.p99(),
            server.per_sec(),
            direct.per_sec(),
        ));
    }
    table.print();
    for (clients, s, d, sr, dr) in p99s {
        println!(
            "ratio cache GetCurrentState/fred p99 ({clients} clients) = {}  throughput = {}",
            ratio(s as f64, d as f64),
            ratio(sr, dr)
        );
    }
    let _ = redis.quit().await;

    // 2. ApplyEvent with publication off (no NATS) and on (outbox + relay to JetStream).
    let off = measure_writes(&cached, &ids, args.writes_per_client).await?;
    cached.stop().await?;
    let on_server =
        RunningServer::postgres(published, &["--nats-url", &args.services.nats_url]).await?;
    let (_, on_ids) = setup(&on_server, "player", args.clients).await?;
    let on = measure_writes(&on_server, &on_ids, args.writes_per_client).await?;
    let mut table = Table::new(&["ApplyEvent", "clients", "events/s", "p50 µs", "p99 µs"]);
    for (name, m) in [("publication off", &off), ("publication on (outbox)", &on)] {
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
        "ratio throughput publication on/off = {}",
        ratio(on.per_sec(), off.per_sec())
    );

    // 3. Commit-to-subscriber latency: recorded_at (commit, server clock) to arrival.
    let mut table = Table::new(&["commit -> subscriber", "events", "p50 µs", "p99 µs"]);
    let nats = live_latency(&on_server, &on_ids[0], args.live_events).await?;
    on_server.stop().await?;
    let local_server = RunningServer::postgres(plain, &[]).await?;
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

async fn measure_writes(server: &RunningServer, ids: &[String], each: usize) -> Result<Measured> {
    let channel = server.channel().await?;
    let total = each * ids.len();
    let ids = ids.to_vec();
    measure(total, ids.len(), move |i| {
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
    .await
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
