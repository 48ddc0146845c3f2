//! The EntityTypeService: registering entity types and their schemas, reading them back.

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_server::EntityTypeService;
use tonic::Request;
use tracing::instrument;

use super::auth::caller;
use super::convert::{self, state_from_struct};
use super::status::{Reply, reply};
use crate::app::{App, TypeChange};

/// The entity type service over the application.
pub struct EntityTypeApi(pub App);

#[tonic::async_trait]
impl EntityTypeService for EntityTypeApi {
    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_entity_type(
        &self,
        request: Request<pb::CreateEntityTypeRequest>,
    ) -> Reply<pb::CreateEntityTypeResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let schema = state_from_struct("schema", r.schema)?;
                let declarations = r
                    .declarations
                    .map(convert::declarations_from_pb)
                    .transpose()?;
                let created = self
                    .0
                    .commands
                    .create_entity_type(&who, &r.name, &r.description, schema, declarations)
                    .await?;
                Ok(pb::CreateEntityTypeResponse {
                    entity_type: Some(convert::entity_type_from_record(created)),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all)]
    async fn list_entity_types(
        &self,
        request: Request<pb::ListEntityTypesRequest>,
    ) -> Reply<pb::ListEntityTypesResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let page = convert::page_from_fields(r.page_size, &r.page_token)?;
                let (types, next) = self.0.queries.list_entity_types(&who, page).await?;
                Ok(pb::ListEntityTypesResponse {
                    entity_types: types
                        .into_iter()
                        .map(convert::entity_type_from_record)
                        .collect(),
                    next_page_token: next,
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn get_entity_type(
        &self,
        request: Request<pb::GetEntityTypeRequest>,
    ) -> Reply<pb::GetEntityTypeResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let (found, versions) = self.0.queries.get_entity_type(&who, &key).await?;
                Ok(pb::GetEntityTypeResponse {
                    entity_type: Some(convert::entity_type_from_record(found)),
                    schema_versions: versions
                        .into_iter()
                        .map(convert::schema_version_from_record)
                        .collect(),
                })
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type, dry_run = request.get_ref().dry_run))]
    async fn update_entity_type(
        &self,
        request: Request<pb::UpdateEntityTypeRequest>,
    ) -> Reply<pb::UpdateEntityTypeResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                let schema = match r.schema {
                    Some(s) => Some(state_from_struct("schema", Some(s))?),
                    None => None,
                };
                let change = TypeChange {
                    description: r.description,
                    schema,
                    expected_schema_version: r.expected_schema_version,
                    dry_run: r.dry_run,
                    allow_invalid_existing: r.allow_invalid_existing,
                    declarations: r
                        .declarations
                        .map(convert::declarations_from_pb)
                        .transpose()?,
                };
                let outcome = self
                    .0
                    .commands
                    .update_entity_type(&who, &key, change)
                    .await?;
                Ok(convert::update_from_outcome(outcome))
            }
            .await,
        )
    }

    #[instrument(skip_all, fields(entity_type = %request.get_ref().entity_type))]
    async fn delete_entity_type(
        &self,
        request: Request<pb::DeleteEntityTypeRequest>,
    ) -> Reply<pb::DeleteEntityTypeResponse> {
        let (who, r) = caller(request)?;
        reply(
            async {
                let key = convert::type_key_from_field(&r.entity_type)?;
                self.0.commands.delete_entity_type(&who, &key).await?;
                Ok(pb::DeleteEntityTypeResponse {})
            }
            .await,
        )
    }
}
