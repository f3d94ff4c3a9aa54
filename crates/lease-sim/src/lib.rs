//! Deterministic simulation of the lease library (issue 16): simulated processes, each with its
//! own [`Manager`](lease_manager::Manager), its own drifting clock and its clients
//! (`LeaderElector` candidates, `ManagerLeaser` holders, `ResourceLocks` transactions, raw
//! claimers), over one in-memory store behind the simulator's fault layer; faults (store
//! timeouts before and after taking effect, long-tailed latency, `Invalid` answers, split
//! batches, change notices late or lost, partitions, process pauses, crashes and restarts, and
//! an operator revoking held leases behind their holders' backs) all drawn from one seed; in
//! swarm mode the seed also draws the fault rates, the processes, the leases and the client
//! kinds ([`SimConfig::for_seed`]). lease-torture's checker then proves from the clients' own
//! windows that no two holders of a lease overlapped and that fencing generations increased,
//! and the simulator's own checks that the store held each window's lease under its generation
//! and that a term whose lease was revoked behind its back ended within its renew deadline.
//!
//! - [`sim`]: the driver ([`run_seed`]); why a seed replays bit for bit.
//! - [`clock`]: true time and each process's drifting, pausable clock.
//! - [`store`]: the fault layer.
//! - [`config`]: what a run simulates, and the client kinds it draws from.
//! - [`client`]: the clients and the windows they log.
//! - [`lease_run`]: a simulated `lease run`, its shim and its command.
//! - [`check`]: the verdict.
//! - [`runner`]: many seeds on several threads, totals, and shrinking a failing seed.
//!
//! `cargo xtask sim --seeds N` runs the `lease-sim` binary and writes the totals into
//! RELIABILITY.md; `cargo xtask ci` runs 10,000 seeds.

#![forbid(unsafe_code)]

pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod lease_run;
pub mod runner;
pub mod sim;
pub mod store;
pub mod world;

pub use check::Verdict;
pub use config::SimConfig;
pub use sim::{SeedRun, run_seed};
