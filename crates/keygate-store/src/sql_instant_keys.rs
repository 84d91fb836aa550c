//! The SQL of Instant Keys and their device claims, shared by both dialects like
//! `sql_grants.rs`. Only the row-lock clause differs (`FOR UPDATE` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` already serializes writers).

macro_rules! instant_key_cols {
    () => {
        "k.instant_key_id, k.workspace_id, k.user_identity_id, k.access_grant_id, k.created_at, k.expires_at, k.max_use_count, k.revoked_at, (SELECT COUNT(*) FROM instant_key_claims c WHERE c.workspace_id = k.workspace_id AND c.instant_key_id = k.instant_key_id) AS use_count"
    };
}

macro_rules! impl_instant_key_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, lock = $lock:literal) => {
        mod instant_keys {
            use async_trait::async_trait;
            use keygate_domain::events::{Event, NewEvent};
            use keygate_domain::ids::{InstantKeyId, UserIdentityId, WorkspaceId};
            use keygate_domain::instant_key::InstantKey;
            use keygate_domain::page::{Page, PageRequest};
            use keygate_domain::{Error, Resource};
            use sqlx::Row as _;
            use time::OffsetDateTime;

            use super::$store;
            use crate::sql_instant_keys::instant_key_cols;
            use crate::traits::*;
            use crate::util::{db_err, fetch_limit, from_micros, into_page, parse, to_micros};

            type Conn = <$db as sqlx::Database>::Connection;

            fn key_row(r: &$row) -> Result<InstantKey, Error> {
                let opt_time = |col: &str| -> Result<Option<OffsetDateTime>, Error> {
                    Ok(r.try_get::<Option<i64>, _>(col).map_err(db_err)?.map(from_micros).transpose()?)
                };
                Ok(InstantKey {
                    id: parse("instant_key_id", &r.try_get::<String, _>("instant_key_id").map_err(db_err)?)?,
                    workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                    user_identity_id: parse("user_identity_id", &r.try_get::<String, _>("user_identity_id").map_err(db_err)?)?,
                    access_grant_id: r.try_get::<Option<String>, _>("access_grant_id").map_err(db_err)?.map(|s| parse("access_grant_id", &s)).transpose()?,
                    created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                    expires_at: opt_time("expires_at")?,
                    max_use_count: u32::try_from(r.try_get::<i32, _>("max_use_count").map_err(db_err)?).unwrap_or(0),
                    use_count: u32::try_from(r.try_get::<i64, _>("use_count").map_err(db_err)?).unwrap_or(u32::MAX),
                    revoked_at: opt_time("revoked_at")?,
                })
            }

            async fn key_in(conn: &mut Conn, ws: WorkspaceId, id: InstantKeyId) -> Result<InstantKey, Error> {
                let row = sqlx::query(concat!("SELECT ", instant_key_cols!(), " FROM instant_keys k WHERE k.workspace_id = $1 AND k.instant_key_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::InstantKey, id.to_string()))?;
                key_row(&row)
            }

            /// Writes a key in an open transaction (a grant's key is written with the grant).
            pub(crate) async fn insert_key(conn: &mut Conn, key: &InstantKey, token_sha256: &str) -> Result<(), Error> {
                sqlx::query("INSERT INTO instant_keys (workspace_id, instant_key_id, token_sha256, user_identity_id, access_grant_id, created_at, expires_at, max_use_count, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)")
                    .bind(key.workspace_id.to_string())
                    .bind(key.id.to_string())
                    .bind(token_sha256)
                    .bind(key.user_identity_id.to_string())
                    .bind(key.access_grant_id.map(|g| g.to_string()))
                    .bind(to_micros(key.created_at))
                    .bind(key.expires_at.map(to_micros))
                    .bind(i32::try_from(key.max_use_count).unwrap_or(i32::MAX))
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            #[async_trait]
            impl InstantKeyStore for $store {
                async fn create_instant_key(&self, ws: WorkspaceId, key: &InstantKey, token_sha256: &str, idem: Option<&Idempotency>) -> Result<(InstantKey, Vec<Event>), Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = super::claim_idempotency(&mut tx, ws, idem, &key.id.to_string(), key.created_at).await? {
                        let k = key_in(&mut tx, ws, parse("instant_key_id", &first)?).await?;
                        return Ok((k, Vec::new()));
                    }
                    insert_key(&mut tx, key, token_sha256).await?;
                    let created = NewEvent::new(keygate_domain::events::INSTANT_KEY_CREATED, key.created_at).user(key.user_identity_id).instant_key(key.id);
                    let events = super::grants::append_events(&mut tx, ws, &[created], key.created_at).await?;
                    let k = key_in(&mut tx, ws, key.id).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok((k, events))
                }

                async fn get_instant_key(&self, ws: WorkspaceId, id: InstantKeyId) -> Result<InstantKey, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    key_in(&mut conn, ws, id).await
                }

                async fn find_instant_key(&self, token_sha256: &str) -> Result<Option<InstantKey>, Error> {
                    sqlx::query(concat!("SELECT ", instant_key_cols!(), " FROM instant_keys k WHERE k.token_sha256 = $1"))
                        .bind(token_sha256)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| key_row(&r))
                        .transpose()
                }

                async fn list_instant_keys(&self, ws: WorkspaceId, user: Option<UserIdentityId>, page: &PageRequest) -> Result<Page<InstantKey>, Error> {
                    let rows = sqlx::query(concat!("SELECT ", instant_key_cols!(), " FROM instant_keys k WHERE k.workspace_id = $1 AND k.instant_key_id > $2 AND ($3 = '' OR k.user_identity_id = $3) ORDER BY k.instant_key_id LIMIT $4"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(user.map(|u| u.to_string()).unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    let keys = rows.iter().map(key_row).collect::<Result<Vec<_>, _>>()?;
                    Ok(into_page(keys, page.limit, |k| k.id.to_string()))
                }

                async fn revoke_instant_key(&self, ws: WorkspaceId, id: InstantKeyId, now: OffsetDateTime) -> Result<(InstantKey, Vec<Event>), Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let found: Option<Option<i64>> = sqlx::query_scalar(concat!("SELECT revoked_at FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let Some(revoked) = found else {
                        return Err(Error::not_found(Resource::InstantKey, id.to_string()));
                    };
                    let mut events = Vec::new();
                    if revoked.is_none() {
                        sqlx::query("UPDATE instant_keys SET revoked_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2")
                            .bind(ws.to_string())
                            .bind(id.to_string())
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        let k = key_in(&mut tx, ws, id).await?;
                        let mut e = NewEvent::new(keygate_domain::events::INSTANT_KEY_REVOKED, now).user(k.user_identity_id).instant_key(k.id);
                        if let Some(g) = k.access_grant_id {
                            e = e.grant(g);
                        }
                        events = super::grants::append_events(&mut tx, ws, &[e], now).await?;
                    }
                    let k = key_in(&mut tx, ws, id).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok((k, events))
                }

                async fn claim_instant_key(&self, ws: WorkspaceId, id: InstantKeyId, device_sha256: &str, now: OffsetDateTime) -> Result<bool, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    // The key row is locked so that two new devices cannot both take the last claim.
                    let max: Option<i32> = sqlx::query_scalar(concat!("SELECT max_use_count FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let Some(max) = max else {
                        return Err(Error::not_found(Resource::InstantKey, id.to_string()));
                    };
                    let claims: Vec<String> = sqlx::query_scalar("SELECT device_sha256 FROM instant_key_claims WHERE workspace_id = $1 AND instant_key_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if claims.iter().any(|c| c == device_sha256) {
                        return Ok(true);
                    }
                    if i64::try_from(claims.len()).unwrap_or(i64::MAX) >= i64::from(max) {
                        return Ok(false);
                    }
                    sqlx::query("INSERT INTO instant_key_claims (workspace_id, instant_key_id, device_sha256, created_at) VALUES ($1, $2, $3, $4)")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .bind(device_sha256)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn has_claim(&self, ws: WorkspaceId, id: InstantKeyId, device_sha256: &str) -> Result<bool, Error> {
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instant_key_claims WHERE workspace_id = $1 AND instant_key_id = $2 AND device_sha256 = $3")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .bind(device_sha256)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(n > 0)
                }
            }
        }
    };
}

pub(crate) use {impl_instant_key_store, instant_key_cols};
