//! NATS JetStream: publication of every committed event through the transactional outbox, and
//! live subscriptions that see the events of every server replica.
//!
//! - [`relay`]: takes the relay lease, publishes outbox entries in order with the event id as
//!   `Nats-Msg-Id`, waits for the acknowledgements, then forgets them. A NATS outage or a crash
//!   only delays publication; JetStream's duplicate window absorbs re-sends.
//! - [`NatsBus`]: the event bus: a commit wakes the relay; a subscriber gets a core NATS
//!   subscription on the stream's subjects.
//!
//! Subject: `<prefix>.<entity_type_name>.<instance_id>` (prefix `temporal_state.events`).
//! Body: the event as JSON ([`WireEvent`]). Headers: `Nats-Msg-Id` (event id), `Tse-Version`,
//! `Tse-Event-Type`.
//!
//! A message (body plus headers) must fit the NATS server's `max_payload`: [`max_event_bytes`]
//! turns it into the largest payload plus metadata an event may have, which the application
//! checks before the append, so an event the stream cannot carry is refused at write time.

pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::domain::{ApplyMode, State};
use crate::ports::{BusError, EventBus, EventRecord, LiveEvent, LiveFilter, LiveStream};

pub const SUBJECT_PREFIX: &str = "temporal_state.events";

/// The stream and how it keeps messages.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub stream: String,
    pub replicas: usize,
    /// `limits`, `interest` or `workqueue`.
    pub retention: String,
    /// How long JetStream remembers message ids to drop re-sends.
    pub duplicate_window: Duration,
    /// Events a subscriber may fall behind before it is cut off.
    pub subscriber_buffer: usize,
    /// Refusals of one outbox row before it is dead-lettered.
    pub max_attempts: u32,
}

/// An event as published: self-contained JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireEvent {
    pub id: String,
    pub instance_id: Uuid,
    pub entity_type_id: Uuid,
    pub entity_type: String,
    pub event_type: String,
    pub version: i64,
    pub payload: State,
    pub metadata: State,
    pub mode: String,
    pub recorded_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    /// Who wrote it (empty: nobody identified). Absent from messages published before it existed.
    #[serde(default)]
    pub recorded_by: String,
    /// The schema version that validated it. Absent from messages published before it existed
    /// (read as 1, the only version there was).
    #[serde(default = "first_schema_version")]
    pub schema_version: i64,
    /// Its place in the global event log. Absent from messages published before it existed
    /// (read as 0, unknown).
    #[serde(default)]
    pub position: i64,
}

fn first_schema_version() -> i64 {
    1
}

impl WireEvent {
    pub fn from_live(live: &LiveEvent) -> Self {
        let e = &live.event;
        Self {
            id: e.event_id.clone(),
            instance_id: e.instance_id,
            entity_type_id: e.entity_type_id,
            entity_type: live.entity_type_name.clone(),
            event_type: e.event_type.clone(),
            version: e.version,
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
            mode: e.mode.as_str().to_string(),
            recorded_at: e.recorded_at,
            occurred_at: e.occurred_at,
            recorded_by: e.recorded_by.clone(),
            schema_version: e.schema_version,
            position: e.position,
        }
    }

    pub fn into_live(self) -> Option<LiveEvent> {
        Some(LiveEvent {
            entity_type_name: self.entity_type,
            event: EventRecord {
                event_id: self.id,
                instance_id: self.instance_id,
                entity_type_id: self.entity_type_id,
                event_type: self.event_type,
                version: self.version,
                payload: self.payload,
                metadata: self.metadata,
                mode: ApplyMode::parse(&self.mode)?,
                recorded_at: self.recorded_at,
                occurred_at: self.occurred_at,
                recorded_by: self.recorded_by,
                schema_version: self.schema_version,
                position: self.position,
            },
        })
    }
}

/// The subject an event is published on.
pub fn subject(entity_type_name: &str, instance_id: Uuid) -> String {
    format!("{SUBJECT_PREFIX}.{entity_type_name}.{instance_id}")
}

