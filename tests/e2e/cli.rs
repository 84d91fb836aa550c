//! The admin CLI (`keygate admin ...`), `keygate probe`, `--version` and completions, each run as
//! the real binary against a real server: output parsed, refusals as one clear line on stderr
//! with a non-zero exit, and the admin token never printed.

use std::process::{Command, Output};

use keygate_proto::v1;
use serde_json::Value;
use tonic::Code;

use crate::harness::*;

/// Runs `keygate <args>` with the admin token and endpoint in the environment.
fn keygate(endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(args)
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .env_remove("KEYGATE_HTTP_ADDR")
        .env("KEYGATE_ENDPOINT", endpoint);
    if let Some(t) = token {
        cmd.env("KEYGATE_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run keygate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success, that nothing printed holds the admin token, and returns stdout.
#[track_caller]
fn ok(out: &Output) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "failed: {stderr}{stdout}");
    assert!(!stdout.contains(ADMIN_TOKEN) && !stderr.contains(ADMIN_TOKEN));
    stdout
}

/// Asserts success and parses stdout as one JSON document.
#[track_caller]
fn json(out: &Output) -> Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Asserts a failure with `code`: nothing on stdout, one line on stderr containing `want`,
/// never a panic, a debug dump or the admin token. Returns the line.
#[track_caller]
fn refused(out: &Output, code: i32, want: &str) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout on failure: {stdout}");
    assert!(stderr.contains(want), "{want:?} not in {stderr:?}");
    for bad in [
        "panicked",
        "Status {",
        "MetadataMap",
        "RUST_BACKTRACE",
        ADMIN_TOKEN,
    ] {
        assert!(!stderr.contains(bad), "{bad:?} in {stderr:?}");
    }
    if code == 1 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.starts_with("keygate: "), "{stderr:?}");
    }
    stderr
}

/// An address nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a.to_string()
}

#[tokio::test]
async fn admin_commands_manage_workspaces_keys_and_systems() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ep = format!("http://{}", kg.grpc_addr);
    let run = |args: &[&str]| keygate(&ep, Some(ADMIN_TOKEN), args);

    // The embedded default's sandbox is listed, as JSON and as a table.
    let list = json(&run(&["admin", "workspaces", "list", "--json"]));
    let sandbox = &list["workspaces"][0];
    assert_eq!(sandbox["workspace_type"], "sandbox");
    assert_eq!(sandbox["is_sandbox"], true);
    let sandbox_id = sandbox["workspace_id"].as_str().expect("id").to_owned();

    // A production workspace: its first key's token is printed once and works.
    let created = json(&run(&[
        "admin",
        "workspaces",
        "create",
        "--name",
        "CLI Towers",
        "--type",
        "production",
        "--api-key-name",
        "first",
        "--json",
    ]));
    assert_eq!(created["workspace"]["name"], "CLI Towers");
    assert_eq!(created["workspace"]["workspace_type"], "production");
    assert_eq!(created["api_key"]["name"], "first");
    let ws = created["workspace"]["workspace_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let first_token = created["api_key_token"].as_str().expect("token").to_owned();
    assert!(first_token.starts_with("kg_"), "{first_token}");
    let ch = kg.channel().await;
    systems(&ch)
        .list_access_systems(authed(
            &first_token,
            v1::ListAccessSystemsRequest::default(),
        ))
        .await
        .expect("the printed token works");

    let table = ok(&run(&["admin", "workspaces", "list"]));
    let header = table.lines().next().expect("header");
    for col in ["WORKSPACE ID", "NAME", "TYPE", "CREATED"] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&ws))
        .expect("the new workspace is a row");
    assert!(
        row.contains("CLI Towers") && row.contains("production"),
        "{row}"
    );

    // API keys: create (table output carries the token), list, revoke.
    let out = ok(&run(&[
        "admin",
        "api-keys",
        "create",
        "--workspace-id",
        &ws,
        "--name",
        "booking-service",
    ]));
    let token = out
        .lines()
        .find(|l| l.starts_with("kg_"))
        .expect("token line")
        .to_owned();
    let key_id = token.split('_').nth(1).expect("key id").to_owned();
    assert!(
        out.contains("booking-service") && out.contains("active"),
        "{out}"
    );

    let keys = json(&run(&[
        "admin",
        "api-keys",
        "list",
        "--workspace-id",
        &ws,
        "--json",
    ]));
    let names: Vec<_> = keys["api_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["first", "booking-service"]);
    assert!(
        !keys.to_string().contains("kg_"),
        "a listing never holds a token"
    );

    let revoked = json(&run(&[
        "admin",
        "api-keys",
        "revoke",
        "--workspace-id",
        &ws,
        "--api-key-id",
        &key_id,
        "--json",
    ]));
    assert_eq!(revoked["api_key"]["is_revoked"], true);
    assert!(revoked["api_key"]["revoked_at"].is_string());
    assert_fails(
        systems(&ch)
            .list_access_systems(authed(&token, v1::ListAccessSystemsRequest::default()))
            .await,
        Code::Unauthenticated,
        "API_KEY_REVOKED",
    );
    let table = ok(&run(&["admin", "api-keys", "list", "--workspace-id", &ws]));
    let row = table.lines().find(|l| l.contains(&key_id)).expect("row");
    assert!(row.contains("revoked"), "{row}");

    // Systems: the sandbox's five, then one connected with a setting and a credential.
    let listed = json(&run(&[
        "admin",
        "systems",
        "list",
        "--workspace-id",
        &sandbox_id,
        "--json",
    ]));
    assert_eq!(listed["acs_systems"].as_array().map(Vec::len), Some(5));
    let connected = json(&run(&[
        "admin",
        "systems",
        "connect",
        "--workspace-id",
        &sandbox_id,
        "--type",
        "virtual_latch",
        "--name",
        "Side door",
        "--time-zone",
        "Europe/Paris",
        "--json",
    ]));
    let s = &connected["acs_system"];
    assert_eq!(s["name"], "Side door");
    assert_eq!(s["system_type"], "virtual_latch");
    assert_eq!(s["time_zone"], "Europe/Paris");
    let table = ok(&run(&[
        "admin",
        "systems",
        "list",
        "--workspace-id",
        &sandbox_id,
    ]));
    assert_eq!(table.lines().count(), 1 + 6, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("Side door") && l.contains("Europe/Paris"))
    );
}

