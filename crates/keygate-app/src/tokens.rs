//! Secrets on the wire: API key tokens and page tokens.
//!
//! API keys are `kg_<key id, 32 hex>_<secret, 43 base64url>`; only SHA-256(secret) is stored,
//! compared in constant time. Page tokens are a private versioned message sealed with
//! HMAC-SHA256 under a key shared by all replicas (`KEYGATE_PAGE_TOKEN_KEY`; previous keys
//! still open tokens after a rotation), and bound to the workspace and the list filter, so a
//! token from another workspace, another filter or a forger is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use keygate_domain::{Error, ErrorReason};
use prost::Message as _;
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, OnceLock};

use subtle::ConstantTimeEq as _;

const TOKEN_PREFIX: &str = "kg_";
const ID_HEX_LEN: usize = 32;
/// 32 random bytes in unpadded base64url.
const SECRET_LEN: usize = 43;

/// A freshly minted API key: the full token (shown once) and the hash to store.
pub struct MintedKey {
    pub id: ApiKeyId,
    pub token: String,
    pub secret_sha256: Vec<u8>,
}

/// Creates a new API key with a 256-bit random secret.
pub fn mint_api_key() -> MintedKey {
    let id = ApiKeyId::new();
    let secret: [u8; 32] = rand::rng().random();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    MintedKey {
        id,
        token: format!("{TOKEN_PREFIX}{}_{secret}", id.as_uuid().simple()),
        secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
    }
}

/// Splits a token into its key id and secret; `None` when it is not shaped like a Keygate key.
pub fn parse_api_key(token: &str) -> Option<(ApiKeyId, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let id_hex = rest.get(..ID_HEX_LEN)?;
    let secret = rest.get(ID_HEX_LEN..)?.strip_prefix('_')?;
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !secret_ok || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = uuid::Uuid::try_parse(id_hex).ok()?;
    Some((ApiKeyId::from(id), secret))
}

/// The start of a key as the Seam-compatible HTTP API presents it: Seam's SDKs refuse a key
/// that does not start with `seam_`.
pub const SEAM_KEY_PREFIX: &str = "seam_";
/// The short-token marker of a sandbox workspace's key (Seam's convention: `test` in the
/// short token), and of any other workspace's.
const SEAM_SANDBOX_MARK: &str = "test";
const SEAM_PRODUCTION_MARK: &str = "kg";

/// The Seam-compatible form of a Keygate API key: the same id and secret, as
/// `seam_test<id hex>_<secret>` for a sandbox workspace's key and `seam_kg<id hex>_<secret>`
/// otherwise. `None` when `token` is not a Keygate key. The mark is presentation only: the key
/// is checked exactly as its `kg_` form is (see [`api_key_from_seam`]).
pub fn seam_api_key(token: &str, sandbox: bool) -> Option<String> {
    parse_api_key(token)?;
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let mark = if sandbox {
        SEAM_SANDBOX_MARK
    } else {
        SEAM_PRODUCTION_MARK
    };
    Some(format!("{SEAM_KEY_PREFIX}{mark}{rest}"))
}

/// The Keygate form (`kg_...`) of a key given in its Seam-compatible form; `None` when it is
/// not one. Only the shape is checked here; the secret is checked by the authenticator like any
/// other key.
pub fn api_key_from_seam(seam: &str) -> Option<String> {
    let rest = seam.strip_prefix(SEAM_KEY_PREFIX)?;
    let rest = rest
        .strip_prefix(SEAM_SANDBOX_MARK)
        .or_else(|| rest.strip_prefix(SEAM_PRODUCTION_MARK))?;
    let token = format!("{TOKEN_PREFIX}{rest}");
    parse_api_key(&token)?;
    Some(token)
}

/// Whether `secret` hashes to `stored`, in time independent of where they differ.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    let digest = Sha256::digest(secret.as_bytes());
    digest.as_slice().ct_eq(stored).into()
}

/// Constant-time comparison of two tokens (the admin token).
pub fn tokens_equal(a: &str, b: &str) -> bool {
    // Hash first so the comparison time does not depend on the lengths either.
    Sha256::digest(a.as_bytes())
        .as_slice()
        .ct_eq(Sha256::digest(b.as_bytes()).as_slice())
        .into()
}

/// The private page-token payload. Versioned so the format can change without misreading old
/// tokens; never exposed in the public contract.
#[derive(Clone, PartialEq, prost::Message)]
struct PageTokenV1 {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(string, tag = "2")]
    scope: String,
    #[prost(bytes = "vec", tag = "3")]
    filter_sha256: Vec<u8>,
    #[prost(string, tag = "4")]
    after: String,
}

