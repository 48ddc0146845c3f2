//! The EventService: applying events to an instance and subscribing to them.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::event_service_server::EventService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::auth::caller;
use super::convert::{
    self, event_type_filters, state_from_struct, struct_from_owned, time_from_timestamp,
};
use super::status::{Reply, reply, to_status};
use crate::app::{App, AppError, EventInput};

/// The event service. Its Subscribe streams end, with UNAVAILABLE, once `stopping` turns true:
/// graceful shutdown waits for every open call, and a subscription would otherwise never end.
pub struct EventApi {
    pub app: App,
    pub stopping: tokio::sync::watch::Receiver<bool>,
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
        payload: state_from_struct("payload", payload)?,
        metadata: state_from_struct("metadata", metadata)?,
        event_id: (!event_id.is_empty()).then_some(event_id),
        occurred_at: time_from_timestamp("occurred_at", occurred_at)?,
        mode: convert::mode_from_pb("mode", mode)?,
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
        let (who, r) = caller(request)?;
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
                let target = convert::target_from_fields(
                    &r.instance_id,
                    &r.entity_type,
                    &r.external_id,
                    r.create_if_missing,
                    r.initial_state,
                )?;
                let mut applied = self
                    .app
                    .commands
                    .apply_events(&who, target, r.expected_version, vec![input], r.dry_run)
                    .await?;
                Ok(pb::ApplyEventResponse {
                    event: applied.events.pop().map(convert::event_from_record),
                    state: Some(struct_from_owned(applied.state)),
                    guards: convert::pb_from_guards(applied.guards),
                    dry_run: applied.dry_run,
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
        let (who, r) = caller(request)?;
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
                let target = convert::target_from_fields(
                    &r.instance_id,
                    &r.entity_type,
                    &r.external_id,
                    r.create_if_missing,
                    r.initial_state,
                )?;
                let applied = self
                    .app
                    .commands
                    .apply_events(&who, target, r.expected_version, inputs, r.dry_run)
                    .await?;
                Ok(pb::ApplyEventsResponse {
                    events: applied
                        .events
                        .into_iter()
                        .map(convert::event_from_record)
                        .collect(),
                    state: Some(struct_from_owned(applied.state)),
                    guards: convert::pb_from_guards(applied.guards),
                    dry_run: applied.dry_run,
                })
            }
            .await,
        )
    }

    type SubscribeStream = EventStream;

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type, instance_id = %request.get_ref().instance_id))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Reply<Self::SubscribeStream> {
        let (who, r) = caller(request)?;
        let events = async {
            let key = if r.entity_type.is_empty() {
                None
            } else {
                Some(convert::type_key_from_field(&r.entity_type)?)
            };
            let instance = convert::optional_id_from_field("instance_id", &r.instance_id)?;
            let event_types = event_type_filters(r.event_types)?;
            if let Some(from) = r.from_position {
                if instance.is_some() || r.from_version.is_some() {
                    return Err(AppError::invalid(
                        "from_position",
                        "follows the global log: not with instance_id or from_version (use \
                         from_version to replay one instance)",
                    ));
                }
                let mut keys = convert::type_keys_from_field("entity_types", &r.entity_types)?;
                if let Some(key) = key {
                    keys.push(key);
                }
                return self
                    .app
                    .subscriptions
                    .subscribe_log(&who, from, &keys, event_types)
                    .await;
            }
            if !r.entity_types.is_empty() {
                return Err(AppError::invalid(
                    "entity_types",
                    "needs from_position (a live subscription names one entity_type)",
                ));
            }
            self.app
                .subscriptions
                .subscribe(&who, key.as_ref(), instance, event_types, r.from_version)
                .await
        }
        .await
        .map_err(to_status)?;
        let stream = events.map(|item| {
            item.map(|e| pb::SubscribeResponse {
                event: Some(convert::event_from_record(e)),
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
