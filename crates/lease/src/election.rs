//! Leader election in a few lines: [`Election`] starts a [`RunningElection`];
//! [`RunningElection::lead`] waits for a [`Term`]; [`RunningElection::run`] runs a task only while
//! leading.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{CancellationToken, Clock, Generation, Key, Timestamp};
use lease_manager::{
    Callbacks, ElectionConfig, ElectionError, LeaderElector, Leadership, LeadershipGuard, Manager,
};
use tokio::sync::watch;

use crate::{Backend, Error};

/// The namespace and model every builder uses unless told otherwise: the `lease` command's
/// defaults, so `lease show --lease NAME` shows what a program holds.
pub(crate) const DEFAULT_SCOPE: &str = "default";

/// A leader election to start: which lease, who this candidate is, the timings.
///
/// Defaults are client-go's: a 15 s lease, renewed every 2 s, given up 10 s after the last
/// successful renewal started (so before anyone else can take it). On Kubernetes the Lease
/// object is named after the lease, lives in the client's default namespace, and leadership
/// changes are recorded as Events. The identity defaults to the pod name (`POD_NAME`, from the
/// downward API), else `<host>:<pid>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lease::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("leases.db");
/// let elector = lease::Election::sqlite("nightly-backup").path(&path).start()?;
/// let term = elector.lead().await?;
/// println!("leading with fencing generation {}", term.generation());
/// // ... work until `term.lost()` fires, then:
/// term.release().await;
/// # elector.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "an election does nothing until started"]
pub struct Election {
    backend: Backend,
    namespace: String,
    model: String,
    lease: String,
    identity: Option<String>,
    timing: Option<(Duration, Duration, Duration)>,
    release_on_cancel: bool,
    #[cfg(feature = "sqlite")]
    path: Option<std::path::PathBuf>,
}

impl Election {
    /// An election for `lease` on `backend`.
    pub fn new(backend: Backend, lease: impl Into<String>) -> Election {
        Election {
            backend,
            namespace: DEFAULT_SCOPE.to_owned(),
            model: DEFAULT_SCOPE.to_owned(),
            lease: lease.into(),
            identity: None,
            timing: None,
            release_on_cancel: false,
            #[cfg(feature = "sqlite")]
            path: None,
        }
    }

    /// An election for `lease` among the processes of this host, in the per-user SQLite
    /// database (see [`Backend::sqlite`]; [`Election::path`] picks another file).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(lease: impl Into<String>) -> Election {
        Election::new(Backend::sqlite(), lease)
    }

    /// An election for `lease` on Kubernetes: a Lease object of that name in the client's
    /// default namespace, shared with client-go candidates of the same name.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(client: kube::Client, lease: impl Into<String>) -> Election {
        Election::new(Backend::kubernetes(client), lease)
    }

    /// The SQLite file to use instead of the per-user default. Only for an SQLite election:
    /// on another store's, [`Election::start`] fails naming the setting.
    #[cfg(feature = "sqlite")]
    pub fn path(mut self, path: impl Into<std::path::PathBuf>) -> Election {
        self.path = Some(path.into());
        self
    }

    /// This candidate's identity, the lease holder while it leads. It must be unique among the
    /// candidates: two processes with one identity would each take the other's claim for its
    /// own renewal.
    pub fn identity(mut self, identity: impl Into<String>) -> Election {
        self.identity = Some(identity.into());
        self
    }

    /// The namespace and model of the lease (its scope: an application, a tenant), both
    /// `default` unless set.
    pub fn scope(mut self, namespace: impl Into<String>, model: impl Into<String>) -> Election {
        self.namespace = namespace.into();
        self.model = model.into();
        self
    }

    /// The three timings: how long a claim or renewal is good for, how long the leader keeps
    /// retrying a failing renewal before it gives up (shorter than the lease), and how often it
    /// renews. client-go's defaults: 15 s, 10 s, 2 s.
    pub fn timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Election {
        self.timing = Some((lease_duration, renew_deadline, retry_period));
        self
    }

    /// Whether dropping a [`Term`] releases the lease at once (a faster handover) instead of
    /// letting it expire. Off by default, as in client-go: only turn it on when all work under
    /// the lease has stopped before the term is dropped.
    pub fn release_on_drop(mut self, release: bool) -> Election {
        self.release_on_cancel = release;
        self
    }

    /// Opens the store, starts the manager and the elector. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming a bad setting (a timing that cannot work, a lease name the
    /// store cannot use); [`Error::NoIdentity`] when no identity was given and none can be
    /// derived; [`Error::NoDefaultPath`], [`Error::Store`] when the store cannot be opened;
    /// [`Error::Manager`] outside a tokio runtime.
    #[cfg_attr(not(feature = "sqlite"), allow(unused_mut))]
    pub fn start(mut self) -> Result<RunningElection, Error> {
        #[cfg(feature = "sqlite")]
        if let Some(path) = self.path.take() {
            self.backend = self.backend.with_sqlite_path(path)?;
        }
        let identity = match self.identity {
            Some(id) => id,
            None => default_identity(&self.backend)?,
        };
        let mut config = ElectionConfig::new(
            self.namespace.as_str(),
            self.model.as_str(),
            self.lease.as_str(),
            identity.as_str(),
        )
        .with_release_on_cancel(self.release_on_cancel);
        if let Some((lease_duration, renew_deadline, retry_period)) = self.timing {
            config = config.with_timing(lease_duration, renew_deadline, retry_period);
        }
        config.validate().map_err(|e| setting_error(&e))?;
        let key = Key::new(&*config.namespace, &*config.model, &*config.lease);
        let started = self.backend.start(&key, &identity)?;
        #[cfg_attr(not(feature = "kubernetes"), allow(unused_mut))]
        let mut callbacks = Callbacks::new();
        #[cfg(feature = "kubernetes")]
        if let Some(events) = &started.events {
            callbacks = callbacks
                .on_started_leading(events.on_started_leading())
                .on_stopped_leading(events.on_stopped_leading());
        }
        let elector = LeaderElector::new(
            &started.manager,
            Arc::clone(&started.clock),
            config,
            callbacks,
        )?;
        Ok(RunningElection {
            manager: started.manager,
            clock: started.clock,
            elector,
        })
    }
}

