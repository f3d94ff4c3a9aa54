//! The command line, as clap reads it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use lease_store_sqlite::DEFAULT_DATABASE_RULE;

use crate::backend::{StoreSpec, env_default_db, parse_store};
use crate::error::EXIT_CODES_HELP;
use crate::human::{
    parse_duration, parse_entity, parse_holder, parse_lease, parse_model, parse_namespace,
};

const STORE_HELP: &str = "Where leases are kept: sqlite:PATH (one host, many processes), \
k8s[:NAMESPACE] (Lease objects through the current kubeconfig or the in-cluster config; \
default namespace: the kubeconfig's) or postgres://USER:PASSWORD@HOST/DB (schema `lease`). \
Default: SQLite at";

/// `--store`'s help, with the default database this environment gives.
fn store_help() -> String {
    let here = match env_default_db() {
        Ok(db) => db.path.display().to_string(),
        Err(e) => format!("none: {e}"),
    };
    format!(
        "{STORE_HELP} {DEFAULT_DATABASE_RULE} (here: {here}), never the working directory; \
         its directory is created 0700, the file 0600"
    )
}

/// Parses the command line, with `--help` showing the default database of this environment.
///
/// # Errors
///
/// Clap's, for usage errors, `--help` and `--version`.
pub(crate) fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command().mut_arg("store", |a| a.help(store_help()));
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&matches).map_err(|e| e.with_cmd(&command))
}

/// Leases from the command line: run a command while holding a lease (flock(1) for fleets:
/// time-bounded, and safe across hosts on the Kubernetes store), inspect and manage leases,
/// and watch a leader election fail over (`lease demo`).
#[derive(Debug, Parser)]
#[command(name = "lease", version, after_help = EXIT_CODES_HELP, max_term_width = 100)]
pub(crate) struct Cli {
    #[arg(long, global = true, value_name = "STORE", value_parser = parse_store, env = "LEASE_STORE", hide_env_values = true, help = STORE_HELP)]
    pub(crate) store: Option<StoreSpec>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a command while holding a lease: acquire it (or fail fast, or --wait), renew it in
    /// the background, stop the command if the lease is lost, release it at the end.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Acquire a lease (or extend it, when this holder already holds it).
    ///
    /// The command exits at once; the lease stays held by --holder until its --ttl runs out or
    /// `lease revoke` gives it up, not only while this command runs: its exit (or its death)
    /// does not free the lease, even on SQLite, where a dead holder's leases are otherwise free
    /// at once. To hold a lease only while a command runs, use `lease run`.
    Claim(ClaimArgs),
    /// Extend a lease held by --holder.
    ///
    /// As with `lease claim`, the lease then lasts until its new expiry whatever becomes of the
    /// process that extended it, or of the one that claimed it (on SQLite, a lease of a `lease
    /// run` extended this way is no longer freed early when that run dies).
    Extend(ExtendArgs),
    /// Give up a lease held by --holder.
    Revoke(RevokeArgs),
    /// Stop a lease (or its next claimant's) from expiring, on behalf of --entity.
    Pin(PinArgs),
    /// Remove --entity's pin; the lease expires normally once no pins remain.
    Unpin(PinArgs),
    /// Wait until a lease is no longer held (at its expiry, or at once when it is released).
    Wait(WaitArgs),
    /// Show one lease.
    Show(ShowArgs),
    /// List the leases: an aligned table, or JSON.
    List(ListArgs),
    /// Check the whole SQLite database for damage, reading only: exit 0 sound, 4 damaged.
    ///
    /// Every page, index entry and constraint is checked; nothing is written, and a missing
    /// file is not created. The other commands check only the header when they open the
    /// database, so that their cost does not grow with the file; a damaged page they meet
    /// fails them with exit code 4.
    Check(CheckArgs),
    /// Watch a leader election on a fresh temporary SQLite database: several worker processes
    /// elect a leader, the leader is killed with SIGKILL, another takes over, and their logs
    /// are checked for overlapping leadership. Ignores --store. Exits 0 when the check passes,
    /// 1 when it fails.
    Demo(DemoArgs),
    /// Internal: one worker process of `lease demo`.
    #[command(name = "__demo-worker", hide = true)]
    DemoWorker(DemoWorkerArgs),
}

