//! Time travel: history pages, past states from a snapshot plus a bounded tail, diffs and
//! field timelines. The folding and diffing themselves are pure domain functions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::instrument;
use uuid::Uuid;

use std::sync::Arc;

use super::registry::TypeRegistry;
use super::{AppError, Page, budget};
use crate::domain::diff::{Comparison, compare};
use crate::domain::field_path::path_steps;
use crate::domain::field_path::{lookup, parse_field_path};
use crate::domain::timeline::FieldTracker;
use crate::domain::{Access, Principal, State, fold_event};
use crate::ports::{
    Catalog, EntityTypeRecord, EventRecord, HistoryFilter, HistoryReader, InstanceCursor,
    InstanceOrder, InstanceQuery, InstanceRecord, SchemaVersionRecord, Snapshot, TypeKey,
};

/// Events read per round trip while folding a long range.
const FOLD_BATCH: usize = 1000;

/// Most versions one GetFieldTimeline page examines: a field that rarely changes still costs a
/// page a bounded amount of work, and the client continues with the page token.
pub const TIMELINE_SCAN: i64 = 10_000;

/// A past state and the version it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct StateAt {
    pub state: State,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    /// When the last event folded occurred (its business time).
    pub occurred_at: DateTime<Utc>,
}

/// Which time a state at a time follows (see `TimeAxis` in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAxis {
    /// What the engine knew at the moment.
    Recorded,
    /// What was true at the moment in business time, as known now.
    Occurred,
    /// What was true at business time T as known at recorded time `known_at`.
    Both { known_at: DateTime<Utc> },
}

/// Most events one state at a business time folds: folding in business-time order cannot start
/// from a snapshot (snapshots follow version order), so the work is capped rather than left to
/// the length of the history.
pub const MAX_OCCURRED_FOLD: i64 = 100_000;

/// Longest external-id prefix a listing filters on, in characters (an external id's limit).
pub const MAX_PREFIX_CHARS: usize = 256;

/// Largest JSON value a listing compares a state field to, in bytes.
pub const MAX_FILTER_VALUE_BYTES: usize = 4096;

/// What a listing of instances asks for, as the caller described it.
#[derive(Debug, Clone, Default)]
pub struct InstanceListing {
    pub include_archived: bool,
    pub external_id_prefix: Option<String>,
    pub updated_since: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// A field path (as in GetFieldTimeline) and the JSON value it must hold.
    pub state_equals: Option<(String, Value)>,
    pub order: InstanceOrder,
    pub without_state: bool,
}

/// One change of a field.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    /// None where the field was removed.
    pub value: Option<Value>,
}

/// Time travel on an erased instance: its states are gone, so there is nothing to travel to.
fn refuse_erased(instance: &InstanceRecord) -> Result<(), AppError> {
    if instance.erased {
        return Err(AppError::FailedPrecondition {
            message: format!(
                "instance {} is erased: its states, payloads and metadata are gone; only its \
                 history's facts (versions, event types, times) remain",
                instance.id
            ),
            violations: Vec::new(),
        });
    }
    Ok(())
}

fn check_range(
    from: Option<i64>,
    to: Option<i64>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Result<(), AppError> {
    for (field, v) in [("from_version", from), ("to_version", to)] {
        if let Some(v) = v
            && v < 1
        {
            return Err(AppError::invalid(
                field,
                format!("{v} is not a version: versions start at 1"),
            ));
        }
    }
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(AppError::invalid(
            "from_version",
            format!("{f} is after to_version {t}"),
        ));
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(AppError::invalid(
            "start_time",
            format!("{s} is after end_time {e}"),
        ));
    }
    Ok(())
}

/// The read side: listings of types and instances, and time travel. It holds no write port:
/// nothing here can change what is stored.
#[derive(Clone)]
pub struct Queries {
    catalog: Arc<dyn Catalog>,
    registry: Arc<TypeRegistry>,
    history: Arc<dyn HistoryReader>,
    /// Bytes one page of a listing may carry (see [`super::Limits::max_response_bytes`]).
    page_budget: usize,
}

