//! How connected access systems are reached and kept in step with what they hold: their
//! settings and sealed credentials, their health (errors, warnings, disconnection), the ids the
//! systems themselves use, and the sync that matches a system's listing against the record.

use std::collections::{BTreeMap, BTreeSet};

use keygate_domain::events::{self, NewEvent};
use keygate_domain::grant::Notice;
use keygate_domain::ids::{
    AccessGrantId, AccessGroupId, AccessSystemId, EncoderId, EntranceId, WorkspaceId,
};
use keygate_domain::model::{
    ExternalIds, NewAccessSystem, SealedSecret, SyncReport, SystemConnection, truncate_to_micros,
};
use keygate_domain::{Error, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue};
use crate::error::{StoreError, StoreResult};
use crate::grants::json;
use crate::util::{parse, to_micros};

/// The warning a grant gets when an entrance it uses is removed from its access system.
pub const ENTRANCE_REMOVED: &str = "entrance_removed";
/// The error a disconnected system carries.
pub const ACCOUNT_DISCONNECTED: &str = "account_disconnected";

#[derive(sqlx::FromRow)]
struct ConnectionRow {
    settings: String,
    credentials_key_id: Option<String>,
    credentials_sealed: Option<String>,
}

#[derive(sqlx::FromRow)]
struct KnownRow {
    id: String,
    external_id: String,
    display_name: String,
    removed_at: Option<i64>,
}

/// What a sync lists, one table each.
#[derive(Clone, Copy)]
enum Kind {
    Entrances,
    AccessGroups,
    Encoders,
}

impl Kind {
    fn mark_removed(self) -> &'static str {
        match self {
            Self::Entrances => {
                "UPDATE entrances SET removed_at = $3 WHERE workspace_id = $1 AND acs_entrance_id = $2"
            }
            Self::AccessGroups => {
                "UPDATE access_groups SET removed_at = $3 WHERE workspace_id = $1 AND acs_access_group_id = $2"
            }
            Self::Encoders => {
                "UPDATE encoders SET removed_at = $3 WHERE workspace_id = $1 AND acs_encoder_id = $2"
            }
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Entrances => {
                "SELECT acs_entrance_id AS id, external_id, display_name, removed_at FROM entrances WHERE workspace_id = $1 AND acs_system_id = $2 ORDER BY acs_entrance_id"
            }
            Self::AccessGroups => {
                "SELECT acs_access_group_id AS id, external_id, display_name, removed_at FROM access_groups WHERE workspace_id = $1 AND acs_system_id = $2 ORDER BY acs_access_group_id"
            }
            Self::Encoders => {
                "SELECT acs_encoder_id AS id, external_id, display_name, removed_at FROM encoders WHERE workspace_id = $1 AND acs_system_id = $2 ORDER BY acs_encoder_id"
            }
        }
    }
}

fn notices(v: &str, what: &str) -> StoreResult<Vec<Notice>> {
    serde_json::from_str(v).map_err(|e| StoreError::Corrupt {
        message: format!("stored {what} do not parse: {e}"),
        source: Some(Box::new(e)),
    })
}

