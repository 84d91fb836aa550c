//! The provider registry: which adapter serves each access system type.
//!
//! Every path that talks to an access system (the orchestrator's jobs, the reconciler's read
//! backs, unlocks and encodings, and connecting a system) goes through one [`Registry`], which
//! dispatches on the system's `system_type`. Adding a vendor means writing an adapter (an
//! [`AccessSystemProvider`]) and registering it for its types; nothing else changes. A type
//! with no adapter is refused where it is connected (`UNKNOWN_ACCESS_SYSTEM_TYPE`) and, for a
//! system stored by another build, fails its jobs as permanent errors with the reason rather
//! than calling the wrong adapter.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard, RevokeJob, UnlockJob};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::AccessMethodId;
use keygate_domain::model::{AccessSystem, NewAccessSystem};
use keygate_domain::tracker::ProvisionResult;

use crate::provider::{AccessSystemProvider, Connection, HeldCredential, Holder, ProviderError};

/// The error type of an action attempt whose system type has no adapter in this build.
pub const NOT_REGISTERED: &str = "provider_not_registered";
/// The error type (and message prefix) of a call on a disconnected system.
pub const ACCOUNT_DISCONNECTED: &str = "account_disconnected";

/// Adapters by access system type. Cheap to clone; clones share the adapters.
#[derive(Clone, Default)]
pub struct Registry {
    by_type: BTreeMap<String, Arc<dyn AccessSystemProvider>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves every type `adapter` declares ([`AccessSystemProvider::system_types`]) with it.
    /// A type registered twice is served by the last adapter registered for it.
    pub fn register(&mut self, adapter: Arc<dyn AccessSystemProvider>) -> &mut Self {
        for t in adapter.system_types() {
            self.by_type.insert(t, adapter.clone());
        }
        self
    }

    /// The adapter of `system_type`, if one is registered.
    pub fn get(&self, system_type: &str) -> Option<&Arc<dyn AccessSystemProvider>> {
        self.by_type.get(system_type)
    }

    /// Every registered type, sorted.
    pub fn types(&self) -> Vec<String> {
        self.by_type.keys().cloned().collect()
    }

    /// The adapter of a stored system. A disconnected system has none: Keygate calls it no
    /// more, and every job on it fails for good with `account_disconnected`.
    fn adapter(&self, system: &AccessSystem) -> Result<&Arc<dyn AccessSystemProvider>, String> {
        if system.health.disconnected_at.is_some() {
            return Err(format!(
                "{ACCOUNT_DISCONNECTED}: the access system {} was disconnected",
                system.id
            ));
        }
        self.get(&system.system_type).ok_or_else(|| {
            format!(
                "no provider is registered for access system type {:?} in this build",
                system.system_type
            )
        })
    }
}

fn not_registered(message: String) -> AttemptError {
    let error_type = if message.starts_with(ACCOUNT_DISCONNECTED) {
        ACCOUNT_DISCONNECTED
    } else {
        NOT_REGISTERED
    };
    AttemptError {
        error_type: error_type.into(),
        message,
    }
}

