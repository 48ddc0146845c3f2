//! PostgreSQL failures and their meaning for the application.

use crate::ports::StoreError;

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a foreign key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("unexpected data in the database: {0}")]
    Data(String),
}

/// The server's own message and SQLSTATE where it answered (tokio-postgres alone says only
/// "db error"), so a logged internal failure names its cause.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => with_causes(e),
    }
}

/// An error and its causes: "error performing TLS handshake" alone does not say that the
/// certificate was not valid for the host name.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl PgError {
    /// Whether a referenced row (an entity type, an instance) does not exist.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, Self::Db(e) if e.as_db_error().is_some_and(|db| db.code().code() == FOREIGN_KEY_VIOLATION))
    }

    /// The constraint a unique violation hit, if this is one.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e
                .as_db_error()
                .filter(|db| db.code().code() == UNIQUE_VIOLATION)
                .map(|db| db.constraint().unwrap_or_default()),
            _ => None,
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match &e {
            PgError::Pool(_) => StoreError::Unavailable(e.to_string()),
            // No server answer at all (refused, reset, closed): the database is unavailable.
            PgError::Db(db) if db.as_db_error().is_none() => StoreError::Unavailable(e.to_string()),
            PgError::Db(db) => match db.as_db_error().map(|d| d.code().code()) {
                // Admin shutdown, cannot connect now, too many connections, serialization/deadlock.
                Some(c)
                    if c.starts_with("57P")
                        || c.starts_with("08")
                        || c == "53300"
                        || c == "40001"
                        || c == "40P01" =>
                {
                    StoreError::Unavailable(e.to_string())
                }
                // query_canceled (statement_timeout, REQUEST_TIMEOUT_SECS) and lock_not_available:
                // the statement was cut off and its transaction rolled back, nothing was stored;
                // retrying later is safe.
                Some("57014" | "55P03") => StoreError::TimedOut(
                    "the database did not finish in time (statement timeout); nothing was \
                     stored, retry later"
                        .into(),
                ),
                // data_corrupted, index_corrupted.
                Some("XX001" | "XX002") => StoreError::Corrupt(e.to_string()),
                _ => StoreError::Internal(e.to_string()),
            },
            PgError::Config(_) | PgError::Data(_) => StoreError::Internal(e.to_string()),
        }
    }
}
