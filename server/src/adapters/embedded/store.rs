//! [`EmbeddedStore`] on an on-disk SQLite database: its connections (the writer and the
//! read pool), entity types and instances. The append is in `append.rs`, the time-travel reads
//! in `history.rs`.
//!
//! # Connections and threads
//!
//! rusqlite is blocking, so no statement runs on tokio's workers. The one writer connection
//! belongs to a thread of its own (`tse-sqlite-writer`), fed by a FIFO queue: a write sends its
//! work there and awaits the answer, so writers queue in order without parking blocking threads
//! that reads also need, and a write costs one hand-over to that thread and one back (earlier,
//! a task per batch, an async lock and a `spawn_blocking` cost three more). Every write is one
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock at its start, so appends on an
//! instance run one after another on its latest version even when another process opens the
//! same file. Reads run on tokio's blocking pool, on a few `query_only` connections of their
//! own; in WAL mode they read committed data without waiting for the writer.
//!
//! Appends are group-committed: the writer thread takes every append waiting in its queue (up
//! to the next other write) and runs them in one transaction (each in a savepoint of its own):
//! the application's decisions (owned closures, run there), the retries, planned by
//! [`crate::adapters::append_plan`], and one commit. A batch starts as soon as the writer is
//! free, never on a timer. Once sent, a write runs even if its caller goes away.
//!
//! # Durability
//!
//! `journal_mode=WAL` with `synchronous=FULL`: the WAL is fsynced at every commit, so an
//! acknowledged write survives a power loss or an OS crash, as it does on PostgreSQL (whose
//! idempotency and history promises assume it). `synchronous=NORMAL` would only fsync at
//! checkpoints: still safe against a crash of the server process, but the last commits before a
//! power loss could vanish, and with them recorded idempotency keys, so a retry would be applied
//! twice. The cost is one fsync per batch of appends (group commit), shared by every append that
//! was waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::instrument;
use uuid::Uuid;

use super::append::{PendingAppend, append_batch};
use super::{EmbeddedError, migrate, rows};
use crate::adapters::append_plan;
use crate::domain::{ApplyMode, DomainError, EventType, State};
use crate::ports::{
    AppendOutcome, AppendRequest, Catalog, Decide, EntityTypeRecord, EventRecord, EventStore,
    InstanceCursor, InstanceOrder, InstanceQuery, InstanceRecord, InstanceViolation, NewInstance,
    PathStep, SchemaCheck, SchemaVersionRecord, StateCheck, StoreError, TypeKey, TypeUpdate,
    TypeUpdateOutcome,
};

/// Name of the database file inside DATA_DIR (SQLite adds `-wal` and `-shm` next to it).
pub const DB_FILE: &str = "temporal-state.db";

/// How long a statement waits for a lock held by another connection before failing with
/// SQLITE_BUSY (reported as UNAVAILABLE).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections; reads beyond this many wait for one to be free.
const READERS: usize = 4;

/// Prepared statements kept per connection (history reads prepare one per filter shape).
const STATEMENT_CACHE: usize = 128;

/// The write side and the time-travel reads on SQLite. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    snapshot_interval: i64,
    applied: Vec<i32>,
    /// The writer thread's queue; dropping it (with the store) ends the thread, which closes
    /// the writer connection.
    writer: std::sync::mpsc::Sender<WriterJob>,
    /// The writer thread, joined when the store is dropped: the writer connection is closed
    /// (and the WAL checkpointed) by the time the drop returns, as before the thread existed.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    readers: Arc<Readers>,
    /// Set when a statement found the file damaged: from then on `ping` fails, so the server
    /// reports NOT_SERVING. Damage that start-up does not read (late pages) shows only here.
    damaged: AtomicBool,
    /// Longest a read may run before it is interrupted, in milliseconds (0: no bound).
    read_timeout_ms: AtomicU64,
}

/// Interrupts a read whose caller gave up (its deadline passed, or it went away), so the read
/// connection is freed instead of running the query to its end. Shared by the async caller and
/// the blocking task; the handle is only present while the task runs the caller's statements,
/// so a late interrupt can never hit the next read on the same connection.
#[derive(Default)]
struct ReadInterrupt {
    state: std::sync::Mutex<InterruptState>,
}

#[derive(Default)]
struct InterruptState {
    handle: Option<rusqlite::InterruptHandle>,
    cancelled: bool,
}

impl ReadInterrupt {
    /// Arms the interrupt for `conn`; false when the read was already cancelled.
    fn begin(&self, conn: &Connection) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.cancelled {
            return false;
        }
        state.handle = Some(conn.get_interrupt_handle());
        true
    }

    /// Disarms it before the connection goes back to the pool.
    fn end(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).handle = None;
    }

    fn cancel(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.cancelled = true;
        if let Some(handle) = state.handle.take() {
            handle.interrupt();
        }
    }

    fn cancelled(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancelled
    }
}

