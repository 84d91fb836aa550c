//! The `keygate` binary: every role in one process by default.

mod bootstrap;
mod config;
mod http;
mod serve;

use std::process::ExitCode;

use clap::Parser as _;
use config::{Cli, Command, LogFormatArg, StoreArgs};
use keygate_store::SCHEMA_VERSION;
use keygate_telemetry::LogFormat;

fn init_logs(store: &StoreArgs) {
    let format = match store.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    keygate_telemetry::init(format, &store.log);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logs(&args.store);
            serve::run(args).await
        }
        Command::Migrate(args) => {
            init_logs(&args.store);
            migrate(args).await
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
    let store = keygate_store::open(&args.store.database_url())?;
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
