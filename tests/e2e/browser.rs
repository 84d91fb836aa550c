//! A real browser on the Instant Key page: headless Chromium (Debian's, driven by
//! playwright-core from `tests/browser`) opens the link of a quick-start grant as a phone would
//! (after a previewer's HEAD), sees the doors, taps "Use this key on this phone", then Unlock,
//! and the virtual access system records the unlock. `tools/test`
//! installs Chromium; the test installs the pinned npm package itself when it is missing. It
//! never skips: without Chromium it fails and says how to install it.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;
use crate::instant_keys::{jane_with_a_remote_door, path_of};

pub(crate) fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

pub(crate) fn ensure_playwright() {
    let dir = browser_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm must be on the PATH to install tests/browser");
    assert!(status.success(), "npm install in tests/browser failed");
}

#[tokio::test]
async fn chromium_opens_the_instant_key_and_unlocks() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium), as tools/test does"
    );
    ensure_playwright();
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (g, _, _) = jane_with_a_remote_door(&ch, &key, "browser-1").await;
    let url = format!("http://{}{}", kg.http_addr, path_of(&g.instant_key_url));
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("instant-key-page.png");
    let out = Command::new("node")
        .arg(browser_dir().join("instant_key.mjs"))
        .arg(&url)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node must be on the PATH");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"));
    assert!(
        std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000,
        "a screenshot"
    );
    // The virtual access system recorded the unlock, in its own ledger.
    let store = keygate_store::open(&format!("sqlite://{}", dir.0.join("keygate.db").display()))
        .expect("open store");
    let ws: keygate_domain::ids::WorkspaceId = ws.parse().expect("workspace id");
    let ledger = keygate_orchestrator::store_ledger(store.as_ref());
    assert_eq!(ledger.count_unlocks(ws).await.expect("count"), 1);
}
