//! Connected access systems: connecting one (the adapter of its type reads what it is, its
//! credentials are sealed before they are stored), syncing what it holds (on connect, on
//! demand and periodically), disconnecting it, the health it shows (errors and warnings, each
//! change an event), and the [`keygate_providers::Directory`] through which adapters of real
//! systems read a stored system's settings, credentials and external ids.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_cache::SealKeys;
use keygate_domain::events::{self, NewEvent};
use keygate_domain::grant::Notice;
use keygate_domain::ids::{AccessSystemId, WorkspaceId};
use keygate_domain::model::{
    AccessSystem, NewAccessSystem, SealedSecret, SyncReport, SystemConnection, WorkspaceType, now,
};
use keygate_domain::{Error, ErrorReason};
use keygate_providers::{
    AccessSystemProvider as _, Connection, Credentials, Directory, Link, ProviderError,
};
use keygate_store::Store;

use crate::App;
use crate::simulated::{SIMULATOR_SETTING, SimulatedVendors};
use crate::tracker::{Committed, Tracker};
use crate::workspaces::{ConnectSystem, DEFAULT_TIME_ZONE};
use keygate_providers::sandbox::SANDBOX_SYSTEM_TYPES;

/// What separates the keys sealing credentials from every other use of a configured key.
pub const CREDENTIALS_PURPOSE: &str = "keygate-credentials";
/// Domain separation of the associated data: a sealed value is bound to this use, its
/// workspace and its access system, so it cannot be moved to another system.
const AAD_PREFIX: &str = "keygate-credentials:v1:";
/// Most settings or credentials one system may have, and their sizes.
const MAX_ENTRIES: usize = 32;
const MAX_NAME_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 4096;

/// Error codes of a system's health (`AccessSystem.errors`): the reasons adapters begin their
/// messages with, and a disconnection.
pub use keygate_providers::registry::ACCOUNT_DISCONNECTED;
pub use keygate_providers::vendor::{
    BUDGET_EXHAUSTED, BUDGET_NEARLY_EXHAUSTED, INVALID_CREDENTIALS, PROVIDER_UNREACHABLE,
};

/// The keys that seal the credentials of connected systems (`KEYGATE_CREDENTIALS_KEY`): the
/// current one seals, it and the previous ones open. Without keys, a system with credentials
/// cannot be connected (`CREDENTIALS_KEY_MISSING`); systems without credentials can.
#[derive(Clone, Default)]
pub struct CredentialSeal {
    keys: Option<Arc<SealKeys>>,
}

impl std::fmt::Debug for CredentialSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSeal")
            .field("configured", &self.keys.is_some())
            .finish()
    }
}

impl CredentialSeal {
    pub fn new(keys: SealKeys) -> Self {
        Self {
            keys: Some(Arc::new(keys)),
        }
    }

    fn aad(ws: WorkspaceId, id: AccessSystemId) -> Vec<u8> {
        format!("{AAD_PREFIX}{ws}:{id}").into_bytes()
    }

    /// Seals `credentials` for one system; `None` when there are none.
    pub fn seal(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        credentials: &Credentials,
    ) -> Result<Option<SealedSecret>, Error> {
        if credentials.is_empty() {
            return Ok(None);
        }
        let keys = self.keys.as_ref().ok_or_else(|| Error::FailedPrecondition {
            reason: ErrorReason::CredentialsKeyMissing,
            message: "this server has no credentials key (KEYGATE_CREDENTIALS_KEY) to seal credentials with; connect without credentials or configure one".into(),
        })?;
        let plain = serde_json::to_vec(credentials.values()).map_err(|e| Error::Internal {
            message: format!("credentials do not serialize: {e}"),
        })?;
        let sealed = keys
            .seal(&Self::aad(ws, id), &plain)
            .map_err(|e| Error::Internal {
                message: format!("credentials could not be sealed: {e}"),
            })?;
        Ok(Some(SealedSecret {
            key_id: format!("{:02x}", keys.current_id()),
            sealed: URL_SAFE_NO_PAD.encode(sealed),
        }))
    }

