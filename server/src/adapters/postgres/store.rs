//! [`PgStore`]: the pool, entity types, instances and the append on PostgreSQL; its
//! time-travel reads are in `history.rs`.

use std::slice;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tracing::instrument;
use uuid::Uuid;

use super::group::{CachedHead, GroupCommit, GroupConns, HeadCache, Submitted};
use super::{PgError, migrate, rows};
use crate::adapters::append_plan::{self, AppendPlan, Attempt};
use crate::domain::{ApplyMode, DomainError, EventType, State};
use crate::ports::{
    AppendOutcome, AppendRequest, Catalog, Decide, EntityTypeRecord, EventRecord, EventStore, Head,
    InstanceCursor, InstanceOrder, InstanceQuery, InstanceRecord, InstanceViolation, NewInstance,
    PathStep, RecordedKey, SchemaCheck, SchemaVersionRecord, StateCheck, StoreError, TypeKey,
    TypeUpdate, TypeUpdateOutcome,
};

/// How to reach and use the database.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    pub url: String,
    pub pool_size: usize,
    /// A snapshot is written at every version that is a multiple of this.
    pub snapshot_interval: i64,
    /// How long a caller waits for a connection before the store reports itself unavailable.
    pub connect_timeout: Duration,
}

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    snapshot_interval: i64,
    /// Whether the TimescaleDB extension is installed, learnt when migrating.
    timescaledb: Arc<AtomicBool>,
    timescale: super::TimescaleSettings,
    /// Whether appends also write the transactional outbox (publication enabled).
    outbox: bool,
    /// Appends to one instance queue here before they borrow a connection.
    writers: Arc<InstanceLocks>,
    /// Heads of the instances this server wrote or read, read and written under their lock.
    heads: Arc<HeadCache>,
    /// The committer every append's statement goes through.
    group: Arc<GroupCommit>,
}

/// States read per round trip while a schema change checks a type's current states.
const SCHEMA_CHECK_BATCH: i32 = 256;

/// Default bound of the head cache: states' JSON bytes plus a fixed cost per entry.
pub const HEAD_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// How often an append is decided and submitted on the unlocked path before it takes the
/// instance's row lock (`SELECT ... FOR UPDATE`) instead: when another replica keeps writing
/// the same instance first, the locked path makes sure the append ends.
const UNLOCKED_ATTEMPTS: usize = 3;

/// Striped per-instance locks for appends. Appends to one instance are serialized by its row lock
/// in any case; taking this lock first makes the others wait here, in FIFO order, instead of in
/// PostgreSQL while each holds a pooled connection: many writers on one hot instance then use one
/// connection, not the whole pool, and other instances' writes and reads keep theirs. Within
/// one server only; across servers the row lock still decides. Two instances sharing a stripe
/// only wait for each other's commit, never deadlock: an append holds one stripe at a time.
struct InstanceLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl InstanceLocks {
    /// Enough stripes that unrelated instances rarely share one, for any pool size.
    const STRIPES: usize = 1024;

