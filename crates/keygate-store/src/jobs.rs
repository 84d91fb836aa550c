//! The job queue: claims, leases and the completions that apply a job's outcome to its grant,
//! and the reconciler's reads and repairs.
//!
//! A completion first checks the job's lease (locked), then locks the grant of the method it
//! rewrites before it reads or writes any method row, so completions of one grant's jobs apply
//! one after another.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::Error;
use keygate_domain::action::{
    AttemptError, EncodedCard, JobWork, RevokeJob, UnlockScope, unlock_errors,
};
use keygate_domain::events::{Event, NewEvent};
use keygate_domain::grant::DoorStatus;
use keygate_domain::ids::{AccessGrantId, AccessMethodId, AccessSystemId, EntranceId, WorkspaceId};
use keygate_domain::tracker::{self, ProvisionResult};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::common::{due, job_claim};
use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::grant_rows::{MethodRow, unjson};
use crate::grants::{METHOD_COLS, json};
use crate::traits::{Claim, Claimed, DueSystem, Job, JobQueue, QueueAge, ReconcileItem};
use crate::util::{from_micros, parse, to_micros};

static SELECT_RECONCILE_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {METHOD_COLS}, deleted_at AS method_deleted_at, (SELECT g.deleted_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_deleted_at, (SELECT g.starts_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_starts_at, (SELECT g.ends_at FROM access_grants g WHERE g.workspace_id = m.workspace_id AND g.access_grant_id = m.access_grant_id) AS grant_ends_at FROM access_methods m WHERE access_method_id > $1 ORDER BY access_method_id LIMIT $2"
    )
});

/// Jobs queued or running for one credential (method, system).
const ACTIVE_JOBS: &str = "SELECT COUNT(*) FROM jobs WHERE subject_id = $1 AND acs_system_id = $2 AND state IN ('queued', 'running')";

/// A job as a claim returns it.
#[derive(sqlx::FromRow)]
struct JobRow {
    job_id: String,
    workspace_id: String,
    payload: String,
    attempts: i32,
    trace_context: Option<String>,
    lease_token: Option<String>,
}

impl TryFrom<&JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: &JobRow) -> StoreResult<Self> {
        let work: JobWork = unjson("job payload", &r.payload)?;
        Ok(Job {
            id: parse("job_id", &r.job_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            work,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            trace_context: r.trace_context.clone(),
            lease_token: r.lease_token.clone().unwrap_or_default(),
        })
    }
}

/// Who holds a job.
#[derive(sqlx::FromRow)]
struct LeaseRow {
    state: String,
    lease_token: Option<String>,
}

/// A pair with due jobs.
#[derive(sqlx::FromRow)]
struct DueRow {
    workspace_id: String,
    acs_system_id: String,
    due: i64,
}

/// An access method with what the reconciler needs of its grant.
#[derive(sqlx::FromRow)]
struct ReconcileRow {
    #[sqlx(flatten)]
    method: MethodRow,
    method_deleted_at: Option<i64>,
    grant_deleted_at: Option<i64>,
    grant_starts_at: i64,
    grant_ends_at: Option<i64>,
}

/// A grant whose end has passed.
#[derive(sqlx::FromRow)]
struct ExpiredRow {
    workspace_id: String,
    access_grant_id: String,
}

#[derive(sqlx::FromRow)]
struct QueueAgeRow {
    queued: Option<i64>,
    due: Option<i64>,
}

impl TryFrom<QueueAgeRow> for QueueAge {
    type Error = StoreError;

    fn try_from(r: QueueAgeRow) -> StoreResult<Self> {
        Ok(QueueAge {
            oldest_queued_at: r.queued.map(from_micros).transpose()?,
            oldest_due_at: r.due.map(from_micros).transpose()?,
        })
    }
}

fn wrong_kind(job: &Job, kind: &str) -> StoreError {
    StoreError::Domain(Error::Internal {
        message: format!("job {} is not {kind} job", job.id),
    })
}

