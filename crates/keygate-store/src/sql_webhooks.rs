//! The SQL of webhooks and their deliveries, shared by both dialects like `sql_grants.rs`. Two
//! fragments differ and are passed in: the row-lock clause (`FOR UPDATE` on PostgreSQL;
//! SQLite's `BEGIN IMMEDIATE` already serializes writers) and the delivery claim (`FOR UPDATE OF d
//! SKIP LOCKED` on PostgreSQL, so concurrent dispatchers never wait on each other's rows).
//!
//! Lock order, on PostgreSQL: a webhook row before any of its delivery rows, then the event
//! counter. Every transaction here that takes more than one follows it, so none can deadlock.

macro_rules! webhook_cols {
    () => {
        "webhook_id, workspace_id, url, event_types, is_enabled, disabled_reason, created_at, last_delivery_at, last_success_at, consecutive_failures"
    };
}

macro_rules! impl_webhook_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, lock = $lock:literal, claim = $claim:literal) => {
        mod webhooks {
            use async_trait::async_trait;
            use keygate_domain::events::{Event, WEBHOOK_DISABLED};
            use keygate_domain::ids::{EventId, WebhookId, WorkspaceId};
            use keygate_domain::model::truncate_to_micros;
            use keygate_domain::page::{Page, PageRequest};
            use keygate_domain::webhook::{AttemptOutcome, ClaimedDelivery, NewWebhook, Webhook};
            use keygate_domain::{Error, Resource};
            use sqlx::Row as _;
            use time::OffsetDateTime;

            use super::$store;
            use crate::sql_webhooks::webhook_cols;
            use crate::traits::*;
            use crate::util::{db_err, fetch_limit, from_micros, into_page, parse, to_micros};

            type Conn = <$db as sqlx::Database>::Connection;

            fn opt_time(r: &$row, col: &str) -> Result<Option<OffsetDateTime>, Error> {
                Ok(r.try_get::<Option<i64>, _>(col).map_err(db_err)?.map(from_micros).transpose()?)
            }

            fn opt_id<T: std::str::FromStr>(r: &$row, col: &str) -> Result<Option<T>, Error> {
                Ok(r.try_get::<Option<String>, _>(col).map_err(db_err)?.map(|s| parse(col, &s)).transpose()?)
            }

            fn count(r: &$row, col: &str) -> Result<u32, Error> {
                Ok(u32::try_from(r.try_get::<i32, _>(col).map_err(db_err)?).unwrap_or(0))
            }

            fn types_of(s: &str) -> Result<Vec<String>, Error> {
                serde_json::from_str(s).map_err(|e| Error::Internal { message: format!("stored event_types do not parse: {e}") })
            }

            fn webhook_row(r: &$row) -> Result<Webhook, Error> {
                Ok(Webhook {
                    id: parse("webhook_id", &r.try_get::<String, _>("webhook_id").map_err(db_err)?)?,
                    workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                    url: r.try_get("url").map_err(db_err)?,
                    event_types: types_of(&r.try_get::<String, _>("event_types").map_err(db_err)?)?,
                    is_enabled: r.try_get("is_enabled").map_err(db_err)?,
                    disabled_reason: r.try_get("disabled_reason").map_err(db_err)?,
                    created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                    last_delivery_at: opt_time(r, "last_delivery_at")?,
                    last_success_at: opt_time(r, "last_success_at")?,
                    consecutive_failures: count(r, "consecutive_failures")?,
                })
            }

            async fn webhook_in(conn: &mut Conn, ws: WorkspaceId, id: WebhookId) -> Result<Webhook, Error> {
                let row = sqlx::query(concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::Webhook, id.to_string()))?;
                webhook_row(&row)
            }

            async fn secret_in(conn: &mut Conn, ws: WorkspaceId, id: WebhookId) -> Result<String, Error> {
                sqlx::query_scalar("SELECT secret FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2")
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::Webhook, id.to_string()))
            }

            /// Appends one `webhook.disabled` event, numbered like every other event: the counter
            /// row stays locked until commit, so seq order is commit order.
            async fn append_disabled(conn: &mut Conn, ws: WorkspaceId, webhook: WebhookId, now: OffsetDateTime) -> Result<Event, Error> {
                let seq: i64 = sqlx::query_scalar("INSERT INTO event_counters (workspace_id, last_seq) VALUES ($1, 1) ON CONFLICT (workspace_id) DO UPDATE SET last_seq = event_counters.last_seq + 1 RETURNING last_seq")
                    .bind(ws.to_string())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err)?;
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
                    .bind(&event.event_type)
                    .bind(&event.description)
                    .bind(to_micros(now))
                    .bind(to_micros(now))
                    .bind(webhook.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                Ok(event)
            }

            fn claimed_row(r: &$row) -> Result<ClaimedDelivery, Error> {
                let ws: WorkspaceId = parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?;
                let seq: i64 = r.try_get("event_seq").map_err(db_err)?;
                let event_id: EventId = parse("event_id", &r.try_get::<String, _>("event_id").map_err(db_err)?)?;
                Ok(ClaimedDelivery {
                    workspace_id: ws,
                    webhook_id: parse("webhook_id", &r.try_get::<String, _>("webhook_id").map_err(db_err)?)?,
                    event_seq: seq,
                    event_id,
                    lease_token: r.try_get("lease_token").map_err(db_err)?,
                    attempts: count(r, "attempts")?,
                    url: r.try_get("url").map_err(db_err)?,
                    secret: r.try_get("secret").map_err(db_err)?,
                    event: Event {
                        seq,
                        workspace_id: ws,
                        id: event_id,
                        event_type: r.try_get("event_type").map_err(db_err)?,
                        description: r.try_get("description").map_err(db_err)?,
                        occurred_at: from_micros(r.try_get("occurred_at").map_err(db_err)?)?,
                        created_at: from_micros(r.try_get("event_created_at").map_err(db_err)?)?,
                        access_grant_id: opt_id(r, "access_grant_id")?,
                        access_method_id: opt_id(r, "access_method_id")?,
                        acs_system_id: opt_id(r, "acs_system_id")?,
                        acs_entrance_id: opt_id(r, "acs_entrance_id")?,
                        user_identity_id: opt_id(r, "user_identity_id")?,
                        instant_key_id: opt_id(r, "instant_key_id")?,
                        action_attempt_id: opt_id(r, "action_attempt_id")?,
                    },
                    event_webhook_id: opt_id(r, "event_webhook_id")?,
                })
            }

            fn delivery_row(r: &$row) -> Result<WebhookDeliveryRecord, Error> {
                Ok(WebhookDeliveryRecord {
                    event_seq: r.try_get("event_seq").map_err(db_err)?,
                    event_id: parse("event_id", &r.try_get::<String, _>("event_id").map_err(db_err)?)?,
                    status: r.try_get("status").map_err(db_err)?,
                    attempts: count(r, "attempts")?,
                    next_attempt_at: from_micros(r.try_get("next_attempt_at").map_err(db_err)?)?,
                    last_attempt_at: opt_time(r, "last_attempt_at")?,
                    last_status_code: r
                        .try_get::<Option<i32>, _>("last_status_code")
                        .map_err(db_err)?
                        .and_then(|c| u16::try_from(c).ok()),
                    last_error: r.try_get("last_error").map_err(db_err)?,
                })
            }

            #[async_trait]
            impl WebhookStore for $store {
                async fn create_webhook(&self, ws: WorkspaceId, new: &NewWebhook, idem: Option<&Idempotency>) -> Result<(Webhook, String), Error> {
                    let now = truncate_to_micros(new.created_at);
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = $store::claim_idempotency(&mut tx, ws, idem, &new.id.to_string(), now).await? {
                        let first: WebhookId = parse("webhook_id", &first)?;
                        let w = webhook_in(&mut tx, ws, first).await?;
                        let secret = secret_in(&mut tx, ws, first).await?;
                        return Ok((w, secret));
                    }
                    // Events committed before this point are not sent to it.
                    let cursor: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(last_seq), 0) FROM event_counters WHERE workspace_id = $1")
                        .bind(ws.to_string())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let types = serde_json::to_string(&new.event_types).map_err(|e| Error::Internal { message: format!("serialize: {e}") })?;
                    sqlx::query("INSERT INTO webhooks (webhook_id, workspace_id, url, event_types, secret, is_enabled, disabled_reason, created_at, consecutive_failures, cursor_seq) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, 0, $8)")
                        .bind(new.id.to_string())
                        .bind(ws.to_string())
                        .bind(&new.url)
                        .bind(types)
                        .bind(&new.secret)
                        .bind(true)
                        .bind(to_micros(now))
                        .bind(cursor)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
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

                async fn get_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<Webhook, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    webhook_in(&mut conn, ws, id).await
                }

                async fn webhook_secret(&self, ws: WorkspaceId, id: WebhookId) -> Result<String, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    secret_in(&mut conn, ws, id).await
                }

                async fn list_webhooks(&self, ws: WorkspaceId, page: &PageRequest) -> Result<Page<Webhook>, Error> {
                    let rows = sqlx::query(concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = $1 AND webhook_id > $2 ORDER BY webhook_id LIMIT $3"))
                        .bind(ws.to_string())
                        .bind(page.after.clone().unwrap_or_default())
                        .bind(fetch_limit(page.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    let items = rows.iter().map(webhook_row).collect::<Result<Vec<_>, _>>()?;
                    Ok(into_page(items, page.limit, |w| w.id.to_string()))
                }

                async fn delete_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<(), Error> {
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    // The webhook row first (lock order), then its deliveries, then the row.
                    sqlx::query(concat!("SELECT 1 FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2", $lock))
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| Error::not_found(Resource::Webhook, id.to_string()))?;
                    sqlx::query("DELETE FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    sqlx::query("DELETE FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)
                }

                async fn webhooks_behind(&self, limit: u32) -> Result<Vec<WebhookCursor>, Error> {
                    let rows = sqlx::query("SELECT w.workspace_id, w.webhook_id, w.cursor_seq, w.event_types FROM webhooks w JOIN event_counters c ON c.workspace_id = w.workspace_id WHERE w.is_enabled = $1 AND c.last_seq > w.cursor_seq ORDER BY w.workspace_id, w.webhook_id LIMIT $2")
                        .bind(true)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(WebhookCursor {
                                workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                                webhook_id: parse("webhook_id", &r.try_get::<String, _>("webhook_id").map_err(db_err)?)?,
                                cursor_seq: r.try_get("cursor_seq").map_err(db_err)?,
                                event_types: types_of(&r.try_get::<String, _>("event_types").map_err(db_err)?)?,
                            })
                        })
                        .collect()
                }

                async fn fan_out_webhook(&self, c: &WebhookCursor, to: i64, events: &[(i64, EventId)], now: OffsetDateTime) -> Result<bool, Error> {
                    let now = to_micros(now);
                    let (ws, id) = (c.workspace_id.to_string(), c.webhook_id.to_string());
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let row = sqlx::query(concat!("SELECT cursor_seq, is_enabled FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2", $lock))
                        .bind(&ws)
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let Some(row) = row else { return Ok(false) };
                    let at: i64 = row.try_get("cursor_seq").map_err(db_err)?;
                    let enabled: bool = row.try_get("is_enabled").map_err(db_err)?;
                    if at != c.cursor_seq || !enabled || to <= at {
                        return Ok(false);
                    }
                    for (seq, event_id) in events {
                        sqlx::query("INSERT INTO webhook_deliveries (workspace_id, webhook_id, event_seq, event_id, status, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5) ON CONFLICT (workspace_id, webhook_id, event_seq) DO NOTHING")
                            .bind(&ws)
                            .bind(&id)
                            .bind(*seq)
                            .bind(event_id.to_string())
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    sqlx::query("UPDATE webhooks SET cursor_seq = $3 WHERE workspace_id = $1 AND webhook_id = $2")
                        .bind(&ws)
                        .bind(&id)
                        .bind(to)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn claim_deliveries(&self, limit: u32, lease: std::time::Duration, now: OffsetDateTime) -> Result<Vec<ClaimedDelivery>, Error> {
                    let token = uuid::Uuid::now_v7().to_string();
                    let until = now + lease;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let claimed = sqlx::query($claim)
                        .bind(&token)
                        .bind(to_micros(until))
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .bind(true)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if claimed == 0 {
                        return Ok(Vec::new());
                    }
                    // An event purged (past its retention) before its delivery was made cannot be
                    // sent any more: that delivery fails instead of being leased again and again.
                    sqlx::query("UPDATE webhook_deliveries SET status = 'failed', last_error = 'the event was purged before it could be delivered', lease_token = NULL, lease_until = NULL, updated_at = $2 WHERE lease_token = $1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = webhook_deliveries.workspace_id AND e.seq = webhook_deliveries.event_seq)")
                        .bind(&token)
                        .bind(to_micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let rows = sqlx::query("SELECT d.workspace_id, d.webhook_id, d.event_seq, d.event_id, d.lease_token, d.attempts, w.url, w.secret, e.event_type, e.description, e.occurred_at, e.created_at AS event_created_at, e.access_grant_id, e.access_method_id, e.acs_system_id, e.acs_entrance_id, e.user_identity_id, e.instant_key_id, e.action_attempt_id, e.webhook_id AS event_webhook_id FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id JOIN events e ON e.workspace_id = d.workspace_id AND e.seq = d.event_seq WHERE d.lease_token = $1 ORDER BY d.next_attempt_at")
                        .bind(&token)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let out = rows.iter().map(claimed_row).collect::<Result<Vec<_>, _>>()?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(out)
                }

                async fn record_delivery_attempt(&self, d: &ClaimedDelivery, o: &AttemptOutcome, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let now = truncate_to_micros(now);
                    let (ws, id) = (d.workspace_id.to_string(), d.webhook_id.to_string());
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let Some(w) = sqlx::query(concat!("SELECT is_enabled, failing_since FROM webhooks WHERE workspace_id = $1 AND webhook_id = $2", $lock))
                        .bind(&ws)
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                    else {
                        return Ok(None);
                    };
                    let held = sqlx::query(concat!("SELECT 1 FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3 AND lease_token = $4 AND status = 'pending'", $lock))
                        .bind(&ws)
                        .bind(&id)
                        .bind(d.event_seq)
                        .bind(&d.lease_token)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .is_some();
                    if !held {
                        return Ok(None);
                    }
                    let code = o.status_code.map(i32::from);
                    let mut events = Vec::new();
                    if o.succeeded {
                        sqlx::query("UPDATE webhook_deliveries SET status = 'succeeded', last_attempt_at = $4, last_status_code = $5, last_error = NULL, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3")
                            .bind(&ws)
                            .bind(&id)
                            .bind(d.event_seq)
                            .bind(to_micros(now))
                            .bind(code)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        sqlx::query("UPDATE webhooks SET last_delivery_at = $3, last_success_at = $3, failing_since = NULL, consecutive_failures = 0 WHERE workspace_id = $1 AND webhook_id = $2")
                            .bind(&ws)
                            .bind(&id)
                            .bind(to_micros(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    } else {
                        let enabled: bool = w.try_get("is_enabled").map_err(db_err)?;
                        let failing_since = opt_time(&w, "failing_since")?.unwrap_or(now);
                        let (status, next) = match o.retry_at {
                            Some(t) => ("pending", truncate_to_micros(t)),
                            None => ("failed", now),
                        };
                        sqlx::query("UPDATE webhook_deliveries SET status = $4, next_attempt_at = $5, last_attempt_at = $6, last_status_code = $7, last_error = $8, lease_token = NULL, lease_until = NULL, updated_at = $6 WHERE workspace_id = $1 AND webhook_id = $2 AND event_seq = $3")
                            .bind(&ws)
                            .bind(&id)
                            .bind(d.event_seq)
                            .bind(status)
                            .bind(to_micros(next))
                            .bind(to_micros(now))
                            .bind(code)
                            .bind(&o.error)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        sqlx::query("UPDATE webhooks SET last_delivery_at = $3, failing_since = $4, consecutive_failures = consecutive_failures + 1 WHERE workspace_id = $1 AND webhook_id = $2")
                            .bind(&ws)
                            .bind(&id)
                            .bind(to_micros(now))
                            .bind(to_micros(failing_since))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        if enabled && now - failing_since >= o.disable_after {
                            sqlx::query("UPDATE webhooks SET is_enabled = $3, disabled_reason = $4 WHERE workspace_id = $1 AND webhook_id = $2")
                                .bind(&ws)
                                .bind(&id)
                                .bind(false)
                                .bind(&o.disabled_reason)
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            sqlx::query("UPDATE webhook_deliveries SET status = 'failed', last_error = COALESCE(last_error, 'the webhook was disabled before this event was sent'), lease_token = NULL, lease_until = NULL, updated_at = $3 WHERE workspace_id = $1 AND webhook_id = $2 AND status = 'pending'")
                                .bind(&ws)
                                .bind(&id)
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            events.push(append_disabled(&mut tx, d.workspace_id, d.webhook_id, now).await?);
                        }
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(events))
                }

                async fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>, Error> {
                    let at: Option<i64> = sqlx::query_scalar("SELECT MIN(CASE WHEN d.lease_until IS NOT NULL AND d.lease_until > d.next_attempt_at THEN d.lease_until ELSE d.next_attempt_at END) FROM webhook_deliveries d JOIN webhooks w ON w.workspace_id = d.workspace_id AND w.webhook_id = d.webhook_id WHERE d.status = 'pending' AND w.is_enabled = $1")
                        .bind(true)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(at.map(from_micros).transpose()?)
                }

                async fn event_webhook_id(&self, ws: WorkspaceId, seq: i64) -> Result<Option<WebhookId>, Error> {
                    let id: Option<Option<String>> = sqlx::query_scalar("SELECT webhook_id FROM events WHERE workspace_id = $1 AND seq = $2")
                        .bind(ws.to_string())
                        .bind(seq)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(id.flatten().map(|s| parse("webhook_id", &s)).transpose()?)
                }

                async fn list_webhook_deliveries(&self, ws: WorkspaceId, id: WebhookId, limit: u32) -> Result<Vec<WebhookDeliveryRecord>, Error> {
                    let rows = sqlx::query("SELECT event_seq, event_id, status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 ORDER BY event_seq LIMIT $3")
                        .bind(ws.to_string())
                        .bind(id.to_string())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(delivery_row).collect()
                }
            }
        }
    };
}

pub(crate) use {impl_webhook_store, webhook_cols};