/// Cancels the read when dropped: when the caller's future is dropped mid-read, and (as a
/// no-op, the task having disarmed it) after every read that finished.
struct CancelOnDrop(Arc<ReadInterrupt>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Idle read connections; a semaphore permit guarantees one is free for its holder.
struct Readers {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// Reads waiting for a permit, for the pool metrics.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts one read waiting for a connection while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A read connection lent to one blocking task; it returns to the pool when dropped, even when
/// the task panics.
struct Lease {
    conn: Option<Connection>,
    readers: Arc<Readers>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.readers.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(conn);
        }
    }
}

/// Work for the writer thread.
enum WriterJob {
    /// An append: every append queued behind it joins its transaction.
    Append(PendingAppend),
    /// Any other write, run alone; it answers its caller itself.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Most appends in one transaction: bounds how long the batch holds SQLite's write lock.
const MAX_BATCH_APPENDS: usize = 1024;

/// Starts the thread that owns the writer connection and runs every write, in queue order.
fn spawn_writer(
    conn: Connection,
    snapshot_interval: i64,
) -> Result<
    (
        std::sync::mpsc::Sender<WriterJob>,
        std::thread::JoinHandle<()>,
    ),
    EmbeddedError,
> {
    let (jobs, queue) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tse-sqlite-writer".into())
        .spawn(move || run_writer(conn, queue, snapshot_interval))
        .map_err(|e| EmbeddedError::Worker(format!("starting the writer thread: {e}")))?;
    Ok((jobs, thread))
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Disconnect the queue (the writer finishes what was sent, then ends), then wait for it,
        // unless this drop runs on the writer thread itself (a write holding the last handle).
        drop(std::mem::replace(
            &mut self.writer,
            std::sync::mpsc::channel().0,
        ));
        if let Some(thread) = self.writer_thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// The writer thread: ends when the store (the queue's only sender) is dropped. A write that
/// panics rolls back (its transaction's drop) and drops its answer, which the caller reports;
/// the thread goes on with the next.
fn run_writer(
    mut conn: Connection,
    queue: std::sync::mpsc::Receiver<WriterJob>,
    snapshot_interval: i64,
) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut carried = None;
    loop {
        let job = match carried.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let run = catch_unwind(AssertUnwindSafe(|| match job {
            WriterJob::Run(write) => write(&mut conn),
            WriterJob::Append(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH_APPENDS {
                    match queue.try_recv() {
                        Ok(WriterJob::Append(next)) => batch.push(next),
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                append_batch(&mut conn, batch, snapshot_interval);
            }
        }));
        if run.is_err() {
            tracing::error!(
                "a write panicked on the embedded store's writer thread; it was rolled back"
            );
        }
    }
}

fn writer_gone() -> StoreError {
    EmbeddedError::Worker("the writer stopped before answering".into()).into()
}

fn worker(e: tokio::task::JoinError) -> StoreError {
    EmbeddedError::Worker(e.to_string()).into()
}

pub(super) fn sql(e: rusqlite::Error) -> StoreError {
    EmbeddedError::from(e).into()
}

/// Opens a connection configured for this store (WAL, `synchronous=FULL`, foreign keys, busy
/// timeout, statement cache, plans that do not depend on bound values; `query_only` for
/// readers). Every failure names the file.
pub fn connect(path: &Path, reader: bool) -> Result<Connection, EmbeddedError> {
    let open_error = |error| EmbeddedError::Open {
        path: path.to_path_buf(),
        error,
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if !reader {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner stability guarantee: a statement keeps the plan it was prepared with
    // whatever values are bound to it. Without it, SQLite marks a statement whose plan it
    // chose with a bound value in view (a join's `i.id = ?1`, as in the append's head read)
    // to be prepared again after its bindings are cleared, which the statement cache does
    // every time it takes a statement back: the head read was parsed and planned again at
    // every append (a sixth of the writer thread's time under load). What the guarantee gives
    // up is planning by bound values: statistics (this store runs no ANALYZE), a LIKE on a
    // parameter (none here), and small heuristics (a bound LIMIT, an equality's row estimate);
    // this store's statements are index lookups and scans whose plans do not turn on them.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(open_error)?;
    // The first statement reads the file header: a file that is not a database fails here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(EmbeddedError::Unusable {
            path: path.to_path_buf(),
            reason: format!("cannot use write-ahead logging (journal mode stays {mode:?})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_error)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_error)?;
    if reader {
        conn.pragma_update(None, "query_only", true)
            .map_err(open_error)?;
    } else {
        // Erasure: what a write deletes or overwrites is zeroed in the file (freed cells and
        // freed pages alike), so a value once replaced (an older state, an erased payload)
        // does not linger in free space for anyone reading the file's bytes. Every write pays
        // for it (zeroing in pages it writes anyway, and writing freed pages), not only an
        // erasure: a value overwritten before its instance was erased must be gone too.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(open_error)?;
    }
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating it and `dir` when missing) the database in `dir` and applies pending
    /// migrations. Blocking: call it before serving or from `spawn_blocking`.
    ///
    /// Fails, naming the path, when `dir` is not a usable directory or the file is not a
    /// database of this server; it never recreates or overwrites an existing file.
    pub fn open(dir: &Path, snapshot_interval: i64) -> Result<Self, EmbeddedError> {
        let dir_error = |reason: String| EmbeddedError::DataDir {
            path: dir.to_path_buf(),
            reason,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(dir_error("exists and is not a directory".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| dir_error(format!("cannot be created: {e}")))?;
            }
            Err(e) => return Err(dir_error(format!("cannot be used: {e}"))),
        }
        let path = dir.join(DB_FILE);
        if let Ok(m) = std::fs::metadata(&path)
            && !m.is_file()
        {
            return Err(EmbeddedError::Unusable {
                path,
                reason: "exists and is not a regular file".into(),
            });
        }
        let mut writer = connect(&path, false)?;
        if writer
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|error| EmbeddedError::Open {
                path: path.clone(),
                error,
            })?
        {
            return Err(EmbeddedError::Unusable {
                path,
                reason: "can only be opened read-only; the server needs to write to it".into(),
            });
        }
        let applied = migrate::run(&mut writer, &path)?;
        let idle = (0..READERS)
            .map(|_| connect(&path, true))
            .collect::<Result<Vec<_>, _>>()?;
        let (writer, writer_thread) = spawn_writer(writer, snapshot_interval.max(1))?;
        let readers = Arc::new(Readers {
            path: path.clone(),
            idle: std::sync::Mutex::new(idle),
            permits: Arc::new(Semaphore::new(READERS)),
            waiting: Default::default(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                snapshot_interval: snapshot_interval.max(1),
                applied,
                writer,
                writer_thread: Some(writer_thread),
                readers,
                damaged: AtomicBool::new(false),
                read_timeout_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Interrupts any read still running after `timeout` (DEADLINE_EXCEEDED), so a slow read frees
    /// its connection; a read whose caller goes away is interrupted in any case.
    pub fn with_read_timeout(self, timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.read_timeout_ms.store(ms, Ordering::Relaxed);
        self
    }

    /// The database file.
    /// The read connections as a pool (the one writer connection is a queue, not a pool):
    /// what the `tse_db_pool_*` metrics show for the embedded store.
    pub fn pool_status(&self) -> crate::adapters::PoolStatus {
        let readers = &self.inner.readers;
        crate::adapters::PoolStatus {
            size: READERS,
            in_use: READERS.saturating_sub(readers.permits.available_permits()),
            waiting: readers.waiting.load(Ordering::Relaxed),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The migrations [`EmbeddedStore::open`] applied (empty when the schema was up to date).
    pub fn applied_migrations(&self) -> &[i32] {
        &self.inner.applied
    }

    /// What a damaged file means for every later call, and the error that says where it is.
    fn damage(&self, cause: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "embedded database {}: {cause}; stop the server and restore the file from a backup",
            self.inner.path.display()
        ))
    }

    /// Passes `result` on; a damaged file is remembered (health turns NOT_SERVING) and named.
    fn noticed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Err(StoreError::Corrupt(cause)) => {
                if !self.inner.damaged.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %self.inner.path.display(), %cause, "embedded database is damaged");
                }
                Err(self.damage(&cause))
            }
            other => other,
        }
    }

    /// Runs `f` on the writer connection, on the writer thread, after the writes queued before.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(WriterJob::Run(Box::new(move |conn| {
            let _ = reply.send(f(conn));
        })))?;
        let result = answer.await.unwrap_or_else(|_| Err(writer_gone()));
        self.noticed(result)
    }

    fn send(&self, job: WriterJob) -> Result<(), StoreError> {
        self.inner.writer.send(job).map_err(|_| writer_gone())
    }

    /// Runs `f` on a read connection, on the blocking pool. The read is interrupted when it
    /// runs past the read timeout or when the caller drops this future.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.inner.readers.clone();
        let waiting = Waiting::new(&readers.waiting);
        let permit = readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Internal(format!("embedded readers: {e}")))?;
        drop(waiting);
        let interrupt = Arc::new(ReadInterrupt::default());
        let _cancel_on_drop = CancelOnDrop(interrupt.clone());
        let task_interrupt = interrupt.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                // Only if a connection was lost; replace it.
                None => connect(&readers.path, true)?,
            };
            let mut lease = Lease {
                conn: Some(conn),
                readers: readers.clone(),
                _permit: permit,
            };
            match lease.conn.as_mut() {
                Some(conn) => {
                    if !task_interrupt.begin(conn) {
                        return Err(StoreError::Unavailable("the read was cancelled".into()));
                    }
                    let result = f(conn);
                    task_interrupt.end();
                    result
                }
                None => Err(StoreError::Internal("embedded reader missing".into())),
            }
        });
        let timeout_ms = self.inner.read_timeout_ms.load(Ordering::Relaxed);
        let joined = if timeout_ms == 0 {
            (&mut task).await
        } else {
            match tokio::time::timeout(Duration::from_millis(timeout_ms), &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    interrupt.cancel();
                    (&mut task).await
                }
            }
        };
        let result = joined.map_err(worker).and_then(|r| r);
        let result = match result {
            // Whatever the interrupted statement reported, the cause is the deadline.
            Err(_) if interrupt.cancelled() => Err(StoreError::TimedOut(format!(
                "the read ran past {timeout_ms} ms and was interrupted; retry later"
            ))),
            other => other,
        };
        self.noticed(result)
    }
}

