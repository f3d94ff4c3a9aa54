//! The watch behind [`Engine`](crate::engine::Engine)'s cache and change counter: one
//! `kube::runtime::watcher` stream per label selector or bound name, each started over with a
//! fresh list after any error.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use lease_core::Clock;
use serde::de::DeserializeOwned;

use crate::cache::{Shared, StreamState, observe};
use crate::codec::Codec;
use crate::naming::managed_selector;

/// The first pause before a failed watch starts again.
const WATCH_PAUSE_MIN: Duration = Duration::from_millis(500);
/// The longest pause between failed watches.
const WATCH_PAUSE_MAX: Duration = Duration::from_secs(30);
/// A watch that ran this long before failing starts again after the shortest pause.
const WATCH_HEALTHY: Duration = Duration::from_secs(60);

/// The pause before a watch that failed after running for `ran` starts again, `previous` the
/// pause before it: growing while failures repeat, with jitter so that the followers of a
/// restarted API server do not all come back at once.
fn next_watch_pause(previous: Option<Duration>, ran: Duration) -> Duration {
    let base = match previous {
        Some(p) if ran < WATCH_HEALTHY => p.saturating_mul(2).min(WATCH_PAUSE_MAX),
        _ => WATCH_PAUSE_MIN,
    };
    base.mul_f64(0.75 + fastrand::f64() / 2.0)
}

/// A watcher on `config` that, after any error, yields the error and then starts over with a
/// fresh watcher (a new list, so `Init` … `InitDone` again) after a pause. kube's own watcher
/// resumes a broken watch without any event saying so, which would leave the store believing
/// forever that it no longer follows changes (every poll then says "changed").
fn restarting_watch<O>(
    api: Api<O>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<O>>> + Send
where
    O: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    struct State<O> {
        api: Api<O>,
        config: watcher::Config,
        current: Option<futures::stream::BoxStream<'static, watcher::Result<watcher::Event<O>>>>,
        pause: Option<Duration>,
        started: tokio::time::Instant,
    }
    let state = State {
        api,
        config,
        current: None,
        pause: None,
        started: tokio::time::Instant::now(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let stream = match &mut state.current {
                Some(stream) => stream,
                None => {
                    if let Some(pause) = state.pause {
                        tokio::time::sleep(pause).await;
                    }
                    state.started = tokio::time::Instant::now();
                    state
                        .current
                        .insert(watcher(state.api.clone(), state.config.clone()).boxed())
                }
            };
            let event = stream.next().await;
            if matches!(event, Some(Ok(_))) {
                return event.map(|e| (e, state));
            }
            // Failed (or ended, which kube's watcher never does): start over after a pause.
            state.current = None;
            state.pause = Some(next_watch_pause(state.pause, state.started.elapsed()));
            if let Some(Err(err)) = event {
                return Some((Err(err), state));
            }
        }
    })
}

/// Follows every object of this crate in the namespace, and each bound object by name (it may
/// lack our labels): keeps the cache current and bumps the change counter on every change made
/// by someone else. After any error a stream lists again ([`restarting_watch`]), so the store
/// reports itself synced again once the API server is back.
pub(crate) async fn watch_loop<C: Codec>(
    api: Api<C::Object>,
    bound: Vec<String>,
    namespace: String,
    codec: Arc<C>,
    shared: Arc<Shared<C::Object>>,
    clock: Arc<dyn Clock>,
) {
    let mut configs = vec![watcher::Config::default().labels(&managed_selector())];
    for name in &bound {
        configs.push(watcher::Config::default().fields(&format!("metadata.name={name}")));
    }
    shared.lock().streams = vec![StreamState::default(); configs.len()];
    let streams = configs.into_iter().enumerate().map(|(index, config)| {
        restarting_watch(api.clone(), config)
            .map(move |event| (index, event))
            .boxed()
    });
    let mut stream = futures::stream::select_all(streams);
    // Whether stream `index` is the one that follows the object `name`.
    let in_scope = |index: usize, name: &str| match index {
        0 => !bound.iter().any(|b| b == name),
        i => bound.get(i - 1).is_some_and(|b| b == name),
    };
    while let Some((index, event)) = stream.next().await {
        let now = clock.now();
        match event {
            Ok(watcher::Event::Init) => {
                if let Some(s) = shared.lock().streams.get_mut(index) {
                    s.listing = Some(HashSet::new());
                }
            }
            Ok(watcher::Event::InitApply(object)) => {
                observe(&*codec, &mut shared.lock(), object, now, None);
            }
            Ok(watcher::Event::InitDone) => {
                {
                    let mut state = shared.lock();
                    let seen = state.streams.get_mut(index).and_then(|s| {
                        s.synced = true;
                        s.listing.take()
                    });
                    if let Some(seen) = seen {
                        let gone: Vec<String> = state
                            .entries
                            .keys()
                            .filter(|name| in_scope(index, name) && !seen.contains(*name))
                            .cloned()
                            .collect();
                        for name in gone {
                            state.bury(&name);
                        }
                    }
                    state.synced = state.streams.iter().all(|s| s.synced);
                }
                shared.bump();
            }
            Ok(watcher::Event::Apply(object)) => {
                let changed = observe(&*codec, &mut shared.lock(), object, now, None);
                if changed {
                    shared.bump();
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let name = object.name_any();
                let mut state = shared.lock();
                // Its last record (it may be newer than ours), kept as deleted.
                observe(&*codec, &mut state, object, now, None);
                state.bury(&name);
                drop(state);
                shared.bump();
            }
            Err(err) => {
                let was_synced = {
                    let mut state = shared.lock();
                    if let Some(s) = state.streams.get_mut(index) {
                        s.synced = false;
                    }
                    std::mem::replace(&mut state.synced, false)
                };
                tracing::warn!(
                    error = %err,
                    resource = C::RESOURCE,
                    namespace = %namespace,
                    "watch of lease objects failed (it needs list and watch permission); retrying"
                );
                if was_synced {
                    shared.bump();
                }
            }
        }
    }
}
