//! The five service implementations over [`App`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::analytics_service_server::AnalyticsService;
use temporal_state_proto::v1::entity_type_service_server::EntityTypeService;
use temporal_state_proto::v1::event_service_server::EventService;
use temporal_state_proto::v1::instance_service_server::InstanceService;
use temporal_state_proto::v1::query_service_server::QueryService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{
    self, from_timestamp, json_to_value, state_to_struct, struct_to_state, timestamp,
};
use super::status::to_status;
use crate::app::{App, AppError, EventInput};
use crate::domain::diff::ChangeKind;
use crate::ports::HistoryFilter;

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: Result<T, AppError>) -> Reply<T> {
    result.map(Response::new).map_err(to_status)
}

pub struct EntityTypeApi(pub App);
pub struct InstanceApi(pub App);
/// The event service. Its Subscribe streams end, with UNAVAILABLE, once `stopping` turns true:
/// graceful shutdown waits for every open call, and a subscription would otherwise never end.
pub struct EventApi {
    pub app: App,
    pub stopping: tokio::sync::watch::Receiver<bool>,
}
pub struct QueryApi(pub App);
pub struct AnalyticsApi(pub App);

#[tonic::async_trait]
impl EntityTypeService for EntityTypeApi {
    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_entity_type(
        &self,
        request: Request<pb::CreateEntityTypeRequest>,
    ) -> Reply<pb::CreateEntityTypeResponse> {
        let r = request.into_inner();
        reply(
            async {
                let schema = struct_to_state("schema", r.schema)?;
                let created = self
                    .0
                    .create_entity_type(&r.name, &r.description, schema)
                    .await?;
                Ok(pb::CreateEntityTypeResponse {
                    entity_type: Some(convert::entity_type(created)),
                })
            }
            .await,
        )
    }

    async fn list_entity_types(
        &self,
        request: Request<pb::ListEntityTypesRequest>,
    ) -> Reply<pb::ListEntityTypesResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .list_entity_types(r.page_size, &r.page_token)
                .await
                .map(|(types, next)| pb::ListEntityTypesResponse {
                    entity_types: types.into_iter().map(convert::entity_type).collect(),
                    next_page_token: next,
                }),
        )
    }

    async fn get_entity_type(
        &self,
        request: Request<pb::GetEntityTypeRequest>,
    ) -> Reply<pb::GetEntityTypeResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .get_entity_type(&r.entity_type)
                .await
                .map(|t| pb::GetEntityTypeResponse {
                    entity_type: Some(convert::entity_type(t)),
                }),
        )
    }
}

#[tonic::async_trait]
impl InstanceService for InstanceApi {
    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn create_instance(
        &self,
        request: Request<pb::CreateInstanceRequest>,
    ) -> Reply<pb::CreateInstanceResponse> {
        let r = request.into_inner();
        reply(
            async {
                let state = struct_to_state("initial_state", r.initial_state)?;
                let metadata = struct_to_state("metadata", r.metadata)?;
                let (instance, event) = self
                    .0
                    .create_instance(&r.entity_type, &r.external_id, state, metadata)
                    .await?;
                Ok(pb::CreateInstanceResponse {
                    instance: Some(convert::instance(instance)),
                    event: Some(convert::event(event)),
                })
            }
            .await,
        )
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .list_instances(&r.entity_type, r.page_size, &r.page_token)
                .await
                .map(|(found, next)| pb::ListInstancesResponse {
                    instances: found.into_iter().map(convert::instance).collect(),
                    next_page_token: next,
                }),
        )
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Reply<pb::GetInstanceResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .get_instance(&r.instance_id)
                .await
                .map(|i| pb::GetInstanceResponse {
                    instance: Some(convert::instance(i)),
                }),
        )
    }

    async fn get_current_state(
        &self,
        request: Request<pb::GetCurrentStateRequest>,
    ) -> Reply<pb::GetCurrentStateResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .get_current_state(&r.entity_type, &r.external_id)
                .await
                .map(|i| pb::GetCurrentStateResponse {
                    instance: Some(convert::instance(i)),
                }),
        )
    }
}

