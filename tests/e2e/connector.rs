//! The connector contract driven end to end: the reference connector in Python
//! (`connectors/json-doors`, installed by its own `setup.sh`) runs as a separate process with its
//! doors in a JSON file, and Keygate, the real binary, talks to it only through
//! `keygate.connector.v1`. One flow: bad connections refused with their reasons and nothing
//! stored; connect → sync (a door added behind Keygate's back appears, one removed is marked and
//! its grant warned); grant (card, code, mobile key) → issued on the connector; new times reach
//! the connector; a remote unlock is logged once; the connector is restarted with a credential
//! deleted behind Keygate's back and the reconciler puts it back; while the connector is down a
//! new grant's doors stay pending with the reason and are granted when it returns; revoking
//! removes the credentials; another workspace sees nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keygate_proto::v1;
use serde_json::Value;
use tonic::Code;

use crate::grants::{grants, methods, ts};
use crate::harness::*;

type Ch = tonic::transport::Channel;

const TOKEN: &str = "json-doors-e2e-token";
const CARD: i32 = v1::AccessMethodMode::Card as i32;
const CODE: i32 = v1::AccessMethodMode::Code as i32;
const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The connector's venv, set up once per test process by the connector's own script.
fn connector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo().join("connectors/json-doors/setup.sh"))
            .status()
            .expect("run connectors/json-doors/setup.sh");
        assert!(status.success(), "connectors/json-doors/setup.sh failed");
        repo().join("connectors/.venv/bin/keygate-json-doors")
    })
}

/// The reference connector as a separate process; killed on drop.
struct Connector {
    child: Child,
    addr: String,
}

impl Connector {
    /// Starts it on `listen` (`127.0.0.1:0` for a free port) and waits for its one line.
    fn start(state: &Path, listen: &str) -> Self {
        let mut child = Command::new(connector_bin())
            .arg("--state")
            .arg(state)
            .args(["--listen", listen, "--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the connector");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the connector's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints how long a step took (`cargo test ... -- --nocapture` shows them).
fn figure(what: &str, since: Instant) {
    eprintln!("figure: {what}: {} ms", since.elapsed().as_millis());
}

fn read_state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("state file")).expect("state json")
}

fn write_state(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).expect("json")).expect("write state");
}

