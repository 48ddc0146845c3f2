//! AnalyticsService: aggregates over all instances of an entity type, on the events' business
//! time (`occurred_at`).

use std::time::{Duration, SystemTime};

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_client::AnalyticsServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::{ActiveInstance, EventTypeCount, FieldAggregation, Summary, TimeBucket, time};
use crate::options::{CallOptions, call_options};

/// Options of [`Client::get_event_counts`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetEventCountsOptions {
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    call: CallOptions,
}

impl GetEventCountsOptions {
    /// Only events that occurred at or after this moment. Default: no lower bound.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_time = Some(at);
        self
    }

    /// Only events that occurred before this moment. Default: no upper bound.
    pub fn end_time(mut self, at: SystemTime) -> Self {
        self.end_time = Some(at);
        self
    }
}
call_options!(GetEventCountsOptions);

/// Options of [`Client::get_event_time_series`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetEventTimeSeriesOptions {
    event_type: Option<String>,
    call: CallOptions,
}

impl GetEventTimeSeriesOptions {
    /// Only events of this type. Default: every type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }
}
call_options!(GetEventTimeSeriesOptions);

/// Options of [`Client::get_field_aggregation`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetFieldAggregationOptions {
    as_of: Option<SystemTime>,
    call: CallOptions,
}

impl GetFieldAggregationOptions {
    /// Aggregate over the states as they were at this moment. Default: the current states.
    pub fn as_of(mut self, at: SystemTime) -> Self {
        self.as_of = Some(at);
        self
    }
}
call_options!(GetFieldAggregationOptions);

/// Options of [`Client::get_most_active`].
#[derive(Debug, Clone, PartialEq)]
pub struct GetMostActiveOptions {
    limit: i32,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    call: CallOptions,
}

impl Default for GetMostActiveOptions {
    fn default() -> Self {
        Self {
            limit: 10,
            start_time: None,
            end_time: None,
            call: CallOptions::default(),
        }
    }
}

impl GetMostActiveOptions {
    /// How many instances (1 to 1000). Default: 10.
    pub fn limit(mut self, limit: i32) -> Self {
        self.limit = limit;
        self
    }

    /// Only events that occurred at or after this moment. Default: no lower bound.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_time = Some(at);
        self
    }

    /// Only events that occurred before this moment. Default: no upper bound.
    pub fn end_time(mut self, at: SystemTime) -> Self {
        self.end_time = Some(at);
        self
    }
}
call_options!(GetMostActiveOptions);

/// Options of [`Client::get_summary`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetSummaryOptions {
    call: CallOptions,
}
call_options!(GetSummaryOptions);

