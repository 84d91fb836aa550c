//! Access grants, their access methods and doors, and action attempts. The helpers here are
//! shared with the job queue (`jobs.rs`), whose completions rewrite the same rows.
//!
//! Lock order, on PostgreSQL: a person's row (creating a grant for an existing person, deleting
//! the person), then a grant row (every write of a grant's methods takes it first), then its
//! method rows and jobs, then the event counter.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::action::{ActionAttempt, JobWork, RevokeJob, UnlockScope};
use keygate_domain::events::{Event, NewEvent};
use keygate_domain::grant::{AccessGrant, AccessMethod, DoorState, DoorStatus};
use keygate_domain::ids::{
    AccessGrantId, AccessMethodId, AccessSystemId, ActionAttemptId, EntranceId, JobId, WorkspaceId,
};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::update::GrantWrite;
use keygate_domain::{Error, ErrorReason, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult, access_grant_key_taken, user_identity_key_taken};
use crate::grant_rows::{AttemptRow, DoorRow, GrantRow, MethodRow};
use crate::traits::{GrantFilter, GrantStore, Idempotency, MethodFilter, NewGrant};
use crate::util::{fetch_limit, into_page, parse, to_micros};

/// The columns of [`GrantRow`].
pub(crate) const GRANT_COLS: &str = "access_grant_id, workspace_id, user_identity_id, access_grant_key, name, reservation_key, starts_at, ends_at, requested_access_methods, instant_key_id, warnings, errors, created_at, updated_at";
/// The columns of [`MethodRow`].
pub(crate) const METHOD_COLS: &str = "access_method_id, workspace_id, access_grant_id, user_identity_id, mode, display_name, is_issued, issued_at, is_card_encoding_required, is_ready_for_encoding, code, client_session_token, instant_key_id, warnings, errors, created_at, updated_at";

static INSERT_GRANT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO access_grants ({GRANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    )
});
static INSERT_METHOD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO access_methods ({METHOD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )
});
static SELECT_GRANT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {GRANT_COLS} FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2"
    )
});
static SELECT_LIVE_GRANT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {GRANT_COLS} FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2 AND deleted_at IS NULL"
    )
});
/// A page of live grants by filter; `D`'s list test for `access_grant_ids`.
fn select_grant_page<D: Dialect>() -> String {
    format!(
        "SELECT {GRANT_COLS} FROM access_grants g WHERE workspace_id = $1 AND deleted_at IS NULL AND access_grant_id > $2 AND ($3 = '' OR user_identity_id = $3) AND ($4 = '' OR EXISTS (SELECT 1 FROM access_grant_entrances e WHERE e.workspace_id = g.workspace_id AND e.access_grant_id = g.access_grant_id AND e.acs_entrance_id = $4)) AND ($5 = '' OR EXISTS (SELECT 1 FROM access_grant_entrances e WHERE e.workspace_id = g.workspace_id AND e.access_grant_id = g.access_grant_id AND e.acs_system_id = $5)) AND ($7 = '' OR {}) AND ($8 = '' OR access_grant_key = $8) AND ($9 = '' OR reservation_key = $9) ORDER BY access_grant_id LIMIT $6",
        D::in_list("access_grant_id", "$7")
    )
}
static SELECT_METHODS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {METHOD_COLS} FROM access_methods WHERE workspace_id = $1 AND access_grant_id = $2 ORDER BY access_method_id"
    )
});
static SELECT_LIVE_METHODS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {METHOD_COLS} FROM access_methods WHERE workspace_id = $1 AND access_grant_id = $2 AND deleted_at IS NULL ORDER BY access_method_id"
    )
});
static SELECT_LIVE_METHOD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {METHOD_COLS} FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2 AND deleted_at IS NULL"
    )
});
static SELECT_METHOD_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {METHOD_COLS} FROM access_methods m WHERE workspace_id = $1 AND deleted_at IS NULL AND access_method_id > $2 AND ($3 = '' OR access_grant_id = $3) AND ($4 = '' OR user_identity_id = $4) AND ($5 = '' OR EXISTS (SELECT 1 FROM access_method_entrances d WHERE d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id AND d.acs_entrance_id = $5)) AND ($6 = '' OR EXISTS (SELECT 1 FROM access_method_entrances d WHERE d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id AND d.acs_system_id = $6)) ORDER BY access_method_id LIMIT $7"
    )
});

