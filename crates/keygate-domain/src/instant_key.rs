//! Instant Keys: links that open a person's doors from a web page, and the client session tokens
//! of mobile keys. Pure functions over a server secret shared by every replica (from the
//! configuration, `KEYGATE_INSTANT_KEY_SECRET`), so nothing secret about a key is stored:
//!
//! - the link token is `HMAC-SHA256(secret, "instant-key:v1:" + instant_key_id)`, 256 bits in
//!   base64url. The store keeps only its SHA-256, to find the key from a link; the link itself is
//!   derived again from the id whenever a read must return it;
//! - a client session token is a short-lived statement "workspace W, user identity U, until T"
//!   signed with a key derived for that purpose, useless to the gRPC API (it is not an API key).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::ids::{AccessGrantId, InstantKeyId, UserIdentityId, WorkspaceId};

type HmacSha256 = Hmac<Sha256>;

/// The length of a link token: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;
/// Longest life of a key generated without `expires_at`.
pub const DEFAULT_LIFETIME: time::Duration = time::Duration::days(30);
/// How long a client session token is accepted.
pub const CLIENT_SESSION_TTL: time::Duration = time::Duration::minutes(15);
const CLIENT_SESSION_PREFIX: &str = "kcs1";

/// An Instant Key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstantKey {
    pub id: InstantKeyId,
    pub workspace_id: WorkspaceId,
    pub user_identity_id: UserIdentityId,
    /// The grant that created it (a `mobile_key` requested on a grant); `None` when it was
    /// generated for the user identity, in which case it opens every mobile credential of theirs.
    pub access_grant_id: Option<AccessGrantId>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub max_use_count: u32,
    pub use_count: u32,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Why a key does not open anything right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inactive {
    Revoked,
    Expired,
    /// Claimed by as many devices as it may be.
    Exhausted,
}

impl InstantKey {
    /// `instant_key.revoked`: the event of revoking this key at `at`.
    pub fn revoked_event(&self, at: OffsetDateTime) -> crate::events::NewEvent {
        crate::applied::instant_key_revoked(
            self.id,
            self.user_identity_id,
            self.access_grant_id,
            at,
        )
    }

    /// `instant_key.created`: the event of a new key (with its grant, when the grant made it).
    pub fn created_event(&self) -> crate::events::NewEvent {
        let e = crate::events::NewEvent::new(crate::events::INSTANT_KEY_CREATED, self.created_at)
            .user(self.user_identity_id)
            .instant_key(self.id);
        match self.access_grant_id {
            Some(g) => e.grant(g),
            None => e,
        }
    }

    /// Whether the key works at `now` for a device; `claimed` says whether this device already
    /// holds one of its claims.
    pub fn check(&self, now: OffsetDateTime, claimed: bool) -> Result<(), Inactive> {
        if self.revoked_at.is_some() {
            return Err(Inactive::Revoked);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(Inactive::Expired);
        }
        if !claimed && self.use_count >= self.max_use_count {
            return Err(Inactive::Exhausted);
        }
        Ok(())
    }
}

/// The server secret, and everything derived from it. Previous secrets (after a rotation) are
/// only used to verify client session tokens signed before it; links and new tokens always come
/// from the current one.
#[derive(Clone)]
pub struct KeySecret {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

impl KeySecret {
    pub fn new(secret: Vec<u8>) -> Self {
        Self::with_previous(secret, Vec::new())
    }

    /// The current secret, and `previous` ones whose client session tokens are still accepted.
    pub fn with_previous(current: Vec<u8>, previous: Vec<Vec<u8>>) -> Self {
        Self { current, previous }
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut m = match HmacSha256::new_from_slice(&self.current) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        m.update(purpose.as_bytes());
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// The link token of key `id`.
    pub fn link_token(&self, id: InstantKeyId) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("instant-key:v1:", id.to_string().as_bytes()))
    }