    fn new() -> Self {
        Self {
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    async fn lock(&self, instance_id: Uuid) -> tokio::sync::MutexGuard<'_, ()> {
        // UUID v7 ids start with a timestamp: take the random low bits.
        let stripe = (instance_id.as_u128() as usize) % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

fn now_micros() -> DateTime<Utc> {
    // PostgreSQL keeps microseconds; truncating here keeps what we return equal to what we store.
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

impl PgStore {
    /// Builds the pool. Connections are opened lazily, so this succeeds while the database is down.
    pub fn new(config: &PgStoreConfig) -> Result<Self, PgError> {
        Self::with_statement_timeout(config, None)
    }

    /// As [`PgStore::new`], and every statement of every pooled connection is cancelled by
    /// PostgreSQL after `statement_timeout` (SQLSTATE 57014, answered UNAVAILABLE): a slow query
    /// or a wait for a row lock then frees its connection instead of holding it for as long as
    /// it takes. A `statement_timeout` already in the URL's `options` wins.
    pub fn with_statement_timeout(
        config: &PgStoreConfig,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, PgError> {
        let tls = super::tls::parse(&config.url).map_err(PgError::Config)?;
        let mut pg = tokio_postgres::Config::from_str(&tls.url)
            .map_err(|e| PgError::Config(format!("DATABASE_URL: {e}")))?;
        pg.connect_timeout(config.connect_timeout);
        if tls.check.is_none() {
            // No TLS asked for: no TLS request either (tokio-postgres's default, prefer, would
            // send one now that a TLS connector is present; some servers answer it wrongly).
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        if let Some(timeout) = statement_timeout {
            let existing = pg.get_options().unwrap_or_default().to_string();
            if !existing.contains("statement_timeout") {
                let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
                pg.options(format!("{existing} -c statement_timeout={ms}").trim());
            }
        }
        if pg.get_application_name().is_none() {
            pg.application_name("temporal-state-server");
        }
        let connector = super::tls::connector(tls.check.as_ref()).map_err(PgError::Config)?;
        let builder = |size: usize| {
            Pool::builder(Manager::from_config(
                pg.clone(),
                connector.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ))
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
        };
        let (shared, own) = super::group::split_pool(config.pool_size.max(1));
        let pool = builder(shared)
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        // Where the group statement runs: two connections of its own (out of `pool_size`), or
        // `pool` itself when the pool is small.
        let group_conns = if own == 0 {
            GroupConns::Shared(pool.clone())
        } else {
            GroupConns::Own(
                builder(own)
                    .post_create(super::group::session_hook())
                    .build()
                    .map_err(|e| PgError::Config(e.to_string()))?,
            )
        };
        Ok(Self {
            pool,
            snapshot_interval: config.snapshot_interval.max(1),
            timescaledb: Arc::new(AtomicBool::new(false)),
            timescale: super::TimescaleSettings::default(),
            outbox: false,
            writers: Arc::new(InstanceLocks::new()),
            heads: Arc::new(HeadCache::new(HEAD_CACHE_BYTES)),
            group: Arc::new(GroupCommit::new(group_conns)),
        })
    }

    /// Makes every append and creation also write the transactional outbox.
    pub fn with_outbox(mut self, enabled: bool) -> Self {
        self.outbox = enabled;
        self
    }

    /// Bounds the memory of the heads this server keeps (states' JSON bytes plus a fixed cost
    /// per instance); 0 keeps none, so every append reads its instance's head first.
    pub fn with_head_cache_bytes(mut self, bytes: usize) -> Self {
        self.heads = Arc::new(HeadCache::new(bytes));
        self
    }

    /// Bytes the head cache holds now, as counted against its bound.
    pub fn head_cache_bytes(&self) -> usize {
        self.heads.bytes()
    }

    /// Compression and retention to configure where TimescaleDB is installed.
    pub fn with_timescale(mut self, settings: super::TimescaleSettings) -> Self {
        self.timescale = settings;
        self
    }

    /// Applies pending migrations; safe to call from several servers at once.
    pub async fn migrate(&self) -> Result<Vec<i32>, PgError> {
        let mut client = self.pool.get().await?;
        // A migration may rightly take longer than any request: no statement_timeout for it.
        // RESET restores the connection's own bound before it returns to the pool.
        client.batch_execute("SET statement_timeout = 0").await?;
        let result = async {
            let applied = migrate::run(&mut client).await?;
            let installed: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
                    &[],
                )
                .await?
                .get(0);
            self.timescaledb.store(installed, Ordering::Relaxed);
            if installed {
                super::timescale::configure(&client, &self.timescale).await?;
            }
            Ok(applied)
        }
        .await;
        client.batch_execute("RESET statement_timeout").await?;
        result
    }

    /// Whether TimescaleDB is installed (known once [`Self::migrate`] ran).
    pub fn has_timescaledb(&self) -> bool {
        self.timescaledb.load(Ordering::Relaxed)
    }

    /// The shared connection pool, for the `tse_db_pool_*` metrics: the one callers wait for
    /// (`DB_POOL_SIZE` less the two the group commit keeps from 6 up, which only its committer
    /// and one lone append ever use). The relay's lease holds one connection for as long as
    /// this server holds the lease.
    pub fn pool_status(&self) -> crate::adapters::PoolStatus {
        let status = self.pool.status();
        crate::adapters::PoolStatus {
            size: status.max_size,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    fn is_snapshot_version(&self, version: i64) -> bool {
        version % self.snapshot_interval == 0
    }

    /// The instance's head as stored now (no lock: the append's compare-and-set checks it).
    async fn load_head(&self, instance_id: Uuid) -> Result<CachedHead, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(HEAD_SQL)
            .await
            .map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[&instance_id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| StoreError::NotFound(format!("instance {instance_id}")))?;
        Ok(CachedHead {
            entity_type_id: row.get(0),
            version: row.get(1),
            state: rows::object(row.get(2), "state")?,
            updated_at: row.get(3),
            schema_version: row.get(4),
            archived: row.get(5),
            erased: row.get(6),
        })
    }

    /// The append under this server's per-instance lock. The hot path: the head from the cache
    /// (or one read), the decision, and one statement through the group committer that moves
    /// the head only if it is still at the version decided on. An answer other than success
    /// (a conflict, a rejection) given on a cached head is given again on a head read from the
    /// database, so a stale cache can cost a round trip but never change an answer. After
    /// [`UNLOCKED_ATTEMPTS`] lost races, the locked path.
    async fn append_locked(
        &self,
        request: &AppendRequest,
        decide: &Decide,
    ) -> Result<AppendOutcome, StoreError> {
        let id = request.instance_id;
        let mut attempts = 0;
        while attempts < UNLOCKED_ATTEMPTS {
            let (cached, fresh) = match self.heads.get(id) {
                Some(head) => (head, false),
                None => (self.load_head(id).await?, true),
            };
            let head = cached.head(self.snapshot_interval);
            let recorded = if request.client_event_ids.is_empty() {
                Vec::new()
            } else {
                recorded_keys(&self.client().await?, &request.client_event_ids).await?
            };
            let decided = match append_plan::precheck(request, head.version, recorded) {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => decide(&head).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            let decision = match decided {
                Ok(decision) => decision,
                Err(_) if !fresh => {
                    // Judged on the cached head: judge again on the stored one.
                    self.heads.forget(id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            attempts += 1;
            let plan = AppendPlan::new(request, &head, cached.updated_at, Utc::now(), decision)?;
            let params = AppendParams::from_plan(request, head.entity_type_id, &plan, self.outbox);
            match self.group.submit(params).await? {
                Submitted::Moved(positions) => {
                    let mut plan = plan;
                    plan.set_positions(&positions);
                    self.heads.put(
                        id,
                        CachedHead {
                            entity_type_id: head.entity_type_id,
                            version: plan.last_version,
                            state: plan.state.clone(),
                            updated_at: plan.recorded_at,
                            schema_version: plan.schema_version,
                            archived: plan.archived.unwrap_or(cached.archived),
                            erased: false,
                        },
                    );
                    return Ok(plan.into_outcome());
                }
                Submitted::Stale | Submitted::KeyTaken => {
                    tracing::debug!(instance_id = %id, attempt = attempts, "head moved elsewhere or key taken, deciding again");
                    self.heads.forget(id);
                }
            }
        }
        let outcome =
            append_plan::with_attempts(|_| self.try_append(request, decide, false)).await?;
        if let AppendOutcome::Appended { events, state } = &outcome
            && let Some(last) = events.last()
        {
            self.heads.put(
                id,
                CachedHead {
                    entity_type_id: last.entity_type_id,
                    version: last.version,
                    state: state.clone(),
                    updated_at: last.recorded_at,
                    schema_version: last.schema_version,
                    // Only an archive leaves an instance archived: every other append needs
                    // (or, for a restore, ends) it unarchived.
                    archived: last.event_type == EventType::INSTANCE_ARCHIVED,
                    erased: false,
                },
            );
        }
        Ok(outcome)
    }

    /// Writes a new instance and its version 1 through `client` (in a transaction or not): the
    /// entity type's name and the time it was created at. [`StoreError::AlreadyExists`] when
    /// the external id is taken, StaleSchema when the type's schema moved on.
    async fn insert_created(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        new: &NewInstance,
    ) -> Result<(String, DateTime<Utc>), StoreError> {
        let stmt = client
            .prepare_cached(
                "WITH tv AS (
                    SELECT name, schema_version FROM entity_types WHERE id = $2 FOR KEY SHARE
                ), i AS (
                    INSERT INTO instances (id, entity_type_id, external_id, state, version,
                                           created_at, updated_at)
                    SELECT $1, $2, $3, $4, 1, $5, $5 FROM tv WHERE tv.schema_version = $14
                    ON CONFLICT (entity_type_id, external_id) DO NOTHING
                    RETURNING id
                ), e AS (
                    INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type,
                                        payload, metadata, mode, recorded_at, occurred_at,
                                        recorded_by, schema_version)
                    SELECT id, 1, $6, $2, $7, $4, $8, $9, $5, $5, $13, $14 FROM i
                ), k AS (
                    INSERT INTO event_ids (event_id, instance_id, version, content_hash)
                    SELECT $6, id, 1, $12 FROM i
                ), s AS (
                    INSERT INTO snapshots (instance_id, version, state)
                    SELECT id, 1, $4 FROM i WHERE $10
                ), o AS (
                    INSERT INTO outbox (instance_id, version) SELECT id, 1 FROM i WHERE $11
                )
                SELECT tv.name, (SELECT count(*) FROM i), tv.schema_version FROM tv",
            )
            .await
            .map_err(PgError::from)?;
        let now = now_micros();
        let state = Value::Object(new.initial_state.clone());
        let metadata = Value::Object(new.metadata.clone());
        let snapshot = self.is_snapshot_version(1);
        let found = client
            .query_opt(
                &stmt,
                &[
                    &new.id,
                    &new.entity_type_id,
                    &new.external_id,
                    &state,
                    &now,
                    &new.event_id,
                    &EventType::INSTANCE_CREATED,
                    &metadata,
                    &ApplyMode::Replace.as_str(),
                    &snapshot,
                    &self.outbox,
                    &new.content_hash,
                    &new.recorded_by,
                    &new.schema_version,
                ],
            )
            .await
            .map_err(PgError::from);
        let row = match found {
            Err(e) if e.is_foreign_key_violation() => None,
            other => other?,
        }
        .ok_or_else(|| StoreError::NotFound(format!("entity type {}", new.entity_type_id)))?;
        let type_name: String = row.get(0);
        let inserted: i64 = row.get(1);
        let current: i64 = row.get(2);
        if current != new.schema_version {
            // The type share-locked above is at another version: a schema change committed
            // since the initial state was validated.
            return Err(StoreError::Rejected(DomainError::StaleSchema {
                entity_type: type_name,
                decided: new.schema_version,
                current,
            }));
        }
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "instance with external_id {:?} of entity type {type_name:?}",
                new.external_id
            )));
        }
        Ok((type_name, now))
    }

    /// After a committed append on TimescaleDB: back-dated events land in hours the continuous
    /// aggregate already holds, so those hours are refreshed. The append is committed either
    /// way: without a connection now, the refresh policy catches up.
    async fn refresh_backfilled(&self, events: &[EventRecord]) {
        if !self.has_timescaledb() {
            return;
        }
        match self.client().await {
            Ok(client) => {
                super::timescale::refresh_backfilled(&client, events.iter().map(|e| e.occurred_at))
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "aggregate refresh after a back-dated append skipped")
            }
        }
    }

    /// The append on the locked path; with `erase`, also the erasure's scrub of everything the
    /// instance held, in the same transaction (see [`EventStore::erase_instance`]).
    async fn try_append(
        &self,
        request: &AppendRequest,
        decide: &Decide,
        erase: bool,
    ) -> Result<Attempt, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let mut attempt = self.append_in(&tx, request, decide, erase).await?;
        if let Attempt::Done(AppendOutcome::Appended { events, .. }) = &mut attempt {
            // Positions last, under the lock the commit releases.
            let drawn = super::position::Draw::prepare(&tx).await?.run(&tx).await?;
            super::position::assign(events, &drawn);
            tx.commit().await.map_err(PgError::from)?;
        }
        Ok(attempt)
    }

    /// [`PgStore::try_append`] in `tx`, which the caller commits when the append is done.
    async fn append_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        request: &AppendRequest,
        decide: &Decide,
        erase: bool,
    ) -> Result<Attempt, StoreError> {
        let lock = tx
            .prepare_cached(LOCK_HEAD_SQL)
            .await
            .map_err(PgError::from)?;
        let row = tx
            .query_opt(&lock, &[&request.instance_id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| StoreError::NotFound(format!("instance {}", request.instance_id)))?;
        let head = Head {
            entity_type_id: row.get(0),
            version: row.get(1),
            state: rows::object(row.get(2), "state")?,
            snapshot_interval: self.snapshot_interval,
            schema_version: row.get(4),
            archived: row.get(5),
            erased: row.get(6),
        };
        let updated_at: DateTime<Utc> = row.get(3);

        let recorded = if request.client_event_ids.is_empty() {
            Vec::new()
        } else {
            recorded_keys(tx, &request.client_event_ids).await?
        };
        if let Some(outcome) = append_plan::precheck(request, head.version, recorded)? {
            return Ok(Attempt::Done(outcome));
        }
        let plan = AppendPlan::new(request, &head, updated_at, Utc::now(), decide(&head)?)?;

        if erase {
            // Before the erasure's own event is written, so its metadata (the reason) stays.
            for statement in ERASE_SQL {
                tx.execute(*statement, &[&request.instance_id])
                    .await
                    .map_err(PgError::from)?;
            }
        }
        let params = AppendParams::from_plan(request, head.entity_type_id, &plan, self.outbox);
        let updated = match params.execute(tx).await.map_err(PgError::from) {
            Ok(updated) => updated,
            Err(e) if e.unique_violation() == Some("event_ids_pkey") => {
                return Ok(Attempt::KeyTaken);
            }
            Err(e) => return Err(e.into()),
        };
        plan.head_moved(request.instance_id, updated)?;
        if let Some(archived) = plan.archived {
            tx.execute(
                "UPDATE instances SET archived = $2 WHERE id = $1",
                &[&request.instance_id, &archived],
            )
            .await
            .map_err(PgError::from)?;
        }
        if erase {
            tx.execute(
                "UPDATE instances SET erased = true, external_id = $2 WHERE id = $1",
                &[
                    &request.instance_id,
                    &crate::ports::erased_external_id(request.instance_id),
                ],
            )
            .await
            .map_err(PgError::from)?;
        }
        Ok(Attempt::Done(plan.into_outcome()))
    }
}

/// An erasure's scrub, in its transaction, before its own event is written: every event keeps
/// its facts (version, type, times, ids, who wrote it) but not its payload nor its metadata,
/// and its idempotency key loses the hash of its content (a hash of a payload confirms a
/// guess of it); the snapshots go, and so do the outbox rows not yet published (their events
/// must never reach the stream now). The head's state is emptied by the erasure's append.
/// $1 = instance id. Old row versions stay in the table files until (auto)vacuum reclaims
/// them, and in the WAL and backups: see the README's "Erasure".
pub const ERASE_SQL: &[&str] = &[
    "UPDATE event_ids SET content_hash = NULL \
     WHERE event_id IN (SELECT event_id FROM events WHERE instance_id = $1)",
    "UPDATE events SET payload = '{}', metadata = '{}' WHERE instance_id = $1",
    "DELETE FROM snapshots WHERE instance_id = $1",
    "DELETE FROM outbox WHERE instance_id = $1",
];

/// The instance's head as stored, read without a lock by the unlocked append path, with its
/// type's schema version. $1 = instance id.
pub const HEAD_SQL: &str = "SELECT i.entity_type_id, i.version, i.state, i.updated_at, \
     t.schema_version, i.archived, i.erased FROM instances i \
     JOIN entity_types t ON t.id = i.entity_type_id WHERE i.id = $1";

/// The first statement of an append on the locked path: the instance's head, locked until the
/// transaction ends, and its type's schema version, share-locked so that no schema change
/// commits before the append does (a schema change in progress makes this wait, then read the
/// new version). $1 = instance id.
pub const LOCK_HEAD_SQL: &str = "SELECT i.entity_type_id, i.version, i.state, i.updated_at, \
     t.schema_version, i.archived, i.erased FROM instances i \
     JOIN entity_types t ON t.id = i.entity_type_id WHERE i.id = $1 FOR UPDATE OF i FOR KEY SHARE OF t";

/// One statement writes the events, their ids (every one, server-generated too, with its
/// content hash) and snapshots, and moves the instance's head with a compare-and-set on its
/// version. Parameters ([`AppendParams`] binds them by name): $1 instance id, $2 entity type id,
/// $3 recorded_at, $4..$10 the events' versions, ids, types, payloads, metadata, modes and
/// occurred_at, $11 their content hashes, $12/$13 snapshot versions and states, $14 the new
/// version, $15 the new state, $16 the version the head was locked at, $17 whether the outbox
/// is written, $18 who writes them (recorded_by). The events' schema version is the type's,
/// share-locked since [`LOCK_HEAD_SQL`]: the one the decision validated against.
pub const APPEND_SQL: &str = "
WITH ev AS (
    INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, payload,
                        metadata, mode, recorded_at, occurred_at, recorded_by, schema_version)
    SELECT $1, u.v, u.eid, $2, u.et, u.p, u.m, u.md, $3, u.oa, $18,
           (SELECT schema_version FROM entity_types WHERE id = $2)
    FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[], $9::text[],
                $10::timestamptz[]) AS u(v, eid, et, p, m, md, oa)
), k AS (
    INSERT INTO event_ids (event_id, instance_id, version, content_hash)
    SELECT u.eid, $1, u.v, u.h FROM UNNEST($5::text[], $4::bigint[], $11::bytea[]) AS u(eid, v, h)
), s AS (
    INSERT INTO snapshots (instance_id, version, state)
    SELECT $1, u.v, u.st FROM UNNEST($12::bigint[], $13::jsonb[]) AS u(v, st)
), o AS (
    INSERT INTO outbox (instance_id, version)
    SELECT $1, u.v FROM UNNEST($4::bigint[]) AS u(v) WHERE $17
)
UPDATE instances SET version = $14, state = $15, updated_at = $3
WHERE id = $1 AND version = $16";

