//! Email through SMTP (lettre). `KEYGATE_SMTP_URL` says where and how:
//!
//! - `smtps://user:pass@host:465`: TLS from the first byte (implicit TLS; port 465 by default);
//! - `smtp://user:pass@host:587`: STARTTLS, required (port 587 by default);
//! - `smtp://host:25?tls=opportunistic`: STARTTLS when the server offers it, plain otherwise;
//! - `smtp://host:25?tls=none`: plain, no TLS at all. Only when the URL says so (a relay on
//!   this machine, tests on loopback).
//!
//! An SMTP 4xx answer (and network trouble) is retried; a 5xx fails the delivery for good.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tracing::Instrument as _;

use super::message::Email;
use super::{ConfigError, EmailConfig, SendError};
use crate::webhooks::dispatch::MAX_ERROR_CHARS;

/// How long the SMTP server has for each command.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, refused if the server does not offer it (`smtp://`, the default).
    StartTls,
    /// STARTTLS when offered (`?tls=opportunistic`).
    Opportunistic,
    /// None (`?tls=none`).
    Plain,
}

/// A parsed `KEYGATE_SMTP_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User and password, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Parses `smtp://` and `smtps://` URLs (see the module documentation).
pub fn parse_smtp_url(raw: &str) -> Result<SmtpUrl, ConfigError> {
    let bad = |m: &str| ConfigError::SmtpUrl(m.to_owned());
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a URL: {e}")))?;
    let tls_param = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.to_ascii_lowercase());
    let tls = match (url.scheme(), tls_param.as_deref()) {
        ("smtps", None | Some("required" | "implicit")) => SmtpTls::Implicit,
        ("smtps", Some(_)) => return Err(bad("smtps:// is always TLS; drop ?tls=")),
        ("smtp", None | Some("required" | "starttls")) => SmtpTls::StartTls,
        ("smtp", Some("opportunistic")) => SmtpTls::Opportunistic,
        ("smtp", Some("none")) => SmtpTls::Plain,
        ("smtp", Some(_)) => {
            return Err(bad(
                "?tls= must be required (the default), opportunistic or none",
            ));
        }
        _ => return Err(bad("must be an smtp:// or smtps:// URL")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("must name a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(match tls {
        SmtpTls::Implicit => 465,
        _ => 587,
    });
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| bad("the user or password is not valid percent-encoded UTF-8"))
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, pass) => Some((decode(user)?, decode(pass.unwrap_or_default())?)),
    };
    Ok(SmtpUrl {
        host,
        port,
        tls,
        credentials,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The SMTP client (one per process, with a small connection pool).
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl Smtp {
    pub fn new(cfg: EmailConfig) -> Result<Self, ConfigError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let u = &cfg.smtp;
        let params = || {
            TlsParameters::new(u.host.clone())
                .map_err(|e| ConfigError::Client("SMTP", e.to_string()))
        };
        let tls = match u.tls {
            SmtpTls::Implicit => Tls::Wrapper(params()?),
            SmtpTls::StartTls => Tls::Required(params()?),
            SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
            SmtpTls::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(u.host.clone())
            .port(u.port)
            .tls(tls)
            .timeout(Some(TIMEOUT))
            .pool_config(PoolConfig::new().max_size(4));
        if let Some((user, pass)) = &u.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from: cfg.from,
            host: u.host.clone(),
        })
    }

    /// Sends `email` to `to`. `Ok` when the server accepted it (250 after DATA).
    pub async fn send(&self, to: &str, email: &Email) -> Result<(), SendError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| {
            SendError::Permanent(format!("the address is not valid for SMTP: {e}"))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("the message cannot be built: {e}")))?;
        let span = tracing::info_span!("smtp_send", host = %self.host);
        self.transport
            .send(message)
            .instrument(span)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// SMTP 5xx and client-side refusals are permanent; 4xx, timeouts, TLS and network trouble are
/// transient.
fn classify(e: smtp::Error) -> SendError {
    let text: String = format!("SMTP: {}", chain(&e))
        .chars()
        .take(MAX_ERROR_CHARS)
        .collect();
    if e.is_permanent() || e.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_say_how_to_protect_the_connection() {
        let u =
            parse_smtp_url("smtps://keys%40example.com:p%3Ass@mail.example.com").expect("smtps");
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("mail.example.com", 465, SmtpTls::Implicit)
        );
        assert_eq!(
            u.credentials,
            Some(("keys@example.com".into(), "p:ss".into()))
        );
        assert!(
            !format!("{u:?}").contains("p:ss"),
            "the password is not printed"
        );
        let u = parse_smtp_url("smtp://mail.example.com").expect("smtp");
        assert_eq!(
            (u.port, u.tls, u.credentials),
            (587, SmtpTls::StartTls, None)
        );
        let u = parse_smtp_url("smtp://127.0.0.1:2525?tls=none").expect("plain");
        assert_eq!((u.port, u.tls), (2525, SmtpTls::Plain));
        let u = parse_smtp_url("smtp://mail.example.com:25?tls=opportunistic").expect("opp");
        assert_eq!(u.tls, SmtpTls::Opportunistic);
        for bad in [
            "http://mail.example.com",
            "smtp://mail.example.com?tls=maybe",
            "smtps://mail.example.com?tls=none",
            "smtp://",
            "nonsense",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad} accepted");
        }
    }
}
