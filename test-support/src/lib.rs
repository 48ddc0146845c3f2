//! What the server's and the SDK's integration tests share: each test owns a PostgreSQL database
//! of its own ([`TestDb`]), created on the server of `TEST_DATABASE_URL` and dropped when the test
//! ends, so tests run in parallel without seeing each other's data; a PostgreSQL with TimescaleDB
//! of its own ([`TimescaleDb`], a WASM build served on a loopback port); a real server on a
//! loopback port ([`server::TestServer`]); and [`for_each_backend!`], which runs one test body on
//! every implementation of a port.

pub mod server;
pub mod timescaledb;

pub use server::{Clients, TestServer, js, st};
pub use timescaledb::TimescaleDb;

/// Runs each `async fn name(backend: B)` of the calling module once per implementation: as
/// `module::name` for each `module => Variant` given, calling `super::name(super::B::Variant)` on
/// a multi-threaded runtime. A contract is written once; a behaviour that differs between two
/// implementations fails under the one that differs.
///
/// ```ignore
/// // `Backend` (in scope) with variants Postgres and Embedded: postgres::name, embedded::name.
/// for_each_backend!(first_test, second_test: 4);
/// // Any enum and modules.
/// for_each_backend!(CacheBackend { redis_cache => Redis, memory_cache => Memory };
///     cache_test,
/// );
/// ```
///
/// Each test gets 2 worker threads, or the number after its name (`name: 4`).
#[macro_export]
macro_rules! for_each_backend {
    ($backend:ident { $($module:ident => $variant:ident),+ $(,)? }; $($tests:tt)*) => {
        // The test list travels as one token tree, so it can repeat once per module.
        $crate::for_each_backend!(@modules $backend [$($module $variant)+] [$($tests)*]);
    };
    (@modules $backend:ident [$($module:ident $variant:ident)+] $tests:tt) => {
        $(
            $crate::for_each_backend!(@module $backend $module $variant $tests);
        )+
    };
    (@module $backend:ident $module:ident $variant:ident
        [$($name:ident $(: $threads:literal)?),* $(,)?]) => {
        mod $module {
            $(
                $crate::for_each_backend!(@test $backend $variant $name $($threads)?);
            )*
        }
    };
    (@test $backend:ident $variant:ident $name:ident) => {
        $crate::for_each_backend!(@test $backend $variant $name 2);
    };
    (@test $backend:ident $variant:ident $name:ident $threads:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $name() {
            super::$name(super::$backend::$variant).await;
        }
    };
    // The stores: `Backend::Postgres` as `postgres::`, `Backend::Embedded` as `embedded::`.
    ($($tests:tt)*) => {
        $crate::for_each_backend!(
            Backend { postgres => Postgres, embedded => Embedded }; $($tests)*
        );
    };
}

/// The PostgreSQL server that hosts the per-test databases: `TEST_DATABASE_URL`, by default the
/// local one that `scripts/test.sh` makes sure runs.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped (with its connections) when the value is.
pub struct TestDb {
    /// The database's name: `tse_test_` and a random UUID.
    pub name: String,
    /// Its URL: `admin_url()` with the database name replaced.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database. Panics, naming `TEST_DATABASE_URL`, when PostgreSQL is not
    /// reachable.
    pub async fn create() -> Self {
        let name = format!("tse_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect(
                "connect to the test PostgreSQL (TEST_DATABASE_URL); scripts/test.sh starts it",
            );
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = with_dbname(&admin, &name);
        Self { name, url }
    }

    /// A direct connection, for checking what is stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Number of rows of a table.
    pub async fn count(&self, table: &str) -> i64 {
        let c = self.client().await;
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// `postgres://user@host:port/db?opts` with another database.
fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| i + scheme_end);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Drop runs outside async: a short-lived runtime on a thread of its own cleans up.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_dbname("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_dbname("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
