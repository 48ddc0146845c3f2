//! Use cases: commands (the write side), queries (time travel) and analytics. They
//! orchestrate the ports and the pure domain; they hold no SQL and no protobuf.

mod analytics;
mod budget;
mod cache;
mod commands;
mod error;
mod live;
pub mod paging;
mod queries;

use std::sync::Arc;

pub use commands::EventInput;
pub use error::AppError;
pub use paging::Page;
pub use queries::{StateAt, TimelineEntry};

use crate::domain::limits::measure_object;
use crate::domain::{State, StateLimits};
use crate::ports::{AnalyticsReader, EventBus, EventStore, HistoryReader, StateCache, TypeKey};
use cache::Caches;
use uuid::Uuid;

/// The default of [`Limits::max_response_bytes`]: 4 MiB, gRPC's customary message size.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Limits applied to every command.
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

/// The application: every use case, over whichever adapters implement the ports.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn EventStore>,
    history: Arc<dyn HistoryReader>,
    /// None on backends without analytics: those RPCs answer UNIMPLEMENTED.
    analytics: Option<Arc<dyn AnalyticsReader>>,
    /// Current states close to the readers; None reads the store every time.
    cache: Option<Arc<dyn StateCache>>,
    /// Where committed events go for subscribers.
    bus: Arc<dyn EventBus>,
    limits: Limits,
    caches: Arc<Caches>,
    /// Subscribe streams open now (see [`App::open_subscriptions`]).
    subscriptions: Arc<std::sync::atomic::AtomicUsize>,
}

impl App {
    /// The caller (the server's wiring) chooses the bus, so `app/` never names an adapter.
    pub fn new(
        store: Arc<dyn EventStore>,
        history: Arc<dyn HistoryReader>,
        bus: Arc<dyn EventBus>,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            history,
            analytics: None,
            cache: None,
            bus,
            limits,
            caches: Arc::new(Caches::default()),
            subscriptions: Arc::default(),
        }
    }

    /// Serves current states through `cache`, falling back to the store on a miss or an error.
    pub fn with_cache(mut self, cache: Arc<dyn StateCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Enables the analytics use cases over `analytics`.
    pub fn with_analytics(mut self, analytics: Arc<dyn AnalyticsReader>) -> Self {
        self.analytics = Some(analytics);
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Bytes one page of a listing may carry (see [`Limits::max_response_bytes`]).
    fn page_budget(&self) -> usize {
        budget::page_budget(self.limits.max_response_bytes)
    }

    /// Checks a JSON document's size and depth against the limits, and that it holds no NUL
    /// character (PostgreSQL cannot store one; every backend refuses it alike). Measured
    /// without serializing it.
    fn check_size(&self, field: &str, value: &State) -> Result<(), AppError> {
        if value.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(AppError::invalid(
                field,
                "contains a NUL character (\\u0000), which cannot be stored",
            ));
        }
        let measured = measure_object(value);
        // Deeper documents could not be read back through protobuf by every client.
        if measured.depth > self.limits.state.max_depth {
            return Err(AppError::invalid(
                field,
                format!(
                    "nests objects and arrays {} levels deep, over MAX_STATE_DEPTH ({})",
                    measured.depth, self.limits.state.max_depth
                ),
            ));
        }
        let size = measured.bytes;
        if size > self.limits.max_payload_bytes {
            return Err(AppError::TooLarge(format!(
                "{field} is {size} bytes, over the limit of {} bytes",
                self.limits.max_payload_bytes
            )));
        }
        Ok(())
    }

    /// Refuses an event the event stream could not carry, before anything is stored: a
    /// published event that could never be delivered would otherwise wait in the outbox.
    fn check_event_bytes(&self, payload: &State, metadata: &State) -> Result<(), AppError> {
        let Some(max) = self.limits.max_event_bytes else {
            return Ok(());
        };
        let size = json_len(payload).saturating_add(json_len(metadata));
        if size > max {
            return Err(AppError::TooLarge(format!(
                "payload and metadata are {size} bytes of JSON together, over the {max} bytes \
                 one published event may carry (the NATS server's max_payload less the envelope)"
            )));
        }
        Ok(())
    }
}

/// Length of a value's compact JSON, counted without building it.
fn json_len(value: &State) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that cannot be serialized counts as nothing
    // here and is refused where it is serialized.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Parses a UUID request field.
pub(crate) fn parse_id(field: &str, raw: &str) -> Result<Uuid, AppError> {
    if raw.is_empty() {
        return Err(AppError::invalid(field, "is required"));
    }
    Uuid::parse_str(raw).map_err(|_| AppError::invalid(field, format!("{raw:?} is not a UUID")))
}

/// An entity type named by id or by name.
pub(crate) fn parse_type_key(raw: &str) -> Result<TypeKey, AppError> {
    if raw.is_empty() {
        return Err(AppError::invalid(
            "entity_type",
            "is required (an id or a name)",
        ));
    }
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(TypeKey::Id(id));
    }
    crate::domain::EntityTypeName::parse(raw)
        .map(|n| TypeKey::Name(n.as_str().to_string()))
        .map_err(|_| {
            AppError::invalid(
                "entity_type",
                format!("{raw:?} is neither a UUID nor a valid entity type name"),
            )
        })
}
