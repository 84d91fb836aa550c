//! Instant Key deliveries (SMS and email). A delivery row is its own queue entry:
//! `DeliverInstantKey` inserts it due at once, a sender leases it, makes one attempt and records
//! the outcome under that lease.
//!
//! Lock order, on PostgreSQL: a delivery row, then the event counter. Nothing else here takes
//! more than one, so none can deadlock.

use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::delivery::{
    Channel, Delivery, DeliveryClaim, NewDelivery, Outcome, SentVia, Status,
};
use keygate_domain::events::{
    Event, EventType, INSTANT_KEY_DELIVERED, INSTANT_KEY_DELIVERY_FAILED,
};
use keygate_domain::ids::{DeliveryId, InstantKeyId, WorkspaceId};
use keygate_domain::model::truncate_to_micros;
use keygate_domain::{Error, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::{DeliveryStore, Idempotency};
use crate::util::{from_micros, parse, to_micros};

/// The columns of [`DeliveryRow`].
const DELIVERY_COLS: &str = "workspace_id, delivery_id, instant_key_id, channel, recipient, status, sent_via, attempts, last_error, created_at, sent_at";

static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {DELIVERY_COLS} FROM instant_key_deliveries WHERE workspace_id = $1 AND delivery_id = $2"
    )
});
static SELECT_RECENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {DELIVERY_COLS} FROM instant_key_deliveries WHERE ($1 = '' OR workspace_id = $1) AND (NOT $2 OR sent_via = 'outbox') ORDER BY created_at DESC, delivery_id DESC LIMIT $3"
    )
});

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    workspace_id: String,
    delivery_id: String,
    instant_key_id: String,
    channel: String,
    recipient: String,
    status: String,
    sent_via: Option<String>,
    attempts: i32,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
}

/// What a claim returns of each delivery it leased.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    workspace_id: String,
    delivery_id: String,
    instant_key_id: String,
    channel: String,
    recipient: String,
    attempts: i32,
    lease_token: String,
    trace_context: Option<String>,
}

/// The key a delivery event is about: its person and grant.
#[derive(sqlx::FromRow)]
struct KeyOwnerRow {
    user_identity_id: String,
    access_grant_id: Option<String>,
}

