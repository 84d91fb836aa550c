//! Instant Key deliveries by SMS and email through the real binary, against a local SMTP sink and
//! a local HTTP SMS endpoint that this test starts on loopback: nothing leaves the machine (the
//! only endpoints configured are 127.0.0.1 ones, and every message the server says it sent is
//! found in them). The retry budget is compressed (`--delivery-retry-scale 0.001`).
//!
//! Shown: SMS (Twilio-style form with basic auth) and email arrive at the right recipient with a
//! body holding the key's link; a 500 (and an SMTP 451) is retried and then sent; an API that
//! stays down uses up the six attempts; a 400 (and an SMTP 550) fails at once, for good, with
//! `instant_key.delivery_failed`; the key's `deliveries` shows each one with its
//! attempts, status and sent_at; a repeated `request_id` sends once; validation; a revoked key is
//! RESOURCE_INACTIVE; another workspace's key is NOT_FOUND; no link is stored; and the outbox (the
//! embedded default, or `--delivery-outbox true`) sends nothing and lists the delivery through
//! `keygate deliveries list` and `GET /outbox`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use keygate_proto::v1;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tonic::Code;

use crate::grants::events;
use crate::harness::*;
use crate::instant_keys::{http, instant_keys, jane_with_a_remote_door, path_of, table_text};

type Ch = tonic::transport::Channel;

const SID: &str = "AC0123456789abcdef";
const TOKEN: &str = "sms-test-auth-token";
const SMS_FROM: &str = "+15555550100";
/// Jane's phone (the grant's inline user identity): the endpoint answers 500 once, then 201.
const JANE_PHONE: &str = "+15555551000";
/// The endpoint refuses this number with a 400, as Twilio does for an invalid `To`.
const REFUSED_PHONE: &str = "+15555550400";
/// The endpoint answers 503 to this number, always: the retry budget runs out.
const DOWN_PHONE: &str = "+15555550503";
/// The SMTP sink refuses this mailbox with a 550.
const REFUSED_MAILBOX: &str = "nobody@refused.test";
/// The SMTP sink answers 451 (try again later) to this mailbox once, then accepts it.
const GREYLISTED_MAILBOX: &str = "grey@example.com";

// ---------------------------------------------------------------------------------------------
// A local HTTP SMS endpoint, Twilio-style.

#[derive(Clone, Debug)]
struct Sms {
    to: String,
    from: String,
    body: String,
    authorized: bool,
    status: u16,
}

#[derive(Clone, Default)]
struct SmsEndpoint {
    got: Arc<Mutex<Vec<Sms>>>,
    /// 500s still to answer, per number.
    fail_first: Arc<Mutex<HashMap<String, u32>>>,
}

impl SmsEndpoint {
    fn got(&self) -> Vec<Sms> {
        self.got.lock().expect("lock").clone()
    }

    fn to(&self, number: &str) -> Vec<Sms> {
        self.got().into_iter().filter(|s| s.to == number).collect()
    }
}

async fn sms_handler(
    axum::extract::State(ep): axum::extract::State<SmsEndpoint>,
    axum::extract::Path(sid): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, String) {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    let authorized = sid == SID
        && headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(want.as_str());
    let to = form.get("To").cloned().unwrap_or_default();
    let status = if !authorized {
        401
    } else if to == REFUSED_PHONE {
        400
    } else if to == DOWN_PHONE {
        503
    } else {
        let mut fail = ep.fail_first.lock().expect("lock");
        match fail.get_mut(&to) {
            Some(n) if *n > 0 => {
                *n -= 1;
                500
            }
            _ => 201,
        }
    };
    ep.got.lock().expect("lock").push(Sms {
        to: to.clone(),
        from: form.get("From").cloned().unwrap_or_default(),
        body: form.get("Body").cloned().unwrap_or_default(),
        authorized,
        status,
    });
    let body = match status {
        201 => format!(
            r#"{{"sid":"SM{}","status":"queued","to":"{to}"}}"#,
            uuid::Uuid::new_v4().simple()
        ),
        400 => format!(
            r#"{{"code":21211,"message":"The 'To' number {to} is not a valid phone number.","status":400}}"#
        ),
        401 => r#"{"code":20003,"message":"Authenticate","status":401}"#.into(),
        _ => r#"{"code":20500,"message":"Internal Server Error","status":500}"#.into(),
    };
    (
        axum::http::StatusCode::from_u16(status).expect("status"),
        body,
    )
}