/// The parameters of [`APPEND_SQL`], by name: one append of any number of events. The store
/// fills it from its plan, and the benchmark's direct baseline from its own fold, so the
/// statement and its 17 parameters are bound in one place.
#[derive(Debug, Default)]
pub struct AppendParams {
    pub instance_id: Uuid,
    pub entity_type_id: Uuid,
    /// One time for the whole append (it never decreases within an instance).
    pub recorded_at: DateTime<Utc>,
    pub(super) versions: Vec<i64>,
    pub(super) event_ids: Vec<String>,
    pub(super) event_types: Vec<String>,
    pub(super) payloads: Vec<Value>,
    pub(super) metadata: Vec<Value>,
    pub(super) modes: Vec<&'static str>,
    pub(super) occurred_at: Vec<DateTime<Utc>>,
    pub(super) content_hashes: Vec<Vec<u8>>,
    pub(super) snapshot_versions: Vec<i64>,
    pub(super) snapshot_states: Vec<Value>,
    /// The version the head moves to.
    pub last_version: i64,
    /// The state the head moves to.
    pub state: Value,
    /// The version the head was locked at: the compare-and-set of the head move.
    pub from_version: i64,
    /// Whether the transactional outbox is written (publication enabled).
    pub outbox: bool,
    /// Who writes the events (empty: nobody identified).
    pub recorded_by: String,
    /// The schema version the events were validated against; the group statement moves the
    /// head only while the type is still at it.
    pub schema_version: i64,
    /// The archived flag the head moves to; None keeps it.
    pub archived: Option<bool>,
}

