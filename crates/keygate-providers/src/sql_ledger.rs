//! The virtual systems' ledger in SQL: their "vendor database", in the tables
//! `sandbox_credentials` and `sandbox_unlocks` of the store of record's database (created by the
//! store's migrations), so what they issued survives restarts and is shared by every orchestrator
//! replica. It holds its own handle on the store's pool and shares nothing else with the store.

use async_trait::async_trait;
use keygate_domain::action::UnlockJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, WorkspaceId};
use keygate_domain::model::{AccessSystem, SandboxCredential};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;

use crate::virtual_system::Ledger;

/// A ledger failure, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("sandbox ledger: {0}")]
    Db(#[from] sqlx::Error),
    #[error("sandbox ledger: stored {what} {value:?} does not decode")]
    Corrupt { what: &'static str, value: String },
}

const COUNT_UNLOCKS: &str = "SELECT COUNT(*) FROM sandbox_unlocks WHERE workspace_id = $1";
const COUNT_CREDENTIALS: &str = "SELECT COUNT(*) FROM sandbox_credentials WHERE workspace_id = $1";

/// The ledger on the store's PostgreSQL or SQLite pool.
pub enum SqlLedger {
    Postgres(Sql<sqlx::Postgres>),
    Sqlite(Sql<sqlx::Sqlite>),
}

impl SqlLedger {
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::Postgres(Sql(pool))
    }

    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::Sqlite(Sql(pool))
    }

    /// Remote unlocks the sandbox systems of a workspace performed.
    pub async fn count_unlocks(&self, ws: WorkspaceId) -> Result<i64, LedgerError> {
        match self {
            Self::Postgres(l) => l.count(COUNT_UNLOCKS, ws).await,
            Self::Sqlite(l) => l.count(COUNT_UNLOCKS, ws).await,
        }
    }

    /// Credentials the sandbox systems of a workspace hold.
    pub async fn count_credentials(&self, ws: WorkspaceId) -> Result<i64, LedgerError> {
        match self {
            Self::Postgres(l) => l.count(COUNT_CREDENTIALS, ws).await,
            Self::Sqlite(l) => l.count(COUNT_CREDENTIALS, ws).await,
        }
    }
}

