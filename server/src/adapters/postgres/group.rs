//! The append's hot path on PostgreSQL: the heads this server knows, and group commit.
//!
//! - [`HeadCache`]: the current state and version of instances this server wrote or read,
//!   bounded by their measured size. It is read and written only under the instance's
//!   per-instance lock, so while this server is the only writer it is exact, and an append needs
//!   no `SELECT ... FOR UPDATE`. It is never trusted for correctness: the append's statement
//!   moves the head with a compare-and-set on the version it was decided on, so when another
//!   replica wrote first nothing is stored, and the store reads the head again and decides again.
//! - [`GroupCommit`]: one committer task. Every append waiting when it starts goes into one
//!   statement ([`GROUP_APPEND_SQL`]), committed once, in one round trip. The next batch starts
//!   as soon as that statement returns, never on a timer, so a lone writer pays no added
//!   latency; an append that finds nothing in flight commits itself, on its own task, as a
//!   batch of one (no hand-off to the committer and back). Each append's head move is its own
//!   compare-and-set, and the events, ids, snapshots and outbox rows of an append are written
//!   only if its head moved: a conflict fails that append alone; a row another transaction
//!   holds is skipped, not waited for. A statement-level failure (a unique violation from a
//!   racing idempotency key) runs the batch's appends again one by one, so it too fails only
//!   its own append.
//!   The statement numbers its events itself (`position.rs`): once every head has moved and
//!   every id is claimed it takes the position lock, then inserts the events with their
//!   positions, so each event row is written once. One round trip: with `DB_POOL_SIZE` of 6
//!   or more, two of the connections are the group's own ([`GroupConns::Own`]), set up for
//!   its statement once ([`GROUP_SESSION_SQL`]), and the statement is its own transaction (no
//!   BEGIN, no COMMIT); below that it shares the pool, and BEGIN with its settings, the
//!   statement and COMMIT go out together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::PgError;
use super::store::AppendParams;
use crate::domain::State;
use crate::domain::limits::measure_object;
use crate::ports::{Head, StoreError};

/// A head as this server last wrote or read it.
#[derive(Debug, Clone)]
pub(super) struct CachedHead {
    pub entity_type_id: Uuid,
    pub version: i64,
    pub state: State,
    pub updated_at: DateTime<Utc>,
    /// The type's schema version as last read or written; the append's statement checks it.
    pub schema_version: i64,
    /// Whether the instance is archived (an archive or restore moves the version too, so the
    /// compare-and-set catches a stale flag).
    pub archived: bool,
    /// Whether the instance is erased (an erasure forgets the cached head; a head read since
    /// says so, and every decision on it refuses).
    pub erased: bool,
}

impl CachedHead {
    pub fn head(&self, snapshot_interval: i64) -> Head {
        Head {
            entity_type_id: self.entity_type_id,
            version: self.version,
            state: self.state.clone(),
            snapshot_interval,
            schema_version: self.schema_version,
            archived: self.archived,
            erased: self.erased,
        }
    }
}

/// Heads by instance, at most `budget` bytes of them (the states' JSON size plus a fixed
/// overhead per entry). When full, entries are dropped until a quarter of the budget is free;
/// a dropped head costs one read at the instance's next append, nothing else.
pub(super) struct HeadCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    heads: HashMap<Uuid, (CachedHead, usize)>,
    bytes: usize,
}

/// What an entry costs beyond its state's JSON: the key, the map slot, the record.
const ENTRY_OVERHEAD: usize = 160;

