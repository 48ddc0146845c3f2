//! In-process caches of facts that never change once written: an entity type (with its compiled
//! schema) and the type of an instance. They keep schema compilation and type lookups off the
//! write path.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::domain::validate::CompiledSchema;
use crate::ports::EntityTypeRecord;

/// Bound on remembered instance types; past it the map starts afresh (a miss costs one query).
const MAX_INSTANCE_TYPES: usize = 1_000_000;

pub struct TypeEntry {
    pub record: EntityTypeRecord,
    pub schema: CompiledSchema,
}

/// What never changes about an instance: enough, with a new state and version, to build the
/// record the state cache holds.
#[derive(Clone)]
pub struct InstanceMeta {
    pub entity_type_id: Uuid,
    pub external_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
pub struct Caches {
    types: RwLock<HashMap<Uuid, Arc<TypeEntry>>>,
    type_names: RwLock<HashMap<String, Uuid>>,
    instance_types: RwLock<HashMap<Uuid, Uuid>>,
    instance_meta: RwLock<HashMap<Uuid, InstanceMeta>>,
    /// Instances whose latest state could not be written to the state cache: their cached entry
    /// may be stale, so reads skip the cache until a repair succeeds.
    dirty: RwLock<std::collections::HashSet<Uuid>>,
}

impl Caches {
    pub fn type_by_id(&self, id: Uuid) -> Option<Arc<TypeEntry>> {
        self.types.read().ok()?.get(&id).cloned()
    }

    pub fn type_by_name(&self, name: &str) -> Option<Arc<TypeEntry>> {
        let id = *self.type_names.read().ok()?.get(name)?;
        self.type_by_id(id)
    }

    pub fn put_type(&self, entry: Arc<TypeEntry>) {
        if let Ok(mut names) = self.type_names.write() {
            names.insert(entry.record.name.clone(), entry.record.id);
        }
        if let Ok(mut types) = self.types.write() {
            types.insert(entry.record.id, entry);
        }
    }

    pub fn instance_type(&self, instance: Uuid) -> Option<Uuid> {
        self.instance_types.read().ok()?.get(&instance).copied()
    }

    pub fn meta(&self, instance: Uuid) -> Option<InstanceMeta> {
        self.instance_meta.read().ok()?.get(&instance).cloned()
    }

    pub fn put_meta(&self, instance: Uuid, meta: InstanceMeta) {
        self.put_instance_type(instance, meta.entity_type_id);
        if let Ok(mut map) = self.instance_meta.write() {
            if map.len() >= MAX_INSTANCE_TYPES {
                map.clear();
            }
            map.insert(instance, meta);
        }
    }

    pub fn is_dirty(&self, instance: Uuid) -> bool {
        self.dirty.read().is_ok_and(|d| d.contains(&instance))
    }

    pub fn mark_dirty(&self, instance: Uuid) {
        if let Ok(mut d) = self.dirty.write() {
            d.insert(instance);
        }
    }

    pub fn clean(&self, instance: Uuid) {
        if let Ok(mut d) = self.dirty.write() {
            d.remove(&instance);
        }
    }

    pub fn dirty(&self) -> Vec<Uuid> {
        self.dirty
            .read()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn put_instance_type(&self, instance: Uuid, entity_type: Uuid) {
        if let Ok(mut map) = self.instance_types.write() {
            if map.len() >= MAX_INSTANCE_TYPES {
                map.clear();
            }
            map.insert(instance, entity_type);
        }
    }
}
