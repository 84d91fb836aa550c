//! One handler per Seam route: read the parameters (each with its schema's type), check that
//! nothing else was sent when the SDK asked for strict parsing, build the `keygate.v1` request
//! the gRPC surface would get, parse it into its `keygate-app` command through `keygate-wire`
//! (so every field rule is the one gRPC applies), call the use case, and reply in Seam's JSON.

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::page::{MAX_PAGE_SIZE, Page};
use keygate_domain::validate;
use keygate_domain::{Error, Resource};
use keygate_proto::v1;
use keygate_wire::parse::IntoCommand as _;
use keygate_wire::parse::filters;
use keygate_wire::{convert, links};
use serde_json::{Map, Value, json};

use crate::json;
use crate::params::{Params, field};

/// Which verbs a route takes besides `POST` (Seam documents one alternative per route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alt {
    /// `GET` with a query string: reads.
    Get,
    /// `DELETE` with a query string.
    Delete,
    /// `PATCH` (and `PUT`) with a JSON body: updates.
    Patch,
    /// `POST` only.
    None,
}

/// Every route served, with its alternative verb. Anything else is `route_not_found`.
pub const ROUTES: &[(&str, Alt)] = &[
    ("workspaces/get", Alt::Get),
    ("acs/systems/list", Alt::Get),
    ("acs/systems/get", Alt::Get),
    ("acs/entrances/list", Alt::Get),
    ("acs/entrances/get", Alt::Get),
    ("acs/entrances/unlock", Alt::None),
    ("acs/encoders/list", Alt::Get),
    ("acs/encoders/get", Alt::Get),
    ("acs/access_groups/list", Alt::Get),
    ("acs/access_groups/get", Alt::Get),
    ("acs/access_groups/list_accessible_entrances", Alt::Get),
    ("acs/access_groups/list_users", Alt::Get),
    ("acs/access_groups/add_user", Alt::Patch),
    ("acs/access_groups/remove_user", Alt::Delete),
    ("acs/users/create", Alt::None),
    ("acs/users/get", Alt::Get),
    ("acs/users/list", Alt::Get),
    ("acs/users/delete", Alt::Delete),
    ("acs/users/add_to_access_group", Alt::Patch),
    ("acs/users/remove_from_access_group", Alt::Delete),
    ("acs/credentials/create", Alt::None),
    ("acs/credentials/list", Alt::Get),
    ("acs/credentials/delete", Alt::Delete),
    ("access_grants/create", Alt::None),
    ("access_grants/get", Alt::Get),
    ("access_grants/list", Alt::Get),
    ("access_grants/update", Alt::Patch),
    ("access_grants/delete", Alt::Delete),
    ("access_methods/get", Alt::Get),
    ("access_methods/list", Alt::Get),
    ("access_methods/delete", Alt::Delete),
    ("access_methods/encode", Alt::None),
    ("access_methods/unlock_door", Alt::None),
    ("action_attempts/get", Alt::Get),
    ("action_attempts/list", Alt::Get),
    ("events/get", Alt::Get),
    ("events/list", Alt::Get),
    ("user_identities/create", Alt::None),
    ("user_identities/get", Alt::Get),
    ("user_identities/list", Alt::Get),
    ("user_identities/update", Alt::Patch),
    ("user_identities/delete", Alt::Delete),
    ("user_identities/add_acs_user", Alt::Patch),
    ("user_identities/remove_acs_user", Alt::Delete),
    ("user_identities/list_acs_users", Alt::Get),
    ("user_identities/list_acs_systems", Alt::Get),
    ("user_identities/generate_instant_key", Alt::None),
    ("instant_keys/get", Alt::Get),
    ("instant_keys/list", Alt::Get),
    ("instant_keys/delete", Alt::Delete),
    ("webhooks/create", Alt::None),
    ("webhooks/get", Alt::Get),
    ("webhooks/list", Alt::Get),
    ("webhooks/update", Alt::Patch),
    ("webhooks/delete", Alt::Delete),
];

/// The alternative verb of a route, or `None` when the route does not exist.
pub fn route(action: &str) -> Option<Alt> {
    ROUTES
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, alt)| *alt)
}

/// What a handler knows of its request besides the parameters.
pub struct Ctx {
    pub ws: WorkspaceId,
    /// The `Idempotency-Key` header: the `request_id` of a create.
    pub idempotency_key: Option<String>,
    /// The URL of this request without its query (for `next_page_url`), when it was a `GET`.
    pub get_url: Option<String>,
    /// The query string as received (for `next_page_url`).
    pub query: String,
}

type Body = Result<Map<String, Value>, Error>;

fn one(key: &str, value: Value) -> Body {
    let mut m = Map::new();
    m.insert(key.into(), value);
    Ok(m)
}

fn id_param<T: std::str::FromStr>(p: &mut Params, key: &str, r: Resource) -> Result<T, Error> {
    let raw = p.required(key)?;
    validate::id(key, &raw, r)
}

/// A list of ids (`access_grant_ids`, ...), each checked; at most one page's worth.
fn id_list<T: std::str::FromStr>(p: &mut Params, key: &str, r: Resource) -> Result<Vec<T>, Error> {
    let raw = p.strings(key)?;
    if raw.len() > MAX_PAGE_SIZE as usize {
        return Err(Error::invalid(key, format!("at most {MAX_PAGE_SIZE} ids")));
    }
    raw.iter()
        .enumerate()
        .map(|(i, id)| validate::id(&format!("{key}[{i}]"), id, r))
        .collect()
}

