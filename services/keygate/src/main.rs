//! The `keygate` binary: every role in one process by default.

mod admin;
mod bootstrap;
mod config;
mod deliveries;
mod http;
mod probe;
mod secrets;
mod serve;
mod simulators;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use config::{Cli, Command, DeliveriesCommand, LogFormatArg, StoreArgs};
use keygate_store::SCHEMA_VERSION;
use keygate_telemetry::{LogFormat, Telemetry};

/// Logs, and for `serve` (with `roles`) OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn init_telemetry(store: &StoreArgs, roles: Option<&[&str]>) -> anyhow::Result<Telemetry> {
    let format = match store.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    Ok(keygate_telemetry::init(&keygate_telemetry::Config {
        format,
        filter: &store.log,
        roles,
    })?)
}

/// What `keygate --version` prints: the package version, the commit it was built from (see
/// build.rs) and the database schema version it needs.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {}, schema {})",
            env!("CARGO_PKG_VERSION"),
            env!("KEYGATE_COMMIT"),
            SCHEMA_VERSION
        )
    })
}

/// The command line definition, with the version filled in.
fn command() -> clap::Command {
    Cli::command().version(version()).long_version(version())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        // The client commands print their own one-line errors and log nothing.
        Command::Admin(args) => {
            return match admin::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keygate: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Probe(args) => {
            return match probe::run(&args).await {
                Ok(line) => {
                    use std::io::Write as _;
                    // A closed stdout does not make a ready server unready.
                    let _ = writeln!(std::io::stdout(), "keygate: {line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Completions(args) => {
            // Into a buffer first: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command(), "keygate", &mut script);
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            return match stdout.write_all(&script).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keygate: cannot write the completion script: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Serve(args) => {
            let roles: Vec<&str> = args.roles.iter().map(|r| r.name()).collect();
            match init_telemetry(&args.store, Some(&roles)) {
                Ok(telemetry) => {
                    let r = serve::run(args).await;
                    // After the drain: the spans of the last calls are sent before exit.
                    telemetry.shutdown().await;
                    r
                }
                Err(e) => Err(e),
            }
        }
        Command::Migrate(args) => match init_telemetry(&args.store, None) {
            Ok(_logs_only) => migrate(args).await,
            Err(e) => Err(e),
        },
        Command::Deliveries(DeliveriesCommand::List(args)) => {
            match init_telemetry(&args.store, None) {
                Ok(_logs_only) => deliveries::list(args).await,
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line, `outer: inner: root`, skipping a source whose text
/// the previous one already shows.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn migrate(args: config::MigrateArgs) -> anyhow::Result<()> {
    if args.store.database_url.is_empty() {
        std::fs::create_dir_all(&args.store.data_dir)?;
    }
    // Migrations may run long DDL: no statement timeout here.
    let settings = keygate_store::PoolSettings {
        statement_timeout: None,
        ..args.store.pool_settings()
    };
    let store = keygate_store::open_with(&args.store.database_url(), &settings)?;
    if args.check {
        let v = store.schema_version().await?;
        anyhow::ensure!(
            v >= SCHEMA_VERSION,
            "schema is at version {v}; this build needs {SCHEMA_VERSION}"
        );
        println!("keygate: schema at version {v} (this build needs {SCHEMA_VERSION})");
    } else {
        let v = store.migrate().await?;
        println!("keygate: schema at version {v}");
    }
    Ok(())
}
