//! The deployment artefacts against what the binaries read: `deploy/compose/compose.yaml` as
//! written, and every overlay of `deploy/kubernetes/` as `kubectl kustomize` renders it (kubectl
//! comes from scripts/ensure-tools.sh). Every environment variable given to the server is one of
//! its clap settings and parses with it; ports agree between the server's addresses, its health
//! checks, the Services and the gateway's upstreams; the drain timings add up; the alerts name
//! only the metrics the server is to export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use clap::{CommandFactory, Parser};
use serde::Deserialize;
use serde_json::Value;
use temporal_state_server::config::{Cli, Command as ServerCommand};

/// Settings the manifests may give the server although it does not read them yet (none now:
/// ADMIN_ADDR landed with the metrics). When the server gains one listed here, the test
/// `planned_settings_are_not_yet_read_by_the_server` fails: remove it from here.
const PLANNED_SERVER_ENV: &[&str] = &[];

/// Read by the log filter (tracing-subscriber's EnvFilter), not by clap.
const LOG_ENV: &str = "RUST_LOG";

/// The gateway's settings. The gateway is its own crate, not a dependency of this one, so its
/// names are listed here.
const GATEWAY_ENV: &[&str] = &["GATEWAY_ADDR", "GATEWAY_UPSTREAMS", "RUST_LOG"];

/// The metrics the server exports on ADMIN_ADDR; the alerts may use these and no other `tse_`
/// names. Histograms add `_bucket`, `_sum` and `_count`.
const METRICS: &[&str] = temporal_state_server::app::metrics::ALL;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_path_buf()
}

// ------------------------------------------------------------------ the server's settings

/// Every environment variable the server's clap configuration reads, with the long flag that
/// sets the same field.
fn server_settings() -> BTreeMap<String, String> {
    Cli::command()
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_string();
            let long = arg.get_long()?.to_string();
            Some((env, long))
        })
        .collect()
}

/// Parses `env` as the server would see it, by turning each variable into its flag, followed by
/// the subcommand `args`. Errors name the variables the server does not read.
fn parse_server(env: &BTreeMap<String, String>, args: &[String]) -> Result<Cli, String> {
    let settings = server_settings();
    let unknown: Vec<&String> = env
        .keys()
        .filter(|k| {
            !settings.contains_key(*k)
                && k.as_str() != LOG_ENV
                && !PLANNED_SERVER_ENV.contains(&k.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the server reads none of {unknown:?} (its settings: {:?})",
            settings.keys().collect::<Vec<_>>()
        ));
    }
    let mut argv = vec!["temporal-state-server".to_string()];
    for (name, value) in env {
        if let Some(long) = settings.get(name) {
            argv.push(format!("--{long}={value}"));
        }
    }
    argv.extend(args.iter().cloned());
    Cli::try_parse_from(&argv).map_err(|e| format!("{argv:?}: {e}"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// host and port of `scheme://[user[:password]@]host[:port][/path]`, and the path.
fn url_parts(url: &str, default_port: u16) -> (String, u16, String) {
    let rest = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url:?}: no scheme"))
        .1;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host.to_string(),
            port.parse().unwrap_or_else(|_| panic!("{url:?}: bad port")),
            path.to_string(),
        ),
        None => (host_port.to_string(), default_port, path.to_string()),
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

#[test]
fn planned_settings_are_not_yet_read_by_the_server() {
    let settings = server_settings();
    for name in PLANNED_SERVER_ENV {
        assert!(
            !settings.contains_key(*name),
            "the server now reads {name}: remove it from PLANNED_SERVER_ENV in this file, so the \
             manifests are checked against its real definition"
        );
    }
    // The check above must be able to fail: a setting the server has is found.
    assert!(settings.contains_key("GRPC_ADDR") && settings.contains_key("DATABASE_URL"));
}

#[test]
fn the_env_parser_refuses_unknown_variables_and_bad_values() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let serve = ["serve".to_string()];
    assert!(parse_server(&env(&[("GRPC_ADDR", "0.0.0.0:50051")]), &serve).is_ok());
    let err = parse_server(&env(&[("GRPC_ADRESS", "0.0.0.0:50051")]), &serve).unwrap_err();
    assert!(err.contains("GRPC_ADRESS"), "{err}");
    assert!(parse_server(&env(&[("DB_POOL_SIZE", "0")]), &serve).is_err());
    assert!(parse_server(&env(&[("NATS_STREAM_RETENTION", "forever")]), &serve).is_err());
    assert!(parse_server(&env(&[]), &["backup".to_string()]).is_err());
}

// ------------------------------------------------------------------ compose

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, ComposeService>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<serde_norway::Value>>,
}

