//! The README's five-line Rust example, as a program: `tests/example.rs` checks that the README
//! still shows exactly these lines and runs them against a real server.
//!
//! ```sh
//! cargo run -p temporal-state-client --example readme     # needs player-001: run player_profile first
//! ```

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    readme("http://127.0.0.1:50051").await
}

/// The README's lines, with its address `"http://127.0.0.1:50051"` as `endpoint`.
#[rustfmt::skip]
pub async fn readme(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = temporal_state_client::Client::connect(endpoint).await?;
    let player = client.get_current_state("player_profile", "player-001", &Default::default()).await?;
    let options = temporal_state_client::ApplyEventOptions::default().expected_version(player.version);
    let applied = client.apply_event(&player.id, "ScoreIncreased", &serde_json::json!({"score": 150}), &options).await?;
    println!("v{}: {}", applied.event.version, applied.state);
    Ok(())
}
