//! Secrets that are derived, never stored, filled into responses after any cache read: the
//! Instant Key link of grants and mobile keys, and the client session token of issued mobile keys.

use keygate_domain::ids::{UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::Links;
use keygate_proto::v1;

/// Sets `instant_key_url` from `instant_key_id`.
pub fn fill_grant(links: &Links, g: &mut v1::AccessGrant) {
    if let Ok(id) = g.instant_key_id.parse()
        && let Ok(url) = links.url(id)
    {
        g.instant_key_url = url;
    }
}

/// Sets `instant_key_url` and, on an issued mobile key, a fresh `client_session_token`.
pub fn fill_method(links: &Links, ws: WorkspaceId, m: &mut v1::AccessMethod) {
    if let Ok(id) = m.instant_key_id.parse()
        && let Ok(url) = links.url(id)
    {
        m.instant_key_url = url;
    }
    if m.mode == v1::AccessMethodMode::MobileKey as i32
        && m.is_issued
        && let Ok(user) = m.user_identity_id.parse::<UserIdentityId>()
        && let Ok(secret) = links.secret()
    {
        m.client_session_token =
            secret.client_session_token(ws, user, keygate_domain::model::now());
    }
}
