//! The reconciler: reads access systems back and repairs what drifted from the record. Access
//! systems can say one thing and do another (a credential removed by hand at the front desk,
//! a vendor that lost a change it acknowledged, a revocation that did not stick), so every
//! (access method, access system) pair without a job in flight is compared with what the system
//! holds, and a job is queued to put it back. Also revokes grants whose `ends_at` has passed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use keygate_app::tracker::{Committed, Tracker};
use keygate_domain::Error;
use keygate_domain::action::{JobWork, RevokeJob};
use keygate_domain::capability::PermissionModel;
use keygate_domain::grant::{self, DoorState, ProvisionJob};
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId};
use keygate_domain::model::{AccessSystem, now};
use keygate_providers::AccessSystemProvider;
use keygate_store::{ReconcileItem, Store};
use tokio::sync::watch;

/// Access methods read per page of a reconciliation pass.
const PAGE: u32 = 200;
/// Ended grants revoked per expiry check.
const EXPIRE_BATCH: u32 = 100;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Pairs compared with their access system.
    pub checked: u64,
    /// Pairs found drifted, with a repair queued.
    pub repaired: u64,
    /// Pairs whose access system could not be read (left for the next pass).
    pub unreadable: u64,
}

/// Why a pair needs repair, if it does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Drift {
    /// Nothing should be held but something is: take it back.
    Revoke(Vec<EntranceId>),
    /// Re-send the credential with these doors; `lost` were granted and are gone.
    Reissue {
        wanted: Vec<EntranceId>,
        lost: Vec<EntranceId>,
    },
}

/// Compares the record of one pair with what its access system holds.
fn drift(item: &ReconcileItem, held: Option<&keygate_providers::HeldCredential>) -> Option<Drift> {
    let revoking = |d: &grant::DoorStatus| {
        d.pending
            .as_ref()
            .is_some_and(|p| p.mutation_code == "revoking_access")
    };
    let wanted: Vec<EntranceId> = if item.gone {
        Vec::new()
    } else {
        item.doors
            .iter()
            .filter(|d| {
                matches!(
                    d.state,
                    DoorState::Granted | DoorState::Pending | DoorState::Unknown
                ) && !revoking(d)
            })
            .map(|d| d.entrance_id)
            .collect()
    };
    let held_doors: BTreeSet<EntranceId> = held
        .map(|h| h.entrance_ids.iter().copied().collect())
        .unwrap_or_default();
    if wanted.is_empty() {
        return held.map(|_| Drift::Revoke(item.doors.iter().map(|d| d.entrance_id).collect()));
    }
    let lost: Vec<EntranceId> = item
        .doors
        .iter()
        .filter(|d| d.state == DoorState::Granted && !held_doors.contains(&d.entrance_id))
        .map(|d| d.entrance_id)
        .collect();
    // A door still pending or unknown with no job in flight would wait for ever.
    let stuck = item
        .doors
        .iter()
        .any(|d| matches!(d.state, DoorState::Pending | DoorState::Unknown));
    let extra = held_doors.iter().any(|e| !wanted.contains(e));
    let schedule = held.is_some_and(|h| {
        h.starts_at.is_some_and(|s| s != item.starts_at) || h.ends_at != item.ends_at
    });
    (!lost.is_empty() || stuck || extra || schedule).then_some(Drift::Reissue { wanted, lost })
}

