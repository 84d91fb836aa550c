//! Access system users, their access-group memberships and their credentials.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::acs::{AcsCredential, AcsUser, AcsUserFilter, CredentialFilter};
use keygate_domain::ids::{
    AccessGrantId, AccessGroupId, AcsCredentialId, AcsUserId, UserIdentityId, WorkspaceId,
};
use keygate_domain::model::AccessGroup;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, ErrorReason, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::{AcsUserStore, Idempotency};
use crate::util::{fetch_limit, from_micros, into_page, parse, to_micros};

/// The columns of [`UserRow`].
const USER_COLS: &str = "acs_user_id, workspace_id, acs_system_id, full_name, email_address, phone_number, access_starts_at, access_ends_at, user_identity_id, is_suspended, created_at";

/// The columns of [`CredentialRow`]: a credential with the schedule of its grant.
const CREDENTIAL_COLS: &str = "c.acs_credential_id, c.workspace_id, c.acs_user_id, c.acs_system_id, c.access_grant_id, c.access_method_id, c.created_at, g.starts_at, g.ends_at";
const CREDENTIAL_FROM: &str = "FROM acs_credentials c JOIN access_grants g ON g.workspace_id = c.workspace_id AND g.access_grant_id = c.access_grant_id";

/// The credentials of a workspace that are live (access method not deleted, user not deleted).
static LIVE_CREDENTIALS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CREDENTIAL_COLS} {CREDENTIAL_FROM} JOIN access_methods m ON m.workspace_id = c.workspace_id AND m.access_method_id = c.access_method_id AND m.deleted_at IS NULL JOIN acs_users u ON u.workspace_id = c.workspace_id AND u.acs_user_id = c.acs_user_id AND u.deleted_at IS NULL WHERE c.workspace_id = $1"
    )
});
static LIVE_CREDENTIAL: LazyLock<String> =
    LazyLock::new(|| format!("{} AND c.acs_credential_id = $2", *LIVE_CREDENTIALS));
static LIVE_CREDENTIAL_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} AND c.acs_credential_id > $2 AND ($3 = '' OR c.acs_user_id = $3) AND ($4 = '' OR c.acs_system_id = $4) AND ($5 = '' OR u.user_identity_id = $5) ORDER BY c.acs_credential_id LIMIT $6",
        *LIVE_CREDENTIALS
    )
});
static CREDENTIAL_OF_GRANT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CREDENTIAL_COLS} {CREDENTIAL_FROM} WHERE c.workspace_id = $1 AND c.access_grant_id = $2"
    )
});
static CREDENTIALS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CREDENTIAL_COLS} {CREDENTIAL_FROM} WHERE c.workspace_id = $1 AND c.acs_user_id = $2 ORDER BY c.acs_credential_id"
    )
});
static INSERT_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO acs_users ({USER_COLS}, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)"
    )
});
static USER_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {USER_COLS} FROM acs_users WHERE workspace_id = $1 AND deleted_at IS NULL AND acs_user_id > $2 AND ($3 = '' OR acs_system_id = $3) AND ($4 = '' OR user_identity_id = $4) ORDER BY acs_user_id LIMIT $5"
    )
});

#[derive(sqlx::FromRow)]
struct UserRow {
    acs_user_id: String,
    workspace_id: String,
    acs_system_id: String,
    full_name: String,
    email_address: Option<String>,
    phone_number: Option<String>,
    access_starts_at: Option<i64>,
    access_ends_at: Option<i64>,
    user_identity_id: Option<String>,
    is_suspended: bool,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    acs_credential_id: String,
    workspace_id: String,
    acs_user_id: String,
    acs_system_id: String,
    access_grant_id: String,
    access_method_id: String,
    created_at: i64,
    starts_at: i64,
    ends_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    acs_access_group_id: String,
    acs_system_id: String,
    display_name: String,
    created_at: i64,
}