#[async_trait]
impl Ledger for SqlLedger {
    async fn put(&self, c: &SandboxCredential) -> Result<SandboxCredential, String> {
        match self {
            Self::Postgres(l) => l.put(c).await,
            Self::Sqlite(l) => l.put(c).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn get(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<SandboxCredential>, String> {
        match self {
            Self::Postgres(l) => l.get(system, method).await,
            Self::Sqlite(l) => l.get(system, method).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn remove(&self, system: AccessSystemId, method: AccessMethodId) -> Result<(), String> {
        match self {
            Self::Postgres(l) => l.remove(system, method).await,
            Self::Sqlite(l) => l.remove(system, method).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn unlocked(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), String> {
        match self {
            Self::Postgres(l) => l.unlocked(system, job).await,
            Self::Sqlite(l) => l.unlocked(system, job).await,
        }
        .map_err(|e| e.to_string())
    }
}

/// The ledger's SQL, the same text for both dialects.
pub struct Sql<DB: Database>(Pool<DB>);

#[derive(sqlx::FromRow)]
struct CredentialRow {
    acs_system_id: String,
    access_method_id: String,
    workspace_id: String,
    provider_user_id: String,
    credential_id: String,
    entrance_ids: String,
    code: Option<String>,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
}

fn parse<T: std::str::FromStr>(what: &'static str, value: String) -> Result<T, LedgerError> {
    value
        .parse()
        .map_err(|_| LedgerError::Corrupt { what, value })
}

fn time(what: &'static str, us: Option<i64>) -> Result<Option<OffsetDateTime>, LedgerError> {
    us.map(|us| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(|_| {
            LedgerError::Corrupt {
                what,
                value: us.to_string(),
            }
        })
    })
    .transpose()
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

impl TryFrom<CredentialRow> for SandboxCredential {
    type Error = LedgerError;

    fn try_from(r: CredentialRow) -> Result<Self, LedgerError> {
        let entrance_ids =
            serde_json::from_str(&r.entrance_ids).map_err(|_| LedgerError::Corrupt {
                what: "entrance_ids",
                value: r.entrance_ids.clone(),
            })?;
        Ok(SandboxCredential {
            acs_system_id: parse("acs_system_id", r.acs_system_id)?,
            access_method_id: parse("access_method_id", r.access_method_id)?,
            workspace_id: parse("workspace_id", r.workspace_id)?,
            provider_user_id: r.provider_user_id,
            credential_id: r.credential_id,
            entrance_ids,
            code: r.code,
            starts_at: time("starts_at", r.starts_at)?,
            ends_at: time("ends_at", r.ends_at)?,
        })
    }
}

impl<DB> Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// A repeat keeps the first ids and code; entrances and schedule follow the latest call.
    async fn put(&self, c: &SandboxCredential) -> Result<SandboxCredential, LedgerError> {
        let entrances =
            serde_json::to_string(&c.entrance_ids).map_err(|_| LedgerError::Corrupt {
                what: "entrance_ids",
                value: format!("{:?}", c.entrance_ids),
            })?;
        sqlx::query("INSERT INTO sandbox_credentials (acs_system_id, access_method_id, workspace_id, provider_user_id, credential_id, entrance_ids, code, created_at, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (acs_system_id, access_method_id) DO UPDATE SET entrance_ids = excluded.entrance_ids, starts_at = excluded.starts_at, ends_at = excluded.ends_at")
            .bind(c.acs_system_id.to_string())
            .bind(c.access_method_id.to_string())
            .bind(c.workspace_id.to_string())
            .bind(c.provider_user_id.clone())
            .bind(c.credential_id.clone())
            .bind(entrances)
            .bind(c.code.clone())
            .bind(micros(keygate_domain::model::now()))
            .bind(c.starts_at.map(micros))
            .bind(c.ends_at.map(micros))
            .execute(&self.0)
            .await?;
        self.get(c.acs_system_id, c.access_method_id)
            .await?
            .ok_or(LedgerError::Db(sqlx::Error::RowNotFound))
    }

    async fn get(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<SandboxCredential>, LedgerError> {
        let row: Option<CredentialRow> = sqlx::query_as("SELECT acs_system_id, access_method_id, workspace_id, provider_user_id, credential_id, entrance_ids, code, starts_at, ends_at FROM sandbox_credentials WHERE acs_system_id = $1 AND access_method_id = $2")
            .bind(system.to_string())
            .bind(method.to_string())
            .fetch_optional(&self.0)
            .await?;
        row.map(SandboxCredential::try_from).transpose()
    }

    /// Removing a credential that is not there is fine.
    async fn remove(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "DELETE FROM sandbox_credentials WHERE acs_system_id = $1 AND access_method_id = $2",
        )
        .bind(system.to_string())
        .bind(method.to_string())
        .execute(&self.0)
        .await?;
        Ok(())
    }

    /// Records a remote unlock (idempotent by attempt).
    async fn unlocked(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO sandbox_unlocks (action_attempt_id, workspace_id, acs_system_id, acs_entrance_id, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (action_attempt_id) DO NOTHING")
            .bind(job.action_attempt_id.to_string())
            .bind(system.workspace_id.to_string())
            .bind(system.id.to_string())
            .bind(job.acs_entrance_id.to_string())
            .bind(micros(keygate_domain::model::now()))
            .execute(&self.0)
            .await?;
        Ok(())
    }

    async fn count(&self, sql: &'static str, ws: WorkspaceId) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar(sql)
            .bind(ws.to_string())
            .fetch_one(&self.0)
            .await?)
    }
}