impl HeadCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, instance_id: Uuid) -> Option<CachedHead> {
        self.lock().heads.get(&instance_id).map(|(h, _)| h.clone())
    }

    pub fn put(&self, instance_id: Uuid, head: CachedHead) {
        let size = measure_object(&head.state).bytes + ENTRY_OVERHEAD;
        if size > self.budget / 4 {
            self.forget(instance_id);
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.heads.insert(instance_id, (head, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        if inner.bytes > self.budget {
            let target = self.budget - self.budget / 4;
            let mut dropped = Vec::new();
            let mut bytes = inner.bytes;
            for (id, (_, size)) in &inner.heads {
                if bytes <= target {
                    break;
                }
                if *id != instance_id {
                    dropped.push(*id);
                    bytes -= size;
                }
            }
            for id in dropped {
                if let Some((_, size)) = inner.heads.remove(&id) {
                    inner.bytes -= size;
                }
            }
        }
    }

    pub fn forget(&self, instance_id: Uuid) {
        let mut inner = self.lock();
        if let Some((_, size)) = inner.heads.remove(&instance_id) {
            inner.bytes -= size;
        }
    }

    /// Bytes held, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Appends of several instances in one statement, each moving its own head with a
/// compare-and-set; an append's rows are written only when its head moved. Returns the ids of
/// the instances whose head moved.
///
/// A head whose row another transaction holds locked (another replica's batch, an operator)
/// is skipped, not waited for: one busy row never holds up the batch's other appends. Its
/// append is answered like a lost compare-and-set, decides again, and after a few tries takes
/// the locked path, which waits for that row alone. Never waiting for a row lock also means
/// two replicas' batches cannot deadlock.
///
/// Parameters: per append $1 instance id, $2 the version decided on, $3 the new version,
/// $4 the new state, $5 recorded_at, $6 recorded_by, $7 whether the outbox is written; per
/// event $8 instance id, $9 version, $10 event id, $11 event type, $12 payload, $13 metadata,
/// $14 mode, $15 occurred_at, $16 content hash; per snapshot $17 instance id, $18 version,
/// $19 state; per append $20 the schema version its decision validated against: its head moves
/// only while its type is still at that version, with the type's row share-locked (a schema
/// change holds it exclusively while it checks every state, so the append is skipped and
/// decided again); $21 the archived flag the head moves to (NULL keeps it). Outbox rows are
/// inserted in (instance, version) order, so their ids grow with the version within an
/// instance, as the relay's per-instance order needs.
pub const GROUP_APPEND_SQL: &str = "
WITH u AS (
    SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::jsonb[],
                         $5::timestamptz[], $6::text[], $7::bool[], $20::bigint[], $21::bool[])
        AS u(id, fv, lv, st, ra, rb, ob, sv, ar)
), l AS MATERIALIZED (
    -- Each head by its primary key: a sub-select with a locking clause is never flattened, so
    -- no plan can reach the heads through another index (on stale statistics the planner
    -- preferred scanning every instance of the type, once per append).
    SELECT i.id FROM u
    CROSS JOIN LATERAL (
        SELECT i.id, i.entity_type_id FROM instances i
        WHERE i.id = u.id AND i.version = u.fv
        FOR UPDATE SKIP LOCKED
    ) i
    CROSS JOIN LATERAL (
        SELECT 1 FROM entity_types t
        WHERE t.id = i.entity_type_id AND t.schema_version = u.sv
        FOR KEY SHARE SKIP LOCKED
    ) t
), h AS (
    UPDATE instances i SET version = u.lv, state = u.st, updated_at = u.ra,
                           archived = COALESCE(u.ar, i.archived)
    FROM u JOIN l ON l.id = u.id
    WHERE i.id = u.id AND i.version = u.fv
    RETURNING i.id, i.entity_type_id, u.ra, u.rb, u.ob, u.sv
), e AS (
    SELECT * FROM UNNEST($8::uuid[], $9::bigint[], $10::text[], $11::text[], $12::jsonb[],
                         $13::jsonb[], $14::text[], $15::timestamptz[], $16::bytea[])
        AS e(iid, v, eid, et, p, m, md, oa, hsh)
), k AS (
    INSERT INTO event_ids (event_id, instance_id, version, content_hash)
    SELECT e.eid, e.iid, e.v, e.hsh FROM e JOIN h ON h.id = e.iid
    RETURNING 1
), lk AS MATERIALIZED (
    -- The position lock, taken once every head has moved and every id is claimed (the counts
    -- read both to the end first): from here to COMMIT this transaction waits for no other.
    SELECT pg_advisory_xact_lock($22) FROM (SELECT count(*) FROM h) hc, (SELECT count(*) FROM k) kc
), ev AS (
    INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, payload,
                        metadata, mode, recorded_at, occurred_at, recorded_by, schema_version,
                        position)
    SELECT x.iid, x.v, x.eid, x.entity_type_id, x.et, x.p, x.m, x.md, x.ra, x.oa, x.rb, x.sv,
           nextval('events_position_seq')
    FROM (SELECT e.*, h.entity_type_id, h.ra, h.rb, h.sv FROM e JOIN h ON h.id = e.iid
          ORDER BY e.iid, e.v OFFSET 0) x
    CROSS JOIN lk
    RETURNING instance_id, version, position
), s AS (
    INSERT INTO snapshots (instance_id, version, state)
    SELECT x.iid, x.v, x.st FROM UNNEST($17::uuid[], $18::bigint[], $19::jsonb[]) AS x(iid, v, st)
    JOIN h ON h.id = x.iid
), o AS (
    INSERT INTO outbox (instance_id, version)
    SELECT e.iid, e.v FROM e JOIN h ON h.id = e.iid WHERE h.ob ORDER BY e.iid, e.v
)
SELECT instance_id, version, position FROM ev";

/// The group statement's settings, with `SET` or `SET LOCAL`.
macro_rules! group_settings {
    ($set:literal) => {
        concat!(
            $set,
            " plan_cache_mode = force_generic_plan; ",
            $set,
            " enable_seqscan = off"
        )
    };
}

/// Sets up each connection of the group's pool, once, when it is opened. The statement's plan
/// is the generic one, planned once and reused (a custom plan of this statement costs more to
/// plan than to run), and it reaches every table through an index: the statement only ever
/// touches the rows of its own appends, and on a small table or stale statistics the planner
/// would otherwise scan the whole `instances` table once per batch. Session settings, on
/// connections nothing else uses, so that the statement needs no transaction block of its own
/// to carry them: setting them per transaction (`BEGIN; SET LOCAL ...` before, `COMMIT` after,
/// pipelined) cost about 45 µs of each append's 690 µs round trip at one client.
pub const GROUP_SESSION_SQL: &str = group_settings!("SET");

/// The same settings for one transaction, on a connection of the shared pool.
const GROUP_BEGIN_SQL: &str = concat!("BEGIN; ", group_settings!("SET LOCAL"));

/// Connections of the group's own pool: the committer's, and a lone append's committing itself
/// (the two can overlap for a moment).
const GROUP_POOL_SIZE: usize = 2;

/// Splits `DB_POOL_SIZE` between the shared pool and the group's own: from 6 connections up
/// the group keeps two of them, so the setting stays the most connections a
/// server opens and the shared pool keeps at least 4 (reads, heads, the locked path, the
/// relay's lease); below that the group shares the pool. Returns (shared, own).
pub fn split_pool(total: usize) -> (usize, usize) {
    if total >= 3 * GROUP_POOL_SIZE {
        (total - GROUP_POOL_SIZE, GROUP_POOL_SIZE)
    } else {
        (total, 0)
    }
}

/// Where the group statement runs.
#[derive(Clone)]
pub(super) enum GroupConns {
    /// The group's own connections, set up by [`session_hook`]: the statement alone.
    Own(Pool),
    /// Connections shared with everything else: the statement in a transaction block that
    /// carries the settings ([`GROUP_BEGIN_SQL`] ... `COMMIT`).
    Shared(Pool),
}

impl GroupConns {
    fn pool(&self) -> &Pool {
        match self {
            Self::Own(pool) | Self::Shared(pool) => pool,
        }
    }
}

/// The group pool's `post_create` hook: [`GROUP_SESSION_SQL`] on every new connection. Nothing
/// resets a session when a connection goes back to the pool (fast recycling), so the settings
/// stay for the connection's life.
pub(super) fn session_hook() -> deadpool_postgres::Hook {
    deadpool_postgres::Hook::async_fn(|client, _| {
        Box::pin(async move {
            client
                .batch_execute(GROUP_SESSION_SQL)
                .await
                .map_err(deadpool_postgres::HookError::Backend)
        })
    })
}

/// Most appends in one batch, and most events: bounds the statement's size and the time the
/// batch holds its row locks.
const MAX_BATCH_APPENDS: usize = 256;
const MAX_BATCH_EVENTS: usize = 4096;

/// Why a submitted append did not move its head.
#[derive(Debug)]
pub(super) enum Submitted {
    /// Committed: the head moved; the global positions of its events as (version, position).
    Moved(Vec<(i64, i64)>),
    /// Nothing stored: the head was not at the version the append was decided on (another
    /// replica wrote first), or another transaction held its row.
    Stale,
    /// Nothing stored: one of its event ids was claimed concurrently.
    KeyTaken,
}

struct Job {
    params: AppendParams,
    reply: oneshot::Sender<Result<Submitted, StoreError>>,
}

/// The committer: started on the first append (the store is built outside the runtime too).
pub(super) struct GroupCommit {
    /// Where its statements run.
    conns: GroupConns,
    sender: OnceLock<mpsc::UnboundedSender<Job>>,
    /// Appends being committed right now, by the committer or by a caller itself.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one commit in flight for as long as it lives (a dropped caller included).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GroupCommit {
    pub fn new(conns: GroupConns) -> Self {
        Self {
            conns,
            sender: OnceLock::new(),
            in_flight: Arc::default(),
        }
    }

    /// Submits one append (whose instance the caller keeps locked until this returns) and waits
    /// for the batch it joined to commit.
    ///
    /// When nothing is being committed, the append commits itself, on its own task, as a batch
    /// of one: the same statement and the same answers, without the two hand-offs to the
    /// committer task and back (a lone writer's latency). As soon as another append arrives
    /// while one is in flight, it queues for the committer, which batches whatever waits.
    pub async fn submit(&self, params: AppendParams) -> Result<Submitted, StoreError> {
        if self
            .in_flight
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _in_flight = InFlight(self.in_flight.clone());
            metrics::histogram!(crate::app::metrics::GROUP_COMMIT_APPENDS).record(1.0);
            let outcome = execute(&self.conns, &[&params]).await;
            return single(&params, outcome);
        }
        let in_flight = self.in_flight.clone();
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(committer(self.conns.clone(), rx, in_flight));
            tx
        });
        let (reply, answer) = oneshot::channel();
        sender
            .send(Job { params, reply })
            .map_err(|_| StoreError::Internal("the group committer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the group committer dropped an append".into()))?
    }
}

