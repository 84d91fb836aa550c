//! Throw-away databases for tests: a SQLite file in a temp directory, or a fresh PostgreSQL
//! database created on the server named by `KEYGATE_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;

use crate::{Store, open};

/// The admin connection used to create test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("KEYGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A migrated store on a database nobody else uses. Dropping it does not delete the database:
/// `tools/test` throws its whole cluster away after the run; on a server you provide,
/// `keygate_test_*` databases stay until you drop them.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    /// A new SQLite database file.
    pub async fn sqlite() -> Self {
        let dir = TempDir::new("keygate-test");
        let url = format!("sqlite://{}", dir.0.join("keygate.db").display());
        Self::migrated(url, Some(dir)).await
    }

    /// A new PostgreSQL database. Panics when the server cannot be reached: CI starts it, and a
    /// skipped backend would hide exactly the differences this suite exists to catch.
    pub async fn postgres() -> Self {
        let url = create_postgres_database().await;
        Self::migrated(url, None).await
    }

    async fn migrated(url: String, dir: Option<TempDir>) -> Self {
        let store = open(&url).expect("open test store");
        store.migrate().await.expect("migrate test store");
        Self {
            store,
            url,
            _dir: dir,
        }
    }
}

/// Creates an empty database and returns its URL.
pub async fn create_postgres_database() -> String {
    use sqlx::Connection as _;
    let admin = postgres_admin_url();
    let name = format!("keygate_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is not reachable ({e}); start it or set KEYGATE_TEST_DATABASE_URL"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}
