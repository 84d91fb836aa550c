//! The Seam adapter against Seam's own fake server, `@seamapi/fake-seam-connect` 1.86.0 (pinned in
//! `tests/seam-fake`), started by this test (`npm ci` first when `node_modules` is missing).
//!
//! The start script seeds the fake through its own database API and puts a thin layer in front
//! of it for the routes the pinned fake lacks (user identities, access group listings and
//! entrances, ACS credentials, encoders: see `SHIMMED` in `tests/seam-fake/start.mjs`) and for
//! one-shot faults. Every route the fake has is the fake's.
//!
//! Each test gets a Seam workspace of its own (one Salto KS site: three entrances, two access
//! groups) in the one fake process, so tests running at once never see each other.
//!
//! Smart locks (`devices = "locks"`) get a workspace of their own too: four of the fake's own
//! locks in two connected accounts. For them: the conformance suite again; the access codes
//! (key, PIN, window), their update and deletion, and the cloud key's access grant, seen by
//! asking the fake; an unlock seen in the fake's lock state and action attempts; and, from the
//! stub, an unlock whose action attempt fails or stays pending.
//!
//! Then: the provider conformance suite; a provision seen by asking the fake directly (its ACS
//! users, its access group memberships); the settings and system choice at discover; wrong API
//! key, unreachable endpoint and the fake's own simulated outage; the key never in an error;
//! and, for the routes the fake has nothing for (`/acs/entrances/unlock`,
//! `/acs/encoders/encode_credential`, `/action_attempts/get` polling), recorded exchanges from
//! the published API reference served by a local stub.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use keygate_domain::action::{EncodeJob, UnlockJob};
use keygate_domain::capability::{AccessMethodMode, PermissionModel};
use keygate_domain::ids::{AccessSystemId, ActionAttemptId, WorkspaceId};
use keygate_domain::model::AccessSystem;
use keygate_providers::conformance::{self as c, FaultClass, Harness, Site};
use keygate_providers::seam::{SYSTEM_TYPE, SeamProvider, user_identity_key};
use keygate_providers::{
    AccessSystemProvider, Connection, Credentials, Directory, Link, ProviderError,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The fake
// ---------------------------------------------------------------------------------------------

struct Fake {
    url: String,
    /// Workspace B: two access systems (Visionline and a Salto KS site).
    b_api_key: String,
    b_systems: Vec<String>,
    _child: Mutex<Child>,
}

fn fake_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/seam-fake")
}

fn start_fake() -> Fake {
    let dir = fake_dir();
    if !dir.join("node_modules/@seamapi/fake-seam-connect").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| panic!("npm ci in {}: {e}", dir.display()));
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut child = Command::new("node")
        .arg("start.mjs")
        .current_dir(&dir)
        // The fake exits when this process ends and the pipe closes.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("node start.mjs: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading the fake's first line: {e}"));
    let v: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the fake said {line:?}: {e}"));
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{p} missing in {line}"))
            .to_owned()
    };
    Fake {
        url: s("/url"),
        b_api_key: s("/workspaces/b/api_key"),
        b_systems: v
            .pointer("/workspaces/b/acs_system_ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        _child: Mutex::new(child),
    }
}

fn fake() -> &'static Fake {
    static FAKE: OnceLock<Fake> = OnceLock::new();
    FAKE.get_or_init(start_fake)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// A call to the fake (or its front), as a test asks it directly.
async fn ask(route: &str, api_key: Option<&str>, body: Value) -> Value {
    let mut r = http().post(format!("{}{route}", fake().url)).json(&body);
    if let Some(k) = api_key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{route}: {e}"));
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("{route}: {status}: {e}"));
    assert!(status.is_success(), "{route}: {status}: {v}");
    v
}

/// A workspace of one's own: one Salto KS site, or smart locks.
#[derive(Clone, Debug, Default)]
struct Workspace {
    api_key: String,
    workspace_id: String,
    acs_system_id: String,
    access_groups: Vec<String>,
    /// Smart locks: Front Door, Back Door (codes and remote unlock), Garden Gate (remote
    /// unlock only) of the first connected account, Garage of the second.
    device_ids: Vec<String>,
    connected_account_ids: Vec<String>,
}

