//! The QueryService: time travel over one instance's history: past states, comparisons, field timelines.

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::query_service_server::QueryService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::auth::caller;
use super::convert::{
    self, event_type_filters, struct_from_owned, struct_from_state, time_from_timestamp,
    timestamp_from_time, value_from_json,
};
use super::status::{Reply, reply, to_status};
use crate::app::{App, AppError, LogRead, StateAt, TimeAxis};
use crate::domain::diff::ChangeKind;
use crate::ports::{EventRecord, HistoryFilter};

/// The query service over the application.
pub struct QueryApi(pub App);

fn history_filter(
    from_version: Option<i64>,
    to_version: Option<i64>,
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
) -> Result<HistoryFilter, AppError> {
    Ok(HistoryFilter {
        from_version,
        to_version,
        start_time: time_from_timestamp("start_time", start)?,
        end_time: time_from_timestamp("end_time", end)?,
        ..HistoryFilter::default()
    })
}

/// The hot reads, up to the records they answer with: the trait's handlers below turn them into
/// the generated messages, [`super::fast`]'s into the same bytes without building them.
impl QueryApi {
    #[instrument(skip_all, fields(from_position = request.get_ref().from_position))]
    pub(crate) async fn read_events_records(
        &self,
        request: Request<pb::ReadEventsRequest>,
    ) -> Result<LogRead, Status> {
        let (who, r) = caller(request)?;
        async {
            let keys = convert::type_keys_from_field("entity_types", &r.entity_types)?;
            let event_types = event_type_filters(r.event_types)?;
            let page = convert::page_from_fields(r.page_size, "")?;
            self.0
                .log
                .read_events(&who, r.from_position, &keys, event_types, page.size)
                .await
        }
        .await
        .map_err(to_status)
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    pub(crate) async fn history_records(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<(Vec<EventRecord>, String), Status> {
        let (who, r) = caller(request)?;
        async {
            let mut filter =
                history_filter(r.from_version, r.to_version, r.start_time, r.end_time)?;
            filter.event_types = event_type_filters(r.event_types)?;
            filter.descending = r.descending;
            let id = convert::id_from_field("instance_id", &r.instance_id)?;
            let page = convert::page_from_fields(r.page_size, &r.page_token)?;
            self.0.queries.get_history(&who, id, filter, page).await
        }
        .await
        .map_err(to_status)
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id, version = request.get_ref().version))]
    pub(crate) async fn state_at_version_record(
        &self,
        request: Request<pb::GetStateAtVersionRequest>,
    ) -> Result<StateAt, Status> {
        let (who, r) = caller(request)?;
        async {
            let id = convert::id_from_field("instance_id", &r.instance_id)?;
            self.0.queries.state_at_version(&who, id, r.version).await
        }
        .await
        .map_err(to_status)
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn read_events(
        &self,
        request: Request<pb::ReadEventsRequest>,
    ) -> Reply<pb::ReadEventsResponse> {
        let read = self.read_events_records(request).await?;
        Ok(Response::new(pb::ReadEventsResponse {
            events: read
                .events
                .into_iter()
                .map(convert::event_from_record)
                .collect(),
            next_position: read.next_position,
            head_position: read.head_position,
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Reply<pb::GetHistoryResponse> {
        let (events, next) = self.history_records(request).await?;
        Ok(Response::new(pb::GetHistoryResponse {
            events: events.into_iter().map(convert::event_from_record).collect(),
            next_page_token: next,
        }))
    }

    async fn get_state_at_version(
        &self,
        request: Request<pb::GetStateAtVersionRequest>,
    ) -> Reply<pb::GetStateAtVersionResponse> {
        let s = self.state_at_version_record(request).await?;
        Ok(Response::new(pb::GetStateAtVersionResponse {
            state: Some(struct_from_owned(s.state)),
            version: s.version,
            recorded_at: Some(timestamp_from_time(s.recorded_at)),
        }))
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn get_state_at_time(
        &self,
        request: Request<pb::GetStateAtTimeRequest>,
    ) -> Reply<pb::GetStateAtTimeResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                let at = time_from_timestamp("timestamp", r.timestamp)?
                    .ok_or_else(|| AppError::invalid("timestamp", "is required"))?;
                let known_at = time_from_timestamp("known_at", r.known_at)?;
                let axis = match (pb::TimeAxis::try_from(r.axis), known_at) {
                    (Ok(pb::TimeAxis::Both), Some(known_at)) => TimeAxis::Both { known_at },
                    (Ok(pb::TimeAxis::Both), None) => {
                        return Err(AppError::invalid(
                            "known_at",
                            "is required with TIME_AXIS_BOTH (the recorded time)",
                        ));
                    }
                    (Ok(_), Some(_)) => {
                        return Err(AppError::invalid("known_at", "is only for TIME_AXIS_BOTH"));
                    }
                    (Ok(pb::TimeAxis::Unspecified | pb::TimeAxis::RecordedAt), None) => {
                        TimeAxis::Recorded
                    }
                    (Ok(pb::TimeAxis::OccurredAt), None) => TimeAxis::Occurred,
                    (Err(_), _) => {
                        return Err(AppError::invalid(
                            "axis",
                            format!("{} is not a TimeAxis", r.axis),
                        ));
                    }
                };
                let s = self.0.queries.state_at_time(&who, id, at, axis).await?;
                Ok(pb::GetStateAtTimeResponse {
                    state: Some(struct_from_owned(s.state)),
                    version: s.version,
                    recorded_at: Some(timestamp_from_time(s.recorded_at)),
                    occurred_at: Some(timestamp_from_time(s.occurred_at)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn compare_versions(
        &self,
        request: Request<pb::CompareVersionsRequest>,
    ) -> Reply<pb::CompareVersionsResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                self.0
                    .queries
                    .compare_versions(&who, id, r.version1, r.version2)
                    .await
            }
            .await
            .map(|(first, second, cmp)| pb::CompareVersionsResponse {
                state1: Some(struct_from_owned(first.state)),
                state2: Some(struct_from_owned(second.state)),
                patch: cmp
                    .patch
                    .iter()
                    .filter_map(|op| op.as_object().map(struct_from_state))
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
                        old_value: c.old_value.as_ref().map(value_from_json),
                        new_value: c.new_value.as_ref().map(value_from_json),
                    })
                    .collect(),
            }),
        )
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn get_field_timeline(
        &self,
        request: Request<pb::GetFieldTimelineRequest>,
    ) -> Reply<pb::GetFieldTimelineResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let filter =
                    history_filter(r.from_version, r.to_version, r.start_time, r.end_time)?;
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                let page = convert::page_from_fields(r.page_size, &r.page_token)?;
                let (points, next) = self
                    .0
                    .queries
                    .get_field_timeline(&who, id, &r.field, filter, page)
                    .await?;
                Ok(pb::GetFieldTimelineResponse {
                    points: points
                        .into_iter()
                        .map(|p| pb::TimelinePoint {
                            version: p.version,
                            recorded_at: Some(timestamp_from_time(p.recorded_at)),
                            event_type: p.event_type,
                            value: p.value.as_ref().map(value_from_json),
                        })
                        .collect(),
                    next_page_token: next,
                })
            }
            .await,
        )
    }
}