    /// Opens what [`CredentialSeal::seal`] sealed for the same system. The error says why in
    /// words that name no secret.
    pub fn open(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        sealed: &SealedSecret,
    ) -> Result<Credentials, String> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            "the credentials are sealed but this server has no credentials key".to_owned()
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(&sealed.sealed)
            .map_err(|_| "the stored credentials are malformed".to_owned())?;
        let plain = keys.open(&Self::aad(ws, id), &bytes).map_err(|why| {
            format!(
                "the stored credentials do not open with this server's credentials keys ({}; sealed with key {})",
                why.as_str(),
                sealed.key_id
            )
        })?;
        let values: BTreeMap<String, String> = serde_json::from_slice(&plain)
            .map_err(|_| "the stored credentials are malformed".to_owned())?;
        Ok(Credentials::new(values))
    }
}

/// The [`Directory`] over the store and the credentials key.
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    seal: CredentialSeal,
    simulators: SimulatedVendors,
}

impl StoreDirectory {
    pub fn new(store: Arc<dyn Store>, seal: CredentialSeal) -> Self {
        Self {
            store,
            seal,
            simulators: SimulatedVendors::default(),
        }
    }

    /// Systems a sandbox connected to a simulator reach this process's one ([`crate::simulated`]).
    pub fn with_simulators(mut self, simulators: SimulatedVendors) -> Self {
        self.simulators = simulators;
        self
    }
}

#[async_trait]
impl Directory for StoreDirectory {
    async fn link(&self, system: &AccessSystem) -> Result<Link, ProviderError> {
        if system.health.disconnected_at.is_some() {
            return Err(ProviderError::Permanent(format!(
                "{ACCOUNT_DISCONNECTED}: the access system {} was disconnected",
                system.id
            )));
        }
        let (ws, id) = (system.workspace_id, system.id);
        let connection = self
            .store
            .access_system_connection(ws, id)
            .await
            .map_err(|e| ProviderError::Transient(format!("the store did not answer: {e}")))?;
        let (settings, credentials) = match self
            .simulators
            .resolve(&system.system_type, &connection.settings)?
        {
            Some(simulated) => simulated,
            None => (
                connection.settings,
                self.open(ws, id, &connection.credentials)?,
            ),
        };
        let ids = self
            .store
            .external_ids(ws, id)
            .await
            .map_err(|e| ProviderError::Transient(format!("the store did not answer: {e}")))?;
        Ok(Link {
            settings,
            credentials,
            entrances: ids.entrances,
            access_groups: ids.access_groups,
            encoders: ids.encoders,
        })
    }
}

impl StoreDirectory {
    fn open(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
        sealed: &Option<SealedSecret>,
    ) -> Result<Credentials, ProviderError> {
        Ok(match sealed {
            Some(sealed) => self
                .seal
                .open(ws, id, sealed)
                .map_err(|m| ProviderError::Permanent(format!("{INVALID_CREDENTIALS}: {m}")))?,
            None => Credentials::default(),
        })
    }
}

