//! The append, planned once for every store: what [`crate::ports::EventStore::append`] writes,
//! computed without I/O from what the store read under the instance's lock.
//!
//! A store locks the instance and reads its head and the recorded idempotency keys; then
//! [`precheck`] says whether the append ends there (keys already recorded, or a version
//! conflict), the decision runs, and [`AppendPlan::new`] turns it into the rows to write
//! (versions, `recorded_at`, snapshots, event records). The store executes the plan in its own
//! SQL and reports the head move with [`AppendPlan::head_moved`]. [`with_attempts`] is the retry
//! loop around it all. Each rule lives here once, so the stores cannot drift apart.

use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApplyMode, EventType, State};
use crate::ports::{
    AppendOutcome, AppendRequest, Decision, EventRecord, Head, InstanceRecord, NewInstance,
    RecordedKey, StoreError,
};

/// How often an append is tried when a concurrent append (on another instance, or from another
/// process) claimed one of its idempotency keys first; the retry then finds the key recorded
/// and answers accordingly.
pub const APPEND_ATTEMPTS: usize = 3;

/// The end of one append attempt.
pub enum Attempt {
    Done(AppendOutcome),
    /// Inserting an idempotency key hit one already taken; the transaction was rolled back and
    /// the next attempt will find the key recorded.
    KeyTaken,
}

/// Runs `attempt` (given its number, from 1) until it is done, at most [`APPEND_ATTEMPTS`] times.
pub async fn with_attempts<F, Fut>(mut attempt: F) -> Result<AppendOutcome, StoreError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Attempt, StoreError>>,
{
    for n in 1..=APPEND_ATTEMPTS {
        if let Some(outcome) = settled(n, attempt(n).await?) {
            return Ok(outcome);
        }
    }
    Err(exhausted())
}

/// As [`with_attempts`], for a store whose attempts run on a blocking thread.
pub fn with_attempts_blocking(
    mut attempt: impl FnMut(usize) -> Result<Attempt, StoreError>,
) -> Result<AppendOutcome, StoreError> {
    for n in 1..=APPEND_ATTEMPTS {
        if let Some(outcome) = settled(n, attempt(n)?) {
            return Ok(outcome);
        }
    }
    Err(exhausted())
}

/// The outcome of attempt `n`, or None when it must be tried again.
fn settled(n: usize, attempt: Attempt) -> Option<AppendOutcome> {
    match attempt {
        Attempt::Done(outcome) => Some(outcome),
        Attempt::KeyTaken => {
            tracing::debug!(
                attempt = n,
                "idempotency key claimed concurrently, retrying"
            );
            None
        }
    }
}

fn exhausted() -> StoreError {
    StoreError::Internal(format!(
        "idempotency keys kept being claimed concurrently after {APPEND_ATTEMPTS} attempts"
    ))
}

/// Whether the append ends before its decision: `recorded` are the keys of
/// `request.client_event_ids` already recorded (checked first: a retry of a stored append is
/// answered even when the instance has moved on since), then the expected version.
/// `Ok(None)`: go on and decide.
pub fn precheck(
    request: &AppendRequest,
    head_version: i64,
    recorded: Vec<RecordedKey>,
) -> Result<Option<AppendOutcome>, StoreError> {
    if !recorded.is_empty() {
        return Ok(Some(AppendOutcome::AlreadyRecorded { keys: recorded }));
    }
    match request.expected_version {
        Some(expected) if expected != head_version => Err(StoreError::Conflict {
            expected,
            current: head_version,
        }),
        _ => Ok(None),
    }
}

/// The time an append is recorded at: `now` to the microsecond (what both stores keep, so what
/// is returned equals what is stored), never before the instance's last write, so `recorded_at`
/// never decreases within an instance even if the clock steps back.
pub fn recorded_at(now: DateTime<Utc>, updated_at: DateTime<Utc>) -> DateTime<Utc> {
    let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    now.max(updated_at)
}

/// The instance and its version-1 event as a store records them, at `at`: what
/// `EventStore::create_instance` returns, equal to what it stored.
pub fn created_records(
    new: NewInstance,
    entity_type_name: String,
    at: DateTime<Utc>,
) -> (InstanceRecord, EventRecord) {
    let instance = InstanceRecord {
        id: new.id,
        entity_type_id: new.entity_type_id,
        entity_type_name,
        external_id: new.external_id,
        state: new.initial_state.clone(),
        version: 1,
        created_at: at,
        updated_at: at,
        archived: false,
        erased: false,
    };
    let event = EventRecord {
        event_id: new.event_id,
        instance_id: new.id,
        entity_type_id: new.entity_type_id,
        event_type: EventType::INSTANCE_CREATED.to_string(),
        version: 1,
        payload: new.initial_state,
        metadata: new.metadata,
        mode: ApplyMode::Replace,
        recorded_at: at,
        occurred_at: at,
        recorded_by: new.recorded_by,
        schema_version: new.schema_version,
        position: 0,
    };
    (instance, event)
}

