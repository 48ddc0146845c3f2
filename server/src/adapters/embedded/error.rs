//! SQLite failures and their meaning for the application.

use std::path::PathBuf;

use rusqlite::ErrorCode;

use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// DATA_DIR cannot be used: not a directory, cannot be created, not writable.
    #[error("data directory {}: {reason}", path.display())]
    DataDir { path: PathBuf, reason: String },
    /// The database file cannot be opened, is not a SQLite database, or is damaged.
    /// (The SQLite error is part of the message, not a `source`, so it is not printed twice.)
    #[error("embedded database {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// The file is a SQLite database, but not one this server created or can use.
    #[error("embedded database {}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("unexpected data in the embedded database: {0}")]
    Data(String),
    /// A blocking task running a statement panicked or was cancelled.
    #[error("embedded store worker: {0}")]
    Worker(String),
}

impl EmbeddedError {
    /// A stored value could not be read as what the schema says it is.
    fn is_unreadable_value(&self) -> bool {
        matches!(
            self,
            Self::Data(_)
                | Self::Sqlite(
                    rusqlite::Error::InvalidColumnType(..)
                        | rusqlite::Error::FromSqlConversionFailure(..)
                        | rusqlite::Error::IntegralValueOutOfRange(..)
                        | rusqlite::Error::Utf8Error(..)
                )
        )
    }

    /// The SQLite primary result code of this failure, if it is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Sqlite(e) | Self::Open { error: e, .. } => e.sqlite_error_code(),
            _ => None,
        }
    }

    /// The columns a UNIQUE or PRIMARY KEY violation hit (`"event_ids.event_id"`), if this is one.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, Some(message)))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Some(
                    message
                        .strip_prefix("UNIQUE constraint failed: ")
                        .unwrap_or(message),
                )
            }
            _ => None,
        }
    }
}

impl From<EmbeddedError> for StoreError {
    fn from(e: EmbeddedError) -> Self {
        match e.code() {
            // Another connection (another process on the same DATA_DIR, or a checkpoint) held the
            // lock past busy_timeout; a full disk may clear. Nothing was stored: safe to retry.
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull) => {
                StoreError::Unavailable(e.to_string())
            }
            // A damaged page or file: EmbeddedStore adds the path and reports itself unhealthy.
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e.to_string())
            }
            // A stored value that does not read back (not JSON, not a UUID, a column of the
            // wrong type): a damaged page SQLite itself did not notice. Damaged data, not a bug.
            _ if e.is_unreadable_value() => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_value_that_does_not_read_back_is_damaged_data() {
        let unreadable = [
            EmbeddedError::Data("payload is not JSON".into()),
            EmbeddedError::Sqlite(rusqlite::Error::InvalidColumnType(
                4,
                "version".into(),
                rusqlite::types::Type::Text,
            )),
        ];
        for e in unreadable {
            assert!(matches!(StoreError::from(e), StoreError::Corrupt(_)));
        }
        let bug = EmbeddedError::Worker("panicked".into());
        assert!(matches!(StoreError::from(bug), StoreError::Internal(_)));
    }
}