const TAG_LEN: usize = 32;

/// Seals and opens page tokens. The key may arrive after the server starts (the embedded
/// default reads it once the store answers); until then list calls are UNAVAILABLE.
#[derive(Clone, Default)]
pub struct PageTokens {
    /// The current key first (it seals), then previous ones (they only open).
    keys: Arc<OnceLock<Vec<Vec<u8>>>>,
}

/// What a page token is bound to: the workspace (or the operator scope) and the filter.
pub struct PageScope<'a> {
    pub scope: String,
    pub filter: &'a [&'a str],
}

impl<'a> PageScope<'a> {
    /// A list in a workspace, with the RPC name and filter values that must not change between pages.
    pub fn workspace(ws: WorkspaceId, filter: &'a [&'a str]) -> Self {
        Self {
            scope: ws.to_string(),
            filter,
        }
    }

    /// An operator list (not in any workspace).
    pub fn operator(filter: &'a [&'a str]) -> Self {
        Self {
            scope: "operator".into(),
            filter,
        }
    }

    fn filter_hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        for part in self.filter {
            // Length-prefixed so ["ab", "c"] and ["a", "bc"] differ.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().to_vec()
    }
}

impl PageTokens {
    /// Tokens sealed with `key`.
    pub fn new(key: Vec<u8>) -> Self {
        let t = Self::default();
        t.set_key(key);
        t
    }

    /// Sets the key once it is known; later calls are ignored (the key never changes while
    /// the process runs).
    pub fn set_key(&self, key: Vec<u8>) {
        self.set_keys(key, Vec::new());
    }

    /// Sets the key that seals and `previous` keys whose tokens still open (a rotation); later
    /// calls are ignored.
    pub fn set_keys(&self, current: Vec<u8>, previous: Vec<Vec<u8>>) {
        let mut keys = vec![current];
        keys.extend(previous);
        let _ = self.keys.set(keys);
    }

