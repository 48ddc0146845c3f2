//! EventService.Subscribe: committed events as a [`Stream`], optionally after a replay of one
//! instance's history.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::event_service_client::EventServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::{Event, required};
use crate::options::{CallOptions, call_options};

/// Options of [`Client::subscribe`]: filters, each matching everything when left unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeOptions {
    entity_type: String,
    instance_id: String,
    event_types: Vec<String>,
    from_version: Option<i64>,
    from_position: Option<i64>,
    entity_types: Vec<String>,
    resume: bool,
    call: CallOptions,
}

impl SubscribeOptions {
    /// Only events of this entity type (id or name). Default: every type.
    pub fn entity_type(mut self, entity_type: impl Into<String>) -> Self {
        self.entity_type = entity_type.into();
        self
    }

    /// Only events of this instance. Default: every instance.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = instance_id.into();
        self
    }

    /// Only events of these types. Default: every event type.
    pub fn event_types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = event_types.into_iter().map(Into::into).collect();
        self
    }

    /// With [`Self::instance_id`]: first replay the instance's history from this version, then
    /// continue live, with no gap and no duplicate. Default: live events only.
    pub fn from_version(mut self, version: i64) -> Self {
        self.from_version = Some(version);
        self
    }

    /// The global log after this position (0: from the start), then live, in commit order with
    /// no gap and no duplicate, filtered by [`Self::entity_type`] or [`Self::entity_types`] and
    /// [`Self::event_types`]; not with [`Self::instance_id`]. With [`Self::resume`], a broken
    /// stream re-opens after the last position received. Default: live events only.
    pub fn from_position(mut self, position: i64) -> Self {
        self.from_position = Some(position);
        self
    }

    /// With [`Self::from_position`]: only events of these entity types (ids or names).
    /// Default: every type.
    pub fn entity_types<I, S>(mut self, entity_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entity_types = entity_types.into_iter().map(Into::into).collect();
        self
    }

    /// With [`Self::instance_id`]: when the stream breaks with UNAVAILABLE (the server shuts
    /// down, as in a rolling deploy, or the connection drops), subscribe again from the version
    /// after the last one received, retrying as the call's [`RetryPolicy`](crate::RetryPolicy)
    /// says; the stream goes on with no gap and no duplicate. Without [`Self::from_version`] the
    /// instance's current version is read first, so events committed while the stream was
    /// being re-opened are replayed rather than missed. [`Client::subscribe`] refuses it without
    /// an instance: only one instance's versions say where to resume. Default: off — the
    /// stream yields the error and ends.
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }
}
call_options!(SubscribeOptions);

/// The events of a subscription, in commit order per instance. Ends when the server ends the
/// stream; a broken stream yields one error and ends (unless [`SubscribeOptions::resume`]
/// re-opens it).
///
/// It is a [`Stream`] (use `futures::StreamExt` or `tokio_stream::StreamExt`), and
/// [`EventStream::next_event`] reads it without any extension trait.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<Event>> + Send>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` when the stream has ended.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx))
            .await
            .transpose()
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Where a subscription is: its open stream, and what re-opening it needs.
struct Subscription {
    client: Client,
    options: SubscribeOptions,
    stream: tonic::Streaming<pb::SubscribeResponse>,
    /// The version to re-open from: the one after the last received.
    next_version: Option<i64>,
    ended: bool,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            match self.stream.message().await {
                Ok(Some(r)) => {
                    let event = required("event", r.event).and_then(Event::try_from);
                    if let Ok(e) = &event {
                        self.next_version = Some(e.version + 1);
                        if self.options.from_position.is_some() {
                            self.options.from_position = Some(e.position);
                        }
                    }
                    return Some((event, self));
                }
                Ok(None) => return None,
                Err(status) => {
                    let error = Error::from(status);
                    if !(self.options.resume && error.is_retryable()) {
                        self.ended = true;
                        return Some((Err(error), self));
                    }
                    tracing::debug!(%error, from_version = ?self.next_version, "subscription broke; re-opening");
                    let mut options = self.options.clone();
                    if options.from_position.is_none() {
                        options.from_version = self.next_version;
                    }
                    match self.client.open(&options).await {
                        Ok(stream) => self.stream = stream,
                        Err(error) => {
                            self.ended = true;
                            return Some((Err(error), self));
                        }
                    }
                }
            }
        }
    }
}

impl Client {
    /// Streams committed events as they happen, filtered by the options.
    ///
    /// Opening the stream is retried on UNAVAILABLE and bounded by the call's timeout; once
    /// open, the stream lasts as long as the server keeps it.
    ///
    /// ```no_run
    /// use temporal_state_client::{Client, SubscribeOptions};
    ///
    /// # async fn run(client: Client, id: String) -> temporal_state_client::Result<()> {
    /// let mut events = client
    ///     .subscribe(&SubscribeOptions::default().instance_id(&id).from_version(1))
    ///     .await?;
    /// while let Some(event) = events.next_event().await? {
    ///     println!("v{} {}: {}", event.version, event.event_type, event.payload);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(&self, options: &SubscribeOptions) -> Result<EventStream> {
        let mut options = options.clone();
        if options.resume && options.from_position.is_none() {
            if options.instance_id.is_empty() {
                return Err(Error::InvalidArgument {
                    message: "resume needs an instance_id or from_position: only one \
                              instance's versions or a position say where to resume"
                        .into(),
                    violations: vec![crate::error::FieldViolation {
                        field: "resume".into(),
                        description: "needs instance_id".into(),
                    }],
                });
            }
            if options.from_version.is_none() {
                let current = self
                    .get_instance(&options.instance_id, &Default::default())
                    .await?;
                options.from_version = Some(current.version + 1);
            }
        }
        let stream = self.open(&options).await?;
        let subscription = Subscription {
            client: self.clone(),
            next_version: options.from_version,
            options,
            stream,
            ended: false,
        };
        Ok(EventStream {
            inner: Box::pin(futures_util::stream::unfold(
                subscription,
                Subscription::next,
            )),
        })
    }

    /// Opens the server stream once (retrying UNAVAILABLE as the call's policy says).
    async fn open(
        &self,
        options: &SubscribeOptions,
    ) -> Result<tonic::Streaming<pb::SubscribeResponse>> {
        let request = pb::SubscribeRequest {
            entity_type: options.entity_type.clone(),
            instance_id: options.instance_id.clone(),
            event_types: options.event_types.clone(),
            from_version: options.from_version,
            from_position: options.from_position,
            entity_types: options.entity_types.clone(),
        };
        self.call(
            "Subscribe",
            &options.call,
            false,
            request,
            |t, r| async move { EventServiceClient::new(t).subscribe(r).await },
        )
        .await
        .0
    }
}
