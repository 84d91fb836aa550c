//! The SQL of access system users, their access-group memberships and their credentials, shared
//! by both dialects like `sql_grants.rs`. Only the row-lock clause differs (`FOR UPDATE` on
//! PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serializes writers).

macro_rules! acs_user_cols {
    () => {
        "acs_user_id, workspace_id, acs_system_id, full_name, email_address, phone_number, access_starts_at, access_ends_at, user_identity_id, is_suspended, created_at"
    };
}

/// A credential with the schedule of its grant; only live ones (access method not deleted, user
/// not deleted) pass the joins of `live_credentials!`.
macro_rules! credential_cols {
    () => {
        "c.acs_credential_id, c.workspace_id, c.acs_user_id, c.acs_system_id, c.access_grant_id, c.access_method_id, c.created_at, g.starts_at, g.ends_at"
    };
}
macro_rules! credential_from {
    () => {
        " FROM acs_credentials c JOIN access_grants g ON g.workspace_id = c.workspace_id AND g.access_grant_id = c.access_grant_id"
    };
}
macro_rules! live_credentials {
    () => {
        concat!(
            "SELECT ",
            credential_cols!(),
            credential_from!(),
            " JOIN access_methods m ON m.workspace_id = c.workspace_id AND m.access_method_id = c.access_method_id AND m.deleted_at IS NULL JOIN acs_users u ON u.workspace_id = c.workspace_id AND u.acs_user_id = c.acs_user_id AND u.deleted_at IS NULL WHERE c.workspace_id = $1"
        )
    };
}

