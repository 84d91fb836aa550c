//! The console's router over a real application on the embedded default's store (SQLite) and
//! the in-process cache: sign-in, sessions, CSRF, tenancy (another workspace's ids are 404),
//! and seed 000's steps through the forms.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use keygate_app::App;
use keygate_app::auth::Authenticator;
use keygate_app::sessions::{DEFAULT_SESSION_TTL, Sessions};
use keygate_app::throttle::{AuthFailureLimiter, ClientAddr};
use keygate_app::tokens::PageTokens;
use keygate_app::tracker::Tracker;
use keygate_app::workspaces::CreateWorkspace;
use keygate_console::{Console, router};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::instant_key::Links;
use keygate_domain::model::{AccessSystem, Entrance, WorkspaceType};
use keygate_domain::page::PageRequest;
use keygate_providers::Registry;
use keygate_providers::virtual_system::VirtualSystems;
use keygate_store::testdb::TestDb;
use tower::ServiceExt as _;

const ADMIN: &str = "console-admin-token-for-tests";

struct World {
    app: App,
    router: Router,
    _db: TestDb,
}

async fn world() -> World {
    world_with(Default::default()).await
}

async fn world_with(delivery: keygate_app::instant_keys::Availability) -> World {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let cache = Arc::new(keygate_cache::InProcessCache::new(1_000));
    let tracker = Tracker::in_process(store.clone(), cache.clone());
    let links = Links::new("http://keygate.test");
    links.set_secret(vec![5; 32]);
    let mut providers = Registry::new();
    providers.register(Arc::new(VirtualSystems::new(Duration::ZERO)));
    let app = App {
        instant_key_delivery: delivery,
        ..App::new(
            store.clone(),
            tracker,
            links,
            PageTokens::new(vec![6; 32]),
            providers,
        )
    };
    let router = router(Console {
        app: app.clone(),
        auth: Authenticator::new(store, cache.clone(), Some(ADMIN.into())),
        sessions: Sessions::new(cache, DEFAULT_SESSION_TTL),
        secure_cookies: false,
        auth_failures: Arc::new(AuthFailureLimiter::new(3)),
    });
    World {
        app,
        router,
        _db: db,
    }
}

async fn workspace(app: &App, name: &str) -> (WorkspaceId, String) {
    let (ws, _, token) = app
        .create_workspace(CreateWorkspace {
            name: name.into(),
            workspace_type: WorkspaceType::Sandbox,
            api_key_name: None,
        })
        .await
        .expect("workspace");
    (ws.id, token)
}

fn page() -> PageRequest {
    PageRequest {
        after: None,
        limit: 100,
    }
}

async fn system_named(app: &App, ws: WorkspaceId, part: &str) -> AccessSystem {
    app.list_access_systems(ws, None, &page())
        .await
        .expect("systems")
        .items
        .into_iter()
        .find(|s| s.name.contains(part))
        .expect("the sandbox system")
}

/// A user identity of `ws`, made through the app (`email` may be empty).
async fn person(
    app: &App,
    ws: WorkspaceId,
    name: &str,
    email: &str,
) -> keygate_app::identities::IdentityView {
    app.create_user_identity(
        ws,
        keygate_app::identities::CreateIdentity {
            idem: None,
            person: keygate_domain::validate::new_user_identity("", name, email, "")
                .expect("person"),
        },
    )
    .await
    .expect("identity")
}

/// The entrance `name` of the system of `ws` whose name contains `system`.
async fn entrance_named(app: &App, ws: WorkspaceId, system: &str, name: &str) -> Entrance {
    let s = system_named(app, ws, system).await;
    app.list_entrances(ws, Some(s.id), &page())
        .await
        .expect("entrances")
        .items
        .into_iter()
        .find(|e| e.display_name == name)
        .expect("the entrance")
}

struct Reply {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn send(r: &Router, req: Request<Body>) -> Reply {
    let res = r.clone().oneshot(req).await.expect("a response");
    let status = res.status();
    let location = res
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let bytes = axum::body::to_bytes(res.into_body(), 4 << 20)
        .await
        .expect("body");
    Reply {
        status,
        location,
        cookies,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, cookie: &str, form: &[(&str, &str)]) -> Request<Body> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    Request::post(path)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request")
}

/// The value of the first hidden input `name` of a page.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = body.find(&marker).expect("the hidden input") + marker.len();
    body[at..].split('"').next().expect("a value").to_owned()
}

fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
    })
}

