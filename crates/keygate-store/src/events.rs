//! The event log: listing, lookup, retention. Events are appended by the stores that make them,
//! inside their own transactions (`common.rs`).

use std::sync::LazyLock;

use async_trait::async_trait;
use keygate_domain::events::{Event, EventFilter};
use keygate_domain::ids::{EventId, WorkspaceId};
use keygate_domain::{Error, Resource};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::common::EVENT_COLS;
use crate::dialect::{Dialect, SqlStore, SqlValue, assembled};
use crate::error::{StoreError, StoreResult};
use crate::traits::EventLog;
use crate::util::{from_micros, parse, to_micros};

static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {EVENT_COLS} FROM events WHERE workspace_id = $1 AND event_id = $2")
});

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    workspace_id: String,
    event_id: String,
    event_type: String,
    description: String,
    occurred_at: i64,
    created_at: i64,
    access_grant_id: Option<String>,
    access_method_id: Option<String>,
    acs_system_id: Option<String>,
    acs_entrance_id: Option<String>,
    user_identity_id: Option<String>,
    instant_key_id: Option<String>,
    action_attempt_id: Option<String>,
}

fn opt_id<T: std::str::FromStr>(col: &str, s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| parse(col, &s)).transpose()
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;

    fn try_from(r: EventRow) -> StoreResult<Self> {
        Ok(Event {
            seq: r.seq,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            id: parse("event_id", &r.event_id)?,
            event_type: r.event_type,
            description: r.description,
            occurred_at: from_micros(r.occurred_at)?,
            created_at: from_micros(r.created_at)?,
            access_grant_id: opt_id("access_grant_id", r.access_grant_id)?,
            access_method_id: opt_id("access_method_id", r.access_method_id)?,
            acs_system_id: opt_id("acs_system_id", r.acs_system_id)?,
            acs_entrance_id: opt_id("acs_entrance_id", r.acs_entrance_id)?,
            user_identity_id: opt_id("user_identity_id", r.user_identity_id)?,
            instant_key_id: opt_id("instant_key_id", r.instant_key_id)?,
            action_attempt_id: opt_id("action_attempt_id", r.action_attempt_id)?,
        })
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
{
    async fn events(
        &self,
        ws: WorkspaceId,
        f: &EventFilter,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events WHERE workspace_id = $1 AND seq > $2 AND ($3 = '' OR {}) AND ($4 = '' OR access_grant_id = $4) AND ($5 = '' OR access_method_id = $5) AND ($6 = '' OR acs_system_id = $6) AND ($7 = '' OR acs_entrance_id = $7) AND ($8 = '' OR user_identity_id = $8) AND ($9 = 0 OR occurred_at >= $9) AND ($10 = 0 OR occurred_at < $10) ORDER BY seq LIMIT $11",
            D::in_list("event_type", "$3")
        );
        let rows: Vec<EventRow> = sqlx::query_as(assembled(sql))
            .bind(ws.to_string())
            .bind(after)
            .bind(f.event_types.join(","))
            .bind(f.access_grant_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(
                f.access_method_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(f.acs_system_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(f.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default())
            .bind(
                f.user_identity_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .bind(f.occurred_after.map(to_micros).unwrap_or(0))
            .bind(f.occurred_before.map(to_micros).unwrap_or(0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    async fn purge_events_before(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(to_micros(before))
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn latest_seq(&self, ws: WorkspaceId) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(last_seq), 0) FROM event_counters WHERE workspace_id = $1",
        )
        .bind(ws.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn latest_seqs(&self, wss: &[WorkspaceId]) -> StoreResult<Vec<(WorkspaceId, i64)>> {
        let mut out = Vec::with_capacity(wss.len());
        // Bounded lists: one statement per 500 workspaces.
        for chunk in wss.chunks(500) {
            let list = chunk
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT workspace_id, last_seq FROM event_counters WHERE {}",
                D::in_list("workspace_id", "$1")
            );
            let rows: Vec<(String, i64)> = sqlx::query_as(assembled(sql))
                .bind(list)
                .fetch_all(&self.pool)
                .await?;
            for (ws, seq) in rows {
                out.push((parse("workspace_id", &ws)?, seq));
            }
        }
        Ok(out)
    }

    async fn event(&self, ws: WorkspaceId, id: EventId) -> StoreResult<Event> {
        let row: EventRow = sqlx::query_as(SELECT_ONE.as_str())
            .bind(ws.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Event, id.to_string()))?;
        row.try_into()
    }
}

#[async_trait]
impl<D> EventLog for SqlStore<D>
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
{
    async fn list_events(
        &self,
        ws: WorkspaceId,
        f: &EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, Error> {
        Ok(self.events(ws, f, after, limit).await?)
    }

    async fn purge_events(&self, before: OffsetDateTime) -> Result<u64, Error> {
        Ok(self.purge_events_before(before).await?)
    }

    async fn latest_event_seq(&self, ws: WorkspaceId) -> Result<i64, Error> {
        Ok(self.latest_seq(ws).await?)
    }

    async fn get_event(&self, ws: WorkspaceId, id: EventId) -> Result<Event, Error> {
        Ok(self.event(ws, id).await?)
    }

    async fn latest_event_seqs(
        &self,
        workspaces: &[WorkspaceId],
    ) -> Result<Vec<(WorkspaceId, i64)>, Error> {
        Ok(self.latest_seqs(workspaces).await?)
    }
}
