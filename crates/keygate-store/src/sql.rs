//! The `Store` impl of each backend: its name, its migrator and the maintenance statements.
//! Still a macro because `Store` needs every role trait, and the grant store, job queue and event
//! log (`sql_grants.rs`) are still implemented per backend; the other roles are generic
//! functions over [`crate::dialect::Dialect`].

macro_rules! impl_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, name = $backend:literal, migrator = $migrator:path) => {
        use async_trait::async_trait;
        use keygate_domain::Error;
        use time::OffsetDateTime;

        use crate::error::StoreError;
        use crate::traits::*;
        use crate::util::{db_err, to_micros};

        #[async_trait]
        impl Store for $store {
            fn backend_name(&self) -> &'static str {
                $backend
            }

            fn pool(&self) -> crate::StorePool {
                self.pool.clone().into()
            }

            async fn migrate(&self) -> Result<i64, Error> {
                $migrator()
                    .run(&self.pool)
                    .await
                    .map_err(StoreError::from)?;
                self.schema_version().await
            }

            async fn schema_version(&self) -> Result<i64, Error> {
                let v: Result<i64, sqlx::Error> = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&self.pool)
                .await;
                match v {
                    Ok(v) => Ok(v),
                    // No migrations table yet: an empty database.
                    Err(sqlx::Error::Database(_)) => Ok(0),
                    Err(e) => Err(db_err(e)),
                }
            }

            async fn ping(&self) -> Result<(), Error> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn purge_finished_jobs(&self, before: OffsetDateTime) -> Result<u64, Error> {
                Ok(
                    sqlx::query("DELETE FROM jobs WHERE state = 'done' AND updated_at < $1")
                        .bind(to_micros(before))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?
                        .rows_affected(),
                )
            }

            async fn purge_idempotency(&self, before: OffsetDateTime) -> Result<u64, Error> {
                Ok(
                    sqlx::query("DELETE FROM idempotency_records WHERE created_at < $1")
                        .bind(to_micros(before))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?
                        .rows_affected(),
                )
            }
        }
    };
}

pub(crate) use impl_store;
