//! Access systems with their entrances, access groups and encoders; workspaces and API keys.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::capability::CapabilityDescriptor;
use keygate_domain::events::NewEvent;
use keygate_domain::grant::Notice;
use keygate_domain::grant::PlanningEntrance;
use keygate_domain::ids::{
    AccessGroupId, AccessSystemId, ApiKeyId, EncoderId, EntranceId, WorkspaceId,
};
use keygate_domain::model::{
    AccessGroup, AccessSystem, ApiKey, Encoder, Entrance, ExternalIds, NewAccessSystem, SyncReport,
    SystemConnection, Workspace, WorkspaceType, truncate_to_micros,
};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::{AccessSystemStore, ApiKeyStore, Idempotency, WorkspaceStore};
use crate::util::{fetch_limit, from_micros, into_page, parse, to_micros};

const WS_COLS: &str = "workspace_id, name, workspace_type, created_at";
const KEY_COLS: &str = "api_key_id, workspace_id, name, secret_sha256, created_at, revoked_at";
const SYS_COLS: &str = "acs_system_id, workspace_id, name, external_type, system_type, is_virtual, time_zone, capabilities, created_at";
/// The columns a system is read with: its own and its health.
const SYS_READ_COLS: &str = "acs_system_id, workspace_id, name, external_type, system_type, is_virtual, time_zone, capabilities, created_at, errors, warnings, last_synced_at, disconnected_at, settings";
const ENT_COLS: &str = "acs_entrance_id, acs_system_id, display_name, can_unlock_with_card, can_unlock_with_code, can_unlock_with_mobile_key, can_unlock_with_cloud_key, can_belong_to_reservation, created_at, external_id";
const ENT_READ_COLS: &str = "acs_entrance_id, acs_system_id, display_name, can_unlock_with_card, can_unlock_with_code, can_unlock_with_mobile_key, can_unlock_with_cloud_key, can_belong_to_reservation, created_at, removed_at";
const GRP_COLS: &str = "acs_access_group_id, acs_system_id, display_name, created_at, external_id";
const GRP_READ_COLS: &str = "acs_access_group_id, acs_system_id, display_name, created_at";
const ENC_COLS: &str =
    "acs_encoder_id, acs_system_id, display_name, is_online, created_at, external_id";
const ENC_READ_COLS: &str = "acs_encoder_id, acs_system_id, display_name, is_online, created_at";

