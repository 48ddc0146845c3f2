//! The global event log for read models: [`Client::read_events`], and [`Client::run_consumer`],
//! which runs a handler over every event from a stored position, then live, saving the position
//! after each handled batch in a [`CheckpointStore`] (a [`FileCheckpoint`] or your own).
//!
//! After a crash the consumer starts again from the last saved position: the batch that was
//! being handled (handled, perhaps, but not yet saved) is handled a second time, and nothing is
//! ever skipped. So a handler runs at most twice for an event, and should be idempotent (an
//! upsert keyed by instance and version, for example), or save the position in the same
//! transaction as its own writes (implement [`CheckpointStore`] over that database).

use std::future::Future;
use std::path::{Path, PathBuf};

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::query_service_client::QueryServiceClient;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::{Event, events};
use crate::options::{CallOptions, call_options};
use crate::subscribe::SubscribeOptions;

/// Options of [`Client::read_events`]: filters (each matching everything when unset) and size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadEventsOptions {
    entity_types: Vec<String>,
    event_types: Vec<String>,
    page_size: i32,
    call: CallOptions,
}

impl ReadEventsOptions {
    /// Only events of these entity types (ids or names, at most 100). Default: every type.
    pub fn entity_types<I, S>(mut self, entity_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entity_types = entity_types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of these types (at most 100). Default: every event type.
    pub fn event_types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = event_types.into_iter().map(Into::into).collect();
        self
    }

    /// At most this many events (1 to 1000). Default: the server's, 100.
    pub fn page_size(mut self, size: i32) -> Self {
        self.page_size = size;
        self
    }
}
call_options!(ReadEventsOptions);

/// One read of the global log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventLogPage {
    /// The matching events, in position (commit) order.
    pub events: Vec<Event>,
    /// Where the next read starts: every matching event up to it is in this page or an
    /// earlier one. Save it once the page is handled.
    pub next_position: i64,
    /// The highest position committed when the read started: `next_position` equal to it
    /// means caught up.
    pub head_position: i64,
}

/// Where a consumer keeps the position it has handled everything up to.
pub trait CheckpointStore: Send + Sync {
    /// The saved position; `None` before the first save (the consumer starts from 0).
    fn load(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
    /// Saves `position` durably: after a crash, [`CheckpointStore::load`] returns it or a
    /// later one.
    fn save(&self, position: i64) -> impl Future<Output = Result<()>> + Send;
}

/// A [`CheckpointStore`] in one file: the position as decimal text, replaced atomically (written
/// to a temporary file beside it, synced, renamed over it, and the directory synced), so a crash
/// leaves the old position or the new one, never a torn file.
#[derive(Debug, Clone)]
pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    /// A checkpoint kept at `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal {
        message: format!("checkpoint {what} {}: {e}", path.display()),
    }
}

impl CheckpointStore for FileCheckpoint {
    async fn load(&self) -> Result<Option<i64>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|e| Error::Internal {
                    message: format!("checkpoint {} holds no position: {e}", path.display()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        })
        .await
        .map_err(|e| Error::Internal {
            message: format!("checkpoint read: {e}"),
        })?
    }

    async fn save(&self, position: i64) -> Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            // A temporary file of its own per save: two saves of one checkpoint can overlap (a
            // save handed to the blocking pool finishes even when its consumer was aborted and
            // restarted meanwhile), and with one shared name the second rename found nothing.
            static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut tmp = path.clone().into_os_string();
            tmp.push(format!(".{}.{n}.tmp", std::process::id()));
            let tmp = PathBuf::from(tmp);
            let mut file = std::fs::File::create(&tmp).map_err(|e| io_error("write", &tmp, e))?;
            file.write_all(position.to_string().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("write", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_error("replace", &path, e)
            })?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error("sync the directory of", &path, e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal {
            message: format!("checkpoint write: {e}"),
        })?
    }
}

/// Options of [`Client::run_consumer`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerOptions {
    entity_types: Vec<String>,
    event_types: Vec<String>,
    batch_size: usize,
    stop_when_caught_up: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            entity_types: Vec::new(),
            event_types: Vec::new(),
            batch_size: 500,
            stop_when_caught_up: false,
        }
    }
}

impl ConsumerOptions {
    /// Only events of these entity types (ids or names). Default: every type.
    pub fn entity_types<I, S>(mut self, entity_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entity_types = entity_types.into_iter().map(Into::into).collect();
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

    /// Most events handed to the handler at once (1 to 1000): the position is saved after each
    /// batch, so this is also how many events a crash may hand over a second time. Default 500.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.clamp(1, 1000);
        self
    }

    /// Return once everything committed when the consumer started is handled, instead of
    /// following live events. Default: follow forever.
    pub fn stop_when_caught_up(mut self, stop: bool) -> Self {
        self.stop_when_caught_up = stop;
        self
    }
}

