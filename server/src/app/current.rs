//! Current states: reading an instance as it is now, through the state cache when there is one,
//! and moving the cached state forward after a commit. The cache is never trusted for an
//! instance whose last cache write failed, until a repair has written it again.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tracing::debug;
use uuid::Uuid;

use super::AppError;
use super::registry::{TypeEntry, TypeRegistry};
use crate::domain::{Access, ExternalId, Principal, State};
use crate::ports::{Catalog, EventRecord, InstanceRecord, StateCache, TypeKey};

/// The current-state read path and the state cache's upkeep.
#[derive(Clone)]
pub struct CurrentStates {
    /// The source of truth, read on a miss.
    catalog: Arc<dyn Catalog>,
    registry: Arc<TypeRegistry>,
    /// Current states close to the readers; None reads the catalog every time.
    state_cache: Option<Arc<dyn StateCache>>,
    /// Instances whose cached entry may be stale (see [`Untrusted`]).
    untrusted: Arc<Untrusted>,
    /// Orders cache writes against erasures (see [`Erasures`]).
    erasures: Arc<Erasures>,
}

/// Instances erased through this server, and per-instance (striped) locks that order every
/// cache write against an erasure's scrub: a write holds its stripe shared for as long as it
/// runs, an erasure exclusively while it marks the instance erased and scrubs the cache. So a
/// write of a state read before the erasure (a fill after a read, the after-commit write of an
/// append that committed just before) either reaches Redis before the scrub, or sees the mark
/// and is dropped: it can never put the entry by the former external id back.
struct Erasures {
    stripes: Vec<tokio::sync::RwLock<()>>,
    erased: RwLock<HashSet<Uuid>>,
}

impl Default for Erasures {
    fn default() -> Self {
        Self {
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::RwLock::new(()))
                .collect(),
            erased: RwLock::default(),
        }
    }
}

impl Erasures {
    const STRIPES: usize = 256;
    /// Erased ids remembered; past it the set starts afresh. Only writes in flight during an
    /// erasure need the mark (the entry by id refuses older versions by itself), so forgetting
    /// old ones costs nothing.
    const MAX_ERASED: usize = 100_000;

    fn stripe(&self, instance: Uuid) -> &tokio::sync::RwLock<()> {
        &self.stripes[(instance.as_u128() as usize) % self.stripes.len()]
    }

    fn contains(&self, instance: Uuid) -> bool {
        self.erased.read().is_ok_and(|e| e.contains(&instance))
    }

    fn insert(&self, instance: Uuid) {
        if let Ok(mut e) = self.erased.write() {
            if e.len() >= Self::MAX_ERASED {
                e.clear();
            }
            e.insert(instance);
        }
    }
}

/// Instances whose latest state could not be written to the state cache: their cached entry may
/// be stale, so reads skip the cache for them until a repair succeeds.
#[derive(Default)]
struct Untrusted(RwLock<HashSet<Uuid>>);

impl Untrusted {
    fn contains(&self, instance: Uuid) -> bool {
        self.0.read().is_ok_and(|d| d.contains(&instance))
    }

    fn insert(&self, instance: Uuid) {
        if let Ok(mut d) = self.0.write() {
            d.insert(instance);
        }
    }

    fn remove(&self, instance: Uuid) {
        if let Ok(mut d) = self.0.write() {
            d.remove(&instance);
        }
    }