/// Everything one append writes.
#[derive(Debug, Clone)]
pub struct AppendPlan {
    /// The version the head was locked at: the compare-and-set of the head move.
    pub from_version: i64,
    /// The version after the last event.
    pub last_version: i64,
    pub recorded_at: DateTime<Utc>,
    /// The events, versions `from_version + 1 ..= last_version`, as they are stored and returned.
    pub events: Vec<EventRecord>,
    /// Each event's content hash, kept with its id (same order as `events`).
    pub content_hashes: Vec<Vec<u8>>,
    /// (version, state) at each version that is a multiple of the snapshot interval.
    pub snapshots: Vec<(i64, State)>,
    /// The state after the last event.
    pub state: State,
    /// The schema version the events were validated against (the head's).
    pub schema_version: i64,
    /// The archived flag the head moves to; None keeps it.
    pub archived: Option<bool>,
}

impl AppendPlan {
    /// Plans `decision` on `head` (read under the lock, last written at `updated_at`) at `now`.
    pub fn new(
        request: &AppendRequest,
        head: &Head,
        updated_at: DateTime<Utc>,
        now: DateTime<Utc>,
        decision: Decision,
    ) -> Result<Self, StoreError> {
        let Decision {
            events: pending,
            state,
            archived,
        } = decision;
        if pending.is_empty() {
            return Err(StoreError::Internal("an append decided no events".into()));
        }
        let recorded_at = recorded_at(now, updated_at);
        let interval = head.snapshot_interval.max(1);
        let n = pending.len();
        let mut events = Vec::with_capacity(n);
        let mut content_hashes = Vec::with_capacity(n);
        let mut snapshots = Vec::new();
        for (i, p) in pending.into_iter().enumerate() {
            let version = head.version + 1 + i as i64;
            if version % interval == 0 {
                let snapshot = p.snapshot.ok_or_else(|| {
                    StoreError::Internal(format!("no state decided for snapshot {version}"))
                })?;
                snapshots.push((version, snapshot));
            }
            content_hashes.push(p.content_hash);
            events.push(EventRecord {
                event_id: p.event_id,
                instance_id: request.instance_id,
                entity_type_id: head.entity_type_id,
                event_type: p.event_type,
                version,
                payload: p.payload,
                metadata: p.metadata,
                mode: p.mode,
                recorded_at,
                occurred_at: p.occurred_at.unwrap_or(recorded_at),
                recorded_by: request.recorded_by.clone(),
                schema_version: head.schema_version,
                position: 0,
            });
        }
        Ok(Self {
            from_version: head.version,
            last_version: head.version + n as i64,
            recorded_at,
            events,
            content_hashes,
            snapshots,
            state,
            schema_version: head.schema_version,
            archived,
        })
    }

