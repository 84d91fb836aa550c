//! The tonic service implementations, one module per service.

pub mod access_grants;
pub mod access_methods;
pub mod access_systems;
pub mod acs_users;
pub mod events;
pub mod instant_keys;
pub mod user_identities;
pub mod webhooks;
pub mod workspaces;

use keygate_domain::Error;
use keygate_domain::page::{PageRequest, page_size};

use crate::tokens::{PageScope, PageTokens};

/// Validates `page_size` and opens `page_token` for this scope.
pub(crate) fn page_request(
    tokens: &PageTokens,
    scope: &PageScope<'_>,
    size: i32,
    token: &str,
) -> Result<PageRequest, Error> {
    Ok(PageRequest {
        limit: page_size(size)?,
        after: tokens.open(scope, token)?,
    })
}
