//! Instant Keys and their device claims.

use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::action::UnlockScope;
use keygate_domain::events::{Event, NewEvent};
use keygate_domain::ids::{InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::InstantKey;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::{Idempotency, InstantKeyStore};
use crate::util::{fetch_limit, from_micros, into_page, parse, to_micros};

/// The columns of [`KeyRow`], from `instant_keys k`, with the key's claim count.
const KEY_COLS: &str = "k.instant_key_id, k.workspace_id, k.user_identity_id, k.access_grant_id, k.created_at, k.expires_at, k.max_use_count, k.revoked_at, (SELECT COUNT(*) FROM instant_key_claims c WHERE c.workspace_id = k.workspace_id AND c.instant_key_id = k.instant_key_id) AS use_count";

static SELECT_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {KEY_COLS} FROM instant_keys k WHERE k.workspace_id = $1 AND k.instant_key_id = $2"
    )
});
static SELECT_BY_TOKEN: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {KEY_COLS} FROM instant_keys k WHERE k.token_sha256 = $1"));
static SELECT_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {KEY_COLS} FROM instant_keys k WHERE k.workspace_id = $1 AND k.instant_key_id > $2 AND ($3 = '' OR k.user_identity_id = $3) ORDER BY k.instant_key_id LIMIT $4"
    )
});

#[derive(sqlx::FromRow)]
struct KeyRow {
    instant_key_id: String,
    workspace_id: String,
    user_identity_id: String,
    access_grant_id: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    max_use_count: i32,
    revoked_at: Option<i64>,
    use_count: i64,
}

impl TryFrom<KeyRow> for InstantKey {
    type Error = StoreError;

