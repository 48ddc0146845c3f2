//! The embedded store's append: its statements and the group-committed transaction that runs
//! on the writer connection, executing the plan of `adapters/append_plan.rs` in SQLite.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::store::sql;
use super::{EmbeddedError, rows};
use crate::adapters::append_plan::{self, AppendPlan, Attempt};
use crate::ports::{AppendOutcome, AppendRequest, Decide, Head, RecordedKey, StoreError};

/// An append's statements, in the order `append_transaction` runs them, each defined once
/// here and public so the benchmark's raw baseline (`bench/`) runs the same text.
///
/// The instance's head and its type's schema version: ?1 instance id.
pub const HEAD_SQL: &str = "SELECT i.entity_type_id, i.version, i.state, i.updated_at, \
     t.schema_version, i.archived, i.erased FROM instances i \
     JOIN entity_types t ON t.id = i.entity_type_id WHERE i.id = ?1";
/// One event: ?1 instance id, ?2 version, ?3 event id, ?4 entity type id, ?5 event type,
/// ?6 payload, ?7 metadata, ?8 mode, ?9 recorded_at, ?10 occurred_at, ?11 recorded_by. Its
/// schema version is the type's: the writer is the only one, so it is still the version read
/// with the head, which the decision validated against. Its global position is one more than
/// the highest so far: the writer is the only one, so positions follow commit order (a
/// rolled-back savepoint gives its number back, never to an event already seen). Returns it.
pub const INSERT_EVENT_SQL: &str = "INSERT INTO events (instance_id, version, event_id, \
     entity_type_id, event_type, payload, metadata, mode, recorded_at, occurred_at, recorded_by, \
     schema_version, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
     (SELECT schema_version FROM entity_types WHERE id = ?4), \
     (SELECT IFNULL(MAX(position), 0) + 1 FROM events)) RETURNING position";
/// Every event's id, reserved with its content hash: ?1 event id, ?2 instance id, ?3 version,
/// ?4 content hash.
pub const INSERT_KEY_SQL: &str = "INSERT INTO event_ids (event_id, instance_id, version, \
     content_hash) VALUES (?1, ?2, ?3, ?4)";
/// A snapshot at a multiple of the interval: ?1 instance id, ?2 version, ?3 state.
pub const INSERT_SNAPSHOT_SQL: &str =
    "INSERT INTO snapshots (instance_id, version, state) VALUES (?1, ?2, ?3)";
/// The head moves, compare-and-set on the version read: ?1 new version, ?2 new state,
/// ?3 updated_at, ?4 instance id, ?5 the version read by [`HEAD_SQL`].
pub const MOVE_HEAD_SQL: &str = "UPDATE instances SET version = ?1, state = ?2, \
     updated_at = ?3 WHERE id = ?4 AND version = ?5";

/// An archive or a restore moves the flag with the head: ?1 archived, ?2 instance id.
pub const SET_ARCHIVED_SQL: &str = "UPDATE instances SET archived = ?1 WHERE id = ?2";

/// An erasure's scrub, before its own event is written (as `postgres::ERASE_SQL`, without the
/// outbox this store does not have): ?1 instance id.
pub const ERASE_SQL: &[&str] = &[
    "UPDATE event_ids SET content_hash = NULL \
     WHERE event_id IN (SELECT event_id FROM events WHERE instance_id = ?1)",
    "UPDATE events SET payload = '{}', metadata = '{}' WHERE instance_id = ?1",
    "DELETE FROM snapshots WHERE instance_id = ?1",
];

/// The erased head keeps a placeholder external id: ?1 instance id, ?2 placeholder.
pub const SET_ERASED_SQL: &str = "UPDATE instances SET erased = 1, external_id = ?2 WHERE id = ?1";

