//! Simulated vendors for sandbox workspaces: a sandbox workspace opens no real door, but it may
//! connect a real vendor's type (`kisi`, `brivo`) to the simulator of that vendor's API that
//! this process runs, so the real adapter code can be tried without an account.
//!
//! The rule, in one place: in a sandbox workspace, a type that has a simulator here is connected
//! to it and to nothing else (the caller names no `endpoint` and no credentials; the simulator's
//! address and credentials are filled in for every call, never stored). The stored settings
//! carry the marker [`SIMULATOR_SETTING`], which [`crate::connections::StoreDirectory`] resolves
//! to this process's simulator on every call. A production workspace can never set the marker.
//!
//! Which simulators run, and where, is the binary's business (`keygate serve`); the use cases only
//! see [`SimulatedVendors`].

use std::collections::BTreeMap;

use keygate_domain::{Error, ErrorReason};
use keygate_providers::{Credentials, ProviderError};

/// A stored system's settings and credentials, as its calls use them.
pub(crate) type Resolved = (BTreeMap<String, String>, Credentials);

/// The stored setting that marks a system connected to this process's simulator of its type.
pub const SIMULATOR_SETTING: &str = "simulator";

/// One vendor's simulator: the settings that reach it (its endpoints) and the credentials it
/// accepts.
#[derive(Clone)]
pub struct SimulatedVendor {
    pub settings: BTreeMap<String, String>,
    pub credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for SimulatedVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedVendor")
            .field("settings", &self.settings)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The simulators this process runs, by access system type. Empty unless the binary starts some.
#[derive(Clone, Debug, Default)]
pub struct SimulatedVendors {
    by_type: BTreeMap<String, SimulatedVendor>,
}

impl SimulatedVendors {
    pub fn insert(&mut self, system_type: &str, vendor: SimulatedVendor) {
        self.by_type.insert(system_type.to_owned(), vendor);
    }

    pub fn get(&self, system_type: &str) -> Option<&SimulatedVendor> {
        self.by_type.get(system_type)
    }

    /// The types with a simulator here.
    pub fn types(&self) -> Vec<String> {
        self.by_type.keys().cloned().collect()
    }

    /// What a sandbox workspace's connection of `system_type` sends to the adapter and what is
    /// stored: `None` when the type has no simulator here (the ordinary rules apply). The caller's
    /// settings may not name what the simulator fills in (its endpoints), and it gives no
    /// credentials.
    pub(crate) fn for_sandbox(
        &self,
        system_type: &str,
        settings: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Option<SandboxConnection>, Error> {
        let Some(vendor) = self.get(system_type) else {
            return Ok(None);
        };
        let refuse = |what: String| Error::InvalidToken {
            reason: ErrorReason::InvalidConnectionSettings,
            message: format!(
                "a sandbox workspace connects {system_type:?} to Keygate's built-in simulator of it: {what}"
            ),
        };
        if let Some(name) = credentials.keys().next() {
            return Err(refuse(format!(
                "give no credentials (credentials.{name} was given)"
            )));
        }
        if let Some(name) = settings
            .keys()
            .find(|k| vendor.settings.contains_key(*k) || k.as_str() == SIMULATOR_SETTING)
        {
            return Err(refuse(format!("leave out settings.{name}")));
        }
        let mut stored = settings.clone();
        stored.insert(SIMULATOR_SETTING.to_owned(), "true".to_owned());
        let mut sent = settings.clone();
        sent.extend(vendor.settings.clone());
        Ok(Some(SandboxConnection {
            stored,
            sent,
            credentials: Credentials::new(vendor.credentials.clone()),
        }))
    }

    /// The settings and credentials a stored system's calls use: for a system marked
    /// [`SIMULATOR_SETTING`], its settings with this process's simulator filled in and the
    /// simulator's credentials; `None` for any other system.
    pub(crate) fn resolve(
        &self,
        system_type: &str,
        stored: &BTreeMap<String, String>,
    ) -> Result<Option<Resolved>, ProviderError> {
        if !stored.contains_key(SIMULATOR_SETTING) {
            return Ok(None);
        }
        let vendor = self.get(system_type).ok_or_else(|| {
            ProviderError::Transient(format!(
                "{}: this process runs no simulator of {system_type:?} (KEYGATE_SIMULATORS)",
                keygate_providers::vendor::PROVIDER_UNREACHABLE
            ))
        })?;
        let mut settings = stored.clone();
        settings.remove(SIMULATOR_SETTING);
        settings.extend(vendor.settings.clone());
        Ok(Some((
            settings,
            Credentials::new(vendor.credentials.clone()),
        )))
    }

    /// Refuses the marker in a connection that is not a sandbox's connection to a simulator.
    pub(crate) fn refuse_marker(settings: &BTreeMap<String, String>) -> Result<(), Error> {
        if settings.contains_key(SIMULATOR_SETTING) {
            return Err(Error::InvalidToken {
                reason: ErrorReason::InvalidConnectionSettings,
                message: format!(
                    "settings.{SIMULATOR_SETTING}: only a sandbox workspace connects a built-in simulator, and it needs no setting for it"
                ),
            });
        }
        Ok(())
    }
}

/// A sandbox workspace's connection to a simulator: what is stored (the caller's settings and the
/// marker, no credentials) and what the adapter is sent.
pub(crate) struct SandboxConnection {
    pub stored: BTreeMap<String, String>,
    pub sent: BTreeMap<String, String>,
    pub credentials: Credentials,
}
