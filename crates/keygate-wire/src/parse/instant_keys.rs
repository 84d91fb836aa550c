//! Instant Key requests.

use keygate_app::instant_keys::{self, GenerateKey};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim};
use crate::convert::from_ts;

impl IntoCommand for v1::GenerateInstantKeyRequest {
    type Command = GenerateKey;

    fn into_command(self) -> Result<GenerateKey, Error> {
        let fingerprint = v1::GenerateInstantKeyRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::GenerateInstantKeyRequest {
            request_id,
            user_identity_id,
            max_use_count,
            expires_at,
        } = self;
        let at = keygate_domain::model::now();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let max_use_count = match max_use_count {
            0 => 1,
            n if (1..=instant_keys::MAX_USE_COUNT).contains(&n) => n,
            _ => {
                v.check::<()>(Err(FieldViolation::new(
                    "max_use_count",
                    format!("must be 0 (one device) to {}", instant_keys::MAX_USE_COUNT),
                )));
                1
            }
        };
        let expires_at = match &expires_at {
            None => None,
            Some(t) => match from_ts(t) {
                Some(t) if t > at && t <= at + instant_keys::MAX_LIFETIME => Some(t),
                _ => {
                    v.check::<()>(Err(FieldViolation::new(
                        "expires_at",
                        "must be in the future and at most a year away",
                    )));
                    None
                }
            },
        };
        v.finish()?;
        let user_identity_id = validate::id(
            "user_identity_id",
            &user_identity_id,
            Resource::UserIdentity,
        )?;
        Ok(GenerateKey {
            idem: claim("GenerateInstantKey", request_id, &fingerprint),
            user_identity_id,
            max_use_count: u32::try_from(max_use_count).unwrap_or(1),
            expires_at,
        })
    }
}
