//! User identity requests.

use keygate_app::identities::CreateIdentity;
use keygate_domain::ids::UserIdentityId;
use keygate_domain::model::UserIdentityPatch;
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim};

impl IntoCommand for v1::CreateUserIdentityRequest {
    type Command = CreateIdentity;

    fn into_command(self) -> Result<CreateIdentity, Error> {
        // The body hash leaves out the request_id itself.
        let fingerprint = v1::CreateUserIdentityRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::CreateUserIdentityRequest {
            request_id,
            user_identity_key,
            full_name,
            email_address,
            phone_number,
        } = self;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        v.finish()?;
        let person = validate::new_user_identity(
            &user_identity_key,
            &full_name,
            &email_address,
            &phone_number,
        )?;
        Ok(CreateIdentity {
            idem: claim("CreateUserIdentity", request_id, &fingerprint),
            person,
        })
    }
}

impl IntoCommand for v1::UpdateUserIdentityRequest {
    type Command = (UserIdentityId, UserIdentityPatch);

    fn into_command(self) -> Result<(UserIdentityId, UserIdentityPatch), Error> {
        let v1::UpdateUserIdentityRequest {
            user_identity_id,
            user_identity_key,
            full_name,
            email_address,
            phone_number,
        } = self;
        let id = validate::id(
            "user_identity_id",
            &user_identity_id,
            Resource::UserIdentity,
        )?;
        let patch = validate::user_identity_patch(
            user_identity_key.as_deref(),
            full_name.as_deref(),
            email_address.as_deref(),
            phone_number.as_deref(),
        )?;
        Ok((id, patch))
    }
}
