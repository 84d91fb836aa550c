//! Instant Keys through the real binary: the page behind a grant's link, previews that claim
//! nothing, claiming and unlocking through the access system, refusals (wrong, truncated,
//! revoked, expired, exhausted) that reach no provider, the security headers of every answer,
//! tokens kept only hashed, QR codes, GenerateInstantKey, the client session token, and the
//! limits of the HTTP port (rate limits with 429 and Retry-After, timeouts).

use std::io::{Read as _, Write as _};
use std::time::Duration;

use keygate_proto::v1;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use crate::grants::{
    CARD, MOBILE, events, grants, jane_grant, methods, systems_client_entrances, ts,
};
use crate::harness::*;

type Ch = tonic::transport::Channel;

/// A plain HTTP/1.0 exchange: (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The headers every answer of the pages carries: the token is in the URL, so nothing is
/// cached or sent on as a referrer, nothing frames the page, and a strict policy applies.
#[track_caller]
fn assert_secure(h: &[(String, String)], what: &str) {
    assert_eq!(header(h, "cache-control"), Some("no-store"), "{what}");
    assert_eq!(header(h, "referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(header(h, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        header(h, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    let policy = header(h, "content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
}

/// The `name=value` of a response's device cookie.
fn device_cookie(h: &[(String, String)]) -> Option<String> {
    header(h, "set-cookie").and_then(|c| c.split(';').next().map(str::to_owned))
}

async fn use_count(ch: &Ch, key: &str, instant_key_id: &str) -> i32 {
    instant_keys(ch)
        .get_instant_key(authed(
            key,
            v1::GetInstantKeyRequest {
                lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyId(
                    instant_key_id.to_owned(),
                )),
            },
        ))
        .await
        .expect("get key")
        .into_inner()
        .instant_key
        .expect("key")
        .use_count
}

/// The path of a link, to ask this server (its public URL is not where the test reaches it).
pub fn path_of(url: &str) -> String {
    format!(
        "/ik/{}",
        url.rsplit_once("/ik/").expect("an Instant Key link").1
    )
}

pub async fn entrance(ch: &Ch, key: &str, system_type: &str, name: &str) -> String {
    let all = systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let s = all
        .iter()
        .find(|s| s.system_type == system_type)
        .expect("system");
    systems_client_entrances(ch, key, &s.acs_system_id)
        .await
        .into_iter()
        .find(|e| e.display_name == name)
        .expect("entrance")
        .acs_entrance_id
}

/// A quick-start grant for Jane whose mobile key opens a door that unlocks remotely (Salto KS)
/// and one that does not (Visionline); returns it once the mobile key is issued.
pub async fn jane_with_a_remote_door(
    ch: &Ch,
    key: &str,
    request_id: &str,
) -> (v1::AccessGrant, v1::AccessMethod, [String; 2]) {
    let room = entrance(ch, key, "virtual_visionline", "Room 301").await;
    let main = entrance(ch, key, "virtual_salto_ks", "Main Entrance").await;
    let g = grants(ch)
        .create_access_grant(authed(
            key,
            jane_grant(request_id, &[room.clone(), main.clone()], &[CARD, MOBILE]),
        ))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let mobile_id = g.requested_access_methods[1].created_access_method_ids[0].clone();
    for _ in 0..200 {
        let m = methods(ch)
            .get_access_method(authed(
                key,
                v1::GetAccessMethodRequest {
                    access_method_id: mobile_id.clone(),
                },
            ))
            .await
            .expect("method")
            .into_inner()
            .access_method
            .expect("m");
        if m.is_issued {
            return (g, m, [room, main]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the mobile key was not issued");
}

pub(crate) fn instant_keys(ch: &Ch) -> v1::instant_key_service_client::InstantKeyServiceClient<Ch> {
    v1::instant_key_service_client::InstantKeyServiceClient::new(ch.clone())
}

/// Every text column of every row of `table`, for looking a secret up in the store.
pub(crate) async fn table_text(
    opts: &Options,
    dir: &std::path::Path,
    sql: &'static str,
) -> Vec<String> {
    use sqlx::Row as _;
    match &opts.database_url {
        Some(url) => {
            let pool = sqlx::postgres::PgPool::connect(url).await.expect("pg");
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect("query");
            rows.iter()
                .flat_map(|r| {
                    (0..r.len())
                        .filter_map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        None => {
            let url = format!("sqlite://{}", dir.join("keygate.db").display());
            let pool = sqlx::sqlite::SqlitePool::connect(&url)
                .await
                .expect("sqlite");
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect("query");
            rows.iter()
                .flat_map(|r| {
                    (0..r.len())
                        .filter_map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }
}

async fn unlocks(ch: &Ch, key: &str, grant_user: &str) -> usize {
    events(ch)
        .list_events(authed(
            key,
            v1::ListEventsRequest {
                event_types: vec!["acs_entrance.unlocked".into()],
                user_identity_id: grant_user.into(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
        .len()
}

async fn instant_key_pages(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..opts.clone()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;
    let (g, mobile, [room, main]) = jane_with_a_remote_door(&ch, &key, "ik-1").await;
    assert_eq!(mobile.instant_key_url, g.instant_key_url);
    assert!(!g.instant_key_id.is_empty() && mobile.instant_key_id == g.instant_key_id);
    let page = path_of(&g.instant_key_url);
    let token = page.trim_start_matches("/ik/").to_owned();

    // Link previewers (messaging apps, mail scanners) fetch the link first, without cookies:
    // three GETs and a HEAD show the page and claim nothing.
    for _ in 0..3 {
        let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Use this key on this phone"), "{body}");
        assert_eq!(
            device_cookie(&headers),
            None,
            "a view sets no device cookie"
        );
        assert_secure(&headers, "the page");
    }
    let (status, headers, body) = http(&kg.http_addr, "HEAD", &page, &[], "");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_secure(&headers, "HEAD of the page");
    assert_eq!(
        use_count(&ch, &key, &g.instant_key_id).await,
        0,
        "nothing claimed"
    );

    // The guest's phone opens the link: the person, both doors, an Unlock button only where the
    // system unlocks remotely, and the claim button.
    let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Jane Doe") && body.contains("Room 301") && body.contains("Main Entrance"),
        "{body}"
    );
    assert_eq!(
        body.matches("<button").count(),
        2,
        "the claim button, and Unlock only where Salto KS unlocks remotely: {body}"
    );
    assert!(body.contains("hold your phone to the lock"), "{body}");
    assert!(
        body.contains("(America/New_York)") && body.contains("(Europe/Madrid)"),
        "site time zones: {body}"
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    // The token is in the URL: no referrer, no framing, and a policy under which only the
    // page's own style (by its hash) loads.
    assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
    let policy = header(&headers, "content-security-policy").expect("a CSP");
    assert!(
        policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    let style = body
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(css, _)| css)
        .expect("the page's style");
    let style_hash = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style))
    };
    assert!(
        policy.contains(&format!("style-src 'sha256-{style_hash}'")),
        "the policy allows the served style by its hash: {policy}"
    );
    assert!(!body.contains("<script"), "the page runs no script");
    // The phone claims the key ("Use this key on this phone"), and is remembered by a cookie.
    let (status, headers, _) = http(&kg.http_addr, "POST", &format!("{page}/claim"), &[], "");
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some(page.as_str()));
    assert_secure(&headers, "the claim's redirect");
    let cookie = device_cookie(&headers).expect("device cookie");
    assert_eq!(use_count(&ch, &key, &g.instant_key_id).await, 1);
    let (status, _, body) = http(&kg.http_addr, "GET", &page, &[("Cookie", &cookie)], "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("Use this key on this phone"), "{body}");
    assert_eq!(body.matches("<button").count(), 1, "{body}");

    // Unlock: through the access system, recorded as an event with the entrance.
    let form = format!("acs_entrance_id={main}");
    let (status, headers, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form,
    );
    assert_eq!(status, 303);
    assert_secure(&headers, "the unlock's redirect");
    let back = header(&headers, "location").expect("redirect").to_owned();
    let (status, _, body) = http(&kg.http_addr, "GET", &back, &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(body.contains("Main Entrance is unlocked."), "{body}");
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);
    // A door that cannot be unlocked remotely is refused before any provider call.
    let (status, headers, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("acs_entrance_id={room}"),
    );
    assert_eq!(status, 403);
    assert_secure(&headers, "a refusal");

    // QR codes of the link.
    let (status, headers, body) = http(&kg.http_addr, "GET", &format!("{page}/qr.svg"), &[], "");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/svg+xml"))
    );
    assert!(body.contains("<svg"));
    assert_secure(&headers, "the QR code");
    let (status, headers, _) = http(&kg.http_addr, "GET", &format!("{page}/qr.png"), &[], "");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/png"))
    );
    assert_secure(&headers, "the QR code");
    assert_eq!(
        use_count(&ch, &key, &g.instant_key_id).await,
        1,
        "QR codes claim nothing"
    );

    // A second device: the key was claimed by the first (max_use_count 1).
    let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("in use on another device"));
    assert_secure(&headers, "a refusal");
    let (status, _, _) = http(&kg.http_addr, "POST", &format!("{page}/claim"), &[], "");
    assert_eq!(status, 403, "the second device cannot claim it either");
    // Wrong and truncated tokens.
    let (status, headers, body) = http(
        &kg.http_addr,
        "GET",
        &format!("/ik/{}", &token[..30]),
        &[],
        "",
    );
    assert_eq!(status, 404);
    assert!(body.contains("This link does not work"));
    assert_secure(&headers, "a refusal");
    let wrong: String = token.chars().rev().collect();
    assert_eq!(
        http(&kg.http_addr, "GET", &format!("/ik/{wrong}"), &[], "").0,
        404
    );

    // Only the token's hash is stored: no column of the key tables holds the token.
    let stored = table_text(&opts, &dir.0, "SELECT * FROM instant_keys").await;
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(stored.contains(&hash), "the hash is the lookup key");
    for t in [
        "SELECT * FROM instant_keys",
        "SELECT * FROM access_grants",
        "SELECT * FROM access_methods",
        "SELECT * FROM events",
        "SELECT * FROM jobs",
        "SELECT * FROM instant_key_claims",
    ] {
        assert!(
            table_text(&opts, &dir.0, t)
                .await
                .iter()
                .all(|v| !v.contains(&token)),
            "{t} holds the token"
        );
    }
    assert!(
        table_text(&opts, &dir.0, "SELECT * FROM instant_key_claims")
            .await
            .iter()
            .all(|v| !cookie.contains(v.as_str())),
        "device cookies are stored hashed"
    );

    // Another workspace cannot see the key, by id or by link.
    assert_fails(
        instant_keys(&ch)
            .get_instant_key(authed(
                &other_key,
                v1::GetInstantKeyRequest {
                    lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyId(
                        g.instant_key_id.clone(),
                    )),
                },
            ))
            .await,
        Code::NotFound,
        "INSTANT_KEY_NOT_FOUND",
    );
    assert_fails(
        instant_keys(&ch)
            .get_instant_key(authed(
                &other_key,
                v1::GetInstantKeyRequest {
                    lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyUrl(
                        g.instant_key_url.clone(),
                    )),
                },
            ))
            .await,
        Code::NotFound,
        "INSTANT_KEY_NOT_FOUND",
    );
    let mine = instant_keys(&ch)
        .get_instant_key(authed(
            &key,
            v1::GetInstantKeyRequest {
                lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyUrl(
                    g.instant_key_url.clone(),
                )),
            },
        ))
        .await
        .expect("by link")
        .into_inner()
        .instant_key
        .expect("key");
    assert_eq!(
        (
            mine.instant_key_id.as_str(),
            mine.use_count,
            mine.max_use_count
        ),
        (g.instant_key_id.as_str(), 1, 1)
    );
    assert_eq!(mine.access_grant_id, g.access_grant_id);

    // The client session token: accepted by the page's API, nowhere else, and not once forged.
    let api = |token: &str, entrance: &str| {
        http(
            &kg.http_addr,
            "POST",
            "/ik/api/v1/unlock",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            &format!("{{\"acs_entrance_id\": \"{entrance}\"}}"),
        )
    };
    assert!(
        mobile.client_session_token.starts_with("kcs1."),
        "{}",
        mobile.client_session_token
    );
    let (status, _, body) = api(&mobile.client_session_token, &main);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"success\""), "{body}");
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 2);
    let mut forged = mobile.client_session_token.clone();
    forged.pop();
    assert_eq!(api(&forged, &main).0, 401);
    assert_eq!(api("", &main).0, 401);
    let (_, others_door) = {
        let d = crate::grants::two_doors(&ch, &other_key).await;
        (0, d[0].clone())
    };
    assert_eq!(
        api(&mobile.client_session_token, &others_door).0,
        404,
        "only Jane's own doors"
    );
    let refused = grants(&ch)
        .list_access_grants(authed(
            &mobile.client_session_token,
            v1::ListAccessGrantsRequest::default(),
        ))
        .await;
    assert_eq!(
        refused.expect_err("not an API key").code(),
        Code::Unauthenticated
    );

    // Revoked: the page says so with 410 and no unlock reaches the access system.
    let revoked = instant_keys(&ch)
        .revoke_instant_key(authed(
            &key,
            v1::RevokeInstantKeyRequest {
                instant_key_id: g.instant_key_id.clone(),
            },
        ))
        .await
        .expect("revoke")
        .into_inner()
        .instant_key
        .expect("key");
    assert!(revoked.is_revoked && revoked.revoked_at.is_some());
    let (status, _, body) = http(&kg.http_addr, "GET", &page, &[("Cookie", &cookie)], "");
    assert_eq!(status, 410);
    assert!(body.contains("revoked"), "{body}");
    let (status, _, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form,
    );
    assert_eq!(status, 410);
    assert_eq!(
        http(&kg.http_addr, "GET", &format!("{page}/qr.svg"), &[], "").0,
        410
    );
    assert_eq!(
        unlocks(&ch, &key, &g.user_identity_id).await,
        2,
        "nothing reached the provider"
    );

    // GenerateInstantKey for the same person: a new link that expires when asked.
    let generated = identities(&ch)
        .generate_instant_key(authed(
            &key,
            v1::GenerateInstantKeyRequest {
                request_id: "gen-1".into(),
                user_identity_id: g.user_identity_id.clone(),
                max_use_count: 2,
                expires_at: Some(ts(Duration::from_secs(3), false)),
            },
        ))
        .await
        .expect("generate")
        .into_inner();
    assert!(generated.qr_code_svg.contains("<svg"));
    let k = generated.instant_key.expect("key");
    assert_eq!(k.max_use_count, 2);
    assert!(k.access_grant_id.is_empty());
    let gen_page = path_of(&k.instant_key_url);
    let (status, _, body) = http(&kg.http_addr, "GET", &gen_page, &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Main Entrance"),
        "it opens Jane's mobile credentials: {body}"
    );
    let claim = format!("{gen_page}/claim");
    assert_eq!(http(&kg.http_addr, "POST", &claim, &[], "").0, 303);
    assert_eq!(
        http(&kg.http_addr, "POST", &claim, &[], "").0,
        303,
        "a second device may claim it"
    );
    assert_eq!(
        http(&kg.http_addr, "POST", &claim, &[], "").0,
        403,
        "a third may not"
    );
    let listed = instant_keys(&ch)
        .list_instant_keys(authed(
            &key,
            v1::ListInstantKeysRequest {
                user_identity_id: g.user_identity_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .instant_keys;
    assert_eq!(listed.len(), 2);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, _, body) = http(&kg.http_addr, "GET", &gen_page, &[], "");
    assert_eq!(status, 410);
    assert!(body.contains("expired"), "{body}");
    // A grant's key follows the grant: new times move its expiry, a delete revokes it.
    let (g2, _, _) = jane_with_a_remote_door(&ch, &key, "ik-2").await;
    let later = ts(Duration::from_secs(9 * 86_400), false);
    grants(&ch)
        .update_access_grant(authed(
            &key,
            v1::UpdateAccessGrantRequest {
                access_grant_id: g2.access_grant_id.clone(),
                ends_at: Some(later),
                ..Default::default()
            },
        ))
        .await
        .expect("update");
    let k2 = instant_keys(&ch)
        .get_instant_key(authed(
            &key,
            v1::GetInstantKeyRequest {
                lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyId(
                    g2.instant_key_id.clone(),
                )),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .instant_key
        .expect("key");
    assert_eq!(k2.expires_at.map(|t| t.seconds), Some(later.seconds));
    grants(&ch)
        .delete_access_grant(authed(
            &key,
            v1::DeleteAccessGrantRequest {
                access_grant_id: g2.access_grant_id.clone(),
            },
        ))
        .await
        .expect("delete");
    let (status, _, body) = http(&kg.http_addr, "GET", &path_of(&g2.instant_key_url), &[], "");
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("revoked"));
    assert_fails(
        identities(&ch)
            .generate_instant_key(authed(
                &other_key,
                v1::GenerateInstantKeyRequest {
                    user_identity_id: g.user_identity_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
}

#[tokio::test]
async fn instant_key_pages_sqlite() {
    instant_key_pages(Options::with_admin()).await
}

#[tokio::test]
async fn instant_key_pages_postgres_redis() {
    instant_key_pages(Options::postgres_redis().await).await
}

/// A link previewer's visits, then a phone that claims the key by its first unlock (no claim
/// button): the unlock succeeds and the key is the phone's.
#[tokio::test]
async fn previews_claim_nothing_and_the_first_unlock_claims() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (g, _, [_, main]) = jane_with_a_remote_door(&ch, &key, "ik-preview").await;
    let page = path_of(&g.instant_key_url);
    for method in ["GET", "GET", "GET", "HEAD"] {
        assert_eq!(http(&kg.http_addr, method, &page, &[], "").0, 200);
    }
    assert_eq!(use_count(&ch, &key, &g.instant_key_id).await, 0);
    let (status, headers, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("acs_entrance_id={main}"),
    );
    assert_eq!(status, 303);
    let cookie = device_cookie(&headers).expect("the unlock claimed the key for this phone");
    let back = header(&headers, "location").expect("redirect").to_owned();
    let (status, _, body) = http(&kg.http_addr, "GET", &back, &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(body.contains("Main Entrance is unlocked."), "{body}");
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);
    assert_eq!(use_count(&ch, &key, &g.instant_key_id).await, 1);
    // Another device is now refused, before any provider call.
    let (status, _, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("acs_entrance_id={main}"),
    );
    assert_eq!(status, 403);
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);
}

/// Deleting the person closes everything they held: the page behind their link refuses, on the
/// phone that claimed it too; their door does not unlock; and their credentials are revoked on
/// the access systems.
#[tokio::test]
async fn deleting_the_person_closes_their_page_and_their_doors() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (g, _, [_, main]) = jane_with_a_remote_door(&ch, &key, "ik-delete-person").await;
    let page = path_of(&g.instant_key_url);
    let unlock = |cookie: Option<&str>| {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        http(
            &kg.http_addr,
            "POST",
            &format!("{page}/unlock"),
            &h,
            &format!("acs_entrance_id={main}"),
        )
    };
    let (status, headers, _) = unlock(None);
    assert_eq!(status, 303);
    let cookie = device_cookie(&headers).expect("the phone claimed the key");
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);

    let deleted = identities(&ch)
        .delete_user_identity(authed(
            &key,
            v1::DeleteUserIdentityRequest {
                user_identity_id: g.user_identity_id.clone(),
            },
        ))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.access_grants_deleted, 1);
    assert_eq!(deleted.instant_keys_revoked, 1);
    assert_eq!(deleted.acs_users_unlinked, 0);

    // The page refuses the phone that holds the key, and so does its unlock: nothing is queued.
    let (status, _, body) = http(&kg.http_addr, "GET", &page, &[("Cookie", &cookie)], "");
    assert_eq!(status, 410, "{body}");
    let (status, _, _) = unlock(Some(&cookie));
    assert_eq!(status, 410);
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);
    // The grant is gone at once; its credentials are revoked on the access systems shortly.
    assert_fails(
        grants(&ch)
            .get_access_grant(authed(
                &key,
                v1::GetAccessGrantRequest {
                    access_grant_id: g.access_grant_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    let mut revoked = 0;
    for _ in 0..200 {
        let types = event_types_of(&ch, &key, &g.user_identity_id).await;
        revoked = types
            .iter()
            .filter(|t| *t == "access_method.revoked")
            .count();
        if revoked == g.access_method_ids.len() {
            assert!(
                types.contains(&"user_identity.deleted".to_owned()),
                "{types:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(revoked, g.access_method_ids.len(), "every method revoked");
}

async fn event_types_of(ch: &Ch, key: &str, user: &str) -> Vec<String> {
    events(ch)
        .list_events(authed(
            key,
            v1::ListEventsRequest {
                user_identity_id: user.into(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// The HTTP port's limits, set small: views and unlocks per key and per client answer 429 with
/// Retry-After (and the pages' headers); a client that never finishes its headers, or its body,
/// is cut off.
#[tokio::test]
async fn the_http_port_limits_abuse() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms=40",
                "--page-views-per-minute-per-key=3",
                "--page-views-per-minute-per-client=5",
                "--page-unlocks-per-minute-per-key=1",
                "--page-unlocks-per-minute-per-client=0",
                "--http-header-read-timeout-secs=1",
                "--http-request-timeout-secs=2",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (g, mobile, [_, main]) = jane_with_a_remote_door(&ch, &key, "ik-limits").await;
    let page = path_of(&g.instant_key_url);

    // Views: three of this link, then its limit; another link from the same client until the
    // client's own limit (5) is reached.
    for _ in 0..3 {
        assert_eq!(http(&kg.http_addr, "GET", &page, &[], "").0, 200);
    }
    let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 429, "{body}");
    let retry: u64 = header(&headers, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(body.contains("Too many tries"), "{body}");
    assert_secure(&headers, "a 429");
    let other = format!("/ik/{}", "A".repeat(43));
    assert_eq!(
        http(&kg.http_addr, "GET", &other, &[], "").0,
        404,
        "another link has its own limit"
    );
    let (status, headers, _) = http(
        &kg.http_addr,
        "GET",
        &format!("/ik/{}", "B".repeat(43)),
        &[],
        "",
    );
    assert_eq!(status, 429, "the client's limit");
    assert!(header(&headers, "retry-after").is_some());

    // Unlocks are counted apart from views: one per minute per link or session token here.
    let unlock = |cookie: Option<&str>| {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        http(
            &kg.http_addr,
            "POST",
            &format!("{page}/unlock"),
            &h,
            &format!("acs_entrance_id={main}"),
        )
    };
    let (status, headers, _) = unlock(None);
    assert_eq!(status, 303);
    let cookie = device_cookie(&headers).expect("claimed");
    let (status, headers, _) = unlock(Some(&cookie));
    assert_eq!(status, 429);
    assert!(header(&headers, "retry-after").is_some());
    let api = || {
        http(
            &kg.http_addr,
            "POST",
            "/ik/api/v1/unlock",
            &[
                (
                    "Authorization",
                    &format!("Bearer {}", mobile.client_session_token),
                ),
                ("Content-Type", "application/json"),
            ],
            &format!("{{\"acs_entrance_id\": \"{main}\"}}"),
        )
    };
    let (status, _, body) = api();
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = api();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("\"rate_limited\""), "{body}");
    assert!(header(&headers, "retry-after").is_some());
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 2);

    // Slowloris: headers that never end. The port closes the connection (here after 1 s).
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(&kg.http_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n")
        .expect("write");
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
        }
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the port never closed the connection: {e}"
        ),
    }
    eprintln!("slow headers cut off after {:?}", started.elapsed());

    // A body that never comes: the request times out (here after 2 s) with 503.
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(&kg.http_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // (A link of its own: this one's unlocks are spent; the handler then waits for the form.)
    s.write_all(
        format!(
            "POST {other}/unlock HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 100\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nacs_entrance_id="
        )
        .as_bytes(),
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    eprintln!("slow body answered after {:?}", started.elapsed());
}
