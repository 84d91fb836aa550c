//! The Seam-compatible API in process: the router over a real store (embedded SQLite, and
//! PostgreSQL from `KEYGATE_TEST_DATABASE_URL` for tenancy), called as Seam's SDKs call it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use keygate_app::App;
use keygate_app::auth::Authenticator;
use keygate_app::throttle::{AuthFailureLimiter, Limiters, RateLimiter};
use keygate_app::tokens::{PageTokens, seam_api_key};
use keygate_app::tracker::Tracker;
use keygate_app::workspaces::CreateWorkspace;
use keygate_cache::{Cache, InProcessCache};
use keygate_domain::instant_key::Links;
use keygate_domain::model::WorkspaceType;
use keygate_seam_api::{SeamApi, router};
use keygate_store::testdb::TestDb;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Harness {
    app: App,
    router: axum::Router,
    db: TestDb,
}

fn harness(db: TestDb, rate: RateLimiter) -> Harness {
    harness_with(db, rate, Default::default())
}

/// A harness whose webhooks may point at this network (loopback, for a test URL).
fn harness_with(db: TestDb, rate: RateLimiter, net: keygate_app::ssrf::NetworkPolicy) -> Harness {
    let store = db.store.clone();
    let cache: Arc<dyn Cache> = Arc::new(InProcessCache::new(1_000));
    let tracker = Tracker::in_process(store.clone(), cache.clone());
    let links = Links::new("http://keygate.test");
    links.set_secret(vec![5; 32]);
    let mut providers = keygate_providers::Registry::new();
    providers.register(Arc::new(
        keygate_providers::virtual_system::VirtualSystems::new(Duration::ZERO),
    ));
    let mut app = App::new(
        store.clone(),
        tracker,
        links,
        PageTokens::new(vec![6; 32]),
        providers,
    );
    app.webhook_network = net;
    let router = router(SeamApi {
        app: app.clone(),
        auth: Authenticator::new(store, cache, None),
        limiters: Limiters {
            rate: Arc::new(rate),
            auth_failures: Arc::new(AuthFailureLimiter::new(0)),
        },
    });
    Harness { app, router, db }
}

fn plenty() -> RateLimiter {
    RateLimiter::new(1000.0, 1000)
}

/// A sandbox workspace: its key in the `seam_` form and in the `kg_` form.
async fn workspace(app: &App, name: &str) -> (String, String) {
    let (_, _, token) = app
        .create_workspace(CreateWorkspace {
            name: name.into(),
            workspace_type: WorkspaceType::Sandbox,
            api_key_name: None,
        })
        .await
        .expect("workspace");
    (seam_api_key(&token, true).expect("seam form"), token)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn call(h: &Harness, method: Method, path: &str, key: Option<&str>, body: Value) -> Reply {
    call_with(h, method, path, key, body, None).await
}

async fn call_with(
    h: &Harness,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Value,
    idempotency_key: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(format!("/seam/{path}"))
        .header("host", "keygate.test");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let body = if method == Method::GET || method == Method::DELETE {
        Body::empty()
    } else {
        req = req.header("content-type", "application/json");
        Body::from(body.to_string())
    };
    let resp = h
        .router
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).expect("every reply is JSON");
    assert!(
        headers.contains_key("seam-request-id"),
        "every reply carries seam-request-id"
    );
    Reply {
        status,
        headers,
        body,
    }
}

impl Harness {
    /// A call with `key`, as `method`.
    async fn send(&self, method: Method, key: &str, path: &str, body: Value) -> Reply {
        call(self, method, path, Some(key), body).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> Reply {
        self.send(Method::POST, key, path, body).await
    }

    /// A GET; its parameters in the query string of `path`.
    async fn get(&self, key: &str, path: &str) -> Reply {
        self.send(Method::GET, key, path, json!({})).await
    }

    /// A DELETE; its parameters in the query string of `path`.
    async fn delete(&self, key: &str, path: &str) -> Reply {
        self.send(Method::DELETE, key, path, json!({})).await
    }
}

fn ok(r: &Reply) -> &Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["ok"], true);
    &r.body
}