#[derive(Debug, Deserialize)]
struct ComposeService {
    image: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    /// Values must be strings (quoted in YAML), as the processes see them.
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<String>,
    healthcheck: Option<ComposeHealthcheck>,
    #[serde(default)]
    depends_on: BTreeMap<String, ComposeDependsOn>,
    #[serde(default)]
    volumes: Vec<String>,
    read_only: Option<bool>,
    /// How long `docker compose stop` waits after SIGTERM, e.g. `40s`.
    stop_grace_period: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ComposeHealthcheck {
    #[serde(default)]
    test: Vec<String>,
    #[serde(default)]
    disable: bool,
}

#[derive(Debug, Deserialize)]
struct ComposeDependsOn {
    condition: String,
}

fn compose() -> Compose {
    let path = repo_root().join("deploy/compose/compose.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut value: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    // `<<: *server` merge keys, as docker compose applies them.
    value.apply_merge().expect("merge keys");
    serde_norway::from_value(value).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn is_server_image(service: &ComposeService) -> bool {
    service
        .image
        .as_deref()
        .is_some_and(|i| i.starts_with("temporal-state-server"))
}

#[test]
fn compose_has_every_service_of_the_system() {
    let compose = compose();
    let names: BTreeSet<&str> = compose.services.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "timescaledb",
        "redis",
        "nats",
        "migrate",
        "server-1",
        "server-2",
        "gateway",
    ]
    .into();
    assert_eq!(names, expected);
    assert!(
        compose.services["timescaledb"]
            .image
            .as_deref()
            .is_some_and(|i| i.starts_with("timescale/timescaledb:2.") && i.ends_with("-pg16")),
        "TimescaleDB's official image, pinned"
    );
    let nats = &compose.services["nats"];
    assert!(
        nats.command
            .iter()
            .any(|a| a == "--jetstream" || a == "-js"),
        "NATS runs JetStream: {:?}",
        nats.command
    );
    for (name, service) in &compose.services {
        let image = service.image.as_deref().unwrap_or_default();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}: image {image:?} is not pinned to a tag"
        );
    }
}

