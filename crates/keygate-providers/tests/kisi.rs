//! The Kisi adapter against the Kisi simulator (`keygate_simulators::kisi`): the provider
//! conformance suite, then Kisi's own rules (credentials and the organization boundary, 429 and
//! the declared rate limit, paging, what a provision leaves in Kisi, two methods sharing a
//! group, settings, reachability, the API key never in an error).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate_domain::action::UnlockJob;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, ActionAttemptId, WorkspaceId};
use keygate_domain::model::AccessSystem;
use keygate_providers::conformance::{self as c, FaultClass, Harness, Metered, Site};
use keygate_providers::kisi::{GROUP_BASIC, KisiProvider, METADATA_KEY, SYSTEM_TYPE};
use keygate_providers::{
    AccessSystemProvider, Connection, Credentials, Directory, Link, ProviderError,
};
use keygate_simulators::kisi::{API_KEY, Fault, KisiSimulator, OTHER_ORG_API_KEY, RateLimit};

const WRONG_KEY: &str = "kisi-wrong-key-5e7a9b21";
/// The request rate the simulator enforces in the rate tests: what the adapter's declared
/// limit (in provider calls) is sized for.
const KISI_LIMIT: RateLimit = RateLimit {
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

fn settings(endpoint: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("endpoint".to_owned(), endpoint.to_owned()),
        ("timeout_ms".to_owned(), "1000".to_owned()),
    ])
}

fn credentials(key: &str) -> Credentials {
    Credentials::new(BTreeMap::from([("api_key".to_owned(), key.to_owned())]))
}

fn connection(endpoint: &str, key: &str) -> Connection {
    Connection {
        settings: settings(endpoint),
        credentials: credentials(key),
        ..Connection::default()
    }
}

struct KisiHarness {
    sim: KisiSimulator,
    endpoint: String,
    links: Arc<Links>,
}

impl KisiHarness {
    fn edit_link(&self, system: &AccessSystem, f: impl FnOnce(&mut Link)) {
        if let Ok(mut m) = self.links.0.lock()
            && let Some(l) = m.get_mut(&system.id)
        {
            f(l);
        }
    }

    /// Keygate's access methods the simulator's users carry.
    fn method_entries(&self) -> usize {
        self.sim
            .users()
            .iter()
            .filter_map(|u| u.metadata.get(METADATA_KEY)?.as_object().map(|o| o.len()))
            .sum()
    }
}

#[async_trait]
impl Harness for KisiHarness {
    async fn connect(&self, provider: &dyn AccessSystemProvider, system_type: &str) -> Site {
        let discovered = provider
            .discover(system_type, &connection(&self.endpoint, API_KEY))
            .await
            .unwrap_or_else(|e| panic!("{system_type}: discover failed: {e}"));
        let site = Site::from_discovery(discovered, WorkspaceId::new());
        let link = Link {
            settings: settings(&self.endpoint),
            credentials: credentials(API_KEY),
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
            FaultClass::Permanent => Fault::Refuse(422),
        });
        true
    }

    async fn held_count(&self, _system: &AccessSystem) -> Option<usize> {
        Some(self.method_entries())
    }
}