fn error_type(r: &Reply) -> &str {
    assert_eq!(r.body["ok"], false, "{}", r.body);
    assert_eq!(
        r.body["error"]["request_id"].as_str(),
        r.headers
            .get("seam-request-id")
            .and_then(|v| v.to_str().ok())
    );
    r.body["error"]["type"].as_str().unwrap_or_default()
}

/// The id of the workspace's sandbox system of `external_type`.
async fn system_of_type(h: &Harness, key: &str, external_type: &str) -> String {
    let systems = h.get(key, "acs/systems/list").await;
    ok(&systems)["acs_systems"]
        .as_array()
        .expect("systems")
        .iter()
        .find(|s| s["external_type"] == external_type)
        .unwrap_or_else(|| panic!("the sandbox has a {external_type} system"))["acs_system_id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The Salto Space system of the workspace and its first two entrances.
async fn salto(h: &Harness, key: &str) -> (String, Vec<String>) {
    let system = system_of_type(h, key, "salto_space_system").await;
    let entrances = h
        .get(
            key,
            &format!("acs/entrances/list?acs_system_id={system}&_strict=true"),
        )
        .await;
    let ids = ok(&entrances)["acs_entrances"]
        .as_array()
        .expect("entrances")
        .iter()
        .map(|e| e["acs_entrance_id"].as_str().expect("id").to_owned())
        .collect();
    (system, ids)
}

fn grant_body(entrances: &[String]) -> Value {
    json!({
        "user_identity": {"full_name": "Jane Doe", "email_address": "jane.doe@example.com"},
        "acs_entrance_ids": [entrances[0], entrances[1]],
        "requested_access_methods": [{"mode": "card"}, {"mode": "mobile_key"}],
        "starts_at": "2099-08-01T15:00:00.000Z",
        "ends_at": "2099-08-04T11:00:00.000Z",
    })
}

#[tokio::test]
async fn keys_routes_and_verbs() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (seam_key, kg_key) = workspace(&h.app, "Keys").await;

    let r = call(&h, Method::GET, "workspaces/get", None, json!({})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&r), "missing_credentials");
    let wrong = format!("{}AAAA", &seam_key[..seam_key.len() - 4]);
    let r = h.get(&wrong, "workspaces/get").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&r), "invalid_api_key");

    for key in [&seam_key, &kg_key] {
        let r = call(&h, Method::GET, "workspaces/get", Some(key), json!({})).await;
        assert_eq!(ok(&r)["workspace"]["is_sandbox"], true);
        assert_eq!(r.body["workspace"]["name"], "Keys");
    }

    let r = h.post(&seam_key, "devices/list", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&r), "route_not_found");
    let r = h.delete(&seam_key, "workspaces/get").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // POST is every route's verb; the alternative is the documented one.
    let r = h.post(&seam_key, "workspaces/get", json!({})).await;
    ok(&r);
}

#[tokio::test]
async fn query_strings_strict_mode_and_paging() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Paging").await;
    let (system, all) = salto(&h, &key).await;
    assert!(all.len() >= 3);

    // Unknown parameters are refused under _strict, per field; ignored without it.
    let r = h
        .get(
            &key,
            &format!("acs/entrances/list?acs_system_id={system}&colour=blue&_strict=true"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["colour"]["_errors"][0].is_string());
    let r = h
        .get(
            &key,
            &format!("acs/entrances/list?acs_system_id={system}&colour=blue"),
        )
        .await;
    ok(&r);

    // Values are coerced per schema: limit is a number.
    let r = h
        .get(
            &key,
            &format!("acs/entrances/list?acs_system_id={system}&limit=many"),
        )
        .await;
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["limit"].is_object());

    // Pages of two, followed by next_page_url, then by next_page_cursor in a POST body.
    let mut seen = Vec::new();
    let mut path = format!("acs/entrances/list?acs_system_id={system}&limit=2&_strict=true");
    loop {
        let r = h.get(&key, &path).await;
        let body = ok(&r);
        let page = body["acs_entrances"].as_array().expect("page");
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|e| e["acs_entrance_id"].clone()));
        let p = &body["pagination"];
        if p["has_next_page"] == false {
            assert!(p["next_page_cursor"].is_null() && p["next_page_url"].is_null());
            break;
        }
        let url = p["next_page_url"].as_str().expect("next_page_url");
        let cursor = p["next_page_cursor"].as_str().expect("cursor");
        assert!(url.starts_with("http://keygate.test/seam/acs/entrances/list?"));
        assert!(url.contains("page_cursor="));
        // The same page through POST and the cursor.
        let again = h
            .post(
                &key,
                "acs/entrances/list",
                json!({"acs_system_id": system, "limit": 2, "page_cursor": cursor}),
            )
            .await;
        let next = h
            .get(&key, url.trim_start_matches("http://keygate.test/seam/"))
            .await;
        assert_eq!(ok(&again)["acs_entrances"], ok(&next)["acs_entrances"]);
        path = url
            .trim_start_matches("http://keygate.test/seam/")
            .to_owned();
    }
    assert_eq!(seen.len(), all.len(), "every entrance once");

    // A cursor of another listing is refused as invalid input on page_cursor.
    let r = h
        .post(
            &key,
            "access_grants/list",
            json!({"page_cursor": "bm90IGEgY3Vyc29y"}),
        )
        .await;
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["page_cursor"].is_object());
}

