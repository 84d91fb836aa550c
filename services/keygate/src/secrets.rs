//! The server's keys (docs/security.md): the Instant Key secret, the page-token key and the
//! cache key. They come from the configuration (a variable or a `_FILE`), never from the
//! database. The embedded default (no `KEYGATE_DATABASE_URL`) generates each into an owner-only
//! file in the data directory and reuses it; a key that an earlier version kept in the
//! database's settings is copied out into that file once, so existing links keep working.
//! With `KEYGATE_DATABASE_URL` (production) a missing key stops the start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_store::SettingsStore;

/// Shortest key accepted, in bytes (after base64url decoding).
pub const MIN_KEY_BYTES: usize = 32;
/// Bytes of a generated key.
const GENERATED_BYTES: usize = 32;

/// One of the server's keys: its variable, its file in the data directory, and the setting an
/// earlier version kept it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub var: &'static str,
    pub file_name: &'static str,
    pub legacy_setting: Option<&'static str>,
}

pub const INSTANT_KEY_SECRET: KeySpec = KeySpec {
    var: "KEYGATE_INSTANT_KEY_SECRET",
    file_name: "instant-key-secret",
    legacy_setting: Some("instant_key_secret"),
};

pub const PAGE_TOKEN_KEY: KeySpec = KeySpec {
    var: "KEYGATE_PAGE_TOKEN_KEY",
    file_name: "page-token-key",
    legacy_setting: Some("page_token_key"),
};

pub const CACHE_KEY: KeySpec = KeySpec {
    var: "KEYGATE_CACHE_KEY",
    file_name: "cache-key",
    legacy_setting: None,
};

/// Optional outside the embedded default: see [`credentials_plan`].
pub const CREDENTIALS_KEY: KeySpec = KeySpec {
    var: "KEYGATE_CREDENTIALS_KEY",
    file_name: "credentials-key",
    legacy_setting: None,
};

/// The credentials key's plan, or `None` when it is not configured outside the embedded default
/// (connecting a system with credentials is then refused, and nothing else changes).
pub fn credentials_plan(
    cfg: Configured<'_>,
    data_dir: &Path,
    embedded: bool,
) -> Result<Option<Plan>, KeyError> {
    if !embedded && cfg.value.trim().is_empty() && cfg.file.is_none() {
        return Ok(None);
    }
    plan(CREDENTIALS_KEY, cfg, data_dir, embedded).map(Some)
}

/// A key as configured: the variable, the `_FILE` path, and the `_PREVIOUS` list.
#[derive(Clone, Copy, Debug, Default)]
pub struct Configured<'a> {
    pub value: &'a str,
    pub file: Option<&'a Path>,
    pub previous: &'a [String],
}

/// A key in use: the current one, and previous ones accepted only for reading.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub current: Vec<u8>,
    pub previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing(.., {} previous)", self.previous.len())
    }
}

/// Where a key came from (logged at start; never the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Variable,
    File(PathBuf),
    /// The embedded default's file, as found.
    DataDir(PathBuf),
    /// The embedded default's file, written now with a fresh key.
    Generated(PathBuf),
    /// The embedded default's file, written now with the key the database held.
    CopiedFromDatabase(PathBuf),
}

