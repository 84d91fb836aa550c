//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with
//! the base64-decoded part of the secret after `whsec_`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Every secret starts with this (secrets are made by `keygate_app::webhooks::new_secret`).
pub use keygate_app::webhooks::SECRET_PREFIX;

/// Why a stored secret cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("webhook secret does not start with {SECRET_PREFIX}")]
    Prefix,
    #[error("webhook secret is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("webhook secret is empty")]
    Empty,
}

/// The HMAC key of a secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SignError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignError::Prefix)?;
    let key = STANDARD.decode(b64)?;
    if key.is_empty() {
        return Err(SignError::Empty);
    }
    Ok(key)
}

/// The `webhook-signature` header value of one attempt.
pub fn signature(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SignError> {
    let key = secret_key(secret)?;
    // HMAC takes a key of any length; the error arm cannot happen with a non-empty key.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignError::Empty)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use keygate_app::webhooks::new_secret;

    use super::*;

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn matches_the_reference_vector() {
        let sig = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn new_secrets_are_32_random_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_eq!(secret_key(&a).expect("decodes").len(), 32);
        assert!(matches!(secret_key("nope"), Err(SignError::Prefix)));
        assert!(matches!(secret_key("whsec_!!!"), Err(SignError::Base64(_))));
        assert!(matches!(secret_key("whsec_"), Err(SignError::Empty)));
    }
}
