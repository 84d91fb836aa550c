//! First start: the sandbox workspace that makes `keygate serve` useful with no setup.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use keygate_app::workspaces::{new_workspace, sandbox_systems};
use keygate_domain::Error;
use keygate_domain::model::WorkspaceType;
use keygate_store::Store;

/// Name of the file (in the data dir) holding the sandbox API key, readable by its owner only.
pub const KEY_FILE: &str = "sandbox-api-key";

/// What the bootstrap found or made.
pub enum Outcome {
    /// A new sandbox; its token exists nowhere else but here and in the key file.
    Created {
        workspace_id: String,
        token: String,
        key_file: Option<PathBuf>,
    },
    /// The sandbox an earlier start made.
    Existing { workspace_id: String },
}

/// Creates the sandbox workspace unless this database already has one.
pub async fn sandbox(store: &dyn Store, data_dir: &Path) -> Result<Outcome, Error> {
    let (ws, key, token) =
        new_workspace("Sandbox".into(), WorkspaceType::Sandbox, "sandbox".into());
    if let Some(existing) = store
        .bootstrap_workspace(&ws, &key, &sandbox_systems())
        .await?
    {
        return Ok(Outcome::Existing {
            workspace_id: existing.to_string(),
        });
    }
    let key_file = match write_private(&data_dir.join(KEY_FILE), &token) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "could not write the sandbox API key file; it is printed once below");
            None
        }
    };
    Ok(Outcome::Created {
        workspace_id: ws.id.to_string(),
        token,
        key_file,
    })
}

/// Writes `content` to a new file only its owner can read (0600 on Unix).
fn write_private(path: &Path, content: &str) -> std::io::Result<PathBuf> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; tighten an existing one too.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(path.to_path_buf())
}
