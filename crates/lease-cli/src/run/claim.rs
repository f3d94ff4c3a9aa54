//! Claiming the lease for `lease run`: at once, or (with `--wait`) when it frees up; and
//! recognising a claim of this very holder that took effect although the call said otherwise
//! (a timeout after the write, or a claim that found the lease already held by this holder).

use std::time::Duration;

use lease_core::{Clock, Facades as _, Info, Key, Request, Store, Timestamp};

use crate::backend::{self, StoreSpec};
use crate::error::CliError;
use crate::human::format_duration;

/// How often a claim that failed transiently (a busy database, an API hiccup) is tried in all
/// before giving up, when not waiting.
const CLAIM_ATTEMPTS: u32 = 5;
/// The pause between such attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// The lease as the store reported it.
    pub(crate) info: Info,
    /// The start of the window: the lease is guaranteed until `window_start + ttl`.
    pub(crate) window_start: Timestamp,
}

/// The outcome of one claim attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// This holder holds the lease.
    Claimed(Claimed),
    /// Someone else holds it (as far as a re-read could tell).
    Held(Option<Info>),
    /// A transient failure: try again.
    Transient(lease_core::Error),
    /// A failure that trying again will not cure.
    Failed(lease_core::Error),
}

/// Tries once to claim `key` for `request.holder`.
///
/// `ambiguous_since` is the start of the first earlier attempt whose outcome is unknown (it
/// timed out, perhaps after taking effect); it is set here when this attempt times out. When a
/// re-read then shows this holder, the lease is this process's, and its window counts from that
/// start (and ends no later than the expiry the store reports).
pub(crate) async fn try_claim(
    store: &mut dyn Store,
    clock: &dyn Clock,
    key: &Key,
    request: &Request,
    ambiguous_since: &mut Option<Timestamp>,
) -> Attempt {
    let started = clock.now();
    let err = match store.claim_lease(key, request).await {
        Ok(info) => {
            return Attempt::Claimed(Claimed {
                info,
                window_start: started,
            });
        }
        Err(e) => e,
    };
    if err.is_timeout() {
        let since = *ambiguous_since.get_or_insert(started);
        return match read(store, key).await {
            Ok(Some(info)) if info.holder == request.holder => {
                Attempt::Claimed(adopt(info, since, request.duration))
            }
            Ok(Some(info)) => Attempt::Held(Some(info)),
            Ok(None) | Err(_) => Attempt::Transient(err),
        };
    }
    if err.is_held() || err.is_invalid() {
        // Held by this holder: a claim of ours took effect earlier (or this holder name was
        // used to claim it before); either way the lease is ours until its reported expiry.
        let since = ambiguous_since.unwrap_or(started);
        return match read(store, key).await {
            Ok(Some(info)) if info.holder == request.holder => {
                Attempt::Claimed(adopt(info, since, request.duration))
            }
            Ok(Some(info)) => Attempt::Held(Some(info)),
            // Expired in between: try again.
            Ok(None) => Attempt::Transient(err),
            Err(_) => Attempt::Held(None),
        };
    }
    Attempt::Failed(err)
}

/// The lease as this holder's, with the most cautious window: from `since` (the start of the
/// earliest call that may have written it), and no later than the expiry the store reports.
fn adopt(info: Info, since: Timestamp, ttl: Duration) -> Claimed {
    let end = since.saturating_add(ttl).min(info.expiry);
    Claimed {
        window_start: end.saturating_sub(ttl),
        info,
    }
}

async fn read(store: &mut dyn Store, key: &Key) -> lease_core::Result<Option<Info>> {
    let mut map = store.leases(std::slice::from_ref(key)).await?;
    Ok(map.remove(key))
}

/// An attempt made before [`acquire`] (on the main thread, outside the runtime), and the start
/// of an earlier ambiguous call it found, if any (see [`try_claim`]).
#[derive(Debug)]
pub(crate) struct First {
    pub(crate) attempt: Attempt,
    pub(crate) ambiguous_since: Option<Timestamp>,
}

/// Whether and how long to wait for the lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting {
    /// `--wait`: wait for the lease when someone else holds it.
    pub(crate) wait: bool,
    /// `--timeout`, which messages name.
    pub(crate) timeout: Option<Duration>,
    /// When the wait gives up (the end of `--timeout`).
    pub(crate) deadline: Option<tokio::time::Instant>,
}

/// When a `--wait` gives up: `timeout` from now; `None` (never) when that is beyond the clock.
pub(crate) fn wait_deadline(timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    timeout.and_then(|t| tokio::time::Instant::now().checked_add(t))
}

