//! What an elector reports: [`Leadership`], [`TermRecord`] and the [`Callbacks`].

use std::fmt;
use std::sync::Arc;

use lease_core::{Generation, Timestamp};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::LeaderElector;

/// Who leads, as one elector sees it. Observe it with [`LeaderElector::leadership`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Leadership {
    /// Not leading, and no leader known (before the first attempt, or after losing or
    /// releasing leadership).
    Standby,
    /// Someone else leads.
    Following {
        /// The leader's identity.
        leader: String,
    },
    /// This elector leads, in the term of this fencing generation.
    Leading {
        /// The fencing generation of the term.
        generation: Generation,
    },
}

impl Leadership {
    /// Whether this is [`Leadership::Leading`].
    pub fn is_leading(&self) -> bool {
        matches!(self, Leadership::Leading { .. })
    }
}

/// The record of this elector's current term, with five of the fields of client-go's
/// `LeaderElectionRecord`: written as the lease's metadata (JSON, with a Lease spec's field names)
/// at every renewal, and returned by [`LeaderElector::term_record`].
///
/// Times are instants on the manager's clock, not wall-clock times, so it is not the record a
/// Kubernetes Lease carries (that is `lease_store_k8s::LeaderElectionRecord`). `lease_transitions`
/// counts the claims of the lease before this term (the fencing generation minus one, as stores
/// number claims from 1). Converting it to and from a Kubernetes `LeaseSpec` is the Kubernetes
/// store's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TermRecord {
    /// The leader's identity.
    pub holder_identity: String,
    /// The lease duration, in whole seconds (rounded up).
    pub lease_duration_seconds: u64,
    /// When this term's claim started.
    pub acquire_time: Timestamp,
    /// When the last successful renewal (or the claim) started.
    pub renew_time: Timestamp,
    /// Claims of the lease before this term.
    pub lease_transitions: u64,
}

pub(super) type GenerationCallback = Arc<dyn Fn(Generation) + Send + Sync>;
pub(super) type PlainCallback = Arc<dyn Fn() + Send + Sync>;
pub(super) type LeaderCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// Callbacks a [`LeaderElector`] calls as leadership changes (client-go's
/// `LeaderCallbacks`). They run on the elector's tasks, so they must return quickly.
#[derive(Clone, Default)]
pub struct Callbacks {
    pub(super) started: Option<GenerationCallback>,
    pub(super) stopped: Option<PlainCallback>,
    pub(super) new_leader: Option<LeaderCallback>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_started_leading", &self.started.is_some())
            .field("on_stopped_leading", &self.stopped.is_some())
            .field("on_new_leader", &self.new_leader.is_some())
            .finish()
    }
}

impl Callbacks {
    /// No callbacks.
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// Called with the term's generation when this elector starts leading.
    #[must_use]
    pub fn on_started_leading(mut self, f: impl Fn(Generation) + Send + Sync + 'static) -> Self {
        self.started = Some(Arc::new(f));
        self
    }

    /// Called when this elector stops leading (lost, released or dropped), after its lost
    /// token has fired.
    #[must_use]
    pub fn on_stopped_leading(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.stopped = Some(Arc::new(f));
        self
    }

    /// Called with the leader's identity whenever the observed leader changes (this elector
    /// included).
    #[must_use]
    pub fn on_new_leader(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.new_leader = Some(Arc::new(f));
        self
    }
}
