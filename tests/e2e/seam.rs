//! A Seam workspace as an upstream, through the real binary: Seam's own fake server
//! (`@seamapi/fake-seam-connect`, pinned in `tests/seam-fake`, installed by this test with `npm ci`
//! when missing) runs as a process; a production workspace connects one of its access systems
//! with an API key; a grant through Keygate is then visible when the test asks the fake directly
//! (its ACS users), and deleting the grant removes it there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate_proto::v1;
use serde_json::{Value, json};

use crate::grants::{entrance_named, grants, jane_grant, methods};
use crate::harness::*;
use crate::instant_keys::http;

const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;

fn fake_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/seam-fake")
}

/// The fake behind its start script; killed on drop.
struct SeamFake {
    child: Child,
    /// `127.0.0.1:<port>` of the script's front.
    addr: String,
}

impl SeamFake {
    fn start() -> Self {
        let dir = fake_dir();
        if !dir.join("node_modules/@seamapi/fake-seam-connect").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm (Debian package npm) must be installed");
            assert!(status.success(), "npm ci in tests/seam-fake failed");
        }
        let mut child = Command::new("node")
            .arg("start.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node start.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the fake's first line");
        let v: Value = serde_json::from_str(&line).expect("the fake's JSON line");
        let url = v["url"].as_str().expect("url").to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        Self { child, addr }
    }

    /// A POST to the fake as Seam's SDKs make it.
    fn post(&self, route: &str, api_key: Option<&str>, body: &Value) -> Value {
        let auth = api_key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let (status, _, text) = http(&self.addr, "POST", route, &headers, &body.to_string());
        assert_eq!(status, 200, "{route}: {text}");
        serde_json::from_str(&text).expect("JSON")
    }
}

impl Drop for SeamFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_grant_through_keygate_lands_in_seams_own_fake() {
    let fake = SeamFake::start();
    let site = fake.post("/_keygate/site_workspace", None, &json!({}));
    let api_key = site["api_key"].as_str().expect("api key").to_owned();
    let seam_system = site["acs_system_id"].as_str().expect("system").to_owned();

    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Seam upstream", false).await;
    let system = systems(&ch)
        .connect_access_system(authed(
            &key,
            v1::ConnectAccessSystemRequest {
                system_type: "seam".into(),
                settings: [
                    ("endpoint".to_owned(), format!("http://{}", fake.addr)),
                    ("acs_system_id".to_owned(), seam_system.clone()),
                ]
                .into(),
                credentials: [("api_key".to_owned(), api_key.clone())].into(),
                ..Default::default()
            },
        ))
        .await
        .expect("connect seam")
        .into_inner()
        .acs_system
        .expect("system");
    assert_eq!(system.system_type, "seam");
    assert!(
        !format!("{system:?}").contains(&api_key),
        "the key is never returned"
    );
    let lobby = entrance_named(&ch, &key, &system.acs_system_id, "Lobby").await;

    let grant = grants(&ch)
        .create_access_grant(authed(&key, jane_grant("seam-1", &[lobby], &[MOBILE])))
        .await
        .expect("grant")
        .into_inner()
        .access_grant
        .expect("grant");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ms = methods(&ch)
            .list_access_methods(authed(
                &key,
                v1::ListAccessMethodsRequest {
                    access_grant_id: grant.access_grant_id.clone(),
                    page_size: 10,
                    ..Default::default()
                },
            ))
            .await
            .expect("methods")
            .into_inner()
            .access_methods;
        if !ms.is_empty() && ms.iter().all(|m| m.is_issued) {
            break;
        }
        assert!(Instant::now() < deadline, "not issued: {ms:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Asked directly, Seam's fake holds Jane as an ACS user of that system.
    let users = |fake: &SeamFake| {
        fake.post(
            "/acs/users/list",
            Some(&api_key),
            &json!({ "acs_system_id": seam_system }),
        )["acs_users"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let held = users(&fake);
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0]["full_name"], "Jane Doe");
    assert_eq!(held[0]["email_address"], "jane.doe@example.com");

    // Deleting the grant takes the user away on Seam's side.
    grants(&ch)
        .delete_access_grant(authed(
            &key,
            v1::DeleteAccessGrantRequest {
                access_grant_id: grant.access_grant_id.clone(),
            },
        ))
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !users(&fake).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still on Seam: {:#?}",
            users(&fake)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