    fn all(&self) -> Vec<Uuid> {
        self.0
            .read()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl CurrentStates {
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        registry: Arc<TypeRegistry>,
        state_cache: Option<Arc<dyn StateCache>>,
    ) -> Self {
        Self {
            catalog,
            registry,
            state_cache,
            untrusted: Arc::default(),
            erasures: Arc::default(),
        }
    }

    /// An instance by id: from the cache when it holds it, otherwise from the catalog (refilling
    /// the cache).
    pub async fn get_instance(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<InstanceRecord, AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        if let Some(cache) = &self.state_cache
            && !self.untrusted.contains(id)
            && let Ok(Some(hit)) = cache.get(id).await
        {
            metrics::counter!(super::metrics::CACHE_HITS).increment(1);
            return Ok(hit);
        }
        if self.state_cache.is_some() {
            metrics::counter!(super::metrics::CACHE_MISSES).increment(1);
        }
        let record = self.catalog.get_instance(id).await?;
        self.registry.remember(&record);
        self.put(&record).await;
        Ok(record)
    }

    /// An instance by entity type and external id: one cache round trip on a hit.
    pub async fn get_current_state(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        external_id: &ExternalId,
    ) -> Result<InstanceRecord, AppError> {
        let entry = self
            .registry
            .resolve_for(principal, Access::Read, entity_type)
            .await?;
        if let Some(cache) = &self.state_cache
            && let Ok(Some(hit)) = cache
                .get_by_external_id(entry.record.id, external_id.as_str())
                .await
            && !self.untrusted.contains(hit.id)
            && !self.erasures.contains(hit.id)
        {
            metrics::counter!(super::metrics::CACHE_HITS).increment(1);
            return Ok(hit);
        }
        if self.state_cache.is_some() {
            metrics::counter!(super::metrics::CACHE_MISSES).increment(1);
        }
        let record = self
            .catalog
            .find_instance(entry.record.id, external_id.as_str())
            .await?;
        self.registry.remember(&record);
        self.put(&record).await;
        Ok(record)
    }

    /// After a commit: moves the cached state of the instance forward to `state`.
    pub(crate) async fn committed(
        &self,
        entry: &TypeEntry,
        instance_id: Uuid,
        events: &[EventRecord],
        state: &State,
    ) {
        if self.state_cache.is_none() {
            return;
        }
        let Some(last) = events.last() else { return };
        let record = match self.registry.meta(instance_id) {
            Some(meta) => InstanceRecord {
                id: instance_id,
                entity_type_id: meta.entity_type_id,
                entity_type_name: entry.record.name.clone(),
                external_id: meta.external_id,
                state: state.clone(),
                version: last.version,
                created_at: meta.created_at,
                updated_at: last.recorded_at,
                // Only an archive leaves an instance archived: every other append needs (or,
                // for a restore, ends) it unarchived.
                archived: last.event_type == crate::domain::EventType::INSTANCE_ARCHIVED,
                // Nothing is appended after an erasure.
                erased: false,
            },
            // Unknown here yet: the stored record is at least as new as what was just written.
            None => match self.catalog.get_instance(instance_id).await {
                Ok(r) => {
                    self.registry.remember(&r);
                    r
                }
                Err(_) => {
                    self.untrusted.insert(instance_id);
                    return;
                }
            },
        };
        self.put(&record).await;
    }

    /// After an erasure: the cached entry by id becomes the erased record (so a state read
    /// before the erasure can never be put back over it) and the entry by the former external
    /// id is deleted. On failure the instance is untrusted, as for any failed cache write: this
    /// server reads the store for it until a repair rewrote the entry by id.
    pub(crate) async fn erased(&self, erased: &InstanceRecord, former_external_id: &str) {
        let Some(cache) = &self.state_cache else {
            return;
        };
        let _exclusive = self.erasures.stripe(erased.id).write().await;
        self.erasures.insert(erased.id);
        match cache.erase(erased, former_external_id).await {
            Ok(()) => self.untrusted.remove(erased.id),
            Err(e) => {
                tracing::warn!(instance_id = %erased.id, error = %e, "state cache not cleared after an erasure; entries expire with their ttl");
                self.untrusted.insert(erased.id);
            }
        }
    }

    /// Whether a write committed is unknown: stop trusting the cached state of the instance
    /// until the background repair has read the catalog again.
    pub(crate) fn outcome_unknown(&self, instance_id: Uuid) {
        self.untrusted.insert(instance_id);
    }

    /// Writes a record to the state cache; on failure the instance is untrusted, so this server
    /// stops reading its cached entry until a repair succeeds.
    async fn put(&self, record: &InstanceRecord) {
        let Some(cache) = &self.state_cache else {
            return;
        };
        let _shared = self.erasures.stripe(record.id).read().await;
        if !record.erased && self.erasures.contains(record.id) {
            return; // read before its erasure
        }
        match cache.put(record).await {
            Ok(()) => {
                if self.untrusted.contains(record.id) {
                    self.untrusted.remove(record.id);
                }
            }
            Err(e) => {
                debug!(instance_id = %record.id, error = %e, "state cache write failed");
                self.untrusted.insert(record.id);
            }
        }
    }

    /// Re-writes the cached state of every untrusted instance. Called periodically; a success
    /// makes the cache trusted again for that instance. Returns how many were repaired.
    pub async fn repair(&self) -> usize {
        let Some(cache) = &self.state_cache else {
            return 0;
        };
        let mut repaired = 0;
        for id in self.untrusted.all() {
            let Ok(record) = self.catalog.get_instance(id).await else {
                continue;
            };
            let _shared = self.erasures.stripe(id).read().await;
            if !record.erased && self.erasures.contains(id) {
                continue;
            }
            if cache.put(&record).await.is_ok() {
                self.untrusted.remove(id);
                repaired += 1;
            }
        }
        repaired
    }
}
