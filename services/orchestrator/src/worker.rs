//! The worker loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_app::tracker::{Committed, Tracker};
use keygate_domain::Error;
use keygate_domain::action::{
    AttemptError, EncodeJob, JobWork, RevokeJob, UnlockJob, unlock_errors,
};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::AccessSystemId;
use keygate_domain::model::now;
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use keygate_providers::{AccessSystemProvider, Holder, ProviderError};
use keygate_store::{Claim, DueSystem, Job, Store};
use rand::RngExt as _;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument as _;

use crate::breaker::Breakers;
use crate::calls;
use crate::vendor_limits::{self, VendorLimits};

/// Tuning of the orchestrator.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// This worker's name in job leases (for operators; fencing is by a token per claim).
    pub owner: String,
    /// Most jobs this process runs at once, over all access systems.
    pub max_in_flight: u32,
    /// How long a lease lasts; renewed every third of it while the job runs, so a worker that
    /// dies loses its jobs to others after this.
    pub lease: Duration,
    /// How often to look for due jobs when not woken.
    pub poll: Duration,
    /// Longest a single provider call may take before it counts as ambiguous.
    pub call_timeout: Duration,
    /// Retry budget per job; after it the doors are marked failed with the last error.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_cap`, with full jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Provider calls in flight per access system.
    pub per_system_concurrency: usize,
    /// Consecutive failures that open a system's circuit, and for how long.
    pub breaker_threshold: u32,
    pub breaker_open_for: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            owner: format!("orchestrator-{}", uuid_like()),
            max_in_flight: 64,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            call_timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(60),
            per_system_concurrency: 8,
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(30),
        }
    }
}

fn uuid_like() -> String {
    keygate_domain::ids::JobId::new().to_string()
}

/// Whether a transient error says the access system cannot be called at all: not reachable
/// (`provider_unreachable`), or its call budget is spent (`budget_exhausted`), as opposed to a
/// fault it answered with. Such waits spend no attempt.
fn unreachable(reason: &str) -> bool {
    reason.starts_with(keygate_app::connections::PROVIDER_UNREACHABLE)
        || reason.starts_with(keygate_app::connections::BUDGET_EXHAUSTED)
}

/// Whether a transient error is the vendor's rate limit (adapters begin a 429 with `rate_limited`).
fn rate_limited(reason: &str) -> bool {
    reason.starts_with(keygate_providers::vendor::RATE_LIMITED)
}

/// The wait a rate-limited answer asked for (`retry after N s`, or `retry after N`), capped at
/// five minutes.
fn retry_after(reason: &str) -> Option<Duration> {
    let rest = &reason[reason.find("retry after ")? + "retry after ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let secs: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(secs.clamp(1, 300)))
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^(attempt-1))].
pub fn backoff(cfg: &OrchestratorConfig, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cfg.backoff_cap);
    ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
}

/// The orchestrator of one process.
#[derive(Clone)]
pub struct Orchestrator {
    store: Arc<dyn Store>,
    provider: Arc<dyn AccessSystemProvider>,
    /// After each commit: evicts the cached status, rings the doorbell.
    tracker: Tracker,
    wake: Arc<Notify>,
    cfg: Arc<OrchestratorConfig>,
    limits: Arc<Mutex<HashMap<AccessSystemId, Arc<Semaphore>>>>,
    /// Jobs running in this process, over all systems (`max_in_flight`).
    in_flight: Arc<Semaphore>,
    /// Rung when a job ends: its permits are free for the next claim.
    freed: Arc<Notify>,
    /// Live claims by fencing token, with how many of their jobs still run: their leases are
    /// renewed until the count drops to zero.
    live: Arc<Mutex<HashMap<String, usize>>>,
    breakers: Arc<Breakers>,
    vendor_limits: Arc<VendorLimits>,
}