impl Workspace {
    fn locks(&self) -> bool {
        !self.device_ids.is_empty()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn locks_workspace() -> Workspace {
    let v = ask("/_keygate/locks_workspace", None, json!({})).await;
    Workspace {
        api_key: v["api_key"].as_str().unwrap_or_default().to_owned(),
        workspace_id: v["workspace_id"].as_str().unwrap_or_default().to_owned(),
        device_ids: strings(&v["device_ids"]),
        connected_account_ids: strings(&v["connected_account_ids"]),
        ..Workspace::default()
    }
}

/// The fake's own database.
async fn fake_database() -> Value {
    http()
        .get(format!("{}/_fake/database", fake().url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn site_workspace() -> Workspace {
    let v = ask("/_keygate/site_workspace", None, json!({})).await;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Workspace {
        api_key: s("api_key"),
        workspace_id: s("workspace_id"),
        acs_system_id: s("acs_system_id"),
        access_groups: v["access_groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        ..Workspace::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Directory and harness
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Links(Mutex<BTreeMap<AccessSystemId, Link>>);

#[async_trait]
impl Directory for Links {
    async fn link(&self, system: &AccessSystem) -> Result<Link, ProviderError> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&system.id).cloned())
            .ok_or_else(|| ProviderError::Permanent("account_disconnected: no link".into()))
    }
}

fn locks_settings(endpoint: &str) -> BTreeMap<String, String> {
    let mut s = settings(endpoint);
    s.insert("devices".to_owned(), "locks".to_owned());
    s
}

fn settings(endpoint: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("endpoint".to_owned(), endpoint.to_owned()),
        // Below the 3 s a scripted "timeout before the write" waits.
        ("timeout_ms".to_owned(), "1500".to_owned()),
    ])
}

fn credentials(api_key: &str) -> Credentials {
    Credentials::new(BTreeMap::from([("api_key".to_owned(), api_key.to_owned())]))
}

fn connection(endpoint: &str, api_key: &str) -> Connection {
    Connection {
        settings: settings(endpoint),
        credentials: credentials(api_key),
        ..Connection::default()
    }
}

struct SeamHarness {
    ws: Workspace,
    links: Arc<Links>,
}

impl SeamHarness {
    fn store(&self, site: &Site, settings: BTreeMap<String, String>, api_key: &str) {
        let link = Link {
            settings,
            credentials: credentials(api_key),
            entrances: site.external_ids.entrances.clone(),
            access_groups: site.external_ids.access_groups.clone(),
            encoders: site.external_ids.encoders.clone(),
        };
        if let Ok(mut m) = self.links.0.lock() {
            m.insert(site.system.id, link);
        }
    }
}

#[async_trait]
impl Harness for SeamHarness {
    async fn connect(&self, provider: &dyn AccessSystemProvider, system_type: &str) -> Site {
        let mut conn = connection(&fake().url, &self.ws.api_key);
        let settings = if self.ws.locks() {
            locks_settings(&fake().url)
        } else {
            settings(&fake().url)
        };
        conn.settings = settings.clone();
        let discovered = provider
            .discover(system_type, &conn)
            .await
            .unwrap_or_else(|e| panic!("{system_type}: discover failed: {e}"));
        let site = Site::from_discovery(discovered, WorkspaceId::new());
        self.store(&site, settings, &self.ws.api_key);
        site
    }

    /// Every class is scripted by the front of the fake, for this workspace only: the fake
    /// itself can only simulate a lasting outage (503 on named routes, used in
    /// `the_fakes_own_outage_is_transient`), not a one-shot fault.
    fn inject(&self, _system: &AccessSystem, class: FaultClass) -> bool {
        let kind = match class {
            FaultClass::Transient => "unavailable",
            FaultClass::AmbiguousApplied => "500_after",
            FaultClass::AmbiguousNotApplied => "timeout_before",
            FaultClass::Permanent => "refused",
        };
        let body = json!({ "workspace_id": self.ws.workspace_id, "kind": kind });
        let url = format!("{}/_keygate/fault", fake().url);
        // `inject` is synchronous: post from a thread of its own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(async { http().post(url).json(&body).send().await.is_ok() }))
                .unwrap_or(false)
        })
        .join()
        .unwrap_or(false)
    }

    async fn held_count(&self, _system: &AccessSystem) -> Option<usize> {
        if self.ws.locks() {
            // One per access method: the distinct keys of the workspace's access codes (one PIN
            // on several locks) and access grants (cloud keys).
            let ws = Some(self.ws.workspace_id.as_str());
            let db = fake_database().await;
            let mut keys: std::collections::BTreeSet<String> = db["access_codes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|c| c["workspace_id"].as_str() == ws)
                        .filter_map(|c| c["common_code_key"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let state = ask("/_keygate/state", None, json!({})).await;
            keys.extend(
                state["access_grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| g["workspace_id"].as_str() == ws)
                    .filter_map(|g| g["access_grant_key"].as_str().map(|k| format!("grant {k}"))),
            );
            return Some(keys.len());
        }
        let v = ask("/_keygate/state", None, json!({})).await;
        let system = self.ws.acs_system_id.as_str();
        v["credentials"].as_array().map(|a| {
            a.iter()
                .filter(|c| c["acs_system_id"].as_str() == Some(system))
                .count()
        })
    }
}

async fn setup() -> (SeamProvider, SeamHarness) {
    let ws = site_workspace().await;
    let links = Arc::new(Links::default());
    (SeamProvider::new(links.clone()), SeamHarness { ws, links })
}

async fn locks_setup() -> (SeamProvider, SeamHarness) {
    let ws = locks_workspace().await;
    let links = Arc::new(Links::default());
    (SeamProvider::new(links.clone()), SeamHarness { ws, links })
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

macro_rules! suite {
    ($module:ident, $setup:ident: $($scenario:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (provider, harness) = $setup().await;
                    c::$scenario(&provider, &harness, SYSTEM_TYPE).await;
                }
            )*
        }
    };
}

suite!(
    conformance,
    setup:
    discover_is_consistent,
    provision_is_idempotent,
    revoke_is_idempotent,
    unlock_follows_capabilities,
    encode_follows_capabilities,
    error_classes_are_honest,
    declared_rate_limit_is_usable,
);

// The same suite for a system of the workspace's smart locks.
suite!(
    locks_conformance,
    locks_setup:
    discover_is_consistent,
    provision_is_idempotent,
    revoke_is_idempotent,
    unlock_follows_capabilities,
    encode_follows_capabilities,
    error_classes_are_honest,
    declared_rate_limit_is_usable,
);

#[test]
fn the_adapter_serves_the_seam_type() {
    let provider = SeamProvider::new(Arc::new(Links::default()));
    assert_eq!(provider.system_types(), [SYSTEM_TYPE]);
}

// ---------------------------------------------------------------------------------------------
// What the fake itself holds
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discover_maps_the_seam_site() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    assert_eq!(site.system.external_type, "salto_site");
    assert_eq!(site.system.name, "Keygate Test Site");
    let caps = &site.system.capabilities;
    assert_eq!(caps.permission_model, PermissionModel::AccessGroups);
    assert_eq!(
        caps.supported_modes,
        [AccessMethodMode::Code, AccessMethodMode::MobileKey]
    );
    assert!(!caps.can_remote_unlock && !caps.is_card_encoding_required);
    let mut names: Vec<&str> = site
        .entrances
        .iter()
        .map(|e| e.display_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["Garage", "Lobby", "Main Entrance"]);
    let staff = site
        .access_groups
        .iter()
        .find(|g| g.display_name == "Staff")
        .unwrap_or_else(|| panic!("no Staff group"));
    assert_eq!(staff.entrance_ids.len(), 3);
    let mut ext: Vec<&String> = site.external_ids.access_groups.values().collect();
    ext.sort();
    let mut want: Vec<&String> = h.ws.access_groups.iter().collect();
    want.sort();
    assert_eq!(ext, want, "groups keep the Seam ids");
}

#[tokio::test]
async fn a_provision_is_visible_in_the_fake_and_a_revoke_removes_it() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code)
        .unwrap_or_else(|| panic!("no job for codes"));
    let who = c::holder();
    let result = provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}"));
    assert_eq!(result.code, job.requested_code);

