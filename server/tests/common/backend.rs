//! The storage a test's server runs on: a PostgreSQL database of its own, or the embedded
//! store in a DATA_DIR of its own. With `for_each_backend!`, one test body runs on both, and
//! checks what is stored directly (SQL on PostgreSQL, a read-only rusqlite connection to the
//! embedded database file).

use serde_json::Value;

use super::{TestDb, TestServer};

/// The store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Embedded,
}

/// One test's storage: a PostgreSQL database of its own, or a DATA_DIR of its own.
pub enum Store {
    Postgres(TestDb),
    Embedded(tempfile::TempDir),
}

impl Store {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::Postgres(TestDb::create().await),
            Backend::Embedded => Self::Embedded(tempfile::tempdir().expect("a temporary DATA_DIR")),
        }
    }

    /// The flags that point a server at this storage.
    pub fn flags(&self) -> Vec<&str> {
        match self {
            Self::Postgres(db) => vec!["--database-url", &db.url],
            Self::Embedded(dir) => vec!["--data-dir", dir.path().to_str().expect("a UTF-8 path")],
        }
    }

    /// A server on this storage; servers started one after another see the same data.
    pub async fn start(&self, extra_args: &[&str]) -> TestServer {
        match self {
            Self::Postgres(db) => TestServer::start(&db.url, extra_args).await,
            Self::Embedded(dir) => TestServer::start_embedded(dir.path(), extra_args).await,
        }
    }

    /// A read-only connection to the embedded database file, beside the server's own.
    pub fn sqlite(dir: &tempfile::TempDir) -> rusqlite::Connection {
        use temporal_state_server::adapters::embedded::DB_FILE;
        rusqlite::Connection::open_with_flags(
            dir.path().join(DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the embedded database read-only")
    }

    /// Number of rows of a table, read directly from the store.
    pub async fn count(&self, table: &str) -> i64 {
        match self {
            Self::Postgres(db) => db.count(table).await,
            Self::Embedded(dir) => Self::sqlite(dir)
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap(),
        }
    }

    /// Every snapshot as (version, state), in version order, read directly from the store.
    pub async fn snapshots(&self) -> Vec<(i64, Value)> {
        const SQL: &str = "SELECT version, state FROM snapshots ORDER BY version";
        match self {
            Self::Postgres(db) => db
                .client()
                .await
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            Self::Embedded(dir) => {
                let conn = Self::sqlite(dir);
                let mut stmt = conn.prepare(SQL).unwrap();
                stmt.query_map([], |r| {
                    let state: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&state).unwrap()))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
        }
    }
}