fn check_entries(what: &str, entries: &BTreeMap<String, String>) -> Result<(), Error> {
    let bad = |message: String| Error::InvalidToken {
        reason: ErrorReason::InvalidConnectionSettings,
        message,
    };
    if entries.len() > MAX_ENTRIES {
        return Err(bad(format!("{what}: at most {MAX_ENTRIES} entries")));
    }
    for (k, v) in entries {
        let name_ok = !k.is_empty()
            && k.len() <= MAX_NAME_LEN
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(bad(format!(
                "{what}: names are 1 to {MAX_NAME_LEN} of a-z, 0-9 and _ ({k:?} is not)"
            )));
        }
        if v.len() > MAX_VALUE_LEN || v.chars().any(char::is_control) {
            // The value may be a secret: name the entry, never the value.
            return Err(bad(format!(
                "{what}.{k}: at most {MAX_VALUE_LEN} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// What a refusal of an adapter means for the caller who connects or syncs: adapters start a
/// message with the reason (`invalid_credentials: ...`).
fn refusal(e: ProviderError) -> Error {
    let (permanent, message) = match e {
        ProviderError::Permanent(m) => (true, m),
        ProviderError::Transient(m) | ProviderError::Ambiguous(m) => (false, m),
    };
    let reason_of = |m: &str| m.split_once(": ").map(|(r, _)| r.to_owned());
    match reason_of(&message).as_deref() {
        Some(keygate_providers::vendor::INVALID_CONNECTION_SETTINGS) => Error::InvalidToken {
            reason: ErrorReason::InvalidConnectionSettings,
            message,
        },
        Some(INVALID_CREDENTIALS) => Error::FailedPrecondition {
            reason: ErrorReason::InvalidCredentials,
            message,
        },
        Some(ACCOUNT_DISCONNECTED) => Error::FailedPrecondition {
            reason: ErrorReason::AccessSystemDisconnected,
            message,
        },
        _ if !permanent => Error::FailedPrecondition {
            reason: ErrorReason::ProviderUnreachable,
            message: if message.starts_with(PROVIDER_UNREACHABLE) {
                message
            } else {
                format!("{PROVIDER_UNREACHABLE}: {message}")
            },
        },
        _ => Error::FailedPrecondition {
            reason: ErrorReason::CapabilityNotSupported,
            message: format!("the access system cannot be connected: {message}"),
        },
    }
}

/// The health error a failed sync leaves on the system, if it is one the system shows.
fn health_error(e: &Error) -> Option<Notice> {
    let (code, message) = match e {
        Error::FailedPrecondition {
            reason: ErrorReason::InvalidCredentials,
            message,
        } => (INVALID_CREDENTIALS, message),
        Error::FailedPrecondition {
            reason: ErrorReason::ProviderUnreachable,
            message,
        } => (PROVIDER_UNREACHABLE, message),
        Error::FailedPrecondition {
            reason: ErrorReason::CapabilityNotSupported,
            message,
        } => (PROVIDER_UNREACHABLE, message),
        _ => return None,
    };
    Some(Notice::new(code, message.clone(), now()))
}

impl App {
    /// Connects an access system to the workspace (the operator's `ConnectAccessSystem`, and
    /// the tenant's own in `keygate.v1`): the adapter registered for its type reads what the
    /// system is (capabilities, entrances, access groups, encoders) with the settings and
    /// credentials given, the credentials are sealed, and it is stored as read with an
    /// `acs_system.connected` event.
    ///
    /// Refusals, with nothing stored: a type with no adapter is `UNKNOWN_ACCESS_SYSTEM_TYPE`
    /// (listing the registered types); settings the adapter does not accept
    /// `INVALID_CONNECTION_SETTINGS` (`INVALID_ARGUMENT`); credentials it refuses
    /// `INVALID_CREDENTIALS`; an address it cannot reach `PROVIDER_UNREACHABLE`; credentials
    /// with no key to seal them `CREDENTIALS_KEY_MISSING`; a virtual system in a production
    /// workspace, or a real one in a sandbox, `WORKSPACE_TYPE_MISMATCH`. Idempotent by
    /// `request_id`.
    pub async fn connect_access_system(
        &self,
        ws: WorkspaceId,
        cmd: ConnectSystem,
    ) -> Result<AccessSystem, Error> {
        let ConnectSystem {
            idem,
            system_type,
            name,
            time_zone,
            settings,
            credentials,
        } = cmd;
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await?
        {
            let first = first.parse().map_err(|_| Error::Internal {
                message: "stored access system id".into(),
            })?;
            return self.store.get_access_system(ws, first).await;
        }
        check_entries("settings", &settings)?;
        check_entries("credentials", &credentials)?;
        let workspace = self.store.get_workspace(ws).await?;
        let id = AccessSystemId::new();
        let system_type = system_type.trim();
        // A sandbox workspace reaches a real vendor's type only through its simulator here.
        let simulated = match workspace.workspace_type {
            WorkspaceType::Sandbox => {
                self.simulators
                    .for_sandbox(system_type, &settings, &credentials)?
            }
            WorkspaceType::Production => None,
        };
        let (sent, settings, credentials, sealed) = match simulated {
            Some(c) => (c.sent, c.stored, c.credentials, None),
            None => {
                SimulatedVendors::refuse_marker(&settings)?;
                let credentials = Credentials::new(credentials);
                // Refuse before calling anyone when the credentials could not be kept.
                let sealed = self.credentials.seal(ws, id, &credentials)?;
                (settings.clone(), settings, credentials, sealed)
            }
        };
        let to_simulator = sealed.is_none() && settings.contains_key(SIMULATOR_SETTING);
        self.require_adapter(system_type)?;
        // Refused before any call: a sandbox never makes this server reach a vendor's address.
        let virtual_type = SANDBOX_SYSTEM_TYPES.contains(&system_type);
        if workspace.workspace_type == WorkspaceType::Sandbox && !virtual_type && !to_simulator {
            return Err(self.sandbox_mismatch(system_type));
        }
        let system = self
            .providers
            .discover(
                system_type,
                &Connection {
                    acs_system_id: Some(id),
                    name,
                    time_zone: Some(time_zone.unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned())),
                    settings: sent,
                    credentials,
                },
            )
            .await
            .map_err(refusal)?;
        // Sandbox workspaces open no real door (a vendor's simulator opens none); production
        // ones trust no simulator.
        match (workspace.workspace_type, system.is_virtual) {
            (WorkspaceType::Sandbox, false) if !to_simulator => {
                return Err(self.sandbox_mismatch(&system.system_type));
            }
            (WorkspaceType::Production, true) => {
                return Err(Error::FailedPrecondition {
                    reason: ErrorReason::WorkspaceTypeMismatch,
                    message: format!(
                        "{:?} is a virtual access system: a production workspace connects only real ones",
                        system.system_type
                    ),
                });
            }
            _ => {}
        }
        let created = self
            .store
            .connect_access_system(
                ws,
                id,
                &system,
                &SystemConnection {
                    settings,
                    credentials: sealed,
                },
                idem.as_ref(),
            )
            .await?;
        self.tracker
            .committed(Committed::new(ws).some_events())
            .await;
        tracing::info!(acs_system_id = %created.id, system_type = %created.system_type, "access system connected");
        Ok(created)
    }

    fn sandbox_mismatch(&self, system_type: &str) -> Error {
        Error::FailedPrecondition {
            reason: ErrorReason::WorkspaceTypeMismatch,
            message: format!(
                "{system_type:?} is a real access system: a sandbox workspace connects only virtual ones and the vendor simulators this server runs ({})",
                match self.simulators.types() {
                    t if t.is_empty() => "none".to_owned(),
                    t => t.join(", "),
                }
            ),
        }
    }

    fn require_adapter(&self, system_type: &str) -> Result<(), Error> {
        if self.providers.get(system_type).is_none() {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::UnknownAccessSystemType,
                message: format!(
                    "unknown system_type {:?}; known types: {}",
                    system_type,
                    self.providers.types().join(", ")
                ),
            });
        }
        Ok(())
    }

    /// What the adapter of `system_type` reads of a system to connect, with no settings.
    pub(crate) async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, Error> {
        self.require_adapter(system_type)?;
        self.providers
            .discover(system_type, connection)
            .await
            .map_err(refusal)
    }

    /// Reads what the system holds now (entrances, access groups, encoders, capabilities)
    /// through its adapter and matches it against the record: new ones appear, ones it no
    /// longer lists are marked removed (the grants that used a removed entrance get a warning
    /// and an `access_grant.access_to_door_lost` event), ones that come back are restored with
    /// their ids. A system that cannot be reached gets the error (`provider_unreachable`,
    /// `invalid_credentials`) and an `acs_system.disconnected` event, and the call fails with
    /// its reason; the next good sync clears it with `acs_system.connected`. A disconnected
    /// system is `ACCESS_SYSTEM_DISCONNECTED`.
    pub async fn sync_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<(AccessSystem, SyncReport), Error> {
        let system = self.store.get_access_system(ws, id).await?;
        if system.health.disconnected_at.is_some() {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::AccessSystemDisconnected,
                message: format!("the access system {id} was disconnected"),
            });
        }
        let found = async {
            let link = self.directory().link(&system).await.map_err(refusal)?;
            self.require_adapter(&system.system_type)?;
            self.providers
                .discover(&system.system_type, &link.connection(&system))
                .await
                .map_err(refusal)
        }
        .await;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                if let Some(error) = health_error(&e) {
                    self.set_health(&system, vec![error]).await?;
                }
                return Err(e);
            }
        };
        let report = self.store.sync_access_system(ws, id, &found, now()).await?;
        if !system.health.errors.is_empty() {
            self.set_health(&system, Vec::new()).await?;
        }
        self.tracker
            .committed(Committed::new(ws).some_events())
            .await;
        if report != SyncReport::default() {
            tracing::info!(acs_system_id = %id, added = report.entrances_added.len(), removed = report.entrances_removed.len(), restored = report.entrances_restored.len(), grants_warned = report.grants_warned.len(), "access system synced with changes");
        }
        Ok((self.store.get_access_system(ws, id).await?, report))
    }

    async fn set_health(&self, system: &AccessSystem, errors: Vec<Notice>) -> Result<(), Error> {
        set_errors(&*self.store, &self.tracker, system, errors).await
    }

    /// Disconnects a system from the workspace: its sealed credentials are dropped, it shows
    /// `account_disconnected`, Keygate calls it no more (pending jobs on it fail with that
    /// reason, and doors stay as they are on the system: revoke grants first to take access
    /// away there), and an `acs_system.disconnected` event is appended. Its record stays,
    /// readable. Disconnecting twice answers the same.
    pub async fn disconnect_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<AccessSystem, Error> {
        self.store.get_access_system(ws, id).await?;
        self.store.disconnect_access_system(ws, id, now()).await?;
        self.tracker
            .committed(Committed::new(ws).some_events().jobs())
            .await;
        tracing::info!(acs_system_id = %id, "access system disconnected");
        self.store.get_access_system(ws, id).await
    }

    /// Syncs up to `limit` connected systems (of every workspace) not synced for `every`:
    /// the periodic sync. Failures stay on each system; returns how many were synced.
    pub async fn sync_due(&self, every: Duration, limit: i64) -> Result<usize, Error> {
        let before = now() - every;
        let due = self.store.systems_due_for_sync(before, limit).await?;
        let mut done = 0;
        for (ws, id) in due {
            match self.sync_access_system(ws, id).await {
                Ok(_) => done += 1,
                // The error is on the system; it stays due, and is tried again next round.
                Err(e) => tracing::warn!(acs_system_id = %id, error = %e, "periodic sync failed"),
            }
        }
        Ok(done)
    }

    /// The directory adapters of real systems read stored systems through.
    pub fn directory(&self) -> Arc<dyn Directory> {
        Arc::new(
            StoreDirectory::new(self.store.clone(), self.credentials.clone())
                .with_simulators(self.simulators.clone()),
        )
    }
}