    /// Checks the head move's row count: the compare-and-set on `from_version` must have moved
    /// exactly the locked instance, or something wrote to it under its lock.
    pub fn head_moved(&self, instance_id: Uuid, updated: u64) -> Result<(), StoreError> {
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::Internal(format!(
                "instance {instance_id} changed under its lock"
            )))
        }
    }

    /// Records the global positions the store drew for the plan's events, as (version,
    /// position); an event not named keeps position 0.
    pub fn set_positions(&mut self, positions: &[(i64, i64)]) {
        for e in &mut self.events {
            if let Some((_, p)) = positions.iter().find(|(v, _)| *v == e.version) {
                e.position = *p;
            }
        }
    }

    /// What the append answers once the plan is committed.
    pub fn into_outcome(self) -> AppendOutcome {
        metrics::counter!(crate::app::metrics::SNAPSHOTS_WRITTEN)
            .increment(self.snapshots.len() as u64);
        AppendOutcome::Appended {
            events: self.events,
            state: self.state,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::domain::ApplyMode;
    use crate::ports::PendingEvent;

    fn state(v: i64) -> State {
        let serde_json::Value::Object(map) = json!({ "n": v }) else {
            unreachable!()
        };
        map
    }

    fn request(expected_version: Option<i64>) -> AppendRequest {
        AppendRequest {
            instance_id: Uuid::from_u128(7),
            expected_version,
            client_event_ids: vec![],
            recorded_by: "w".into(),
        }
    }

    fn head(version: i64, snapshot_interval: i64) -> Head {
        Head {
            entity_type_id: Uuid::from_u128(9),
            version,
            state: state(version),
            snapshot_interval,
            schema_version: 1,
            archived: false,
            erased: false,
        }
    }

    /// `n` events decided on `head`, each with a snapshot exactly where the store takes one.
    fn decision(head: &Head, n: i64, occurred_at: Option<DateTime<Utc>>) -> Decision {
        let events = (1..=n)
            .map(|i| {
                let version = head.version + i;
                PendingEvent {
                    event_id: format!("e{version}"),
                    event_type: "Changed".into(),
                    payload: state(version),
                    metadata: State::new(),
                    mode: ApplyMode::Replace,
                    occurred_at,
                    snapshot: (version % head.snapshot_interval == 0).then(|| state(version)),
                    content_hash: vec![version as u8],
                }
            })
            .collect();
        Decision {
            archived: None,
            events,
            state: state(head.version + n),
        }
    }

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(micros).unwrap()
    }

    #[test]
    fn versions_follow_the_head_contiguously() {
        let head = head(41, 100);
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(5),
            decision(&head, 4, None),
        )
        .unwrap();
        let versions: Vec<i64> = plan.events.iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![42, 43, 44, 45]);
        assert_eq!((plan.from_version, plan.last_version), (41, 45));
        let hashes: Vec<Vec<u8>> = (42..=45).map(|v| vec![v as u8]).collect();
        assert_eq!(plan.content_hashes, hashes);
        assert!(
            plan.events
                .iter()
                .all(|e| e.instance_id == Uuid::from_u128(7)
                    && e.entity_type_id == Uuid::from_u128(9))
        );
        assert_eq!(plan.state, state(45));
    }

    #[test]
    fn recorded_at_never_goes_before_the_last_write() {
        let head = head(1, 100);
        // The clock stepped back: the append is recorded at the instance's last write.
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(2_000),
            at(1_000),
            decision(&head, 2, None),
        )
        .unwrap();
        assert_eq!(plan.recorded_at, at(2_000));
        assert!(plan.events.iter().all(|e| e.recorded_at == at(2_000)));
        // A clock ahead of the last write is taken as it is.
        assert_eq!(recorded_at(at(3_000), at(2_000)), at(3_000));
    }

    #[test]
    fn recorded_at_is_kept_to_the_microsecond() {
        let now = at(1_234_567) + chrono::Duration::nanoseconds(891);
        assert_eq!(recorded_at(now, at(0)), at(1_234_567));
    }

    #[test]
    fn occurred_at_defaults_to_recorded_at() {
        let head = head(0, 100);
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(10),
            decision(&head, 1, None),
        )
        .unwrap();
        assert_eq!(plan.events[0].occurred_at, at(10));
        let given = at(3);
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(10),
            decision(&head, 1, Some(given)),
        )
        .unwrap();
        assert_eq!(plan.events[0].occurred_at, given);
    }

    #[test]
    fn snapshots_are_taken_at_multiples_of_the_interval() {
        let head = head(2, 3);
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(1),
            decision(&head, 8, None),
        )
        .unwrap();
        let versions: Vec<i64> = plan.snapshots.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, vec![3, 6, 9]);
        assert!(plan.snapshots.iter().all(|(v, s)| *s == state(*v)));
    }

    #[test]
    fn a_missing_snapshot_state_is_a_bug_not_a_silent_gap() {
        let head = head(0, 2);
        let mut decided = decision(&head, 2, None);
        decided.events[1].snapshot = None;
        let err = AppendPlan::new(&request(None), &head, at(0), at(1), decided).unwrap_err();
        assert!(matches!(err, StoreError::Internal(m) if m.contains("snapshot 2")));
    }

    #[test]
    fn an_empty_decision_is_refused() {
        let head = head(0, 2);
        let err = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(1),
            decision(&head, 0, None),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)));
    }

    #[test]
    fn recorded_keys_answer_before_the_expected_version() {
        let key = RecordedKey {
            event_id: "k".into(),
            instance_id: Uuid::from_u128(7),
            version: 3,
            content_hash: None,
        };
        let outcome = precheck(&request(Some(99)), 5, vec![key.clone()]).unwrap();
        assert!(
            matches!(outcome, Some(AppendOutcome::AlreadyRecorded { keys }) if keys == vec![key])
        );
    }

    #[test]
    fn a_wrong_expected_version_conflicts_and_a_right_one_goes_on() {
        let err = precheck(&request(Some(4)), 5, vec![]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Conflict {
                expected: 4,
                current: 5
            }
        ));
        assert!(precheck(&request(Some(5)), 5, vec![]).unwrap().is_none());
        assert!(precheck(&request(None), 5, vec![]).unwrap().is_none());
    }

    #[test]
    fn the_head_must_move_exactly_one_row() {
        let head = head(0, 100);
        let plan = AppendPlan::new(
            &request(None),
            &head,
            at(0),
            at(1),
            decision(&head, 1, None),
        )
        .unwrap();
        plan.head_moved(Uuid::from_u128(7), 1).unwrap();
        let err = plan.head_moved(Uuid::from_u128(7), 0).unwrap_err();
        assert!(matches!(err, StoreError::Internal(m) if m.contains("changed under its lock")));
    }

    #[test]
    fn attempts_stop_when_done_and_give_up_after_the_limit() {
        let mut tried = 0;
        let done = with_attempts_blocking(|n| {
            tried = n;
            Ok(if n < 2 {
                Attempt::KeyTaken
            } else {
                Attempt::Done(AppendOutcome::AlreadyRecorded { keys: vec![] })
            })
        });
        assert!(done.is_ok());
        assert_eq!(tried, 2);
        let err = with_attempts_blocking(|_| Ok(Attempt::KeyTaken)).unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)));
    }
}