    fn keys(&self) -> Result<&[Vec<u8>], Error> {
        self.keys
            .get()
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Unavailable {
                message: "page token key not loaded yet".into(),
            })
    }

    fn mac_with(key: &[u8], payload: &[u8]) -> Result<Vec<u8>, Error> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| Error::Internal {
            message: format!("page token key rejected: {e}"),
        })?;
        mac.update(payload);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn mac(&self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let key = self.keys()?.first().ok_or_else(|| Error::Unavailable {
            message: "page token key not loaded yet".into(),
        })?;
        Self::mac_with(key, payload)
    }

    /// Whether `tag` is the MAC of `payload` under the current or a previous key.
    fn genuine(&self, payload: &[u8], tag: &[u8]) -> Result<bool, Error> {
        for key in self.keys()? {
            if bool::from(Self::mac_with(key, payload)?.as_slice().ct_eq(tag)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The token to continue after `after`, or empty on the last page.
    pub fn seal(&self, scope: &PageScope<'_>, after: Option<String>) -> Result<String, Error> {
        let Some(after) = after else {
            return Ok(String::new());
        };
        let payload = PageTokenV1 {
            version: 1,
            scope: scope.scope.clone(),
            filter_sha256: scope.filter_hash(),
            after,
        }
        .encode_to_vec();
        let mut sealed = payload.clone();
        sealed.extend(self.mac(&payload)?);
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The id to continue after, from a token issued for exactly this scope and filter.
    pub fn open(&self, scope: &PageScope<'_>, token: &str) -> Result<Option<String>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = |why: &str| Error::InvalidToken {
            reason: ErrorReason::InvalidPageToken,
            message: format!("page_token is invalid: {why}"),
        };
        if token.len() > 1024 {
            return Err(invalid("too long"));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("not base64url"))?;
        if raw.len() <= TAG_LEN {
            return Err(invalid("truncated"));
        }
        let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
        if !self.genuine(payload, tag)? {
            return Err(invalid("not issued by this server"));
        }
        let t = PageTokenV1::decode(payload).map_err(|_| invalid("malformed"))?;
        if t.version != 1 {
            return Err(invalid("unknown version"));
        }
        if t.scope != scope.scope || t.filter_sha256 != scope.filter_hash() {
            return Err(invalid("issued for another workspace or filter"));
        }
        Ok(Some(t.after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seam_form_carries_the_same_key() {
        let k = mint_api_key();
        let sandbox = seam_api_key(&k.token, true).expect("a keygate key");
        assert!(sandbox.starts_with("seam_test"));
        let live = seam_api_key(&k.token, false).expect("a keygate key");
        assert!(live.starts_with("seam_kg"));
        for form in [&sandbox, &live] {
            // What the SDKs refuse before sending anything.
            for refused in ["seam_cst", "seam_at", "seam_pk", "ey"] {
                assert!(!form.starts_with(refused), "{form}");
            }
            assert_eq!(api_key_from_seam(form).as_deref(), Some(k.token.as_str()));
        }
        assert!(seam_api_key("kg_nope", true).is_none());
        assert!(
            api_key_from_seam(&k.token).is_none(),
            "the kg_ form is not the seam form"
        );
        assert!(api_key_from_seam("seam_test").is_none());
        assert!(api_key_from_seam(&format!("seam_other{}", &k.token[3..])).is_none());
        assert!(api_key_from_seam(&format!("{}x", sandbox)).is_none());
    }

    #[test]
    fn api_key_round_trip() {
        let k = mint_api_key();
        let (id, secret) = parse_api_key(&k.token).expect("parses");
        assert_eq!(id, k.id);
        assert!(secret_matches(secret, &k.secret_sha256));
        assert!(!secret_matches("nope", &k.secret_sha256));
        for bad in [
            "",
            "kg_",
            "kg_zz",
            "xx_0123",
            &k.token[..40],
            &k.token.replace("kg_", "kx_"),
        ] {
            assert!(parse_api_key(bad).is_none() || bad == k.token, "{bad}");
        }
        assert!(parse_api_key(&format!("{}_", &k.token[..35])).is_none());
    }

    #[test]
    fn page_tokens_are_bound_and_sealed() {
        let tokens = PageTokens::new(vec![1; 32]);
        let a = WorkspaceId::new();
        let b = WorkspaceId::new();
        let filter = ["ListEntrances", "sys-1"];
        let scope = PageScope::workspace(a, &filter);
        let t = tokens.seal(&scope, Some("after-id".into())).expect("seal");
        assert_eq!(tokens.open(&scope, &t).ok(), Some(Some("after-id".into())));
        assert_eq!(tokens.open(&scope, "").ok(), Some(None));
        assert_eq!(tokens.seal(&scope, None).ok().as_deref(), Some(""));
        let pending = PageTokens::default();
        assert_eq!(
            pending.open(&scope, &t).err().map(|e| e.reason()),
            Some(ErrorReason::StoreUnavailable)
        );

        let reason = |r: Result<Option<String>, Error>| r.err().map(|e| e.reason());
        let bad = Some(ErrorReason::InvalidPageToken);
        assert_eq!(
            reason(tokens.open(&PageScope::workspace(b, &filter), &t)),
            bad,
            "other workspace"
        );
        assert_eq!(
            reason(tokens.open(&PageScope::workspace(a, &["ListEntrances", "sys-2"]), &t)),
            bad,
            "other filter"
        );
        assert_eq!(
            reason(PageTokens::new(vec![2; 32]).open(&scope, &t)),
            bad,
            "other key"
        );
        let mut forged = URL_SAFE_NO_PAD.decode(&t).expect("b64");
        forged[5] ^= 1;
        assert_eq!(
            reason(tokens.open(&scope, &URL_SAFE_NO_PAD.encode(forged))),
            bad,
            "tampered"
        );
        assert_eq!(reason(tokens.open(&scope, "!!!")), bad);
        assert_eq!(reason(tokens.open(&scope, &t[..10])), bad);
    }

    #[test]
    fn a_previous_key_still_opens_tokens_after_rotation() {
        let old = PageTokens::new(vec![1; 32]);
        let filter = ["ListEntrances"];
        let scope = PageScope::workspace(WorkspaceId::new(), &filter);
        let before = old.seal(&scope, Some("a".into())).expect("seal");
        let rotated = PageTokens::default();
        rotated.set_keys(vec![2; 32], vec![vec![1; 32]]);
        assert_eq!(rotated.open(&scope, &before).ok(), Some(Some("a".into())));
        let after = rotated.seal(&scope, Some("b".into())).expect("seal");
        assert!(old.open(&scope, &after).is_err(), "sealed with the new key");
        assert!(
            PageTokens::new(vec![2; 32]).open(&scope, &before).is_err(),
            "once the previous key is dropped"
        );
    }
}
