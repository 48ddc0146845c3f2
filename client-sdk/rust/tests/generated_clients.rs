//! The committed Python and TypeScript clients are what proto/ generates today: runs
//! scripts/check-generated.sh, which regenerates into a scratch folder and compares.

mod common;

use common::repo_root;

#[test]
fn generated_clients_are_up_to_date() {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/check-generated.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "scripts/check-generated.sh failed (stale clients: run scripts/generate-clients.sh; \
         missing tools: run scripts/ensure-tools.sh)\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
