//! The web console in a real browser: headless Chromium (Debian's, driven by playwright-core
//! from `tests/browser`) performs seed 000 by clicks against the real binary on the embedded
//! default, opens the Instant Key link from the dialog as a phone and unlocks; the virtual
//! access system records the unlock. The screenshots of each step are written to
//! `docs/console/` (linked from `docs/console.md`).

use std::path::PathBuf;
use std::process::Command;

use crate::browser::{browser_dir, ensure_playwright};
use crate::harness::*;

#[tokio::test]
async fn chromium_performs_seed_000_in_the_console() {
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
    // The switcher shows both kinds; the sandbox one holds the virtual access systems.
    let (ws, _) = create_workspace(&ch, "Riverside", true).await;
    create_workspace(&ch, "Riverside Live", false).await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
    let out = Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .arg(format!("http://{}", kg.http_addr))
        .arg(ADMIN_TOKEN)
        .arg("Riverside")
        .arg(&shots)
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
    for step in [
        "01-sign-in",
        "09-manage-access",
        "13-instant-key-link",
        "15-select-entrances",
    ] {
        let f = shots.join(format!("{step}.png"));
        assert!(
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) > 5_000,
            "a screenshot at {}",
            f.display()
        );
    }
    let store = keygate_store::open(&format!("sqlite://{}", dir.0.join("keygate.db").display()))
        .expect("open store");
    let ws: keygate_domain::ids::WorkspaceId = ws.parse().expect("workspace id");
    let ledger = keygate_orchestrator::store_ledger(store.as_ref());
    assert_eq!(ledger.count_unlocks(ws).await.expect("count"), 1);
}
