//! Workspaces (tenants) and their API keys, the access systems the operator connects, and the
//! sandbox seed. These are the operator's use cases (`keygate.admin.v1`): the caller is the
//! operator, and the workspace is an argument, not the caller's.

use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use keygate_domain::model::{AccessSystem, ApiKey, NewAccessSystem, Workspace, WorkspaceType, now};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, FieldViolation};
use keygate_providers::{Connection, sandbox};

use crate::App;
use crate::tokens::mint_api_key;
use crate::tracker::Committed;

/// The name of a new workspace's first API key when none is given.
pub const DEFAULT_API_KEY_NAME: &str = "default";
/// The time zone of a connected system when none is given.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

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

/// A time zone as the operator gives it: blank is none; otherwise an IANA-like name (letters,
/// digits and `/_+-`, not starting with `/`, at most 64 characters).
pub fn time_zone(raw: &str) -> Result<Option<String>, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    // The shape first (no path reaches the zone database), then the bundled IANA database:
    // a zone it does not know would show every door window in UTC.
    let ok = s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        && !s.starts_with('/')
        && jiff::tz::TimeZone::get(s).is_ok();
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(FieldViolation::new(
            "time_zone",
            "must be an IANA time zone like Europe/Madrid",
        ))
    }
}

/// A validated `CreateWorkspace`.
#[derive(Clone, Debug)]
pub struct CreateWorkspace {
    pub name: String,
    pub workspace_type: WorkspaceType,
    /// `None`: [`DEFAULT_API_KEY_NAME`].
    pub api_key_name: Option<String>,
}

/// A validated `CreateApiKey`.
#[derive(Clone, Debug)]
pub struct CreateApiKey {
    pub name: String,
}

/// A validated `ConnectAccessSystem`. `Debug` shows credential names, never values.
#[derive(Clone, Default)]
pub struct ConnectSystem {
    /// The `request_id` claim (the tenant's `ConnectAccessSystem`); `None` for the operator's.
    pub idem: Option<keygate_store::Idempotency>,
    /// As given (not blank); which types exist is decided by the use case.
    pub system_type: String,
    pub name: Option<String>,
    /// `None`: [`DEFAULT_TIME_ZONE`].
    pub time_zone: Option<String>,
    /// Non-secret settings the adapter reads (a connector's `address`, ...).
    pub settings: std::collections::BTreeMap<String, String>,
    /// Secret values (a connector's `token`, a vendor's API key): sealed before they are
    /// stored, never returned.
    pub credentials: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for ConnectSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSystem")
            .field("idem", &self.idem)
            .field("system_type", &self.system_type)
            .field("name", &self.name)
            .field("time_zone", &self.time_zone)
            .field("settings", &self.settings)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl App {
    /// Creates a workspace with its first API key (a sandbox one with every sandbox system).
    /// Returns the workspace, the key and the key's token, shown once.
    pub async fn create_workspace(
        &self,
        cmd: CreateWorkspace,
    ) -> Result<(Workspace, ApiKey, String), Error> {
        let CreateWorkspace {
            name,
            workspace_type,
            api_key_name,
        } = cmd;
        let key_name = api_key_name.unwrap_or_else(|| DEFAULT_API_KEY_NAME.to_owned());
        let (ws, key, token) = new_workspace(name, workspace_type, key_name);
        let systems = if workspace_type == WorkspaceType::Sandbox {
            self.sandbox_systems().await?
        } else {
            Vec::new()
        };
        self.store.create_workspace(&ws, &key, &systems).await?;
        // No "unknown key" entry cached before it existed may hide the new key.
        self.tracker
            .committed(Committed::new(ws.id).api_key(key.id))
            .await;
        tracing::info!(workspace_id = %ws.id, workspace_type = workspace_type.as_str(), "workspace created");
        Ok((ws, key, token))
    }

    /// The Seam-compatible form of a new key's token: `seam_test...` in a sandbox workspace,
    /// `seam_kg...` otherwise (`tokens::seam_api_key`).
    pub async fn seam_api_key_token(&self, ws: WorkspaceId, token: &str) -> Result<String, Error> {
        let w = self.store.get_workspace(ws).await?;
        crate::tokens::seam_api_key(token, w.workspace_type == WorkspaceType::Sandbox).ok_or_else(
            || Error::Internal {
                message: "a minted key is not shaped like a Keygate key".into(),
            },
        )
    }

    /// One workspace: the caller's own (what an API key may read of it), or the console's
    /// header (its name and whether it is a sandbox).
    pub async fn get_workspace(&self, ws: WorkspaceId) -> Result<Workspace, Error> {
        self.store.get_workspace(ws).await
    }

    pub async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>, Error> {
        self.store.list_workspaces(page).await
    }

    /// The access systems of a workspace, for the operator: unlike a workspace's own listing, a
    /// workspace that does not exist is `WORKSPACE_NOT_FOUND`, not an empty page.
    pub async fn list_workspace_access_systems(
        &self,
        ws: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<AccessSystem>, Error> {
        self.store.get_workspace(ws).await?;
        self.store.list_access_systems(ws, None, page).await
    }

    /// A new API key of the workspace. Returns the key and its token, shown once.
    pub async fn create_api_key(
        &self,
        ws: WorkspaceId,
        cmd: CreateApiKey,
    ) -> Result<(ApiKey, String), Error> {
        let CreateApiKey { name } = cmd;
        let minted = mint_api_key();
        let key = ApiKey {
            id: minted.id,
            workspace_id: ws,
            name,
            secret_sha256: minted.secret_sha256,
            created_at: now(),
            revoked_at: None,
        };
        self.store.create_api_key(&key).await?;
        // No "unknown key" entry cached before it existed may hide the new key.
        self.tracker
            .committed(Committed::new(ws).api_key(key.id))
            .await;
        Ok((key, minted.token))
    }

    pub async fn list_api_keys(
        &self,
        ws: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error> {
        self.store.list_api_keys(ws, page).await
    }

    /// Revokes an API key. The store is the record; the tracker drops the cached copy, so this
    /// replica (and every one sharing the cache) refuses the key at once; other caches let it
    /// expire within its TTL.
    pub async fn revoke_api_key(&self, ws: WorkspaceId, id: ApiKeyId) -> Result<ApiKey, Error> {
        let key = self.store.revoke_api_key(ws, id, now()).await?;
        self.tracker.committed(Committed::new(ws).api_key(id)).await;
        Ok(key)
    }

    /// The systems a new sandbox workspace starts with: every virtual type, read through its
    /// adapter like any connected system.
    pub async fn sandbox_systems(&self) -> Result<Vec<NewAccessSystem>, Error> {
        let mut out = Vec::new();
        for t in sandbox::SANDBOX_SYSTEM_TYPES {
            out.push(self.discover(t, &Connection::default()).await?);
        }
        Ok(out)
    }
}