/// The SQL of one instance listing and its parameters, as on PostgreSQL: the external-id order
/// and prefix range from the unique (entity type, external id) index, the update order and
/// range from (entity type, updated_at, id). A state field equality has no index here (SQLite
/// indexes only named expressions): it is checked on the rows the other conditions select.
fn list_instances_sql(
    query: &InstanceQuery,
    limit_n: usize,
) -> Result<(String, Vec<rusqlite::types::Value>), StoreError> {
    use rusqlite::types::Value as V;
    let mut values = vec![V::Text(rows::id(query.entity_type_id))];
    fn next(values: &mut Vec<V>, v: V) -> String {
        values.push(v);
        format!("?{}", values.len())
    }
    let mut cond = vec![
        "i.entity_type_id = ?1".to_string(),
        "i.erased = 0".to_string(),
    ];
    if !query.include_archived {
        cond.push("i.archived = 0".into());
    }
    if let Some(prefix) = &query.external_id_prefix {
        let p = next(&mut values, V::Text(prefix.clone()));
        cond.push(format!("i.external_id >= {p}"));
        match crate::domain::prefix_successor(prefix) {
            Some(end) => {
                let e = next(&mut values, V::Text(end));
                cond.push(format!("i.external_id < {e}"));
            }
            None => cond.push(format!("substr(i.external_id, 1, length({p})) = {p}")),
        }
    }
    if let Some(t) = query.updated_since {
        let p = next(&mut values, V::Integer(rows::micros(t)));
        cond.push(format!("i.updated_at >= {p}"));
    }
    if let Some(t) = query.updated_before {
        let p = next(&mut values, V::Integer(rows::micros(t)));
        cond.push(format!("i.updated_at < {p}"));
    }
    if let Some((path, value)) = &query.state_equals {
        let mut expr = "i.state".to_string();
        for step in path {
            let p = match step {
                // A quoted label: SQLite reads a bare text label as a path (`a.b` is two steps).
                PathStep::Key(k) => next(&mut values, V::Text(format!("$.\"{k}\""))),
                PathStep::Index(n) => next(&mut values, V::Integer(i64::from(*n))),
            };
            expr = format!("({expr} -> {p})");
        }
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Internal(format!("a JSON value: {e}")))?;
        let v = next(&mut values, V::Text(text));
        cond.push(format!("{expr} = json({v})"));
    }
    let order = match query.order {
        InstanceOrder::ExternalId => {
            if let Some(InstanceCursor::ExternalId(a)) = &query.after {
                let p = next(&mut values, V::Text(a.clone()));
                cond.push(format!("i.external_id > {p}"));
            }
            "i.external_id"
        }
        InstanceOrder::RecentlyUpdated => {
            if let Some(InstanceCursor::Updated(t, id)) = &query.after {
                let p = next(&mut values, V::Integer(rows::micros(*t)));
                let q = next(&mut values, V::Text(rows::id(*id)));
                cond.push(format!("(i.updated_at, i.id) < ({p}, {q})"));
            }
            "i.updated_at DESC, i.id DESC"
        }
    };
    let l = next(&mut values, V::Integer(limit(limit_n)));
    let columns = if query.without_state {
        rows::INSTANCE_COLUMNS.replace("i.state", "'{}'")
    } else {
        rows::INSTANCE_COLUMNS.to_string()
    };
    Ok((
        format!(
            "SELECT {columns} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
             WHERE {} ORDER BY {order} LIMIT {l}",
            cond.join(" AND ")
        ),
        values,
    ))
}

