//! The Brivo adapter against the Brivo simulator (`keygate_simulators::brivo`): the provider
//! conformance suite, then Brivo's own rules (OAuth tokens renewed once for concurrent calls,
//! wrong credentials, the monthly budget, 429 and the declared rate limit, paging, what a
//! provision leaves in Brivo, settings, reachability, no secret in any error).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate_domain::action::{RevokeJob, UnlockJob};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, ActionAttemptId, WorkspaceId};
use keygate_domain::model::AccessSystem;
use keygate_providers::brivo::{
    BUDGET_EXHAUSTED, BUDGET_NEARLY_EXHAUSTED, BrivoProvider, EXTERNAL_ID_PREFIX, SYSTEM_TYPE,
    user_external_id,
};
use keygate_providers::conformance::{self as c, FaultClass, Harness, Metered, Site};
use keygate_providers::{
    AccessSystemProvider, Connection, Credentials, Directory, Link, ProviderError,
};
use keygate_simulators::brivo::{
    API_BASE, API_KEY, BrivoSimulator, CLIENT_ID, CLIENT_SECRET, Fault, PASSWORD, RateLimit,
    TOKEN_PATH, USERNAME,
};

const WRONG: &str = "brivo-wrong-secret-6c01d9";
/// The request rate the simulator enforces in the pacing test.
const BRIVO_LIMIT: RateLimit = RateLimit {
    requests_per_second: 10.0,
    burst: 20,
};

// ---------------------------------------------------------------------------------------------
// Directory and harness
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Links(Mutex<HashMap<AccessSystemId, Link>>);

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

fn settings(origin: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("endpoint".to_owned(), format!("{origin}{API_BASE}")),
        ("auth_endpoint".to_owned(), format!("{origin}{TOKEN_PATH}")),
        ("timeout_ms".to_owned(), "1000".to_owned()),
    ])
}

fn credentials_with(name: &str, value: &str) -> Credentials {
    let mut m = BTreeMap::from([
        ("client_id".to_owned(), CLIENT_ID.to_owned()),
        ("client_secret".to_owned(), CLIENT_SECRET.to_owned()),
        ("username".to_owned(), USERNAME.to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
        ("api_key".to_owned(), API_KEY.to_owned()),
    ]);
    if !name.is_empty() {
        m.insert(name.to_owned(), value.to_owned());
    }
    Credentials::new(m)
}

fn credentials() -> Credentials {
    credentials_with("", "")
}

fn connection(origin: &str, credentials: Credentials) -> Connection {
    Connection {
        settings: settings(origin),
        credentials,
        ..Connection::default()
    }
}

struct BrivoHarness {
    sim: BrivoSimulator,
    origin: String,
    links: Arc<Links>,
}

impl BrivoHarness {
    fn edit_link(&self, system: &AccessSystem, f: impl FnOnce(&mut Link)) {
        if let Ok(mut m) = self.links.0.lock()
            && let Some(l) = m.get_mut(&system.id)
        {
            f(l);
        }
    }

    /// The Brivo users Keygate made (one per access method).
    fn keygate_users(&self) -> usize {
        self.sim
            .users()
            .iter()
            .filter(|u| {
                u.external_id
                    .as_deref()
                    .is_some_and(|e| e.starts_with(EXTERNAL_ID_PREFIX))
            })
            .count()
    }
}

#[async_trait]
impl Harness for BrivoHarness {
    async fn connect(&self, provider: &dyn AccessSystemProvider, system_type: &str) -> Site {
        let discovered = provider
            .discover(system_type, &connection(&self.origin, credentials()))
            .await
            .unwrap_or_else(|e| panic!("{system_type}: discover failed: {e}"));
        let site = Site::from_discovery(discovered, WorkspaceId::new());
        let link = Link {
            settings: settings(&self.origin),
            credentials: credentials(),
            entrances: site.external_ids.entrances.clone(),
            access_groups: site.external_ids.access_groups.clone(),
            encoders: site.external_ids.encoders.clone(),
        };
        if let Ok(mut m) = self.links.0.lock() {
            m.insert(site.system.id, link);
        }
        site
    }

    fn inject(&self, _system: &AccessSystem, class: FaultClass) -> bool {
        self.sim.inject(match class {
            FaultClass::Transient => Fault::Unavailable,
            FaultClass::AmbiguousApplied => Fault::ErrorAfterApplying,
            // Longer than the adapter's 1 s timeout; the simulator then applies nothing.
            FaultClass::AmbiguousNotApplied => Fault::Slow {
                delay: Duration::from_millis(2_500),
                apply: false,
            },
            FaultClass::Permanent => Fault::Refuse(400),
        });
        true
    }

    async fn held_count(&self, _system: &AccessSystem) -> Option<usize> {
        Some(self.keygate_users())
    }
}

async fn setup() -> (BrivoProvider, BrivoHarness) {
    let sim = BrivoSimulator::new();
    let addr = sim.serve().await.expect("serve the simulator");
    let links = Arc::new(Links::default());
    (
        BrivoProvider::new(links.clone()),
        BrivoHarness {
            sim,
            origin: format!("http://{addr}"),
            links,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod conformance {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (provider, harness) = setup().await;
                    c::$scenario(&provider, &harness, SYSTEM_TYPE).await;
                }
            )*
        }
    };
}