#[tokio::test]
async fn admin_refusals_are_one_clear_line_and_a_non_zero_exit() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ep = format!("http://{}", kg.grpc_addr);
    let run = |args: &[&str]| keygate(&ep, Some(ADMIN_TOKEN), args);

    // Wrong and missing token.
    let line = refused(
        &keygate(&ep, Some("not-the-token"), &["admin", "workspaces", "list"]),
        1,
        "UNAUTHENTICATED (INVALID_ADMIN_TOKEN)",
    );
    assert!(!line.contains("not-the-token"), "{line}");
    refused(
        &keygate(&ep, None, &["admin", "workspaces", "list", "--json"]),
        1,
        "no admin token: set KEYGATE_ADMIN_TOKEN",
    );
    // A token given as a flag works the same and is not echoed either.
    let out = keygate(
        &ep,
        None,
        &["admin", "--admin-token", ADMIN_TOKEN, "workspaces", "list"],
    );
    ok(&out);

    // Bad input the server refuses, with its reason and field.
    refused(
        &run(&[
            "admin",
            "workspaces",
            "create",
            "--name",
            "",
            "--type",
            "sandbox",
        ]),
        1,
        "INVALID_ARGUMENT (INVALID_FIELD): invalid request: name: must not be empty",
    );
    refused(
        &run(&[
            "admin",
            "api-keys",
            "list",
            "--workspace-id",
            "00000000-0000-4000-8000-000000000000",
        ]),
        1,
        "NOT_FOUND (WORKSPACE_NOT_FOUND)",
    );
    refused(
        &run(&[
            "admin",
            "systems",
            "list",
            "--workspace-id",
            "00000000-0000-4000-8000-000000000000",
            "--json",
        ]),
        1,
        "NOT_FOUND (WORKSPACE_NOT_FOUND)",
    );
    let list = json(&run(&["admin", "workspaces", "list", "--json"]));
    let ws = list["workspaces"][0]["workspace_id"]
        .as_str()
        .expect("id")
        .to_owned();
    refused(
        &run(&[
            "admin",
            "systems",
            "connect",
            "--workspace-id",
            &ws,
            "--type",
            "no_such_type",
        ]),
        1,
        "FAILED_PRECONDITION (UNKNOWN_ACCESS_SYSTEM_TYPE)",
    );
    refused(
        &run(&[
            "admin",
            "api-keys",
            "revoke",
            "--workspace-id",
            &ws,
            "--api-key-id",
            "nope",
        ]),
        1,
        "API_KEY_NOT_FOUND",
    );

    // Settings and credentials reach the server (a virtual system takes neither); a credential
    // given as @file is read from the file.
    refused(
        &run(&[
            "admin",
            "systems",
            "connect",
            "--workspace-id",
            &ws,
            "--type",
            "virtual_latch",
            "--setting",
            "site=north",
        ]),
        1,
        "INVALID_ARGUMENT (INVALID_CONNECTION_SETTINGS): invalid_connection_settings: a virtual access system takes no settings (\"site\" was given)",
    );
    let secret_file = dir.0.join("latch-secret");
    std::fs::write(&secret_file, "from-a-file\n").expect("write");
    let line = refused(
        &run(&[
            "admin",
            "systems",
            "connect",
            "--workspace-id",
            &ws,
            "--type",
            "virtual_latch",
            "--credential",
            &format!("api_secret=@{}", secret_file.display()),
        ]),
        1,
        "takes no credentials",
    );
    assert!(!line.contains("from-a-file"), "{line}");

    // Bad input refused before any call: a malformed credential (never echoed), a missing
    // file, and what clap refuses (usage errors exit 2).
    let line = refused(
        &run(&[
            "admin",
            "systems",
            "connect",
            "--workspace-id",
            &ws,
            "--type",
            "virtual_latch",
            "--credential",
            "hunter2",
        ]),
        1,
        "bad input: --credential number 1 is not KEY=VALUE",
    );
    assert!(!line.contains("hunter2"), "{line}");
    refused(
        &run(&[
            "admin",
            "systems",
            "connect",
            "--workspace-id",
            &ws,
            "--type",
            "virtual_latch",
            "--credential",
            "k=@/nonexistent/secret",
        ]),
        1,
        "cannot read /nonexistent/secret",
    );
    refused(
        &run(&[
            "admin",
            "workspaces",
            "create",
            "--name",
            "x",
            "--type",
            "bogus",
        ]),
        2,
        "invalid value 'bogus' for '--type <WORKSPACE_TYPE>'",
    );
    refused(
        &run(&["admin", "api-keys", "list"]),
        2,
        "--workspace-id <WORKSPACE_ID>",
    );
    refused(
        &run(&["admin", "systems", "connect", "--setting", "=x"]),
        2,
        "expected KEY=VALUE",
    );

    // No server there, and not an endpoint at all.
    let closed = closed_port();
    refused(
        &keygate(
            &closed,
            Some(ADMIN_TOKEN),
            &["admin", "workspaces", "list", "--timeout-secs", "2"],
        ),
        1,
        &format!("cannot reach Keygate at http://{closed}"),
    );
    refused(
        &keygate(
            "http://exa mple",
            Some(ADMIN_TOKEN),
            &["admin", "workspaces", "list"],
        ),
        1,
        "is not a URL",
    );
}

