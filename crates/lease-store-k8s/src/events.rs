//! [`EventRecorder`]: leadership changes recorded as Kubernetes Events on the lock object, as
//! client-go's `LeaseLock.RecordEvent` does: reason `LeaderElection`, message
//! `"<identity> became leader"` or `"<identity> stopped leading"`, involved object the Lease.
//!
//! The recorder plugs into lease-manager's `LeaderElector` through its `Callbacks` (this crate
//! does not depend on lease-manager; the callbacks take plain closures):
//!
//! ```no_run
//! use std::sync::Arc;
//! use lease_core::{Clock, DefaultSecretary, Key, SystemClock};
//! use lease_manager::{Callbacks, ElectionConfig, LeaderElector, Manager, ManagerConfig};
//! use lease_store_k8s::{EventRecorder, LeaseObjectStore, StoreOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
//! let config = ElectionConfig::new("election", "prod", "controller", "pod-a");
//! // Share the Lease `my-controller-lock` with client-go candidates.
//! let key = Key::new(&*config.namespace, &*config.model, &*config.lease);
//! let options = StoreOptions::default().object_for(key, "my-controller-lock");
//! let store = LeaseObjectStore::with_options(client.clone(), "my-app", clock.clone(), options);
//! let manager = Manager::start(
//!     ManagerConfig::new(store, clock.clone()).with_default_secretary(Arc::new(DefaultSecretary)),
//! )?;
//!
//! let events = EventRecorder::new(client, "my-app", "my-controller-lock", "pod-a");
//! let callbacks = Callbacks::new()
//!     .on_started_leading(events.on_started_leading())
//!     .on_stopped_leading(events.on_stopped_leading());
//! let elector = LeaderElector::new(&manager, clock, config, callbacks)?;
//! let guard = elector.lock().await?; // records "pod-a became leader"
//! # drop(guard);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::PostParams;
use lease_core::Generation;
use tokio::sync::mpsc;

use crate::error::K8sStoreError;
use crate::record::wall_now;

/// The reason of every leader-election event (client-go's).
pub const EVENT_REASON: &str = "LeaderElection";
/// The message suffix when a candidate starts leading (client-go's).
pub const BECAME_LEADER: &str = "became leader";
/// The message suffix when a candidate stops leading (client-go's).
pub const STOPPED_LEADING: &str = "stopped leading";

