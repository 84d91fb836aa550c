//! The one SQL implementation of every storage trait, instantiated for PostgreSQL and SQLite by
//! `impl_store!`. Both dialects accept `$N` placeholders, `ON CONFLICT ... DO NOTHING` and the
//! same column types (text ids, bigint microsecond times), so the statements are shared and the
//! conformance suite proves they behave the same. A macro rather than generics because sqlx's
//! generic executor bounds would obscure every query.

macro_rules! ws_cols {
    () => {
        "workspace_id, name, workspace_type, created_at"
    };
}
macro_rules! key_cols {
    () => {
        "api_key_id, workspace_id, name, secret_sha256, created_at, revoked_at"
    };
}
macro_rules! sys_cols {
    () => {
        "acs_system_id, workspace_id, name, external_type, system_type, is_virtual, time_zone, capabilities, created_at"
    };
}
macro_rules! ent_cols {
    () => {
        "acs_entrance_id, acs_system_id, display_name, can_unlock_with_card, can_unlock_with_code, can_unlock_with_mobile_key, can_unlock_with_cloud_key, can_belong_to_reservation, created_at"
    };
}
macro_rules! grp_cols {
    () => {
        "acs_access_group_id, acs_system_id, display_name, created_at"
    };
}
macro_rules! enc_cols {
    () => {
        "acs_encoder_id, acs_system_id, display_name, is_online, created_at"
    };
}
macro_rules! impl_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, name = $backend:literal, migrator = $migrator:path) => {
        use std::collections::HashMap;

        use async_trait::async_trait;
        use keygate_domain::capability::CapabilityDescriptor;
        use keygate_domain::ids::{
            AccessGroupId, AccessSystemId, ApiKeyId, EncoderId, EntranceId, WorkspaceId,
        };
        use keygate_domain::model::{
            AccessGroup, AccessSystem, ApiKey, Encoder, Entrance, NewAccessSystem, Workspace,
            WorkspaceType, truncate_to_micros,
        };
        use keygate_domain::page::{Page, PageRequest};
        use keygate_domain::{Error, Resource};
        use sqlx::Row as _;
        use time::OffsetDateTime;

        use crate::error::StoreError;
        use crate::traits::*;
        use crate::util::{db_err, fetch_limit, from_micros, into_page, parse, to_micros};

        type Conn = <$db as sqlx::Database>::Connection;

        fn after(page: &PageRequest) -> String {
            page.after.clone().unwrap_or_default()
        }

        fn workspace_row(r: &$row) -> Result<Workspace, Error> {
            let kind: String = r.try_get("workspace_type").map_err(db_err)?;
            Ok(Workspace {
                id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                name: r.try_get("name").map_err(db_err)?,
                workspace_type: WorkspaceType::parse(&kind).ok_or_else(|| Error::Internal {
                    message: format!("stored workspace_type {kind:?} is unknown"),
                })?,
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
            })
        }

        fn api_key_row(r: &$row) -> Result<ApiKey, Error> {
            Ok(ApiKey {
                id: parse("api_key_id", &r.try_get::<String, _>("api_key_id").map_err(db_err)?)?,
                workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                name: r.try_get("name").map_err(db_err)?,
                secret_sha256: r.try_get("secret_sha256").map_err(db_err)?,
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                revoked_at: r
                    .try_get::<Option<i64>, _>("revoked_at")
                    .map_err(db_err)?
                    .map(from_micros)
                    .transpose()?,
            })
        }

        fn system_row(r: &$row) -> Result<AccessSystem, Error> {
            let caps: String = r.try_get("capabilities").map_err(db_err)?;
            let capabilities: CapabilityDescriptor =
                serde_json::from_str(&caps).map_err(|e| Error::Internal {
                    message: format!("stored capabilities do not parse: {e}"),
                })?;
            Ok(AccessSystem {
                id: parse("acs_system_id", &r.try_get::<String, _>("acs_system_id").map_err(db_err)?)?,
                workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                name: r.try_get("name").map_err(db_err)?,
                external_type: r.try_get("external_type").map_err(db_err)?,
                system_type: r.try_get("system_type").map_err(db_err)?,
                is_virtual: r.try_get("is_virtual").map_err(db_err)?,
                time_zone: r.try_get("time_zone").map_err(db_err)?,
                capabilities,
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
            })
        }

        fn entrance_row(r: &$row) -> Result<Entrance, Error> {
            Ok(Entrance {
                id: parse("acs_entrance_id", &r.try_get::<String, _>("acs_entrance_id").map_err(db_err)?)?,
                acs_system_id: parse("acs_system_id", &r.try_get::<String, _>("acs_system_id").map_err(db_err)?)?,
                display_name: r.try_get("display_name").map_err(db_err)?,
                can_unlock_with_card: r.try_get("can_unlock_with_card").map_err(db_err)?,
                can_unlock_with_code: r.try_get("can_unlock_with_code").map_err(db_err)?,
                can_unlock_with_mobile_key: r.try_get("can_unlock_with_mobile_key").map_err(db_err)?,
                can_unlock_with_cloud_key: r.try_get("can_unlock_with_cloud_key").map_err(db_err)?,
                can_belong_to_reservation: r.try_get("can_belong_to_reservation").map_err(db_err)?,
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
            })
        }

        fn group_row(r: &$row) -> Result<AccessGroup, Error> {
            Ok(AccessGroup {
                id: parse("acs_access_group_id", &r.try_get::<String, _>("acs_access_group_id").map_err(db_err)?)?,
                acs_system_id: parse("acs_system_id", &r.try_get::<String, _>("acs_system_id").map_err(db_err)?)?,
                display_name: r.try_get("display_name").map_err(db_err)?,
                entrance_ids: Vec::new(),
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
            })
        }

        fn encoder_row(r: &$row) -> Result<Encoder, Error> {
            Ok(Encoder {
                id: parse("acs_encoder_id", &r.try_get::<String, _>("acs_encoder_id").map_err(db_err)?)?,
                acs_system_id: parse("acs_system_id", &r.try_get::<String, _>("acs_system_id").map_err(db_err)?)?,
                display_name: r.try_get("display_name").map_err(db_err)?,
                is_online: r.try_get("is_online").map_err(db_err)?,
                created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
            })
        }

        fn rows<T>(rows: &[$row], f: fn(&$row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
            rows.iter().map(f).collect()
        }

        async fn workspace_exists(conn: &mut Conn, ws: WorkspaceId) -> Result<bool, Error> {
            Ok(sqlx::query("SELECT 1 FROM workspaces WHERE workspace_id = $1")
                .bind(ws.to_string())
                .fetch_optional(conn)
                .await
                .map_err(db_err)?
                .is_some())
        }

        async fn insert_workspace(
            conn: &mut Conn,
            ws: &Workspace,
            key: &ApiKey,
            systems: &[NewAccessSystem],
        ) -> Result<(), Error> {
            sqlx::query(concat!("INSERT INTO workspaces (", ws_cols!(), ") VALUES ($1, $2, $3, $4)"))
                .bind(ws.id.to_string())
                .bind(&ws.name)
                .bind(ws.workspace_type.as_str())
                .bind(to_micros(ws.created_at))
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            insert_api_key(&mut *conn, key).await?;
            for system in systems {
                insert_system(&mut *conn, ws.id, system, ws.created_at).await?;
            }
            Ok(())
        }

        async fn insert_api_key(conn: &mut Conn, key: &ApiKey) -> Result<(), Error> {
            sqlx::query(concat!("INSERT INTO api_keys (", key_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6)"))
                .bind(key.id.to_string())
                .bind(key.workspace_id.to_string())
                .bind(&key.name)
                .bind(&key.secret_sha256)
                .bind(to_micros(key.created_at))
                .bind(key.revoked_at.map(to_micros))
                .execute(conn)
                .await
                .map_err(db_err)?;
            Ok(())
        }

        async fn insert_system(
            conn: &mut Conn,
            ws: WorkspaceId,
            s: &NewAccessSystem,
            now: OffsetDateTime,
        ) -> Result<AccessSystem, Error> {
            let now = truncate_to_micros(now);
            let system = AccessSystem {
                id: AccessSystemId::new(),
                workspace_id: ws,
                name: s.name.clone(),
                external_type: s.external_type.clone(),
                system_type: s.system_type.clone(),
                is_virtual: s.is_virtual,
                time_zone: s.time_zone.clone(),
                capabilities: s.capabilities.clone(),
                created_at: now,
            };
            let caps = serde_json::to_string(&system.capabilities).map_err(|e| Error::Internal {
                message: format!("capabilities do not serialize: {e}"),
            })?;
            let (ws_s, sys_s, at) = (ws.to_string(), system.id.to_string(), to_micros(now));
            sqlx::query(concat!("INSERT INTO access_systems (", sys_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                .bind(&sys_s)
                .bind(&ws_s)
                .bind(&system.name)
                .bind(&system.external_type)
                .bind(&system.system_type)
                .bind(system.is_virtual)
                .bind(&system.time_zone)
                .bind(caps)
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            let mut entrance_ids = Vec::with_capacity(s.entrances.len());
            for e in &s.entrances {
                let id = EntranceId::new().to_string();
                sqlx::query(concat!("INSERT INTO entrances (workspace_id, ", ent_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
                    .bind(&ws_s)
                    .bind(&id)
                    .bind(&sys_s)
                    .bind(&e.display_name)
                    .bind(e.can_unlock_with_card)
                    .bind(e.can_unlock_with_code)
                    .bind(e.can_unlock_with_mobile_key)
                    .bind(e.can_unlock_with_cloud_key)
                    .bind(e.can_belong_to_reservation)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                entrance_ids.push(id);
            }
            for g in &s.access_groups {
                let gid = AccessGroupId::new().to_string();
                sqlx::query(concat!("INSERT INTO access_groups (workspace_id, ", grp_cols!(), ") VALUES ($1, $2, $3, $4, $5)"))
                    .bind(&ws_s)
                    .bind(&gid)
                    .bind(&sys_s)
                    .bind(&g.display_name)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                for &i in &g.entrance_indexes {
                    let eid = entrance_ids.get(i).ok_or_else(|| Error::Internal {
                        message: format!("access group {:?} names entrance #{i}, which does not exist", g.display_name),
                    })?;
                    sqlx::query("INSERT INTO access_group_entrances (workspace_id, acs_access_group_id, acs_entrance_id) VALUES ($1, $2, $3)")
                        .bind(&ws_s)
                        .bind(&gid)
                        .bind(eid)
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                }
            }
            for name in &s.encoders {
                sqlx::query(concat!("INSERT INTO encoders (workspace_id, ", enc_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(&ws_s)
                    .bind(EncoderId::new().to_string())
                    .bind(&sys_s)
                    .bind(name)
                    .bind(true)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
            }
            Ok(system)
        }

        impl $store {
            async fn require_system(&self, ws: WorkspaceId, system: Option<AccessSystemId>) -> Result<String, Error> {
                match system {
                    None => Ok(String::new()),
                    Some(id) => {
                        self.get_access_system(ws, id).await?;
                        Ok(id.to_string())
                    }
                }
            }
        }

        #[async_trait]
        impl WorkspaceStore for $store {
            async fn create_workspace(&self, ws: &Workspace, key: &ApiKey, systems: &[NewAccessSystem]) -> Result<(), Error> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                insert_workspace(&mut tx, ws, key, systems).await?;
                tx.commit().await.map_err(db_err)
            }

            async fn bootstrap_workspace(&self, ws: &Workspace, key: &ApiKey, systems: &[NewAccessSystem]) -> Result<Option<WorkspaceId>, Error> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                let claimed = sqlx::query("INSERT INTO settings (key, value) VALUES ('bootstrap_workspace_id', $1) ON CONFLICT (key) DO NOTHING")
                    .bind(ws.id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected()
                    == 1;
                if !claimed {
                    let existing: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'bootstrap_workspace_id'")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    return Ok(parse("workspace_id", &existing).map(Some)?);
                }
                insert_workspace(&mut tx, ws, key, systems).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(None)
            }

            async fn get_workspace(&self, id: WorkspaceId) -> Result<Workspace, Error> {
                let row = sqlx::query(concat!("SELECT ", ws_cols!(), " FROM workspaces WHERE workspace_id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::Workspace, id.to_string()))?;
                workspace_row(&row)
            }

            async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>, Error> {
                let r = sqlx::query(concat!("SELECT ", ws_cols!(), " FROM workspaces WHERE workspace_id > $1 ORDER BY workspace_id LIMIT $2"))
                    .bind(after(page))
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(into_page(rows(&r, workspace_row)?, page.limit, |w| w.id.to_string()))
            }
        }

        #[async_trait]
        impl ApiKeyStore for $store {
            async fn create_api_key(&self, key: &ApiKey) -> Result<(), Error> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                if !workspace_exists(&mut tx, key.workspace_id).await? {
                    return Err(Error::not_found(Resource::Workspace, key.workspace_id.to_string()));
                }
                insert_api_key(&mut tx, key).await?;
                tx.commit().await.map_err(db_err)
            }

            async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, Error> {
                sqlx::query(concat!("SELECT ", key_cols!(), " FROM api_keys WHERE api_key_id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .map(|r| api_key_row(&r))
                    .transpose()
            }

            async fn list_api_keys(&self, ws: WorkspaceId, page: &PageRequest) -> Result<Page<ApiKey>, Error> {
                self.get_workspace(ws).await?;
                let r = sqlx::query(concat!("SELECT ", key_cols!(), " FROM api_keys WHERE workspace_id = $1 AND api_key_id > $2 ORDER BY api_key_id LIMIT $3"))
                    .bind(ws.to_string())
                    .bind(after(page))
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(into_page(rows(&r, api_key_row)?, page.limit, |k| k.id.to_string()))
            }

            async fn revoke_api_key(&self, ws: WorkspaceId, id: ApiKeyId, at: OffsetDateTime) -> Result<ApiKey, Error> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE workspace_id = $1 AND api_key_id = $2 AND revoked_at IS NULL")
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .bind(to_micros(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let row = sqlx::query(concat!("SELECT ", key_cols!(), " FROM api_keys WHERE workspace_id = $1 AND api_key_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::ApiKey, id.to_string()))?;
                tx.commit().await.map_err(db_err)?;
                api_key_row(&row)
            }
        }

        #[async_trait]
        impl AccessSystemStore for $store {
            async fn connect_access_system(&self, ws: WorkspaceId, system: &NewAccessSystem) -> Result<AccessSystem, Error> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                if !workspace_exists(&mut tx, ws).await? {
                    return Err(Error::not_found(Resource::Workspace, ws.to_string()));
                }
                let created = insert_system(&mut tx, ws, system, keygate_domain::model::now()).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(created)
            }

            async fn get_access_system(&self, ws: WorkspaceId, id: AccessSystemId) -> Result<AccessSystem, Error> {
                let row = sqlx::query(concat!("SELECT ", sys_cols!(), " FROM access_systems WHERE workspace_id = $1 AND acs_system_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::AccessSystem, id.to_string()))?;
                system_row(&row)
            }

            async fn list_access_systems(&self, ws: WorkspaceId, external_type: Option<&str>, page: &PageRequest) -> Result<Page<AccessSystem>, Error> {
                let r = sqlx::query(concat!("SELECT ", sys_cols!(), " FROM access_systems WHERE workspace_id = $1 AND acs_system_id > $2 AND ($3 = '' OR external_type = $3) ORDER BY acs_system_id LIMIT $4"))
                    .bind(ws.to_string())
                    .bind(after(page))
                    .bind(external_type.unwrap_or_default())
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(into_page(rows(&r, system_row)?, page.limit, |s| s.id.to_string()))
            }

            async fn get_entrance(&self, ws: WorkspaceId, id: EntranceId) -> Result<Entrance, Error> {
                let row = sqlx::query(concat!("SELECT ", ent_cols!(), " FROM entrances WHERE workspace_id = $1 AND acs_entrance_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::Entrance, id.to_string()))?;
                entrance_row(&row)
            }

            async fn list_entrances(&self, ws: WorkspaceId, system: Option<AccessSystemId>, page: &PageRequest) -> Result<Page<Entrance>, Error> {
                let system = self.require_system(ws, system).await?;
                let r = sqlx::query(concat!("SELECT ", ent_cols!(), " FROM entrances WHERE workspace_id = $1 AND acs_entrance_id > $2 AND ($3 = '' OR acs_system_id = $3) ORDER BY acs_entrance_id LIMIT $4"))
                    .bind(ws.to_string())
                    .bind(after(page))
                    .bind(system)
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(into_page(rows(&r, entrance_row)?, page.limit, |e| e.id.to_string()))
            }

            async fn list_access_groups(&self, ws: WorkspaceId, system: Option<AccessSystemId>, page: &PageRequest) -> Result<Page<AccessGroup>, Error> {
                let system = self.require_system(ws, system).await?;
                let r = sqlx::query(concat!("SELECT ", grp_cols!(), " FROM access_groups WHERE workspace_id = $1 AND acs_access_group_id > $2 AND ($3 = '' OR acs_system_id = $3) ORDER BY acs_access_group_id LIMIT $4"))
                    .bind(ws.to_string())
                    .bind(after(page))
                    .bind(system)
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                let mut page = into_page(rows(&r, group_row)?, page.limit, |g| g.id.to_string());
                let (Some(first), Some(last)) = (page.items.first(), page.items.last()) else {
                    return Ok(page);
                };
                // One query for the members of the whole page: every membership whose group id
                // falls in the page's id range, then keep those of the page's groups.
                let members = sqlx::query("SELECT acs_access_group_id, acs_entrance_id FROM access_group_entrances WHERE workspace_id = $1 AND acs_access_group_id >= $2 AND acs_access_group_id <= $3 ORDER BY acs_access_group_id, acs_entrance_id")
                    .bind(ws.to_string())
                    .bind(first.id.to_string())
                    .bind(last.id.to_string())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                let mut by_group: HashMap<String, Vec<EntranceId>> = HashMap::new();
                for m in &members {
                    let g: String = m.try_get("acs_access_group_id").map_err(db_err)?;
                    let e: String = m.try_get("acs_entrance_id").map_err(db_err)?;
                    by_group.entry(g).or_default().push(parse("acs_entrance_id", &e)?);
                }
                for g in &mut page.items {
                    g.entrance_ids = by_group.remove(&g.id.to_string()).unwrap_or_default();
                }
                Ok(page)
            }

            async fn list_encoders(&self, ws: WorkspaceId, system: Option<AccessSystemId>, page: &PageRequest) -> Result<Page<Encoder>, Error> {
                let system = self.require_system(ws, system).await?;
                let r = sqlx::query(concat!("SELECT ", enc_cols!(), " FROM encoders WHERE workspace_id = $1 AND acs_encoder_id > $2 AND ($3 = '' OR acs_system_id = $3) ORDER BY acs_encoder_id LIMIT $4"))
                    .bind(ws.to_string())
                    .bind(after(page))
                    .bind(system)
                    .bind(fetch_limit(page.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(into_page(rows(&r, encoder_row)?, page.limit, |e| e.id.to_string()))
            }

            async fn get_encoder(&self, ws: WorkspaceId, id: EncoderId) -> Result<Encoder, Error> {
                let row = sqlx::query(concat!("SELECT ", enc_cols!(), " FROM encoders WHERE workspace_id = $1 AND acs_encoder_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::Encoder, id.to_string()))?;
                encoder_row(&row)
            }

            async fn planning_entrances(&self, ws: WorkspaceId, ids: &[EntranceId]) -> Result<Vec<keygate_domain::grant::PlanningEntrance>, Error> {
                let mut systems = HashMap::new();
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.push(self.planning_entrance(ws, *id, &mut systems).await?);
                }
                Ok(out)
            }
        }

        impl $store {
            async fn planning_entrance(&self, ws: WorkspaceId, id: EntranceId, systems: &mut HashMap<AccessSystemId, AccessSystem>) -> Result<keygate_domain::grant::PlanningEntrance, Error> {
                let e = self.get_entrance(ws, id).await?;
                if !systems.contains_key(&e.acs_system_id) {
                    let s = self.get_access_system(ws, e.acs_system_id).await?;
                    systems.insert(s.id, s);
                }
                let system = systems.get(&e.acs_system_id).ok_or_else(|| Error::Internal { message: "system vanished".into() })?;
                let rows = sqlx::query("SELECT m2.acs_access_group_id, m2.acs_entrance_id FROM access_group_entrances m JOIN access_group_entrances m2 ON m2.workspace_id = m.workspace_id AND m2.acs_access_group_id = m.acs_access_group_id WHERE m.workspace_id = $1 AND m.acs_entrance_id = $2 ORDER BY m2.acs_access_group_id, m2.acs_entrance_id")
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                let mut groups: Vec<(AccessGroupId, Vec<EntranceId>)> = Vec::new();
                for r in &rows {
                    let g: AccessGroupId = parse("acs_access_group_id", &r.try_get::<String, _>("acs_access_group_id").map_err(db_err)?)?;
                    let member: EntranceId = parse("acs_entrance_id", &r.try_get::<String, _>("acs_entrance_id").map_err(db_err)?)?;
                    match groups.last_mut() {
                        Some((last, members)) if *last == g => members.push(member),
                        _ => groups.push((g, vec![member])),
                    }
                }
                Ok(keygate_domain::grant::PlanningEntrance {
                    entrance_id: e.id,
                    display_name: e.display_name,
                    acs_system_id: e.acs_system_id,
                    capabilities: system.capabilities.clone(),
                    can_unlock_with_card: e.can_unlock_with_card,
                    can_unlock_with_code: e.can_unlock_with_code,
                    can_unlock_with_mobile_key: e.can_unlock_with_mobile_key,
                    can_unlock_with_cloud_key: e.can_unlock_with_cloud_key,
                    covering_groups: groups,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend_name(&self) -> &'static str {
                $backend
            }

            fn pool(&self) -> crate::StorePool {
                self.pool.clone().into()
            }

            async fn migrate(&self) -> Result<i64, Error> {
                $migrator().run(&self.pool).await.map_err(StoreError::from)?;
                self.schema_version().await
            }

            async fn schema_version(&self) -> Result<i64, Error> {
                let v: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
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
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
                Ok(())
            }

            async fn purge_finished_jobs(&self, before: OffsetDateTime) -> Result<u64, Error> {
                Ok(sqlx::query("DELETE FROM jobs WHERE state = 'done' AND updated_at < $1")
                    .bind(to_micros(before))
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?
                    .rows_affected())
            }

            async fn purge_idempotency(&self, before: OffsetDateTime) -> Result<u64, Error> {
                Ok(sqlx::query("DELETE FROM idempotency_records WHERE created_at < $1")
                    .bind(to_micros(before))
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?
                    .rows_affected())
            }
        }
    };
}

pub(crate) use {enc_cols, ent_cols, grp_cols, impl_store, key_cols, sys_cols, ws_cols};