/// The PINs in use on one entrance: codes of live methods whose door there is not revoked.
const CODES_ON_ENTRANCE: &str = "SELECT DISTINCT m.code FROM access_methods m JOIN access_method_entrances d ON d.workspace_id = m.workspace_id AND d.access_method_id = m.access_method_id WHERE m.workspace_id = $1 AND d.acs_entrance_id = $2 AND m.code IS NOT NULL AND d.state <> 'revoked' AND m.deleted_at IS NULL";

/// A door, with the access method it belongs to.
#[derive(sqlx::FromRow)]
struct MethodDoorRow {
    access_method_id: String,
    #[sqlx(flatten)]
    door: DoorRow,
}

/// A door still being pushed, with the grant of its method.
#[derive(sqlx::FromRow)]
struct GrantDoorRow {
    access_grant_id: String,
    #[sqlx(flatten)]
    door: DoorRow,
}

/// One entrance of a grant, in its position.
#[derive(sqlx::FromRow)]
struct GrantEntranceRow {
    access_grant_id: String,
    acs_entrance_id: String,
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| {
        StoreError::Domain(Error::Internal {
            message: format!("serialize: {e}"),
        })
    })
}

fn enum_str<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    Ok(json(v)?.trim_matches('"').to_owned())
}

fn grants(rows: Vec<GrantRow>) -> StoreResult<Vec<AccessGrant>> {
    rows.into_iter().map(AccessGrant::try_from).collect()
}

