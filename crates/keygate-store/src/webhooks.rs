//! Webhooks and their deliveries.
//!
//! Lock order, on PostgreSQL: the workspace row (a capped create), a webhook row before any of
//! its delivery rows, then the event counter. Every transaction here that takes more than one follows it, so none can deadlock.

use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::events::{Event, WEBHOOK_DISABLED};
use keygate_domain::ids::{EventId, WebhookId, WorkspaceId};
use keygate_domain::model::truncate_to_micros;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::webhook::{AttemptOutcome, ClaimedDelivery, NewWebhook, Webhook};
use keygate_domain::{Error, ErrorReason, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::{Idempotency, WebhookCursor, WebhookDeliveryRecord, WebhookStore};
use crate::util::{fetch_limit, from_micros, into_page, parse, to_micros};

/// The columns of [`WebhookRow`].
const WEBHOOK_COLS: &str = "webhook_id, workspace_id, url, event_types, is_enabled, disabled_reason, created_at, last_delivery_at, last_success_at, consecutive_failures";

static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2")
});
static SELECT_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND webhook_id > $2 ORDER BY webhook_id LIMIT $3"
    )
});

#[derive(sqlx::FromRow)]
struct WebhookRow {
    webhook_id: String,
    workspace_id: String,
    url: String,
    event_types: String,
    is_enabled: bool,
    disabled_reason: Option<String>,
    created_at: i64,
    last_delivery_at: Option<i64>,
    last_success_at: Option<i64>,
    consecutive_failures: i32,
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    workspace_id: String,
    webhook_id: String,
    cursor_seq: i64,
    event_types: String,
}

/// A leased delivery with its webhook and its event.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    workspace_id: String,
    webhook_id: String,
    event_seq: i64,
    event_id: String,
    lease_token: String,
    attempts: i32,
    url: String,
    secret: String,
    event_type: String,
    description: String,
    occurred_at: i64,
    event_created_at: i64,
    access_grant_id: Option<String>,
    access_method_id: Option<String>,
    acs_system_id: Option<String>,
    acs_entrance_id: Option<String>,
    user_identity_id: Option<String>,
    instant_key_id: Option<String>,
    action_attempt_id: Option<String>,
    event_webhook_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRecordRow {
    event_seq: i64,
    event_id: String,
    status: String,
    attempts: i32,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
}

fn types_of(s: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        message: format!("stored event_types do not parse: {e}"),
        source: Some(Box::new(e)),
    })
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn opt_id<T: std::str::FromStr>(col: &str, s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| parse(col, &s)).transpose()
}

impl TryFrom<WebhookRow> for Webhook {
    type Error = StoreError;

    fn try_from(r: WebhookRow) -> StoreResult<Self> {
        Ok(Webhook {
            id: parse("webhook_id", &r.webhook_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            url: r.url,
            event_types: types_of(&r.event_types)?,
            is_enabled: r.is_enabled,
            disabled_reason: r.disabled_reason,
            created_at: from_micros(r.created_at)?,
            last_delivery_at: r.last_delivery_at.map(from_micros).transpose()?,
            last_success_at: r.last_success_at.map(from_micros).transpose()?,
            consecutive_failures: count(r.consecutive_failures),
        })
    }
}

impl TryFrom<CursorRow> for WebhookCursor {
    type Error = StoreError;

    fn try_from(r: CursorRow) -> StoreResult<Self> {
        Ok(WebhookCursor {
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            webhook_id: parse("webhook_id", &r.webhook_id)?,
            cursor_seq: r.cursor_seq,
            event_types: types_of(&r.event_types)?,
        })
    }
}

impl TryFrom<ClaimedRow> for ClaimedDelivery {
    type Error = StoreError;

