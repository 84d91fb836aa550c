//! The orchestrator against real stores and the virtual access systems.

use std::sync::Arc;
use std::time::Duration;

use keygate_app::tracker::Tracker;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::EventFilter;
use keygate_domain::grant::{AccessMethod, DoorState};
use keygate_domain::ids::{AccessGrantId, UserIdentityId, WorkspaceId};
use keygate_domain::page::PageRequest;
use keygate_domain::update::{EndsAt, GrantChange};
use keygate_orchestrator::{Orchestrator, OrchestratorConfig, Reconciler};
use keygate_providers::virtual_system::{Fault, VirtualSystems};
use keygate_store::conformance::{
    entrance_named, new_grant, quick_start_entrances, seeded_workspace, update_grant,
};
use keygate_store::testdb::TestDb;
use keygate_store::{MethodFilter, Store};
use tokio::sync::watch;

fn cfg(owner: &str) -> OrchestratorConfig {
    OrchestratorConfig {
        owner: owner.into(),
        poll: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
        max_attempts: 4,
        breaker_threshold: 100,
        ..Default::default()
    }
}

struct Running {
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn start(store: Arc<dyn Store>, systems: &VirtualSystems, owners: &[&str]) -> Running {
    let (stop, rx) = watch::channel(false);
    for owner in owners {
        let o = Orchestrator::new(
            store.clone(),
            Arc::new(systems.clone()),
            tracker(&store),
            cfg(owner),
        );
        tokio::spawn(o.run(rx.clone()));
    }
    Running { stop }
}

/// A planned grant for Jane over `doors` with `modes`, written as the gateway writes it.
async fn create(
    store: &dyn Store,
    ws: WorkspaceId,
    doors: &[keygate_domain::ids::EntranceId],
    modes: &[AccessMethodMode],
) -> (
    keygate_domain::grant::AccessGrant,
    Vec<keygate_domain::events::Event>,
) {
    store
        .create_access_grant(ws, &new_grant(store, ws, doors, modes).await, None)
        .await
        .expect("create")
}

async fn methods(store: &dyn Store, ws: WorkspaceId, g: AccessGrantId) -> Vec<AccessMethod> {
    store
        .list_access_methods(
            ws,
            &MethodFilter {
                access_grant_id: Some(g),
                ..Default::default()
            },
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("methods")
        .items
}

/// Waits until no door of the grant is pending or unknown.
async fn settled(store: &dyn Store, ws: WorkspaceId, g: AccessGrantId) -> Vec<AccessMethod> {
    for _ in 0..1000 {
        let ms = methods(store, ws, g).await;
        if ms.iter().all(|m| {
            m.doors
                .iter()
                .all(|d| !matches!(d.state, DoorState::Pending | DoorState::Unknown))
        }) {
            return ms;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("grant did not settle: {:?}", methods(store, ws, g).await);
}

async fn event_types(store: &dyn Store, ws: WorkspaceId) -> Vec<String> {
    store
        .list_events(ws, &EventFilter::default(), 0, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn fans_out_to_every_door(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "fan-out").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let (g, _) = create(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::Card, AccessMethodMode::MobileKey],
    )
    .await;
    let systems = VirtualSystems::new(Duration::from_millis(30));
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    assert!(
        ms.iter()
            .all(|m| m.doors.iter().all(|d| d.state == DoorState::Granted))
    );
    let mobile = ms
        .iter()
        .find(|m| m.mode == AccessMethodMode::MobileKey)
        .expect("mobile");
    assert!(mobile.is_issued);
    assert!(
        ms.iter()
            .filter(|m| m.mode == AccessMethodMode::Card)
            .all(|m| m.is_card_encoding_required && !m.is_issued)
    );
    let types = event_types(&*store, ws).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_granted_to_all_doors")
            .count(),
        1
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_granted_to_door")
            .count(),
        4
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("access_grant.access_granted_to_all_doors")
    );
    assert_eq!(
        systems.credential_count(),
        4,
        "one credential per (method, system)"
    );
}

async fn transient_and_ambiguous_faults_are_retried_without_duplicates(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "faults").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors)
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(5));
    systems.inject(
        planning[0].acs_system_id,
        [Fault::Unavailable, Fault::Timeout],
    );
    systems.inject(planning[1].acs_system_id, [Fault::FailedButApplied]);
    let (g, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    assert!(
        ms[0].doors.iter().all(|d| d.state == DoorState::Granted),
        "{ms:?}"
    );
    assert!(ms[0].is_issued);
    assert_eq!(
        systems.credential_count(),
        2,
        "the 'failed but applied' call was not applied twice"
    );
    assert_eq!(
        systems.calls(),
        4,
        "3 calls to the first system; 1 to the second, whose 'failed but applied' answer was \
         read back instead of sent again"
    );
    assert_eq!(
        event_types(&*store, ws)
            .await
            .iter()
            .filter(|t| *t == "access_method.issued")
            .count(),
        1
    );
}

async fn a_delayed_confirmation_is_neither_failed_nor_doubled(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "delayed").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors)
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(5));
    // The first system answers 202 and applies the change 40 ms later, out of band.
    systems.inject(
        planning[0].acs_system_id,
        [Fault::DelayedConfirmation(Duration::from_millis(40))],
    );
    let (g, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    assert!(
        ms[0].doors.iter().all(|d| d.state == DoorState::Granted),
        "{ms:?}"
    );
    // Wait past the late change: it lands on the same credential, not a second one.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(systems.credential_count(), 2, "one credential per system");
    assert!(
        systems
            .credential(planning[0].acs_system_id, ms[0].id)
            .await
            .is_some_and(|c| c.entrance_ids == vec![doors[0]])
    );
    let types = event_types(&*store, ws).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_method.issued")
            .count(),
        1
    );
    assert!(!types.iter().any(|t| t == "access_method.failed_to_issue"));
}

