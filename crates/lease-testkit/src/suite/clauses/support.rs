//! What the cases share: the fixture (a fresh store with its fake clock), the names and
//! durations most cases use, and checks that turn a store's answer into a [`CaseFailure`] saying
//! what was expected and what was found.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use lease_core::{Error, ErrorKind, Info, Key, Op, Request, Store, Timestamp};

use crate::FakeClock;
use crate::suite::{CaseFailure, StoreBuilder};

/// What every case returns.
pub(super) type CaseResult = Result<(), CaseFailure>;

/// Fails the case with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::suite::CaseFailure::new(format!($($arg)+)));
        }
    };
}
pub(super) use ensure;

/// The lease duration most cases use.
pub(super) const LEASE: Duration = Duration::from_secs(60);
/// One nanosecond: the finest step of a [`Timestamp`].
pub(super) const NANO: Duration = Duration::from_nanos(1);
/// How much a store may round a reported expiry up.
pub(super) const EXPIRY_SLACK: Duration = Duration::from_secs(1);

pub(super) const NS: &str = "suite-ns";
pub(super) const MODEL: &str = "suite-model";
pub(super) const A: &str = "holder-a";
pub(super) const B: &str = "holder-b";

/// Values every name field must reject: empty, whitespace, and each of `.#$`.
pub(super) const BAD_NAMES: [&str; 5] = ["", "has space", "dot.ted", "hash#tag", "dollar$sign"];

pub(super) fn key(lease: &str) -> Key {
    Key::new(NS, MODEL, lease)
}

pub(super) fn req(holder: &str, duration: Duration) -> Request {
    Request::new(holder, duration)
}

/// A fresh store with its clock and guard. Fields drop in order: the store before the guard.
pub(super) struct Fx<Bu: StoreBuilder> {
    pub(super) clock: FakeClock,
    pub(super) store: Bu::Store,
    pub(super) guard: Bu::Guard,
}

pub(super) async fn fx<Bu: StoreBuilder>(builder: &Bu) -> Result<Fx<Bu>, CaseFailure> {
    // A fresh fake clock for every case, so every case starts at the same odd instant.
    let clock = FakeClock::new();
    let (store, guard) = builder
        .build(clock.as_clock())
        .await
        .map_err(|e| CaseFailure::new(format!("building the store failed: {e}")))?;
    Ok(Fx {
        clock,
        store,
        guard,
    })
}

impl<Bu: StoreBuilder> Fx<Bu> {
    /// Another instance over this fixture's backing, or `None` (the case is then skipped).
    pub(super) async fn sibling(
        &self,
        builder: &Bu,
        case: &str,
    ) -> Result<Option<Bu::Store>, CaseFailure> {
        let sibling = builder
            .build_sibling(&self.guard, self.clock.as_clock())
            .await
            .map_err(|e| CaseFailure::new(format!("building a sibling failed: {e}")))?;
        if sibling.is_none() {
            eprintln!("conformance case {case}: skipped, the store cannot share its backing");
        }
        Ok(sibling)
    }

    /// A sibling standing for a separate holder process that dies when dropped, or `None`
    /// (said on stderr) when the store frees leases at their expiry only.
    pub(super) async fn mortal(
        &self,
        builder: &Bu,
        case: &str,
    ) -> Result<Option<Bu::Store>, CaseFailure> {
        let mortal = builder
            .build_mortal_sibling(&self.guard, self.clock.as_clock())
            .await
            .map_err(|e| CaseFailure::new(format!("building a mortal holder failed: {e}")))?;
        if mortal.is_none() {
            eprintln!("conformance case {case}: skipped, the store frees leases at expiry only");
        }
        Ok(mortal)
    }

    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Turns a store error into a case failure saying what was being done.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, CaseFailure>;
}

impl<T> Ctx<T> for lease_core::Result<T> {
    fn ctx(self, what: &str) -> Result<T, CaseFailure> {
        self.map_err(|e| CaseFailure::new(format!("{what}: unexpected error: {e}")))
    }
}

/// Fails unless `result` is an error of one of `kinds`.
pub(super) fn expect_err<T: Debug>(
    result: lease_core::Result<T>,
    kinds: &[ErrorKind],
    what: &str,
) -> CaseResult {
    let wanted = kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    match result {
        Ok(value) => Err(CaseFailure::new(format!(
            "{what}: expected a {wanted} error, got Ok({value:?})"
        ))),
        Err(e) if kinds.contains(&e.kind()) => Ok(()),
        Err(e) => Err(CaseFailure::new(format!(
            "{what}: expected a {wanted} error, got a {} error: {e}",
            e.kind()
        ))),
    }
}

fn innermost(e: &Error) -> &Error {
    match e {
        Error::Context { source, .. } => innermost(source),
        other => other,
    }
}