/// Bytes a published message may add around an event's payload and metadata: the rest of the
/// JSON body and the headers. Every other field is bounded (ids and event types of at most 128
/// characters, each at most 4 bytes of UTF-8 and appearing twice, an entity type name of 63,
/// the writer's name of at most 256 bytes, UUIDs, timestamps, a version): about 3.2 KB at worst,
/// so 4 KiB leaves a margin.
pub const ENVELOPE_BYTES: usize = 4096;

/// The NATS server's default `max_payload`, assumed while it has not said its own.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The largest payload plus metadata (JSON bytes) of an event whose message fits `max_payload`.
pub fn max_event_bytes(max_payload: usize) -> usize {
    max_payload.saturating_sub(ENVELOPE_BYTES)
}

/// The `max_payload` the NATS server announced. Waits a little for the first connection (the
/// client connects in the background); a server still unreachable then is assumed to keep the
/// NATS default, which is logged.
pub async fn server_max_payload(client: &async_nats::Client) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let announced = client.server_info().max_payload;
        if announced > 0 {
            return announced;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(
        assumed = DEFAULT_MAX_PAYLOAD,
        "nats not reachable yet: assuming the default max_payload for the event size limit"
    );
    DEFAULT_MAX_PAYLOAD
}

/// An outbox entry encoded as a JetStream message.
pub struct Message {
    pub subject: String,
    pub body: Vec<u8>,
    /// Besides `Nats-Msg-Id` (the event id).
    headers: [(&'static str, String); 2],
    message_id: String,
}

impl Message {
    pub fn encode(live: &LiveEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            subject: subject(&live.entity_type_name, live.event.instance_id),
            body: serde_json::to_vec(&WireEvent::from_live(live))?,
            headers: [
                ("Tse-Version", live.event.version.to_string()),
                ("Tse-Event-Type", live.event.event_type.clone()),
            ],
            message_id: live.event.event_id.clone(),
        })
    }

    /// Bytes NATS counts against `max_payload`: body plus the serialized header block
    /// (`NATS/1.0\r\n`, one `key: value\r\n` per header, a final `\r\n`).
    pub fn wire_len(&self) -> usize {
        let header = |k: &str, v: &str| k.len() + 2 + v.len() + 2;
        10 + 2
            + header("Nats-Msg-Id", &self.message_id)
            + self
                .headers
                .iter()
                .map(|(k, v)| header(k, v))
                .sum::<usize>()
            + self.body.len()
    }

    pub fn into_publish(self) -> (String, async_nats::jetstream::message::PublishMessage) {
        let mut publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(self.body.into())
            .message_id(&self.message_id);
        for (k, v) in &self.headers {
            publish = publish.header(*k, v.as_str());
        }
        (self.subject, publish)
    }
}