impl Queries {
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        registry: Arc<TypeRegistry>,
        history: Arc<dyn HistoryReader>,
        page_budget: usize,
    ) -> Self {
        Self {
            catalog,
            registry,
            history,
            page_budget,
        }
    }

    pub async fn get_entity_type(
        &self,
        principal: &Principal,
        key: &TypeKey,
    ) -> Result<(EntityTypeRecord, Vec<SchemaVersionRecord>), AppError> {
        let known = self
            .registry
            .resolve_for(principal, Access::Read, key)
            .await?;
        // Read as stored now: the type may have changed on another replica.
        let record = self
            .catalog
            .get_entity_type(&TypeKey::Id(known.record.id))
            .await?;
        let versions = self.catalog.schema_versions(record.id).await?;
        self.registry.remember_record(record.clone())?;
        Ok((record, versions))
    }

    /// A page of the entity types `principal` may read, by name, and the token of the next page.
    pub async fn list_entity_types(
        &self,
        principal: &Principal,
        page: Page,
    ) -> Result<(Vec<EntityTypeRecord>, String), AppError> {
        let found = match principal.narrowed_to(Access::Read) {
            None => {
                self.catalog
                    .list_entity_types(page.after.as_deref(), page.size + 1)
                    .await?
            }
            // A narrowed reader may read a few named types: look those up, by name, instead of
            // paging through every type to filter them.
            Some(names) => {
                let mut found = Vec::new();
                let after = page.after.as_deref();
                for name in names
                    .iter()
                    .filter(|n| after.is_none_or(|a| n.as_str() > a))
                {
                    if found.len() > page.size {
                        break;
                    }
                    match self.registry.resolve(&TypeKey::Name(name.clone())).await {
                        Ok(entry) => found.push(entry.record.clone()),
                        Err(AppError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                found
            }
        };
        Ok(
            page.close(found, self.page_budget, budget::entity_type_len, |t| {
                t.name.clone()
            }),
        )
    }

    /// A page of a type's instances matching `listing`, in its order, and the token of the
    /// next page.
    pub async fn list_instances(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        page: Page,
        listing: InstanceListing,
    ) -> Result<(Vec<InstanceRecord>, String), AppError> {
        let query = instance_query(&page, listing)?;
        let entry = self
            .registry
            .resolve_for(principal, Access::Read, entity_type)
            .await?;
        let query = InstanceQuery {
            entity_type_id: entry.record.id,
            ..query
        };
        let found = self.catalog.list_instances(&query, page.size + 1).await?;
        let order = query.order;
        Ok(page.close(
            found,
            self.page_budget,
            budget::instance_len,
            |i| match order {
                InstanceOrder::ExternalId => i.external_id.clone(),
                InstanceOrder::RecentlyUpdated => {
                    format!("{} {}", i.updated_at.timestamp_micros(), i.id)
                }
            },
        ))
    }

    /// A page of an instance's events.
    pub async fn get_history(
        &self,
        principal: &Principal,
        id: Uuid,
        mut filter: HistoryFilter,
        page: Page,
    ) -> Result<(Vec<EventRecord>, String), AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        check_range(
            filter.from_version,
            filter.to_version,
            filter.start_time,
            filter.end_time,
        )?;
        filter.after_version = version_cursor(&page)?;
        // Timestamps carry nanoseconds, the store microseconds: an inclusive lower bound rounds up.
        filter.start_time = filter.start_time.map(ceil_micros);
        // Without bounds, history starts at the first retained version; bounds that reach
        // before the retention horizon are refused rather than answered with a silent gap.
        if filter.start_time.is_some() || filter.from_version.is_some() {
            self.check_retained(id, filter.from_version, filter.start_time)
                .await?;
        }
        let events = self.history.events(id, &filter, page.size + 1).await?;
        if events.is_empty() {
            // Tell an unknown instance from an empty filter result.
            self.catalog.get_instance(id).await?;
        }
        // Big events end the page early rather than push the response past the size cap.
        Ok(
            page.close(events, self.page_budget, budget::event_len, |e| {
                e.version.to_string()
            }),
        )
    }

    /// The state right after `version`: one snapshot read plus at most the snapshot interval's
    /// number of events, in one round trip.
    #[instrument(skip(self, principal))]
    pub async fn state_at_version(
        &self,
        principal: &Principal,
        id: Uuid,
        version: i64,
    ) -> Result<StateAt, AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        self.state_at(id, version).await
    }

    /// [`Queries::state_at_version`] for the application's own use: no access check.
    pub(crate) async fn state_at(&self, id: Uuid, version: i64) -> Result<StateAt, AppError> {
        if version < 1 {
            return Err(AppError::invalid(
                "version",
                format!("{version} is not a version: versions start at 1"),
            ));
        }
        let (snapshot, tail) = self.history.snapshot_and_tail(id, version).await?;
        if let Some(at) = fold(snapshot, &tail, version)? {
            return Ok(at);
        }
        // An erased instance's stores answer no tail (see `HistoryReader::snapshot_and_tail`).
        let instance = self.catalog.get_instance(id).await?;
        refuse_erased(&instance)?;
        if version <= instance.version {
            // It existed, and is gone: retention dropped it.
            return Err(self.dropped(id, version).await);
        }
        Err(AppError::invalid(
            "version",
            format!(
                "version {version} is past the latest version {} of instance {id}",
                instance.version
            ),
        ))
    }

    /// The state at `at` on `axis`: as the engine knew it then (after the last event recorded
    /// at or before it), or folded from the events that had occurred by then (as known now, or
    /// as known at a recorded time).
    #[instrument(skip(self, principal))]
    pub async fn state_at_time(
        &self,
        principal: &Principal,
        id: Uuid,
        at: DateTime<Utc>,
        axis: TimeAxis,
    ) -> Result<StateAt, AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        let known_at = match axis {
            TimeAxis::Recorded => at,
            TimeAxis::Both { known_at } => known_at,
            TimeAxis::Occurred => return self.state_occurred_at(id, at, None).await,
        };
        self.check_retained(id, None, Some(known_at)).await?;
        let Some(version) = self.history.version_at(id, known_at).await? else {
            let instance = self.catalog.get_instance(id).await?;
            refuse_erased(&instance)?;
            return Err(AppError::NotFound(format!(
                "instance {id} did not exist at {}: it was created at {}",
                known_at.to_rfc3339(),
                instance.created_at.to_rfc3339()
            )));
        };
        match axis {
            TimeAxis::Recorded => self.state_at(id, version).await,
            _ => self.state_occurred_at(id, at, Some(version)).await,
        }
    }

    /// The fold of the events up to version `up_to` (the latest when None) that occurred at or
    /// before `at`, in business-time order (`occurred_at`, then version): a change that
    /// occurred later in business time wins, whenever it was recorded. Snapshots hold states in
    /// version order, so this fold starts from the empty state and reads the events in batches,
    /// at most [`MAX_OCCURRED_FOLD`] of them.
    async fn state_occurred_at(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        up_to: Option<i64>,
    ) -> Result<StateAt, AppError> {
        let instance = self.catalog.get_instance(id).await?;
        refuse_erased(&instance)?;
        let up_to = up_to.unwrap_or(instance.version);
        // The fold needs every event from version 1: refused once retention dropped some.
        self.check_retained(id, Some(1), None).await?;
        let mut state = State::new();
        let mut last: Option<StateAt> = None;
        let mut folded: i64 = 0;
        loop {
            let after = last.as_ref().map(|l| (l.occurred_at, l.version));
            let batch = self
                .history
                .events_occurred_by(id, at, up_to, after, FOLD_BATCH)
                .await?;
            let Some(end) = batch.last() else { break };
            let more = batch.len() == FOLD_BATCH;
            last = Some(StateAt {
                state: State::new(),
                version: end.version,
                recorded_at: end.recorded_at,
                occurred_at: end.occurred_at,
            });
            folded += batch.len() as i64;
            if folded > MAX_OCCURRED_FOLD {
                return Err(AppError::TooLarge(format!(
                    "the state at business time {} folds more than {MAX_OCCURRED_FOLD} events \
                     one by one (business-time order cannot start from a snapshot)",
                    at.to_rfc3339()
                )));
            }
            for event in &batch {
                fold_event(&mut state, &event.payload, event.mode).map_err(|e| {
                    AppError::FailedPrecondition {
                        message: format!(
                            "the state at business time {} cannot be folded: event version {} \
                             ({}) does not apply in business-time order: {e}",
                            at.to_rfc3339(),
                            event.version,
                            event.event_type
                        ),
                        violations: Vec::new(),
                    }
                })?;
            }
            if !more {
                break;
            }
        }
        match last {
            Some(last) => Ok(StateAt { state, ..last }),
            None => Err(AppError::NotFound(format!(
                "instance {id} has no event that occurred at or before {}",
                at.to_rfc3339()
            ))),
        }
    }

    /// Both states, the patch from the first to the second and the flat list of changes.
    pub async fn compare_versions(
        &self,
        principal: &Principal,
        id: Uuid,
        version1: i64,
        version2: i64,
    ) -> Result<(StateAt, StateAt, Comparison), AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        let first = self
            .state_at(id, version1)
            .await
            .map_err(|e| rename(e, "version1"))?;
        let second = self
            .state_at(id, version2)
            .await
            .map_err(|e| rename(e, "version2"))?;
        let comparison = compare(&first.state, &second.state);
        Ok((first, second, comparison))
    }

    /// A page of the versions at which the field's value changed, within the optional ranges,
    /// and the token of the next page.
    ///
    /// The fold starts from the state just before the range (a snapshot plus a bounded tail),
    /// never from version 1, and a page examines at most `TIMELINE_SCAN` versions: however
    /// long the history, one call reads a bounded number of events. A page stops at
    /// `page_size` points, after that many versions, or before its points would pass the
    /// response budget, whichever comes first; its token continues right after the last
    /// version it examined.
    pub async fn get_field_timeline(
        &self,
        principal: &Principal,
        id: Uuid,
        field: &str,
        filter: HistoryFilter,
        page: Page,
    ) -> Result<(Vec<TimelineEntry>, String), AppError> {
        self.registry
            .check_instance(principal, Access::Read, id)
            .await?;
        let pointer = parse_field_path(field)?;
        check_range(
            filter.from_version,
            filter.to_version,
            filter.start_time,
            filter.end_time,
        )?;
        let cursor = version_cursor(&page)?;
        // Tells an unknown instance from an empty timeline, and a range past the end from a bad
        // version.
        let instance = self.catalog.get_instance(id).await?;
        refuse_erased(&instance)?;
        let latest = instance.version;
        let mut start = filter.from_version.unwrap_or(1);
        if filter.start_time.is_some() {
            self.check_retained(id, None, filter.start_time).await?;
        }
        if filter.from_version.is_none()
            && let Some(first) = self.first_retained(id).await?
            && first > 1
        {
            // An open range starts where history is kept: after the first retained version,
            // whose state (a snapshot) is the value the changes are measured from. Whether that
            // version itself changed the field is no longer known.
            start = start.max(first + 1);
        }
        let mut end = filter.to_version.unwrap_or(latest).min(latest);
        // recorded_at never decreases along an instance's versions, so a time range is a
        // version range: find it instead of folding through everything before it.
        if let Some(t) = filter.start_time {
            let before = ceil_micros(t) - chrono::Duration::microseconds(1);
            if let Some(v) = self.history.version_at(id, before).await? {
                start = start.max(v + 1);
            }
        }
        if let Some(t) = filter.end_time {
            end = end.min(self.history.version_at(id, t).await?.unwrap_or(0));
        }
        if let Some(c) = cursor {
            start = start.max(c.saturating_add(1));
        }
        if start > end {
            return Ok((Vec::new(), String::new()));
        }
        let (mut state, initial) = if start > 1 {
            let before = self.state_at(id, start - 1).await?;
            let value = lookup(&before.state, &pointer).cloned();
            (before.state, value)
        } else {
            (State::new(), None)
        };
        let mut tracker = FieldTracker::new(pointer, initial);
        let mut points = Vec::new();
        let mut budget = budget::Budget::new(self.page_budget);
        let scan_end = end.min(start.saturating_add(TIMELINE_SCAN - 1));
        let mut read = HistoryFilter {
            from_version: Some(start),
            to_version: Some(scan_end),
            ..HistoryFilter::default()
        };
        // The last version whose change (if any) is in `points`: where the next page continues.
        let mut examined = start - 1;
        'fold: loop {
            let events = self.history.events(id, &read, FOLD_BATCH).await?;
            for event in &events {
                fold_event(&mut state, &event.payload, event.mode).map_err(|e| {
                    AppError::Internal(format!(
                        "stored event {} does not apply: {e}",
                        event.version
                    ))
                })?;
                // Breaking out below leaves the tracker and state behind: the next page starts
                // afresh from the state before the version it continues at.
                if let Some(value) = tracker.observe(&state) {
                    let in_time = filter.start_time.is_none_or(|s| event.recorded_at >= s)
                        && filter.end_time.is_none_or(|e| event.recorded_at <= e);
                    if in_time {
                        let point = TimelineEntry {
                            version: event.version,
                            recorded_at: event.recorded_at,
                            event_type: event.event_type.clone(),
                            value,
                        };
                        if !budget.take(timeline_len(&point)) {
                            break 'fold; // this version starts the next page
                        }
                        points.push(point);
                    }
                }
                examined = event.version;
                if points.len() == page.size {
                    break 'fold;
                }
            }
            match events.last() {
                Some(last) if events.len() == FOLD_BATCH => read.after_version = Some(last.version),
                _ => {
                    // Everything up to the scan's end was read.
                    examined = examined.max(scan_end);
                    break;
                }
            }
        }
        let token = page.token(examined < end, Some(&examined.to_string()));
        Ok((points, token))
    }

    /// The events at `versions` of an instance, in the order given: one read per run of
    /// consecutive versions (a retried batch is one run).
    pub(crate) async fn recorded_events(
        &self,
        instance_id: Uuid,
        versions: &[i64],
    ) -> Result<Vec<EventRecord>, AppError> {
        let mut sorted = versions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut found = std::collections::HashMap::with_capacity(sorted.len());
        let mut start = 0;
        while start < sorted.len() {
            let mut end = start;
            while end + 1 < sorted.len() && sorted[end + 1] == sorted[end] + 1 {
                end += 1;
            }
            let filter = HistoryFilter {
                from_version: Some(sorted[start]),
                to_version: Some(sorted[end]),
                ..Default::default()
            };
            for e in self
                .history
                .events(instance_id, &filter, end - start + 1)
                .await?
            {
                found.insert(e.version, e);
            }
            start = end + 1;
        }
        let mut events = Vec::with_capacity(versions.len());
        for v in versions {
            match found.get(v) {
                Some(e) => events.push(e.clone()),
                // Its key outlives it, so a retry is still never applied twice.
                None if self.history.horizon().await?.is_some() => {
                    return Err(self.dropped(instance_id, *v).await);
                }
                None => {
                    return Err(AppError::Internal(format!(
                        "recorded version {v} of {instance_id} is missing"
                    )));
                }
            }
        }
        Ok(events)
    }

    /// OUT_OF_RANGE unless what a read asks for is retained: `from_version` at or after the
    /// first retained version, `from_time` at or after the retention horizon.
    pub(crate) async fn check_retained(
        &self,
        id: Uuid,
        from_version: Option<i64>,
        from_time: Option<DateTime<Utc>>,
    ) -> Result<(), AppError> {
        let Some(horizon) = self.history.horizon().await? else {
            return Ok(());
        };
        if let Some(t) = from_time
            && t < horizon
        {
            return Err(AppError::OutOfRange(format!(
                "{} is before the retention horizon {}: history recorded before it is no \
                 longer kept",
                t.to_rfc3339(),
                horizon.to_rfc3339()
            )));
        }
        if let Some(v) = from_version
            && self.first_version(id).await?.is_some_and(|first| v < first)
        {
            return Err(self.dropped(id, v).await);
        }
        Ok(())
    }

    /// The oldest version of an instance still kept, once retention has run; None before it
    /// ever ran (every version is kept then) or when the instance has no events.
    async fn first_retained(&self, id: Uuid) -> Result<Option<i64>, AppError> {
        if self.history.horizon().await?.is_none() {
            return Ok(None);
        }
        self.first_version(id).await
    }

    /// The oldest version of an instance in the store (None without events).
    async fn first_version(&self, id: Uuid) -> Result<Option<i64>, AppError> {
        let first = self
            .history
            .events(id, &HistoryFilter::default(), 1)
            .await?;
        Ok(first.first().map(|e| e.version))
    }

    /// The error for a version that retention dropped: OUT_OF_RANGE naming the horizon and the
    /// first version kept. Without a horizon nothing was ever dropped, so a missing version is
    /// damaged data.
    async fn dropped(&self, id: Uuid, version: i64) -> AppError {
        let horizon = match self.history.horizon().await {
            Ok(Some(h)) => h,
            Ok(None) => {
                return AppError::DataLoss(format!(
                    "version {version} of instance {id} is missing from the stored history"
                ));
            }
            Err(e) => return e.into(),
        };
        let first = self.first_version(id).await.ok().flatten();
        AppError::OutOfRange(format!(
            "version {version} of instance {id} was recorded before the retention horizon {} \
             and is no longer kept{}",
            horizon.to_rfc3339(),
            first.map_or(String::new(), |f| format!(
                "; the oldest version kept is {f}"
            ))
        ))
    }
}