async fn setup() -> (KisiProvider, KisiHarness) {
    let sim = KisiSimulator::new();
    let addr = sim.serve().await.expect("serve the simulator");
    let links = Arc::new(Links::default());
    (
        KisiProvider::new(links.clone()),
        KisiHarness {
            sim,
            endpoint: format!("http://{addr}"),
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
// Kisi's own rules
// ---------------------------------------------------------------------------------------------

/// Asserts the class and prefix of an error, and that no key is in it.
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
    assert_no_key(&format!("{e:?} {e}"));
}

fn assert_no_key(s: &str) {
    for key in [API_KEY, OTHER_ORG_API_KEY, WRONG_KEY] {
        assert!(!s.contains(key), "a key leaked: {s}");
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

#[test]
fn the_adapter_serves_the_kisi_type() {
    let provider = KisiProvider::new(Arc::new(Links::default()));
    assert_eq!(provider.system_types(), [SYSTEM_TYPE]);
}

#[tokio::test]
async fn discover_reads_the_place_its_locks_and_groups() {
    let (provider, h) = setup().await;
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.endpoint, API_KEY))
        .await
        .expect("discover");
    let seed = h.sim.seed();
    assert_eq!(d.name, "HQ (Kisi)");
    assert_eq!(d.time_zone, "Europe/Berlin");
    assert_eq!(d.external_type, "kisi_place");
    let locks: Vec<String> = seed.lock_ids.iter().map(u64::to_string).collect();
    let found: Vec<&str> = d.entrances.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(found, locks);
    assert_eq!(d.access_groups.len(), 2);
    assert_eq!(d.access_groups[0].entrance_indexes, [0, 1], "Staff");
    assert_eq!(
        d.access_groups[1].entrance_indexes,
        [0, 1, 2, 3],
        "Everyone"
    );
    assert!(d.encoders.is_empty());
    let caps = &d.capabilities;
    assert!(caps.can_remote_unlock && caps.pin_code_rules.is_none());
    assert_eq!(
        caps.supported_modes,
        [AccessMethodMode::MobileKey, AccessMethodMode::CloudKey]
    );

    // The place can be named; one the key does not see is refused.
    let mut conn = connection(&h.endpoint, API_KEY);
    conn.settings
        .insert("place_id".into(), seed.place_id.to_string());
    provider
        .discover(SYSTEM_TYPE, &conn)
        .await
        .expect("named place");
    conn.settings
        .insert("place_id".into(), seed.other_place_id.to_string());
    assert_error(
        provider.discover(SYSTEM_TYPE, &conn).await,
        true,
        "invalid_connection_settings: place_id",
    );
}

#[tokio::test]
async fn a_wrong_key_is_invalid_credentials() {
    let (provider, h) = setup().await;
    assert_error(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.endpoint, WRONG_KEY))
            .await,
        true,
        "invalid_credentials: ",
    );
    // On a stored system, the same is transient: the key may be fixed.
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.edit_link(&site.system, |l| l.credentials = credentials(WRONG_KEY));
    assert_error(
        provider
            .read_back(&site.system, AccessMethodId::new())
            .await,
        false,
        "invalid_credentials: ",
    );
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    assert_error(
        provider.provision(&site.system, &job, &c::holder()).await,
        false,
        "invalid_credentials: ",
    );
    let door = site.entrances[0].id;
    let e = provider
        .unlock(&site.system, &unlock_job(&site, door))
        .await
        .expect_err("a wrong key cannot unlock");
    assert_eq!(e.error_type, "invalid_credentials", "{e:?}");
    assert_no_key(&e.message);
}

#[tokio::test]
async fn another_organizations_key_sees_nothing_of_this_one() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    // The other organization's key discovers its own place only.
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.endpoint, OTHER_ORG_API_KEY))
        .await
        .expect("its own place");
    assert_eq!(
        d.entrances
            .iter()
            .map(|e| e.external_id.clone())
            .collect::<Vec<_>>(),
        [h.sim.seed().other_lock_id.to_string()]
    );
    // With its key, this organization's locks are not found.
    h.edit_link(&site.system, |l| {
        l.credentials = credentials(OTHER_ORG_API_KEY)
    });
    let e = provider
        .unlock(&site.system, &unlock_job(&site, site.entrances[0].id))
        .await
        .expect_err("not its lock");
    assert_eq!(e.error_type, "entrance_not_found", "{e:?}");
    assert!(h.sim.unlocks().is_empty());
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
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    match provider.provision(&site.system, &job, &c::holder()).await {
        Err(ProviderError::Transient(m)) => {
            assert!(m.contains("retry after 5 s"), "{m}")
        }
        other => panic!("want a transient 429, got {other:?}"),
    }
    assert!(h.sim.throttled() >= 2);
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
    h.sim.set_rate_limit(Some(KISI_LIMIT));
    let metered = Metered::new(provider);
    // A token bucket at the declared limit, as the orchestrator paces provider calls.
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
                let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
                metered
                    .provision(&site.system, &job, &c::holder())
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e}"));
                jobs.push(job);
            }
            2 => {
                metered
                    .unlock(&site.system, &unlock_job(&site, door))
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
            }
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
}