pub(crate) fn methods(rows: Vec<MethodRow>) -> StoreResult<Vec<AccessMethod>> {
    rows.into_iter().map(AccessMethod::try_from).collect()
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
    pub(crate) async fn write_method(
        conn: &mut D::Connection,
        m: &AccessMethod,
        insert: bool,
    ) -> StoreResult<()> {
        let q = if insert {
            INSERT_METHOD.as_str()
        } else {
            "UPDATE access_methods SET access_grant_id = $3, user_identity_id = $4, mode = $5, display_name = $6, is_issued = $7, issued_at = $8, is_card_encoding_required = $9, is_ready_for_encoding = $10, code = $11, client_session_token = $12, instant_key_id = $13, warnings = $14, errors = $15, created_at = $16, updated_at = $17 WHERE access_method_id = $1 AND workspace_id = $2"
        };
        sqlx::query(q)
            .bind(m.id.to_string())
            .bind(m.workspace_id.to_string())
            .bind(m.access_grant_id.to_string())
            .bind(m.user_identity_id.to_string())
            .bind(enum_str(&m.mode)?)
            .bind(m.display_name.clone())
            .bind(m.is_issued)
            .bind(m.issued_at.map(to_micros))
            .bind(m.is_card_encoding_required)
            .bind(m.is_ready_for_encoding)
            .bind(m.code.clone())
            .bind(m.client_session_token.clone())
            .bind(m.instant_key_id.map(|i| i.to_string()))
            .bind(json(&m.warnings)?)
            .bind(json(&m.errors)?)
            .bind(to_micros(m.created_at))
            .bind(to_micros(m.updated_at))
            .execute(&mut *conn)
            .await?;
        // Upserted: an update of the grant adds doors to an existing method.
        for d in &m.doors {
            sqlx::query("INSERT INTO access_method_entrances (workspace_id, access_method_id, acs_entrance_id, acs_system_id, state, reason, updated_at, pending_mutation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (workspace_id, access_method_id, acs_entrance_id) DO UPDATE SET acs_system_id = excluded.acs_system_id, state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at, pending_mutation = excluded.pending_mutation")
                .bind(m.workspace_id.to_string())
                .bind(m.id.to_string())
                .bind(d.entrance_id.to_string())
                .bind(d.acs_system_id.to_string())
                .bind(d.state.as_str().to_owned())
                .bind(d.reason.clone())
                .bind(to_micros(d.updated_at))
                .bind(d.pending.as_ref().map(json).transpose()?)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn load_doors(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        first: &str,
        last: &str,
    ) -> StoreResult<HashMap<String, Vec<DoorStatus>>> {
        let rows: Vec<MethodDoorRow> = sqlx::query_as("SELECT access_method_id, acs_entrance_id, acs_system_id, state, reason, updated_at, pending_mutation FROM access_method_entrances WHERE workspace_id = $1 AND access_method_id >= $2 AND access_method_id <= $3 ORDER BY access_method_id, acs_entrance_id")
            .bind(ws.to_string())
            .bind(first.to_owned())
            .bind(last.to_owned())
            .fetch_all(&mut *conn)
            .await?;
        let mut out: HashMap<String, Vec<DoorStatus>> = HashMap::new();
        for r in rows {
            out.entry(r.access_method_id)
                .or_default()
                .push(r.door.try_into()?);
        }
        Ok(out)
    }

    pub(crate) async fn with_doors(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        mut methods: Vec<AccessMethod>,
    ) -> StoreResult<Vec<AccessMethod>> {
        let (Some(first), Some(last)) = (
            methods.iter().map(|m| m.id).min(),
            methods.iter().map(|m| m.id).max(),
        ) else {
            return Ok(methods);
        };
        let mut doors = Self::load_doors(conn, ws, &first.to_string(), &last.to_string()).await?;
        for m in &mut methods {
            m.doors = doors.remove(&m.id.to_string()).unwrap_or_default();
        }
        Ok(methods)
    }

    async fn with_entrances(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        mut grants: Vec<AccessGrant>,
    ) -> StoreResult<Vec<AccessGrant>> {
        let (Some(first), Some(last)) = (
            grants.iter().map(|g| g.id).min(),
            grants.iter().map(|g| g.id).max(),
        ) else {
            return Ok(grants);
        };
        let rows: Vec<GrantEntranceRow> = sqlx::query_as("SELECT access_grant_id, acs_entrance_id FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id >= $2 AND access_grant_id <= $3 ORDER BY access_grant_id, position")
            .bind(ws.to_string())
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all(&mut *conn)
            .await?;
        let mut by: HashMap<String, Vec<EntranceId>> = HashMap::new();
        for r in rows {
            by.entry(r.access_grant_id)
                .or_default()
                .push(parse("acs_entrance_id", &r.acs_entrance_id)?);
        }
        // What is still being pushed: the unconfirmed doors of the grants' live methods.
        let rows: Vec<GrantDoorRow> = sqlx::query_as("SELECT m.access_grant_id, d.acs_entrance_id, d.acs_system_id, d.state, d.reason, d.updated_at, d.pending_mutation FROM access_method_entrances d JOIN access_methods m ON m.workspace_id = d.workspace_id AND m.access_method_id = d.access_method_id WHERE m.workspace_id = $1 AND m.access_grant_id >= $2 AND m.access_grant_id <= $3 AND m.deleted_at IS NULL AND (d.state IN ('pending', 'unknown') OR d.pending_mutation IS NOT NULL) ORDER BY d.acs_entrance_id")
            .bind(ws.to_string())
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all(&mut *conn)
            .await?;
        let mut doors: HashMap<String, Vec<DoorStatus>> = HashMap::new();
        for r in rows {
            doors
                .entry(r.access_grant_id)
                .or_default()
                .push(r.door.try_into()?);
        }
        for g in &mut grants {
            g.entrance_ids = by.remove(&g.id.to_string()).unwrap_or_default();
            g.pending_mutations = keygate_domain::grant::pending_mutations(
                doors.get(&g.id.to_string()).into_iter().flatten(),
            );
        }
        Ok(grants)
    }

    /// The grant, locked (with `D::LOCK`), deleted or not, with its entrances.
    pub(crate) async fn grant_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> StoreResult<AccessGrant> {
        let sql = assembled(format!("{}{}", SELECT_GRANT.as_str(), D::LOCK));
        Self::grant_by(conn, ws, id, sql).await
    }

    async fn grant_by(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessGrantId,
        sql: sqlx::AssertSqlSafe<String>,
    ) -> StoreResult<AccessGrant> {
        let row: GrantRow = sqlx::query_as(sql)
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessGrant, id.to_string()))?;
        let g = AccessGrant::try_from(row)?;
        Ok(Self::with_entrances(conn, ws, vec![g]).await?.remove(0))
    }

    pub(crate) async fn methods_of(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        grant: AccessGrantId,
    ) -> StoreResult<Vec<AccessMethod>> {
        let rows: Vec<MethodRow> = sqlx::query_as(SELECT_METHODS_OF.as_str())
            .bind(ws.to_string())
            .bind(grant.to_string())
            .fetch_all(&mut *conn)
            .await?;
        Self::with_doors(conn, ws, methods(rows)?).await
    }

    /// Checks, under the workspace's lock, that the PINs Keygate chose for `methods` are
    /// still free on their doors: a concurrent grant may have taken one since the choice.
    async fn check_pins(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        methods: &[AccessMethod],
    ) -> StoreResult<()> {
        if !methods.iter().any(|m| m.code.is_some()) {
            return Ok(());
        }
        // Serialize with other creates of this workspace (the event counter row stays
        // locked until commit).
        sqlx::query("INSERT INTO event_counters (workspace_id, last_seq) VALUES ($1, 0) ON CONFLICT (workspace_id) DO UPDATE SET last_seq = event_counters.last_seq")
            .bind(ws.to_string())
            .execute(&mut *conn)
            .await?;
        for m in methods.iter().filter(|m| m.code.is_some()) {
            for d in &m.doors {
                let taken: Vec<String> = sqlx::query_scalar(CODES_ON_ENTRANCE)
                    .bind(ws.to_string())
                    .bind(d.entrance_id.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                if taken.iter().any(|c| Some(c) == m.code.as_ref()) {
                    return Err(Error::AlreadyExists {
                        reason: ErrorReason::PinCodeTaken,
                        message: "the chosen PIN code was taken on one of these entrances".into(),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// A grant that is not deleted (locked, with `lock`), with its live methods.
    pub(crate) async fn live_grant(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessGrantId,
        lock: bool,
    ) -> StoreResult<(AccessGrant, Vec<AccessMethod>)> {
        let sql = format!(
            "SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2{}",
            if lock { D::LOCK } else { "" }
        );
        let found: Option<Option<i64>> = sqlx::query_scalar(assembled(sql))
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if !matches!(found, Some(None)) {
            return Err(Error::not_found(Resource::AccessGrant, id.to_string()).into());
        }
        let grant = if lock {
            Self::grant_in(conn, ws, id).await?
        } else {
            Self::grant_by(conn, ws, id, assembled(SELECT_GRANT.clone())).await?
        };
        let rows: Vec<MethodRow> = sqlx::query_as(SELECT_LIVE_METHODS_OF.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?;
        Ok((grant, Self::with_doors(conn, ws, methods(rows)?).await?))
    }

    /// Queues revocation of every door of `m` that may hold access, one job per system.
    pub(crate) async fn queue_revokes(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        m: &AccessMethod,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut by_system: BTreeMap<AccessSystemId, Vec<EntranceId>> = BTreeMap::new();
        for d in m.doors.iter().filter(|d| d.state != DoorState::Revoked) {
            by_system
                .entry(d.acs_system_id)
                .or_default()
                .push(d.entrance_id);
        }
        for (system, entrance_ids) in by_system {
            let job = RevokeJob {
                access_grant_id: m.access_grant_id,
                access_method_id: m.id,
                acs_system_id: system,
                entrance_ids,
            };
            Self::insert_job(conn, ws, &JobWork::Revoke(job), now).await?;
        }
        Ok(())
    }

    /// Queues a job, due now.
    pub(crate) async fn insert_job(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        work: &JobWork,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        // The span of whatever queues the job (an RPC, the reconciler): the job continues its trace.
        sqlx::query("INSERT INTO jobs (job_id, workspace_id, kind, acs_system_id, subject_id, payload, state, attempts, run_at, created_at, updated_at, trace_context) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7, $7, $8)")
            .bind(JobId::new().to_string())
            .bind(ws.to_string())
            .bind(work.kind().to_owned())
            .bind(work.acs_system_id().to_string())
            .bind(work.subject_id())
            .bind(json(work)?)
            .bind(to_micros(now))
            .bind(keygate_telemetry::propagation::current_traceparent())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Marks methods deleted, queues their revocation, and returns the deletion events. A
    /// deleted mobile key's Instant Key is revoked with it: its page has nothing left to open.
    async fn delete_methods(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        methods: &[AccessMethod],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<NewEvent>> {
        let mut events = Vec::new();
        for m in methods {
            if let Some(key) = m.instant_key_id {
                let revoked = sqlx::query("UPDATE instant_keys SET revoked_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2 AND revoked_at IS NULL")
                    .bind(ws.to_string())
                    .bind(key.to_string())
                    .bind(to_micros(now))
                    .execute(&mut *conn)
                    .await?;
                if D::rows_affected(&revoked) > 0 {
                    events.push(keygate_domain::applied::instant_key_revoked(
                        key,
                        m.user_identity_id,
                        Some(m.access_grant_id),
                        now,
                    ));
                }
            }
            sqlx::query("UPDATE access_methods SET deleted_at = $3, updated_at = $3 WHERE workspace_id = $1 AND access_method_id = $2")
                .bind(ws.to_string())
                .bind(m.id.to_string())
                .bind(to_micros(now))
                .execute(&mut *conn)
                .await?;
            Self::queue_revokes(conn, ws, m, now).await?;
            events.push(keygate_domain::applied::access_method_deleted(m, now));
        }
        Ok(events)
    }

    pub(crate) async fn method_deleted(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessMethodId,
    ) -> StoreResult<bool> {
        let d: Option<Option<i64>> = sqlx::query_scalar("SELECT deleted_at FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(!matches!(d, Some(None)))
    }

    /// Locks the grant of access method `method`. Every write of a grant's methods takes
    /// this lock first, so completions of jobs in different systems (which rewrite the
    /// same method rows) apply one after another instead of losing each other's doors.
    pub(crate) async fn lock_grant_of(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        method: AccessMethodId,
    ) -> StoreResult<()> {
        let grant: Option<String> = sqlx::query_scalar("SELECT access_grant_id FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2")
            .bind(ws.to_string())
            .bind(method.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(grant) = grant {
            sqlx::query(assembled(format!(
                "SELECT access_grant_id FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2{}",
                D::LOCK
            )))
            .bind(ws.to_string())
            .bind(grant)
            .fetch_optional(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn grant_with_methods(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> StoreResult<(AccessGrant, Vec<AccessMethod>)> {
        let mut conn = self.pool.begin_with(D::READ).await?;
        Self::live_grant(&mut conn, ws, id, false).await
    }

    async fn update_grant(
        &self,
        ws: WorkspaceId,
        before: &(AccessGrant, Vec<AccessMethod>),
        w: &GrantWrite,
    ) -> StoreResult<(AccessGrant, Vec<Event>)> {
        let now = w.grant.updated_at;
        let g = &w.grant;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let current = Self::live_grant(&mut tx, ws, g.id, true).await?;
        if current != *before {
            return Err(Error::Aborted {
                message: format!("access grant {} changed while the update was planned", g.id),
            }
            .into());
        }
        Self::check_pins(&mut tx, ws, &w.new_methods).await?;
        sqlx::query("UPDATE access_grants SET name = $3, starts_at = $4, ends_at = $5, requested_access_methods = $6, warnings = $7, errors = $8, updated_at = $9 WHERE workspace_id = $1 AND access_grant_id = $2")
            .bind(ws.to_string())
            .bind(g.id.to_string())
            .bind(g.name.clone())
            .bind(to_micros(g.starts_at))
            .bind(g.ends_at.map(to_micros))
            .bind(json(&g.requested)?)
            .bind(json(&g.warnings)?)
            .bind(json(&g.errors)?)
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        for e in &w.removed {
            sqlx::query("DELETE FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id = $2 AND acs_entrance_id = $3")
                .bind(ws.to_string())
                .bind(g.id.to_string())
                .bind(e.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let last: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(position), -1) FROM access_grant_entrances WHERE workspace_id = $1 AND access_grant_id = $2")
            .bind(ws.to_string())
            .bind(g.id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        for (i, (entrance, system)) in w.added.iter().enumerate() {
            sqlx::query("INSERT INTO access_grant_entrances (workspace_id, access_grant_id, acs_entrance_id, acs_system_id, position) VALUES ($1, $2, $3, $4, $5)")
                .bind(ws.to_string())
                .bind(g.id.to_string())
                .bind(entrance.to_string())
                .bind(system.to_string())
                .bind(last + 1 + i32::try_from(i).unwrap_or(i32::MAX - last - 1))
                .execute(&mut *tx)
                .await?;
        }
        for m in &w.methods {
            Self::write_method(&mut tx, m, false).await?;
        }
        for m in &w.new_methods {
            Self::write_method(&mut tx, m, true).await?;
        }
        // The grant's Instant Key lasts as long as the grant.
        if let Some(key) = g.instant_key_id {
            sqlx::query("UPDATE instant_keys SET expires_at = $3 WHERE workspace_id = $1 AND instant_key_id = $2")
                .bind(ws.to_string())
                .bind(key.to_string())
                .bind(g.ends_at.map(to_micros))
                .execute(&mut *tx)
                .await?;
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
                .await?;
            Self::insert_job(&mut tx, ws, work, now).await?;
        }
        let events = Self::append_events(&mut tx, ws, &w.events, now).await?;
        let (after, _) = Self::live_grant(&mut tx, ws, g.id, true).await?;
        tx.commit().await?;
        Ok((after, events))
    }

    async fn create_attempt(
        &self,
        ws: WorkspaceId,
        a: &ActionAttempt,
        job: &JobWork,
        idem: Option<&Idempotency>,
    ) -> StoreResult<ActionAttempt> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if let Some(first) =
            Self::claim_idempotency(&mut tx, ws, idem, &a.id.to_string(), a.created_at).await?
        {
            drop(tx);
            return self.attempt(ws, parse("action_attempt_id", &first)?).await;
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
            .await?;
        Self::insert_job(&mut tx, ws, job, a.created_at).await?;
        tx.commit().await?;
        Ok(a.clone())
    }

    /// Deletes a live grant in an open transaction, as `DeleteAccessGrant` does: the grant row
    /// locked and marked deleted (its natural key freed), its live methods deleted with their
    /// revocation queued and their Instant Keys revoked. Returns the events to append:
    /// `access_method.deleted` (and `instant_key.revoked`) per method, then
    /// `access_grant.deleted`. `NotFound` when the grant is missing or deleted already.
    pub(crate) async fn delete_grant_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: AccessGrantId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<NewEvent>> {
        let found: Option<Option<i64>> = sqlx::query_scalar(assembled(format!(
            "SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        if !matches!(found, Some(None)) {
            return Err(Error::not_found(Resource::AccessGrant, id.to_string()).into());
        }
        let grant = Self::grant_in(conn, ws, id).await?;
        // The natural key is freed for a new grant (NULLs never collide in the unique index).
        sqlx::query("UPDATE access_grants SET deleted_at = $3, updated_at = $3, access_grant_key = NULL WHERE workspace_id = $1 AND access_grant_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(to_micros(now))
            .execute(&mut *conn)
            .await?;
        let live: Vec<AccessMethod> = {
            let all = Self::methods_of(conn, ws, id).await?;
            let mut live = Vec::new();
            for m in all {
                if !Self::method_deleted(conn, ws, m.id).await? {
                    live.push(m);
                }
            }
            live
        };
        let mut events = Self::delete_methods(conn, ws, &live, now).await?;
        // Its unlocks still queued are never sent.
        events.extend(Self::cancel_unlocks_in(conn, ws, UnlockScope::Grant(id), now).await?);
        events.push(keygate_domain::applied::access_grant_deleted(
            id,
            grant.user_identity_id,
            now,
        ));
        Ok(events)
    }

    async fn delete_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Event>> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let events = Self::delete_grant_in(&mut tx, ws, id, now).await?;
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn delete_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Event>> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        Self::lock_grant_of(&mut tx, ws, id).await?;
        let row: MethodRow = sqlx::query_as(assembled(format!(
            "{}{}",
            SELECT_LIVE_METHOD.as_str(),
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found(Resource::AccessMethod, id.to_string()))?;
        let m = Self::with_doors(&mut tx, ws, vec![row.try_into()?])
            .await?
            .remove(0);
        // The grant stops listing the method.
        let mut grant = Self::grant_in(&mut tx, ws, m.access_grant_id).await?;
        for r in &mut grant.requested {
            r.created_access_method_ids.retain(|x| *x != id);
        }
        sqlx::query("UPDATE access_grants SET requested_access_methods = $3, updated_at = $4 WHERE workspace_id = $1 AND access_grant_id = $2")
            .bind(ws.to_string())
            .bind(grant.id.to_string())
            .bind(json(&grant.requested)?)
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        let mut events = Self::delete_methods(&mut tx, ws, std::slice::from_ref(&m), now).await?;
        events.extend(Self::cancel_unlocks_in(&mut tx, ws, UnlockScope::Method(id), now).await?);
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn codes_on(
        &self,
        ws: WorkspaceId,
        entrances: &[EntranceId],
    ) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for e in entrances {
            let codes: Vec<String> = sqlx::query_scalar(CODES_ON_ENTRANCE)
                .bind(ws.to_string())
                .bind(e.to_string())
                .fetch_all(&self.pool)
                .await?;
            out.extend(codes);
        }
        Ok(out)
    }

    async fn attempt(&self, ws: WorkspaceId, id: ActionAttemptId) -> StoreResult<ActionAttempt> {
        let row: AttemptRow = sqlx::query_as(
            "SELECT * FROM action_attempts WHERE workspace_id = $1 AND action_attempt_id = $2",
        )
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Resource::ActionAttempt, id.to_string()))?;
        row.try_into()
    }

    async fn create_grant(
        &self,
        ws: WorkspaceId,
        new: &NewGrant,
        idem: Option<&Idempotency>,
    ) -> StoreResult<(AccessGrant, Vec<Event>)> {
        let now = new.grant.created_at;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if let Some(first) =
            Self::claim_idempotency(&mut tx, ws, idem, &new.grant.id.to_string(), now).await?
        {
            let g = Self::grant_in(&mut tx, ws, parse("access_grant_id", &first)?).await?;
            return Ok((g, Vec::new()));
        }
        let g = &new.grant;
        // An existing person's row is locked (it is taken before the grants of any delete of
        // the person): a grant cannot be created beside a delete of its person and survive
        // it; after that delete it is `NOT_FOUND`.
        if new.new_identity.is_none() {
            Self::lock_person(&mut tx, ws, g.user_identity_id).await?;
        }
        Self::check_pins(&mut tx, ws, &new.methods).await?;
        if let Some(person) = &new.new_identity {
            sqlx::query("INSERT INTO user_identities (user_identity_id, workspace_id, user_identity_key, full_name, email_address, phone_number, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(g.user_identity_id.to_string())
                .bind(ws.to_string())
                .bind(person.user_identity_key.clone())
                .bind(person.full_name.clone())
                .bind(person.email_address.clone())
                .bind(person.phone_number.clone())
                .bind(to_micros(now))
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::from(e).on_unique(user_identity_key_taken))?;
        }
        sqlx::query(INSERT_GRANT.as_str())
            .bind(g.id.to_string())
            .bind(ws.to_string())
            .bind(g.user_identity_id.to_string())
            .bind(g.access_grant_key.clone())
            .bind(g.name.clone())
            .bind(g.reservation_key.clone())
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
                .await?;
        }
        for m in &new.methods {
            Self::write_method(&mut tx, m, true).await?;
        }
        for j in &new.jobs {
            Self::insert_job(&mut tx, ws, &JobWork::Provision(j.clone()), now).await?;
        }
        if let Some((key, token_sha256)) = &new.instant_key {
            Self::insert_instant_key(&mut tx, key, token_sha256).await?;
        }
        let events = Self::append_events(&mut tx, ws, &new.events, now).await?;
        tx.commit().await?;
        let mut created = g.clone();
        created.entrance_ids = new.entrances.iter().map(|(e, _)| *e).collect();
        Ok((created, events))
    }

    async fn grant(&self, ws: WorkspaceId, id: AccessGrantId) -> StoreResult<AccessGrant> {
        // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
        let mut conn = self.pool.begin_with(D::READ).await?;
        let row: GrantRow = sqlx::query_as(SELECT_LIVE_GRANT.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessGrant, id.to_string()))?;
        let g = AccessGrant::try_from(row)?;
        Ok(Self::with_entrances(&mut conn, ws, vec![g])
            .await?
            .remove(0))
    }

    async fn grants_page(
        &self,
        ws: WorkspaceId,
        f: &GrantFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AccessGrant>> {
        // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
        let mut conn = self.pool.begin_with(D::READ).await?;
        let ids: Vec<String> = f.access_grant_ids.iter().map(ToString::to_string).collect();
        let rows: Vec<GrantRow> = sqlx::query_as(assembled(select_grant_page::<D>()))
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(
                f.user_identity_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(f.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(fetch_limit(page.limit))
            .bind(ids.join(","))
            .bind(f.access_grant_key.clone().unwrap_or_default())
            .bind(f.reservation_key.clone().unwrap_or_default())
            .fetch_all(&mut *conn)
            .await?;
        let mut p = into_page(grants(rows)?, page.limit, |g| g.id.to_string());
        p.items = Self::with_entrances(&mut conn, ws, p.items).await?;
        Ok(p)
    }

    async fn method(&self, ws: WorkspaceId, id: AccessMethodId) -> StoreResult<AccessMethod> {
        // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
        let mut conn = self.pool.begin_with(D::READ).await?;
        let row: MethodRow = sqlx::query_as(SELECT_LIVE_METHOD.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::AccessMethod, id.to_string()))?;
        Ok(Self::with_doors(&mut conn, ws, vec![row.try_into()?])
            .await?
            .remove(0))
    }

    async fn methods_page(
        &self,
        ws: WorkspaceId,
        f: &MethodFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AccessMethod>> {
        // One snapshot for the rows and their doors: a concurrent completion is seen whole or not at all.
        let mut conn = self.pool.begin_with(D::READ).await?;
        let rows: Vec<MethodRow> = sqlx::query_as(SELECT_METHOD_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(f.access_grant_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(
                f.user_identity_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(f.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(fetch_limit(page.limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut p = into_page(methods(rows)?, page.limit, |m| m.id.to_string());
        p.items = Self::with_doors(&mut conn, ws, p.items).await?;
        Ok(p)
    }
}

#[async_trait]
impl<D> GrantStore for SqlStore<D>
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
    async fn access_grant_with_methods(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<(AccessGrant, Vec<AccessMethod>), Error> {
        Ok(self.grant_with_methods(ws, id).await?)
    }

    async fn update_access_grant(
        &self,
        ws: WorkspaceId,
        before: &(AccessGrant, Vec<AccessMethod>),
        w: &GrantWrite,
    ) -> Result<(AccessGrant, Vec<Event>), Error> {
        Ok(self.update_grant(ws, before, w).await?)
    }

    async fn create_action_attempt(
        &self,
        ws: WorkspaceId,
        a: &ActionAttempt,
        job: &JobWork,
        idem: Option<&Idempotency>,
    ) -> Result<ActionAttempt, Error> {
        Ok(self.create_attempt(ws, a, job, idem).await?)
    }

    async fn delete_access_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, Error> {
        Ok(self.delete_grant(ws, id, now).await?)
    }

    async fn delete_access_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, Error> {
        Ok(self.delete_method(ws, id, now).await?)
    }

    async fn active_codes(
        &self,
        ws: WorkspaceId,
        entrances: &[EntranceId],
    ) -> Result<Vec<String>, Error> {
        Ok(self.codes_on(ws, entrances).await?)
    }

    async fn get_action_attempt(
        &self,
        ws: WorkspaceId,
        id: ActionAttemptId,
    ) -> Result<ActionAttempt, Error> {
        Ok(self.attempt(ws, id).await?)
    }

    async fn create_access_grant(
        &self,
        ws: WorkspaceId,
        new: &NewGrant,
        idem: Option<&Idempotency>,
    ) -> Result<(AccessGrant, Vec<Event>), Error> {
        Ok(self.create_grant(ws, new, idem).await?)
    }

    async fn get_access_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<AccessGrant, Error> {
        Ok(self.grant(ws, id).await?)
    }

    async fn list_access_grants(
        &self,
        ws: WorkspaceId,
        f: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessGrant>, Error> {
        Ok(self.grants_page(ws, f, page).await?)
    }

    async fn get_access_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
    ) -> Result<AccessMethod, Error> {
        Ok(self.method(ws, id).await?)
    }

    async fn list_access_methods(
        &self,
        ws: WorkspaceId,
        f: &MethodFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessMethod>, Error> {
        Ok(self.methods_page(ws, f, page).await?)
    }
}