/// An append waiting for the writer, with where its answer goes.
pub(super) struct PendingAppend {
    pub request: AppendRequest,
    pub decide: Decide,
    pub reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Group commit: every append waiting when the writer came free, in one `BEGIN IMMEDIATE`
/// transaction and so one fsync. Each append runs in a savepoint of its own: a conflict, a
/// rejection or a failed statement rolls back that append alone, and the next one sees the
/// batch's earlier appends (two appends to one instance in a batch follow each other). Answers
/// go out once the commit returned; if it failed, every append gets its error.
pub(super) fn append_batch(
    conn: &mut Connection,
    batch: Vec<PendingAppend>,
    snapshot_interval: i64,
) {
    metrics::histogram!(crate::app::metrics::GROUP_COMMIT_APPENDS).record(batch.len() as f64);
    let mut answered = Vec::with_capacity(batch.len());
    let committed = (|| {
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        for job in batch {
            let outcome = append_plan::with_attempts_blocking(|_| {
                let sp = tx.savepoint().map_err(sql)?;
                let attempt = append_in(&sp, &job.request, snapshot_interval, &job.decide, false);
                if matches!(attempt, Ok(Attempt::Done(AppendOutcome::Appended { .. }))) {
                    sp.commit().map_err(sql)?;
                }
                // Anything else: dropping the savepoint rolls back what it wrote.
                attempt
            });
            answered.push((job.reply, outcome));
        }
        tx.commit().map_err(sql)
    })();
    for (reply, outcome) in answered {
        let outcome = match &committed {
            Ok(()) => outcome,
            Err(e) => Err(e.clone()),
        };
        let _ = reply.send(outcome);
    }
}

/// One append inside the batch's transaction: read the head, check keys then the expected
/// version, run the decision on the head, write its plan. With `erase`, the erasure's scrub
/// too (see [`crate::ports::EventStore::erase_instance`]).
pub(super) fn append_in(
    tx: &Connection,
    request: &AppendRequest,
    snapshot_interval: i64,
    decide: &Decide,
    erase: bool,
) -> Result<Attempt, StoreError> {
    let instance = rows::id(request.instance_id);
    type HeadRow = (String, i64, String, i64, i64, bool, bool);
    let found: Option<HeadRow> = tx
        .prepare_cached(HEAD_SQL)
        .map_err(sql)?
        .query_row([&instance], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()
        .map_err(sql)?;
    let Some((type_text, current, state_text, updated_at, schema_version, archived, erased)) =
        found
    else {
        return Err(StoreError::NotFound(format!(
            "instance {}",
            request.instance_id
        )));
    };
    let head = Head {
        entity_type_id: rows::uuid(&type_text, "entity type id")?,
        version: current,
        state: rows::object(&state_text, "state")?,
        snapshot_interval,
        schema_version,
        archived,
        erased,
    };

    let recorded = if request.client_event_ids.is_empty() {
        Vec::new()
    } else {
        recorded_keys(tx, &request.client_event_ids)?
    };
    if let Some(outcome) = append_plan::precheck(request, head.version, recorded)? {
        return Ok(Attempt::Done(outcome));
    }
    // A rejection returns here; dropping `tx` rolls back.
    let decision = decide(&head)?;
    let updated_at = rows::time(updated_at, "updated_at")?;
    let mut plan = AppendPlan::new(request, &head, updated_at, Utc::now(), decision)?;

    let recorded_micros = rows::micros(plan.recorded_at);
    if erase {
        // Before the erasure's own event is written, so its metadata (the reason) stays.
        for statement in ERASE_SQL {
            tx.prepare_cached(statement)
                .map_err(sql)?
                .execute([&instance])
                .map_err(sql)?;
        }
    }
    let mut positions = Vec::with_capacity(plan.events.len());
    {
        let mut insert_event = tx.prepare_cached(INSERT_EVENT_SQL).map_err(sql)?;
        let mut insert_key = tx.prepare_cached(INSERT_KEY_SQL).map_err(sql)?;
        let type_text = rows::id(head.entity_type_id);
        for (e, hash) in plan.events.iter().zip(&plan.content_hashes) {
            let position: i64 = insert_event
                .query_row(
                    params![
                        instance,
                        e.version,
                        e.event_id,
                        type_text,
                        e.event_type,
                        rows::json(&e.payload)?,
                        rows::json(&e.metadata)?,
                        e.mode.as_str(),
                        recorded_micros,
                        rows::micros(e.occurred_at),
                        e.recorded_by,
                    ],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            positions.push((e.version, position));
            // Every id is reserved, server-generated ones too.
            match insert_key.execute(params![e.event_id, instance, e.version, hash]) {
                Ok(_) => {}
                Err(e) => {
                    let e = EmbeddedError::from(e);
                    if e.unique_violation() == Some("event_ids.event_id") {
                        return Ok(Attempt::KeyTaken);
                    }
                    return Err(e.into());
                }
            }
        }
        let mut insert_snapshot = tx.prepare_cached(INSERT_SNAPSHOT_SQL).map_err(sql)?;
        for (version, snapshot) in &plan.snapshots {
            insert_snapshot
                .execute(params![instance, version, rows::json(snapshot)?])
                .map_err(sql)?;
        }
    }
    let updated = tx
        .prepare_cached(MOVE_HEAD_SQL)
        .map_err(sql)?
        .execute(params![
            plan.last_version,
            rows::json(&plan.state)?,
            recorded_micros,
            instance,
            plan.from_version
        ])
        .map_err(sql)?;
    plan.head_moved(request.instance_id, updated as u64)?;
    plan.set_positions(&positions);
    if let Some(archived) = plan.archived {
        tx.prepare_cached(SET_ARCHIVED_SQL)
            .map_err(sql)?
            .execute(params![archived, instance])
            .map_err(sql)?;
    }
    if erase {
        tx.prepare_cached(SET_ERASED_SQL)
            .map_err(sql)?
            .execute(params![
                instance,
                crate::ports::erased_external_id(request.instance_id)
            ])
            .map_err(sql)?;
    }
    Ok(Attempt::Done(plan.into_outcome()))
}

/// The keys recorded under any of `event_ids`, on any instance, in (instance, version) order.
fn recorded_keys(conn: &Connection, event_ids: &[String]) -> Result<Vec<RecordedKey>, StoreError> {
    let ids = serde_json::to_string(event_ids)
        .map_err(|e| StoreError::Internal(format!("encoding event ids: {e}")))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT event_id, instance_id, version, content_hash FROM event_ids \
             WHERE event_id IN (SELECT value FROM json_each(?1)) ORDER BY instance_id, version",
        )
        .map_err(sql)?;
    let found = stmt
        .query_map([ids], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })
        .map_err(sql)?;
    let mut keys = Vec::new();
    for row in found {
        let (event_id, instance, version, content_hash) = row.map_err(sql)?;
        keys.push(RecordedKey {
            event_id,
            instance_id: rows::uuid(&instance, "instance id")?,
            version,
            content_hash,
        });
    }
    Ok(keys)
}