conformance!(
    discover_is_consistent,
    provision_is_idempotent,
    revoke_is_idempotent,
    unlock_follows_capabilities,
    encode_follows_capabilities,
    error_classes_are_honest,
    declared_rate_limit_is_usable,
);

// ---------------------------------------------------------------------------------------------
// Brivo's own rules
// ---------------------------------------------------------------------------------------------

/// Asserts the class and prefix of an error, and that no secret is in it.
fn assert_error(r: Result<impl std::fmt::Debug, ProviderError>, permanent: bool, prefix: &str) {
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
        ProviderError::Ambiguous(_) => panic!("unexpected ambiguous {e:?}"),
    };
    assert!(m.starts_with(prefix), "{e:?} should start with {prefix:?}");
    assert_no_secret(&format!("{e:?} {e}"));
}

fn assert_no_secret(s: &str) {
    for secret in [CLIENT_SECRET, PASSWORD, API_KEY, WRONG, "at-", "rt-"] {
        assert!(!s.contains(secret), "a secret leaked: {s}");
    }
}

fn unlock_job(site: &Site, door: keygate_domain::ids::EntranceId) -> UnlockJob {
    UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: door,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(30)),
    }
}

fn revoke_job(job: &ProvisionJob) -> RevokeJob {
    RevokeJob {
        access_grant_id: job.access_grant_id,
        access_method_id: job.access_method_id,
        acs_system_id: job.acs_system_id,
        entrance_ids: job.entrance_ids.clone(),
    }
}

#[test]
fn the_adapter_serves_the_brivo_type() {
    let provider = BrivoProvider::new(Arc::new(Links::default()));
    assert_eq!(provider.system_types(), [SYSTEM_TYPE]);
}

#[tokio::test]
async fn discover_reads_the_site_its_access_points_and_groups() {
    let (provider, h) = setup().await;
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.origin, credentials()))
        .await
        .expect("discover");
    let seed = h.sim.seed();
    assert_eq!(d.name, "HQ (Brivo)");
    assert_eq!(d.time_zone, "America/New_York");
    assert_eq!(d.external_type, "brivo_site");
    let aps: Vec<String> = seed.access_point_ids.iter().map(u64::to_string).collect();
    let found: Vec<&str> = d.entrances.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(found, aps);
    assert_eq!(d.access_groups.len(), 2);
    assert_eq!(d.access_groups[0].entrance_indexes, [0, 1], "Staff");
    assert_eq!(
        d.access_groups[1].entrance_indexes,
        [0, 1, 2, 3],
        "Everyone"
    );
    assert_eq!(
        d.capabilities.supported_modes,
        [
            AccessMethodMode::Code,
            AccessMethodMode::MobileKey,
            AccessMethodMode::CloudKey
        ]
    );

    // The site can be named; one the account does not see is refused.
    let mut conn = connection(&h.origin, credentials());
    conn.settings
        .insert("site_id".into(), seed.site_id.to_string());
    provider.discover(SYSTEM_TYPE, &conn).await.expect("named");
    conn.settings.insert("site_id".into(), "999999".into());
    assert_error(
        provider.discover(SYSTEM_TYPE, &conn).await,
        true,
        "invalid_connection_settings: site_id",
    );
}

#[tokio::test]
async fn wrong_credentials_are_invalid_credentials() {
    let (provider, h) = setup().await;
    // At discover: Permanent, whichever secret is wrong.
    for name in ["client_secret", "password", "api_key", "username"] {
        let r = provider
            .discover(
                SYSTEM_TYPE,
                &connection(&h.origin, credentials_with(name, WRONG)),
            )
            .await;
        assert_error(r, true, "invalid_credentials: ");
    }
    // A stored system whose password changed: Transient (someone must fix the account).
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.edit_link(&site.system, |l| {
        l.credentials = credentials_with("password", WRONG);
    });
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    assert_error(
        provider.provision(&site.system, &job, &c::holder()).await,
        false,
        "invalid_credentials: ",
    );
    h.edit_link(&site.system, |l| {
        l.credentials = credentials_with("api_key", WRONG);
    });
    assert_error(
        provider.provision(&site.system, &job, &c::holder()).await,
        false,
        "invalid_credentials: ",
    );
    assert_eq!(h.keygate_users(), 0, "nothing applied");
}

