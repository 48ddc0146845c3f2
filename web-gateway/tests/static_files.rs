//! The console's files as a browser gets them: hashed assets cached for a year, `index.html`
//! revalidated every time and served for the console's own routes, compressed when the browser
//! accepts it, and the security headers on every response — static, health, and gRPC-web alike.

mod common;

use std::io::Read as _;
use std::net::SocketAddr;

use common::*;
use http::{HeaderMap, StatusCode};

async fn console_gateway(console: &Console) -> Gw {
    // No engine is needed to serve files; a port nobody listens on stands for one.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = console.path();
    Gw::start(&[dead], move |c| c.assets = Some(dir)).await
}

fn assert_security_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(
        headers["content-security-policy"],
        temporal_state_gateway::CONTENT_SECURITY_POLICY,
        "{what}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self';"),
        "no inline scripts: {csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_assets_are_cached_forever_and_the_page_never() {
    let console = Console::write();
    let gw = console_gateway(&console).await;

    let (status, headers, body) = get(&gw.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, console.index.as_bytes());
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(headers.contains_key("etag"));
    assert_security_headers(&headers, "index.html");

    let (status, headers, body) = get(&gw.url(console.script_path), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, console.script.as_bytes());
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_security_headers(&headers, "a hashed asset");

    // Revalidation: the same ETag back is a 304 with no body.
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, headers, body) =
        get(&gw.url(console.script_path), &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], etag.as_str());

    // HEAD: the headers, no body.
    let (status, headers, body) =
        send("HEAD", &gw.url("/index.html"), &[], Default::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(
        headers["content-length"],
        console.index.len().to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_own_routes_get_the_page_and_missing_assets_a_404() {
    let console = Console::write();
    let gw = console_gateway(&console).await;

    for route in [
        "/types/player_profile/instances/player-001?version=12",
        "/types",
        "/analytics/player_profile",
    ] {
        let (status, headers, body) = get(&gw.url(route), &[]).await;
        assert_eq!(status, StatusCode::OK, "{route}");
        assert_eq!(body, console.index.as_bytes(), "{route}");
        assert_eq!(headers["cache-control"], "no-cache", "{route}");
    }
    let (status, headers, _) = get(&gw.url("/assets/index-00000000.js"), &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an old asset is not answered with HTML"
    );
    assert_security_headers(&headers, "a 404");

    let (status, headers, _) = send("DELETE", &gw.url("/"), &[], Default::default()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_compressed_when_the_browser_accepts_it() {
    let console = Console::write();
    let gw = console_gateway(&console).await;
    let url = gw.url(console.script_path);

    let (_, headers, body) = get(&url, &[("accept-encoding", "gzip, deflate, br, zstd")]).await;
    assert_eq!(headers["content-encoding"], "br");
    assert_eq!(headers["vary"], "accept-encoding");
    assert!(
        body.len() < console.script.len() / 4,
        "{} bytes",
        body.len()
    );
    let mut plain = String::new();
    brotli::Decompressor::new(&body[..], 4096)
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, console.script);
    let br_etag = headers["etag"].clone();

    let (_, headers, body) = get(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(headers["content-encoding"], "gzip");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, console.script);
    assert_ne!(
        headers["etag"], br_etag,
        "each encoding has a tag of its own"
    );

    let (_, headers, body) = get(&url, &[]).await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(body, console.script.as_bytes());

    // Already compressed formats go as they are.
    let (_, headers, body) = get(
        &gw.url("/assets/logo-77aa.png"),
        &[("accept-encoding", "br")],
    )
    .await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(&body[..4], b"\x89PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_response_carries_the_security_headers() {
    let console = Console::write();
    let gw = console_gateway(&console).await;
    let (_, headers, _) = get(&gw.url("/healthz"), &[]).await;
    assert_security_headers(&headers, "/healthz");
    let (_, headers, _) = get(&gw.url("/readyz"), &[]).await;
    assert_security_headers(&headers, "/readyz");
    // A gRPC-web answer the gateway gives itself (its only engine is down).
    let answer = unary(
        &gw,
        "/temporal_state.v1.EntityTypeService/ListEntityTypes",
        &pb::ListEntityTypesRequest::default(),
        &[],
    )
    .await;
    assert_eq!(answer.status, tonic::Code::Unavailable as i32);
    assert_security_headers(&answer.headers, "a gRPC-web answer");

    // And one forwarded from a real engine.
    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    let answer = unary(
        &gw,
        "/temporal_state.v1.EntityTypeService/ListEntityTypes",
        &pb::ListEntityTypesRequest::default(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 0, "{answer:?}");
    assert_security_headers(&answer.headers, "a forwarded answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_console_is_served_or_its_absence_said_plainly() {
    let (engine, _dir) = engine().await;
    let gw = Gw::start(&[engine.addr], |_| {}).await;
    let (status, headers, body) = get(&gw.url("/"), &[]).await;
    let body = String::from_utf8_lossy(&body);
    if temporal_state_gateway::console_embedded() {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(body.contains("<script type=\"module\""), "{body}");
        assert!(
            !body.contains("<script>"),
            "no inline script, as the CSP forbids them: {body}"
        );
    } else {
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("the console was not built"), "{body}");
        assert_eq!(body.lines().count(), 1, "one line: {body}");
    }
    assert_security_headers(&headers, "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_folder_without_index_html_is_refused_at_start() {
    let empty = tempfile::tempdir().unwrap();
    let mut config = temporal_state_gateway::GatewayConfig::new(vec![
        temporal_state_gateway::config::upstream_arg("127.0.0.1:1").unwrap(),
    ]);
    config.assets = Some(empty.path().to_path_buf());
    let err = temporal_state_gateway::Gateway::new(config)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("index.html"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_config_names_the_oidc_issuer_and_the_csp_lets_only_it_in() {
    let console = Console::write();
    let plain = console_gateway(&console).await;
    let (status, headers, body) = get(&plain.url("/console-config.json"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(&body[..], br#"{"oidc":null}"#);
    assert_security_headers(&headers, "/console-config.json");

    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = console.path();
    let sso = Gw::start(&[dead], move |c| {
        c.assets = Some(dir);
        c.oidc.console_oidc_issuer = Some("https://login.example.com/realms/main".into());
        c.oidc.console_oidc_client_id = Some("console".into());
        c.oidc.console_oidc_scopes = "openid read".into();
    })
    .await;
    for path in ["/console-config.json", "/", console.script_path] {
        let (status, headers, _) = get(&sso.url(path), &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert_eq!(
            csp,
            temporal_state_gateway::CONTENT_SECURITY_POLICY.replace(
                "connect-src 'self'",
                "connect-src 'self' https://login.example.com"
            ),
            "{path}"
        );
    }
    let (_, _, body) = get(&sso.url("/console-config.json"), &[]).await;
    let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"oidc": {"issuer": "https://login.example.com/realms/main", "clientId": "console", "scopes": "openid read"}})
    );

    // Half a configuration stops the gateway at start.
    let mut half = temporal_state_gateway::GatewayConfig::new(vec![
        temporal_state_gateway::config::upstream_arg("127.0.0.1:1").unwrap(),
    ]);
    half.oidc.console_oidc_issuer = Some("https://login.example.com".into());
    let err = temporal_state_gateway::Gateway::new(half)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("CONSOLE_OIDC_CLIENT_ID"), "{err}");
}
