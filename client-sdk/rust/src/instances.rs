//! InstanceService: creating instances and reading them with their current state.

use serde::Serialize;
use serde_json::Value;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::instance_service_client::InstanceServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::json::{encode, encoded_to_struct, json_to_value, struct_to_json, to_struct};
use crate::model::{CreatedInstance, Instance, InstanceLifecycle, Page, required};
use crate::options::{CallOptions, call_options};
use crate::queries::GetHistoryOptions;

/// Options of [`Client::create_instance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateInstanceOptions {
    metadata: Option<std::result::Result<Value, String>>,
    call: CallOptions,
}

impl CreateInstanceOptions {
    /// Context stored on the `InstanceCreated` event (actor, source, trace id...): any value
    /// that serializes to a JSON object. Default: none (`{}`).
    pub fn metadata(mut self, metadata: &impl Serialize) -> Self {
        self.metadata = Some(encode(metadata));
        self
    }
}
call_options!(CreateInstanceOptions);

/// Options of [`Client::list_instances`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListInstancesOptions {
    page_size: i32,
    page_token: String,
    include_archived: bool,
    external_id_prefix: String,
    updated_since: Option<std::time::SystemTime>,
    updated_before: Option<std::time::SystemTime>,
    state_equals: Option<(String, std::result::Result<Value, String>)>,
    order: InstanceOrder,
    without_state: bool,
    call: CallOptions,
}

/// The order of [`Client::list_instances`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceOrder {
    /// By external id, in byte order (the default).
    #[default]
    ExternalId,
    /// Most recently updated first.
    RecentlyUpdated,
}

impl ListInstancesOptions {
    /// Most instances on the page (1 to 1000). Default: the server's, 100.
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

    /// Also list archived instances. Default: false (they are left out).
    pub fn include_archived(mut self, include: bool) -> Self {
        self.include_archived = include;
        self
    }

    /// Only instances whose external id starts with `prefix` (at most 256 characters).
    /// Default: all.
    pub fn external_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.external_id_prefix = prefix.into();
        self
    }

    /// Only instances last updated at or after `at`. Default: no bound.
    pub fn updated_since(mut self, at: std::time::SystemTime) -> Self {
        self.updated_since = Some(at);
        self
    }

    /// Only instances last updated before `at`. Default: no bound.
    pub fn updated_before(mut self, at: std::time::SystemTime) -> Self {
        self.updated_before = Some(at);
        self
    }

    /// Only instances whose current state holds `value` (JSON equality) at `path`: a dotted path
    /// (`address.city`; digits index arrays: `tags.0`) or a JSON pointer (`/address/city`), at
    /// most 32 steps. Default: no filter.
    pub fn state_equals(mut self, path: impl Into<String>, value: &impl Serialize) -> Self {
        self.state_equals = Some((path.into(), encode(value)));
        self
    }

    /// The order of the list. Default: [`InstanceOrder::ExternalId`].
    pub fn order_by(mut self, order: InstanceOrder) -> Self {
        self.order = order;
        self
    }

    /// Leave the states out: each [`Instance::state`] is then `{}`, and the server does not even
    /// read them. Default: false.
    pub fn without_state(mut self, without: bool) -> Self {
        self.without_state = without;
        self
    }
}
call_options!(ListInstancesOptions);

/// Options of [`Client::archive_instance`] and [`Client::restore_instance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveInstanceOptions {
    metadata: Option<std::result::Result<Value, String>>,
    expected_version: Option<i64>,
    event_id: Option<String>,
    call: CallOptions,
}

impl ArchiveInstanceOptions {
    /// Context stored on the event (who, why...). Default: none (`{}`).
    pub fn metadata(mut self, metadata: &impl Serialize) -> Self {
        self.metadata = Some(encode(metadata));
        self
    }

    /// Only if the instance is still at this version ([`Error::Conflict`] otherwise). Default:
    /// no guard.
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// The event's idempotency key. Default: a fresh UUIDv7 per call, fixed before the first
    /// attempt, so the client's own retries answer the event recorded first instead of
    /// `FailedPrecondition` ("already archived" / "not archived").
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }
}
call_options!(ArchiveInstanceOptions);