const RUN_AFTER_HELP: &str = "\
CMD gets LEASE_HOLDER (the holder) and LEASE_FENCE (the lease's fencing generation: pass it to \
the resources CMD writes, which reject anything older than the newest they have seen) in its \
environment. When CMD ends, whatever it left running is killed, then the lease is released and \
`lease run` exits with CMD's status (128+N when CMD was killed by signal N). SIGTERM, SIGINT \
and SIGHUP sent to `lease run` are passed on to CMD's process group.

Timing: a claim or renewal that starts at S guarantees the lease until S + --ttl (its window), \
on this host's monotonic clock; no other holder can get it before. Renewals run every half \
--renew-deadline, beside a watchdog that only watches the clock. If no renewal has succeeded \
within --renew-deadline (default: two thirds of --ttl) of the last successful one's start, or \
a renewal finds the lease revoked or taken, the lease is lost: CMD's process group gets \
SIGTERM, then SIGKILL after --kill-after (default 10s), but never later than the window's end \
minus a safety margin of a tenth of --ttl. So CMD, all of its process tree, is gone before the \
lease can pass to another holder, whatever CMD does with SIGTERM and however long a store call \
hangs; `lease run` then exits with 3. A claim that comes back after --renew-deadline has passed \
does not start CMD (exit 4; with --wait, the lease is given back and claimed again). --kill-after must be shorter than --ttl, and --renew-deadline \
shorter than --ttl minus the margin.

The process tree: CMD runs in its own process group, under a small supervisor process that is \
a child subreaper (descendants that double-fork or call setsid come back to it, not to init) \
and has a parent-death signal armed. On a lost lease, when CMD exits, and when `lease run` dies, \
even by SIGKILL, every remaining process of the tree is killed. (Being in its own process group, CMD cannot read from the \
terminal.)

A dead holder (SQLite): the lease is freed before its expiry once no process of its holder is \
left, and only then; a stopped or stalled `lease run` keeps it until the window ends. CMD's \
whole tree inherits the holder session's lock (descriptor $LEASE_SESSION_FD), so the lease is \
not freed while any process of the tree runs, even after `lease run` was SIGKILLed. A daemon \
that closes all its descriptors no longer keeps the lease, but it is still killed with the rest \
of the tree.";

/// Which namespace and model a lease is in.
#[derive(Debug, Clone, Args)]
pub(crate) struct ScopeArgs {
    /// The lease's namespace (what kind of lease it is).
    #[arg(long, short = 'n', default_value = "default", env = "LEASE_NAMESPACE", value_parser = parse_namespace)]
    pub(crate) namespace: String,
    /// The lease's model (the scope inside the namespace: a tenant, an environment).
    #[arg(long, short = 'm', default_value = "default", env = "LEASE_MODEL", value_parser = parse_model)]
    pub(crate) model: String,
}

/// One lease.
#[derive(Debug, Clone, Args)]
pub(crate) struct LeaseArgs {
    /// The lease's name.
    #[arg(long, short = 'l', value_name = "NAME", value_parser = parse_lease)]
    pub(crate) lease: String,
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// Kubernetes store only: use this exact Lease object (say, the one a client-go controller
    /// elects its leader on) instead of one named after the lease.
    #[arg(long, value_name = "OBJECT", value_parser = parse_object)]
    pub(crate) object: Option<String>,
}

/// Parses `--object`: a Kubernetes object name (a DNS-1123 subdomain).
fn parse_object(text: &str) -> Result<String, String> {
    if lease_store_k8s::naming::is_dns1123_subdomain(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid object name {text:?}: not a DNS-1123 subdomain (lowercase letters, digits, \
             '-' and '.', at most 253 characters)"
        ))
    }
}

impl Command {
    /// The lease a command is about, if it is about one.
    pub(crate) fn lease_args(&self) -> Option<&LeaseArgs> {
        match self {
            Command::Run(a) => Some(&a.lease),
            Command::Claim(a) => Some(&a.lease),
            Command::Extend(a) => Some(&a.lease),
            Command::Revoke(a) => Some(&a.lease),
            Command::Pin(a) | Command::Unpin(a) => Some(&a.lease),
            Command::Wait(a) => Some(&a.lease),
            Command::Show(a) => Some(&a.lease),
            Command::List(_) | Command::Check(_) | Command::Demo(_) | Command::DemoWorker(_) => {
                None
            }
        }
    }
}

impl LeaseArgs {
    pub(crate) fn key(&self) -> lease_core::Key {
        lease_core::Key::new(&self.scope.namespace, &self.scope.model, &self.lease)
    }
}

