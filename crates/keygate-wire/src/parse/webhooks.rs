//! Webhook requests.

use keygate_app::webhooks::{CreateWebhook, UpdateWebhook};
use keygate_domain::validate;
use keygate_domain::{Error, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim};

impl IntoCommand for v1::CreateWebhookRequest {
    type Command = CreateWebhook;

    /// Only the `request_id` is checked here: the URL and the event types are checked by the
    /// use case, after a replay has returned the first webhook.
    fn into_command(self) -> Result<CreateWebhook, Error> {
        let fingerprint = v1::CreateWebhookRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::CreateWebhookRequest {
            request_id,
            url,
            event_types,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        Ok(CreateWebhook {
            idem: claim("CreateWebhook", request_id, &fingerprint),
            url,
            event_types,
        })
    }
}

impl IntoCommand for v1::UpdateWebhookRequest {
    type Command = UpdateWebhook;

    /// The id is checked here; the event types by the use case.
    fn into_command(self) -> Result<UpdateWebhook, Error> {
        Ok(UpdateWebhook {
            webhook_id: validate::id("webhook_id", &self.webhook_id, Resource::Webhook)?,
            event_types: self.event_types,
        })
    }
}
