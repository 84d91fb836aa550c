//! Inbound vendor webhooks: which vendor events each access system has already delivered (so
//! a repeated delivery is recorded once), recorded in one transaction with the Keygate events
//! they cause and, for a change that landed, the queued retries of that system made due now.

use async_trait::async_trait;
use keygate_domain::Error;
use keygate_domain::events::{Event, NewEvent};
use keygate_domain::ids::{AccessSystemId, WorkspaceId};
use keygate_domain::model::truncate_to_micros;
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;

use crate::dialect::{Dialect, SqlStore, SqlValue};
use crate::error::StoreResult;
use crate::util::{parse, to_micros};

/// One vendor event to record: its id, the Keygate events it causes, and whether it says a
/// change Keygate pushed to the system has landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorEventRecord {
    /// The vendor's id of the event (what its repeated deliveries share).
    pub vendor_event_id: String,
    /// Appended when the event is new.
    pub events: Vec<NewEvent>,
    /// The system's queued provisions and revocations waiting for a retry (they ran at least
    /// once, and their answer was lost or ambiguous) become due now, when the event is new.
    pub hasten_retries: bool,
    /// Ids of this system received before this time are forgotten (the adapter refuses
    /// events that old, so a replay of one cannot pass as new).
    pub forget_before: OffsetDateTime,
}

/// What recording a new vendor event wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedVendorEvent {
    pub events: Vec<Event>,
    /// Retries made due now.
    pub retries_hastened: u64,
}

/// The inbound side of vendors' webhooks.
#[async_trait]
pub trait VendorEventStore: Send + Sync {
    /// The workspace of access system `id`, whatever workspace it is in: how a vendor webhook,
    /// whose URL names only the system, finds it. `None` when there is no such system.
    async fn access_system_workspace(
        &self,
        id: AccessSystemId,
    ) -> Result<Option<WorkspaceId>, Error>;

    /// Which of `vendor_event_ids` the system has already delivered.
    async fn seen_vendor_events(
        &self,
        workspace: WorkspaceId,
        system: AccessSystemId,
        vendor_event_ids: &[String],
    ) -> Result<Vec<String>, Error>;

    /// Records one vendor event, in one transaction: its id, its events, the retries it
    /// hastens. `Ok(None)` when the system had delivered it already (concurrent deliveries
    /// included): nothing is written.
    async fn record_vendor_event(
        &self,
        workspace: WorkspaceId,
        system: AccessSystemId,
        record: &VendorEventRecord,
        now: OffsetDateTime,
    ) -> Result<Option<RecordedVendorEvent>, Error>;
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
    async fn system_workspace(&self, id: AccessSystemId) -> StoreResult<Option<WorkspaceId>> {
        let ws: Option<String> =
            sqlx::query_scalar("SELECT workspace_id FROM access_systems WHERE acs_system_id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        ws.map(|w| parse("workspace id", &w)).transpose()
    }

    async fn seen_ids(
        &self,
        ws: WorkspaceId,
        system: AccessSystemId,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut seen = Vec::new();
        for id in ids {
            let found: Option<String> = sqlx::query_scalar("SELECT vendor_event_id FROM vendor_events WHERE workspace_id = $1 AND acs_system_id = $2 AND vendor_event_id = $3")
                .bind(ws.to_string())
                .bind(system.to_string())
                .bind(id.clone())
                .fetch_optional(&self.pool)
                .await?;
            seen.extend(found);
        }
        Ok(seen)
    }

    async fn record_vendor(
        &self,
        ws: WorkspaceId,
        system: AccessSystemId,
        r: &VendorEventRecord,
        now: OffsetDateTime,
    ) -> StoreResult<Option<RecordedVendorEvent>> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        sqlx::query("DELETE FROM vendor_events WHERE workspace_id = $1 AND acs_system_id = $2 AND received_at < $3")
            .bind(ws.to_string())
            .bind(system.to_string())
            .bind(to_micros(r.forget_before))
            .execute(&mut *tx)
            .await?;
        let claimed = sqlx::query("INSERT INTO vendor_events (workspace_id, acs_system_id, vendor_event_id, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, acs_system_id, vendor_event_id) DO NOTHING")
            .bind(ws.to_string())
            .bind(system.to_string())
            .bind(r.vendor_event_id.clone())
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&claimed) != 1 {
            // Delivered before: the first delivery's transaction wrote everything.
            tx.commit().await?;
            return Ok(None);
        }
        let retries_hastened = if r.hasten_retries {
            let done = sqlx::query("UPDATE jobs SET run_at = $3, updated_at = $3 WHERE workspace_id = $1 AND acs_system_id = $2 AND state = 'queued' AND kind IN ('provision', 'revoke') AND attempts > 0 AND run_at > $3")
                .bind(ws.to_string())
                .bind(system.to_string())
                .bind(to_micros(now))
                .execute(&mut *tx)
                .await?;
            D::rows_affected(&done)
        } else {
            0
        };
        let events = Self::append_events(&mut tx, ws, &r.events, now).await?;
        tx.commit().await?;
        Ok(Some(RecordedVendorEvent {
            events,
            retries_hastened,
        }))
    }
}

#[async_trait]
impl<D> VendorEventStore for SqlStore<D>
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
    async fn access_system_workspace(
        &self,
        id: AccessSystemId,
    ) -> Result<Option<WorkspaceId>, Error> {
        Ok(self.system_workspace(id).await?)
    }

    async fn seen_vendor_events(
        &self,
        ws: WorkspaceId,
        system: AccessSystemId,
        ids: &[String],
    ) -> Result<Vec<String>, Error> {
        Ok(self.seen_ids(ws, system, ids).await?)
    }

    async fn record_vendor_event(
        &self,
        ws: WorkspaceId,
        system: AccessSystemId,
        record: &VendorEventRecord,
        now: OffsetDateTime,
    ) -> Result<Option<RecordedVendorEvent>, Error> {
        Ok(self.record_vendor(ws, system, record, now).await?)
    }
}
