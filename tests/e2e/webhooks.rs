//! Webhooks end to end: the real binary delivers a real grant's events to a receiver written in
//! Python that verifies every signature with the independent `standardwebhooks` package from
//! PyPI (installed into a venv under target/ on first use; the test fails, never skips, when it
//! cannot be installed). The retry schedule is compressed (`--webhook-retry-scale 0.00001`: the
//! 27-hour schedule takes about a second, the 5-day disable period about 4.3 s).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use keygate_proto::v1;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::grants::{events, grants, methods, systems_client_entrances};
use crate::harness::*;

const CODE: i32 = v1::AccessMethodMode::Code as i32;
/// A PIN no delivered body may contain.
const PIN: &str = "482913";
const RETRY_SCALE: &str = "0.00001";
/// The receiver answers 500 to this many attempts of each message before 200.
const FAIL_FIRST: u32 = 2;

const RECEIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/webhooks/receiver.py"
);
const REQUIREMENTS: &str = include_str!("webhooks/requirements.txt");

fn webhooks(
    ch: &tonic::transport::Channel,
) -> v1::webhook_service_client::WebhookServiceClient<tonic::transport::Channel> {
    v1::webhook_service_client::WebhookServiceClient::new(ch.clone())
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's interpreter, with the pinned `standardwebhooks` installed. Made once per
/// requirements file under target/tmp; built in a temporary directory and renamed into place so
/// concurrent test processes never see half a venv.
fn venv_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::hash::DefaultHasher::new();
        REQUIREMENTS.hash(&mut h);
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("webhooks-venv-{:016x}", h.finish()));
        let python = dir.join("bin").join("python");
        let works = |py: &Path| {
            Command::new(py)
                .args(["-c", "import standardwebhooks"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works(&python) {
            return python;
        }
        let tmp = base.join(format!(
            "webhooks-venv-tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(
            Command::new(&system_python).arg("-m").arg("venv").arg(&tmp),
            "creating the webhook receiver's venv (needs python3 with the venv module)",
        );
        let reqs = Path::new(RECEIVER).with_file_name("requirements.txt");
        run(
            Command::new(tmp.join("bin").join("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-input", "--require-hashes", "-r"])
                .arg(&reqs),
            "installing standardwebhooks from PyPI (tests/e2e/webhooks/requirements.txt)",
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test process got there first; use its venv.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(
            works(&python),
            "the venv at {} cannot import standardwebhooks",
            dir.display()
        );
        python
    })
    .clone()
}

/// The Python receiver, and everything it reported so far.
struct Receiver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    port: u16,
}

impl Receiver {
    fn start() -> Self {
        let mut child = Command::new(venv_python())
            .arg(RECEIVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the webhook receiver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("receiver printed {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut r = Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            port: 0,
        };
        let hello = r
            .next(Duration::from_secs(20))
            .expect("receiver did not start");
        assert_eq!(hello["kind"], "listening", "{hello}");
        assert_eq!(hello["standardwebhooks"], "1.1.0");
        r.port = u16::try_from(hello["port"].as_u64().expect("port")).expect("port");
        r
    }

    fn next(&mut self, within: Duration) -> Option<Value> {
        let v = self.lines.recv_timeout(within).ok()?;
        self.seen.push(v.clone());
        Some(v)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Registers a path's secret; `fail_first` < 0 answers 503 for ever.
    fn register(&mut self, path: &str, secret: &str, fail_first: i32) {
        writeln!(self.stdin, "hook {path} {secret} {fail_first}").expect("write to receiver");
        self.stdin.flush().expect("flush");
        self.wait_for("registration", Duration::from_secs(10), |seen| {
            seen.iter()
                .any(|v| v["kind"] == "registered" && v["path"] == path)
        });
    }

    /// Reads reports until `done` holds for everything seen; panics after `within`.
    fn wait_for(&mut self, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.next(left).is_none() {
                panic!(
                    "{what}: not seen within {within:?}; the receiver reported {:#?}",
                    self.seen
                );
            }
        }
    }

    /// Every delivery to `path`, in arrival order.
    fn deliveries(&self, path: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|v| v["kind"] == "delivery" && v["path"] == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn delivered_ok(seen: &[Value], path: &str, event_id: &str) -> bool {
    seen.iter().any(|v| {
        v["kind"] == "delivery"
            && v["path"] == path
            && v["webhook_id"] == event_id
            && v["status"] == 200
    })
}

fn field_violations(s: &tonic::Status) -> Vec<(String, String)> {
    s.get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn create(request_id: &str, url: &str, types: &[&str]) -> v1::CreateWebhookRequest {
    v1::CreateWebhookRequest {
        request_id: request_id.into(),
        url: url.into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
    }
}

async fn brivo_code_doors(ch: &tonic::transport::Channel, key: &str) -> Vec<String> {
    let all = systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let brivo = all
        .iter()
        .find(|s| s.system_type == "virtual_brivo")
        .expect("brivo");
    systems_client_entrances(ch, key, &brivo.acs_system_id)
        .await
        .into_iter()
        .filter(|e| e.can_unlock_with_code)
        .map(|e| e.acs_entrance_id)
        .take(2)
        .collect()
}

fn pin_grant(doors: &[String], code: &str) -> v1::CreateAccessGrantRequest {
    v1::CreateAccessGrantRequest {
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
            v1::NewUserIdentity {
                full_name: "Kim Park".into(),
                ..Default::default()
            },
        )),
        acs_entrance_ids: doors.to_vec(),
        requested_access_methods: vec![v1::NewRequestedAccessMethod {
            mode: CODE,
            code: code.into(),
        }],
        ..Default::default()
    }
}

async fn webhooks_end_to_end(opts: Options) {
    let started = Instant::now();
    let mut rx = Receiver::start();
    let venv_ready = started.elapsed();
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms",
                "20",
                "--webhook-retry-scale",
                RETRY_SCALE,
                "--webhook-allow-loopback",
                "true",
            ]
            .map(String::from)
            .to_vec(),
            ..opts
        },
    );
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_other_ws, other_key) = create_workspace(&ch, "Other", true).await;
    let (_prod_ws, prod_key) = create_workspace(&ch, "Production", false).await;

    // The SSRF guard refuses private, link-local and metadata addresses at create, before any
    // connection is attempted (loopback is allowed by configuration for this test only).
    for url in [
        "https://10.0.0.1/hook",
        "https://192.168.1.10/x",
        "https://169.254.169.254/",
        "https://[::ffff:10.0.0.1]/hook",
    ] {
        let s = assert_fails(
            webhooks(&ch)
                .create_webhook(authed(&key, create("", url, &[])))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        let v = field_violations(&s);
        assert_eq!(v.len(), 1, "{url}: {v:?}");
        assert_eq!(v[0].0, "url", "{url}");
        assert!(v[0].1.contains("refused"), "{url}: {}", v[0].1);
    }
    // Plain http:// only in sandbox workspaces; unknown event types are named.
    let s = assert_fails(
        webhooks(&ch)
            .create_webhook(authed(&prod_key, create("", &rx.url("/prod"), &[])))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(field_violations(&s)[0].1.contains("sandbox"), "{s:?}");
    let s = assert_fails(
        webhooks(&ch)
            .create_webhook(authed(
                &key,
                create("", &rx.url("/x"), &["access_grant.created", "no.such"]),
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(field_violations(&s)[0].0, "event_types[1]");

    // A webhook for every event type, and the secret again on an idempotent retry.
    let ok_req = create("hook-ok-1", &rx.url("/ok"), &[]);
    let created = webhooks(&ch)
        .create_webhook(authed(&key, ok_req.clone()))
        .await
        .expect("create")
        .into_inner();
    let ok = created.webhook.clone().expect("webhook");
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert!(ok.is_enabled && ok.event_types.is_empty() && ok.workspace_id == ws);
    let replay = webhooks(&ch)
        .create_webhook(authed(&key, ok_req))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        replay.webhook.map(|w| w.webhook_id),
        Some(ok.webhook_id.clone())
    );
    assert_eq!(replay.secret, created.secret);
    assert_fails(
        webhooks(&ch)
            .create_webhook(authed(&key, create("hook-ok-1", &rx.url("/other"), &[])))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );
    rx.register("/ok", &created.secret, FAIL_FIRST as i32);

    // A webhook whose endpoint always fails.
    let failing = webhooks(&ch)
        .create_webhook(authed(&key, create("", &rx.url("/fail"), &[])))
        .await
        .expect("create")
        .into_inner();
    let fail = failing.webhook.clone().expect("webhook");
    rx.register("/fail", &failing.secret, -1);

    // Another workspace cannot see or delete it.
    assert_fails(
        webhooks(&ch)
            .get_webhook(authed(
                &other_key,
                v1::GetWebhookRequest {
                    webhook_id: ok.webhook_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "WEBHOOK_NOT_FOUND",
    );
    assert_fails(
        webhooks(&ch)
            .delete_webhook(authed(
                &other_key,
                v1::DeleteWebhookRequest {
                    webhook_id: ok.webhook_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "WEBHOOK_NOT_FOUND",
    );
    let theirs = webhooks(&ch)
        .list_webhooks(authed(&other_key, v1::ListWebhooksRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(theirs.webhooks.is_empty());

    // A real grant with a PIN code on the Brivo virtual system.
    let doors = brivo_code_doors(&ch, &key).await;
    let grant = grants(&ch)
        .create_access_grant(authed(&key, pin_grant(&doors, PIN)))
        .await
        .expect("grant")
        .into_inner()
        .access_grant
        .expect("grant");
    let method_id = grant.requested_access_methods[0].created_access_method_ids[0].clone();
    let mut issued = false;
    for _ in 0..200 {
        let m = methods(&ch)
            .get_access_method(authed(
                &key,
                v1::GetAccessMethodRequest {
                    access_method_id: method_id.clone(),
                },
            ))
            .await
            .expect("method")
            .into_inner()
            .access_method
            .expect("method");
        if m.is_issued {
            assert_eq!(m.code, PIN, "the requested PIN was free");
            issued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(issued, "the PIN method was not issued");
    let grant_events = events(&ch)
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                access_grant_id: grant.access_grant_id.clone(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    let types: HashSet<&str> = grant_events.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "access_grant.created",
        "access_method.created",
        "access_method.issued",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }

    // Every event of the grant reaches /ok: 500, 500, then 200.
    let ids: Vec<String> = grant_events.iter().map(|e| e.event_id.clone()).collect();
    rx.wait_for(
        "every grant event delivered to /ok",
        Duration::from_secs(20),
        |seen| ids.iter().all(|id| delivered_ok(seen, "/ok", id)),
    );
    let first_delivery = started.elapsed();
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in rx.deliveries("/ok") {
        by_id
            .entry(d["webhook_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(d);
    }
    for e in &grant_events {
        let attempts = by_id.get(&e.event_id).expect("delivered");
        let statuses: Vec<u64> = attempts
            .iter()
            .map(|a| a["status"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(
            statuses,
            vec![500, 500, 200],
            "{}: {attempts:#?}",
            e.event_type
        );
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(a["verified"], true, "signature did not verify: {a:#}");
            assert_eq!(a["attempt"].as_u64(), Some(i as u64 + 1));
            // webhook-id is the event id on every retry; the body is that event.
            assert_eq!(a["event_id"], e.event_id.as_str());
            assert_eq!(a["event_type"], e.event_type.as_str());
            assert_eq!(a["content_type"], "application/json");
            let body: Value =
                serde_json::from_str(a["body"].as_str().unwrap_or("")).expect("json body");
            assert_eq!(body["workspace_id"], ws.as_str());
            assert_eq!(body["access_grant_id"], grant.access_grant_id.as_str());
            assert_eq!(
                body["cursor"],
                e.cursor.as_str(),
                "the cursor ListEvents gives"
            );
            assert!(
                a["webhook_signature"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("v1,")
            );
        }
    }
    let ok_now = webhooks(&ch)
        .get_webhook(authed(
            &key,
            v1::GetWebhookRequest {
                webhook_id: ok.webhook_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .webhook
        .expect("webhook");
    assert!(ok_now.is_enabled && ok_now.last_delivery_at.is_some());

    // The failing endpoint: events keep coming, every attempt fails, and after the (scaled)
    // five days without a success the webhook is disabled with a webhook.disabled event.
    let mut disabled = None;
    for round in 0..30 {
        let found = events(&ch)
            .list_events(authed(
                &key,
                v1::ListEventsRequest {
                    event_types: vec!["webhook.disabled".into()],
                    ..Default::default()
                },
            ))
            .await
            .expect("events")
            .into_inner()
            .events;
        if let Some(e) = found.into_iter().next() {
            disabled = Some(e);
            break;
        }
        if round % 2 == 0 {
            grants(&ch)
                .create_access_grant(authed(&key, pin_grant(&doors[..1], "")))
                .await
                .expect("another grant");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let disabled = disabled.expect("the failing webhook was not disabled within 15 s");
    assert_eq!(
        disabled.webhook_id, fail.webhook_id,
        "ListEvents names the webhook"
    );
    let fail_now = webhooks(&ch)
        .get_webhook(authed(
            &key,
            v1::GetWebhookRequest {
                webhook_id: fail.webhook_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .webhook
        .expect("webhook");
    assert!(!fail_now.is_enabled);
    assert!(
        fail_now
            .disabled_reason
            .starts_with("no successful delivery for")
            && fail_now.disabled_reason.contains("HTTP 503"),
        "{}",
        fail_now.disabled_reason
    );
    assert!(fail_now.consecutive_failures > 0);
    // The enabled webhook hears of it, and the body names the disabled webhook.
    rx.wait_for(
        "webhook.disabled delivered to /ok",
        Duration::from_secs(10),
        |seen| delivered_ok(seen, "/ok", &disabled.event_id),
    );
    let note = rx
        .deliveries("/ok")
        .into_iter()
        .find(|d| d["webhook_id"] == disabled.event_id.as_str() && d["status"] == 200)
        .expect("delivered");
    let body: Value = serde_json::from_str(note["body"].as_str().unwrap_or("")).expect("json");
    assert_eq!(body["event_type"], "webhook.disabled");
    assert_eq!(body["webhook_id"], fail.webhook_id.as_str());
    // Every /fail attempt verified too, and failed with 503.
    let fail_attempts = rx.deliveries("/fail");
    assert!(!fail_attempts.is_empty());
    assert!(
        fail_attempts
            .iter()
            .all(|d| d["verified"] == true && d["status"] == 503)
    );
    // After the schedule a message is given up: never more attempts than the schedule has.
    let mut per_msg: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &fail_attempts {
        *per_msg
            .entry(d["webhook_id"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    assert!(per_msg.values().all(|n| *n <= 8), "{per_msg:?}");
    assert!(
        per_msg.values().any(|n| *n >= 2),
        "retried after failures: {per_msg:?}"
    );

    // No delivered body ever carries the PIN.
    for d in rx.seen.iter().filter(|v| v["kind"] == "delivery") {
        assert!(
            !d["body"].as_str().unwrap_or("").contains(PIN),
            "a delivery carries the PIN: {d:#}"
        );
    }

    // Listed oldest first, the disabled one included; deleting drops it.
    let listed = webhooks(&ch)
        .list_webhooks(authed(&key, v1::ListWebhooksRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .webhooks;
    assert_eq!(
        listed
            .iter()
            .map(|w| w.webhook_id.as_str())
            .collect::<Vec<_>>(),
        vec![ok.webhook_id.as_str(), fail.webhook_id.as_str()]
    );
    assert!(listed.iter().all(|w| !w.url.is_empty()));
    webhooks(&ch)
        .delete_webhook(authed(
            &key,
            v1::DeleteWebhookRequest {
                webhook_id: fail.webhook_id.clone(),
            },
        ))
        .await
        .expect("delete");
    assert_fails(
        webhooks(&ch)
            .get_webhook(authed(
                &key,
                v1::GetWebhookRequest {
                    webhook_id: fail.webhook_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "WEBHOOK_NOT_FOUND",
    );
    eprintln!(
        "webhooks e2e: receiver ready after {venv_ready:?}, grant delivered after {first_delivery:?}, done after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn webhooks_sqlite() {
    webhooks_end_to_end(Options::with_admin()).await;
}

#[tokio::test]
async fn webhooks_postgres_redis() {
    webhooks_end_to_end(Options::postgres_redis().await).await;
}