    fn try_from(r: ClaimedRow) -> StoreResult<Self> {
        let ws: WorkspaceId = parse("workspace_id", &r.workspace_id)?;
        let event_id: EventId = parse("event_id", &r.event_id)?;
        Ok(ClaimedDelivery {
            workspace_id: ws,
            webhook_id: parse("webhook_id", &r.webhook_id)?,
            event_seq: r.event_seq,
            event_id,
            lease_token: r.lease_token,
            attempts: count(r.attempts),
            url: r.url,
            secret: r.secret,
            event: Event {
                seq: r.event_seq,
                workspace_id: ws,
                id: event_id,
                event_type: r.event_type,
                description: r.description,
                occurred_at: from_micros(r.occurred_at)?,
                created_at: from_micros(r.event_created_at)?,
                access_grant_id: opt_id("access_grant_id", r.access_grant_id)?,
                access_method_id: opt_id("access_method_id", r.access_method_id)?,
                acs_system_id: opt_id("acs_system_id", r.acs_system_id)?,
                acs_entrance_id: opt_id("acs_entrance_id", r.acs_entrance_id)?,
                user_identity_id: opt_id("user_identity_id", r.user_identity_id)?,
                instant_key_id: opt_id("instant_key_id", r.instant_key_id)?,
                action_attempt_id: opt_id("action_attempt_id", r.action_attempt_id)?,
            },
            event_webhook_id: opt_id("event_webhook_id", r.event_webhook_id)?,
        })
    }
}

impl TryFrom<DeliveryRecordRow> for WebhookDeliveryRecord {
    type Error = StoreError;