impl TryFrom<UserRow> for AcsUser {
    type Error = StoreError;

    fn try_from(r: UserRow) -> StoreResult<Self> {
        Ok(AcsUser {
            id: parse("acs_user_id", &r.acs_user_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            full_name: r.full_name,
            email_address: r.email_address,
            phone_number: r.phone_number,
            access_starts_at: r.access_starts_at.map(from_micros).transpose()?,
            access_ends_at: r.access_ends_at.map(from_micros).transpose()?,
            user_identity_id: r
                .user_identity_id
                .map(|s| parse("user_identity_id", &s))
                .transpose()?,
            is_suspended: r.is_suspended,
            access_group_ids: Vec::new(),
            created_at: from_micros(r.created_at)?,
        })
    }
}

impl TryFrom<CredentialRow> for AcsCredential {
    type Error = StoreError;

    fn try_from(r: CredentialRow) -> StoreResult<Self> {
        Ok(AcsCredential {
            id: parse("acs_credential_id", &r.acs_credential_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            acs_user_id: parse("acs_user_id", &r.acs_user_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            access_grant_id: parse("access_grant_id", &r.access_grant_id)?,
            access_method_id: parse("access_method_id", &r.access_method_id)?,
            created_at: from_micros(r.created_at)?,
            starts_at: from_micros(r.starts_at)?,
            ends_at: r.ends_at.map(from_micros).transpose()?,
        })
    }
}

fn credentials(rows: Vec<CredentialRow>) -> StoreResult<Vec<AcsCredential>> {
    rows.into_iter().map(AcsCredential::try_from).collect()
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
    /// Fills the memberships of `users` with one query over their id range.
    async fn with_groups(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        mut users: Vec<AcsUser>,
    ) -> StoreResult<Vec<AcsUser>> {
        let (Some(first), Some(last)) = (
            users.iter().map(|u| u.id).min(),
            users.iter().map(|u| u.id).max(),
        ) else {
            return Ok(users);
        };
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT acs_user_id, acs_access_group_id FROM acs_user_groups WHERE workspace_id = $1 AND acs_user_id >= $2 AND acs_user_id <= $3 ORDER BY acs_user_id, acs_access_group_id")
            .bind(ws.to_string())
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all(&mut *conn)
            .await?;
        let mut by_user: HashMap<String, Vec<AccessGroupId>> = HashMap::new();
        for (user, group) in rows {
            by_user
                .entry(user)
                .or_default()
                .push(parse("acs_access_group_id", &group)?);
        }
        for u in &mut users {
            u.access_group_ids = by_user.remove(&u.id.to_string()).unwrap_or_default();
        }
        Ok(users)
    }

    /// A user that is not deleted, with its memberships; `lock` takes its row lock.
    async fn user_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AcsUserId,
        lock: bool,
    ) -> StoreResult<AcsUser> {
        let sql = format!(
            "SELECT {USER_COLS} FROM acs_users WHERE workspace_id = $1 AND acs_user_id = $2 AND deleted_at IS NULL{}",
            if lock { D::LOCK } else { "" }
        );
        let row: UserRow = sqlx::query_as(assembled(sql))
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AcsUser, id.to_string()))?;
        let mut users = Self::with_groups(conn, ws, vec![row.try_into()?]).await?;
        Ok(users.remove(0))
    }

