//! Statements that several stores run inside their own transactions: the idempotency claim and
//! the event append.

use std::sync::LazyLock;

use keygate_domain::events::{Event, NewEvent};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::{Error, ErrorReason};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue};
use crate::error::StoreResult;
use crate::traits::Idempotency;
use crate::util::to_micros;

pub(crate) const EVENT_COLS: &str = "seq, workspace_id, event_id, event_type, description, occurred_at, created_at, access_grant_id, access_method_id, acs_system_id, acs_entrance_id, user_identity_id, instant_key_id, action_attempt_id";

static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    )
});

/// The condition of a due job of alias `j` at now `$n`: queued and due, or running with an
/// expired lease (its worker died or stalled).
pub(crate) fn due(j: &str, n: &str) -> String {
    format!(
        "(({j}.state = 'queued' AND {j}.run_at <= {n}) OR ({j}.state = 'running' AND {j}.lease_until < {n}))"
    )
}

/// Leases up to `$7` due jobs of access system `$6` of workspace `$5` to owner `$1` under the
/// fencing token `$2` until `$3` (now is `$4`), oldest first, and returns them. A job waits
/// while another job of the same credential (subject, system) holds a live lease, so an update
/// never races the call it replaces. On PostgreSQL, rows another worker is claiming are
/// skipped, never waited for.
/// The claim of one (workspace, access system): unlocks first (they have a deadline and a
/// person waiting at the door), then revocations (access being taken away), then the rest,
/// each oldest first.
pub(crate) fn job_claim<D: Dialect>() -> String {
    format!(
        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_token = $2, lease_until = $3, attempts = attempts + 1, updated_at = $4 WHERE job_id IN (SELECT job_id FROM jobs j WHERE j.workspace_id = $5 AND j.acs_system_id = $6 AND {} AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.subject_id = j.subject_id AND r.acs_system_id = j.acs_system_id AND r.state = 'running' AND r.lease_until >= $4 AND r.job_id <> j.job_id) ORDER BY CASE j.kind WHEN 'unlock' THEN 0 WHEN 'revoke' THEN 1 ELSE 2 END, j.run_at LIMIT $7{}) RETURNING job_id, workspace_id, payload, attempts, trace_context, lease_token",
        due("j", "$4"),
        D::SKIP_LOCKED
    )
}

/// A recorded request, as `idempotency_records` holds it.
#[derive(sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    operation: String,
    request_sha256: Vec<u8>,
    resource_id: String,
}

impl IdempotencyRow {
    pub(crate) const SELECT: &str = "SELECT operation, request_sha256, resource_id FROM idempotency_records WHERE workspace_id = $1 AND request_id = $2";

    /// The resource the recorded request made, when `idem` is that same request; the same key
    /// with another body is ALREADY_EXISTS.
    pub(crate) fn first_result(self, idem: &Idempotency) -> Result<String, Error> {
        if self.operation != idem.operation || self.request_sha256 != idem.request_sha256 {
            return Err(Error::AlreadyExists {
                reason: ErrorReason::IdempotencyKeyReused,
                message: format!(
                    "request_id {:?} was already used with a different request",
                    idem.request_id
                ),
            });
        }
        Ok(self.resource_id)
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
    Vec<u8>: SqlValue<D>,
{
    /// Claims an idempotency key inside the caller's transaction. `Ok(None)`: claimed, go on
    /// and create `resource_id`. `Ok(Some(first))`: the same request again, and `first` is what
    /// the first call created. The same key with another body is ALREADY_EXISTS.
    pub(crate) async fn claim_idempotency(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        idem: Option<&Idempotency>,
        resource_id: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<String>> {
        let Some(idem) = idem else { return Ok(None) };
        let claimed = sqlx::query("INSERT INTO idempotency_records (workspace_id, request_id, operation, request_sha256, resource_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, request_id) DO NOTHING")
            .bind(ws.to_string())
            .bind(idem.request_id.clone())
            .bind(idem.operation.to_owned())
            .bind(idem.request_sha256.clone())
            .bind(resource_id.to_owned())
            .bind(to_micros(now))
            .execute(&mut *conn)
            .await?;
        let claimed = D::rows_affected(&claimed) == 1;
        if claimed {
            return Ok(None);
        }
        let prior: IdempotencyRow = sqlx::query_as(IdempotencyRow::SELECT)
            .bind(ws.to_string())
            .bind(idem.request_id.clone())
            .fetch_one(&mut *conn)
            .await?;
        Ok(Some(prior.first_result(idem)?))
    }

    /// Appends events at the end of a transaction. The counter row stays locked until
    /// commit, so sequence numbers follow commit order within a workspace.
    pub(crate) async fn append_events(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        events: &[NewEvent],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let last: i64 = sqlx::query_scalar("INSERT INTO event_counters (workspace_id, last_seq) VALUES ($1, $2) ON CONFLICT (workspace_id) DO UPDATE SET last_seq = event_counters.last_seq + $2 RETURNING last_seq")
            .bind(ws.to_string())
            .bind(n)
            .fetch_one(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let seq = last - n + 1 + i64::try_from(i).unwrap_or(0);
            let event = Event {
                seq,
                workspace_id: ws,
                id: e.id,
                event_type: e.event_type.name.to_owned(),
                description: e.event_type.description.to_owned(),
                occurred_at: keygate_domain::model::truncate_to_micros(e.occurred_at),
                created_at: now,
                access_grant_id: e.access_grant_id,
                access_method_id: e.access_method_id,
                acs_system_id: e.acs_system_id,
                acs_entrance_id: e.acs_entrance_id,
                user_identity_id: e.user_identity_id,
                instant_key_id: e.instant_key_id,
                action_attempt_id: e.action_attempt_id,
            };
            sqlx::query(INSERT_EVENT.as_str())
                .bind(seq)
                .bind(ws.to_string())
                .bind(event.id.to_string())
                .bind(event.event_type.clone())
                .bind(event.description.clone())
                .bind(to_micros(event.occurred_at))
                .bind(to_micros(now))
                .bind(event.access_grant_id.map(|i| i.to_string()))
                .bind(event.access_method_id.map(|i| i.to_string()))
                .bind(event.acs_system_id.map(|i| i.to_string()))
                .bind(event.acs_entrance_id.map(|i| i.to_string()))
                .bind(event.user_identity_id.map(|i| i.to_string()))
                .bind(event.instant_key_id.map(|i| i.to_string()))
                .bind(event.action_attempt_id.map(|i| i.to_string()))
                .execute(&mut *conn)
                .await?;
            out.push(event);
        }
        Ok(out)
    }
}