/// Replaces a connected system's errors. When it goes from working to not an
/// `acs_system.disconnected` event is appended, and `acs_system.connected` when it works again;
/// the same codes with another message update quietly. Nothing is written when nothing changed.
pub async fn set_errors(
    store: &dyn Store,
    tracker: &Tracker,
    system: &AccessSystem,
    errors: Vec<Notice>,
) -> Result<(), Error> {
    set_health(
        store,
        tracker,
        system,
        errors,
        system.health.warnings.clone(),
    )
    .await
}

/// Replaces a connected system's errors and warnings, as [`set_errors`] does the errors.
async fn set_health(
    store: &dyn Store,
    tracker: &Tracker,
    system: &AccessSystem,
    errors: Vec<Notice>,
    warnings: Vec<Notice>,
) -> Result<(), Error> {
    let same = |a: &[Notice], b: &[Notice]| {
        a.iter()
            .map(|n| (&n.code, &n.message))
            .eq(b.iter().map(|n| (&n.code, &n.message)))
    };
    if same(&system.health.errors, &errors) && same(&system.health.warnings, &warnings) {
        return Ok(());
    }
    let at = now();
    let event = match (system.health.errors.is_empty(), errors.is_empty()) {
        (true, false) => vec![NewEvent::new(events::ACS_SYSTEM_DISCONNECTED, at).system(system.id)],
        (false, true) => vec![NewEvent::new(events::ACS_SYSTEM_CONNECTED, at).system(system.id)],
        _ => Vec::new(),
    };
    store
        .set_access_system_health(
            system.workspace_id,
            system.id,
            &errors,
            &warnings,
            &event,
            at,
        )
        .await?;
    tracker
        .committed(Committed::new(system.workspace_id).some_events())
        .await;
    Ok(())
}

