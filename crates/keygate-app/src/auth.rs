//! Who is calling: an API key resolves to its workspace; the operator API takes the admin token.
//! Lookups go through the cache (invalidated on revocation) and fall back to the store.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use keygate_cache::Cache;
use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use keygate_domain::{Error, ErrorReason};
use keygate_store::ApiKeyStore;

use crate::tokens::{parse_api_key, secret_matches, tokens_equal};

/// The authenticated caller, attached to the request's extensions by the auth layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An API key acting in its workspace.
    Workspace {
        workspace_id: WorkspaceId,
        api_key_id: ApiKeyId,
    },
    /// The operator, through `keygate.admin.v1`.
    Operator,
    /// A call that needs no credentials (health checks, reflection).
    Anonymous,
}

impl Principal {
    /// The workspace of a workspace call; anything else is refused (the auth layer guarantees
    /// `keygate.v1` calls carry a workspace, so this is a second lock, not the first).
    pub fn workspace(&self) -> Result<WorkspaceId, Error> {
        match self {
            Self::Workspace { workspace_id, .. } => Ok(*workspace_id),
            _ => Err(unauthenticated(
                ErrorReason::InvalidApiKey,
                "an API key is required",
            )),
        }
    }
}

pub(crate) fn unauthenticated(reason: ErrorReason, message: &str) -> Error {
    Error::Unauthenticated {
        reason,
        message: message.to_owned(),
    }
}

/// Which credentials a path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    None,
    AdminToken,
    ApiKey,
}

/// Health checks and reflection are open (probes and `grpcurl` need them; they reveal only the
/// public contract). The operator API needs the admin token. Everything else needs an API key.
pub fn guard_for(path: &str) -> Guard {
    const OPEN: [&str; 4] = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    if OPEN.contains(&path) {
        Guard::None
    } else if path.starts_with("/keygate.admin.") {
        Guard::AdminToken
    } else {
        Guard::ApiKey
    }
}

/// How long a resolved API key is trusted from the cache. Revocation deletes the entry, so this
/// bounds staleness only across replicas without a shared Redis.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long "no such key" is remembered for a key id. Requests with made-up keys then cost a
/// cache read, not a store query, each time the same id comes back. Creating a key evicts its
/// id (through the tracker), so a new key is never hidden by an entry written before it existed.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(15);

/// What the cache holds for a key id the store does not know. A record is longer (it starts
/// with a 36-character workspace id), so the two cannot be mistaken for each other.
const NOT_FOUND: &[u8] = b"not_found";

/// What a cache read said about a key id.
enum Cached {
    Key(CachedKey),
    NotFound,
    Unknown,
}

/// Resolves credentials to a principal.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn ApiKeyStore>,
    cache: Arc<dyn Cache>,
    admin_token: Option<Arc<str>>,
}

/// What the cache keeps for a key: enough to authenticate without the store.
struct CachedKey {
    workspace_id: WorkspaceId,
    revoked: bool,
    secret_sha256: Vec<u8>,
}

impl CachedKey {
    fn encode(&self) -> Vec<u8> {
        let mut v = format!("{}|{}|", self.workspace_id, u8::from(self.revoked)).into_bytes();
        v.extend(&self.secret_sha256);
        v
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let ws = b.get(..36)?;
        let rest = b.get(36..)?;
        let (flag, hash) = (rest.get(..3)?, rest.get(3..)?);
        Some(Self {
            workspace_id: std::str::from_utf8(ws).ok()?.parse().ok()?,
            revoked: match flag {
                b"|1|" => true,
                b"|0|" => false,
                _ => return None,
            },
            secret_sha256: hash.to_vec(),
        })
    }
}

/// The cache key of an API key's record. This module owns it; the tracker evicts through
/// [`evict_api_key`].
pub(crate) fn api_key_cache_key(id: ApiKeyId) -> String {
    keygate_cache::key("api_key", "global", &id.to_string())
}