    // The fake's own /acs/users/list: one user of this system, with the holder's details and
    // schedule, linked to the identity whose key is the access method's.
    let key = h.ws.api_key.as_str();
    let users = ask(
        "/acs/users/list",
        Some(key),
        json!({ "acs_system_id": h.ws.acs_system_id }),
    )
    .await;
    let users = users["acs_users"].as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 1, "{users:?}");
    let user = &users[0];
    assert_eq!(user["full_name"], who.full_name.as_str());
    assert_eq!(
        user["email_address"],
        who.email_address.as_deref().unwrap_or_default()
    );
    let schedule = &user["access_schedule"];
    assert!(schedule["starts_at"].is_string() && schedule["ends_at"].is_string());
    let identity = ask(
        "/user_identities/get",
        Some(key),
        json!({ "user_identity_key": user_identity_key(job.access_method_id) }),
    )
    .await;
    assert_eq!(
        user["user_identity_id"],
        identity["user_identity"]["user_identity_id"]
    );
    let user_id = user["acs_user_id"].as_str().unwrap_or_default().to_owned();

    // The fake's own database: the user is a member of exactly the job's group.
    let group_ext = site
        .external_ids
        .access_groups
        .get(&job.access_group_ids[0])
        .cloned()
        .unwrap_or_default();
    let members = |db: &Value, group: &str| -> Vec<String> {
        db["acs_access_groups"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|g| g["acs_access_group_id"].as_str() == Some(group))
            })
            .and_then(|g| g["_acs_user_ids"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let db = http()
        .get(format!("{}/_fake/database", fake().url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(members(&db, &group_ext), std::slice::from_ref(&user_id));
    for other in h.ws.access_groups.iter().filter(|g| **g != group_ext) {
        assert!(members(&db, other).is_empty(), "member of {other} too");
    }
    // And the PIN credential (kept by the front of the fake).
    let creds = ask(
        "/acs/credentials/list",
        Some(key),
        json!({ "acs_user_id": user_id }),
    )
    .await;
    let creds = creds["acs_credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["access_method"], "code");
    assert_eq!(
        creds[0]["code"],
        job.requested_code.as_deref().unwrap_or_default()
    );

    // A repeat creates nothing new.
    provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("repeat: {e}"));
    let again = ask(
        "/acs/users/list",
        Some(key),
        json!({ "acs_system_id": h.ws.acs_system_id }),
    )
    .await;
    assert_eq!(again["acs_users"].as_array().map(Vec::len), Some(1));
    let db = http()
        .get(format!("{}/_fake/database", fake().url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        members(&db, &group_ext),
        std::slice::from_ref(&user_id),
        "added once"
    );

    // Revoke: the fake has no user and no membership left.
    provider
        .revoke(
            &site.system,
            &keygate_domain::action::RevokeJob {
                access_grant_id: job.access_grant_id,
                access_method_id: job.access_method_id,
                acs_system_id: site.system.id,
                entrance_ids: job.entrance_ids.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    let after = ask(
        "/acs/users/list",
        Some(key),
        json!({ "acs_system_id": h.ws.acs_system_id }),
    )
    .await;
    assert_eq!(after["acs_users"].as_array().map(Vec::len), Some(0));
    let db = http()
        .get(format!("{}/_fake/database", fake().url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(members(&db, &group_ext).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Settings, credentials, reachability
// ---------------------------------------------------------------------------------------------

fn assert_prefix(r: Result<impl std::fmt::Debug, ProviderError>, permanent: bool, prefix: &str) {
    let e = r.expect_err("must fail");
    let m = match &e {
        ProviderError::Permanent(m) => {
            assert!(permanent, "{e:?}");
            m
        }
        ProviderError::Transient(m) => {
            assert!(!permanent, "{e:?}");
            m
        }
        ProviderError::Ambiguous(_) => panic!("{e:?}"),
    };
    assert!(m.starts_with(prefix), "{e:?} should start with {prefix:?}");
    assert!(!m.contains("seam_keygate"), "an API key leaked: {e:?}");
}

#[tokio::test]
async fn a_workspace_with_several_systems_needs_acs_system_id() {
    let f = fake();
    let provider = SeamProvider::new(Arc::new(Links::default()));
    let r = provider
        .discover(SYSTEM_TYPE, &connection(&f.url, &f.b_api_key))
        .await;
    assert_prefix(
        r,
        true,
        "invalid_connection_settings: acs_system_id: required",
    );
    for id in &f.b_systems {
        let mut conn = connection(&f.url, &f.b_api_key);
        conn.settings.insert("acs_system_id".into(), id.clone());
        let d = provider
            .discover(SYSTEM_TYPE, &conn)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(d.entrances.len(), 1, "{id}");
        if d.external_type == "visionline_system" {
            assert_eq!(
                d.capabilities.permission_model,
                PermissionModel::CredentialBased
            );
            assert!(d.capabilities.is_card_encoding_required);
        }
    }
    let mut conn = connection(&f.url, &f.b_api_key);
    conn.settings
        .insert("acs_system_id".into(), "acs_system_nope".into());
    assert_prefix(
        provider.discover(SYSTEM_TYPE, &conn).await,
        true,
        "invalid_connection_settings: acs_system_id",
    );
}

#[tokio::test]
async fn settings_and_credentials_are_checked_at_discover() {
    let f = fake();
    let provider = SeamProvider::new(Arc::new(Links::default()));
    let mut no_key = connection(&f.url, "x");
    no_key.credentials = Credentials::default();
    assert_prefix(
        provider.discover(SYSTEM_TYPE, &no_key).await,
        true,
        "invalid_connection_settings: api_key",
    );
    let mut public_http = connection(&f.url, &f.b_api_key);
    public_http
        .settings
        .insert("endpoint".into(), "http://connect.getseam.com".into());
    assert_prefix(
        provider.discover(SYSTEM_TYPE, &public_http).await,
        true,
        "invalid_connection_settings: endpoint",
    );
    let mut unknown = connection(&f.url, &f.b_api_key);
    unknown.settings.insert("colour".into(), "red".into());
    assert_prefix(
        provider.discover(SYSTEM_TYPE, &unknown).await,
        true,
        "invalid_connection_settings: colour",
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_invalid_credentials() {
    let (provider, h) = setup().await;
    assert_prefix(
        provider
            .discover(SYSTEM_TYPE, &connection(&fake().url, "seam_keygate_wrong"))
            .await,
        true,
        "invalid_credentials: ",
    );
    // A stored system whose key was revoked: Transient, the orchestrator waits.
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.store(&site, settings(&fake().url), "seam_keygate_wrong");
    assert_prefix(
        provider
            .read_back(&site.system, keygate_domain::ids::AccessMethodId::new())
            .await,
        false,
        "invalid_credentials: ",
    );
}

/// A port nothing listens on (bound, then released).
fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(9);
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_unreachable_endpoint_is_provider_unreachable() {
    let (provider, h) = setup().await;
    let closed = closed_endpoint();
    assert_prefix(
        provider
            .discover(SYSTEM_TYPE, &connection(&closed, &h.ws.api_key))
            .await,
        false,
        "provider_unreachable: ",
    );
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.store(&site, settings(&closed), &h.ws.api_key);
    let job =
        c::provision_job(&site, AccessMethodMode::MobileKey).unwrap_or_else(|| panic!("no job"));
    assert_prefix(
        provider.provision(&site.system, &job, &c::holder()).await,
        false,
        "provider_unreachable: ",
    );
}

#[tokio::test]
async fn the_fakes_own_outage_is_transient_and_applies_nothing() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    // The fake's own outage simulation: 503 on the routes named, for this workspace.
    ask(
        "/_fake/simulate_workspace_outage",
        None,
        json!({ "workspace_id": h.ws.workspace_id, "routes": ["/acs/users/create"] }),
    )
    .await;
    let job =
        c::provision_job(&site, AccessMethodMode::MobileKey).unwrap_or_else(|| panic!("no job"));
    let r = provider.provision(&site.system, &job, &c::holder()).await;
    assert!(matches!(r, Err(ProviderError::Transient(_))), "{r:?}");
    let users = ask(
        "/acs/users/list",
        Some(&h.ws.api_key),
        json!({ "acs_system_id": h.ws.acs_system_id }),
    )
    .await;
    assert_eq!(users["acs_users"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
}

#[tokio::test]
async fn a_system_named_in_the_settings_is_used_without_listing() {
    let (provider, h) = setup().await;
    let mut conn = connection(&fake().url, &h.ws.api_key);
    conn.settings
        .insert("acs_system_id".into(), h.ws.acs_system_id.clone());
    let d = provider
        .discover(SYSTEM_TYPE, &conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.entrances.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Recorded exchanges: routes the fake has nothing for
// ---------------------------------------------------------------------------------------------

/// Canned answers by route: (HTTP status, body), served in order, the last one repeated.
type Answers = BTreeMap<String, Vec<(u16, Value)>>;

/// A stub of Seam serving canned answers by route (shaped on the API reference's examples,
/// docs.seam.co/latest/api), and recording what it was asked.
#[derive(Clone, Default)]
struct Stub {
    answers: Arc<Mutex<Answers>>,
    asked: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Stub {
    fn answer(&self, route: &str, status: u16, body: Value) {
        if let Ok(mut a) = self.answers.lock() {
            a.entry(route.to_owned()).or_default().push((status, body));
        }
    }

    fn asked(&self, route: &str) -> Vec<Value> {
        self.asked
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(r, _)| r == route)
                    .map(|(_, b)| b.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn serve(self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let stub = self.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else {
                            continue;
                        };
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() < len {
                            continue;
                        }
                        let route = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let asked: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                        if let Ok(mut a) = stub.asked.lock() {
                            a.push((route.clone(), asked));
                        }
                        let (status, answer) = stub
                            .answers
                            .lock()
                            .ok()
                            .and_then(|mut a| {
                                let q = a.get_mut(&route)?;
                                if q.len() > 1 {
                                    Some(q.remove(0))
                                } else {
                                    q.first().cloned()
                                }
                            })
                            .unwrap_or((
                                404,
                                json!({ "error": { "type": "not_found", "message": route } }),
                            ));
                        let payload = answer.to_string();
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
                            payload.len()
                        );
                        let _ = sock.write_all(reply.as_bytes()).await;
                        buf.clear();
                    }
                });
            }
        });
        format!("http://{addr}")
    }
}

/// A stored Seam system whose entrances unlock with a cloud key and whose cards are encoded.
async fn stub_site(stub: &Stub) -> (SeamProvider, Site, Arc<Links>) {
    stub.answer(
        "/acs/systems/list",
        200,
        json!({ "acs_systems": [{
            "acs_system_id": "8d7e0b3a-b889-49a7-9164-4b71a0506a33",
            "external_type": "salto_space_system",
            "name": "Hotel",
            "workspace_id": "00000000-0000-0000-0000-000000000000"
        }] }),
    );
    stub.answer(
        "/acs/entrances/list",
        200,
        json!({ "acs_entrances": [{
            "acs_entrance_id": "48ebfb50-1d1c-4aa3-9a1a-0b1ae5e26d66",
            "acs_system_id": "8d7e0b3a-b889-49a7-9164-4b71a0506a33",
            "display_name": "Main Entrance",
            "can_unlock_with_card": true,
            "can_unlock_with_code": false,
            "can_unlock_with_mobile_key": false,
            "can_unlock_with_cloud_key": true
        }] }),
    );
    stub.answer(
        "/acs/access_groups/list",
        200,
        json!({ "acs_access_groups": [] }),
    );
    stub.answer(
        "/acs/encoders/list",
        200,
        json!({ "acs_encoders": [{
            "acs_encoder_id": "6a0a4c2e-7d3b-4a53-9d2b-6c0b6b0f6a10",
            "acs_system_id": "8d7e0b3a-b889-49a7-9164-4b71a0506a33",
            "display_name": "Front desk encoder",
            "errors": []
        }] }),
    );
    let url = stub.clone().serve().await;
    let links = Arc::new(Links::default());
    let provider = SeamProvider::new(links.clone());
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&url, "seam_test_key"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let site = Site::from_discovery(d, WorkspaceId::new());
    let link = Link {
        settings: settings(&url),
        credentials: credentials("seam_test_key"),
        entrances: site.external_ids.entrances.clone(),
        access_groups: site.external_ids.access_groups.clone(),
        encoders: site.external_ids.encoders.clone(),
    };
    if let Ok(mut m) = links.0.lock() {
        m.insert(site.system.id, link);
    }
    (provider, site, links)
}

fn held_user(stub: &Stub, access_method: &str, credential_id: &str) {
    stub.answer(
        "/user_identities/get",
        200,
        json!({ "user_identity": { "user_identity_id": "f7a7fb63-3a1b-4f5e-8b44-6a2b0d1c1f11" } }),
    );
    stub.answer(
        "/acs/users/list",
        200,
        json!({ "acs_users": [{
            "acs_user_id": "33333333-3333-3333-3333-333333333333",
            "acs_system_id": "8d7e0b3a-b889-49a7-9164-4b71a0506a33",
            "user_identity_id": "f7a7fb63-3a1b-4f5e-8b44-6a2b0d1c1f11"
        }] }),
    );
    stub.answer(
        "/acs/credentials/list",
        200,
        json!({ "acs_credentials": [{
            "acs_credential_id": credential_id,
            "acs_user_id": "33333333-3333-3333-3333-333333333333",
            "access_method": access_method,
            "card_number": null,
            "is_issued": false
        }] }),
    );
}

#[tokio::test]
async fn remote_unlock_uses_the_cloud_key_and_waits_for_the_action_attempt() {
    let stub = Stub::default();
    let (provider, site, _) = stub_site(&stub).await;
    assert!(site.system.capabilities.can_remote_unlock);
    held_user(&stub, "cloud_key", "66666666-6666-6666-6666-666666666666");
    stub.answer(
        "/acs/entrances/unlock",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000001",
            "action_type": "UNLOCK_DOOR", "status": "pending", "result": null, "error": null
        } }),
    );
    stub.answer(
        "/action_attempts/get",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000001",
            "action_type": "UNLOCK_DOOR", "status": "pending", "result": null, "error": null
        } }),
    );
    stub.answer(
        "/action_attempts/get",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000001",
            "action_type": "UNLOCK_DOOR", "status": "success", "result": {}, "error": null
        } }),
    );
    let door = site.entrances[0].id;
    let job = UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: door,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: Some(keygate_domain::ids::AccessMethodId::new()),
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(10)),
    };
    provider
        .unlock(&site.system, &job)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let sent = stub.asked("/acs/entrances/unlock");
    assert_eq!(
        sent,
        [json!({
            "acs_entrance_id": "48ebfb50-1d1c-4aa3-9a1a-0b1ae5e26d66",
            "acs_credential_id": "66666666-6666-6666-6666-666666666666"
        })]
    );
    assert_eq!(
        stub.asked("/action_attempts/get").len(),
        2,
        "polled until success"
    );

    // A failed attempt comes back typed with Seam's error type.
    let stub2 = Stub::default();
    let (provider, site, _) = stub_site(&stub2).await;
    held_user(&stub2, "cloud_key", "66666666-6666-6666-6666-666666666666");
    stub2.answer(
        "/acs/entrances/unlock",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000002",
            "action_type": "UNLOCK_DOOR", "status": "error", "result": null,
            "error": { "type": "lock_not_online", "message": "The lock is offline" }
        } }),
    );
    let job = UnlockJob {
        acs_system_id: site.system.id,
        acs_entrance_id: site.entrances[0].id,
        ..job
    };
    let e = provider
        .unlock(&site.system, &job)
        .await
        .expect_err("an error attempt fails");
    assert_eq!(e.error_type, "lock_not_online");
}

