//! `latchkey`: the authorization server, its admin CLI, `latchkey token` for scripts, and the
//! `gate` and `sidecar` proxies. A thin layer over
//! `latchkey-server`; every decision lives in the library.

mod audit_cmd;
mod cli;
mod client_cmd;
mod gate_cmd;
mod gate_quota;
mod import_cmd;
mod kek;
mod keys_cmd;
mod logging;
mod migrate_cmd;
mod output;
mod proxy;
mod registration_cmd;
mod remote;
mod request_target;
mod serve_cmd;
mod sidecar_cmd;
mod token_cmd;
mod usage_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve_cmd::run(&cli.global, args).await,
            Command::Migrate => migrate_cmd::run(&cli.global).await,
            Command::MigrateData(args) => migrate_cmd::run_data(&cli.global, args).await,
            Command::Client(cmd) => client_cmd::run(&cli.global, cmd).await,
            Command::Keys(cmd) => keys_cmd::run(&cli.global, cmd).await,
            Command::Audit(cmd) => audit_cmd::run(&cli.global, cmd).await,
            Command::RegistrationToken(cmd) => registration_cmd::run(&cli.global, cmd).await,
            Command::Usage(args) => usage_cmd::run(&cli.global, args).await,
            Command::Token(args) => token_cmd::run(&cli.global, args).await,
            Command::PublicJwks { files } => token_cmd::public_jwks(&files),
            Command::Gate(args) => gate_cmd::run(args).await,
            Command::Sidecar(args) => sidecar_cmd::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Who changes the database when `latchkey` runs against it directly, for the audit trail: the
/// OS user (`$USER`, else `$LOGNAME`, else the numeric uid).
pub fn cli_actor() -> latchkey_server::model::Actor {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
                .unwrap_or_else(|_| "unknown".into())
        });
    latchkey_server::model::Actor::Cli(user)
}
