//! The server's keys and the sealed cache, through the real binary (docs/security.md): Redis
//! holds no PIN in clear and cannot make Keygate believe a planted API key record; production
//! refuses to start without its keys; the embedded default keeps them in owner-only files that
//! survive restarts, copying out the ones an earlier version stored in the database.

use std::process::Command;
use std::time::Duration;

use keygate_proto::v1;

use crate::grants::{brivo_doors, grants, issued_code, pin_grant};
use crate::harness::*;

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `redis-cli` against the test Redis; stdout, raw.
fn redis(args: &[&str]) -> Vec<u8> {
    Command::new("redis-cli")
        .args(["-u", &redis_url(), "--raw"])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools) must be installed")
        .stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Redis key of an API key's cached record, from its token `kg_<id hex>_<secret>`.
fn api_key_cache_key(token: &str) -> String {
    let hex = &token[3..35];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    format!("keygate:v1:api_key:global:{uuid}")
}

async fn list_systems(ch: &tonic::transport::Channel, key: &str) -> Result<usize, tonic::Status> {
    systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .map(|r| r.into_inner().acs_systems.len())
}

#[tokio::test]
async fn redis_holds_only_sealed_entries_postgres_redis() {
    let opts = Options {
        extra_args: ["--sandbox-provision-delay-ms", "20"]
            .map(String::from)
            .to_vec(),
        ..Options::postgres_redis().await
    };
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Sealed", true).await;
    let (_, other_key) = create_workspace(&ch, "Other", true).await;
    let doors = brivo_doors(&ch, &key).await;
    let grant = grants(&ch)
        .create_access_grant(authed(&key, pin_grant(&doors, "739215")))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let method_id = grant.requested_access_methods[0].created_access_method_ids[0].clone();
    let issued = issued_code(&ch, &key, &method_id).await;
    assert_eq!(issued.code, "739215");
    // Read again so the issued status is what the cache holds.
    issued_code(&ch, &key, &method_id).await;

    let status_key = format!("keygate:v1:access_method:{ws}:{method_id}");
    let raw = redis(&["GET", &status_key]);
    assert!(raw.len() > 29, "the method is cached in Redis: {raw:?}");
    assert!(
        !contains(&raw, b"739215"),
        "the PIN is not in Redis in clear"
    );
    assert!(
        !contains(&raw, method_id.as_bytes()),
        "nothing of the record is readable"
    );

    // API key records: planted garbage, or another key's genuine entry, is a miss, never believed.
    assert_eq!(list_systems(&ch, &key).await.expect("authenticated"), 5);
    assert_eq!(list_systems(&ch, &other_key).await.expect("other"), 5);
    let mine = api_key_cache_key(&key);
    let theirs = api_key_cache_key(&other_key);
    let their_entry = redis(&["GET", &theirs]);
    assert!(their_entry.len() > 29, "the other key's record is cached");
    assert_eq!(redis(&["SET", &mine, "planted"]), b"OK\n");
    assert_eq!(
        list_systems(&ch, &key).await.expect("still authenticated"),
        5
    );
    // Copy the other workspace's sealed record under this key's name: it must not open here.
    let copied = Command::new("redis-cli")
        .args(["-u", &redis_url(), "-x", "SET", &mine])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            // --raw GET appends a newline; -x reads stdin verbatim.
            let body = their_entry.strip_suffix(b"\n").unwrap_or(&their_entry);
            c.stdin.take().expect("stdin").write_all(body)?;
            c.wait()
        })
        .expect("redis-cli -x");
    assert!(copied.success());
    assert_eq!(
        list_systems(&ch, &key)
            .await
            .expect("authenticated as itself"),
        5
    );
    let own = grants(&ch)
        .get_access_grant(authed(
            &key,
            v1::GetAccessGrantRequest {
                access_grant_id: grant.access_grant_id.clone(),
            },
        ))
        .await
        .expect("its own workspace's grant, so the moved record was not believed");
    assert_eq!(own.into_inner().access_grant.expect("g").workspace_id, ws);
}

#[tokio::test]
async fn production_refuses_to_start_without_its_keys() {
    let dir = DataDir::new();
    let run = |env: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
        cmd.args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir.0)
        // Never reached: the keys are checked before anything connects.
        .env(
            "KEYGATE_DATABASE_URL",
            "postgres://keygate@127.0.0.1:1/none",
        )
        .env_remove("KEYGATE_REDIS_URL")
        .env("KEYGATE_LOG", "warn");
        for var in ["INSTANT_KEY_SECRET", "PAGE_TOKEN_KEY", "CACHE_KEY"] {
            cmd.env_remove(format!("KEYGATE_{var}"));
            cmd.env_remove(format!("KEYGATE_{var}_FILE"));
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.output().expect("run keygate")
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYGATE_INSTANT_KEY_SECRET is not set"),
        "{err}"
    );
    assert!(err.contains("SELECT value FROM settings"), "{err}");

    let keys = production_keys();
    let instant = keys[0].1.clone();
    let out = run(&[
        ("KEYGATE_INSTANT_KEY_SECRET", instant.clone()),
        ("KEYGATE_PAGE_TOKEN_KEY", "dG9vIHNob3J0".into()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYGATE_PAGE_TOKEN_KEY") && err.contains("at least 32"),
        "{err}"
    );

    // With Redis, the cache key is required too.
    let out = run(&[
        ("KEYGATE_INSTANT_KEY_SECRET", instant),
        ("KEYGATE_PAGE_TOKEN_KEY", keys[1].1.clone()),
        ("KEYGATE_REDIS_URL", redis_url()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KEYGATE_CACHE_KEY is not set"), "{err}");
}

#[tokio::test]
async fn the_embedded_default_keeps_owner_only_key_files_across_restarts() {
    use base64::Engine as _;
    let dir = DataDir::new();
    // A database an earlier version ran on: its Instant Key secret is in the settings table.
    let old_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([42u8; 32]);
    {
        let url = format!("sqlite://{}", dir.0.join("keygate.db").display());
        let store = keygate_store::open(&url).expect("open");
        store.migrate().await.expect("migrate");
        store
            .setting_or_init("instant_key_secret", &old_secret)
            .await
            .expect("old setting");
    }
    let files = ["instant-key-secret", "page-token-key"];
    let read = || {
        files.map(|f| std::fs::read_to_string(dir.0.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
    };
    let mut kg = Keygate::start(&dir.0, &Options::with_admin());
    let first = read();
    assert_eq!(first[0].trim(), old_secret, "copied out of the database");
    assert_ne!(first[1].trim(), old_secret);
    #[cfg(unix)]
    for f in files {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.0.join(f))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} is owner-only");
    }
    assert!(!dir.0.join("cache-key").exists(), "no Redis, no cache key");
    kg.terminate(Duration::from_secs(30));
    drop(kg);

    let _again = Keygate::start(&dir.0, &Options::with_admin());
    assert_eq!(read(), first, "the same keys after a restart");
}