/// Due systems looked at per claim round.
const DUE_SYSTEMS_PER_ROUND: u32 = 256;

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn AccessSystemProvider>,
        tracker: Tracker,
        cfg: OrchestratorConfig,
    ) -> Self {
        let breakers = Arc::new(Breakers::new(cfg.breaker_threshold, cfg.breaker_open_for));
        Self {
            store,
            provider,
            wake: tracker.orchestrator_bell(),
            tracker,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight.max(1) as usize)),
            freed: Arc::default(),
            live: Arc::default(),
            cfg: Arc::new(cfg),
            limits: Arc::default(),
            breakers,
            vendor_limits: Arc::default(),
        }
    }

    fn limit(&self, system: AccessSystemId) -> Arc<Semaphore> {
        let mut limits = match self.limits.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        limits
            .entry(system)
            .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.per_system_concurrency.max(1))))
            .clone()
    }

    /// Runs until `stop` turns true. Jobs in flight at stop keep their leases (no longer
    /// renewed) and are taken over after the lease expires if this process does not finish them.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.cfg.owner, "orchestrator started");
        let mut rings = self.tracker.doorbell().subscribe();
        let renewer = tokio::spawn(self.clone().renew_leases(stop.clone()));
        loop {
            if *stop.borrow() {
                break;
            }
            let started = self.claim_round().await;
            if started == 0 || self.in_flight.available_permits() == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    // A grant created on another replica rings through the shared doorbell.
                    _ = rings.recv() => {}
                    // A job ended: its permits (and maybe its system's) are free again.
                    _ = self.freed.notified() => {}
                    _ = tokio::time::sleep(self.cfg.poll) => {}
                    // A dropped sender can no longer stop us: stop now rather than spin.
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
        }
        renewer.abort();
        tracing::info!("orchestrator stopped");
    }

    /// One round of claims: for each access system with due jobs (the workspaces taking turns),
    /// claims as many as can start now (a free slot of the process and of the system, and a
    /// vendor token each) and starts them. Returns how many started.
    async fn claim_round(&self) -> usize {
        let due = match self.store.due_systems(now(), DUE_SYSTEMS_PER_ROUND).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the due jobs");
                return 0;
            }
        };
        let mut started = 0;
        for d in take_turns(due) {
            let free = self.in_flight.available_permits();
            if free == 0 {
                break;
            }
            let slots = self.limit(d.acs_system_id);
            let room = slots.available_permits().min(free).min(d.due as usize) as u32;
            if room == 0 {
                continue;
            }
            started += self.claim_system(d, room, &slots).await;
        }
        started
    }

    /// Claims up to `room` jobs of one system, as many as its vendor limit allows now, and
    /// starts them with their permits already held.
    async fn claim_system(&self, d: DueSystem, room: u32, slots: &Arc<Semaphore>) -> usize {
        let system = match self
            .store
            .get_access_system(d.workspace_id, d.acs_system_id)
            .await
        {
            Ok(s) => Some(s),
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(error = %e, acs_system_id = %d.acs_system_id, "could not read the access system");
                return 0;
            }
        };
        let tokens = match &system {
            Some(s) => self.vendor_limits.reserve(s, room),
            // Jobs of a system that is gone can never run: claimed to be buried.
            None => room,
        };
        if tokens == 0 {
            return 0;
        }
        let claim = Claim {
            owner: &self.cfg.owner,
            workspace_id: d.workspace_id,
            acs_system_id: d.acs_system_id,
            limit: tokens,
            lease: self.cfg.lease,
        };
        let claimed = match self.store.claim_jobs(&claim, now()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not lease jobs");
                if let Some(s) = &system {
                    self.vendor_limits.refund(s, tokens);
                }
                return 0;
            }
        };
        if claimed.dead > 0 {
            keygate_telemetry::metrics::jobs_dead(u64::from(claimed.dead));
        }
        let n = claimed.jobs.len();
        if let Some(s) = &system {
            self.vendor_limits
                .refund(s, tokens.saturating_sub(n as u32));
        }
        if let Some(first) = claimed.jobs.first() {
            self.hold(&first.lease_token, n);
        }
        for job in claimed.jobs {
            let (Ok(slot), Ok(process_slot)) = (
                slots.clone().try_acquire_owned(),
                self.in_flight.clone().try_acquire_owned(),
            ) else {
                // Only this loop takes permits, after counting them: not reached. Should it be,
                // the job keeps its lease and runs when the lease expires.
                tracing::error!(job_id = %job.id, "no permit for a claimed job");
                self.release(&job.lease_token);
                continue;
            };
            let this = self.clone();
            let gone = system.is_none();
            tokio::spawn(async move {
                let token = job.lease_token.clone();
                if gone {
                    this.bury(job).await;
                } else {
                    vendor_limits::prepaid(this.process(job)).await;
                }
                drop((slot, process_slot));
                this.release(&token);
                this.freed.notify_one();
            });
        }
        n
    }

    /// Ends a job whose access system no longer exists.
    async fn bury(&self, job: Job) {
        let why = format!(
            "access system {} no longer exists",
            job.work.acs_system_id()
        );
        tracing::warn!(job_id = %job.id, reason = %why, "job moved to the dead state");
        match self.store.bury_job(&job, &why, now()).await {
            Ok(true) => keygate_telemetry::metrics::jobs_dead(1),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not bury the job"),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        match self.live.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        }
    }

    /// Counts `n` running jobs of the claim `token`.
    fn hold(&self, token: &str, n: usize) {
        if n > 0 {
            *self.live().entry(token.to_owned()).or_default() += n;
        }
    }

    /// One job of the claim `token` ended.
    fn release(&self, token: &str) {
        let mut live = self.live();
        if let Some(n) = live.get_mut(token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(token);
            }
        }
    }

    /// Renews the leases of this process's live claims every third of a lease, until `stop`.
    async fn renew_leases(self, mut stop: watch::Receiver<bool>) {
        let every = (self.cfg.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let tokens: Vec<String> = self.live().keys().cloned().collect();
            for token in tokens {
                if let Err(e) = self
                    .store
                    .renew_leases(&token, now() + self.cfg.lease)
                    .await
                {
                    tracing::warn!(error = %e, "could not renew leases");
                }
            }
        }
    }

    /// Whether this claim may still call the access system: its lease is live and still its
    /// own (checked just before every provider call). When not, the job is left to whoever
    /// holds it now, or to the next claim after the lease expires.
    async fn may_call(&self, job: &Job) -> bool {
        match self.store.lease_valid(job, now()).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("the lease was lost before the call: not calling");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check the lease: not calling");
                false
            }
        }
    }

    /// Runs one job in its span, a child of the span that queued it (the RPC's, or the
    /// reconciler's) when the job carries that trace context.
    async fn process(&self, job: Job) {
        let span = tracing::info_span!(
            "job",
            otel.name = %format!("job {}", job.work.kind()),
            otel.kind = "consumer",
            job_id = %job.id,
            kind = job.work.kind(),
            workspace_id = %job.workspace_id,
            acs_system_id = %job.work.acs_system_id(),
            attempt = job.attempts,
        );
        if let Some(parent) = &job.trace_context {
            keygate_telemetry::propagation::set_parent_from_traceparent(&span, parent);
        }
        self.run_job(job).instrument(span).await
    }

    async fn run_job(&self, job: Job) {
        let r = match &job.work {
            JobWork::Provision(p) => self.provision(&job, p).await,
            JobWork::Encode(e) => self.encode(&job, e).await,
            JobWork::Revoke(r) => self.revoke(&job, r).await,
            JobWork::Unlock(u) => self.unlock(&job, u).await,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "job processing failed; it will be retried when its lease expires");
        }
    }

    /// Ends an encoding whose access method was deleted before it started: no card is
    /// written, and the attempt ends `access_revoked`.
    async fn encode_gone(
        &self,
        job: &Job,
        ws: keygate_domain::ids::WorkspaceId,
    ) -> Result<(), Error> {
        let gone = Err(AttemptError {
            error_type: "access_revoked".into(),
            message: "the access method was deleted before the encoding started".into(),
        });
        if let Some(events) = self.store.complete_encode(job, &gone, now()).await? {
            self.tracker
                .committed(Committed::new(ws).events(&events))
                .await;
        }
        Ok(())
    }

    async fn encode(&self, job: &Job, e: &EncodeJob) -> Result<(), Error> {
        let ws = job.workspace_id;
        let system = self.store.get_access_system(ws, e.acs_system_id).await?;
        // Deleted before the encoding started (alone, with its grant or with its person): no
        // card is written, and the attempt ends instead of the job being leased again for ever.
        match self.store.get_access_method(ws, e.access_method_id).await {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => return self.encode_gone(job, ws).await,
            Err(err) => return Err(err),
        }
        self.vendor_limits.acquire(&system).await;
        if !self.may_call(job).await {
            return Ok(());
        }
        let outcome = match calls::call(
            &system,
            "encode",
            self.cfg.call_timeout,
            self.provider.encode(&system, e),
            calls::encode_outcome,
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(AttemptError {
                error_type: "encoder_communication_timeout".into(),
                message: format!("no answer within {:?}", self.cfg.call_timeout),
            }),
        };
        if let Err(err) = &outcome {
            tracing::info!(error_type = %err.error_type, "encoding failed");
        }
        let events = self.store.complete_encode(job, &outcome, now()).await?;
        if let Some(events) = events {
            self.tracker
                .committed(
                    Committed::new(ws)
                        .methods([e.access_method_id])
                        .events(&events),
                )
                .await;
        }
        Ok(())
    }

    /// A remote unlock: at most once and never late. It is sent only on its first claim (a
    /// later claim means an earlier one may have sent it: never again), only before its
    /// deadline, and only while what allowed it still does (checked just before the call);
    /// the call itself gets no longer than what is left of the deadline. Never retried.
    async fn unlock(&self, job: &Job, u: &UnlockJob) -> Result<(), Error> {
        let ws = job.workspace_id;
        let refused = if job.attempts > 1 {
            Some(AttemptError {
                error_type: unlock_errors::NOT_CONFIRMED.into(),
                message: "an earlier run of this unlock may have reached the access system; it is never sent twice".into(),
            })
        } else {
            None
        };
        let outcome = match refused {
            Some(e) => Err(e),
            None => {
                let system = self.store.get_access_system(ws, u.acs_system_id).await?;
                self.vendor_limits.acquire(&system).await;
                if !self.may_call(job).await {
                    return Ok(());
                }
                match self.unlock_allowed(job, u).await {
                    Err(e) => Err(e),
                    Ok(left) => {
                        match calls::call(
                            &system,
                            "unlock",
                            left.min(self.cfg.call_timeout),
                            self.provider.unlock(&system, u),
                            calls::unlock_outcome,
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(AttemptError {
                                error_type: "lock_not_online".into(),
                                message: format!(
                                    "no answer within {:?}",
                                    left.min(self.cfg.call_timeout)
                                ),
                            }),
                        }
                    }
                }
            }
        };
        if let Err(err) = &outcome {
            tracing::info!(error_type = %err.error_type, "unlock failed");
        }
        if let Some(events) = self.store.complete_unlock(job, &outcome, now()).await? {
            self.tracker
                .committed(Committed::new(ws).events(&events))
                .await;
        }
        Ok(())
    }

    /// What is left of an unlock's deadline when it may still be sent, or why it may not.
    async fn unlock_allowed(&self, job: &Job, u: &UnlockJob) -> Result<Duration, AttemptError> {
        let at = now();
        let left = u
            .expires_at
            .map(|e| e - at)
            .filter(|left| left.is_positive())
            .and_then(|left| Duration::try_from(left).ok());
        let Some(left) = left else {
            return Err(AttemptError {
                error_type: unlock_errors::EXPIRED.into(),
                message: match u.expires_at {
                    Some(e) => format!("not sent by its deadline ({e})"),
                    None => {
                        "queued without a deadline (before deadlines existed): never sent".into()
                    }
                },
            });
        };
        keygate_app::unlock::still_allowed(&*self.store, job.workspace_id, u, at).await?;
        Ok(left)
    }

    /// Shows on the system what a call said of its connection (credentials refused, not
    /// reachable, or answering again) and what the adapter says of its account (the warnings,
    /// such as a budget nearly spent); a failure to record it is logged, never the job's.
    async fn observe(
        &self,
        system: &keygate_domain::model::AccessSystem,
        outcome: Result<(), &ProviderError>,
    ) {
        let warnings = self.provider.warnings(system);
        if let Err(e) = keygate_app::connections::observe_call(
            &*self.store,
            &self.tracker,
            system,
            outcome,
            warnings,
        )
        .await
        {
            tracing::warn!(error = %e, "could not record the access system's health");
        }
    }

    async fn revoke(&self, job: &Job, r: &RevokeJob) -> Result<(), Error> {
        let ws = job.workspace_id;
        let system = self.store.get_access_system(ws, r.acs_system_id).await?;
        self.vendor_limits.acquire(&system).await;
        if !self.may_call(job).await {
            return Ok(());
        }
        let outcome = match calls::call(
            &system,
            "revoke",
            self.cfg.call_timeout,
            self.provider.revoke(&system, r),
            calls::outcome,
        )
        .await
        {
            Ok(o) => o,
            Err(_) => Err(ProviderError::Ambiguous(format!(
                "no answer within {:?}",
                self.cfg.call_timeout
            ))),
        };
        self.observe(&system, outcome.as_ref().map(|_| ())).await;
        match outcome {
            Ok(()) => self.breakers.success(system.id),
            // Access that cannot be taken back must stay visible, so a refused or exhausted
            // revocation is retried on the budget's schedule and then left queued for an operator.
            Err(e) => {
                self.breakers.failure(system.id);
                let delay = if job.attempts >= self.cfg.max_attempts {
                    self.cfg.backoff_cap
                } else {
                    backoff(&self.cfg, job.attempts)
                };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "revocation not confirmed; retrying");
                self.store
                    .reschedule_job(job, now() + delay, &e.to_string(), false, now())
                    .await?;
                return Ok(());
            }
        }
        if let Some(events) = self.store.complete_revoke(job, now()).await? {
            self.tracker
                .committed(
                    Committed::new(ws)
                        .grant(r.access_grant_id)
                        .methods([r.access_method_id])
                        .events(&events),
                )
                .await;
        }
        Ok(())
    }

    async fn provision(&self, job: &Job, p: &ProvisionJob) -> Result<(), Error> {
        let ws = job.workspace_id;
        let system = self.store.get_access_system(ws, p.acs_system_id).await?;
        let grant = match self.store.get_access_grant(ws, p.access_grant_id).await {
            Ok(g) => g,
            // Deleted before this job ran: nothing to grant. Completing it lets the store see
            // the deletion, queue a (harmless) revocation and end the job, instead of leaving it
            // to be leased again for ever.
            Err(Error::NotFound { .. }) => {
                let result = all_failed(p, "the access grant was deleted");
                self.store.complete_provision(job, &result, now()).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let person = match self
            .store
            .get_user_identity(ws, grant.user_identity_id)
            .await
        {
            Ok(person) => person,
            // The person is gone (a delete takes their grants with them; a grant left behind
            // has no one to give access to): the job ends with its doors failed instead of
            // being leased again for ever.
            Err(Error::NotFound { .. }) => {
                let result = all_failed(p, "the user identity was deleted");
                if let Some(events) = self.store.complete_provision(job, &result, now()).await? {
                    self.tracker
                        .committed(
                            Committed::new(ws)
                                .grant(p.access_grant_id)
                                .methods([p.access_method_id])
                                .events(&events),
                        )
                        .await;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let holder = Holder {
            user_identity_id: person.id,
            full_name: person.full_name,
            email_address: person.email_address,
            phone_number: person.phone_number,
            starts_at: grant.starts_at,
            ends_at: grant.ends_at,
        };
        if let Some(wait) = self.breakers.open(system.id) {
            // No call is made while the circuit is open, so the attempt is refunded: jobs wait
            // for the system instead of burning their retry budget.
            let at = now() + wait + backoff(&self.cfg, 1);
            let why = format!("circuit open for {} ms", wait.as_millis());
            self.store
                .reschedule_job(job, at, &why, true, now())
                .await?;
            return Ok(());
        }
        self.vendor_limits.acquire(&system).await;
        if !self.may_call(job).await {
            return Ok(());
        }
        let outcome = match calls::call(
            &system,
            "provision",
            self.cfg.call_timeout,
            self.provider.provision(&system, p, &holder),
            calls::outcome,
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Ambiguous(format!(
                "no answer within {:?}",
                self.cfg.call_timeout
            ))),
        };
        self.observe(&system, outcome.as_ref().map(|_| ())).await;
        let result = match outcome {
            Ok(r) => {
                self.breakers.success(system.id);
                r
            }
            Err(ProviderError::Permanent(reason)) => {
                tracing::warn!(%reason, "access system refused");
                all_failed(p, &reason)
            }
            // The access system (or its connector) cannot be reached at all: nothing was sent.
            // Like an open circuit, this spends no attempt: the doors wait, pending with the
            // reason, and catch up when it answers again (the breaker spaces the probes).
            // The vendor's rate limit (a 429): nothing was applied and nothing is wrong; wait what
            // it asked (or the backoff), spending no attempt and not counting as a failure.
            Err(ProviderError::Transient(reason)) if rate_limited(&reason) => {
                let delay =
                    retry_after(&reason).unwrap_or_else(|| backoff(&self.cfg, job.attempts.max(1)));
                tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "vendor rate limit; waiting");
                self.store
                    .reschedule_job(job, now() + delay, &reason, true, now())
                    .await?;
                return Ok(());
            }
            Err(ProviderError::Transient(reason)) if unreachable(&reason) => {
                self.breakers.failure(system.id);
                let delay = backoff(&self.cfg, job.attempts.max(1));
                tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "access system unreachable; waiting");
                self.store.note_pending(job, &reason, now()).await?;
                self.tracker
                    .committed(Committed::new(ws).methods([p.access_method_id]))
                    .await;
                self.store
                    .reschedule_job(job, now() + delay, &reason, true, now())
                    .await?;
                return Ok(());
            }
            Err(e) => {
                self.breakers.failure(system.id);
                // Maybe applied, maybe not: read the system back before deciding, so an applied
                // change is recorded as granted rather than sent again or called failed.
                let read = if matches!(e, ProviderError::Ambiguous(_)) {
                    self.read_back(&system, p, &holder).await
                } else {
                    ReadBack::NotApplied
                };
                if let ReadBack::Applied(result) = read {
                    tracing::info!(error = %e, "ambiguous answer; the read-back shows it applied");
                    result
                } else if job.attempts >= self.cfg.max_attempts && read == ReadBack::NotApplied {
                    tracing::warn!(error = %e, "retry budget spent");
                    all_failed(p, &format!("gave up after {} attempts: {e}", job.attempts))
                } else {
                    // Past the budget only when the read-back could not tell: the doors stay
                    // unknown and the job keeps trying at the slowest pace, never "failed".
                    let delay = if job.attempts >= self.cfg.max_attempts {
                        self.cfg.backoff_cap
                    } else {
                        backoff(&self.cfg, job.attempts)
                    };
                    tracing::info!(error = %e, retry_in_ms = delay.as_millis() as u64, "retrying");
                    if matches!(e, ProviderError::Ambiguous(_)) {
                        // Maybe applied, maybe not: say so until the retry reads it back.
                        self.store.mark_unknown(job, &e.to_string(), now()).await?;
                        self.tracker
                            .committed(Committed::new(ws).methods([p.access_method_id]))
                            .await;
                    }
                    let at = now() + delay;
                    self.store
                        .reschedule_job(job, at, &e.to_string(), false, now())
                        .await?;
                    return Ok(());
                }
            }
        };
        match self.store.complete_provision(job, &result, now()).await? {
            Some(events) => {
                // The store is the record and now holds the new state.
                self.tracker
                    .committed(
                        Committed::new(ws)
                            .grant(p.access_grant_id)
                            .methods([p.access_method_id])
                            .events(&events),
                    )
                    .await;
            }
            None => tracing::info!("lease lost to another worker; its outcome stands"),
        }
        Ok(())
    }
}

/// What a read-back after an ambiguous answer showed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadBack {
    /// The system holds the job's credential as asked: the result to record.
    Applied(ProvisionResult),
    /// It holds nothing of it, or not all of it: the call did not go through.
    NotApplied,
    /// The read failed too: still unknown.
    Unreadable,
}

