//! The type registry: entity types (with their compiled schemas), the type of an instance, and
//! what else is fixed about an instance, kept in memory in front of the [`Catalog`]. It keeps
//! schema compilation and type lookups off the write path. Every handler shares one.
//!
//! A type's schema can change (UpdateEntityType) on any replica, so a remembered type may be
//! behind. That never lets a state through unchecked: a write is decided against the schema
//! version the store reads with the instance's head, and a mismatch makes the command
//! [`TypeRegistry::reload`] the type and decide again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::AppError;
use super::error::{require, require_some};
use crate::domain::declared::{Declarations, DeclarationsDoc};
use crate::domain::validate::CompiledSchema;
use crate::domain::{Access, Principal};
use crate::ports::{Catalog, EntityTypeRecord, InstanceRecord, TypeKey};

/// Bound on remembered instances; past it the map starts afresh (a miss costs one query).
const MAX_INSTANCES: usize = 1_000_000;

/// An entity type ready to validate states.
pub struct TypeEntry {
    /// The type as stored: id, name, description and schema.
    pub record: EntityTypeRecord,
    /// `record.schema`, compiled once: validating a state is then cheap.
    pub schema: CompiledSchema,
    /// `record.declarations`, compiled once per (type, schema version): the CEL programs of
    /// its transforms and guards are pure values, shared by every write.
    pub declarations: Declarations,
}

impl TypeEntry {
    /// Compiles a stored type: its schema and declarations passed their checks when accepted,
    /// so a failure here is damaged data.
    pub fn compile(record: EntityTypeRecord) -> Result<Self, AppError> {
        let schema = CompiledSchema::compile(&record.schema).map_err(|e| {
            AppError::Internal(format!(
                "stored schema of {} does not compile: {e}",
                record.name
            ))
        })?;
        let declarations = match &record.declarations {
            Some(doc) => DeclarationsDoc::from_json(doc)
                .and_then(|doc| Declarations::compile(&doc))
                .map_err(|e| {
                    AppError::Internal(format!(
                        "stored declarations of {} do not compile: {e}",
                        record.name
                    ))
                })?,
            None => Declarations::default(),
        };
        Ok(Self {
            record,
            schema,
            declarations,
        })
    }
}

