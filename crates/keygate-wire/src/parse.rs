//! Requests into `keygate-app` commands, parsed once. Each conversion destructures every field
//! of its request, so a field added to the proto does not compile until it is handled here.
//! Field rules (lengths, formats, at-least-one) are `keygate-domain::validate` and the
//! `keygate-app` checks; every violation of a request is reported at once.

use keygate_app::grants::{self, CreateGrant, Grantee, UpdateGrant};
use keygate_app::idempotency;
use keygate_app::instant_keys::{self, GenerateKey};
use keygate_app::methods::EncodeCard;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::ModeRequest;
use keygate_domain::ids::EntranceId;
use keygate_domain::update::{EndsAt, GrantChange};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1;

use crate::convert::from_ts;

/// A request that parses into its `keygate-app` command. (A trait of this crate rather than
/// `TryFrom`, which the orphan rule forbids between two foreign types.)
pub trait IntoCommand {
    type Command;

    /// Parses the request once, reporting every field violation together.
    fn into_command(self) -> Result<Self::Command, Error>;
}

/// The domain mode of a proto enum value; `None` for unspecified or unknown values.
pub fn mode(i: i32) -> Option<AccessMethodMode> {
    match v1::AccessMethodMode::try_from(i).ok()? {
        v1::AccessMethodMode::Card => Some(AccessMethodMode::Card),
        v1::AccessMethodMode::Code => Some(AccessMethodMode::Code),
        v1::AccessMethodMode::MobileKey => Some(AccessMethodMode::MobileKey),
        v1::AccessMethodMode::CloudKey => Some(AccessMethodMode::CloudKey),
        v1::AccessMethodMode::Unspecified => None,
    }
}

/// Entrance ids, each a well-formed id (`INVALID_ARGUMENT` on `field` otherwise).
pub fn entrance_ids(field: &str, ids: &[String]) -> Result<Vec<EntranceId>, Error> {
    ids.iter()
        .map(|e| validate::id(field, e, Resource::Entrance))
        .collect()
}

/// The idempotency claim of a create: its `request_id` and a fingerprint of the request as
/// received, without the `request_id` itself.
pub fn claim<M: prost::Message>(
    operation: &'static str,
    request_id: Option<String>,
    body_without_request_id: &M,
) -> Option<keygate_store::Idempotency> {
    idempotency::claim(
        operation,
        request_id,
        &body_without_request_id.encode_to_vec(),
    )
}

impl IntoCommand for v1::CreateAccessGrantRequest {
    type Command = CreateGrant;

    fn into_command(self) -> Result<CreateGrant, Error> {
        let r = self;
        let fingerprint = v1::CreateAccessGrantRequest {
            request_id: String::new(),
            ..r.clone()
        };
        let v1::CreateAccessGrantRequest {
            request_id,
            grantee,
            acs_entrance_ids,
            requested_access_methods,
            starts_at,
            ends_at,
            access_grant_key,
            name,
            reservation_key,
        } = r;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let name = v.check(validate::optional_name("name", &name)).flatten();
        let key = v
            .check(validate::optional_name(
                "access_grant_key",
                &access_grant_key,
            ))
            .flatten();
        let reservation = v
            .check(validate::optional_name("reservation_key", &reservation_key))
            .flatten();
        if acs_entrance_ids.is_empty() {
            v.check::<()>(Err(FieldViolation::new(
                "acs_entrance_ids",
                "at least one entrance is required",
            )));
        }
        grants::check_entrance_list(&mut v, &acs_entrance_ids);
        if requested_access_methods.is_empty() {
            v.check::<()>(Err(FieldViolation::new(
                "requested_access_methods",
                "at least one access method is required",
            )));
        }
        let mut modes = Vec::new();
        for (i, m) in requested_access_methods.iter().enumerate() {
            let field = format!("requested_access_methods[{i}]");
            let Some(mode) = mode(m.mode) else {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.mode"),
                    "must be card, code, mobile_key or cloud_key",
                )));
                continue;
            };
            if modes.iter().any(|x: &ModeRequest| x.mode == mode) {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.mode"),
                    "each mode may be requested once",
                )));
            }
            let code = v
                .check(grants::pin(&format!("{field}.code"), &m.code))
                .flatten();
            if code.is_some() && mode != AccessMethodMode::Code {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.code"),
                    "only a code (PIN) method takes a code",
                )));
            }
            modes.push(ModeRequest { mode, code });
        }
        let grantee = match grantee {
            Some(v1::create_access_grant_request::Grantee::UserIdentity(p)) => {
                Some(Grantee::New(validate::new_user_identity(
                    &p.user_identity_key,
                    &p.full_name,
                    &p.email_address,
                    &p.phone_number,
                )?))
            }
            Some(v1::create_access_grant_request::Grantee::UserIdentityId(id)) => {
                Some(Grantee::Existing(validate::id(
                    "user_identity_id",
                    &id,
                    Resource::UserIdentity,
                )?))
            }
            None => {
                v.check::<()>(Err(FieldViolation::new(
                    "user_identity",
                    "give user_identity or user_identity_id",
                )));
                None
            }
        };
        v.finish()?;
        let grantee = grantee.ok_or_else(|| Error::Internal {
            message: "validation accepted a request without a grantee".into(),
        })?;
        let idem = claim("CreateAccessGrant", request_id, &fingerprint);
        Ok(CreateGrant {
            idem,
            name,
            access_grant_key: key,
            reservation_key: reservation,
            grantee,
            entrance_ids: entrance_ids("acs_entrance_ids", &acs_entrance_ids)?,
            modes,
            starts_at: starts_at.as_ref().and_then(from_ts),
            ends_at: ends_at.as_ref().and_then(from_ts),
            only_system: None,
        })
    }
}

