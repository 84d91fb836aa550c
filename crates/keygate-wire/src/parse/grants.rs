//! Access grant requests.

use keygate_app::grants::{self, CreateGrant, Grantee, UpdateGrant};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::ModeRequest;
use keygate_domain::update::{EndsAt, GrantChange};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim, entrance_ids, mode, time_field};
use crate::convert::from_ts;

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
        let starts_at = time_field(&mut v, "starts_at", starts_at.as_ref());
        let new_end = time_field(&mut v, "ends_at", ends_at.as_ref());
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