#[tokio::test]
async fn encoding_writes_the_card_credential_on_the_encoder() {
    let stub = Stub::default();
    let (provider, site, _) = stub_site(&stub).await;
    assert!(site.system.capabilities.is_card_encoding_required);
    assert_eq!(site.encoders.len(), 1);
    held_user(&stub, "card", "77777777-7777-7777-7777-777777777777");
    stub.answer(
        "/acs/encoders/encode_credential",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000003",
            "action_type": "ENCODE_CREDENTIAL", "status": "pending", "result": null, "error": null
        } }),
    );
    stub.answer(
        "/action_attempts/get",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000003",
            "action_type": "ENCODE_CREDENTIAL", "status": "success", "error": null,
            "result": {
                "acs_credential_id": "77777777-7777-7777-7777-777777777777",
                "card_number": "1234567890",
                "access_method": "card",
                "is_issued": true
            }
        } }),
    );
    let job = EncodeJob {
        action_attempt_id: ActionAttemptId::new(),
        access_method_id: keygate_domain::ids::AccessMethodId::new(),
        acs_system_id: site.system.id,
        acs_encoder_id: site.encoders[0].id,
    };
    let card = provider
        .encode(&site.system, &job)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        card.acs_credential_id,
        "77777777-7777-7777-7777-777777777777"
    );
    assert_eq!(card.card_number, "1234567890");
    assert_eq!(
        stub.asked("/acs/encoders/encode_credential"),
        [json!({
            "acs_encoder_id": "6a0a4c2e-7d3b-4a53-9d2b-6c0b6b0f6a10",
            "acs_credential_id": "77777777-7777-7777-7777-777777777777"
        })]
    );
}