#[tokio::test]
async fn the_grant_lifecycle_through_every_verb() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Grants").await;
    let (_, entrances) = salto(&h, &key).await;

    let r = h
        .post(&key, "access_grants/create", grant_body(&entrances))
        .await;
    let g = ok(&r)["access_grant"].clone();
    let id = g["access_grant_id"].as_str().expect("id").to_owned();
    assert_eq!(g["requested_access_methods"][0]["mode"], "card");
    assert_eq!(g["requested_access_methods"][1]["mode"], "mobile_key");
    assert_eq!(g["starts_at"], "2099-08-01T15:00:00Z");
    assert!(
        g["instant_key_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://keygate.test/"))
    );
    let card = g["requested_access_methods"][0]["created_access_method_ids"][0]
        .as_str()
        .expect("card")
        .to_owned();

    let r = h
        .get(&key, &format!("access_grants/get?access_grant_id={id}"))
        .await;
    assert_eq!(ok(&r)["access_grant"]["access_grant_id"], id.as_str());
    let r = h
        .get(
            &key,
            &format!("access_methods/get?access_method_id={card}&_strict=true"),
        )
        .await;
    let m = &ok(&r)["access_method"];
    assert_eq!(m["mode"], "card");
    assert!(m["is_encoding_required"].is_boolean());
    assert!(m.get("is_card_encoding_required").is_none(), "Seam's name");
    let r = h
        .get(&key, &format!("access_methods/list?access_grant_id={id}"))
        .await;
    assert_eq!(ok(&r)["access_methods"].as_array().map(Vec::len), Some(2));

    // PATCH with JSON: a new name and no end.
    let r = h
        .send(
            Method::PATCH,
            &key,
            "access_grants/update",
            json!({"access_grant_id": id, "name": "Jane's stay", "ends_at": null}),
        )
        .await;
    ok(&r);
    let r = h
        .post(&key, "access_grants/get", json!({"access_grant_id": id}))
        .await;
    assert_eq!(ok(&r)["access_grant"]["name"], "Jane's stay");
    assert!(r.body["access_grant"]["ends_at"].is_null());

    let r = h
        .get(
            &key,
            &format!("events/list?access_grant_id={id}&event_types=access_grant.created"),
        )
        .await;
    let events = ok(&r)["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["access_grant_ids"][0], id.as_str());
    let event_id = events[0]["event_id"].as_str().expect("event id");
    let r = h
        .get(&key, &format!("events/get?event_id={event_id}"))
        .await;
    assert_eq!(ok(&r)["event"]["event_type"], "access_grant.created");

    // DELETE with a query string; then the grant is gone.
    let r = h
        .delete(&key, &format!("access_grants/delete?access_grant_id={id}"))
        .await;
    ok(&r);
    let r = h
        .get(&key, &format!("access_grants/get?access_grant_id={id}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&r), "access_grant_not_found");
}

#[tokio::test]
async fn bad_input_names_its_fields() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Input").await;
    let (_, entrances) = salto(&h, &key).await;
    let r = h
        .post(
            &key,
            "access_grants/create",
            json!({
                "user_identity": {"full_name": "Jane Doe", "phone_number": "not a phone"},
                "acs_entrance_ids": [entrances[0]],
                "requested_access_methods": [],
                "starts_at": "next tuesday",
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["starts_at"]["_errors"][0].is_string());

    let r = h
        .post(
            &key,
            "access_grants/create",
            json!({
                "user_identity": {"full_name": "Jane Doe"},
                "acs_entrance_ids": [entrances[0]],
                "requested_access_methods": [],
            }),
        )
        .await;
    assert_eq!(error_type(&r), "invalid_input");
    let v = &r.body["error"]["validation_errors"];
    assert!(
        v["requested_access_methods"]["_errors"][0].is_string(),
        "{v}"
    );

    let r = h
        .post(
            &key,
            "access_grants/create",
            json!({"acs_entrance_ids": "not a list"}),
        )
        .await;
    assert!(r.body["error"]["validation_errors"]["acs_entrance_ids"].is_object());

    let r = h.post(&key, "access_grants/get", json!({})).await;
    assert!(r.body["error"]["validation_errors"]["access_grant_id"].is_object());
}

#[tokio::test]
async fn idempotency_key_replays_a_create() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Replays").await;
    let (_, entrances) = salto(&h, &key).await;
    let body = grant_body(&entrances);
    let first = call_with(
        &h,
        Method::POST,
        "access_grants/create",
        Some(&key),
        body.clone(),
        Some("create-jane-1"),
    )
    .await;
    let again = call_with(
        &h,
        Method::POST,
        "access_grants/create",
        Some(&key),
        body,
        Some("create-jane-1"),
    )
    .await;
    assert_eq!(
        ok(&first)["access_grant"]["access_grant_id"],
        ok(&again)["access_grant"]["access_grant_id"]
    );
    let mut other = grant_body(&entrances);
    other["requested_access_methods"] = json!([{"mode": "card"}]);
    let r = call_with(
        &h,
        Method::POST,
        "access_grants/create",
        Some(&key),
        other,
        Some("create-jane-1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(error_type(&r), "idempotency_key_reused");
    let long = "k".repeat(1000);
    let r = call_with(
        &h,
        Method::POST,
        "access_grants/create",
        Some(&key),
        grant_body(&entrances),
        Some(&long),
    )
    .await;
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["Idempotency-Key"].is_object());
}

#[tokio::test]
async fn the_workspace_rate_limit_says_when_to_retry() {
    let h = harness(TestDb::sqlite().await, RateLimiter::new(0.5, 2));
    let (key, _) = workspace(&h.app, "Busy").await;
    ok(&h.get(&key, "workspaces/get").await);
    ok(&h.get(&key, "workspaces/get").await);
    let r = h.get(&key, "workspaces/get").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_type(&r), "rate_limited");
    let after: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&after), "{after}");
}

