//! Console sessions: who signed in, kept on the server in the cache under an opaque random id
//! that the browser holds in a cookie. The cache is sealed when it is shared (Redis sees only
//! ciphertext), so a session started on one replica is read by every other; the in-process
//! cache of the embedded default keeps it in this process. The cache key is a hash of the id, so
//! neither Redis nor a log of its keys holds a usable cookie value.
//!
//! A session carries its own CSRF token (random, compared in constant time) and, for the
//! operator, the workspace chosen in the switcher. An API key's session is re-checked against the
//! key on every request by the console ([`crate::auth::Authenticator::recheck`]), so revoking
//! the key ends the session.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_cache::Cache;
use keygate_domain::Error;
use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::tokens::tokens_equal;

/// How long a session lasts from sign-in, unless signed out before.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// A signed-in person, as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub principal: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The operator's chosen workspace (the switcher); an API key's session is always its
    /// key's workspace.
    pub selected: Option<WorkspaceId>,
    pub expires_at: OffsetDateTime,
}

impl Session {
    /// The workspace the pages act in: the key's, or the operator's choice.
    pub fn workspace(&self) -> Option<WorkspaceId> {
        match self.principal {
            Principal::Workspace { workspace_id, .. } => Some(workspace_id),
            Principal::Operator => self.selected,
            Principal::Anonymous => None,
        }
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && tokens_equal(token, &self.csrf)
    }

    fn encode(&self) -> String {
        let (kind, ws, key) = match self.principal {
            Principal::Workspace {
                workspace_id,
                api_key_id,
            } => ("k", workspace_id.to_string(), api_key_id.to_string()),
            Principal::Operator => ("o", String::new(), String::new()),
            Principal::Anonymous => ("a", String::new(), String::new()),
        };
        let selected = self.selected.map(|w| w.to_string()).unwrap_or_default();
        format!(
            "v1|{kind}|{ws}|{key}|{}|{}|{selected}",
            self.csrf,
            self.expires_at.unix_timestamp()
        )
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(raw).ok()?;
        let mut p = s.split('|');
        if p.next()? != "v1" {
            return None;
        }
        let (kind, ws, key, csrf, exp, selected) = (
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
        );
        let principal = match kind {
            "k" => Principal::Workspace {
                workspace_id: ws.parse().ok()?,
                api_key_id: key.parse::<ApiKeyId>().ok()?,
            },
            "o" => Principal::Operator,
            _ => return None,
        };
        Some(Self {
            principal,
            csrf: csrf.to_owned(),
            selected: if selected.is_empty() {
                None
            } else {
                Some(selected.parse().ok()?)
            },
            expires_at: OffsetDateTime::from_unix_timestamp(exp.parse().ok()?).ok()?,
        })
    }
}

/// Starts, reads and ends console sessions in the cache.
#[derive(Clone)]
pub struct Sessions {
    cache: Arc<dyn Cache>,
    ttl: Duration,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The cache key of a session: a hash of its id (this module owns these keys).
fn cache_key(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    keygate_cache::key("console_session", "global", &hex)
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("the session cache: {e}"),
    }
}

impl Sessions {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        Self { cache, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `principal`: its id (for the cookie, never logged) and the session.
    pub async fn start(&self, principal: Principal) -> Result<(String, Session), Error> {
        let id = random_token();
        let session = Session {
            principal,
            csrf: random_token(),
            selected: None,
            expires_at: OffsetDateTime::now_utc() + self.ttl,
        };
        self.save(&id, &session).await?;
        Ok((id, session))
    }

    /// The session of a cookie's id: `None` when unknown, expired or unreadable.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, Error> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let Some(raw) = self.cache.get(&cache_key(id)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Ok(Session::decode(&raw).filter(|s| s.expires_at > OffsetDateTime::now_utc()))
    }

    /// Stores the operator's choice of workspace, keeping the session's expiry.
    pub async fn select_workspace(
        &self,
        id: &str,
        mut session: Session,
        ws: WorkspaceId,
    ) -> Result<Session, Error> {
        session.selected = Some(ws);
        self.save(id, &session).await?;
        Ok(session)
    }

    /// Signs out: the session is gone for every replica sharing the cache.
    pub async fn end(&self, id: &str) -> Result<(), Error> {
        self.cache.delete(&cache_key(id)).await.map_err(unavailable)
    }

    async fn save(&self, id: &str, session: &Session) -> Result<(), Error> {
        let left = session.expires_at - OffsetDateTime::now_utc();
        let ttl = Duration::try_from(left).unwrap_or(Duration::ZERO);
        if ttl.is_zero() {
            return Err(Error::Unauthenticated {
                reason: keygate_domain::ErrorReason::MissingCredentials,
                message: "the session has expired: sign in again".into(),
            });
        }
        self.cache
            .set(&cache_key(id), session.encode().as_bytes(), ttl)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_cache::InProcessCache;

    #[tokio::test]
    async fn sessions_round_trip_and_end() {
        let s = Sessions::new(Arc::new(InProcessCache::new(100)), DEFAULT_SESSION_TTL);
        let ws = WorkspaceId::new();
        let p = Principal::Workspace {
            workspace_id: ws,
            api_key_id: ApiKeyId::new(),
        };
        let (id, started) = s.start(p).await.expect("start");
        let read = s.get(&id).await.expect("get").expect("a session");
        assert_eq!(read.principal, p);
        assert_eq!(read.workspace(), Some(ws));
        assert!(read.csrf_matches(&started.csrf));
        assert!(!read.csrf_matches(""));
        assert!(!read.csrf_matches("forged"));
        assert!(s.get("unknown").await.expect("get").is_none());
        s.end(&id).await.expect("end");
        assert!(s.get(&id).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn the_operator_chooses_a_workspace() {
        let s = Sessions::new(Arc::new(InProcessCache::new(100)), DEFAULT_SESSION_TTL);
        let (id, started) = s.start(Principal::Operator).await.expect("start");
        assert_eq!(started.workspace(), None);
        let ws = WorkspaceId::new();
        s.select_workspace(&id, started, ws).await.expect("select");
        let read = s.get(&id).await.expect("get").expect("a session");
        assert_eq!(read.workspace(), Some(ws));
    }
}
