//! Sealed cache entries: a [`Cache`] wrapper that encrypts and authenticates every value with a
//! key the cache server never sees, so whoever can read or write Redis can neither read what
//! Keygate cached (PINs of access methods, API key records) nor plant an entry Keygate would
//! believe (an API key record that authenticates a made-up key).
//!
//! An entry is `key id (1 byte) || nonce (12 bytes) || ChaCha20-Poly1305(value) || tag (16 bytes)`,
//! with the cache key as associated data: a value copied under another cache key does not open.
//! The key id lets old entries open under a previous key after a rotation; it is derived from the
//! key itself, so every replica agrees on it without configuring ids. An entry that does not open
//! (tampered, moved, unknown key) is a miss: the caller reads the store and writes a fresh entry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

use crate::{Cache, CacheError};

/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;
const ID_LEN: usize = 1;
const TAG_LEN: usize = 16;
/// Domain separation of the associated data, so a sealed value is bound to this use and format.
const AAD_PREFIX: &[u8] = b"keygate-cache:v1:";

/// Why a cache key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    #[error("a cache key must be at least {MIN_KEY_LEN} bytes, this one has {0}")]
    TooShort(usize),
    /// HKDF refused the output length (ring reports no detail); cannot happen for 32 bytes.
    #[error("the cache key could not be derived")]
    Derive,
}

/// One cache key, as used: its id byte and the AEAD key derived from it.
struct SealKey {
    id: u8,
    aead: LessSafeKey,
}

impl SealKey {
    fn derive(purpose: &str, material: &[u8]) -> Result<Self, SealKeyError> {
        if material.len() < MIN_KEY_LEN {
            return Err(SealKeyError::TooShort(material.len()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, purpose.as_bytes()).extract(material);
        let okm = prk
            .expand(&[b"aead:chacha20-poly1305:v1"], &CHACHA20_POLY1305)
            .map_err(|_| SealKeyError::Derive)?;
        let aead = LessSafeKey::new(UnboundKey::from(okm));
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[purpose.as_bytes(), b"-key-id:v1:".as_slice(), material].concat(),
        );
        Ok(Self {
            id: digest.as_ref()[0],
            aead,
        })
    }
}

/// The keys of a [`SealedCache`]: the current one seals, it and the previous ones open.
pub struct SealKeys {
    current: SealKey,
    previous: Vec<SealKey>,
}

impl SealKeys {
    /// `current` seals new entries; entries sealed with one of `previous` still open (until
    /// they expire), so a rotation costs no cache misses.
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Result<Self, SealKeyError> {
        Self::for_purpose("keygate-cache", current, previous)
    }

    /// Keys for another use than the cache (`purpose` separates the derived keys, so one
    /// configured key never opens what another use sealed): the credentials of connected
    /// access systems use `keygate-credentials`.
    pub fn for_purpose(
        purpose: &str,
        current: &[u8],
        previous: &[Vec<u8>],
    ) -> Result<Self, SealKeyError> {
        Ok(Self {
            current: SealKey::derive(purpose, current)?,
            previous: previous
                .iter()
                .map(|k| SealKey::derive(purpose, k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Seals `value` with the current key, bound to `aad`: the id byte of the key, a random
    /// nonce, then the ciphertext and its tag.
    pub fn seal(&self, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, CacheError> {
        let k = &self.current;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut body = value.to_vec();
        k.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            // Only fails for a value longer than the cipher allows (256 GiB).
            .map_err(|_| CacheError::Unavailable("value too large to seal".into()))?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + body.len());
        out.push(k.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`SealKeys::seal`] sealed with one of these keys and the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(Unsealable::Malformed);
        }
        let (id, rest) = sealed.split_at(ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unsealable::Malformed)?;
        let mut outcome = Err(Unsealable::UnknownKey);
        // Ids are one byte derived from the key: two keys may share one, so try each that has it.
        for k in self.all().filter(|k| k.id == id[0]) {
            let mut buf = body.to_vec();
            match k.aead.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            ) {
                Ok(plain) => {
                    let n = plain.len();
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(_) => outcome = Err(Unsealable::Rejected),
            }
        }
        outcome
    }

    /// The id byte of the current key (what new entries start with).
    pub fn current_id(&self) -> u8 {
        self.current.id
    }

    fn all(&self) -> impl Iterator<Item = &SealKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

/// Why a sealed value did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsealable {
    Malformed,
    UnknownKey,
    Rejected,
}

impl Unsealable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Rejected => "rejected",
        }
    }
}

/// A [`Cache`] whose values are sealed (encrypted and authenticated) before they reach `inner`.
#[derive(Clone)]
pub struct SealedCache {
    inner: Arc<dyn Cache>,
    keys: Arc<SealKeys>,
}

impl SealedCache {
    pub fn new(inner: Arc<dyn Cache>, keys: SealKeys) -> Self {
        Self {
            inner,
            keys: Arc::new(keys),
        }
    }