/// The event id an archive or restore sends: the caller's, or a fresh one for this call.
fn lifecycle_event_id(options: &ArchiveInstanceOptions) -> String {
    options
        .event_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Options of [`Client::erase_instance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EraseInstanceOptions {
    reason: Option<String>,
    call: CallOptions,
}

impl EraseInstanceOptions {
    /// Why, kept in the `InstanceErased` event's metadata as `reason` (at most 1024
    /// characters); it outlives the erasure, so it must not hold the erased data. Default: none.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}
call_options!(EraseInstanceOptions);

/// Options of [`Client::get_instance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetInstanceOptions {
    call: CallOptions,
}
call_options!(GetInstanceOptions);

/// Options of [`Client::get_current_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetCurrentStateOptions {
    call: CallOptions,
}
call_options!(GetCurrentStateOptions);

impl Client {
    /// Creates an instance of `entity_type` (id or name) with your `external_id` and its first
    /// state (any value that serializes to a JSON object), recorded as version 1
    /// (`InstanceCreated`).
    ///
    /// Errors: [`Error::InvalidArgument`] when the state breaks the type's schema (one violation
    /// per path), [`Error::AlreadyExists`] when the external id is taken, [`Error::NotFound`] for
    /// an unknown type.
    ///
    /// ```no_run
    /// use serde::Serialize;
    /// use temporal_state_client::{Client, CreateInstanceOptions};
    ///
    /// #[derive(Serialize)]
    /// struct Player { username: String, email: String, score: u32 }
    ///
    /// # async fn run(client: Client) -> temporal_state_client::Result<()> {
    /// let alice = Player { username: "alice".into(), email: "alice@example.com".into(), score: 0 };
    /// let created = client
    ///     .create_instance(
    ///         "player_profile",
    ///         "player-001",
    ///         &alice,
    ///         &CreateInstanceOptions::default().metadata(&serde_json::json!({"actor": "signup"})),
    ///     )
    ///     .await?;
    /// assert_eq!(created.instance.version, 1);
    /// assert_eq!(created.event.event_type, "InstanceCreated");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_instance(
        &self,
        entity_type: &str,
        external_id: &str,
        initial_state: &impl Serialize,
        options: &CreateInstanceOptions,
    ) -> Result<CreatedInstance> {
        let request = pb::CreateInstanceRequest {
            entity_type: entity_type.to_string(),
            external_id: external_id.to_string(),
            initial_state: Some(to_struct("initial_state", initial_state)?),
            metadata: encoded_to_struct("metadata", &options.metadata)?,
        };
        let (result, attempts) = self
            .unary(
                "CreateInstance",
                &options.call,
                request.clone(),
                |t, r| async move { InstanceServiceClient::new(t).create_instance(r).await },
            )
            .await;
        match result {
            Ok(r) => Ok(CreatedInstance {
                instance: required("instance", r.instance)?.try_into()?,
                event: required("event", r.event)?.try_into()?,
            }),
            // A retry after a lost answer finds what the first attempt created.
            Err(error @ Error::AlreadyExists { .. }) if attempts > 1 => {
                let instance = self
                    .get_current_state(entity_type, external_id, &Default::default())
                    .await?;
                let history = self
                    .get_history(&instance.id, &GetHistoryOptions::default().to_version(1))
                    .await?;
                match history.items.into_iter().next() {
                    Some(event)
                        if event.payload == struct_to_json(request.initial_state)
                            && event.metadata == struct_to_json(request.metadata) =>
                    {
                        Ok(CreatedInstance { instance, event })
                    }
                    _ => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// One page of the instances of `entity_type` (id or name), ordered by external id unless
    /// [`ListInstancesOptions::order_by`] says otherwise, filtered as the options say.
    ///
    /// ```no_run
    /// use temporal_state_client::ListInstancesOptions;
    ///
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let page = client
    ///     .list_instances("player_profile", &ListInstancesOptions::default().page_size(10))
    ///     .await?;
    /// for i in page.items {
    ///     println!("{} v{}: {}", i.external_id, i.version, i.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_instances(
        &self,
        entity_type: &str,
        options: &ListInstancesOptions,
    ) -> Result<Page<Instance>> {
        let (state_path, state_equals) = match &options.state_equals {
            None => (String::new(), None),
            Some((path, Ok(value))) => (path.clone(), Some(json_to_value(value))),
            Some((_, Err(reason))) => return Err(Error::encode("state_equals", reason)),
        };
        let request = pb::ListInstancesRequest {
            entity_type: entity_type.to_string(),
            page_size: options.page_size,
            page_token: options.page_token.clone(),
            include_archived: options.include_archived,
            external_id_prefix: options.external_id_prefix.clone(),
            updated_since: options.updated_since.map(Into::into),
            updated_before: options.updated_before.map(Into::into),
            state_path,
            state_equals,
            order_by: match options.order {
                InstanceOrder::ExternalId => pb::InstanceOrder::ExternalId,
                InstanceOrder::RecentlyUpdated => pb::InstanceOrder::RecentlyUpdated,
            } as i32,
            view: if options.without_state {
                pb::InstanceView::Basic
            } else {
                pb::InstanceView::Full
            } as i32,
        };
        let r = self
            .unary("ListInstances", &options.call, request, |t, r| async move {
                InstanceServiceClient::new(t).list_instances(r).await
            })
            .await
            .0?;
        let items = r
            .instances
            .into_iter()
            .map(Instance::try_from)
            .collect::<Result<_>>()?;
        Ok(Page::new(items, r.next_page_token))
    }

    /// Reads one instance, with its current state, by its id. [`Error::NotFound`] when there is
    /// none.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client, id: String) -> temporal_state_client::Result<()> {
    /// let instance = client.get_instance(&id, &Default::default()).await?;
    /// println!("version {}: {}", instance.version, instance.state);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_instance(
        &self,
        instance_id: &str,
        options: &GetInstanceOptions,
    ) -> Result<Instance> {
        let request = pb::GetInstanceRequest {
            instance_id: instance_id.to_string(),
        };
        let r = self
            .unary("GetInstance", &options.call, request, |t, r| async move {
                InstanceServiceClient::new(t).get_instance(r).await
            })
            .await
            .0?;
        required("instance", r.instance)?.try_into()
    }

    /// Reads one instance, with its current state, by `entity_type` (id or name) and your
    /// `external_id`. [`Error::NotFound`] when there is none.
    ///
    /// ```no_run
    /// # async fn run(client: temporal_state_client::Client) -> temporal_state_client::Result<()> {
    /// let player = client
    ///     .get_current_state("player_profile", "player-001", &Default::default())
    ///     .await?;
    /// println!("score: {}", player.state["score"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_current_state(
        &self,
        entity_type: &str,
        external_id: &str,
        options: &GetCurrentStateOptions,
    ) -> Result<Instance> {
        let request = pb::GetCurrentStateRequest {
            entity_type: entity_type.to_string(),
            external_id: external_id.to_string(),
        };
        let r = self
            .unary(
                "GetCurrentState",
                &options.call,
                request,
                |t, r| async move { InstanceServiceClient::new(t).get_current_state(r).await },
            )
            .await
            .0?;
        required("instance", r.instance)?.try_into()
    }

    /// Archives an instance: records `InstanceArchived` (its state unchanged). It then refuses
    /// writes (an error whose [`Error::code`] is `FailedPrecondition`), stays fully readable, and
    /// is left out of [`Client::list_instances`] unless asked for. Archiving an archived
    /// instance is `FailedPrecondition` too, except for a retry of this very call (same
    /// [`ArchiveInstanceOptions::event_id`], set per call by default), which answers the event
    /// recorded first.
    pub async fn archive_instance(
        &self,
        instance_id: &str,
        options: &ArchiveInstanceOptions,
    ) -> Result<InstanceLifecycle> {
        let request = pb::ArchiveInstanceRequest {
            instance_id: instance_id.to_string(),
            metadata: encoded_to_struct("metadata", &options.metadata)?,
            expected_version: options.expected_version,
            event_id: Some(lifecycle_event_id(options)),
        };
        let r = self
            .unary(
                "ArchiveInstance",
                &options.call,
                request,
                |t, r| async move { InstanceServiceClient::new(t).archive_instance(r).await },
            )
            .await
            .0?;
        Ok(InstanceLifecycle {
            instance: required("instance", r.instance)?.try_into()?,
            event: required("event", r.event)?.try_into()?,
        })
    }

    /// Erases an instance (the right to erasure; needs the admin scope): its state, payloads,
    /// metadata, snapshots, external id, cached entries and stream messages are destroyed, and
    /// `InstanceErased` is recorded. Afterwards writes and time travel are [`Error::Rpc`] with
    /// FAILED_PRECONDITION; the history keeps only the facts (versions, event types, times). Erasing an erased instance succeeds with the same event, so a retry is safe.
    pub async fn erase_instance(
        &self,
        instance_id: &str,
        options: &EraseInstanceOptions,
    ) -> Result<InstanceLifecycle> {
        let request = pb::EraseInstanceRequest {
            instance_id: instance_id.to_string(),
            reason: options.reason.clone(),
        };
        let r = self
            .unary("EraseInstance", &options.call, request, |t, r| async move {
                InstanceServiceClient::new(t).erase_instance(r).await
            })
            .await
            .0?;
        Ok(InstanceLifecycle {
            instance: required("instance", r.instance)?.try_into()?,
            event: required("event", r.event)?.try_into()?,
        })
    }

    /// Restores an archived instance: records `InstanceRestored`; it is writable again.
    pub async fn restore_instance(
        &self,
        instance_id: &str,
        options: &ArchiveInstanceOptions,
    ) -> Result<InstanceLifecycle> {
        let request = pb::RestoreInstanceRequest {
            instance_id: instance_id.to_string(),
            metadata: encoded_to_struct("metadata", &options.metadata)?,
            expected_version: options.expected_version,
            event_id: Some(lifecycle_event_id(options)),
        };
        let r = self
            .unary(
                "RestoreInstance",
                &options.call,
                request,
                |t, r| async move { InstanceServiceClient::new(t).restore_instance(r).await },
            )
            .await
            .0?;
        Ok(InstanceLifecycle {
            instance: required("instance", r.instance)?.try_into()?,
            event: required("event", r.event)?.try_into()?,
        })
    }
}
