//! The sandbox virtual systems' ledger, kept in the store of record so their "vendor-side"
//! credentials survive restarts and are shared by every orchestrator replica.

use std::sync::Arc;

use async_trait::async_trait;
use keygate_domain::ids::{AccessMethodId, AccessSystemId};
use keygate_domain::model::SandboxCredential;
use keygate_providers::virtual_system::Ledger;
use keygate_store::Store;

/// [`Ledger`] over the store.
pub struct StoreLedger(pub Arc<dyn Store>);

#[async_trait]
impl Ledger for StoreLedger {
    async fn put(&self, c: &SandboxCredential) -> Result<SandboxCredential, String> {
        self.0
            .sandbox_credential(c)
            .await
            .map_err(|e| e.to_string())
    }

    async fn unlocked(
        &self,
        system: &keygate_domain::model::AccessSystem,
        job: &keygate_domain::action::UnlockJob,
    ) -> Result<(), String> {
        self.0
            .record_sandbox_unlock(
                system.workspace_id,
                system.id,
                job.acs_entrance_id,
                job.action_attempt_id,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, system: AccessSystemId, method: AccessMethodId) -> Result<(), String> {
        self.0
            .delete_sandbox_credential(system, method)
            .await
            .map_err(|e| e.to_string())
    }

    async fn get(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<SandboxCredential>, String> {
        self.0
            .find_sandbox_credential(system, method)
            .await
            .map_err(|e| e.to_string())
    }
}