fn credentials(path: &Path) -> Vec<Value> {
    read_state(path)["credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn connect_req(address: &str, token: &str) -> v1::ConnectAccessSystemRequest {
    v1::ConnectAccessSystemRequest {
        system_type: "connector".into(),
        name: "HQ doors".into(),
        time_zone: "Europe/Madrid".into(),
        settings: [("address".to_owned(), format!("http://{address}"))].into(),
        credentials: [("token".to_owned(), token.to_owned())].into(),
        ..Default::default()
    }
}

async fn entrances(ch: &Ch, key: &str, system: &str) -> Vec<v1::Entrance> {
    systems(ch)
        .list_entrances(authed(
            key,
            v1::ListEntrancesRequest {
                acs_system_id: system.into(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances
}

async fn get_system(ch: &Ch, key: &str, id: &str) -> v1::AccessSystem {
    systems(ch)
        .get_access_system(authed(
            key,
            v1::GetAccessSystemRequest {
                acs_system_id: id.into(),
            },
        ))
        .await
        .expect("system")
        .into_inner()
        .acs_system
        .expect("system")
}

async fn method_list(ch: &Ch, key: &str, grant: &str) -> Vec<v1::AccessMethod> {
    methods(ch)
        .list_access_methods(authed(
            key,
            v1::ListAccessMethodsRequest {
                access_grant_id: grant.into(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("methods")
        .into_inner()
        .access_methods
}

/// Waits until every door of every method of `grant` is in `state`.
async fn doors_become(ch: &Ch, key: &str, grant: &str, state: v1::AccessState, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ms = method_list(ch, key, grant).await;
        if !ms.is_empty()
            && ms.iter().all(|m| {
                !m.entrances.is_empty() && m.entrances.iter().all(|e| e.state == state as i32)
            })
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "doors of {grant} not {state:?} within {within:?}: {ms:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_connector_in_another_language_is_driven_end_to_end() {
    end_to_end(Options::with_admin()).await;
}

#[tokio::test]
async fn a_connector_in_another_language_is_driven_end_to_end_on_postgres_and_redis() {
    end_to_end(Options::postgres_redis().await).await;
}

async fn end_to_end(base: Options) {
    let dir = DataDir::new();
    let state = dir.0.join("doors.json");
    let mut connector = Connector::start(&state, "127.0.0.1:0");
    let address = connector.addr.clone();
    let kg = Keygate::start(
        &dir.0.join("keygate"),
        &Options {
            extra_args: ["--reconcile-secs", "2", "--sync-secs", "0"]
                .map(String::from)
                .to_vec(),
            ..base
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "HQ", false).await;
    let (_other, other_key) = create_workspace(&ch, "Other", false).await;

    // Bad connections: a reason each, nothing stored.
    let refused = [
        (
            connect_req(&address, "wrong-token"),
            Code::FailedPrecondition,
            "INVALID_CREDENTIALS",
        ),
        (
            connect_req("127.0.0.1:1", TOKEN),
            Code::FailedPrecondition,
            "PROVIDER_UNREACHABLE",
        ),
        (
            v1::ConnectAccessSystemRequest {
                settings: [("address".to_owned(), "ftp://nowhere".to_owned())].into(),
                ..connect_req(&address, TOKEN)
            },
            Code::InvalidArgument,
            "INVALID_CONNECTION_SETTINGS",
        ),
    ];
    for (req, code, why) in refused {
        let err = systems(&ch)
            .connect_access_system(authed(&key, req))
            .await
            .expect_err(why);
        assert_eq!(
            (err.code(), reason(&err)),
            (code, why.to_owned()),
            "{err:?}"
        );
        assert!(!err.message().contains("wrong-token"), "{err:?}");
    }
    let listed = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    assert!(listed.is_empty(), "nothing stored: {listed:?}");

    // Connect: the connector's capabilities and doors, the token never returned.
    let t = Instant::now();
    let system = systems(&ch)
        .connect_access_system(authed(&key, connect_req(&address, TOKEN)))
        .await
        .expect("connect")
        .into_inner()
        .acs_system
        .expect("system");
    assert_eq!(system.system_type, "connector");
    assert!(!system.is_virtual);
    assert_eq!(system.external_type, "json_doors_site");
    assert!(!format!("{system:?}").contains(TOKEN));
    let caps = system.capabilities.clone().expect("capabilities");
    assert!(caps.can_remote_unlock);
    let sid = system.acs_system_id.clone();
    figure("connect (GetCapabilities + three listings)", t);
    let doors = entrances(&ch, &key, &sid).await;
    assert_eq!(doors.len(), 4, "{doors:?}");
    let door = |name: &str| {
        doors
            .iter()
            .find(|d| d.display_name == name)
            .unwrap_or_else(|| panic!("no door {name} in {doors:?}"))
            .acs_entrance_id
            .clone()
    };
    let (front, room1) = (door("Front Door"), door("Room 1"));
    assert_eq!(
        read_state(&state)["acs_system_id"],
        Value::from(sid.clone())
    );

    // Grant card, code and mobile key on two doors: issued on the connector.
    let mut req = crate::grants::jane_grant(
        "hq-1",
        &[front.clone(), room1.clone()],
        &[CARD, CODE, MOBILE],
    );
    req.ends_at = Some(ts(Duration::from_secs(86_400), false));
    let grant = grants(&ch)
        .create_access_grant(authed(&key, req))
        .await
        .expect("grant")
        .into_inner()
        .access_grant
        .expect("grant");
    let gid = grant.access_grant_id.clone();
    let t = Instant::now();
    doors_become(
        &ch,
        &key,
        &gid,
        v1::AccessState::Granted,
        Duration::from_secs(60),
    )
    .await;
    figure("grant of 3 methods x 2 doors, created to granted", t);
    let ms = method_list(&ch, &key, &gid).await;
    assert_eq!(ms.len(), 3);
    assert!(ms.iter().all(|m| m.is_issued), "{ms:#?}");
    let code = ms
        .iter()
        .find(|m| m.mode == CODE)
        .map(|m| m.code.clone())
        .expect("code method");
    let creds = credentials(&state);
    assert_eq!(creds.len(), 3, "one credential per method: {creds:#?}");
    for m in &ms {
        let c = creds
            .iter()
            .find(|c| c["reference_id"] == m.access_method_id.as_str())
            .unwrap_or_else(|| panic!("no credential for {}", m.access_method_id));
        let mut ents: Vec<_> = c["entrance_external_ids"]
            .as_array()
            .expect("entrances")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        ents.sort();
        assert_eq!(ents, ["door-front", "door-room-1"]);
    }
    let held_code = creds
        .iter()
        .find(|c| c["mode"] == "code")
        .and_then(|c| c["code"].as_str())
        .expect("PIN on the connector");
    assert_eq!(held_code, code, "the PIN Keygate shows is the connector's");

    // New times reach the connector (the same credentials, converged).
    let new_end = ts(Duration::from_secs(2 * 86_400), false);
    grants(&ch)
        .update_access_grant(authed(
            &key,
            v1::UpdateAccessGrantRequest {
                access_grant_id: gid.clone(),
                ends_at: Some(new_end),
                ..Default::default()
            },
        ))
        .await
        .expect("update times");
    let want_end = new_end.seconds;
    let t = Instant::now();
    eventually(
        "new end time on the connector",
        Duration::from_secs(60),
        || {
            let creds = credentials(&state);
            creds.len() == 3
                && creds.iter().all(|c| {
                    c["schedule"]["ends_at"].as_str().and_then(rfc3339_seconds) == Some(want_end)
                })
        },
    )
    .await;
    figure("new times, updated to on the connector", t);

    // A remote unlock, logged once by the connector.
    let t = Instant::now();
    let attempt = systems(&ch)
        .unlock_entrance(authed(
            &key,
            v1::UnlockEntranceRequest {
                acs_entrance_id: front.clone(),
                request_id: "unlock-front-1".into(),
            },
        ))
        .await
        .expect("unlock")
        .into_inner()
        .action_attempt
        .expect("attempt");
    eventually(
        "the unlock on the connector",
        Duration::from_secs(30),
        || {
            read_state(&state)["unlocks"]
                .as_array()
                .is_some_and(|u| u.len() == 1)
        },
    )
    .await;
    figure("remote unlock, asked to logged by the connector", t);
    let unlocks = read_state(&state)["unlocks"].clone();
    assert_eq!(unlocks[0]["entrance_external_id"], "door-front");
    assert_eq!(
        unlocks[0]["reference_id"],
        Value::from(attempt.action_attempt_id.clone())
    );

    // A change behind Keygate's back while the connector is down: the code credential is
    // deleted. When the connector is back, the reconciler puts it back.
    connector.stop();
    let mut s = read_state(&state);
    let code_method = ms
        .iter()
        .find(|m| m.mode == CODE)
        .expect("code")
        .access_method_id
        .clone();
    s["credentials"]
        .as_array_mut()
        .expect("credentials")
        .retain(|c| c["reference_id"] != code_method.as_str());
    write_state(&state, &s);
    connector = Connector::start(&state, &address);
    let t = Instant::now();
    eventually(
        "the reconciler re-issues the deleted credential",
        Duration::from_secs(90),
        || {
            credentials(&state)
                .iter()
                .any(|c| c["reference_id"] == code_method.as_str())
        },
    )
    .await;
    figure(
        "credential deleted behind Keygate's back, restart to re-issued",
        t,
    );

    // Down: a new grant's doors stay pending with the reason; back: granted, nothing lost.
    connector.stop();
    let late = grants(&ch)
        .create_access_grant(authed(
            &key,
            crate::grants::jane_grant("hq-2", std::slice::from_ref(&room1), &[MOBILE]),
        ))
        .await
        .expect("grant while down")
        .into_inner()
        .access_grant
        .expect("grant");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = method_list(&ch, &key, &late.access_grant_id).await;
    assert!(
        pending
            .iter()
            .flat_map(|m| &m.entrances)
            .all(|e| e.state == v1::AccessState::Pending as i32
                && e.reason.starts_with("provider_unreachable")),
        "pending, saying why: {pending:#?}"
    );
    let down = get_system(&ch, &key, &sid).await;
    assert!(
        down.errors.iter().any(|e| e.code == "provider_unreachable"),
        "the system says it cannot be reached: {down:?}"
    );
    connector = Connector::start(&state, &address);
    let t = Instant::now();
    doors_become(
        &ch,
        &key,
        &late.access_grant_id,
        v1::AccessState::Granted,
        Duration::from_secs(90),
    )
    .await;
    figure(
        "connector down 3 s: restart to the waiting doors granted",
        t,
    );
    let up = get_system(&ch, &key, &sid).await;
    assert!(up.errors.is_empty(), "cleared once it answers: {up:?}");

    // Sync: a door added and one removed behind Keygate's back.
    let mut s = read_state(&state);
    let ds = s["doors"].as_array_mut().expect("doors");
    let mut gate = ds[0].clone();
    gate["external_id"] = "door-gate".into();
    gate["display_name"] = "Gate".into();
    ds.push(gate);
    ds.retain(|d| d["external_id"] != "door-room-1");
    write_state(&state, &s);
    let t = Instant::now();
    let synced = systems(&ch)
        .sync_access_system(authed(
            &key,
            v1::SyncAccessSystemRequest {
                acs_system_id: sid.clone(),
            },
        ))
        .await
        .expect("sync")
        .into_inner();
    figure("SyncAccessSystem with one door added and one removed", t);
    assert_eq!(synced.added_acs_entrance_ids.len(), 1);
    assert_eq!(synced.removed_acs_entrance_ids, vec![room1.clone()]);
    assert!(synced.warned_access_grant_ids.contains(&gid), "{synced:?}");
    let g = grants(&ch)
        .get_access_grant(authed(
            &key,
            v1::GetAccessGrantRequest {
                access_grant_id: gid.clone(),
            },
        ))
        .await
        .expect("grant")
        .into_inner()
        .access_grant
        .expect("grant");
    assert!(
        g.warnings.iter().any(|w| w.code == "entrance_removed"),
        "{g:?}"
    );

    // Another workspace sees none of it.
    let err = systems(&ch)
        .sync_access_system(authed(
            &other_key,
            v1::SyncAccessSystemRequest {
                acs_system_id: sid.clone(),
            },
        ))
        .await
        .expect_err("foreign");
    assert_eq!(err.code(), Code::NotFound);

    // Revoke: the credentials leave the connector.
    for g in [&gid, &late.access_grant_id] {
        grants(&ch)
            .delete_access_grant(authed(
                &key,
                v1::DeleteAccessGrantRequest {
                    access_grant_id: g.to_string(),
                },
            ))
            .await
            .expect("delete");
    }
    eventually(
        "every credential revoked on the connector",
        Duration::from_secs(60),
        || credentials(&state).is_empty(),
    )
    .await;

    // Disconnect: Keygate calls it no more.
    let d = systems(&ch)
        .disconnect_access_system(authed(
            &key,
            v1::DisconnectAccessSystemRequest {
                acs_system_id: sid.clone(),
            },
        ))
        .await
        .expect("disconnect")
        .into_inner()
        .acs_system
        .expect("system");
    assert!(d.disconnected_at.is_some());
    assert_eq!(d.errors[0].code, "account_disconnected");
    drop(connector);
}

/// Seconds since the epoch of an RFC 3339 time as the connector writes it.
fn rfc3339_seconds(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}