/// Tenancy on PostgreSQL: another workspace's ids are 404 `*_not_found`, never data.
#[tokio::test]
async fn another_workspaces_ids_are_not_found() {
    let h = harness(TestDb::postgres().await, plenty());
    let (a, _) = workspace(&h.app, "Tenant A").await;
    let (b, _) = workspace(&h.app, "Tenant B").await;
    let (b_system, b_entrances) = salto(&h, &b).await;
    let r = h
        .post(&b, "access_grants/create", grant_body(&b_entrances))
        .await;
    let g = ok(&r)["access_grant"].clone();
    let grant = g["access_grant_id"].as_str().expect("id");
    let method = g["access_method_ids"][0].as_str().expect("method");
    let identity = g["user_identity_id"].as_str().expect("identity");

    for (path, kind) in [
        (
            format!("access_grants/get?access_grant_id={grant}"),
            "access_grant_not_found",
        ),
        (
            format!("access_methods/get?access_method_id={method}"),
            "access_method_not_found",
        ),
        (
            format!("acs/systems/get?acs_system_id={b_system}"),
            "acs_system_not_found",
        ),
        (
            format!("acs/entrances/get?acs_entrance_id={}", b_entrances[0]),
            "acs_entrance_not_found",
        ),
        (
            format!("user_identities/get?user_identity_id={identity}"),
            "user_identity_not_found",
        ),
    ] {
        let r = h.get(&a, &path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert_eq!(error_type(&r), kind, "{path}");
    }
    let r = h
        .delete(&a, &format!("access_grants/delete?access_grant_id={grant}"))
        .await;
    assert_eq!(error_type(&r), "access_grant_not_found");
    // A's grant on B's entrances is refused the same way.
    let r = h
        .post(&a, "access_grants/create", grant_body(&b_entrances))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(error_type(&r), "acs_entrance_not_found");
    // A's lists hold nothing of B's.
    let r = h.get(&a, "access_grants/list").await;
    assert_eq!(ok(&r)["access_grants"], json!([]));
    let r = h
        .get(&a, &format!("events/list?access_grant_id={grant}"))
        .await;
    assert_eq!(ok(&r)["events"], json!([]));
    // B still sees its grant.
    let r = h
        .get(&b, &format!("access_grants/get?access_grant_id={grant}"))
        .await;
    ok(&r);
}

/// Seed 000's console flow through Seam's routes: an access system user, its group, a
/// credential for its linked identity, then deleted.
#[tokio::test]
async fn acs_users_groups_and_credentials() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Console").await;
    let system = system_of_type(&h, &key, "salto_ks_site").await;
    let r = h
        .get(
            &key,
            &format!("acs/access_groups/list?acs_system_id={}", system),
        )
        .await;
    let group = ok(&r)["acs_access_groups"][0]["acs_access_group_id"].clone();
    let r = h
        .post(
            &key,
            "acs/users/create",
            json!({"acs_system_id": system, "full_name": "Jane Doe", "email": "jane@example.com",
               "access_schedule": {"starts_at": "2099-01-01T00:00:00Z", "ends_at": null}}),
        )
        .await;
    let user = ok(&r)["acs_user"].clone();
    assert_eq!(user["email_address"], "jane@example.com");
    assert_eq!(user["access_schedule"]["starts_at"], "2099-01-01T00:00:00Z");
    let user_id = user["acs_user_id"].clone();

    let r = h
        .send(
            Method::PUT,
            &key,
            "acs/users/add_to_access_group",
            json!({"acs_user_id": user_id, "acs_access_group_id": group}),
        )
        .await;
    ok(&r);
    // A credential is issued to a person: the user must be linked to an identity first.
    let r = h
        .post(
            &key,
            "acs/credentials/create",
            json!({"acs_user_id": user_id, "access_method": "mobile_key"}),
        )
        .await;
    assert_eq!(error_type(&r), "acs_user_not_linked");
    let r = h
        .post(
            &key,
            "user_identities/create",
            json!({"full_name": "Jane Doe", "email_address": "jane@example.com"}),
        )
        .await;
    let identity = ok(&r)["user_identity"]["user_identity_id"].clone();
    let r = h
        .send(
            Method::PUT,
            &key,
            "user_identities/add_acs_user",
            json!({"acs_user_id": user_id, "user_identity_id": identity}),
        )
        .await;
    ok(&r);
    let r = h
        .post(
            &key,
            "acs/credentials/create",
            json!({"acs_user_id": user_id, "access_method": "mobile_key"}),
        )
        .await;
    let credential = ok(&r)["acs_credential"].clone();
    assert_eq!(credential["access_method"], "mobile_key");
    let r = h
        .get(
            &key,
            &format!(
                "acs/credentials/list?acs_user_id={}&_strict=true",
                user_id.as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(
        ok(&r)["acs_credentials"][0]["acs_credential_id"],
        credential["acs_credential_id"]
    );
    let r = h
        .delete(
            &key,
            &format!(
                "acs/credentials/delete?acs_credential_id={}",
                credential["acs_credential_id"].as_str().expect("id")
            ),
        )
        .await;
    ok(&r);
    let r = h
        .delete(
            &key,
            &format!(
                "acs/access_groups/remove_user?acs_user_id={}&acs_access_group_id={}",
                user_id.as_str().expect("id"),
                group.as_str().expect("id")
            ),
        )
        .await;
    ok(&r);
    let r = h
        .delete(
            &key,
            &format!(
                "acs/users/delete?acs_user_id={}",
                user_id.as_str().expect("id")
            ),
        )
        .await;
    ok(&r);
    let r = h
        .post(&key, "acs/users/get", json!({"acs_user_id": user_id}))
        .await;
    assert_eq!(error_type(&r), "acs_user_not_found");
}

/// Whatever goes wrong, the reply is Seam's envelope with a request id: a body too large to
/// read, a body that is not JSON.
#[tokio::test]
async fn unreadable_bodies_get_the_envelope() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Bodies").await;
    for (body, status) in [
        (vec![b' '; 3 << 20], StatusCode::PAYLOAD_TOO_LARGE),
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/seam/access_grants/list")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        let resp = h.router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), status);
        assert!(resp.headers().contains_key("seam-request-id"));
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["type"], "invalid_input");
    }
}

