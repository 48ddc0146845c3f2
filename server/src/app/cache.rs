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

#[derive(Default)]
pub struct Caches {
    types: RwLock<HashMap<Uuid, Arc<TypeEntry>>>,
    type_names: RwLock<HashMap<String, Uuid>>,
    instance_types: RwLock<HashMap<Uuid, Uuid>>,
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

    pub fn put_instance_type(&self, instance: Uuid, entity_type: Uuid) {
        if let Ok(mut map) = self.instance_types.write() {
            if map.len() >= MAX_INSTANCE_TYPES {
                map.clear();
            }
            map.insert(instance, entity_type);
        }
    }
}