/// The default identity for a candidate on `backend`: unique per process on one host; the pod
/// name on Kubernetes.
fn default_identity(backend: &Backend) -> Result<String, Error> {
    if backend.is_one_host() {
        crate::identity::for_one_host()
    } else {
        crate::identity::for_many_hosts()
    }
}

/// A configuration error of the elector as a builder error naming the setting.
fn setting_error(e: &ElectionError) -> Error {
    let setting = match e {
        ElectionError::Config { field, .. } => match *field {
            "lease_duration" | "renew_deadline" | "retry_period" => "timing",
            "identity" => "identity",
            "namespace" | "model" => "scope",
            _ => "lease",
        },
        _ => "lease",
    };
    Error::setting(setting, e.to_string())
}

/// A running candidate: its own manager over the store, and a [`LeaderElector`].
///
/// Cheap to share behind an `Arc`; [`RunningElection::lead`] and [`RunningElection::run`] may be
/// called again after a term ends.
#[derive(Debug)]
pub struct RunningElection {
    manager: Manager,
    clock: Arc<dyn Clock>,
    elector: LeaderElector,
}

impl RunningElection {
    /// Waits until this candidate leads, and returns the term.
    ///
    /// # Errors
    ///
    /// As [`LeaderElector::lock`]: [`ElectionError::AlreadyLeading`] while a term of this
    /// elector is on; an aborted lease error once the elector was shut down.
    pub async fn lead(&self) -> Result<Term, Error> {
        let guard = self.elector.lock().await?;
        Ok(Term {
            guard,
            health: self.health_check(),
        })
    }

