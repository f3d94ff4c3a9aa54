//! [`ScriptedStore`]: a [`Store`] that expects an exact sequence of calls, with exact
//! arguments, and answers each with a canned result (the store Juju's manager tests use).
//!
//! Build the script with [`Call`]'s constructors, one per [`Store`] method, each finished by
//! [`Expect::returns`]. A call that is not the next one in the script, or has other arguments,
//! panics with `expected X, got Y`; [`ScriptHandle::finish`] (or dropping the store) panics if
//! scripted calls were never made.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use lease_core::{Info, Key, Op, Outcome, Request, Result, Store};
use tokio::sync::watch;

/// The arguments of one [`Store`] call, as the script expects them or as they were made.
///
/// The three single-lease writes are the [`Op`] they would be in a batch, so the two cannot
/// disagree: `claim_lease(key, request)` is `StoreCall::Op(Op::Claim { key, request })` (also
/// `StoreCall::from(op)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCall {
    /// [`Store::claim_lease`] ([`Op::Claim`]), [`Store::extend_lease`] ([`Op::Extend`]) or
    /// [`Store::revoke_lease`] ([`Op::Revoke`]).
    Op(Op),
    /// [`Store::leases`].
    Leases {
        /// The keys asked for (empty: all).
        keys: Vec<Key>,
    },
    /// [`Store::lease_group`].
    LeaseGroup {
        /// The namespace.
        namespace: String,
        /// The model.
        model: String,
    },
    /// [`Store::pin_lease`].
    Pin {
        /// The lease.
        key: Key,
        /// The entity pinning it.
        entity: String,
    },
    /// [`Store::unpin_lease`].
    Unpin {
        /// The lease.
        key: Key,
        /// The entity unpinning it.
        entity: String,
    },
    /// [`Store::pinned`].
    Pinned,
    /// [`Store::apply`].
    Apply {
        /// The batch.
        ops: Vec<Op>,
    },
    /// [`Store::poll_changes`].
    PollChanges,
}

impl fmt::Display for StoreCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreCall::Op(Op::Claim { key, request }) => {
                write!(f, "claim_lease({key}, {request:?})")
            }
            StoreCall::Op(Op::Extend { key, request }) => {
                write!(f, "extend_lease({key}, {request:?})")
            }
            StoreCall::Op(Op::Revoke { key, holder }) => {
                write!(f, "revoke_lease({key}, {holder:?})")
            }
            StoreCall::Leases { keys } => {
                let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
                write!(f, "leases([{}])", keys.join(", "))
            }
            StoreCall::LeaseGroup { namespace, model } => {
                write!(f, "lease_group({namespace:?}, {model:?})")
            }
            StoreCall::Pin { key, entity } => write!(f, "pin_lease({key}, {entity:?})"),
            StoreCall::Unpin { key, entity } => write!(f, "unpin_lease({key}, {entity:?})"),
            StoreCall::Pinned => f.write_str("pinned()"),
            StoreCall::Apply { ops } => write!(f, "apply({ops:?})"),
            StoreCall::PollChanges => f.write_str("poll_changes()"),
        }
    }
}

impl From<Op> for StoreCall {
    /// The single-lease call that does `op`.
    fn from(op: Op) -> Self {
        StoreCall::Op(op)
    }
}

/// A canned result, one variant per [`Store`] return type. Each is used once, so errors (which
/// are not `Clone`) can be canned.
enum Reply {
    Info(Result<Info>),
    Unit(Result<()>),
    Leases(Result<BTreeMap<Key, Info>>),
    Pinned(Result<BTreeMap<Key, Vec<String>>>),
    Batch(Vec<Result<Outcome>>),
    Bool(Result<bool>),
}

mod sealed {
    pub trait Sealed {}
}

/// The return types of [`Store`] methods that [`Expect::returns`] accepts.
pub trait Canned: sealed::Sealed + Send + 'static {
    #[doc(hidden)]
    fn into_reply(self) -> CannedReply;
}

/// A canned result, opaque; made by [`Canned`] types.
pub struct CannedReply(Reply);