/// Ids joined for a page scope (a cursor is bound to its filters).
fn joined<T: ToString>(ids: &[T]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `limit` and `page_cursor`, as the `page_size` and `page_token` of a Keygate list. Without a
/// `limit`, a page is as long as Keygate's longest (500), Seam's default, so code that reads only
/// the first page (the seed's does) sees what it would see on Seam.
fn paging(p: &mut Params) -> Result<(i32, String), Error> {
    let limit = match p.int("limit")? {
        None => MAX_PAGE_SIZE as i32,
        Some(n) if n < 1 => return Err(Error::invalid("limit", "must be at least 1")),
        Some(n) => i32::try_from(n.min(i64::from(MAX_PAGE_SIZE))).unwrap_or(0),
    };
    Ok((limit, p.string("page_cursor")?.unwrap_or_default()))
}

/// Seam's `pagination` of a page, with the URL of the next one for a `GET`.
fn pagination(ctx: &Ctx, next: &str) -> Value {
    if next.is_empty() {
        return json!({"has_next_page": false, "next_page_cursor": null, "next_page_url": null});
    }
    let url = ctx.get_url.as_ref().map(|base| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(ctx.query.as_bytes()) {
            if k != "page_cursor" {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("page_cursor", next);
        format!("{base}?{}", q.finish())
    });
    json!({"has_next_page": true, "next_page_cursor": next, "next_page_url": url})
}

fn paged(key: &str, items: Vec<Value>, ctx: &Ctx, next: &str) -> Body {
    let mut m = Map::new();
    m.insert(key.into(), Value::Array(items));
    m.insert("pagination".into(), pagination(ctx, next));
    Ok(m)
}

fn grant_json(app: &App, g: &keygate_domain::grant::AccessGrant) -> Value {
    let mut pb = convert::access_grant(g);
    links::fill_grant(&app.links, &mut pb);
    json::access_grant(&pb)
}

fn method_json(app: &App, ws: WorkspaceId, m: &keygate_domain::grant::AccessMethod) -> Value {
    let mut pb = convert::access_method(m);
    links::fill_method(&app.links, ws, &mut pb);
    json::access_method(&pb)
}

/// An action attempt in Seam's JSON; a finished encoding carries the card as its result.
async fn attempt_json(
    app: &App,
    ws: WorkspaceId,
    a: &keygate_domain::action::ActionAttempt,
) -> Result<Value, Error> {
    let pb = convert::action_attempt(a);
    let card = match (a.action_type, a.status, a.access_method_id) {
        (
            keygate_domain::action::ActionType::EncodeCredential,
            keygate_domain::action::AttemptStatus::Success,
            Some(method),
        ) => match app.get_access_method(ws, method).await {
            Ok(m) => Some(json::encoded_card(
                &pb,
                &convert::access_method(&m),
                &ws.to_string(),
            )),
            // The card's method was deleted since: the attempt is still readable.
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(json::action_attempt(&pb, card))
}

fn mode_of(raw: &str, field: &str) -> Result<i32, Error> {
    Ok(match raw {
        "card" => v1::AccessMethodMode::Card,
        "code" => v1::AccessMethodMode::Code,
        "mobile_key" => v1::AccessMethodMode::MobileKey,
        "cloud_key" => v1::AccessMethodMode::CloudKey,
        _ => {
            return Err(Error::invalid(
                field,
                "must be one of card, code, mobile_key, cloud_key",
            ));
        }
    } as i32)
}

fn ts(t: Option<time::OffsetDateTime>) -> Option<prost_types::Timestamp> {
    t.map(convert::ts)
}

/// Runs the handler of `action`.
pub async fn call(app: &App, action: &str, p: &mut Params, ctx: &Ctx) -> Body {
    let ws = ctx.ws;
    match action {
        "workspaces/get" => {
            p.finish()?;
            let w = app.get_workspace(ws).await?;
            let is_sandbox = w.workspace_type == keygate_domain::model::WorkspaceType::Sandbox;
            one(
                "workspace",
                json!({
                    "workspace_id": w.id.to_string(),
                    "name": w.name,
                    "company_name": w.name,
                    "is_sandbox": is_sandbox,
                    "is_suspended": false,
                    "connect_partner_name": null,
                    "connect_webview_customization": {},
                    "is_publishable_key_auth_enabled": false,
                    "organization_id": null,
                }),
            )
        }

        // --- Access systems and what they hold ------------------------------------------------
        "acs/systems/list" => {
            let search = p.string("search")?;
            p.ignore(&["connected_account_id", "customer_key"]);
            p.finish()?;
            let scope = PageScope::workspace(ws, &["SeamListAcsSystems"]);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let found = app.list_access_systems(ws, None, &page).await?;
            let needle = search.map(|s| s.to_lowercase());
            let items = found
                .items
                .iter()
                .filter(|s| {
                    needle
                        .as_ref()
                        .is_none_or(|n| s.name.to_lowercase().contains(n))
                })
                .map(|s| json::acs_system(&convert::access_system(s)))
                .collect();
            one("acs_systems", Value::Array(items))
        }
        "acs/systems/get" => {
            let id = id_param(p, "acs_system_id", Resource::AccessSystem)?;
            p.finish()?;
            let s = app.get_access_system(ws, id).await?;
            one("acs_system", json::acs_system(&convert::access_system(&s)))
        }
        "acs/entrances/list" => {
            let system = p.string("acs_system_id")?.unwrap_or_default();
            let wanted: Vec<keygate_domain::ids::EntranceId> =
                id_list(p, "acs_entrance_ids", Resource::Entrance)?;
            let (limit, cursor) = paging(p)?;
            p.ignore(&["customer_key", "location_id", "space_id", "search"]);
            for unsupported in ["acs_credential_id", "connected_account_id"] {
                if p.string(unsupported)?.is_some() {
                    return Err(Error::invalid(unsupported, "is not supported by Keygate"));
                }
            }
            p.finish()?;
            let ids = joined(&wanted);
            let parts = ["SeamListAcsEntrances", system.as_str(), ids.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let system = validate::optional_id("acs_system_id", &system, Resource::AccessSystem)?;
            let found = app.list_entrances_by_id(ws, system, &wanted, &page).await?;
            let items = found
                .items
                .iter()
                .map(|e| json::acs_entrance(&convert::entrance(e)))
                .collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("acs_entrances", items, ctx, &next)
        }
        "acs/entrances/get" => {
            let id = id_param(p, "acs_entrance_id", Resource::Entrance)?;
            p.finish()?;
            let e = app.get_entrance(ws, id).await?;
            one("acs_entrance", json::acs_entrance(&convert::entrance(&e)))
        }
        "acs/entrances/unlock" => {
            let r = v1::UnlockEntranceRequest {
                acs_entrance_id: p.required("acs_entrance_id")?,
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
            };
            p.finish()?;
            let a = app.unlock_entrance(ws, r.into_command()?).await?;
            one("action_attempt", attempt_json(app, ws, &a).await?)
        }
        "acs/encoders/list" => {
            let mut system = p.string("acs_system_id")?.unwrap_or_default();
            let systems = p.strings("acs_system_ids")?;
            match (systems.as_slice(), system.is_empty()) {
                ([], _) => {}
                ([one], true) => system = one.clone(),
                _ => {
                    return Err(Error::invalid(
                        "acs_system_ids",
                        "Keygate lists the encoders of one system at a time: give one id",
                    ));
                }
            }
            let wanted: Vec<keygate_domain::ids::EncoderId> =
                id_list(p, "acs_encoder_ids", Resource::Encoder)?;
            let (limit, cursor) = paging(p)?;
            p.finish()?;
            let ids = joined(&wanted);
            let parts = ["SeamListAcsEncoders", system.as_str(), ids.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let system = validate::optional_id("acs_system_id", &system, Resource::AccessSystem)?;
            let found = app.list_encoders_by_id(ws, system, &wanted, &page).await?;
            let items = found
                .items
                .iter()
                .map(|e| {
                    let mut v = json::acs_encoder(&convert::encoder(e));
                    if let Some(m) = v.as_object_mut() {
                        m.insert("workspace_id".into(), ws.to_string().into());
                    }
                    v
                })
                .collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("acs_encoders", items, ctx, &next)
        }
        "acs/encoders/get" => {
            let id = id_param(p, "acs_encoder_id", Resource::Encoder)?;
            p.finish()?;
            let e = app.get_encoder(ws, id).await?;
            let mut v = json::acs_encoder(&convert::encoder(&e));
            if let Some(m) = v.as_object_mut() {
                m.insert("workspace_id".into(), ws.to_string().into());
            }
            one("acs_encoder", v)
        }
        "acs/access_groups/get" => {
            let id = id_param(p, "acs_access_group_id", Resource::AccessGroup)?;
            p.finish()?;
            let g = app.get_access_group(ws, id).await?;
            let system = app.get_access_system(ws, g.acs_system_id).await?;
            let mut v = json::acs_access_group(&convert::access_group(&g), &system.external_type);
            if let Some(m) = v.as_object_mut() {
                m.insert("workspace_id".into(), ws.to_string().into());
            }
            one("acs_access_group", v)
        }
        "acs/access_groups/list_accessible_entrances" => {
            let id = id_param(p, "acs_access_group_id", Resource::AccessGroup)?;
            p.finish()?;
            let g = app.get_access_group(ws, id).await?;
            let mut items = Vec::with_capacity(g.entrance_ids.len());
            for e in &g.entrance_ids {
                match app.get_entrance(ws, *e).await {
                    Ok(e) => items.push(json::acs_entrance(&convert::entrance(&e))),
                    // Removed from the system since the group was read.
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            one("acs_entrances", Value::Array(items))
        }
        "acs/access_groups/list_users" => {
            let id = id_param(p, "acs_access_group_id", Resource::AccessGroup)?;
            p.finish()?;
            let g = app.get_access_group(ws, id).await?;
            let filter = keygate_domain::acs::AcsUserFilter {
                acs_system_id: Some(g.acs_system_id),
                user_identity_id: None,
            };
            let scope = PageScope::workspace(ws, &["SeamListAccessGroupUsers"]);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let found = app.list_acs_users(ws, &filter, &page).await?;
            let items = found
                .items
                .iter()
                .filter(|u| u.access_group_ids.contains(&g.id))
                .map(|u| json::acs_user(&convert::acs_user(u)))
                .collect();
            one("acs_users", Value::Array(items))
        }
        "acs/access_groups/list" => {
            let system = p.string("acs_system_id")?.unwrap_or_default();
            p.finish()?;
            let parts = ["SeamListAcsAccessGroups", system.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let system = validate::optional_id("acs_system_id", &system, Resource::AccessSystem)?;
            let found = app.list_access_groups(ws, system, &page).await?;
            // Each group's type is its system's vendor type.
            let mut types = std::collections::HashMap::new();
            let mut items = Vec::with_capacity(found.items.len());
            for g in &found.items {
                let ext = match types.entry(g.acs_system_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(
                        app.get_access_system(ws, g.acs_system_id)
                            .await?
                            .external_type,
                    ),
                };
                let mut v = json::acs_access_group(&convert::access_group(g), ext);
                if let Some(m) = v.as_object_mut() {
                    m.insert("workspace_id".into(), ws.to_string().into());
                }
                items.push(v);
            }
            one("acs_access_groups", Value::Array(items))
        }

        // --- Access system users, their groups and credentials -------------------------------
        "acs/access_groups/add_user"
        | "acs/users/add_to_access_group"
        | "acs/access_groups/remove_user"
        | "acs/users/remove_from_access_group" => {
            let member = action.ends_with("add_user") || action.ends_with("add_to_access_group");
            let group = id_param(p, "acs_access_group_id", Resource::AccessGroup)?;
            if p.string("user_identity_id")?.is_some() {
                return Err(Error::invalid(
                    "user_identity_id",
                    "is not supported by Keygate here: give acs_user_id",
                ));
            }
            let user = id_param(p, "acs_user_id", Resource::AcsUser)?;
            p.finish()?;
            app.set_access_group_membership(ws, user, group, member)
                .await?;
            Ok(Map::new())
        }
        "acs/users/create" => {
            let schedule = p.object("access_schedule")?;
            let email = match p.string("email_address")? {
                Some(e) => Some(e),
                None => p.string("email")?,
            };
            let r = v1::CreateAcsUserRequest {
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
                acs_system_id: p.required("acs_system_id")?,
                full_name: p.string("full_name")?.unwrap_or_default(),
                email_address: email.unwrap_or_default(),
                phone_number: p.string("phone_number")?.unwrap_or_default(),
                access_schedule: match schedule {
                    None => None,
                    Some(s) => {
                        let at = |k: &str| -> Result<Option<prost_types::Timestamp>, Error> {
                            match crate::params::field(&s, "access_schedule", k)? {
                                None => Ok(None),
                                Some(t) => time::OffsetDateTime::parse(
                                    &t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .map(|t| Some(convert::ts(t)))
                                .map_err(|_| {
                                    Error::invalid(
                                        &format!("access_schedule.{k}"),
                                        "must be a date and time in ISO 8601 (RFC 3339)",
                                    )
                                }),
                            }
                        };
                        Some(v1::AccessSchedule {
                            starts_at: at("starts_at")?,
                            ends_at: at("ends_at")?,
                        })
                    }
                },
            };
            for (k, how) in [
                (
                    "acs_access_group_ids",
                    "add it with acs/users/add_to_access_group",
                ),
                (
                    "user_identity_id",
                    "link it with user_identities/add_acs_user",
                ),
            ] {
                if !p.strings(k)?.is_empty() {
                    return Err(Error::invalid(
                        k,
                        format!("is not supported by Keygate on create: {how}"),
                    ));
                }
            }
            p.finish()?;
            let u = app.create_acs_user(ws, r.into_command()?).await?;
            one("acs_user", json::acs_user(&convert::acs_user(&u)))
        }
        "acs/users/get" => {
            let id = id_param(p, "acs_user_id", Resource::AcsUser)?;
            p.finish()?;
            let u = app.get_acs_user(ws, id).await?;
            one("acs_user", json::acs_user(&convert::acs_user(&u)))
        }
        "acs/users/list" => {
            let r = v1::ListAcsUsersRequest {
                page_size: 0,
                page_token: String::new(),
                acs_system_id: p.string("acs_system_id")?.unwrap_or_default(),
                user_identity_id: p.string("user_identity_id")?.unwrap_or_default(),
            };
            let (limit, cursor) = paging(p)?;
            p.ignore(&["search", "created_before"]);
            p.finish()?;
            let parts = [
                "SeamListAcsUsers",
                r.acs_system_id.as_str(),
                r.user_identity_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let filter = filters::acs_users(&r)?;
            let found = app.list_acs_users(ws, &filter, &page).await?;
            let items = found
                .items
                .iter()
                .map(|u| json::acs_user(&convert::acs_user(u)))
                .collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("acs_users", items, ctx, &next)
        }
        "acs/users/delete" => {
            let id = id_param(p, "acs_user_id", Resource::AcsUser)?;
            p.finish()?;
            app.delete_acs_user(ws, id).await?;
            Ok(Map::new())
        }
        "acs/credentials/create" => {
            let mode = p.required("access_method")?;
            let r = v1::CreateCredentialRequest {
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
                acs_user_id: p.required("acs_user_id")?,
                access_method: mode_of(&mode, "access_method")?,
                acs_entrance_ids: p.strings("allowed_acs_entrance_ids")?,
                starts_at: ts(p.time("starts_at")?),
                ends_at: ts(p.time("ends_at")?),
                code: p.string("code")?.unwrap_or_default(),
                card_number: String::new(),
            };
            p.ignore(&["acs_system_id", "is_multi_phone_sync_credential"]);
            p.finish()?;
            let c = app.create_credential(ws, r.into_command()?).await?;
            one(
                "acs_credential",
                json::acs_credential(&convert::credential(
                    &c.credential,
                    &c.method,
                    c.entrances_direct,
                )),
            )
        }
        "acs/credentials/list" => {
            let r = v1::ListCredentialsRequest {
                page_size: 0,
                page_token: String::new(),
                acs_user_id: p.string("acs_user_id")?.unwrap_or_default(),
                acs_system_id: p.string("acs_system_id")?.unwrap_or_default(),
                user_identity_id: p.string("user_identity_id")?.unwrap_or_default(),
            };
            let (limit, cursor) = paging(p)?;
            p.ignore(&["created_before", "is_multi_phone_sync_credential"]);
            p.finish()?;
            let parts = [
                "SeamListAcsCredentials",
                r.acs_user_id.as_str(),
                r.acs_system_id.as_str(),
                r.user_identity_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let filter = filters::credentials(&r)?;
            let found = app.list_credentials(ws, &filter, &page).await?;
            let items = found
                .items
                .iter()
                .map(|c| {
                    json::acs_credential(&convert::credential(
                        &c.credential,
                        &c.method,
                        c.entrances_direct,
                    ))
                })
                .collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("acs_credentials", items, ctx, &next)
        }
        "acs/credentials/delete" => {
            let id = id_param(p, "acs_credential_id", Resource::Credential)?;
            p.finish()?;
            app.delete_credential(ws, id).await?;
            Ok(Map::new())
        }

        // --- Access grants ----------------------------------------------------------------------
        "access_grants/create" => {
            let identity = p.object("user_identity")?;
            let identity_id = p.string("user_identity_id")?;
            let entrances = p.strings("acs_entrance_ids")?;
            let requested = p.objects("requested_access_methods")?;
            let starts_at = p.time("starts_at")?;
            let ends_at = p.time("ends_at")?;
            let name = p.string("name")?.unwrap_or_default();
            let key = p.string("access_grant_key")?.unwrap_or_default();
            let reservation = p.string("reservation_key")?.unwrap_or_default();
            for unsupported in ["device_ids", "space_ids", "location_ids", "space_keys"] {
                if !p.strings(unsupported)?.is_empty() {
                    return Err(Error::invalid(
                        unsupported,
                        "is not supported by Keygate: name entrances with acs_entrance_ids",
                    ));
                }
            }
            p.ignore(&["customization_profile_id", "location"]);
            p.finish()?;
            let grantee = match (identity, identity_id) {
                (Some(_), Some(_)) => {
                    return Err(Error::invalid(
                        "user_identity",
                        "give user_identity or user_identity_id, not both",
                    ));
                }
                (Some(u), None) => Some(v1::create_access_grant_request::Grantee::UserIdentity(
                    v1::NewUserIdentity {
                        full_name: field(&u, "user_identity", "full_name")?.unwrap_or_default(),
                        email_address: field(&u, "user_identity", "email_address")?
                            .unwrap_or_default(),
                        phone_number: field(&u, "user_identity", "phone_number")?
                            .unwrap_or_default(),
                        user_identity_key: field(&u, "user_identity", "user_identity_key")?
                            .unwrap_or_default(),
                    },
                )),
                (None, Some(id)) => {
                    Some(v1::create_access_grant_request::Grantee::UserIdentityId(id))
                }
                (None, None) => None,
            };
            let mut methods = Vec::new();
            for (i, r) in requested.iter().enumerate() {
                let parent = format!("requested_access_methods[{i}]");
                let mode = field(r, &parent, "mode")?.unwrap_or_default();
                methods.push(v1::NewRequestedAccessMethod {
                    mode: mode_of(&mode, &format!("{parent}.mode"))?,
                    code: field(r, &parent, "code")?.unwrap_or_default(),
                });
            }
            let r = v1::CreateAccessGrantRequest {
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
                grantee,
                acs_entrance_ids: entrances,
                requested_access_methods: methods,
                starts_at: ts(starts_at),
                ends_at: ts(ends_at),
                access_grant_key: key,
                name,
                reservation_key: reservation,
            };
            let g = app.create_access_grant(ws, r.into_command()?).await?;
            one("access_grant", grant_json(app, &g))
        }
        "access_grants/get" => {
            let id = id_param(p, "access_grant_id", Resource::AccessGrant)?;
            p.finish()?;
            let g = app.get_access_grant(ws, id).await?;
            one("access_grant", grant_json(app, &g))
        }
        "access_grants/list" => {
            let r = v1::ListAccessGrantsRequest {
                page_size: 0,
                page_token: String::new(),
                user_identity_id: p.string("user_identity_id")?.unwrap_or_default(),
                acs_entrance_id: p.string("acs_entrance_id")?.unwrap_or_default(),
                acs_system_id: p.string("acs_system_id")?.unwrap_or_default(),
            };
            let wanted: Vec<keygate_domain::ids::AccessGrantId> =
                id_list(p, "access_grant_ids", Resource::AccessGrant)?;
            let key = p.string("access_grant_key")?.filter(|k| !k.is_empty());
            let reservation = p.string("reservation_key")?.filter(|k| !k.is_empty());
            let (limit, cursor) = paging(p)?;
            p.ignore(&["customer_key", "location_id", "space_id", "device_id"]);
            p.finish()?;
            let ids = joined(&wanted);
            let parts = [
                "SeamListAccessGrants",
                r.user_identity_id.as_str(),
                r.acs_entrance_id.as_str(),
                r.acs_system_id.as_str(),
                ids.as_str(),
                key.as_deref().unwrap_or(""),
                reservation.as_deref().unwrap_or(""),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let filter = keygate_store::GrantFilter {
                access_grant_ids: wanted,
                access_grant_key: key.clone(),
                reservation_key: reservation.clone(),
                ..filters::access_grants(&r)?
            };
            let found = app.list_access_grants(ws, &filter, &page).await?;
            let items = found.items.iter().map(|g| grant_json(app, g)).collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("access_grants", items, ctx, &next)
        }
        "access_grants/update" => {
            let id = p.required("access_grant_id")?;
            let starts_at = p.time("starts_at")?;
            let clear_end = p.has("ends_at") && p.string("ends_at")?.is_none();
            let ends_at = p.time("ends_at")?;
            let name = if p.has("name") {
                Some(p.string("name")?.unwrap_or_default())
            } else {
                None
            };
            p.finish()?;
            let r = v1::UpdateAccessGrantRequest {
                access_grant_id: id,
                starts_at: ts(starts_at),
                ends_at: ts(ends_at),
                add_acs_entrance_ids: Vec::new(),
                remove_acs_entrance_ids: Vec::new(),
                name,
                clear_ends_at: clear_end,
            };
            app.update_access_grant(ws, r.into_command()?).await?;
            Ok(Map::new())
        }
        "access_grants/delete" => {
            let id = id_param(p, "access_grant_id", Resource::AccessGrant)?;
            p.finish()?;
            app.delete_access_grant(ws, id).await?;
            Ok(Map::new())
        }

        // --- Access methods and action attempts --------------------------------------------------
        "access_methods/get" => {
            let id = id_param(p, "access_method_id", Resource::AccessMethod)?;
            p.finish()?;
            let m = app.get_access_method(ws, id).await?;
            one("access_method", method_json(app, ws, &m))
        }
        "access_methods/list" => {
            let r = v1::ListAccessMethodsRequest {
                page_size: 0,
                page_token: String::new(),
                access_grant_id: p.string("access_grant_id")?.unwrap_or_default(),
                user_identity_id: String::new(),
                acs_entrance_id: p.string("acs_entrance_id")?.unwrap_or_default(),
                acs_system_id: String::new(),
            };
            let key = p.string("access_grant_key")?.filter(|k| !k.is_empty());
            p.ignore(&["device_id", "space_id", "access_code_id"]);
            p.finish()?;
            let parts = [
                "SeamListAccessMethods",
                r.access_grant_id.as_str(),
                r.acs_entrance_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let mut filter = filters::access_methods(&r)?;
            if let Some(key) = key {
                // The grant with that key: its methods, or none when no grant has it (or the
                // grant named by access_grant_id is another).
                let by_key = keygate_store::GrantFilter {
                    access_grant_key: Some(key),
                    ..Default::default()
                };
                let one_page =
                    app.page_request(&PageScope::workspace(ws, &["SeamAccessGrantByKey"]), 1, "")?;
                let grant = app.list_access_grants(ws, &by_key, &one_page).await?;
                match (grant.items.first(), filter.access_grant_id) {
                    (Some(g), None) => filter.access_grant_id = Some(g.id),
                    (Some(g), Some(id)) if g.id == id => {}
                    _ => return one("access_methods", Value::Array(Vec::new())),
                }
            }
            let found = app.list_access_methods(ws, &filter, &page).await?;
            let items = found
                .items
                .iter()
                .map(|m| method_json(app, ws, m))
                .collect();
            one("access_methods", Value::Array(items))
        }
        "access_methods/delete" => {
            let id = id_param(p, "access_method_id", Resource::AccessMethod)?;
            p.finish()?;
            app.delete_access_method(ws, id).await?;
            Ok(Map::new())
        }
        "access_methods/encode" => {
            let r = v1::EncodeAccessMethodRequest {
                access_method_id: p.required("access_method_id")?,
                acs_encoder_id: p.required("acs_encoder_id")?,
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
            };
            p.finish()?;
            let a = app.encode_access_method(ws, r.into_command()?).await?;
            one("action_attempt", attempt_json(app, ws, &a).await?)
        }
        "access_methods/unlock_door" => {
            let r = v1::UnlockDoorRequest {
                access_method_id: p.required("access_method_id")?,
                acs_entrance_id: p.required("acs_entrance_id")?,
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
            };
            p.finish()?;
            let a = app.unlock_door(ws, r.into_command()?).await?;
            one("action_attempt", attempt_json(app, ws, &a).await?)
        }
        "action_attempts/get" => {
            let id = id_param(p, "action_attempt_id", Resource::ActionAttempt)?;
            p.finish()?;
            let a = app.get_action_attempt(ws, id).await?;
            one("action_attempt", attempt_json(app, ws, &a).await?)
        }

        "action_attempts/list" => {
            let ids = p.strings("action_attempt_ids")?;
            if p.string("device_id")?.is_some() {
                return Err(Error::invalid(
                    "device_id",
                    "is not supported by Keygate: give action_attempt_ids",
                ));
            }
            // The ids are the listing: one page holds them all.
            paging(p)?;
            p.finish()?;
            if ids.len() > MAX_PAGE_SIZE as usize {
                return Err(Error::invalid(
                    "action_attempt_ids",
                    format!("at most {MAX_PAGE_SIZE} ids"),
                ));
            }
            let mut items = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let id = validate::id(
                    &format!("action_attempt_ids[{i}]"),
                    id,
                    Resource::ActionAttempt,
                )?;
                let a = app.get_action_attempt(ws, id).await?;
                items.push(attempt_json(app, ws, &a).await?);
            }
            paged("action_attempts", items, ctx, "")
        }

        // --- Events -----------------------------------------------------------------------------
        "events/get" => {
            let id = id_param(p, "event_id", Resource::Event)?;
            p.finish()?;
            let e = app.get_event(ws, id).await?;
            one("event", json::event(&convert::event(&e.event, e.cursor)))
        }
        "events/list" => {
            let mut event_types = p.strings("event_types")?;
            if let Some(t) = p.string("event_type")? {
                event_types.push(t);
            }
            let since = p.time("since")?;
            let between = p.strings("between")?;
            let (after, before) = match between.as_slice() {
                [] => (since, None),
                [a, b] => {
                    let parse = |s: &str| {
                        time::OffsetDateTime::parse(
                            s,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .map_err(|_| Error::invalid("between", "must be two ISO 8601 times"))
                    };
                    (Some(parse(a)?), Some(parse(b)?))
                }
                _ => return Err(Error::invalid("between", "must be two ISO 8601 times")),
            };
            let limit = p.int("limit")?.unwrap_or(i64::from(MAX_PAGE_SIZE));
            let r = v1::ListEventsRequest {
                page_size: i32::try_from(limit.clamp(1, i64::from(MAX_PAGE_SIZE))).unwrap_or(1),
                page_token: String::new(),
                event_types,
                access_grant_id: p.string("access_grant_id")?.unwrap_or_default(),
                access_method_id: p.string("access_method_id")?.unwrap_or_default(),
                acs_system_id: p.string("acs_system_id")?.unwrap_or_default(),
                acs_entrance_id: p.string("acs_entrance_id")?.unwrap_or_default(),
                user_identity_id: p.string("user_identity_id")?.unwrap_or_default(),
                occurred_after: ts(after),
                occurred_before: ts(before),
            };
            p.ignore(&["customer_key", "unstable_offset"]);
            p.finish()?;
            let cmd = r.into_command()?;
            let key = format!("{:?}", cmd.filter);
            let parts = ["SeamListEvents", key.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, cmd.page_size, "")?;
            let found = app.list_events(ws, &cmd.filter, &page).await?;
            let items = found
                .items
                .iter()
                .map(|e| json::event(&convert::event(&e.event, e.cursor.clone())))
                .collect();
            one("events", Value::Array(items))
        }

        // --- User identities and Instant Keys ------------------------------------------------
        "user_identities/create" => {
            let r = v1::CreateUserIdentityRequest {
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
                user_identity_key: p.string("user_identity_key")?.unwrap_or_default(),
                full_name: p.string("full_name")?.unwrap_or_default(),
                email_address: p.string("email_address")?.unwrap_or_default(),
                phone_number: p.string("phone_number")?.unwrap_or_default(),
            };
            if !p.strings("acs_system_ids")?.is_empty() {
                return Err(Error::invalid(
                    "acs_system_ids",
                    "is not supported by Keygate: link access system users with add_acs_user",
                ));
            }
            p.finish()?;
            let u = app.create_user_identity(ws, r.into_command()?).await?;
            one(
                "user_identity",
                json::user_identity(&convert::identity_view(&u), &ws.to_string()),
            )
        }
        "user_identities/get" => {
            let id = p.string("user_identity_id")?;
            let key = p.string("user_identity_key")?;
            p.finish()?;
            let u = match (id, key) {
                (Some(id), None) => {
                    let id = validate::id("user_identity_id", &id, Resource::UserIdentity)?;
                    app.get_user_identity(ws, id).await?
                }
                (None, Some(key)) => {
                    let filter = validate::user_identity_filter(&key, "")?;
                    let scope = PageScope::workspace(ws, &["SeamGetUserIdentityByKey"]);
                    let page = app.page_request(&scope, 1, "")?;
                    let found: Page<_> = app.list_user_identities(ws, &filter, &page).await?;
                    found
                        .items
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::not_found(Resource::UserIdentity, key))?
                }
                _ => {
                    return Err(Error::invalid(
                        "user_identity_id",
                        "give user_identity_id or user_identity_key",
                    ));
                }
            };
            one(
                "user_identity",
                json::user_identity(&convert::identity_view(&u), &ws.to_string()),
            )
        }
        "user_identities/list" => {
            let search = p.string("search")?;
            let (limit, cursor) = paging(p)?;
            p.ignore(&["credential_manager_acs_system_id", "created_before"]);
            p.finish()?;
            let parts = ["SeamListUserIdentities", search.as_deref().unwrap_or("")];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, limit, &cursor)?;
            let filter = keygate_domain::model::UserIdentityFilter::default();
            let found = app.list_user_identities(ws, &filter, &page).await?;
            let needle = search.as_deref().map(str::to_lowercase);
            let items = found
                .items
                .iter()
                .map(convert::identity_view)
                .filter(|u| {
                    needle.as_ref().is_none_or(|n| {
                        [
                            &u.full_name,
                            &u.email_address,
                            &u.phone_number,
                            &u.user_identity_key,
                        ]
                        .iter()
                        .any(|f| f.to_lowercase().contains(n))
                    })
                })
                .map(|u| json::user_identity(&u, &ws.to_string()))
                .collect();
            let next = app.tokens.seal(&scope, found.next_after)?;
            paged("user_identities", items, ctx, &next)
        }
        "user_identities/update" => {
            // Absent: unchanged; null: cleared; a value: set.
            let opt = |p: &mut Params, k: &str| -> Result<Option<String>, Error> {
                if p.has(k) {
                    Ok(Some(p.string(k)?.unwrap_or_default()))
                } else {
                    Ok(None)
                }
            };
            let r = v1::UpdateUserIdentityRequest {
                user_identity_id: p.required("user_identity_id")?,
                user_identity_key: opt(p, "user_identity_key")?,
                full_name: opt(p, "full_name")?,
                email_address: opt(p, "email_address")?,
                phone_number: opt(p, "phone_number")?,
            };
            p.finish()?;
            let (id, patch) = r.into_command()?;
            app.update_user_identity(ws, id, &patch).await?;
            Ok(Map::new())
        }
        "user_identities/delete" => {
            let id = id_param(p, "user_identity_id", Resource::UserIdentity)?;
            p.finish()?;
            app.delete_user_identity(ws, id).await?;
            Ok(Map::new())
        }
        "user_identities/add_acs_user" => {
            let identity = id_param(p, "user_identity_id", Resource::UserIdentity)?;
            let user = id_param(p, "acs_user_id", Resource::AcsUser)?;
            p.finish()?;
            app.link_acs_user(ws, user, identity).await?;
            Ok(Map::new())
        }
        "user_identities/remove_acs_user" => {
            let identity = id_param(p, "user_identity_id", Resource::UserIdentity)?;
            let user = id_param(p, "acs_user_id", Resource::AcsUser)?;
            p.finish()?;
            app.unlink_acs_user(ws, user, identity).await?;
            Ok(Map::new())
        }
        "user_identities/list_acs_users" | "user_identities/list_acs_systems" => {
            let id = id_param(p, "user_identity_id", Resource::UserIdentity)?;
            p.finish()?;
            let identity = app.get_user_identity(ws, id).await?;
            let mut users = Vec::new();
            for u in &convert::identity_view(&identity).acs_user_ids {
                let u = validate::id("acs_user_ids", u, Resource::AcsUser)?;
                users.push(app.get_acs_user(ws, u).await?);
            }
            if action.ends_with("list_acs_users") {
                let items = users
                    .iter()
                    .map(|u| json::acs_user(&convert::acs_user(u)))
                    .collect();
                return one("acs_users", Value::Array(items));
            }
            let mut systems: Vec<_> = users.iter().map(|u| u.acs_system_id).collect();
            systems.sort_unstable_by_key(ToString::to_string);
            systems.dedup();
            let mut items = Vec::with_capacity(systems.len());
            for s in systems {
                let s = app.get_access_system(ws, s).await?;
                items.push(json::acs_system(&convert::access_system(&s)));
            }
            one("acs_systems", Value::Array(items))
        }
        "user_identities/generate_instant_key" => {
            let max_use_count = p.int("max_use_count")?.unwrap_or(0);
            let r = v1::GenerateInstantKeyRequest {
                request_id: ctx.idempotency_key.clone().unwrap_or_default(),
                user_identity_id: p.required("user_identity_id")?,
                max_use_count: i32::try_from(max_use_count)
                    .map_err(|_| Error::invalid("max_use_count", "is too large"))?,
                expires_at: None,
            };
            p.ignore(&["customization_profile_id"]);
            p.finish()?;
            let (view, _url) = app.generate_instant_key(ws, r.into_command()?).await?;
            let k = convert::key_view(&app.links, &view)?;
            one("instant_key", json::instant_key(&k))
        }
        "instant_keys/get" => {
            let id = p.string("instant_key_id")?;
            let url = p.string("instant_key_url")?;
            p.finish()?;
            let lookup = match (id, url) {
                (Some(id), None) => v1::get_instant_key_request::Lookup::InstantKeyId(id),
                (None, Some(url)) => v1::get_instant_key_request::Lookup::InstantKeyUrl(url),
                _ => {
                    return Err(Error::invalid(
                        "instant_key_id",
                        "give instant_key_id or instant_key_url",
                    ));
                }
            };
            let r = v1::GetInstantKeyRequest {
                lookup: Some(lookup),
            };
            let view = app.get_instant_key(ws, r.into_command()?).await?;
            one(
                "instant_key",
                json::instant_key(&convert::key_view(&app.links, &view)?),
            )
        }
        "instant_keys/list" => {
            let user = p.string("user_identity_id")?.unwrap_or_default();
            p.finish()?;
            let parts = ["SeamListInstantKeys", user.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let user = validate::optional_id("user_identity_id", &user, Resource::UserIdentity)?;
            let found = app.list_instant_keys(ws, user, &page).await?;
            let items = found
                .items
                .iter()
                .map(|v| convert::key_view(&app.links, v).map(|k| json::instant_key(&k)))
                .collect::<Result<Vec<_>, _>>()?;
            one("instant_keys", Value::Array(items))
        }
        "instant_keys/delete" => {
            let id = id_param(p, "instant_key_id", Resource::InstantKey)?;
            p.finish()?;
            app.revoke_instant_key(ws, id).await?;
            Ok(Map::new())
        }

        // --- Webhooks ---------------------------------------------------------------------------
        "webhooks/create" => {
            let r = v1::CreateWebhookRequest {
                url: p.required("url")?,
                event_types: p.strings("event_types")?,
                ..Default::default()
            };
            p.finish()?;
            let (w, secret) = app.create_webhook(ws, r.into_command()?).await?;
            one("webhook", json::webhook(&convert::webhook(&w), &secret))
        }
        "webhooks/get" => {
            let id = id_param(p, "webhook_id", Resource::Webhook)?;
            p.finish()?;
            let w = app.get_webhook(ws, id).await?;
            one("webhook", json::webhook(&convert::webhook(&w), ""))
        }
        "webhooks/list" => {
            p.finish()?;
            let scope = PageScope::workspace(ws, &["SeamListWebhooks"]);
            let page = app.page_request(&scope, MAX_PAGE_SIZE as i32, "")?;
            let found = app.list_webhooks(ws, &page).await?;
            let items = found
                .items
                .iter()
                .map(|w| json::webhook(&convert::webhook(w), ""))
                .collect();
            one("webhooks", Value::Array(items))
        }
        "webhooks/update" => {
            // Seam requires event_types; an empty list means every type, as at create.
            if !p.has("event_types") {
                return Err(Error::invalid("event_types", "is required"));
            }
            let r = v1::UpdateWebhookRequest {
                webhook_id: p.required("webhook_id")?,
                event_types: p.strings("event_types")?,
            };
            p.finish()?;
            app.update_webhook(ws, r.into_command()?).await?;
            Ok(Map::new())
        }
        "webhooks/delete" => {
            let id = id_param(p, "webhook_id", Resource::Webhook)?;
            p.finish()?;
            app.delete_webhook(ws, id).await?;
            Ok(Map::new())
        }
        _ => Err(Error::NotImplemented { rpc: "this route" }),
    }
}
