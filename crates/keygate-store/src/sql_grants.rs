//! The SQL of access grants and the job queue, still instantiated per backend by
//! `impl_grant_store!` (the last store not yet turned into generic functions). Two fragments
//! differ and are passed in: the row-lock clause (`FOR UPDATE` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` already serializes writers) and the job claim.

macro_rules! grant_cols {
    () => {
        "access_grant_id, workspace_id, user_identity_id, access_grant_key, name, reservation_key, starts_at, ends_at, requested_access_methods, instant_key_id, warnings, errors, created_at, updated_at"
    };
}
macro_rules! method_cols {
    () => {
        "access_method_id, workspace_id, access_grant_id, user_identity_id, mode, display_name, is_issued, issued_at, is_card_encoding_required, is_ready_for_encoding, code, client_session_token, instant_key_id, warnings, errors, created_at, updated_at"
    };
}
macro_rules! impl_grant_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, read = $read:literal, lock = $lock:literal) => {
        mod grants {
            use std::collections::HashMap;

            use async_trait::async_trait;
            use keygate_domain::events::{Event, NewEvent};
            use keygate_domain::grant::{
                AccessGrant, AccessMethod, DoorState, DoorStatus,
            };
            use keygate_domain::action::{ActionAttempt, AttemptError, EncodedCard, JobWork};
            use keygate_domain::ids::{AccessGrantId, AccessMethodId, ActionAttemptId, JobId, WorkspaceId};
            use keygate_domain::page::{Page, PageRequest};
            use keygate_domain::tracker::{self, ProvisionResult};
            use keygate_domain::{Error, ErrorReason, Resource};
            use sqlx::Row as _;
            use time::OffsetDateTime;

            use super::$store;
            use crate::grant_rows::{AttemptRow, DoorRow, GrantRow, MethodRow};
            use crate::sql_grants::{grant_cols, method_cols};
            use sqlx::FromRow as _;
            use crate::traits::*;
            use crate::error::{StoreError, access_grant_key_taken, user_identity_key_taken};
            use crate::util::{db_err, fetch_limit, from_micros, into_page, parse, to_micros};

            type Conn = <$db as sqlx::Database>::Connection;

            fn json<T: serde::Serialize>(v: &T) -> Result<String, Error> {
                serde_json::to_string(v).map_err(|e| Error::Internal { message: format!("serialize: {e}") })
            }

            fn unjson<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, Error> {
                Ok(crate::grant_rows::unjson(what, s)?)
            }



            fn grant_row(r: &$row) -> Result<AccessGrant, Error> {
                Ok(GrantRow::from_row(r).map_err(db_err)?.try_into()?)
            }

            fn method_row(r: &$row) -> Result<AccessMethod, Error> {
                Ok(MethodRow::from_row(r).map_err(db_err)?.try_into()?)
            }

            async fn write_method(conn: &mut Conn, m: &AccessMethod, insert: bool) -> Result<(), Error> {
                let q = if insert {
                    concat!("INSERT INTO access_methods (", method_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)")
                } else {
                    "UPDATE access_methods SET access_grant_id = $3, user_identity_id = $4, mode = $5, display_name = $6, is_issued = $7, issued_at = $8, is_card_encoding_required = $9, is_ready_for_encoding = $10, code = $11, client_session_token = $12, instant_key_id = $13, warnings = $14, errors = $15, created_at = $16, updated_at = $17 WHERE access_method_id = $1 AND workspace_id = $2"
                };
                sqlx::query(q)
                    .bind(m.id.to_string())
                    .bind(m.workspace_id.to_string())
                    .bind(m.access_grant_id.to_string())
                    .bind(m.user_identity_id.to_string())
                    .bind(enum_str(&m.mode)?)
                    .bind(&m.display_name)
                    .bind(m.is_issued)
                    .bind(m.issued_at.map(to_micros))
                    .bind(m.is_card_encoding_required)
                    .bind(m.is_ready_for_encoding)
                    .bind(&m.code)
                    .bind(&m.client_session_token)
                    .bind(m.instant_key_id.map(|i| i.to_string()))
                    .bind(json(&m.warnings)?)
                    .bind(json(&m.errors)?)
                    .bind(to_micros(m.created_at))
                    .bind(to_micros(m.updated_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                // Upserted: an update of the grant adds doors to an existing method.
                for d in &m.doors {
                    sqlx::query("INSERT INTO access_method_entrances (workspace_id, access_method_id, acs_entrance_id, acs_system_id, state, reason, updated_at, pending_mutation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (workspace_id, access_method_id, acs_entrance_id) DO UPDATE SET acs_system_id = excluded.acs_system_id, state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at, pending_mutation = excluded.pending_mutation")
                        .bind(m.workspace_id.to_string())
                        .bind(m.id.to_string())
                        .bind(d.entrance_id.to_string())
                        .bind(d.acs_system_id.to_string())
                        .bind(d.state.as_str())
                        .bind(&d.reason)
                        .bind(to_micros(d.updated_at))
                        .bind(d.pending.as_ref().map(json).transpose()?)
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                }
                Ok(())
            }

            fn door_row(r: &$row) -> Result<DoorStatus, Error> {
                Ok(DoorRow::from_row(r).map_err(db_err)?.try_into()?)
            }

            async fn load_doors(conn: &mut Conn, ws: WorkspaceId, first: &str, last: &str) -> Result<HashMap<String, Vec<DoorStatus>>, Error> {
                let rows = sqlx::query("SELECT access_method_id, acs_entrance_id, acs_system_id, state, reason, updated_at, pending_mutation FROM access_method_entrances WHERE workspace_id = $1 AND access_method_id >= $2 AND access_method_id <= $3 ORDER BY access_method_id, acs_entrance_id")
                    .bind(ws.to_string())
                    .bind(first)
                    .bind(last)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let mut out: HashMap<String, Vec<DoorStatus>> = HashMap::new();
                for r in &rows {
                    out.entry(r.try_get("access_method_id").map_err(db_err)?).or_default().push(door_row(r)?);
                }
                Ok(out)
            }

            async fn with_doors(conn: &mut Conn, ws: WorkspaceId, mut methods: Vec<AccessMethod>) -> Result<Vec<AccessMethod>, Error> {
                let (Some(first), Some(last)) = (methods.iter().map(|m| m.id).min(), methods.iter().map(|m| m.id).max()) else {
                    return Ok(methods);
                };
                let mut doors = load_doors(conn, ws, &first.to_string(), &last.to_string()).await?;
                for m in &mut methods {
                    m.doors = doors.remove(&m.id.to_string()).unwrap_or_default();
                }
                Ok(methods)
            }

            async fn with_entrances(conn: &mut Conn, ws: WorkspaceId, mut grants: Vec<AccessGrant>) -> Result<Vec<AccessGrant>, Error> {
                let (Some(first), Some(last)) = (grants.iter().map(|g| g.id).min(), grants.iter().map(|g| g.id).max()) else {
                    return Ok(grants);
                };
                let rows = sqlx::query("SELECT access_grant_id, acs_entrance_id FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id >= $2 AND access_grant_id <= $3 ORDER BY access_grant_id, position")
                    .bind(ws.to_string())
                    .bind(first.to_string())
                    .bind(last.to_string())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let mut by: HashMap<String, Vec<_>> = HashMap::new();
                for r in &rows {
                    let e: String = r.try_get("acs_entrance_id").map_err(db_err)?;
                    by.entry(r.try_get("access_grant_id").map_err(db_err)?).or_default().push(parse("acs_entrance_id", &e)?);
                }
                // What is still being pushed: the unconfirmed doors of the grants' live methods.
                let rows = sqlx::query("SELECT m.access_grant_id, d.acs_entrance_id, d.acs_system_id, d.state, d.reason, d.updated_at, d.pending_mutation FROM access_method_entrances d JOIN access_methods m ON m.workspace_id = d.workspace_id AND m.access_method_id = d.access_method_id WHERE m.workspace_id = $1 AND m.access_grant_id >= $2 AND m.access_grant_id <= $3 AND m.deleted_at IS NULL AND (d.state IN ('pending', 'unknown') OR d.pending_mutation IS NOT NULL) ORDER BY d.acs_entrance_id")
                    .bind(ws.to_string())
                    .bind(first.to_string())
                    .bind(last.to_string())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let mut doors: HashMap<String, Vec<DoorStatus>> = HashMap::new();
                for r in &rows {
                    doors.entry(r.try_get("access_grant_id").map_err(db_err)?).or_default().push(door_row(r)?);
                }
                for g in &mut grants {
                    g.entrance_ids = by.remove(&g.id.to_string()).unwrap_or_default();
                    g.pending_mutations = keygate_domain::grant::pending_mutations(doors.get(&g.id.to_string()).into_iter().flatten());
                }
                Ok(grants)
            }

            fn attempt_row(r: &$row) -> Result<ActionAttempt, Error> {
                Ok(AttemptRow::from_row(r).map_err(db_err)?.try_into()?)
            }

            fn enum_str<T: serde::Serialize>(v: &T) -> Result<String, Error> {
                Ok(json(v)?.trim_matches('"').to_owned())
            }

            async fn grant_in(conn: &mut Conn, ws: WorkspaceId, id: AccessGrantId) -> Result<AccessGrant, Error> {
                grant_by(conn, ws, id, concat!("SELECT ", grant_cols!(), " FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2", $lock)).await
            }

            async fn grant_by(conn: &mut Conn, ws: WorkspaceId, id: AccessGrantId, sql: &'static str) -> Result<AccessGrant, Error> {
                let row = sqlx::query(sql)
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::AccessGrant, id.to_string()))?;
                let g = grant_row(&row)?;
                Ok(with_entrances(conn, ws, vec![g]).await?.remove(0))
            }

            async fn methods_of(conn: &mut Conn, ws: WorkspaceId, grant: AccessGrantId) -> Result<Vec<AccessMethod>, Error> {
                let rows = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods WHERE workspace_id = $1 AND access_grant_id = $2 ORDER BY access_method_id"))
                    .bind(ws.to_string())
                    .bind(grant.to_string())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let methods = rows.iter().map(method_row).collect::<Result<Vec<_>, _>>()?;
                with_doors(conn, ws, methods).await
            }

            /// Checks, under the workspace's lock, that the PINs Keygate chose for `methods` are
            /// still free on their doors: a concurrent grant may have taken one since the choice.
            async fn check_pins(conn: &mut Conn, ws: WorkspaceId, methods: &[AccessMethod]) -> Result<(), Error> {
                if !methods.iter().any(|m| m.code.is_some()) {
                    return Ok(());
                }
                // Serialize with other creates of this workspace (the event counter row stays
                // locked until commit).
                sqlx::query("INSERT INTO event_counters (workspace_id, last_seq) VALUES ($1, 0) ON CONFLICT (workspace_id) DO UPDATE SET last_seq = event_counters.last_seq")
                    .bind(ws.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                for m in methods.iter().filter(|m| m.code.is_some()) {
                    for d in &m.doors {
                        let taken: Vec<String> = sqlx::query_scalar("SELECT DISTINCT m.code FROM access_methods m JOIN access_method_entrances d ON d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id WHERE m.workspace_id = $1 AND d.acs_entrance_id = $2 AND m.code IS NOT NULL AND d.state <> 'revoked' AND m.deleted_at IS NULL")
                            .bind(ws.to_string())
                            .bind(d.entrance_id.to_string())
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(db_err)?;
                        if taken.iter().any(|c| Some(c) == m.code.as_ref()) {
                            return Err(Error::AlreadyExists { reason: ErrorReason::PinCodeTaken, message: "the chosen PIN code was taken on one of these entrances".into() });
                        }
                    }
                }
                Ok(())
            }

            /// A grant that is not deleted (locked, with `lock`), with its live methods.
            async fn live_grant(conn: &mut Conn, ws: WorkspaceId, id: AccessGrantId, lock: bool) -> Result<(AccessGrant, Vec<AccessMethod>), Error> {
                let sql = if lock {
                    concat!("SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2", $lock)
                } else {
                    "SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2"
                };
                let found: Option<Option<i64>> = sqlx::query_scalar(sql)
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                if !matches!(found, Some(None)) {
                    return Err(Error::not_found(Resource::AccessGrant, id.to_string()));
                }
                let grant = if lock {
                    grant_in(conn, ws, id).await?
                } else {
                    grant_by(conn, ws, id, concat!("SELECT ", grant_cols!(), " FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2")).await?
                };
                let rows = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods WHERE workspace_id = $1 AND access_grant_id = $2 AND deleted_at IS NULL ORDER BY access_method_id"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let methods = rows.iter().map(method_row).collect::<Result<Vec<_>, _>>()?;
                Ok((grant, with_doors(conn, ws, methods).await?))
            }

            #[async_trait]
            impl GrantStore for $store {
                async fn access_grant_with_methods(&self, ws: WorkspaceId, id: AccessGrantId) -> Result<(AccessGrant, Vec<AccessMethod>), Error> {
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    live_grant(&mut conn, ws, id, false).await
                }

                async fn update_access_grant(&self, ws: WorkspaceId, before: &(AccessGrant, Vec<AccessMethod>), w: &keygate_domain::update::GrantWrite) -> Result<(AccessGrant, Vec<Event>), Error> {
                    let now = w.grant.updated_at;
                    let g = &w.grant;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let current = live_grant(&mut tx, ws, g.id, true).await?;
                    if current != *before {
                        return Err(Error::Aborted { message: format!("access grant {} changed while the update was planned", g.id) });
                    }
                    check_pins(&mut tx, ws, &w.new_methods).await?;
                    sqlx::query("UPDATE access_grants SET name = $3, starts_at = $4, ends_at = $5, requested_access_methods = $6, warnings = $7, errors = $8, updated_at = $9 WHERE workspace_id = $1 AND access_grant_id = $2")
                        .bind(ws.to_string())
                        .bind(g.id.to_string())
                        .bind(&g.name)
                        .bind(to_micros(g.starts_at))
                        .bind(g.ends_at.map(to_micros))
                        .bind(json(&g.requested)?)
                        .bind(json(&g.warnings)?)
                        .bind(json(&g.errors)?)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    for e in &w.removed {
                        sqlx::query("DELETE FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id = $2 AND acs_entrance_id = $3")
                            .bind(ws.to_string())
                            .bind(g.id.to_string())
                            .bind(e.to_string())
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    let last: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(position), -1) FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id = $2")
                        .bind(ws.to_string())
                        .bind(g.id.to_string())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    for (i, (entrance, system)) in w.added.iter().enumerate() {
                        sqlx::query("INSERT INTO access_grant_entrances (workspace_id, access_grant_id, acs_entrance_id, acs_system_id, position) VALUES ($1, $2, $3, $4, $5)")
                            .bind(ws.to_string())
                            .bind(g.id.to_string())
                            .bind(entrance.to_string())
                            .bind(system.to_string())
                            .bind(last + 1 + i32::try_from(i).unwrap_or(i32::MAX - last - 1))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    for m in &w.methods {
                        write_method(&mut tx, m, false).await?;
                    }
                    for m in &w.new_methods {
                        write_method(&mut tx, m, true).await?;
                    }
                    // The grant's Instant Key lasts as long as the grant.
                    if let Some(key) = g.instant_key_id {
                        sqlx::query("UPDATE instant_keys SET expires_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2")
                            .bind(ws.to_string())
                            .bind(key.to_string())
                            .bind(g.ends_at.map(to_micros))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    for work in &w.jobs {
                        // The new job carries the whole wanted state of its credential, so a
                        // provision of it that has not started yet is no longer needed.
                        sqlx::query("UPDATE jobs SET state = 'done', last_error = 'superseded by an update of the grant', updated_at = $4 WHERE workspace_id = $1 AND kind = 'provision' AND subject_id = $2 AND acs_system_id = $3 AND state = 'queued'")
                            .bind(ws.to_string())
                            .bind(work.subject_id())
                            .bind(work.acs_system_id().to_string())
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        insert_job(&mut tx, ws, work, now).await?;
                    }
                    let events = $store::append_events(&mut tx, ws, &w.events, now).await?;
                    let (after, _) = live_grant(&mut tx, ws, g.id, true).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok((after, events))
                }

                async fn create_action_attempt(&self, ws: WorkspaceId, a: &ActionAttempt, job: &JobWork, idem: Option<&Idempotency>) -> Result<ActionAttempt, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = $store::claim_idempotency(&mut tx, ws, idem, &a.id.to_string(), a.created_at).await? {
                        drop(tx);
                        return self.get_action_attempt(ws, parse("action_attempt_id", &first)?).await;
                    }
                    sqlx::query("INSERT INTO action_attempts (workspace_id, action_attempt_id, action_type, status, access_method_id, acs_encoder_id, acs_entrance_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                        .bind(ws.to_string())
                        .bind(a.id.to_string())
                        .bind(enum_str(&a.action_type)?)
                        .bind(enum_str(&a.status)?)
                        .bind(a.access_method_id.map(|i| i.to_string()))
                        .bind(a.acs_encoder_id.map(|i| i.to_string()))
                        .bind(a.acs_entrance_id.map(|i| i.to_string()))
                        .bind(to_micros(a.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    insert_job(&mut tx, ws, job, a.created_at).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(a.clone())
                }

                async fn delete_access_grant(&self, ws: WorkspaceId, id: AccessGrantId, now: OffsetDateTime) -> Result<Vec<Event>, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let found: Option<Option<i64>> = sqlx::query_scalar(concat!("SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if !matches!(found, Some(None)) {
                        return Err(Error::not_found(Resource::AccessGrant, id.to_string()));
                    }
                    let grant = grant_in(&mut tx, ws, id).await?;
                    // The natural key is freed for a new grant (NULLs never collide in the unique index).
                    sqlx::query("UPDATE access_grants SET deleted_at = $3, updated_at = $3, access_grant_key = NULL WHERE workspace_id = $1 AND access_grant_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let live: Vec<AccessMethod> = {
                        let all = methods_of(&mut tx, ws, id).await?;
                        let mut live = Vec::new();
                        for m in all {
                            if !method_deleted(&mut tx, ws, m.id).await? {
                                live.push(m);
                            }
                        }
                        live
                    };
                    let mut events = delete_methods(&mut tx, ws, &live, now).await?;
                    events.push(keygate_domain::events::of::access_grant_deleted(id, grant.user_identity_id, now));
                    let appended = $store::append_events(&mut tx, ws, &events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(appended)
                }

                async fn delete_access_method(&self, ws: WorkspaceId, id: AccessMethodId, now: OffsetDateTime) -> Result<Vec<Event>, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    lock_grant_of(&mut tx, ws, id).await?;
                    let row = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2 AND deleted_at IS NULL", $lock))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::AccessMethod, id.to_string()))?;
                    let m = with_doors(&mut tx, ws, vec![method_row(&row)?]).await?.remove(0);
                    // The grant stops listing the method.
                    let mut grant = grant_in(&mut tx, ws, m.access_grant_id).await?;
                    for r in &mut grant.requested {
                        r.created_access_method_ids.retain(|x| *x != id);
                    }
                    sqlx::query("UPDATE access_grants SET requested_access_methods = $3, updated_at = $4 WHERE workspace_id = $1 AND access_grant_id = $2")
                        .bind(ws.to_string())
                        .bind(grant.id.to_string())
                        .bind(json(&grant.requested)?)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let events = delete_methods(&mut tx, ws, std::slice::from_ref(&m), now).await?;
                    let appended = $store::append_events(&mut tx, ws, &events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(appended)
                }

                async fn active_codes(&self, ws: WorkspaceId, entrances: &[keygate_domain::ids::EntranceId]) -> Result<Vec<String>, Error> {
                    let mut out = Vec::new();
                    for e in entrances {
                        let codes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT m.code FROM access_methods m JOIN access_method_entrances d ON d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id WHERE m.workspace_id = $1 AND d.acs_entrance_id = $2 AND m.code IS NOT NULL AND d.state <> 'revoked' AND m.deleted_at IS NULL")
                            .bind(ws.to_string())
                            .bind(e.to_string())
                            .fetch_all(&self.pool)
                            .await
                            .map_err(db_err)?;
                        out.extend(codes);
                    }
                    Ok(out)
                }

                async fn get_action_attempt(&self, ws: WorkspaceId, id: ActionAttemptId) -> Result<ActionAttempt, Error> {
                    let row = sqlx::query("SELECT * FROM action_attempts WHERE workspace_id = $1 AND action_attempt_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::ActionAttempt, id.to_string()))?;
                    attempt_row(&row)
                }

                async fn create_access_grant(&self, ws: WorkspaceId, new: &NewGrant, idem: Option<&Idempotency>) -> Result<(AccessGrant, Vec<Event>), Error> {
                    let now = new.grant.created_at;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = $store::claim_idempotency(&mut tx, ws, idem, &new.grant.id.to_string(), now).await? {
                        let g = grant_in(&mut tx, ws, parse("access_grant_id", &first)?).await?;
                        return Ok((g, Vec::new()));
                    }
                    let g = &new.grant;
                    check_pins(&mut tx, ws, &new.methods).await?;
                    if let Some(person) = &new.new_identity {
                        sqlx::query("INSERT INTO user_identities (user_identity_id, workspace_id, user_identity_key, full_name, email_address, phone_number, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                            .bind(g.user_identity_id.to_string())
                            .bind(ws.to_string())
                            .bind(&person.user_identity_key)
                            .bind(&person.full_name)
                            .bind(&person.email_address)
                            .bind(&person.phone_number)
                            .bind(to_micros(now))
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| StoreError::from(e).on_unique(user_identity_key_taken))?;
                    }
                    sqlx::query(concat!("INSERT INTO access_grants (", grant_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"))
                        .bind(g.id.to_string())
                        .bind(ws.to_string())
                        .bind(g.user_identity_id.to_string())
                        .bind(&g.access_grant_key)
                        .bind(&g.name)
                        .bind(&g.reservation_key)
                        .bind(to_micros(g.starts_at))
                        .bind(g.ends_at.map(to_micros))
                        .bind(json(&g.requested)?)
                        .bind(g.instant_key_id.map(|i| i.to_string()))
                        .bind(json(&g.warnings)?)
                        .bind(json(&g.errors)?)
                        .bind(to_micros(now))
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| StoreError::from(e).on_unique(access_grant_key_taken))?;
                    for (i, (entrance, system)) in new.entrances.iter().enumerate() {
                        sqlx::query("INSERT INTO access_grant_entrances (workspace_id, access_grant_id, acs_entrance_id, acs_system_id, position) VALUES ($1, $2, $3, $4, $5)")
                            .bind(ws.to_string())
                            .bind(g.id.to_string())
                            .bind(entrance.to_string())
                            .bind(system.to_string())
                            .bind(i32::try_from(i).unwrap_or(i32::MAX))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    for m in &new.methods {
                        write_method(&mut tx, m, true).await?;
                    }
                    for j in &new.jobs {
                        insert_job(&mut tx, ws, &JobWork::Provision(j.clone()), now).await?;
                    }
                    if let Some((key, token_sha256)) = &new.instant_key {
                        $store::insert_instant_key(&mut tx, key, token_sha256).await?;
                    }
                    let events = $store::append_events(&mut tx, ws, &new.events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    let mut created = g.clone();
                    created.entrance_ids = new.entrances.iter().map(|(e, _)| *e).collect();
                    Ok((created, events))
                }

                async fn get_access_grant(&self, ws: WorkspaceId, id: AccessGrantId) -> Result<AccessGrant, Error> {
                    // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    let row = sqlx::query(concat!("SELECT ", grant_cols!(), " FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2 AND deleted_at IS NULL"))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::AccessGrant, id.to_string()))?;
                    let g = grant_row(&row)?;
                    Ok(with_entrances(&mut conn, ws, vec![g]).await?.remove(0))
                }

                async fn list_access_grants(&self, ws: WorkspaceId, f: &GrantFilter, page: &PageRequest) -> Result<Page<AccessGrant>, Error> {
                    // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    let rows = sqlx::query(concat!("SELECT ", grant_cols!(), " FROM access_grants g WHERE workspace_id = $1 AND deleted_at IS NULL AND access_grant_id > $2 AND ($3 = '' OR user_identity_id = $3) AND ($4 = '' OR EXISTS (SELECT 1 FROM access_grant_entrances e WHERE e.workspace_id = g.workspace_id AND e.access_grant_id = g.access_grant_id AND e.acs_entrance_id = $4)) AND ($5 = '' OR EXISTS (SELECT 1 FROM access_grant_entrances e WHERE e.workspace_id = g.workspace_id AND e.access_grant_id = g.access_grant_id AND e.acs_system_id = $5)) ORDER BY access_grant_id LIMIT $6"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(f.user_identity_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    let grants = rows.iter().map(grant_row).collect::<Result<Vec<_>, _>>()?;
                    let mut p = into_page(grants, page.limit, |g| g.id.to_string());
                    p.items = with_entrances(&mut conn, ws, p.items).await?;
                    Ok(p)
                }

                async fn get_access_method(&self, ws: WorkspaceId, id: AccessMethodId) -> Result<AccessMethod, Error> {
                    // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    let row = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2 AND deleted_at IS NULL"))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::AccessMethod, id.to_string()))?;
                    Ok(with_doors(&mut conn, ws, vec![method_row(&row)?]).await?.remove(0))
                }

                async fn list_access_methods(&self, ws: WorkspaceId, f: &MethodFilter, page: &PageRequest) -> Result<Page<AccessMethod>, Error> {
                    // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    let rows = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods m WHERE workspace_id = $1 AND deleted_at IS NULL AND access_method_id > $2 AND ($3 = '' OR access_grant_id = $3) AND ($4 = '' OR user_identity_id = $4) AND ($5 = '' OR EXISTS (SELECT 1 FROM access_method_entrances d WHERE d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id AND d.acs_entrance_id = $5)) AND ($6 = '' OR EXISTS (SELECT 1 FROM access_method_entrances d WHERE d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id AND d.acs_system_id = $6)) ORDER BY access_method_id LIMIT $7"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(f.access_grant_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.user_identity_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    let methods = rows.iter().map(method_row).collect::<Result<Vec<_>, _>>()?;
                    let mut p = into_page(methods, page.limit, |m| m.id.to_string());
                    p.items = with_doors(&mut conn, ws, p.items).await?;
                    Ok(p)
                }
            }

            /// Queues revocation of every door of `m` that may hold access, one job per system.
            async fn queue_revokes(conn: &mut Conn, ws: WorkspaceId, m: &AccessMethod, now: OffsetDateTime) -> Result<(), Error> {
                let mut by_system: std::collections::BTreeMap<keygate_domain::ids::AccessSystemId, Vec<keygate_domain::ids::EntranceId>> = Default::default();
                for d in m.doors.iter().filter(|d| d.state != DoorState::Revoked) {
                    by_system.entry(d.acs_system_id).or_default().push(d.entrance_id);
                }
                for (system, entrance_ids) in by_system {
                    let job = keygate_domain::action::RevokeJob { access_grant_id: m.access_grant_id, access_method_id: m.id, acs_system_id: system, entrance_ids };
                    insert_job(conn, ws, &JobWork::Revoke(job), now).await?;
                }
                Ok(())
            }

            /// Queues a job, due now.
            async fn insert_job(conn: &mut Conn, ws: WorkspaceId, work: &JobWork, now: OffsetDateTime) -> Result<(), Error> {
                // The span of whatever queues the job (an RPC, the reconciler): the job continues its trace.
                sqlx::query("INSERT INTO jobs (job_id, workspace_id, kind, acs_system_id, subject_id, payload, state, attempts, run_at, created_at, updated_at, trace_context) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7, $7, $8)")
                    .bind(JobId::new().to_string())
                    .bind(ws.to_string())
                    .bind(work.kind())
                    .bind(work.acs_system_id().to_string())
                    .bind(work.subject_id())
                    .bind(json(work)?)
                    .bind(to_micros(now))
                    .bind(keygate_telemetry::propagation::current_traceparent())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            /// Marks methods deleted, queues their revocation, and returns the deletion events. A
            /// deleted mobile key's Instant Key is revoked with it: its page has nothing left to open.
            async fn delete_methods(conn: &mut Conn, ws: WorkspaceId, methods: &[AccessMethod], now: OffsetDateTime) -> Result<Vec<NewEvent>, Error> {
                let mut events = Vec::new();
                for m in methods {
                    if let Some(key) = m.instant_key_id {
                        let revoked = sqlx::query("UPDATE instant_keys SET revoked_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2 AND revoked_at IS NULL")
                            .bind(ws.to_string())
                            .bind(key.to_string())
                            .bind(to_micros(now))
                            .execute(&mut *conn)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                        if revoked > 0 {
                            events.push(keygate_domain::events::of::instant_key_revoked(key, m.user_identity_id, Some(m.access_grant_id), now));
                        }
                    }
                    sqlx::query("UPDATE access_methods SET deleted_at = $3, updated_at = $3 WHERE workspace_id = $1 AND access_method_id = $2")
                        .bind(ws.to_string())
                        .bind(m.id.to_string())
                        .bind(to_micros(now))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    queue_revokes(conn, ws, m, now).await?;
                    events.push(keygate_domain::events::of::access_method_deleted(m, now));
                }
                Ok(events)
            }

            async fn method_deleted(conn: &mut Conn, ws: WorkspaceId, id: AccessMethodId) -> Result<bool, Error> {
                let d: Option<Option<i64>> = sqlx::query_scalar("SELECT deleted_at FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2")
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(!matches!(d, Some(None)))
            }

            /// Locks the grant of access method `method`. Every write of a grant's methods takes
            /// this lock first, so completions of jobs in different systems (which rewrite the
            /// same method rows) apply one after another instead of losing each other's doors.
            async fn lock_grant_of(conn: &mut Conn, ws: WorkspaceId, method: AccessMethodId) -> Result<(), Error> {
                let grant: Option<String> = sqlx::query_scalar("SELECT access_grant_id FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2")
                    .bind(ws.to_string())
                    .bind(method.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                if let Some(grant) = grant {
                    sqlx::query(concat!("SELECT access_grant_id FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(grant)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db_err)?;
                }
                Ok(())
            }

            /// Marks a job done and drops its lease.
            async fn finish_job(conn: &mut Conn, job: &Job, now: OffsetDateTime) -> Result<(), Error> {
                sqlx::query("UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE job_id = $1")
                    .bind(job.id.to_string())
                    .bind(to_micros(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn lease_held(conn: &mut Conn, job: &Job, owner: &str) -> Result<bool, Error> {
                let row = sqlx::query(concat!("SELECT state, lease_owner FROM jobs WHERE job_id = $1", $lock))
                    .bind(job.id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(match row {
                    Some(r) => {
                        let state: String = r.try_get("state").map_err(db_err)?;
                        let lease: Option<String> = r.try_get("lease_owner").map_err(db_err)?;
                        state == "running" && lease.as_deref() == Some(owner)
                    }
                    None => false,
                })
            }

            #[async_trait]
            impl JobQueue for $store {
                async fn claim_jobs(&self, owner: &str, limit: u32, lease: std::time::Duration, now: OffsetDateTime) -> Result<Vec<Job>, Error> {
                    let until = now + lease;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let rows = sqlx::query(crate::dialect::assembled(crate::common::job_claim::<$db>()))
                        .bind(owner)
                        .bind(to_micros(until))
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    rows.iter()
                        .map(|r| {
                            let work: JobWork = unjson("job payload", &r.try_get::<String, _>("payload").map_err(db_err)?)?;
                            Ok(Job {
                                id: parse("job_id", &r.try_get::<String, _>("job_id").map_err(db_err)?)?,
                                workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                                work,
                                attempts: u32::try_from(r.try_get::<i32, _>("attempts").map_err(db_err)?).unwrap_or(0),
                                trace_context: r.try_get("trace_context").map_err(db_err)?,
                            })
                        })
                        .collect()
                }

                async fn complete_provision(&self, job: &Job, owner: &str, result: &ProvisionResult, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let ws = job.workspace_id;
                    let JobWork::Provision(p) = &job.work else {
                        return Err(Error::Internal { message: format!("job {} is not a provision job", job.id) });
                    };
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(None);
                    }
                    if method_deleted(&mut tx, ws, p.access_method_id).await? {
                        // Deleted while this call was in flight: whatever it granted is taken back,
                        // whichever of the two jobs finished first.
                        let revoke = keygate_domain::action::RevokeJob {
                            access_grant_id: p.access_grant_id,
                            access_method_id: p.access_method_id,
                            acs_system_id: p.acs_system_id,
                            entrance_ids: p.entrance_ids.clone(),
                        };
                        insert_job(&mut tx, ws, &JobWork::Revoke(revoke), now).await?;
                        finish_job(&mut tx, job, now).await?;
                        tx.commit().await.map_err(db_err)?;
                        return Ok(Some(Vec::new()));
                    }
                    // Locks the grant: completions of one grant's jobs apply one after another,
                    // so "all doors granted" is decided once.
                    let grant = grant_in(&mut tx, ws, p.access_grant_id).await;
                    let grant = match grant {
                        Ok(g) => g,
                        Err(Error::NotFound { .. }) => {
                            finish_job(&mut tx, job, now).await?;
                            tx.commit().await.map_err(db_err)?;
                            return Ok(Some(Vec::new()));
                        }
                        Err(e) => return Err(e),
                    };
                    let methods = methods_of(&mut tx, ws, grant.id).await?;
                    let t = tracker::apply(&grant, &methods, p, result, now);
                    for (after, before) in t.methods.iter().zip(&methods) {
                        if after != before {
                            write_method(&mut tx, after, false).await?;
                        }
                    }
                    if !t.grant_warnings.is_empty() || !t.grant_errors.is_empty() {
                        let mut warnings = grant.warnings.clone();
                        warnings.extend(t.grant_warnings.iter().cloned());
                        let mut errors = grant.errors.clone();
                        errors.extend(t.grant_errors.iter().cloned());
                        sqlx::query("UPDATE access_grants SET warnings = $3, errors = $5, updated_at = $4 WHERE workspace_id = $1 AND access_grant_id = $2")
                            .bind(ws.to_string())
                            .bind(grant.id.to_string())
                            .bind(json(&warnings)?)
                            .bind(to_micros(now))
                            .bind(json(&errors)?)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    finish_job(&mut tx, job, now).await?;
                    let events = $store::append_events(&mut tx, ws, &t.events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(events))
                }

                async fn reschedule_job(&self, job: &Job, owner: &str, run_at: OffsetDateTime, error: &str, refund: bool, now: OffsetDateTime) -> Result<bool, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(false);
                    }
                    sqlx::query("UPDATE jobs SET state = 'queued', run_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4, attempts = attempts - $5 WHERE job_id = $1")
                        .bind(job.id.to_string())
                        .bind(to_micros(run_at))
                        .bind(error)
                        .bind(to_micros(now))
                        .bind(i32::from(refund))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn complete_encode(&self, job: &Job, owner: &str, outcome: &Result<EncodedCard, AttemptError>, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let ws = job.workspace_id;
                    let JobWork::Encode(e) = &job.work else {
                        return Err(Error::Internal { message: format!("job {} is not an encode job", job.id) });
                    };
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(None);
                    }
                    lock_grant_of(&mut tx, ws, e.access_method_id).await?;
                    let mut events = Vec::new();
                    let deleted = method_deleted(&mut tx, ws, e.access_method_id).await?;
                    let interrupted = Err(AttemptError { error_type: "encoding_interrupted".into(), message: "the access method was deleted during the encoding".into() });
                    // A card deleted while it was being encoded is not issued: the attempt fails.
                    let outcome = if deleted && outcome.is_ok() { &interrupted } else { outcome };
                    match outcome {
                        Ok(card) => {
                            sqlx::query("UPDATE action_attempts SET status = 'success', result = $3, completed_at = $4 WHERE workspace_id = $1 AND action_attempt_id = $2")
                                .bind(ws.to_string())
                                .bind(e.action_attempt_id.to_string())
                                .bind(json(card)?)
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            let row = sqlx::query(concat!("SELECT ", method_cols!(), " FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2", $lock))
                                .bind(ws.to_string())
                                .bind(e.access_method_id.to_string())
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            if let Some(row) = row {
                                let mut m = with_doors(&mut tx, ws, vec![method_row(&row)?]).await?.remove(0);
                                let was_issued = m.is_issued;
                                m.is_card_encoding_required = false;
                                m.is_ready_for_encoding = false;
                                m.is_issued = true;
                                m.issued_at = m.issued_at.or(Some(now));
                                m.updated_at = now;
                                write_method(&mut tx, &m, false).await?;
                                events.push(keygate_domain::events::of::card_encoded(&m, e.acs_system_id, was_issued, now));
                            }
                        }
                        Err(err) => {
                            sqlx::query("UPDATE action_attempts SET status = 'error', error_type = $3, error_message = $4, completed_at = $5 WHERE workspace_id = $1 AND action_attempt_id = $2")
                                .bind(ws.to_string())
                                .bind(e.action_attempt_id.to_string())
                                .bind(&err.error_type)
                                .bind(&err.message)
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                        }
                    }
                    finish_job(&mut tx, job, now).await?;
                    let appended = $store::append_events(&mut tx, ws, &events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(appended))
                }

                async fn complete_unlock(&self, job: &Job, owner: &str, outcome: &Result<(), AttemptError>, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let ws = job.workspace_id;
                    let JobWork::Unlock(u) = &job.work else {
                        return Err(Error::Internal { message: format!("job {} is not an unlock job", job.id) });
                    };
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(None);
                    }
                    let (status, error_type, message) = match outcome {
                        Ok(()) => ("success", None, None),
                        Err(e) => ("error", Some(e.error_type.as_str()), Some(e.message.as_str())),
                    };
                    sqlx::query("UPDATE action_attempts SET status = $3, error_type = $4, error_message = $5, completed_at = $6 WHERE workspace_id = $1 AND action_attempt_id = $2")
                        .bind(ws.to_string())
                        .bind(u.action_attempt_id.to_string())
                        .bind(status)
                        .bind(error_type)
                        .bind(message)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let mut events = Vec::new();
                    if outcome.is_ok() {
                        events.push(keygate_domain::events::of::entrance_unlocked(u, now));
                    }
                    finish_job(&mut tx, job, now).await?;
                    let appended = $store::append_events(&mut tx, ws, &events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(appended))
                }

                async fn mark_unknown(&self, job: &Job, owner: &str, reason: &str, now: OffsetDateTime) -> Result<bool, Error> {
                    let JobWork::Provision(p) = &job.work else {
                        return Ok(true);
                    };
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(false);
                    }
                    lock_grant_of(&mut tx, job.workspace_id, p.access_method_id).await?;
                    sqlx::query("UPDATE access_method_entrances SET state = 'unknown', reason = $4, updated_at = $5 WHERE workspace_id = $1 AND access_method_id = $2 AND acs_system_id = $3 AND state = 'pending'")
                        .bind(job.workspace_id.to_string())
                        .bind(p.access_method_id.to_string())
                        .bind(p.acs_system_id.to_string())
                        .bind(reason)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn complete_revoke(&self, job: &Job, owner: &str, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let ws = job.workspace_id;
                    let JobWork::Revoke(r) = &job.work else {
                        return Err(Error::Internal { message: format!("job {} is not a revoke job", job.id) });
                    };
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if !lease_held(&mut tx, job, owner).await? {
                        return Ok(None);
                    }
                    let live: Option<Option<i64>> = sqlx::query_scalar(concat!("SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(r.access_grant_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let methods = methods_of(&mut tx, ws, r.access_grant_id).await?;
                    let method_live = !method_deleted(&mut tx, ws, r.access_method_id).await?;
                    let t = tracker::revoked(matches!(live, Some(None)), method_live, &methods, r, now);
                    for (after, before) in t.methods.iter().zip(&methods) {
                        if after != before {
                            write_method(&mut tx, after, false).await?;
                        }
                    }
                    let events = t.events;
                    finish_job(&mut tx, job, now).await?;
                    let appended = $store::append_events(&mut tx, ws, &events, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(appended))
                }

                async fn reconcile_page(&self, after: Option<AccessMethodId>, limit: u32) -> Result<Vec<ReconcileItem>, Error> {
                    let mut conn = self.pool.begin_with($read).await.map_err(db_err)?;
                    let rows = sqlx::query(concat!("SELECT ", method_cols!(), ", deleted_at AS method_deleted_at, (SELECT g.deleted_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_deleted_at, (SELECT g.starts_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_starts_at, (SELECT g.ends_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_ends_at FROM access_methods m WHERE access_method_id > $1 ORDER BY access_method_id LIMIT $2"))
                        .bind(after.map(|a| a.to_string()).unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    let now = to_micros(keygate_domain::model::now());
                    let mut out = Vec::new();
                    for r in &rows {
                        let m = method_row(r)?;
                        let ends: Option<i64> = r.try_get("grant_ends_at").map_err(db_err)?;
                        let gone = r.try_get::<Option<i64>, _>("method_deleted_at").map_err(db_err)?.is_some()
                            || r.try_get::<Option<i64>, _>("grant_deleted_at").map_err(db_err)?.is_some()
                            || ends.is_some_and(|e| e <= now);
                        let starts_at = from_micros(r.try_get("grant_starts_at").map_err(db_err)?)?;
                        let ends_at = ends.map(from_micros).transpose()?;
                        let m = with_doors(&mut conn, m.workspace_id, vec![m]).await?.remove(0);
                        let mut by_system: std::collections::BTreeMap<keygate_domain::ids::AccessSystemId, Vec<DoorStatus>> = Default::default();
                        for d in &m.doors {
                            by_system.entry(d.acs_system_id).or_default().push(d.clone());
                        }
                        for (system, doors) in by_system {
                            let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE subject_id = $1 AND acs_system_id = $2 AND state IN ('queued', 'running')")
                                .bind(m.id.to_string())
                                .bind(system.to_string())
                                .fetch_one(&mut *conn)
                                .await
                                .map_err(db_err)?;
                            if active > 0 {
                                continue;
                            }
                            out.push(ReconcileItem {
                                workspace_id: m.workspace_id,
                                access_grant_id: m.access_grant_id,
                                access_method_id: m.id,
                                acs_system_id: system,
                                mode: m.mode,
                                code: m.code.clone(),
                                gone,
                                starts_at,
                                ends_at,
                                doors,
                            });
                        }
                    }
                    Ok(out)
                }

                async fn repair(&self, item: &ReconcileItem, lost: &[keygate_domain::ids::EntranceId], reason: &str, work: &JobWork, now: OffsetDateTime) -> Result<bool, Error> {
                    let ws = item.workspace_id;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    lock_grant_of(&mut tx, ws, item.access_method_id).await?;
                    let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE subject_id = $1 AND acs_system_id = $2 AND state IN ('queued', 'running')")
                        .bind(item.access_method_id.to_string())
                        .bind(item.acs_system_id.to_string())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if active > 0 {
                        return Ok(false);
                    }
                    for e in lost {
                        sqlx::query("UPDATE access_method_entrances SET state = 'pending', reason = $4, updated_at = $5 WHERE workspace_id = $1 AND access_method_id = $2 AND acs_entrance_id = $3")
                            .bind(ws.to_string())
                            .bind(item.access_method_id.to_string())
                            .bind(e.to_string())
                            .bind(reason)
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    insert_job(&mut tx, ws, work, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn expire_grants(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<WorkspaceId>, Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let rows = sqlx::query(concat!("SELECT workspace_id, access_grant_id FROM access_grants WHERE ends_at <= $1 AND expired_at IS NULL AND deleted_at IS NULL ORDER BY ends_at LIMIT $2", $lock))
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let mut touched = Vec::new();
                    for r in &rows {
                        let ws: WorkspaceId = parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?;
                        let id: AccessGrantId = parse("access_grant_id", &r.try_get::<String, _>("access_grant_id").map_err(db_err)?)?;
                        sqlx::query("UPDATE access_grants SET expired_at = $3 WHERE workspace_id = $1 AND access_grant_id = $2")
                            .bind(ws.to_string())
                            .bind(id.to_string())
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        let (_, methods) = live_grant(&mut tx, ws, id, true).await?;
                        for m in &methods {
                            queue_revokes(&mut tx, ws, m, now).await?;
                        }
                        if !touched.contains(&ws) {
                            touched.push(ws);
                        }
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(touched)
                }

                async fn count_jobs(&self, state: &str) -> Result<i64, Error> {
                    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = $1")
                        .bind(state)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)
                }

                async fn queue_age(&self, now: OffsetDateTime) -> Result<QueueAge, Error> {
                    let r = sqlx::query("SELECT MIN(created_at) AS queued, MIN(CASE WHEN run_at <= $1 THEN run_at END) AS due FROM jobs WHERE state = 'queued'")
                        .bind(to_micros(now))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(QueueAge {
                        oldest_queued_at: r.try_get::<Option<i64>, _>("queued").map_err(db_err)?.map(from_micros).transpose()?,
                        oldest_due_at: r.try_get::<Option<i64>, _>("due").map_err(db_err)?.map(from_micros).transpose()?,
                    })
                }
            }
        }
    };
}

pub(crate) use {grant_cols, impl_grant_store, method_cols};