/// A burst of provider calls that no one paces (twelve provisions at once, about five requests
/// each) against an organization limited to five requests a second: the adapter paces its own
/// requests to the `requests_per_second` setting, so the vendor never answers `429`; calls whose
/// turn would come too late answer `rate_limited` having sent nothing, and their repeat lands.
#[tokio::test]
async fn an_unpaced_burst_is_kept_to_the_request_rate_and_never_meets_a_429() {
    let (provider, h) = setup().await;
    let limit = RateLimit {
        requests_per_second: 5.0,
        burst: 5,
    };
    let mut conn = connection(&h.endpoint, API_KEY);
    conn.settings
        .insert("requests_per_second".into(), "5".into());
    let discovered = provider
        .discover(SYSTEM_TYPE, &conn)
        .await
        .expect("discover");
    let declared = discovered.capabilities.rate_limit.clone();
    assert!(
        (declared.requests_per_second - 1.0).abs() < 1e-9,
        "five requests a second, five requests a call: one call a second, got {declared:?}"
    );
    let site = Site::from_discovery(discovered, WorkspaceId::new());
    h.links.0.lock().expect("links").insert(
        site.system.id,
        Link {
            settings: conn.settings.clone(),
            credentials: credentials(API_KEY),
            entrances: site.external_ids.entrances.clone(),
            access_groups: site.external_ids.access_groups.clone(),
            encoders: site.external_ids.encoders.clone(),
        },
    );
    h.sim.set_rate_limit(Some(limit));
    let provider = Arc::new(provider);
    let mut pending: Vec<_> = (0..12)
        .map(|_| c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job"))
        .collect();
    let started = Instant::now();
    let mut paced_refusals = 0;
    while !pending.is_empty() {
        let mut tasks = tokio::task::JoinSet::new();
        for job in pending.drain(..) {
            let (p, system) = (provider.clone(), site.system.clone());
            tasks.spawn(async move {
                let r = p.provision(&system, &job, &c::holder()).await;
                (job, r)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (job, r) = done.expect("task");
            match r {
                Ok(_) => {}
                Err(ProviderError::Transient(m)) if m.starts_with("rate_limited: ") => {
                    assert!(m.contains("retry after"), "{m}");
                    paced_refusals += 1;
                    pending.push(job);
                }
                Err(e) => panic!("a burst call failed: {e}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the burst never drained"
        );
    }
    assert_eq!(h.sim.throttled(), 0, "the vendor never answered 429");
    assert_eq!(h.method_entries(), 12, "every provision landed once");
    eprintln!(
        "figure: 12 unpaced provisions at 5 requests/s: {} requests in {:.1} s, {paced_refusals} waited as rate_limited, 0 vendor 429s",
        h.sim.requests().len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_by_the_repeat() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    let who = c::holder();
    // POST /users is answered after the adapter gave up, and then applied.
    h.sim.inject(Fault::Slow {
        delay: Duration::from_millis(1_500),
        apply: true,
    });
    let r = provider.provision(&site.system, &job, &who).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous(_))), "{r:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    provider
        .provision(&site.system, &job, &who)
        .await
        .expect("the repeat converges");
    assert_eq!(h.sim.users().len(), 1, "one user");
    assert_eq!(h.sim.role_assignments().len(), 1, "one assignment");
    let creates = h
        .sim
        .requests()
        .iter()
        .filter(|r| *r == "POST /users")
        .count();
    assert_eq!(creates, 1, "the repeat found the late user by its e-mail");
}

#[tokio::test]
async fn listings_are_followed_across_pages() {
    let (provider, h) = setup().await;
    h.sim.set_max_page_size(2);
    let extra = h.sim.add_lock(h.sim.seed().place_id, "Garage");
    for i in 0..5 {
        h.sim
            .add_user(&format!("Someone {i}"), &format!("someone{i}@example.com"));
    }
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    assert_eq!(site.entrances.len(), 5, "4 seeded locks and the garage");
    assert!(
        site.external_ids
            .entrances
            .values()
            .any(|e| *e == extra.to_string())
    );
    let lock_pages = h
        .sim
        .requests()
        .iter()
        .filter(|r| *r == "GET /locks")
        .count();
    assert_eq!(lock_pages, 3, "5 locks, 2 per page");
    // The holder's user is made after five others: revoke and read-back find it on a later page.
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("provision");
    assert!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .expect("read back")
            .is_some()
    );
    provider
        .revoke(&site.system, &revoke_job(&job))
        .await
        .expect("revoke");
    assert!(h.sim.role_assignments().is_empty());
}

fn revoke_job(job: &keygate_domain::grant::ProvisionJob) -> keygate_domain::action::RevokeJob {
    keygate_domain::action::RevokeJob {
        access_grant_id: job.access_grant_id,
        access_method_id: job.access_method_id,
        acs_system_id: job.acs_system_id,
        entrance_ids: job.entrance_ids.clone(),
    }
}

#[tokio::test]
async fn a_provision_is_a_user_and_a_group_basic_role_assignment_in_kisi() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    let who = c::holder();
    provider
        .provision(&site.system, &job, &who)
        .await
        .expect("provision");
    let users = h.sim.users();
    let [user] = users.as_slice() else {
        panic!("one user: {users:?}");
    };
    assert_eq!(user.email, "conformance@example.com");
    assert_eq!(user.name, who.full_name);
    assert!(
        user.metadata[METADATA_KEY]
            .get(job.access_method_id.to_string())
            .is_some(),
        "the method's entry: {}",
        user.metadata
    );
    let group = &site.external_ids.access_groups[&job.access_group_ids[0]];
    let roles = h.sim.role_assignments();
    let [role] = roles.as_slice() else {
        panic!("one role assignment: {roles:?}");
    };
    assert_eq!(role.user_id, user.id);
    assert_eq!(role.group_id.to_string(), *group);
    assert_eq!(role.role_id, GROUP_BASIC);
    let t = |s: &Option<String>| {
        s.as_deref().and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    assert_eq!(t(&role.valid_from), Some(who.starts_at));
    assert_eq!(t(&role.valid_until), who.ends_at);
    // The door opens remotely.
    provider
        .unlock(&site.system, &unlock_job(&site, site.entrances[0].id))
        .await
        .expect("unlock");
    assert_eq!(
        h.sim.unlocks(),
        [h.sim.seed().lock_ids[0]],
        "POST /locks/{{id}}/unlock"
    );
}

#[tokio::test]
async fn two_methods_of_one_person_share_the_assignment_until_both_are_revoked() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let mobile = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    let cloud = c::provision_job(&site, AccessMethodMode::CloudKey).expect("a job");
    assert_eq!(mobile.access_group_ids, cloud.access_group_ids);
    let first = c::holder();
    let mut later = c::holder();
    later.ends_at = later.ends_at.map(|t| t + time::Duration::days(2));
    provider
        .provision(&site.system, &mobile, &first)
        .await
        .expect("mobile");
    provider
        .provision(&site.system, &cloud, &later)
        .await
        .expect("cloud");
    assert_eq!(h.sim.users().len(), 1, "one Kisi user per e-mail");
    assert_eq!(
        h.sim.role_assignments().len(),
        1,
        "one assignment per group"
    );
    // Each reads back its own window while the shared assignment covers it.
    let held = provider
        .read_back(&site.system, mobile.access_method_id)
        .await
        .expect("read back")
        .expect("held");
    assert_eq!(held.ends_at, first.ends_at);
    provider
        .revoke(&site.system, &revoke_job(&mobile))
        .await
        .expect("revoke mobile");
    assert_eq!(
        provider
            .read_back(&site.system, mobile.access_method_id)
            .await
            .expect("read back"),
        None
    );
    let held = provider
        .read_back(&site.system, cloud.access_method_id)
        .await
        .expect("read back")
        .expect("the cloud key keeps its doors");
    assert_eq!(held.entrance_ids.len(), cloud.entrance_ids.len());
    assert_eq!(held.ends_at, later.ends_at);
    provider
        .revoke(&site.system, &revoke_job(&cloud))
        .await
        .expect("revoke cloud");
    assert!(h.sim.role_assignments().is_empty());
    assert_eq!(h.method_entries(), 0);
}

#[tokio::test]
async fn a_holder_without_an_email_is_refused() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    let mut who = c::holder();
    who.email_address = None;
    assert_error(
        provider.provision(&site.system, &job, &who).await,
        true,
        "holder_email_required: ",
    );
    assert!(h.sim.users().is_empty());
}

#[tokio::test]
async fn malformed_or_unknown_settings_are_refused() {
    let provider = KisiProvider::new(Arc::new(Links::default()));
    let base = connection("http://127.0.0.1:9", API_KEY);
    type Change = Box<dyn Fn(&mut Connection)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "endpoint",
            Box::new(|c| {
                c.settings
                    .insert("endpoint".into(), "http://api.kisi.io".into());
            }),
        ),
        (
            "endpoint",
            Box::new(|c| {
                c.settings.insert("endpoint".into(), "not a url".into());
            }),
        ),
        (
            "place_id",
            Box::new(|c| {
                c.settings.insert("place_id".into(), "HQ".into());
            }),
        ),
        (
            "timeout_ms",
            Box::new(|c| {
                c.settings.insert("timeout_ms".into(), "soon".into());
            }),
        ),
        (
            "colour",
            Box::new(|c| {
                c.settings.insert("colour".into(), "red".into());
            }),
        ),
        (
            "api_key",
            Box::new(|c| {
                c.credentials = Credentials::default();
            }),
        ),
        (
            "api_key",
            Box::new(|c| {
                c.credentials = credentials("a\nb");
            }),
        ),
        (
            "token",
            Box::new(|c| {
                c.credentials =
                    Credentials::new(BTreeMap::from([("token".to_owned(), API_KEY.to_owned())]));
            }),
        ),
    ];
    for (name, change) in cases {
        let mut conn = base.clone();
        change(&mut conn);
        assert_error(
            provider.discover(SYSTEM_TYPE, &conn).await,
            true,
            &format!("invalid_connection_settings: {name}"),
        );
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_provider_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let provider = KisiProvider::new(Arc::new(Links::default()));
    let endpoint = format!("http://127.0.0.1:{port}");
    assert_error(
        provider
            .discover(SYSTEM_TYPE, &connection(&endpoint, API_KEY))
            .await,
        false,
        "provider_unreachable: ",
    );
    // A stored system whose endpoint went away: the same, transient.
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.edit_link(&site.system, |l| {
        l.settings.insert("endpoint".into(), endpoint.clone());
    });
    assert_error(
        provider
            .read_back(&site.system, AccessMethodId::new())
            .await,
        false,
        "provider_unreachable: ",
    );
}