impl AppendParams {
    /// An append to the head of `instance_id`, locked at `from_version`: no events yet; the
    /// head moves to `last_version` and `state`, which the caller sets with the events.
    pub fn new(
        instance_id: Uuid,
        entity_type_id: Uuid,
        recorded_at: DateTime<Utc>,
        from_version: i64,
        outbox: bool,
    ) -> Self {
        Self {
            instance_id,
            entity_type_id,
            recorded_at,
            from_version,
            last_version: from_version,
            outbox,
            ..Self::default()
        }
    }

    /// The plan of an append as its parameters.
    pub(super) fn from_plan(
        request: &AppendRequest,
        entity_type_id: Uuid,
        plan: &AppendPlan,
        outbox: bool,
    ) -> Self {
        let mut params = Self::new(
            request.instance_id,
            entity_type_id,
            plan.recorded_at,
            plan.from_version,
            outbox,
        );
        params.last_version = plan.last_version;
        params.recorded_by = request.recorded_by.clone();
        params.schema_version = plan.schema_version;
        params.archived = plan.archived;
        params.state = Value::Object(plan.state.clone());
        for (e, hash) in plan.events.iter().zip(&plan.content_hashes) {
            params.push_event(
                e.version,
                &e.event_id,
                &e.event_type,
                Value::Object(e.payload.clone()),
                Value::Object(e.metadata.clone()),
                e.mode,
                e.occurred_at,
                hash.clone(),
            );
        }
        for (version, state) in &plan.snapshots {
            params.push_snapshot(*version, Value::Object(state.clone()));
        }
        params
    }

