//! The JSON of an event as webhooks receive it: the `Event` message with its proto field
//! names, rendered by the delivery role's dispatcher.

use keygate_app::tokens::PageTokens;
use keygate_domain::events::Event;
use keygate_domain::ids::WebhookId;
use keygate_proto::v1;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// Renders deliveries as the gateway serves events: `crate::convert::event` with a sealed cursor.
pub struct EventJson {
    pub tokens: PageTokens,
}

impl EventJson {
    /// The body of a webhook delivery of `e` (with `webhook_id` when sent to one).
    pub fn render(&self, e: &Event, webhook_id: Option<WebhookId>) -> Result<String, String> {
        let cursor = keygate_app::events::seal_cursor(&self.tokens, e.workspace_id, e.seq)
            .map_err(|e| e.to_string())?;
        let mut wire = crate::convert::event(e, cursor);
        if let Some(id) = webhook_id {
            wire.webhook_id = id.to_string();
        }
        serde_json::to_string(&event_json(&wire)).map_err(|e| e.to_string())
    }
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(crate::convert::from_ts)
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// An `Event` as JSON with its proto field names (snake_case) and every field present (ids
/// that do not apply are empty strings); times in RFC 3339, UTC. The destructuring is
/// exhaustive so a field added to `Event` does not compile until it is sent here too.
pub fn event_json(e: &v1::Event) -> Value {
    let v1::Event {
        event_id,
        event_type,
        event_description,
        workspace_id,
        created_at,
        occurred_at,
        access_grant_id,
        access_method_id,
        acs_system_id,
        acs_entrance_id,
        acs_user_id,
        acs_credential_id,
        user_identity_id,
        instant_key_id,
        action_attempt_id,
        webhook_id,
        delivery_id,
        cursor,
    } = e;
    json!({
        "event_id": event_id,
        "event_type": event_type,
        "event_description": event_description,
        "workspace_id": workspace_id,
        "created_at": timestamp(created_at.as_ref()),
        "occurred_at": timestamp(occurred_at.as_ref()),
        "access_grant_id": access_grant_id,
        "access_method_id": access_method_id,
        "acs_system_id": acs_system_id,
        "acs_entrance_id": acs_entrance_id,
        "acs_user_id": acs_user_id,
        "acs_credential_id": acs_credential_id,
        "user_identity_id": user_identity_id,
        "instant_key_id": instant_key_id,
        "action_attempt_id": action_attempt_id,
        "webhook_id": webhook_id,
        "delivery_id": delivery_id,
        "cursor": cursor,
    })
}

#[cfg(test)]
mod tests {
    use keygate_domain::ids::{AccessGrantId, EventId, WorkspaceId};

    use super::*;

    #[test]
    fn deliveries_are_the_event_with_proto_field_names() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_714_979_289_123_456_000)
            .expect("time");
        let e = Event {
            seq: 7,
            workspace_id: WorkspaceId::new(),
            id: EventId::new(),
            event_type: "access_grant.created".into(),
            description: "An access grant was created.".into(),
            occurred_at: at,
            created_at: at,
            access_grant_id: Some(AccessGrantId::new()),
            access_method_id: None,
            acs_system_id: None,
            acs_entrance_id: None,
            user_identity_id: None,
            instant_key_id: None,
            action_attempt_id: None,
        };
        let tokens = PageTokens::new(vec![3; 32]);
        let body = EventJson { tokens }.render(&e, None).expect("render");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["event_id"], e.id.to_string());
        assert_eq!(v["event_type"], "access_grant.created");
        assert_eq!(
            v["access_grant_id"],
            e.access_grant_id.map(|i| i.to_string()).unwrap_or_default()
        );
        assert_eq!(v["access_method_id"], "");
        assert_eq!(v["created_at"], "2024-05-06T07:08:09.123456Z");
        assert!(!v["cursor"].as_str().unwrap_or_default().is_empty());
        assert_eq!(v.as_object().map(|o| o.len()), Some(18));
        let with_hook = EventJson {
            tokens: PageTokens::new(vec![3; 32]),
        }
        .render(&e, Some(WebhookId::new()))
        .expect("render");
        assert!(
            !serde_json::from_str::<Value>(&with_hook).expect("json")["webhook_id"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
    }
}
