//! The name, kind and meaning of every metric the server exports. Code records through the
//! `metrics` facade, which does nothing until the admin port installs the Prometheus recorder
//! (`server.rs`): the application, the adapters and the gRPC layer name a metric here and never
//! the exporter. The facade is not an adapter, so `app/` records its own use-case figures
//! (append batch sizes, cache hits, subscriptions); `domain/` records nothing.
//!
//! The deployment's alerts (`deploy/kubernetes/overlays/production/prometheusrule.yaml`) use
//! these names; `server/tests/deploy_manifests.rs` checks that they use no other.

/// Calls finished, by `method` (the gRPC path, or `unknown` for a path no service has) and
/// `code` (`Ok`, `InvalidArgument`, … as tonic names them). Counter.
pub const GRPC_REQUESTS: &str = "tse_grpc_requests_total";
/// Time from a call's request to its final status, by `method`. Histogram in seconds; a
/// Subscribe's is the life of its stream.
pub const GRPC_DURATION: &str = "tse_grpc_request_duration_seconds";
/// Events per committed append (1 for ApplyEvent, the batch for ApplyEvents). Histogram.
pub const APPEND_BATCH_EVENTS: &str = "tse_append_batch_events";
/// Appends committed together by one group commit (one transaction and one commit on
/// PostgreSQL or the embedded store), whether each moved its instance or not. Histogram; its
/// mean under load says how much the batching saves.
pub const GROUP_COMMIT_APPENDS: &str = "tse_group_commit_appends";
/// Current-state reads answered by the state cache. Counter.
pub const CACHE_HITS: &str = "tse_cache_hits_total";
/// Current-state reads that went to the store: not cached, the cache failing or not trusted
/// for that instance. Counter; only counted where a state cache is configured.
pub const CACHE_MISSES: &str = "tse_cache_misses_total";
/// Events waiting in the transactional outbox, sampled at each scrape. Gauge.
pub const OUTBOX_ROWS: &str = "tse_outbox_rows";
/// Age of the oldest event waiting in the outbox (0 when empty), sampled at each scrape. Gauge.
pub const OUTBOX_OLDEST_AGE: &str = "tse_outbox_oldest_age_seconds";
/// Events the relay published and JetStream acknowledged. Counter.
pub const RELAY_PUBLISHED: &str = "tse_relay_published_total";
/// Publishes JetStream refused or that failed (timeouts, NATS down). Counter.
pub const RELAY_FAILURES: &str = "tse_relay_publish_failures_total";
/// Outbox rows moved to `outbox_dead_letters`. Counter.
pub const RELAY_DEAD_LETTERED: &str = "tse_relay_dead_lettered_total";
/// Unix time of the relay's last acknowledged publish. Gauge.
pub const RELAY_LAST_PUBLISH: &str = "tse_relay_last_publish_timestamp_seconds";
/// Database connections handed out now. Gauge, sampled at each scrape.
pub const DB_POOL_IN_USE: &str = "tse_db_pool_in_use";
/// Callers waiting for a database connection. Gauge, sampled at each scrape.
pub const DB_POOL_WAITING: &str = "tse_db_pool_waiting";
/// Most database connections the pool opens. Gauge.
pub const DB_POOL_SIZE: &str = "tse_db_pool_size";
/// Subscribe streams open now. Gauge.
pub const SUBSCRIPTIONS_OPEN: &str = "tse_subscriptions_open";
/// Subscribe streams cut off because their reader fell more than SUBSCRIBER_BUFFER events
/// behind. Counter.
pub const SUBSCRIPTIONS_CUT_OFF: &str = "tse_subscriptions_cut_off_total";
/// Snapshots stored by committed appends (one at every SNAPSHOT_INTERVAL-th version of an
/// instance). Counter.
pub const SNAPSHOTS_WRITTEN: &str = "tse_snapshots_written_total";
/// Events deleted by retention (RETENTION_DAYS). Counter.
pub const RETENTION_EVENTS_DELETED: &str = "tse_retention_events_deleted_total";
/// Snapshots deleted by retention: those older than the one each instance keeps. Counter.
pub const RETENTION_SNAPSHOTS_DELETED: &str = "tse_retention_snapshots_deleted_total";
/// The retention horizon in force after the last pass, in Unix time. Gauge.
pub const RETENTION_HORIZON: &str = "tse_retention_horizon_timestamp_seconds";

/// Every name above: what dashboards and alerts may use (`_bucket`, `_sum` and `_count` added to
/// the histograms').
pub const ALL: &[&str] = &[
    GRPC_REQUESTS,
    GRPC_DURATION,
    APPEND_BATCH_EVENTS,
    GROUP_COMMIT_APPENDS,
    CACHE_HITS,
    CACHE_MISSES,
    OUTBOX_ROWS,
    OUTBOX_OLDEST_AGE,
    RELAY_PUBLISHED,
    RELAY_FAILURES,
    RELAY_DEAD_LETTERED,
    RELAY_LAST_PUBLISH,
    DB_POOL_IN_USE,
    DB_POOL_WAITING,
    DB_POOL_SIZE,
    SUBSCRIPTIONS_OPEN,
    SUBSCRIPTIONS_CUT_OFF,
    SNAPSHOTS_WRITTEN,
    RETENTION_EVENTS_DELETED,
    RETENTION_SNAPSHOTS_DELETED,
    RETENTION_HORIZON,
];

/// Buckets of [`GRPC_DURATION`], in seconds: from a cached read to the longest deadline.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of [`APPEND_BATCH_EVENTS`] and [`GROUP_COMMIT_APPENDS`].
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Registers every metric's help text with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(GRPC_REQUESTS, "gRPC calls finished, by method and code");
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "gRPC call duration until its final status, by method"
    );
    describe_histogram!(APPEND_BATCH_EVENTS, "events per committed append");
    describe_histogram!(
        GROUP_COMMIT_APPENDS,
        "appends committed together by one group commit"
    );
    describe_counter!(CACHE_HITS, "current-state reads answered by the cache");
    describe_counter!(CACHE_MISSES, "current-state reads that went to the store");
    describe_gauge!(OUTBOX_ROWS, "events waiting in the outbox");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "age of the oldest event waiting in the outbox"
    );
    describe_counter!(RELAY_PUBLISHED, "events published to JetStream");
    describe_counter!(
        RELAY_FAILURES,
        "publishes refused by or failed to reach JetStream"
    );
    describe_counter!(RELAY_DEAD_LETTERED, "outbox rows moved to the dead letters");
    describe_gauge!(
        RELAY_LAST_PUBLISH,
        Unit::Seconds,
        "unix time of the last acknowledged publish"
    );
    describe_gauge!(DB_POOL_IN_USE, "database connections in use");
    describe_gauge!(DB_POOL_WAITING, "callers waiting for a database connection");
    describe_gauge!(DB_POOL_SIZE, "most database connections");
    describe_gauge!(SUBSCRIPTIONS_OPEN, "Subscribe streams open");
    describe_counter!(
        SUBSCRIPTIONS_CUT_OFF,
        "Subscribe streams cut off for falling behind"
    );
    describe_counter!(SNAPSHOTS_WRITTEN, "snapshots stored");
    describe_counter!(RETENTION_EVENTS_DELETED, "events deleted by retention");
    describe_counter!(
        RETENTION_SNAPSHOTS_DELETED,
        "snapshots deleted by retention"
    );
    describe_gauge!(
        RETENTION_HORIZON,
        Unit::Seconds,
        "unix time of the retention horizon in force"
    );
}
