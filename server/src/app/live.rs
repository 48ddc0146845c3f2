//! The state cache around reads and writes, and live subscriptions (replay, then live, with no
//! gap and no duplicate).

use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tracing::debug;
use uuid::Uuid;

use super::cache::{InstanceMeta, TypeEntry};
use super::{App, AppError, parse_id, parse_type_key};
use crate::domain::State;
use crate::ports::{BusError, EventRecord, HistoryFilter, InstanceRecord, LiveEvent, LiveFilter};

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
        let mut live = self.bus.subscribe(filter).await.map_err(|e| match e {
            BusError::Unavailable(m) => AppError::Unavailable(m),
            BusError::Lagged(_) => AppError::Internal("lagged before the first event".into()),
        })?;
        let buffer = self.limits.subscriber_buffer.max(1);
        let (tx, rx) = mpsc::channel(buffer);
        let cut_off = Arc::new(AtomicBool::new(false));
        let cut = cut_off.clone();
        let history = self.history.clone();
        tokio::spawn(async move {
            let wanted =
                |e: &EventRecord| event_types.is_empty() || event_types.contains(&e.event_type);
            let mut last = None;
            if let Some((id, from)) = replay {
                match read_range(history.as_ref(), id, from, None).await {
                    Ok(events) => {
                        for e in events {
                            last = Some(e.version);
                            if wanted(&e) && tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            while let Some(item) = live.next().await {
                let event = match item {
                    Ok(l) => l.event,
                    Err(BusError::Lagged(_)) => {
                        cut.store(true, Ordering::Release);
                        return;
                    }
                    Err(BusError::Unavailable(m)) => {
                        let _ = tx.send(Err(AppError::Unavailable(m))).await;
                        return;
                    }
                };
                let mut batch = vec![];
                if let (Some((id, _)), Some(l)) = (replay, last) {
                    if event.version <= l {
                        continue; // already replayed
                    }
                    if event.version > l + 1 {
                        // Fill a gap from the store rather than skip events.
                        match read_range(history.as_ref(), id, l + 1, Some(event.version - 1)).await
                        {
                            Ok(missing) => batch.extend(missing),
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                }
                batch.push(event);
                for e in batch {
                    if replay.is_some() {
                        last = Some(e.version);
                    }
                    if !wanted(&e) {
                        continue;
                    }
                    match tx.try_send(Ok(e)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            cut.store(true, Ordering::Release);
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
        });
        Ok(EventStream {
            rx,
            cut_off,
            buffer,
            done: false,
        })
    }
}

fn lagged(buffer: usize) -> AppError {
    AppError::TooLarge(format!(
        "subscriber fell more than {buffer} events behind and was cut off; resubscribe with from_version"
    ))
}

async fn read_range(
    history: &dyn crate::ports::HistoryReader,
    id: Uuid,
    from: i64,
    to: Option<i64>,
) -> Result<Vec<EventRecord>, AppError> {
    let mut out = Vec::new();
    let mut filter = HistoryFilter {
        from_version: Some(from),
        to_version: to,
        ..HistoryFilter::default()
    };
    loop {
        let events = history.events(id, &filter, REPLAY_BATCH).await?;
        let full = events.len() == REPLAY_BATCH;
        filter.after_version = events.last().map(|e| e.version);
        out.extend(events);
        if !full {
            return Ok(out);
        }
    }
}