/// Starts the endpoint on a free loopback port; returns it and its URL (with `{sid}` left for
/// Keygate to fill in, as the Twilio URL is documented).
async fn start_sms_endpoint() -> (SmsEndpoint, String) {
    let ep = SmsEndpoint::default();
    ep.fail_first
        .lock()
        .expect("lock")
        .insert(JANE_PHONE.into(), 1);
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(sms_handler),
        )
        .with_state(ep.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sms");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        ep,
        format!("http://{addr}/2010-04-01/Accounts/{{sid}}/Messages.json"),
    )
}

// ---------------------------------------------------------------------------------------------
// A local SMTP sink: answers EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, and keeps every
// message it accepted.

#[derive(Clone, Debug)]
struct Mail {
    from: String,
    to: Vec<String>,
    /// The DATA, dot-unstuffed.
    data: String,
}

#[derive(Clone, Default)]
struct SmtpSink {
    got: Arc<Mutex<Vec<Mail>>>,
    /// RCPT TO commands seen, accepted or not.
    rcpts: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    fn rcpts_of(&self, mailbox: &str) -> usize {
        self.rcpts
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| *r == mailbox)
            .count()
    }
}

impl SmtpSink {
    fn got(&self) -> Vec<Mail> {
        self.got.lock().expect("lock").clone()
    }
}

fn angle(arg: &str) -> String {
    arg.split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(a, _)| a.to_owned())
        .unwrap_or_else(|| arg.trim().to_owned())
}

async fn smtp_session(sink: SmtpSink, stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let verb = cmd
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                w.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SIZE 1048576\r\n")
                    .await?
            }
            "HELO" => w.write_all(b"250 sink.test\r\n").await?,
            "MAIL" => {
                from = angle(&cmd);
                to.clear();
                w.write_all(b"250 2.1.0 OK\r\n").await?;
            }
            "RCPT" => {
                let rcpt = angle(&cmd);
                let seen = {
                    let mut r = sink.rcpts.lock().expect("lock");
                    r.push(rcpt.clone());
                    r.iter().filter(|x| **x == rcpt).count()
                };
                if rcpt == GREYLISTED_MAILBOX && seen == 1 {
                    w.write_all(b"451 4.7.1 greylisted, try again later\r\n")
                        .await?;
                } else if rcpt == REFUSED_MAILBOX {
                    w.write_all(b"550 5.1.1 mailbox unavailable\r\n").await?;
                } else {
                    to.push(rcpt);
                    w.write_all(b"250 2.1.5 OK\r\n").await?;
                }
            }
            "DATA" => {
                w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                sink.got.lock().expect("lock").push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                w.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            "RSET" => {
                from.clear();
                to.clear();
                w.write_all(b"250 2.0.0 OK\r\n").await?;
            }
            "NOOP" => w.write_all(b"250 2.0.0 OK\r\n").await?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => w.write_all(b"502 5.5.2 not implemented\r\n").await?,
        }
    }
}

async fn start_smtp_sink() -> (SmtpSink, String) {
    let sink = SmtpSink::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
    let addr = listener.local_addr().expect("addr");
    let s = sink.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let _ = smtp_session(s, stream).await;
            });
        }
    });
    (sink, format!("smtp://{addr}?tls=none"))
}

/// The MIME message with quoted-printable soft breaks and escapes decoded (enough to find a
/// link in either part; the test's text is ASCII).
fn decoded(data: &str) -> String {
    let joined = data.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------

fn deliver(
    key_id: &str,
    channel: v1::DeliveryChannel,
    to: &str,
    request_id: &str,
) -> v1::DeliverInstantKeyRequest {
    v1::DeliverInstantKeyRequest {
        request_id: request_id.into(),
        instant_key_id: key_id.into(),
        channel: channel as i32,
        to: to.into(),
    }
}

async fn get_key(ch: &Ch, key: &str, id: &str) -> v1::InstantKey {
    instant_keys(ch)
        .get_instant_key(authed(
            key,
            v1::GetInstantKeyRequest {
                lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyId(id.into())),
            },
        ))
        .await
        .expect("get key")
        .into_inner()
        .instant_key
        .expect("key")
}