    fn aad(key: &str) -> Vec<u8> {
        [AAD_PREFIX, key.as_bytes()].concat()
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, CacheError> {
        self.keys.seal(&Self::aad(key), value)
    }

    fn open(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        self.keys.open(&Self::aad(key), sealed)
    }
}

#[async_trait]
impl Cache for SealedCache {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let Some(sealed) = self.inner.get(key).await? else {
            return Ok(None);
        };
        match self.open(key, &sealed) {
            Ok(value) => Ok(Some(value)),
            Err(why) => {
                keygate_telemetry::metrics::cache_unsealable(why.as_str());
                tracing::warn!(
                    reason = why.as_str(),
                    "a cache entry did not open with the cache keys; treated as a miss"
                );
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let sealed = self.seal(key, value)?;
        self.inner.set(key, &sealed, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InProcessCache;

    const TTL: Duration = Duration::from_secs(60);

    fn keys(current: u8, previous: &[u8]) -> SealKeys {
        let previous: Vec<Vec<u8>> = previous.iter().map(|b| vec![*b; 32]).collect();
        SealKeys::new(&[current; 32], &previous).expect("valid keys")
    }

    fn sealed(inner: &InProcessCache, keys: SealKeys) -> SealedCache {
        SealedCache::new(Arc::new(inner.clone()), keys)
    }

    #[tokio::test]
    async fn values_round_trip_and_are_not_stored_in_clear() {
        let inner = InProcessCache::new(100);
        let cache = sealed(&inner, keys(1, &[]));
        let value = b"pin 123456 of a method";
        cache.set("k", value, TTL).await.expect("set");
        assert_eq!(
            cache.get("k").await.expect("get").as_deref(),
            Some(&value[..])
        );
        let raw = inner.get("k").await.expect("raw").expect("stored");
        assert_eq!(raw[0], cache.keys.current_id(), "starts with the key id");
        assert_eq!(raw.len(), ID_LEN + NONCE_LEN + value.len() + TAG_LEN);
        assert!(
            !raw.windows(6).any(|w| w == b"123456"),
            "the PIN is not in the stored bytes"
        );
        // Two seals of one value differ (fresh nonce each time).
        cache.set("k2", value, TTL).await.expect("set");
        let raw2 = inner.get("k2").await.expect("raw").expect("stored");
        assert_ne!(raw[1..], raw2[1..]);
        assert_eq!(cache.get("missing").await.expect("get"), None);
        cache.delete("k").await.expect("delete");
        assert_eq!(cache.get("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_tampered_entry_is_a_miss() {
        let inner = InProcessCache::new(100);
        let cache = sealed(&inner, keys(1, &[]));
        cache.set("k", b"api key record", TTL).await.expect("set");
        let raw = inner.get("k").await.expect("raw").expect("stored");
        for at in [ID_LEN, ID_LEN + NONCE_LEN, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[at] ^= 0x01;
            inner.set("k", &bad, TTL).await.expect("plant");
            assert_eq!(cache.get("k").await.expect("get"), None, "flip at {at}");
        }
        // Truncated, empty, and a plain value planted by someone with Redis access.
        for bad in [
            &raw[..raw.len() - 1],
            &[][..],
            &b"{\"workspace\":\"x\"}"[..],
        ] {
            inner.set("k", bad, TTL).await.expect("plant");
            assert_eq!(cache.get("k").await.expect("get"), None);
        }
    }

    #[tokio::test]
    async fn an_entry_moved_to_another_key_is_a_miss() {
        let inner = InProcessCache::new(100);
        let cache = sealed(&inner, keys(1, &[]));
        cache
            .set("keygate:v1:apikey:a", b"record of a", TTL)
            .await
            .expect("set");
        let raw = inner
            .get("keygate:v1:apikey:a")
            .await
            .expect("raw")
            .expect("stored");
        inner
            .set("keygate:v1:apikey:b", &raw, TTL)
            .await
            .expect("plant");
        assert_eq!(cache.get("keygate:v1:apikey:b").await.expect("get"), None);
        assert!(
            cache
                .get("keygate:v1:apikey:a")
                .await
                .expect("get")
                .is_some()
        );
    }

    #[tokio::test]
    async fn another_key_cannot_open_an_entry() {
        let inner = InProcessCache::new(100);
        sealed(&inner, keys(1, &[]))
            .set("k", b"secret", TTL)
            .await
            .expect("set");
        assert_eq!(
            sealed(&inner, keys(2, &[])).get("k").await.expect("get"),
            None
        );
        // Even a key forced to share the id byte is refused by the tag.
        let mut raw = inner.get("k").await.expect("raw").expect("stored");
        let other = sealed(&inner, keys(2, &[]));
        raw[0] = other.keys.current_id();
        inner.set("k", &raw, TTL).await.expect("plant");
        assert_eq!(other.get("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_previous_key_still_opens_after_rotation() {
        let inner = InProcessCache::new(100);
        sealed(&inner, keys(1, &[]))
            .set("old", b"sealed before", TTL)
            .await
            .expect("set");
        let rotated = sealed(&inner, keys(2, &[1]));
        assert_eq!(
            rotated.get("old").await.expect("get").as_deref(),
            Some(&b"sealed before"[..])
        );
        rotated.set("new", b"sealed after", TTL).await.expect("set");
        let raw = inner.get("new").await.expect("raw").expect("stored");
        assert_eq!(raw[0], rotated.keys.current_id(), "sealed with the new key");
        assert_eq!(
            sealed(&inner, keys(1, &[])).get("new").await.expect("get"),
            None,
            "the old key alone cannot open what the new key sealed"
        );
        // Once the previous key is dropped, its entries are misses.
        assert_eq!(
            sealed(&inner, keys(2, &[])).get("old").await.expect("get"),
            None
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SealKeys::new(&[0; 31], &[]),
            Err(SealKeyError::TooShort(31))
        ));
        assert!(matches!(
            SealKeys::new(&[0; 32], &[vec![0; 16]]),
            Err(SealKeyError::TooShort(16))
        ));
    }
}
