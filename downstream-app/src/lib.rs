//! A small service that plays a user's application of the lease library: several copies run,
//! and only the leader may publish reports. Its leader-only behaviour is unit-tested with
//! `lease-testkit` alone (see `tests/` and the README): no real time passes and no server runs.
//!
//! - [`Reporter`]: on every [`Reporter::tick`] it claims (or renews) the `reporter` lease; the
//!   copy that holds it publishes a report to the [`Outbox`], stamped with its fencing
//!   generation; the others stand by. [`Reporter::run`] ticks on the injected clock until shut
//!   down, then steps down.
//! - [`Outbox`]: the protected resource: it refuses reports from a stale generation
//!   ([`lease_manager::Fence`]), so a copy that lost the lease without noticing cannot publish.
//! - [`Exporter`]: a long job under an auto-renewing [`Leaser`] lease, with metadata, that stops
//!   as soon as the lease is lost.
//!
//! The service only sees `lease-core`'s traits ([`Facades`], [`Leaser`], [`Clock`]), so
//! production wires it to `lease_manager::Manager` over a real store, and tests to the fakes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_core::{
    CancellationToken, Checker, Claimer, Clock, Error, Facades, Generation, Leaser, LeaserError,
    LeaserExt as _, PathKey, Reader, Request, Revoker,
};
use lease_manager::{Fence, StaleGeneration};
use serde::{Deserialize, Serialize};

/// The lease the copies contend for.
pub const LEASE: &str = "reporter";

/// Where reports go: admits a report only from the newest generation it has seen.
#[derive(Debug, Default)]
pub struct Outbox {
    fence: Fence,
    reports: Mutex<Vec<(Generation, String)>>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Publishes `report` for the holder of `generation`.
    ///
    /// # Errors
    ///
    /// [`StaleGeneration`] when a newer generation has already published.
    pub fn publish(&self, generation: Generation, report: String) -> Result<(), StaleGeneration> {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        self.fence.admit(generation)?;
        reports.push((generation, report));
        Ok(())
    }

