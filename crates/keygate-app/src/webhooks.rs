//! Webhooks: where a workspace's events are POSTed. The URL rules and the SSRF guard
//! ([`crate::ssrf`]) are checked at create; the delivery role's dispatcher checks the guard
//! again before every attempt, and signs with the secret made here.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keygate_domain::ids::{WebhookId, WorkspaceId};
use keygate_domain::model::{WorkspaceType, now};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::webhook::{MAX_URL_CHARS, NewWebhook, Webhook};
use keygate_domain::{Error, FieldViolation};
use keygate_store::Idempotency;
use rand::RngExt as _;
use url::Url;

use crate::App;

/// Every signing secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";

/// How long `CreateWebhook` waits for the URL's host to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A new signing secret: `whsec_` and the (padded, standard) base64 of 32 random bytes.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::rng().random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Why a webhook URL is not accepted (before any lookup).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("is not an absolute URL: {0}")]
    Invalid(String),
    #[error("must be an https:// URL")]
    NotHttps,
    #[error("must be an https:// URL (plain http:// is accepted in sandbox workspaces only)")]
    HttpOutsideSandbox,
    #[error("must name a host")]
    NoHost,
    #[error("must not contain a user name or password")]
    Credentials,
}

/// Parses a webhook URL: absolute, `https://` (or `http://` when `allow_http`, for sandbox
/// workspaces), with a host and no credentials, up to 2000 characters.
pub fn parse_url(raw: &str, allow_http: bool) -> Result<Url, UrlError> {
    if raw.is_empty() {
        return Err(UrlError::Empty);
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(UrlError::HttpOutsideSandbox),
        _ => return Err(UrlError::NotHttps),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// A `CreateWebhook` whose `request_id` is valid. The URL and the event types are checked by
/// the use case, after a replay has had its chance (the URL may not resolve the same any more).
#[derive(Clone, Debug)]
pub struct CreateWebhook {
    pub idem: Option<Idempotency>,
    pub url: String,
    pub event_types: Vec<String>,
}

/// An `UpdateWebhook`: the webhook and its new event types (checked by the use case).
#[derive(Clone, Debug)]
pub struct UpdateWebhook {
    pub webhook_id: WebhookId,
    pub event_types: Vec<String>,
}

fn url_violation(description: impl Into<String>) -> Error {
    Error::InvalidArgument {
        violations: vec![FieldViolation::new("url", description)],
    }
}

impl App {
    /// Creates a webhook, or returns the first one on a replay. Returns it with its signing
    /// secret (shown once, at create). A workspace that has `limits.webhooks_per_workspace`
    /// webhooks already is refused (`LimitReached`, `WEBHOOK_LIMIT_REACHED`); a replay is not.
    pub async fn create_webhook(
        &self,
        ws: WorkspaceId,
        cmd: CreateWebhook,
    ) -> Result<(Webhook, String), Error> {
        let CreateWebhook {
            idem,
            url,
            event_types,
        } = cmd;
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await?
        {
            let id: WebhookId = first.parse().map_err(|_| Error::Internal {
                message: "stored webhook id".into(),
            })?;
            let w = self.store.get_webhook(ws, id).await?;
            let secret = self.store.webhook_secret(ws, id).await?;
            return Ok((w, secret));
        }
        let workspace = self.store.get_workspace(ws).await?;
        let event_types = keygate_domain::webhook::event_types(&event_types);
        let url = self.checked_url(workspace.workspace_type, &url).await;
        let (url, event_types) = match (url, event_types) {
            (Ok(u), Ok(t)) => (u, t),
            (
                Err(Error::InvalidArgument { mut violations }),
                Err(Error::InvalidArgument { violations: more }),
            ) => {
                violations.extend(more);
                return Err(Error::InvalidArgument { violations });
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let new = NewWebhook {
            id: WebhookId::new(),
            url,
            event_types,
            secret: new_secret(),
            created_at: now(),
            workspace_cap: self.limits.webhooks_per_workspace,
        };
        let created = self.store.create_webhook(ws, &new, idem.as_ref()).await;
        if let Err(Error::LimitReached { .. }) = &created {
            keygate_telemetry::metrics::limit_refused("webhooks");
        }
        created
    }

    /// The URL rules, then the SSRF guard (which resolves the host) under this process's
    /// network policy.
    async fn checked_url(&self, ws_type: WorkspaceType, raw: &str) -> Result<String, Error> {
        let url = parse_url(raw, ws_type == WorkspaceType::Sandbox)
            .map_err(|e| url_violation(e.to_string()))?;
        tokio::time::timeout(
            RESOLVE_TIMEOUT,
            crate::ssrf::check_url(&url, self.webhook_network),
        )
        .await
        .map_err(|_| url_violation("is refused: its host did not resolve within 10 s"))?
        .map_err(|e| url_violation(format!("is refused: {e}")))?;
        Ok(url.to_string())
    }

    pub async fn get_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<Webhook, Error> {
        self.store.get_webhook(ws, id).await
    }

    /// Oldest first; disabled webhooks included.
    pub async fn list_webhooks(
        &self,
        ws: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<Webhook>, Error> {
        self.store.list_webhooks(ws, page).await
    }

    /// A webhook's deliveries, in event order, at most `limit` (`NOT_FOUND` for a webhook not
    /// in the workspace).
    pub async fn list_webhook_deliveries(
        &self,
        ws: WorkspaceId,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<keygate_store::WebhookDeliveryRecord>, Error> {
        self.store.get_webhook(ws, id).await?;
        self.store.list_webhook_deliveries(ws, id, limit).await
    }

    /// Replaces the event types a webhook receives (empty: every type, including types added
    /// later). Its URL, secret and deliveries already queued are kept; the events fanned out to
    /// it from now on are chosen by the new types. An unknown type is `INVALID_ARGUMENT` on
    /// `event_types[i]` and changes nothing.
    pub async fn update_webhook(
        &self,
        ws: WorkspaceId,
        cmd: UpdateWebhook,
    ) -> Result<Webhook, Error> {
        let event_types = keygate_domain::webhook::event_types(&cmd.event_types)?;
        let w = self
            .store
            .update_webhook_event_types(ws, cmd.webhook_id, &event_types)
            .await?;
        tracing::info!(webhook_id = %w.id, event_types = w.event_types.len(), "webhook updated");
        Ok(w)
    }

    /// Deletes a webhook and every delivery of it not yet made.
    pub async fn delete_webhook(&self, ws: WorkspaceId, id: WebhookId) -> Result<(), Error> {
        self.store.delete_webhook(ws, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_except_in_the_sandbox() {
        assert!(parse_url("https://example.com/hook", false).is_ok());
        assert_eq!(
            parse_url("http://example.com/hook", false),
            Err(UrlError::HttpOutsideSandbox)
        );
        assert!(parse_url("http://example.com/hook", true).is_ok());
        assert_eq!(
            parse_url("ftp://example.com/", true),
            Err(UrlError::NotHttps)
        );
        assert_eq!(parse_url("", true), Err(UrlError::Empty));
        assert!(matches!(
            parse_url("/relative", true),
            Err(UrlError::Invalid(_))
        ));
        assert_eq!(
            parse_url("https://user:pw@example.com/", true),
            Err(UrlError::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(2000));
        assert_eq!(parse_url(&long, true), Err(UrlError::TooLong));
    }

    #[test]
    fn new_secrets_are_32_random_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        let key = a.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(STANDARD.decode(key).expect("base64").len(), 32);
    }
}