impl IntoCommand for v1::UpdateAccessGrantRequest {
    type Command = UpdateGrant;

    fn into_command(self) -> Result<UpdateGrant, Error> {
        let r = self;
        let v1::UpdateAccessGrantRequest {
            access_grant_id,
            starts_at,
            ends_at,
            add_acs_entrance_ids,
            remove_acs_entrance_ids,
            name,
            clear_ends_at,
        } = r;
        let id = validate::id("access_grant_id", &access_grant_id, Resource::AccessGrant)?;
        let mut v = Violations::default();
        let name = name.as_deref().map(|n| {
            v.check(validate::optional_name("name", n))
                .flatten()
                .unwrap_or_default()
        });
        let mut timestamp = |field: &str, t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(|t| {
                v.check(from_ts(t).ok_or_else(|| FieldViolation::new(field, "is not a valid time")))
            })
        };
        let starts_at = timestamp("starts_at", &starts_at);
        let new_end = timestamp("ends_at", &ends_at);
        let ends_at = match (new_end, clear_ends_at) {
            (Some(_), true) => {
                v.check::<()>(Err(FieldViolation::new(
                    "clear_ends_at",
                    "cannot be set together with ends_at",
                )));
                EndsAt::Keep
            }
            (Some(e), false) => EndsAt::Set(e),
            (None, true) => EndsAt::Clear,
            (None, false) => EndsAt::Keep,
        };
        for (field, ids) in [
            ("add_acs_entrance_ids", &add_acs_entrance_ids),
            ("remove_acs_entrance_ids", &remove_acs_entrance_ids),
        ] {
            if ids.len() > grants::MAX_ENTRANCES {
                v.check::<()>(Err(FieldViolation::new(
                    field,
                    format!("at most {} entrances", grants::MAX_ENTRANCES),
                )));
            }
        }
        if add_acs_entrance_ids
            .iter()
            .any(|e| remove_acs_entrance_ids.contains(e))
        {
            v.check::<()>(Err(FieldViolation::new(
                "remove_acs_entrance_ids",
                "an entrance cannot be both added and removed",
            )));
        }
        v.finish()?;
        Ok(UpdateGrant {
            id,
            change: GrantChange {
                starts_at,
                ends_at,
                add: entrance_ids("add_acs_entrance_ids", &add_acs_entrance_ids)?,
                remove: entrance_ids("remove_acs_entrance_ids", &remove_acs_entrance_ids)?,
                name,
            },
        })
    }
}

impl IntoCommand for v1::EncodeAccessMethodRequest {
    type Command = EncodeCard;

    fn into_command(self) -> Result<EncodeCard, Error> {
        let fingerprint = v1::EncodeAccessMethodRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::EncodeAccessMethodRequest {
            request_id,
            access_method_id,
            acs_encoder_id,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        let access_method_id = validate::id(
            "access_method_id",
            &access_method_id,
            Resource::AccessMethod,
        )?;
        let acs_encoder_id = validate::id("acs_encoder_id", &acs_encoder_id, Resource::Encoder)?;
        Ok(EncodeCard {
            idem: claim("EncodeAccessMethod", request_id, &fingerprint),
            access_method_id,
            acs_encoder_id,
        })
    }
}

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