/// Records leader-election events on one lock object, for one candidate identity.
///
/// Each event is a plain `core/v1` Event created in the object's namespace (it needs `create`
/// on `events`; see the crate's Role): `reason` [`EVENT_REASON`], `type` `Normal`, `message`
/// `"<identity> <what>"`, `involvedObject` the lock object, `source.component` and
/// `reportingComponent` the component (default `lease-rs`), `reportingInstance` the identity.
/// Recording can be switched off ([`EventRecorder::enabled`]); a disabled recorder makes no
/// request.
///
/// [`EventRecorder::on_started_leading`] and [`EventRecorder::on_stopped_leading`] give
/// closures for lease-manager's `Callbacks`; they return at once and record in a background
/// task, one event after the other in the order of the calls. A failure to record is logged
/// (`tracing::warn!`) and never affects leadership.
#[derive(Clone)]
pub struct EventRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api<Event>,
    namespace: String,
    involved: ObjectReference,
    identity: String,
    component: String,
    enabled: bool,
    queue: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecorder")
            .field("namespace", &self.inner.namespace)
            .field("involved_object", &self.inner.involved)
            .field("identity", &self.inner.identity)
            .field("component", &self.inner.component)
            .field("enabled", &self.inner.enabled)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// A recorder of `identity`'s leadership changes on the Lease `lease_name` in Kubernetes
    /// namespace `namespace`. Enabled, with component `lease-rs`.
    ///
    /// ```
    /// use lease_store_k8s::EventRecorder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let (service, _) = tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    /// # let client = kube::Client::new(service, "default");
    /// let events = EventRecorder::new(client, "my-app", "my-controller-lock", "pod-a")
    ///     .with_component("my-controller")
    ///     .enabled(false); // e.g. from a command-line switch
    /// assert!(!events.is_enabled());
    /// // Disabled: no request, no event.
    /// assert!(events.record(lease_store_k8s::BECAME_LEADER).await.unwrap().is_none());
    /// # }
    /// ```
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> EventRecorder {
        let namespace = namespace.into();
        let involved = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".to_owned()),
            kind: Some("Lease".to_owned()),
            name: Some(lease_name.into()),
            namespace: Some(namespace.clone()),
            ..ObjectReference::default()
        };
        EventRecorder {
            inner: Arc::new(Inner {
                api: Api::namespaced(client, &namespace),
                namespace,
                involved,
                identity: identity.into(),
                component: "lease-rs".to_owned(),
                enabled: true,
                queue: Mutex::new(None),
            }),
        }
    }

    fn update(self, f: impl FnOnce(&mut Inner)) -> EventRecorder {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            api: shared.api.clone(),
            namespace: shared.namespace.clone(),
            involved: shared.involved.clone(),
            identity: shared.identity.clone(),
            component: shared.component.clone(),
            enabled: shared.enabled,
            queue: Mutex::new(None),
        });
        f(&mut inner);
        EventRecorder {
            inner: Arc::new(inner),
        }
    }

    /// Switches recording on or off.
    #[must_use]
    pub fn enabled(self, enabled: bool) -> EventRecorder {
        self.update(|i| i.enabled = enabled)
    }

    /// The component named as the events' source (default `lease-rs`); a valid Kubernetes
    /// qualified name, such as `my-controller` or `example.com/my-controller`.
    #[must_use]
    pub fn with_component(self, component: impl Into<String>) -> EventRecorder {
        let component = component.into();
        self.update(|i| i.component = component)
    }

    /// The object the events are about, instead of the Lease named at construction (for
    /// example a ConfigMap lock: kind `ConfigMap`, API version `v1`). Its namespace should be
    /// the recorder's.
    #[must_use]
    pub fn with_involved_object(self, involved: ObjectReference) -> EventRecorder {
        self.update(|i| i.involved = involved)
    }

    /// Whether events are recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The identity named in the messages.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The object the events are about.
    pub fn involved_object(&self) -> &ObjectReference {
        &self.inner.involved
    }

    /// Records the event `"<identity> <what>"` now (client-go's `RecordEvent(what)`), and
    /// returns it as created; `None` when recording is disabled.
    ///
    /// # Errors
    ///
    /// [`K8sStoreError`] when the API server refuses the create (for example
    /// [`K8sStoreError::Permission`] without `create` on `events`) or cannot be reached.
    pub async fn record(&self, what: &str) -> Result<Option<Event>, K8sStoreError> {
        if !self.inner.enabled {
            return Ok(None);
        }
        self.inner.create(what).await.map(Some)
    }

    /// Records `"<identity> <what>"` in a background task (in call order), logging failures.
    /// Does nothing when disabled, or outside a tokio runtime (logged).
    pub fn record_in_background(&self, what: &str) {
        if !self.inner.enabled {
            return;
        }
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = &*queue
            && tx.send(what.to_owned()).is_ok()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(what, "no tokio runtime: leader-election event not recorded");
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let _ = tx.send(what.to_owned());
        *queue = Some(tx);
        // The task holds only a weak reference, so it ends when the last recorder is dropped
        // and the queue is drained.
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            while let Some(what) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.create(&what).await {
                    tracing::warn!(error = %e, identity = %inner.identity, what, "recording a leader-election event failed");
                }
            }
        });
    }

    /// A closure for lease-manager's `Callbacks::on_started_leading`: records
    /// `"<identity> became leader"` in the background.
    pub fn on_started_leading(&self) -> impl Fn(Generation) + Send + Sync + 'static {
        let recorder = self.clone();
        move |_generation| recorder.record_in_background(BECAME_LEADER)
    }

    /// A closure for lease-manager's `Callbacks::on_stopped_leading`: records
    /// `"<identity> stopped leading"` in the background.
    pub fn on_stopped_leading(&self) -> impl Fn() + Send + Sync + 'static {
        let recorder = self.clone();
        move || recorder.record_in_background(STOPPED_LEADING)
    }
}

impl Inner {
    fn event(&self, what: &str) -> Event {
        let now = wall_now();
        let object = self.involved.name.as_deref().unwrap_or("lock");
        // client-go's event names: the object's name and the time in hex nanoseconds.
        let nanos = now.as_nanosecond();
        let name = format!("{object}.{:x}", nanos.max(0));
        Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            involved_object: self.involved.clone(),
            reason: Some(EVENT_REASON.to_owned()),
            message: Some(format!("{} {what}", self.identity)),
            type_: Some("Normal".to_owned()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.identity.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        }
    }

    async fn create(&self, what: &str) -> Result<Event, K8sStoreError> {
        let event = self.event(what);
        let name = event.metadata.name.clone().unwrap_or_default();
        self.api
            .create(&PostParams::default(), &event)
            .await
            .map_err(|e| K8sStoreError::from_kube(e, "create", "events", &name, &self.namespace))
    }
}