macro_rules! impl_acs_user_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, lock = $lock:literal) => {
        mod acs_users {
            use std::collections::HashMap;

            use async_trait::async_trait;
            use keygate_domain::acs::{AcsCredential, AcsUser, AcsUserFilter, CredentialFilter};
            use keygate_domain::ids::{
                AccessGrantId, AccessGroupId, AcsCredentialId, AcsUserId, UserIdentityId,
                WorkspaceId,
            };
            use keygate_domain::model::AccessGroup;
            use keygate_domain::page::{Page, PageRequest};
            use keygate_domain::{Error, ErrorReason, Resource};
            use sqlx::Row as _;
            use time::OffsetDateTime;

            use super::$store;
            use crate::sql::grp_cols;
            use crate::sql_acs_users::{acs_user_cols, credential_cols, credential_from, live_credentials};
            use crate::traits::*;
            use crate::util::{db_err, fetch_limit, from_micros, into_page, parse, to_micros};

            type Conn = <$db as sqlx::Database>::Connection;

            fn opt_time(r: &$row, col: &str) -> Result<Option<OffsetDateTime>, Error> {
                Ok(r.try_get::<Option<i64>, _>(col).map_err(db_err)?.map(from_micros).transpose()?)
            }

            fn id_col<T: std::str::FromStr>(r: &$row, col: &str) -> Result<T, Error> {
                Ok(parse(col, &r.try_get::<String, _>(col).map_err(db_err)?)?)
            }

            fn user_row(r: &$row) -> Result<AcsUser, Error> {
                Ok(AcsUser {
                    id: id_col(r, "acs_user_id")?,
                    workspace_id: id_col(r, "workspace_id")?,
                    acs_system_id: id_col(r, "acs_system_id")?,
                    full_name: r.try_get("full_name").map_err(db_err)?,
                    email_address: r.try_get("email_address").map_err(db_err)?,
                    phone_number: r.try_get("phone_number").map_err(db_err)?,
                    access_starts_at: opt_time(r, "access_starts_at")?,
                    access_ends_at: opt_time(r, "access_ends_at")?,
                    user_identity_id: r
                        .try_get::<Option<String>, _>("user_identity_id")
                        .map_err(db_err)?
                        .map(|s| parse("user_identity_id", &s))
                        .transpose()?,
                    is_suspended: r.try_get("is_suspended").map_err(db_err)?,
                    access_group_ids: Vec::new(),
                    created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                })
            }

            fn credential_row(r: &$row) -> Result<AcsCredential, Error> {
                Ok(AcsCredential {
                    id: id_col(r, "acs_credential_id")?,
                    workspace_id: id_col(r, "workspace_id")?,
                    acs_user_id: id_col(r, "acs_user_id")?,
                    acs_system_id: id_col(r, "acs_system_id")?,
                    access_grant_id: id_col(r, "access_grant_id")?,
                    access_method_id: id_col(r, "access_method_id")?,
                    created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                    starts_at: from_micros(r.try_get("starts_at").map_err(db_err)?)?,
                    ends_at: opt_time(r, "ends_at")?,
                })
            }

            /// Fills the memberships of `users` with one query over their id range.
            async fn with_groups(conn: &mut Conn, ws: WorkspaceId, mut users: Vec<AcsUser>) -> Result<Vec<AcsUser>, Error> {
                let (Some(first), Some(last)) = (users.iter().map(|u| u.id).min(), users.iter().map(|u| u.id).max()) else {
                    return Ok(users);
                };
                let rows = sqlx::query("SELECT acs_user_id, acs_access_group_id FROM acs_user_groups WHERE workspace_id = $1 AND acs_user_id >= $2 AND acs_user_id <= $3 ORDER BY acs_user_id, acs_access_group_id")
                    .bind(ws.to_string())
                    .bind(first.to_string())
                    .bind(last.to_string())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let mut by_user: HashMap<String, Vec<AccessGroupId>> = HashMap::new();
                for r in &rows {
                    let user: String = r.try_get("acs_user_id").map_err(db_err)?;
                    by_user.entry(user).or_default().push(id_col(r, "acs_access_group_id")?);
                }
                for u in &mut users {
                    u.access_group_ids = by_user.remove(&u.id.to_string()).unwrap_or_default();
                }
                Ok(users)
            }

            /// A user that is not deleted, with its memberships; `lock` takes its row lock.
            async fn user_in(conn: &mut Conn, ws: WorkspaceId, id: AcsUserId, lock: bool) -> Result<AcsUser, Error> {
                let sql = if lock {
                    concat!("SELECT ", acs_user_cols!(), " FROM acs_users WHERE workspace_id = $1 AND acs_user_id = $2 AND deleted_at IS NULL", $lock)
                } else {
                    concat!("SELECT ", acs_user_cols!(), " FROM acs_users WHERE workspace_id = $1 AND acs_user_id = $2 AND deleted_at IS NULL")
                };
                let row = sqlx::query(sql)
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::AcsUser, id.to_string()))?;
                Ok(with_groups(conn, ws, vec![user_row(&row)?]).await?.remove(0))
            }

            async fn credential_by(conn: &mut Conn, ws: WorkspaceId, grant: AccessGrantId) -> Result<Option<AcsCredential>, Error> {
                sqlx::query(concat!("SELECT ", credential_cols!(), credential_from!(), " WHERE c.workspace_id = $1 AND c.access_grant_id = $2"))
                    .bind(ws.to_string())
                    .bind(grant.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .map(|r| credential_row(&r))
                    .transpose()
            }

            #[async_trait]
            impl AcsUserStore for $store {
                async fn create_acs_user(&self, ws: WorkspaceId, u: &AcsUser, idem: Option<&Idempotency>) -> Result<AcsUser, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = $store::claim_idempotency(&mut tx, ws, idem, &u.id.to_string(), u.created_at).await? {
                        return user_in(&mut tx, ws, parse("acs_user_id", &first)?, false).await;
                    }
                    let system = sqlx::query("SELECT 1 FROM access_systems WHERE workspace_id = $1 AND acs_system_id = $2")
                        .bind(ws.to_string())
                        .bind(u.acs_system_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if system.is_none() {
                        return Err(Error::not_found(Resource::AccessSystem, u.acs_system_id.to_string()));
                    }
                    sqlx::query(concat!("INSERT INTO acs_users (", acs_user_cols!(), ", deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)"))
                        .bind(u.id.to_string())
                        .bind(ws.to_string())
                        .bind(u.acs_system_id.to_string())
                        .bind(&u.full_name)
                        .bind(&u.email_address)
                        .bind(&u.phone_number)
                        .bind(u.access_starts_at.map(to_micros))
                        .bind(u.access_ends_at.map(to_micros))
                        .bind(u.user_identity_id.map(|i| i.to_string()))
                        .bind(u.is_suspended)
                        .bind(to_micros(u.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let created = user_in(&mut tx, ws, u.id, false).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(created)
                }

                async fn get_acs_user(&self, ws: WorkspaceId, id: AcsUserId) -> Result<AcsUser, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    user_in(&mut conn, ws, id, false).await
                }

                async fn list_acs_users(&self, ws: WorkspaceId, f: &AcsUserFilter, page: &PageRequest) -> Result<Page<AcsUser>, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    let rows = sqlx::query(concat!("SELECT ", acs_user_cols!(), " FROM acs_users WHERE workspace_id = $1 AND deleted_at IS NULL AND acs_user_id > $2 AND ($3 = '' OR acs_system_id = $3) AND ($4 = '' OR user_identity_id = $4) ORDER BY acs_user_id LIMIT $5"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.user_identity_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    let users = rows.iter().map(user_row).collect::<Result<Vec<_>, _>>()?;
                    let mut p = into_page(users, page.limit, |u| u.id.to_string());
                    p.items = with_groups(&mut conn, ws, p.items).await?;
                    Ok(p)
                }

                async fn delete_acs_user(&self, ws: WorkspaceId, id: AcsUserId, now: OffsetDateTime) -> Result<(), Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let n = sqlx::query("UPDATE acs_users SET deleted_at = $3 WHERE workspace_id = $1 AND acs_user_id = $2 AND deleted_at IS NULL")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if n == 0 {
                        return Err(Error::not_found(Resource::AcsUser, id.to_string()));
                    }
                    sqlx::query("DELETE FROM acs_user_groups WHERE workspace_id = $1 AND acs_user_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)
                }

                async fn link_acs_user(&self, ws: WorkspaceId, user: AcsUserId, identity: UserIdentityId) -> Result<(), Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    // The identity's row is locked so that it cannot be deleted (which unlinks its
                    // users) between this check and the link.
                    let found = sqlx::query(concat!("SELECT 1 FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(identity.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if found.is_none() {
                        return Err(Error::not_found(Resource::UserIdentity, identity.to_string()));
                    }
                    let u = user_in(&mut tx, ws, user, true).await?;
                    match u.user_identity_id {
                        Some(linked) if linked == identity => return Ok(()),
                        Some(linked) => {
                            return Err(Error::FailedPrecondition {
                                reason: ErrorReason::AcsUserAlreadyLinked,
                                message: format!("access system user {user} is already linked to user identity {linked}; an access system user is linked to one user identity"),
                            });
                        }
                        None => {}
                    }
                    sqlx::query("UPDATE acs_users SET user_identity_id = $3 WHERE workspace_id = $1 AND acs_user_id = $2")
                        .bind(ws.to_string())
                        .bind(user.to_string())
                        .bind(identity.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)
                }

                async fn linked_acs_users(&self, ws: WorkspaceId, identities: &[UserIdentityId]) -> Result<Vec<(UserIdentityId, AcsUserId)>, Error> {
                    let (Some(first), Some(last)) = (identities.iter().min(), identities.iter().max()) else {
                        return Ok(Vec::new());
                    };
                    // One query over the identities' id range (a page is a contiguous range).
                    let rows = sqlx::query("SELECT user_identity_id, acs_user_id FROM acs_users WHERE workspace_id = $1 AND deleted_at IS NULL AND user_identity_id >= $2 AND user_identity_id <= $3 ORDER BY acs_user_id")
                        .bind(ws.to_string())
                        .bind(first.to_string())
                        .bind(last.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    let mut out = Vec::new();
                    for r in &rows {
                        let identity: UserIdentityId = id_col(r, "user_identity_id")?;
                        if identities.contains(&identity) {
                            out.push((identity, id_col(r, "acs_user_id")?));
                        }
                    }
                    Ok(out)
                }

                async fn get_access_group(&self, ws: WorkspaceId, id: AccessGroupId) -> Result<AccessGroup, Error> {
                    let row = sqlx::query(concat!("SELECT ", grp_cols!(), " FROM access_groups WHERE workspace_id = $1 AND acs_access_group_id = $2"))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::AccessGroup, id.to_string()))?;
                    let entrances: Vec<String> = sqlx::query_scalar("SELECT acs_entrance_id FROM access_group_entrances WHERE workspace_id = $1 AND acs_access_group_id = $2 ORDER BY acs_entrance_id")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(AccessGroup {
                        id: id_col(&row, "acs_access_group_id")?,
                        acs_system_id: id_col(&row, "acs_system_id")?,
                        display_name: row.try_get("display_name").map_err(db_err)?,
                        entrance_ids: entrances.iter().map(|e| parse("acs_entrance_id", e)).collect::<Result<_, _>>()?,
                        created_at: from_micros(row.try_get("created_at").map_err(db_err)?)?,
                    })
                }

                async fn set_access_group_member(&self, ws: WorkspaceId, user: AcsUserId, group: AccessGroupId, member: bool, now: OffsetDateTime) -> Result<AcsUser, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    user_in(&mut tx, ws, user, true).await?;
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
                    change.execute(&mut *tx).await.map_err(db_err)?;
                    let u = user_in(&mut tx, ws, user, false).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(u)
                }

                async fn create_acs_credential(&self, ws: WorkspaceId, c: &AcsCredential) -> Result<AcsCredential, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    // A user deleted meanwhile gets no new credential.
                    user_in(&mut tx, ws, c.acs_user_id, true).await?;
                    sqlx::query("INSERT INTO acs_credentials (workspace_id, acs_credential_id, acs_user_id, acs_system_id, access_grant_id, access_method_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace_id, access_grant_id) DO NOTHING")
                        .bind(ws.to_string())
                        .bind(c.id.to_string())
                        .bind(c.acs_user_id.to_string())
                        .bind(c.acs_system_id.to_string())
                        .bind(c.access_grant_id.to_string())
                        .bind(c.access_method_id.to_string())
                        .bind(to_micros(c.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let stored = credential_by(&mut tx, ws, c.access_grant_id).await?.ok_or_else(|| Error::Internal {
                        message: format!("credential of grant {} vanished", c.access_grant_id),
                    })?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(stored)
                }

                async fn get_acs_credential(&self, ws: WorkspaceId, id: AcsCredentialId) -> Result<AcsCredential, Error> {
                    let row = sqlx::query(concat!(live_credentials!(), " AND c.acs_credential_id = $2"))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::Credential, id.to_string()))?;
                    credential_row(&row)
                }

                async fn acs_credential_of_grant(&self, ws: WorkspaceId, grant: AccessGrantId) -> Result<Option<AcsCredential>, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    credential_by(&mut conn, ws, grant).await
                }

                async fn list_acs_credentials(&self, ws: WorkspaceId, f: &CredentialFilter, page: &PageRequest) -> Result<Page<AcsCredential>, Error> {
                    let rows = sqlx::query(concat!(live_credentials!(), " AND c.acs_credential_id > $2 AND ($3 = '' OR c.acs_user_id = $3) AND ($4 = '' OR c.acs_system_id = $4) AND ($5 = '' OR u.user_identity_id = $5) ORDER BY c.acs_credential_id LIMIT $6"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(f.acs_user_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.user_identity_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    let items = rows.iter().map(credential_row).collect::<Result<Vec<_>, _>>()?;
                    Ok(into_page(items, page.limit, |c| c.id.to_string()))
                }

                async fn all_acs_credentials_of(&self, ws: WorkspaceId, user: AcsUserId) -> Result<Vec<AcsCredential>, Error> {
                    let rows = sqlx::query(concat!("SELECT ", credential_cols!(), credential_from!(), " WHERE c.workspace_id = $1 AND c.acs_user_id = $2 ORDER BY c.acs_credential_id"))
                        .bind(ws.to_string())
                        .bind(user.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(credential_row).collect()
                }
            }
        }
    };
}

pub(crate) use {
    acs_user_cols, credential_cols, credential_from, impl_acs_user_store, live_credentials,
};