impl Orchestrator {
    #[tracing::instrument(skip_all)]
    async fn read_back(
        &self,
        system: &keygate_domain::model::AccessSystem,
        p: &ProvisionJob,
        holder: &Holder,
    ) -> ReadBack {
        let read = calls::call(
            system,
            "read_back",
            self.cfg.call_timeout,
            self.provider.read_back(system, p.access_method_id),
            calls::outcome,
        )
        .await;
        match read {
            Ok(Ok(Some(held)))
                if p.entrance_ids.iter().all(|e| held.entrance_ids.contains(e))
                    && !p
                        .removed_entrance_ids
                        .iter()
                        .any(|e| held.entrance_ids.contains(e))
                    && held.starts_at.is_none_or(|s| s == holder.starts_at)
                    && held.ends_at == holder.ends_at =>
            {
                ReadBack::Applied(ProvisionResult {
                    doors: p
                        .entrance_ids
                        .iter()
                        .map(|e| (*e, DoorOutcome::Granted))
                        .collect(),
                    code: held.code,
                    card_encoding_required: held.card_encoding_required
                        && p.mode == keygate_domain::capability::AccessMethodMode::Card,
                    client_session_token: None,
                })
            }
            Ok(Ok(_)) => ReadBack::NotApplied,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "read-back failed");
                ReadBack::Unreadable
            }
            Err(_) => ReadBack::Unreadable,
        }
    }
}

