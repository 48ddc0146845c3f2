//! The admin HTTP server on ADMIN_ADDR: `/metrics` in Prometheus' text format, `/healthz` (the
//! process answers: for liveness) and `/readyz` (the store answers and the server is not
//! draining: for load balancers that do not speak gRPC health).
//!
//! One process has one metrics registry: the `metrics` facade records into a global recorder,
//! installed the first time a server starts with an admin port. Several servers in one process
//! (tests) share it and each shows the process's totals.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::app::metrics as names;

/// Refreshes the gauges that are sampled rather than recorded (pool, outbox) before a scrape.
pub type Sampler = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Longest a scrape waits for the sampled gauges (an outbox count on a slow database); past
/// it the previous values are shown.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::GRPC_DURATION.into()),
                names::DURATION_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::APPEND_BATCH_EVENTS.into()),
                    names::BATCH_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::GROUP_COMMIT_APPENDS.into()),
                    names::BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("another metrics recorder is installed: /metrics shows nothing");
        }
        names::describe();
        handle
    })
}

#[derive(Clone)]
struct Admin {
    handle: PrometheusHandle,
    sample: Sampler,
    ready: watch::Receiver<bool>,
}

/// Serves the admin endpoints on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, sample: Sampler, ready: watch::Receiver<bool>) {
    let state = Admin {
        handle: prometheus().clone(),
        sample,
        ready,
    };
    let router = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    if let Err(e) = axum::serve(listener, router).await {
        warn!(error = %e, "admin server stopped");
    }
}

async fn scrape(State(admin): State<Admin>) -> impl IntoResponse {
    let _ = tokio::time::timeout(SAMPLE_TIMEOUT, (admin.sample)()).await;
    admin.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.handle.render(),
    )
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if *admin.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store does not answer, or the server is draining\n",
        )
    }
}