#[test]
fn probe_reports_readiness_by_its_exit_code_and_admin_needs_the_api_enabled() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::default());
    let probe = |args: &[&str]| {
        let mut all = vec!["probe"];
        all.extend_from_slice(args);
        keygate("", None, &all)
    };
    let out = probe(&["--http-addr", &kg.http_addr]);
    assert!(ok(&out).contains("ready"));
    ok(&probe(&["--grpc-addr", &kg.grpc_addr]));
    // The server's own listen address form (0.0.0.0) is probed on loopback.
    let port = kg.http_addr.rsplit(':').next().expect("port");
    ok(&probe(&["--http-addr", &format!("0.0.0.0:{port}")]));
    // The variable the server reads is the probe's default.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("probe")
        .env("KEYGATE_HTTP_ADDR", &kg.http_addr)
        .output()
        .expect("run");
    ok(&out);

    let closed = closed_port();
    refused(
        &probe(&["--http-addr", &closed]),
        1,
        "not ready: cannot connect",
    );
    refused(
        &probe(&["--grpc-addr", &closed, "--timeout-secs", "2"]),
        1,
        "not ready",
    );
    // This server has no admin token: the operator API says so, whatever token is sent.
    refused(
        &keygate(
            &kg.grpc_addr,
            Some(ADMIN_TOKEN),
            &["admin", "workspaces", "list"],
        ),
        1,
        "PERMISSION_DENIED (ADMIN_API_DISABLED): the operator API is disabled",
    );

    // A port that answers something else than 200 is not ready either.
    refused(&probe(&["--http-addr", &kg.grpc_addr]), 1, "not ready");
}

#[test]
fn version_names_the_commit_and_the_schema_and_completions_are_printed() {
    let out = keygate("", None, &["--version"]);
    let v = ok(&out);
    assert!(v.starts_with("keygate "), "{v}");
    assert!(v.contains("(commit "), "{v}");
    assert!(
        v.contains(&format!("schema {})", keygate_store::SCHEMA_VERSION)),
        "{v}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&keygate("", None, &["completions", shell]));
        for word in ["admin", "api-keys", "probe", "workspaces"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    refused(
        &keygate("", None, &["completions", "tcsh"]),
        2,
        "invalid value",
    );
}