#[async_trait]
impl AccessSystemProvider for Registry {
    fn system_types(&self) -> Vec<String> {
        self.types()
    }

    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        match self.get(system_type) {
            Some(a) => a.discover(system_type, connection).await,
            None => Err(ProviderError::Permanent(format!(
                "no provider is registered for access system type {system_type:?}"
            ))),
        }
    }

    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        self.adapter(system)
            .map_err(ProviderError::Permanent)?
            .provision(system, job, holder)
            .await
    }

    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        self.adapter(system)
            .map_err(ProviderError::Permanent)?
            .revoke(system, job)
            .await
    }

    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        self.adapter(system)
            .map_err(ProviderError::Permanent)?
            .read_back(system, access_method_id)
            .await
    }

    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        self.adapter(system)
            .map_err(not_registered)?
            .unlock(system, job)
            .await
    }

    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        self.adapter(system)
            .map_err(not_registered)?
            .encode(system, job)
            .await
    }

    fn warnings(&self, system: &AccessSystem) -> Vec<keygate_domain::grant::Notice> {
        self.adapter(system)
            .map(|a| a.warnings(system))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use keygate_domain::ids::{AccessSystemId, ActionAttemptId, EntranceId, WorkspaceId};
    use keygate_domain::model::now;

    use super::*;

    /// An adapter that records which types it was asked about.
    #[derive(Default)]
    struct Recording {
        types: Vec<String>,
        seen: Mutex<Vec<String>>,
    }

    impl Recording {
        fn of(types: &[&str]) -> Arc<Self> {
            Arc::new(Self {
                types: types.iter().map(|t| (*t).to_owned()).collect(),
                seen: Mutex::default(),
            })
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl AccessSystemProvider for Recording {
        fn system_types(&self) -> Vec<String> {
            self.types.clone()
        }

        async fn discover(
            &self,
            system_type: &str,
            _connection: &Connection,
        ) -> Result<NewAccessSystem, ProviderError> {
            if let Ok(mut s) = self.seen.lock() {
                s.push(format!("discover {system_type}"));
            }
            Err(ProviderError::Transient("not in this test".into()))
        }

        async fn provision(
            &self,
            _system: &AccessSystem,
            _job: &ProvisionJob,
            _holder: &Holder,
        ) -> Result<ProvisionResult, ProviderError> {
            Err(ProviderError::Transient("not in this test".into()))
        }

        async fn revoke(
            &self,
            system: &AccessSystem,
            _job: &RevokeJob,
        ) -> Result<(), ProviderError> {
            if let Ok(mut s) = self.seen.lock() {
                s.push(format!("revoke {}", system.system_type));
            }
            Ok(())
        }

        async fn read_back(
            &self,
            _system: &AccessSystem,
            _access_method_id: AccessMethodId,
        ) -> Result<Option<HeldCredential>, ProviderError> {
            Ok(None)
        }
    }

    fn system(system_type: &str) -> AccessSystem {
        AccessSystem {
            id: AccessSystemId::new(),
            workspace_id: WorkspaceId::new(),
            name: "Test".into(),
            external_type: "test".into(),
            system_type: system_type.into(),
            is_virtual: false,
            time_zone: "UTC".into(),
            capabilities: crate::sandbox::capabilities("virtual_latch").expect("caps"),
            created_at: now(),
            health: Default::default(),
            settings: Default::default(),
        }
    }

    fn revoke_job() -> RevokeJob {
        RevokeJob {
            access_grant_id: keygate_domain::ids::AccessGrantId::new(),
            access_method_id: AccessMethodId::new(),
            acs_system_id: AccessSystemId::new(),
            entrance_ids: Vec::new(),
        }
    }

    #[tokio::test]
    async fn each_type_goes_to_its_adapter() {
        let (a, b) = (
            Recording::of(&["kisi"]),
            Recording::of(&["brivo", "brivo_eu"]),
        );
        let mut r = Registry::new();
        r.register(a.clone()).register(b.clone());
        assert_eq!(r.types(), vec!["brivo", "brivo_eu", "kisi"]);
        for t in ["kisi", "brivo_eu", "brivo"] {
            r.revoke(&system(t), &revoke_job()).await.expect("revoke");
        }
        let _ = r.discover("kisi", &Connection::default()).await;
        assert_eq!(a.seen(), vec!["revoke kisi", "discover kisi"]);
        assert_eq!(b.seen(), vec!["revoke brivo_eu", "revoke brivo"]);
    }

    #[tokio::test]
    async fn an_unknown_type_is_refused_and_calls_nobody() {
        let a = Recording::of(&["kisi"]);
        let mut r = Registry::new();
        r.register(a.clone());
        let s = system("salto_ks");
        assert!(matches!(
            r.revoke(&s, &revoke_job()).await,
            Err(ProviderError::Permanent(m)) if m.contains("salto_ks")
        ));
        assert!(matches!(
            r.discover("salto_ks", &Connection::default()).await,
            Err(ProviderError::Permanent(_))
        ));
        let unlock = UnlockJob {
            action_attempt_id: ActionAttemptId::new(),
            acs_system_id: s.id,
            acs_entrance_id: EntranceId::new(),
            user_identity_id: None,
            instant_key_id: None,
            access_grant_id: None,
            access_method_id: None,
            expires_at: None,
        };
        let e = r.unlock(&s, &unlock).await.expect_err("not registered");
        assert_eq!(e.error_type, NOT_REGISTERED);
        assert!(a.seen().is_empty(), "no adapter was called");
    }

    #[tokio::test]
    async fn a_disconnected_system_calls_nobody() {
        let a = Recording::of(&["kisi"]);
        let mut r = Registry::new();
        r.register(a.clone());
        let mut s = system("kisi");
        s.health.disconnected_at = Some(now());
        assert!(matches!(
            r.revoke(&s, &revoke_job()).await,
            Err(ProviderError::Permanent(m)) if m.starts_with(ACCOUNT_DISCONNECTED)
        ));
        let unlock = UnlockJob {
            action_attempt_id: ActionAttemptId::new(),
            acs_system_id: s.id,
            acs_entrance_id: EntranceId::new(),
            user_identity_id: None,
            instant_key_id: None,
            access_grant_id: None,
            access_method_id: None,
            expires_at: None,
        };
        let e = r.unlock(&s, &unlock).await.expect_err("disconnected");
        assert_eq!(e.error_type, ACCOUNT_DISCONNECTED);
        assert!(a.seen().is_empty(), "no adapter was called");
    }
}