    /// Events in this append.
    pub fn event_count(&self) -> usize {
        self.versions.len()
    }

    /// Adds one event, in version order.
    #[allow(clippy::too_many_arguments)] // one per column of the event row
    pub fn push_event(
        &mut self,
        version: i64,
        event_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: Value,
        metadata: Value,
        mode: ApplyMode,
        occurred_at: DateTime<Utc>,
        content_hash: Vec<u8>,
    ) {
        self.versions.push(version);
        self.event_ids.push(event_id.into());
        self.event_types.push(event_type.into());
        self.payloads.push(payload);
        self.metadata.push(metadata);
        self.modes.push(mode.as_str());
        self.occurred_at.push(occurred_at);
        self.content_hashes.push(content_hash);
    }

    /// Adds the snapshot taken at `version`.
    pub fn push_snapshot(&mut self, version: i64, state: Value) {
        self.snapshot_versions.push(version);
        self.snapshot_states.push(state);
    }

    /// Runs [`APPEND_SQL`] in `tx`. Returns the number of instance rows moved: 1, or 0 when
    /// the head changed under its lock.
    pub async fn execute(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let write = tx.prepare_cached(APPEND_SQL).await?;
        let params: [&(dyn ToSql + Sync); 18] = [
            &self.instance_id,
            &self.entity_type_id,
            &self.recorded_at,
            &self.versions,
            &self.event_ids,
            &self.event_types,
            &self.payloads,
            &self.metadata,
            &self.modes,
            &self.occurred_at,
            &self.content_hashes,
            &self.snapshot_versions,
            &self.snapshot_states,
            &self.last_version,
            &self.state,
            &self.from_version,
            &self.outbox,
            &self.recorded_by,
        ];
        tx.execute(&write, &params).await
    }
}

type SqlParam = Box<dyn ToSql + Sync + Send>;