#[tokio::test]
async fn a_429_is_transient_and_a_500_on_a_write_is_ambiguous() {
    let stub = Stub::default();
    let (provider, site, _) = stub_site(&stub).await;
    stub.answer(
        "/user_identities/get",
        429,
        json!({ "error": { "type": "rate_limited", "message": "Too many requests" } }),
    );
    let r = provider
        .read_back(&site.system, keygate_domain::ids::AccessMethodId::new())
        .await;
    assert!(
        matches!(r, Err(ProviderError::Transient(ref m)) if m.contains("rate_limited")),
        "{r:?}"
    );

    let stub = Stub::default();
    let (provider, site, _) = stub_site(&stub).await;
    stub.answer(
        "/user_identities/get",
        404,
        json!({ "error": { "type": "user_identity_not_found", "message": "not found" } }),
    );
    stub.answer(
        "/user_identities/create",
        500,
        json!({ "error": { "type": "internal_server_error", "message": "boom" } }),
    );
    let job = c::provision_job(&site, AccessMethodMode::Card).unwrap_or_else(|| panic!("no job"));
    let r = provider.provision(&site.system, &job, &c::holder()).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous(_))), "{r:?}");
    // The key it was made under is the access method's, never a name or an email.
    let sent = stub.asked("/user_identities/create");
    assert_eq!(
        sent[0]["user_identity_key"],
        user_identity_key(job.access_method_id).as_str()
    );
    assert!(sent[0].get("email_address").is_none());
}

