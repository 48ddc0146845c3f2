//! `declared`: ApplyEvent of a declared event type — a payload schema, a CEL transform and a CEL
//! guard (issue 22) — against a plain merge patch of the same fields, through the same real
//! server in the same run, on PostgreSQL and on the embedded store.
//!
//! Two entity types with the same state schema live on one server: `plain_profile` (no
//! declarations; the client sends `{"score": n, "level": m}` as a merge patch) and
//! `declared_profile`, whose `ScoreIncreased` takes `{"points": 1}`, checks it against its
//! payload schema, evaluates the guard `payload.points <= 1000` and the transform
//! `{"score": state.score + payload.points, "level": ...}`, and records the change beside the
//! payload. Each client writes to its own instance of each type; the measured events run in
//! rounds alternating which type goes first, so outside noise hits both alike. Each type's
//! final states are checked against what the events should have made. The ratio printed is
//! declared / plain throughput (goal >= 0.9).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use tonic::transport::Channel;

use crate::apply::{create_instances_via_server, schema};
use crate::harness::{
    Measured, RunningServer, Table, clients, fmt_rate, ratio, split, to_struct, with_dbs, with_dir,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured events per type and configuration, split evenly over its clients.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Numbers of concurrent clients, each writing to its own instance of each type.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients_list: Vec<usize>,
    /// Unmeasured events per type and configuration, run first on the same instances.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Rounds the measured events are split into, alternating which type runs first.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Skip PostgreSQL (embedded store only).
    #[arg(long)]
    pub embedded_only: bool,
    /// Where the embedded store's fresh DATA_DIR is created (and removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

const PLAIN: &str = "plain_profile";
const DECLARED: &str = "declared_profile";

fn declarations() -> pb::EventDeclarations {
    pb::EventDeclarations {
        strict: true,
        event_types: vec![pb::EventTypeDeclaration {
            event_type: "ScoreIncreased".into(),
            payload_schema: Some(to_struct(json!({
                "type": "object",
                "properties": {"points": {"type": "integer", "minimum": 0}},
                "required": ["points"]
            }))),
            mode: 0,
            transform: r#"{"score": state.score + payload.points, "level": (state.score + payload.points) % 100 + 1}"#.into(),
            guards: vec![pb::EventGuard {
                expression: "payload.points <= 1000".into(),
                message: "at most 1000 points per event".into(),
            }],
        }],
    }
}

pub async fn run(admin_url: &str, args: Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.events >= args.rounds,
        "need 0 < --rounds <= --events"
    );
    ensure!(
        !args.clients_list.is_empty() && args.clients_list.iter().all(|&c| c > 0),
        "--clients-list needs positive numbers"
    );
    let args = &args;
    let mut table = Table::new(&[
        "store",
        "clients",
        "path",
        "events/s",
        "p50 us",
        "p99 us",
        "cpu us/event",
    ]);
    let mut ratios = Vec::new();
    let (t, r) = (&mut table, &mut ratios);
    with_dir(&args.dir, "declared", |root| async move {
        let server = RunningServer::embedded(&root).await?;
        let result = measure(args, &server, "embedded", t, r).await;
        server.stop_after(result).await
    })
    .await?;
    if !args.embedded_only {
        let (t, r) = (&mut table, &mut ratios);
        with_dbs(admin_url, 1, |urls| async move {
            let server = RunningServer::postgres_only(&urls[0], &[]).await?;
            let result = measure(args, &server, "postgres", t, r).await;
            server.stop_after(result).await
        })
        .await?;
    }
    table.print();
    println!();
    for line in ratios {
        println!("{line}");
    }
    Ok(())
}

async fn create_type(
    channel: &Channel,
    name: &str,
    declarations: Option<pb::EventDeclarations>,
) -> Result<String> {
    Ok(EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(pb::CreateEntityTypeRequest {
            name: name.into(),
            description: "benchmark".into(),
            schema: Some(to_struct(schema())),
            declarations,
        })
        .await?
        .into_inner()
        .entity_type
        .context("no entity type")?
        .id)
}

