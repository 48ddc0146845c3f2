//! EntityTypeService: declaring, listing and reading entity types.

use serde::Serialize;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::json::{struct_to_json, to_struct};
use crate::model::{EntityType, Page, required};
use crate::options::{CallOptions, call_options};

/// Options of [`Client::create_entity_type`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateEntityTypeOptions {
    description: String,
    call: CallOptions,
}

impl CreateEntityTypeOptions {
    /// Free text for humans. Default: empty.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}
call_options!(CreateEntityTypeOptions);

/// Options of [`Client::list_entity_types`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListEntityTypesOptions {
    page_size: i32,
    page_token: String,
    call: CallOptions,
}

impl ListEntityTypesOptions {
    /// Most types on the page (1 to 1000). Default: the server's, 100.
    pub fn page_size(mut self, size: i32) -> Self {
        self.page_size = size;
        self
    }

    /// Where the page starts: the previous page's [`Page::next_page_token`]. Default: the first
    /// page.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = token.into();
        self
    }
}
call_options!(ListEntityTypesOptions);

/// Options of [`Client::get_entity_type`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetEntityTypeOptions {
    call: CallOptions,
}
call_options!(GetEntityTypeOptions);

impl Client {
    /// Declares an entity type: a unique `name` (`[a-z][a-z0-9_]{0,62}`) and the JSON Schema
    /// (any serializable object) every state of its instances must satisfy.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad name or a schema that is not a valid JSON
    /// Schema (one violation per problem), [`Error::AlreadyExists`] for a taken name.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use temporal_state_client::{Client, CreateEntityTypeOptions};
    ///
    /// # async fn run(client: Client) -> temporal_state_client::Result<()> {
    /// let schema = json!({
    ///     "type": "object",
    ///     "properties": {"username": {"type": "string"}, "score": {"type": "integer", "minimum": 0}},
    ///     "required": ["username"]
    /// });
    /// let created = client
    ///     .create_entity_type("player_profile", &schema, &CreateEntityTypeOptions::default())
    ///     .await?;
    /// assert_eq!(created.name, "player_profile");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_entity_type(
        &self,
        name: &str,
        schema: &impl Serialize,
        options: &CreateEntityTypeOptions,
    ) -> Result<EntityType> {
        let request = pb::CreateEntityTypeRequest {
            name: name.to_string(),
            description: options.description.clone(),
            schema: Some(to_struct("schema", schema)?),
        };
        let (result, attempts) = self
            .unary(
                "CreateEntityType",
                &options.call,
                request.clone(),
                |t, r| async move { EntityTypeServiceClient::new(t).create_entity_type(r).await },
            )
            .await;
        match result {
            Ok(r) => required("entity_type", r.entity_type)?.try_into(),
            // A retry after a lost answer finds what the first attempt created.
            Err(error @ Error::AlreadyExists { .. }) if attempts > 1 => {
                let existing = self
                    .get_entity_type(name, &GetEntityTypeOptions::default())
                    .await?;
                let asked = struct_to_json(request.schema);
                if existing.description == request.description && existing.schema == asked {
                    Ok(existing)
                } else {
                    Err(error)
                }
            }
            Err(error) => Err(error),
        }
    }

    /// One page of entity types, ordered by name.
    ///
    /// ```no_run
    /// use temporal_state_client::{Client, ListEntityTypesOptions};
    ///
    /// # async fn run(client: Client) -> temporal_state_client::Result<()> {
    /// let mut options = ListEntityTypesOptions::default().page_size(50);
    /// loop {
    ///     let page = client.list_entity_types(&options).await?;
    ///     for t in &page.items {
    ///         println!("{}: {}", t.name, t.description);
    ///     }
    ///     match page.next_page_token {
    ///         Some(token) => options = options.page_token(token),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_entity_types(
        &self,
        options: &ListEntityTypesOptions,
    ) -> Result<Page<EntityType>> {
        let request = pb::ListEntityTypesRequest {
            page_size: options.page_size,
            page_token: options.page_token.clone(),
        };
        let r = self
            .unary(
                "ListEntityTypes",
                &options.call,
                request,
                |t, r| async move { EntityTypeServiceClient::new(t).list_entity_types(r).await },
            )
            .await
            .0?;
        let items = r
            .entity_types
            .into_iter()
            .map(EntityType::try_from)
            .collect::<Result<_>>()?;
        Ok(Page::new(items, r.next_page_token))
    }

    /// Reads one entity type by its id or its name. [`Error::NotFound`] when there is none.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let t = client.get_entity_type("player_profile", &Default::default()).await?;
    /// println!("schema: {}", t.schema);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_entity_type(
        &self,
        entity_type: &str,
        options: &GetEntityTypeOptions,
    ) -> Result<EntityType> {
        let request = pb::GetEntityTypeRequest {
            entity_type: entity_type.to_string(),
        };
        let r = self
            .unary("GetEntityType", &options.call, request, |t, r| async move {
                EntityTypeServiceClient::new(t).get_entity_type(r).await
            })
            .await
            .0?;
        required("entity_type", r.entity_type)?.try_into()
    }
}