    fn try_from(r: DeliveryRecordRow) -> StoreResult<Self> {
        Ok(WebhookDeliveryRecord {
            event_seq: r.event_seq,
            event_id: parse("event_id", &r.event_id)?,
            status: r.status,
            attempts: count(r.attempts),
            next_attempt_at: from_micros(r.next_attempt_at)?,
            last_attempt_at: r.last_attempt_at.map(from_micros).transpose()?,
            last_status_code: r.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_error: r.last_error,
        })
    }
}

fn all<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> StoreResult<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
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
    Option<i32>: SqlValue<D>,
    bool: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn webhook_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: WebhookId,
    ) -> StoreResult<Webhook> {
        let row: WebhookRow = sqlx::query_as(SELECT_ONE.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Webhook, id.to_string()))?;
        row.try_into()
    }

    async fn secret_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: WebhookId,
    ) -> StoreResult<String> {
        let secret: Option<String> = sqlx::query_scalar(
            "SELECT secret FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2",
        )
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(secret.ok_or_else(|| Error::not_found(Resource::Webhook, id.to_string()))?)
    }

    /// Appends one `webhook.disabled` event, numbered like every other event: the counter
    /// row stays locked until commit, so seq order is commit order.
    async fn append_disabled(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        webhook: WebhookId,
        now: OffsetDateTime,
    ) -> StoreResult<Event> {
        let seq: i64 = sqlx::query_scalar("INSERT INTO event_counters (workspace_id, last_seq) VALUES ($1, 1) ON CONFLICT (workspace_id) DO UPDATE SET last_seq = event_counters.last_seq + 1 RETURNING last_seq")
            .bind(ws.to_string())
            .fetch_one(&mut *conn)
            .await?;
        let event = Event {
            seq,
            workspace_id: ws,
            id: EventId::new(),
            event_type: WEBHOOK_DISABLED.name.to_owned(),
            description: WEBHOOK_DISABLED.description.to_owned(),
            occurred_at: now,
            created_at: now,
            access_grant_id: None,
            access_method_id: None,
            acs_system_id: None,
            acs_entrance_id: None,
            user_identity_id: None,
            instant_key_id: None,
            action_attempt_id: None,
        };
        sqlx::query("INSERT INTO events (seq, workspace_id, event_id, event_type, description, occurred_at, created_at, webhook_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(seq)
            .bind(ws.to_string())
            .bind(event.id.to_string())
            .bind(event.event_type.clone())
            .bind(event.description.clone())
            .bind(to_micros(now))
            .bind(to_micros(now))
            .bind(webhook.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(event)
    }

    async fn create_hook(
        &self,
        ws: WorkspaceId,
        new: &NewWebhook,
        idem: Option<&Idempotency>,
    ) -> StoreResult<(Webhook, String)> {
        let now = truncate_to_micros(new.created_at);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let id = new.id.to_string();
        if let Some(first) = Self::claim_idempotency(&mut tx, ws, idem, &id, now).await? {
            let first: WebhookId = parse("webhook_id", &first)?;
            let w = Self::webhook_in(&mut tx, ws, first).await?;
            let secret = Self::secret_in(&mut tx, ws, first).await?;
            return Ok((w, secret));
        }
        if new.workspace_cap > 0 {
            // The workspace row first, so concurrent creates in one workspace count in turn.
            sqlx::query(assembled(format!(
                "SELECT 1 FROM workspaces WHERE workspace_id = $1{}",
                D::LOCK
            )))
            .bind(ws.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let have: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE workspace_id = $1")
                    .bind(ws.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
            if have >= i64::from(new.workspace_cap) {
                return Err(Error::LimitReached {
                    reason: ErrorReason::WebhookLimitReached,
                    message: format!(
                        "this workspace has {have} webhooks, the most it may have ({}); delete one first",
                        new.workspace_cap
                    ),
                    retry_after: None,
                }
                .into());
            }
        }
        // Events committed before this point are not sent to it.
        let cursor: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(last_seq), 0) FROM event_counters WHERE workspace_id = $1",
        )
        .bind(ws.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let types = serde_json::to_string(&new.event_types).map_err(|e| Error::Internal {
            message: format!("serialize: {e}"),
        })?;
        sqlx::query("INSERT INTO webhooks (webhook_id, workspace_id, url, event_types, secret, is_enabled, disabled_reason, created_at, consecutive_failures, cursor_seq) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, 0, $8)")
            .bind(id)
            .bind(ws.to_string())
            .bind(new.url.clone())
            .bind(types)
            .bind(new.secret.clone())
            .bind(true)
            .bind(to_micros(now))
            .bind(cursor)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            Webhook {
                id: new.id,
                workspace_id: ws,
                url: new.url.clone(),
                event_types: new.event_types.clone(),
                is_enabled: true,
                disabled_reason: None,
                created_at: now,
                last_delivery_at: None,
                last_success_at: None,
                consecutive_failures: 0,
            },
            new.secret.clone(),
        ))
    }

    async fn list_hooks(&self, ws: WorkspaceId, page: &PageRequest) -> StoreResult<Page<Webhook>> {
        let rows: Vec<WebhookRow> = sqlx::query_as(SELECT_PAGE.as_str())
            .bind(ws.to_string())
            .bind(page.after.clone().unwrap_or_default())
            .bind(fetch_limit(page.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(into_page(all(rows)?, page.limit, |w| w.id.to_string()))
    }

    async fn delete_hook(&self, ws: WorkspaceId, id: WebhookId) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // The webhook row first (lock order), then its deliveries, then the row.
        let found: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT 1 FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2{}",
            D::LOCK
        )))
        .bind(ws.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Err(Error::not_found(Resource::Webhook, id.to_string()).into());
        }
        sqlx::query("DELETE FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2")
            .bind(ws.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    async fn update_hook_types(
        &self,
        ws: WorkspaceId,
        id: WebhookId,
        event_types: &[String],
    ) -> StoreResult<Webhook> {
        let types = serde_json::to_string(event_types).map_err(|e| Error::Internal {
            message: format!("serialize: {e}"),
        })?;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let done = sqlx::query(
            "UPDATE webhooks SET event_types = $3 WHERE workspace_id = $1 AND webhook_id = $2",
        )
        .bind(ws.to_string())
        .bind(id.to_string())
        .bind(types)
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&done) == 0 {
            return Err(Error::not_found(Resource::Webhook, id.to_string()).into());
        }
        let w = Self::webhook_in(&mut tx, ws, id).await?;
        tx.commit().await?;
        Ok(w)
    }

    async fn hooks_behind(&self, limit: u32) -> StoreResult<Vec<WebhookCursor>> {
        let rows: Vec<CursorRow> = sqlx::query_as("SELECT w.workspace_id, w.webhook_id, w.cursor_seq, w.event_types FROM webhooks w JOIN event_counters c ON c.workspace_id = w.workspace_id WHERE w.is_enabled = $1 AND c.last_seq > w.cursor_seq ORDER BY w.workspace_id, w.webhook_id LIMIT $2")
            .bind(true)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        all(rows)
    }

    async fn fan_out(
        &self,
        c: &WebhookCursor,
        to: i64,
        events: &[(i64, EventId)],
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let now = to_micros(now);
        let (ws, id) = (c.workspace_id.to_string(), c.webhook_id.to_string());
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let row: Option<(i64, bool, String)> = sqlx::query_as(assembled(format!(
            "SELECT cursor_seq, is_enabled, event_types FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2{}",
            D::LOCK
        )))
        .bind(ws.clone())
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((at, enabled, types)) = row else {
            return Ok(false);
        };
        // Event types changed since the batch was chosen: the caller reads again.
        if at != c.cursor_seq || !enabled || to <= at || types_of(&types)? != c.event_types {
            return Ok(false);
        }
        for (seq, event_id) in events {
            sqlx::query("INSERT INTO webhook_deliveries (workspace_id, webhook_id, event_seq, event_id, status, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5) ON CONFLICT (workspace_id, webhook_id, event_seq) DO NOTHING")
                .bind(ws.clone())
                .bind(id.clone())
                .bind(*seq)
                .bind(event_id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE webhooks SET cursor_seq = $3 WHERE workspace_id = $1 AND webhook_id = $2",
        )
        .bind(ws)
        .bind(id)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn due_hook_workspaces(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<(WorkspaceId, u32)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT d.workspace_id, COUNT(*) AS due FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until < $1) AND w.is_enabled = $2 GROUP BY d.workspace_id ORDER BY MIN(d.next_attempt_at) LIMIT $3")
            .bind(to_micros(now))
            .bind(true)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(ws, due)| {
                Ok((
                    parse("workspace_id", &ws)?,
                    u32::try_from(due).unwrap_or(u32::MAX),
                ))
            })
            .collect()
    }

    async fn claim_hook_deliveries(
        &self,
        ws: Option<WorkspaceId>,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let token = uuid::Uuid::now_v7().to_string();
        let until = now + lease;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        // Due deliveries of enabled webhooks, not leased (or whose lease ran out); on
        // PostgreSQL, rows another dispatcher is claiming are skipped, never waited for.
        // One workspace's (when asked; the dispatcher takes workspaces in turns), or any.
        let only = if ws.is_some() {
            " AND d.workspace_id = $6"
        } else {
            ""
        };
        let claim = format!(
            "UPDATE webhook_deliveries SET lease_token = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 WHERE (workspace_id, webhook_id, event_seq) IN (SELECT d.workspace_id, d.webhook_id, d.event_seq FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id WHERE d.status = 'pending' AND d.next_attempt_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3) AND w.is_enabled = $5{only} ORDER BY d.next_attempt_at LIMIT $4{})",
            D::skip_locked_of("d")
        );
        let mut query = sqlx::query(assembled(claim))
            .bind(token.clone())
            .bind(to_micros(until))
            .bind(to_micros(now))
            .bind(i64::from(limit))
            .bind(true);
        if let Some(ws) = ws {
            query = query.bind(ws.to_string());
        }
        let claimed = query.execute(&mut *tx).await?;
        if D::rows_affected(&claimed) == 0 {
            return Ok(Vec::new());
        }
        // An event purged (past its retention) before its delivery was made cannot be
        // sent any more: that delivery fails instead of being leased again and again.
        sqlx::query("UPDATE webhook_deliveries SET status = 'failed', last_error = 'the event was purged before it could be delivered', lease_token = NULL, lease_until = NULL, updated_at = $2 WHERE lease_token = $1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = webhook_deliveries.workspace_id AND e.seq = webhook_deliveries.event_seq)")
            .bind(token.clone())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as("SELECT d.workspace_id, d.webhook_id, d.event_seq, d.event_id, d.lease_token, d.attempts, w.url, w.secret, e.event_type, e.description, e.occurred_at, e.created_at AS event_created_at, e.access_grant_id, e.access_method_id, e.acs_system_id, e.acs_entrance_id, e.user_identity_id, e.instant_key_id, e.action_attempt_id, e.webhook_id AS event_webhook_id FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id JOIN events e ON e.workspace_id = d.workspace_id AND e.seq = d.event_seq WHERE d.lease_token = $1 ORDER BY d.next_attempt_at")
            .bind(token)
            .fetch_all(&mut *tx)
            .await?;
        let out = all(rows)?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_attempt(
        &self,
        d: &ClaimedDelivery,
        o: &AttemptOutcome,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Vec<Event>>> {
        let now = truncate_to_micros(now);
        let (ws, id) = (d.workspace_id.to_string(), d.webhook_id.to_string());
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let w: Option<(bool, Option<i64>)> = sqlx::query_as(assembled(format!(
            "SELECT is_enabled, failing_since FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2{}",
            D::LOCK
        )))
        .bind(ws.clone())
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((enabled, failing_since)) = w else {
            return Ok(None);
        };
        let held: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT 1 FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3 AND lease_token = $4 AND status = 'pending'{}",
            D::LOCK
        )))
        .bind(ws.clone())
        .bind(id.clone())
        .bind(d.event_seq)
        .bind(d.lease_token.clone())
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(None);
        }
        let code = o.status_code.map(i32::from);
        let mut events = Vec::new();
        if o.succeeded {
            sqlx::query("UPDATE webhook_deliveries SET status = 'succeeded', last_attempt_at = $4, last_status_code = $5, last_error = NULL, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3")
                .bind(ws.clone())
                .bind(id.clone())
                .bind(d.event_seq)
                .bind(to_micros(now))
                .bind(code)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE webhooks SET last_delivery_at = $3, last_success_at = $3, failing_since = NULL, consecutive_failures = 0 WHERE workspace_id = $1 AND webhook_id = $2")
                .bind(ws)
                .bind(id)
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await?;
        } else {
            let failing_since = failing_since.map(from_micros).transpose()?.unwrap_or(now);
            let (status, next) = match o.retry_at {
                Some(t) => ("pending", truncate_to_micros(t)),
                None => ("failed", now),
            };
            sqlx::query("UPDATE webhook_deliveries SET status = $4, next_attempt_at = $5, last_attempt_at = $6, last_status_code = $7, last_error = $8, lease_token = NULL, lease_until = NULL, updated_at = $6 WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3")
                .bind(ws.clone())
                .bind(id.clone())
                .bind(d.event_seq)
                .bind(status.to_owned())
                .bind(to_micros(next))
                .bind(to_micros(now))
                .bind(code)
                .bind(o.error.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE webhooks SET last_delivery_at = $3, failing_since = $4, consecutive_failures = consecutive_failures + 1 WHERE workspace_id = $1 AND webhook_id = $2")
                .bind(ws.clone())
                .bind(id.clone())
                .bind(to_micros(now))
                .bind(to_micros(failing_since))
                .execute(&mut *tx)
                .await?;
            if enabled && now - failing_since >= o.disable_after {
                sqlx::query("UPDATE webhooks SET is_enabled = $3, disabled_reason = $4 WHERE workspace_id = $1 AND webhook_id = $2")
                    .bind(ws.clone())
                    .bind(id.clone())
                    .bind(false)
                    .bind(o.disabled_reason.clone())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE webhook_deliveries SET status = 'failed', last_error = COALESCE(last_error, 'the webhook was disabled before this event was sent'), lease_token = NULL, lease_until = NULL, updated_at = $3 WHERE workspace_id = $1 AND webhook_id = $2 AND status = 'pending'")
                    .bind(ws)
                    .bind(id)
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
                events
                    .push(Self::append_disabled(&mut tx, d.workspace_id, d.webhook_id, now).await?);
            }
        }
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn next_hook_delivery_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT MIN(CASE WHEN d.lease_until IS NOT NULL AND d.lease_until > d.next_attempt_at THEN d.lease_until ELSE d.next_attempt_at END) FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id WHERE d.status = 'pending' AND w.is_enabled = $1")
            .bind(true)
            .fetch_one(&self.pool)
            .await?;
        at.map(from_micros).transpose()
    }

    async fn webhook_of_event(&self, ws: WorkspaceId, seq: i64) -> StoreResult<Option<WebhookId>> {
        let id: Option<Option<String>> = sqlx::query_scalar(
            "SELECT webhook_id FROM events WHERE workspace_id = $1 AND seq = $2",
        )
        .bind(ws.to_string())
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        opt_id("webhook_id", id.flatten())
    }

    async fn hook_deliveries(
        &self,
        ws: WorkspaceId,
        id: WebhookId,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDeliveryRecord>> {
        let rows: Vec<DeliveryRecordRow> = sqlx::query_as("SELECT event_seq, event_id, status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 ORDER BY event_seq LIMIT $3")
            .bind(ws.to_string())
            .bind(id.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        all(rows)
    }
}

#[async_trait]
impl<D> WebhookStore for SqlStore<D>
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
    Option<i32>: SqlValue<D>,
    bool: SqlValue<D>,
    Vec<u8>: SqlValue<D>,
{
    async fn create_webhook(
        &self,
        ws: WorkspaceId,
        new: &NewWebhook,
        idem: Option<&Idempotency>,
    ) -> Result<(Webhook, String), Error> {
        Ok(self.create_hook(ws, new, idem).await?)
    }

    async fn get_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<Webhook, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::webhook_in(&mut conn, ws, id).await?)
    }

    async fn webhook_secret(&self, ws: WorkspaceId, id: WebhookId) -> Result<String, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::secret_in(&mut conn, ws, id).await?)
    }

    async fn list_webhooks(
        &self,
        ws: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<Webhook>, Error> {
        Ok(self.list_hooks(ws, page).await?)
    }

    async fn update_webhook_event_types(
        &self,
        ws: WorkspaceId,
        id: WebhookId,
        event_types: &[String],
    ) -> Result<Webhook, Error> {
        Ok(self.update_hook_types(ws, id, event_types).await?)
    }

    async fn delete_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<(), Error> {
        Ok(self.delete_hook(ws, id).await?)
    }

    async fn webhooks_behind(&self, limit: u32) -> Result<Vec<WebhookCursor>, Error> {
        Ok(self.hooks_behind(limit).await?)
    }

    async fn fan_out_webhook(
        &self,
        c: &WebhookCursor,
        to: i64,
        events: &[(i64, EventId)],
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        Ok(self.fan_out(c, to, events, now).await?)
    }

    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        Ok(self.claim_hook_deliveries(None, limit, lease, now).await?)
    }

    async fn due_delivery_workspaces(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(WorkspaceId, u32)>, Error> {
        Ok(self.due_hook_workspaces(now, limit).await?)
    }

    async fn claim_workspace_deliveries(
        &self,
        workspace: WorkspaceId,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        Ok(self
            .claim_hook_deliveries(Some(workspace), limit, lease, now)
            .await?)
    }

    async fn record_delivery_attempt(
        &self,
        d: &ClaimedDelivery,
        o: &AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.record_attempt(d, o, now).await?)
    }

    async fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>, Error> {
        Ok(self.next_hook_delivery_due().await?)
    }

    async fn event_webhook_id(
        &self,
        ws: WorkspaceId,
        seq: i64,
    ) -> Result<Option<WebhookId>, Error> {
        Ok(self.webhook_of_event(ws, seq).await?)
    }

    async fn list_webhook_deliveries(
        &self,
        ws: WorkspaceId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDeliveryRecord>, Error> {
        Ok(self.hook_deliveries(ws, id, limit).await?)
    }
}