#[tokio::test]
async fn an_update_moves_the_memberships_and_keeps_the_credential() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let staff = site
        .access_groups
        .iter()
        .find(|g| g.display_name == "Staff")
        .cloned()
        .unwrap_or_else(|| panic!("no Staff"));
    let visitors = site
        .access_groups
        .iter()
        .find(|g| g.display_name == "Visitors")
        .cloned()
        .unwrap_or_else(|| panic!("no Visitors"));
    let mut job =
        c::provision_job(&site, AccessMethodMode::MobileKey).unwrap_or_else(|| panic!("no job"));
    job.access_group_ids = vec![staff.id];
    job.entrance_ids = staff.entrance_ids.clone();
    let who = c::holder();
    provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = h.held_count(&site.system).await;

    let update = keygate_domain::grant::ProvisionJob {
        access_group_ids: vec![visitors.id],
        entrance_ids: visitors.entrance_ids.clone(),
        removed_entrance_ids: staff
            .entrance_ids
            .iter()
            .filter(|e| !visitors.entrance_ids.contains(e))
            .copied()
            .collect(),
        update: true,
        ..job.clone()
    };
    provider
        .provision(&site.system, &update, &who)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let held = provider
        .read_back(&site.system, job.access_method_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing held"));
    assert_eq!(
        held.entrance_ids, visitors.entrance_ids,
        "only the Visitors doors"
    );
    assert_eq!(
        h.held_count(&site.system).await,
        before,
        "the credential is kept"
    );

    // In the fake's own database: a member of Visitors only.
    let db = http()
        .get(format!("{}/_fake/database", fake().url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let count = |ext: &str| {
        db["acs_access_groups"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|g| g["acs_access_group_id"].as_str() == Some(ext))
            })
            .and_then(|g| g["_acs_user_ids"].as_array())
            .map_or(0, Vec::len)
    };
    let ext = |id| {
        site.external_ids
            .access_groups
            .get(&id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(count(&ext(staff.id)), 0);
    assert_eq!(count(&ext(visitors.id)), 1);
}

// ---------------------------------------------------------------------------------------------
// Smart locks (`devices = "locks"`): what the fake itself holds
// ---------------------------------------------------------------------------------------------

/// The fake's access codes on one lock (listed by device; its list ignores the device filter,
/// so they are matched here too).
async fn codes_on(api_key: &str, device_id: &str) -> Vec<Value> {
    let v = ask(
        "/access_codes/list",
        Some(api_key),
        json!({ "device_id": device_id }),
    )
    .await;
    v["access_codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["device_id"].as_str() == Some(device_id))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn ext(site: &Site, id: keygate_domain::ids::EntranceId) -> String {
    site.external_ids
        .entrances
        .get(&id)
        .cloned()
        .unwrap_or_default()
}

fn door(site: &Site, name: &str) -> keygate_domain::model::Entrance {
    site.entrances
        .iter()
        .find(|e| e.display_name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn locks_discover_maps_the_workspace_locks() {
    let (provider, h) = locks_setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    assert_eq!(site.system.external_type, "seam_locks");
    let caps = &site.system.capabilities;
    assert_eq!(caps.permission_model, PermissionModel::CredentialBased);
    assert!(caps.can_assign_entrances_directly && caps.can_schedule_credentials);
    assert_eq!(
        caps.supported_modes,
        [AccessMethodMode::Code, AccessMethodMode::CloudKey]
    );
    assert!(caps.can_remote_unlock && !caps.is_card_encoding_required);
    // Front 4–6, Back 4–8, Garage 6: the one length they all take.
    let rules = caps
        .pin_code_rules
        .clone()
        .unwrap_or_else(|| panic!("no PIN rules"));
    assert_eq!((rules.min_length, rules.max_length), (6, 6));
    let mut names: Vec<&str> = site
        .entrances
        .iter()
        .map(|e| e.display_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["Back Door", "Front Door", "Garage", "Garden Gate"]);
    let gate = door(&site, "Garden Gate");
    assert!(!gate.can_unlock_with_code && gate.can_unlock_with_cloud_key);
    assert!(door(&site, "Front Door").can_unlock_with_code);
    let mut ids: Vec<String> = site.external_ids.entrances.values().cloned().collect();
    ids.sort();
    let mut want = h.ws.device_ids.clone();
    want.sort();
    assert_eq!(ids, want, "entrances keep the Seam device ids");

    // One connected account's locks only: no Garage, so lengths 4 to 6.
    let mut conn = connection(&fake().url, &h.ws.api_key);
    conn.settings = locks_settings(&fake().url);
    conn.settings.insert(
        "connected_account_id".into(),
        h.ws.connected_account_ids[0].clone(),
    );
    let d = provider
        .discover(SYSTEM_TYPE, &conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<&str> = d
        .entrances
        .iter()
        .map(|e| e.display_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["Back Door", "Front Door", "Garden Gate"]);
    let rules = d
        .capabilities
        .pin_code_rules
        .unwrap_or_else(|| panic!("no PIN rules"));
    assert_eq!((rules.min_length, rules.max_length), (4, 6));
}

#[tokio::test]
async fn locks_settings_are_checked() {
    let (provider, h) = locks_setup().await;
    let url = &fake().url;
    let with = |pairs: &[(&str, &str)]| {
        let mut c = connection(url, &h.ws.api_key);
        for (k, v) in pairs {
            c.settings.insert((*k).to_owned(), (*v).to_owned());
        }
        c
    };
    for (conn, prefix) in [
        (
            with(&[("devices", "locks"), ("acs_system_id", "acs_system1")]),
            "invalid_connection_settings: devices",
        ),
        (
            with(&[("devices", "thermostats")]),
            "invalid_connection_settings: devices",
        ),
        (
            with(&[("connected_account_id", "connected_account1")]),
            "invalid_connection_settings: connected_account_id",
        ),
        (
            with(&[("devices", "locks"), ("connected_account_id", "nope")]),
            "invalid_connection_settings: connected_account_id",
        ),
    ] {
        assert_prefix(provider.discover(SYSTEM_TYPE, &conn).await, true, prefix);
    }
}

#[tokio::test]
async fn a_locks_provision_is_access_codes_in_the_fake_and_a_revoke_deletes_them() {
    let (provider, h) = locks_setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code)
        .unwrap_or_else(|| panic!("no job for codes"));
    let pin = job.requested_code.clone().unwrap_or_default();
    let who = c::holder();
    let result = provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}"));
    assert_eq!(result.code.as_deref(), Some(pin.as_str()));

    // The fake's own access codes: one on each lock of the job, none elsewhere.
    let key = h.ws.api_key.as_str();
    let job_devices: Vec<String> = job.entrance_ids.iter().map(|e| ext(&site, *e)).collect();
    assert_eq!(job_devices.len(), 2);
    let mut first_ids = Vec::new();
    for device in &h.ws.device_ids {
        let codes = codes_on(key, device).await;
        if !job_devices.contains(device) {
            assert!(codes.is_empty(), "{device}: {codes:?}");
            continue;
        }
        assert_eq!(codes.len(), 1, "{device}: {codes:?}");
        let code = &codes[0];
        assert_eq!(code["code"], pin.as_str());
        assert_eq!(code["name"], who.full_name.as_str());
        assert_eq!(code["type"], "time_bound");
        assert_eq!(
            code["common_code_key"],
            keygate_providers::seam::access_code_key(job.access_method_id).as_str()
        );
        let at = |k: &str| {
            code[k].as_str().and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        assert_eq!(at("starts_at"), Some(who.starts_at));
        assert_eq!(at("ends_at"), who.ends_at);
        first_ids.push(code["access_code_id"].clone());
    }

    // A repeat makes nothing new.
    provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("repeat: {e}"));
    let mut again = Vec::new();
    for device in &job_devices {
        let codes = codes_on(key, device).await;
        assert_eq!(codes.len(), 1, "{device}: {codes:?}");
        again.push(codes[0]["access_code_id"].clone());
    }
    assert_eq!(again, first_ids, "the same codes");

    // A longer window: the same codes, updated.
    let later = keygate_providers::Holder {
        ends_at: who.ends_at.map(|e| e + time::Duration::days(2)),
        ..who.clone()
    };
    let update = keygate_domain::grant::ProvisionJob {
        update: true,
        ..job.clone()
    };
    provider
        .provision(&site.system, &update, &later)
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    for (device, id) in job_devices.iter().zip(&first_ids) {
        let codes = codes_on(key, device).await;
        assert_eq!(codes.len(), 1, "{device}: {codes:?}");
        assert_eq!(&codes[0]["access_code_id"], id, "updated, not replaced");
    }
    let held = provider
        .read_back(&site.system, job.access_method_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing held"));
    assert_eq!(held.ends_at, later.ends_at);
    assert_eq!(held.code.as_deref(), Some(pin.as_str()));

    // One lock fewer: its code goes, the other stays.
    let fewer = keygate_domain::grant::ProvisionJob {
        entrance_ids: vec![job.entrance_ids[1]],
        removed_entrance_ids: vec![job.entrance_ids[0]],
        update: true,
        ..job.clone()
    };
    provider
        .provision(&site.system, &fewer, &later)
        .await
        .unwrap_or_else(|e| panic!("fewer: {e}"));
    assert!(codes_on(key, &job_devices[0]).await.is_empty());
    assert_eq!(codes_on(key, &job_devices[1]).await.len(), 1);

    // Revoke: no code of the method left on any lock.
    let revoke = keygate_domain::action::RevokeJob {
        access_grant_id: job.access_grant_id,
        access_method_id: job.access_method_id,
        acs_system_id: site.system.id,
        entrance_ids: fewer.entrance_ids.clone(),
    };
    provider
        .revoke(&site.system, &revoke)
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    for device in &h.ws.device_ids {
        assert!(codes_on(key, device).await.is_empty(), "{device}");
    }
    assert_eq!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
}

/// Whether the fake's lock is locked.
async fn is_locked(api_key: String, device: String) -> Option<bool> {
    let v = ask("/locks/get", Some(&api_key), json!({ "device_id": device })).await;
    v["device"]["properties"]["locked"]
        .as_bool()
        .or_else(|| v["lock"]["properties"]["locked"].as_bool())
}

#[tokio::test]
async fn a_lock_unlocks_through_unlock_door_and_its_action_attempt() {
    let (provider, h) = locks_setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let gate = door(&site, "Garden Gate");
    let device = ext(&site, gate.id);
    let locked = |device: String| is_locked(h.ws.api_key.clone(), device);
    assert_eq!(locked(device.clone()).await, Some(true));
    let attempts_before = fake_database().await["action_attempts"]
        .as_array()
        .map_or(0, Vec::len);
    let job = UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: gate.id,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(10)),
    };
    provider
        .unlock(&site.system, &job)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(locked(device).await, Some(false), "the fake's lock is open");
    let db = fake_database().await;
    let attempts = db["action_attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unlocks: Vec<&Value> = attempts
        .iter()
        .skip(attempts_before)
        .filter(|a| a["action_type"] == "UNLOCK_DOOR")
        .collect();
    assert_eq!(unlocks.len(), 1, "sent once: {unlocks:?}");
    assert_eq!(unlocks[0]["status"], "success");

    // Past its deadline: never sent, the door stays locked.
    let front = door(&site, "Front Door");
    let late = UnlockJob {
        acs_entrance_id: front.id,
        expires_at: Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1)),
        ..job
    };
    let e = provider
        .unlock(&site.system, &late)
        .await
        .expect_err("a late unlock is refused");
    assert_eq!(e.error_type, keygate_domain::action::unlock_errors::EXPIRED);
    assert_eq!(locked(ext(&site, front.id)).await, Some(true));
}

/// A locks system on the stub: one lock that unlocks remotely and takes codes.
async fn stub_locks(stub: &Stub) -> (SeamProvider, Site) {
    stub.answer(
        "/locks/list",
        200,
        json!({ "locks": [{
            "device_id": "2b4bd5a4-4f0a-4d8e-9d2c-5b1c1f1d0a01",
            "device_type": "schlage_lock",
            "display_name": "Side Door",
            "connected_account_id": "c1",
            "can_remotely_unlock": true,
            "can_program_online_access_codes": true,
            "properties": { "name": "Side Door", "online": false, "supported_code_lengths": [4, 5, 6, 7, 8] }
        }] }),
    );
    let url = stub.clone().serve().await;
    let links = Arc::new(Links::default());
    let provider = SeamProvider::new(links.clone());
    let mut conn = connection(&url, "seam_test_key");
    conn.settings = locks_settings(&url);
    let d = provider
        .discover(SYSTEM_TYPE, &conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let site = Site::from_discovery(d, WorkspaceId::new());
    if let Ok(mut m) = links.0.lock() {
        m.insert(
            site.system.id,
            Link {
                settings: locks_settings(&url),
                credentials: credentials("seam_test_key"),
                entrances: site.external_ids.entrances.clone(),
                access_groups: Default::default(),
                encoders: Default::default(),
            },
        );
    }
    (provider, site)
}

/// The fake's unlocks always succeed at once: a pending attempt that fails (the lock is
/// offline, as in the published reference's action attempt errors) comes from the stub.
#[tokio::test]
async fn a_lock_unlock_whose_action_attempt_fails_is_typed_with_seams_error() {
    let stub = Stub::default();
    let (provider, site) = stub_locks(&stub).await;
    let pending = json!({ "action_attempt": {
        "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000010",
        "action_type": "UNLOCK_DOOR", "status": "pending", "result": null, "error": null
    } });
    stub.answer("/locks/unlock_door", 200, pending.clone());
    stub.answer("/action_attempts/get", 200, pending);
    stub.answer(
        "/action_attempts/get",
        200,
        json!({ "action_attempt": {
            "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000010",
            "action_type": "UNLOCK_DOOR", "status": "error", "result": null,
            "error": { "type": "device_offline", "message": "The lock is offline" }
        } }),
    );
    let job = UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: site.entrances[0].id,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(10)),
    };
    let e = provider
        .unlock(&site.system, &job)
        .await
        .expect_err("the attempt failed");
    assert_eq!(e.error_type, "device_offline");
    assert_eq!(
        stub.asked("/locks/unlock_door"),
        [json!({ "device_id": "2b4bd5a4-4f0a-4d8e-9d2c-5b1c1f1d0a01" })],
        "sent once"
    );
    assert_eq!(
        stub.asked("/action_attempts/get").len(),
        2,
        "polled to the end"
    );

    // Still pending at the deadline: not confirmed, and never sent again.
    let stub = Stub::default();
    let (provider, site) = stub_locks(&stub).await;
    let pending = json!({ "action_attempt": {
        "action_attempt_id": "5f8b4d2a-0000-4000-8000-000000000011",
        "action_type": "UNLOCK_DOOR", "status": "pending", "result": null, "error": null
    } });
    stub.answer("/locks/unlock_door", 200, pending.clone());
    stub.answer("/action_attempts/get", 200, pending);
    let job = UnlockJob {
        acs_system_id: site.system.id,
        acs_entrance_id: site.entrances[0].id,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(1)),
        ..job
    };
    let e = provider
        .unlock(&site.system, &job)
        .await
        .expect_err("pending at the deadline");
    assert_eq!(
        e.error_type,
        keygate_domain::action::unlock_errors::NOT_CONFIRMED
    );
    assert_eq!(stub.asked("/locks/unlock_door").len(), 1);
}

