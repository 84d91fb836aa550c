//! Access system user and credential requests.

use keygate_app::acs_users::{CreateAcsUser, CreateCredential};
use keygate_app::grants::{check_entrance_list, pin};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim, mode, time_field};

impl IntoCommand for v1::CreateAcsUserRequest {
    type Command = CreateAcsUser;

    fn into_command(self) -> Result<CreateAcsUser, Error> {
        let fingerprint = v1::CreateAcsUserRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::CreateAcsUserRequest {
            request_id,
            acs_system_id,
            full_name,
            email_address,
            phone_number,
            access_schedule,
        } = self;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let schedule = access_schedule.as_ref();
        let starts_at = time_field(
            &mut v,
            "access_schedule.starts_at",
            schedule.and_then(|s| s.starts_at.as_ref()),
        );
        let ends_at = time_field(
            &mut v,
            "access_schedule.ends_at",
            schedule.and_then(|s| s.ends_at.as_ref()),
        );
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && e <= s
        {
            v.check::<()>(Err(FieldViolation::new(
                "access_schedule.ends_at",
                "must be after access_schedule.starts_at",
            )));
        }
        v.finish()?;
        let acs_system_id = validate::id("acs_system_id", &acs_system_id, Resource::AccessSystem)?;
        // The same checks as a user identity's name, email and phone.
        let person = validate::new_user_identity("", &full_name, &email_address, &phone_number)?;
        Ok(CreateAcsUser {
            idem: claim("CreateAcsUser", request_id, &fingerprint),
            acs_system_id,
            person,
            access_starts_at: starts_at,
            access_ends_at: ends_at,
        })
    }
}

impl IntoCommand for v1::CreateCredentialRequest {
    type Command = CreateCredential;

    fn into_command(self) -> Result<CreateCredential, Error> {
        let fingerprint = v1::CreateCredentialRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::CreateCredentialRequest {
            request_id,
            acs_user_id,
            access_method,
            acs_entrance_ids,
            starts_at,
            ends_at,
            code,
            card_number,
        } = self;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let mode = match mode(access_method) {
            Some(AccessMethodMode::CloudKey) => v.check(Err(FieldViolation::new(
                "access_method",
                "a cloud key has no credential: choose card, code or mobile_key",
            ))),
            Some(m) => Some(m),
            None => v.check(Err(FieldViolation::new(
                "access_method",
                "must be card, code or mobile_key",
            ))),
        };
        check_entrance_list(&mut v, &acs_entrance_ids);
        let code = v.check(pin("code", &code)).flatten();
        if code.is_some() && mode != Some(AccessMethodMode::Code) {
            v.check::<()>(Err(FieldViolation::new(
                "code",
                "only a code (PIN) credential takes a code",
            )));
        }
        if !card_number.is_empty() && mode != Some(AccessMethodMode::Card) {
            v.check::<()>(Err(FieldViolation::new(
                "card_number",
                "only a card credential takes a card number",
            )));
        }
        let starts_at = time_field(&mut v, "starts_at", starts_at.as_ref());
        let ends_at = time_field(&mut v, "ends_at", ends_at.as_ref());
        v.finish()?;
        let acs_user_id = validate::id("acs_user_id", &acs_user_id, Resource::AcsUser)?;
        let mode = mode.ok_or_else(|| Error::Internal {
            message: "validation accepted a request without a mode".into(),
        })?;
        Ok(CreateCredential {
            idem: claim("CreateCredential", request_id, &fingerprint),
            acs_user_id,
            mode,
            acs_entrance_ids,
            starts_at,
            ends_at,
            code,
            card_number,
        })
    }
}