    async fn credential_by(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        grant: AccessGrantId,
    ) -> StoreResult<Option<AcsCredential>> {
        let row: Option<CredentialRow> = sqlx::query_as(CREDENTIAL_OF_GRANT.as_str())
            .bind(ws.to_string())
            .bind(grant.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        row.map(AcsCredential::try_from).transpose()
    }

    async fn create_user(
        &self,
        ws: WorkspaceId,
        u: &AcsUser,
        idem: Option<&Idempotency>,
    ) -> StoreResult<AcsUser> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let id = u.id.to_string();
        if let Some(first) = Self::claim_idempotency(&mut tx, ws, idem, &id, u.created_at).await? {
            return Self::user_in(&mut tx, ws, parse("acs_user_id", &first)?, false).await;
        }
        let system: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM access_systems WHERE workspace_id = $1 AND acs_system_id = $2",
        )
        .bind(ws.to_string())
        .bind(u.acs_system_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if system.is_none() {
            return Err(
                Error::not_found(Resource::AccessSystem, u.acs_system_id.to_string()).into(),
            );
        }
        sqlx::query(INSERT_USER.as_str())
            .bind(id)
            .bind(ws.to_string())
            .bind(u.acs_system_id.to_string())
            .bind(u.full_name.clone())
            .bind(u.email_address.clone())
            .bind(u.phone_number.clone())
            .bind(u.access_starts_at.map(to_micros))
            .bind(u.access_ends_at.map(to_micros))
            .bind(u.user_identity_id.map(|i| i.to_string()))
            .bind(u.is_suspended)
            .bind(to_micros(u.created_at))
            .execute(&mut *tx)
            .await?;
        let created = Self::user_in(&mut tx, ws, u.id, false).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn list_users(
        &self,
        ws: WorkspaceId,
        f: &AcsUserFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AcsUser>> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<UserRow> = sqlx::query_as(USER_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(
                f.user_identity_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(fetch_limit(page.limit))
            .fetch_all(&mut *conn)
            .await?;
        let users = rows
            .into_iter()
            .map(AcsUser::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut p = into_page(users, page.limit, |u| u.id.to_string());
        p.items = Self::with_groups(&mut conn, ws, p.items).await?;
        Ok(p)
    }

    async fn delete_user(
        &self,
        ws: WorkspaceId,
        id: AcsUserId,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let done = sqlx::query("UPDATE acs_users SET deleted_at = $3 WHERE workspace_id = $1 AND acs_user_id = $2 AND deleted_at IS NULL")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 0 {
            return Err(Error::not_found(Resource::AcsUser, id.to_string()).into());
        }
        sqlx::query("DELETE FROM acs_user_groups WHERE workspace_id = $1 AND acs_user_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    async fn link_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // The identity's row is locked so that it cannot be deleted (which unlinks its
        // users) between this check and the link.
        let found: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT 1 FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(identity.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Err(Error::not_found(Resource::UserIdentity, identity.to_string()).into());
        }
        let u = Self::user_in(&mut tx, ws, user, true).await?;
        match u.user_identity_id {
            Some(linked) if linked == identity => return Ok(()),
            Some(linked) => {
                return Err(Error::FailedPrecondition {
                    reason: ErrorReason::AcsUserAlreadyLinked,
                    message: format!("access system user {user} is already linked to user identity {linked}; an access system user is linked to one user identity"),
                }
                .into());
            }
            None => {}
        }
        sqlx::query(
            "UPDATE acs_users SET user_identity_id = $3 WHERE workspace_id = $1 AND acs_user_id = $2",
        )
        .bind(ws.to_string())
        .bind(user.to_string())
        .bind(identity.to_string())
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    async fn unlink_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let found: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT 1 FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(identity.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Err(Error::not_found(Resource::UserIdentity, identity.to_string()).into());
        }
        let u = Self::user_in(&mut tx, ws, user, true).await?;
        match u.user_identity_id {
            None => return Ok(()),
            Some(linked) if linked == identity => {}
            Some(_) => {
                return Err(Error::FailedPrecondition {
                    reason: ErrorReason::AcsUserNotLinked,
                    message: format!(
                        "access system user {user} is not linked to user identity {identity}"
                    ),
                }
                .into());
            }
        }
        sqlx::query(
            "UPDATE acs_users SET user_identity_id = NULL WHERE workspace_id = $1 AND acs_user_id = $2",
        )
        .bind(ws.to_string())
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    async fn linked_users(
        &self,
        ws: WorkspaceId,
        identities: &[UserIdentityId],
    ) -> StoreResult<Vec<(UserIdentityId, AcsUserId)>> {
        let (Some(first), Some(last)) = (identities.iter().min(), identities.iter().max()) else {
            return Ok(Vec::new());
        };
        // One query over the identities' id range (a page is a contiguous range).
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT user_identity_id, acs_user_id FROM acs_users WHERE workspace_id = $1 AND deleted_at IS NULL AND user_identity_id >= $2 AND user_identity_id <= $3 ORDER BY acs_user_id")
            .bind(ws.to_string())
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for (identity, user) in rows {
            let identity: UserIdentityId = parse("user_identity_id", &identity)?;
            if identities.contains(&identity) {
                out.push((identity, parse("acs_user_id", &user)?));
            }
        }
        Ok(out)
    }

    async fn access_group(&self, ws: WorkspaceId, id: AccessGroupId) -> StoreResult<AccessGroup> {
        let row: GroupRow = sqlx::query_as("SELECT acs_access_group_id, acs_system_id, display_name, created_at FROM access_groups WHERE workspace_id = $1 AND acs_access_group_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessGroup, id.to_string()))?;
        let entrances: Vec<String> = sqlx::query_scalar("SELECT acs_entrance_id FROM access_group_entrances WHERE workspace_id = $1 AND acs_access_group_id = $2 ORDER BY acs_entrance_id")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        Ok(AccessGroup {
            id: parse("acs_access_group_id", &row.acs_access_group_id)?,
            acs_system_id: parse("acs_system_id", &row.acs_system_id)?,
            display_name: row.display_name,
            entrance_ids: entrances
                .iter()
                .map(|e| parse("acs_entrance_id", e))
                .collect::<StoreResult<_>>()?,
            created_at: from_micros(row.created_at)?,
        })
    }

    async fn set_group_member(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        group: AccessGroupId,
        member: bool,
        now: OffsetDateTime,
    ) -> StoreResult<AcsUser> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        Self::user_in(&mut tx, ws, user, true).await?;
        let change = if member {
            sqlx::query("INSERT INTO acs_user_groups (workspace_id, acs_user_id, acs_access_group_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, acs_user_id, acs_access_group_id) DO NOTHING")
                .bind(ws.to_string())
                .bind(user.to_string())
                .bind(group.to_string())
                .bind(to_micros(now))
        } else {
            sqlx::query("DELETE FROM acs_user_groups WHERE workspace_id = $1 AND acs_user_id = $2 AND acs_access_group_id = $3")
                .bind(ws.to_string())
                .bind(user.to_string())
                .bind(group.to_string())
        };
        change.execute(&mut *tx).await?;
        let u = Self::user_in(&mut tx, ws, user, false).await?;
        tx.commit().await?;
        Ok(u)
    }

    async fn create_credential(
        &self,
        ws: WorkspaceId,
        c: &AcsCredential,
    ) -> StoreResult<AcsCredential> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // A user deleted meanwhile gets no new credential.
        Self::user_in(&mut tx, ws, c.acs_user_id, true).await?;
        sqlx::query("INSERT INTO acs_credentials (workspace_id, acs_credential_id, acs_user_id, acs_system_id, access_grant_id, access_method_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace_id, access_grant_id) DO NOTHING")
            .bind(ws.to_string())
            .bind(c.id.to_string())
            .bind(c.acs_user_id.to_string())
            .bind(c.acs_system_id.to_string())
            .bind(c.access_grant_id.to_string())
            .bind(c.access_method_id.to_string())
            .bind(to_micros(c.created_at))
            .execute(&mut *tx)
            .await?;
        let stored = Self::credential_by(&mut tx, ws, c.access_grant_id)
            .await?
            .ok_or_else(|| Error::Internal {
                message: format!("credential of grant {} vanished", c.access_grant_id),
            })?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn credential(&self, ws: WorkspaceId, id: AcsCredentialId) -> StoreResult<AcsCredential> {
        let row: CredentialRow = sqlx::query_as(LIVE_CREDENTIAL.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Credential, id.to_string()))?;
        row.try_into()
    }

    async fn list_credentials(
        &self,
        ws: WorkspaceId,
        f: &CredentialFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AcsCredential>> {
        let rows: Vec<CredentialRow> = sqlx::query_as(LIVE_CREDENTIAL_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(f.acs_user_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(
                f.user_identity_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(credentials(rows)?, page.limit, |c| {
            c.id.to_string()
        }))
    }

    async fn credentials_of(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
    ) -> StoreResult<Vec<AcsCredential>> {
        let rows: Vec<CredentialRow> = sqlx::query_as(CREDENTIALS_OF_USER.as_str())
            .bind(ws.to_string())
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await?;
        credentials(rows)
    }
}

#[async_trait]
impl<D> AcsUserStore for SqlStore<D>
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
    async fn create_acs_user(
        &self,
        ws: WorkspaceId,
        u: &AcsUser,
        idem: Option<&Idempotency>,
    ) -> Result<AcsUser, Error> {
        Ok(self.create_user(ws, u, idem).await?)
    }

    async fn get_acs_user(&self, ws: WorkspaceId, id: AcsUserId) -> Result<AcsUser, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::user_in(&mut conn, ws, id, false).await?)
    }

    async fn list_acs_users(
        &self,
        ws: WorkspaceId,
        f: &AcsUserFilter,
        page: &PageRequest,
    ) -> Result<Page<AcsUser>, Error> {
        Ok(self.list_users(ws, f, page).await?)
    }

    async fn delete_acs_user(
        &self,
        ws: WorkspaceId,
        id: AcsUserId,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        Ok(self.delete_user(ws, id, now).await?)
    }

    async fn link_acs_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<(), Error> {
        Ok(self.link_user(ws, user, identity).await?)
    }

    async fn unlink_acs_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<(), Error> {
        Ok(self.unlink_user(ws, user, identity).await?)
    }

    async fn linked_acs_users(
        &self,
        ws: WorkspaceId,
        identities: &[UserIdentityId],
    ) -> Result<Vec<(UserIdentityId, AcsUserId)>, Error> {
        Ok(self.linked_users(ws, identities).await?)
    }

    async fn get_access_group(
        &self,
        ws: WorkspaceId,
        id: AccessGroupId,
    ) -> Result<AccessGroup, Error> {
        Ok(self.access_group(ws, id).await?)
    }

    async fn set_access_group_member(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        group: AccessGroupId,
        member: bool,
        now: OffsetDateTime,
    ) -> Result<AcsUser, Error> {
        Ok(self.set_group_member(ws, user, group, member, now).await?)
    }

    async fn create_acs_credential(
        &self,
        ws: WorkspaceId,
        c: &AcsCredential,
    ) -> Result<AcsCredential, Error> {
        Ok(self.create_credential(ws, c).await?)
    }

    async fn get_acs_credential(
        &self,
        ws: WorkspaceId,
        id: AcsCredentialId,
    ) -> Result<AcsCredential, Error> {
        Ok(self.credential(ws, id).await?)
    }

    async fn acs_credential_of_grant(
        &self,
        ws: WorkspaceId,
        grant: AccessGrantId,
    ) -> Result<Option<AcsCredential>, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::credential_by(&mut conn, ws, grant).await?)
    }

    async fn list_acs_credentials(
        &self,
        ws: WorkspaceId,
        f: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<AcsCredential>, Error> {
        Ok(self.list_credentials(ws, f, page).await?)
    }

    async fn all_acs_credentials_of(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
    ) -> Result<Vec<AcsCredential>, Error> {
        Ok(self.credentials_of(ws, user).await?)
    }
}