#[tokio::test]
async fn tokens_revoked_mid_run_are_renewed_once_for_concurrent_calls() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("provision");
    let before = h.sim.token_requests();
    assert_eq!(before, 1, "one token for discover and provision");

    h.sim.revoke_tokens();
    let provider = Arc::new(provider);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = provider.clone();
        let system = site.system.clone();
        let m = job.access_method_id;
        tasks.push(tokio::spawn(async move { p.read_back(&system, m).await }));
    }
    for t in tasks {
        let held = t
            .await
            .expect("join")
            .expect("read back after a revoked token");
        assert!(held.is_some());
    }
    assert_eq!(
        h.sim.token_requests(),
        before + 1,
        "one renewal for eight concurrent calls"
    );
}

#[tokio::test]
async fn a_refused_refresh_token_falls_back_to_the_login() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.sim.revoke_tokens();
    provider
        .read_back(&site.system, AccessMethodId::new())
        .await
        .expect("renewed by the refresh token");
    assert_eq!(h.sim.grants(), ["password", "refresh_token"]);
    h.sim.revoke_all_tokens();
    provider
        .read_back(&site.system, AccessMethodId::new())
        .await
        .expect("renewed by the login");
    assert_eq!(
        h.sim.grants(),
        ["password", "refresh_token", "refresh_token", "password"]
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let (provider, h) = setup().await;
    h.sim.set_token_lifetime(1);
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    assert_eq!(h.sim.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(850)).await;
    // 80% of the lifetime has passed: the adapter renews before calling.
    let requests = h.sim.requests().len();
    provider
        .read_back(&site.system, AccessMethodId::new())
        .await
        .expect("read back");
    assert_eq!(h.sim.token_requests(), 2);
    assert_eq!(
        h.sim.requests().len(),
        requests + 1,
        "no request was refused for an expired token"
    );
}

#[tokio::test]
async fn an_exhausted_monthly_budget_is_budget_exhausted() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.sim.set_monthly_budget(Some(1));
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    // The first call is the budget's last; the provision's next one is refused.
    let r = provider.provision(&site.system, &job, &c::holder()).await;
    assert_error(r, false, &format!("{BUDGET_EXHAUSTED}: "));
    let r = provider.read_back(&site.system, job.access_method_id).await;
    assert_error(r, false, &format!("{BUDGET_EXHAUSTED}: "));
    let r = provider
        .unlock(&site.system, &unlock_job(&site, site.entrances[0].id))
        .await;
    let e = r.expect_err("unlock within no budget");
    assert_eq!(e.error_type, BUDGET_EXHAUSTED, "{e:?}");
    assert_no_secret(&format!("{e:?}"));
    h.sim.set_monthly_budget(None);
    assert_eq!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .expect("read back"),
        None,
        "the refused provision made nothing"
    );
}

/// Brivo's gateway (Mashery) tells the month's allotment and what is spent in its quota headers:
/// past nine tenths the system warns, before any call is refused; a new month clears it.
#[tokio::test]
async fn a_budget_nearly_spent_warns_on_the_system_before_it_refuses() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    assert!(
        provider.warnings(&site.system).is_empty(),
        "no quota seen yet"
    );
    let spent = h.sim.calls();
    h.sim.set_monthly_budget(Some(spent + 40));
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("within the budget");
    assert!(
        provider.warnings(&site.system).is_empty(),
        "{} of {} spent: no warning yet",
        h.sim.calls(),
        spent + 40
    );
    // Spend until nine tenths are gone.
    while h.sim.calls() * 10 < (spent + 40) * 9 {
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .expect("within the budget");
    }
    let w = provider.warnings(&site.system);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].code, BUDGET_NEARLY_EXHAUSTED);
    assert!(
        w[0].message
            .contains(&format!("of this month's {}", spent + 40)),
        "{}",
        w[0].message
    );
    assert_no_secret(&w[0].message);
    // A new month (a larger allotment): the next answer clears it.
    h.sim.set_monthly_budget(Some(h.sim.calls() + 10_000));
    provider
        .read_back(&site.system, job.access_method_id)
        .await
        .expect("read back");
    assert!(provider.warnings(&site.system).is_empty());
}