/// Signs in with `token`; returns the session cookie header and the session's CSRF token.
async fn sign_in(r: &Router, token: &str) -> (String, String) {
    let form = send(r, get("/console/sign-in", "")).await;
    assert_eq!(form.status, StatusCode::OK);
    let login = cookie_value(&form.cookies, "kg_console_login").expect("login cookie");
    let done = send(
        r,
        post(
            "/console/sign-in",
            &format!("kg_console_login={login}"),
            &[("login", &hidden(&form.body, "login")), ("token", token)],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let session_cookie = done
        .cookies
        .iter()
        .find(|c| c.starts_with("kg_console="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(session_cookie.contains(attr), "{session_cookie}: {attr}");
    }
    assert!(!session_cookie.contains("Secure"), "plain http here");
    let sid = cookie_value(&done.cookies, "kg_console").expect("session id");
    let cookie = format!("kg_console={sid}");
    let page = send(r, get(&done.location, &cookie)).await;
    let page = if page.status == StatusCode::SEE_OTHER {
        send(r, get(&page.location, &cookie)).await
    } else {
        page
    };
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (cookie.clone(), hidden(&page.body, "csrf"))
}

#[tokio::test]
async fn sign_in_refuses_wrong_tokens_and_a_form_without_its_cookie() {
    let w = world().await;
    workspace(&w.app, "Hotel").await;
    let form = send(&w.router, get("/console/sign-in", "")).await;
    let login = cookie_value(&form.cookies, "kg_console_login").expect("login cookie");
    let wrong = send(
        &w.router,
        post(
            "/console/sign-in",
            &format!("kg_console_login={login}"),
            &[("login", &hidden(&form.body, "login")), ("token", "nope")],
        ),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .body
            .contains("neither a valid API key nor the admin token")
    );
    assert!(!wrong.cookies.iter().any(|c| c.starts_with("kg_console=")));
    let no_cookie = send(
        &w.router,
        post(
            "/console/sign-in",
            "",
            &[("login", &hidden(&form.body, "login")), ("token", ADMIN)],
        ),
    )
    .await;
    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    // Signed out, every page leads to sign-in.
    let page = send(&w.router, get("/console/systems", "")).await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/console/sign-in")
    );
    let forged = send(&w.router, get("/console/systems", "kg_console=forged")).await;
    assert_eq!(forged.location, "/console/sign-in");
}

/// One sign-in attempt from `client` (the address the HTTP port attaches) with `token`.
async fn sign_in_from(r: &Router, client: &str, token: &str) -> Reply {
    let form = send(r, get("/console/sign-in", "")).await;
    let login = cookie_value(&form.cookies, "kg_console_login").expect("login cookie");
    let mut req = post(
        "/console/sign-in",
        &format!("kg_console_login={login}"),
        &[("login", &hidden(&form.body, "login")), ("token", token)],
    );
    req.extensions_mut()
        .insert(ClientAddr(client.parse().expect("an address")));
    send(r, req).await
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address() {
    let w = world().await;
    let (_, token) = workspace(&w.app, "Hotel").await;
    // The test's budget is 3 failures a minute per client.
    for _ in 0..3 {
        let r = sign_in_from(&w.router, "192.0.2.1", "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let refused = sign_in_from(&w.router, "192.0.2.1", &token).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "client A spent its budget: even the right key waits"
    );
    assert!(refused.body.contains("Too many failed sign-ins"));
    assert!(!refused.cookies.iter().any(|c| c.starts_with("kg_console=")));
    // Client B is not blocked by A's failures: it fails on its own budget and signs in.
    let b_wrong = sign_in_from(&w.router, "198.51.100.7", "guess").await;
    assert_eq!(b_wrong.status, StatusCode::UNAUTHORIZED);
    let b = sign_in_from(&w.router, "198.51.100.7", &token).await;
    assert_eq!(b.status, StatusCode::SEE_OTHER, "{}", b.body);
    assert!(b.cookies.iter().any(|c| c.starts_with("kg_console=")));
    // IPv6 clients are counted per /64, as on the other surfaces.
    for _ in 0..3 {
        sign_in_from(&w.router, "2001:db8:1:2::1", "guess").await;
    }
    let same_64 = sign_in_from(&w.router, "2001:db8:1:2::ffff", &token).await;
    assert_eq!(same_64.status, StatusCode::TOO_MANY_REQUESTS);
    let other_64 = sign_in_from(&w.router, "2001:db8:1:3::1", &token).await;
    assert_eq!(other_64.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let s = system_named(&w.app, ws, "Salto KS").await;
    let path = format!("/console/systems/{}/users", s.id);
    let fields = [
        ("full_name", "Jane Doe"),
        ("email_address", "jane@example.com"),
    ];
    let missing = send(&w.router, post(&path, &cookie, &fields)).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let mut wrong = fields.to_vec();
    wrong.push(("csrf", "not-the-token"));
    let wrong = send(&w.router, post(&path, &cookie, &wrong)).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let system_page = send(
        &w.router,
        get(&format!("/console/systems/{}", s.id), &cookie),
    )
    .await;
    assert!(
        !system_page.body.contains("Jane Doe"),
        "nothing was created"
    );
    // With its token, the same form creates the user.
    let mut ok = fields.to_vec();
    ok.push(("csrf", &csrf));
    let created = send(&w.router, post(&path, &cookie, &ok)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let system_page = send(&w.router, get(&created.location, &cookie)).await;
    assert!(system_page.body.contains("Jane Doe"));
    // Sign-out needs the token too, then ends the session.
    let refused = send(&w.router, post("/console/sign-out", &cookie, &[])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = send(
        &w.router,
        post("/console/sign-out", &cookie, &[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(out.location, "/console/sign-in");
    let after = send(&w.router, get("/console/systems", &cookie)).await;
    assert_eq!(after.location, "/console/sign-in");
}

#[tokio::test]
async fn another_workspaces_ids_are_not_found() {
    let w = world().await;
    let (_, token_a) = workspace(&w.app, "Hotel A").await;
    let (ws_b, _) = workspace(&w.app, "Hotel B").await;
    let (cookie, csrf) = sign_in(&w.router, &token_a).await;
    let sys_b = system_named(&w.app, ws_b, "Salto KS").await;
    let user_b = w
        .app
        .create_acs_user(
            ws_b,
            keygate_app::acs_users::CreateAcsUser {
                idem: None,
                acs_system_id: sys_b.id,
                person: keygate_domain::validate::new_user_identity("", "Bob B", "", "")
                    .expect("person"),
                access_starts_at: None,
                access_ends_at: None,
            },
        )
        .await
        .expect("user of B");
    for path in [
        format!("/console/systems/{}", sys_b.id),
        format!("/console/users/{}", user_b.id),
        format!("/console/users/{}/credentials", user_b.id),
        "/console/users/not-an-id".to_owned(),
    ] {
        let r = send(&w.router, get(&path, &cookie)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    for (path, form) in [
        (
            format!("/console/systems/{}/users", sys_b.id),
            vec![("full_name", "Mallory")],
        ),
        (
            format!("/console/users/{}/identity", user_b.id),
            vec![("new", "1"), ("full_name", "Mallory")],
        ),
        (format!("/console/users/{}/groups", user_b.id), vec![]),
        (
            format!("/console/users/{}/credentials", user_b.id),
            vec![("access_method", "mobile_key")],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let r = send(&w.router, post(&path, &cookie, &form)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let still = w.app.get_acs_user(ws_b, user_b.id).await.expect("B's user");
    assert_eq!(still.user_identity_id, None, "B's user was not linked");
}

#[tokio::test]
async fn refusals_show_next_to_their_field_with_the_values_kept() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let s = system_named(&w.app, ws, "Salto KS").await;
    let r = send(
        &w.router,
        post(
            &format!("/console/systems/{}/users", s.id),
            &cookie,
            &[
                ("csrf", &csrf),
                ("full_name", "Jane <b>Doe</b>"),
                ("email_address", "not-an-email"),
                ("starts_at", "2030-01-02T10:00"),
                ("ends_at", "2030-01-01T10:00"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("id=\"f-ends_at-err\""), "{}", r.body);
    assert!(r.body.contains("must be after"));
    assert!(
        r.body.contains("value=\"Jane &lt;b&gt;Doe&lt;/b&gt;\""),
        "kept, escaped"
    );
    assert!(r.body.contains("value=\"2030-01-02T10:00\""));
    assert!(!r.body.contains("<b>Doe</b>"));
    let r = send(
        &w.router,
        post(
            &format!("/console/systems/{}/users", s.id),
            &cookie,
            &[
                ("csrf", &csrf),
                ("full_name", "Jane"),
                ("email_address", "not-an-email"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"f-email_address-err\""), "{}", r.body);
}

#[tokio::test]
async fn seed_000_through_the_forms() {
    let w = world().await;
    let (ws, _) = workspace(&w.app, "Hotel").await;
    // The operator signs in, then picks the workspace in the switcher.
    let (cookie, csrf) = sign_in(&w.router, ADMIN).await;
    let list = send(&w.router, get("/console/workspaces", &cookie)).await;
    assert!(list.body.contains("Hotel") && list.body.contains("sandbox"));
    let picked = send(
        &w.router,
        post(
            "/console/workspaces",
            &cookie,
            &[("csrf", &csrf), ("workspace_id", &ws.to_string())],
        ),
    )
    .await;
    assert_eq!(picked.location, "/console/systems");
    let systems = send(&w.router, get("/console/systems", &cookie)).await;
    let s = system_named(&w.app, ws, "Visionline").await;
    assert!(systems.body.contains(&format!("data-copy=\"{}\"", s.id)));
    // Add user.
    let r = send(
        &w.router,
        post(
            &format!("/console/systems/{}/users", s.id),
            &cookie,
            &[
                ("csrf", &csrf),
                ("full_name", "Jane Doe"),
                ("email_address", "jane@example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let user = w
        .app
        .list_acs_users(
            ws,
            &keygate_domain::acs::AcsUserFilter {
                acs_system_id: Some(s.id),
                user_identity_id: None,
            },
            &page(),
        )
        .await
        .expect("users")
        .items
        .remove(0);
    // A credential before the link is refused, on the page.
    let entrances = w
        .app
        .list_entrances(ws, Some(s.id), &page())
        .await
        .expect("entrances")
        .items;
    let door = entrances[0].id.to_string();
    let cred_path = format!("/console/users/{}/credentials", user.id);
    let early = send(
        &w.router,
        post(
            &cred_path,
            &cookie,
            &[
                ("csrf", &csrf),
                ("access_method", "mobile_key"),
                ("acs_entrance_ids", &door),
            ],
        ),
    )
    .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(early.body.contains("not linked to a user identity"));
    // Link to a new user identity.
    let linked = send(
        &w.router,
        post(
            &format!("/console/users/{}/identity", user.id),
            &cookie,
            &[
                ("csrf", &csrf),
                ("new", "1"),
                ("full_name", "Jane Doe"),
                ("email_address", "jane@example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER, "{}", linked.body);
    let identity = w
        .app
        .get_acs_user(ws, user.id)
        .await
        .expect("user")
        .user_identity_id
        .expect("linked");
    // Add Credential: mobile key on one entrance.
    let done = send(
        &w.router,
        post(
            &cred_path,
            &cookie,
            &[
                ("csrf", &csrf),
                ("access_method", "mobile_key"),
                ("acs_entrance_ids", &door),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Credential created") && done.body.contains(">Done<"));
    // Generate Instant Key: the dialog with the link and its QR code.
    let key = send(
        &w.router,
        post(
            &format!("/console/identities/{identity}/instant-keys"),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(key.status, StatusCode::OK, "{}", key.body);
    assert!(key.body.contains("Instant Key Link"));
    assert!(key.body.contains("value=\"http://keygate.test/ik/"));
    assert!(key.body.contains("src=\"data:image/svg+xml;base64,"));
    let keys = w
        .app
        .list_instant_keys(ws, Some(identity), &page())
        .await
        .expect("keys");
    // The credential's grant has its own key; the generated one is the identity's.
    assert_eq!(
        keys.items
            .iter()
            .filter(|k| k.key.access_grant_id.is_none())
            .count(),
        1
    );
}

#[tokio::test]
async fn revoking_the_key_ends_its_console_sessions() {
    let w = world().await;
    let (ws, _) = workspace(&w.app, "Hotel").await;
    let (key, token) = w
        .app
        .create_api_key(
            ws,
            keygate_app::workspaces::CreateApiKey {
                name: "front desk".into(),
            },
        )
        .await
        .expect("key");
    let (cookie, _) = sign_in(&w.router, &token).await;
    assert_eq!(
        send(&w.router, get("/console/systems", &cookie))
            .await
            .status,
        StatusCode::OK
    );
    w.app.revoke_api_key(ws, key.id).await.expect("revoke");
    let after = send(&w.router, get("/console/systems", &cookie)).await;
    assert_eq!(after.location, "/console/sign-in");
}

#[tokio::test]
async fn an_instant_key_is_revoked_from_the_identity_page() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let jane = person(&w.app, ws, "Jane", "").await;
    let key_of = |ws, id| {
        let app = w.app.clone();
        async move {
            app.generate_instant_key(
                ws,
                keygate_app::instant_keys::GenerateKey {
                    idem: None,
                    user_identity_id: id,
                    max_use_count: 1,
                    expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::days(1)),
                },
            )
            .await
            .expect("key")
            .0
        }
    };
    let k = key_of(ws, jane.identity.id).await;
    let bob = person(&w.app, ws_b, "Bob", "").await;
    let other = key_of(ws_b, bob.identity.id).await;
    let theirs = send(
        &w.router,
        post(
            &format!("/console/instant-keys/{}/revoke", other.key.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let before = send(
        &w.router,
        get(
            &format!("/console/identities/{}", jane.identity.id),
            &cookie,
        ),
    )
    .await;
    assert!(before.body.contains("active"));
    let r = send(
        &w.router,
        post(
            &format!("/console/instant-keys/{}/revoke", k.key.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(
        r.location,
        format!("/console/identities/{}", jane.identity.id)
    );
    let shown = send(&w.router, get(&r.location, &cookie)).await;
    assert!(shown.body.contains("revoked"));
    let again = w
        .app
        .list_instant_keys(ws_b, None, &page())
        .await
        .expect("keys");
    assert!(again.items[0].key.revoked_at.is_none(), "B's key untouched");
}

#[tokio::test]
async fn grants_encoding_and_unlock_through_the_forms() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let jane = person(&w.app, ws, "Jane", "").await;
    let space = system_named(&w.app, ws, "Salto Space").await;
    let room = entrance_named(&w.app, ws, "Salto Space", "Room 101").await;
    // Nothing chosen: the refusal is on the page, the person kept.
    let form = send(&w.router, get("/console/grants/new", &cookie)).await;
    assert_eq!(form.status, StatusCode::OK);
    let who = jane.identity.id.to_string();
    let refused = send(
        &w.router,
        post(
            "/console/grants",
            &cookie,
            &[("csrf", &csrf), ("user_identity_id", &who)],
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("class=\"error\""), "{}", refused.body);
    let created = send(
        &w.router,
        post(
            "/console/grants",
            &cookie,
            &[
                ("csrf", &csrf),
                ("user_identity_id", &who),
                ("acs_entrance_ids", &room.id.to_string()),
                ("mode", "card"),
            ],
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let detail = send(&w.router, get(&created.location, &cookie)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(
        detail
            .body
            .contains("Room 101 · Harbour Hotel (Salto Space)")
    );
    assert!(detail.body.contains("pending") && detail.body.contains("data-live"));
    // Another workspace's grant is 404.
    let others = w
        .app
        .list_access_grants(ws_b, &Default::default(), &page())
        .await
        .expect("grants");
    assert!(others.items.is_empty());
    let grant_id = created.location.rsplit('/').next().expect("id").to_owned();
    let g: keygate_domain::ids::AccessGrantId = grant_id.parse().expect("grant id");
    let g = w.app.get_access_grant(ws, g).await.expect("grant");
    let method = g.access_method_ids[0];
    let encoders = w
        .app
        .list_encoders(ws, Some(space.id), &page())
        .await
        .expect("encoders")
        .items;
    let encoded = send(
        &w.router,
        post(
            &format!("/console/methods/{method}/encode"),
            &cookie,
            &[
                ("csrf", &csrf),
                ("acs_encoder_id", &encoders[0].id.to_string()),
            ],
        ),
    )
    .await;
    // The method is not ready for encoding until the system issued it: the refusal is shown.
    assert_eq!(
        encoded.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        encoded.body
    );
    assert!(encoded.body.contains("role=\"alert\""));
    assert!(encoded.body.contains("Room 101"), "on the grant's page");
    // Remote unlock: a confirmation first, then the attempt.
    let main = entrance_named(&w.app, ws, "Salto KS", "Main Entrance").await;
    let path = format!("/console/entrances/{}/unlock", main.id);
    let confirm = send(&w.router, get(&path, &cookie)).await;
    assert!(confirm.body.contains("Unlock Main Entrance?"));
    let no_token = send(&w.router, post(&path, &cookie, &[])).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let queued = send(&w.router, post(&path, &cookie, &[("csrf", &csrf)])).await;
    assert_eq!(queued.status, StatusCode::SEE_OTHER, "{}", queued.body);
    let attempt = send(&w.router, get(&queued.location, &cookie)).await;
    assert!(attempt.body.contains("Unlocking Main Entrance"));
    // A door that cannot be unlocked remotely is refused on the confirmation page.
    let room_path = format!("/console/entrances/{}/unlock", room.id);
    let refused = send(&w.router, post(&room_path, &cookie, &[("csrf", &csrf)])).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("role=\"alert\""));
    // Another workspace's entrance is 404.
    let ks_b = system_named(&w.app, ws_b, "Salto KS").await;
    let theirs = w
        .app
        .list_entrances(ws_b, Some(ks_b.id), &page())
        .await
        .expect("entrances")
        .items
        .remove(0);
    let r = send(
        &w.router,
        post(
            &format!("/console/entrances/{}/unlock", theirs.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_events_view_shows_the_log_and_refuses_another_workspaces_cursor() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, _) = sign_in(&w.router, &token).await;
    person(&w.app, ws, "Jane", "").await;
    let page = send(&w.router, get("/console/events", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("data-live"),
        "the last page follows the log"
    );
    let b_cursor = keygate_app::events::seal_cursor(&w.app.tokens, ws_b, 1).expect("cursor");
    let r = send(
        &w.router,
        get(&format!("/console/events?after={b_cursor}"), &cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_instant_key_is_sent_and_its_deliveries_show() {
    use keygate_app::instant_keys::{Availability, Route};
    for (email, expect) in [
        (Route::Off, StatusCode::UNPROCESSABLE_ENTITY),
        (Route::Outbox, StatusCode::SEE_OTHER),
    ] {
        let w = world_with(Availability {
            email,
            ..Default::default()
        })
        .await;
        let (ws, token) = workspace(&w.app, "Hotel").await;
        let (cookie, csrf) = sign_in(&w.router, &token).await;
        let jane = person(&w.app, ws, "Jane", "jane@example.com").await;
        let (k, _) = w
            .app
            .generate_instant_key(
                ws,
                keygate_app::instant_keys::GenerateKey {
                    idem: None,
                    user_identity_id: jane.identity.id,
                    max_use_count: 1,
                    expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::days(1)),
                },
            )
            .await
            .expect("key");
        let r = send(
            &w.router,
            post(
                &format!("/console/instant-keys/{}/send", k.key.id),
                &cookie,
                &[("csrf", &csrf), ("channel", "email")],
            ),
        )
        .await;
        assert_eq!(r.status, expect, "{}", r.body);
        if expect == StatusCode::SEE_OTHER {
            let page = send(&w.router, get(&r.location, &cookie)).await;
            assert!(
                page.body.contains("email to jane@example.com"),
                "{}",
                page.body
            );
        } else {
            assert!(r.body.contains("role=\"alert\""));
        }
    }
}

#[tokio::test]
async fn webhooks_are_created_with_their_secret_shown_once_and_refusals_by_field() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let bad = send(
        &w.router,
        post(
            "/console/webhooks",
            &cookie,
            &[("csrf", &csrf), ("url", "http://127.0.0.1/hook")],
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"f-url-err\""), "{}", bad.body);
    assert!(bad.body.contains("value=\"http://127.0.0.1/hook\""));
    let ok = send(
        &w.router,
        post(
            "/console/webhooks",
            &cookie,
            &[
                ("csrf", &csrf),
                ("url", "https://93.184.216.34/hook"),
                ("event_types", "access_grant.created"),
            ],
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("Signing secret"));
    let hooks = w
        .app
        .list_webhooks(ws, &page())
        .await
        .expect("webhooks")
        .items;
    assert_eq!(hooks.len(), 1);
    let detail = send(
        &w.router,
        get(&format!("/console/webhooks/{}", hooks[0].id), &cookie),
    )
    .await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains("Signing secret"), "shown once");
    // Another workspace's webhook: 404, and it is not deleted.
    let (theirs, _) = w
        .app
        .create_webhook(
            ws_b,
            keygate_app::webhooks::CreateWebhook {
                idem: None,
                url: "https://93.184.216.34/other".into(),
                event_types: vec![],
            },
        )
        .await
        .expect("B's webhook");
    let r = send(
        &w.router,
        post(
            &format!("/console/webhooks/{}/delete", theirs.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    w.app
        .get_webhook(ws_b, theirs.id)
        .await
        .expect("still there");
    let gone = send(
        &w.router,
        post(
            &format!("/console/webhooks/{}/delete", hooks[0].id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(gone.location, "/console/webhooks");
}

#[tokio::test]
async fn systems_are_connected_synced_and_disconnected() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let unknown = send(
        &w.router,
        post(
            "/console/systems",
            &cookie,
            &[
                ("csrf", &csrf),
                ("system_type", "no_such_type"),
                ("name", "Mine"),
                ("credentials", "token=very-secret"),
            ],
        ),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.body.contains("role=\"alert\""), "{}", unknown.body);
    assert!(unknown.body.contains("value=\"Mine\""), "kept");
    assert!(
        !unknown.body.contains("very-secret"),
        "credentials are never shown"
    );
    let connected = send(
        &w.router,
        post(
            "/console/systems",
            &cookie,
            &[
                ("csrf", &csrf),
                ("system_type", "virtual_latch"),
                ("name", "Second Lofts"),
            ],
        ),
    )
    .await;
    assert_eq!(
        connected.status,
        StatusCode::SEE_OTHER,
        "{}",
        connected.body
    );
    let page = send(&w.router, get(&connected.location, &cookie)).await;
    assert!(page.body.contains("Second Lofts"));
    let s = system_named(&w.app, ws, "Salto KS").await;
    let synced = send(
        &w.router,
        post(
            &format!("/console/systems/{}/sync", s.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(synced.status, StatusCode::OK, "{}", synced.body);
    assert!(synced.body.contains("Synced:"));
    let theirs = system_named(&w.app, ws_b, "Salto KS").await;
    for action in ["sync", "disconnect"] {
        let r = send(
            &w.router,
            post(
                &format!("/console/systems/{}/{action}", theirs.id),
                &cookie,
                &[("csrf", &csrf), ("confirm", "yes")],
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}");
    }
    let unconfirmed = send(
        &w.router,
        post(
            &format!("/console/systems/{}/disconnect", s.id),
            &cookie,
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let done = send(
        &w.router,
        post(
            &format!("/console/systems/{}/disconnect", s.id),
            &cookie,
            &[("csrf", &csrf), ("confirm", "yes")],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let page = send(&w.router, get(&done.location, &cookie)).await;
    assert!(page.body.contains("Disconnected"));
    let still = w.app.get_access_system(ws_b, theirs.id).await.expect("B's");
    assert!(still.health.disconnected_at.is_none());
}

/// An access grant of `ws` for `who` on `doors`, made through the app as `CreateAccessGrant`
/// makes it (the list filters need grants with keys the console's form does not set).
async fn grant(
    app: &App,
    ws: WorkspaceId,
    who: keygate_domain::ids::UserIdentityId,
    doors: &[&Entrance],
    name: &str,
    reservation_key: &str,
) -> keygate_domain::grant::AccessGrant {
    use keygate_proto::v1;
    use keygate_wire::parse::IntoCommand as _;
    let cmd = v1::CreateAccessGrantRequest {
        request_id: String::new(),
        acs_entrance_ids: doors.iter().map(|e| e.id.to_string()).collect(),
        requested_access_methods: vec![v1::NewRequestedAccessMethod {
            mode: v1::AccessMethodMode::MobileKey as i32,
            code: String::new(),
        }],
        starts_at: None,
        ends_at: Some(keygate_wire::convert::ts(
            time::OffsetDateTime::now_utc() + time::Duration::days(30),
        )),
        access_grant_key: String::new(),
        name: name.to_owned(),
        reservation_key: reservation_key.to_owned(),
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentityId(
            who.to_string(),
        )),
    }
    .into_command()
    .expect("a valid request");
    app.create_access_grant(ws, cmd).await.expect("grant")
}

/// How many rows the grants list shows.
fn grant_rows(body: &str) -> usize {
    body.matches("data-label=\"Name\"").count()
}

/// The `href` of the page's "Next page" link, unescaped.
fn next_link(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\"")?;
    let start = body[..at].rfind("href=\"")? + "href=\"".len();
    Some(body[start..].split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test]
async fn the_grant_list_filters_pages_and_refuses_bad_or_foreign_filters() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, _) = sign_in(&w.router, &token).await;
    let jane = person(&w.app, ws, "Jane", "").await;
    let bob = person(&w.app, ws, "Bob", "").await;
    let room = entrance_named(&w.app, ws, "Salto Space", "Room 101").await;
    let main = entrance_named(&w.app, ws, "Salto KS", "Main Entrance").await;
    let ks = system_named(&w.app, ws, "Salto KS").await;
    for i in 0..51 {
        grant(
            &w.app,
            ws,
            jane.identity.id,
            &[&room],
            &format!("Jane {i:02}"),
            "",
        )
        .await;
    }
    grant(&w.app, ws, bob.identity.id, &[&main], "Bob main", "res-42").await;
    let list = |q: String| {
        let r = w.router.clone();
        let cookie = cookie.clone();
        async move { send(&r, get(&format!("/console/grants?{q}"), &cookie)).await }
    };
    // Unfiltered: the first page of 50, with a next page.
    let all = list(String::new()).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(grant_rows(&all.body), 50);
    // By person, system, entrance, reservation key: the form keeps what was chosen.
    let bobs = list(format!("user_identity_id={}", bob.identity.id)).await;
    assert_eq!(grant_rows(&bobs.body), 1);
    assert!(bobs.body.contains("Bob main"));
    assert!(bobs.body.contains(&format!(
        "<option value=\"{}\" selected>Bob</option>",
        bob.identity.id
    )));
    let on_ks = list(format!("acs_system_id={}", ks.id)).await;
    assert_eq!(grant_rows(&on_ks.body), 1);
    assert!(on_ks.body.contains("Bob main"));
    let reserved = list("reservation_key=res-42".into()).await;
    assert_eq!(grant_rows(&reserved.body), 1);
    assert!(reserved.body.contains("value=\"res-42\""));
    let none = list("reservation_key=res-43".into()).await;
    assert_eq!(grant_rows(&none.body), 0);
    assert!(none.body.contains("No access grant matches."));
    // Jane's 51 grants at Room 101: two pages, the filter carried by the next-page link.
    let first = list(format!(
        "user_identity_id={}&acs_entrance_id={}",
        jane.identity.id, room.id
    ))
    .await;
    assert_eq!(grant_rows(&first.body), 50);
    let next = next_link(&first.body).expect("a next page");
    assert!(next.contains(&jane.identity.id.to_string()), "{next}");
    let second = send(&w.router, get(&next, &cookie)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(grant_rows(&second.body), 1);
    assert!(next_link(&second.body).is_none());
    // A page token is bound to its filter: with another filter it is refused (422).
    let token_only = next.split("page=").nth(1).expect("a page token");
    let swapped = list(format!(
        "user_identity_id={}&page={token_only}",
        bob.identity.id
    ))
    .await;
    assert_eq!(swapped.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(swapped.body.contains("role=\"alert\""));
    // Bad values: 422 with the message next to the field, the value kept.
    let bad = list("user_identity_id=not-an-id&reservation_key=%01".into()).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("id=\"q-user_identity_id-err\""));
    assert!(bad.body.contains("is not a valid id"));
    assert!(bad.body.contains("<option value=\"not-an-id\" selected>"));
    assert!(bad.body.contains("id=\"q-reservation_key-err\""));
    assert!(bad.body.contains("control characters"));
    assert_eq!(grant_rows(&bad.body), 0);
    // Another workspace's ids: 404, as for a page's own id.
    let bob_b = person(&w.app, ws_b, "Bob B", "").await;
    let ks_b = system_named(&w.app, ws_b, "Salto KS").await;
    let main_b = entrance_named(&w.app, ws_b, "Salto KS", "Main Entrance").await;
    for q in [
        format!("user_identity_id={}", bob_b.identity.id),
        format!("acs_system_id={}", ks_b.id),
        format!("acs_entrance_id={}", main_b.id),
    ] {
        assert_eq!(list(q.clone()).await.status, StatusCode::NOT_FOUND, "{q}");
    }
}

#[tokio::test]
async fn a_grant_is_updated_and_deleted_through_the_forms() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, csrf) = sign_in(&w.router, &token).await;
    let jane = person(&w.app, ws, "Jane", "").await;
    let room = entrance_named(&w.app, ws, "Salto Space", "Room 101").await;
    let main = entrance_named(&w.app, ws, "Salto KS", "Main Entrance").await;
    let g = grant(&w.app, ws, jane.identity.id, &[&room], "Jane's stay", "").await;
    let edit = format!("/console/grants/{}/edit", g.id);
    let form = send(&w.router, get(&edit, &cookie)).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body.contains("value=\"Jane&#39;s stay\"")
            || form.body.contains("value=\"Jane's stay\"")
    );
    let checked = format!("value=\"{}\" checked", room.id);
    assert!(form.body.contains(&checked), "the grant's door is checked");
    let room_id = room.id.to_string();
    let main_id = main.id.to_string();
    // Without the CSRF token: refused, nothing changed.
    let no_token = send(
        &w.router,
        post(
            &edit,
            &cookie,
            &[("name", "Mallory"), ("acs_entrance_ids", &room_id)],
        ),
    )
    .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    // The app's refusal: next to its field, everything typed kept.
    let refused = send(
        &w.router,
        post(
            &edit,
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "Renamed <b>stay</b>"),
                ("acs_entrance_ids", &room_id),
                ("acs_entrance_ids", &main_id),
                ("ends_at", "2020-01-01T10:00"),
            ],
        ),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("must be after starts_at"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("value=\"2020-01-01T10:00\""));
    assert!(
        refused
            .body
            .contains("value=\"Renamed &lt;b&gt;stay&lt;/b&gt;\"")
    );
    assert!(
        refused
            .body
            .contains(&format!("value=\"{main_id}\" checked"))
    );
    let bad_time = send(
        &w.router,
        post(
            &edit,
            &cookie,
            &[
                ("csrf", &csrf),
                ("acs_entrance_ids", &room_id),
                ("starts_at", "tomorrow"),
            ],
        ),
    )
    .await;
    assert_eq!(bad_time.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_time.body.contains("is not a date and time"));
    let unchanged = w.app.get_access_grant(ws, g.id).await.expect("grant");
    assert_eq!(unchanged.name, "Jane's stay");
    assert_eq!(unchanged.ends_at, g.ends_at);
    // Name, a door added, a new end: saved, back on the grant's page.
    let saved = send(
        &w.router,
        post(
            &edit,
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "Jane, week 2"),
                ("acs_entrance_ids", &room_id),
                ("acs_entrance_ids", &main_id),
                ("starts_at", &hidden_value(&form.body, "starts_at")),
                ("ends_at", "2099-06-01T12:00"),
            ],
        ),
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location, format!("/console/grants/{}", g.id));
    let after = w.app.get_access_grant(ws, g.id).await.expect("grant");
    assert_eq!(after.name, "Jane, week 2");
    assert_eq!(
        after.starts_at, g.starts_at,
        "an unchanged start is not sent"
    );
    let june = time::Date::from_calendar_date(2099, time::Month::June, 1)
        .expect("a date")
        .with_hms(12, 0, 0)
        .expect("a time")
        .assume_utc();
    assert_eq!(after.ends_at, Some(june), "2099-06-01T12:00 read as UTC");
    assert!(after.entrance_ids.contains(&main.id) && after.entrance_ids.contains(&room.id));
    // Emptying the end clears it.
    let cleared = send(
        &w.router,
        post(
            &edit,
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "Jane, week 2"),
                ("acs_entrance_ids", &room_id),
                ("acs_entrance_ids", &main_id),
            ],
        ),
    )
    .await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    assert_eq!(
        w.app
            .get_access_grant(ws, g.id)
            .await
            .expect("grant")
            .ends_at,
        None
    );
    // Another workspace's grant: 404 on every page and form.
    let bob_b = person(&w.app, ws_b, "Bob", "").await;
    let room_b = entrance_named(&w.app, ws_b, "Salto Space", "Room 101").await;
    let theirs = grant(&w.app, ws_b, bob_b.identity.id, &[&room_b], "B's", "").await;
    for path in [
        format!("/console/grants/{}/edit", theirs.id),
        format!("/console/grants/{}/delete", theirs.id),
    ] {
        assert_eq!(
            send(&w.router, get(&path, &cookie)).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let r = send(
            &w.router,
            post(&path, &cookie, &[("csrf", &csrf), ("name", "x")]),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let still = w
        .app
        .get_access_grant(ws_b, theirs.id)
        .await
        .expect("B's grant");
    assert_eq!(still.name, "B's");
    // Delete: a confirmation first; without the token refused; then gone.
    let delete = format!("/console/grants/{}/delete", g.id);
    let confirm = send(&w.router, get(&delete, &cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Delete Jane, week 2?"));
    let refused = send(&w.router, post(&delete, &cookie, &[])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        w.app.get_access_grant(ws, g.id).await.is_ok(),
        "not deleted"
    );
    let deleted = send(&w.router, post(&delete, &cookie, &[("csrf", &csrf)])).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let list = send(&w.router, get(&deleted.location, &cookie)).await;
    assert!(list.body.contains("The access grant was deleted"));
    assert!(!list.body.contains("Jane, week 2"));
    assert!(matches!(
        w.app.get_access_grant(ws, g.id).await,
        Err(keygate_domain::Error::NotFound { .. })
    ));
    let gone = send(
        &w.router,
        get(&format!("/console/grants/{}", g.id), &cookie),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

/// The value of the input `name` of a page (not only hidden ones).
fn hidden_value(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    body.find(&marker)
        .map(|at| {
            body[at + marker.len()..]
                .split('"')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_events_view_filters_by_type_grant_person_place_and_time() {
    let w = world().await;
    let (ws, token) = workspace(&w.app, "Hotel").await;
    let (ws_b, _) = workspace(&w.app, "Other").await;
    let (cookie, _) = sign_in(&w.router, &token).await;
    let jane = person(&w.app, ws, "Jane", "").await;
    let room = entrance_named(&w.app, ws, "Salto Space", "Room 101").await;
    let g1 = grant(&w.app, ws, jane.identity.id, &[&room], "One", "").await;
    let g2 = grant(&w.app, ws, jane.identity.id, &[&room], "Two", "").await;
    let events = |q: String| {
        let r = w.router.clone();
        let cookie = cookie.clone();
        async move { send(&r, get(&format!("/console/events?{q}"), &cookie)).await }
    };
    let code = |t: &str| format!("<code>{t}</code>");
    let all = events(String::new()).await;
    assert!(all.body.contains(&code("access_grant.created")));
    assert!(
        all.body.contains(&code("access_method.created")),
        "{}",
        all.body
    );
    // By type: only that type, chosen in the form, the live follow kept.
    let created = events("event_types=access_grant.created".into()).await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(
        created.body.matches(&code("access_grant.created")).count(),
        2
    );
    assert!(!created.body.contains(&code("access_method.created")));
    assert!(
        created
            .body
            .contains("<option value=\"access_grant.created\" selected")
    );
    assert!(
        created.body.contains("data-live"),
        "the filtered log follows live"
    );
    // By grant: only its events.
    let one = events(format!("access_grant_id={}", g1.id)).await;
    assert!(one.body.contains(&format!("/console/grants/{}", g1.id)));
    assert!(!one.body.contains(&format!("/console/grants/{}", g2.id)));
    // By access method: its events only, and not the other grant's.
    let m1 = g1.access_method_ids[0];
    let by_method = events(format!("access_method_id={m1}")).await;
    assert_eq!(by_method.status, StatusCode::OK);
    assert!(by_method.body.contains(&code("access_method.created")));
    assert!(
        !by_method
            .body
            .contains(&format!("/console/grants/{}", g2.id))
    );
    // By person: Jane's grants' events; nobody else's.
    let janes = events(format!(
        "user_identity_id={}&event_types=access_grant.created",
        jane.identity.id
    ))
    .await;
    assert_eq!(janes.body.matches(&code("access_grant.created")).count(), 2);
    let someone = person(&w.app, ws, "Someone", "").await;
    let quiet = events(format!("user_identity_id={}", someone.identity.id)).await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert!(!quiet.body.contains("<code>"));
    // By time: nothing before 2000; everything after.
    let before = events("occurred_before=2000-01-01T00:00".into()).await;
    assert!(!before.body.contains("<code>"), "{}", before.body);
    let since =
        events("occurred_after=2000-01-01T00:00&event_types=access_grant.created".into()).await;
    assert_eq!(since.body.matches(&code("access_grant.created")).count(), 2);
    // Bad values: 422 with the message next to the field, the values kept.
    let bad = events("event_types=door.opened&occurred_after=tomorrow".into()).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("is not a date and time"));
    assert!(bad.body.contains("value=\"tomorrow\""));
    let bad = events("event_types=door.opened".into()).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("unknown event type"));
    assert!(bad.body.contains("<option value=\"door.opened\" selected"));
    let bad = events("access_grant_id=nope".into()).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"q-access_grant_id\""));
    assert!(bad.body.contains("is not a valid id"));
    let bad = events("acs_entrance_id=nope".into()).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"q-acs_entrance_id-err\""));
    assert!(bad.body.contains("<option value=\"nope\" selected>"));
    // Another workspace's grant: 404.
    let bob = person(&w.app, ws_b, "Bob", "").await;
    let room_b = entrance_named(&w.app, ws_b, "Salto Space", "Room 101").await;
    let theirs = grant(&w.app, ws_b, bob.identity.id, &[&room_b], "B", "").await;
    let ks_b = system_named(&w.app, ws_b, "Salto KS").await;
    for q in [
        format!("access_grant_id={}", theirs.id),
        format!("user_identity_id={}", bob.identity.id),
        format!("acs_system_id={}", ks_b.id),
        format!("acs_entrance_id={}", room_b.id),
        format!("access_method_id={}", theirs.access_method_ids[0]),
    ] {
        assert_eq!(events(q.clone()).await.status, StatusCode::NOT_FOUND, "{q}");
    }
}