/// Claims the lease: at once, or (with `--wait`) when it frees up, giving up at the end of
/// `--timeout`; `first`, an attempt already made, counts as this call's first.
///
/// # Errors
///
/// Exit 1 when the lease is held (or the wait timed out), 4 when the store fails.
pub(crate) async fn acquire(
    spec: &StoreSpec,
    store: &mut dyn Store,
    key: &Key,
    request: &Request,
    waiting: &Waiting,
    first: Option<First>,
) -> Result<Claimed, CliError> {
    let Waiting {
        wait,
        timeout,
        deadline,
    } = *waiting;
    let clock = backend::clock();
    let mut manager = None;
    let mut transient = 0;
    let (mut first, mut ambiguous_since) = match first {
        Some(f) => (Some(f.attempt), f.ambiguous_since),
        None => (None, None),
    };
    let result = loop {
        let attempt = match first.take() {
            Some(attempt) => attempt,
            None => try_claim(store, clock.as_ref(), key, request, &mut ambiguous_since).await,
        };
        match attempt {
            Attempt::Claimed(claimed) => break Ok(claimed),
            Attempt::Failed(err) => {
                break Err(CliError::lease(&format!("claiming lease {key}"), &err));
            }
            Attempt::Transient(err) => {
                transient += 1;
                let past = deadline.is_some_and(|d| {
                    tokio::time::Instant::now()
                        .checked_add(RETRY_PAUSE)
                        .is_none_or(|t| t > d)
                });
                if past || (!wait && transient >= CLAIM_ATTEMPTS) {
                    break Err(CliError::lease(&format!("claiming lease {key}"), &err));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Attempt::Held(holder) => {
                if !wait {
                    break Err(CliError::held(format!(
                        "lease {key} is {}",
                        describe(holder.as_ref())
                    )));
                }
                if manager.is_none() {
                    let waiter_store = backend::open(spec).await?;
                    manager = Some(backend::start_manager(waiter_store, None)?);
                }
                let Some(m) = manager.as_ref() else {
                    continue;
                };
                let claimer = m
                    .claimer(&key.namespace, &key.model)
                    .map_err(|e| CliError::lease("", &e))?;
                let cancel = lease_core::CancellationToken::new();
                let waiting = claimer.wait_until_expired(&key.lease, &cancel);
                let waited = match deadline {
                    Some(d) => tokio::time::timeout_at(d, waiting).await.ok(),
                    None => Some(waiting.await),
                };
                match waited {
                    None => {
                        let now = read(store, key).await.ok().flatten();
                        break Err(CliError::held(format!(
                            "timed out after {} waiting for lease {key}, {}",
                            format_duration(timeout.unwrap_or_default()),
                            describe(now.as_ref())
                        )));
                    }
                    Some(Err(e)) => {
                        break Err(CliError::lease(&format!("waiting for lease {key}"), &e));
                    }
                    // Freed: claim again (a rival may win; then wait again). A short pause
                    // keeps a store that still sees the old holder from spinning.
                    Some(Ok(())) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    };
    if let Some(m) = manager {
        m.stop().await;
    }
    if result.is_err() && ambiguous_since.is_some() {
        // A claim that timed out may have taken effect: give it back rather than leave it
        // held until it expires.
        let _ = store.revoke_lease(key, &request.holder).await;
    }
    result
}

fn describe(holder: Option<&Info>) -> String {
    match holder {
        Some(info) => format!(
            "held by {} (generation {}, expires in {})",
            info.holder,
            info.generation,
            format_duration(
                info.expiry
                    .saturating_duration_since(backend::clock().now())
            )
        ),
        None => "held by another holder".to_owned(),
    }
}

#[cfg(test)]
mod tests {

    use async_trait::async_trait;
    use lease_core::{Generation, Result as LeaseResult};
    use lease_testkit::{FakeClock, FaultRates, FaultyStore, InMemoryStore, OpKind};

    use super::*;

    /// A store whose claims take `step` of (fake) time before they are written.
    struct SlowClaims<S> {
        inner: S,
        clock: FakeClock,
        step: Duration,
    }

    #[async_trait]
    impl<S: Store> Store for SlowClaims<S> {
        async fn claim_lease(&mut self, key: &Key, request: &Request) -> LeaseResult<Info> {
            self.clock.advance(self.step);
            self.inner.claim_lease(key, request).await
        }
        async fn extend_lease(&mut self, key: &Key, request: &Request) -> LeaseResult<Info> {
            self.inner.extend_lease(key, request).await
        }
        async fn revoke_lease(&mut self, key: &Key, holder: &str) -> LeaseResult<()> {
            self.inner.revoke_lease(key, holder).await
        }
        async fn leases(
            &mut self,
            keys: &[Key],
        ) -> LeaseResult<std::collections::BTreeMap<Key, Info>> {
            self.inner.leases(keys).await
        }
        async fn lease_group(
            &mut self,
            namespace: &str,
            model: &str,
        ) -> LeaseResult<std::collections::BTreeMap<Key, Info>> {
            self.inner.lease_group(namespace, model).await
        }
        async fn pin_lease(&mut self, key: &Key, entity: &str) -> LeaseResult<()> {
            self.inner.pin_lease(key, entity).await
        }
        async fn unpin_lease(&mut self, key: &Key, entity: &str) -> LeaseResult<()> {
            self.inner.unpin_lease(key, entity).await
        }
        async fn pinned(&mut self) -> LeaseResult<std::collections::BTreeMap<Key, Vec<String>>> {
            self.inner.pinned().await
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    fn key() -> Key {
        Key::new("default", "default", "job")
    }

    /// Every claim takes 1 s and times out *after* it was written.
    fn timing_out_after_effect(clock: &FakeClock) -> FaultyStore<SlowClaims<InMemoryStore>> {
        let inner = SlowClaims {
            inner: InMemoryStore::new(clock.as_clock()),
            clock: clock.clone(),
            step: Duration::from_secs(1),
        };
        FaultyStore::new(inner, clock.as_clock(), 7).with_rates_for(
            OpKind::Claim,
            FaultRates {
                timeout_after: 1.0,
                ..FaultRates::NONE
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_that_timed_out_after_taking_effect_is_ours() {
        let clock = FakeClock::new();
        let mut store = timing_out_after_effect(&clock);
        let handle = store.handle();
        let request = Request::new("me:1", TTL);
        let started = clock.now();
        let mut since = None;
        let attempt = try_claim(&mut store, &clock, &key(), &request, &mut since).await;
        let Attempt::Claimed(claimed) = attempt else {
            panic!("not recognised as ours: {attempt:?}");
        };
        assert_eq!(handle.counts().timeouts_after, 1, "the fault was injected");
        assert_eq!(claimed.info.holder, "me:1");
        assert_eq!(claimed.info.generation, Generation(1));
        // The window counts from the start of the ambiguous call, not from when it was
        // written (1 s later) nor from when it returned.
        assert_eq!(claimed.window_start, started);
        assert_eq!(since, Some(started));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_after_an_ambiguous_claim_keeps_the_first_window() {
        let clock = FakeClock::new();
        let mut store = timing_out_after_effect(&clock);
        let handle = store.handle();
        let request = Request::new("me:1", TTL);
        // The first claim took effect but its re-read failed: unknown outcome, try again.
        let first_start = clock.now();
        let mut since = Some(first_start);
        handle.set_enabled(false);
        store.claim_lease(&key(), &request).await.unwrap();
        clock.advance(Duration::from_secs(2));
        handle.set_enabled(true);
        // The retry finds the lease held by this holder (Invalid after a timeout).
        let attempt = try_claim(&mut store, &clock, &key(), &request, &mut since).await;
        let Attempt::Claimed(claimed) = attempt else {
            panic!("not recognised as ours: {attempt:?}");
        };
        assert_eq!(claimed.info.generation, Generation(1));
        assert!(claimed.window_start <= first_start.saturating_add(Duration::from_secs(1)));
        assert_eq!(claimed.window_start, first_start);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_this_holder_already_holds_is_ours_until_its_expiry() {
        let clock = FakeClock::new();
        let mut store = InMemoryStore::new(clock.as_clock());
        // Claimed earlier under this holder name, for 3 s only.
        store
            .claim_lease(&key(), &Request::new("me:1", Duration::from_secs(3)))
            .await
            .unwrap();
        let expiry = clock.now().saturating_add(Duration::from_secs(3));
        clock.advance(Duration::from_secs(1));
        let mut since = None;
        let attempt = try_claim(
            &mut store,
            &clock,
            &key(),
            &Request::new("me:1", TTL),
            &mut since,
        )
        .await;
        let Attempt::Claimed(claimed) = attempt else {
            panic!("not recognised as ours: {attempt:?}");
        };
        assert_eq!(claimed.info.generation, Generation(1));
        // Not the 10 s this call asked for: the 3 s the lease really has.
        assert_eq!(claimed.window_start.saturating_add(TTL), expiry);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ambiguous_claim_that_lost_to_another_holder_is_not_ours() {
        let clock = FakeClock::new();
        let mut store = FaultyStore::new(InMemoryStore::new(clock.as_clock()), clock.as_clock(), 3)
            .with_rates_for(
                OpKind::Claim,
                FaultRates {
                    timeout_before: 1.0,
                    ..FaultRates::NONE
                },
            );
        store.handle().set_enabled(false);
        store
            .claim_lease(&key(), &Request::new("other", TTL))
            .await
            .unwrap();
        store.handle().set_enabled(true);
        let mut since = None;
        let attempt = try_claim(
            &mut store,
            &clock,
            &key(),
            &Request::new("me:1", TTL),
            &mut since,
        )
        .await;
        assert!(
            matches!(&attempt, Attempt::Held(Some(info)) if info.holder == "other"),
            "{attempt:?}"
        );
    }
}