    /// A client session token for `user` of `workspace`, valid until `now + CLIENT_SESSION_TTL`.
    pub fn client_session_token(
        &self,
        workspace: WorkspaceId,
        user: UserIdentityId,
        now: OffsetDateTime,
    ) -> String {
        // Rounded up to the minute, so every read within a minute mints the same token (reads
        // of one method stay equal, cached or not); it lives 15 to 16 minutes.
        let exp = ((now + CLIENT_SESSION_TTL).unix_timestamp() + 59).div_euclid(60) * 60;
        let payload = format!("{workspace}.{user}.{exp}");
        let sig = self.mac("client-session:v1:", payload.as_bytes());
        format!(
            "{CLIENT_SESSION_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The workspace and user identity of a client session token that is genuine and unexpired.
    pub fn verify_client_session(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Option<(WorkspaceId, UserIdentityId)> {
        let mut parts = token.split('.');
        let (Some(CLIENT_SESSION_PREFIX), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let genuine = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|secret| {
                HmacSha256::new_from_slice(secret).is_ok_and(|mut m| {
                    m.update(b"client-session:v1:");
                    m.update(&payload);
                    m.verify_slice(&sig).is_ok()
                })
            });
        if !genuine {
            return None;
        }
        let payload = String::from_utf8(payload).ok()?;
        let mut fields = payload.split('.');
        let ws = fields.next()?.parse().ok()?;
        let user = fields.next()?.parse().ok()?;
        let exp: i64 = fields.next()?.parse().ok()?;
        (fields.next().is_none() && exp > now.unix_timestamp()).then_some((ws, user))
    }
}

/// Instant Key links and client session tokens for one server: the secret (from the
/// configuration, shared by every replica; set once it is loaded) and the public URL of the HTTP port.
#[derive(Clone, Debug)]
pub struct Links {
    secret: std::sync::Arc<std::sync::OnceLock<KeySecret>>,
    public_url: String,
}

impl Links {
    pub fn new(public_url: &str) -> Self {
        Self {
            secret: std::sync::Arc::default(),
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Sets the secret; later calls keep the first.
    pub fn set_secret(&self, secret: Vec<u8>) {
        let _ = self.secret.set(KeySecret::new(secret));
    }

    /// Sets the secret and the previous ones still accepted for client session tokens; later
    /// calls keep the first.
    pub fn set_secrets(&self, current: Vec<u8>, previous: Vec<Vec<u8>>) {
        let _ = self.secret.set(KeySecret::with_previous(current, previous));
    }

    /// The secret, once set; `Unavailable` before the store answered.
    pub fn secret(&self) -> Result<&KeySecret, crate::Error> {
        self.secret.get().ok_or_else(|| crate::Error::Unavailable {
            message: "the Instant Key secret is not loaded yet".into(),
        })
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The link of key `id` and the SHA-256 of its token (what the store keeps).
    pub fn mint(&self, id: InstantKeyId) -> Result<(String, String), crate::Error> {
        let token = self.secret()?.link_token(id);
        Ok((link(&self.public_url, &token), token_hash(&token)))
    }

    /// The link of key `id`.
    pub fn url(&self, id: InstantKeyId) -> Result<String, crate::Error> {
        Ok(link(&self.public_url, &self.secret()?.link_token(id)))
    }

    /// The QR code image (SVG) of key `id`'s link.
    pub fn qr_code_url(&self, id: InstantKeyId) -> Result<String, crate::Error> {
        Ok(format!("{}/qr.svg", self.url(id)?))
    }
}

/// What the store keeps of a link token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `token` has the shape of a link token (a truncated or padded one is not worth a lookup).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The link of a key: `<public_url>/ik/<token>`.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{}/ik/{token}", public_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> KeySecret {
        KeySecret::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn link_tokens_are_stable_distinct_and_well_formed() {
        let (a, b) = (InstantKeyId::new(), InstantKeyId::new());
        let s = secret();
        assert_eq!(s.link_token(a), s.link_token(a));
        assert_ne!(s.link_token(a), s.link_token(b));
        assert!(well_formed(&s.link_token(a)));
        assert!(!well_formed(&s.link_token(a)[..40]));
        let other = KeySecret::new(b"another secret".to_vec());
        assert_ne!(s.link_token(a), other.link_token(a));
        assert_eq!(token_hash("x").len(), 64);
    }

    #[test]
    fn client_sessions_verify_only_while_genuine_and_fresh() {
        let s = secret();
        let now = crate::model::now();
        let (ws, user) = (WorkspaceId::new(), UserIdentityId::new());
        let t = s.client_session_token(ws, user, now);
        assert_eq!(s.verify_client_session(&t, now), Some((ws, user)));
        assert_eq!(
            s.verify_client_session(&t, now + CLIENT_SESSION_TTL - time::Duration::seconds(1)),
            Some((ws, user)),
            "still fresh"
        );
        assert_eq!(
            s.verify_client_session(&t, now + CLIENT_SESSION_TTL + time::Duration::seconds(61)),
            None,
            "expired"
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(s.verify_client_session(&forged, now), None, "tampered");
        assert_eq!(
            KeySecret::new(b"x".to_vec()).verify_client_session(&t, now),
            None,
            "another server's secret"
        );
        assert_eq!(s.verify_client_session("kg_abc_def", now), None);
    }

    #[test]
    fn a_rotated_secret_still_verifies_earlier_sessions_but_mints_from_the_new_one() {
        let old = secret();
        let now = crate::model::now();
        let (ws, user) = (WorkspaceId::new(), UserIdentityId::new());
        let before = old.client_session_token(ws, user, now);
        let rotated = KeySecret::with_previous(
            b"the new secret, 32 bytes or more!".to_vec(),
            vec![b"0123456789abcdef0123456789abcdef".to_vec()],
        );
        assert_eq!(
            rotated.verify_client_session(&before, now),
            Some((ws, user)),
            "a session signed before the rotation"
        );
        let after = rotated.client_session_token(ws, user, now);
        assert_ne!(after, before, "new sessions are signed with the new secret");
        assert_eq!(old.verify_client_session(&after, now), None);
        let id = InstantKeyId::new();
        assert_ne!(rotated.link_token(id), old.link_token(id));
        let dropped = KeySecret::new(b"the new secret, 32 bytes or more!".to_vec());
        assert_eq!(dropped.verify_client_session(&before, now), None);
    }

    #[test]
    fn keys_stop_when_revoked_expired_or_exhausted() {
        let now = crate::model::now();
        let k = InstantKey {
            id: InstantKeyId::new(),
            workspace_id: WorkspaceId::new(),
            user_identity_id: UserIdentityId::new(),
            access_grant_id: None,
            created_at: now,
            expires_at: Some(now + time::Duration::hours(1)),
            max_use_count: 1,
            use_count: 1,
            revoked_at: None,
        };
        assert_eq!(k.check(now, true), Ok(()));
        assert_eq!(k.check(now, false), Err(Inactive::Exhausted));
        assert_eq!(
            k.check(now + time::Duration::hours(2), true),
            Err(Inactive::Expired)
        );
        let revoked = InstantKey {
            revoked_at: Some(now),
            ..k
        };
        assert_eq!(revoked.check(now, true), Err(Inactive::Revoked));
    }
}
