//! The `keygate` binary: every role in one process by default.

mod bootstrap;
mod config;
mod deliveries;
mod http;
mod secrets;
mod serve;
mod simulators;

use std::process::ExitCode;

use clap::Parser as _;
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
