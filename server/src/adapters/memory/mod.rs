//! In-process stand-ins for Redis and NATS, used when those are not configured: a state cache
//! with the same compare-and-set rule, and a broadcast bus for live subscriptions.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use crate::ports::{
    BusError, CacheError, EventBus, InstanceRecord, LiveEvent, LiveFilter, LiveStream, StateCache,
};

/// Most instances the in-memory cache holds; past it, it starts afresh (a miss costs one read).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct MemoryCache {
    by_id: RwLock<HashMap<Uuid, InstanceRecord>>,
    by_external: RwLock<HashMap<(Uuid, String), Uuid>>,
}

#[async_trait]
impl StateCache for MemoryCache {
    async fn get(&self, instance_id: Uuid) -> Result<Option<InstanceRecord>, CacheError> {
        let map = self.by_id.read().map_err(|e| CacheError(e.to_string()))?;
        Ok(map.get(&instance_id).cloned())
    }

    async fn get_by_external_id(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<Option<InstanceRecord>, CacheError> {
        let id = {
            let map = self
                .by_external
                .read()
                .map_err(|e| CacheError(e.to_string()))?;
            map.get(&(entity_type_id, external_id.to_string())).copied()
        };
        match id {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    async fn put(&self, instance: &InstanceRecord) -> Result<(), CacheError> {
        let mut map = self.by_id.write().map_err(|e| CacheError(e.to_string()))?;
        if map
            .get(&instance.id)
            .is_some_and(|cached| cached.version >= instance.version)
        {
            return Ok(());
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
            if let Ok(mut ext) = self.by_external.write() {
                ext.clear();
            }
        }
        map.insert(instance.id, instance.clone());
        drop(map);
        if instance.erased {
            return Ok(());
        }
        let mut ext = self
            .by_external
            .write()
            .map_err(|e| CacheError(e.to_string()))?;
        ext.insert(
            (instance.entity_type_id, instance.external_id.clone()),
            instance.id,
        );
        Ok(())
    }

    async fn erase(
        &self,
        erased: &InstanceRecord,
        former_external_id: &str,
    ) -> Result<(), CacheError> {
        let mut map = self.by_id.write().map_err(|e| CacheError(e.to_string()))?;
        if map
            .get(&erased.id)
            .is_none_or(|cached| cached.version < erased.version)
        {
            map.insert(erased.id, erased.clone());
        }
        drop(map);
        let mut ext = self
            .by_external
            .write()
            .map_err(|e| CacheError(e.to_string()))?;
        ext.remove(&(erased.entity_type_id, former_external_id.to_string()));
        Ok(())
    }
}

/// Live events within this process.
pub struct LocalBus {
    sender: broadcast::Sender<LiveEvent>,
    capacity: usize,
}

impl LocalBus {
    /// `capacity`: how far a subscriber may fall behind before it is cut off.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, capacity }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn committed(&self, events: &[LiveEvent]) {
        for event in events {
            // No receiver is fine: nobody is listening.
            let _ = self.sender.send(event.clone());
        }
    }

    async fn subscribe(&self, filter: LiveFilter) -> Result<LiveStream, BusError> {
        let capacity = self.capacity as u64;
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            let out = match item {
                Ok(live) if filter.matches(&live) => Some(Ok(live)),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(_)) => Some(Err(BusError::Lagged(capacity))),
            };
            futures::future::ready(out)
        });
        // A laggard is cut off: its stream ends right after the Lagged error.
        let stream = stream.scan(false, |cut, item| {
            if *cut {
                return futures::future::ready(None);
            }
            *cut = item.is_err();
            futures::future::ready(Some(item))
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> InstanceRecord {
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap();
        InstanceRecord {
            id: Uuid::from_u128(n as u128 + 1),
            entity_type_id: Uuid::from_u128(7),
            entity_type_name: "t".into(),
            external_id: format!("e{n}"),
            state: crate::domain::State::new(),
            version: 1,
            created_at: at,
            updated_at: at,
            archived: false,
            erased: false,
        }
    }

    /// The README's bound: the cache holds at most MAX_ENTRIES instances, then starts afresh
    /// (both lookups), so it cannot grow with the number of instances ever read.
    #[tokio::test]
    async fn the_cache_starts_afresh_past_its_bound() {
        let cache = MemoryCache::default();
        for n in 0..MAX_ENTRIES {
            cache.put(&record(n)).await.unwrap();
        }
        let first = record(0);
        assert_eq!(cache.get(first.id).await.unwrap(), Some(first.clone()));
        assert_eq!(cache.by_id.read().unwrap().len(), MAX_ENTRIES);

        let next = record(MAX_ENTRIES);
        cache.put(&next).await.unwrap();
        assert_eq!(cache.by_id.read().unwrap().len(), 1);
        assert_eq!(cache.by_external.read().unwrap().len(), 1);
        assert_eq!(cache.get(first.id).await.unwrap(), None);
        assert_eq!(
            cache
                .get_by_external_id(first.entity_type_id, &first.external_id)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            cache
                .get_by_external_id(next.entity_type_id, &next.external_id)
                .await
                .unwrap(),
            Some(next)
        );
    }
}