pub(crate) fn parse_notices(v: &str, what: &str) -> StoreResult<Vec<Notice>> {
    notices(v, what)
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
    /// Writes a new system's settings and sealed credentials (inside its connect transaction).
    pub(crate) async fn write_connection(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessSystemId,
        c: &SystemConnection,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let (key_id, sealed) = match &c.credentials {
            Some(s) => (Some(s.key_id.clone()), Some(s.sealed.clone())),
            None => (None, None),
        };
        sqlx::query("UPDATE access_systems SET settings = $3, credentials_key_id = $4, credentials_sealed = $5, last_synced_at = $6 WHERE workspace_id = $1 AND acs_system_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(json(&c.settings)?)
            .bind(key_id)
            .bind(sealed)
            .bind(to_micros(now))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn connection_of(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> StoreResult<SystemConnection> {
        let row: ConnectionRow = sqlx::query_as("SELECT settings, credentials_key_id, credentials_sealed FROM access_systems WHERE workspace_id = $1 AND acs_system_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessSystem, id.to_string()))?;
        let settings: BTreeMap<String, String> =
            serde_json::from_str(&row.settings).map_err(|e| StoreError::Corrupt {
                message: format!("stored connection settings do not parse: {e}"),
                source: Some(Box::new(e)),
            })?;
        let credentials = match (row.credentials_key_id, row.credentials_sealed) {
            (Some(key_id), Some(sealed)) => Some(SealedSecret { key_id, sealed }),
            _ => None,
        };
        Ok(SystemConnection {
            settings,
            credentials,
        })
    }

    async fn known(
        conn: &mut D::Connection,
        kind: Kind,
        ws: &str,
        sys: &str,
    ) -> StoreResult<Vec<KnownRow>> {
        Ok(sqlx::query_as(kind.select())
            .bind(ws.to_owned())
            .bind(sys.to_owned())
            .fetch_all(&mut *conn)
            .await?)
    }

    /// Marks removed the known rows (not removed yet) that the listing no longer has; returns them.
    async fn mark_gone<'k>(
        conn: &mut D::Connection,
        kind: Kind,
        ws: &str,
        known: &'k [KnownRow],
        listed: &BTreeSet<&str>,
        at: i64,
    ) -> StoreResult<Vec<&'k KnownRow>> {
        let gone: Vec<&KnownRow> = known
            .iter()
            .filter(|r| r.removed_at.is_none() && !listed.contains(r.external_id.as_str()))
            .collect();
        for r in &gone {
            sqlx::query(kind.mark_removed())
                .bind(ws.to_owned())
                .bind(r.id.clone())
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        Ok(gone)
    }

    pub(crate) async fn external_ids_of(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> StoreResult<ExternalIds> {
        let mut conn = self.pool.acquire().await?;
        let (w, s) = (ws.to_string(), id.to_string());
        let mut out = ExternalIds::default();
        for r in Self::known(&mut conn, Kind::Entrances, &w, &s).await? {
            out.entrances.insert(
                parse::<EntranceId>("acs_entrance_id", &r.id)?,
                r.external_id,
            );
        }
        for r in Self::known(&mut conn, Kind::AccessGroups, &w, &s).await? {
            out.access_groups.insert(
                parse::<AccessGroupId>("acs_access_group_id", &r.id)?,
                r.external_id,
            );
        }
        for r in Self::known(&mut conn, Kind::Encoders, &w, &s).await? {
            out.encoders
                .insert(parse::<EncoderId>("acs_encoder_id", &r.id)?, r.external_id);
        }
        Ok(out)
    }

    /// Matches what the system listed against the record, in one transaction: capabilities,
    /// entrances (added, updated, removed, restored), groups with their members, encoders; the
    /// grants that used a removed entrance get a warning and an `access_to_door_lost` event.
    pub(crate) async fn sync_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        found: &NewAccessSystem,
        now: OffsetDateTime,
    ) -> StoreResult<SyncReport> {
        let now = truncate_to_micros(now);
        let at = to_micros(now);
        let (w, s) = (ws.to_string(), id.to_string());
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // Lock the system row: two syncs of one system run one after the other.
        let system_name: Option<String> = sqlx::query_scalar("UPDATE access_systems SET capabilities = $3, external_type = $4, last_synced_at = $5 WHERE workspace_id = $1 AND acs_system_id = $2 RETURNING name")
            .bind(w.clone())
            .bind(s.clone())
            .bind(json(&found.capabilities)?)
            .bind(found.external_type.clone())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(system_name) = system_name else {
            return Err(Error::not_found(Resource::AccessSystem, s).into());
        };
        let mut report = SyncReport::default();
        let mut events = Vec::new();

        // Entrances.
        let known = Self::known(&mut tx, Kind::Entrances, &w, &s).await?;
        let by_ext: BTreeMap<&str, &KnownRow> =
            known.iter().map(|r| (r.external_id.as_str(), r)).collect();
        let mut entrance_ids: Vec<String> = Vec::with_capacity(found.entrances.len());
        let mut listed = BTreeSet::new();
        for e in &found.entrances {
            listed.insert(e.external_id.as_str());
            match by_ext.get(e.external_id.as_str()) {
                Some(r) => {
                    sqlx::query("UPDATE entrances SET display_name = $3, can_unlock_with_card = $4, can_unlock_with_code = $5, can_unlock_with_mobile_key = $6, can_unlock_with_cloud_key = $7, can_belong_to_reservation = $8, removed_at = NULL WHERE workspace_id = $1 AND acs_entrance_id = $2")
                        .bind(w.clone())
                        .bind(r.id.clone())
                        .bind(e.display_name.clone())
                        .bind(e.can_unlock_with_card)
                        .bind(e.can_unlock_with_code)
                        .bind(e.can_unlock_with_mobile_key)
                        .bind(e.can_unlock_with_cloud_key)
                        .bind(e.can_belong_to_reservation)
                        .execute(&mut *tx)
                        .await?;
                    if r.removed_at.is_some() {
                        let eid: EntranceId = parse("acs_entrance_id", &r.id)?;
                        report.entrances_restored.push(eid);
                        events.push(
                            NewEvent::new(events::ACS_ENTRANCE_ADDED, now)
                                .system(id)
                                .entrance(eid),
                        );
                    }
                    entrance_ids.push(r.id.clone());
                }
                None => {
                    let eid = EntranceId::new();
                    sqlx::query("INSERT INTO entrances (workspace_id, acs_entrance_id, acs_system_id, display_name, can_unlock_with_card, can_unlock_with_code, can_unlock_with_mobile_key, can_unlock_with_cloud_key, can_belong_to_reservation, created_at, external_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                        .bind(w.clone())
                        .bind(eid.to_string())
                        .bind(s.clone())
                        .bind(e.display_name.clone())
                        .bind(e.can_unlock_with_card)
                        .bind(e.can_unlock_with_code)
                        .bind(e.can_unlock_with_mobile_key)
                        .bind(e.can_unlock_with_cloud_key)
                        .bind(e.can_belong_to_reservation)
                        .bind(at)
                        .bind(e.external_id.clone())
                        .execute(&mut *tx)
                        .await?;
                    report.entrances_added.push(eid);
                    events.push(
                        NewEvent::new(events::ACS_ENTRANCE_ADDED, now)
                            .system(id)
                            .entrance(eid),
                    );
                    entrance_ids.push(eid.to_string());
                }
            }
        }
        let mut removed_names = BTreeMap::new();
        for r in Self::mark_gone(&mut tx, Kind::Entrances, &w, &known, &listed, at).await? {
            let eid: EntranceId = parse("acs_entrance_id", &r.id)?;
            report.entrances_removed.push(eid);
            removed_names.insert(eid, r.display_name.clone());
            events.push(
                NewEvent::new(events::ACS_ENTRANCE_REMOVED, now)
                    .system(id)
                    .entrance(eid),
            );
        }

        // Access groups and their members (members are rewritten from the listing).
        let known = Self::known(&mut tx, Kind::AccessGroups, &w, &s).await?;
        let by_ext: BTreeMap<&str, &KnownRow> =
            known.iter().map(|r| (r.external_id.as_str(), r)).collect();
        let mut listed = BTreeSet::new();
        for g in &found.access_groups {
            listed.insert(g.external_id.as_str());
            let gid = match by_ext.get(g.external_id.as_str()) {
                Some(r) => {
                    sqlx::query("UPDATE access_groups SET display_name = $3, removed_at = NULL WHERE workspace_id = $1 AND acs_access_group_id = $2")
                        .bind(w.clone())
                        .bind(r.id.clone())
                        .bind(g.display_name.clone())
                        .execute(&mut *tx)
                        .await?;
                    r.id.clone()
                }
                None => {
                    let gid = AccessGroupId::new().to_string();
                    sqlx::query("INSERT INTO access_groups (workspace_id, acs_access_group_id, acs_system_id, display_name, created_at, external_id) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(w.clone())
                        .bind(gid.clone())
                        .bind(s.clone())
                        .bind(g.display_name.clone())
                        .bind(at)
                        .bind(g.external_id.clone())
                        .execute(&mut *tx)
                        .await?;
                    report.access_groups_added += 1;
                    gid
                }
            };
            sqlx::query("DELETE FROM access_group_entrances WHERE workspace_id = $1 AND acs_access_group_id = $2")
                .bind(w.clone())
                .bind(gid.clone())
                .execute(&mut *tx)
                .await?;
            let members: BTreeSet<&String> = g
                .entrance_indexes
                .iter()
                .filter_map(|&i| entrance_ids.get(i))
                .collect();
            for eid in members {
                sqlx::query("INSERT INTO access_group_entrances (workspace_id, acs_access_group_id, acs_entrance_id) VALUES ($1, $2, $3)")
                    .bind(w.clone())
                    .bind(gid.clone())
                    .bind(eid.clone())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        report.access_groups_removed =
            Self::mark_gone(&mut tx, Kind::AccessGroups, &w, &known, &listed, at)
                .await?
                .len();

        // Encoders.
        let known = Self::known(&mut tx, Kind::Encoders, &w, &s).await?;
        let by_ext: BTreeMap<&str, &KnownRow> =
            known.iter().map(|r| (r.external_id.as_str(), r)).collect();
        let mut listed = BTreeSet::new();
        for e in &found.encoders {
            listed.insert(e.external_id.as_str());
            match by_ext.get(e.external_id.as_str()) {
                Some(r) => {
                    sqlx::query("UPDATE encoders SET display_name = $3, is_online = $4, removed_at = NULL WHERE workspace_id = $1 AND acs_encoder_id = $2")
                        .bind(w.clone())
                        .bind(r.id.clone())
                        .bind(e.display_name.clone())
                        .bind(e.is_online)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("INSERT INTO encoders (workspace_id, acs_encoder_id, acs_system_id, display_name, is_online, created_at, external_id) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(w.clone())
                        .bind(EncoderId::new().to_string())
                        .bind(s.clone())
                        .bind(e.display_name.clone())
                        .bind(e.is_online)
                        .bind(at)
                        .bind(e.external_id.clone())
                        .execute(&mut *tx)
                        .await?;
                    report.encoders_added += 1;
                }
            }
        }
        report.encoders_removed = Self::mark_gone(&mut tx, Kind::Encoders, &w, &known, &listed, at)
            .await?
            .len();

        // Grants that used a removed entrance: a warning naming the lost door, and an event.
        for (eid, name) in &removed_names {
            let grants: Vec<String> = sqlx::query_scalar("SELECT access_grant_id FROM access_grant_entrances WHERE workspace_id = $1 AND acs_entrance_id = $2 ORDER BY access_grant_id")
                .bind(w.clone())
                .bind(eid.to_string())
                .fetch_all(&mut *tx)
                .await?;
            for g in grants {
                let gid: AccessGrantId = parse("access_grant_id", &g)?;
                let warnings: Option<String> = sqlx::query_scalar("SELECT warnings FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2")
                    .bind(w.clone())
                    .bind(g.clone())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(warnings) = warnings else { continue };
                let mut warnings = notices(&warnings, "grant warnings")?;
                warnings.push(Notice::new(
                    ENTRANCE_REMOVED,
                    format!("{name:?} ({eid}) was removed from the access system {system_name:?}: this grant no longer opens it"),
                    now,
                ));
                sqlx::query("UPDATE access_grants SET warnings = $3, updated_at = $4 WHERE workspace_id = $1 AND access_grant_id = $2")
                    .bind(w.clone())
                    .bind(g.clone())
                    .bind(json(&warnings)?)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                events.push(
                    NewEvent::new(events::ACCESS_GRANT_ACCESS_TO_DOOR_LOST, now)
                        .grant(gid)
                        .system(id)
                        .entrance(*eid),
                );
                if !report.grants_warned.contains(&gid) {
                    report.grants_warned.push(gid);
                }
            }
        }
        Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Replaces a system's errors and warnings; `events` (a connected/disconnected event) are
    /// appended in the same transaction. A disconnected system keeps its errors.
    pub(crate) async fn set_health(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        errors: &[Notice],
        warnings: &[Notice],
        events: &[NewEvent],
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let done = sqlx::query("UPDATE access_systems SET errors = $3, warnings = $4 WHERE workspace_id = $1 AND acs_system_id = $2 AND disconnected_at IS NULL")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(json(&errors)?)
            .bind(json(&warnings)?)
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 1 {
            Self::append_events(&mut tx, ws, events, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Disconnects a system: its credentials are dropped, it carries `account_disconnected`,
    /// and Keygate calls it no more. Its record (entrances, grants, events) stays.
    pub(crate) async fn disconnect_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let errors = vec![Notice::new(
            ACCOUNT_DISCONNECTED,
            "the access system was disconnected from this workspace: Keygate no longer calls it",
            now,
        )];
        let done = sqlx::query("UPDATE access_systems SET credentials_key_id = NULL, credentials_sealed = NULL, disconnected_at = $3, errors = $4 WHERE workspace_id = $1 AND acs_system_id = $2 AND disconnected_at IS NULL")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(to_micros(now))
            .bind(json(&errors)?)
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 1 {
            let e = [NewEvent::new(events::ACS_SYSTEM_DISCONNECTED, now).system(id)];
            Self::append_events(&mut tx, ws, &e, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Connected systems (of every workspace) not synced since `before`, oldest first.
    pub(crate) async fn due_for_sync(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> StoreResult<Vec<(WorkspaceId, AccessSystemId)>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT workspace_id, acs_system_id FROM access_systems WHERE disconnected_at IS NULL AND (last_synced_at IS NULL OR last_synced_at < $1) ORDER BY last_synced_at, acs_system_id LIMIT $2")
            .bind(to_micros(before))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(w, s)| Ok((parse("workspace_id", &w)?, parse("acs_system_id", &s)?)))
            .collect()
    }
}
