//! The generated TypeScript package against real servers. `npm pack` makes the tarball a user
//! would install and it is unpacked into a scratch node_modules; then
//!
//! - Node's test runner runs the README walk-through through it over gRPC (HTTP/2,
//!   @connectrpc/connect-node) and over gRPC-web (fetch, @connectrpc/connect-web);
//! - Debian's Chromium, driven by playwright-core, loads a page bundled from it by esbuild and
//!   runs the same walk-through over gRPC-web from another origin (CORS), then checks that a
//!   server which allows no other origin is blocked by the browser.
//!
//! Needs Node.js, client-sdk/typescript/node_modules (`npm ci`) and /usr/bin/chromium, which
//! scripts/ensure-tools.sh installs; the tests fail, saying so, when they are missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

const SETUP_HINT: &str = "run scripts/ensure-tools.sh (it runs `npm ci --prefix client-sdk/typescript` \
     and installs Debian's chromium)";

async fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what} could not start ({e}): install Node.js and npm"));
    assert!(out.status.success(), "{}", show(what, &out));
    out
}

/// The package as a user installs it: packed, unpacked into `<scratch>/app/node_modules`, with
/// the package's own dependencies beside it and the test files in `<scratch>/app/test`.
struct Installed {
    _scratch: tempfile::TempDir,
    package_dir: PathBuf,
    app: PathBuf,
    installed: PathBuf,
}

async fn install_packed_package() -> Installed {
    let package = repo_root().join("client-sdk/typescript");
    let modules = package.join("node_modules");
    for dep in [
        "@bufbuild/protobuf",
        "@connectrpc/connect",
        "@connectrpc/connect-node",
        "@connectrpc/connect-web",
        "esbuild",
        "playwright-core",
    ] {
        assert!(
            modules.join(dep).join("package.json").exists(),
            "{dep} is missing from {}: {SETUP_HINT}",
            modules.display()
        );
    }

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
    for required in [
        "index.js",
        "index.d.ts",
        "README.md",
        "gen/temporal_state/v1",
    ] {
        assert!(
            installed.join(required).exists(),
            "{required} is missing from the package"
        );
    }
    // Its dependencies (and the tests' transports and tools), from the package's own npm ci.
    for dep in ["@bufbuild", "@connectrpc", "playwright-core"] {
        std::os::unix::fs::symlink(modules.join(dep), app.join("node_modules").join(dep)).unwrap();
    }
    copy_tree(&package.join("test"), &app.join("test"));
    Installed {
        _scratch: scratch,
        package_dir: package,
        app,
        installed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_package_runs_the_walkthrough_in_node() {
    let package = install_packed_package().await;
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &[]).await;
    let test = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .arg(package.app.join("test/walkthrough.test.mjs"))
        .current_dir(&package.app)
        .env("SERVER_ADDR", server.addr.to_string())
        .env("TSE_PACKAGE_INSTALLED_IN", canonical(&package.installed))
        .output()
        .await
        .expect("node could not start: install Node.js");
    println!("{}", String::from_utf8_lossy(&test.stdout));
    assert!(test.status.success(), "{}", show("node --test", &test));
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(
        report.contains("pass 3") && report.contains("skipped 0"),
        "expected all three tests to pass, none skipped:\n{report}"
    );

    // The README's five-line example, as written, on the walk-through's player-001.
    let example = readme_example("### TypeScript", "ts", server.addr);
    let file = package.app.join("readme-example.mjs");
    std::fs::write(&file, example).unwrap();
    let out = run(
        "the README example",
        Command::new("node").arg(&file).current_dir(&package.app),
    )
    .await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("2n {") && printed.contains("score: 150"),
        "the README example printed {printed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_package_runs_the_walkthrough_in_a_browser_over_grpc_web() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: {SETUP_HINT}"
    );
    let package = install_packed_package().await;

    // The page: the walk-through bundled for browsers from the installed package.
    let site = package.app.join("test/browser");
    run(
        "esbuild",
        Command::new(package.package_dir.join("node_modules/.bin/esbuild"))
            .arg(site.join("page.mjs"))
            .args([
                "--bundle",
                "--format=esm",
                "--platform=browser",
                "--target=es2022",
            ])
            .arg(format!("--outfile={}", site.join("page.js").display()))
            .current_dir(&package.app),
    )
    .await;
    let web = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", web.local_addr().unwrap());
    let static_site = tokio::spawn(serve_static(web, site));

    // One server that allows the page's origin, one that allows none (the default).
    let db = TestDb::create().await;
    let server = TestServer::start(&db.url, &["--grpc-web-allowed-origins", &origin]).await;
    let refusing = TestServer::start(&db.url, &[]).await;

    let url = format!(
        "{origin}/index.html?server={}&refusing={}",
        server.addr, refusing.addr
    );
    let out = Command::new("node")
        .arg(package.app.join("test/browser/driver.mjs"))
        .current_dir(&package.app)
        .env("PAGE_URL", &url)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node could not start: install Node.js");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{}", show("the browser test", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON result");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["blocked"], "blocked", "{result}");
    assert_eq!(result["seen"]["versions"], serde_json::json!(["1", "2"]));

    static_site.abort();
    server.stop().await;
    refusing.stop().await;
}

/// A minimal HTTP/1.1 server for the page: GET of a file directly in `dir`, nothing else.
async fn serve_static(listener: TcpListener, dir: PathBuf) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let dir = dir.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let name = path.split('?').next().unwrap_or("").trim_start_matches('/');
            let file = (!name.is_empty() && !name.contains('/') && !name.contains(".."))
                .then(|| std::fs::read(dir.join(name)).ok())
                .flatten();
            let (status, body, kind) = match file {
                Some(body) if name.ends_with(".html") => ("200 OK", body, "text/html"),
                Some(body) if name.ends_with(".js") => ("200 OK", body, "text/javascript"),
                _ => ("404 Not Found", b"not found".to_vec(), "text/plain"),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {kind}; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.write_all(&body).await;
            let _ = conn.shutdown().await;
        });
    }
}

fn canonical(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}
