//! The behaviour of the sandbox virtual access systems: provisioning latency, idempotent users
//! and credentials keyed by Keygate's reference, provider-generated PINs that never repeat on a
//! door, and scripted faults for tests (timeouts, 5xx, "5xx but applied", permanent rejection).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard};
use keygate_domain::capability::{AccessMethodMode, PinCodeGenerator};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId};
use keygate_domain::model::AccessSystem;
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use rand::RngExt as _;

use crate::provider::{AccessSystemProvider, Holder, ProviderError};

/// A scripted misbehaviour, consumed one call at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call hangs past the caller's patience and nothing is applied.
    Timeout,
    /// A 503 before anything is applied.
    Unavailable,
    /// A 500 after the change was applied: the caller cannot tell.
    FailedButApplied,
    /// The system refuses this entrance for good.
    RejectEntrance(EntranceId),
    /// The encoder does not answer.
    EncoderOffline,
    /// The card on the encoder is of a format the system cannot write.
    IncompatibleCard,
}

/// What a virtual system holds for one reference: the credential it issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualCredential {
    pub provider_user_id: String,
    pub credential_id: String,
    pub entrances: Vec<EntranceId>,
    pub code: Option<String>,
}

#[derive(Default)]
struct State {
    credentials: HashMap<(AccessSystemId, AccessMethodId), VirtualCredential>,
    codes_by_door: HashMap<EntranceId, HashSet<String>>,
    faults: HashMap<AccessSystemId, Vec<Fault>>,
    delays: HashMap<AccessSystemId, Duration>,
    calls: u64,
}

/// Every virtual system of a process. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct VirtualSystems {
    state: Arc<Mutex<State>>,
    default_delay: Duration,
}

impl VirtualSystems {
    /// Virtual systems that take `default_delay` to provision, as real cloud systems do.
    pub fn new(default_delay: Duration) -> Self {
        Self {
            state: Arc::default(),
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

    /// The credential a system holds for a reference, if any.
    pub fn credential(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Option<VirtualCredential> {
        self.with(|s| s.credentials.get(&(system, method)).cloned())
    }

    /// How many credentials all systems hold (a duplicate would show here).
    pub fn credential_count(&self) -> usize {
        self.with(|s| s.credentials.len())
    }

    /// How many provision calls arrived, faults included.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
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
    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, system_type = %system.system_type, access_method_id = %job.access_method_id))]
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        let (delay, fault) = self.with(|s| {
            s.calls += 1;
            let delay = s
                .delays
                .get(&system.id)
                .copied()
                .unwrap_or(self.default_delay);
            let queue = s.faults.entry(system.id).or_default();
            let fault = (!queue.is_empty()).then(|| queue.remove(0));
            (delay, fault)
        });
        tokio::time::sleep(delay).await;
        let rejected: Vec<EntranceId> = match &fault {
            Some(Fault::Timeout) => {
                return Err(ProviderError::Ambiguous(
                    "timed out waiting for the access system".into(),
                ));
            }
            Some(Fault::Unavailable) => {
                return Err(ProviderError::Transient("503 service unavailable".into()));
            }
            Some(Fault::RejectEntrance(e)) => vec![*e],
            _ => Vec::new(),
        };
        let caps = &system.capabilities;
        let result = self.with(|s| {
            let key = (system.id, job.access_method_id);
            if let Some(existing) = s.credentials.get(&key) {
                // Idempotent by reference: the first result, nothing new.
                return result_of(existing, job, &rejected, caps.is_card_encoding_required);
            }
            let granted: Vec<EntranceId> = job
                .entrance_ids
                .iter()
                .copied()
                .filter(|e| !rejected.contains(e))
                .collect();
            let code = (job.mode == AccessMethodMode::Code
                && caps
                    .pin_code_rules
                    .as_ref()
                    .is_some_and(|r| r.generator == PinCodeGenerator::Provider))
            .then(|| {
                let len = caps
                    .pin_code_rules
                    .as_ref()
                    .map_or(6, |r| r.min_length.max(4));
                // Never a code already active on one of these doors.
                loop {
                    let c = random_digits(len);
                    if granted
                        .iter()
                        .all(|d| !s.codes_by_door.get(d).is_some_and(|set| set.contains(&c)))
                    {
                        break c;
                    }
                }
            });
            if let Some(c) = &code {
                for d in &granted {
                    s.codes_by_door.entry(*d).or_default().insert(c.clone());
                }
            }
            let cred = VirtualCredential {
                provider_user_id: format!("vu_{}", holder.user_identity_id.as_uuid().simple()),
                credential_id: format!("vc_{}", job.access_method_id.as_uuid().simple()),
                entrances: granted,
                code,
            };
            let r = result_of(&cred, job, &rejected, caps.is_card_encoding_required);
            s.credentials.insert(key, cred);
            r
        });
        if fault == Some(Fault::FailedButApplied) {
            return Err(ProviderError::Ambiguous("500 internal server error".into()));
        }
        Ok(result)
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_encoder_id = %job.acs_encoder_id))]
    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        let (delay, fault, credential) = self.with(|s| {
            s.calls += 1;
            let delay = s
                .delays
                .get(&system.id)
                .copied()
                .unwrap_or(self.default_delay);
            let queue = s.faults.entry(system.id).or_default();
            let fault = (!queue.is_empty()).then(|| queue.remove(0));
            (
                delay,
                fault,
                s.credentials
                    .get(&(system.id, job.access_method_id))
                    .cloned(),
            )
        });
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
    c: &VirtualCredential,
    job: &ProvisionJob,
    rejected: &[EntranceId],
    encoding: bool,
) -> ProvisionResult {
    ProvisionResult {
        doors: job
            .entrance_ids
            .iter()
            .map(|e| {
                let outcome = if rejected.contains(e) || !c.entrances.contains(e) {
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