/// The SQL of one instance listing and its parameters. Every filter is a condition the planner
/// can serve from an index: the external-id order and prefix from the unique (entity type,
/// external id) index (a prefix is a range: `>= prefix AND < its successor`, byte order), the
/// update order and range from (entity type, updated_at, id), and a state field equality on
/// object keys from the GIN index on `state` (containment), checked exactly after.
fn list_instances_sql(query: &InstanceQuery, limit: usize) -> (String, Vec<SqlParam>) {
    let mut params: Vec<SqlParam> = vec![Box::new(query.entity_type_id)];
    fn next(params: &mut Vec<SqlParam>, p: SqlParam) -> String {
        params.push(p);
        format!("${}", params.len())
    }
    let mut cond = vec![
        "i.entity_type_id = $1".to_string(),
        "NOT i.erased".to_string(),
    ];
    if !query.include_archived {
        cond.push("NOT i.archived".into());
    }
    if let Some(prefix) = &query.external_id_prefix {
        let p = next(&mut params, Box::new(prefix.clone()));
        cond.push(format!("i.external_id >= {p}"));
        match crate::domain::prefix_successor(prefix) {
            Some(end) => {
                let e = next(&mut params, Box::new(end));
                cond.push(format!("i.external_id < {e}"));
            }
            None => cond.push(format!("starts_with(i.external_id, {p})")),
        }
    }
    if let Some(t) = query.updated_since {
        let p = next(&mut params, Box::new(t));
        cond.push(format!("i.updated_at >= {p}"));
    }
    if let Some(t) = query.updated_before {
        let p = next(&mut params, Box::new(t));
        cond.push(format!("i.updated_at < {p}"));
    }
    if let Some((path, value)) = &query.state_equals {
        let mut expr = "i.state".to_string();
        let mut keys_only = true;
        for step in path {
            match step {
                PathStep::Key(k) => {
                    let p = next(&mut params, Box::new(k.clone()));
                    expr = format!("({expr} -> {p}::text)");
                }
                PathStep::Index(n) => {
                    keys_only = false;
                    expr = format!("({expr} -> {n})");
                }
            }
        }
        let v = next(&mut params, Box::new(value.clone()));
        cond.push(format!("{expr} = {v}::jsonb"));
        if keys_only {
            // The same condition as a containment, which the GIN index answers.
            let mut doc = value.clone();
            for step in path.iter().rev() {
                if let PathStep::Key(k) = step {
                    doc = serde_json::json!({ k.clone(): doc });
                }
            }
            let d = next(&mut params, Box::new(doc));
            cond.push(format!("i.state @> {d}::jsonb"));
        }
    }
    let order = match (&query.order, &query.after) {
        (InstanceOrder::ExternalId, after) => {
            if let Some(InstanceCursor::ExternalId(a)) = after {
                let p = next(&mut params, Box::new(a.clone()));
                cond.push(format!("i.external_id > {p}"));
            }
            "i.external_id"
        }
        (InstanceOrder::RecentlyUpdated, after) => {
            if let Some(InstanceCursor::Updated(t, id)) = after {
                let p = next(&mut params, Box::new(*t));
                let q = next(&mut params, Box::new(*id));
                cond.push(format!("(i.updated_at, i.id) < ({p}, {q})"));
            }
            "i.updated_at DESC, i.id DESC"
        }
    };
    let l = next(&mut params, Box::new(limit as i64));
    let columns = if query.without_state {
        rows::INSTANCE_COLUMNS.replace("i.state", "'{}'::jsonb")
    } else {
        rows::INSTANCE_COLUMNS.to_string()
    };
    let sql = format!(
        "SELECT {columns} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
         WHERE {} ORDER BY {order} LIMIT {l}",
        cond.join(" AND ")
    );
    (sql, params)
}

/// The keys recorded under any of `event_ids`, on any instance, in (instance, version) order.
async fn recorded_keys(
    tx: &impl deadpool_postgres::GenericClient,
    event_ids: &[String],
) -> Result<Vec<RecordedKey>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT event_id, instance_id, version, content_hash FROM event_ids \
             WHERE event_id = ANY($1) ORDER BY instance_id, version",
        )
        .await
        .map_err(PgError::from)?;
    let found = tx
        .query(&stmt, &[&event_ids])
        .await
        .map_err(PgError::from)?;
    Ok(found
        .iter()
        .map(|r| RecordedKey {
            event_id: r.get(0),
            instance_id: r.get(1),
            version: r.get(2),
            content_hash: r.get(3),
        })
        .collect())
}

#[async_trait]
impl Catalog for PgStore {
    async fn get_entity_type(&self, key: &TypeKey) -> Result<EntityTypeRecord, StoreError> {
        let client = self.client().await?;
        let (column, value, what): (_, &(dyn ToSql + Sync), _) = match key {
            TypeKey::Id(id) => ("id", id, format!("entity type {id}")),
            TypeKey::Name(name) => ("name", name, format!("entity type {name:?}")),
        };
        let sql = format!(
            "SELECT {} FROM entity_types WHERE {column} = $1",
            rows::ENTITY_TYPE_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[value])
            .await
            .map_err(PgError::from)?
            .ok_or(StoreError::NotFound(what))?;
        Ok(rows::entity_type(&row)?)
    }

    async fn list_entity_types(
        &self,
        after_name: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityTypeRecord>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM entity_types WHERE $1::text IS NULL OR name > $1 \
             ORDER BY name LIMIT $2",
            rows::ENTITY_TYPE_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let found = client
            .query(&stmt, &[&after_name, &(limit as i64)])
            .await
            .map_err(PgError::from)?;
        Ok(found
            .iter()
            .map(rows::entity_type)
            .collect::<Result<_, _>>()?)
    }