async fn a_permanent_rejection_fails_only_its_door(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "reject").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors)
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(5));
    systems.inject(planning[1].acs_system_id, [Fault::RejectEntrance(doors[1])]);
    let (g, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    let door = |e| {
        ms[0]
            .doors
            .iter()
            .find(|d| d.entrance_id == e)
            .expect("door")
            .clone()
    };
    assert_eq!(door(doors[0]).state, DoorState::Granted);
    assert_eq!(door(doors[1]).state, DoorState::Failed);
    assert!(
        door(doors[1])
            .reason
            .unwrap_or_default()
            .contains("rejected")
    );
    assert!(ms[0].is_issued, "the granted door is usable");
    let grant = store.get_access_grant(ws, g.id).await.expect("grant");
    assert!(
        grant
            .warnings
            .iter()
            .any(|w| w.code == "underprovisioned_access"
                && w.message.contains(&doors[1].to_string()))
    );
    let types = event_types(&*store, ws).await;
    assert!(
        !types
            .iter()
            .any(|t| t == "access_grant.access_granted_to_all_doors")
    );
}

/// An access system that cannot be reached at all spends no attempt: far more failures than the
/// budget leave the doors pending with the reason, and they are granted once it answers.
async fn an_unreachable_system_keeps_doors_pending_until_it_answers(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "unreachable").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors[..1])
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(1));
    // Three budgets' worth of failures (max_attempts is 4).
    systems.inject(
        planning[0].acs_system_id,
        std::iter::repeat_n(Fault::Unreachable, 12),
    );
    let (g, _) = store
        .create_access_grant(
            ws,
            &new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await,
            None,
        )
        .await
        .expect("create");
    let _run = start(store.clone(), &systems, &["w1"]);
    let system_id = planning[0].acs_system_id;
    let mut saw_reason = false;
    let mut saw_system_error = false;
    for _ in 0..200 {
        let s = store
            .get_access_system(ws, system_id)
            .await
            .expect("system");
        saw_system_error |= s
            .health
            .errors
            .iter()
            .any(|e| e.code == "provider_unreachable");
        let ms = methods(&*store, ws, g.id).await;
        let d = &ms[0].doors[0];
        if d.state == DoorState::Pending
            && d.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("provider_unreachable"))
        {
            saw_reason = true;
        }
        if d.state != DoorState::Pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_reason, "pending doors show why they wait");
    assert!(saw_system_error, "the system shows it cannot be reached");
    let ms = settled(&*store, ws, g.id).await;
    assert_eq!(ms[0].doors[0].state, DoorState::Granted, "{ms:?}");
    assert!(ms[0].is_issued);
    assert!(ms[0].errors.is_empty());
    let s = store
        .get_access_system(ws, system_id)
        .await
        .expect("system");
    assert!(s.health.errors.is_empty(), "cleared by the answer: {s:?}");
    let types = event_types(&*store, ws).await;
    let pos = |t: &str| types.iter().position(|x| x == t);
    assert!(
        pos("acs_system.disconnected") < pos("acs_system.connected")
            && pos("acs_system.disconnected").is_some(),
        "{types:?}"
    );
}