/// The due systems reordered so that workspaces take turns: each workspace's first system
/// (oldest due first), then each one's second, and so on. A workspace with a deep backlog over
/// many systems cannot fill a round before another workspace's revocation gets its turn.
fn take_turns(due: Vec<DueSystem>) -> Vec<DueSystem> {
    let mut by_workspace: Vec<(keygate_domain::ids::WorkspaceId, Vec<DueSystem>)> = Vec::new();
    for d in due {
        match by_workspace.iter_mut().find(|(w, _)| *w == d.workspace_id) {
            Some((_, list)) => list.push(d),
            None => by_workspace.push((d.workspace_id, vec![d])),
        }
    }
    let longest = by_workspace.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        out.extend(by_workspace.iter().filter_map(|(_, l)| l.get(i).copied()));
    }
    out
}

fn all_failed(p: &ProvisionJob, reason: &str) -> ProvisionResult {
    ProvisionResult {
        doors: p
            .entrance_ids
            .iter()
            .map(|e| (*e, DoorOutcome::Failed(reason.to_owned())))
            .collect(),
        code: None,
        card_encoding_required: false,
        client_session_token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let cfg = OrchestratorConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            ..Default::default()
        };
        for attempt in 1..30 {
            assert!(backoff(&cfg, attempt) <= Duration::from_secs(1));
        }
        let first: Duration = (0..200).map(|_| backoff(&cfg, 1)).max().unwrap_or_default();
        assert!(first <= Duration::from_millis(100));
    }
}
