//! Live subscriptions: an instance's history from a version, then live events, with no gap and
//! no duplicate; a reader that falls behind is cut off, never waited for.
//!
//! From a position ([`Subscriptions::subscribe_log`]), the global log instead: the store is the
//! only source of events, read page by page from the position, and the bus only wakes the
//! reader when something committed. Listening starts before the first read, so an event
//! committed at any moment is either in a read or announced after it; and each read continues
//! from the position the previous one covered, so the stream has no gap and no duplicate with
//! or without NATS, and in whatever order the bus announces events. Such a stream waits for a
//! slow reader (the store can always be read again) instead of cutting it off.

use futures::{FutureExt, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::AppError;
use super::error::require_some;
use super::log::{GlobalLog, LogScope};
use super::registry::TypeRegistry;
use crate::domain::{Access, Principal};
use crate::ports::{
    BusError, Catalog, EventBus, EventRecord, HistoryFilter, HistoryReader, LiveFilter, TypeKey,
};

/// Events read per round trip while replaying history.
const REPLAY_BATCH: usize = 1000;

/// A subscription's events. When the subscriber falls behind, the producer flags it and stops;
/// the very next read yields RESOURCE_EXHAUSTED (skipping what was still buffered) and the
/// stream ends — so the error arrives however long the reader was stalled.
pub struct EventStream {
    rx: mpsc::Receiver<Result<EventRecord, AppError>>,
    cut_off: Arc<AtomicBool>,
    buffer: usize,
    done: bool,
}

impl futures::Stream for EventStream {
    type Item = Result<EventRecord, AppError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cut_off.load(Ordering::Acquire) {
            self.done = true;
            return Poll::Ready(Some(Err(lagged(self.buffer))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) if self.cut_off.load(Ordering::Acquire) => {
                self.done = true;
                Poll::Ready(Some(Err(lagged(self.buffer))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }
}

/// The Subscribe use case: replay from the history, then live events from the bus.
#[derive(Clone)]
pub struct Subscriptions {
    /// Checks that a subscribed instance exists.
    catalog: Arc<dyn Catalog>,
    /// Resolves a subscribed entity type to the name events carry.
    registry: Arc<TypeRegistry>,
    /// Where a replay reads, and where a gap in the live stream is filled from.
    history: Arc<dyn HistoryReader>,
    /// Where committed events arrive.
    bus: Arc<dyn EventBus>,
    /// Events a stream may hold for a slow reader before it is cut off.
    buffer: usize,
    /// Subscribe streams open now (see [`Subscriptions::open`]).
    open: Arc<AtomicUsize>,
    /// Where a subscription from a position reads.
    log: GlobalLog,
}

impl Subscriptions {
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        registry: Arc<TypeRegistry>,
        history: Arc<dyn HistoryReader>,
        bus: Arc<dyn EventBus>,
        buffer: usize,
        log: GlobalLog,
    ) -> Self {
        Self {
            catalog,
            registry,
            history,
            bus,
            buffer: buffer.max(1),
            open: Arc::default(),
            log,
        }
    }

    /// The global log after `from_position` in the scope of `entity_types` and `event_types`
    /// (see [`GlobalLog::scope`]), then on as events commit: in position order, with no gap and
    /// no duplicate. OUT_OF_RANGE for a position before what retention deleted.
    pub async fn subscribe_log(
        &self,
        principal: &Principal,
        from_position: i64,
        entity_types: &[TypeKey],
        event_types: Vec<String>,
    ) -> Result<EventStream, AppError> {
        let scope = self
            .log
            .scope(principal, entity_types, event_types.clone())
            .await?;
        self.log.check_retained(from_position).await?;
        // Wake-ups only: which events are delivered is decided by the store reads.
        let filter = LiveFilter {
            event_types,
            ..LiveFilter::default()
        };
        // Listen before the first read, so nothing committed after it goes unannounced.
        let live = self.bus.subscribe(filter.clone()).await.ok();
        let buffer = self.buffer;
        let (tx, rx) = mpsc::channel(buffer);
        let follower = LogFollower {
            tx,
            log: self.log.clone(),
            bus: self.bus.clone(),
            scope,
            filter,
        };
        let open = OpenSubscription::new(self.open.clone());
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                biased;
                () = follower.tx.closed() => {}
                () = follower.run(from_position, live) => {}
            }
        });
        Ok(EventStream {
            rx,
            cut_off: Arc::new(AtomicBool::new(false)),
            buffer,
            done: false,
        })
    }

    /// Live events matching the filters. With `from_version` (which needs `instance_id`), the
    /// instance's history from that version comes first, then live events, with no gap and no
    /// duplicate. A reader that falls more than the subscriber buffer behind is cut off with
    /// RESOURCE_EXHAUSTED; writers never wait for it.
    ///
    /// Needs `read` on the type or the instance's type; with neither named, a reader narrowed to
    /// some types hears only events of those types.
    pub async fn subscribe(
        &self,
        principal: &Principal,
        entity_type: Option<&TypeKey>,
        instance: Option<Uuid>,
        event_types: Vec<String>,
        from_version: Option<i64>,
    ) -> Result<EventStream, AppError> {
        require_some(principal, Access::Read)?;
        let type_name = match entity_type {
            Some(key) => Some(
                self.registry
                    .resolve_for(principal, Access::Read, key)
                    .await?
                    .record
                    .name
                    .clone(),
            ),
            None => None,
        };
        if let Some(id) = instance {
            self.catalog.get_instance(id).await?;
            self.registry
                .check_instance(principal, Access::Read, id)
                .await?;
        }
        // Only a subscription naming neither a type nor an instance can hear types the caller
        // may not read: those are filtered out as they arrive.
        let readable = if type_name.is_none() && instance.is_none() {
            principal.narrowed_to(Access::Read)
        } else {
            None
        };
        let replay = match (from_version, instance) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(AppError::invalid(
                    "from_version",
                    "needs instance_id: history is replayed for one instance",
                ));
            }
            (Some(v), Some(id)) if v >= 1 => Some((id, v)),
            (Some(v), Some(_)) => {
                return Err(AppError::invalid(
                    "from_version",
                    format!("{v} is not a version: versions start at 1"),
                ));
            }
        };
        if let Some((id, v)) = replay
            && let Some(horizon) = self.history.horizon().await?
        {
            // A replay from a version retention dropped would silently start later.
            let first = self
                .history
                .events(id, &crate::ports::HistoryFilter::default(), 1)
                .await?;
            if let Some(first) = first.first().map(|e| e.version)
                && v < first
            {
                return Err(AppError::OutOfRange(format!(
                    "from_version {v} was recorded before the retention horizon {} and is no \
                     longer kept; the oldest version kept is {first}",
                    horizon.to_rfc3339()
                )));
            }
        }
        // In replay mode the event-type filter is applied here, so versions stay contiguous and
        // a gap can be told from a filtered event.
        let filter = LiveFilter {
            entity_type_name: type_name,
            instance_id: instance,
            event_types: if replay.is_some() {
                Vec::new()
            } else {
                event_types.clone()
            },
        };
        // Listen before reading history, so nothing committed in between is missed.
        let live = self.bus.subscribe(filter).await.map_err(|e| match e {
            BusError::Unavailable(m) => AppError::Unavailable(m),
            BusError::Lagged(_) => AppError::Internal("lagged before the first event".into()),
        })?;
        let buffer = self.buffer;
        let (tx, rx) = mpsc::channel(buffer);
        let cut_off = Arc::new(AtomicBool::new(false));
        let producer = Producer {
            tx,
            cut: cut_off.clone(),
            readable,
            event_types,
            history: self.history.clone(),
        };
        let open = OpenSubscription::new(self.open.clone());
        tokio::spawn(async move {
            let _open = open;
            // The client going away drops the stream's receiver: end at once, even while the
            // live stream is quiet or nothing matches, instead of only at the next send.
            tokio::select! {
                biased;
                () = producer.tx.closed() => {}
                () = producer.run(replay, live) => {}
            }
        });
        Ok(EventStream {
            rx,
            cut_off,
            buffer,
            done: false,
        })
    }

    /// Subscribe streams currently open on this server: each one's producer counts from the
    /// moment it starts until it has ended (client gone, cut off, bus failure or shutdown).
    /// For operators (a number that only grows points at leaked subscriptions) and tests.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Counts one open subscription for as long as it lives.