/// `lease run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// Who holds the lease. Default: this host's name and the process id (`host:pid`). Keep
    /// it unique to this run: a lease already held under this name is taken as this run's own.
    #[arg(long, value_parser = parse_holder)]
    pub(crate) holder: Option<String>,
    /// How long each claim and renewal guarantees the lease, from the call's start (e.g. 15s,
    /// 2m; at least 100ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) ttl: Duration,
    /// Wait for the lease when someone else holds it, instead of failing at once.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, requires = "wait", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Option<Duration>,
    /// The lease counts as lost when no renewal succeeded this long after the last successful
    /// one started. Default: two thirds of --ttl; shorter than --ttl minus a tenth.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) renew_deadline: Option<Duration>,
    /// After the lease is lost and CMD got SIGTERM: how long before SIGKILL, capped so that
    /// SIGKILL always comes before the lease's window ends. Default 10s; shorter than --ttl.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) kill_after: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

/// `lease claim`.
#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// Who claims the lease. Default: this host's name and the process id (`host:pid`).
    #[arg(long, value_parser = parse_holder)]
    pub(crate) holder: Option<String>,
    /// How long the claim lasts (e.g. 15s, 2m).
    #[arg(long, default_value = "15s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) ttl: Duration,
    /// JSON stored with the claim and shown by `show` and `list --json`.
    #[arg(long, value_parser = parse_json)]
    pub(crate) metadata: Option<serde_json::Value>,
    /// Print the lease as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lease extend`.
#[derive(Debug, Args)]
pub(crate) struct ExtendArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// The holder (inside `lease run`, $LEASE_HOLDER).
    #[arg(long, env = "LEASE_HOLDER", value_parser = parse_holder)]
    pub(crate) holder: String,
    /// How long from now the lease lasts at least (e.g. 15s, 2m).
    #[arg(long, default_value = "15s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) ttl: Duration,
    /// Print the lease as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lease revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// The holder giving the lease up (inside `lease run`, $LEASE_HOLDER).
    #[arg(long, env = "LEASE_HOLDER", value_parser = parse_holder)]
    pub(crate) holder: String,
}

/// `lease pin` and `lease unpin`.
#[derive(Debug, Args)]
pub(crate) struct PinArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// Who pins (or unpins) the lease.
    #[arg(long, value_parser = parse_entity)]
    pub(crate) entity: String,
}

/// `lease wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// Give up (exit 1) after this long.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Option<Duration>,
}

/// `lease show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    /// Print the lease as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lease list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only leases of this namespace.
    #[arg(long, short = 'n', value_parser = parse_namespace)]
    pub(crate) namespace: Option<String>,
    /// Only leases of this model.
    #[arg(long, short = 'm', value_parser = parse_model)]
    pub(crate) model: Option<String>,
    /// Print JSON (an array of leases) instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub(crate) json: bool,
    /// Redraw the table in place until interrupted.
    #[arg(long, short = 'w')]
    pub(crate) watch: bool,
    /// With --watch: how often to redraw.
    #[arg(long, default_value = "1s", requires = "watch", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) interval: Duration,
}

/// `lease check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lease demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many worker processes compete for the lease.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=9))]
    pub(crate) workers: u32,
    /// The lease's ttl: a killed leader is replaced about this long after its last renewal.
    /// From 100ms to 1m; default 2s (1s with --short).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) ttl: Option<Duration>,
    /// A quick run (one kill, shorter phases), as the tests and CI use.
    #[arg(long)]
    pub(crate) short: bool,
    /// Keep the database and the workers' logs in DIR (created if missing) instead of a
    /// temporary directory that is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// `lease __demo-worker`.
#[derive(Debug, Args)]
pub(crate) struct DemoWorkerArgs {
    /// The demo's database.
    #[arg(long)]
    pub(crate) db: PathBuf,
    /// The worker's number.
    #[arg(long)]
    pub(crate) id: u32,
    /// The lease's ttl.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) ttl: Duration,
    /// Where to log acquisitions and renewals.
    #[arg(long)]
    pub(crate) log: PathBuf,
    /// The pid of the demo that started this worker.
    #[arg(long)]
    pub(crate) parent: i32,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    let value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    // The store would refuse it too, but only after opening (or creating) the database.
    lease_core::validate_metadata(&value).map_err(|e| e.to_string())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