#[tokio::test]
async fn a_slow_kisi_fails_within_the_timeout() {
    let (provider, h) = setup().await;
    h.sim.inject_any(Fault::Slow {
        delay: Duration::from_secs(5),
        apply: true,
    });
    let started = Instant::now();
    assert_error(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.endpoint, API_KEY))
            .await,
        false,
        "provider_unreachable: ",
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn no_error_carries_the_api_key() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let mut messages = Vec::new();
    for fault in [
        Fault::Unavailable,
        Fault::ErrorAfterApplying,
        Fault::Refuse(422),
        Fault::Refuse(403),
        Fault::Slow {
            delay: Duration::from_millis(2_500),
            apply: false,
        },
    ] {
        h.sim.inject(fault);
        let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
        if let Err(e) = provider.provision(&site.system, &job, &c::holder()).await {
            messages.push(format!("{e:?} {e}"));
        }
    }
    h.sim.inject(Fault::Unavailable);
    if let Err(e) = provider
        .unlock(&site.system, &unlock_job(&site, site.entrances[0].id))
        .await
    {
        messages.push(format!("{e:?}"));
    }
    h.edit_link(&site.system, |l| l.credentials = credentials(WRONG_KEY));
    if let Err(e) = provider
        .read_back(&site.system, AccessMethodId::new())
        .await
    {
        messages.push(format!("{e:?} {e}"));
    }
    assert_eq!(messages.len(), 7, "{messages:#?}");
    for m in &messages {
        assert_no_key(m);
    }
    let printed = format!("{:?}", connection(&h.endpoint, API_KEY));
    assert_no_key(&printed);
}

