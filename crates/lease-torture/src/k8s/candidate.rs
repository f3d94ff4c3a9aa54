//! One leader-election candidate process of the scenario, over the Kubernetes store or (with
//! [`Backend::Postgres`]) over `lease-store-postgres`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, Store, SystemClock};
use lease_manager::{Callbacks, ElectionConfig, LeaderElector, Manager, ManagerConfig};
use lease_store_k8s::{LeaseObjectStore, StoreOptions};

use super::{Backend, MODEL, NAMESPACE, Timing};
use crate::event::{Event, EventLog};
use crate::now;
use crate::proc::die_with_parent;

/// How often a leader looks at its term record (to learn of renewals) and its stop conditions.
const POLL: Duration = Duration::from_millis(25);
/// Bound on a candidate's terms, besides its deadline.
const MAX_TERMS: u32 = 10_000;

/// What a candidate does.
#[derive(Debug, Clone)]
pub struct CandidateArgs {
    /// Its identity (unique per process).
    pub identity: String,
    /// The lease contended for.
    pub lease: String,
    /// The Kubernetes namespace of the Lease objects (with Postgres: the schema of the store's
    /// tables).
    pub namespace: String,
    /// The store.
    pub backend: Backend,
    /// The event log to append to.
    pub log: PathBuf,
    /// Start contending at this instant (ns on `CLOCK_BOOTTIME`), after setting everything up.
    pub start_at: Option<u64>,
    /// Stop at this instant at the latest.
    pub until: u64,
    /// Stop as soon as this file exists.
    pub stop_file: PathBuf,
    /// Timing.
    pub timing: Timing,
}

/// Runs one candidate until its deadline or its stop file.
///
/// # Errors
///
/// When the client, manager, elector or log cannot be set up.
pub fn candidate(args: CandidateArgs) -> Result<(), String> {
    die_with_parent();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(candidate_async(args))
}

fn should_stop(args: &CandidateArgs) -> bool {
    now() >= args.until || args.stop_file.exists()
}

async fn candidate_async(args: CandidateArgs) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    match args.backend {
        Backend::Kubernetes => {
            let config = kube::Config::infer()
                .await
                .map_err(|e| format!("cannot load the kubeconfig: {e}"))?;
            let client = kube::Client::try_from(config)
                .map_err(|e| format!("cannot build a client: {e}"))?;
            let store = LeaseObjectStore::with_options(
                client,
                args.namespace.clone(),
                Arc::clone(&clock),
                StoreOptions::default().request_timeout(args.timing.request_timeout),
            );
            elect(store, clock, args).await
        }
        Backend::Postgres => {
            let Some(store) = postgres_store(&args, &clock).await? else {
                return Ok(());
            };
            elect(store, clock, args).await
        }
    }
}

/// The environment variable that gives Postgres candidates the server's URL (not an argument,
/// so the password never shows in a process listing or a log of the command line).
pub const POSTGRES_URL_ENV: &str = "LEASE_TORTURE_POSTGRES_URL";

/// A store on the server of [`POSTGRES_URL_ENV`], connecting again until it answers (a
/// candidate may start while the server restarts); `None` when told to stop first.
async fn postgres_store(
    args: &CandidateArgs,
    clock: &Arc<dyn Clock>,
) -> Result<Option<lease_store_postgres::PostgresStore>, String> {
    let url =
        std::env::var(POSTGRES_URL_ENV).map_err(|_| format!("{POSTGRES_URL_ENV} is not set"))?;
    let gave_up_at = now() + 60_000_000_000;
    loop {
        let connected = lease_store_postgres::PostgresStore::builder(url.clone())
            .schema(args.namespace.clone())
            .application_name(format!("torture-{}", args.identity))
            .clock(Arc::clone(clock))
            .operation_timeout(args.timing.request_timeout)
            .connect()
            .await;
        match connected {
            Ok(store) => return Ok(Some(store)),
            // A server that is down refuses connections like one that is not there: keep
            // trying for a while. (The error never shows the password: the store redacts it.)
            Err(e) if now() >= gave_up_at => {
                return Err(format!("cannot connect to Postgres: {e}"));
            }
            Err(_) if should_stop(args) => return Ok(None),
            Err(_) => tokio::time::sleep(args.timing.retry_period).await,
        }
    }
}

/// Contends for the lease over `store` until told to stop, logging every term.
async fn elect(
    store: impl Store + 'static,
    clock: Arc<dyn Clock>,
    args: CandidateArgs,
) -> Result<(), String> {
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .map_err(|e| format!("cannot start the manager: {e}"))?;
    let t = args.timing;
    let elector = LeaderElector::new(
        &manager,
        clock,
        ElectionConfig::new(NAMESPACE, MODEL, &*args.lease, &*args.identity).with_timing(
            t.lease_duration,
            t.renew_deadline,
            t.retry_period,
        ),
        Callbacks::new(),
    )
    .map_err(|e| format!("cannot create the elector: {e}"))?;
    let mut log = EventLog::open(&args.log)
        .map_err(|e| format!("cannot open {}: {e}", args.log.display()))?;
    let mut write = |event: Event| {
        if let Err(e) = log.write(&event) {
            eprintln!("{}: cannot write the log: {e}", args.identity);
            std::process::exit(3);
        }
    };
    if let Some(at) = args.start_at {
        let wait = at.saturating_sub(now());
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
    let mut terms = 0;
    while !should_stop(&args) && terms < MAX_TERMS {
        let lock = elector.lock();
        tokio::pin!(lock);
        let guard = loop {
            tokio::select! {
                r = &mut lock => break Some(r),
                () = tokio::time::sleep(POLL) => {
                    if should_stop(&args) {
                        break None;
                    }
                }
            }
        };
        let guard = match guard {
            None => break,
            Some(Ok(guard)) => guard,
            Some(Err(e)) => {
                eprintln!("{}: lock failed: {e}", args.identity);
                tokio::time::sleep(t.retry_period).await;
                continue;
            }
        };
        terms += 1;
        let at = now();
        let generation = guard.generation().get();
        let record = elector.term_record();
        let claim_start = record.as_ref().map_or(at, |r| r.acquire_time.as_nanos());
        let mut last_renew = record
            .as_ref()
            .map_or(claim_start, |r| r.renew_time.as_nanos());
        let mut renewals = 0;
        write(Event::Lead {
            lease: args.lease.clone(),
            holder: args.identity.clone(),
            generation,
            claim_start,
            at,
        });
        loop {
            tokio::select! {
                biased;
                () = guard.lost().cancelled() => {
                    write(Event::Lost {
                        lease: args.lease.clone(),
                        holder: args.identity.clone(),
                        generation,
                        at: now(),
                        last_renew,
                        renewals,
                    });
                    break;
                }
                () = tokio::time::sleep(POLL) => {
                    if let Some(r) = elector.term_record()
                        && r.renew_time.as_nanos() > last_renew
                    {
                        last_renew = r.renew_time.as_nanos();
                        renewals += 1;
                    }
                    if should_stop(&args) {
                        // Stop acting first, then give the lease up.
                        write(Event::Stop {
                            lease: args.lease.clone(),
                            holder: args.identity.clone(),
                            generation,
                            at: now(),
                            last_renew,
                            renewals,
                        });
                        let _ = tokio::time::timeout(Duration::from_secs(3), guard.release()).await;
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}
