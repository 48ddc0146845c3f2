//! The AnalyticsService: counts, time series, field aggregations and activity over an entity type.

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_server::AnalyticsService;
use tonic::Request;
use tracing::instrument;

use super::auth::caller;
use super::convert::{self, time_from_timestamp, timestamp_from_time, value_from_json};
use super::status::{Reply, reply};
use chrono::{DateTime, Utc};

use crate::app::{App, AppError};
use crate::ports::TypeKey;

/// The analytics service over the application (UNIMPLEMENTED on backends without analytics).
pub struct AnalyticsApi(pub App);

impl AnalyticsApi {
    /// Every answer's `covered_from`: the retention horizon, read after the aggregate.
    async fn covered_from(&self) -> Result<Option<prost_types::Timestamp>, AppError> {
        Ok(self
            .0
            .analytics
            .covered_from()
            .await?
            .map(timestamp_from_time))
    }
}

/// Longest time-series interval: the whole range a `Timestamp` can express (years 1 to 9999).
/// Anything longer means the same single bucket, and bounding it keeps every later computation
/// (microseconds, bucket arithmetic, the database's interval type) far from overflowing.
const MAX_INTERVAL_SECS: i64 = 253_402_300_799 + 62_135_596_800;

fn interval(d: Option<prost_types::Duration>) -> Result<Option<chrono::Duration>, AppError> {
    let Some(d) = d else { return Ok(None) };
    // Not `nanos.abs()`: that overflows (and panics) on i32::MIN.
    if !(-999_999_999..=999_999_999).contains(&d.nanos)
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0)
    {
        return Err(AppError::invalid(
            "interval",
            "is not a valid google.protobuf.Duration",
        ));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(AppError::invalid(
            "interval",
            format!("must be positive, got {}s {}ns", d.seconds, d.nanos),
        ));
    }
    if d.seconds > MAX_INTERVAL_SECS {
        return Err(AppError::invalid(
            "interval",
            format!(
                "{} seconds is longer than the whole timestamp range ({MAX_INTERVAL_SECS} seconds)",
                d.seconds
            ),
        ));
    }
    // Both parts are in range now: neither the sum nor anything derived from it overflows.
    Ok(Some(
        chrono::Duration::seconds(d.seconds) + chrono::Duration::nanoseconds(i64::from(d.nanos)),
    ))
}

/// An optional moment of a request.
type Moment = Option<DateTime<Utc>>;

/// The `entity_type`, `start_time` and `end_time` fields most analytics requests carry.
fn type_and_range(
    entity_type: &str,
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
) -> Result<(TypeKey, Moment, Moment), AppError> {
    Ok((
        convert::type_key_from_field(entity_type)?,
        time_from_timestamp("start_time", start)?,
        time_from_timestamp("end_time", end)?,
    ))
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_event_counts(
        &self,
        request: Request<pb::GetEventCountsRequest>,
    ) -> Reply<pb::GetEventCountsResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let (key, start, end) = type_and_range(&r.entity_type, r.start_time, r.end_time)?;
                let counts = self
                    .0
                    .analytics
                    .event_counts(&who, &key, start, end)
                    .await?;
                Ok(pb::GetEventCountsResponse {
                    counts: counts
                        .into_iter()
                        .map(|c| pb::EventTypeCount {
                            event_type: c.event_type,
                            count: c.count,
                        })
                        .collect(),
                    covered_from: self.covered_from().await?,
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_event_time_series(
        &self,
        request: Request<pb::GetEventTimeSeriesRequest>,
    ) -> Reply<pb::GetEventTimeSeriesResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let (key, start, end) = type_and_range(&r.entity_type, r.start_time, r.end_time)?;
                let buckets = self
                    .0
                    .analytics
                    .event_time_series(
                        &who,
                        &key,
                        interval(r.interval)?,
                        start,
                        end,
                        r.event_type.as_deref(),
                    )
                    .await?;
                Ok(pb::GetEventTimeSeriesResponse {
                    buckets: buckets
                        .into_iter()
                        .map(|(at, count)| pb::TimeBucket {
                            bucket_start: Some(timestamp_from_time(at)),
                            count,
                        })
                        .collect(),
                    covered_from: self.covered_from().await?,
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_field_aggregation(
        &self,
        request: Request<pb::GetFieldAggregationRequest>,
    ) -> Reply<pb::GetFieldAggregationResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let as_of = time_from_timestamp("as_of", r.as_of)?;
                let stats = self
                    .0
                    .analytics
                    .field_aggregation(&who, &key, &r.field, as_of)
                    .await?;
                Ok(pb::GetFieldAggregationResponse {
                    count: stats.count,
                    missing: stats.missing,
                    min: stats.min,
                    max: stats.max,
                    sum: stats.sum,
                    mean: stats.mean,
                    top_values: stats
                        .top_values
                        .iter()
                        .map(|(value, count)| pb::ValueFrequency {
                            value: Some(value_from_json(value)),
                            count: *count,
                        })
                        .collect(),
                    covered_from: self.covered_from().await?,
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_most_active(
        &self,
        request: Request<pb::GetMostActiveRequest>,
    ) -> Reply<pb::GetMostActiveResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let (key, start, end) = type_and_range(&r.entity_type, r.start_time, r.end_time)?;
                let entries = self
                    .0
                    .analytics
                    .most_active(&who, &key, r.limit, start, end)
                    .await?;
                Ok(pb::GetMostActiveResponse {
                    entries: entries
                        .into_iter()
                        .map(|e| pb::ActiveInstance {
                            instance_id: e.instance_id.to_string(),
                            external_id: e.external_id,
                            event_count: e.event_count,
                            last_event_at: Some(timestamp_from_time(e.last_event_at)),
                        })
                        .collect(),
                    covered_from: self.covered_from().await?,
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_summary(
        &self,
        request: Request<pb::GetSummaryRequest>,
    ) -> Reply<pb::GetSummaryResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let s = self.0.analytics.summary(&who, &key).await?;
                Ok(pb::GetSummaryResponse {
                    instance_count: s.instance_count,
                    event_count: s.event_count,
                    first_event_at: s.first_event_at.map(timestamp_from_time),
                    last_event_at: s.last_event_at.map(timestamp_from_time),
                    events_last_24h: s.events_since,
                    event_types: s.event_types,
                    covered_from: self.covered_from().await?,
                })
            }
            .await,
        )
    }
}