/// Connects to NATS at `url`. A `tls://` URL, or a CA file, means TLS: the server's certificate
/// must chain to the CA file (None: the system's roots) and match the host name.
pub async fn connect(
    url: &str,
    tls_ca_file: Option<&std::path::Path>,
) -> Result<async_nats::Client, NatsConnectError> {
    let mut options = async_nats::ConnectOptions::new();
    if tls_ca_file.is_some() || url.trim_start().starts_with("tls://") {
        let check = crate::adapters::tls::ServerCheck::ChainAndName(tls_ca_file.map(Into::into));
        let tls = crate::adapters::tls::client_config(&check, "NATS_TLS_CA_FILE")
            .map_err(NatsConnectError::Tls)?;
        options = options.require_tls(true).tls_client_config(tls);
    }
    options
        .name("temporal-state-server")
        // A NATS that is down at start-up only delays publication: keep trying in the background.
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(NatsConnectError::Connect)
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// Longest wait for the NATS server to confirm a new subscription.
const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

pub struct NatsBus {
    client: async_nats::Client,
    wake_relay: Arc<Notify>,
    buffer: usize,
}

impl NatsBus {
    pub fn new(client: async_nats::Client, wake_relay: Arc<Notify>, buffer: usize) -> Self {
        Self {
            client,
            wake_relay,
            buffer: buffer.max(1),
        }
    }

    /// Returns once the NATS server has processed every subscription this client sent so far.
    /// `subscribe` only queues the SUB; a caller that reads history next must know that every
    /// event published from now on will reach the subscription, or an event committed between
    /// the history read and the SUB's arrival would be missed until the next one. The server
    /// handles a connection's messages in order, so a message this client publishes to a probe
    /// subscription of its own comes back only after the earlier SUBs took effect.
    async fn confirm_subscriptions(&self) -> Result<(), BusError> {
        let unavailable =
            |e: String| BusError::Unavailable(format!("confirming a subscription: {e}"));
        let inbox = self.client.new_inbox();
        let mut probe = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        self.client
            .publish(inbox, Default::default())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, probe.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(unavailable("the connection closed".into())),
            Err(_) => Err(unavailable(format!(
                "no answer within {SUBSCRIBE_CONFIRM_TIMEOUT:?}"
            ))),
        }
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn committed(&self, _events: &[LiveEvent]) {
        self.wake_relay.notify_one();
    }

    #[tracing::instrument(name = "nats subscribe", skip_all, fields(messaging.system = "nats"))]
    async fn subscribe(&self, filter: LiveFilter) -> Result<LiveStream, BusError> {
        let subject = format!(
            "{SUBJECT_PREFIX}.{}.{}",
            filter.entity_type_name.as_deref().unwrap_or("*"),
            filter
                .instance_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "*".into())
        );
        let mut subscriber = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        self.confirm_subscriptions().await?;
        // One slot more than the buffer, kept for the Lagged notice: it is delivered however late
        // the subscriber reads, and this task never waits for it.
        let (tx, rx) = mpsc::channel(self.buffer.saturating_add(1));
        let buffer = self.buffer as u64;
        tokio::spawn(async move {
            // Ends as soon as the subscriber goes away, not at the next matching message
            // (which may never come): the NATS subscription is dropped with this task.
            while let Some(message) = tokio::select! {
                biased;
                () = tx.closed() => None,
                m = subscriber.next() => m,
            } {
                let Some(live) = serde_json::from_slice::<WireEvent>(&message.payload)
                    .ok()
                    .and_then(WireEvent::into_live)
                else {
                    tracing::warn!(subject = %message.subject, "undecodable event message skipped");
                    continue;
                };
                if !filter.matches(&live) {
                    continue;
                }
                // Only this task sends, so the free slots it sees can only grow meanwhile.
                if tx.capacity() <= 1 {
                    // Cut the laggard off; the NATS subscription ends with this task.
                    let _ = tx.try_send(Err(BusError::Lagged(buffer)));
                    break;
                }
                if tx.try_send(Ok(live)).is_err() {
                    break; // the subscriber went away
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApplyMode;
    use crate::ports::EventRecord;

    /// The envelope bound holds for the largest ids, names and timestamps the server accepts,
    /// written in the characters that cost the most bytes.
    #[test]
    fn the_envelope_of_the_largest_event_fits_envelope_bytes() {
        let payload: State = serde_json::from_str(r#"{"a": "x"}"#).unwrap();
        let metadata: State = serde_json::from_str(r#"{"b": 1}"#).unwrap();
        let content = serde_json::to_vec(&payload).unwrap().len()
            + serde_json::to_vec(&metadata).unwrap().len();
        for wide in ["\u{1F600}", "\"", "\\"] {
            let live = LiveEvent {
                entity_type_name: "t".repeat(63),
                event: EventRecord {
                    event_id: wide.repeat(128),
                    instance_id: Uuid::max(),
                    entity_type_id: Uuid::max(),
                    event_type: wide.repeat(128),
                    version: i64::MAX,
                    payload: payload.clone(),
                    metadata: metadata.clone(),
                    mode: ApplyMode::MergePatch,
                    recorded_at: DateTime::<Utc>::MAX_UTC,
                    occurred_at: DateTime::<Utc>::MIN_UTC,
                    // A JWT subject is at most 256 bytes.
                    recorded_by: wide.repeat(256 / wide.len()),
                    schema_version: i64::MAX,
                    position: i64::MAX,
                },
            };
            let message = Message::encode(&live).unwrap();
            assert!(
                message.wire_len() - content <= ENVELOPE_BYTES,
                "{wide:?}: envelope of {} bytes",
                message.wire_len() - content
            );
        }
    }
}
