//! Workspaces (tenants) and their API keys, and the sandbox seed.

use keygate_domain::ids::WorkspaceId;
use keygate_domain::model::{ApiKey, NewAccessSystem, Workspace, WorkspaceType, now};
use keygate_providers::sandbox;

use crate::tokens::mint_api_key;

/// Every sandbox system, seeded into each new sandbox workspace.
pub fn sandbox_systems() -> Vec<NewAccessSystem> {
    sandbox::SANDBOX_SYSTEM_TYPES
        .iter()
        .filter_map(|t| sandbox::new_system(t, None, None))
        .collect()
}

/// A new workspace with its first key; the token is returned once and never stored.
pub fn new_workspace(
    name: String,
    workspace_type: WorkspaceType,
    key_name: String,
) -> (Workspace, ApiKey, String) {
    let ws = Workspace {
        id: WorkspaceId::new(),
        name,
        workspace_type,
        created_at: now(),
    };
    let minted = mint_api_key();
    let key = ApiKey {
        id: minted.id,
        workspace_id: ws.id,
        name: key_name,
        secret_sha256: minted.secret_sha256,
        created_at: ws.created_at,
        revoked_at: None,
    };
    (ws, key, minted.token)
}