/// The fake's access grant of an access method, with the locks it covers (from the front's
/// state: access grants are shimmed, see `SHIMMED`).
async fn grant_in_fake(workspace_id: &str, key: &str) -> Option<Value> {
    let state = ask("/_keygate/state", None, json!({})).await;
    state["access_grants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| {
            g["workspace_id"].as_str() == Some(workspace_id)
                && g["access_grant_key"].as_str() == Some(key)
        })
        .cloned()
}

#[tokio::test]
async fn a_locks_cloud_key_is_an_access_grant_in_the_fake() {
    let (provider, h) = locks_setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::CloudKey)
        .unwrap_or_else(|| panic!("no job for cloud keys"));
    let who = c::holder();
    let result = provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}"));
    assert_eq!(result.code, None);
    let key = keygate_providers::seam::access_code_key(job.access_method_id);
    let grant = grant_in_fake(&h.ws.workspace_id, &key)
        .await
        .unwrap_or_else(|| panic!("no access grant"));
    let mut devices = strings(&grant["device_ids"]);
    devices.sort();
    let mut want: Vec<String> = job.entrance_ids.iter().map(|e| ext(&site, *e)).collect();
    want.sort();
    assert_eq!(devices, want, "the job's locks");
    assert_eq!(grant["requested_access_methods"][0]["mode"], "cloud_key");
    // Granted to the access method's user identity, no PIN on any lock.
    let identity = ask(
        "/user_identities/get",
        Some(&h.ws.api_key),
        json!({ "user_identity_key": user_identity_key(job.access_method_id) }),
    )
    .await;
    assert_eq!(
        grant["user_identity_id"],
        identity["user_identity"]["user_identity_id"]
    );
    for device in &h.ws.device_ids {
        assert!(codes_on(&h.ws.api_key, device).await.is_empty());
    }

    // A repeat and a window change keep the grant; other locks make it anew.
    let first = grant["access_grant_id"].clone();
    provider
        .provision(&site.system, &job, &who)
        .await
        .unwrap_or_else(|e| panic!("repeat: {e}"));
    let later = keygate_providers::Holder {
        ends_at: who.ends_at.map(|e| e + time::Duration::days(1)),
        ..who.clone()
    };
    provider
        .provision(&site.system, &job, &later)
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    let grant = grant_in_fake(&h.ws.workspace_id, &key)
        .await
        .unwrap_or_else(|| panic!("no access grant"));
    assert_eq!(grant["access_grant_id"], first, "kept");
    let held = provider
        .read_back(&site.system, job.access_method_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing held"));
    assert_eq!(held.ends_at, later.ends_at);
    assert_eq!(held.code, None);
    let gate = door(&site, "Garden Gate");
    let moved = keygate_domain::grant::ProvisionJob {
        entrance_ids: vec![gate.id],
        removed_entrance_ids: job.entrance_ids.clone(),
        update: true,
        ..job.clone()
    };
    provider
        .provision(&site.system, &moved, &later)
        .await
        .unwrap_or_else(|e| panic!("moved: {e}"));
    let grant = grant_in_fake(&h.ws.workspace_id, &key)
        .await
        .unwrap_or_else(|| panic!("no access grant"));
    assert_eq!(strings(&grant["device_ids"]), [ext(&site, gate.id)]);
    let held = provider
        .read_back(&site.system, job.access_method_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing held"));
    assert_eq!(held.entrance_ids, [gate.id]);

    // Revoke: the grant is gone.
    provider
        .revoke(
            &site.system,
            &keygate_domain::action::RevokeJob {
                access_grant_id: job.access_grant_id,
                access_method_id: job.access_method_id,
                acs_system_id: site.system.id,
                entrance_ids: moved.entrance_ids.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    assert!(grant_in_fake(&h.ws.workspace_id, &key).await.is_none());
}