/// Waits until the delivery is no longer pending; returns it as the key shows it.
async fn settled(ch: &Ch, key: &str, key_id: &str, delivery_id: &str) -> v1::Delivery {
    for _ in 0..400 {
        let k = get_key(ch, key, key_id).await;
        if let Some(d) = k.deliveries.iter().find(|d| d.delivery_id == delivery_id)
            && d.status != v1::DeliveryStatus::Pending as i32
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("delivery {delivery_id} is still pending");
}

async fn delivery_events(ch: &Ch, key: &str, event_type: &str) -> Vec<v1::Event> {
    events(ch)
        .list_events(authed(
            key,
            v1::ListEventsRequest {
                event_types: vec![event_type.into()],
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
}

fn status_of(d: &v1::Delivery) -> v1::DeliveryStatus {
    v1::DeliveryStatus::try_from(d.status).expect("status")
}

async fn deliveries_by_sms_and_email(opts: Options) {
    let started = std::time::Instant::now();
    let (sms, sms_url) = start_sms_endpoint().await;
    let (smtp, smtp_url) = start_smtp_sink().await;
    // Nothing leaves the machine: the only endpoints configured are on loopback.
    assert!(sms_url.starts_with("http://127.0.0.1:") && smtp_url.starts_with("smtp://127.0.0.1:"));
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms",
                "40",
                "--delivery-retry-scale",
                "0.001",
                "--sms-api-url",
                &sms_url,
                "--sms-account-sid",
                SID,
                "--sms-auth-token",
                TOKEN,
                "--sms-from",
                SMS_FROM,
                "--smtp-url",
                &smtp_url,
                "--email-from",
                "Hotel Keys <keys@hotel.test>",
            ]
            .map(String::from)
            .to_vec(),
            ..opts.clone()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;
    let (g, _mobile, _doors) = jane_with_a_remote_door(&ch, &key, "dl-grant").await;
    let key_id = g.instant_key_id.clone();
    let link = g.instant_key_url.clone();
    assert!(!key_id.is_empty() && link.contains("/ik/"));
    let mut client = instant_keys(&ch);

    // SMS to the person's own number (`to` empty): answered at once, pending; the endpoint's 500
    // is retried, then the message is accepted.
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Sms, "", ""),
        ))
        .await
        .expect("deliver sms")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(status_of(&d), v1::DeliveryStatus::Pending);
    assert_eq!((d.to.as_str(), d.attempts), (JANE_PHONE, 0));
    assert_eq!(d.instant_key_id, key_id);
    assert!(d.sent_at.is_none() && d.created_at.is_some() && !d.sent_to_outbox);
    let sms_sent = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&sms_sent),
        v1::DeliveryStatus::Sent,
        "{sms_sent:?}"
    );
    assert_eq!(sms_sent.attempts, 2, "one 500, then accepted: {sms_sent:?}");
    assert!(
        sms_sent.last_error.contains("500"),
        "the retried failure is kept: {sms_sent:?}"
    );
    assert!(sms_sent.sent_at.is_some() && !sms_sent.sent_to_outbox);
    let got = sms.to(JANE_PHONE);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got.iter().map(|s| s.status).collect::<Vec<_>>(), [500, 201]);
    for s in &got {
        assert!(
            s.authorized,
            "basic auth with the account SID and token: {s:?}"
        );
        assert_eq!(s.from, SMS_FROM);
        assert_eq!(s.body, format!("Your Instant Key from Hotel: {link}"));
    }

    // Email to the person's own address: one message to her, with the link in both parts.
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Email, "", ""),
        ))
        .await
        .expect("deliver email")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(d.to, "jane.doe@example.com");
    let email_sent = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&email_sent),
        v1::DeliveryStatus::Sent,
        "{email_sent:?}"
    );
    assert_eq!(
        (email_sent.attempts, email_sent.last_error.as_str()),
        (1, "")
    );
    let mails = smtp.got();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "keys@hotel.test");
    assert_eq!(mail.to, ["jane.doe@example.com"]);
    let body = decoded(&mail.data);
    if std::env::var("TEST_LOG").is_ok() {
        eprintln!("{}", mail.data);
    }
    assert!(
        body.contains("Subject: Your Instant Key from Hotel"),
        "{body}"
    );
    assert!(body.contains("To: jane.doe@example.com"), "{body}");
    assert!(
        body.contains("text/plain") && body.contains("text/html"),
        "{body}"
    );
    assert!(
        body.matches(link.as_str()).count() >= 2,
        "the link in the text and the HTML part: {body}"
    );
    assert!(
        body.contains("Hello Jane Doe,") && body.contains("It works"),
        "{body}"
    );

    // A 400 from the SMS API fails at once, for good, with the provider's message.
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Sms, REFUSED_PHONE, ""),
        ))
        .await
        .expect("deliver refused")
        .into_inner()
        .delivery
        .expect("delivery");
    let refused = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&refused),
        v1::DeliveryStatus::Failed,
        "{refused:?}"
    );
    assert_eq!(refused.attempts, 1, "not retried: {refused:?}");
    assert!(
        refused.last_error.contains("400") && refused.last_error.contains("21211"),
        "{refused:?}"
    );
    assert!(refused.sent_at.is_none());
    assert_eq!(sms.to(REFUSED_PHONE).len(), 1);

    // So does an SMTP 550.
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Email, REFUSED_MAILBOX, ""),
        ))
        .await
        .expect("deliver refused email")
        .into_inner()
        .delivery
        .expect("delivery");
    let bounced = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&bounced),
        v1::DeliveryStatus::Failed,
        "{bounced:?}"
    );
    assert_eq!(bounced.attempts, 1, "{bounced:?}");
    assert!(bounced.last_error.contains("550"), "{bounced:?}");
    assert_eq!(smtp.got().len(), 1, "nothing more was accepted");

    // Transient failures: an SMS API that stays down uses up the six attempts, then fails; an
    // SMTP 451 is retried and then sent.
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Sms, DOWN_PHONE, ""),
        ))
        .await
        .expect("deliver down")
        .into_inner()
        .delivery
        .expect("delivery");
    let exhausted = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&exhausted),
        v1::DeliveryStatus::Failed,
        "{exhausted:?}"
    );
    assert_eq!(exhausted.attempts, 6, "{exhausted:?}");
    assert!(
        exhausted.last_error.contains("503")
            && exhausted.last_error.contains("gave up after 6 attempts"),
        "{exhausted:?}"
    );
    assert_eq!(sms.to(DOWN_PHONE).len(), 6);
    let d = client
        .deliver_instant_key(authed(
            &key,
            deliver(&key_id, v1::DeliveryChannel::Email, GREYLISTED_MAILBOX, ""),
        ))
        .await
        .expect("deliver greylisted")
        .into_inner()
        .delivery
        .expect("delivery");
    let greylisted = settled(&ch, &key, &key_id, &d.delivery_id).await;
    assert_eq!(
        status_of(&greylisted),
        v1::DeliveryStatus::Sent,
        "{greylisted:?}"
    );
    assert_eq!(greylisted.attempts, 2, "{greylisted:?}");
    assert!(greylisted.last_error.contains("451"), "{greylisted:?}");
    assert_eq!(smtp.rcpts_of(GREYLISTED_MAILBOX), 2);
    let mails = smtp.got();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].to, [GREYLISTED_MAILBOX]);
    assert!(decoded(&mails[1].data).contains(&link));

    // A repeated request_id sends once and returns the first delivery; another body with the same
    // request_id is refused.
    let once = deliver(&key_id, v1::DeliveryChannel::Sms, "+15555551001", "dl-once");
    let first = client
        .deliver_instant_key(authed(&key, once.clone()))
        .await
        .expect("first")
        .into_inner()
        .delivery
        .expect("delivery");
    let again = client
        .deliver_instant_key(authed(&key, once.clone()))
        .await
        .expect("again")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(first.delivery_id, again.delivery_id);
    assert_fails(
        client
            .deliver_instant_key(authed(
                &key,
                deliver(&key_id, v1::DeliveryChannel::Sms, "+15555551002", "dl-once"),
            ))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let once_sent = settled(&ch, &key, &key_id, &first.delivery_id).await;
    assert_eq!(status_of(&once_sent), v1::DeliveryStatus::Sent);
    let replay = client
        .deliver_instant_key(authed(&key, once.clone()))
        .await
        .expect("replay after sending")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(replay.delivery_id, first.delivery_id);
    assert_eq!(status_of(&replay), v1::DeliveryStatus::Sent, "as it is now");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sms.to("+15555551001").len(), 1, "sent once");
    assert!(sms.to("+15555551002").is_empty());

    // Events: one delivered per sent delivery, one failed per failed one, about the person.
    let delivered = delivery_events(&ch, &key, "instant_key.delivered").await;
    let failed = delivery_events(&ch, &key, "instant_key.delivery_failed").await;
    assert_eq!(
        (delivered.len(), failed.len()),
        (4, 3),
        "{delivered:?} {failed:?}"
    );
    for e in delivered.iter().chain(&failed) {
        assert_eq!(e.user_identity_id, g.user_identity_id);
        assert_eq!(e.access_grant_id, g.access_grant_id);
        assert_eq!(e.instant_key_id, key_id);
        assert!(!format!("{e:?}").contains(&link), "no link in an event");
    }
    // Each names its delivery (on the event row; see docs/delivery.md).
    let mut named = table_text(
        &opts,
        &dir.0,
        "SELECT delivery_id FROM events WHERE event_type IN ('instant_key.delivered', 'instant_key.delivery_failed')",
    )
    .await;
    named.sort();
    let mut want = vec![
        sms_sent.delivery_id.clone(),
        email_sent.delivery_id.clone(),
        refused.delivery_id.clone(),
        bounced.delivery_id.clone(),
        exhausted.delivery_id.clone(),
        greylisted.delivery_id.clone(),
        once_sent.delivery_id.clone(),
    ];
    want.sort();
    assert_eq!(named, want);

    // The key shows every delivery, newest first, in Get and List.
    let k = get_key(&ch, &key, &key_id).await;
    let ids: Vec<&str> = k
        .deliveries
        .iter()
        .map(|d| d.delivery_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            once_sent.delivery_id.as_str(),
            greylisted.delivery_id.as_str(),
            exhausted.delivery_id.as_str(),
            bounced.delivery_id.as_str(),
            refused.delivery_id.as_str(),
            email_sent.delivery_id.as_str(),
            sms_sent.delivery_id.as_str(),
        ]
    );
    let listed = client
        .list_instant_keys(authed(&key, v1::ListInstantKeysRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .instant_keys;
    let listed = listed
        .iter()
        .find(|k| k.instant_key_id == key_id)
        .expect("listed");
    assert_eq!(listed.deliveries, k.deliveries);

    // Bad input.
    for (req, field) in [
        (
            deliver(&key_id, v1::DeliveryChannel::Unspecified, "", ""),
            "channel",
        ),
        (
            deliver(&key_id, v1::DeliveryChannel::Sms, "jane@example.com", ""),
            "to",
        ),
        (
            deliver(&key_id, v1::DeliveryChannel::Sms, "5555551000", ""),
            "to",
        ),
        (
            deliver(&key_id, v1::DeliveryChannel::Email, "+15555551000", ""),
            "to",
        ),
    ] {
        let s = assert_fails(
            client.deliver_instant_key(authed(&key, req)).await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        assert!(s.message().contains(field), "{s:?}");
    }
    // No address for the channel: a person with an email address only, and a key of theirs.
    let bob = identities(&ch)
        .create_user_identity(authed(
            &key,
            v1::CreateUserIdentityRequest {
                full_name: "Bob".into(),
                email_address: "bob@example.com".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("bob")
        .into_inner()
        .user_identity
        .expect("bob");
    let bob_key = identities(&ch)
        .generate_instant_key(authed(
            &key,
            v1::GenerateInstantKeyRequest {
                user_identity_id: bob.user_identity_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("bob's key")
        .into_inner()
        .instant_key
        .expect("key");
    assert!(bob_key.deliveries.is_empty());
    let s = assert_fails(
        client
            .deliver_instant_key(authed(
                &key,
                deliver(&bob_key.instant_key_id, v1::DeliveryChannel::Sms, "", ""),
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(s.message().contains("phone_number"), "{s:?}");

    // Another workspace's key is not found; so is an unknown one.
    assert_fails(
        client
            .deliver_instant_key(authed(
                &other_key,
                deliver(&key_id, v1::DeliveryChannel::Sms, "", ""),
            ))
            .await,
        Code::NotFound,
        "INSTANT_KEY_NOT_FOUND",
    );
    assert_fails(
        client
            .deliver_instant_key(authed(
                &key,
                deliver(
                    &uuid::Uuid::now_v7().to_string(),
                    v1::DeliveryChannel::Sms,
                    "",
                    "",
                ),
            ))
            .await,
        Code::NotFound,
        "INSTANT_KEY_NOT_FOUND",
    );

    // A revoked key is not sent; a replay of an earlier request still returns its delivery.
    client
        .revoke_instant_key(authed(
            &key,
            v1::RevokeInstantKeyRequest {
                instant_key_id: key_id.clone(),
            },
        ))
        .await
        .expect("revoke");
    assert_fails(
        client
            .deliver_instant_key(authed(
                &key,
                deliver(&key_id, v1::DeliveryChannel::Sms, "", ""),
            ))
            .await,
        Code::FailedPrecondition,
        "RESOURCE_INACTIVE",
    );
    let replay = client
        .deliver_instant_key(authed(&key, once))
        .await
        .expect("replay after revocation")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(replay.delivery_id, first.delivery_id);

    // Only the recipient is stored: no link, no token, no message.
    let token = link.rsplit_once("/ik/").expect("token").1.to_owned();
    let stored = table_text(&opts, &dir.0, "SELECT * FROM instant_key_deliveries").await;
    assert!(stored.iter().any(|t| t == JANE_PHONE));
    assert!(
        stored
            .iter()
            .all(|t| !t.contains(&token) && !t.contains("Your Instant Key")),
        "{stored:?}"
    );

    // Not in outbox mode: there is no outbox page.
    assert_eq!(kg.http_status("/outbox"), 404);

    // Nothing left the machine: every message the server says it sent is in the local sinks.
    let accepted = sms.got().iter().filter(|s| s.status == 201).count();
    assert_eq!(accepted, 2, "Jane's, and the request_id one");
    assert_eq!(smtp.got().len(), 2);
    eprintln!(
        "deliveries by SMS and email ({}): {:?}",
        if opts.database_url.is_some() {
            "postgres+redis"
        } else {
            "sqlite"
        },
        started.elapsed()
    );
}

#[tokio::test]
async fn deliveries_by_sms_and_email_sqlite() {
    deliveries_by_sms_and_email(Options::with_admin()).await
}

#[tokio::test]
async fn deliveries_by_sms_and_email_postgres_redis() {
    deliveries_by_sms_and_email(Options::postgres_redis().await).await
}

/// `keygate deliveries list`, against the same store as the server.
fn deliveries_list(dir: &std::path::Path, opts: &Options, extra: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(["deliveries", "list", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("KEYGATE_DATABASE_URL")
        .env("KEYGATE_LOG", "warn");
    if let Some(u) = &opts.database_url {
        cmd.env("KEYGATE_DATABASE_URL", u);
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("run keygate deliveries list");
    assert!(
        out.status.success(),
        "keygate deliveries list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The outbox: in the embedded default (SQLite, no sender) and with `--delivery-outbox true`
/// (PostgreSQL, senders configured to the local sinks, which must receive nothing).
async fn outbox(opts: Options, explicit: bool) {
    let started = std::time::Instant::now();
    let (sms, sms_url) = start_sms_endpoint().await;
    let (smtp, smtp_url) = start_smtp_sink().await;
    let mut args: Vec<String> = ["--sandbox-provision-delay-ms", "40"]
        .map(String::from)
        .to_vec();
    if explicit {
        args.extend(
            [
                "--delivery-outbox",
                "true",
                "--sms-api-url",
                &sms_url,
                "--sms-account-sid",
                SID,
                "--sms-auth-token",
                TOKEN,
                "--sms-from",
                SMS_FROM,
                "--smtp-url",
                &smtp_url,
                "--email-from",
                "keys@hotel.test",
            ]
            .map(String::from),
        );
    }
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: args,
            ..opts.clone()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (other, other_key) = create_workspace(&ch, "Other", true).await;
    let (g, _mobile, _doors) = jane_with_a_remote_door(&ch, &key, "outbox-grant").await;
    let mut client = instant_keys(&ch);
    let mut sent = Vec::new();
    for channel in [v1::DeliveryChannel::Sms, v1::DeliveryChannel::Email] {
        let d = client
            .deliver_instant_key(authed(&key, deliver(&g.instant_key_id, channel, "", "")))
            .await
            .expect("deliver to the outbox")
            .into_inner()
            .delivery
            .expect("delivery");
        assert_eq!(status_of(&d), v1::DeliveryStatus::Pending);
        let d = settled(&ch, &key, &g.instant_key_id, &d.delivery_id).await;
        assert_eq!(status_of(&d), v1::DeliveryStatus::Sent, "{d:?}");
        assert!(
            d.sent_to_outbox && d.sent_at.is_some() && d.attempts == 1,
            "{d:?}"
        );
        sent.push(d);
    }
    assert_eq!(
        delivery_events(&ch, &key, "instant_key.delivered")
            .await
            .len(),
        2
    );

    // `keygate deliveries list`: newest first, masked recipients, the outbox marker and the link.
    let listing = deliveries_list(&dir.0, &opts, &[]);
    if std::env::var("TEST_LOG").is_ok() {
        eprintln!("{listing}");
    }
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("CREATED"), "{listing}");
    let rows: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(&g.instant_key_url))
        .collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(
        rows[0].contains(&sent[1].delivery_id) && rows[0].contains("email"),
        "{listing}"
    );
    assert!(
        rows[1].contains(&sent[0].delivery_id) && rows[1].contains("sms"),
        "{listing}"
    );
    assert!(
        rows.iter().all(|r| r.contains("sent (outbox)")),
        "{listing}"
    );
    assert!(listing.contains("+1•••••••000") && listing.contains("j•••@example.com"));
    assert!(
        !listing.contains(JANE_PHONE) && !listing.contains("jane.doe@example.com"),
        "recipients are masked: {listing}"
    );
    let other_ws = deliveries_list(&dir.0, &opts, &["--workspace-id", &other]);
    assert!(other_ws.contains("(no deliveries)"), "{other_ws}");

    // GET /outbox: only with a credential; a workspace sees its own deliveries only.
    let page = |auth: Option<String>| {
        let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(&kg.http_addr, "GET", "/outbox", &refs, "")
    };
    let (status, headers, _) = page(None);
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic")),
        "{headers:?}"
    );
    assert_eq!(page(Some("Bearer kg_not_a_key".into())).0, 401);
    let (status, headers, body) = page(Some(format!("Bearer {key}")));
    assert_eq!(status, 200);
    assert!(
        body.contains(&g.instant_key_url) && body.contains("sent (outbox)"),
        "{body}"
    );
    assert!(!body.contains(JANE_PHONE));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v == "no-store")
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("outbox:{key}"))
    );
    let (status, _, body) = page(Some(basic));
    assert_eq!(status, 200);
    assert!(
        body.contains(&g.instant_key_url),
        "a browser's login works too"
    );
    let (status, _, body) = page(Some(format!("Bearer {other_key}")));
    assert_eq!(status, 200);
    assert!(
        !body.contains(&g.instant_key_url),
        "another workspace sees nothing of it"
    );
    let (status, _, body) = page(Some(format!("Bearer {ADMIN_TOKEN}")));
    assert_eq!(status, 200);
    assert!(
        body.contains(&g.instant_key_url),
        "the admin token sees every workspace"
    );

    // The link in the outbox is the key's link, and it works.
    let (status, _, _) = http(&kg.http_addr, "GET", &path_of(&g.instant_key_url), &[], "");
    assert_eq!(status, 200);

    // Nothing was sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sms.got().is_empty(), "{:?}", sms.got());
    assert!(smtp.got().is_empty() && smtp.rcpts.lock().expect("lock").is_empty());
    eprintln!(
        "outbox ({}): {:?}",
        if explicit {
            "explicit"
        } else {
            "embedded default"
        },
        started.elapsed()
    );
}

#[tokio::test]
async fn outbox_is_the_embedded_default_sqlite() {
    outbox(Options::with_admin(), false).await
}

#[tokio::test]
async fn outbox_when_asked_postgres_redis() {
    outbox(Options::postgres_redis().await, true).await
}

/// With no sender and no outbox (here: the outbox turned off), a channel is not supported.
#[tokio::test]
async fn no_sender_no_outbox_is_capability_not_supported() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms",
                "40",
                "--delivery-outbox",
                "false",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (g, _mobile, _doors) = jane_with_a_remote_door(&ch, &key, "nosender-grant").await;
    for channel in [v1::DeliveryChannel::Sms, v1::DeliveryChannel::Email] {
        assert_fails(
            instant_keys(&ch)
                .deliver_instant_key(authed(&key, deliver(&g.instant_key_id, channel, "", "")))
                .await,
            Code::FailedPrecondition,
            "CAPABILITY_NOT_SUPPORTED",
        );
    }
    assert_eq!(kg.http_status("/outbox"), 404);
}
