//! Global positions on PostgreSQL: every transaction that writes events numbers them last,
//! under a transaction-level advisory lock taken right before the draw and released by its
//! commit. Positions are therefore handed out in commit order, across every server sharing the
//! database: a transaction that has drawn holds the lock until it has committed, and the next
//! one draws only after that. A reader that saw position `p` committed can never later see a
//! smaller one appear, which a bare sequence does not promise (two transactions draw 5 and 6,
//! 6 commits first). The lock is held only through one indexed `UPDATE` and the commit, never
//! through the rest of the transaction.
//!
//! The group commit's statement (`group.rs`, the hot append path) does better: it takes the
//! lock inside the statement, after its heads have moved and its ids are claimed, and inserts
//! its events with their positions, so no event row is written twice. Holding the lock, it
//! waits for no other transaction (its rows are locked and its unique keys claimed already),
//! so the two ways never deadlock each other, and both draw under the lock they commit with.

use tokio_postgres::Statement;
use uuid::Uuid;

use super::PgError;

/// The advisory lock's key ("tempSTEP"); distinct from the migration and retention keys.
pub const POSITION_LOCK_KEY: i64 = 0x7465_6d70_5354_4550;

/// Takes the position lock until the transaction ends. $1 = [`POSITION_LOCK_KEY`].
pub const POSITION_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

/// Numbers the events this transaction inserted (every one with a NULL position: other
/// transactions' uncommitted rows are invisible, committed ones are numbered), in (instance,
/// version) order so an instance's versions get increasing positions. The numbers come from
/// a sequence drawn under the lock; a rolled-back transaction leaves a gap, never a reuse.
/// Returns (instance id, version, position) of each.
pub const DRAW_POSITIONS_SQL: &str = "
WITH p AS MATERIALIZED (
    SELECT o.instance_id, o.version, nextval('events_position_seq') AS pos
    FROM (SELECT instance_id, version FROM events WHERE position IS NULL
          ORDER BY instance_id, version OFFSET 0) o
)
UPDATE events e SET position = p.pos FROM p
WHERE e.instance_id = p.instance_id AND e.version = p.version AND e.position IS NULL
RETURNING e.instance_id, e.version, e.position";

/// What a draw numbered: (instance id, version, position).
pub type Drawn = Vec<(Uuid, i64, i64)>;

/// The two statements of the draw, prepared on one connection.
pub struct Draw {
    pub lock: Statement,
    pub draw: Statement,
}

impl Draw {
    pub async fn prepare(client: &impl deadpool_postgres::GenericClient) -> Result<Self, PgError> {
        Ok(Self {
            lock: client.prepare_cached(POSITION_LOCK_SQL).await?,
            draw: client.prepare_cached(DRAW_POSITIONS_SQL).await?,
        })
    }

    /// Takes the lock and numbers the transaction's events, the two statements pipelined:
    /// call it last before COMMIT.
    pub async fn run(
        &self,
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<Drawn, PgError> {
        let (locked, drawn) = tokio::join!(
            client.execute(&self.lock, &[&POSITION_LOCK_KEY]),
            client.query(&self.draw, &[]),
        );
        locked?;
        Ok(rows(drawn?))
    }
}

/// The rows of [`DRAW_POSITIONS_SQL`].
pub fn rows(rows: Vec<tokio_postgres::Row>) -> Drawn {
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The (version, position) pairs of one instance.
pub fn of(drawn: &Drawn, instance_id: Uuid) -> Vec<(i64, i64)> {
    drawn
        .iter()
        .filter(|(i, _, _)| *i == instance_id)
        .map(|(_, v, p)| (*v, *p))
        .collect()
}

/// Sets the position of each of `events` from what a draw numbered.
pub fn assign(events: &mut [crate::ports::EventRecord], drawn: &Drawn) {
    for e in events {
        if let Some((_, _, p)) = drawn
            .iter()
            .find(|(i, v, _)| *i == e.instance_id && *v == e.version)
        {
            e.position = *p;
        }
    }
}