/// What never changes about an instance: enough, with a new state and version, to build the
/// record the state cache holds.
#[derive(Clone)]
pub struct InstanceMeta {
    pub entity_type_id: Uuid,
    pub external_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Entity types and fixed instance facts, looked up in the catalog once and then remembered.
pub struct TypeRegistry {
    /// Where a miss is looked up.
    catalog: Arc<dyn Catalog>,
    /// Types by id, with their compiled schemas.
    types: RwLock<HashMap<Uuid, Arc<TypeEntry>>>,
    /// Type ids by name, so a type named either way is one lookup.
    type_names: RwLock<HashMap<String, Uuid>>,
    /// The type of each instance seen: every write needs it, to validate.
    instance_types: RwLock<HashMap<Uuid, Uuid>>,
    /// The rest of what is fixed about an instance, to write the state cache after a commit
    /// without reading the instance back.
    instance_meta: RwLock<HashMap<Uuid, InstanceMeta>>,
}

impl TypeRegistry {
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            types: RwLock::default(),
            type_names: RwLock::default(),
            instance_types: RwLock::default(),
            instance_meta: RwLock::default(),
        }
    }

    /// The type with its compiled schema, from memory or the catalog.
    pub async fn resolve(&self, key: &TypeKey) -> Result<Arc<TypeEntry>, AppError> {
        let cached = match key {
            TypeKey::Id(id) => self.type_by_id(*id),
            TypeKey::Name(name) => self.type_by_name(name),
        };
        if let Some(entry) = cached {
            return Ok(entry);
        }
        let record = self.catalog.get_entity_type(key).await?;
        let entry = Arc::new(TypeEntry::compile(record)?);
        self.put_type(entry.clone());
        Ok(entry)
    }

    /// The type as stored now, read from the catalog and remembered (after a schema change, or
    /// when a write found the remembered one behind).
    pub async fn reload(&self, id: Uuid) -> Result<Arc<TypeEntry>, AppError> {
        let record = self.catalog.get_entity_type(&TypeKey::Id(id)).await?;
        self.remember_record(record)
    }

    /// Remembers `record`, compiling its schema, unless what is remembered is at least as new.
    pub fn remember_record(&self, record: EntityTypeRecord) -> Result<Arc<TypeEntry>, AppError> {
        if let Some(known) = self.type_by_id(record.id)
            && known.record == record
        {
            return Ok(known);
        }
        let entry = Arc::new(TypeEntry::compile(record)?);
        self.put_type(entry.clone());
        Ok(entry)
    }

    /// Forgets a deleted type.
    pub fn forget_type(&self, id: Uuid, name: &str) {
        if let Ok(mut names) = self.type_names.write()
            && names.get(name) == Some(&id)
        {
            names.remove(name);
        }
        if let Ok(mut types) = self.types.write() {
            types.remove(&id);
        }
    }

    /// The type of an instance, from memory or the catalog.
    pub async fn type_of(&self, instance: Uuid) -> Result<Arc<TypeEntry>, AppError> {
        let type_id = match self.instance_type(instance) {
            Some(t) => t,
            None => {
                let t = self.catalog.instance_type(instance).await?;
                self.put_instance_type(instance, t);
                t
            }
        };
        self.resolve(&TypeKey::Id(type_id)).await
    }

    /// The type, once `principal` is known to have `access` to it (PERMISSION_DENIED otherwise).
    pub async fn resolve_for(
        &self,
        principal: &Principal,
        access: Access,
        key: &TypeKey,
    ) -> Result<Arc<TypeEntry>, AppError> {
        require_some(principal, access)?;
        let entry = self.resolve(key).await?;
        require(principal, access, &entry.record.name)?;
        Ok(entry)
    }

    /// PERMISSION_DENIED unless `principal` has `access` to the type of `instance`. Free (no
    /// lookup) for a principal allowed every type.
    pub async fn check_instance(
        &self,
        principal: &Principal,
        access: Access,
        instance: Uuid,
    ) -> Result<(), AppError> {
        if principal.allows_every(access) {
            return Ok(());
        }
        require_some(principal, access)?;
        let entry = self.type_of(instance).await?;
        require(principal, access, &entry.record.name)
    }

    /// Remembers what never changes about an instance.
    pub fn remember(&self, i: &InstanceRecord) {
        self.put_meta(
            i.id,
            InstanceMeta {
                entity_type_id: i.entity_type_id,
                external_id: i.external_id.clone(),
                created_at: i.created_at,
            },
        );
    }
}

// Plain lookups and inserts: no I/O.
impl TypeRegistry {
    fn type_by_id(&self, id: Uuid) -> Option<Arc<TypeEntry>> {
        self.types.read().ok()?.get(&id).cloned()
    }

    fn type_by_name(&self, name: &str) -> Option<Arc<TypeEntry>> {
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

    fn instance_type(&self, instance: Uuid) -> Option<Uuid> {
        self.instance_types.read().ok()?.get(&instance).copied()
    }

    pub fn meta(&self, instance: Uuid) -> Option<InstanceMeta> {
        self.instance_meta.read().ok()?.get(&instance).cloned()
    }

    fn put_meta(&self, instance: Uuid, meta: InstanceMeta) {
        self.put_instance_type(instance, meta.entity_type_id);
        if let Ok(mut map) = self.instance_meta.write() {
            if map.len() >= MAX_INSTANCES {
                map.clear();
            }
            map.insert(instance, meta);
        }
    }

    /// Forgets the external id of an erased instance (the one fact that was fixed until then);
    /// its type stays known.
    pub fn forget_instance(&self, instance: Uuid) {
        if let Ok(mut map) = self.instance_meta.write() {
            map.remove(&instance);
        }
    }

    pub fn put_instance_type(&self, instance: Uuid, entity_type: Uuid) {
        if let Ok(mut map) = self.instance_types.write() {
            if map.len() >= MAX_INSTANCES {
                map.clear();
            }
            map.insert(instance, entity_type);
        }
    }
}