/// A vendor's 429s are waited out (its `Retry-After`) without spending attempts: more of them
/// than the budget still end granted, never failed.
async fn a_vendor_rate_limit_never_fails_a_door(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "rate-limited").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors[..1])
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(1));
    // More 429s than the budget (max_attempts is 4), each asking to retry after 1 s.
    systems.inject(
        planning[0].acs_system_id,
        std::iter::repeat_n(Fault::RateLimited, 5),
    );
    let (g, _) = store
        .create_access_grant(
            ws,
            &new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await,
            None,
        )
        .await
        .expect("create");
    let started = std::time::Instant::now();
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    assert_eq!(ms[0].doors[0].state, DoorState::Granted, "{ms:?}");
    assert!(ms[0].errors.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "each Retry-After was honoured: {:?}",
        started.elapsed()
    );
}

async fn an_exhausted_retry_budget_is_a_visible_failure(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "budget").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors[..1])
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(1));
    systems.inject(
        planning[0].acs_system_id,
        std::iter::repeat_n(Fault::Unavailable, 10),
    );
    let (g, _) = store
        .create_access_grant(
            ws,
            &new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await,
            None,
        )
        .await
        .expect("create");
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = settled(&*store, ws, g.id).await;
    assert_eq!(ms[0].doors[0].state, DoorState::Failed);
    assert!(
        ms[0].doors[0]
            .reason
            .clone()
            .unwrap_or_default()
            .contains("gave up after 4 attempts")
    );
    assert!(ms[0].errors.iter().any(|e| e.code == "failed_to_issue"));
    let grant = store.get_access_grant(ws, g.id).await.expect("grant");
    assert!(
        grant
            .errors
            .iter()
            .any(|e| e.code == "cannot_create_requested_access_methods"),
        "{:?}",
        grant.errors
    );
    let types = event_types(&*store, ws).await;
    assert!(types.contains(&"access_method.failed_to_issue".to_owned()));
    assert!(types.contains(&"access_grant.could_not_create_requested_access_methods".to_owned()));
}

async fn competing_workers_apply_each_outcome_once(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "compete").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let systems = VirtualSystems::new(Duration::from_millis(10));
    let mut grants = Vec::new();
    for _ in 0..6 {
        let (g, _) = create(
            &*store,
            ws,
            &doors,
            &[AccessMethodMode::MobileKey, AccessMethodMode::Card],
        )
        .await;
        grants.push(g.id);
    }
    let _run = start(store.clone(), &systems, &["w1", "w2", "w3"]);
    for g in &grants {
        settled(&*store, ws, *g).await;
    }
    let types = event_types(&*store, ws).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_granted_to_all_doors")
            .count(),
        6
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_granted_to_door")
            .count(),
        6 * 4
    );
    assert_eq!(systems.credential_count(), 6 * 4);
    assert_eq!(store.count_jobs("done").await.ok(), Some(6 * 4));
}