    /// Every report published so far, with its generation.
    pub fn reports(&self) -> Vec<(Generation, String)> {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What one [`Reporter::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// This copy leads and published report number `n` under `generation`.
    Published {
        /// The fencing generation of this copy's term.
        generation: Generation,
        /// The report's sequence number (per copy).
        n: u64,
    },
    /// Another copy leads (`None` when it was not known at the time of asking).
    Standby {
        /// The leader's identity.
        leader: Option<String>,
    },
}

/// One copy of the reporting service.
pub struct Reporter {
    identity: String,
    claimer: Arc<dyn Claimer>,
    checker: Arc<dyn Checker>,
    revoker: Arc<dyn Revoker>,
    reader: Arc<dyn Reader>,
    clock: Arc<dyn Clock>,
    outbox: Arc<Outbox>,
    lease_duration: Duration,
    interval: Duration,
    published: Mutex<u64>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A copy called `identity`, contending for [`LEASE`] in `namespace`/`model` of `manager`,
    /// publishing to `outbox`. It ticks every `interval` (see [`Reporter::run`]) and claims
    /// the lease for `3 × interval` (at most `Duration::MAX`), so it survives two missed ticks.
    ///
    /// # Errors
    ///
    /// As [`Facades::claimer`]: the manager refuses the namespace or has stopped.
    pub fn new(
        manager: &dyn Facades,
        namespace: &str,
        model: &str,
        identity: impl Into<String>,
        clock: Arc<dyn Clock>,
        outbox: Arc<Outbox>,
        interval: Duration,
    ) -> Result<Reporter, Error> {
        Ok(Reporter {
            identity: identity.into(),
            claimer: manager.claimer(namespace, model)?,
            checker: manager.checker(namespace, model)?,
            revoker: manager.revoker(namespace, model)?,
            reader: manager.reader(namespace, model)?,
            clock,
            outbox,
            // Saturating: an interval over `Duration::MAX / 3` claims for `Duration::MAX`
            // (which the stores saturate to "never expires") rather than panicking.
            lease_duration: interval.saturating_mul(3),
            interval,
            published: Mutex::new(0),
        })
    }

    /// This copy's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Claims or renews the lease; publishes a report if this copy leads.
    ///
    /// # Errors
    ///
    /// Lease errors other than a denial (the store failed, the manager stopped), and a
    /// [`StaleGeneration`] refusal from the outbox, as a store error.
    pub async fn tick(&self) -> Result<Tick, Error> {
        let request = Request::new(&*self.identity, self.lease_duration);
        match self.claimer.claim(LEASE, request).await {
            Ok(info) => {
                // Check right before the side effect, as a careful leader does.
                let generation = self.checker.token(LEASE, &self.identity).check().await?;
                debug_assert_eq!(generation, info.generation);
                let n = {
                    let mut published = self
                        .published
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    *published += 1;
                    *published
                };
                self.outbox
                    .publish(generation, format!("report {n} from {}", self.identity))
                    .map_err(|e| Error::store("publishing a report", e))?;
                Ok(Tick::Published { generation, n })
            }
            Err(e) if e.is_claim_denied() => {
                let leader = self.reader.leases().await?.remove(LEASE);
                Ok(Tick::Standby { leader })
            }
            Err(e) => Err(e),
        }
    }

    /// Ticks every `interval` on the clock until `shutdown` fires, then steps down (revokes
    /// the lease if this copy holds it). Returns the ticks, in order.
    ///
    /// # Errors
    ///
    /// As [`Reporter::tick`]: the first error ends the loop.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<Vec<Tick>, Error> {
        let mut ticks = Vec::new();
        loop {
            let next = self.clock.now().saturating_add(self.interval);
            ticks.push(self.tick().await?);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.clock.sleep_until(next) => {}
            }
        }
        match self.revoker.revoke(LEASE, &self.identity).await {
            Ok(()) => Ok(ticks),
            Err(e) if e.is_not_held() || e.is_invalid() => Ok(ticks),
            Err(e) => Err(e),
        }
    }
}

/// The metadata an [`Exporter`] writes into its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    /// The dataset being exported.
    pub dataset: String,
    /// Who exports it.
    pub exporter: String,
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportOutcome {
    /// Every chunk was exported; the lease was released.
    Done {
        /// Chunks exported.
        chunks: u32,
    },
    /// The lease was lost after `chunks` chunks; the export stopped there.
    Lost {
        /// Chunks exported before the loss.
        chunks: u32,
    },
    /// Another exporter holds the dataset's lease.
    Busy,
}

/// Exports datasets in chunks, each dataset under its own auto-renewing lease.
pub struct Exporter {
    leaser: Arc<dyn Leaser>,
    identity: String,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter called `identity` over `leaser`.
    pub fn new(leaser: Arc<dyn Leaser>, identity: impl Into<String>) -> Exporter {
        Exporter {
            leaser,
            identity: identity.into(),
        }
    }

    /// The lease key of `dataset`.
    ///
    /// # Errors
    ///
    /// [`LeaserError`] for a dataset name that makes no key (empty).
    pub fn key(dataset: &str) -> Result<PathKey, LeaserError> {
        Ok(PathKey::module("exporter", [dataset]).map_err(Error::from)?)
    }

    /// Exports `chunks` chunks of `dataset`, calling `export_chunk` for each while the lease is
    /// held; stops as soon as the lease is lost.
    ///
    /// # Errors
    ///
    /// [`LeaserError`] when acquiring or releasing the lease fails (other than a conflict).
    pub async fn export<F, Fut>(
        &self,
        dataset: &str,
        chunks: u32,
        mut export_chunk: F,
    ) -> Result<ExportOutcome, LeaserError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        let key = Exporter::key(dataset)?;
        let job = ExportJob {
            dataset: dataset.to_owned(),
            exporter: self.identity.clone(),
        };
        let (guard, lost) = match self
            .leaser
            .acquire_lease_with(&key, Duration::from_secs(30), &job)
            .await
        {
            Ok(acquired) => acquired,
            Err(LeaserError::Conflict { .. }) => return Ok(ExportOutcome::Busy),
            Err(e) => return Err(e),
        };
        for chunk in 0..chunks {
            tokio::select! {
                biased;
                () = lost.cancelled() => return Ok(ExportOutcome::Lost { chunks: chunk }),
                () = export_chunk(chunk) => {}
            }
        }
        guard.release().await?;
        Ok(ExportOutcome::Done { chunks })
    }
}

// The README's Rust example is compiled and run as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// A once-per-fleet job in a few lines, with the `lease` facade: wait to lead, publish one
/// digest under the term's fencing generation, release. Production builds `elector` with
/// `lease::Election::sqlite(..)` or `lease::Election::kubernetes(..)`; tests with
/// `lease::Backend::custom` over the testkit's in-memory store and fake clock.
///
/// # Errors
///
/// [`lease::Error`] when leading failed or the lease was lost while publishing; a stale
/// generation refused by the outbox comes back as the inner `Err`.
pub async fn publish_digest(
    elector: &lease::RunningElection,
    outbox: Arc<Outbox>,
    digest: String,
) -> Result<Result<Generation, StaleGeneration>, lease::Error> {
    elector
        .run(move |held| async move {
            let generation = held.generation();
            outbox.publish(generation, digest).map(|()| generation)
        })
        .await
}
