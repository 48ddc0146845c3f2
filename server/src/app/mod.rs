//! Use cases, split as CQRS: each handler holds only the ports it uses, so a query cannot
//! reach the event store and a command's effects are all in one place. They orchestrate the
//! ports and the pure domain; they hold no SQL and no protobuf, and take typed inputs (ids,
//! type keys, pages), never transport strings.
//!
//! - [`Commands`] (`commands.rs`): the write side, the only holder of the [`EventStore`].
//! - [`Queries`] (`queries.rs`): listings and time travel over the [`Catalog`] and the history.
//! - [`CurrentStates`] (`current.rs`): current states through the state cache, and its upkeep.
//! - [`Subscriptions`] (`subscriptions.rs`): Subscribe, replay then live, over the bus.
//! - [`GlobalLog`] (`log.rs`): ReadEvents, the global event log in commit order from a position.
//! - [`Analytics`] (`analytics.rs`): aggregates over a type's events.
//! - [`Retention`] (`retention.rs`): RETENTION_DAYS, dropping old history while every current
//!   state stays rebuildable.
//! - `registry.rs`: the `TypeRegistry` they share: types and fixed instance facts in memory.
//! - `budget.rs`, `paging.rs`: what a page may hold and how it continues.
//! - [`metrics`]: the name and meaning of every exported metric (recorded through the `metrics`
//!   facade, here and in the adapters and the gRPC layer).

mod analytics;
mod budget;
mod commands;
mod current;
mod error;
mod log;
pub mod metrics;
mod paging;
mod queries;
mod registry;
mod retention;
mod subscriptions;

use std::sync::Arc;

pub use analytics::Analytics;
pub use commands::{Commands, Creation, EventInput, MAX_SCHEMA_VIOLATIONS, Target, TypeChange};
pub use current::CurrentStates;
pub use error::AppError;
pub use log::{GlobalLog, LogRead, LogScope};
pub use paging::Page;
pub use queries::{InstanceListing, Queries, StateAt, TimeAxis, TimelineEntry};
pub use retention::{Retention, RetentionBatch, RetentionReport};
pub use subscriptions::{EventStream, Subscriptions};

use registry::TypeRegistry;

use crate::domain::StateLimits;
use crate::ports::{AnalyticsReader, Catalog, EventBus, EventStore, HistoryReader, StateCache};

/// The default of [`Limits::max_response_bytes`]: 4 MiB, gRPC's customary message size.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Limits applied to every command, and to what a response may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payload, metadata, schema or initial state, as serialized JSON bytes.
    pub max_payload_bytes: usize,
    /// Largest and deepest state a write may produce; its depth bounds every document sent.
    pub state: StateLimits,
    /// Most events in one ApplyEvents batch.
    pub max_batch_events: usize,
    /// Events a Subscribe stream may hold for a slow reader before it is cut off.
    pub subscriber_buffer: usize,
    /// Largest encoded response message: the server's `max_encoding_message_size`. Pages
    /// (GetHistory, GetFieldTimeline, ListInstances, ListEntityTypes) stop early, with a
    /// next_page_token, before their items would pass a fraction of it.
    pub max_response_bytes: usize,
    /// Largest payload plus metadata (JSON bytes) of one event, when events are published to a
    /// bus whose messages are bounded (NATS `max_payload` less the envelope). None: no bound.
    pub max_event_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            state: StateLimits::default(),
            max_batch_events: 1000,
            subscriber_buffer: 1024,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_event_bytes: None,
        }
    }
}

/// The adapters the application runs over. One store usually implements several ports.
pub struct Ports {
    /// The write side; also the catalog commands read.
    pub store: Arc<dyn EventStore>,
    /// Types and instances as they are now, for every reader.
    pub catalog: Arc<dyn Catalog>,
    /// Events and snapshots, for time travel and replays.
    pub history: Arc<dyn HistoryReader>,
    /// None on backends without analytics: those RPCs answer UNIMPLEMENTED.
    pub analytics: Option<Arc<dyn AnalyticsReader>>,
    /// Current states close to the readers; None reads the catalog every time.
    pub state_cache: Option<Arc<dyn StateCache>>,
    /// Where committed events go for subscribers. The caller (the server's wiring) chooses it,
    /// so `app/` never names an adapter.
    pub bus: Arc<dyn EventBus>,
}

/// The application: one handler per side, sharing one type registry. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub commands: Commands,
    pub queries: Queries,
    pub current: CurrentStates,
    pub subscriptions: Subscriptions,
    pub analytics: Analytics,
    pub log: GlobalLog,
}

impl App {
    pub fn new(ports: Ports, limits: Limits) -> Self {
        let registry = Arc::new(TypeRegistry::new(ports.catalog.clone()));
        let queries = Queries::new(
            ports.catalog.clone(),
            registry.clone(),
            ports.history.clone(),
            budget::page_budget(limits.max_response_bytes),
        );
        let current =
            CurrentStates::new(ports.catalog.clone(), registry.clone(), ports.state_cache);
        let analytics = Analytics::new(ports.analytics, ports.history.clone(), registry.clone());
        let log = GlobalLog::new(
            registry.clone(),
            ports.history.clone(),
            budget::page_budget(limits.max_response_bytes),
        );
        let subscriptions = Subscriptions::new(
            ports.catalog,
            registry.clone(),
            ports.history,
            ports.bus.clone(),
            limits.subscriber_buffer,
            log.clone(),
        );
        let commands = Commands::new(
            ports.store,
            registry,
            current.clone(),
            queries.clone(),
            ports.bus,
            limits,
        );
        Self {
            commands,
            queries,
            current,
            subscriptions,
            analytics,
            log,
        }
    }
}
