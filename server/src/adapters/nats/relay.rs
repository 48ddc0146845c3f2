//! The outbox relay: publishes committed events to JetStream, in order per instance, at least
//! once, and never lets one event hold up the others.
//!
//! - Order: an instance's next event is sent only once JetStream acknowledged the one before,
//!   so a refused or lost acknowledgement can never let a later version overtake an earlier one
//!   in the stream. Different instances are sent together (one wave holds the oldest pending
//!   event of each instance in the batch), so a hot instance costs one round trip per event,
//!   not the whole relay.
//! - Refusals: an event the NATS server can never carry (over its `max_payload`, normally
//!   refused at write time already) is dead-lettered at once; an event JetStream refuses
//!   (a stream limit) is retried, and dead-lettered after `max_attempts` refusals. A
//!   dead-lettered row moves to `outbox_dead_letters` with a warning naming the event and
//!   [`dead_lettered_total`] counts it; the instance's later events are published after it.
//! - Outages (NATS down, timeouts, no stream) never count as refusals: publication waits, and
//!   JetStream's duplicate window absorbs re-sends.
//! - Erasure: before an `InstanceErased` event is sent, every message of its instance's subject
//!   is purged from the stream. The erasure deleted the instance's unpublished outbox rows in
//!   its transaction, and the instance's events go out in order, so whatever reached the
//!   stream before it (even from a batch read just before the erasure committed) is gone
//!   after it; a failed purge is an outage, retried like any.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use tokio::sync::Notify;
use tracing::{Instrument as _, debug, info, warn};
use uuid::Uuid;

use super::{Message, NatsConfig};
use crate::app::metrics::{
    RELAY_DEAD_LETTERED, RELAY_FAILURES, RELAY_LAST_PUBLISH, RELAY_PUBLISHED,
};
use crate::domain::EventType;
use crate::ports::{LiveEvent, Outbox};

/// Entries read per round.
const BATCH: usize = 256;
/// How often the relay looks at the outbox without being woken (commits of other replicas).
const POLL: Duration = Duration::from_millis(100);
/// How long published rows wait for the next commit's read of the outbox to delete them, when
/// no commit comes: then a read of their own deletes them.
const SETTLE: Duration = Duration::from_millis(10);
/// Least time between the starts of two reads of the outbox when the first read emptied it:
/// commits that follow a woken relay closely wait for the next read, so at low load one read
/// and one wave of acknowledgements serve several commits instead of one each (each read is a
/// database round trip the commits compete with for the machine). Under load a read finds a
/// full batch, and the relay reads again at once.
const GATHER: Duration = Duration::from_millis(5);
/// Pause after a round that published nothing before trying again.
const BACKOFF: Duration = Duration::from_millis(500);

/// Outbox rows moved to the dead-letter table since start-up, for the metrics exporter.
static DEAD_LETTERED: AtomicU64 = AtomicU64::new(0);

/// How many outbox rows this process dead-lettered since it started.
pub fn dead_lettered_total() -> u64 {
    DEAD_LETTERED.load(Ordering::Relaxed)
}

/// Seconds since the Unix epoch, as Prometheus timestamps are.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

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

/// What a failed publication means for its row.
#[derive(Debug)]
enum Failure {
    /// The message can never fit the server's `max_payload`: no retry can help.
    Permanent(String),
    /// JetStream received the message and refused it (a stream limit): counts as an attempt.
    Refused(String),
    /// NATS or the stream is not reachable: says nothing about the row.
    Outage { error: String, stream_missing: bool },
}

fn classify_send(e: PublishError) -> Failure {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Permanent(e.to_string()),
        kind => Failure::Outage {
            stream_missing: kind == PublishErrorKind::StreamNotFound,
            error: e.to_string(),
        },
    }
}

fn classify_ack(e: PublishError) -> Failure {
    match e.kind() {
        // The stream's answer was an error: it saw this message and said no.
        PublishErrorKind::Other | PublishErrorKind::WrongLastMessageId => {
            Failure::Refused(e.to_string())
        }
        PublishErrorKind::MaxPayloadExceeded => Failure::Permanent(e.to_string()),
        kind => Failure::Outage {
            stream_missing: kind == PublishErrorKind::StreamNotFound,
            error: e.to_string(),
        },
    }
}

