//! The generated TypeScript package against a real server: `npm pack` makes the tarball a user
//! would install, it is unpacked into a scratch node_modules, and Node's test runner runs the
//! README walk-through through it over gRPC (HTTP/2, @connectrpc/connect-node).
//!
//! Needs Node.js and client-sdk/typescript/node_modules (`npm ci`, which scripts/ensure-tools.sh
//! runs); the test fails, saying so, when they are missing.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use tokio::process::Command;

const SETUP_HINT: &str =
    "run scripts/ensure-tools.sh (it runs `npm ci --prefix client-sdk/typescript`)";

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what} could not start ({e}): install Node.js and npm"));
    assert!(out.status.success(), "{}", show(what, &out));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_package_runs_the_walkthrough() {
    let root = repo_root();
    let package = root.join("client-sdk/typescript");
    let modules = package.join("node_modules");
    for dep in [
        "@bufbuild/protobuf",
        "@connectrpc/connect",
        "@connectrpc/connect-node",
    ] {
        assert!(
            modules.join(dep).join("package.json").exists(),
            "{dep} is missing from {}: {SETUP_HINT}",
            modules.display()
        );
    }

    // The tarball a user installs, unpacked where Node resolves `@temporal-state/client`.
    let scratch = tempfile::tempdir().unwrap();
    let out = run(
        "npm pack",
        Command::new("npm")
            .args(["pack", "--json", "--pack-destination"])
            .arg(scratch.path())
            .current_dir(&package),
    )
    .await;
    let packed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("npm pack --json");
    let tarball = scratch
        .path()
        .join(packed[0]["filename"].as_str().expect("a tarball name"));
    let app = scratch.path().join("app");
    let installed = app.join("node_modules/@temporal-state/client");
    std::fs::create_dir_all(&installed).unwrap();
    run(
        "tar",
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .args(["--strip-components=1", "-C"])
            .arg(&installed),
    )
    .await;
    for forbidden in ["test", "node_modules", "package-lock.json"] {
        assert!(
            !installed.join(forbidden).exists(),
            "{forbidden} must not be in the package"
        );
    }
    // Its dependencies (and the test's transport), from the package's own npm ci.
    for scope in ["@bufbuild", "@connectrpc"] {
        std::os::unix::fs::symlink(modules.join(scope), app.join("node_modules").join(scope))
            .unwrap();
    }
    std::fs::create_dir_all(app.join("test")).unwrap();
    std::fs::copy(
        package.join("test/walkthrough.test.mjs"),
        app.join("test/walkthrough.test.mjs"),
    )
    .unwrap();

    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let test = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .arg(app.join("test/walkthrough.test.mjs"))
        .current_dir(&app)
        .env("SERVER_ADDR", server.addr.to_string())
        .env("TSE_PACKAGE_INSTALLED_IN", canonical(&installed))
        .output()
        .await
        .expect("node could not start: install Node.js");
    println!("{}", String::from_utf8_lossy(&test.stdout));
    assert!(test.status.success(), "{}", show("node --test", &test));
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(
        report.contains("pass 2") && report.contains("skipped 0"),
        "expected both tests to pass, none skipped:\n{report}"
    );
    server.stop().await;
}

fn canonical(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}
