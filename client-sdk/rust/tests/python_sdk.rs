//! The generated Python package against a real server: it is installed from client-sdk/python
//! (pip, offline, into a scratch directory) and its pytest runs the README walk-through.
//!
//! Needs tools/.venv with the packages of client-sdk/python/requirements-dev.txt, which
//! scripts/ensure-tools.sh installs; the test fails, saying so, when they are missing.

mod common;

use common::*;
use tokio::process::Command;

const SETUP_HINT: &str = "run scripts/ensure-tools.sh (it installs client-sdk/python/requirements-dev.txt into tools/.venv)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_runs_the_walkthrough() {
    let root = repo_root();
    let python = root.join("tools/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: {SETUP_HINT}",
        python.display()
    );
    let deps = Command::new(&python)
        .args(["-c", "import grpc, google.protobuf, pytest, setuptools"])
        .output()
        .await
        .unwrap();
    assert!(
        deps.status.success(),
        "tools/.venv lacks grpcio, protobuf, pytest or setuptools: {SETUP_HINT}\n{}",
        show("python", &deps)
    );

    // pip builds inside the source folder: build a copy, so the checkout stays clean.
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    let site = scratch.path().join("site");
    copy_tree(&root.join("client-sdk/python"), &source);
    let install = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
        ])
        .arg(&site)
        .arg(&source)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .await
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        show("pip install", &install)
    );

    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let pytest = Command::new(&python)
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider"])
        .arg(root.join("client-sdk/python/tests"))
        .current_dir(scratch.path())
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SERVER_ADDR", server.addr.to_string())
        .env("TSE_PACKAGE_INSTALLED_IN", &site)
        .output()
        .await
        .unwrap();
    println!("{}", String::from_utf8_lossy(&pytest.stdout));
    assert!(pytest.status.success(), "{}", show("pytest", &pytest));
    let summary = String::from_utf8_lossy(&pytest.stdout);
    assert!(
        summary.contains("2 passed"),
        "expected both tests to pass, none skipped:\n{summary}"
    );

    // The README's five-line example, as written, on the walk-through's player-001.
    let example = readme_example("### Python", "python", server.addr);
    let out = Command::new(&python)
        .args(["-c", &example])
        .current_dir(scratch.path())
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", show("the README example", &out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("2 {") && printed.contains("'score': 150"),
        "the README example printed {printed:?}"
    );
    server.stop().await;
}