/// Writes a new instance and its version 1 in `tx` (not committed): the entity type's name, the
/// time it was created at and its event's global position (one more than the highest: the
/// writer is the only one). [`StoreError::AlreadyExists`] when the external id is taken.
fn insert_created(
    tx: &Connection,
    new: &NewInstance,
    interval: i64,
) -> Result<(String, chrono::DateTime<Utc>, i64), StoreError> {
    let type_id = rows::id(new.entity_type_id);
    let (type_name, schema_version): (String, i64) = tx
        .prepare_cached("SELECT name, schema_version FROM entity_types WHERE id = ?1")
        .map_err(sql)?
        .query_row([&type_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql)?
        .ok_or_else(|| StoreError::NotFound(format!("entity type {}", new.entity_type_id)))?;
    if schema_version != new.schema_version {
        return Err(StoreError::Rejected(DomainError::StaleSchema {
            entity_type: type_name,
            decided: new.schema_version,
            current: schema_version,
        }));
    }
    let now = now_micros();
    let at = rows::time(now, "created_at")?;
    let id = rows::id(new.id);
    let state = rows::json(&new.initial_state)?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO instances (id, entity_type_id, external_id, state, version, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
        )
        .map_err(sql)?
        .execute(params![id, type_id, new.external_id, state, now])
        .map_err(EmbeddedError::from);
    match inserted {
        Ok(_) => {}
        Err(e)
            if e.unique_violation() == Some("instances.entity_type_id, instances.external_id") =>
        {
            return Err(StoreError::AlreadyExists(format!(
                "instance with external_id {:?} of entity type {type_name:?}",
                new.external_id
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let position = tx
        .prepare_cached(
            "INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, \
             payload, metadata, mode, recorded_at, occurred_at, recorded_by, schema_version, \
             position) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, \
             (SELECT IFNULL(MAX(position), 0) + 1 FROM events)) RETURNING position",
        )
        .map_err(sql)?
        .query_row(
            params![
                id,
                new.event_id,
                type_id,
                EventType::INSTANCE_CREATED,
                state,
                rows::json(&new.metadata)?,
                ApplyMode::Replace.as_str(),
                now,
                new.recorded_by,
                new.schema_version,
            ],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql)?;
    tx.prepare_cached(
        "INSERT INTO event_ids (event_id, instance_id, version, content_hash) \
         VALUES (?1, ?2, 1, ?3)",
    )
    .map_err(sql)?
    .execute(params![new.event_id, id, new.content_hash])
    .map_err(sql)?;
    if 1 % interval == 0 {
        tx.prepare_cached("INSERT INTO snapshots (instance_id, version, state) VALUES (?1, 1, ?2)")
            .map_err(sql)?
            .execute(params![id, state])
            .map_err(sql)?;
    }
    Ok((type_name, at, position))
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Catalog for EmbeddedStore {
    async fn get_entity_type(&self, key: &TypeKey) -> Result<EntityTypeRecord, StoreError> {
        let (column, value, what) = match key {
            TypeKey::Id(id) => ("id", rows::id(*id), format!("entity type {id}")),
            TypeKey::Name(name) => ("name", name.clone(), format!("entity type {name:?}")),
        };
        self.read(move |conn| {
            let sql_text = format!(
                "SELECT {} FROM entity_types WHERE {column} = ?1",
                rows::ENTITY_TYPE_COLUMNS
            );
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = rows::collect(stmt.query([value]).map_err(sql)?, rows::entity_type)?;
            found.into_iter().next().ok_or(StoreError::NotFound(what))
        })
        .await
    }

    async fn list_entity_types(
        &self,
        after_name: Option<&str>,
        limit_n: usize,
    ) -> Result<Vec<EntityTypeRecord>, StoreError> {
        let after = after_name.map(str::to_string);
        self.read(move |conn| {
            // Without the cursor in the SQL when there is none, so a cursor is a range seek.
            let sql_text = format!(
                "SELECT {} FROM entity_types WHERE {} ORDER BY name LIMIT ?2",
                rows::ENTITY_TYPE_COLUMNS,
                if after.is_some() {
                    "name > ?1"
                } else {
                    "?1 IS NULL"
                }
            );
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt.query(params![after, limit(limit_n)]).map_err(sql)?;
            Ok(rows::collect(found, rows::entity_type)?)
        })
        .await
    }

    async fn get_instance(&self, id: Uuid) -> Result<InstanceRecord, StoreError> {
        self.read(move |conn| {
            let sql_text = format!(
                "SELECT {} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
                 WHERE i.id = ?1",
                rows::INSTANCE_COLUMNS
            );
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = rows::collect(stmt.query([rows::id(id)]).map_err(sql)?, rows::instance)?;
            found
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))
        })
        .await
    }

    async fn find_instance(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<InstanceRecord, StoreError> {
        let external_id = external_id.to_string();
        self.read(move |conn| {
            let sql_text = format!(
                "SELECT {} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
                 WHERE i.entity_type_id = ?1 AND i.external_id = ?2",
                rows::INSTANCE_COLUMNS
            );
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt
                .query(params![rows::id(entity_type_id), external_id])
                .map_err(sql)?;
            rows::collect(found, rows::instance)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    StoreError::NotFound(format!("instance with external_id {external_id:?}"))
                })
        })
        .await
    }

    #[instrument(skip(self, query), fields(entity_type_id = %query.entity_type_id))]
    async fn list_instances(
        &self,
        query: &InstanceQuery,
        limit_n: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let (sql_text, values) = list_instances_sql(query, limit_n)?;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
            let found = stmt
                .query(rusqlite::params_from_iter(values.iter()))
                .map_err(sql)?;
            Ok(rows::collect(found, rows::instance)?)
        })
        .await
    }

    async fn instance_type(&self, instance_id: Uuid) -> Result<Uuid, StoreError> {
        let text: String = self
            .read(move |conn| {
                conn.prepare_cached("SELECT entity_type_id FROM instances WHERE id = ?1")
                    .map_err(sql)?
                    .query_row([rows::id(instance_id)], |r| r.get(0))
                    .optional()
                    .map_err(sql)?
                    .ok_or_else(|| StoreError::NotFound(format!("instance {instance_id}")))
            })
            .await?;
        Ok(rows::uuid(&text, "entity type id")?)
    }

    async fn schema_versions(
        &self,
        entity_type_id: Uuid,
    ) -> Result<Vec<SchemaVersionRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT version, schema, created_at, declarations FROM entity_type_schemas \
                     WHERE entity_type_id = ?1 ORDER BY version",
                )
                .map_err(sql)?;
            let found = stmt.query([rows::id(entity_type_id)]).map_err(sql)?;
            Ok(rows::collect(found, |r| {
                Ok(SchemaVersionRecord {
                    version: r.get(0)?,
                    schema: rows::object(&r.get::<_, String>(1)?, "schema")?,
                    created_at: rows::time(r.get(2)?, "created_at")?,
                    declarations: r
                        .get::<_, Option<String>>(3)?
                        .map(|d| rows::object(&d, "declarations"))
                        .transpose()?,
                })
            })?)
        })
        .await
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.damaged.load(Ordering::Relaxed) {
            return Err(self.damage("a statement found it damaged earlier"));
        }
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(sql)?;
            Ok(())
        })
        .await
    }

    #[instrument(skip(self, schema, description, declarations))]
    async fn create_entity_type(
        &self,
        id: Uuid,
        name: &str,
        description: &str,
        schema: &State,
        declarations: Option<&State>,
    ) -> Result<EntityTypeRecord, StoreError> {
        let record = EntityTypeRecord {
            id,
            name: name.to_string(),
            description: description.to_string(),
            schema: schema.clone(),
            created_at: rows::time(now_micros(), "created_at")?,
            schema_version: 1,
            declarations: declarations.cloned(),
        };
        let schema_text = rows::json(schema)?;
        let declarations_text = declarations.map(rows::json).transpose()?;
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO entity_types (id, name, description, schema, created_at, \
                     declarations) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?
                .execute(params![
                    rows::id(record.id),
                    record.name,
                    record.description,
                    schema_text,
                    rows::micros(record.created_at),
                    declarations_text,
                ]);
            match inserted.map_err(EmbeddedError::from) {
                Ok(_) => {}
                Err(e) if e.unique_violation() == Some("entity_types.name") => {
                    return Err(StoreError::AlreadyExists(format!(
                        "entity type {:?}",
                        record.name
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            tx.prepare_cached(
                "INSERT INTO entity_type_schemas (entity_type_id, version, schema, created_at, \
                 declarations) \
                 SELECT id, 1, schema, created_at, declarations FROM entity_types WHERE id = ?1",
            )
            .map_err(sql)?
            .execute([rows::id(record.id)])
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(record)
        })
        .await
    }

    #[instrument(skip(self, update, check), fields(entity_type_id = %update.entity_type_id))]
    async fn update_entity_type(
        &self,
        update: TypeUpdate,
        check: StateCheck,
    ) -> Result<TypeUpdateOutcome, StoreError> {
        // On the writer connection: appends and creations wait until this ends, so the states
        // checked are all there are. The rows stream from SQLite one at a time.
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let type_id = rows::id(update.entity_type_id);
            let select = format!(
                "SELECT {} FROM entity_types WHERE id = ?1",
                rows::ENTITY_TYPE_COLUMNS
            );
            let current = tx
                .prepare_cached(&select)
                .map_err(sql)?
                .query_row([&type_id], |r| Ok(rows::entity_type(r)))
                .optional()
                .map_err(sql)?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("entity type {}", update.entity_type_id))
                })??;
            if let Some(expected) = update.expected_schema_version
                && expected != current.schema_version
            {
                return Err(StoreError::SchemaConflict {
                    expected,
                    current: current.schema_version,
                });
            }
            let mut outcome = TypeUpdateOutcome {
                record: current.clone(),
                applied: false,
                checked: 0,
                invalid: 0,
                violations: Vec::new(),
            };
            if update.schema.is_some() {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, external_id, version, state FROM instances \
                         WHERE entity_type_id = ?1 AND erased = 0 ORDER BY external_id",
                    )
                    .map_err(sql)?;
                let mut found = stmt.query([&type_id]).map_err(sql)?;
                while let Some(r) = found.next().map_err(sql)? {
                    outcome.checked += 1;
                    let state = rows::object(&r.get::<_, String>(3).map_err(sql)?, "state")?;
                    let violations = check(&state);
                    if violations.is_empty() {
                        continue;
                    }
                    outcome.invalid += 1;
                    if outcome.violations.len() < update.max_violations {
                        outcome.violations.push(InstanceViolation {
                            instance_id: rows::uuid(
                                &r.get::<_, String>(0).map_err(sql)?,
                                "instance id",
                            )?,
                            external_id: r.get(1).map_err(sql)?,
                            version: r.get(2).map_err(sql)?,
                            violations,
                        });
                    }
                }
            }
            let refused = outcome.invalid > 0 && update.check == SchemaCheck::Enforce;
            if update.check == SchemaCheck::DryRun || refused {
                // Rolled back when dropped: nothing changes.
                return Ok(outcome);
            }
            let mut record = current.clone();
            if let Some(schema) = update.schema {
                record.schema = schema;
                record.schema_version += 1;
                // The new version declares what the update says, or carries the current
                // declarations over.
                if let Some(declared) = update.declarations {
                    record.declarations = declared;
                }
                tx.prepare_cached(
                    "INSERT INTO entity_type_schemas (entity_type_id, version, schema, \
                     created_at, declarations) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql)?
                .execute(params![
                    type_id,
                    record.schema_version,
                    rows::json(&record.schema)?,
                    now_micros(),
                    record.declarations.as_ref().map(rows::json).transpose()?,
                ])
                .map_err(sql)?;
            }
            if let Some(description) = update.description {
                record.description = description;
            }
            tx.prepare_cached(
                "UPDATE entity_types SET description = ?2, schema = ?3, schema_version = ?4, \
                 declarations = ?5 WHERE id = ?1",
            )
            .map_err(sql)?
            .execute(params![
                type_id,
                record.description,
                rows::json(&record.schema)?,
                record.schema_version,
                record.declarations.as_ref().map(rows::json).transpose()?,
            ])
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            outcome.record = record;
            outcome.applied = true;
            Ok(outcome)
        })
        .await
    }

    #[instrument(skip(self))]
    async fn delete_entity_type(&self, entity_type_id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let type_id = rows::id(entity_type_id);
            let (exists, has_instances): (bool, bool) = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM entity_types WHERE id = ?1), \
                     EXISTS (SELECT 1 FROM instances WHERE entity_type_id = ?1)",
                    [&type_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql)?;
            if !exists {
                return Err(StoreError::NotFound(format!(
                    "entity type {entity_type_id}"
                )));
            }
            if has_instances {
                return Err(StoreError::Precondition(
                    "it still has instances; only a type without instances can be deleted".into(),
                ));
            }
            tx.execute(
                "DELETE FROM entity_type_schemas WHERE entity_type_id = ?1",
                [&type_id],
            )
            .map_err(sql)?;
            tx.execute("DELETE FROM entity_types WHERE id = ?1", [&type_id])
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(())
        })
        .await
    }

    #[instrument(skip(self, new), fields(instance_id = %new.id))]
    async fn create_instance(
        &self,
        new: NewInstance,
    ) -> Result<(InstanceRecord, EventRecord), StoreError> {
        let interval = self.inner.snapshot_interval;
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let (type_name, at, position) = insert_created(&tx, &new, interval)?;
            tx.commit().map_err(sql)?;
            let (instance, mut event) = append_plan::created_records(new, type_name, at);
            event.position = position;
            Ok((instance, event))
        })
        .await
    }

    #[instrument(skip(self, request, decide), fields(instance_id = %request.instance_id))]
    async fn append(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        // The writer thread takes every append queued with this one: one transaction and one
        // fsync for all of them, decisions and retries included.
        self.send(WriterJob::Append(PendingAppend {
            request,
            decide,
            reply,
        }))?;
        let outcome = answer.await.unwrap_or_else(|_| Err(writer_gone()));
        self.noticed(outcome)
    }

    #[instrument(skip(self, new, request, decide), fields(instance_id = %new.id))]
    async fn create_and_append(
        &self,
        new: NewInstance,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<(Option<EventRecord>, AppendOutcome), StoreError> {
        let interval = self.inner.snapshot_interval;
        // On the writer, so it is serialized with every append and creation: a creator racing
        // it either sees the instance, or is seen by it (and then answers AlreadyExists).
        self.write(move |conn| {
            let mut created = None;
            let outcome = append_plan::with_attempts_blocking(|_| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let (type_name, at, position) = insert_created(&tx, &new, interval)?;
                let attempt = super::append::append_in(&tx, &request, interval, &decide, false)?;
                if matches!(
                    attempt,
                    append_plan::Attempt::Done(AppendOutcome::Appended { .. })
                ) {
                    tx.commit().map_err(sql)?;
                    let mut event = append_plan::created_records(new.clone(), type_name, at).1;
                    event.position = position;
                    created = Some(event);
                }
                // Anything else: dropping `tx` rolls the creation back too.
                Ok(attempt)
            })?;
            Ok((created, outcome))
        })
        .await
    }

    #[instrument(skip(self, request, decide), fields(instance_id = %request.instance_id))]
    async fn erase_instance(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        let interval = self.inner.snapshot_interval;
        // On the writer, which serializes it with every append: those after it see it erased.
        self.write(move |conn| {
            let outcome = append_plan::with_attempts_blocking(|_| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let attempt = super::append::append_in(&tx, &request, interval, &decide, true)?;
                if matches!(
                    attempt,
                    append_plan::Attempt::Done(AppendOutcome::Appended { .. })
                ) {
                    tx.commit().map_err(sql)?;
                }
                Ok(attempt)
            })?;
            // The WAL still holds the pages as they were before: copy the erased pages into
            // the database file and empty the WAL. A reader in the middle of a read keeps its
            // frames (the checkpoint cannot take them); the next checkpoint does.
            let (busy, _, _): (i64, i64, i64) = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(sql)?;
            if busy != 0 {
                tracing::warn!(
                    "the write-ahead log could not be emptied after an erasure (a read was running); the next checkpoint overwrites it"
                );
            }
            Ok(outcome)
        })
        .await
    }
}

