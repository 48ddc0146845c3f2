//! EventService.Subscribe: committed events as a [`Stream`], optionally after a replay of one
//! instance's history.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

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
}
call_options!(SubscribeOptions);

/// The events of a subscription, in commit order per instance. Ends when the server ends the
/// stream; a broken stream yields one error and ends.
///
/// It is a [`Stream`] (use `futures::StreamExt` or `tokio_stream::StreamExt`), and
/// [`EventStream::next_event`] reads it without any extension trait.
#[derive(Debug)]
pub struct EventStream {
    inner: tonic::Streaming<pb::SubscribeResponse>,
}

impl EventStream {
    /// The next event; `None` when the stream has ended.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        match self.inner.message().await {
            Ok(Some(r)) => Event::try_from(required("event", r.event)?).map(Some),
            Ok(None) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(Pin::new(&mut self.inner).poll_next(cx));
        Poll::Ready(item.map(|r| match r {
            Ok(r) => required("event", r.event).and_then(Event::try_from),
            Err(status) => Err(Error::from(status)),
        }))
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
        let request = pb::SubscribeRequest {
            entity_type: options.entity_type.clone(),
            instance_id: options.instance_id.clone(),
            event_types: options.event_types.clone(),
            from_version: options.from_version,
        };
        let inner = self
            .call(
                "Subscribe",
                &options.call,
                false,
                request,
                |t, r| async move { EventServiceClient::new(t).subscribe(r).await },
            )
            .await
            .0?;
        Ok(EventStream { inner })
    }
}