/// The reconciler of one orchestrator process.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    provider: Arc<dyn AccessSystemProvider>,
    /// Wakes the orchestrator after repairs or expiries were queued.
    tracker: Tracker,
    call_timeout: Duration,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn AccessSystemProvider>,
        tracker: Tracker,
        call_timeout: Duration,
    ) -> Self {
        Self {
            store,
            provider,
            tracker,
            call_timeout,
        }
    }

    /// Every `every`, a full pass; every `expiry_every`, revokes grants that ended. Runs until
    /// `stop` turns true. The first pass waits one period: a fresh start has jobs to finish first.
    pub async fn run(
        self,
        every: Option<Duration>,
        expiry_every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut expiry = tokio::time::interval(expiry_every.max(Duration::from_millis(100)));
        let period = every.unwrap_or(Duration::from_secs(86_400));
        let mut pass = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = expiry.tick() => {
                    if let Err(e) = self.expire().await {
                        tracing::warn!(error = %e, "expiry check failed");
                    }
                }
                _ = pass.tick(), if every.is_some() => {
                    match self.pass().await {
                        Ok(r) => {
                            keygate_telemetry::metrics::reconcile_pass(Some((r.checked, r.repaired, r.unreadable)));
                            tracing::info!(checked = r.checked, repaired = r.repaired, unreadable = r.unreadable, "reconciliation pass")
                        }
                        Err(e) => {
                            keygate_telemetry::metrics::reconcile_pass(None);
                            tracing::warn!(error = %e, "reconciliation pass failed")
                        }
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    }

    /// Revokes the access of grants whose `ends_at` has passed. A `debug` span: it runs every
    /// few seconds, mostly finding nothing, and would flood the exported traces.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn expire(&self) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let touched = self.store.expire_grants(now(), EXPIRE_BATCH).await?;
            if touched.is_empty() {
                break;
            }
            total += touched.len();
            for ws in touched {
                tracing::info!(workspace_id = %ws, "ended access grants are being revoked");
                // The revocation jobs are ours to run: no need to wait for the next poll.
                self.tracker.committed(Committed::new(ws).jobs()).await;
            }
        }
        Ok(total)
    }

    /// One full pass over every (method, system) pair without a job in flight.
    #[tracing::instrument(name = "reconcile_pass", skip_all)]
    pub async fn pass(&self) -> Result<PassReport, Error> {
        let mut report = PassReport::default();
        let mut systems: HashMap<AccessSystemId, AccessSystem> = HashMap::new();
        let mut after: Option<AccessMethodId> = None;
        loop {
            let page = self.store.reconcile_page(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.access_method_id);
            for item in &page {
                let system = match systems.get(&item.acs_system_id) {
                    Some(s) => s.clone(),
                    None => {
                        let s = self
                            .store
                            .get_access_system(item.workspace_id, item.acs_system_id)
                            .await?;
                        systems.insert(s.id, s.clone());
                        s
                    }
                };
                report.checked += 1;
                match self.reconcile(&system, item).await {
                    Ok(true) => report.repaired += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.unreadable += 1;
                        tracing::warn!(error = %e, acs_system_id = %item.acs_system_id, "could not read the access system back");
                    }
                }
            }
        }
        if report.repaired > 0 {
            // Repairs span workspaces; each was committed by the store already.
            self.tracker.wake_orchestrator();
        }
        Ok(report)
    }

    /// Reads one pair back and queues its repair; `Ok(true)` when it had drifted.
    #[tracing::instrument(skip_all, fields(workspace_id = %item.workspace_id, access_method_id = %item.access_method_id, acs_system_id = %item.acs_system_id))]
    async fn reconcile(&self, system: &AccessSystem, item: &ReconcileItem) -> Result<bool, Error> {
        let held = crate::calls::call(
            system,
            "read_back",
            self.call_timeout,
            self.provider.read_back(system, item.access_method_id),
            crate::calls::outcome,
        )
        .await
        .map_err(|_| Error::Unavailable {
            message: "the access system did not answer the read-back".into(),
        })?
        .map_err(|e| Error::Unavailable {
            message: e.to_string(),
        })?;
        let Some(d) = drift(item, held.as_ref()) else {
            return Ok(false);
        };
        let (work, lost) = match d {
            Drift::Revoke(entrance_ids) => (
                JobWork::Revoke(RevokeJob {
                    access_grant_id: item.access_grant_id,
                    access_method_id: item.access_method_id,
                    acs_system_id: item.acs_system_id,
                    entrance_ids,
                }),
                Vec::new(),
            ),
            Drift::Reissue { wanted, lost } => {
                let mut groups = Vec::new();
                if system.capabilities.permission_model == PermissionModel::AccessGroups {
                    let planning = self
                        .store
                        .planning_entrances(item.workspace_id, &wanted)
                        .await?;
                    let refs: Vec<&grant::PlanningEntrance> = planning.iter().collect();
                    groups = grant::cover_with_groups(&refs).0;
                }
                (
                    JobWork::Provision(ProvisionJob {
                        access_grant_id: item.access_grant_id,
                        access_method_id: item.access_method_id,
                        acs_system_id: item.acs_system_id,
                        mode: item.mode,
                        entrance_ids: wanted,
                        access_group_ids: groups,
                        requested_code: item.code.clone(),
                        removed_entrance_ids: Vec::new(),
                        update: true,
                    }),
                    lost,
                )
            }
        };
        tracing::warn!(
            kind = work.kind(),
            lost = lost.len(),
            "access system drifted from the record; repairing"
        );
        self.store
            .repair(
                item,
                &lost,
                "the access system no longer had this access; issuing it again",
                &work,
                now(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_domain::capability::AccessMethodMode;
    use keygate_domain::grant::DoorStatus;
    use keygate_domain::ids::{AccessGrantId, WorkspaceId};
    use keygate_providers::HeldCredential;

    fn item(states: &[DoorState], gone: bool) -> ReconcileItem {
        let t = now();
        let system = AccessSystemId::new();
        ReconcileItem {
            workspace_id: WorkspaceId::new(),
            access_grant_id: AccessGrantId::new(),
            access_method_id: AccessMethodId::new(),
            acs_system_id: system,
            mode: AccessMethodMode::MobileKey,
            code: None,
            gone,
            starts_at: t,
            ends_at: None,
            doors: states
                .iter()
                .map(|s| DoorStatus {
                    entrance_id: EntranceId::new(),
                    acs_system_id: system,
                    state: *s,
                    reason: None,
                    updated_at: t,
                    pending: None,
                })
                .collect(),
        }
    }

    fn held(item: &ReconcileItem, doors: &[usize]) -> HeldCredential {
        HeldCredential {
            entrance_ids: doors.iter().map(|i| item.doors[*i].entrance_id).collect(),
            starts_at: Some(item.starts_at),
            ends_at: item.ends_at,
            code: None,
            card_encoding_required: false,
        }
    }

    #[test]
    fn in_step_is_left_alone() {
        let i = item(
            &[DoorState::Granted, DoorState::Granted, DoorState::Failed],
            false,
        );
        assert_eq!(drift(&i, Some(&held(&i, &[0, 1]))), None);
        let gone = item(&[DoorState::Revoked], true);
        assert_eq!(drift(&gone, None), None);
    }

    #[test]
    fn lost_doors_are_issued_again() {
        let i = item(&[DoorState::Granted, DoorState::Granted], false);
        let Some(Drift::Reissue { wanted, lost }) = drift(&i, Some(&held(&i, &[0]))) else {
            panic!("drift expected");
        };
        assert_eq!(wanted.len(), 2);
        assert_eq!(lost, vec![i.doors[1].entrance_id]);
        assert!(matches!(drift(&i, None), Some(Drift::Reissue { lost, .. }) if lost.len() == 2));
    }

    #[test]
    fn access_that_should_be_gone_is_revoked() {
        let i = item(&[DoorState::Revoked], true);
        assert!(matches!(
            drift(&i, Some(&held(&i, &[0]))),
            Some(Drift::Revoke(_))
        ));
        // A door revoked in the record but still open at the vendor, while others stay.
        let j = item(&[DoorState::Granted, DoorState::Revoked], false);
        assert!(
            matches!(drift(&j, Some(&held(&j, &[0, 1]))), Some(Drift::Reissue { lost, .. }) if lost.is_empty())
        );
    }

    #[test]
    fn a_wrong_schedule_is_sent_again() {
        let i = item(&[DoorState::Granted], false);
        let mut h = held(&i, &[0]);
        h.ends_at = Some(i.starts_at + time::Duration::days(1));
        assert!(drift(&i, Some(&h)).is_some());
    }
}