#[test]
fn compose_gives_the_server_only_settings_it_reads_with_values_it_accepts() {
    let compose = compose();
    let servers: Vec<(&String, &ComposeService)> = compose
        .services
        .iter()
        .filter(|(_, s)| is_server_image(s))
        .collect();
    assert_eq!(servers.len(), 3, "migrate, server-1, server-2");
    for (name, service) in servers {
        let cli = parse_server(&service.environment, &service.command)
            .unwrap_or_else(|e| panic!("compose service {name}: {e}"));
        let config = cli.config;
        match cli.command {
            Some(ServerCommand::Migrate) => assert_eq!(name, "migrate"),
            Some(ServerCommand::Backup { .. }) => panic!("{name}: backup is not a service"),
            Some(ServerCommand::Retention) => {
                panic!("{name}: a one-off retention pass is not a service (servers run them)")
            }
            Some(ServerCommand::Serve) | None => {
                assert!(name.starts_with("server-"), "{name} serves");
                assert_eq!(
                    config.grpc_addr.ip().to_string(),
                    "0.0.0.0",
                    "{name}: GRPC_ADDR must listen beyond the container's loopback"
                );
                assert_eq!(service.read_only, Some(true), "{name}: read-only root");
                // The drain fits before docker's SIGKILL.
                let stop = service
                    .stop_grace_period
                    .as_deref()
                    .and_then(|s| s.strip_suffix('s'))
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{name}: stop_grace_period in seconds"));
                assert!(
                    stop >= config.shutdown_grace_secs + config.shutdown_timeout_secs + 5,
                    "{name}: stop_grace_period {stop} s < SHUTDOWN_GRACE_SECS {} + \
                     SHUTDOWN_TIMEOUT_SECS {} + 5",
                    config.shutdown_grace_secs,
                    config.shutdown_timeout_secs
                );
                assert!(
                    config.shutdown_timeout_secs >= config.request_timeout_secs,
                    "{name}: SHUTDOWN_TIMEOUT_SECS below REQUEST_TIMEOUT_SECS cuts calls off"
                );
            }
        }
        let db = config
            .database_url
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no DATABASE_URL (it would use the embedded store)"));
        let (host, port, path) = url_parts(db, 5432);
        let pg = &compose.services[&host];
        assert_eq!(port, 5432, "{name}: DATABASE_URL port");
        assert_eq!(
            Some(&path),
            pg.environment.get("POSTGRES_DB"),
            "{name}: DATABASE_URL names the database {host} creates"
        );
        assert_eq!(
            password_of(db).as_ref(),
            pg.environment.get("POSTGRES_PASSWORD"),
            "{name}: DATABASE_URL's password is {host}'s"
        );
        for url in [&config.redis_url, &config.nats_url].into_iter().flatten() {
            let (host, _, _) = url_parts(url, 0);
            assert!(
                compose.services.contains_key(&host),
                "{name}: {url} names no service"
            );
            assert_eq!(
                service.depends_on.get(&host).map(|d| d.condition.as_str()),
                Some("service_healthy"),
                "{name} waits for {host} to be healthy"
            );
        }
        assert_eq!(
            service.depends_on.get(&host).map(|d| d.condition.as_str()),
            Some("service_healthy"),
            "{name} waits for {host} to be healthy"
        );
        if name != "migrate" {
            assert!(config.redis_url.is_some() && config.nats_url.is_some());
            assert_eq!(
                service
                    .depends_on
                    .get("migrate")
                    .map(|d| d.condition.as_str()),
                Some("service_completed_successfully"),
                "{name} starts after the migrations"
            );
        }
    }
}

#[test]
fn compose_ports_health_checks_and_upstreams_agree() {
    let compose = compose();
    let mut grpc_upstreams = BTreeSet::new();
    for (name, service) in &compose.services {
        for published in &service.ports {
            assert!(
                published.starts_with("127.0.0.1:"),
                "{name}: {published} is published on every interface, not loopback only"
            );
        }
        if !is_server_image(service)
            || service.command.first().map(String::as_str) == Some("migrate")
        {
            continue;
        }
        let cli = parse_server(&service.environment, &service.command).unwrap();
        let port = cli.config.grpc_addr.port();
        let health = service.healthcheck.as_ref().expect("a health check");
        assert!(
            health
                .test
                .iter()
                .any(|a| a == &format!("-addr=127.0.0.1:{port}")),
            "{name}: the health check probes GRPC_ADDR's port {port}: {:?}",
            health.test
        );
        assert!(
            !service.ports.is_empty(),
            "{name} is reachable from the host"
        );
        for published in &service.ports {
            assert_eq!(
                port_of(published),
                port,
                "{name}: {published} maps GRPC_ADDR"
            );
        }
        grpc_upstreams.insert(format!("http://{name}:{port}"));
    }
    assert_eq!(grpc_upstreams.len(), 2, "two server replicas");

    let gateway = &compose.services["gateway"];
    for key in gateway.environment.keys() {
        assert!(
            GATEWAY_ENV.contains(&key.as_str()),
            "the gateway reads no {key} (its settings: {GATEWAY_ENV:?})"
        );
    }
    let upstreams: BTreeSet<String> = gateway.environment["GATEWAY_UPSTREAMS"]
        .split(',')
        .map(|u| u.trim().to_string())
        .collect();
    assert_eq!(
        upstreams, grpc_upstreams,
        "the gateway forwards to both replicas"
    );
    for upstream in &upstreams {
        let (host, _, _) = url_parts(upstream, 0);
        assert_eq!(
            gateway.depends_on.get(&host).map(|d| d.condition.as_str()),
            Some("service_healthy")
        );
    }
    let gw_port = port_of(&gateway.environment["GATEWAY_ADDR"]);
    assert!(gateway.ports.iter().all(|p| port_of(p) == gw_port));
    let health = gateway.healthcheck.as_ref().expect("gateway health check");
    assert!(
        health
            .test
            .iter()
            .any(|a| a.contains(&format!("/dev/tcp/127.0.0.1/{gw_port}")) && a.contains("/readyz")),
        "the gateway's health check asks /readyz on GATEWAY_ADDR's port: {:?}",
        health.test
    );
}

