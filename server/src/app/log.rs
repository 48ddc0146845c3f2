//! The global event log: every event in commit order, from a position, for read models
//! (QueryService.ReadEvents, and Subscribe's `from_position` through [`GlobalLog::page`]).
//!
//! The stores give each event a position, strictly increasing in commit order, and answer a
//! read with the head (the highest position committed when it started; every position at or
//! below it is final). A reader that continues from the position a page says it covered
//! therefore misses nothing and sees nothing twice, whatever commits meanwhile.

use std::sync::Arc;

use tracing::instrument;
use uuid::Uuid;

use super::registry::TypeRegistry;
use super::{AppError, budget};
use crate::domain::{Access, Principal};
use crate::ports::{EventRecord, HistoryReader, LogFilter, TypeKey};

/// Positions one read scans at most past its start: a filter that matches rarely still costs a
/// read a bounded amount of work; the reader continues from `next_position`.
pub const LOG_SCAN: i64 = 100_000;

/// Most entity types one read may name.
pub const MAX_LOG_TYPES: usize = 100;

/// What a reader follows: the entity types (resolved, and narrowed to what it may read) and
/// event types.
#[derive(Debug, Clone, Default)]
pub struct LogScope {
    /// None: every type. Some(empty): none (a reader narrowed to types that do not exist).
    pub entity_type_ids: Option<Vec<Uuid>>,
    pub event_types: Vec<String>,
}

/// One page of the global log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead {
    pub events: Vec<EventRecord>,
    /// The last position this read covered: the next read starts after it.
    pub next_position: i64,
    /// The highest position committed when the read started.
    pub head_position: i64,
}

/// The ReadEvents use case.
#[derive(Clone)]
pub struct GlobalLog {
    registry: Arc<TypeRegistry>,
    history: Arc<dyn HistoryReader>,
    /// Bytes a page may carry (see [`super::Limits::max_response_bytes`]).
    page_budget: usize,
}

impl GlobalLog {
    pub(crate) fn new(
        registry: Arc<TypeRegistry>,
        history: Arc<dyn HistoryReader>,
        page_budget: usize,
    ) -> Self {
        Self {
            registry,
            history,
            page_budget,
        }
    }

    /// Resolves the entity types a reader names (each needs `read`); naming none, a reader
    /// narrowed to some types follows only those.
    pub async fn scope(
        &self,
        principal: &Principal,
        entity_types: &[TypeKey],
        event_types: Vec<String>,
    ) -> Result<LogScope, AppError> {
        super::error::require_some(principal, Access::Read)?;
        if entity_types.len() > MAX_LOG_TYPES {
            return Err(AppError::invalid(
                "entity_types",
                format!(
                    "lists {} entity types, more than {MAX_LOG_TYPES}",
                    entity_types.len()
                ),
            ));
        }
        let entity_type_ids = if entity_types.is_empty() {
            match principal.narrowed_to(Access::Read) {
                None => None,
                Some(names) => {
                    let mut ids = Vec::with_capacity(names.len());
                    for name in names {
                        // A scope may name a type that does not exist (yet): it adds nothing.
                        match self.registry.resolve(&TypeKey::Name(name)).await {
                            Ok(entry) => ids.push(entry.record.id),
                            Err(AppError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Some(ids)
                }
            }
        } else {
            let mut ids = Vec::with_capacity(entity_types.len());
            for key in entity_types {
                let entry = self
                    .registry
                    .resolve_for(principal, Access::Read, key)
                    .await?;
                if !ids.contains(&entry.record.id) {
                    ids.push(entry.record.id);
                }
            }
            Some(ids)
        };
        Ok(LogScope {
            entity_type_ids,
            event_types,
        })
    }

    /// Refuses a start before what retention deleted: the read would silently skip events.
    pub async fn check_retained(&self, from_position: i64) -> Result<(), AppError> {
        check_position(from_position)?;
        retained(from_position, self.history.dropped_through().await?)
    }

    /// ReadEvents: the events after `from_position` in scope, at most `page_size`.
    #[instrument(skip(self, principal, entity_types, event_types))]
    pub async fn read_events(
        &self,
        principal: &Principal,
        from_position: i64,
        entity_types: &[TypeKey],
        event_types: Vec<String>,
        page_size: usize,
    ) -> Result<LogRead, AppError> {
        let scope = self.scope(principal, entity_types, event_types).await?;
        check_position(from_position)?;
        // The horizon comes with the page, read in the same snapshot: one round trip.
        let (read, dropped) = self.fetch(&scope, from_position, page_size).await?;
        retained(from_position, dropped)?;
        Ok(read)
    }

    /// One page in `scope` after `after` (no access or retention checks: the caller made them).
    pub(crate) async fn page(
        &self,
        scope: &LogScope,
        after: i64,
        page_size: usize,
    ) -> Result<LogRead, AppError> {
        Ok(self.fetch(scope, after, page_size).await?.0)
    }

    /// [`Self::page`], with the retention horizon read in the same snapshot.
    async fn fetch(
        &self,
        scope: &LogScope,
        after: i64,
        page_size: usize,
    ) -> Result<(LogRead, i64), AppError> {
        let filter = LogFilter {
            after,
            through: after.saturating_add(LOG_SCAN),
            entity_type_ids: scope.entity_type_ids.clone(),
            event_types: scope.event_types.clone(),
        };
        let page = self.history.read_log(&filter, page_size).await?;
        let fetched = page.events.len();
        let mut events = page.events;
        let cut = budget::fit(&mut events, self.page_budget, budget::event_len);
        let next_position = match events.last() {
            // A full page, or one the size cap cut: the next read starts right after it.
            Some(last) if cut || fetched == page_size => last.position,
            // Everything matching up to the bound was read.
            _ => filter.through.min(page.head).max(after),
        };
        Ok((
            LogRead {
                events,
                next_position,
                head_position: page.head,
            },
            page.dropped_through,
        ))
    }
}

/// A start position is 0 (the beginning) or a position.
fn check_position(from_position: i64) -> Result<(), AppError> {
    if from_position < 0 {
        return Err(AppError::invalid(
            "from_position",
            format!(
                "{from_position} is not a position: positions start at 1 (0 reads from the start)"
            ),
        ));
    }
    Ok(())
}

/// Refuses a start before `dropped`, the highest position retention deleted.
fn retained(from_position: i64, dropped: i64) -> Result<(), AppError> {
    if from_position < dropped {
        return Err(AppError::OutOfRange(format!(
            "from_position {from_position} is before the retention horizon: events up to \
             position {dropped} were deleted; read from {dropped}"
        )));
    }
    Ok(())
}