impl fmt::Debug for CannedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Reply::Info(r) => write!(f, "{r:?}"),
            Reply::Unit(r) => write!(f, "{r:?}"),
            Reply::Leases(r) => write!(f, "{r:?}"),
            Reply::Pinned(r) => write!(f, "{r:?}"),
            Reply::Batch(r) => write!(f, "{r:?}"),
            Reply::Bool(r) => write!(f, "{r:?}"),
        }
    }
}

macro_rules! canned {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Canned for $ty {
            fn into_reply(self) -> CannedReply {
                CannedReply(Reply::$variant(self))
            }
        }
    )*};
}

canned! {
    Result<Info> => Info,
    Result<()> => Unit,
    Result<BTreeMap<Key, Info>> => Leases,
    Result<BTreeMap<Key, Vec<String>>> => Pinned,
    Vec<Result<Outcome>> => Batch,
    Result<bool> => Bool,
}

/// An expected call still waiting for its result: finish it with [`Expect::returns`]. `T` is
/// the method's return type.
#[must_use = "an expectation does nothing until `returns` makes it a `Call`"]
pub struct Expect<T> {
    call: StoreCall,
    _returns: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Expect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expect({})", self.call)
    }
}

impl<T: Canned> Expect<T> {
    /// The scripted call, answered with `result`.
    pub fn returns(self, result: T) -> Call {
        Call {
            call: self.call,
            reply: result.into_reply(),
        }
    }
}

/// One step of a [`ScriptedStore`]'s script: the call expected and the result it gets.
#[derive(Debug)]
pub struct Call {
    call: StoreCall,
    reply: CannedReply,
}

fn expect<T>(call: StoreCall) -> Expect<T> {
    Expect {
        call,
        _returns: PhantomData,
    }
}

impl Call {
    /// Expects `claim_lease(key, request)`.
    pub fn claim(key: Key, request: Request) -> Expect<Result<Info>> {
        expect(StoreCall::Op(Op::Claim { key, request }))
    }

    /// Expects `extend_lease(key, request)`.
    pub fn extend(key: Key, request: Request) -> Expect<Result<Info>> {
        expect(StoreCall::Op(Op::Extend { key, request }))
    }

    /// Expects `revoke_lease(key, holder)`.
    pub fn revoke(key: Key, holder: impl Into<String>) -> Expect<Result<()>> {
        expect(StoreCall::Op(Op::Revoke {
            key,
            holder: holder.into(),
        }))
    }

    /// Expects `leases(keys)`, the keys in this order.
    pub fn leases(keys: Vec<Key>) -> Expect<Result<BTreeMap<Key, Info>>> {
        expect(StoreCall::Leases { keys })
    }

    /// Expects `lease_group(namespace, model)`.
    pub fn lease_group(
        namespace: impl Into<String>,
        model: impl Into<String>,
    ) -> Expect<Result<BTreeMap<Key, Info>>> {
        expect(StoreCall::LeaseGroup {
            namespace: namespace.into(),
            model: model.into(),
        })
    }

    /// Expects `pin_lease(key, entity)`.
    pub fn pin(key: Key, entity: impl Into<String>) -> Expect<Result<()>> {
        expect(StoreCall::Pin {
            key,
            entity: entity.into(),
        })
    }

    /// Expects `unpin_lease(key, entity)`.
    pub fn unpin(key: Key, entity: impl Into<String>) -> Expect<Result<()>> {
        expect(StoreCall::Unpin {
            key,
            entity: entity.into(),
        })
    }

    /// Expects `pinned()`.
    pub fn pinned() -> Expect<Result<BTreeMap<Key, Vec<String>>>> {
        expect(StoreCall::Pinned)
    }

    /// Expects `apply(ops)`, the ops in this order.
    pub fn apply(ops: Vec<Op>) -> Expect<Vec<Result<Outcome>>> {
        expect(StoreCall::Apply { ops })
    }

    /// Expects `poll_changes()`.
    pub fn poll_changes() -> Expect<Result<bool>> {
        expect(StoreCall::PollChanges)
    }

    /// The call this step expects.
    pub fn expected(&self) -> &StoreCall {
        &self.call
    }
}