fn stored<T>(what: &str, s: &str, f: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
    f(s).ok_or_else(|| StoreError::corrupt(format!("stored {what} {s:?} is not known")))
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> StoreResult<Self> {
        Ok(Delivery {
            id: parse("delivery_id", &r.delivery_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            instant_key_id: parse("instant_key_id", &r.instant_key_id)?,
            channel: stored("channel", &r.channel, Channel::parse)?,
            to: r.recipient,
            status: stored("status", &r.status, Status::parse)?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_error: r.last_error,
            created_at: from_micros(r.created_at)?,
            sent_at: r.sent_at.map(from_micros).transpose()?,
            sent_via: r
                .sent_via
                .map(|s| stored("sent_via", &s, SentVia::parse))
                .transpose()?,
        })
    }
}

impl TryFrom<ClaimRow> for DeliveryClaim {
    type Error = StoreError;

    fn try_from(r: ClaimRow) -> StoreResult<Self> {
        Ok(DeliveryClaim {
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            delivery_id: parse("delivery_id", &r.delivery_id)?,
            instant_key_id: parse("instant_key_id", &r.instant_key_id)?,
            channel: stored("channel", &r.channel, Channel::parse)?,
            to: r.recipient,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            lease_token: r.lease_token,
            trace_context: r.trace_context,
        })
    }
}

fn deliveries(rows: Vec<DeliveryRow>) -> StoreResult<Vec<Delivery>> {
    rows.into_iter().map(Delivery::try_from).collect()
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
    async fn delivery_in(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        id: DeliveryId,
    ) -> StoreResult<Delivery> {
        let row: DeliveryRow = sqlx::query_as(SELECT_ONE.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::corrupt(format!("delivery {id} is not in the store")))?;
        row.try_into()
    }

    /// Appends `instant_key.delivered` or `instant_key.delivery_failed` for a delivery of
    /// key `key`, numbered like every other event, with the key, its person and grant,
    /// and the delivery recorded on the event row.
    async fn append_delivery_event(
        conn: &mut D::Connection,
        ws: WorkspaceId,
        key: InstantKeyId,
        delivery: DeliveryId,
        event_type: EventType,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Event>> {
        let owner: KeyOwnerRow = sqlx::query_as("SELECT user_identity_id, access_grant_id FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2")
            .bind(ws.to_string())
            .bind(key.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found(Resource::InstantKey, key.to_string()))?;
        let grant = match owner.access_grant_id {
            Some(g) => Some(parse("access_grant_id", &g)?),
            None => None,
        };
        let e = keygate_domain::applied::instant_key_delivery(
            event_type,
            key,
            parse("user_identity_id", &owner.user_identity_id)?,
            grant,
            now,
        );
        let events = Self::append_events(conn, ws, &[e], now).await?;
        // The Event struct has no delivery_id yet: the column is written here.
        for ev in &events {
            sqlx::query("UPDATE events SET delivery_id = $3 WHERE workspace_id = $1 AND seq = $2")
                .bind(ws.to_string())
                .bind(ev.seq)
                .bind(delivery.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(events)
    }

    async fn create_delivery(
        &self,
        ws: WorkspaceId,
        new: &NewDelivery,
        idem: Option<&Idempotency>,
    ) -> StoreResult<Delivery> {
        let now = truncate_to_micros(new.created_at);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let id = new.id.to_string();
        if let Some(first) = Self::claim_idempotency(&mut tx, ws, idem, &id, now).await? {
            return Self::delivery_in(&mut tx, ws, parse("delivery_id", &first)?).await;
        }
        let known: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2",
        )
        .bind(ws.to_string())
        .bind(new.instant_key_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_none() {
            return Err(
                Error::not_found(Resource::InstantKey, new.instant_key_id.to_string()).into(),
            );
        }
        sqlx::query("INSERT INTO instant_key_deliveries (workspace_id, delivery_id, instant_key_id, channel, recipient, status, attempts, next_attempt_at, trace_context, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6, $6)")
            .bind(ws.to_string())
            .bind(id)
            .bind(new.instant_key_id.to_string())
            .bind(new.channel.as_str().to_owned())
            .bind(new.to.clone())
            .bind(to_micros(now))
            .bind(keygate_telemetry::propagation::current_traceparent())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Delivery {
            id: new.id,
            workspace_id: ws,
            instant_key_id: new.instant_key_id,
            channel: new.channel,
            to: new.to.clone(),
            status: Status::Pending,
            attempts: 0,
            last_error: None,
            created_at: now,
            sent_at: None,
            sent_via: None,
        })
    }

    async fn deliveries_of_keys(
        &self,
        ws: WorkspaceId,
        keys: &[InstantKeyId],
        per_key: u32,
    ) -> StoreResult<Vec<Delivery>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list = keys
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM (SELECT {DELIVERY_COLS}, ROW_NUMBER() OVER (PARTITION BY instant_key_id ORDER BY created_at DESC, delivery_id DESC) AS rn FROM instant_key_deliveries WHERE workspace_id = $1 AND {}) d WHERE rn <= $3 ORDER BY instant_key_id, created_at DESC, delivery_id DESC",
            D::in_list("instant_key_id", "$2")
        );
        let rows: Vec<DeliveryRow> = sqlx::query_as(assembled(sql))
            .bind(ws.to_string())
            .bind(list)
            .bind(i64::from(per_key))
            .fetch_all(&self.pool)
            .await?;
        deliveries(rows)
    }

    async fn recent_deliveries(
        &self,
        ws: Option<WorkspaceId>,
        outbox_only: bool,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(SELECT_RECENT.as_str())
            .bind(ws.map(|w| w.to_string()).unwrap_or_default())
            .bind(outbox_only)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        deliveries(rows)
    }

    async fn claim_deliveries(
        &self,
        sms: bool,
        email: bool,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<DeliveryClaim>> {
        if !(sms || email) || limit == 0 {
            return Ok(Vec::new());
        }
        let token = uuid::Uuid::now_v7().to_string();
        let until = now + lease;
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let sql = format!(
            "UPDATE instant_key_deliveries SET lease_token = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 WHERE (workspace_id, delivery_id) IN (SELECT workspace_id, delivery_id FROM instant_key_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) AND ((channel = 'sms' AND $5) OR (channel = 'email' AND $6)) ORDER BY next_attempt_at LIMIT $4{}) RETURNING workspace_id, delivery_id, instant_key_id, channel, recipient, attempts, lease_token, trace_context",
            D::SKIP_LOCKED
        );
        let rows: Vec<ClaimRow> = sqlx::query_as(assembled(sql))
            .bind(token)
            .bind(to_micros(until))
            .bind(to_micros(now))
            .bind(i64::from(limit))
            .bind(sms)
            .bind(email)
            .fetch_all(&mut *tx)
            .await?;
        let out = rows
            .into_iter()
            .map(DeliveryClaim::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_delivery(
        &self,
        c: &DeliveryClaim,
        o: &Outcome,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Vec<Event>>> {
        let now = truncate_to_micros(now);
        let (ws, id) = (c.workspace_id.to_string(), c.delivery_id.to_string());
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let held: Option<i32> = sqlx::query_scalar(assembled(format!(
            "SELECT 1 FROM instant_key_deliveries WHERE workspace_id = $1 AND delivery_id = $2 AND lease_token = $3 AND status = 'pending'{}",
            D::LOCK
        )))
        .bind(ws.clone())
        .bind(id.clone())
        .bind(c.lease_token.clone())
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(None);
        }
        let events = match o {
            Outcome::Sent(via) => {
                // last_error keeps the last failure, if an earlier attempt had one.
                sqlx::query("UPDATE instant_key_deliveries SET status = 'sent', sent_via = $3, sent_at = $4, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND delivery_id = $2")
                    .bind(ws)
                    .bind(id)
                    .bind(via.as_str().to_owned())
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
                Self::append_delivery_event(
                    &mut tx,
                    c.workspace_id,
                    c.instant_key_id,
                    c.delivery_id,
                    INSTANT_KEY_DELIVERED,
                    now,
                )
                .await?
            }
            Outcome::Retry { at, error } => {
                sqlx::query("UPDATE instant_key_deliveries SET next_attempt_at = $3, last_error = $4, lease_token = NULL, lease_until = NULL, updated_at = $5 WHERE workspace_id = $1 AND delivery_id = $2")
                    .bind(ws)
                    .bind(id)
                    .bind(to_micros(truncate_to_micros(*at)))
                    .bind(error.clone())
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
                Vec::new()
            }
            Outcome::Failed { error } => {
                sqlx::query("UPDATE instant_key_deliveries SET status = 'failed', last_error = $3, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND delivery_id = $2")
                    .bind(ws)
                    .bind(id)
                    .bind(error.clone())
                    .bind(to_micros(now))
                    .execute(&mut *tx)
                    .await?;
                Self::append_delivery_event(
                    &mut tx,
                    c.workspace_id,
                    c.instant_key_id,
                    c.delivery_id,
                    INSTANT_KEY_DELIVERY_FAILED,
                    now,
                )
                .await?
            }
        };
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn next_delivery_due(
        &self,
        sms: bool,
        email: bool,
    ) -> StoreResult<Option<OffsetDateTime>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END) FROM instant_key_deliveries WHERE status = 'pending' AND ((channel = 'sms' AND $1) OR (channel = 'email' AND $2))")
            .bind(sms)
            .bind(email)
            .fetch_one(&self.pool)
            .await?;
        at.map(from_micros).transpose()
    }
}

#[async_trait]
impl<D> DeliveryStore for SqlStore<D>
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
    async fn create_key_delivery(
        &self,
        ws: WorkspaceId,
        new: &NewDelivery,
        idem: Option<&Idempotency>,
    ) -> Result<Delivery, Error> {
        Ok(self.create_delivery(ws, new, idem).await?)
    }

    async fn get_key_delivery(&self, ws: WorkspaceId, id: DeliveryId) -> Result<Delivery, Error> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(Self::delivery_in(&mut conn, ws, id).await?)
    }

    async fn key_deliveries(
        &self,
        ws: WorkspaceId,
        keys: &[InstantKeyId],
        per_key: u32,
    ) -> Result<Vec<Delivery>, Error> {
        Ok(self.deliveries_of_keys(ws, keys, per_key).await?)
    }

    async fn recent_key_deliveries(
        &self,
        ws: Option<WorkspaceId>,
        outbox_only: bool,
        limit: u32,
    ) -> Result<Vec<Delivery>, Error> {
        Ok(self.recent_deliveries(ws, outbox_only, limit).await?)
    }

    async fn claim_key_deliveries(
        &self,
        sms: bool,
        email: bool,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<DeliveryClaim>, Error> {
        Ok(self.claim_deliveries(sms, email, limit, lease, now).await?)
    }

    async fn record_key_delivery(
        &self,
        c: &DeliveryClaim,
        o: &Outcome,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error> {
        Ok(self.record_delivery(c, o, now).await?)
    }

    async fn next_key_delivery_due(
        &self,
        sms: bool,
        email: bool,
    ) -> Result<Option<OffsetDateTime>, Error> {
        Ok(self.next_delivery_due(sms, email).await?)
    }
}