/// Unlock cancellation, shared by every revocation and deletion (with the narrower bounds of
/// their modules).
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
    /// Ends, inside the caller's transaction, the queued or running unlocks that `scope` allowed:
    /// each job is done (a worker holding it fails its fence check and never calls), its
    /// attempt, if still pending, ends in `error` with `access_revoked`; returns the
    /// `action_attempt.failed` events to append. Called by every revocation and deletion that
    /// takes away what an unlock relies on.
    pub(crate) async fn cancel_unlocks_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        scope: UnlockScope,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<NewEvent>> {
        let rows: Vec<(String, String)> = sqlx::query_as(assembled(format!(
            "SELECT job_id, payload FROM jobs WHERE workspace_id = $1 AND kind = 'unlock' AND state IN ('queued', 'running'){}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let mut events = Vec::new();
        for (job_id, payload) in rows {
            // An undecodable payload is the dead-letter path's to handle (and can unlock nothing).
            let Ok(JobWork::Unlock(u)) = serde_json::from_str::<JobWork>(&payload) else {
                continue;
            };
            if !scope.covers(&u) {
                continue;
            }
            sqlx::query("UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_until = NULL, last_error = $2, updated_at = $3 WHERE job_id = $1")
                .bind(job_id)
                .bind(unlock_errors::ACCESS_REVOKED.to_owned())
                .bind(to_micros(now))
                .execute(&mut *conn)
                .await?;
            let ended = sqlx::query("UPDATE action_attempts SET status = 'error', error_type = $3, error_message = $4, completed_at = $5 WHERE workspace_id = $1 AND action_attempt_id = $2 AND status = 'pending'")
                .bind(ws.to_string())
                .bind(u.action_attempt_id.to_string())
                .bind(unlock_errors::ACCESS_REVOKED.to_owned())
                .bind(
                    "what allowed this unlock was revoked or deleted before it was sent".to_owned(),
                )
                .bind(to_micros(now))
                .execute(&mut *conn)
                .await?;
            let ended = D::rows_affected(&ended);
            if ended > 0 {
                events.push(keygate_domain::applied::unlock_finished(&u, false, now));
            }
        }
        Ok(events)
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
    /// Marks a job done and drops its lease.
    async fn finish_job(
        conn: &mut D::Connection,
        job: &Job,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $2 WHERE job_id = $1")
            .bind(job.id.to_string())
            .bind(to_micros(now))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Whether the job is still running under this claim's fencing token; the job row stays
    /// locked. The token is fresh on every claim, so a lost claim (the job claimed again, by
    /// this process or another) fails here even when the owner name is the same.
    async fn lease_held(conn: &mut D::Connection, job: &Job) -> StoreResult<bool> {
        let row: Option<LeaseRow> = sqlx::query_as(assembled(format!(
            "SELECT state, lease_token FROM jobs WHERE job_id = $1{}",
            D::LOCK
        )))
        .bind(job.id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some_and(|r| {
            r.state == "running"
                && !job.lease_token.is_empty()
                && r.lease_token.as_deref() == Some(job.lease_token.as_str())
        }))
    }

    async fn due_pairs(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<DueSystem>> {
        let rows: Vec<DueRow> = sqlx::query_as(assembled(format!(
            "SELECT workspace_id, acs_system_id, COUNT(*) AS due FROM jobs j WHERE {} GROUP BY workspace_id, acs_system_id ORDER BY MIN(run_at) LIMIT $2",
            due("j", "$1")
        )))
        .bind(to_micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DueSystem {
                    workspace_id: parse("workspace_id", &r.workspace_id)?,
                    acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
                    due: u32::try_from(r.due).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn claim(&self, claim: &Claim<'_>, now: OffsetDateTime) -> StoreResult<Claimed> {
        let until = now + claim.lease;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let rows: Vec<JobRow> = sqlx::query_as(assembled(job_claim::<D>()))
            .bind(claim.owner.to_owned())
            .bind(token)
            .bind(to_micros(until))
            .bind(to_micros(now))
            .bind(claim.workspace_id.to_string())
            .bind(claim.acs_system_id.to_string())
            .bind(i64::from(claim.limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Claimed::default();
        for row in &rows {
            match Job::try_from(row) {
                Ok(job) => claimed.jobs.push(job),
                // One undecodable job must not stall the others: it leaves the queue, with why.
                Err(e) => {
                    tracing::error!(job_id = %row.job_id, error = %e, "undecodable job moved to the dead state");
                    sqlx::query("UPDATE jobs SET state = 'dead', last_error = $2, lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $3 WHERE job_id = $1")
                        .bind(row.job_id.clone())
                        .bind(format!("undecodable: {e}"))
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await?;
                    claimed.dead += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn renew(&self, token: &str, until: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $2 WHERE lease_token = $1 AND state = 'running'",
        )
        .bind(token.to_owned())
        .bind(to_micros(until))
        .execute(&self.pool)
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn bury(&self, job: &Job, reason: &str, now: OffsetDateTime) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET state = 'dead', last_error = $2, lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $3 WHERE job_id = $1")
            .bind(job.id.to_string())
            .bind(reason.to_owned())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn valid(&self, job: &Job, now: OffsetDateTime) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE job_id = $1 AND lease_token = $2 AND state = 'running' AND lease_until > $3")
            .bind(job.id.to_string())
            .bind(job.lease_token.clone())
            .bind(to_micros(now))
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn provisioned(
        &self,
        job: &Job,
        result: &ProvisionResult,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Vec<Event>>> {
        let ws = job.workspace_id;
        let JobWork::Provision(p) = &job.work else {
            return Err(wrong_kind(job, "a provision"));
        };
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(None);
        }
        if Self::method_deleted(&mut tx, ws, p.access_method_id).await? {
            // Deleted while this call was in flight: whatever it granted is taken back,
            // whichever of the two jobs finished first.
            let revoke = RevokeJob {
                access_grant_id: p.access_grant_id,
                access_method_id: p.access_method_id,
                acs_system_id: p.acs_system_id,
                entrance_ids: p.entrance_ids.clone(),
            };
            Self::insert_job(&mut tx, ws, &JobWork::Revoke(revoke), now).await?;
            Self::finish_job(&mut tx, job, now).await?;
            tx.commit().await?;
            return Ok(Some(Vec::new()));
        }
        // Locks the grant: completions of one grant's jobs apply one after another,
        // so "all doors granted" is decided once.
        let grant = match Self::grant_in(&mut tx, ws, p.access_grant_id).await {
            Ok(g) => g,
            Err(StoreError::Domain(Error::NotFound { .. })) => {
                Self::finish_job(&mut tx, job, now).await?;
                tx.commit().await?;
                return Ok(Some(Vec::new()));
            }
            Err(e) => return Err(e),
        };
        let methods = Self::methods_of(&mut tx, ws, grant.id).await?;
        let t = tracker::apply(&grant, &methods, p, result, now);
        for (after, before) in t.methods.iter().zip(&methods) {
            if after != before {
                Self::write_method(&mut tx, after, false).await?;
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
                .await?;
        }
        Self::finish_job(&mut tx, job, now).await?;
        let events = Self::append_events(&mut tx, ws, &t.events, now).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn reschedule(
        &self,
        job: &Job,
        run_at: OffsetDateTime,
        error: &str,
        refund: bool,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET state = 'queued', run_at = $2, last_error = $3, lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $4, attempts = attempts - $5 WHERE job_id = $1")
            .bind(job.id.to_string())
            .bind(to_micros(run_at))
            .bind(error.to_owned())
            .bind(to_micros(now))
            .bind(i32::from(refund))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn encoded(
        &self,
        job: &Job,
        outcome: &Result<EncodedCard, AttemptError>,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Vec<Event>>> {
        let ws = job.workspace_id;
        let JobWork::Encode(e) = &job.work else {
            return Err(wrong_kind(job, "an encode"));
        };
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(None);
        }
        Self::lock_grant_of(&mut tx, ws, e.access_method_id).await?;
        let mut events = Vec::new();
        let deleted = Self::method_deleted(&mut tx, ws, e.access_method_id).await?;
        let interrupted = Err(AttemptError {
            error_type: "encoding_interrupted".into(),
            message: "the access method was deleted during the encoding".into(),
        });
        // A card deleted while it was being encoded is not issued: the attempt fails.
        let outcome = if deleted && outcome.is_ok() {
            &interrupted
        } else {
            outcome
        };
        match outcome {
            Ok(card) => {
                sqlx::query("UPDATE action_attempts SET status = 'success', result = $3, completed_at = $4 WHERE workspace_id = $1 AND action_attempt_id = $2")
                    .bind(ws.to_string())
                    .bind(e.action_attempt_id.to_string())
                    .bind(json(card)?)
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
                let row: Option<MethodRow> = sqlx::query_as(assembled(format!(
                    "SELECT {METHOD_COLS} FROM access_methods WHERE workspace_id = $1 AND access_method_id = $2{}",
                    D::LOCK
                )))
                .bind(ws.to_string())
                .bind(e.access_method_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = row {
                    let mut m = Self::with_doors(&mut tx, ws, vec![row.try_into()?])
                        .await?
                        .remove(0);
                    let was_issued = m.is_issued;
                    m.is_card_encoding_required = false;
                    m.is_ready_for_encoding = false;
                    m.is_issued = true;
                    m.issued_at = m.issued_at.or(Some(now));
                    m.updated_at = now;
                    Self::write_method(&mut tx, &m, false).await?;
                    events.push(keygate_domain::applied::card_encoded(
                        &m,
                        e.acs_system_id,
                        was_issued,
                        now,
                    ));
                }
            }
            Err(err) => {
                sqlx::query("UPDATE action_attempts SET status = 'error', error_type = $3, error_message = $4, completed_at = $5 WHERE workspace_id = $1 AND action_attempt_id = $2")
                    .bind(ws.to_string())
                    .bind(e.action_attempt_id.to_string())
                    .bind(err.error_type.clone())
                    .bind(err.message.clone())
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        events.push(keygate_domain::applied::encode_finished(
            e,
            outcome.is_ok(),
            now,
        ));
        Self::finish_job(&mut tx, job, now).await?;
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(Some(appended))
    }

    async fn unlocked(
        &self,
        job: &Job,
        outcome: &Result<(), AttemptError>,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Vec<Event>>> {
        let ws = job.workspace_id;
        let JobWork::Unlock(u) = &job.work else {
            return Err(wrong_kind(job, "an unlock"));
        };
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(None);
        }
        let (status, error_type, message) = match outcome {
            Ok(()) => ("success", None, None),
            Err(e) => ("error", Some(e.error_type.clone()), Some(e.message.clone())),
        };
        sqlx::query("UPDATE action_attempts SET status = $3, error_type = $4, error_message = $5, completed_at = $6 WHERE workspace_id = $1 AND action_attempt_id = $2")
            .bind(ws.to_string())
            .bind(u.action_attempt_id.to_string())
            .bind(status.to_owned())
            .bind(error_type)
            .bind(message)
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        let mut events = Vec::new();
        if outcome.is_ok() {
            events.push(keygate_domain::applied::entrance_unlocked(u, now));
        }
        events.push(keygate_domain::applied::unlock_finished(
            u,
            outcome.is_ok(),
            now,
        ));
        Self::finish_job(&mut tx, job, now).await?;
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(Some(appended))
    }

    /// Writes `reason` on the still-pending doors of a provision job, which become `becomes`
    /// (`unknown` after an ambiguous answer, or stay `pending` while the system is unreachable).
    async fn pending_doors(
        &self,
        job: &Job,
        reason: &str,
        becomes: &'static str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let JobWork::Provision(p) = &job.work else {
            return Ok(true);
        };
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(false);
        }
        Self::lock_grant_of(&mut tx, job.workspace_id, p.access_method_id).await?;
        sqlx::query("UPDATE access_method_entrances SET state = $6, reason = $4, updated_at = $5 WHERE workspace_id = $1 AND access_method_id = $2 AND acs_system_id = $3 AND state = 'pending'")
            .bind(job.workspace_id.to_string())
            .bind(p.access_method_id.to_string())
            .bind(p.acs_system_id.to_string())
            .bind(reason.to_owned())
            .bind(to_micros(now))
            .bind(becomes.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoked(&self, job: &Job, now: OffsetDateTime) -> StoreResult<Option<Vec<Event>>> {
        let ws = job.workspace_id;
        let JobWork::Revoke(r) = &job.work else {
            return Err(wrong_kind(job, "a revoke"));
        };
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        if !Self::lease_held(&mut tx, job).await? {
            return Ok(None);
        }
        let live: Option<Option<i64>> = sqlx::query_scalar(assembled(format!(
            "SELECT deleted_at FROM access_grants WHERE workspace_id = $1 AND access_grant_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(r.access_grant_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let methods = Self::methods_of(&mut tx, ws, r.access_grant_id).await?;
        let method_live = !Self::method_deleted(&mut tx, ws, r.access_method_id).await?;
        let t = tracker::revoked(matches!(live, Some(None)), method_live, &methods, r, now);
        for (after, before) in t.methods.iter().zip(&methods) {
            if after != before {
                Self::write_method(&mut tx, after, false).await?;
            }
        }
        let events = t.events;
        Self::finish_job(&mut tx, job, now).await?;
        let appended = Self::append_events(&mut tx, ws, &events, now).await?;
        tx.commit().await?;
        Ok(Some(appended))
    }

    async fn reconcile(
        &self,
        after: Option<AccessMethodId>,
        limit: u32,
    ) -> StoreResult<Vec<ReconcileItem>> {
        let mut conn = self.pool.begin_with(D::READ).await?;
        let rows: Vec<ReconcileRow> = sqlx::query_as(SELECT_RECONCILE_PAGE.as_str())
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        let now = to_micros(keygate_domain::model::now());
        let mut out = Vec::new();
        for r in rows {
            let m: keygate_domain::grant::AccessMethod = r.method.try_into()?;
            let ends = r.grant_ends_at;
            let gone = r.method_deleted_at.is_some()
                || r.grant_deleted_at.is_some()
                || ends.is_some_and(|e| e <= now);
            let starts_at = from_micros(r.grant_starts_at)?;
            let ends_at = ends.map(from_micros).transpose()?;
            let m = Self::with_doors(&mut conn, m.workspace_id, vec![m])
                .await?
                .remove(0);
            let mut by_system: BTreeMap<AccessSystemId, Vec<DoorStatus>> = BTreeMap::new();
            for d in &m.doors {
                by_system
                    .entry(d.acs_system_id)
                    .or_default()
                    .push(d.clone());
            }
            for (system, doors) in by_system {
                let active: i64 = sqlx::query_scalar(ACTIVE_JOBS)
                    .bind(m.id.to_string())
                    .bind(system.to_string())
                    .fetch_one(&mut *conn)
                    .await?;
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

    async fn repair_item(
        &self,
        item: &ReconcileItem,
        lost: &[EntranceId],
        reason: &str,
        work: &JobWork,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let ws = item.workspace_id;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        Self::lock_grant_of(&mut tx, ws, item.access_method_id).await?;
        let active: i64 = sqlx::query_scalar(ACTIVE_JOBS)
            .bind(item.access_method_id.to_string())
            .bind(item.acs_system_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if active > 0 {
            return Ok(false);
        }
        for e in lost {
            sqlx::query("UPDATE access_method_entrances SET state = 'pending', reason = $4, updated_at = $5 WHERE workspace_id = $1 AND access_method_id = $2 AND acs_entrance_id = $3")
                .bind(ws.to_string())
                .bind(item.access_method_id.to_string())
                .bind(e.to_string())
                .bind(reason.to_owned())
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await?;
        }
        Self::insert_job(&mut tx, ws, work, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<WorkspaceId>> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let rows: Vec<ExpiredRow> = sqlx::query_as(assembled(format!(
            "SELECT workspace_id, access_grant_id FROM access_grants WHERE ends_at <= $1 AND expired_at IS NULL AND deleted_at IS NULL ORDER BY ends_at LIMIT $2{}",
            D::LOCK
        )))
        .bind(to_micros(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut touched = Vec::new();
        for r in rows {
            let ws: WorkspaceId = parse("workspace_id", &r.workspace_id)?;
            let id: AccessGrantId = parse("access_grant_id", &r.access_grant_id)?;
            sqlx::query("UPDATE access_grants SET expired_at = $3 WHERE workspace_id = $1 AND access_grant_id = $2")
                .bind(ws.to_string())
                .bind(id.to_string())
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await?;
            let (_, methods) = Self::live_grant(&mut tx, ws, id, true).await?;
            for m in &methods {
                Self::queue_revokes(&mut tx, ws, m, now).await?;
            }
            if !touched.contains(&ws) {
                touched.push(ws);
            }
        }
        tx.commit().await?;
        Ok(touched)
    }

    async fn jobs_in(&self, state: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = $1")
                .bind(state.to_owned())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn age(&self, now: OffsetDateTime) -> StoreResult<QueueAge> {
        let row: QueueAgeRow = sqlx::query_as("SELECT MIN(created_at) AS queued, MIN(CASE WHEN run_at <= $1 THEN run_at END) AS due FROM jobs WHERE state = 'queued'")
            .bind(to_micros(now))
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }
}

#[async_trait]
impl<D> JobQueue for SqlStore<D>
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
    async fn due_systems(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<DueSystem>, Error> {
        Ok(self.due_pairs(now, limit).await?)
    }

    async fn claim_jobs(&self, claim: &Claim<'_>, now: OffsetDateTime) -> Result<Claimed, Error> {
        Ok(self.claim(claim, now).await?)
    }

    async fn renew_leases(&self, lease_token: &str, until: OffsetDateTime) -> Result<u64, Error> {
        Ok(self.renew(lease_token, until).await?)
    }

    async fn bury_job(&self, job: &Job, reason: &str, now: OffsetDateTime) -> Result<bool, Error> {
        Ok(self.bury(job, reason, now).await?)
    }

    async fn lease_valid(&self, job: &Job, now: OffsetDateTime) -> Result<bool, Error> {
        Ok(self.valid(job, now).await?)
    }

    async fn complete_provision(
        &self,
        job: &Job,
        result: &ProvisionResult,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.provisioned(job, result, now).await?)
    }

    async fn reschedule_job(
        &self,
        job: &Job,
        run_at: OffsetDateTime,
        error: &str,
        refund: bool,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.reschedule(job, run_at, error, refund, now).await?)
    }

    async fn complete_encode(
        &self,
        job: &Job,
        outcome: &Result<EncodedCard, AttemptError>,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.encoded(job, outcome, now).await?)
    }

    async fn mark_unknown(
        &self,
        job: &Job,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.pending_doors(job, reason, "unknown", now).await?)
    }

    async fn note_pending(
        &self,
        job: &Job,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.pending_doors(job, reason, "pending", now).await?)
    }

    async fn complete_unlock(
        &self,
        job: &Job,
        outcome: &Result<(), AttemptError>,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.unlocked(job, outcome, now).await?)
    }

    async fn complete_revoke(
        &self,
        job: &Job,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.revoked(job, now).await?)
    }

    async fn reconcile_page(
        &self,
        after: Option<AccessMethodId>,
        limit: u32,
    ) -> Result<Vec<ReconcileItem>, Error> {
        Ok(self.reconcile(after, limit).await?)
    }

    async fn repair(
        &self,
        item: &ReconcileItem,
        lost: &[EntranceId],
        reason: &str,
        work: &JobWork,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.repair_item(item, lost, reason, work, now).await?)
    }

    async fn expire_grants(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>, Error> {
        Ok(self.expire(now, limit).await?)
    }

    async fn count_jobs(&self, state: &str) -> Result<i64, Error> {
        Ok(self.jobs_in(state).await?)
    }

    async fn queue_age(&self, now: OffsetDateTime) -> Result<QueueAge, Error> {
        Ok(self.age(now).await?)
    }
}
