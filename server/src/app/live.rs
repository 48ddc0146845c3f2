//! The state cache around reads and writes, and live subscriptions (replay, then live, with no
//! gap and no duplicate).

use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tracing::debug;
use uuid::Uuid;

use super::cache::{InstanceMeta, TypeEntry};
use super::{App, AppError, parse_id, parse_type_key};
use crate::domain::State;
use crate::ports::{
    BusError, EventRecord, HistoryFilter, HistoryReader, InstanceRecord, LiveEvent, LiveFilter,
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

impl App {
    /// Remembers what never changes about an instance.
    pub(crate) fn remember(&self, i: &InstanceRecord) {
        self.caches.put_meta(
            i.id,
            InstanceMeta {
                entity_type_id: i.entity_type_id,
                external_id: i.external_id.clone(),
                created_at: i.created_at,
            },
        );
    }

    /// Writes a record to the state cache; on failure the instance is marked dirty so that this
    /// server stops trusting the cached entry until a repair succeeds.
    pub(crate) async fn cache_put(&self, record: &InstanceRecord) {
        let Some(cache) = &self.cache else { return };
        match cache.put(record).await {
            Ok(()) => {
                if self.caches.is_dirty(record.id) {
                    self.caches.clean(record.id);
                }
            }
            Err(e) => {
                debug!(instance_id = %record.id, error = %e, "state cache write failed");
                self.caches.mark_dirty(record.id);
            }
        }
    }

    /// After a commit: tell the bus, and move the cached state forward.
    pub(crate) async fn after_commit(
        &self,
        entry: &TypeEntry,
        instance_id: Uuid,
        events: &[EventRecord],
        state: &State,
    ) {
        let live: Vec<LiveEvent> = events
            .iter()
            .map(|e| LiveEvent {
                entity_type_name: entry.record.name.clone(),
                event: e.clone(),
            })
            .collect();
        self.bus.committed(&live).await;
        if self.cache.is_none() {
            return;
        }
        let Some(last) = events.last() else { return };
        let record = match self.caches.meta(instance_id) {
            Some(meta) => InstanceRecord {
                id: instance_id,
                entity_type_id: meta.entity_type_id,
                entity_type_name: entry.record.name.clone(),
                external_id: meta.external_id,
                state: state.clone(),
                version: last.version,
                created_at: meta.created_at,
                updated_at: last.recorded_at,
            },
            // Unknown here yet: the stored record is at least as new as what we just wrote.
            None => match self.store.get_instance(instance_id).await {
                Ok(r) => {
                    self.remember(&r);
                    r
                }
                Err(_) => {
                    self.caches.mark_dirty(instance_id);
                    return;
                }
            },
        };
        self.cache_put(&record).await;
    }

    /// Re-writes the cached state of every instance whose cache write failed. Called
    /// periodically; a success makes the cache trusted again for that instance.
    pub async fn repair_cache(&self) -> usize {
        let mut repaired = 0;
        for id in self.caches.dirty() {
            let Ok(record) = self.store.get_instance(id).await else {
                continue;
            };
            if let Some(cache) = &self.cache
                && cache.put(&record).await.is_ok()
            {
                self.caches.clean(id);
                repaired += 1;
            }
        }
        repaired
    }

    /// An instance by id: from the cache when it holds it, otherwise from the store (refilling
    /// the cache).
    pub async fn get_instance(&self, instance_id: &str) -> Result<InstanceRecord, AppError> {
        let id = parse_id("instance_id", instance_id)?;
        if let Some(cache) = &self.cache
            && !self.caches.is_dirty(id)
            && let Ok(Some(hit)) = cache.get(id).await
        {
            return Ok(hit);
        }
        let record = self.store.get_instance(id).await?;
        self.remember(&record);
        self.cache_put(&record).await;
        Ok(record)
    }

    /// An instance by entity type and external id: one cache round trip on a hit.
    pub async fn get_current_state(
        &self,
        entity_type: &str,
        external_id: &str,
    ) -> Result<InstanceRecord, AppError> {
        let key = parse_type_key(entity_type)?;
        let external_id = crate::domain::ExternalId::parse(external_id)?;
        let entry = self.resolve_type(&key).await?;
        if let Some(cache) = &self.cache
            && let Ok(Some(hit)) = cache
                .get_by_external_id(entry.record.id, external_id.as_str())
                .await
            && !self.caches.is_dirty(hit.id)
        {
            return Ok(hit);
        }
        let record = self
            .store
            .find_instance(entry.record.id, external_id.as_str())
            .await?;
        self.remember(&record);
        self.cache_put(&record).await;
        Ok(record)
    }

    /// Live events matching the filters. With `from_version` (which needs `instance_id`), the
    /// instance's history from that version comes first, then live events, with no gap and no
    /// duplicate. A reader that falls more than the subscriber buffer behind is cut off with
    /// RESOURCE_EXHAUSTED; writers never wait for it.
    pub async fn subscribe(
        &self,
        entity_type: &str,
        instance_id: &str,
        event_types: Vec<String>,
        from_version: Option<i64>,
    ) -> Result<EventStream, AppError> {
        let type_name = if entity_type.is_empty() {
            None
        } else {
            Some(
                self.resolve_type(&parse_type_key(entity_type)?)
                    .await?
                    .record
                    .name
                    .clone(),
            )
        };
        let instance = if instance_id.is_empty() {
            None
        } else {
            let id = parse_id("instance_id", instance_id)?;
            self.store.get_instance(id).await?;
            Some(id)
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
        let buffer = self.limits.subscriber_buffer.max(1);
        let (tx, rx) = mpsc::channel(buffer);
        let cut_off = Arc::new(AtomicBool::new(false));
        let producer = Producer {
            tx,
            cut: cut_off.clone(),
            event_types,
            history: self.history.clone(),
        };
        let open = OpenSubscription::new(self.subscriptions.clone());
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
    pub fn open_subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Acquire)
    }
}

/// Counts one open subscription for as long as it lives.
struct OpenSubscription(Arc<AtomicUsize>);

impl OpenSubscription {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a subscription's producer task sends to, and how.
struct Producer {
    tx: mpsc::Sender<Result<EventRecord, AppError>>,
    cut: Arc<AtomicBool>,
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
                Ok(l) => l.event,
                Err(BusError::Lagged(_)) => {
                    self.cut.store(true, Ordering::Release);
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
                self.cut.store(true, Ordering::Release);
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

fn lagged(buffer: usize) -> AppError {
    AppError::TooLarge(format!(
        "subscriber fell more than {buffer} events behind and was cut off; resubscribe with from_version"
    ))
}