impl Client {
    /// Events per event type of `entity_type` (id or name), most frequent first.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// for c in client.get_event_counts("player_profile", &Default::default()).await? {
    ///     println!("{}: {}", c.event_type, c.count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_event_counts(
        &self,
        entity_type: &str,
        options: &GetEventCountsOptions,
    ) -> Result<Vec<EventTypeCount>> {
        let request = pb::GetEventCountsRequest {
            entity_type: entity_type.to_string(),
            start_time: options.start_time.map(Into::into),
            end_time: options.end_time.map(Into::into),
        };
        let r = self
            .unary(
                "GetEventCounts",
                &options.call,
                request,
                |t, r| async move { AnalyticsServiceClient::new(t).get_event_counts(r).await },
            )
            .await
            .0?;
        Ok(r.counts
            .into_iter()
            .map(|c| EventTypeCount {
                event_type: c.event_type,
                count: c.count,
            })
            .collect())
    }

    /// Events of `entity_type` per bucket of `interval` in `[start, end)`, empty buckets
    /// included, in time order.
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    ///
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let end = SystemTime::now();
    /// let day = Duration::from_secs(86_400);
    /// let hourly = client
    ///     .get_event_time_series("player_profile", Duration::from_secs(3600), end - day, end, &Default::default())
    ///     .await?;
    /// for b in hourly {
    ///     println!("{:?}: {}", b.bucket_start, b.count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_event_time_series(
        &self,
        entity_type: &str,
        interval: Duration,
        start: SystemTime,
        end: SystemTime,
        options: &GetEventTimeSeriesOptions,
    ) -> Result<Vec<TimeBucket>> {
        let request = pb::GetEventTimeSeriesRequest {
            entity_type: entity_type.to_string(),
            interval: Some(
                prost_types::Duration::try_from(interval)
                    .map_err(|e| Error::encode("interval", e))?,
            ),
            start_time: Some(start.into()),
            end_time: Some(end.into()),
            event_type: options.event_type.clone(),
        };
        let r = self
            .unary(
                "GetEventTimeSeries",
                &options.call,
                request,
                |t, r| async move {
                    AnalyticsServiceClient::new(t)
                        .get_event_time_series(r)
                        .await
                },
            )
            .await
            .0?;
        r.buckets
            .into_iter()
            .map(|b| {
                Ok(TimeBucket {
                    bucket_start: time("bucket_start", b.bucket_start)?,
                    count: b.count,
                })
            })
            .collect()
    }

    /// Statistics of one field (a JSON pointer such as `/score`, or a dotted path) over the
    /// states of every instance of `entity_type`.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let scores = client.get_field_aggregation("player_profile", "/score", &Default::default()).await?;
    /// println!("{} players, mean score {:?}", scores.count, scores.mean);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_field_aggregation(
        &self,
        entity_type: &str,
        field: &str,
        options: &GetFieldAggregationOptions,
    ) -> Result<FieldAggregation> {
        let request = pb::GetFieldAggregationRequest {
            entity_type: entity_type.to_string(),
            field: field.to_string(),
            as_of: options.as_of.map(Into::into),
        };
        let r = self
            .unary(
                "GetFieldAggregation",
                &options.call,
                request,
                |t, r| async move {
                    AnalyticsServiceClient::new(t)
                        .get_field_aggregation(r)
                        .await
                },
            )
            .await
            .0?;
        Ok(r.into())
    }

    /// The instances of `entity_type` with the most events, most first.
    ///
    /// ```no_run
    /// use temporal_state_client::GetMostActiveOptions;
    ///
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let top = client
    ///     .get_most_active("player_profile", &GetMostActiveOptions::default().limit(3))
    ///     .await?;
    /// for a in top {
    ///     println!("{}: {} events", a.external_id, a.event_count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_most_active(
        &self,
        entity_type: &str,
        options: &GetMostActiveOptions,
    ) -> Result<Vec<ActiveInstance>> {
        let request = pb::GetMostActiveRequest {
            entity_type: entity_type.to_string(),
            limit: options.limit,
            start_time: options.start_time.map(Into::into),
            end_time: options.end_time.map(Into::into),
        };
        let r = self
            .unary("GetMostActive", &options.call, request, |t, r| async move {
                AnalyticsServiceClient::new(t).get_most_active(r).await
            })
            .await
            .0?;
        r.entries
            .into_iter()
            .map(|e| {
                Ok(ActiveInstance {
                    last_event_at: time("last_event_at", e.last_event_at)?,
                    instance_id: e.instance_id,
                    external_id: e.external_id,
                    event_count: e.event_count,
                })
            })
            .collect()
    }

    /// Totals of `entity_type`: instances, events, first and last event, event types.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let s = client.get_summary("player_profile", &Default::default()).await?;
    /// println!("{} instances, {} events ({} today)", s.instance_count, s.event_count, s.events_last_24h);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_summary(
        &self,
        entity_type: &str,
        options: &GetSummaryOptions,
    ) -> Result<Summary> {
        let request = pb::GetSummaryRequest {
            entity_type: entity_type.to_string(),
        };
        let r = self
            .unary("GetSummary", &options.call, request, |t, r| async move {
                AnalyticsServiceClient::new(t).get_summary(r).await
            })
            .await
            .0?;
        r.try_into()
    }
}