/// Each client applies its share of events to its own instance: a plain merge patch of the
/// score and level, or the declared `ScoreIncreased` with one point. `done[c]` events were
/// applied to client `c`'s instance before, so the plain patch sets what the transform computes.
async fn apply(
    channels: &[Channel],
    targets: &[String],
    per_client: &[usize],
    done: &[usize],
    declared: bool,
) -> Result<Measured> {
    clients(per_client, |c| {
        let client = EventServiceClient::new(channels[c].clone());
        let target = targets[c].clone();
        let before = done[c];
        move |i| {
            let mut client = client.clone();
            let score = (before + i + 1) as u64;
            let (event_type, payload) = if declared {
                ("ScoreIncreased", json!({"points": 1}))
            } else {
                (
                    "ScoreChanged",
                    json!({"score": score, "level": score % 100 + 1}),
                )
            };
            let request = pb::ApplyEventRequest {
                instance_id: target.clone(),
                event_type: event_type.into(),
                payload: Some(to_struct(payload)),
                ..Default::default()
            };
            async move {
                client.apply_event(request).await?;
                Ok(())
            }
        }
    })
    .await
}

async fn measure(
    args: &Args,
    server: &RunningServer,
    store: &str,
    table: &mut Table,
    ratios: &mut Vec<String>,
) -> Result<()> {
    let most = args.clients_list.iter().copied().max().unwrap_or(1);
    let channels = server.channels(most).await?;
    let plain_type = create_type(&channels[0], PLAIN, None).await?;
    let declared_type = create_type(&channels[0], DECLARED, Some(declarations())).await?;
    for (config_no, &n) in args.clients_list.iter().enumerate() {
        let prefix = format!("c{config_no}");
        let plain_ids = create_instances_via_server(&channels[0], &plain_type, &prefix, n).await?;
        let declared_ids =
            create_instances_via_server(&channels[0], &declared_type, &prefix, n).await?;
        let mut done = vec![0usize; n];
        let warm = split(args.warmup, n);
        apply(&channels[..n], &plain_ids, &warm, &done, false).await?;
        apply(&channels[..n], &declared_ids, &warm, &done, true).await?;
        add(&mut done, &warm);
        let mut plain = Measured::empty();
        let mut declared = Measured::empty();
        for round in 0..args.rounds {
            let per_client = split(split(args.events, args.rounds)[round], n);
            let first_declared = round % 2 == 1;
            for declared_now in [first_declared, !first_declared] {
                let (ids, into) = if declared_now {
                    (&declared_ids, &mut declared)
                } else {
                    (&plain_ids, &mut plain)
                };
                into.absorb(apply(&channels[..n], ids, &per_client, &done, declared_now).await?)?;
            }
            add(&mut done, &per_client);
        }
        check_states(&channels[0], &plain_ids, &done).await?;
        check_states(&channels[0], &declared_ids, &done).await?;
        for (path, m) in [
            ("plain merge patch", &plain),
            ("transform + guard", &declared),
        ] {
            table.row(vec![
                store.into(),
                n.to_string(),
                path.into(),
                fmt_rate(m.per_sec()),
                m.p50().to_string(),
                m.p99().to_string(),
                format!("{:.0}", m.cpu_per_op()),
            ]);
        }
        ratios.push(format!(
            "{store}, {n} client(s): transform + guard / plain merge patch = {}x throughput, \
             p50 {}x (goal >= 0.9x throughput)",
            ratio(declared.per_sec(), plain.per_sec()),
            ratio(declared.p50() as f64, plain.p50() as f64),
        ));
    }
    Ok(())
}

fn add(done: &mut [usize], more: &[usize]) {
    for (d, m) in done.iter_mut().zip(more) {
        *d += m;
    }
}

/// Every instance holds the score its events made, so both paths did the work they claim.
async fn check_states(channel: &Channel, ids: &[String], done: &[usize]) -> Result<()> {
    let mut instances = InstanceServiceClient::new(channel.clone());
    for (id, &n) in ids.iter().zip(done) {
        let got = instances
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
            })
            .await?
            .into_inner()
            .instance
            .context("no instance")?;
        let state = Value::Object(temporal_state_server::grpc::state_from_struct(
            "state", got.state,
        )?);
        ensure!(
            state["score"] == n as u64,
            "instance {id}: score {} after {n} events",
            state["score"]
        );
        ensure!(
            got.version == n as i64 + 1,
            "instance {id}: version {}",
            got.version
        );
    }
    Ok(())
}