#[tokio::test]
async fn a_429_is_transient_and_says_when_to_retry() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.sim.set_rate_limit(Some(RateLimit {
        requests_per_second: 0.2,
        burst: 1,
    }));
    let _ = provider
        .read_back(&site.system, AccessMethodId::new())
        .await;
    let r = provider
        .read_back(&site.system, AccessMethodId::new())
        .await;
    assert_error(r, false, "rate_limited: ");
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    match provider.provision(&site.system, &job, &c::holder()).await {
        Err(ProviderError::Transient(m)) => assert!(m.contains("retry after 5 s"), "{m}"),
        other => panic!("want a transient 429, got {other:?}"),
    }
    h.sim.set_rate_limit(None);
    assert_eq!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .expect("read back"),
        None,
        "a throttled provision applied nothing"
    );
}

#[tokio::test]
async fn calls_paced_by_the_declared_limit_never_see_a_429() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let limit = site.system.capabilities.rate_limit.clone();
    h.sim.set_rate_limit(Some(BRIVO_LIMIT));
    let metered = Metered::new(provider);
    let mut tokens = f64::from(limit.burst);
    let mut at = Instant::now();
    let door = site.entrances[0].id;
    let mut jobs = Vec::new();
    for i in 0..14 {
        loop {
            let now = Instant::now();
            tokens = (tokens + now.duration_since(at).as_secs_f64() * limit.requests_per_second)
                .min(f64::from(limit.burst));
            at = now;
            if tokens >= 1.0 {
                tokens -= 1.0;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match i % 4 {
            0 | 1 => {
                let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
                metered
                    .provision(&site.system, &job, &c::holder())
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e}"));
                jobs.push(job);
            }
            2 => metered
                .unlock(&site.system, &unlock_job(&site, door))
                .await
                .unwrap_or_else(|e| panic!("call {i}: {e:?}")),
            _ => {
                let job = jobs.first().expect("a provisioned job");
                metered
                    .read_back(&site.system, job.access_method_id)
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e}"));
            }
        }
    }
    assert_eq!(
        h.sim.throttled(),
        0,
        "no 429 when paced by the declared limit"
    );
    c::assert_within_rate(&metered.calls_to(site.system.id), &limit);
    // The same calls unpaced by the orchestrator still meet no 429: the adapter paces its own
    // requests to the account's request rate.
    for i in 0..12 {
        let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
        metered
            .provision(&site.system, &job, &c::holder())
            .await
            .unwrap_or_else(|e| panic!("unpaced call {i}: {e}"));
    }
    assert_eq!(
        h.sim.throttled(),
        0,
        "the adapter's own pacing kept to the limit"
    );
}

#[tokio::test]
async fn listings_are_followed_across_pages() {
    let (provider, h) = setup().await;
    h.sim.set_max_page_size(3);
    let mut extra = Vec::new();
    for i in 0..5 {
        extra.push(h.sim.add_access_point(&format!("Extra {i}")));
    }
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.origin, credentials()))
        .await
        .expect("discover");
    assert_eq!(d.entrances.len(), 9, "4 seeded + 5 added, over 3 pages");
    for id in extra {
        assert!(d.entrances.iter().any(|e| e.external_id == id.to_string()));
    }
    assert!(
        h.sim
            .requests()
            .iter()
            .filter(|r| r.ends_with("/access-points"))
            .count()
            >= 3,
        "{:?}",
        h.sim.requests()
    );
}

#[tokio::test]
async fn a_provision_is_a_user_with_its_pin_in_the_groups() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code).expect("a code job");
    let who = c::holder();
    let r = provider
        .provision(&site.system, &job, &who)
        .await
        .expect("provision");
    let pin = job.requested_code.clone().expect("a requested PIN");
    assert_eq!(r.code.as_deref(), Some(pin.as_str()));

    let users = h.sim.users();
    let user = users
        .iter()
        .find(|u| u.external_id.as_deref() == Some(user_external_id(job.access_method_id).as_str()))
        .expect("a Brivo user with the method's external id");
    assert_eq!(user.pin.as_deref(), Some(pin.as_str()));
    assert_eq!(user.first_name, "Conformance");
    assert_eq!(user.last_name, "Tester");
    assert!(user.effective_from.is_some() && user.effective_to.is_some());
    let groups: Vec<String> = h
        .sim
        .groups_of(user.id)
        .iter()
        .map(u64::to_string)
        .collect();
    let wanted: Vec<String> = job
        .access_group_ids
        .iter()
        .map(|g| site.external_ids.access_groups[g].clone())
        .collect();
    assert_eq!(groups, wanted);

    // A repeat changes nothing; a revoke removes the memberships and the user.
    provider
        .provision(&site.system, &job, &who)
        .await
        .expect("repeat");
    assert_eq!(h.keygate_users(), 1);
    provider
        .revoke(&site.system, &revoke_job(&job))
        .await
        .expect("revoke");
    assert_eq!(h.keygate_users(), 0);
    assert!(h.sim.groups_of(user.id).is_empty());
}