/// The script and what has happened to it, shared by the store and its handles.
struct Script {
    remaining: std::collections::VecDeque<Call>,
    made: Vec<StoreCall>,
    failure: Option<String>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Script>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The problem with the script now, if any: an earlier failure or calls never made.
    fn problem(&self) -> Option<String> {
        let script = self.lock();
        if let Some(failure) = &script.failure {
            return Some(format!("ScriptedStore failed earlier: {failure}"));
        }
        if script.remaining.is_empty() {
            return None;
        }
        let missing: Vec<String> = script
            .remaining
            .iter()
            .map(|c| c.call.to_string())
            .collect();
        Some(format!(
            "ScriptedStore: {} scripted call(s) never made, the first being call {}: {}",
            missing.len(),
            script.made.len() + 1,
            missing.join("; ")
        ))
    }
}

/// A [`Store`] that expects an exact sequence of calls and answers each with a canned result.
///
/// - A call that differs from the next scripted one (another method, other arguments), or comes
///   after the script has ended, panics: `ScriptedStore: call 2: expected leases([…]), got
///   revoke_lease(…)`. The failure is also kept, so [`ScriptHandle::finish`] reports it even if
///   the panic happened in a task the test does not join.
/// - [`ScriptHandle::finish`] panics if scripted calls were never made, or if a call failed
///   earlier; dropping the store panics if scripted calls were never made (unless a call
///   already failed, or the thread is panicking).
/// - [`Store::change_notifier`] is not part of the script: it returns the receiver given to
///   [`ScriptedStore::with_change_notifier`], or `None`.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use lease_core::{Error, Generation, Info, Key, Request, Store, Timestamp};
/// use lease_testkit::{Call, ScriptedStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let key = Key::new("ns", "model", "lease");
/// let request = Request::new("holder", Duration::from_secs(10));
/// let info = Info {
///     holder: "holder".into(),
///     expiry: Timestamp::from_nanos(10_000_000_000),
///     generation: Generation(1),
///     metadata: None,
///     pinned: false,
/// };
/// let mut store = ScriptedStore::new(vec![
///     Call::claim(key.clone(), request.clone()).returns(Ok(info.clone())),
///     Call::leases(vec![]).returns(Ok(BTreeMap::from([(key.clone(), info.clone())]))),
///     Call::revoke(key.clone(), "someone-else").returns(Err(Error::NotHeld)),
/// ]);
/// let script = store.handle();
///
/// // The code under test would make these calls.
/// assert_eq!(store.claim_lease(&key, &request).await.unwrap(), info);
/// assert_eq!(store.leases(&[]).await.unwrap().len(), 1);
/// assert!(store.revoke_lease(&key, "someone-else").await.unwrap_err().is_not_held());
///
/// script.finish(); // panics if a scripted call was not made
/// # }
/// ```
pub struct ScriptedStore {
    shared: Shared,
    notifier: Option<watch::Receiver<u64>>,
}

/// A handle on a [`ScriptedStore`]'s script, kept by the test after the store has been moved
/// into the code under test.
#[derive(Clone)]
pub struct ScriptHandle {
    shared: Shared,
}

impl ScriptedStore {
    /// A store that expects exactly `calls`, in order.
    pub fn new(calls: Vec<Call>) -> ScriptedStore {
        ScriptedStore {
            shared: Shared(Arc::new(Mutex::new(Script {
                remaining: calls.into(),
                made: Vec::new(),
                failure: None,
            }))),
            notifier: None,
        }
    }

    /// The same store, whose [`Store::change_notifier`] returns `receiver`.
    #[must_use]
    pub fn with_change_notifier(mut self, receiver: watch::Receiver<u64>) -> ScriptedStore {
        self.notifier = Some(receiver);
        self
    }

    /// A handle to check the script with after the store has been given away.
    pub fn handle(&self) -> ScriptHandle {
        ScriptHandle {
            shared: self.shared.clone(),
        }
    }

