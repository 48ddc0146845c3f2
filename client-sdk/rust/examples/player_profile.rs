//! The player_profile walk-through with the Rust SDK: an entity type with a JSON Schema, the
//! instance `player-001`, a `ScoreIncreased` event guarded by `expected_version` and made
//! idempotent by its `event_id`, then time travel, a refused state, and analytics.
//!
//! With a server running (`cargo run -p temporal-state-server`):
//!
//! ```sh
//! cargo run -p temporal-state-client --example player_profile
//! TEMPORAL_STATE_ADDR=http://10.0.0.5:50051 cargo run -p temporal-state-client --example player_profile
//! ```
//!
//! It can run again on the same server: what exists already is read instead of created.
//! `client-sdk/rust/tests/example.rs` runs it against a fresh server.

use serde::{Deserialize, Serialize};
use serde_json::json;
use temporal_state_client::{
    ApplyEventOptions, Client, CreateEntityTypeOptions, Error, GetHistoryOptions, Result,
};

/// The state of a player, as this program sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Player {
    username: String,
    email: String,
    score: u32,
    level: u32,
    achievements: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let addr =
        std::env::var("TEMPORAL_STATE_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let client = Client::connect(addr).await?;
    walkthrough(&client).await
}

/// Every step of the walk-through, printing what it sees.
pub async fn walkthrough(client: &Client) -> Result<()> {
    // An entity type with its JSON Schema (reused if it exists).
    let schema = json!({
        "type": "object",
        "properties": {
            "username":     {"type": "string", "minLength": 3},
            "email":        {"type": "string", "format": "email"},
            "score":        {"type": "integer", "minimum": 0},
            "level":        {"type": "integer", "minimum": 1},
            "achievements": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["username", "email"]
    });
    let options = CreateEntityTypeOptions::default().description("A player of our game");
    let player_type = match client
        .create_entity_type("player_profile", &schema, &options)
        .await
    {
        Ok(t) => t,
        Err(Error::AlreadyExists { .. }) => {
            client
                .get_entity_type("player_profile", &Default::default())
                .await?
        }
        Err(e) => return Err(e),
    };
    println!("entity type {} ({})", player_type.name, player_type.id);

    // An instance, recorded as version 1 (InstanceCreated), from our own type.
    let alice = Player {
        username: "alice".into(),
        email: "alice@example.com".into(),
        score: 0,
        level: 1,
        achievements: vec![],
    };
    let instance = match client
        .create_instance("player_profile", "player-001", &alice, &Default::default())
        .await
    {
        Ok(created) => created.instance,
        Err(Error::AlreadyExists { .. }) => {
            client
                .get_current_state("player_profile", "player-001", &Default::default())
                .await?
        }
        Err(e) => return Err(e),
    };
    println!("instance {} at version {}", instance.id, instance.version);

    // An event: a merge patch, applied only if the instance is still where we saw it, with an
    // event_id so that no retry — ours or the SDK's — can record it twice.
    let options = ApplyEventOptions::default()
        .expected_version(instance.version)
        .event_id(format!("player-001-score-{}", instance.version))
        .metadata(&json!({"actor": "example"}));
    let applied = client
        .apply_event(
            &instance.id,
            "ScoreIncreased",
            &json!({"score": 150, "level": 2}),
            &options,
        )
        .await?;
    let now: Player = applied.state_as()?;
    println!(
        "v{}: {} has {} points at level {}",
        applied.event.version, now.username, now.score, now.level
    );

    // The same request again returns the recorded event instead of a second one.
    let again = client
        .apply_event(
            &instance.id,
            "ScoreIncreased",
            &json!({"score": 150, "level": 2}),
            &options,
        )
        .await?;
    assert_eq!(again.event.id, applied.event.id);

    // The current state, by entity type and external id.
    let current = client
        .get_current_state("player_profile", "player-001", &Default::default())
        .await?;
    println!("current (v{}): {}", current.version, current.state);

    // Time travel: the state at version 1, and what changed between versions 1 and now.
    let first = client
        .get_state_at_version(&instance.id, 1, &Default::default())
        .await?;
    println!("at version 1: {}", first.state);
    let diff = client
        .compare_versions(&instance.id, 1, current.version, &Default::default())
        .await?;
    for change in &diff.changes {
        println!(
            "  {} {:?}: {:?} -> {:?}",
            change.path, change.kind, change.old_value, change.new_value
        );
    }
    let history = client
        .get_history(&instance.id, &GetHistoryOptions::default().descending(true))
        .await?;
    for event in &history.items {
        println!(
            "  v{} {}: {}",
            event.version, event.event_type, event.payload
        );
    }

    // A state that breaks the schema is refused, naming the path, and nothing is stored.
    match client
        .apply_event(
            &instance.id,
            "ScoreIncreased",
            &json!({"score": -5}),
            &Default::default(),
        )
        .await
    {
        Err(Error::InvalidArgument { violations, .. }) => {
            for v in violations {
                println!("refused: {} {}", v.field, v.description);
            }
        }
        other => panic!("a negative score must be refused, got {other:?}"),
    }

    // Someone else's write in between: a conflict naming the current version.
    if let Err(Error::Conflict {
        current_version, ..
    }) = client
        .apply_event(
            &instance.id,
            "LevelUp",
            &json!({"level": 3}),
            &ApplyEventOptions::default().expected_version(1),
        )
        .await
    {
        println!("conflict: the instance is at version {current_version:?}");
    }

    // Analytics over every player (needs the PostgreSQL backend).
    match client
        .get_summary("player_profile", &Default::default())
        .await
    {
        Ok(summary) => println!(
            "{} players, {} events: {:?}",
            summary.instance_count, summary.event_count, summary.event_types
        ),
        Err(Error::Unimplemented { message }) => println!("no analytics here: {message}"),
        Err(e) => return Err(e),
    }
    Ok(())
}