/// Drops a key's cached record (or cached absence) after it changed in the store (created or
/// revoked), so this replica, and every replica sharing the cache, sees the change at once. A
/// failure is logged: the entry then expires within its TTL.
pub(crate) async fn evict_api_key(cache: &dyn Cache, id: ApiKeyId) {
    if let Err(e) = cache.delete(&api_key_cache_key(id)).await {
        tracing::warn!(error = %e, api_key_id = %id, "could not evict the key's cache entry; it expires within its TTL (60 s, 15 s for an unknown id)");
    }
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        cache: Arc<dyn Cache>,
        admin_token: Option<String>,
    ) -> Self {
        Self {
            store,
            cache,
            admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// Authenticates a call to `path` from its headers.
    pub async fn authenticate(&self, path: &str, headers: &HeaderMap) -> Result<Principal, Error> {
        match guard_for(path) {
            Guard::None => Ok(Principal::Anonymous),
            Guard::AdminToken => self.operator(headers),
            Guard::ApiKey => self.api_key(headers).await,
        }
    }

    fn operator(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        let Some(expected) = &self.admin_token else {
            return Err(Error::PermissionDenied {
                reason: ErrorReason::AdminApiDisabled,
                message: "the operator API is disabled: start keygate with KEYGATE_ADMIN_TOKEN"
                    .into(),
            });
        };
        let token = bearer(headers)?;
        if tokens_equal(token, expected) {
            Ok(Principal::Operator)
        } else {
            Err(unauthenticated(
                ErrorReason::InvalidAdminToken,
                "the admin token is not valid",
            ))
        }
    }

    /// Signs in with a token typed by a person (the console's sign-in form): an API key is
    /// that key's workspace, anything else must be the admin token. The same checks as a
    /// call's, so a revoked key or a wrong token is refused with the same reasons.
    pub async fn sign_in(&self, token: &str) -> Result<Principal, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(unauthenticated(
                ErrorReason::MissingCredentials,
                "enter an API key or the admin token",
            ));
        }
        if parse_api_key(token).is_some() {
            return self.api_key_token(token).await;
        }
        let Some(expected) = &self.admin_token else {
            return Err(unauthenticated(
                ErrorReason::InvalidApiKey,
                "the API key is not valid",
            ));
        };
        if tokens_equal(token, expected) {
            Ok(Principal::Operator)
        } else {
            Err(unauthenticated(
                ErrorReason::InvalidApiKey,
                "neither a valid API key nor the admin token",
            ))
        }
    }

    async fn api_key(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        let token = bearer(headers)?;
        self.api_key_token(token).await
    }

    async fn api_key_token(&self, token: &str) -> Result<Principal, Error> {
        let invalid = || unauthenticated(ErrorReason::InvalidApiKey, "the API key is not valid");
        let (id, secret) = parse_api_key(token).ok_or_else(invalid)?;
        let record = self.lookup(id).await?.ok_or_else(invalid)?;
        // Check the secret before revealing anything about the key, revocation included.
        if !secret_matches(secret, &record.secret_sha256) {
            return Err(invalid());
        }
        if record.revoked {
            return Err(unauthenticated(
                ErrorReason::ApiKeyRevoked,
                "the API key was revoked",
            ));
        }
        tracing::Span::current()
            .record("workspace_id", tracing::field::display(record.workspace_id));
        Ok(Principal::Workspace {
            workspace_id: record.workspace_id,
            api_key_id: id,
        })
    }

    /// Whether a principal still stands: for an API key, that the key exists and is not
    /// revoked. For calls that outlive their authentication (a `WatchEvents` stream). It reads
    /// like a call does (the cache, then the store), so a revocation shows as soon as the
    /// tracker has evicted the key's cached copy.
    pub async fn recheck(&self, principal: &Principal) -> Result<(), Error> {
        let Principal::Workspace {
            workspace_id,
            api_key_id,
        } = principal
        else {
            return Ok(());
        };
        match self.lookup(*api_key_id).await? {
            Some(k) if k.revoked => Err(unauthenticated(
                ErrorReason::ApiKeyRevoked,
                "the API key was revoked",
            )),
            Some(k) if k.workspace_id == *workspace_id => Ok(()),
            _ => Err(unauthenticated(
                ErrorReason::InvalidApiKey,
                "the API key is not valid",
            )),
        }
    }

    async fn cached(&self, cache_key: &str) -> Cached {
        use keygate_telemetry::metrics::{CacheResult, cache_lookup};
        match self.cache.get(cache_key).await {
            Ok(Some(bytes)) if bytes == NOT_FOUND => {
                cache_lookup("api_key", CacheResult::NegativeHit);
                Cached::NotFound
            }
            Ok(Some(bytes)) => match CachedKey::decode(&bytes) {
                Some(k) => {
                    cache_lookup("api_key", CacheResult::Hit);
                    Cached::Key(k)
                }
                None => {
                    cache_lookup("api_key", CacheResult::Miss);
                    Cached::Unknown
                }
            },
            Ok(None) => {
                cache_lookup("api_key", CacheResult::Miss);
                Cached::Unknown
            }
            Err(e) => {
                cache_lookup("api_key", CacheResult::Error);
                tracing::debug!(error = %e, "cache read failed; using the store");
                Cached::Unknown
            }
        }
    }

    async fn lookup(&self, id: ApiKeyId) -> Result<Option<CachedKey>, Error> {
        let cache_key = api_key_cache_key(id);
        match self.cached(&cache_key).await {
            Cached::Key(k) => return Ok(Some(k)),
            Cached::NotFound => return Ok(None),
            Cached::Unknown => {}
        }
        let Some(key) = self.store.find_api_key(id).await? else {
            // Remembered briefly, so the same made-up id does not reach the store again.
            if let Err(e) = self.cache.set(&cache_key, NOT_FOUND, NEGATIVE_TTL).await {
                tracing::debug!(error = %e, "cache write failed");
            }
            return Ok(None);
        };
        let record = CachedKey {
            workspace_id: key.workspace_id,
            revoked: key.revoked_at.is_some(),
            secret_sha256: key.secret_sha256,
        };
        if let Err(e) = self
            .cache
            .set(&cache_key, &record.encode(), KEY_CACHE_TTL)
            .await
        {
            tracing::debug!(error = %e, "cache write failed");
        }
        Ok(Some(record))
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        unauthenticated(
            ErrorReason::MissingCredentials,
            "send authorization: Bearer <key>",
        )
    })?;
    let value = value.to_str().map_err(|_| {
        unauthenticated(
            ErrorReason::InvalidApiKey,
            "the authorization header is not text",
        )
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            unauthenticated(
                ErrorReason::InvalidApiKey,
                "the authorization header must be 'Bearer <key>'",
            )
        })?;
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards() {
        assert_eq!(guard_for("/grpc.health.v1.Health/Check"), Guard::None);
        assert_eq!(guard_for("/grpc.health.v1.Health/CheckX"), Guard::ApiKey);
        assert_eq!(
            guard_for("/keygate.admin.v1.WorkspaceService/ListWorkspaces"),
            Guard::AdminToken
        );
        assert_eq!(
            guard_for("/keygate.v1.UserIdentityService/GetUserIdentity"),
            Guard::ApiKey
        );
    }

    #[test]
    fn cached_key_round_trip() {
        let k = CachedKey {
            workspace_id: WorkspaceId::new(),
            revoked: true,
            secret_sha256: vec![9; 32],
        };
        let d = CachedKey::decode(&k.encode()).expect("decodes");
        assert_eq!(
            (d.workspace_id, d.revoked, d.secret_sha256),
            (k.workspace_id, true, vec![9; 32])
        );
        assert!(CachedKey::decode(b"garbage").is_none());
        assert!(
            CachedKey::decode(NOT_FOUND).is_none(),
            "the negative marker is never a record"
        );
    }
}
