//! The pool's timeouts: every PostgreSQL connection carries the statement timeout, so a
//! statement stuck on a lock or a slow plan is cancelled by the server instead of hanging a call.

use std::time::{Duration, Instant};

use keygate_store::testdb::{TempDir, create_postgres_database};
use keygate_store::{PoolSettings, StorePool, open_with};

#[tokio::test]
async fn postgres_connections_carry_the_statement_timeout() {
    let url = create_postgres_database().await;
    let settings = PoolSettings {
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Some(Duration::from_millis(300)),
        max_connections: None,
    };
    let store = open_with(&url, &settings).expect("open");
    let StorePool::Postgres(pool) = store.pool() else {
        panic!("a postgres:// URL opens PostgreSQL");
    };
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(shown, "300ms");
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&pool)
        .await
        .expect_err("cancelled by the server");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("statement timeout"), "{err}");
    // The connection is still usable afterwards.
    store.ping().await.expect("ping");

    // Without a statement timeout (keygate migrate), statements may run long.
    let unlimited = open_with(
        &url,
        &PoolSettings {
            statement_timeout: None,
            ..settings
        },
    )
    .expect("open");
    let StorePool::Postgres(pool) = unlimited.pool() else {
        panic!("postgres");
    };
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(shown, "0");
}

#[tokio::test]
async fn sqlite_waits_for_a_locked_file_at_most_the_statement_timeout() {
    let dir = TempDir::new("keygate-pool");
    let url = format!("sqlite://{}", dir.0.join("keygate.db").display());
    let settings = PoolSettings {
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Some(Duration::from_millis(300)),
        max_connections: None,
    };
    let store = open_with(&url, &settings).expect("open");
    store.migrate().await.expect("migrate");
    let StorePool::Sqlite(pool) = store.pool() else {
        panic!("a file URL opens SQLite");
    };
    // One connection holds the write lock; a write on another waits for the busy timeout only.
    let mut holder = pool.acquire().await.expect("acquire");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .expect("lock");
    let started = Instant::now();
    let err = sqlx::query("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        .execute(&pool)
        .await
        .expect_err("busy");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(err.to_string().contains("locked"), "{err}");
    sqlx::query("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("unlock");
}

/// `KEYGATE_DATABASE_POOL_SIZE`: the pool opens no more than its size; a call that finds every
/// connection taken waits for the acquire timeout and fails, and succeeds once one is free.
#[tokio::test]
async fn the_pool_opens_no_more_connections_than_its_size() {
    let url = create_postgres_database().await;
    let settings = PoolSettings {
        acquire_timeout: Duration::from_millis(300),
        statement_timeout: None,
        max_connections: Some(2),
    };
    let store = open_with(&url, &settings).expect("open");
    let StorePool::Postgres(pool) = store.pool() else {
        panic!("a postgres:// URL opens PostgreSQL");
    };
    let first = pool.acquire().await.expect("first");
    let second = pool.acquire().await.expect("second");
    let started = Instant::now();
    assert!(store.ping().await.is_err(), "a third connection is refused");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(pool.size(), 2);
    drop(first);
    store
        .ping()
        .await
        .expect("a freed connection serves the next call");
    drop(second);
}
