//! SMS through an HTTP SMS API, Twilio-style by default: `POST KEYGATE_SMS_API_URL` with the
//! form fields `To`, `From` and `Body`, HTTP basic auth with the account SID and auth token. A
//! 2xx answer means the provider accepted the message; 429 and 5xx (and network trouble) are
//! retried; any other answer fails the delivery for good, with the provider's message.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use tracing::Instrument as _;

use super::{ConfigError, SendError, Settings, SmsConfig};
use crate::webhooks::dispatch::{MAX_ERROR_CHARS, chain};

/// How long the SMS API has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error answer is read (for its message).
const MAX_ERROR_BODY: usize = 4096;

/// Checks the SMS settings. `{sid}` in the URL stands for the account SID, so the Twilio URL
/// can be given as `https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json`.
pub(super) fn config(s: &Settings) -> Result<SmsConfig, ConfigError> {
    let sid = s.sms_account_sid.trim();
    let token = s.sms_auth_token.trim();
    let auth = match (sid.is_empty(), token.is_empty()) {
        (true, true) => None,
        (false, false) => Some((sid.to_owned(), token.to_owned())),
        _ => return Err(ConfigError::SmsAuth),
    };
    let raw = s.sms_api_url.trim().replace("{sid}", sid);
    let api_url = Url::parse(&raw).map_err(|e| ConfigError::SmsUrl(e.to_string()))?;
    match api_url.scheme() {
        "https" => {}
        "http" if is_loopback(&api_url) => {}
        _ => return Err(ConfigError::SmsUrlNotHttps),
    }
    if s.sms_from.trim().is_empty() {
        return Err(ConfigError::SmsFrom);
    }
    Ok(SmsConfig {
        api_url,
        auth,
        from: s.sms_from.trim().to_owned(),
    })
}

/// Whether the URL's host is this machine (127.0.0.0/8, ::1 or `localhost`).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The HTTP SMS API client (one per process; connections are reused).
#[derive(Clone)]
pub struct SmsApi {
    client: reqwest::Client,
    cfg: SmsConfig,
}

impl SmsApi {
    pub fn new(cfg: SmsConfig) -> Result<Self, ConfigError> {
        // reqwest is built without a crypto provider: the process uses ring, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // The API answers where it is; a redirect is a misconfigured URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Keygate/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&cfg.api_url) {
            // A local endpoint is reached directly, whatever HTTP_PROXY says.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::Client("SMS", chain(&e)))?;
        Ok(Self { client, cfg })
    }

    /// Sends `body` to `to` (E.164). `Ok` when the API accepted it.
    pub async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("To", to)
            .append_pair("From", &self.cfg.from)
            .append_pair("Body", body)
            .finish();
        let mut req = self
            .client
            .post(self.cfg.api_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form);
        if let Some((sid, token)) = &self.cfg.auth {
            req = req.basic_auth(sid, Some(token));
        }
        let span = tracing::info_span!(
            "sms_api_post",
            host = self.cfg.api_url.host_str().unwrap_or_default(),
            status = tracing::field::Empty,
        );
        async {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() => {
                    return Err(SendError::Transient(format!(
                        "the SMS API did not answer within {TIMEOUT:?}"
                    )));
                }
                Err(e) => return Err(SendError::Transient(format!("SMS API: {}", chain(&e)))),
            };
            let status = resp.status();
            tracing::Span::current().record("status", status.as_u16());
            if status.is_success() {
                return Ok(());
            }
            let text = read_some(resp).await;
            let error = truncate(&format!(
                "SMS API answered HTTP {}{}",
                status.as_u16(),
                text
            ));
            if status.as_u16() == 429 || status.is_server_error() {
                Err(SendError::Transient(error))
            } else {
                Err(SendError::Permanent(error))
            }
        }
        .instrument(span)
        .await
    }
}

/// `": <message>"` from an error answer: the `message` of a JSON body (Twilio's form), or the
/// start of the body; empty when there is none.
async fn read_some(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let m = v.get("message")?.as_str()?.to_owned();
            Some(match v.get("code").and_then(serde_json::Value::as_i64) {
                Some(code) => format!("{m} (code {code})"),
                None => m,
            })
        })
        .unwrap_or_else(|| text.trim().to_owned());
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Settings {
        Settings {
            sms_api_url: url.into(),
            sms_from: "+15555550100".into(),
            sms_account_sid: "AC123".into(),
            sms_auth_token: "tok".into(),
            retry_scale: 1.0,
            ..Settings::default()
        }
    }

    #[test]
    fn the_sid_fills_the_twilio_url() {
        let c = config(&settings(
            "https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json",
        ))
        .expect("config");
        assert_eq!(
            c.api_url.as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(c.auth, Some(("AC123".into(), "tok".into())));
        assert!(
            !format!("{c:?}").contains("tok"),
            "the token is not printed"
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(config(&settings("http://127.0.0.1:9000/sms")).is_ok());
        assert!(config(&settings("http://localhost:9000/sms")).is_ok());
        assert!(config(&settings("http://[::1]:9000/sms")).is_ok());
        assert_eq!(
            config(&settings("http://10.0.0.1/sms")).err(),
            Some(ConfigError::SmsUrlNotHttps)
        );
        assert!(matches!(
            config(&settings("not a url")).err(),
            Some(ConfigError::SmsUrl(_))
        ));
    }
}