/// Why [`Client::run_consumer`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError<E> {
    /// The handler failed: the batch's position was not saved, so the batch is handled again
    /// when the consumer restarts.
    #[error("the handler failed: {0}")]
    Handler(E),
    /// The server or the checkpoint store failed (after the client's retries).
    #[error(transparent)]
    Client(#[from] Error),
}

impl Client {
    /// One page of the global event log after `from_position` (exclusive; 0 reads from the
    /// start), in commit order. Continue from [`EventLogPage::next_position`].
    pub async fn read_events(
        &self,
        from_position: i64,
        options: &ReadEventsOptions,
    ) -> Result<EventLogPage> {
        let request = pb::ReadEventsRequest {
            from_position,
            entity_types: options.entity_types.clone(),
            event_types: options.event_types.clone(),
            page_size: options.page_size,
        };
        let r = self
            .unary("ReadEvents", &options.call, request, |t, r| async move {
                QueryServiceClient::new(t).read_events(r).await
            })
            .await
            .0?;
        Ok(EventLogPage {
            events: events(r.events)?,
            next_position: r.next_position,
            head_position: r.head_position,
        })
    }

    /// Runs `handler` over every event after the position `checkpoints` holds (0 when it holds
    /// none), in commit order, batch by batch: first what is stored (ReadEvents), then live
    /// events as they commit (Subscribe from the position reached), saving the position after
    /// each batch the handler accepted. It returns only when the handler or the server fails
    /// (or, with [`ConsumerOptions::stop_when_caught_up`], once caught up); drop the future to
    /// stop it. A broken stream (UNAVAILABLE) goes back to reading from the saved position.
    ///
    /// ```no_run
    /// use temporal_state_client::{Client, ConsumerOptions, FileCheckpoint};
    ///
    /// # async fn run(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let checkpoint = FileCheckpoint::new("scores.checkpoint");
    /// let options = ConsumerOptions::default().entity_types(["player_profile"]);
    /// client
    ///     .run_consumer(&checkpoint, &options, |batch| async move {
    ///         for e in batch {
    ///             println!("#{} {} v{} {}", e.position, e.instance_id, e.version, e.event_type);
    ///         }
    ///         Ok::<(), std::io::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_consumer<C, H, Fut, E>(
        &self,
        checkpoints: &C,
        options: &ConsumerOptions,
        mut handler: H,
    ) -> std::result::Result<(), ConsumerError<E>>
    where
        C: CheckpointStore,
        H: FnMut(Vec<Event>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
    {
        let mut position = checkpoints.load().await?.unwrap_or(0);
        let read = ReadEventsOptions {
            entity_types: options.entity_types.clone(),
            event_types: options.event_types.clone(),
            page_size: options.batch_size as i32,
            call: CallOptions::default(),
        };
        loop {
            // What is stored, page by page.
            loop {
                let page = self.read_events(position, &read).await?;
                if !page.events.is_empty() {
                    handler(page.events).await.map_err(ConsumerError::Handler)?;
                }
                if page.next_position != position {
                    checkpoints.save(page.next_position).await?;
                    position = page.next_position;
                }
                if position >= page.head_position {
                    break;
                }
            }
            if options.stop_when_caught_up {
                return Ok(());
            }
            // Then live, from the position reached.
            let subscribe = SubscribeOptions::default()
                .from_position(position)
                .entity_types(options.entity_types.clone())
                .event_types(options.event_types.clone());
            let mut stream = self.subscribe(&subscribe).await?;
            let broken = loop {
                let first = match stream.next_event().await {
                    Ok(Some(e)) => e,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                };
                // Whatever else has already arrived joins the batch.
                let mut batch = vec![first];
                let mut ended = None;
                while batch.len() < options.batch_size {
                    use futures_util::FutureExt;
                    match stream.next_event().now_or_never() {
                        Some(Ok(Some(e))) => batch.push(e),
                        Some(Ok(None)) => {
                            ended = Some(None);
                            break;
                        }
                        Some(Err(e)) => {
                            ended = Some(Some(e));
                            break;
                        }
                        None => break,
                    }
                }
                let last = batch.last().map_or(position, |e| e.position);
                handler(batch).await.map_err(ConsumerError::Handler)?;
                checkpoints.save(last).await?;
                position = last;
                if let Some(end) = ended {
                    break end;
                }
            };
            match broken {
                // The server ended the stream or it broke: read on from the position saved.
                None => {}
                Some(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, position, "consumer stream broke; reading on");
                }
                Some(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saves that overlap (a killed consumer's last save still running while its successor
    /// saves) each succeed, and the file holds one of their positions, never a torn one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_saves_of_one_checkpoint_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = FileCheckpoint::new(dir.path().join("c.checkpoint"));
        let saves: Vec<_> = (1..=32_i64)
            .map(|p| {
                let c = checkpoint.clone();
                tokio::spawn(async move { c.save(p).await })
            })
            .collect();
        for s in saves {
            s.await.unwrap().unwrap();
        }
        let position = checkpoint.load().await.unwrap().unwrap();
        assert!((1..=32).contains(&position), "{position}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind: {left:?}");
    }
}