/// What can be known before the store answers.
#[derive(Clone, Debug)]
pub enum Plan {
    Ready(KeyRing, Origin),
    /// The embedded default without its file yet: it is written once the store answers (the
    /// database may hold a key of an earlier version to copy out).
    Pending {
        path: PathBuf,
        previous: Vec<Vec<u8>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{var}: {why}")]
    Invalid { var: String, why: String },
    #[error("{var} and {var}_FILE are both set: set one of them")]
    Both { var: &'static str },
    #[error("reading {var} from {path}")]
    Read {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{var} is not set. With KEYGATE_DATABASE_URL every replica must get the same key from the configuration \
         (or {var}_FILE): generate one with `openssl rand -base64 32 | tr '+/' '-_'`.{legacy}"
    )]
    Missing { var: &'static str, legacy: String },
    #[error("reading the {setting} an earlier version stored in the database")]
    Store {
        setting: &'static str,
        #[source]
        source: keygate_domain::Error,
    },
}

/// Decodes a configured key: base64url (padding and surrounding space allowed), at least
/// [`MIN_KEY_BYTES`].
pub fn decode(var: &str, text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim().trim_end_matches('=');
    let invalid = |why: String| KeyError::Invalid {
        var: var.to_owned(),
        why,
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| invalid(format!("not base64url ({e})")))?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(invalid(format!(
            "{} bytes; a key needs at least {MIN_KEY_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Resolves what the configuration and the data directory say, without the store.
/// `embedded`: no `KEYGATE_DATABASE_URL`, so a missing key may be generated in `data_dir`.
pub fn plan(
    spec: KeySpec,
    cfg: Configured<'_>,
    data_dir: &Path,
    embedded: bool,
) -> Result<Plan, KeyError> {
    let previous_var = format!("{}_PREVIOUS", spec.var);
    let previous = cfg
        .previous
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| decode(&previous_var, p))
        .collect::<Result<Vec<_>, _>>()?;
    let value = cfg.value.trim();
    let ring = |current| KeyRing {
        current,
        previous: previous.clone(),
    };
    match (value.is_empty(), cfg.file) {
        (false, Some(_)) => Err(KeyError::Both { var: spec.var }),
        (false, None) => Ok(Plan::Ready(ring(decode(spec.var, value)?), Origin::Variable)),
        (true, Some(path)) => {
            let current = read_key(spec, path)?;
            Ok(Plan::Ready(ring(current), Origin::File(path.to_owned())))
        }
        (true, None) if !embedded => Err(KeyError::Missing {
            var: spec.var,
            legacy: spec
                .legacy_setting
                .map(|s| {
                    format!(
                        " If an earlier version ran on this database it kept the key there: use that value \
                         (SELECT value FROM settings WHERE key = '{s}') so existing links and tokens keep working."
                    )
                })
                .unwrap_or_default(),
        }),
        (true, None) => {
            let path = data_dir.join(spec.file_name);
            if path.exists() {
                restrict(&path)?;
                let current = read_key(spec, &path)?;
                Ok(Plan::Ready(ring(current), Origin::DataDir(path)))
            } else {
                Ok(Plan::Pending { path, previous })
            }
        }
    }
}

/// Finishes a plan: a pending key is copied out of the database (when an earlier version kept
/// it there) or generated, and written owner-only.
pub async fn finish(
    spec: KeySpec,
    plan: Plan,
    store: Option<&dyn SettingsStore>,
) -> Result<(KeyRing, Origin), KeyError> {
    let (path, previous) = match plan {
        Plan::Ready(ring, origin) => return Ok((ring, origin)),
        Plan::Pending { path, previous } => (path, previous),
    };
    let stored = match (spec.legacy_setting, store) {
        (Some(setting), Some(store)) => store
            .read_setting(setting)
            .await
            .map_err(|source| KeyError::Store { setting, source })?
            .map(|v| decode(setting, &v))
            .transpose()?,
        _ => None,
    };
    let copied = stored.is_some();
    let fresh = stored.unwrap_or_else(|| rand::random::<[u8; GENERATED_BYTES]>().to_vec());
    let current = match write_new(&path, &URL_SAFE_NO_PAD.encode(&fresh)) {
        Ok(()) => fresh,
        // Another process of this data directory wrote it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(spec, &path)?,
        Err(source) => return Err(KeyError::Write { path, source }),
    };
    let origin = if copied {
        tracing::info!(
            setting = spec.legacy_setting.unwrap_or_default(),
            path = %path.display(),
            "copied the key an earlier version kept in the database into the data directory; it is read from there from now on"
        );
        Origin::CopiedFromDatabase(path)
    } else {
        tracing::info!(path = %path.display(), var = spec.var, "generated a key (owner-only file)");
        Origin::Generated(path)
    };
    Ok((KeyRing { current, previous }, origin))
}

fn read_key(spec: KeySpec, path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        var: spec.var,
        path: path.to_owned(),
        source,
    })?;
    decode(&format!("{}_FILE ({})", spec.var, path.display()), &text)
}

/// Creates `path` with `content`, owner-only; fails with `AlreadyExists` if it is there.
fn write_new(path: &Path, content: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Makes a key file of the data directory owner-only if it is not.
fn restrict(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(write_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "key file readable by others; made owner-only");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(write_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_store::testdb::{TempDir, TestDb};

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ready(plan: Plan) -> (KeyRing, Origin) {
        match plan {
            Plan::Ready(ring, origin) => (ring, origin),
            Plan::Pending { path, .. } => panic!("pending at {}", path.display()),
        }
    }

    #[test]
    fn keys_decode_from_base64url_and_must_be_long_enough() {
        let key = [7u8; 32];
        assert_eq!(decode("K", &b64(&key)).ok(), Some(key.to_vec()));
        // Padded, with a newline (as `openssl rand -base64 32 | tr '+/' '-_'` writes it).
        let padded = base64::engine::general_purpose::URL_SAFE.encode([0xfb; 32]);
        assert!(padded.ends_with('='));
        assert_eq!(
            decode("K", &format!("{padded}\n")).ok(),
            Some(vec![0xfb; 32])
        );
        let short = decode("KEYGATE_PAGE_TOKEN_KEY", &b64(&[1; 31]));
        assert!(
            matches!(&short, Err(KeyError::Invalid { var, why }) if var == "KEYGATE_PAGE_TOKEN_KEY" && why.contains("31 bytes")),
            "{short:?}"
        );
        // Standard base64's '+' and '/' are not base64url.
        assert!(decode("K", &"+/".repeat(22)).is_err());
        assert!(decode("K", "").is_err());
    }

    #[test]
    fn the_variable_or_the_file_wins_and_not_both() {
        let dir = TempDir::new("keygate-keys");
        let value = b64(&[1; 32]);
        let previous = vec![b64(&[2; 32]), String::new()];
        let cfg = Configured {
            value: &value,
            file: None,
            previous: &previous,
        };
        let (ring, origin) = ready(plan(PAGE_TOKEN_KEY, cfg, &dir.0, false).expect("plan"));
        assert_eq!(ring.current, vec![1; 32]);
        assert_eq!(
            ring.previous,
            vec![vec![2; 32]],
            "empty entries are ignored"
        );
        assert_eq!(origin, Origin::Variable);

        let file = dir.0.join("mounted");
        std::fs::write(&file, format!("{}\n", b64(&[3; 40]))).expect("write");
        let from_file = Configured {
            value: "",
            file: Some(&file),
            previous: &[],
        };
        let (ring, origin) = ready(plan(CACHE_KEY, from_file, &dir.0, false).expect("plan"));
        assert_eq!(ring.current, vec![3; 40]);
        assert_eq!(origin, Origin::File(file.clone()));

        let both = Configured {
            value: &value,
            file: Some(&file),
            previous: &[],
        };
        assert!(matches!(
            plan(CACHE_KEY, both, &dir.0, true),
            Err(KeyError::Both {
                var: "KEYGATE_CACHE_KEY"
            })
        ));
        let missing_file = Configured {
            value: "",
            file: Some(&dir.0.join("nope")),
            previous: &[],
        };
        assert!(matches!(
            plan(CACHE_KEY, missing_file, &dir.0, true),
            Err(KeyError::Read { .. })
        ));
        let bad_previous = vec!["short".to_owned()];
        let cfg = Configured {
            value: &value,
            file: None,
            previous: &bad_previous,
        };
        assert!(
            matches!(plan(PAGE_TOKEN_KEY, cfg, &dir.0, false), Err(KeyError::Invalid { var, .. }) if var == "KEYGATE_PAGE_TOKEN_KEY_PREVIOUS")
        );
    }

    #[test]
    fn production_without_a_key_refuses_with_a_hint() {
        let dir = TempDir::new("keygate-keys");
        let err = plan(INSTANT_KEY_SECRET, Configured::default(), &dir.0, false)
            .expect_err("no key in production");
        let text = err.to_string();
        assert!(
            text.contains("KEYGATE_INSTANT_KEY_SECRET is not set"),
            "{text}"
        );
        assert!(text.contains("key = 'instant_key_secret'"), "{text}");
        assert!(
            std::fs::read_dir(&dir.0).expect("dir").next().is_none(),
            "nothing written"
        );
    }

    #[tokio::test]
    async fn the_embedded_default_generates_owner_only_files_and_reuses_them() {
        let dir = TempDir::new("keygate-keys");
        let p = plan(PAGE_TOKEN_KEY, Configured::default(), &dir.0, true).expect("plan");
        assert!(matches!(&p, Plan::Pending { .. }));
        let (first, origin) = finish(PAGE_TOKEN_KEY, p, None).await.expect("finish");
        let path = dir.0.join("page-token-key");
        assert_eq!(origin, Origin::Generated(path.clone()));
        assert_eq!(first.current.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        // A restart reads the same key without the store.
        let (again, origin) =
            ready(plan(PAGE_TOKEN_KEY, Configured::default(), &dir.0, true).expect("plan"));
        assert_eq!(again, first);
        assert_eq!(origin, Origin::DataDir(path.clone()));
        // A file made readable by others is made owner-only again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            plan(PAGE_TOKEN_KEY, Configured::default(), &dir.0, true).expect("plan");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The other keys get files of their own.
        let p = plan(CACHE_KEY, Configured::default(), &dir.0, true).expect("plan");
        let (cache, _) = finish(CACHE_KEY, p, None).await.expect("finish");
        assert_ne!(cache.current, first.current);
    }

    #[tokio::test]
    async fn a_key_an_earlier_version_stored_is_copied_out_once() {
        let db = TestDb::sqlite().await;
        let dir = TempDir::new("keygate-keys");
        let old = [9u8; 32];
        db.store
            .setting_or_init("instant_key_secret", &b64(&old))
            .await
            .expect("seed the old setting");
        let p = plan(INSTANT_KEY_SECRET, Configured::default(), &dir.0, true).expect("plan");
        let (ring, origin) = finish(INSTANT_KEY_SECRET, p, Some(&*db.store))
            .await
            .expect("finish");
        let path = dir.0.join("instant-key-secret");
        assert_eq!(ring.current, old.to_vec(), "existing links keep working");
        assert_eq!(origin, Origin::CopiedFromDatabase(path.clone()));
        let (again, origin) =
            ready(plan(INSTANT_KEY_SECRET, Configured::default(), &dir.0, true).expect("plan"));
        assert_eq!(again.current, old.to_vec());
        assert_eq!(origin, Origin::DataDir(path));
        // Without an old setting, a fresh key is generated.
        let p = plan(PAGE_TOKEN_KEY, Configured::default(), &dir.0, true).expect("plan");
        let (fresh, origin) = finish(PAGE_TOKEN_KEY, p, Some(&*db.store))
            .await
            .expect("finish");
        assert_ne!(fresh.current, old.to_vec());
        assert!(matches!(origin, Origin::Generated(_)));
    }
}