    /// Waits until this candidate leads, then runs `work` while the term lasts, and releases
    /// the lease when it returns (the library twin of `lease run`).
    ///
    /// `work` gets a [`Holding`]: the fencing generation to pass to protected resources, and a
    /// token that is cancelled when the term ends (renewals failed until the renew deadline, or
    /// the lease was revoked), which is before the lease can expire. If `work` has not
    /// returned by then, its task is aborted shortly before the end of the window this process
    /// can guarantee (the last successful renewal's start plus the lease duration, less a
    /// twentieth of the lease as a margin), so it never runs while another candidate leads.
    /// Aborting stops a task at its next `.await`: blocking code inside `work` must watch the
    /// token itself.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the term ended before `work` returned; [`Error::Panicked`] when
    /// `work` panicked (the lease is released); as [`RunningElection::lead`] when leading failed.
    pub async fn run<F, Fut, T>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(Holding) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let term = self.lead().await?;
        let config = self.elector.config();
        let lease = config.lease.clone();
        let lease_duration = config.lease_duration;
        let retry_period = config.retry_period;
        let generation = term.generation();
        let lost = term.lost().clone();
        let mut task = tokio::spawn(work(Holding {
            generation,
            token: lost.child_token(),
        }));
        // The start of the last renewal seen; sampled at most a retry period late, which only
        // makes the window this process counts on shorter than the real one.
        let mut renewed = self.last_renewal().unwrap_or_else(|| self.clock.now());
        loop {
            tokio::select! {
                biased;
                joined = &mut task => {
                    term.release().await;
                    return joined.map_err(|_| Error::Panicked { lease });
                }
                () = lost.cancelled() => break,
                () = self.clock.sleep_until(self.clock.now().saturating_add(retry_period / 2)) => {
                    if let Some(t) = self.last_renewal() {
                        renewed = renewed.max(t);
                    }
                }
            }
        }
        let margin = lease_duration / 20;
        let abort_at = renewed.saturating_add(lease_duration.saturating_sub(margin));
        let grace = abort_at.saturating_duration_since(self.clock.now());
        let aborted = tokio::select! {
            biased;
            _ = &mut task => false,
            () = self.clock.sleep_until(abort_at) => {
                task.abort();
                let _ = task.await;
                true
            }
        };
        drop(term);
        Err(Error::Lost {
            lease,
            generation,
            grace,
            aborted,
        })
    }

    /// The start of the current term's last successful renewal, while leading.
    fn last_renewal(&self) -> Option<Timestamp> {
        self.elector.term_record().map(|r| r.renew_time)
    }

    /// A health check for an HTTP probe (client-go's `HealthzAdaptor`), tolerating renewals
    /// that are up to 20 s overdue.
    pub fn health_check(&self) -> HealthCheck {
        HealthCheck {
            elector: self.elector.clone(),
            tolerance: Duration::from_secs(20),
        }
    }

    /// Whether this candidate leads right now.
    pub fn is_leader(&self) -> bool {
        self.elector.is_leader()
    }

    /// A receiver of the current [`Leadership`] (leading with a generation, following whom, or
    /// standing by), updated on every change.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.elector.leadership()
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.elector.config().identity
    }

    /// The elector underneath, for everything this type does not wrap (callbacks are set at
    /// build time; `unlock_with_retry`, the term record, the configuration).
    pub fn elector(&self) -> &LeaderElector {
        &self.elector
    }

    /// The manager underneath: other leases of the same store go through it.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Gives leadership up if leading (the lease is revoked, so a follower takes over at once)
    /// and stops the manager.
    pub async fn shutdown(self) {
        self.elector.unlock().await;
        self.manager.stop().await;
    }
}

/// One term of leadership: work while [`Term::lost`] has not fired, and pass
/// [`Term::generation`] to protected resources.
///
/// Dropping it ends the term (with `release_on_drop`, it also releases the lease).
#[derive(Debug)]
#[must_use = "dropping the term ends it"]
pub struct Term {
    guard: LeadershipGuard,
    health: HealthCheck,
}

impl Term {
    /// The fencing generation of this term: strictly greater than every earlier term's.
    pub fn generation(&self) -> Generation {
        self.guard.generation()
    }

    /// Fires when the term ends, before the lease can expire. Stop working when it does.
    pub fn lost(&self) -> &CancellationToken {
        self.guard.lost()
    }

    /// Whether the term is still on.
    pub fn is_leading(&self) -> bool {
        self.guard.is_leading()
    }

    /// A health check for an HTTP probe: see [`HealthCheck`].
    pub fn health_check(&self) -> HealthCheck {
        self.health.clone()
    }

    /// Ends the term and revokes the lease, so a follower takes over at once. Returns whether
    /// the lease was revoked (false when the term had already ended or the revoke failed; the
    /// lease then expires on its own).
    pub async fn release(self) -> bool {
        self.guard.release().await
    }

    /// The guard underneath.
    pub fn into_guard(self) -> LeadershipGuard {
        self.guard
    }
}

/// What [`RunningElection::run`] gives its task.
#[derive(Debug, Clone)]
pub struct Holding {
    generation: Generation,
    token: CancellationToken,
}

impl Holding {
    /// The fencing generation of the term the task runs in.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Cancelled when the term ends: stop at once, the task is aborted soon after.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// A liveness and readiness check for HTTP probes, cheap to clone into a handler.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    elector: LeaderElector,
    tolerance: Duration,
}

impl HealthCheck {
    /// The same check tolerating renewals up to `tolerance` overdue.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> HealthCheck {
        self.tolerance = tolerance;
        self
    }

    /// Liveness (client-go's `Check`): fine when not leading; when leading, fails when the
    /// last successful renewal started more than the lease duration plus the tolerance ago,
    /// a sign the process is stuck and should be restarted.
    ///
    /// # Errors
    ///
    /// [`ElectionError::Unhealthy`] in that case.
    pub fn check(&self) -> Result<(), ElectionError> {
        self.elector.check(self.tolerance)
    }

    /// Readiness of leader-only work: whether this candidate leads right now.
    pub fn is_leading(&self) -> bool {
        self.elector.is_leader()
    }
}
