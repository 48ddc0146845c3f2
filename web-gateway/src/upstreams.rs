//! The engines the gateway forwards to, and which of them may take a call now. Each is checked
//! with the gRPC health protocol every few seconds; one that refuses a connection is taken out of
//! rotation at once, without waiting for the next check, and comes back when a check says
//! SERVING again. Calls go round-robin over those that may take one.
//!
//! An engine is reached over the network (`--upstream`), or, when the server mounts the console,
//! in this very process: its gRPC service stack is called directly ([`EngineSlot`]), with no
//! socket, no HTTP/2 framing and no second connection between the two, and is checked the same
//! way.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::Uri;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;
use tracing::{info, warn};

/// What the gateway knows of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet: it may take calls, so the first calls after a start need not wait for
    /// the first check (a connection refusal still takes it out at once).
    Unknown = 0,
    /// Its last health check answered SERVING.
    Serving = 1,
    /// It answers, but says it cannot serve (its store is down, or it is shutting down).
    NotServing = 2,
    /// It refused a connection or did not answer its health check in time.
    Down = 3,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Health::Serving,
            2 => Health::NotServing,
            3 => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn takes_calls(self) -> bool {
        matches!(self, Health::Unknown | Health::Serving)
    }
}

/// An engine's gRPC service stack (tonic-web and every layer of the server included), called in
/// this process. Requests are gRPC-web, as the browser sent them; so are the answers.
pub type Engine = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    crate::BoxError,
>;

/// Where the gateway finds an engine that runs in the same process: empty until the engine
/// serves, and emptied again when it starts refusing calls at shutdown (calls through the
/// gateway are then refused as the engine's own listener refuses them: UNAVAILABLE, safe to
/// retry). Cloning shares the slot.
#[derive(Clone, Default)]
pub struct EngineSlot(Arc<RwLock<Option<Engine>>>);

impl EngineSlot {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine is serving: calls go to it from now on.
    pub fn set(&self, engine: Engine) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(engine);
    }

    /// The engine refuses new calls from now on.
    pub fn close(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The engine, while it takes calls.
    pub fn get(&self) -> Option<Engine> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How calls reach one engine.
pub enum Target {
    /// Over HTTP/2 (prior knowledge, as gRPC speaks it), at this authority.
    Network(http::uri::Authority),
    /// In this process.
    InProcess(EngineSlot),
}

/// What health checks are sent through: a gRPC channel, or the in-process engine.
type Checker = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    CheckError,
>;

/// Why a health check got no answer. A type of its own rather than a bare boxed error: the health
/// client's `Into<StdError>` bound on a `Box<dyn Error>` trips rustc's lifetime erasure in the
/// spawned futures ("implementation of `From` is not general enough").
#[derive(Debug)]
pub struct CheckError(crate::BoxError);

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// One engine.
pub struct Upstream {
    /// How the logs name it: its authority, or `in-process`.
    pub name: String,
    pub target: Target,
    health: AtomicU8,
    /// A gRPC channel of its own for the health checks, so a check never queues behind calls.
    checker: HealthClient<Checker>,
}

impl Upstream {
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records a new health, logging the changes.
    fn set(&self, health: Health, why: &str) {
        let before = Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed));
        if before != health {
            if health == Health::Serving {
                info!(upstream = %self.name, ?before, "upstream is serving");
            } else {
                warn!(upstream = %self.name, ?before, now = ?health, reason = why, "upstream out of rotation");
            }
        }
    }
}

/// Least time between two checks asked for by calls that found no engine in rotation.
const RECHECK_GAP: Duration = Duration::from_millis(250);

/// Every engine, and the round-robin cursor.
pub struct Pool {
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    check_timeout: Duration,
    /// When the pool was made: the origin of `last_check`.
    born: Instant,
    /// Milliseconds after `born` at which the last check of every engine started (0: none yet).
    last_check: AtomicU64,
    /// Held while a call's [`Pool::recheck`] runs.
    rechecking: tokio::sync::Mutex<()>,
}

