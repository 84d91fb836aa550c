//! Instant Key requests.

use keygate_app::instant_keys::{self, DeliverKey, GenerateKey, KeyLookup};
use keygate_domain::delivery::Channel;
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

impl IntoCommand for v1::DeliverInstantKeyRequest {
    type Command = DeliverKey;

    fn into_command(self) -> Result<DeliverKey, Error> {
        // The body hash leaves out the request_id itself.
        let fingerprint = v1::DeliverInstantKeyRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::DeliverInstantKeyRequest {
            request_id,
            instant_key_id,
            channel,
            to,
        } = self;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let channel = match v1::DeliveryChannel::try_from(channel) {
            Ok(v1::DeliveryChannel::Sms) => Some(Channel::Sms),
            Ok(v1::DeliveryChannel::Email) => Some(Channel::Email),
            _ => {
                v.check::<()>(Err(FieldViolation::new(
                    "channel",
                    "must be DELIVERY_CHANNEL_SMS or DELIVERY_CHANNEL_EMAIL",
                )));
                None
            }
        };
        let to = channel.and_then(|c| v.check(c.recipient("to", &to)).flatten());
        v.finish()?;
        let Some(channel) = channel else {
            return Err(Error::invalid("channel", "is required"));
        };
        let instant_key_id = validate::id("instant_key_id", &instant_key_id, Resource::InstantKey)?;
        Ok(DeliverKey {
            idem: claim("DeliverInstantKey", request_id, &fingerprint),
            instant_key_id,
            channel,
            to,
        })
    }
}

impl IntoCommand for v1::GetInstantKeyRequest {
    type Command = KeyLookup;

    fn into_command(self) -> Result<KeyLookup, Error> {
        let v1::GetInstantKeyRequest { lookup } = self;
        match lookup {
            Some(v1::get_instant_key_request::Lookup::InstantKeyId(id)) => Ok(KeyLookup::Id(
                validate::id("instant_key_id", &id, Resource::InstantKey)?,
            )),
            Some(v1::get_instant_key_request::Lookup::InstantKeyUrl(url)) => {
                Ok(KeyLookup::Url(url))
            }
            None => Err(Error::invalid(
                "instant_key_id",
                "give instant_key_id or instant_key_url",
            )),
        }
    }
}
