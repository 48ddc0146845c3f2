//! `auth`: what authentication costs per call. Three servers on the embedded store, each in a
//! fresh DATA_DIR: authentication off, an API key (AUTH_API_KEYS_FILE: a SHA-256 and a stat of
//! the file per call), and an RS256 JWT (AUTH_JWT_KEY_FILE: a signature check and claim checks
//! per call). Each runs the same sequential ApplyEvent and GetCurrentState calls; the rounds
//! alternate the order of the servers so outside noise hits all alike. The table gives p50/p99
//! per configuration, and the added p50 against "off".
//!
//! The RSA key pair is the server tests' fixture (`server/tests/fixtures/auth/`): ring, the
//! crypto provider here, cannot generate RSA keys.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;
use temporal_state_proto::v1::event_service_client::EventServiceClient;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;
use tonic::transport::Channel;

use crate::harness::{Measured, RunningServer, Table, sample, to_struct, with_dir};

const RSA_PRIVATE: &str = include_str!("../../server/tests/fixtures/auth/rs256_private.pem");
const RSA_PUBLIC: &str = include_str!("../../server/tests/fixtures/auth/rs256_public.pem");
const API_KEY: &str = "bench-api-key-0123456789abcdef";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured calls of each RPC per configuration, split over the rounds.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Unmeasured calls of each RPC before each round.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Rounds, alternating the order of the configurations.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Where the fresh DATA_DIRs and key files are created (and removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

/// One configuration: its server, the token its calls carry, and what they measured.
struct Setup {
    name: &'static str,
    server: RunningServer,
    token: Option<String>,
    channel: Channel,
    instance_id: String,
    apply: Measured,
    current: Measured,
    next: i64,
}

fn authed<T>(token: &Option<String>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("an ASCII token"),
        );
    }
    request
}

async fn setup(
    name: &'static str,
    dir: &std::path::Path,
    flags: &[&str],
    token: Option<String>,
) -> Result<Setup> {
    let server = RunningServer::embedded_with(&dir.join(name), flags).await?;
    let channel = server.channel().await?;
    EntityTypeServiceClient::new(channel.clone())
        .create_entity_type(authed(
            &token,
            pb::CreateEntityTypeRequest {
                declarations: None,
                name: "bench_doc".into(),
                description: String::new(),
                schema: Some(to_struct(json!({"type": "object"}))),
            },
        ))
        .await
        .with_context(|| format!("{name}: create the entity type"))?;
    let created = InstanceServiceClient::new(channel.clone())
        .create_instance(authed(
            &token,
            pb::CreateInstanceRequest {
                entity_type: "bench_doc".into(),
                external_id: "d".into(),
                initial_state: Some(to_struct(json!({"n": 0}))),
                metadata: None,
            },
        ))
        .await
        .with_context(|| format!("{name}: create the instance"))?
        .into_inner();
    let instance_id = created.instance.context("no instance")?.id;
    Ok(Setup {
        name,
        server,
        token,
        channel,
        instance_id,
        apply: Measured::empty(),
        current: Measured::empty(),
        next: 1,
    })
}

async fn round(s: &mut Setup, warmup: usize, samples: usize) -> Result<()> {
    let events = EventServiceClient::new(s.channel.clone());
    let token = s.token.clone();
    let id = s.instance_id.clone();
    let mut n = s.next;
    let (apply, first) = sample(warmup, samples, || {
        let mut events = events.clone();
        n += 1;
        let request = authed(
            &token,
            pb::ApplyEventRequest {
                instance_id: id.clone(),
                event_type: "Set".into(),
                payload: Some(to_struct(json!({ "n": n }))),
                ..Default::default()
            },
        );
        async move { Ok(events.apply_event(request).await?.into_inner()) }
    })
    .await?;
    ensure!(
        first.event.as_ref().is_some_and(|e| e.version >= 2),
        "{}: ApplyEvent did not record an event",
        s.name
    );
    s.next = n;
    s.apply.absorb(apply)?;
    let instances = InstanceServiceClient::new(s.channel.clone());
    let (current, first) = sample(warmup, samples, || {
        let mut instances = instances.clone();
        let request = authed(
            &token,
            pb::GetCurrentStateRequest {
                entity_type: "bench_doc".into(),
                external_id: "d".into(),
            },
        );
        async move { Ok(instances.get_current_state(request).await?.into_inner()) }
    })
    .await?;
    ensure!(
        first
            .instance
            .as_ref()
            .is_some_and(|i| i.id == s.instance_id),
        "{}: GetCurrentState answered another instance",
        s.name
    );
    s.current.absorb(current)?;
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    let base = args.dir.clone();
    with_dir(&base, "auth", |dir| run_in(args, dir)).await
}

async fn run_in(args: Args, dir: PathBuf) -> Result<()> {
    let keys = dir.join("keys.json");
    let hash: String = Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &keys,
        json!([{"name": "bench", "sha256": hash, "scopes": ["admin"]}]).to_string(),
    )?;
    let public = dir.join("rs256.pem");
    std::fs::write(&public, RSA_PUBLIC)?;
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bench", "scope": "admin", "iat": now, "exp": now + 3600}),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes())?,
    )?;
    let keys_flag = keys.display().to_string();
    let public_flag = public.display().to_string();
    let mut setups = vec![
        setup("off", &dir, &[], None).await?,
        setup(
            "api key",
            &dir,
            &["--auth-api-keys-file", &keys_flag],
            Some(API_KEY.into()),
        )
        .await?,
        setup(
            "jwt rs256",
            &dir,
            &["--auth-jwt-key-file", &public_flag],
            Some(jwt),
        )
        .await?,
    ];
    let per_round = (args.samples / args.rounds.max(1)).max(1);
    for r in 0..args.rounds.max(1) {
        let order: Vec<usize> = if r % 2 == 0 {
            (0..setups.len()).collect()
        } else {
            (0..setups.len()).rev().collect()
        };
        for i in order {
            round(&mut setups[i], args.warmup, per_round).await?;
        }
    }
    println!(
        "auth: sequential calls on the embedded store, {} measured per RPC and configuration",
        per_round * args.rounds.max(1)
    );
    let mut table = Table::new(&[
        "configuration",
        "ApplyEvent p50 us",
        "p99 us",
        "GetCurrentState p50 us",
        "p99 us",
    ]);
    for s in &setups {
        table.row(vec![
            s.name.to_string(),
            s.apply.p50().to_string(),
            s.apply.p99().to_string(),
            s.current.p50().to_string(),
            s.current.p99().to_string(),
        ]);
    }
    table.print();
    let (off_apply, off_current) = (setups[0].apply.p50(), setups[0].current.p50());
    for s in &setups[1..] {
        println!(
            "{}: +{} us ApplyEvent p50, +{} us GetCurrentState p50 over no authentication",
            s.name,
            s.apply.p50() as i64 - off_apply as i64,
            s.current.p50() as i64 - off_current as i64
        );
    }
    for s in setups {
        s.server.stop().await?;
    }
    Ok(())
}
