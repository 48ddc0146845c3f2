//! Analytics use cases: validate the request, resolve the type, delegate the aggregate to the
//! store, and fill in what the store leaves out (empty buckets, `as_of` statistics).

use chrono::{DateTime, Duration, Utc};

use std::sync::Arc;

use super::AppError;
use super::queries::ceil_micros;
use super::registry::TypeRegistry;
use crate::domain::analytics::{FieldStats, bucket_count, fill_buckets};
use crate::domain::field_path::parse_field_path;
use crate::domain::{Access, Principal};
use crate::ports::{
    ActiveInstance, AnalyticsReader, EventTypeCount, HistoryReader, TimeRange, TypeKey, TypeSummary,
};

/// How many frequent values a field aggregation returns.
pub const TOP_VALUES: usize = 10;
/// Most instances GetMostActive returns.
pub const MAX_LIMIT: i32 = 1000;

fn range(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Result<TimeRange, AppError> {
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(AppError::invalid(
            "start_time",
            format!(
                "{} is not before end_time {}",
                s.to_rfc3339(),
                e.to_rfc3339()
            ),
        ));
    }
    // The store keeps microseconds: `>= start` and `< end` both round up.
    Ok(TimeRange {
        start: start.map(ceil_micros),
        end: end.map(ceil_micros),
    })
}

/// The analytics use cases: aggregates over one entity type's events, computed by the
/// [`AnalyticsReader`] where the data lives.
#[derive(Clone)]
pub struct Analytics {
    /// None on backends without analytics: every use case answers UNIMPLEMENTED.
    reader: Option<Arc<dyn AnalyticsReader>>,
    /// Where the retention horizon is read: what the aggregates cover.
    history: Arc<dyn HistoryReader>,
    registry: Arc<TypeRegistry>,
}

impl Analytics {
    pub(crate) fn new(
        reader: Option<Arc<dyn AnalyticsReader>>,
        history: Arc<dyn HistoryReader>,
        registry: Arc<TypeRegistry>,
    ) -> Self {
        Self {
            reader,
            history,
            registry,
        }
    }

    /// Where the events every aggregate counts begin: the retention horizon, before which
    /// events recorded are no longer kept (only each instance's last one before it). None while
    /// retention never ran: everything is covered. Read after an aggregate, so that it is never
    /// earlier than the horizon the aggregate saw.
    pub async fn covered_from(&self) -> Result<Option<DateTime<Utc>>, AppError> {
        Ok(self.history.horizon().await?)
    }

    fn analytics(&self) -> Result<&dyn AnalyticsReader, AppError> {
        self.reader.as_deref().ok_or_else(|| {
            AppError::Unsupported("analytics are not available on this backend".into())
        })
    }

    async fn type_id(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
    ) -> Result<uuid::Uuid, AppError> {
        Ok(self
            .registry
            .resolve_for(principal, Access::Read, entity_type)
            .await?
            .record
            .id)
    }

    pub async fn event_counts(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<EventTypeCount>, AppError> {
        let range = range(start, end)?;
        let analytics = self.analytics()?;
        let id = self.type_id(principal, entity_type).await?;
        Ok(analytics.event_counts(id, range).await?)
    }

    pub async fn event_time_series(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        interval: Option<Duration>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        event_type: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, AppError> {
        if let Some(t) = event_type {
            // A filter naming what no event can be called (a NUL, a control character) is a
            // mistake, and a NUL would not even reach PostgreSQL.
            crate::domain::EventType::parse(t)?;
        }
        let interval = interval.ok_or_else(|| AppError::invalid("interval", "is required"))?;
        let micros = interval
            .num_microseconds()
            .ok_or_else(|| AppError::invalid("interval", "is too long"))?;
        let start =
            ceil_micros(start.ok_or_else(|| AppError::invalid("start_time", "is required"))?);
        let end = ceil_micros(end.ok_or_else(|| AppError::invalid("end_time", "is required"))?);
        let buckets = bucket_count(micros, start, end)?;
        let analytics = self.analytics()?;
        let id = self.type_id(principal, entity_type).await?;
        let found = analytics
            .time_series(id, micros, start, end, event_type)
            .await?;
        Ok(fill_buckets(micros, start, buckets, &found))
    }

    pub async fn field_aggregation(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        field: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<FieldStats, AppError> {
        let pointer = parse_field_path(field)?;
        let analytics = self.analytics()?;
        let entry = self
            .registry
            .resolve_for(principal, Access::Read, entity_type)
            .await?;
        let stats = match as_of {
            None => {
                analytics
                    .field_stats(entry.record.id, &pointer, TOP_VALUES)
                    .await?
            }
            Some(at) => {
                if let Some(horizon) = self.history.horizon().await?
                    && at < horizon
                {
                    return Err(AppError::OutOfRange(format!(
                        "as_of {} is before the retention horizon {}: states before it are no \
                         longer kept",
                        at.to_rfc3339(),
                        horizon.to_rfc3339()
                    )));
                }
                analytics
                    .field_stats_as_of(entry.record.id, &pointer, at, TOP_VALUES)
                    .await?
            }
        };
        if stats.count == 0 && !declares(&entry.record.schema, &pointer) {
            return Err(AppError::NotFound(format!(
                "field {field:?}: the schema of {} does not declare it and no state has it",
                entry.record.name
            )));
        }
        Ok(stats)
    }

    pub async fn most_active(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
        limit: i32,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<ActiveInstance>, AppError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::invalid(
                "limit",
                format!("{limit} is out of range: expected 1 to {MAX_LIMIT}"),
            ));
        }
        let range = range(start, end)?;
        let analytics = self.analytics()?;
        let id = self.type_id(principal, entity_type).await?;
        Ok(analytics.most_active(id, range, limit as usize).await?)
    }

    pub async fn summary(
        &self,
        principal: &Principal,
        entity_type: &TypeKey,
    ) -> Result<TypeSummary, AppError> {
        let analytics = self.analytics()?;
        let id = self.type_id(principal, entity_type).await?;
        Ok(analytics
            .summary(id, Utc::now() - Duration::hours(24))
            .await?)
    }
}

/// Whether a JSON Schema declares the field at `pointer` through nested `properties` (or, for
/// array indices, `items`).
fn declares(schema: &crate::domain::State, pointer: &str) -> bool {
    let mut node = serde_json::Value::Object(schema.clone());
    for segment in crate::domain::analytics::pointer_segments(pointer) {
        let next = node
            .get("properties")
            .and_then(|p| p.get(&segment))
            .or_else(|| {
                segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|_| node.get("items"))
            })
            .cloned();
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_fields_follow_properties_and_items() {
        let schema =
            json!({"properties": {"stats": {"properties": {"level": {}}}, "tags": {"items": {}}}});
        let schema = schema.as_object().unwrap();
        assert!(declares(schema, "/stats/level"));
        assert!(declares(schema, "/tags/0"));
        assert!(!declares(schema, "/stats/xp"));
        assert!(!declares(schema, "/nope"));
    }
}
