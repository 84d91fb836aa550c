//! Instant Keys through the real binary: the page behind a grant's link, unlocking through the
//! access system, refusals (wrong, truncated, revoked, expired, exhausted) that reach no provider,
//! tokens kept only hashed, QR codes, GenerateInstantKey, and the client session token.

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

    // The page: the person, both doors, an Unlock button only where the system unlocks remotely.
    let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Jane Doe") && body.contains("Room 301") && body.contains("Main Entrance"),
        "{body}"
    );
    assert_eq!(
        body.matches("<button").count(),
        1,
        "only Salto KS unlocks remotely: {body}"
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
    let cookie = header(&headers, "set-cookie")
        .expect("device cookie")
        .split(';')
        .next()
        .expect("c")
        .to_owned();

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
    let back = header(&headers, "location").expect("redirect").to_owned();
    let (status, _, body) = http(&kg.http_addr, "GET", &back, &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(body.contains("Main Entrance is unlocked."), "{body}");
    assert_eq!(unlocks(&ch, &key, &g.user_identity_id).await, 1);
    // A door that cannot be unlocked remotely is refused before any provider call.
    let (status, _, _) = http(
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

    // QR codes of the link.
    let (status, headers, body) = http(&kg.http_addr, "GET", &format!("{page}/qr.svg"), &[], "");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/svg+xml"))
    );
    assert!(body.contains("<svg"));
    let (status, headers, _) = http(&kg.http_addr, "GET", &format!("{page}/qr.png"), &[], "");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/png"))
    );

    // A second device: the key was claimed by the first (max_use_count 1).
    let (status, _, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("in use on another device"));
    // Wrong and truncated tokens.
    let (status, _, body) = http(
        &kg.http_addr,
        "GET",
        &format!("/ik/{}", &token[..30]),
        &[],
        "",
    );
    assert_eq!(status, 404);
    assert!(body.contains("This link does not work"));
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
    assert_eq!(
        http(&kg.http_addr, "GET", &gen_page, &[], "").0,
        200,
        "a second device may claim it"
    );
    assert_eq!(
        http(&kg.http_addr, "GET", &gen_page, &[], "").0,
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