impl Pool {
    /// The pool of `uris` (each `http://host:port/`), all [`Health::Unknown`]. Health checks
    /// connect within `connect_timeout` and must answer within it too.
    pub fn new(uris: &[Uri], connect_timeout: Duration) -> Self {
        let upstreams = uris
            .iter()
            .map(|base| {
                let authority = base
                    .authority()
                    .cloned()
                    .expect("upstream URIs are validated with an authority");
                let channel = Endpoint::from(base.clone())
                    .connect_timeout(connect_timeout)
                    .timeout(connect_timeout)
                    .connect_lazy();
                Upstream {
                    name: authority.to_string(),
                    target: Target::Network(authority),
                    health: AtomicU8::new(Health::Unknown as u8),
                    checker: HealthClient::new(BoxCloneSyncService::new(
                        channel.map_err(|e| CheckError(Box::new(e))),
                    )),
                }
            })
            .collect();
        Self::of(upstreams, connect_timeout)
    }

    /// The pool of the one engine in `slot`, in this process. It is [`Health::Down`] until its
    /// first health check, so no call is tried before the engine serves.
    pub fn in_process(slot: EngineSlot, check_timeout: Duration) -> Self {
        let through = slot.clone();
        let checker = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let engine = through.get();
            async move {
                match engine {
                    Some(engine) => engine.oneshot(request).await.map_err(CheckError),
                    None => Err(CheckError(
                        "the engine in this process is not serving".into(),
                    )),
                }
            }
        });
        let upstream = Upstream {
            name: "in-process".to_string(),
            target: Target::InProcess(slot),
            health: AtomicU8::new(Health::Down as u8),
            checker: HealthClient::new(BoxCloneSyncService::new(checker)),
        };
        Self::of(vec![upstream], check_timeout)
    }

    fn of(upstreams: Vec<Upstream>, check_timeout: Duration) -> Self {
        Self {
            upstreams,
            next: AtomicUsize::new(0),
            check_timeout,
            born: Instant::now(),
            last_check: AtomicU64::new(0),
            rechecking: tokio::sync::Mutex::new(()),
        }
    }

    /// How the logs name each engine.
    pub fn names(&self) -> Vec<&str> {
        self.upstreams.iter().map(|u| u.name.as_str()).collect()
    }

    pub fn get(&self, index: usize) -> &Upstream {
        &self.upstreams[index]
    }

    /// The next engine that may take a call, round-robin, skipping those in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.upstreams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|i| !tried.contains(i) && self.upstreams[*i].health().takes_calls())
    }

    /// An engine refused a connection: out of rotation until a health check says SERVING.
    pub fn mark_down(&self, index: usize, why: &str) {
        self.upstreams[index].set(Health::Down, why);
    }

    /// Whether some engine's last health check answered SERVING (what `/readyz` reports).
    pub fn any_serving(&self) -> bool {
        self.upstreams.iter().any(|u| u.health() == Health::Serving)
    }

    /// Checks every engine now, for a call that found none in rotation, unless a check started
    /// less than [`RECHECK_GAP`] ago. Just after a start (an engine that said NOT_SERVING while
    /// it opened its store) or as an engine comes back, the call asks again instead of failing
    /// until the next periodic check; during an outage, calls cost at most one round of checks
    /// per gap, however many there are.
    pub async fn recheck(&self) {
        // One check at a time: calls arriving meanwhile wait for it and use its answer.
        let _one = self.rechecking.lock().await;
        let last = self.last_check.load(Ordering::Relaxed);
        if last != 0 && self.millis().saturating_sub(last) < RECHECK_GAP.as_millis() as u64 {
            return; // just checked (by another call, or the periodic task): pick again
        }
        self.check_all().await;
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks every engine once, all at the same time.
    pub async fn check_all(&self) {
        self.last_check
            .store(self.millis().max(1), Ordering::Relaxed);
        let checks = self.upstreams.iter().map(|u| self.check(u));
        futures_util::future::join_all(checks).await;
    }

    async fn check(&self, upstream: &Upstream) {
        let mut client = upstream.checker.clone();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let (health, why) =
            match tokio::time::timeout(self.check_timeout, client.check(request)).await {
                Ok(Ok(answer)) => match answer.into_inner().status() {
                    ServingStatus::Serving => (Health::Serving, String::new()),
                    other => (
                        Health::NotServing,
                        format!("health check answered {}", other.as_str_name()),
                    ),
                },
                Ok(Err(status)) => (
                    Health::Down,
                    format!(
                        "health check failed: {} {}",
                        status.code(),
                        status.message()
                    ),
                ),
                Err(_) => (
                    Health::Down,
                    format!("no health answer within {:?}", self.check_timeout),
                ),
            };
        upstream.set(health, &why);
    }

    /// Checks every engine now and then every `interval`, until the task is aborted.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        loop {
            self.check_all().await;
            tokio::time::sleep(interval).await;
        }
    }
}