static INSERT_WS: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO workspaces ({WS_COLS}) VALUES ($1, $2, $3, $4)"));
static SELECT_WS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {WS_COLS} FROM workspaces WHERE workspace_id = $1"));
static PAGE_WS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {WS_COLS} FROM workspaces WHERE workspace_id > $1 ORDER BY workspace_id LIMIT $2"
    )
});
static INSERT_KEY: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"));
static SELECT_KEY: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {KEY_COLS} FROM api_keys WHERE api_key_id = $1"));
static SELECT_WS_KEY: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = $1 AND api_key_id = $2")
});
static PAGE_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = $1 AND api_key_id > $2 ORDER BY api_key_id LIMIT $3"
    )
});
static INSERT_SYS: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO access_systems ({SYS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
});
static SELECT_SYS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SYS_READ_COLS} FROM access_systems WHERE workspace_id = $1 AND acs_system_id = $2"
    )
});
static PAGE_SYS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SYS_READ_COLS} FROM access_systems WHERE workspace_id = $1 AND acs_system_id > $2 AND ($3 = '' OR external_type = $3) ORDER BY acs_system_id LIMIT $4"
    )
});
static INSERT_ENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO entrances (workspace_id, {ENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
});
static SELECT_ENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ENT_READ_COLS} FROM entrances WHERE workspace_id = $1 AND acs_entrance_id = $2"
    )
});
/// A page by system and, when `$5` is not empty, by id (`D`'s list test).
fn page_ent<D: Dialect>() -> String {
    format!(
        "SELECT {ENT_READ_COLS} FROM entrances WHERE workspace_id = $1 AND acs_entrance_id > $2 AND ($3 = '' OR acs_system_id = $3) AND ($5 = '' OR {}) ORDER BY acs_entrance_id LIMIT $4",
        D::in_list("acs_entrance_id", "$5")
    )
}
static INSERT_GRP: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO access_groups (workspace_id, {GRP_COLS}) VALUES ($1, $2, $3, $4, $5, $6)")
});
static PAGE_GRP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {GRP_READ_COLS} FROM access_groups WHERE workspace_id = $1 AND acs_access_group_id > $2 AND ($3 = '' OR acs_system_id = $3) ORDER BY acs_access_group_id LIMIT $4"
    )
});
static INSERT_ENC: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO encoders (workspace_id, {ENC_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)")
});
static SELECT_ENC: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {ENC_READ_COLS} FROM encoders WHERE workspace_id = $1 AND acs_encoder_id = $2")
});
/// A page by system and, when `$5` is not empty, by id (`D`'s list test).
fn page_enc<D: Dialect>() -> String {
    format!(
        "SELECT {ENC_READ_COLS} FROM encoders WHERE workspace_id = $1 AND acs_encoder_id > $2 AND ($3 = '' OR acs_system_id = $3) AND ($5 = '' OR {}) ORDER BY acs_encoder_id LIMIT $4",
        D::in_list("acs_encoder_id", "$5")
    )
}

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    workspace_id: String,
    name: String,
    workspace_type: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    api_key_id: String,
    workspace_id: String,
    name: String,
    secret_sha256: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct SystemRow {
    acs_system_id: String,
    workspace_id: String,
    name: String,
    external_type: String,
    system_type: String,
    is_virtual: bool,
    time_zone: String,
    capabilities: String,
    created_at: i64,
    errors: String,
    warnings: String,
    last_synced_at: Option<i64>,
    disconnected_at: Option<i64>,
    settings: String,
}

