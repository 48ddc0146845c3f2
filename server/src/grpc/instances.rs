//! The InstanceService: creating instances and reading their current state.

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::instance_service_server::InstanceService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::auth::caller;
use super::convert::{self, state_from_struct};
use super::status::{Reply, reply, to_status};
use crate::app::{App, AppError, InstanceListing};
use crate::ports::{InstanceOrder, InstanceRecord};

/// The instance service over the application.
pub struct InstanceApi(pub App);

/// The hot reads, up to the record they answer with: the trait's handlers below turn it into the
/// generated message, [`super::fast`]'s into the same bytes without building it.
impl InstanceApi {
    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    pub(crate) async fn instance_record(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<InstanceRecord, Status> {
        let (who, r) = caller(request)?;
        async {
            let id = convert::id_from_field("instance_id", &r.instance_id)?;
            self.0.current.get_instance(&who, id).await
        }
        .await
        .map_err(to_status)
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type, external_id = %request.get_ref().external_id))]
    pub(crate) async fn current_state_record(
        &self,
        request: Request<pb::GetCurrentStateRequest>,
    ) -> Result<InstanceRecord, Status> {
        let (who, r) = caller(request)?;
        async {
            let key = convert::type_key_from_field(&r.entity_type)?;
            let external_id = convert::external_id_from_field(&r.external_id)?;
            self.0
                .current
                .get_current_state(&who, &key, &external_id)
                .await
        }
        .await
        .map_err(to_status)
    }
}

#[tonic::async_trait]
impl InstanceService for InstanceApi {
    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type, external_id = %request.get_ref().external_id))]
    async fn create_instance(
        &self,
        request: Request<pb::CreateInstanceRequest>,
    ) -> Reply<pb::CreateInstanceResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let external_id = convert::external_id_from_field(&r.external_id)?;
                let state = state_from_struct("initial_state", r.initial_state)?;
                let metadata = state_from_struct("metadata", r.metadata)?;
                let (instance, event) = self
                    .0
                    .commands
                    .create_instance(&who, &key, &external_id, state, metadata)
                    .await?;
                Ok(pb::CreateInstanceResponse {
                    instance: Some(convert::instance_from_record(instance)),
                    event: Some(convert::event_from_record(event)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let page = convert::page_from_fields(r.page_size, &r.page_token)?;
                let state_equals = match (r.state_path.is_empty(), r.state_equals) {
                    (true, None) => None,
                    (false, Some(v)) => {
                        Some((r.state_path, convert::json_from_pb("state_equals", v)?))
                    }
                    (true, Some(_)) => {
                        return Err(AppError::invalid(
                            "state_path",
                            "is required with state_equals",
                        ));
                    }
                    (false, None) => {
                        return Err(AppError::invalid(
                            "state_equals",
                            "is required with state_path",
                        ));
                    }
                };
                let order = match pb::InstanceOrder::try_from(r.order_by) {
                    Ok(pb::InstanceOrder::Unspecified | pb::InstanceOrder::ExternalId) => {
                        InstanceOrder::ExternalId
                    }
                    Ok(pb::InstanceOrder::RecentlyUpdated) => InstanceOrder::RecentlyUpdated,
                    Err(_) => {
                        return Err(AppError::invalid(
                            "order_by",
                            format!("{} is not an InstanceOrder", r.order_by),
                        ));
                    }
                };
                let without_state = match pb::InstanceView::try_from(r.view) {
                    Ok(pb::InstanceView::Unspecified | pb::InstanceView::Full) => false,
                    Ok(pb::InstanceView::Basic) => true,
                    Err(_) => {
                        return Err(AppError::invalid(
                            "view",
                            format!("{} is not an InstanceView", r.view),
                        ));
                    }
                };
                let listing = InstanceListing {
                    include_archived: r.include_archived,
                    external_id_prefix: Some(r.external_id_prefix).filter(|p| !p.is_empty()),
                    updated_since: convert::time_from_timestamp("updated_since", r.updated_since)?,
                    updated_before: convert::time_from_timestamp(
                        "updated_before",
                        r.updated_before,
                    )?,
                    state_equals,
                    order,
                    without_state,
                };
                let (found, next) = self
                    .0
                    .queries
                    .list_instances(&who, &key, page, listing)
                    .await?;
                Ok(pb::ListInstancesResponse {
                    instances: found
                        .into_iter()
                        .map(|i| {
                            let mut pb = convert::instance_from_record(i);
                            if without_state {
                                pb.state = None;
                            }
                            pb
                        })
                        .collect(),
                    next_page_token: next,
                })
            }
            .await,
        )
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Reply<pb::GetInstanceResponse> {
        let found = self.instance_record(request).await?;
        Ok(Response::new(pb::GetInstanceResponse {
            instance: Some(convert::instance_from_record(found)),
        }))
    }

    async fn get_current_state(
        &self,
        request: Request<pb::GetCurrentStateRequest>,
    ) -> Reply<pb::GetCurrentStateResponse> {
        let found = self.current_state_record(request).await?;
        Ok(Response::new(pb::GetCurrentStateResponse {
            instance: Some(convert::instance_from_record(found)),
        }))
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn archive_instance(
        &self,
        request: Request<pb::ArchiveInstanceRequest>,
    ) -> Reply<pb::ArchiveInstanceResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                let metadata = convert::state_from_struct("metadata", r.metadata)?;
                let (instance, event) = self
                    .0
                    .commands
                    .set_archived(&who, id, true, r.expected_version, r.event_id, metadata)
                    .await?;
                Ok(pb::ArchiveInstanceResponse {
                    instance: Some(convert::instance_from_record(instance)),
                    event: Some(convert::event_from_record(event)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn restore_instance(
        &self,
        request: Request<pb::RestoreInstanceRequest>,
    ) -> Reply<pb::RestoreInstanceResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                let metadata = convert::state_from_struct("metadata", r.metadata)?;
                let (instance, event) = self
                    .0
                    .commands
                    .set_archived(&who, id, false, r.expected_version, r.event_id, metadata)
                    .await?;
                Ok(pb::RestoreInstanceResponse {
                    instance: Some(convert::instance_from_record(instance)),
                    event: Some(convert::event_from_record(event)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(instance_id = %request.get_ref().instance_id))]
    async fn erase_instance(
        &self,
        request: Request<pb::EraseInstanceRequest>,
    ) -> Reply<pb::EraseInstanceResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let id = convert::id_from_field("instance_id", &r.instance_id)?;
                let (instance, event) = self.0.commands.erase_instance(&who, id, r.reason).await?;
                Ok(pb::EraseInstanceResponse {
                    instance: Some(convert::instance_from_record(instance)),
                    event: Some(convert::event_from_record(event)),
                })
            }
            .await,
        )
    }
}
