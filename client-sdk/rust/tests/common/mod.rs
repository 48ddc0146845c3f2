//! Test harness: a PostgreSQL database of its own per test and a real server on 127.0.0.1:0
//! (both from test-support/, shared with the server's own tests), the SDK's client of that
//! server, plus paths of the repository's tools.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use temporal_state_client::Client;

#[allow(unused_imports)] // not every test binary uses each
pub use temporal_state_test_support::{TestDb, TestServer};

/// The SDK's client of a test server.
#[allow(async_fn_in_trait)] // used by these tests only, which never need the future to be Send
pub trait SdkClient {
    async fn client(&self) -> Client;
}

impl SdkClient for TestServer {
    async fn client(&self) -> Client {
        Client::connect(self.endpoint()).await.expect("connect")
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The walk-through's schema, as in the README.
pub fn player_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "username":     {"type": "string", "minLength": 3},
            "email":        {"type": "string", "format": "email"},
            "score":        {"type": "integer", "minimum": 0},
            "level":        {"type": "integer", "minimum": 1},
            "achievements": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["username", "email"]
    })
}

/// The first ```` ```{lang} ```` block after the README line that starts with `heading`, with the
/// README's server address `127.0.0.1:50051` replaced by `addr`: the README's examples are run
/// as they are written.
pub fn readme_example(heading: &str, lang: &str, addr: SocketAddr) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .lines()
        .skip_while(|line| !line.starts_with(heading))
        .collect::<Vec<_>>();
    assert!(!section.is_empty(), "README has no heading {heading:?}");
    let fence = format!("```{lang}");
    let code: Vec<&str> = section
        .iter()
        .skip_while(|line| line.trim_end() != fence)
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .copied()
        .collect();
    assert!(
        !code.is_empty(),
        "README's {heading:?} has no {fence} block"
    );
    let code = code.join("\n") + "\n";
    assert!(
        code.contains("127.0.0.1:50051"),
        "README's {heading:?} example no longer names 127.0.0.1:50051:\n{code}"
    );
    code.replace("127.0.0.1:50051", &addr.to_string())
}

/// What a finished command printed, for an assertion message.
pub fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies a folder, without caches and build leftovers.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "__pycache__" | "build" | ".pytest_cache")
            || name.ends_with(".egg-info")
        {
            continue;
        }
        let target = to.join(&*name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