#[tokio::test]
async fn a_mobile_key_is_one_emailed_invitation_even_when_its_answer_was_lost() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    let who = c::holder();
    // The user, the memberships, then the invitation, whose answer is lost.
    h.sim.inject(Fault::Slow {
        delay: Duration::ZERO,
        apply: true,
    });
    let writes = 1 + job.access_group_ids.len();
    for _ in 1..writes {
        h.sim.inject(Fault::Slow {
            delay: Duration::ZERO,
            apply: true,
        });
    }
    h.sim.inject(Fault::ErrorAfterApplying);
    let r = provider.provision(&site.system, &job, &who).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous(_))), "{r:?}");
    provider
        .provision(&site.system, &job, &who)
        .await
        .expect("repeat");
    let invitations = h.sim.invitations();
    assert_eq!(invitations.len(), 1, "{invitations:?}");
    assert_eq!(invitations[0].reference_id, "conformance@example.com");
    assert!(invitations[0].emailed);

    let mut nameless = c::holder();
    nameless.email_address = None;
    let other = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    assert_error(
        provider.provision(&site.system, &other, &nameless).await,
        true,
        "holder_email_required: ",
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_by_the_repeat() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    h.sim.inject(Fault::ErrorAfterApplying);
    let r = provider.provision(&site.system, &job, &c::holder()).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous(_))), "{r:?}");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("repeat");
    assert_eq!(
        h.keygate_users(),
        1,
        "the repeat found the user the lost answer made"
    );
}

#[tokio::test]
async fn unlock_activates_the_access_point() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let door = &site.entrances[1];
    provider
        .unlock(&site.system, &unlock_job(&site, door.id))
        .await
        .expect("unlock");
    let ap: u64 = site.external_ids.entrances[&door.id].parse().expect("id");
    assert_eq!(h.sim.activations(), [ap]);
    h.sim.set_connected(ap, false);
    let e = provider
        .unlock(&site.system, &unlock_job(&site, door.id))
        .await
        .expect_err("offline");
    assert_eq!(e.error_type, "lock_not_online", "{e:?}");
}

#[tokio::test]
async fn malformed_or_unknown_settings_and_credentials_are_refused() {
    let (provider, h) = setup().await;
    let mut conn = connection(&h.origin, credentials());
    conn.settings.insert("colour".into(), "red".into());
    assert_error(
        provider.discover(SYSTEM_TYPE, &conn).await,
        true,
        "invalid_connection_settings: colour",
    );
    let mut creds = credentials().values().clone();
    creds.remove("api_key");
    assert_error(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.origin, Credentials::new(creds)))
            .await,
        true,
        "invalid_connection_settings: api_key",
    );
    let mut creds = credentials().values().clone();
    creds.insert("token".into(), WRONG.into());
    assert_error(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.origin, Credentials::new(creds)))
            .await,
        true,
        "invalid_connection_settings: token",
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_provider_unreachable() {
    let provider = BrivoProvider::new(Arc::new(Links::default()));
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let r = provider
        .discover(
            SYSTEM_TYPE,
            &connection(&format!("http://{addr}"), credentials()),
        )
        .await;
    assert_error(r, false, "provider_unreachable: ");
}

#[tokio::test]
async fn no_error_carries_a_secret() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code).expect("a job");
    let mut errors = Vec::new();
    for name in ["client_secret", "password", "api_key"] {
        h.edit_link(&site.system, |l| {
            l.credentials = credentials_with(name, WRONG)
        });
        // A fresh token is needed for the wrong one to matter.
        h.sim.revoke_tokens();
        errors.push(format!(
            "{:?}",
            provider.provision(&site.system, &job, &c::holder()).await
        ));
    }
    h.edit_link(&site.system, |l| l.credentials = credentials());
    h.sim.set_monthly_budget(Some(0));
    errors.push(format!(
        "{:?}",
        provider.read_back(&site.system, job.access_method_id).await
    ));
    h.sim.set_monthly_budget(None);
    h.sim.inject(Fault::Refuse(403));
    errors.push(format!(
        "{:?}",
        provider.provision(&site.system, &job, &c::holder()).await
    ));
    for e in &errors {
        assert!(e.contains("Err("), "{e}");
        assert_no_secret(e);
    }
}