struct OpenSubscription(Arc<AtomicUsize>);

impl OpenSubscription {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(super::metrics::SUBSCRIPTIONS_OPEN).increment(1.0);
        Self(count)
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(super::metrics::SUBSCRIPTIONS_OPEN).decrement(1.0);
    }
}

/// Flags a subscription as cut off for falling behind, and counts it.
fn cut_off(flag: &AtomicBool) {
    if !flag.swap(true, Ordering::AcqRel) {
        metrics::counter!(super::metrics::SUBSCRIPTIONS_CUT_OFF).increment(1);
    }
}

/// What a subscription's producer task sends to, and how.
struct Producer {
    tx: mpsc::Sender<Result<EventRecord, AppError>>,
    cut: Arc<AtomicBool>,
    /// The entity types the subscriber may read, when it may not read every one.
    readable: Option<Vec<String>>,
    /// Applied here rather than on the bus in replay mode, so versions stay contiguous and a gap
    /// can be told from a filtered event.
    event_types: Vec<String>,
    history: Arc<dyn HistoryReader>,
}

/// Whether a producer goes on.
enum Flow {
    Go,
    Stop,
}

impl Producer {
    fn may_read(&self, entity_type: &str) -> bool {
        self.readable
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == entity_type))
    }

    fn wanted(&self, e: &EventRecord) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&e.event_type)
    }

    /// Replays history from `replay`'s version, then follows `live`.
    async fn run(&self, replay: Option<(Uuid, i64)>, mut live: crate::ports::LiveStream) {
        let mut last = None;
        if let Some((id, from)) = replay {
            // Replay waits for the reader (the store can always be read again), page by page:
            // memory holds one page, however long the history.
            match self.pages(id, from, None, true).await {
                Ok((Flow::Go, read)) => last = read.or(Some(from - 1)),
                Ok((Flow::Stop, _)) => return,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        }
        while let Some(item) = live.next().await {
            let event = match item {
                Ok(l) if self.may_read(&l.entity_type_name) => l.event,
                Ok(_) => continue,
                Err(BusError::Lagged(_)) => {
                    cut_off(&self.cut);
                    return;
                }
                Err(BusError::Unavailable(m)) => {
                    let _ = self.tx.send(Err(AppError::Unavailable(m))).await;
                    return;
                }
            };
            if let (Some((id, _)), Some(l)) = (replay, last) {
                if event.version <= l {
                    continue; // already replayed
                }
                if event.version > l + 1 {
                    // Fill a gap from the store rather than skip events.
                    match self.pages(id, l + 1, Some(event.version - 1), false).await {
                        Ok((Flow::Go, _)) => {}
                        Ok((Flow::Stop, _)) => return,
                        Err(e) => {
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                last = Some(event.version);
            }
            if let Flow::Stop = self.deliver(event, false).await {
                return;
            }
        }
    }

    /// Sends one event if the subscriber wants it. Live events never wait for the reader
    /// (`wait` false): a full buffer cuts it off, so writers and other subscribers never slow
    /// down for it.
    async fn deliver(&self, e: EventRecord, wait: bool) -> Flow {
        if !self.wanted(&e) {
            return Flow::Go;
        }
        if wait {
            return match self.tx.send(Ok(e)).await {
                Ok(()) => Flow::Go,
                Err(_) => Flow::Stop,
            };
        }
        match self.tx.try_send(Ok(e)) {
            Ok(()) => Flow::Go,
            Err(mpsc::error::TrySendError::Full(_)) => {
                cut_off(&self.cut);
                Flow::Stop
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Flow::Stop,
        }
    }

    /// Delivers the instance's events from `from` to `to` (inclusive; open-ended when None),
    /// reading [`REPLAY_BATCH`] at a time. Returns how it ended and the last version read.
    async fn pages(
        &self,
        id: Uuid,
        from: i64,
        to: Option<i64>,
        wait: bool,
    ) -> Result<(Flow, Option<i64>), AppError> {
        let mut filter = HistoryFilter {
            from_version: Some(from),
            to_version: to,
            ..HistoryFilter::default()
        };
        let mut last = None;
        loop {
            let events = self.history.events(id, &filter, REPLAY_BATCH).await?;
            let full = events.len() == REPLAY_BATCH;
            for e in events {
                last = Some(e.version);
                if let Flow::Stop = self.deliver(e, wait).await {
                    return Ok((Flow::Stop, last));
                }
            }
            if !full {
                return Ok((Flow::Go, last));
            }
            filter.after_version = last;
        }
    }
}

/// Events read per round trip while following the global log.
const LOG_BATCH: usize = 1000;

/// How long a log subscription waits for a wake-up before reading the store anyway: bounds the
/// delay when the bus is down or slow to announce (the NATS relay runs behind the commit).
const LOG_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The producer of a subscription from a position.
struct LogFollower {
    tx: mpsc::Sender<Result<EventRecord, AppError>>,
    log: GlobalLog,
    bus: Arc<dyn EventBus>,
    scope: LogScope,
    /// What wakes it (listened to again after the bus cut it off or failed).
    filter: LiveFilter,
}

impl LogFollower {
    async fn run(&self, mut after: i64, mut live: Option<crate::ports::LiveStream>) {
        loop {
            // Read until caught up with the head each read reports.
            loop {
                let page = match self.log.page(&self.scope, after, LOG_BATCH).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                };
                for e in page.events {
                    if self.tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                after = page.next_position;
                if after >= page.head_position {
                    break;
                }
            }
            // Then wait for something to commit.
            let Some(stream) = live.as_mut() else {
                tokio::time::sleep(LOG_POLL).await;
                live = self.bus.subscribe(self.filter.clone()).await.ok();
                continue;
            };
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(_)) => {
                        // Every announcement already waiting is covered by the next read.
                        while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                    }
                    // Cut off (this reader was slow) or the bus failed: listen again before
                    // the next read, which covers whatever was announced meanwhile.
                    Some(Err(_)) | None => {
                        live = self.bus.subscribe(self.filter.clone()).await.ok();
                    }
                },
                () = tokio::time::sleep(LOG_POLL) => {}
            }
        }
    }
}

fn lagged(buffer: usize) -> AppError {
    AppError::Lagged(format!(
        "subscriber fell more than {buffer} events behind and was cut off; resubscribe with from_version"
    ))
}
