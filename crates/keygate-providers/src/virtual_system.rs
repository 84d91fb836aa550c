//! The behaviour of the sandbox virtual access systems: provisioning latency, idempotent users
//! and credentials keyed by Keygate's reference, provider-generated PINs that never repeat on a
//! door, and scripted faults for tests (timeouts, 5xx, "5xx but applied", permanent rejection
//! of one entrance or of the whole call).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard, RevokeJob, UnlockJob};
use keygate_domain::capability::{AccessMethodMode, PinCodeGenerator};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId};
use keygate_domain::model::{AccessSystem, NewAccessSystem, SandboxCredential};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use rand::RngExt as _;

use crate::provider::{AccessSystemProvider, Connection, HeldCredential, Holder, ProviderError};

/// A scripted misbehaviour, consumed one call at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call hangs past the caller's patience and nothing is applied.
    Timeout,
    /// A 503 before anything is applied.
    Unavailable,
    /// The system cannot be reached at all (connection refused): nothing is sent.
    Unreachable,
    /// A 429 with `Retry-After: 1`: nothing is applied.
    RateLimited,
    /// A 500 after the change was applied: the caller cannot tell.
    FailedButApplied,
    /// The system refuses this entrance for good.
    RejectEntrance(EntranceId),
    /// The system refuses the whole call for good (a 400/403) and applies nothing.
    Refused,
    /// The system accepts the call without confirming it (a 202) and applies it only after the
    /// given time, out of band: until then a read-back finds nothing.
    DelayedConfirmation(Duration),
    /// The encoder does not answer.
    EncoderOffline,
    /// The card on the encoder is of a format the system cannot write.
    IncompatibleCard,
}

/// Where the virtual systems keep what they issued (their "vendor database").
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Stores `c`; when a credential exists for its (system, method), only its entrances and
    /// schedule change (ids and code stay). Returns the stored one.
    async fn put(&self, c: &SandboxCredential) -> Result<SandboxCredential, String>;
    async fn get(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<SandboxCredential>, String>;
    /// Removes the credential of (system, method), if any.
    async fn remove(&self, system: AccessSystemId, method: AccessMethodId) -> Result<(), String>;

    /// Records a remote unlock the system performed.
    async fn unlocked(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), String>;
}

/// An in-memory ledger (lost on restart): for tests of a single process.
#[derive(Default)]
pub struct MemoryLedger(
    Mutex<HashMap<(AccessSystemId, AccessMethodId), SandboxCredential>>,
    Mutex<Vec<UnlockJob>>,
);

