//! The SQL the server issues, copied for the direct baselines.
//!
//! These are DUPLICATES of private text in `server/src/adapters/postgres/store.rs` and
//! `rows.rs` (`APPEND_SQL` is a private const, `SNAPSHOT_AND_TAIL_SQL_*` are `pub` in a private
//! module, `EVENT_COLUMNS` likewise). If the store's SQL changes, change it here too, or the
//! baselines stop measuring the same work.

/// `SELECT ... FOR UPDATE` of the instance row, as in `PgStore::try_append`.
pub const LOCK_SQL: &str = "SELECT entity_type_id, version, state, updated_at FROM instances \
                             WHERE id = $1 FOR UPDATE";

/// Copy of `APPEND_SQL` (store.rs).
pub const APPEND_SQL: &str = "
WITH ev AS (
    INSERT INTO events (instance_id, version, event_id, entity_type_id, event_type, payload,
                        metadata, mode, recorded_at, occurred_at)
    SELECT $1, u.v, u.eid, $2, u.et, u.p, u.m, u.md, $3, u.oa
    FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[], $9::text[],
                $10::timestamptz[]) AS u(v, eid, et, p, m, md, oa)
), k AS (
    INSERT INTO event_ids (event_id, instance_id, version)
    SELECT u.eid, $1, u.v FROM UNNEST($11::text[], $12::bigint[]) AS u(eid, v)
), s AS (
    INSERT INTO snapshots (instance_id, version, state)
    SELECT $1, u.v, u.st FROM UNNEST($13::bigint[], $14::jsonb[]) AS u(v, st)
), o AS (
    INSERT INTO outbox (instance_id, version)
    SELECT $1, u.v FROM UNNEST($4::bigint[]) AS u(v) WHERE $18
)
UPDATE instances SET version = $15, state = $16, updated_at = $3
WHERE id = $1 AND version = $17";

/// Copy of `rows::EVENT_COLUMNS`.
pub const EVENT_COLUMNS: &str = "e.event_id, e.instance_id, e.entity_type_id, e.event_type, \
     e.version, e.payload, e.metadata, e.mode, e.recorded_at, e.occurred_at";

/// Copy of `SNAPSHOT_AND_TAIL_SQL_HEAD` (store.rs).
const SNAPSHOT_AND_TAIL_SQL_HEAD: &str = "
WITH s AS (
    SELECT version, state FROM snapshots
    WHERE instance_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1
)
SELECT s.version, s.state,";

/// Copy of `SNAPSHOT_AND_TAIL_SQL_TAIL` (store.rs).
const SNAPSHOT_AND_TAIL_SQL_TAIL: &str = "
FROM (SELECT 1) AS one
LEFT JOIN s ON true
LEFT JOIN events e ON e.instance_id = $1 AND e.version >= COALESCE(s.version, 1)
                  AND e.version <= $2
ORDER BY e.version";

/// The snapshot-plus-tail query exactly as `PgStore::snapshot_and_tail` builds it.
pub fn snapshot_and_tail() -> String {
    format!("{SNAPSHOT_AND_TAIL_SQL_HEAD} {EVENT_COLUMNS} {SNAPSHOT_AND_TAIL_SQL_TAIL}")
}

/// A plain keyset page of an instance's events: the baseline for reading a whole history.
pub fn keyset_page() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.instance_id = $1 AND e.version > $2 \
         ORDER BY e.version LIMIT $3"
    )
}

/// Names of the copies above that no longer appear verbatim in the store's source, so a
/// baseline that drifted from the server's SQL is reported instead of silently compared.
pub fn drifted() -> Vec<&'static str> {
    let store = continuations(include_str!("../../adapters/postgres/store.rs"));
    let rows = continuations(include_str!("../../adapters/postgres/rows.rs"));
    let mut out = Vec::new();
    for (name, text, source) in [
        ("LOCK_SQL", LOCK_SQL, &store),
        ("APPEND_SQL", APPEND_SQL, &store),
        (
            "SNAPSHOT_AND_TAIL_SQL_HEAD",
            SNAPSHOT_AND_TAIL_SQL_HEAD,
            &store,
        ),
        (
            "SNAPSHOT_AND_TAIL_SQL_TAIL",
            SNAPSHOT_AND_TAIL_SQL_TAIL,
            &store,
        ),
        ("EVENT_COLUMNS", EVENT_COLUMNS, &rows),
    ] {
        if !source.contains(text) {
            out.push(name);
        }
    }
    out
}

/// Source text with Rust's `\`-newline string continuations applied (the newline and the next
/// line's leading whitespace removed), so string literals read as their values.
fn continuations(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("\\\n") {
        out.push_str(&rest[..at]);
        rest = rest[at + 2..].trim_start();
    }
    out.push_str(rest);
    out
}

/// One line saying whether the baselines run the server's SQL.
pub fn drift_line() -> String {
    let drifted = drifted();
    if drifted.is_empty() {
        "baseline SQL: verbatim copies of the store's statements (checked against store.rs/rows.rs)"
            .into()
    } else {
        format!(
            "WARNING: baseline SQL differs from the store's source for {}; update server/src/bin/bench/sql.rs",
            drifted.join(", ")
        )
    }
}