/// The state right after `version`, from the snapshot at or before it and the events after the
/// snapshot up to `version` ([`HistoryReader::snapshot_and_tail`]). None when an event the fold
/// needs is missing: `version` is past the end, or retention dropped it (retention drops the
/// oldest first, so a gap means the version lies before what is kept).
pub(crate) fn fold(
    snapshot: Option<Snapshot>,
    tail: &[EventRecord],
    version: i64,
) -> Result<Option<StateAt>, AppError> {
    let Some(last) = tail.last().filter(|e| e.version == version) else {
        return Ok(None);
    };
    let recorded_at = last.recorded_at;
    let occurred_at = last.occurred_at;
    let (mut state, from) = match snapshot {
        Some(s) => (s.state, s.version),
        None => (State::new(), 0),
    };
    let folded = tail.iter().filter(|e| e.version > from);
    if folded.clone().map(|e| e.version).ne(from + 1..=version) {
        return Ok(None);
    }
    for event in folded {
        fold_event(&mut state, &event.payload, event.mode).map_err(|e| {
            AppError::Internal(format!(
                "stored event {} does not apply: {e}",
                event.version
            ))
        })?;
    }
    Ok(Some(StateAt {
        state,
        version,
        recorded_at,
        occurred_at,
    }))
}

/// The store query of a listing, validated; its entity type is filled in by the caller.
fn instance_query(page: &Page, listing: InstanceListing) -> Result<InstanceQuery, AppError> {
    if let Some(prefix) = &listing.external_id_prefix {
        if prefix.chars().count() > MAX_PREFIX_CHARS {
            return Err(AppError::invalid(
                "external_id_prefix",
                format!("must be at most {MAX_PREFIX_CHARS} characters"),
            ));
        }
        if prefix.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "external_id_prefix",
                "must not contain control characters (no external id does)",
            ));
        }
    }
    if let (Some(s), Some(b)) = (listing.updated_since, listing.updated_before)
        && s >= b
    {
        return Err(AppError::invalid(
            "updated_since",
            format!(
                "{} is not before updated_before {}",
                s.to_rfc3339(),
                b.to_rfc3339()
            ),
        ));
    }
    let state_equals = match listing.state_equals {
        None => None,
        Some((path, value)) => {
            let pointer = parse_field_path(&path)
                .map_err(|e| AppError::invalid("state_path", e.to_string()))?;
            let steps =
                path_steps(&pointer).map_err(|e| AppError::invalid("state_path", e.to_string()))?;
            let size = serde_json::to_vec(&value)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_FILTER_VALUE_BYTES {
                return Err(AppError::invalid(
                    "state_equals",
                    format!("is {size} bytes of JSON, over the limit of {MAX_FILTER_VALUE_BYTES}"),
                ));
            }
            Some((steps, value))
        }
    };
    let after = match (&page.after, listing.order) {
        (None, _) => None,
        (Some(a), InstanceOrder::ExternalId) => Some(InstanceCursor::ExternalId(a.clone())),
        (Some(a), InstanceOrder::RecentlyUpdated) => {
            let malformed = || {
                AppError::invalid(
                    "page_token",
                    "is malformed: pass the next_page_token of a previous page of this order",
                )
            };
            let (micros, id) = a.split_once(' ').ok_or_else(malformed)?;
            let micros: i64 = micros.parse().map_err(|_| malformed())?;
            let at = DateTime::from_timestamp_micros(micros).ok_or_else(malformed)?;
            let id = Uuid::parse_str(id).map_err(|_| malformed())?;
            Some(InstanceCursor::Updated(at, id))
        }
    };
    Ok(InstanceQuery {
        entity_type_id: Uuid::nil(),
        include_archived: listing.include_archived,
        external_id_prefix: listing.external_id_prefix.filter(|p| !p.is_empty()),
        // Timestamps carry nanoseconds, the store microseconds: an inclusive lower bound rounds
        // up, an exclusive upper bound too.
        updated_since: listing.updated_since.map(ceil_micros),
        updated_before: listing.updated_before.map(ceil_micros),
        state_equals,
        order: listing.order,
        after,
        without_state: listing.without_state,
    })
}

/// Bytes a timeline point takes in the response.
fn timeline_len(p: &TimelineEntry) -> usize {
    64 + p.event_type.len() + p.value.as_ref().map_or(0, budget::value_len)
}

/// The version a page token continues after.
fn version_cursor(page: &Page) -> Result<Option<i64>, AppError> {
    match &page.after {
        None => Ok(None),
        Some(cursor) => Ok(Some(
            cursor
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    AppError::invalid(
                        "page_token",
                        "is malformed: pass the next_page_token of a previous page",
                    )
                })?,
        )),
    }
}

/// Rounds a moment up to the next whole microsecond, the store's precision, so that an
/// inclusive lower bound (or an exclusive upper one) never takes in a moment before it.
pub(crate) fn ceil_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t);
    if floor < t {
        floor + chrono::Duration::microseconds(1)
    } else {
        floor
    }
}

/// Names the request field a version error is about when two versions are involved.
fn rename(error: AppError, field: &str) -> AppError {
    match error {
        AppError::Invalid(crate::domain::DomainError::InvalidField { field: f, reason })
            if f == "version" =>
        {
            AppError::invalid(field, reason)
        }
        other => other,
    }
}