impl MemoryLedger {
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Every unlock the systems performed, in order.
    pub fn unlocks(&self) -> Vec<UnlockJob> {
        self.1.lock().map(|u| u.clone()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn put(&self, c: &SandboxCredential) -> Result<SandboxCredential, String> {
        let mut m = self.0.lock().map_err(|_| "ledger poisoned".to_owned())?;
        let stored = m
            .entry((c.acs_system_id, c.access_method_id))
            .or_insert_with(|| c.clone());
        stored.entrance_ids.clone_from(&c.entrance_ids);
        stored.starts_at = c.starts_at;
        stored.ends_at = c.ends_at;
        Ok(stored.clone())
    }

    async fn get(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<SandboxCredential>, String> {
        let m = self.0.lock().map_err(|_| "ledger poisoned".to_owned())?;
        Ok(m.get(&(system, method)).cloned())
    }

    async fn remove(&self, system: AccessSystemId, method: AccessMethodId) -> Result<(), String> {
        let mut m = self.0.lock().map_err(|_| "ledger poisoned".to_owned())?;
        m.remove(&(system, method));
        Ok(())
    }

    async fn unlocked(&self, _system: &AccessSystem, job: &UnlockJob) -> Result<(), String> {
        let mut u = self.1.lock().map_err(|_| "ledger poisoned".to_owned())?;
        u.push(job.clone());
        Ok(())
    }
}

#[derive(Default)]
struct State {
    codes_by_door: HashMap<EntranceId, HashSet<String>>,
    faults: HashMap<AccessSystemId, Vec<Fault>>,
    delays: HashMap<AccessSystemId, Duration>,
    calls: u64,
}

/// Every virtual system of a process. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct VirtualSystems {
    state: Arc<Mutex<State>>,
    ledger: Arc<dyn Ledger>,
    memory: Option<Arc<MemoryLedger>>,
    default_delay: Duration,
}

impl VirtualSystems {
    /// Virtual systems that take `default_delay` to provision, as real cloud systems do, and
    /// keep their credentials in memory.
    pub fn new(default_delay: Duration) -> Self {
        let memory = Arc::new(MemoryLedger::default());
        Self {
            state: Arc::default(),
            ledger: memory.clone(),
            memory: Some(memory),
            default_delay,
        }
    }

    /// Virtual systems whose credentials live in `ledger` (the store, in the binary), so they
    /// survive restarts as a vendor's would.
    pub fn with_ledger(default_delay: Duration, ledger: Arc<dyn Ledger>) -> Self {
        Self {
            state: Arc::default(),
            ledger,
            memory: None,
            default_delay,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock means a panic mid-update in a test double; keep serving.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    /// Sets the provisioning latency of one system.
    pub fn set_delay(&self, system: AccessSystemId, delay: Duration) {
        self.with(|s| s.delays.insert(system, delay));
    }

    /// Queues faults for the next calls to one system.
    pub fn inject(&self, system: AccessSystemId, faults: impl IntoIterator<Item = Fault>) {
        self.with(|s| s.faults.entry(system).or_default().extend(faults));
    }

    /// Counts a call to `system` and returns its latency and the next scripted fault, if any.
    fn next_call(&self, system: AccessSystemId) -> (Duration, Option<Fault>) {
        self.with(|s| {
            s.calls += 1;
            let delay = s.delays.get(&system).copied().unwrap_or(self.default_delay);
            let queue = s.faults.entry(system).or_default();
            let fault = (!queue.is_empty()).then(|| queue.remove(0));
            (delay, fault)
        })
    }

    /// Every unlock the systems performed (the doors that opened), with the in-memory ledger
    /// (none otherwise).
    pub fn unlocks(&self) -> Vec<UnlockJob> {
        self.memory.as_ref().map_or_else(Vec::new, |m| m.unlocks())
    }

    /// How many credentials all systems hold, with the in-memory ledger (0 otherwise).
    pub fn credential_count(&self) -> usize {
        self.memory.as_ref().map_or(0, |m| m.len())
    }

    /// What the system `system` holds for `method`: the vendor-side view of a credential.
    pub async fn credential(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Option<SandboxCredential> {
        self.ledger.get(system, method).await.ok().flatten()
    }

    /// Makes the system lose what it holds for `method`, as when someone deletes a key by hand
    /// at the front desk.
    pub async fn forget(&self, system: AccessSystemId, method: AccessMethodId) {
        let _ = self.ledger.remove(system, method).await;
    }

    /// Makes the credential of `method` open `entrance_ids` instead, behind Keygate's back.
    pub async fn tamper(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
        entrance_ids: Vec<EntranceId>,
    ) {
        if let Ok(Some(c)) = self.ledger.get(system, method).await {
            let _ = self
                .ledger
                .put(&SandboxCredential { entrance_ids, ..c })
                .await;
        }
    }

    /// Puts a credential into the system behind Keygate's back.
    pub async fn plant(&self, credential: SandboxCredential) {
        let _ = self.ledger.put(&credential).await;
    }

    /// How many provision calls arrived, faults included.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }

    /// Applies a provision to the ledger: the same credential for the same reference (its
    /// doors and schedule updated), or a new one, with a PIN where the system makes them.
    async fn apply(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
        rejected: &[EntranceId],
    ) -> Result<SandboxCredential, ProviderError> {
        let caps = &system.capabilities;
        let existing = self
            .ledger
            .get(system.id, job.access_method_id)
            .await
            .map_err(ProviderError::Transient)?;
        let granted: Vec<EntranceId> = job
            .entrance_ids
            .iter()
            .copied()
            .filter(|e| !rejected.contains(e))
            .collect();
        Ok(match existing {
            // Idempotent by reference: the same credential, with its first code; an update
            // only changes what it opens and when.
            Some(c)
                if c.entrance_ids == granted
                    && c.starts_at == Some(holder.starts_at)
                    && c.ends_at == holder.ends_at =>
            {
                c
            }
            Some(c) => {
                let updated = SandboxCredential {
                    entrance_ids: granted,
                    starts_at: Some(holder.starts_at),
                    ends_at: holder.ends_at,
                    ..c
                };
                self.ledger
                    .put(&updated)
                    .await
                    .map_err(ProviderError::Transient)?
            }
            None => {
                let wants_code = job.mode == AccessMethodMode::Code
                    && caps
                        .pin_code_rules
                        .as_ref()
                        .is_some_and(|r| r.generator == PinCodeGenerator::Provider);
                let code = wants_code.then(|| {
                    let len = caps
                        .pin_code_rules
                        .as_ref()
                        .map_or(6, |r| r.min_length.max(4));
                    self.with(|s| {
                        // Never a code already active on one of these doors (within this process).
                        loop {
                            let c = random_digits(len);
                            if granted.iter().all(|d| {
                                !s.codes_by_door.get(d).is_some_and(|set| set.contains(&c))
                            }) {
                                for d in &granted {
                                    s.codes_by_door.entry(*d).or_default().insert(c.clone());
                                }
                                break c;
                            }
                        }
                    })
                });
                // Where Keygate chooses PINs, the system programs the code it is given.
                let code = code.or_else(|| {
                    let keygate_chooses = caps
                        .pin_code_rules
                        .as_ref()
                        .is_some_and(|r| r.generator == PinCodeGenerator::Keygate);
                    (job.mode == AccessMethodMode::Code && keygate_chooses)
                        .then(|| job.requested_code.clone())
                        .flatten()
                });
                let cred = SandboxCredential {
                    acs_system_id: system.id,
                    access_method_id: job.access_method_id,
                    workspace_id: system.workspace_id,
                    provider_user_id: format!("vu_{}", holder.user_identity_id.as_uuid().simple()),
                    credential_id: format!("vc_{}", job.access_method_id.as_uuid().simple()),
                    entrance_ids: granted,
                    code,
                    starts_at: Some(holder.starts_at),
                    ends_at: holder.ends_at,
                };
                self.ledger
                    .put(&cred)
                    .await
                    .map_err(ProviderError::Transient)?
            }
        })
    }
}

fn random_digits(len: u8) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

#[async_trait]
impl AccessSystemProvider for VirtualSystems {
    fn system_types(&self) -> Vec<String> {
        crate::sandbox::SANDBOX_SYSTEM_TYPES
            .iter()
            .map(|t| (*t).to_owned())
            .collect()
    }

    /// A virtual system's site: the capabilities, doors, groups and encoders its type declares
    /// in the sandbox catalog.
    #[tracing::instrument(skip_all, fields(system_type = %system_type))]
    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        if let Some(name) = connection.settings.keys().next() {
            return Err(ProviderError::Permanent(format!(
                "invalid_connection_settings: a virtual access system takes no settings ({name:?} was given)"
            )));
        }
        if !connection.credentials.is_empty() {
            return Err(ProviderError::Permanent(
                "invalid_connection_settings: a virtual access system takes no credentials".into(),
            ));
        }
        crate::sandbox::new_system(
            system_type,
            connection.name.as_deref(),
            connection.time_zone.as_deref(),
        )
        .ok_or_else(|| {
            ProviderError::Permanent(format!(
                "{system_type:?} is not a virtual access system type"
            ))
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, system_type = %system.system_type, access_method_id = %job.access_method_id))]
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        let (delay, fault) = self.next_call(system.id);
        // Half the latency before the change is applied, half after: a caller that gives up
        // (or dies) mid-call may leave a change applied but unconfirmed, as with real vendors.
        tokio::time::sleep(delay / 2).await;
        let rejected: Vec<EntranceId> = match &fault {
            Some(Fault::Timeout) => {
                return Err(ProviderError::Ambiguous(
                    "timed out waiting for the access system".into(),
                ));
            }
            Some(Fault::Unavailable) => {
                return Err(ProviderError::Transient("503 service unavailable".into()));
            }
            Some(Fault::Unreachable) => {
                return Err(ProviderError::Transient(
                    "provider_unreachable: connection refused".into(),
                ));
            }
            Some(Fault::RateLimited) => {
                return Err(ProviderError::Transient(
                    "rate_limited: 429 too many requests (retry after 1 s)".into(),
                ));
            }
            Some(Fault::Refused) => {
                return Err(ProviderError::Permanent(
                    "403 refused by the access system".into(),
                ));
            }
            Some(Fault::RejectEntrance(e)) => vec![*e],
            _ => Vec::new(),
        };
        if let Some(Fault::DelayedConfirmation(after)) = fault {
            // Accepted but applied later, out of band: the caller gets no confirmation now and
            // finds the change only by reading back after `after`.
            let (this, system, job, holder) =
                (self.clone(), system.clone(), job.clone(), holder.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if let Err(e) = this.apply(&system, &job, &holder, &[]).await {
                    tracing::warn!(error = %e, "delayed change could not be applied");
                }
            });
            tokio::time::sleep(delay / 2).await;
            return Err(ProviderError::Ambiguous(
                "202 accepted; the change will be applied later".into(),
            ));
        }
        let caps = &system.capabilities;
        let stored = self.apply(system, job, holder, &rejected).await?;
        tokio::time::sleep(delay / 2).await;
        if fault == Some(Fault::FailedButApplied) {
            return Err(ProviderError::Ambiguous("500 internal server error".into()));
        }
        Ok(result_of(
            &stored,
            job,
            &rejected,
            caps.is_card_encoding_required,
        ))
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id))]
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        let (delay, fault) = self.next_call(system.id);
        tokio::time::sleep(delay / 2).await;
        match fault {
            Some(Fault::Timeout) => {
                return Err(ProviderError::Ambiguous(
                    "timed out waiting for the access system".into(),
                ));
            }
            Some(Fault::Unavailable) => {
                return Err(ProviderError::Transient("503 service unavailable".into()));
            }
            Some(Fault::Unreachable) => {
                return Err(ProviderError::Transient(
                    "provider_unreachable: connection refused".into(),
                ));
            }
            Some(Fault::RateLimited) => {
                return Err(ProviderError::Transient(
                    "rate_limited: 429 too many requests (retry after 1 s)".into(),
                ));
            }
            Some(Fault::Refused) => {
                return Err(ProviderError::Permanent(
                    "403 refused by the access system".into(),
                ));
            }
            _ => {}
        }
        self.ledger
            .remove(system.id, job.access_method_id)
            .await
            .map_err(ProviderError::Transient)?;
        tokio::time::sleep(delay / 2).await;
        if fault == Some(Fault::FailedButApplied) {
            return Err(ProviderError::Ambiguous("500 internal server error".into()));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, %access_method_id))]
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        // A read takes the system's latency but no scripted fault: faults are queued for the
        // writes a test is about.
        let delay = self.with(|s| {
            s.delays
                .get(&system.id)
                .copied()
                .unwrap_or(self.default_delay)
        });
        tokio::time::sleep(delay / 2).await;
        let held = self
            .ledger
            .get(system.id, access_method_id)
            .await
            .map_err(ProviderError::Transient)?;
        Ok(held.map(|c| HeldCredential {
            entrance_ids: c.entrance_ids,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            code: c.code,
            card_encoding_required: system.capabilities.is_card_encoding_required,
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_entrance_id = %job.acs_entrance_id))]
    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        let (delay, fault) = self.next_call(system.id);
        tokio::time::sleep(delay / 2).await;
        let fail = |t: &str, m: &str| {
            Err(AttemptError {
                error_type: t.into(),
                message: m.into(),
            })
        };
        if !system.capabilities.can_remote_unlock {
            return fail(
                "remote_unlock_not_supported",
                "this access system cannot unlock remotely",
            );
        }
        match fault {
            Some(Fault::Timeout | Fault::Unavailable) => {
                return fail("lock_not_online", "the lock did not answer");
            }
            Some(Fault::RateLimited) => {
                return fail(
                    "rate_limited",
                    "the access system refused: too many requests",
                );
            }
            Some(Fault::Unreachable) => {
                return fail(
                    "provider_unreachable",
                    "the access system could not be reached",
                );
            }
            Some(Fault::Refused) => {
                return fail(
                    "unlock_refused",
                    "the access system refused to unlock this entrance",
                );
            }
            Some(Fault::RejectEntrance(e)) if e == job.acs_entrance_id => {
                return fail(
                    "unlock_refused",
                    "the access system refused to unlock this entrance",
                );
            }
            _ => {}
        }
        self.ledger
            .unlocked(system, job)
            .await
            .map_err(|m| AttemptError {
                error_type: "lock_not_online".into(),
                message: m,
            })?;
        tokio::time::sleep(delay / 2).await;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_encoder_id = %job.acs_encoder_id))]
    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        let (delay, fault) = self.next_call(system.id);
        let credential = self
            .ledger
            .get(system.id, job.access_method_id)
            .await
            .ok()
            .flatten();
        tokio::time::sleep(delay).await;
        let fail = |t: &str, m: &str| {
            Err(AttemptError {
                error_type: t.into(),
                message: m.into(),
            })
        };
        match fault {
            Some(Fault::EncoderOffline) => {
                return fail("encoder_not_online", "the encoder did not answer");
            }
            Some(Fault::IncompatibleCard) => {
                return fail(
                    "incompatible_card_format",
                    "the card on the encoder cannot hold this credential",
                );
            }
            Some(Fault::Timeout) => {
                return fail(
                    "encoder_communication_timeout",
                    "the encoder stopped answering mid-write",
                );
            }
            _ => {}
        }
        if !system.capabilities.is_card_encoding_required {
            return fail(
                "credential_cannot_be_reissued",
                "this access system does not encode cards",
            );
        }
        let Some(credential) = credential else {
            return fail(
                "no_credential_on_encoder",
                "the access system holds no credential for this access method yet",
            );
        };
        let card_number = {
            let mut rng = rand::rng();
            (0..10)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect()
        };
        Ok(EncodedCard {
            acs_credential_id: credential.credential_id,
            card_number,
        })
    }
}

fn result_of(
    c: &SandboxCredential,
    job: &ProvisionJob,
    rejected: &[EntranceId],
    encoding: bool,
) -> ProvisionResult {
    ProvisionResult {
        doors: job
            .entrance_ids
            .iter()
            .map(|e| {
                let outcome = if rejected.contains(e) || !c.entrance_ids.contains(e) {
                    DoorOutcome::Failed("the access system rejected this entrance".into())
                } else {
                    DoorOutcome::Granted
                };
                (*e, outcome)
            })
            .collect(),
        code: c.code.clone(),
        card_encoding_required: job.mode == AccessMethodMode::Card && encoding,
        client_session_token: None,
    }
}
