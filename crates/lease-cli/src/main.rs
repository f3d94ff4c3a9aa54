//! `lease`: leases from the command line.
//!
//! - `lease run --lease NAME -- CMD…` runs CMD while holding a lease (flock(1) for fleets:
//!   time-bounded, and safe across hosts on the Kubernetes store);
//! - `lease claim | extend | revoke | pin | unpin | wait | show | list` manage and inspect
//!   leases;
//! - `lease demo` shows a leader election on a temporary SQLite database: several worker
//!   processes, a SIGKILLed leader, the takeover, and a check that no two ever led at once.
//!
//! Every command takes `--store sqlite:PATH` (default `$LEASE_DB`, else
//! `$XDG_STATE_HOME/lease/leases.db`, else `~/.local/state/lease/leases.db`; never the working
//! directory) or `--store k8s[:NAMESPACE]`; `lease check` checks the SQLite file for damage.
//! Failures print one line, `lease: error: …`, and exit with a documented code (see
//! `lease --help`).

mod backend;
mod cli;
mod commands;
mod demo;
mod error;
mod human;
mod run;
mod supervisor;

use std::process::ExitCode;

use clap::error::ErrorKind;

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_STORE, EXIT_USAGE};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        eprintln!("lease: error: internal error: {message}");
    }));

    // The shim of `lease run` (when its own binary is missing): before anything else, as it
    // starts once per run and needs neither the command line parser nor a runtime.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|first| first == "__exec-child") {
        return ExitCode::from(supervisor::main(args));
    }

    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e),
    };
    let code = match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lease: error: {e}");
            e.code
        }
    };
    ExitCode::from(code)
}

/// The runtime of every command: one thread.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(EXIT_STORE, format!("cannot start the runtime: {e}")))
}

/// Help and version as clap prints them; every usage error as one line, exit code 2.
fn clap_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE))
        }
        ErrorKind::MissingRequiredArgument if e.to_string().contains("<CMD>") => {
            eprintln!(
                "lease: error: missing command after -- (usage: lease run --lease NAME [OPTIONS] -- CMD [ARGS]...)"
            );
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let text = shorten_invalid_value(e, first.join(" "));
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprintln!("lease: error: {text} (see lease --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `text` with the value clap quotes (`invalid value '…' for …`) cut to its first 64
/// characters: the parsers' own messages already quote what matters, and a 70 000-character
/// name must not become a 70 000-character error line.
fn shorten_invalid_value(e: &clap::Error, text: String) -> String {
    use clap::error::{ContextKind, ContextValue};
    match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if value.chars().count() > 64 => {
            let start: String = value.chars().take(64).collect();
            text.replacen(&format!("'{value}'"), &format!("'{start}…'"), 1)
        }
        _ => text,
    }
}

fn execute(cli: Cli) -> Result<u8, CliError> {
    let spec = backend::resolve(cli.store);
    let spec = match cli.command.lease_args() {
        Some(lease) => backend::bind_object(spec, lease.key(), lease.object.as_deref())?,
        None => spec,
    };
    let runtime = runtime()?;
    match cli.command {
        // `lease run` enters its runtime only where it needs it (see `run`).
        Command::Run(args) => run::run(&spec, args, &runtime),
        command => runtime.block_on(execute_async(&spec, command)),
    }
}

async fn execute_async(spec: &backend::StoreSpec, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Run(_) => Err(CliError::store("lease run runs outside the runtime")),
        Command::Claim(args) => commands::claim(spec, args).await,
        Command::Extend(args) => commands::extend(spec, args).await,
        Command::Revoke(args) => commands::revoke(spec, args).await,
        Command::Pin(args) => commands::pin(spec, args, true).await,
        Command::Unpin(args) => commands::pin(spec, args, false).await,
        Command::Wait(args) => commands::wait(spec, args).await,
        Command::Show(args) => commands::show(spec, args).await,
        Command::List(args) => commands::list(spec, args).await,
        Command::Check(args) => commands::check(spec, &args),
        Command::Demo(args) => demo::demo(args).await,
        Command::DemoWorker(args) => demo::worker(args).await,
    }
}
