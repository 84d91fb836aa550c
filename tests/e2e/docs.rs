//! The configuration reference (docs/configuration.md) is checked against the binary itself:
//! every flag `keygate <command> --help` prints is documented, with its environment variable,
//! and the document names no flag the binary does not have.

use std::collections::BTreeSet;
use std::process::Command;

fn help(command: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([command, "--help"])
        .output()
        .expect("run keygate --help");
    assert!(out.status.success(), "keygate {command} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--flag` names at the start of help lines, and the `[env: NAME=...]` of each.
fn flags(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        let t = t.strip_prefix("-h, ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name != "help" && name != "version" {
                flags.insert(format!("--{name}"));
            }
        }
        if let Some(i) = line.find("[env: ") {
            let name: String = line[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            envs.insert(name);
        }
    }
    (flags, envs)
}

#[test]
fn the_configuration_reference_matches_keygate_help() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let mut all = BTreeSet::new();
    for command in ["serve", "migrate"] {
        let (flags, envs) = flags(&help(command));
        assert!(
            !flags.is_empty(),
            "no flags parsed from `keygate {command} --help`"
        );
        for f in &flags {
            assert!(
                doc.contains(&format!("`{f}`")),
                "`keygate {command}` has {f}, which docs/configuration.md does not document"
            );
        }
        for e in &envs {
            assert!(
                doc.contains(&format!("`{e}`")),
                "`keygate {command}` reads {e}, which docs/configuration.md does not document"
            );
        }
        all.extend(flags);
    }
    // Every flag in the document's tables exists.
    for line in doc.lines().filter(|l| l.starts_with("| `--")) {
        let flag: String = line[3..].chars().take_while(|c| *c != '`').collect();
        assert!(
            all.contains(&flag),
            "docs/configuration.md documents {flag}, which keygate does not have"
        );
    }
}