#[derive(sqlx::FromRow)]
struct EntranceRow {
    acs_entrance_id: String,
    acs_system_id: String,
    display_name: String,
    can_unlock_with_card: bool,
    can_unlock_with_code: bool,
    can_unlock_with_mobile_key: bool,
    can_unlock_with_cloud_key: bool,
    can_belong_to_reservation: bool,
    created_at: i64,
    removed_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    acs_access_group_id: String,
    acs_system_id: String,
    display_name: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct EncoderRow {
    acs_encoder_id: String,
    acs_system_id: String,
    display_name: String,
    is_online: bool,
    created_at: i64,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = StoreError;

    fn try_from(r: WorkspaceRow) -> StoreResult<Self> {
        let workspace_type = WorkspaceType::parse(&r.workspace_type).ok_or_else(|| {
            StoreError::corrupt(format!(
                "stored workspace_type {:?} is unknown",
                r.workspace_type
            ))
        })?;
        Ok(Workspace {
            id: parse("workspace_id", &r.workspace_id)?,
            name: r.name,
            workspace_type,
            created_at: from_micros(r.created_at)?,
        })
    }
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(r: ApiKeyRow) -> StoreResult<Self> {
        Ok(ApiKey {
            id: parse("api_key_id", &r.api_key_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            name: r.name,
            secret_sha256: r.secret_sha256,
            created_at: from_micros(r.created_at)?,
            revoked_at: r.revoked_at.map(from_micros).transpose()?,
        })
    }
}

impl TryFrom<SystemRow> for AccessSystem {
    type Error = StoreError;

    fn try_from(r: SystemRow) -> StoreResult<Self> {
        let capabilities: CapabilityDescriptor =
            serde_json::from_str(&r.capabilities).map_err(|e| StoreError::Corrupt {
                message: format!("stored capabilities do not parse: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(AccessSystem {
            id: parse("acs_system_id", &r.acs_system_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            name: r.name,
            external_type: r.external_type,
            system_type: r.system_type,
            is_virtual: r.is_virtual,
            time_zone: r.time_zone,
            capabilities,
            created_at: from_micros(r.created_at)?,
            health: keygate_domain::model::SystemHealth {
                errors: crate::connections::parse_notices(&r.errors, "system errors")?,
                warnings: crate::connections::parse_notices(&r.warnings, "system warnings")?,
                last_synced_at: r.last_synced_at.map(from_micros).transpose()?,
                disconnected_at: r.disconnected_at.map(from_micros).transpose()?,
            },
            settings: serde_json::from_str(&r.settings).map_err(|e| StoreError::Corrupt {
                message: format!("stored connection settings do not parse: {e}"),
                source: Some(Box::new(e)),
            })?,
        })
    }
}

impl TryFrom<EntranceRow> for Entrance {
    type Error = StoreError;

    fn try_from(r: EntranceRow) -> StoreResult<Self> {
        Ok(Entrance {
            id: parse("acs_entrance_id", &r.acs_entrance_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            display_name: r.display_name,
            can_unlock_with_card: r.can_unlock_with_card,
            can_unlock_with_code: r.can_unlock_with_code,
            can_unlock_with_mobile_key: r.can_unlock_with_mobile_key,
            can_unlock_with_cloud_key: r.can_unlock_with_cloud_key,
            can_belong_to_reservation: r.can_belong_to_reservation,
            created_at: from_micros(r.created_at)?,
            removed_at: r.removed_at.map(from_micros).transpose()?,
        })
    }
}

impl TryFrom<GroupRow> for AccessGroup {
    type Error = StoreError;

    fn try_from(r: GroupRow) -> StoreResult<Self> {
        Ok(AccessGroup {
            id: parse("acs_access_group_id", &r.acs_access_group_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            display_name: r.display_name,
            entrance_ids: Vec::new(),
            created_at: from_micros(r.created_at)?,
        })
    }
}

impl TryFrom<EncoderRow> for Encoder {
    type Error = StoreError;

    fn try_from(r: EncoderRow) -> StoreResult<Self> {
        Ok(Encoder {
            id: parse("acs_encoder_id", &r.acs_encoder_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            display_name: r.display_name,
            is_online: r.is_online,
            created_at: from_micros(r.created_at)?,
        })
    }
}

fn all<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> StoreResult<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
}

fn after(page: &PageRequest) -> String {
    page.after.clone().unwrap_or_default()
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
    async fn workspace_exists(conn: &mut D::Connection, ws: WorkspaceId) -> StoreResult<bool> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM workspaces WHERE workspace_id = $1")
                .bind(ws.to_string())
                .fetch_optional(&mut *conn)
                .await?;
        Ok(found.is_some())
    }

    async fn insert_workspace(
        conn: &mut D::Connection,
        ws: &Workspace,
        key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> StoreResult<()> {
        sqlx::query(INSERT_WS.as_str())
            .bind(ws.id.to_string())
            .bind(ws.name.clone())
            .bind(ws.workspace_type.as_str().to_owned())
            .bind(to_micros(ws.created_at))
            .execute(&mut *conn)
            .await?;
        Self::insert_api_key(&mut *conn, key).await?;
        for system in systems {
            Self::insert_system(
                &mut *conn,
                ws.id,
                AccessSystemId::new(),
                system,
                ws.created_at,
            )
            .await?;
        }
        Ok(())
    }

    async fn insert_api_key(conn: &mut D::Connection, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(INSERT_KEY.as_str())
            .bind(key.id.to_string())
            .bind(key.workspace_id.to_string())
            .bind(key.name.clone())
            .bind(key.secret_sha256.clone())
            .bind(to_micros(key.created_at))
            .bind(key.revoked_at.map(to_micros))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn insert_system(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessSystemId,
        s: &NewAccessSystem,
        now: OffsetDateTime,
    ) -> StoreResult<AccessSystem> {
        let now = truncate_to_micros(now);
        let system = AccessSystem {
            id,
            workspace_id: ws,
            name: s.name.clone(),
            external_type: s.external_type.clone(),
            system_type: s.system_type.clone(),
            is_virtual: s.is_virtual,
            time_zone: s.time_zone.clone(),
            capabilities: s.capabilities.clone(),
            created_at: now,
            health: keygate_domain::model::SystemHealth {
                last_synced_at: Some(now),
                ..Default::default()
            },
            settings: Default::default(),
        };
        let caps = serde_json::to_string(&system.capabilities).map_err(|e| Error::Internal {
            message: format!("capabilities do not serialize: {e}"),
        })?;
        let (ws_s, sys_s, at) = (ws.to_string(), system.id.to_string(), to_micros(now));
        sqlx::query(INSERT_SYS.as_str())
            .bind(sys_s.clone())
            .bind(ws_s.clone())
            .bind(system.name.clone())
            .bind(system.external_type.clone())
            .bind(system.system_type.clone())
            .bind(system.is_virtual)
            .bind(system.time_zone.clone())
            .bind(caps)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        let mut entrance_ids = Vec::with_capacity(s.entrances.len());
        for e in &s.entrances {
            let id = EntranceId::new().to_string();
            sqlx::query(INSERT_ENT.as_str())
                .bind(ws_s.clone())
                .bind(id.clone())
                .bind(sys_s.clone())
                .bind(e.display_name.clone())
                .bind(e.can_unlock_with_card)
                .bind(e.can_unlock_with_code)
                .bind(e.can_unlock_with_mobile_key)
                .bind(e.can_unlock_with_cloud_key)
                .bind(e.can_belong_to_reservation)
                .bind(at)
                .bind(e.external_id.clone())
                .execute(&mut *conn)
                .await?;
            entrance_ids.push(id);
        }
        for g in &s.access_groups {
            let gid = AccessGroupId::new().to_string();
            sqlx::query(INSERT_GRP.as_str())
                .bind(ws_s.clone())
                .bind(gid.clone())
                .bind(sys_s.clone())
                .bind(g.display_name.clone())
                .bind(at)
                .bind(g.external_id.clone())
                .execute(&mut *conn)
                .await?;
            for &i in &g.entrance_indexes {
                let eid = entrance_ids.get(i).ok_or_else(|| Error::Internal {
                    message: format!(
                        "access group {:?} names entrance #{i}, which does not exist",
                        g.display_name
                    ),
                })?;
                sqlx::query("INSERT INTO access_group_entrances (workspace_id, acs_access_group_id, acs_entrance_id) VALUES ($1, $2, $3)")
                    .bind(ws_s.clone())
                    .bind(gid.clone())
                    .bind(eid.clone())
                    .execute(&mut *conn)
                    .await?;
            }
        }
        for e in &s.encoders {
            sqlx::query(INSERT_ENC.as_str())
                .bind(ws_s.clone())
                .bind(EncoderId::new().to_string())
                .bind(sys_s.clone())
                .bind(e.display_name.clone())
                .bind(e.is_online)
                .bind(at)
                .bind(e.external_id.clone())
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("UPDATE access_systems SET last_synced_at = $3 WHERE workspace_id = $1 AND acs_system_id = $2")
            .bind(ws_s.clone())
            .bind(sys_s.clone())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        Ok(system)
    }

    async fn create_ws(
        &self,
        ws: &Workspace,
        key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        Self::insert_workspace(&mut tx, ws, key, systems).await?;
        Ok(tx.commit().await?)
    }

    async fn bootstrap_ws(
        &self,
        ws: &Workspace,
        key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> StoreResult<Option<WorkspaceId>> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let done = sqlx::query("INSERT INTO settings (key, value) VALUES ('bootstrap_workspace_id', $1) ON CONFLICT (key) DO NOTHING")
            .bind(ws.id.to_string())
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) != 1 {
            let existing: String = sqlx::query_scalar(
                "SELECT value FROM settings WHERE key = 'bootstrap_workspace_id'",
            )
            .fetch_one(&mut *tx)
            .await?;
            return parse("workspace_id", &existing).map(Some);
        }
        Self::insert_workspace(&mut tx, ws, key, systems).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Workspace> {
        let row: WorkspaceRow = sqlx::query_as(SELECT_WS.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Workspace, id.to_string()))?;
        row.try_into()
    }

    async fn workspaces(&self, page: &PageRequest) -> StoreResult<Page<Workspace>> {
        let rows: Vec<WorkspaceRow> = sqlx::query_as(PAGE_WS.as_str())
            .bind(after(page))
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |w| w.id.to_string()))
    }

    async fn add_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::workspace_exists(&mut tx, key.workspace_id).await? {
            return Err(Error::not_found(Resource::Workspace, key.workspace_id.to_string()).into());
        }
        Self::insert_api_key(&mut tx, key).await?;
        Ok(tx.commit().await?)
    }

    async fn api_key_by_id(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(SELECT_KEY.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn api_keys_of(&self, ws: WorkspaceId, page: &PageRequest) -> StoreResult<Page<ApiKey>> {
        self.workspace(ws).await?;
        let rows: Vec<ApiKeyRow> = sqlx::query_as(PAGE_KEY.as_str())
            .bind(ws.to_string())
            .bind(after(page))
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |k| k.id.to_string()))
    }

    async fn revoke_api(
        &self,
        ws: WorkspaceId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> StoreResult<ApiKey> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE workspace_id = $1 AND api_key_id = $2 AND revoked_at IS NULL")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(to_micros(at))
            .execute(&mut *tx)
            .await?;
        let row: ApiKeyRow = sqlx::query_as(SELECT_WS_KEY.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(Resource::ApiKey, id.to_string()))?;
        tx.commit().await?;
        row.try_into()
    }

    async fn connect_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        system: &NewAccessSystem,
        connection: &SystemConnection,
        idem: Option<&Idempotency>,
    ) -> StoreResult<AccessSystem> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::workspace_exists(&mut tx, ws).await? {
            return Err(Error::not_found(Resource::Workspace, ws.to_string()).into());
        }
        let now = keygate_domain::model::now();
        let created = Self::insert_system(&mut tx, ws, id, system, now).await?;
        Self::write_connection(&mut tx, ws, id, connection, now).await?;
        let connected = [keygate_domain::events::NewEvent::new(
            keygate_domain::events::ACS_SYSTEM_CONNECTED,
            now,
        )
        .system(id)];
        Self::append_events(&mut tx, ws, &connected, now).await?;
        // A replay answers the first system; this one is rolled back with the transaction.
        if let Some(first) =
            Self::claim_idempotency(&mut tx, ws, idem, &created.id.to_string(), now).await?
        {
            drop(tx);
            return self.system(ws, parse("acs_system_id", &first)?).await;
        }
        tx.commit().await?;
        Ok(AccessSystem {
            settings: connection.settings.clone(),
            ..created
        })
    }

    async fn system(&self, ws: WorkspaceId, id: AccessSystemId) -> StoreResult<AccessSystem> {
        let row: SystemRow = sqlx::query_as(SELECT_SYS.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessSystem, id.to_string()))?;
        row.try_into()
    }

    async fn systems(
        &self,
        ws: WorkspaceId,
        external_type: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<AccessSystem>> {
        let rows: Vec<SystemRow> = sqlx::query_as(PAGE_SYS.as_str())
            .bind(ws.to_string())
            .bind(after(page))
            .bind(external_type.unwrap_or_default().to_owned())
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |s| s.id.to_string()))
    }