#[test]
fn compose_health_checks_and_named_volumes() {
    let compose = compose();
    let mut used = BTreeSet::new();
    for (name, service) in &compose.services {
        let health = service.healthcheck.as_ref();
        if name == "migrate" {
            assert!(
                health.is_some_and(|h| h.disable),
                "migrate is a one-shot job"
            );
        } else {
            assert!(
                health.is_some_and(
                    |h| !h.disable && h.test.first().map(String::as_str) == Some("CMD")
                ),
                "{name} has a health check"
            );
        }
        for dependency in service.depends_on.keys() {
            assert!(
                compose.services.contains_key(dependency),
                "{name} depends on {dependency}"
            );
        }
        for volume in &service.volumes {
            let source = volume.split(':').next().unwrap();
            assert!(
                compose.volumes.contains_key(source),
                "{name}: {volume} is not a named volume"
            );
            used.insert(source.to_string());
        }
    }
    let declared: BTreeSet<String> = compose.volumes.keys().cloned().collect();
    assert_eq!(used, declared, "every named volume is used");
    assert!(declared.contains("pgdata") && declared.contains("natsdata"));
}

// ------------------------------------------------------------------ kubernetes

fn kubectl() -> PathBuf {
    let root = repo_root();
    for candidate in [
        root.join("tools/bin/kubectl"),
        root.join("tools/.venv/bin/kubectl"),
    ] {
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("kubectl")
}

/// Every overlay, rendered by `kubectl kustomize`, as JSON values.
fn rendered_overlays() -> BTreeMap<String, Vec<Value>> {
    let dir = repo_root().join("deploy/kubernetes/overlays");
    let mut overlays = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let out = Command::new(kubectl())
            .arg("kustomize")
            .arg(&path)
            .output()
            .expect("kubectl must be installed: run scripts/ensure-tools.sh (or scripts/test.sh)");
        assert!(
            out.status.success(),
            "kubectl kustomize {path:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
            .filter(|v| !v.is_null())
            .collect();
        overlays.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            docs,
        );
    }
    assert!(
        overlays.contains_key("dev") && overlays.contains_key("production"),
        "overlays: {:?}",
        overlays.keys()
    );
    overlays
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn named<'a>(docs: &'a [Value], k: &str, name: &str) -> Option<&'a Value> {
    kind(docs, k).find(|d| d["metadata"]["name"] == name)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Workloads (Deployments, StatefulSets, Jobs) whose pods carry `app.kubernetes.io/name: app`.
fn workloads<'a>(docs: &'a [Value], app: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| matches!(str_of(&d["kind"]), "Deployment" | "StatefulSet" | "Job"))
        .filter(|d| d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == app)
        .collect()
}

/// The environment a container sees: its envFrom ConfigMaps and Secrets (which must be in the
/// rendering, except the production Secret that the operator provides), then its env entries.
/// A value from a Secret that is not rendered reads as `<from secret NAME/KEY>`.
fn container_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let secret_value = |name: &str, key: &str| -> String {
        named(docs, "Secret", name)
            .and_then(|s| s["data"][key].as_str())
            .map(|b64| {
                // kustomize folds long values over lines; Kubernetes' decoder skips the breaks.
                let b64: String = b64.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&b64)
                    .unwrap_or_else(|e| panic!("Secret {name}/{key}: {e}"));
                String::from_utf8(bytes).unwrap()
            })
            .unwrap_or_else(|| format!("<from secret {name}/{key}>"))
    };
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = str_of(&from["configMapRef"]["name"]);
        let cm = named(docs, "ConfigMap", name)
            .unwrap_or_else(|| panic!("envFrom ConfigMap {name} is not in the rendering"));
        for (k, v) in cm["data"].as_object().into_iter().flatten() {
            env.insert(k.clone(), str_of(v).to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = str_of(&var["name"]).to_string();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_string()
        } else if var["valueFrom"]["secretKeyRef"].is_object() {
            let r = &var["valueFrom"]["secretKeyRef"];
            secret_value(str_of(&r["name"]), str_of(&r["key"]))
        } else {
            panic!("{name}: only literal values and secretKeyRef are expected")
        };
        env.insert(name, value);
    }
    env
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| str_of(a).to_string())
        .collect()
}

