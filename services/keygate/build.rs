//! Records the commit the binary is built from, for `keygate --version`: `KEYGATE_COMMIT` when
//! the build sets it (an image built without `.git`), else `git rev-parse --short HEAD`, else
//! `unknown`. Re-runs when HEAD or the branch it points at moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEYGATE_COMMIT");
    let commit = std::env::var("KEYGATE_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Watch the files that say where HEAD is (a worktree's `.git` is a file naming them): HEAD,
    // the branch it points at, and packed-refs (where `git gc` moves branches).
    for path in [
        Some("HEAD".to_owned()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    .chain(["packed-refs".to_owned()])
    {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &path])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!(
        "cargo:rustc-env=KEYGATE_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