    /// The system filter of a listing: empty for all, or the id of a system of the workspace
    /// (NOT_FOUND otherwise).
    async fn require_system(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
    ) -> StoreResult<String> {
        match system {
            None => Ok(String::new()),
            Some(id) => {
                self.system(ws, id).await?;
                Ok(id.to_string())
            }
        }
    }

    async fn entrance(&self, ws: WorkspaceId, id: EntranceId) -> StoreResult<Entrance> {
        let row: EntranceRow = sqlx::query_as(SELECT_ENT.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Entrance, id.to_string()))?;
        row.try_into()
    }

    async fn entrances(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EntranceId],
        page: &PageRequest,
    ) -> StoreResult<Page<Entrance>> {
        let system = self.require_system(ws, system).await?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<EntranceRow> = sqlx::query_as(assembled(page_ent::<D>()))
            .bind(ws.to_string())
            .bind(after(page))
            .bind(system)
            .bind(fetch_limit(page.limit))
            .bind(ids.join(","))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |e| e.id.to_string()))
    }

    async fn groups(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> StoreResult<Page<AccessGroup>> {
        let system = self.require_system(ws, system).await?;
        let rows: Vec<GroupRow> = sqlx::query_as(PAGE_GRP.as_str())
            .bind(ws.to_string())
            .bind(after(page))
            .bind(system)
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        let groups: Vec<AccessGroup> = all(rows)?;
        let mut page = into_page(groups, page.limit, |g| g.id.to_string());
        let (Some(first), Some(last)) = (page.items.first(), page.items.last()) else {
            return Ok(page);
        };
        // One query for the members of the whole page: every membership whose group id
        // falls in the page's id range, then keep those of the page's groups.
        let members: Vec<(String, String)> = sqlx::query_as("SELECT acs_access_group_id, acs_entrance_id FROM access_group_entrances WHERE workspace_id = $1 AND acs_access_group_id >= $2 AND acs_access_group_id <= $3 ORDER BY acs_access_group_id, acs_entrance_id")
            .bind(ws.to_string())
            .bind(first.id.to_string())
            .bind(last.id.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut by_group: HashMap<String, Vec<EntranceId>> = HashMap::new();
        for (g, e) in members {
            by_group
                .entry(g)
                .or_default()
                .push(parse("acs_entrance_id", &e)?);
        }
        for g in &mut page.items {
            g.entrance_ids = by_group.remove(&g.id.to_string()).unwrap_or_default();
        }
        Ok(page)
    }

    async fn encoders(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EncoderId],
        page: &PageRequest,
    ) -> StoreResult<Page<Encoder>> {
        let system = self.require_system(ws, system).await?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<EncoderRow> = sqlx::query_as(assembled(page_enc::<D>()))
            .bind(ws.to_string())
            .bind(after(page))
            .bind(system)
            .bind(fetch_limit(page.limit))
            .bind(ids.join(","))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |e| e.id.to_string()))
    }

    async fn encoder(&self, ws: WorkspaceId, id: EncoderId) -> StoreResult<Encoder> {
        let row: EncoderRow = sqlx::query_as(SELECT_ENC.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Encoder, id.to_string()))?;
        row.try_into()
    }

    async fn planning_entrance(
        &self,
        ws: WorkspaceId,
        id: EntranceId,
        systems: &mut HashMap<AccessSystemId, AccessSystem>,
    ) -> StoreResult<PlanningEntrance> {
        let e = self.entrance(ws, id).await?;
        if e.removed_at.is_some() {
            return Err(Error::FailedPrecondition {
                reason: keygate_domain::ErrorReason::EntranceRemoved,
                message: format!(
                    "entrance {id} ({:?}) was removed from its access system",
                    e.display_name
                ),
            }
            .into());
        }
        if !systems.contains_key(&e.acs_system_id) {
            let s = self.system(ws, e.acs_system_id).await?;
            systems.insert(s.id, s);
        }
        let system = systems
            .get(&e.acs_system_id)
            .ok_or_else(|| StoreError::corrupt("system vanished"))?;
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT m2.acs_access_group_id, m2.acs_entrance_id FROM access_group_entrances m JOIN access_group_entrances m2 ON m2.workspace_id = m.workspace_id AND m2.acs_access_group_id = m.acs_access_group_id WHERE m.workspace_id = $1 AND m.acs_entrance_id = $2 ORDER BY m2.acs_access_group_id, m2.acs_entrance_id")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut groups: Vec<(AccessGroupId, Vec<EntranceId>)> = Vec::new();
        for (g, member) in rows {
            let g: AccessGroupId = parse("acs_access_group_id", &g)?;
            let member: EntranceId = parse("acs_entrance_id", &member)?;
            match groups.last_mut() {
                Some((last, members)) if *last == g => members.push(member),
                _ => groups.push((g, vec![member])),
            }
        }
        Ok(PlanningEntrance {
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
impl<D> WorkspaceStore for SqlStore<D>
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
    async fn create_workspace(
        &self,
        ws: &Workspace,
        key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> Result<(), Error> {
        Ok(self.create_ws(ws, key, systems).await?)
    }

    async fn bootstrap_workspace(
        &self,
        ws: &Workspace,
        key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> Result<Option<WorkspaceId>, Error> {
        Ok(self.bootstrap_ws(ws, key, systems).await?)
    }

    async fn get_workspace(&self, id: WorkspaceId) -> Result<Workspace, Error> {
        Ok(self.workspace(id).await?)
    }

    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>, Error> {
        Ok(self.workspaces(page).await?)
    }
}

#[async_trait]
impl<D> ApiKeyStore for SqlStore<D>
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
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        Ok(self.add_api_key(key).await?)
    }

    async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, Error> {
        Ok(self.api_key_by_id(id).await?)
    }

    async fn list_api_keys(
        &self,
        ws: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error> {
        Ok(self.api_keys_of(ws, page).await?)
    }

    async fn revoke_api_key(
        &self,
        ws: WorkspaceId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey, Error> {
        Ok(self.revoke_api(ws, id, at).await?)
    }
}

#[async_trait]
impl<D> AccessSystemStore for SqlStore<D>
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
    async fn connect_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        system: &NewAccessSystem,
        connection: &SystemConnection,
        idem: Option<&Idempotency>,
    ) -> Result<AccessSystem, Error> {
        Ok(self
            .connect_system(ws, id, system, connection, idem)
            .await?)
    }

    async fn access_system_connection(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<SystemConnection, Error> {
        Ok(self.connection_of(ws, id).await?)
    }

    async fn external_ids(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<ExternalIds, Error> {
        Ok(self.external_ids_of(ws, id).await?)
    }

    async fn sync_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        found: &NewAccessSystem,
        at: OffsetDateTime,
    ) -> Result<SyncReport, Error> {
        Ok(self.sync_system(ws, id, found, at).await?)
    }

    async fn set_access_system_health(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        errors: &[Notice],
        warnings: &[Notice],
        events: &[NewEvent],
        at: OffsetDateTime,
    ) -> Result<(), Error> {
        Ok(self
            .set_health(ws, id, errors, warnings, events, at)
            .await?)
    }

    async fn disconnect_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        at: OffsetDateTime,
    ) -> Result<(), Error> {
        Ok(self.disconnect_system(ws, id, at).await?)
    }

    async fn systems_due_for_sync(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(WorkspaceId, AccessSystemId)>, Error> {
        Ok(self.due_for_sync(before, limit).await?)
    }

    async fn get_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<AccessSystem, Error> {
        Ok(self.system(ws, id).await?)
    }

    async fn list_access_systems(
        &self,
        ws: WorkspaceId,
        external_type: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<AccessSystem>, Error> {
        Ok(self.systems(ws, external_type, page).await?)
    }

    async fn get_entrance(&self, ws: WorkspaceId, id: EntranceId) -> Result<Entrance, Error> {
        Ok(self.entrance(ws, id).await?)
    }

    async fn list_entrances(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Entrance>, Error> {
        Ok(self.entrances(ws, system, &[], page).await?)
    }

    async fn list_entrances_by_id(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EntranceId],
        page: &PageRequest,
    ) -> Result<Page<Entrance>, Error> {
        Ok(self.entrances(ws, system, ids, page).await?)
    }

    async fn list_access_groups(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<AccessGroup>, Error> {
        Ok(self.groups(ws, system, page).await?)
    }

    async fn list_encoders(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Encoder>, Error> {
        Ok(self.encoders(ws, system, &[], page).await?)
    }

    async fn list_encoders_by_id(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EncoderId],
        page: &PageRequest,
    ) -> Result<Page<Encoder>, Error> {
        Ok(self.encoders(ws, system, ids, page).await?)
    }

    async fn get_encoder(&self, ws: WorkspaceId, id: EncoderId) -> Result<Encoder, Error> {
        Ok(self.encoder(ws, id).await?)
    }

    async fn planning_entrances(
        &self,
        ws: WorkspaceId,
        ids: &[EntranceId],
    ) -> Result<Vec<PlanningEntrance>, Error> {
        let mut systems = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.planning_entrance(ws, *id, &mut systems).await?);
        }
        Ok(out)
    }
}
