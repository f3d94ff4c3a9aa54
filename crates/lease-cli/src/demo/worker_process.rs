//! `lease __demo-worker`: one worker of `lease demo`, a process that claims the demo's lease,
//! renews it every third of the ttl while leading, waits for its expiry otherwise, and logs each
//! guaranteed window for the demo's check.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::Duration;

use lease_core::{Facades as _, Generation, Request};
use lease_store_sqlite::SqliteStore;
use rustix::process::Signal;

use super::workers::holder_name;
use super::{LEASE, MODEL, NAMESPACE, io_error};
use crate::backend;
use crate::cli::DemoWorkerArgs;
use crate::error::{CliError, EXIT_OK, EXIT_STORE, chain};

/// `lease __demo-worker`.
pub(crate) async fn worker(args: DemoWorkerArgs) -> Result<u8, CliError> {
    // Die with the demo, whatever kills it.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if ppid != Some(args.parent) {
        return Ok(EXIT_OK);
    }
    let clock = backend::clock();
    let store = SqliteStore::builder(&args.db).clock(clock.clone()).open()?;
    let manager = backend::start_manager(Box::new(store), Some(Duration::from_millis(20)))?;
    let claimer = manager
        .claimer(NAMESPACE, MODEL)
        .map_err(|e| CliError::lease("", &e))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| io_error("opening", &args.log, &e))?;
    let holder = holder_name(args.id);
    let cancel = lease_core::CancellationToken::new();
    let mut leading: Option<Generation> = None;
    let mut logged = BTreeMap::new();
    loop {
        let t0 = clock.now();
        match claimer
            .claim(LEASE, Request::new(holder.clone(), args.ttl))
            .await
        {
            Ok(info) => {
                let t1 = clock.now();
                let end = t0.saturating_add(args.ttl);
                if t1 < end && info.holder == holder {
                    let kind = if leading == Some(info.generation) {
                        "renew"
                    } else {
                        "acquire"
                    };
                    // One write per line, so a kill never leaves half a line behind.
                    let line = format!(
                        "{kind} {} {} {}\n",
                        info.generation,
                        t1.as_nanos(),
                        end.as_nanos()
                    );
                    log.write_all(line.as_bytes())
                        .map_err(|e| io_error("writing", &args.log, &e))?;
                    *logged.entry(kind).or_insert(0u64) += 1;
                    leading = Some(info.generation);
                } else {
                    leading = None;
                }
                clock.sleep_until(t0.saturating_add(args.ttl / 3)).await;
            }
            Err(e) if e.is_claim_denied() => {
                leading = None;
                if let Err(e) = claimer.wait_until_expired(LEASE, &cancel).await {
                    eprintln!("worker {}: waiting: {}", args.id, chain(&e));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) => {
                eprintln!("worker {}: claiming: {}", args.id, chain(&e));
                if e.is_aborted() {
                    return Ok(EXIT_STORE);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
