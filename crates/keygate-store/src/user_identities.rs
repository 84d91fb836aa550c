//! User identities, the settings table and idempotency replays.

use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::Error;
use keygate_domain::Resource;
use keygate_domain::action::UnlockScope;
use keygate_domain::events::{self, Event, NewEvent};
use keygate_domain::ids::{AccessGrantId, InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::model::{
    IdentityDeleted, NewUserIdentity, UserIdentity, UserIdentityFilter, UserIdentityPatch,
    truncate_to_micros,
};
use keygate_domain::page::{Page, PageRequest};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::common::IdempotencyRow;
use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult, user_identity_key_taken};
use crate::traits::{Idempotency, IdempotencyStore, SettingsStore, UserIdentityStore};
use crate::util::{fetch_limit, from_micros, into_page, parse, to_micros};

/// The columns of [`UserIdentityRow`].
const UI_COLS: &str = "user_identity_id, workspace_id, user_identity_key, full_name, email_address, phone_number, created_at, updated_at";

static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {UI_COLS} FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2"
    )
});
static SELECT_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {UI_COLS} FROM user_identities WHERE workspace_id = $1 AND user_identity_id > $2 AND ($3 = '' OR user_identity_key = $3) AND ($4 = '' OR lower(email_address) = lower($4)) ORDER BY user_identity_id LIMIT $5"
    )
});
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO user_identities ({UI_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
});