    async fn get_instance(&self, id: Uuid) -> Result<InstanceRecord, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
             WHERE i.id = $1",
            rows::INSTANCE_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
        Ok(rows::instance(&row)?)
    }

    async fn find_instance(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<InstanceRecord, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM instances i JOIN entity_types t ON t.id = i.entity_type_id \
             WHERE i.entity_type_id = $1 AND i.external_id = $2",
            rows::INSTANCE_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[&entity_type_id, &external_id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| {
                StoreError::NotFound(format!("instance with external_id {external_id:?}"))
            })?;
        Ok(rows::instance(&row)?)
    }

    #[instrument(skip(self, query), fields(entity_type_id = %query.entity_type_id))]
    async fn list_instances(
        &self,
        query: &InstanceQuery,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let client = self.client().await?;
        let (sql, params) = list_instances_sql(query, limit);
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let found = if query.state_equals.is_some() {
            // One statement per path shape (keys and indices, up to 32 steps): too many to keep
            // in each connection's statement cache, so prepared for this call only.
            client.query(sql.as_str(), &refs).await
        } else {
            // A few dozen shapes at most (which filters are set, the order, the view).
            let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
            client.query(&stmt, &refs).await
        }
        .map_err(PgError::from)?;
        Ok(found.iter().map(rows::instance).collect::<Result<_, _>>()?)
    }

    async fn instance_type(&self, instance_id: Uuid) -> Result<Uuid, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT entity_type_id FROM instances WHERE id = $1")
            .await
            .map_err(PgError::from)?;
        let row = client
            .query_opt(&stmt, &[&instance_id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| StoreError::NotFound(format!("instance {instance_id}")))?;
        Ok(row.get(0))
    }

    async fn schema_versions(
        &self,
        entity_type_id: Uuid,
    ) -> Result<Vec<SchemaVersionRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT version, schema, created_at, declarations FROM entity_type_schemas \
                 WHERE entity_type_id = $1 ORDER BY version",
            )
            .await
            .map_err(PgError::from)?;
        let found = client
            .query(&stmt, &[&entity_type_id])
            .await
            .map_err(PgError::from)?;
        found
            .iter()
            .map(|r| {
                Ok(SchemaVersionRecord {
                    version: r.get(0),
                    schema: rows::object(r.get(1), "schema")?,
                    created_at: r.get(2),
                    declarations: r
                        .get::<_, Option<Value>>(3)
                        .map(|d| rows::object(d, "declarations"))
                        .transpose()?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(PgError::from)?;
        Ok(())
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
        let client = self.client().await?;
        let sql = format!(
            "WITH t AS (
                INSERT INTO entity_types (id, name, description, schema, created_at, declarations)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING
                RETURNING {}
            ), v AS (
                INSERT INTO entity_type_schemas (entity_type_id, version, schema, created_at,
                                                 declarations)
                SELECT id, 1, schema, created_at, declarations FROM t
            )
            SELECT * FROM t",
            rows::ENTITY_TYPE_COLUMNS
        );
        let stmt = client.prepare_cached(&sql).await.map_err(PgError::from)?;
        let schema_json = Value::Object(schema.clone());
        let declarations = declarations.map(|d| Value::Object(d.clone()));
        let row = client
            .query_opt(
                &stmt,
                &[
                    &id,
                    &name,
                    &description,
                    &schema_json,
                    &now_micros(),
                    &declarations,
                ],
            )
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| StoreError::AlreadyExists(format!("entity type {name:?}")))?;
        Ok(rows::entity_type(&row)?)
    }

    #[instrument(skip(self, update, check), fields(entity_type_id = %update.entity_type_id))]
    async fn update_entity_type(
        &self,
        update: TypeUpdate,
        check: StateCheck,
    ) -> Result<TypeUpdateOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        // FOR UPDATE conflicts with the KEY SHARE lock every append and creation takes on the
        // type's row: the ones in flight finish first, the next ones wait until this commits
        // and then see the new version. So the states checked below are all there are.
        let sql = format!(
            "SELECT {} FROM entity_types WHERE id = $1 FOR UPDATE",
            rows::ENTITY_TYPE_COLUMNS
        );
        let row = tx
            .query_opt(&sql, &[&update.entity_type_id])
            .await
            .map_err(PgError::from)?
            .ok_or_else(|| {
                StoreError::NotFound(format!("entity type {}", update.entity_type_id))
            })?;
        let current = rows::entity_type(&row)?;
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
            // Streamed through a portal, a batch at a time: memory holds one batch of states.
            // Erased instances have no state left to check (and never take an event again).
            let portal = tx
                .bind(
                    "SELECT id, external_id, version, state FROM instances \
                     WHERE entity_type_id = $1 AND NOT erased ORDER BY external_id",
                    &[&update.entity_type_id],
                )
                .await
                .map_err(PgError::from)?;
            loop {
                let batch = tx
                    .query_portal(&portal, SCHEMA_CHECK_BATCH)
                    .await
                    .map_err(PgError::from)?;
                for r in &batch {
                    outcome.checked += 1;
                    let state = rows::object(r.get(3), "state")?;
                    let violations = check(&state);
                    if violations.is_empty() {
                        continue;
                    }
                    outcome.invalid += 1;
                    if outcome.violations.len() < update.max_violations {
                        outcome.violations.push(InstanceViolation {
                            instance_id: r.get(0),
                            external_id: r.get(1),
                            version: r.get(2),
                            violations,
                        });
                    }
                }
                if batch.len() < SCHEMA_CHECK_BATCH as usize {
                    break;
                }
            }
        }
        let refused = outcome.invalid > 0 && update.check == SchemaCheck::Enforce;
        if update.check == SchemaCheck::DryRun || refused {
            // Rolled back when dropped: nothing changes.
            return Ok(outcome);
        }
        let now = now_micros();
        let (schema, version) = match &update.schema {
            Some(schema) => (Value::Object(schema.clone()), current.schema_version + 1),
            None => (
                Value::Object(current.schema.clone()),
                current.schema_version,
            ),
        };
        // A new version declares what the update says, or carries the current declarations over.
        let declarations = match &update.declarations {
            Some(declared) => declared.clone(),
            None => current.declarations.clone(),
        }
        .map(Value::Object);
        if update.schema.is_some() {
            tx.execute(
                "INSERT INTO entity_type_schemas (entity_type_id, version, schema, created_at, \
                 declarations) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &update.entity_type_id,
                    &version,
                    &schema,
                    &now,
                    &declarations,
                ],
            )
            .await
            .map_err(PgError::from)?;
        }
        let sql = format!(
            "UPDATE entity_types SET description = COALESCE($2, description), schema = $3, \
             schema_version = $4, declarations = $5 WHERE id = $1 RETURNING {}",
            rows::ENTITY_TYPE_COLUMNS
        );
        let row = tx
            .query_one(
                &sql,
                &[
                    &update.entity_type_id,
                    &update.description,
                    &schema,
                    &version,
                    &declarations,
                ],
            )
            .await
            .map_err(PgError::from)?;
        outcome.record = rows::entity_type(&row)?;
        tx.commit().await.map_err(PgError::from)?;
        outcome.applied = true;
        Ok(outcome)
    }

    #[instrument(skip(self))]
    async fn delete_entity_type(&self, entity_type_id: Uuid) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        // Locked first: a creation in flight finishes (and is then seen below), the next one
        // waits and then fails its foreign key check.
        tx.query_opt(
            "SELECT 1 FROM entity_types WHERE id = $1 FOR UPDATE",
            &[&entity_type_id],
        )
        .await
        .map_err(PgError::from)?
        .ok_or_else(|| StoreError::NotFound(format!("entity type {entity_type_id}")))?;
        let has_instances: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM instances WHERE entity_type_id = $1)",
                &[&entity_type_id],
            )
            .await
            .map_err(PgError::from)?
            .get(0);
        if has_instances {
            return Err(StoreError::Precondition(
                "it still has instances; only a type without instances can be deleted".into(),
            ));
        }
        tx.execute(
            "DELETE FROM entity_type_schemas WHERE entity_type_id = $1",
            &[&entity_type_id],
        )
        .await
        .map_err(PgError::from)?;
        let deleted = tx
            .execute("DELETE FROM entity_types WHERE id = $1", &[&entity_type_id])
            .await
            .map_err(PgError::from);
        match deleted {
            Err(e) if e.is_foreign_key_violation() => {
                return Err(StoreError::Precondition(
                    "it still has instances; only a type without instances can be deleted".into(),
                ));
            }
            other => other?,
        };
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }

    #[instrument(skip(self, new), fields(instance_id = %new.id))]
    async fn create_instance(
        &self,
        new: NewInstance,
    ) -> Result<(InstanceRecord, EventRecord), StoreError> {
        // Held like an append's, so the head put below is ordered with the instance's appends.
        let _writer = self.writers.lock(new.id).await;
        let mut client = self.client().await?;
        // The creation, then its position drawn last, in one transaction.
        let tx = client.transaction().await.map_err(PgError::from)?;
        let (type_name, now) = self.insert_created(&tx, &new).await?;
        let drawn = super::position::Draw::prepare(&tx).await?.run(&tx).await?;
        tx.commit().await.map_err(PgError::from)?;
        drop(client);
        let id = new.id;
        // Its first append then needs no read of the head (instances are usually written soon
        // after they are created).
        self.heads.put(
            id,
            CachedHead {
                entity_type_id: new.entity_type_id,
                version: 1,
                state: new.initial_state.clone(),
                updated_at: now,
                schema_version: new.schema_version,
                archived: false,
                erased: false,
            },
        );
        let (instance, mut event) = append_plan::created_records(new, type_name, now);
        event.position = super::position::of(&drawn, id)
            .first()
            .map_or(0, |(_, p)| *p);
        Ok((instance, event))
    }

    #[instrument(skip(self, new, request, decide), fields(instance_id = %new.id))]
    async fn create_and_append(
        &self,
        new: NewInstance,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<(Option<EventRecord>, AppendOutcome), StoreError> {
        let _writer = self.writers.lock(new.id).await;
        for attempt in 1..=append_plan::APPEND_ATTEMPTS {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            // A racing creator of the same external id waits here on the unique index until
            // this transaction ends, then finds it taken.
            let (type_name, at) = self.insert_created(&tx, &new).await?;
            match self.append_in(&tx, &request, &decide, false).await? {
                Attempt::Done(mut outcome @ AppendOutcome::Appended { .. }) => {
                    // Positions last for the creation and the events together, under the lock
                    // the commit releases.
                    let drawn = super::position::Draw::prepare(&tx).await?.run(&tx).await?;
                    let mut created = append_plan::created_records(new, type_name, at).1;
                    super::position::assign(slice::from_mut(&mut created), &drawn);
                    if let AppendOutcome::Appended { events, .. } = &mut outcome {
                        super::position::assign(events, &drawn);
                    }
                    tx.commit().await.map_err(PgError::from)?;
                    drop(client);
                    if let AppendOutcome::Appended { events, .. } = &outcome {
                        self.refresh_backfilled(events).await;
                    }
                    return Ok((Some(created), outcome));
                }
                // Dropping `tx` rolls the creation back too.
                Attempt::Done(outcome) => return Ok((None, outcome)),
                Attempt::KeyTaken => {
                    tracing::debug!(attempt, "idempotency key claimed concurrently, retrying");
                }
            }
        }
        Err(StoreError::Internal(format!(
            "idempotency keys kept being claimed concurrently after {} attempts",
            append_plan::APPEND_ATTEMPTS
        )))
    }

    #[instrument(skip(self, request, decide), fields(instance_id = %request.instance_id))]
    async fn append(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        let _writer = self.writers.lock(request.instance_id).await;
        let outcome = self.append_locked(&request, &decide).await;
        match &outcome {
            Err(_) => {
                // Whatever it was, the next append starts from the stored head.
                self.heads.forget(request.instance_id);
            }
            Ok(AppendOutcome::Appended { events, .. }) => self.refresh_backfilled(events).await,
            Ok(_) => {}
        }
        outcome
    }

    #[instrument(skip(self, request, decide), fields(instance_id = %request.instance_id))]
    async fn erase_instance(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        let _writer = self.writers.lock(request.instance_id).await;
        // Always the locked path: the row lock makes every concurrent append (on any server)
        // wait for the erasure, then see the erased head and refuse.
        let outcome =
            append_plan::with_attempts(|_| self.try_append(&request, &decide, true)).await;
        self.heads.forget(request.instance_id);
        outcome
    }
}