    fn try_from(r: KeyRow) -> StoreResult<Self> {
        Ok(InstantKey {
            id: parse("instant_key_id", &r.instant_key_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            user_identity_id: parse("user_identity_id", &r.user_identity_id)?,
            access_grant_id: r
                .access_grant_id
                .map(|s| parse("access_grant_id", &s))
                .transpose()?,
            created_at: from_micros(r.created_at)?,
            expires_at: r.expires_at.map(from_micros).transpose()?,
            max_use_count: u32::try_from(r.max_use_count).unwrap_or(0),
            use_count: u32::try_from(r.use_count).unwrap_or(u32::MAX),
            revoked_at: r.revoked_at.map(from_micros).transpose()?,
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
    i32: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn instant_key_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: InstantKeyId,
    ) -> StoreResult<InstantKey> {
        let row: KeyRow = sqlx::query_as(SELECT_BY_ID.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::InstantKey, id.to_string()))?;
        row.try_into()
    }

    /// Writes a key in an open transaction (a grant's key is written with the grant).
    pub(crate) async fn insert_instant_key(
        conn: &mut D::Connection,
        key: &InstantKey,
        token_sha256: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO instant_keys (workspace_id, instant_key_id, token_sha256, user_identity_id, access_grant_id, created_at, expires_at, max_use_count, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)")
            .bind(key.workspace_id.to_string())
            .bind(key.id.to_string())
            .bind(token_sha256.to_owned())
            .bind(key.user_identity_id.to_string())
            .bind(key.access_grant_id.map(|g| g.to_string()))
            .bind(to_micros(key.created_at))
            .bind(key.expires_at.map(to_micros))
            .bind(i32::try_from(key.max_use_count).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn create_key(
        &self,
        ws: WorkspaceId,
        key: &InstantKey,
        token_sha256: &str,
        idem: Option<&Idempotency>,
    ) -> StoreResult<(InstantKey, Vec<Event>)> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let id = key.id.to_string();
        if let Some(first) = Self::claim_idempotency(&mut tx, ws, idem, &id, key.created_at).await?
        {
            let k = Self::instant_key_in(&mut tx, ws, parse("instant_key_id", &first)?).await?;
            return Ok((k, Vec::new()));
        }
        // The person's row is locked: a key made beside a delete of the person cannot outlive it.
        Self::lock_person(&mut tx, ws, key.user_identity_id).await?;
        Self::insert_instant_key(&mut tx, key, token_sha256).await?;
        let created = key.created_event();
        let events = Self::append_events(&mut tx, ws, &[created], key.created_at).await?;
        let k = Self::instant_key_in(&mut tx, ws, key.id).await?;
        tx.commit().await?;
        Ok((k, events))
    }

    async fn find_key(&self, token_sha256: &str) -> StoreResult<Option<InstantKey>> {
        let row: Option<KeyRow> = sqlx::query_as(SELECT_BY_TOKEN.as_str())
            .bind(token_sha256.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(InstantKey::try_from).transpose()
    }

    async fn list_keys(
        &self,
        ws: WorkspaceId,
        user: Option<UserIdentityId>,
        page: &PageRequest,
    ) -> StoreResult<Page<InstantKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(SELECT_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(user.map(|u| u.to_string()).unwrap_or_default())
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        let keys = rows
            .into_iter()
            .map(InstantKey::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(keys, page.limit, |k| k.id.to_string()))
    }

    /// Revokes a key in an open transaction, as `RevokeInstantKey` does (and a person's
    /// deletion, for each of their keys): the key row locked, `revoked_at` set once. Returns
    /// the `instant_key.revoked` event to append, or `None` when the key was revoked already.
    /// `NotFound` when the workspace has no such key.
    pub(crate) async fn revoke_key_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: InstantKeyId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<NewEvent>> {
        let found: Option<Option<i64>> = sqlx::query_scalar(assembled(format!(
            "SELECT revoked_at FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(revoked) = found else {
            return Err(Error::not_found(Resource::InstantKey, id.to_string()).into());
        };
        if revoked.is_some() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE instant_keys SET revoked_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2",
        )
        .bind(ws.to_string())
        .bind(id.to_string())
        .bind(to_micros(now))
        .execute(&mut *conn)
        .await?;
        let k = Self::instant_key_in(conn, ws, id).await?;
        let mut events = vec![k.revoked_event(now)];
        // Its unlocks still queued are never sent.
        events.extend(Self::cancel_unlocks_in(conn, ws, UnlockScope::InstantKey(id), now).await?);
        Ok(events)
    }

    async fn revoke_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        now: OffsetDateTime,
    ) -> StoreResult<(InstantKey, Vec<Event>)> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let mut events = Vec::new();
        let revoked = Self::revoke_key_in(&mut tx, ws, id, now).await?;
        if !revoked.is_empty() {
            events = Self::append_events(&mut tx, ws, &revoked, now).await?;
        }
        let k = Self::instant_key_in(&mut tx, ws, id).await?;
        tx.commit().await?;
        Ok((k, events))
    }

    async fn claim_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        device_sha256: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // The key row is locked so that two new devices cannot both take the last claim.
        let max: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT max_use_count FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(max) = max else {
            return Err(Error::not_found(Resource::InstantKey, id.to_string()).into());
        };
        let claims: Vec<String> = sqlx::query_scalar("SELECT device_sha256 FROM instant_key_claims WHERE workspace_id = $1 AND instant_key_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        if claims.iter().any(|c| c == device_sha256) {
            return Ok(true);
        }
        if i64::try_from(claims.len()).unwrap_or(i64::MAX) >= i64::from(max) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO instant_key_claims (workspace_id, instant_key_id, device_sha256, created_at) VALUES ($1, $2, $3, $4)")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(device_sha256.to_owned())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn key_claimed(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        device_sha256: &str,
    ) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instant_key_claims WHERE workspace_id = $1 AND instant_key_id = $2 AND device_sha256 = $3")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(device_sha256.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl<D> InstantKeyStore for SqlStore<D>
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
    Vec<u8>: SqlValue<D>,
{
    async fn create_instant_key(
        &self,
        ws: WorkspaceId,
        key: &InstantKey,
        token_sha256: &str,
        idem: Option<&Idempotency>,
    ) -> Result<(InstantKey, Vec<Event>), Error> {
        Ok(self.create_key(ws, key, token_sha256, idem).await?)
    }

    async fn get_instant_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
    ) -> Result<InstantKey, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::instant_key_in(&mut conn, ws, id).await?)
    }

    async fn find_instant_key(&self, token_sha256: &str) -> Result<Option<InstantKey>, Error> {
        Ok(self.find_key(token_sha256).await?)
    }

    async fn list_instant_keys(
        &self,
        ws: WorkspaceId,
        user: Option<UserIdentityId>,
        page: &PageRequest,
    ) -> Result<Page<InstantKey>, Error> {
        Ok(self.list_keys(ws, user, page).await?)
    }

    async fn revoke_instant_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        now: OffsetDateTime,
    ) -> Result<(InstantKey, Vec<Event>), Error> {
        Ok(self.revoke_key(ws, id, now).await?)
    }

    async fn claim_instant_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        device_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.claim_key(ws, id, device_sha256, now).await?)
    }

    async fn has_claim(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
        device_sha256: &str,
    ) -> Result<bool, Error> {
        Ok(self.key_claimed(ws, id, device_sha256).await?)
    }
}
