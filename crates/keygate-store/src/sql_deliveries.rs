//! The SQL of Instant Key deliveries (SMS and email), shared by both dialects like
//! `sql_webhooks.rs`. A delivery row is its own queue entry: `DeliverInstantKey` inserts it due
//! at once, a sender leases it, makes one attempt and records the outcome under that lease.
//! Three fragments differ and are passed in: the row-lock clause (`FOR UPDATE` on PostgreSQL;
//! SQLite's `BEGIN IMMEDIATE` already serializes writers), the claim's `FOR UPDATE SKIP LOCKED`
//! (so concurrent senders never wait on each other's rows) and the "id in a list" filter.
//!
//! Lock order, on PostgreSQL: a delivery row, then the event counter. Nothing else here takes
//! more than one, so none can deadlock.

macro_rules! delivery_cols {
    () => {
        "workspace_id, delivery_id, instant_key_id, channel, recipient, status, sent_via, attempts, last_error, created_at, sent_at"
    };
}

macro_rules! impl_delivery_store {
    ($store:ident, $db:ty, $row:ty, begin = $begin:literal, lock = $lock:literal, skip_locked = $skip:literal, keys_filter = $keys:literal) => {
        mod deliveries {
            use async_trait::async_trait;
            use keygate_domain::delivery::{Channel, Delivery, DeliveryClaim, NewDelivery, Outcome, SentVia, Status};
            use keygate_domain::events::{Event, NewEvent, INSTANT_KEY_DELIVERED, INSTANT_KEY_DELIVERY_FAILED};
            use keygate_domain::ids::{DeliveryId, InstantKeyId, WorkspaceId};
            use keygate_domain::model::truncate_to_micros;
            use keygate_domain::{Error, Resource};
            use sqlx::Row as _;
            use time::OffsetDateTime;

            use super::$store;
            use crate::sql_deliveries::delivery_cols;
            use crate::traits::*;
            use crate::util::{db_err, from_micros, parse, to_micros};

            type Conn = <$db as sqlx::Database>::Connection;

            fn stored<T>(what: &str, s: &str, f: impl Fn(&str) -> Option<T>) -> Result<T, Error> {
                f(s).ok_or_else(|| Error::Internal { message: format!("stored {what} {s:?} is not known") })
            }

            fn delivery_row(r: &$row) -> Result<Delivery, Error> {
                let sent_via = r
                    .try_get::<Option<String>, _>("sent_via")
                    .map_err(db_err)?
                    .map(|s| stored("sent_via", &s, SentVia::parse))
                    .transpose()?;
                Ok(Delivery {
                    id: parse("delivery_id", &r.try_get::<String, _>("delivery_id").map_err(db_err)?)?,
                    workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                    instant_key_id: parse("instant_key_id", &r.try_get::<String, _>("instant_key_id").map_err(db_err)?)?,
                    channel: stored("channel", &r.try_get::<String, _>("channel").map_err(db_err)?, Channel::parse)?,
                    to: r.try_get("recipient").map_err(db_err)?,
                    status: stored("status", &r.try_get::<String, _>("status").map_err(db_err)?, Status::parse)?,
                    attempts: u32::try_from(r.try_get::<i32, _>("attempts").map_err(db_err)?).unwrap_or(0),
                    last_error: r.try_get("last_error").map_err(db_err)?,
                    created_at: from_micros(r.try_get("created_at").map_err(db_err)?)?,
                    sent_at: r.try_get::<Option<i64>, _>("sent_at").map_err(db_err)?.map(from_micros).transpose()?,
                    sent_via,
                })
            }

            fn claim_row(r: &$row) -> Result<DeliveryClaim, Error> {
                Ok(DeliveryClaim {
                    workspace_id: parse("workspace_id", &r.try_get::<String, _>("workspace_id").map_err(db_err)?)?,
                    delivery_id: parse("delivery_id", &r.try_get::<String, _>("delivery_id").map_err(db_err)?)?,
                    instant_key_id: parse("instant_key_id", &r.try_get::<String, _>("instant_key_id").map_err(db_err)?)?,
                    channel: stored("channel", &r.try_get::<String, _>("channel").map_err(db_err)?, Channel::parse)?,
                    to: r.try_get("recipient").map_err(db_err)?,
                    attempts: u32::try_from(r.try_get::<i32, _>("attempts").map_err(db_err)?).unwrap_or(0),
                    lease_token: r.try_get("lease_token").map_err(db_err)?,
                    trace_context: r.try_get("trace_context").map_err(db_err)?,
                })
            }

            async fn delivery_in(conn: &mut Conn, ws: WorkspaceId, id: DeliveryId) -> Result<Delivery, Error> {
                let row = sqlx::query(concat!("SELECT ", delivery_cols!(), " FROM instant_key_deliveries WHERE workspace_id = $1 AND delivery_id = $2"))
                    .bind(ws.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::Internal { message: format!("delivery {id} is not in the store") })?;
                delivery_row(&row)
            }

            /// Appends `instant_key.delivered` or `instant_key.delivery_failed` for a delivery of
            /// key `key`, numbered like every other event, with the key, its person and grant,
            /// and the delivery recorded on the event row.
            async fn append_delivery_event(
                conn: &mut Conn,
                ws: WorkspaceId,
                key: InstantKeyId,
                delivery: DeliveryId,
                event_type: keygate_domain::events::EventType,
                now: OffsetDateTime,
            ) -> Result<Vec<Event>, Error> {
                let row = sqlx::query("SELECT user_identity_id, access_grant_id FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2")
                    .bind(ws.to_string())
                    .bind(key.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| Error::not_found(Resource::InstantKey, key.to_string()))?;
                let mut e = NewEvent::new(event_type, now)
                    .user(parse("user_identity_id", &row.try_get::<String, _>("user_identity_id").map_err(db_err)?)?)
                    .instant_key(key);
                if let Some(g) = row.try_get::<Option<String>, _>("access_grant_id").map_err(db_err)? {
                    e = e.grant(parse("access_grant_id", &g)?);
                }
                let events = $store::append_events(conn, ws, &[e], now).await?;
                // The Event struct has no delivery_id yet: the column is written here.
                for ev in &events {
                    sqlx::query("UPDATE events SET delivery_id = $3 WHERE workspace_id = $1 AND seq = $2")
                        .bind(ws.to_string())
                        .bind(ev.seq)
                        .bind(delivery.to_string())
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                }
                Ok(events)
            }

            #[async_trait]
            impl DeliveryStore for $store {
                async fn create_key_delivery(&self, ws: WorkspaceId, new: &NewDelivery, idem: Option<&Idempotency>) -> Result<Delivery, Error> {
                    let now = truncate_to_micros(new.created_at);
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    if let Some(first) = $store::claim_idempotency(&mut tx, ws, idem, &new.id.to_string(), now).await? {
                        return delivery_in(&mut tx, ws, parse("delivery_id", &first)?).await;
                    }
                    let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM instant_keys WHERE workspace_id = $1 AND instant_key_id = $2")
                        .bind(ws.to_string())
                        .bind(new.instant_key_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if known.is_none() {
                        return Err(Error::not_found(Resource::InstantKey, new.instant_key_id.to_string()));
                    }
                    sqlx::query("INSERT INTO instant_key_deliveries (workspace_id, delivery_id, instant_key_id, channel, recipient, status, attempts, next_attempt_at, trace_context, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6, $6)")
                        .bind(ws.to_string())
                        .bind(new.id.to_string())
                        .bind(new.instant_key_id.to_string())
                        .bind(new.channel.as_str())
                        .bind(&new.to)
                        .bind(to_micros(now))
                        .bind(keygate_telemetry::propagation::current_traceparent())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
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

                async fn get_key_delivery(&self, ws: WorkspaceId, id: DeliveryId) -> Result<Delivery, Error> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    delivery_in(&mut conn, ws, id).await
                }

                async fn key_deliveries(&self, ws: WorkspaceId, keys: &[InstantKeyId], per_key: u32) -> Result<Vec<Delivery>, Error> {
                    if keys.is_empty() {
                        return Ok(Vec::new());
                    }
                    let list = keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",");
                    let rows = sqlx::query(concat!(
                        "SELECT ", delivery_cols!(), " FROM (SELECT ", delivery_cols!(),
                        ", ROW_NUMBER() OVER (PARTITION BY instant_key_id ORDER BY created_at DESC, delivery_id DESC) AS rn FROM instant_key_deliveries WHERE workspace_id = $1 AND ",
                        $keys,
                        ") d WHERE rn <= $3 ORDER BY instant_key_id, created_at DESC, delivery_id DESC"
                    ))
                    .bind(ws.to_string())
                    .bind(list)
                    .bind(i64::from(per_key))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                    rows.iter().map(delivery_row).collect()
                }

                async fn recent_key_deliveries(&self, ws: Option<WorkspaceId>, outbox_only: bool, limit: u32) -> Result<Vec<Delivery>, Error> {
                    let rows = sqlx::query(concat!("SELECT ", delivery_cols!(), " FROM instant_key_deliveries WHERE ($1 = '' OR workspace_id = $1) AND (NOT $2 OR sent_via = 'outbox') ORDER BY created_at DESC, delivery_id DESC LIMIT $3"))
                        .bind(ws.map(|w| w.to_string()).unwrap_or_default())
                        .bind(outbox_only)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(delivery_row).collect()
                }

                async fn claim_key_deliveries(&self, sms: bool, email: bool, limit: u32, lease: std::time::Duration, now: OffsetDateTime) -> Result<Vec<DeliveryClaim>, Error> {
                    if !(sms || email) || limit == 0 {
                        return Ok(Vec::new());
                    }
                    let token = uuid::Uuid::now_v7().to_string();
                    let until = now + lease;
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let rows = sqlx::query(concat!(
                        "UPDATE instant_key_deliveries SET lease_token = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 WHERE (workspace_id, delivery_id) IN (SELECT workspace_id, delivery_id FROM instant_key_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) AND ((channel = 'sms' AND $5) OR (channel = 'email' AND $6)) ORDER BY next_attempt_at LIMIT $4",
                        $skip,
                        ") RETURNING workspace_id, delivery_id, instant_key_id, channel, recipient, attempts, lease_token, trace_context"
                    ))
                    .bind(&token)
                    .bind(to_micros(until))
                    .bind(to_micros(now))
                    .bind(i64::from(limit))
                    .bind(sms)
                    .bind(email)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    let out = rows.iter().map(claim_row).collect::<Result<Vec<_>, _>>()?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(out)
                }

                async fn record_key_delivery(&self, c: &DeliveryClaim, o: &Outcome, now: OffsetDateTime) -> Result<Option<Vec<Event>>, Error> {
                    let now = truncate_to_micros(now);
                    let (ws, id) = (c.workspace_id.to_string(), c.delivery_id.to_string());
                    let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                    let held = sqlx::query(concat!("SELECT 1 FROM instant_key_deliveries WHERE workspace_id = $1 AND delivery_id = $2 AND lease_token = $3 AND status = 'pending'", $lock))
                        .bind(&ws)
                        .bind(&id)
                        .bind(&c.lease_token)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .is_some();
                    if !held {
                        return Ok(None);
                    }
                    let events = match o {
                        Outcome::Sent(via) => {
                            // last_error keeps the last failure, if an earlier attempt had one.
                            sqlx::query("UPDATE instant_key_deliveries SET status = 'sent', sent_via = $3, sent_at = $4, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND delivery_id = $2")
                                .bind(&ws)
                                .bind(&id)
                                .bind(via.as_str())
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            append_delivery_event(&mut tx, c.workspace_id, c.instant_key_id, c.delivery_id, INSTANT_KEY_DELIVERED, now).await?
                        }
                        Outcome::Retry { at, error } => {
                            sqlx::query("UPDATE instant_key_deliveries SET next_attempt_at = $3, last_error = $4, lease_token = NULL, lease_until = NULL, updated_at = $5 WHERE workspace_id = $1 AND delivery_id = $2")
                                .bind(&ws)
                                .bind(&id)
                                .bind(to_micros(truncate_to_micros(*at)))
                                .bind(error)
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            Vec::new()
                        }
                        Outcome::Failed { error } => {
                            sqlx::query("UPDATE instant_key_deliveries SET status = 'failed', last_error = $3, lease_token = NULL, lease_until = NULL, updated_at = $4 WHERE workspace_id = $1 AND delivery_id = $2")
                                .bind(&ws)
                                .bind(&id)
                                .bind(error)
                                .bind(to_micros(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            append_delivery_event(&mut tx, c.workspace_id, c.instant_key_id, c.delivery_id, INSTANT_KEY_DELIVERY_FAILED, now).await?
                        }
                    };
                    tx.commit().await.map_err(db_err)?;
                    Ok(Some(events))
                }

                async fn next_key_delivery_due(&self, sms: bool, email: bool) -> Result<Option<OffsetDateTime>, Error> {
                    let at: Option<i64> = sqlx::query_scalar("SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END) FROM instant_key_deliveries WHERE status = 'pending' AND ((channel = 'sms' AND $1) OR (channel = 'email' AND $2))")
                        .bind(sms)
                        .bind(email)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(at.map(from_micros).transpose()?)
                }
            }
        }
    };
}

pub(crate) use {delivery_cols, impl_delivery_store};