#[cfg(test)]
mod durability_tests {
    use super::*;

    fn pragmas(conn: &mut Connection) -> Result<(i64, String), StoreError> {
        let synchronous = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(sql)?;
        let journal = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(sql)?;
        Ok((synchronous, journal))
    }

    /// The README's durability promise, read back from the connections the store writes and
    /// reads with (the pragma is per connection, so another connection to the file proves
    /// nothing): `synchronous=FULL` (2) and write-ahead logging.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_writes_and_reads_with_synchronous_full_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.write(pragmas).await.unwrap(), (2, "wal".into()));
        for _ in 0..=READERS {
            assert_eq!(store.read(pragmas).await.unwrap(), (2, "wal".into()));
        }
    }
}

#[cfg(test)]
mod read_interrupt_tests {
    use super::*;

    /// A read that never ends on its own.
    fn endless(conn: &mut Connection) -> Result<i64, StoreError> {
        conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            [],
            |r| r.get(0),
        )
        .map_err(sql)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_past_its_timeout_is_interrupted_and_frees_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100)
            .unwrap()
            .with_read_timeout(Duration::from_millis(200));
        // More endless reads than connections: each must be interrupted for the next to run.
        for _ in 0..=READERS {
            match store.read(endless).await {
                Err(StoreError::TimedOut(m)) => assert!(m.contains("interrupted"), "{m}"),
                other => panic!("expected UNAVAILABLE, got {other:?}"),
            }
        }
        store.ping().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_whose_caller_goes_away_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        // No timeout: only the caller going away can end these reads.
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        for _ in 0..READERS {
            let s = store.clone();
            let reading = tokio::spawn(async move { s.read(endless).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            reading.abort();
            assert!(reading.await.unwrap_err().is_cancelled());
        }
        // Had any endless read kept its connection, every connection would be taken.
        tokio::time::timeout(Duration::from_secs(30), store.ping())
            .await
            .expect("the abandoned reads freed their connections")
            .unwrap();
    }
}