fn event_input(
    event_type: String,
    payload: Option<prost_types::Struct>,
    metadata: Option<prost_types::Struct>,
    event_id: String,
    occurred_at: Option<prost_types::Timestamp>,
    mode: i32,
) -> Result<EventInput, AppError> {
    Ok(EventInput {
        event_type,
        payload: struct_to_state("payload", payload)?,
        metadata: struct_to_state("metadata", metadata)?,
        event_id: (!event_id.is_empty()).then_some(event_id),
        occurred_at: from_timestamp("occurred_at", occurred_at)?,
        mode: convert::apply_mode(mode)?,
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn apply_event(
        &self,
        request: Request<pb::ApplyEventRequest>,
    ) -> Reply<pb::ApplyEventResponse> {
        let r = request.into_inner();
        reply(
            async {
                let input = event_input(
                    r.event_type,
                    r.payload,
                    r.metadata,
                    r.event_id,
                    r.occurred_at,
                    r.mode,
                )?;
                let (mut events, state) = self
                    .app
                    .apply_events(&r.instance_id, r.expected_version, vec![input])
                    .await?;
                Ok(pb::ApplyEventResponse {
                    event: events.pop().map(convert::event),
                    state: Some(state_to_struct(&state)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn apply_events(
        &self,
        request: Request<pb::ApplyEventsRequest>,
    ) -> Reply<pb::ApplyEventsResponse> {
        let r = request.into_inner();
        reply(
            async {
                let inputs = r
                    .events
                    .into_iter()
                    .map(|e| {
                        event_input(
                            e.event_type,
                            e.payload,
                            e.metadata,
                            e.event_id,
                            e.occurred_at,
                            e.mode,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (events, state) = self
                    .app
                    .apply_events(&r.instance_id, r.expected_version, inputs)
                    .await?;
                Ok(pb::ApplyEventsResponse {
                    events: events.into_iter().map(convert::event).collect(),
                    state: Some(state_to_struct(&state)),
                })
            }
            .await,
        )
    }

    type SubscribeStream = EventStream;

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Reply<Self::SubscribeStream> {
        let r = request.into_inner();
        let events = self
            .app
            .subscribe(
                &r.entity_type,
                &r.instance_id,
                event_type_filters(r.event_types).map_err(to_status)?,
                r.from_version,
            )
            .await
            .map_err(to_status)?;
        let stream = events.map(|item| {
            item.map(|e| pb::SubscribeResponse {
                event: Some(convert::event(e)),
            })
            .map_err(to_status)
        });
        Ok(Response::new(until_stopping(stream, self.stopping.clone())))
    }
}

/// `stream` until it ends or `stopping` turns true; in the second case one last UNAVAILABLE
/// tells the subscriber to subscribe again (from its next version) elsewhere or later.
fn until_stopping(
    stream: impl Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> EventStream {
    let stream = Box::pin(stream);
    Box::pin(futures::stream::unfold(
        Some((stream, stopping)),
        |state| async move {
            let (mut stream, mut stopping) = state?;
            let stopped = async {
                // An error means the sender is gone: the server is stopping as well.
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            tokio::select! {
                biased;
                () = stopped => Some((
                    Err(Status::unavailable(
                        "the server is shutting down; subscribe again from the next version",
                    )),
                    None,
                )),
                item = stream.next() => item.map(|item| (item, Some((stream, stopping)))),
            }
        },
    ))
}

fn history_filter(
    from_version: Option<i64>,
    to_version: Option<i64>,
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
) -> Result<HistoryFilter, AppError> {
    Ok(HistoryFilter {
        from_version,
        to_version,
        start_time: from_timestamp("start_time", start)?,
        end_time: from_timestamp("end_time", end)?,
        ..HistoryFilter::default()
    })
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Reply<pb::GetHistoryResponse> {
        let r = request.into_inner();
        reply(
            async {
                let mut filter =
                    history_filter(r.from_version, r.to_version, r.start_time, r.end_time)?;
                filter.event_types = event_type_filters(r.event_types)?;
                filter.descending = r.descending;
                let (events, next) = self
                    .0
                    .get_history(&r.instance_id, filter, r.page_size, &r.page_token)
                    .await?;
                Ok(pb::GetHistoryResponse {
                    events: events.into_iter().map(convert::event).collect(),
                    next_page_token: next,
                })
            }
            .await,
        )
    }

    async fn get_state_at_version(
        &self,
        request: Request<pb::GetStateAtVersionRequest>,
    ) -> Reply<pb::GetStateAtVersionResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .get_state_at_version(&r.instance_id, r.version)
                .await
                .map(|s| pb::GetStateAtVersionResponse {
                    state: Some(state_to_struct(&s.state)),
                    version: s.version,
                    recorded_at: Some(timestamp(s.recorded_at)),
                }),
        )
    }

    async fn get_state_at_time(
        &self,
        request: Request<pb::GetStateAtTimeRequest>,
    ) -> Reply<pb::GetStateAtTimeResponse> {
        let r = request.into_inner();
        reply(
            async {
                let at = from_timestamp("timestamp", r.timestamp)?
                    .ok_or_else(|| AppError::invalid("timestamp", "is required"))?;
                let s = self.0.get_state_at_time(&r.instance_id, at).await?;
                Ok(pb::GetStateAtTimeResponse {
                    state: Some(state_to_struct(&s.state)),
                    version: s.version,
                    recorded_at: Some(timestamp(s.recorded_at)),
                })
            }
            .await,
        )
    }

    async fn compare_versions(
        &self,
        request: Request<pb::CompareVersionsRequest>,
    ) -> Reply<pb::CompareVersionsResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .compare_versions(&r.instance_id, r.version1, r.version2)
                .await
                .map(|(first, second, cmp)| pb::CompareVersionsResponse {
                    state1: Some(state_to_struct(&first.state)),
                    state2: Some(state_to_struct(&second.state)),
                    patch: cmp
                        .patch
                        .iter()
                        .filter_map(|op| op.as_object().map(state_to_struct))
                        .collect(),
                    changes: cmp
                        .changes
                        .into_iter()
                        .map(|c| pb::FieldChange {
                            path: c.path,
                            kind: match c.kind {
                                ChangeKind::Added => pb::ChangeKind::Added,
                                ChangeKind::Removed => pb::ChangeKind::Removed,
                                ChangeKind::Changed => pb::ChangeKind::Changed,
                            } as i32,
                            old_value: c.old_value.as_ref().map(json_to_value),
                            new_value: c.new_value.as_ref().map(json_to_value),
                        })
                        .collect(),
                }),
        )
    }

    async fn get_field_timeline(
        &self,
        request: Request<pb::GetFieldTimelineRequest>,
    ) -> Reply<pb::GetFieldTimelineResponse> {
        let r = request.into_inner();
        reply(
            async {
                let filter =
                    history_filter(r.from_version, r.to_version, r.start_time, r.end_time)?;
                let (points, next) = self
                    .0
                    .get_field_timeline(
                        &r.instance_id,
                        &r.field,
                        filter,
                        r.page_size,
                        &r.page_token,
                    )
                    .await?;
                Ok(pb::GetFieldTimelineResponse {
                    points: points
                        .into_iter()
                        .map(|p| pb::TimelinePoint {
                            version: p.version,
                            recorded_at: Some(timestamp(p.recorded_at)),
                            event_type: p.event_type,
                            value: p.value.as_ref().map(json_to_value),
                        })
                        .collect(),
                    next_page_token: next,
                })
            }
            .await,
        )
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

/// Most event types one filter may list.
const MAX_EVENT_TYPE_FILTERS: usize = 256;

/// An `event_types` filter: each entry is a valid event type (so no NUL or other control
/// character reaches a store), and there are not too many of them.
fn event_type_filters(types: Vec<String>) -> Result<Vec<String>, AppError> {
    if types.len() > MAX_EVENT_TYPE_FILTERS {
        return Err(AppError::invalid(
            "event_types",
            format!(
                "lists {} event types, more than {MAX_EVENT_TYPE_FILTERS}",
                types.len()
            ),
        ));
    }
    for (i, t) in types.iter().enumerate() {
        crate::domain::EventType::parse(t).map_err(|e| match e {
            crate::domain::DomainError::InvalidField { reason, .. } => {
                AppError::invalid(format!("event_types[{i}]"), reason)
            }
            other => AppError::Invalid(other),
        })?;
    }
    Ok(types)
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_event_counts(
        &self,
        request: Request<pb::GetEventCountsRequest>,
    ) -> Reply<pb::GetEventCountsResponse> {
        let r = request.into_inner();
        reply(
            async {
                let start = from_timestamp("start_time", r.start_time)?;
                let end = from_timestamp("end_time", r.end_time)?;
                let counts = self.0.event_counts(&r.entity_type, start, end).await?;
                Ok(pb::GetEventCountsResponse {
                    counts: counts
                        .into_iter()
                        .map(|c| pb::EventTypeCount {
                            event_type: c.event_type,
                            count: c.count,
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn get_event_time_series(
        &self,
        request: Request<pb::GetEventTimeSeriesRequest>,
    ) -> Reply<pb::GetEventTimeSeriesResponse> {
        let r = request.into_inner();
        reply(
            async {
                let start = from_timestamp("start_time", r.start_time)?;
                let end = from_timestamp("end_time", r.end_time)?;
                let buckets = self
                    .0
                    .event_time_series(
                        &r.entity_type,
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
                            bucket_start: Some(timestamp(at)),
                            count,
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn get_field_aggregation(
        &self,
        request: Request<pb::GetFieldAggregationRequest>,
    ) -> Reply<pb::GetFieldAggregationResponse> {
        let r = request.into_inner();
        reply(
            async {
                let as_of = from_timestamp("as_of", r.as_of)?;
                let stats = self
                    .0
                    .field_aggregation(&r.entity_type, &r.field, as_of)
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
                            value: Some(json_to_value(value)),
                            count: *count,
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn get_most_active(
        &self,
        request: Request<pb::GetMostActiveRequest>,
    ) -> Reply<pb::GetMostActiveResponse> {
        let r = request.into_inner();
        reply(
            async {
                let start = from_timestamp("start_time", r.start_time)?;
                let end = from_timestamp("end_time", r.end_time)?;
                let entries = self
                    .0
                    .most_active(&r.entity_type, r.limit, start, end)
                    .await?;
                Ok(pb::GetMostActiveResponse {
                    entries: entries
                        .into_iter()
                        .map(|e| pb::ActiveInstance {
                            instance_id: e.instance_id.to_string(),
                            external_id: e.external_id,
                            event_count: e.event_count,
                            last_event_at: Some(timestamp(e.last_event_at)),
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn get_summary(
        &self,
        request: Request<pb::GetSummaryRequest>,
    ) -> Reply<pb::GetSummaryResponse> {
        let r = request.into_inner();
        reply(
            self.0
                .summary(&r.entity_type)
                .await
                .map(|s| pb::GetSummaryResponse {
                    instance_count: s.instance_count,
                    event_count: s.event_count,
                    first_event_at: s.first_event_at.map(timestamp),
                    last_event_at: s.last_event_at.map(timestamp),
                    events_last_24h: s.events_since,
                    event_types: s.event_types,
                }),
        )
    }
}