async fn encoder_faults_are_typed_and_a_retry_succeeds(store: Arc<dyn Store>) {
    use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus, EncodeJob};
    use keygate_domain::ids::ActionAttemptId;
    let ws = seeded_workspace(&*store, "encode").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let systems = VirtualSystems::new(Duration::from_millis(5));
    let (g, _) = store
        .create_access_grant(
            ws,
            &new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::Card]).await,
            None,
        )
        .await
        .expect("create");
    let _run = start(store.clone(), &systems, &["w1"]);
    let card = settled(&*store, ws, g.id).await.remove(0);
    assert!(card.is_ready_for_encoding);
    let system = card.doors[0].acs_system_id;
    let encoder = store
        .list_encoders(
            ws,
            Some(system),
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("encoders")
        .items[0]
        .id;
    systems.inject(system, [Fault::EncoderOffline]);
    let encode = |store: Arc<dyn Store>| async move {
        let a = ActionAttempt {
            id: ActionAttemptId::new(),
            workspace_id: ws,
            action_type: ActionType::EncodeCredential,
            status: AttemptStatus::Pending,
            access_method_id: Some(card.id),
            acs_encoder_id: Some(encoder),
            acs_entrance_id: None,
            result: None,
            error: None,
            created_at: keygate_domain::model::now(),
            completed_at: None,
        };
        let job = EncodeJob {
            action_attempt_id: a.id,
            access_method_id: card.id,
            acs_system_id: system,
            acs_encoder_id: encoder,
        };
        store
            .create_action_attempt(
                ws,
                &a,
                &keygate_domain::action::JobWork::Encode(job.clone()),
                None,
            )
            .await
            .expect("attempt");
        for _ in 0..200 {
            let got = store.get_action_attempt(ws, a.id).await.expect("get");
            if got.status != AttemptStatus::Pending {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("attempt stayed pending");
    };
    let failed = encode(store.clone()).await;
    assert_eq!(failed.status, AttemptStatus::Error);
    assert_eq!(
        failed.error.as_ref().map(|e| e.error_type.as_str()),
        Some("encoder_not_online")
    );
    assert!(
        !store
            .get_access_method(ws, card.id)
            .await
            .expect("m")
            .is_issued,
        "a failed encoding issues nothing"
    );
    let ok = encode(store.clone()).await;
    assert_eq!(ok.status, AttemptStatus::Success);
    let m = store.get_access_method(ws, card.id).await.expect("m");
    assert!(m.is_issued && !m.is_card_encoding_required);
}

async fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn deleting_an_issued_grant_revokes_everything(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "delete").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let systems = VirtualSystems::new(Duration::from_millis(5));
    let (g, _) = create(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::MobileKey, AccessMethodMode::Card],
    )
    .await;
    let _run = start(store.clone(), &systems, &["w1"]);
    let before = settled(&*store, ws, g.id).await;
    assert_eq!(systems.credential_count(), 4);
    let deleted = store
        .delete_access_grant(ws, g.id, keygate_domain::model::now())
        .await
        .expect("delete");
    assert_eq!(
        deleted.last().map(|e| e.event_type.as_str()),
        Some("access_grant.deleted")
    );
    assert!(matches!(
        store.get_access_grant(ws, g.id).await,
        Err(keygate_domain::Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get_access_method(ws, before[0].id).await,
        Err(keygate_domain::Error::NotFound { .. })
    ));
    assert!(
        matches!(
            store
                .delete_access_grant(ws, g.id, keygate_domain::model::now())
                .await,
            Err(keygate_domain::Error::NotFound { .. })
        ),
        "deleting twice"
    );
    assert!(
        wait_for(|| systems.credential_count() == 0).await,
        "every credential revoked at the vendor"
    );
    let mut types = Vec::new();
    for _ in 0..100 {
        types = event_types(&*store, ws).await;
        if types
            .iter()
            .filter(|t| *t == "access_method.revoked")
            .count()
            == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_method.revoked")
            .count(),
        3
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_to_door_lost")
            .count(),
        4
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_method.deleted")
            .count(),
        3
    );
    assert!(
        !types.iter().any(|t| t == "access_method.reissued"),
        "revoking a deleted mobile key system by system is not a reissue: {types:?}"
    );
}

async fn deleting_during_an_in_flight_provision_leaves_nothing_behind(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "delete-race").await;
    let doors = quick_start_entrances(&*store, ws).await;
    // Calls apply after 150 ms and confirm after 300 ms; the delete lands in between.
    let systems = VirtualSystems::new(Duration::from_millis(300));
    let _run = start(store.clone(), &systems, &["w1"]);
    let (g, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    assert!(
        wait_for(|| systems.credential_count() == 2).await,
        "both calls applied"
    );
    store
        .delete_access_grant(ws, g.id, keygate_domain::model::now())
        .await
        .expect("delete");
    assert!(
        wait_for(|| systems.credential_count() == 0).await,
        "the late provision results were revoked too"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(systems.credential_count(), 0, "and nothing came back");
    assert_eq!(store.count_jobs("queued").await.ok(), Some(0));
}

async fn an_open_circuit_does_not_burn_the_retry_budget(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "breaker").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let planning = store
        .planning_entrances(ws, &doors[..1])
        .await
        .expect("planning");
    let systems = VirtualSystems::new(Duration::from_millis(1));
    systems.inject(
        planning[0].acs_system_id,
        [Fault::Unavailable, Fault::Unavailable],
    );
    let (g, _) = store
        .create_access_grant(
            ws,
            &new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await,
            None,
        )
        .await
        .expect("create");
    let (stop, rx) = watch::channel(false);
    let o = Orchestrator::new(
        store.clone(),
        Arc::new(systems.clone()),
        tracker(&store),
        OrchestratorConfig {
            breaker_threshold: 2,
            breaker_open_for: Duration::from_millis(300),
            max_attempts: 3,
            ..cfg("w1")
        },
    );
    tokio::spawn(o.run(rx));
    let ms = settled(&*store, ws, g.id).await;
    let _ = stop.send(true);
    assert_eq!(ms[0].doors[0].state, DoorState::Granted, "{ms:?}");
    assert_eq!(
        systems.calls(),
        3,
        "two failures, then one call after the circuit closed"
    );
}

async fn a_job_of_a_grant_deleted_before_it_ran_finishes(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "deleted-early").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let (g, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    store
        .delete_access_grant(ws, g.id, keygate_domain::model::now())
        .await
        .expect("delete");
    let systems = VirtualSystems::new(Duration::from_millis(5));
    let _run = start(store.clone(), &systems, &["w1"]);
    let mut queued = -1;
    for _ in 0..200 {
        queued = store.count_jobs("queued").await.expect("count")
            + store.count_jobs("running").await.expect("count");
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(queued, 0, "every job of the deleted grant ends");
    assert_eq!(systems.credential_count(), 0, "and nothing was granted");
}

/// Waits until no door of the grant is pending, unknown or waiting on a change.
async fn quiet(store: &dyn Store, ws: WorkspaceId, g: AccessGrantId) -> Vec<AccessMethod> {
    for _ in 0..500 {
        let ms = methods(store, ws, g).await;
        if ms.iter().all(|m| {
            m.doors.iter().all(|d| {
                !matches!(d.state, DoorState::Pending | DoorState::Unknown) && d.pending.is_none()
            })
        }) {
            return ms;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("grant did not settle: {:?}", methods(store, ws, g).await);
}

async fn an_update_changes_only_what_changed(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "update").await;
    let doors = quick_start_entrances(&*store, ws).await; // Space Room 101, Visionline Room 301
    let (g, _) = create(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::Card, AccessMethodMode::MobileKey],
    )
    .await;
    let systems = VirtualSystems::new(Duration::from_millis(20));
    let _run = start(store.clone(), &systems, &["w1"]);
    let before = settled(&*store, ws, g.id).await;
    let events_before = event_types(&*store, ws).await.len();

    let fitness = entrance_named(&*store, ws, "virtual_visionline", "Fitness Center").await;
    let ks_main = entrance_named(&*store, ws, "virtual_salto_ks", "Main Entrance").await;
    let new_end = g.ends_at.expect("ends") + time::Duration::days(2);
    let (updated, _) = update_grant(
        &*store,
        ws,
        g.id,
        &GrantChange {
            starts_at: None,
            ends_at: EndsAt::Set(new_end),
            add: vec![fitness, ks_main],
            remove: vec![doors[0]],
            name: None,
        },
    )
    .await
    .expect("update");
    assert_eq!(updated.entrance_ids, vec![doors[1], fitness, ks_main]);
    assert_eq!(updated.ends_at, Some(new_end));
    let codes: Vec<&str> = updated
        .pending_mutations
        .iter()
        .map(|p| p.mutation_code.as_str())
        .collect();
    for c in [
        "provisioning_access",
        "revoking_access",
        "updating_access_times",
    ] {
        assert!(
            codes.contains(&c),
            "{c} pending right after the update: {codes:?}"
        );
    }
    assert!(
        updated
            .warnings
            .iter()
            .any(|w| w.code == "underprovisioned_access" && w.message.contains("Main Entrance")),
        "Salto KS takes no cards: {:?}",
        updated.warnings
    );
    assert_eq!(
        updated.access_method_ids.len(),
        before.len(),
        "every added door fits an existing method"
    );

    let after = quiet(&*store, ws, g.id).await;
    let space = before
        .iter()
        .find(|m| m.mode == AccessMethodMode::Card && m.doors[0].entrance_id == doors[0])
        .expect("Salto Space card");
    let vision = before
        .iter()
        .find(|m| m.mode == AccessMethodMode::Card && m.doors[0].entrance_id == doors[1])
        .expect("Visionline card");
    let find = |id| after.iter().find(|m| m.id == id).expect("method");
    // The Salto Space card lost its only door: revoked there, and nothing left at the vendor.
    let space_after = find(space.id);
    assert!(
        space_after
            .doors
            .iter()
            .all(|d| d.state == DoorState::Revoked)
    );
    assert!(!space_after.is_issued);
    assert!(
        systems
            .credential(space.doors[0].acs_system_id, space.id)
            .await
            .is_none()
    );
    // The Visionline card now opens two doors until the new end, and must be encoded again.
    let vision_after = find(vision.id);
    assert_eq!(vision_after.doors.len(), 2);
    assert!(
        vision_after
            .doors
            .iter()
            .all(|d| d.state == DoorState::Granted)
    );
    assert!(vision_after.is_card_encoding_required && vision_after.is_ready_for_encoding);
    let held = systems
        .credential(vision.doors[0].acs_system_id, vision.id)
        .await
        .expect("Visionline credential");
    assert_eq!(held.entrance_ids.len(), 2);
    assert!(held.entrance_ids.contains(&fitness));
    assert_eq!(
        held.ends_at,
        Some(new_end),
        "the new end reached the vendor"
    );
    // The mobile key: Room 101 taken back, Fitness Center and Salto KS added, reissued once.
    let mobile = after
        .iter()
        .find(|m| m.mode == AccessMethodMode::MobileKey)
        .expect("mobile");
    for (door, state) in [
        (doors[0], DoorState::Revoked),
        (doors[1], DoorState::Granted),
        (fitness, DoorState::Granted),
        (ks_main, DoorState::Granted),
    ] {
        let d = mobile
            .doors
            .iter()
            .find(|d| d.entrance_id == door)
            .expect("door");
        assert_eq!(d.state, state, "{d:?}");
    }
    assert!(mobile.is_issued);

    let grant = store.get_access_grant(ws, g.id).await.expect("grant");
    assert!(
        grant.pending_mutations.is_empty(),
        "{:?}",
        grant.pending_mutations
    );
    let new_events: Vec<String> = event_types(&*store, ws).await[events_before..].to_vec();
    let count = |t: &str| new_events.iter().filter(|e| *e == t).count();
    assert_eq!(
        new_events[0], "access_grant.access_times_changed",
        "{new_events:?}"
    );
    assert_eq!(
        count("access_grant.access_to_door_lost"),
        2,
        "{new_events:?}"
    );
    assert_eq!(count("access_method.revoked"), 1, "{new_events:?}");
    assert_eq!(
        count("access_grant.access_granted_to_door"),
        3,
        "{new_events:?}"
    );
    assert_eq!(
        count("access_method.card_encoding_required"),
        1,
        "{new_events:?}"
    );
    assert_eq!(count("access_method.reissued"), 1, "{new_events:?}");
    assert_eq!(
        count("access_grant.access_granted_to_all_doors"),
        1,
        "{new_events:?}"
    );
    assert_eq!(
        new_events.last().map(String::as_str),
        Some("access_grant.access_granted_to_all_doors"),
        "{new_events:?}"
    );
    // Mobile key in Space, Visionline and KS, and the Visionline card: the Space card is gone.
    assert_eq!(systems.credential_count(), 3);
}

fn reconciler(store: &Arc<dyn Store>, systems: &VirtualSystems) -> Reconciler {
    Reconciler::new(
        store.clone(),
        Arc::new(systems.clone()),
        tracker(store),
        Duration::from_secs(5),
    )
}

/// A tracker of this test's own (in-process cache, doorbell and bells).
fn tracker(store: &Arc<dyn Store>) -> Tracker {
    Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(100)),
    )
}

