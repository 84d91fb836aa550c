//! The `Store` impl: the backend's name, its migrator and the maintenance statements, for every
//! dialect. The role traits it requires are implemented, generically too, in their own modules.

use async_trait::async_trait;
use keygate_domain::Error;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Executor, IntoArguments, Pool};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue};
use crate::error::{StoreError, StoreResult};
use crate::traits::Store;
use crate::util::to_micros;

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    usize: ColumnIndex<D::Row>,
    i64: SqlValue<D>,
{
    async fn applied_version(&self) -> StoreResult<i64> {
        let v: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .await;
        match v {
            Ok(v) => Ok(v),
            // No migrations table yet: an empty database.
            Err(sqlx::Error::Database(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes with `sql`, whose one parameter is a time; returns how many rows went.
    async fn purge(&self, sql: &'static str, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query(sql)
            .bind(to_micros(before))
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&done))
    }
}

#[async_trait]
impl<D> Store for SqlStore<D>
where
    D: Dialect,
    D::Connection: Migrate,
    crate::StorePool: From<Pool<D>>,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    i32: SqlValue<D>,
    Option<i32>: SqlValue<D>,
    bool: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    fn backend_name(&self) -> &'static str {
        <D as Dialect>::NAME
    }

    fn pool(&self) -> crate::StorePool {
        self.pool.clone().into()
    }

    async fn migrate(&self) -> Result<i64, Error> {
        D::migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::from)?;
        self.schema_version().await
    }

    async fn schema_version(&self) -> Result<i64, Error> {
        Ok(self.applied_version().await?)
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn purge_finished_jobs(&self, before: OffsetDateTime) -> Result<u64, Error> {
        Ok(self
            .purge(
                "DELETE FROM jobs WHERE state = 'done' AND updated_at < $1",
                before,
            )
            .await?)
    }

    async fn purge_idempotency(&self, before: OffsetDateTime) -> Result<u64, Error> {
        Ok(self
            .purge(
                "DELETE FROM idempotency_records WHERE created_at < $1",
                before,
            )
            .await?)
    }
}