/// Takes every append waiting (up to the bounds), commits them in one statement, answers each,
/// and starts again. Ends when the store is dropped.
async fn committer(
    conns: GroupConns,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut events = first.params.event_count();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_APPENDS {
            let Ok(job) = jobs.try_recv() else { break };
            // Two appends of one batch claiming the same event id would fail the whole
            // statement: the second waits for the next batch, where it finds the id recorded.
            let clash = job
                .params
                .event_ids
                .iter()
                .any(|id| batch.iter().any(|b| b.params.event_ids.contains(id)));
            if clash || events + job.params.event_count() > MAX_BATCH_EVENTS {
                carried = Some(job);
                break;
            }
            events += job.params.event_count();
            batch.push(job);
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(in_flight.clone());
        commit_batch(&conns, batch).await;
    }
}

async fn commit_batch(conns: &GroupConns, mut batch: Vec<Job>) {
    // Rows in one order for every batch (the statement never waits for a row lock, so this
    // only makes the plans alike).
    batch.sort_by_key(|j| j.params.instance_id);
    metrics::histogram!(crate::app::metrics::GROUP_COMMIT_APPENDS).record(batch.len() as f64);
    let params: Vec<&AppendParams> = batch.iter().map(|j| &j.params).collect();
    match execute(conns, &params).await {
        Ok((moved, drawn)) => {
            for job in batch {
                let outcome = if moved.contains(&job.params.instance_id) {
                    Submitted::Moved(super::position::of(&drawn, job.params.instance_id))
                } else {
                    Submitted::Stale
                };
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.pop() {
                let _ = job.reply.send(single(&job.params, Err(e)));
            }
        }
        Err(e) if statement_failed(&e) => {
            tracing::debug!(appends = batch.len(), error = %e, "group append failed, running its appends one by one");
            for job in batch {
                let outcome = execute(conns, &[&job.params]).await;
                let _ = job.reply.send(single(&job.params, outcome));
            }
        }
        Err(e) => {
            let error = StoreError::from(e);
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Whether the statement itself was refused (a constraint, a deadlock), as opposed to the
/// connection failing: only then can its appends succeed on their own.
fn statement_failed(e: &PgError) -> bool {
    matches!(e, PgError::Db(db) if db.as_db_error().is_some_and(|d| {
        let code = d.code().code();
        code.starts_with("23") || code.starts_with("22") || code == "40P01" || code == "40001"
    }))
}

fn single(
    params: &AppendParams,
    outcome: Result<(Vec<Uuid>, super::position::Drawn), PgError>,
) -> Result<Submitted, StoreError> {
    match outcome {
        Ok((moved, drawn)) if moved.contains(&params.instance_id) => Ok(Submitted::Moved(
            super::position::of(&drawn, params.instance_id),
        )),
        Ok(_) => Ok(Submitted::Stale),
        Err(e) if e.unique_violation() == Some("event_ids_pkey") => Ok(Submitted::KeyTaken),
        Err(e) => Err(e.into()),
    }
}

/// Runs [`GROUP_APPEND_SQL`] for `appends` in one transaction that ends with the position draw.
/// Returns the instances whose head moved and the positions drawn.
async fn execute(
    conns: &GroupConns,
    appends: &[&AppendParams],
) -> Result<(Vec<Uuid>, super::position::Drawn), PgError> {
    let mut ids = Vec::with_capacity(appends.len());
    let mut from = Vec::with_capacity(appends.len());
    let mut last = Vec::with_capacity(appends.len());
    let mut states: Vec<&Value> = Vec::with_capacity(appends.len());
    let mut recorded_at = Vec::with_capacity(appends.len());
    let mut recorded_by: Vec<&str> = Vec::with_capacity(appends.len());
    let mut outbox = Vec::with_capacity(appends.len());
    let mut schema_versions = Vec::with_capacity(appends.len());
    let mut archived: Vec<Option<bool>> = Vec::with_capacity(appends.len());
    let mut e_ids = Vec::new();
    let mut e_versions: Vec<i64> = Vec::new();
    let mut e_event_ids: Vec<&str> = Vec::new();
    let mut e_types: Vec<&str> = Vec::new();
    let mut e_payloads: Vec<&Value> = Vec::new();
    let mut e_metadata: Vec<&Value> = Vec::new();
    let mut e_modes: Vec<&str> = Vec::new();
    let mut e_occurred: Vec<DateTime<Utc>> = Vec::new();
    let mut e_hashes: Vec<&[u8]> = Vec::new();
    let mut s_ids = Vec::new();
    let mut s_versions: Vec<i64> = Vec::new();
    let mut s_states: Vec<&Value> = Vec::new();
    for a in appends {
        ids.push(a.instance_id);
        from.push(a.from_version);
        last.push(a.last_version);
        states.push(&a.state);
        recorded_at.push(a.recorded_at);
        recorded_by.push(&a.recorded_by);
        outbox.push(a.outbox);
        schema_versions.push(a.schema_version);
        archived.push(a.archived);
        for i in 0..a.event_count() {
            e_ids.push(a.instance_id);
            e_versions.push(a.versions[i]);
            e_event_ids.push(&a.event_ids[i]);
            e_types.push(&a.event_types[i]);
            e_payloads.push(&a.payloads[i]);
            e_metadata.push(&a.metadata[i]);
            e_modes.push(a.modes[i]);
            e_occurred.push(a.occurred_at[i]);
            e_hashes.push(&a.content_hashes[i]);
        }
        for (v, st) in a.snapshot_versions.iter().zip(&a.snapshot_states) {
            s_ids.push(a.instance_id);
            s_versions.push(*v);
            s_states.push(st);
        }
    }
    let client = conns.pool().get().await?;
    let stmt = client.prepare_cached(GROUP_APPEND_SQL).await?;
    let params: [&(dyn ToSql + Sync); 22] = [
        &ids,
        &from,
        &last,
        &states,
        &recorded_at,
        &recorded_by,
        &outbox,
        &e_ids,
        &e_versions,
        &e_event_ids,
        &e_types,
        &e_payloads,
        &e_metadata,
        &e_modes,
        &e_occurred,
        &e_hashes,
        &s_ids,
        &s_versions,
        &s_states,
        &schema_versions,
        &archived,
        &super::position::POSITION_LOCK_KEY,
    ];
    let written = match conns {
        // Outside a transaction block: the statement is its own transaction, committed (or,
        // when it fails, rolled back) as it ends.
        GroupConns::Own(_) => client.query(&stmt, &params).await?,
        // Pipelined: one round trip. If the statement fails, COMMIT ends the aborted
        // transaction as a rollback, so the connection goes back idle.
        GroupConns::Shared(_) => {
            let (begin, written, commit) = tokio::join!(
                client.batch_execute(GROUP_BEGIN_SQL),
                client.query(&stmt, &params),
                client.batch_execute("COMMIT"),
            );
            begin?;
            let written = written?;
            commit?;
            written
        }
    };
    let drawn = super::position::rows(written);
    let mut moved: Vec<Uuid> = drawn.iter().map(|(id, _, _)| *id).collect();
    moved.sort_unstable();
    moved.dedup();
    Ok((moved, drawn))
}
