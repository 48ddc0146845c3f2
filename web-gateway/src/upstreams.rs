//! The engines the gateway forwards to, and which of them may take a call now. Each is checked
//! with the gRPC health protocol every few seconds; one that refuses a connection is taken out of
//! rotation at once, without waiting for the next check, and comes back when a check says
//! SERVING again. Calls go round-robin over those that may take one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::Authority;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
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

/// One engine.
pub struct Upstream {
    pub authority: Authority,
    health: AtomicU8,
    /// A gRPC channel of its own for the health checks, so a check never queues behind calls.
    checker: HealthClient<Channel>,
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
                info!(upstream = %self.authority, ?before, "upstream is serving");
            } else {
                warn!(upstream = %self.authority, ?before, now = ?health, reason = why, "upstream out of rotation");
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
                    authority,
                    health: AtomicU8::new(Health::Unknown as u8),
                    checker: HealthClient::new(channel),
                }
            })
            .collect();
        Self {
            upstreams,
            next: AtomicUsize::new(0),
            check_timeout: connect_timeout,
            born: Instant::now(),
            last_check: AtomicU64::new(0),
            rechecking: tokio::sync::Mutex::new(()),
        }
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
