//! The outbox relay: publishes committed events to JetStream, in order, at least once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{NatsConfig, WireEvent, subject};
use crate::ports::Outbox;

/// Entries published per round; their acknowledgements are awaited together.
const BATCH: usize = 256;
/// How often the relay looks at the outbox without being woken (commits of other replicas).
const POLL: Duration = Duration::from_millis(100);
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_millis(500);

fn retention(name: &str) -> stream::RetentionPolicy {
    match name {
        "interest" => stream::RetentionPolicy::Interest,
        "workqueue" => stream::RetentionPolicy::WorkQueue,
        _ => stream::RetentionPolicy::Limits,
    }
}

/// Creates the stream if it is missing.
pub async fn ensure_stream(js: &jetstream::Context, config: &NatsConfig) -> Result<(), String> {
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", super::SUBJECT_PREFIX)],
        num_replicas: config.replicas.max(1),
        retention: retention(&config.retention),
        duplicate_window: config.duplicate_window,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Runs until the task is aborted.
pub async fn run(
    client: async_nats::Client,
    config: NatsConfig,
    outbox: Arc<dyn Outbox>,
    wake: Arc<Notify>,
) {
    let js = jetstream::new(client);
    let mut stream_ready = false;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        if !stream_ready {
            match ensure_stream(&js, &config).await {
                Ok(()) => {
                    info!(stream = %config.stream, "jetstream stream ready");
                    stream_ready = true;
                }
                Err(e) => {
                    warn!(error = %e, "jetstream stream not ready; will retry");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        match outbox.hold_lease().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "outbox lease unavailable");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        }
        if let Err(e) = drain(&js, outbox.as_ref()).await {
            warn!(error = %e, "publication paused");
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// Publishes until the outbox is empty or something fails.
async fn drain(js: &jetstream::Context, outbox: &dyn Outbox) -> Result<(), String> {
    loop {
        let batch = outbox.pending(BATCH).await.map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        // Send the whole batch, then collect acknowledgements in order. Messages of one
        // instance leave in version order on one connection; a failure stops the batch, and the
        // re-send of anything already stored is dropped by its Nats-Msg-Id.
        let mut acks = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (id, live) in &batch {
            let body = match serde_json::to_vec(&WireEvent::from_live(live)) {
                Ok(b) => b,
                Err(e) => return Err(format!("encoding outbox entry {id}: {e}")),
            };
            let publish = PublishMessage::build()
                .payload(body.into())
                .message_id(&live.event.event_id)
                .header("Tse-Version", live.event.version.to_string().as_str())
                .header("Tse-Event-Type", live.event.event_type.as_str());
            match js
                .send_publish(
                    subject(&live.entity_type_name, live.event.instance_id),
                    publish,
                )
                .await
            {
                Ok(ack) => acks.push((*id, ack)),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let mut done = Vec::with_capacity(acks.len());
        for (id, ack) in acks {
            match ack.await {
                Ok(_) => done.push(id),
                Err(e) => {
                    failure.get_or_insert(e.to_string());
                    break;
                }
            }
        }
        if !done.is_empty() {
            debug!(published = done.len(), "outbox entries acknowledged");
            outbox.done(&done).await.map_err(|e| e.to_string())?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}