    /// Matches `made` against the next scripted call and returns its canned reply.
    fn next(&self, made: StoreCall) -> Reply {
        let mut script = self.shared.lock();
        let number = script.made.len() + 1;
        if let Some(failure) = &script.failure {
            let message = format!(
                "ScriptedStore: call {number} {made} after the script had already failed: {failure}"
            );
            drop(script);
            panic!("{message}");
        }
        let outcome = match script.remaining.pop_front() {
            None => Err(format!(
                "ScriptedStore: call {number}: expected no more calls (the script had {} \
                 call(s)), got {made}",
                number - 1
            )),
            Some(next) if next.call != made => {
                let failure = format!(
                    "ScriptedStore: call {number}: expected {}, got {made}",
                    next.call
                );
                script.remaining.push_front(next);
                Err(failure)
            }
            Some(next) => Ok(next),
        };
        script.made.push(made);
        match outcome {
            Ok(call) => call.reply.0,
            Err(failure) => {
                script.failure = Some(failure.clone());
                drop(script);
                panic!("{failure}");
            }
        }
    }

    fn mismatch(call: &str, reply: &Reply) -> String {
        let kind = match reply {
            Reply::Info(_) => "an Info result",
            Reply::Unit(_) => "a () result",
            Reply::Leases(_) => "a lease map",
            Reply::Pinned(_) => "a pinned map",
            Reply::Batch(_) => "a batch result",
            Reply::Bool(_) => "a bool result",
        };
        format!("ScriptedStore: {call} was scripted with {kind}")
    }
}

/// Unpacks the canned reply of the variant a method needs. The script's typed constructors make
/// a mismatch impossible; the panic is a safety net.
macro_rules! reply {
    ($self:ident, $made:expr, $variant:ident) => {{
        let made = $made;
        let name = made.to_string();
        match $self.next(made) {
            Reply::$variant(result) => result,
            other => panic!("{}", ScriptedStore::mismatch(&name, &other)),
        }
    }};
}

#[async_trait]
impl Store for ScriptedStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        reply!(
            self,
            StoreCall::Op(Op::Claim {
                key: key.clone(),
                request: request.clone()
            }),
            Info
        )
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        reply!(
            self,
            StoreCall::Op(Op::Extend {
                key: key.clone(),
                request: request.clone()
            }),
            Info
        )
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        reply!(
            self,
            StoreCall::Op(Op::Revoke {
                key: key.clone(),
                holder: holder.to_owned()
            }),
            Unit
        )
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        reply!(
            self,
            StoreCall::Leases {
                keys: keys.to_vec()
            },
            Leases
        )
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        reply!(
            self,
            StoreCall::LeaseGroup {
                namespace: namespace.to_owned(),
                model: model.to_owned()
            },
            Leases
        )
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        reply!(
            self,
            StoreCall::Pin {
                key: key.clone(),
                entity: entity.to_owned()
            },
            Unit
        )
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        reply!(
            self,
            StoreCall::Unpin {
                key: key.clone(),
                entity: entity.to_owned()
            },
            Unit
        )
    }

    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        reply!(self, StoreCall::Pinned, Pinned)
    }

    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        reply!(self, StoreCall::Apply { ops }, Batch)
    }

    async fn poll_changes(&mut self) -> Result<bool> {
        reply!(self, StoreCall::PollChanges, Bool)
    }

    fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        self.notifier.clone()
    }
}

impl fmt::Debug for ScriptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle().fmt(f)
    }
}

impl Drop for ScriptedStore {
    fn drop(&mut self) {
        // A failed call has panicked already; report only calls never made.
        if std::thread::panicking() || self.shared.lock().failure.is_some() {
            return;
        }
        if let Some(problem) = self.shared.problem() {
            panic!("{problem}");
        }
    }
}

impl ScriptHandle {
    /// Checks that every scripted call was made and none failed.
    ///
    /// # Panics
    ///
    /// When a scripted call was never made (naming each), or a call failed to match earlier.
    pub fn finish(&self) {
        if let Some(problem) = self.shared.problem() {
            panic!("{problem}");
        }
    }

    /// The calls made so far, in order (a mismatched one included).
    pub fn calls(&self) -> Vec<StoreCall> {
        self.shared.lock().made.clone()
    }

    /// How many scripted calls have not been made yet.
    pub fn remaining(&self) -> usize {
        self.shared.lock().remaining.len()
    }
}

impl fmt::Debug for ScriptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let script = self.shared.lock();
        f.debug_struct("ScriptedStore")
            .field("made", &script.made.len())
            .field("remaining", &script.remaining.len())
            .field("failure", &script.failure)
            .finish()
    }
}