async fn drift_is_read_back_and_repaired(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "drift").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let (g, _) = create(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::Card, AccessMethodMode::MobileKey],
    )
    .await;
    let systems = VirtualSystems::new(Duration::from_millis(5));
    let _run = start(store.clone(), &systems, &["w1"]);
    let ms = quiet(&*store, ws, g.id).await;
    let r = reconciler(&store, &systems);
    let clean = r.pass().await.expect("pass");
    assert_eq!(
        (clean.checked, clean.repaired),
        (4, 0),
        "nothing drifted yet"
    );

    // Behind Keygate's back: the mobile key vanishes from Visionline, and the Salto Space card
    // is made to open a door it was never given.
    let mobile = ms
        .iter()
        .find(|m| m.mode == AccessMethodMode::MobileKey)
        .expect("mobile");
    let vision = mobile
        .doors
        .iter()
        .find(|d| d.entrance_id == doors[1])
        .expect("door")
        .acs_system_id;
    systems.forget(vision, mobile.id).await;
    let card = ms
        .iter()
        .find(|m| m.mode == AccessMethodMode::Card && m.doors[0].entrance_id == doors[0])
        .expect("card");
    let space = card.doors[0].acs_system_id;
    let pool = entrance_named(&*store, ws, "virtual_salto_space", "Pool").await;
    systems.tamper(space, card.id, vec![doors[0], pool]).await;
    let before = event_types(&*store, ws).await.len();

    let report = r.pass().await.expect("pass");
    assert_eq!(report.repaired, 2, "{report:?}");
    let lost = methods(&*store, ws, g.id).await;
    let door = lost
        .iter()
        .find(|m| m.id == mobile.id)
        .and_then(|m| m.doors.iter().find(|d| d.entrance_id == doors[1]))
        .expect("door");
    assert_eq!(door.state, DoorState::Pending, "{door:?}");
    assert!(
        door.reason
            .as_deref()
            .unwrap_or("")
            .contains("no longer had")
    );
    quiet(&*store, ws, g.id).await;
    assert!(
        systems.credential(vision, mobile.id).await.is_some(),
        "issued again"
    );
    assert_eq!(
        systems
            .credential(space, card.id)
            .await
            .map(|c| c.entrance_ids),
        Some(vec![doors[0]]),
        "the extra door was taken back"
    );
    let after = event_types(&*store, ws).await[before..].to_vec();
    assert!(
        after.contains(&"access_grant.access_granted_to_door".to_owned()),
        "{after:?}"
    );
    assert_eq!(r.pass().await.expect("pass").repaired, 0, "in step again");

    // A revocation that did not stick: the method is deleted and revoked, then reappears.
    store
        .delete_access_method(ws, card.id, keygate_domain::model::now())
        .await
        .expect("delete");
    for _ in 0..200 {
        if systems.credential(space, card.id).await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(systems.credential(space, card.id).await.is_none());
    // The revoke job is done (not only its vendor call), so the pair is up for reconciling.
    for _ in 0..200 {
        let busy = store.count_jobs("queued").await.unwrap_or(1)
            + store.count_jobs("running").await.unwrap_or(1);
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ghost = systems
        .credential(vision, mobile.id)
        .await
        .expect("template");
    ghost.acs_system_id = space;
    ghost.access_method_id = card.id;
    ghost.entrance_ids = vec![doors[0]];
    systems.plant(ghost).await;
    assert_eq!(r.pass().await.expect("pass").repaired, 1);
    for _ in 0..200 {
        if systems.credential(space, card.id).await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        systems.credential(space, card.id).await.is_none(),
        "taken back again"
    );
}

async fn ended_grants_are_revoked_everywhere(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "expiry").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let mut new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    new.grant.ends_at = Some(new.grant.starts_at + time::Duration::milliseconds(1500));
    let (g, _) = store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    let systems = VirtualSystems::new(Duration::from_millis(5));
    let _run = start(store.clone(), &systems, &["w1"]);
    quiet(&*store, ws, g.id).await;
    assert_eq!(systems.credential_count(), 2);
    let r = reconciler(&store, &systems);
    assert_eq!(r.expire().await.expect("expire"), 0, "not ended yet");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(r.expire().await.expect("expire"), 1);
    assert_eq!(r.expire().await.expect("expire"), 0, "once");
    for _ in 0..200 {
        if systems.credential_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(systems.credential_count(), 0);
    let mut ms = methods(&*store, ws, g.id).await;
    for _ in 0..200 {
        if ms[0].doors.iter().all(|d| d.state == DoorState::Revoked) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ms = methods(&*store, ws, g.id).await;
    }
    assert!(
        ms[0].doors.iter().all(|d| d.state == DoorState::Revoked),
        "{ms:?}"
    );
    assert!(!ms[0].is_issued);
    let types = event_types(&*store, ws).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "access_grant.access_to_door_lost")
            .count(),
        2
    );
    assert!(types.contains(&"access_method.revoked".to_owned()));
}

