//! The two SQL dialects behind one generic store. Both accept `$N` placeholders,
//! `ON CONFLICT ... DO NOTHING` and the same column types (text ids, bigint microsecond times), so
//! the statements are shared; [`Dialect`] carries the few fragments that differ.

use sqlx::{Database, Decode, Encode, Pool, Type};

/// The fragments of SQL that differ between PostgreSQL and SQLite.
pub trait Dialect: Database {
    /// The backend's name, as `Store::backend_name` reports it.
    const NAME: &'static str;
    /// Begins a transaction that writes. SQLite takes the write lock at BEGIN (IMMEDIATE): a
    /// deferred transaction that reads and then writes can fail with SQLITE_BUSY without waiting,
    /// because SQLite will not upgrade its lock.
    const BEGIN: &'static str;
    /// Begins a read that must see one snapshot (a grant and its doors, read in several
    /// statements): `REPEATABLE READ READ ONLY` on PostgreSQL; a deferred SQLite transaction
    /// reads one snapshot already.
    const READ: &'static str;
    /// Appended to a SELECT that reads rows it will update in the same transaction: `FOR UPDATE`
    /// on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serializes writers.
    const LOCK: &'static str;
    /// Appended to the inner SELECT of a claim (an UPDATE of the rows it picks): PostgreSQL skips
    /// rows another claimer holds, so claimers never wait on each other; SQLite serializes
    /// writers at BEGIN IMMEDIATE and needs nothing.
    const SKIP_LOCKED: &'static str;

    /// [`Self::SKIP_LOCKED`] for a claim whose inner SELECT joins: only the rows of `alias` are
    /// locked (and skipped).
    fn skip_locked_of(alias: &str) -> String;

    /// A condition that `column` is one of the comma-separated values bound at `param`.
    fn in_list(column: &str, param: &str) -> String;

    /// Rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The embedded migrations of this dialect.
    fn migrator() -> sqlx::migrate::Migrator;
}

impl Dialect for sqlx::Postgres {
    const NAME: &'static str = "postgres";
    const BEGIN: &'static str = "BEGIN";
    const READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const LOCK: &'static str = " FOR UPDATE";

    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn skip_locked_of(alias: &str) -> String {
        format!(" FOR UPDATE OF {alias} SKIP LOCKED")
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} = ANY(string_to_array({param}, ','))")
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migrator() -> sqlx::migrate::Migrator {
        crate::migrate::postgres()
    }
}

impl Dialect for sqlx::Sqlite {
    const NAME: &'static str = "sqlite";
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const READ: &'static str = "BEGIN";
    const LOCK: &'static str = "";

    const SKIP_LOCKED: &'static str = "";

    fn skip_locked_of(_alias: &str) -> String {
        String::new()
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("instr(',' || {param} || ',', ',' || {column} || ',') > 0")
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migrator() -> sqlx::migrate::Migrator {
        crate::migrate::sqlite()
    }
}

/// The store of record over one dialect: every storage trait, on a sqlx pool.
pub struct SqlStore<D: Database> {
    pub(crate) pool: Pool<D>,
}

impl From<sqlx::PgPool> for crate::StorePool {
    fn from(pool: sqlx::PgPool) -> Self {
        Self::Postgres(pool)
    }
}

impl From<sqlx::SqlitePool> for crate::StorePool {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Self::Sqlite(pool)
    }
}

impl<D: Database> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

/// A Rust type that both binds as a parameter and decodes from a column of dialect `D`. Bundled
/// into one trait so that the where-clauses of the generic SQL stay short: naming
/// `String: SqlValue<D>` brings the three sqlx bounds along.
pub trait SqlValue<D: Database>:
    for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D> + Send
{
}

impl<D: Database, T> SqlValue<D> for T where
    T: for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D> + Send
{
}

/// SQL assembled at run time from constant fragments only (a dialect's lock clause, a column
/// list), never from input.
pub(crate) fn assembled(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}