/// A client that keeps sending wrong keys is refused before its key is read, good key or not.
#[tokio::test]
async fn failed_authentications_are_limited_per_client() {
    let mut h = harness(TestDb::sqlite().await, plenty());
    h.router = router(SeamApi {
        app: h.app.clone(),
        auth: Authenticator::new(h.db.store.clone(), Arc::new(InProcessCache::new(100)), None),
        limiters: Limiters {
            rate: Arc::new(plenty()),
            auth_failures: Arc::new(AuthFailureLimiter::new(3)),
        },
    });
    let (key, _) = workspace(&h.app, "Guessed").await;
    let wrong = format!("{}AAAA", &key[..key.len() - 4]);
    let from = |ip: &str, k: &str| {
        let mut req = Request::builder()
            .uri("/seam/workspaces/get")
            .header("authorization", format!("Bearer {k}"))
            .body(Body::empty())
            .expect("request");
        req.extensions_mut()
            .insert(keygate_app::throttle::ClientAddr(ip.parse().expect("ip")));
        req
    };
    for _ in 0..3 {
        let r = h
            .router
            .clone()
            .oneshot(from("192.0.2.1", &wrong))
            .await
            .expect("reply");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = h
        .router
        .clone()
        .oneshot(from("192.0.2.1", &key))
        .await
        .expect("reply");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let r = h
        .router
        .clone()
        .oneshot(from("192.0.2.2", &key))
        .await
        .expect("reply");
    assert_eq!(r.status(), StatusCode::OK, "another client is not affected");
}

/// `access_grant_ids` (and key filters) are the store's: every page is full, none is short
/// while more follow. The same for `acs_entrance_ids`.
#[tokio::test]
async fn id_filters_fill_every_page() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Filters").await;
    let (system, entrances) = salto(&h, &key).await;
    assert!(entrances.len() >= 3);
    let mut grants = Vec::new();
    for i in 0..4 {
        let mut body = grant_body(&entrances);
        body["access_grant_key"] = json!(format!("key-{i}"));
        body["reservation_key"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        let r = h.post(&key, "access_grants/create", body).await;
        grants.push(
            ok(&r)["access_grant"]["access_grant_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    // Grants 0 and 3 with pages of one: two full pages, then no more.
    let mut path = format!(
        "access_grants/list?access_grant_ids={}&access_grant_ids={}&limit=1&_strict=true",
        grants[0], grants[3]
    );
    let mut seen = Vec::new();
    loop {
        let r = h.get(&key, &path).await;
        let body = ok(&r);
        let page = body["access_grants"].as_array().expect("page");
        let more = body["pagination"]["has_next_page"] == true;
        if more {
            assert_eq!(page.len(), 1, "a page followed by another is full");
        }
        seen.extend(page.iter().map(|g| g["access_grant_id"].clone()));
        if !more {
            break;
        }
        path = body["pagination"]["next_page_url"]
            .as_str()
            .expect("url")
            .trim_start_matches("http://keygate.test/seam/")
            .to_owned();
    }
    assert_eq!(seen, vec![json!(grants[0]), json!(grants[3])]);

    // By key and by reservation key, in one page.
    let r = h
        .post(
            &key,
            "access_grants/list",
            json!({"access_grant_key": "key-2"}),
        )
        .await;
    let page = ok(&r)["access_grants"].as_array().expect("page").clone();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["access_grant_id"], json!(grants[2]));
    let r = h
        .post(
            &key,
            "access_grants/list",
            json!({"reservation_key": "odd", "limit": 1}),
        )
        .await;
    let body = ok(&r);
    assert_eq!(
        body["access_grants"][0]["access_grant_id"],
        json!(grants[1])
    );
    assert_eq!(body["pagination"]["has_next_page"], true);
    // A malformed id is not found, as everywhere.
    let r = h
        .post(
            &key,
            "access_grants/list",
            json!({"access_grant_ids": [grants[0], "nope"]}),
        )
        .await;
    assert_eq!(error_type(&r), "access_grant_not_found");

    // access_methods/list by access_grant_key: that grant's methods; none for a key no grant has.
    let r = h
        .get(
            &key,
            "access_methods/list?access_grant_key=key-1&_strict=true",
        )
        .await;
    let methods = ok(&r)["access_methods"]
        .as_array()
        .expect("methods")
        .clone();
    assert_eq!(methods.len(), 2, "card and mobile key");
    let r = h
        .get(&key, "access_methods/list?access_grant_key=no-such-key")
        .await;
    assert_eq!(ok(&r)["access_methods"], json!([]));

    // Entrances 0 and 2 in pages of one.
    let r = h.get(&key, &format!(
            "acs/entrances/list?acs_system_id={system}&acs_entrance_ids={}&acs_entrance_ids={}&limit=1",
            entrances[0], entrances[2]
        ))
    .await;
    let body = ok(&r);
    assert_eq!(
        body["acs_entrances"][0]["acs_entrance_id"],
        json!(entrances[0])
    );
    assert_eq!(body["pagination"]["has_next_page"], true);
    let cursor = body["pagination"]["next_page_cursor"].clone();
    let r = h
        .post(
            &key,
            "acs/entrances/list",
            json!({"acs_system_id": system, "acs_entrance_ids": [entrances[0], entrances[2]],
               "limit": 1, "page_cursor": cursor}),
        )
        .await;
    let body = ok(&r);
    assert_eq!(
        body["acs_entrances"][0]["acs_entrance_id"],
        json!(entrances[2])
    );
    assert_eq!(body["acs_entrances"].as_array().map(Vec::len), Some(1));
    // The cursor is bound to the ids it was made for.
    let r = h
        .post(
            &key,
            "acs/entrances/list",
            json!({"acs_system_id": system, "acs_entrance_ids": [entrances[1]],
               "limit": 1, "page_cursor": cursor}),
        )
        .await;
    assert_eq!(error_type(&r), "invalid_input");
}

#[tokio::test]
async fn webhooks_update_their_event_types() {
    let loopback = keygate_app::ssrf::NetworkPolicy {
        allow_loopback: true,
        allow_private_networks: false,
    };
    let h = harness_with(TestDb::sqlite().await, plenty(), loopback);
    let (key, _) = workspace(&h.app, "Hooks").await;
    let r = h
        .post(
            &key,
            "webhooks/create",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["access_grant.created"]}),
        )
        .await;
    let id = ok(&r)["webhook"]["webhook_id"].clone();
    // PUT, Seam's alternative verb for this route.
    let r = h.send(Method::PUT, &key, "webhooks/update", json!({"webhook_id": id, "event_types": ["access_method.issued", "access_grant.deleted"]}))
    .await;
    assert_eq!(ok(&r), &json!({"ok": true}));
    let r = h
        .post(&key, "webhooks/get", json!({"webhook_id": id}))
        .await;
    assert_eq!(
        ok(&r)["webhook"]["event_types"],
        json!(["access_method.issued", "access_grant.deleted"])
    );
    // An unknown type changes nothing; event_types is required; an unknown id is not found.
    let r = h
        .post(
            &key,
            "webhooks/update",
            json!({"webhook_id": id, "event_types": ["door.sang"]}),
        )
        .await;
    assert_eq!(error_type(&r), "invalid_input");
    let r = h
        .post(&key, "webhooks/update", json!({"webhook_id": id}))
        .await;
    assert_eq!(error_type(&r), "invalid_input");
    assert!(r.body["error"]["validation_errors"]["event_types"].is_object());
    let r = h
        .post(&key, "webhooks/get", json!({"webhook_id": id}))
        .await;
    assert_eq!(
        ok(&r)["webhook"]["event_types"].as_array().map(Vec::len),
        Some(2)
    );
    let r = h
        .post(
            &key,
            "webhooks/update",
            json!({"webhook_id": uuid::Uuid::new_v4().to_string(), "event_types": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&r), "webhook_not_found");
}

/// `user_identities/remove_acs_user`: the person loses what they held through the user.
#[tokio::test]
async fn removing_an_acs_user_from_an_identity_takes_its_credentials() {
    let h = harness(TestDb::sqlite().await, plenty());
    let (key, _) = workspace(&h.app, "Unlink").await;
    let system = system_of_type(&h, &key, "salto_ks_site").await;
    let r = h
        .post(
            &key,
            "acs/access_groups/list",
            json!({"acs_system_id": system}),
        )
        .await;
    let group = ok(&r)["acs_access_groups"][0]["acs_access_group_id"].clone();
    let r = h
        .post(
            &key,
            "acs/users/create",
            json!({"acs_system_id": system, "full_name": "Jane Doe"}),
        )
        .await;
    let user = ok(&r)["acs_user"]["acs_user_id"].clone();
    let r = h
        .post(
            &key,
            "acs/users/add_to_access_group",
            json!({"acs_user_id": user, "acs_access_group_id": group}),
        )
        .await;
    ok(&r);
    let mut identities = Vec::new();
    for name in ["Jane Doe", "John Roe"] {
        let r = h
            .post(&key, "user_identities/create", json!({"full_name": name}))
            .await;
        identities.push(ok(&r)["user_identity"]["user_identity_id"].clone());
    }
    let (jane, john) = (&identities[0], &identities[1]);
    let r = h
        .post(
            &key,
            "user_identities/add_acs_user",
            json!({"acs_user_id": user, "user_identity_id": jane}),
        )
        .await;
    ok(&r);
    let r = h
        .post(
            &key,
            "acs/credentials/create",
            json!({"acs_user_id": user, "access_method": "mobile_key"}),
        )
        .await;
    let credential = ok(&r)["acs_credential"]["acs_credential_id"].clone();
    let s = |v: &Value| v.as_str().expect("id").to_owned();

    // Not linked to John: refused, nothing changes.
    let r = h
        .delete(
            &key,
            &format!(
                "user_identities/remove_acs_user?user_identity_id={}&acs_user_id={}&_strict=true",
                s(john),
                s(&user)
            ),
        )
        .await;
    assert_eq!(error_type(&r), "acs_user_not_linked");
    // An unknown identity is not found.
    let r = h
        .post(
            &key,
            "user_identities/remove_acs_user",
            json!({"user_identity_id": uuid::Uuid::new_v4().to_string(), "acs_user_id": user}),
        )
        .await;
    assert_eq!(error_type(&r), "user_identity_not_found");

    let r = h
        .delete(
            &key,
            &format!(
                "user_identities/remove_acs_user?user_identity_id={}&acs_user_id={}&_strict=true",
                s(jane),
                s(&user)
            ),
        )
        .await;
    assert_eq!(ok(&r), &json!({"ok": true}));
    let r = h
        .post(
            &key,
            "user_identities/list_acs_users",
            json!({"user_identity_id": jane}),
        )
        .await;
    assert_eq!(ok(&r)["acs_users"], json!([]));
    // The credential issued through the user is gone; the user stays.
    let r = h
        .post(&key, "acs/credentials/list", json!({"acs_user_id": user}))
        .await;
    assert!(
        !ok(&r)["acs_credentials"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["acs_credential_id"] == credential)
    );
    let r = h
        .post(&key, "acs/users/get", json!({"acs_user_id": user}))
        .await;
    ok(&r);
    // No credential is issued through an unlinked user; removing again changes nothing.
    let r = h
        .post(
            &key,
            "acs/credentials/create",
            json!({"acs_user_id": user, "access_method": "mobile_key"}),
        )
        .await;
    assert_eq!(error_type(&r), "acs_user_not_linked");
    let r = h
        .post(
            &key,
            "user_identities/remove_acs_user",
            json!({"user_identity_id": jane, "acs_user_id": user}),
        )
        .await;
    ok(&r);
    // Linking to another person works again.
    let r = h
        .post(
            &key,
            "user_identities/add_acs_user",
            json!({"acs_user_id": user, "user_identity_id": john}),
        )
        .await;
    ok(&r);
}
