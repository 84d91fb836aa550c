//! The clients of scenarios 2 and 3: creators that retry a create (same `request_id`, same body)
//! until it is acknowledged, and a `WatchEvents` consumer that resumes by cursor.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_proto::v1;
use tokio::sync::watch;
use tonic::Code;

use crate::cluster::channel;
use crate::harness::authed;

/// What the creators saw.
#[derive(Default)]
pub struct Creates {
    /// Grant ids acknowledged (an OK reply reached the client), with their request ids.
    pub acked: Vec<(String, String)>,
    /// Attempts that failed, by gRPC code, before a later attempt of the same create succeeded.
    pub retried: BTreeMap<String, u64>,
    /// Creates given up (never acknowledged), with the last error.
    pub failed: Vec<(String, String)>,
    /// Attempts in all.
    pub attempts: u64,
    /// Each retried attempt: its code and its `x-request-id` (`<request_id>.<attempt>`), which
    /// the replicas log with the call when it reaches them.
    pub retried_attempts: Vec<(tonic::Code, String)>,
}

/// Runs `clients` creators until `stop` turns true. Client `c` starts on replica `c % n`;
/// after a failed attempt it retries the same request on the next replica, after 100 ms.
/// Between two creates a client waits `pace`. `retry_on` decides which failures are retried (any other ends the create as failed), and a
/// create is also failed after `max_attempts`.
#[allow(clippy::too_many_arguments)]
pub async fn run_creators(
    urls: Vec<String>,
    key: String,
    template: v1::CreateAccessGrantRequest,
    prefix: &str,
    clients: usize,
    pace: Duration,
    stop: watch::Receiver<bool>,
    retry_on: fn(&tonic::Status) -> bool,
    max_attempts: u32,
) -> Creates {
    let out = Arc::new(Mutex::new(Creates::default()));
    let mut chans = Vec::new();
    for u in &urls {
        chans.push(channel(u).await);
    }
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (chans, key, template, stop, out) = (
            chans.clone(),
            key.clone(),
            template.clone(),
            stop.clone(),
            out.clone(),
        );
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut replica = c % chans.len();
            for n in 0.. {
                if *stop.borrow() {
                    return;
                }
                if n > 0 {
                    tokio::time::sleep(pace).await;
                }
                let request_id = format!("{prefix}-{c}-{n}");
                // A template with an e-mail address (vendors whose users are e-mail
                // addresses) gives each person one of its own at the same domain.
                let email_address = match &template.grantee {
                    Some(v1::create_access_grant_request::Grantee::UserIdentity(t))
                        if !t.email_address.is_empty() =>
                    {
                        let domain = t.email_address.rsplit('@').next().unwrap_or("example.com");
                        format!("{request_id}@{domain}")
                    }
                    _ => String::new(),
                };
                let req = v1::CreateAccessGrantRequest {
                    request_id: request_id.clone(),
                    grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
                        v1::NewUserIdentity {
                            full_name: request_id.clone(),
                            email_address,
                            ..Default::default()
                        },
                    )),
                    ..template.clone()
                };
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let mut client = v1::access_grant_service_client::AccessGrantServiceClient::new(
                        chans[replica].clone(),
                    );
                    let attempt_id = format!("{request_id}.{attempt}");
                    let mut call = authed(&key, req.clone());
                    if let Ok(v) = attempt_id.parse() {
                        call.metadata_mut().insert("x-request-id", v);
                    }
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.create_access_grant(call),
                    )
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client timeout")));
                    let retry = {
                        let mut o = out.lock().expect("lock");
                        o.attempts += 1;
                        match r {
                            Ok(reply) => {
                                let g = reply.into_inner().access_grant.unwrap_or_default();
                                o.acked.push((request_id.clone(), g.access_grant_id));
                                false
                            }
                            Err(s) if retry_on(&s) && attempt < max_attempts => {
                                *o.retried.entry(format!("{:?}", s.code())).or_default() += 1;
                                o.retried_attempts.push((s.code(), attempt_id.clone()));
                                true
                            }
                            Err(s) => {
                                o.failed.push((
                                    request_id.clone(),
                                    format!("{:?}: {}", s.code(), s.message()),
                                ));
                                false
                            }
                        }
                    };
                    if !retry {
                        break;
                    }
                    replica = (replica + 1) % chans.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator task");
    }
    Arc::try_unwrap(out)
        .map(|m| m.into_inner().expect("lock"))
        .unwrap_or_default()
}