/// Runs until `stop` turns true (or its sender is dropped): then, if this server holds the
/// lease, it publishes what the outbox holds one last time and returns. Rows it could not
/// publish stay in the outbox for the next relay.
pub async fn run(
    client: async_nats::Client,
    config: NatsConfig,
    outbox: Arc<dyn Outbox>,
    wake: Arc<Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut relay = Relay {
        js: jetstream::new(client),
        stream: config.stream.clone(),
        outbox,
        max_attempts: config.max_attempts.max(1),
        refusals: HashMap::new(),
        unsettled: Vec::new(),
    };
    let mut stream_ready = false;
    let mut next_read = tokio::time::Instant::now();
    loop {
        let mut last = *stop.borrow();
        if !last {
            // Published rows wait for the next read to delete them, but not for long.
            let idle = if relay.unsettled.is_empty() {
                POLL
            } else {
                SETTLE
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                changed = stop.changed() => last = changed.is_err() || *stop.borrow(),
            }
            tokio::time::sleep_until(next_read).await;
        }
        if !stream_ready {
            match ensure_stream(&relay.js, &config).await {
                Ok(()) => {
                    info!(stream = %config.stream, "jetstream stream ready");
                    stream_ready = true;
                }
                Err(e) => {
                    warn!(error = %e, "jetstream stream not ready; will retry");
                    if last {
                        return;
                    }
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        match relay.outbox.hold_lease().await {
            Ok(true) => {}
            Ok(false) if last => return,
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "outbox lease unavailable");
                if last {
                    return;
                }
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        }
        next_read = tokio::time::Instant::now() + GATHER;
        match relay.drain().await {
            Ok(()) if last => {
                relay.settle_published().await;
                info!("relay stopped with the outbox flushed");
                return;
            }
            Ok(()) => {}
            Err(Stalled { error, .. }) if last => {
                relay.settle_published().await;
                warn!(%error, "relay stopped before the outbox was empty; the next relay publishes the rest");
                return;
            }
            Err(Stalled {
                error,
                stream_missing,
            }) => {
                warn!(%error, "publication paused");
                if stream_missing {
                    stream_ready = false;
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Why a drain stopped before the outbox was empty.
struct Stalled {
    error: String,
    stream_missing: bool,
}

struct Relay {
    js: jetstream::Context,
    /// The stream's name, for the purge of an erased instance's subject.
    stream: String,
    outbox: Arc<dyn Outbox>,
    max_attempts: u32,
    /// Refusals so far of each outbox row still pending. Kept in memory: a restart (or a lease
    /// moving to another server) only grants a row a few more attempts.
    refusals: HashMap<i64, u32>,
    /// Outbox rows published but not deleted yet: deleted by the next read of the outbox, in
    /// its round trip, at most [`SETTLE`] later (or when the relay stops). A crash before that
    /// publishes them again, with the same `Nats-Msg-Id`, which JetStream's duplicate window
    /// drops.
    unsettled: Vec<i64>,
}

/// What one round did.
#[derive(Default)]
struct Round {
    published: Vec<i64>,
    dead: usize,
    /// A failure that stopped one instance's events for this round.
    blocked: Option<String>,
    outage: Option<(String, bool)>,
}

impl Relay {
    /// Publishes until the outbox is empty, or a round makes no progress.
    async fn drain(&mut self) -> Result<(), Stalled> {
        let stalled = |error: String| Stalled {
            error,
            stream_missing: false,
        };
        loop {
            let batch = self
                .outbox
                .pending(BATCH, &self.unsettled)
                .await
                .map_err(|e| stalled(e.to_string()))?;
            self.unsettled.clear();
            if batch.is_empty() {
                self.refusals.clear();
                return Ok(());
            }
            let pending: std::collections::HashSet<i64> = batch.iter().map(|(id, _)| *id).collect();
            self.refusals.retain(|id, _| pending.contains(id));
            // A trace of its own (publication is not part of any call): one span per batch.
            let span = tracing::info_span!(
                parent: None,
                "relay publish",
                messaging.system = "nats",
                events = batch.len()
            );
            let taken = batch.len();
            let round = self.round(batch).instrument(span).await?;
            if !round.published.is_empty() {
                debug!(
                    published = round.published.len(),
                    "outbox entries acknowledged"
                );
                metrics::counter!(RELAY_PUBLISHED).increment(round.published.len() as u64);
                metrics::gauge!(RELAY_LAST_PUBLISH).set(unix_now());
                self.unsettled.extend_from_slice(&round.published);
            }
            if let Some((error, stream_missing)) = round.outage {
                return Err(Stalled {
                    error,
                    stream_missing,
                });
            }
            // A short batch, all of it settled, was everything committed before it was read;
            // a commit since has woken the relay again (the wake keeps its permit), so asking
            // the store once more would only find nothing.
            if taken < BATCH && round.published.len() + round.dead == taken {
                self.refusals.clear();
                return Ok(());
            }
            // Without progress the same rows would come back at once: pause, then count the
            // next refusal. With progress, go on: the others must not wait for a stuck row.
            if round.published.is_empty() && round.dead == 0 {
                return Err(stalled(
                    round
                        .blocked
                        .unwrap_or_else(|| "no outbox entry could be published".into()),
                ));
            }
        }
    }

    /// Publishes one batch in waves: each wave sends the oldest unsent event of every instance
    /// not stopped yet, then waits for all their acknowledgements.
    async fn round(&mut self, batch: Vec<(i64, LiveEvent)>) -> Result<Round, Stalled> {
        let mut queues: Vec<(Uuid, VecDeque<(i64, LiveEvent)>)> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for (id, live) in batch {
            let instance = live.event.instance_id;
            let slot = *index.entry(instance).or_insert_with(|| {
                queues.push((instance, VecDeque::new()));
                queues.len() - 1
            });
            queues[slot].1.push_back((id, live));
        }
        let mut round = Round::default();
        loop {
            let mut acks = Vec::new();
            for (_, queue) in queues.iter_mut() {
                let Some((id, live)) = queue.front() else {
                    continue;
                };
                let (id, live) = (*id, live.clone());
                let message = match Message::encode(&live) {
                    Ok(m) => m,
                    Err(e) => {
                        // Cannot happen for JSON values; never let it block the instance.
                        self.settle(
                            &mut round,
                            queue,
                            id,
                            &live,
                            Failure::Permanent(e.to_string()),
                        )
                        .await?;
                        continue;
                    }
                };
                if live.event.event_type == EventType::INSTANCE_ERASED
                    && let Err(error) = self.purge(&message.subject).await
                {
                    let failure = Failure::Outage {
                        error,
                        stream_missing: false,
                    };
                    self.settle(&mut round, queue, id, &live, failure).await?;
                    break;
                }
                let (subject, publish) = message.into_publish();
                match self.js.send_publish(subject, publish).await {
                    Ok(ack) => acks.push((id, live, ack)),
                    Err(e) => {
                        let failure = classify_send(e);
                        let outage = matches!(failure, Failure::Outage { .. });
                        self.settle(&mut round, queue, id, &live, failure).await?;
                        if outage {
                            break;
                        }
                    }
                }
            }
            if acks.is_empty() {
                return Ok(round);
            }
            let results = futures::future::join_all(
                acks.into_iter()
                    .map(|(id, live, ack)| async move { (id, live, ack.await) }),
            )
            .await;
            for (id, live, result) in results {
                let queue = &mut queues[index[&live.event.instance_id]].1;
                match result {
                    Ok(_) => {
                        queue.pop_front();
                        self.refusals.remove(&id);
                        round.published.push(id);
                    }
                    Err(e) => {
                        self.settle(&mut round, queue, id, &live, classify_ack(e))
                            .await?;
                    }
                }
            }
            if round.outage.is_some() {
                return Ok(round);
            }
        }
    }

    /// Deletes the rows published since the last read of the outbox (the relay is stopping).
    async fn settle_published(&mut self) {
        if self.unsettled.is_empty() {
            return;
        }
        match self.outbox.done(&self.unsettled).await {
            Ok(()) => self.unsettled.clear(),
            Err(e) => {
                warn!(error = %e, rows = self.unsettled.len(), "published outbox rows not deleted; the next relay publishes them again (JetStream drops the duplicates)")
            }
        }
    }

    /// Removes every message of `subject` (one instance's) from the stream.
    async fn purge(&self, subject: &str) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| format!("purging {subject}: {e}"))?;
        let purged = stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| format!("purging {subject}: {e}"))?;
        info!(
            subject,
            purged = purged.purged,
            "erased instance purged from the stream"
        );
        Ok(())
    }

    /// Decides what a failure does to the row at the head of `queue`: dead-letter it (the queue
    /// goes on with the instance's next event) or stop the instance for this round.
    async fn settle(
        &mut self,
        round: &mut Round,
        queue: &mut VecDeque<(i64, LiveEvent)>,
        id: i64,
        live: &LiveEvent,
        failure: Failure,
    ) -> Result<(), Stalled> {
        metrics::counter!(RELAY_FAILURES).increment(1);
        let (error, attempts) = match failure {
            Failure::Outage {
                error,
                stream_missing,
            } => {
                round.outage.get_or_insert((error, stream_missing));
                queue.clear();
                return Ok(());
            }
            Failure::Permanent(error) => (error, self.refusals.get(&id).copied().unwrap_or(0) + 1),
            Failure::Refused(error) => {
                let attempts = self.refusals.entry(id).or_insert(0);
                *attempts += 1;
                if *attempts < self.max_attempts {
                    debug!(outbox_id = id, attempts = *attempts, %error, "jetstream refused an event; will retry");
                    round.blocked.get_or_insert(error);
                    // The instance's later events wait: they must not overtake this one.
                    queue.clear();
                    return Ok(());
                }
                (error, *attempts)
            }
        };
        self.outbox
            .dead_letter(id, attempts, &error)
            .await
            .map_err(|e| Stalled {
                error: format!("dead-lettering outbox entry {id}: {e}"),
                stream_missing: false,
            })?;
        self.refusals.remove(&id);
        DEAD_LETTERED.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(RELAY_DEAD_LETTERED).increment(1);
        round.dead += 1;
        queue.pop_front();
        warn!(
            outbox_id = id,
            event_id = %live.event.event_id,
            instance_id = %live.event.instance_id,
            version = live.event.version,
            attempts,
            %error,
            dead_lettered_total = dead_lettered_total(),
            "event cannot be published: moved to outbox_dead_letters"
        );
        Ok(())
    }
}