#[tokio::test]
async fn a_simulator_webhook_verifies_and_its_user_holds_the_provisioned_method() {
    let (provider, h) = setup().await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let secret = "integration-signature-key";
    h.edit_link(&site.system, |l| {
        let mut c = l.credentials.values().clone();
        c.insert(
            keygate_providers::kisi::WEBHOOK_SECRET.to_owned(),
            secret.to_owned(),
        );
        l.credentials = Credentials::new(c);
    });
    let link = h.links.link(&site.system).await.expect("link");
    let job = c::provision_job(&site, AccessMethodMode::MobileKey).expect("a job");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("provision");
    let user = h.sim.users()[0].clone();
    let lock = h.sim.seed().lock_ids[0];
    let event = h.sim.unlock_event(user.id, lock);
    let body = event.to_string();
    let headers = BTreeMap::from([(
        "x-signature".to_owned(),
        keygate_simulators::kisi::sign(secret, body.as_bytes()),
    )]);
    let now = time::OffsetDateTime::now_utc();
    let got = provider
        .parse_webhook(&link, &headers, body.as_bytes(), now)
        .expect("verified");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].vendor_event_id,
        event["uuid"].as_str().expect("uuid")
    );
    assert_eq!(
        got[0].kind,
        keygate_providers::VendorEventKind::Unlocked {
            entrance: lock.to_string(),
            actor: Some(user.id.to_string()),
        }
    );
    // The adapter's own key does not sign webhooks: a delivery signed with it is refused.
    let forged = BTreeMap::from([(
        "x-signature".to_owned(),
        keygate_simulators::kisi::sign(API_KEY, body.as_bytes()),
    )]);
    let e = provider
        .parse_webhook(&link, &forged, body.as_bytes(), now)
        .expect_err("forged");
    assert_eq!(e.reason(), "invalid_signature");
    // Who unlocked: the user's Keygate entry names the method; a stranger holds none.
    assert_eq!(
        provider
            .webhook_actor_methods(&site.system, &user.id.to_string())
            .await
            .expect("actor"),
        vec![job.access_method_id]
    );
    let stranger = h.sim.add_user("Stranger", "stranger@example.com");
    assert!(
        provider
            .webhook_actor_methods(&site.system, &stranger.to_string())
            .await
            .expect("actor")
            .is_empty()
    );
    assert!(
        provider
            .webhook_actor_methods(&site.system, "999999")
            .await
            .expect("gone")
            .is_empty()
    );
}