/// What the watcher saw.
#[derive(Default)]
pub struct Watched {
    /// Every event received, in order, duplicates included.
    pub events: Vec<v1::Event>,
    /// How each stream ended: the gRPC code and message (or `connect` failures).
    pub ends: Vec<(Code, String)>,
    /// Streams opened.
    pub streams: u64,
}

/// Follows the workspace's events from `cursor` until `stop`, over the replicas in turn: when a
/// stream ends (or cannot be opened) it waits 100 ms and reopens on the next replica with the
/// cursor of the last event received.
pub async fn run_watcher(
    urls: Vec<String>,
    key: String,
    mut cursor: String,
    first: usize,
    stop: watch::Receiver<bool>,
    out: Arc<Mutex<Watched>>,
) {
    let mut chans = Vec::new();
    for u in &urls {
        chans.push(channel(u).await);
    }
    let mut replica = first % chans.len();
    let mut stop = stop;
    while !*stop.borrow() {
        let mut client = v1::event_service_client::EventServiceClient::new(chans[replica].clone());
        let opened = client
            .watch_events(authed(
                &key,
                v1::WatchEventsRequest {
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            ))
            .await;
        match opened {
            Ok(stream) => {
                out.lock().expect("lock").streams += 1;
                let mut stream = stream.into_inner();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        item = stream.message() => match item {
                            Ok(Some(r)) => {
                                cursor = r.cursor.clone();
                                out.lock().expect("lock").events.extend(r.event);
                            }
                            Ok(None) => {
                                out.lock().expect("lock").ends.push((Code::Ok, "end of stream".into()));
                                break;
                            }
                            Err(s) => {
                                out.lock().expect("lock").ends.push((s.code(), s.message().to_owned()));
                                break;
                            }
                        }
                    }
                }
            }
            Err(s) => {
                out.lock()
                    .expect("lock")
                    .ends
                    .push((s.code(), format!("open: {}", s.message())));
            }
        }
        replica = (replica + 1) % chans.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compares what a watcher received with the log: after removing repeats of an `event_id`
/// (which must be identical to the first copy), the sequence must be exactly `log`, in order.
/// Returns the number of duplicates.
pub fn check_against_log(received: &[v1::Event], log: &[v1::Event]) -> usize {
    let mut seen: HashMap<&str, &v1::Event> = HashMap::new();
    let mut unique = Vec::new();
    for e in received {
        match seen.get(e.event_id.as_str()) {
            Some(first) => assert_eq!(*first, e, "a repeated event_id carries the same event"),
            None => {
                seen.insert(&e.event_id, e);
                unique.push(e);
            }
        }
    }
    let dups = received.len() - unique.len();
    if unique.len() != log.len() || unique.iter().zip(log).any(|(a, b)| *a != b) {
        let got: std::collections::HashSet<&str> =
            unique.iter().map(|e| e.event_id.as_str()).collect();
        let lost = log
            .iter()
            .filter(|e| !got.contains(e.event_id.as_str()))
            .count();
        let first_diff = unique
            .iter()
            .zip(log)
            .position(|(a, b)| *a != b)
            .unwrap_or(unique.len().min(log.len()));
        panic!(
            "the watcher's events differ from the log: {} received (unique), {} in the log, {lost} lost, first difference at index {first_diff}",
            unique.len(),
            log.len()
        );
    }
    dups
}
