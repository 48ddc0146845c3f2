//! EntityTypeService: declaring, listing and reading entity types.

use serde::Serialize;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::entity_type_service_client::EntityTypeServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::json::{struct_to_json, to_struct};
use crate::model::{EntityType, EntityTypeUpdate, Page, SchemaVersion, required};
use crate::options::{CallOptions, call_options};

/// Options of [`Client::create_entity_type`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateEntityTypeOptions {
    description: String,
    declarations: Option<pb::EventDeclarations>,
    call: CallOptions,
}

impl CreateEntityTypeOptions {
    /// Free text for humans. Default: empty.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Declared event types: payload schemas, CEL transforms and guards, strict mode (checked by
    /// the server, which refuses a bad expression with its position). Default: none.
    pub fn declarations(mut self, declarations: pb::EventDeclarations) -> Self {
        self.declarations = Some(declarations);
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

/// Options of [`Client::update_entity_type`]: what to change, and how carefully.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateEntityTypeOptions {
    description: Option<String>,
    schema: Option<prost_types::Struct>,
    schema_error: Option<String>,
    expected_schema_version: Option<i64>,
    dry_run: bool,
    allow_invalid_existing: bool,
    declarations: Option<pb::EventDeclarations>,
    call: CallOptions,
}

impl UpdateEntityTypeOptions {
    /// The new description. Default: unchanged.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The new JSON Schema, accepted as a new schema version only if every current state
    /// satisfies it. Default: unchanged.
    pub fn schema(mut self, schema: &impl Serialize) -> Self {
        match to_struct("schema", schema) {
            Ok(s) => self.schema = Some(s),
            Err(e) => self.schema_error = Some(e.to_string()),
        }
        self
    }

    /// Apply only if the schema is still at this version ([`Error::Conflict`] otherwise). Default: no guard.
    pub fn expected_schema_version(mut self, version: i64) -> Self {
        self.expected_schema_version = Some(version);
        self
    }

    /// Check the current states and report, changing nothing. Default: false.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The event types the new schema version declares (an empty message declares none); the
    /// schema is kept when no new one is given. Default: the current declarations.
    pub fn declarations(mut self, declarations: pb::EventDeclarations) -> Self {
        self.declarations = Some(declarations);
        self
    }

    /// Accept a schema that current states break; their next event must fix them. Default:
    /// false (such a schema is FAILED_PRECONDITION).
    pub fn allow_invalid_existing(mut self, allow: bool) -> Self {
        self.allow_invalid_existing = allow;
        self
    }
}
call_options!(UpdateEntityTypeOptions);

/// Options of [`Client::delete_entity_type`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteEntityTypeOptions {
    call: CallOptions,
}
call_options!(DeleteEntityTypeOptions);

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
            declarations: options.declarations.clone(),
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

    /// Every version of an entity type's schema, oldest first (the last one is current).
    pub async fn get_schema_versions(
        &self,
        entity_type: &str,
        options: &GetEntityTypeOptions,
    ) -> Result<Vec<SchemaVersion>> {
        let request = pb::GetEntityTypeRequest {
            entity_type: entity_type.to_string(),
        };
        let r = self
            .unary("GetEntityType", &options.call, request, |t, r| async move {
                EntityTypeServiceClient::new(t).get_entity_type(r).await
            })
            .await
            .0?;
        r.schema_versions
            .into_iter()
            .map(SchemaVersion::try_from)
            .collect()
    }

    /// Changes an entity type's description and/or schema. A new schema becomes a new schema
    /// version once every current state satisfies it.
    ///
    /// Errors: an error whose [`Error::code`] is `FailedPrecondition` when current states break the new schema (the
    /// message names the first instances and paths; use `dry_run` to list them), [`Error::Conflict`]
    /// when `expected_schema_version` is no longer current, [`Error::InvalidArgument`]
    /// for a schema that is not a valid JSON Schema.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use temporal_state_client::{Client, UpdateEntityTypeOptions};
    ///
    /// # async fn run(client: Client) -> temporal_state_client::Result<()> {
    /// let schema = json!({"type": "object", "required": ["username", "email"]});
    /// let check = client
    ///     .update_entity_type(
    ///         "player_profile",
    ///         &UpdateEntityTypeOptions::default().schema(&schema).dry_run(true),
    ///     )
    ///     .await?;
    /// for v in &check.violations {
    ///     println!("{} breaks it: {:?}", v.external_id, v.violations);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_entity_type(
        &self,
        entity_type: &str,
        options: &UpdateEntityTypeOptions,
    ) -> Result<EntityTypeUpdate> {
        if let Some(reason) = &options.schema_error {
            return Err(Error::encode("schema", reason));
        }
        let request = pb::UpdateEntityTypeRequest {
            entity_type: entity_type.to_string(),
            description: options.description.clone(),
            schema: options.schema.clone(),
            expected_schema_version: options.expected_schema_version,
            dry_run: options.dry_run,
            allow_invalid_existing: options.allow_invalid_existing,
            declarations: options.declarations.clone(),
        };
        let r = self
            .unary(
                "UpdateEntityType",
                &options.call,
                request,
                |t, r| async move { EntityTypeServiceClient::new(t).update_entity_type(r).await },
            )
            .await
            .0?;
        r.try_into()
    }

    /// Deletes an entity type that has no instances (an error whose [`Error::code`] is
    /// `FailedPrecondition` otherwise).
    pub async fn delete_entity_type(
        &self,
        entity_type: &str,
        options: &DeleteEntityTypeOptions,
    ) -> Result<()> {
        let request = pb::DeleteEntityTypeRequest {
            entity_type: entity_type.to_string(),
        };
        self.unary(
            "DeleteEntityType",
            &options.call,
            request,
            |t, r| async move { EntityTypeServiceClient::new(t).delete_entity_type(r).await },
        )
        .await
        .0?;
        Ok(())
    }
}
