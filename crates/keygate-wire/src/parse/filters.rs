//! The filters of list requests. They take the request by reference: the adapter also binds
//! its page token to the filter's raw values.

use keygate_domain::acs::{AcsUserFilter, CredentialFilter};
use keygate_domain::validate;
use keygate_domain::{Error, Resource};
use keygate_proto::v1;
use keygate_store::{GrantFilter, MethodFilter};

pub fn access_grants(r: &v1::ListAccessGrantsRequest) -> Result<GrantFilter, Error> {
    let v1::ListAccessGrantsRequest {
        page_size: _,
        page_token: _,
        user_identity_id,
        acs_entrance_id,
        acs_system_id,
    } = r;
    Ok(GrantFilter {
        user_identity_id: validate::optional_id(
            "user_identity_id",
            user_identity_id,
            Resource::UserIdentity,
        )?,
        acs_entrance_id: validate::optional_id(
            "acs_entrance_id",
            acs_entrance_id,
            Resource::Entrance,
        )?,
        acs_system_id: validate::optional_id(
            "acs_system_id",
            acs_system_id,
            Resource::AccessSystem,
        )?,
        ..GrantFilter::default()
    })
}

pub fn access_methods(r: &v1::ListAccessMethodsRequest) -> Result<MethodFilter, Error> {
    let v1::ListAccessMethodsRequest {
        page_size: _,
        page_token: _,
        access_grant_id,
        user_identity_id,
        acs_entrance_id,
        acs_system_id,
    } = r;
    Ok(MethodFilter {
        access_grant_id: validate::optional_id(
            "access_grant_id",
            access_grant_id,
            Resource::AccessGrant,
        )?,
        user_identity_id: validate::optional_id(
            "user_identity_id",
            user_identity_id,
            Resource::UserIdentity,
        )?,
        acs_entrance_id: validate::optional_id(
            "acs_entrance_id",
            acs_entrance_id,
            Resource::Entrance,
        )?,
        acs_system_id: validate::optional_id(
            "acs_system_id",
            acs_system_id,
            Resource::AccessSystem,
        )?,
    })
}

pub fn acs_users(r: &v1::ListAcsUsersRequest) -> Result<AcsUserFilter, Error> {
    let v1::ListAcsUsersRequest {
        page_size: _,
        page_token: _,
        acs_system_id,
        user_identity_id,
    } = r;
    Ok(AcsUserFilter {
        acs_system_id: validate::optional_id(
            "acs_system_id",
            acs_system_id,
            Resource::AccessSystem,
        )?,
        user_identity_id: validate::optional_id(
            "user_identity_id",
            user_identity_id,
            Resource::UserIdentity,
        )?,
    })
}

pub fn credentials(r: &v1::ListCredentialsRequest) -> Result<CredentialFilter, Error> {
    let v1::ListCredentialsRequest {
        page_size: _,
        page_token: _,
        acs_user_id,
        acs_system_id,
        user_identity_id,
    } = r;
    Ok(CredentialFilter {
        acs_user_id: validate::optional_id("acs_user_id", acs_user_id, Resource::AcsUser)?,
        acs_system_id: validate::optional_id(
            "acs_system_id",
            acs_system_id,
            Resource::AccessSystem,
        )?,
        user_identity_id: validate::optional_id(
            "user_identity_id",
            user_identity_id,
            Resource::UserIdentity,
        )?,
    })
}