fn container_port(container: &Value, name: &str) -> Option<u16> {
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .map(|p| p as u16)
}

/// The Service port that reaches `target_port_name` on pods labelled `app`.
fn service_port_for(docs: &[Value], service: &str, app: &str, target: &str) -> Option<u16> {
    let svc = named(docs, "Service", service)?;
    if svc["spec"]["selector"]["app.kubernetes.io/name"] != app {
        return None;
    }
    svc["spec"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["targetPort"] == target)
        .and_then(|p| p["port"].as_u64())
        .map(|p| p as u16)
}

fn assert_hardened(overlay: &str, what: &str, pod: &Value, container: &Value) {
    let non_root = container["securityContext"]["runAsNonRoot"] == true
        || pod["securityContext"]["runAsNonRoot"] == true;
    assert!(non_root, "{overlay}: {what} runs as non-root");
    let sc = &container["securityContext"];
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{overlay}: {what} read-only root"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}: {what}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{overlay}: {what}"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{overlay}: {what}"
    );
}

#[test]
fn kubernetes_server_containers_get_only_settings_the_server_reads() {
    for (overlay, docs) in rendered_overlays() {
        let mut seen = 0;
        for app in ["temporal-state-server", "temporal-state-migrate"] {
            for workload in workloads(&docs, app) {
                let pod = &workload["spec"]["template"]["spec"];
                for container in pod["containers"].as_array().unwrap() {
                    seen += 1;
                    let what = format!("{app}/{}", str_of(&container["name"]));
                    let env = container_env(&docs, container);
                    let cli = parse_server(&env, &args_of(container))
                        .unwrap_or_else(|e| panic!("{overlay}: {what}: {e}"));
                    assert!(
                        cli.config.database_url.is_some(),
                        "{overlay}: {what} has a DATABASE_URL"
                    );
                    assert_hardened(&overlay, &what, pod, container);
                    let expected = if app == "temporal-state-migrate" {
                        ServerCommand::Migrate
                    } else {
                        ServerCommand::Serve
                    };
                    assert_eq!(
                        std::mem::discriminant(&cli.command.unwrap_or(ServerCommand::Serve)),
                        std::mem::discriminant(&expected),
                        "{overlay}: {what} args {:?}",
                        args_of(container)
                    );
                }
            }
        }
        assert!(seen >= 1, "{overlay}: no server container");
    }
}