/// The health warnings an adapter raises from what calls tell it (and clears when they no longer
/// hold); other warnings of a system are left as they are.
const CALL_WARNINGS: [&str; 1] = [BUDGET_NEARLY_EXHAUSTED];

/// The health errors a provider call's outcome can raise or clear.
const CALL_ERRORS: [&str; 3] = [INVALID_CREDENTIALS, PROVIDER_UNREACHABLE, BUDGET_EXHAUSTED];

/// What one provider call says of its system's health (the orchestrator calls it after every
/// provision and revocation): a refusal of the credentials or a system that cannot be reached
/// puts `invalid_credentials` or `provider_unreachable` on the system, and the next answer
/// clears it. Other failures say nothing of the connection. `warnings` are what the adapter
/// says of the account now ([`keygate_providers::AccessSystemProvider::warnings`]): they replace
/// the call warnings the system showed (a warning keeps its first message while its code
/// stands). `system` is as the caller read it; nothing is written when nothing changed.
pub async fn observe_call(
    store: &dyn Store,
    tracker: &Tracker,
    system: &AccessSystem,
    outcome: Result<(), &ProviderError>,
    warnings: Vec<Notice>,
) -> Result<(), Error> {
    let health = &system.health;
    let others = || {
        health
            .errors
            .iter()
            .filter(|n| !CALL_ERRORS.contains(&n.code.as_str()))
            .cloned()
    };
    let errors: Vec<Notice> = match outcome {
        Ok(()) => others().collect(),
        Err(e) => {
            let message = match e {
                ProviderError::Transient(m)
                | ProviderError::Ambiguous(m)
                | ProviderError::Permanent(m) => m,
            };
            match CALL_ERRORS
                .into_iter()
                .find(|c| message.strip_prefix(c).is_some_and(|r| r.starts_with(':')))
            {
                None => health.errors.clone(),
                Some(code) if health.errors.iter().any(|n| n.code == code) => health.errors.clone(),
                Some(code) => others()
                    .chain([Notice::new(code, message.clone(), now())])
                    .collect(),
            }
        }
    };
    let mut kept: Vec<Notice> = health
        .warnings
        .iter()
        .filter(|n| !CALL_WARNINGS.contains(&n.code.as_str()))
        .cloned()
        .collect();
    for w in warnings {
        if !CALL_WARNINGS.contains(&w.code.as_str()) || kept.iter().any(|n| n.code == w.code) {
            continue;
        }
        match health.warnings.iter().find(|n| n.code == w.code) {
            Some(shown) => kept.push(shown.clone()),
            None => kept.push(w),
        }
    }
    set_health(store, tracker, system, errors, kept).await
}