/// How many of `it`, as a summary counts them.
fn count<T>(it: impl Iterator<Item = T>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

#[derive(sqlx::FromRow)]
struct UserIdentityRow {
    user_identity_id: String,
    workspace_id: String,
    user_identity_key: Option<String>,
    full_name: String,
    email_address: Option<String>,
    phone_number: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserIdentityRow> for UserIdentity {
    type Error = StoreError;

    fn try_from(r: UserIdentityRow) -> StoreResult<Self> {
        Ok(UserIdentity {
            id: parse("user_identity_id", &r.user_identity_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            user_identity_key: r.user_identity_key,
            full_name: r.full_name,
            email_address: r.email_address,
            phone_number: r.phone_number,
            created_at: from_micros(r.created_at)?,
            updated_at: from_micros(r.updated_at)?,
        })
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    /// Locks a person's row (`FOR UPDATE` on PostgreSQL; SQLite's writers are serialized
    /// already) in an open transaction: what is created for the person (a grant, an Instant
    /// Key) cannot commit beside a delete of the person. `NotFound` when the person is gone.
    pub(crate) async fn lock_person(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> StoreResult<()> {
        let found: Option<String> = sqlx::query_scalar(assembled(format!(
            "SELECT user_identity_id FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::not_found(Resource::UserIdentity, id.to_string()).into()),
        }
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn user_identity_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> StoreResult<UserIdentity> {
        let row: UserIdentityRow = sqlx::query_as(SELECT_ONE.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::UserIdentity, id.to_string()))?;
        row.try_into()
    }

    async fn create_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        new: &NewUserIdentity,
        idem: Option<&Idempotency>,
        now: OffsetDateTime,
    ) -> StoreResult<UserIdentity> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if let Some(first) =
            Self::claim_idempotency(&mut tx, ws, idem, &id.to_string(), now).await?
        {
            drop(tx);
            let mut conn = self.pool.acquire().await?;
            return Self::user_identity_in(&mut conn, ws, parse("user_identity_id", &first)?).await;
        }
        let created = UserIdentity {
            id,
            workspace_id: ws,
            user_identity_key: new.user_identity_key.clone(),
            full_name: new.full_name.clone(),
            email_address: new.email_address.clone(),
            phone_number: new.phone_number.clone(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(INSERT.as_str())
            .bind(id.to_string())
            .bind(ws.to_string())
            .bind(created.user_identity_key.clone())
            .bind(created.full_name.clone())
            .bind(created.email_address.clone())
            .bind(created.phone_number.clone())
            .bind(to_micros(now))
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from(e).on_unique(user_identity_key_taken))?;
        tx.commit().await?;
        Ok(created)
    }

    async fn list_identities(
        &self,
        ws: WorkspaceId,
        filter: &UserIdentityFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<UserIdentity>> {
        let rows: Vec<UserIdentityRow> = sqlx::query_as(SELECT_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(filter.user_identity_key.clone().unwrap_or_default())
            .bind(filter.email_address.clone().unwrap_or_default())
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .into_iter()
            .map(UserIdentity::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(items, page.limit, |u| u.id.to_string()))
    }

    async fn update_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        patch: &UserIdentityPatch,
        now: OffsetDateTime,
    ) -> StoreResult<UserIdentity> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let mut u = Self::user_identity_in(&mut tx, ws, id).await?;
        if let Some(k) = &patch.user_identity_key {
            u.user_identity_key = k.clone();
        }
        if let Some(n) = &patch.full_name {
            u.full_name = n.clone();
        }
        if let Some(e) = &patch.email_address {
            u.email_address = e.clone();
        }
        if let Some(p) = &patch.phone_number {
            u.phone_number = p.clone();
        }
        u.updated_at = now;
        sqlx::query("UPDATE user_identities SET user_identity_key = $3, full_name = $4, email_address = $5, phone_number = $6, updated_at = $7 WHERE workspace_id = $1 AND user_identity_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(u.user_identity_key.clone())
            .bind(u.full_name.clone())
            .bind(u.email_address.clone())
            .bind(u.phone_number.clone())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from(e).on_unique(user_identity_key_taken))?;
        tx.commit().await?;
        Ok(u)
    }

    async fn setting(&self, key: &str, init: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key.to_owned())
        .bind(init.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key.to_owned())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn replay_of(&self, ws: WorkspaceId, idem: &Idempotency) -> StoreResult<Option<String>> {
        let prior: Option<IdempotencyRow> = sqlx::query_as(IdempotencyRow::SELECT)
            .bind(ws.to_string())
            .bind(idem.request_id.clone())
            .fetch_optional(&self.pool)
            .await?;
        Ok(prior.map(|p| p.first_result(idem)).transpose()?)
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    i32: SqlValue<D>,
    bool: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    /// Deletes a person and everything that gives them access, in one transaction: the person's
    /// row is locked first (so no grant or key is created for them meanwhile), every live grant
    /// is deleted as `DeleteAccessGrant` deletes one (methods deleted, revocations queued, the
    /// grants' Instant Keys revoked), their other Instant Keys are revoked as `RevokeInstantKey`
    /// revokes one, their access system users are unlinked, and `user_identity.deleted` ends the
    /// events.
    #[tracing::instrument(skip_all, fields(workspace_id = %ws, user_identity_id = %id))]
    async fn delete_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        now: OffsetDateTime,
    ) -> StoreResult<(IdentityDeleted, Vec<Event>)> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        Self::lock_person(&mut tx, ws, id).await?;
        let mut summary = IdentityDeleted::default();
        let mut events: Vec<NewEvent> = Vec::new();
        // Locked in id order; on PostgreSQL a grant deleted meanwhile by `DeleteAccessGrant` is
        // re-checked after the wait and left out.
        let grants: Vec<String> = sqlx::query_scalar(assembled(format!(
            "SELECT access_grant_id FROM access_grants WHERE workspace_id = $1 AND user_identity_id = $2 AND deleted_at IS NULL ORDER BY access_grant_id{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        for g in grants {
            let g: AccessGrantId = parse("access_grant_id", &g)?;
            match Self::delete_grant_in(&mut tx, ws, g, now).await {
                Ok(deleted) => {
                    events.extend(deleted);
                    summary.grants_deleted += 1;
                }
                // Deleted by someone else first: nothing of it is left to take away.
                Err(StoreError::Domain(Error::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        // Keys of no grant (`GenerateInstantKey`), and any grant key still live.
        let keys: Vec<String> = sqlx::query_scalar("SELECT instant_key_id FROM instant_keys WHERE workspace_id = $1 AND user_identity_id = $2 AND revoked_at IS NULL ORDER BY instant_key_id")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        for k in keys {
            let k: InstantKeyId = parse("instant_key_id", &k)?;
            events.extend(Self::revoke_key_in(&mut tx, ws, k, now).await?);
        }
        summary.instant_keys_revoked = count(
            events
                .iter()
                .filter(|e| e.event_type == events::INSTANT_KEY_REVOKED),
        );
        // Its access system users stay, unlinked; deleted ones are unlinked too, uncounted.
        let unlinked = sqlx::query("UPDATE acs_users SET user_identity_id = NULL WHERE workspace_id = $1 AND user_identity_id = $2 AND deleted_at IS NULL")
            .bind(ws.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        summary.acs_users_unlinked = u32::try_from(D::rows_affected(&unlinked)).unwrap_or(u32::MAX);
        sqlx::query("UPDATE acs_users SET user_identity_id = NULL WHERE workspace_id = $1 AND user_identity_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Any unlock for the person still queued (those of its grants and keys ended above) is
        // never sent.
        events.extend(Self::cancel_unlocks_in(&mut tx, ws, UnlockScope::Person(id), now).await?);
        sqlx::query(
            "DELETE FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2",
        )
        .bind(ws.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        events.push(keygate_domain::applied::user_identity_deleted(id, now));
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        tracing::info!(
            grants_deleted = summary.grants_deleted,
            instant_keys_revoked = summary.instant_keys_revoked,
            acs_users_unlinked = summary.acs_users_unlinked,
            "user identity deleted"
        );
        Ok((summary, appended))
    }
}

#[async_trait]
impl<D> UserIdentityStore for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    i32: SqlValue<D>,
    bool: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn create_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        new: &NewUserIdentity,
        idem: Option<&Idempotency>,
        now: OffsetDateTime,
    ) -> Result<UserIdentity, Error> {
        Ok(self.create_identity(ws, id, new, idem, now).await?)
    }

    async fn get_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<UserIdentity, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::user_identity_in(&mut conn, ws, id).await?)
    }

    async fn list_user_identities(
        &self,
        ws: WorkspaceId,
        filter: &UserIdentityFilter,
        page: &PageRequest,
    ) -> Result<Page<UserIdentity>, Error> {
        Ok(self.list_identities(ws, filter, page).await?)
    }

    async fn update_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        patch: &UserIdentityPatch,
        now: OffsetDateTime,
    ) -> Result<UserIdentity, Error> {
        Ok(self.update_identity(ws, id, patch, now).await?)
    }

    async fn delete_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        now: OffsetDateTime,
    ) -> Result<(IdentityDeleted, Vec<Event>), Error> {
        Ok(self.delete_identity(ws, id, now).await?)
    }
}

#[async_trait]
impl<D> SettingsStore for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, Error> {
        Ok(self.setting(key, init).await?)
    }

    async fn read_setting(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key.to_owned())
                .fetch_optional(&self.pool)
                .await
                .map_err(crate::error::StoreError::from)?,
        )
    }
}

#[async_trait]
impl<D> IdempotencyStore for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    String: SqlValue<D>,
    Option<String>: SqlValue<D>,
    i64: SqlValue<D>,
    Option<i64>: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn replay(&self, ws: WorkspaceId, idem: &Idempotency) -> Result<Option<String>, Error> {
        Ok(self.replay_of(ws, idem).await?)
    }
}
