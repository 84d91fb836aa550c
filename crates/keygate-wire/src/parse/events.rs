//! Event log requests: the filter of a listing or a watch.

use keygate_app::events::{ListEvents, WatchEvents};
use keygate_domain::events::{self, EventFilter};
use keygate_domain::validate;
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1;

use super::IntoCommand;
use crate::convert::from_ts;

/// The filter fields `ListEvents` and `WatchEvents` share.
struct RawFilter {
    event_types: Vec<String>,
    access_grant_id: String,
    access_method_id: String,
    acs_system_id: String,
    acs_entrance_id: String,
    user_identity_id: String,
}

/// Every event type must be known; the ids must be well formed. The first violation is
/// reported.
fn filter(r: RawFilter) -> Result<EventFilter, Error> {
    for (i, t) in r.event_types.iter().enumerate() {
        if events::by_name(t).is_none() {
            return Err(Error::InvalidArgument {
                violations: vec![FieldViolation::new(
                    format!("event_types[{i}]"),
                    format!("unknown event type {t:?}"),
                )],
            });
        }
    }
    Ok(EventFilter {
        event_types: r.event_types,
        access_grant_id: validate::optional_id(
            "access_grant_id",
            &r.access_grant_id,
            Resource::AccessGrant,
        )?,
        access_method_id: validate::optional_id(
            "access_method_id",
            &r.access_method_id,
            Resource::AccessMethod,
        )?,
        acs_system_id: validate::optional_id(
            "acs_system_id",
            &r.acs_system_id,
            Resource::AccessSystem,
        )?,
        acs_entrance_id: validate::optional_id(
            "acs_entrance_id",
            &r.acs_entrance_id,
            Resource::Entrance,
        )?,
        user_identity_id: validate::optional_id(
            "user_identity_id",
            &r.user_identity_id,
            Resource::UserIdentity,
        )?,
        occurred_after: None,
        occurred_before: None,
    })
}

impl IntoCommand for v1::ListEventsRequest {
    type Command = ListEvents;

    fn into_command(self) -> Result<ListEvents, Error> {
        let v1::ListEventsRequest {
            page_size,
            page_token,
            event_types,
            access_grant_id,
            access_method_id,
            acs_system_id,
            acs_entrance_id,
            user_identity_id,
            occurred_after,
            occurred_before,
        } = self;
        let mut filter = filter(RawFilter {
            event_types,
            access_grant_id,
            access_method_id,
            acs_system_id,
            acs_entrance_id,
            user_identity_id,
        })?;
        // A timestamp out of range filters nothing (as it always has).
        filter.occurred_after = occurred_after.as_ref().and_then(from_ts);
        filter.occurred_before = occurred_before.as_ref().and_then(from_ts);
        Ok(ListEvents {
            filter,
            page_size,
            page_token,
        })
    }
}

impl IntoCommand for v1::WatchEventsRequest {
    type Command = WatchEvents;

    fn into_command(self) -> Result<WatchEvents, Error> {
        let v1::WatchEventsRequest {
            cursor,
            event_types,
            access_grant_id,
            access_method_id,
            acs_system_id,
            acs_entrance_id,
            user_identity_id,
        } = self;
        let filter = filter(RawFilter {
            event_types,
            access_grant_id,
            access_method_id,
            acs_system_id,
            acs_entrance_id,
            user_identity_id,
        })?;
        Ok(WatchEvents { filter, cursor })
    }
}
