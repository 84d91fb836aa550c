//! The web console in a real browser: headless Chromium (Debian's, driven by playwright-core
//! from `tests/browser`) performs seed 000 by clicks against the real binary on the embedded
//! default, opens the Instant Key link from the dialog as a phone and unlocks.
//!
//! Twice: in the **production** workspace, as the seed does, where the browser first connects a
//! Kisi place (a Kisi simulator this test starts on loopback) through the console's Connect form
//! and Kisi records the unlock; and in the sandbox workspace on its virtual systems, which also
//! shows an access grant's card encoded at the desk (then the grant edited, found with the
//! list's filters and deleted) and a system that assigns entrances to credentials. The screenshots are written to `docs/console/` (linked from `docs/console.md`):
//! seed 000's steps from the production run, the sandbox-only steps from the sandbox run.

use std::path::{Path, PathBuf};
use std::process::Command;

use keygate_simulators::kisi::KisiSimulator;

use crate::browser::{browser_dir, ensure_playwright};
use crate::harness::*;

fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium), as tools/test does"
    );
    ensure_playwright();
    chromium
}

fn docs_shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console")
}

/// Runs `console.mjs` against `kg` with `extra` arguments; panics with its output on failure.
fn run_console(kg: &Keygate, workspace: &str, shots: &Path, extra: &[String]) {
    let out = Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .arg(format!("http://{}", kg.http_addr))
        .arg(ADMIN_TOKEN)
        .arg(workspace)
        .arg(shots)
        .args(extra)
        .env("CHROMIUM", chromium())
        .output()
        .expect("node must be on the PATH");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"));
}

fn assert_shots(dir: &Path, steps: &[&str]) {
    for step in steps {
        let f = dir.join(format!("{step}.png"));
        assert!(
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) > 5_000,
            "a screenshot at {}",
            f.display()
        );
    }
}

// Multi-threaded: the simulator answers Keygate while this test waits for the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_performs_seed_000_in_the_production_workspace_on_kisi() {
    let sim = KisiSimulator::new();
    let sim_addr = sim.serve().await.expect("the Kisi simulator");
    let seed = sim.seed().clone();
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    // The switcher shows both kinds; the seed works in the production one.
    create_workspace(&ch, "Riverside", true).await;
    create_workspace(&ch, "Riverside Live", false).await;
    let shots = docs_shots();
    run_console(
        &kg,
        "Riverside Live",
        &shots,
        &[
            "production".into(),
            format!("http://{sim_addr}"),
            seed.place_id.to_string(),
            keygate_simulators::kisi::API_KEY.into(),
        ],
    );
    assert_shots(
        &shots,
        &[
            "01-sign-in",
            "19-connect-access-system",
            "09-manage-access",
            "13-instant-key-link",
            "14-phone-unlocked",
            "20-phone-sign-in",
            "21-phone-acs-systems",
            "22-phone-user-identity",
        ],
    );
    // Kisi itself saw the person put in the group and the Front Door unlocked once.
    let front = seed.lock_ids[0];
    assert_eq!(sim.unlocks(), vec![front], "one unlock of the Front Door");
    assert!(
        !sim.role_assignments().is_empty(),
        "Manage Access assigned the group at Kisi"
    );
}

#[tokio::test]
async fn chromium_performs_seed_000_in_the_sandbox_and_encodes_a_card() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (ws, _) = create_workspace(&ch, "Riverside", true).await;
    create_workspace(&ch, "Riverside Live", false).await;
    // Seed 000's screenshots come from the production run; this one keeps only its own steps.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-sandbox");
    run_console(&kg, "Riverside", &tmp, &[]);
    let own = [
        "15-select-entrances",
        "16-new-access-grant",
        "17-card-encoded",
        "18-grant-doors-granted",
        "23-edit-access-grant",
        "24-access-grants-filtered",
        "25-delete-access-grant",
    ];
    assert_shots(&tmp, &own);
    for step in own {
        let name = format!("{step}.png");
        std::fs::copy(tmp.join(&name), docs_shots().join(&name)).expect("copy a screenshot");
    }
    let store = keygate_store::open(&format!("sqlite://{}", dir.0.join("keygate.db").display()))
        .expect("open store");
    let ws: keygate_domain::ids::WorkspaceId = ws.parse().expect("workspace id");
    let ledger = keygate_orchestrator::store_ledger(store.as_ref());
    assert_eq!(ledger.count_unlocks(ws).await.expect("count"), 1);
}