#[test]
fn kubernetes_probes_ports_and_drain_match_the_server() {
    for (overlay, docs) in rendered_overlays() {
        let deployments = workloads(&docs, "temporal-state-server");
        assert_eq!(deployments.len(), 1, "{overlay}: one server Deployment");
        let deployment = deployments[0];
        assert_eq!(deployment["kind"], "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env = container_env(&docs, container);
        let config = parse_server(&env, &args_of(container)).unwrap().config;

        let grpc = config.grpc_addr.port();
        assert_eq!(
            config.grpc_addr.ip().to_string(),
            "0.0.0.0",
            "{overlay}: GRPC_ADDR"
        );
        assert_eq!(
            container_port(container, "grpc"),
            Some(grpc),
            "{overlay}: grpc port"
        );
        let admin = env.get("ADMIN_ADDR").map(|a| port_of(a));
        assert_eq!(
            container_port(container, "admin"),
            admin,
            "{overlay}: admin port"
        );
        for probe in ["startupProbe", "readinessProbe"] {
            assert_eq!(
                container[probe]["grpc"]["port"].as_u64(),
                Some(u64::from(grpc)),
                "{overlay}: {probe} is a native gRPC probe on GRPC_ADDR's port"
            );
        }
        // Liveness asks whether the process answers, on the admin port (which must be on).
        let liveness = &container["livenessProbe"]["httpGet"];
        assert_eq!(
            liveness["path"], "/healthz",
            "{overlay}: liveness is /healthz"
        );
        assert_eq!(
            liveness["port"], "admin",
            "{overlay}: liveness on the admin port"
        );
        assert!(
            config.admin_addr().is_some(),
            "{overlay}: liveness needs ADMIN_ADDR"
        );
        // The drain: preStop sleep (endpoints and kube-proxy catch up), then the server's own:
        // NOT_SERVING with calls accepted for SHUTDOWN_GRACE_SECS, then SHUTDOWN_TIMEOUT_SECS
        // for calls in flight and the relay's flush; all before the kubelet's SIGKILL.
        let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{overlay}: a preStop sleep"));
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace >= sleep + config.shutdown_grace_secs + config.shutdown_timeout_secs + 5,
            "{overlay}: terminationGracePeriodSeconds {grace} < preStop {sleep} s + \
             SHUTDOWN_GRACE_SECS {} s + SHUTDOWN_TIMEOUT_SECS {} s + 5 s",
            config.shutdown_grace_secs,
            config.shutdown_timeout_secs
        );
        assert!(
            config.shutdown_timeout_secs >= config.request_timeout_secs,
            "{overlay}: SHUTDOWN_TIMEOUT_SECS below REQUEST_TIMEOUT_SECS cuts calls off"
        );

        let svc_grpc = service_port_for(
            &docs,
            "temporal-state-server",
            "temporal-state-server",
            "grpc",
        )
        .unwrap_or_else(|| panic!("{overlay}: the server Service exposes grpc"));
        if admin.is_some() {
            assert!(
                service_port_for(
                    &docs,
                    "temporal-state-server",
                    "temporal-state-server",
                    "admin"
                )
                .is_some(),
                "{overlay}: the server Service exposes admin"
            );
        }

        // The gateway forwards to that Service and port.
        let gateways = workloads(&docs, "temporal-state-gateway");
        assert_eq!(gateways.len(), 1, "{overlay}: one gateway Deployment");
        let gw_pod = &gateways[0]["spec"]["template"]["spec"];
        let gw = &gw_pod["containers"][0];
        assert_hardened(&overlay, "gateway", gw_pod, gw);
        let gw_env = container_env(&docs, gw);
        for key in gw_env.keys() {
            assert!(
                GATEWAY_ENV.contains(&key.as_str()),
                "{overlay}: the gateway reads no {key}"
            );
        }
        for upstream in gw_env["GATEWAY_UPSTREAMS"].split(',') {
            let (host, port, _) = url_parts(upstream.trim(), 80);
            assert_eq!(
                service_port_for(&docs, &host, "temporal-state-server", "grpc"),
                Some(port),
                "{overlay}: upstream {upstream} is the server Service's grpc port"
            );
            assert_eq!(port, svc_grpc);
        }
        let gw_port = port_of(&gw_env["GATEWAY_ADDR"]);
        assert_eq!(
            container_port(gw, "http"),
            Some(gw_port),
            "{overlay}: gateway port"
        );
        assert_eq!(gw["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(gw["livenessProbe"]["httpGet"]["path"], "/healthz");
    }
}

#[test]
fn kubernetes_dev_backends_are_the_overlays_own_statefulsets() {
    let overlays = rendered_overlays();
    let docs = &overlays["dev"];
    let deployment = workloads(docs, "temporal-state-server")[0];
    assert_eq!(deployment["spec"]["replicas"], 1, "dev runs one replica");
    let env = container_env(
        docs,
        &deployment["spec"]["template"]["spec"]["containers"][0],
    );
    for (var, statefulset, default_port) in [
        ("DATABASE_URL", "postgres", 5432),
        ("REDIS_URL", "redis", 6379),
        ("NATS_URL", "nats", 4222),
    ] {
        let url = &env[var];
        let (host, port, _) = url_parts(url, default_port);
        assert_eq!(host, statefulset, "{var}={url}");
        let set = named(docs, "StatefulSet", statefulset)
            .unwrap_or_else(|| panic!("dev: no StatefulSet {statefulset}"));
        let svc = named(docs, "Service", &host).unwrap_or_else(|| panic!("dev: no Service {host}"));
        assert_eq!(
            svc["spec"]["selector"]["app.kubernetes.io/name"],
            set["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        );
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(u64::from(port))),
            "dev: Service {host} has port {port}"
        );
    }
    let nats = named(docs, "StatefulSet", "nats").unwrap();
    assert!(
        args_of(&nats["spec"]["template"]["spec"]["containers"][0]).contains(&"--jetstream".into()),
        "dev: NATS runs JetStream"
    );
}

#[test]
fn kubernetes_production_has_the_operational_objects() {
    let overlays = rendered_overlays();
    let docs = &overlays["production"];
    let server_labels = serde_json::json!({"app.kubernetes.io/name": "temporal-state-server"});

    let deployment = workloads(docs, "temporal-state-server")[0];
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns the replica count; `kubectl apply` must not reset it"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread");
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "topology.kubernetes.io/zone")
    );
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname")
    );
    let resources = &pod["containers"][0]["resources"];
    for field in ["requests", "limits"] {
        assert!(resources[field]["cpu"].is_string() && resources[field]["memory"].is_string());
    }

    let hpa = named(docs, "HorizontalPodAutoscaler", "temporal-state-server").expect("an HPA");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        "temporal-state-server"
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2,
        "N replicas"
    );
    let max_replicas = hpa["spec"]["maxReplicas"].as_u64().unwrap();
    let env = container_env(docs, &pod["containers"][0]);
    let pool: u64 = env["DB_POOL_SIZE"].parse().unwrap();
    assert!(
        max_replicas * pool <= 90,
        "HPA maxReplicas {max_replicas} x DB_POOL_SIZE {pool} must fit PostgreSQL's default \
         max_connections (100) with room for the migrations and an operator"
    );
    let pdb = named(docs, "PodDisruptionBudget", "temporal-state-server").expect("a PDB");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], server_labels);

    let policy = named(docs, "NetworkPolicy", "temporal-state-server").expect("a NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], server_labels);
    let grpc_rule = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == "grpc")
        .expect("a rule for the grpc port");
    assert!(
        grpc_rule["from"].as_array().unwrap().iter().any(
            |f| f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                == "temporal-state-gateway"
        ),
        "the gateway may reach the server"
    );
    assert!(
        grpc_rule["from"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["podSelector"].is_object()),
        "no rule admits whole namespaces or address blocks to the grpc port"
    );

    let job = workloads(docs, "temporal-state-migrate");
    assert!(
        job.len() == 1 && job[0]["kind"] == "Job",
        "a migrations Job"
    );

    let ingress = named(docs, "Ingress", "temporal-state-gateway").expect("an Ingress");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], "temporal-state-gateway");
    assert!(named(docs, "Service", "temporal-state-gateway").is_some());

    let monitor = named(docs, "ServiceMonitor", "temporal-state-server").expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], server_labels);
    assert!(
        service_port_for(
            docs,
            "temporal-state-server",
            "temporal-state-server",
            "admin"
        )
        .is_some()
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    let rules = named(docs, "PrometheusRule", "temporal-state-server").expect("a PrometheusRule");
    let mut alerts = BTreeSet::new();
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = str_of(&rule["expr"]);
            for metric in metric_names(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .filter(|b| METRICS.contains(b))
                    .unwrap_or(&metric);
                assert!(
                    METRICS.contains(&base),
                    "alert {}: {metric} is not a metric the server exports ({METRICS:?})",
                    rule["alert"]
                );
            }
            alerts.insert(str_of(&rule["alert"]).to_string());
        }
    }
    for needed in [
        "TemporalStateHighErrorRate",
        "TemporalStateHighLatencyP99",
        "TemporalStateOutboxLag",
        "TemporalStateRelayStopped",
        "TemporalStatePoolSaturation",
    ] {
        assert!(
            alerts.contains(needed),
            "alert {needed} is missing: {alerts:?}"
        );
    }

    // Every alert has its section in the runbook, where its runbook_url points.
    let runbook = std::fs::read_to_string(repo_root().join("deploy/README.md")).unwrap();
    for alert in &alerts {
        assert!(
            runbook.contains(&format!("### {alert}")),
            "deploy/README.md has no section `### {alert}`"
        );
    }
}

/// The `tse_` metric names an expression mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("tse_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum(rate(tse_a_total{x=\"y\"}[5m])) / max(tse_b) and not_tse_c"),
        ["tse_a_total".to_string(), "tse_b".to_string()].into()
    );
}