/// Removes a person's row behind the store's back, as a version before deletes took the
/// person's grants with them left it: their grants live on, with no one to give access to.
async fn remove_person_row(url: &str, ws: WorkspaceId, person: UserIdentityId) {
    use sqlx::Connection as _;
    const SQL: &str =
        "DELETE FROM user_identities WHERE workspace_id = $1 AND user_identity_id = $2";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query(SQL)
            .bind(ws.to_string())
            .bind(person.to_string())
            .execute(&mut c)
            .await
            .expect("delete row");
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query(SQL)
            .bind(ws.to_string())
            .bind(person.to_string())
            .execute(&mut c)
            .await
            .expect("delete row");
    }
}

async fn jobs_of_a_deleted_person_end(store: Arc<dyn Store>, url: &str) {
    use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus, EncodeJob, JobWork};
    use keygate_domain::ids::ActionAttemptId;
    let ws = seeded_workspace(&*store, "person-gone").await;
    let doors = quick_start_entrances(&*store, ws).await;
    // Jane's card and mobile key are queued, and an encoding of her card.
    let both = [AccessMethodMode::Card, AccessMethodMode::MobileKey];
    let (jane, _) = create(&*store, ws, &doors, &both).await;
    let card = methods(&*store, ws, jane.id)
        .await
        .into_iter()
        .find(|m| m.mode == AccessMethodMode::Card)
        .expect("a card");
    let system = card.doors[0].acs_system_id;
    let encoder = store
        .list_encoders(
            ws,
            Some(system),
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("encoders")
        .items[0]
        .id;
    let attempt = ActionAttempt {
        id: ActionAttemptId::new(),
        workspace_id: ws,
        action_type: ActionType::EncodeCredential,
        status: AttemptStatus::Pending,
        access_method_id: Some(card.id),
        acs_encoder_id: Some(encoder),
        acs_entrance_id: None,
        result: None,
        error: None,
        created_at: keygate_domain::model::now(),
        completed_at: None,
    };
    let encode = JobWork::Encode(EncodeJob {
        action_attempt_id: attempt.id,
        access_method_id: card.id,
        acs_system_id: system,
        acs_encoder_id: encoder,
    });
    store
        .create_action_attempt(ws, &attempt, &encode, None)
        .await
        .expect("attempt");
    // Then Jane is deleted, before any of it ran.
    store
        .delete_user_identity(ws, jane.user_identity_id, keygate_domain::model::now())
        .await
        .expect("delete person");
    // John's grant outlived his record (removed by an older version): his jobs find no one.
    let (john, _) = create(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    remove_person_row(url, ws, john.user_identity_id).await;

    let systems = VirtualSystems::new(Duration::from_millis(5));
    let _run = start(store.clone(), &systems, &["w1"]);
    let mut active = -1;
    for _ in 0..300 {
        active = store.count_jobs("queued").await.expect("count")
            + store.count_jobs("running").await.expect("count");
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(active, 0, "every job of a deleted person ends");
    assert_eq!(
        store.count_jobs("dead").await.ok(),
        Some(0),
        "none is buried"
    );
    assert_eq!(systems.credential_count(), 0, "and no one was given access");
    // The encoding never reached the encoder: its attempt ends, saying why.
    let ended = store
        .get_action_attempt(ws, attempt.id)
        .await
        .expect("attempt");
    assert_eq!(ended.status, AttemptStatus::Error);
    assert_eq!(
        ended.error.as_ref().map(|e| e.error_type.as_str()),
        Some("access_revoked")
    );
    // John's doors failed, visibly, instead of staying pending for ever.
    let left = methods(&*store, ws, john.id).await;
    assert!(
        left.iter()
            .flat_map(|m| &m.doors)
            .all(|d| d.state == DoorState::Failed),
        "{left:?}"
    );
    // And nothing starts again later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.count_jobs("queued").await.expect("count")
            + store.count_jobs("running").await.expect("count"),
        0
    );
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fans_out() {
                fans_out_to_every_door($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn faults_retried() {
                transient_and_ambiguous_faults_are_retried_without_duplicates($make.await.store)
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delayed_confirmation() {
                a_delayed_confirmation_is_neither_failed_nor_doubled($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rejection_isolated() {
                a_permanent_rejection_fails_only_its_door($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unreachable_waits() {
                an_unreachable_system_keeps_doors_pending_until_it_answers($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rate_limited_waits() {
                a_vendor_rate_limit_never_fails_a_door($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn budget_exhausted() {
                an_exhausted_retry_budget_is_a_visible_failure($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn competing_workers() {
                competing_workers_apply_each_outcome_once($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delete_revokes() {
                deleting_an_issued_grant_revokes_everything($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delete_during_provision() {
                deleting_during_an_in_flight_provision_leaves_nothing_behind($make.await.store)
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn breaker_refunds() {
                an_open_circuit_does_not_burn_the_retry_budget($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deleted_before_running() {
                a_job_of_a_grant_deleted_before_it_ran_finishes($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_changes_only_what_changed() {
                an_update_changes_only_what_changed($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn drift_repaired() {
                drift_is_read_back_and_repaired($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ended_grants_revoked() {
                ended_grants_are_revoked_everywhere($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deleted_person_jobs_end() {
                let db = $make.await;
                jobs_of_a_deleted_person_end(db.store.clone(), &db.url).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn encoder_faults() {
                encoder_faults_are_typed_and_a_retry_succeeds($make.await.store).await
            }
        }
    };
}

suite!(sqlite, TestDb::sqlite());
suite!(postgres, TestDb::postgres());