/// Fails unless `result` is a validation error naming `field` (and `value`, when given).
pub(super) fn expect_validation<T: Debug>(
    result: lease_core::Result<T>,
    field: &str,
    value: Option<&str>,
    what: &str,
) -> CaseResult {
    let wanted = match value {
        Some(v) => format!("a validation error for {field} {v:?}"),
        None => format!("a validation error for {field}"),
    };
    match result {
        Ok(v) => Err(CaseFailure::new(format!(
            "{what}: expected {wanted}, got Ok({v:?})"
        ))),
        Err(e) => match innermost(&e) {
            Error::Validation {
                field: f, value: v, ..
            } if *f == field && value.is_none_or(|want| want == v) => Ok(()),
            _ => Err(CaseFailure::new(format!(
                "{what}: expected {wanted}, got a {} error: {e}",
                e.kind()
            ))),
        },
    }
}

/// The lease `key` as every snapshot reports it, after checking that `leases([key])`,
/// `leases([])` and `lease_group` agree.
pub(super) async fn snapshot<S: Store>(
    store: &mut S,
    key: &Key,
    what: &str,
) -> Result<Option<Info>, CaseFailure> {
    let one = store
        .leases(std::slice::from_ref(key))
        .await
        .ctx(&format!("{what}: leases([{key}])"))?;
    ensure!(
        one.keys().all(|k| k == key),
        "{what}: leases([{key}]) reported other keys: {:?}",
        one.keys().collect::<Vec<_>>()
    );
    let all = store
        .leases(&[])
        .await
        .ctx(&format!("{what}: leases([])"))?;
    let group = store
        .lease_group(&key.namespace, &key.model)
        .await
        .ctx(&format!("{what}: lease_group"))?;
    let (a, b, c) = (one.get(key), all.get(key), group.get(key));
    ensure!(
        a == b && b == c,
        "{what}: snapshots disagree about {key}: leases([key]) = {a:?}, leases([]) = {b:?}, \
         lease_group = {c:?}"
    );
    Ok(a.cloned())
}

/// Checks that `key` is held by `holder` (or by no one) in every snapshot; returns its info.
pub(super) async fn expect_holder<S: Store>(
    store: &mut S,
    key: &Key,
    holder: Option<&str>,
    what: &str,
) -> Result<Option<Info>, CaseFailure> {
    let info = snapshot(store, key, what).await?;
    let found = info.as_ref().map(|i| i.holder.as_str());
    ensure!(
        found == holder,
        "{what}: expected {key} to be held by {holder:?}, snapshots say {found:?} ({info:?})"
    );
    Ok(info)
}

/// Checks a fresh claim's info: holder, expiry from `start`, metadata; returns it.
pub(super) fn check_claim_info(
    info: &Info,
    request: &Request,
    start: Timestamp,
    what: &str,
) -> CaseResult {
    ensure!(
        info.holder == request.holder,
        "{what}: claim returned holder {:?}, expected {:?}",
        info.holder,
        request.holder
    );
    let earliest = start.saturating_add(request.duration);
    let latest = earliest.saturating_add(EXPIRY_SLACK);
    ensure!(
        info.expiry >= earliest && info.expiry <= latest,
        "{what}: claim at {start} for {:?} reported expiry {}, expected within [{earliest}, {latest}]",
        request.duration,
        info.expiry
    );
    ensure!(
        info.metadata == request.metadata,
        "{what}: claim returned metadata {:?}, expected {:?}",
        info.metadata,
        request.metadata
    );
    Ok(())
}

/// Claims and checks the returned info.
pub(super) async fn claim_ok<S: Store>(
    store: &mut S,
    clock: &FakeClock,
    key: &Key,
    request: &Request,
    what: &str,
) -> Result<Info, CaseFailure> {
    let start = clock.now();
    let info = store.claim_lease(key, request).await.ctx(what)?;
    check_claim_info(&info, request, start, what)?;
    Ok(info)
}

pub(super) fn op_claim(key: &Key, request: Request) -> Op {
    Op::Claim {
        key: key.clone(),
        request,
    }
}

pub(super) fn op_extend(key: &Key, request: Request) -> Op {
    Op::Extend {
        key: key.clone(),
        request,
    }
}

pub(super) fn op_revoke(key: &Key, holder: &str) -> Op {
    Op::Revoke {
        key: key.clone(),
        holder: holder.to_owned(),
    }
}

pub(super) async fn claim_several<S: Store>(
    store: &mut S,
    clock: &FakeClock,
    keys: &[Key],
) -> Result<BTreeMap<Key, Info>, CaseFailure> {
    let mut infos = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let holder = format!("holder-{i}");
        let info = claim_ok(
            store,
            clock,
            k,
            &req(&holder, LEASE),
            &format!("claim of {k}"),
        )
        .await?;
        infos.insert(k.clone(), info);
    }
    Ok(infos)
}

/// The store's whole visible state, to check that rejected input changed nothing.
pub(super) async fn state<S: Store>(
    store: &mut S,
) -> Result<(BTreeMap<Key, Info>, BTreeMap<Key, Vec<String>>), CaseFailure> {
    let leases = store.leases(&[]).await.ctx("leases([])")?;
    let pinned = store.pinned().await.ctx("pinned")?;
    Ok((leases, pinned))
}
