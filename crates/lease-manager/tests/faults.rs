//! Property tests under injected faults: random sequences of claims, extends, revokes, token
//! checks, waits, pins and clock moves by several holders on a few keys, through one or two
//! managers, each over a [`FaultyStore`] over one shared [`InMemoryStore`] (the model).
//!
//! What every case checks:
//!
//! - **Safety.** No instant is covered by the guaranteed windows of two different holders'
//!   successful claims of one key. A window runs from when the caller got its answer to the
//!   claim's start plus its duration, cut short when the holder starts a revoke.
//! - **Honest checks.** A successful `Token::check` (or `check_now`) never contradicts a claim
//!   of another holder that was answered before the check began and whose window covers the
//!   instant of the check's answer.
//! - **Fencing.** A generation names one holder; a claim that starts after another was answered
//!   never gets a lower generation.
//! - **Honest denials.** `ClaimDenied` means the holder does not hold the lease in the model at
//!   that instant (unless another claim of its own was in flight).
//! - **Every caller gets an answer**, within a bounded amount of fake time (and of real time, as
//!   a hang detector).
//!
//! Smaller properties run [`ManagerLeaser`] and [`LeaderElector`] over faulty stores: never two
//! live lease guards, never two leaders, and a live guard or leader is the model's holder.
//!
//! Every random choice comes from proptest's seeded runner or from seeds it draws, so a failing
//! case is reproduced (and shrunk) from the seed proptest prints.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{
    CancellationToken, DefaultSecretary, Facades as _, Generation, Key, Leaser as _, PathKey,
    Request, Store as _, Timestamp, Token as _,
};
use lease_manager::{
    Callbacks, ElectionConfig, Jitter, LeaderElector, LeaserConfig, Manager, ManagerConfig,
    ManagerLeaser, RetryPolicy,
};
use lease_testkit::{FakeClock, FaultHandle, FaultRates, FaultyStore, InMemoryStore, OpKind};
use proptest::prelude::*;

const NS: &str = "faults";
const MODEL: &str = "model-1";
const KEYS: [&str; 2] = ["l0", "l1"];
const HOLDERS: [&str; 3] = ["h0", "h1", "h2"];
const ENTITIES: [&str; 2] = ["e0", "e1"];

/// Real time a whole case may take before it counts as hung.
const HANG: Duration = Duration::from_secs(20);
/// Fake time the end of a case may take to answer every caller.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

fn key(i: usize) -> Key {
    Key::new(NS, MODEL, KEYS[i])
}

/// Lets every ready task run (the runtime is single-threaded, so this reaches quiescence).
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Runs `fut` on a fresh single-threaded runtime, failing if it takes more than [`HANG`] of
/// real time.
fn run<F: Future<Output = Vec<String>>>(fut: F) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match tokio::time::timeout(HANG, fut).await {
            Ok(v) => v,
            Err(_) => vec![format!("hung: no result within {HANG:?} of real time")],
        }
    })
}

/// Drives the fake clock in `step`s until `done` says so, letting tasks run between steps.
/// Returns false if `limit` of fake time passes first.
async fn drive(
    clock: &FakeClock,
    step: Duration,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = clock.now();
    loop {
        settle().await;
        if done() {
            return true;
        }
        if clock.now().saturating_duration_since(start) >= limit {
            return false;
        }
        clock.advance(step);
    }
}

/// `PROPTEST_CASES` when set (for longer runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        jitter: Jitter::Full,
        ..RetryPolicy::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The manager.

#[derive(Debug, Clone)]
enum Step {
    Claim {
        holder: usize,
        key: usize,
        secs: u64,
    },
    Revoke {
        holder: usize,
        key: usize,
    },
    Check {
        holder: usize,
        key: usize,
    },
    CheckNow {
        holder: usize,
        key: usize,
    },
    Wait {
        key: usize,
    },
    Pin {
        key: usize,
        entity: usize,
    },
    Unpin {
        key: usize,
        entity: usize,
    },
    Advance {
        millis: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let h = 0..HOLDERS.len();
    let k = 0..KEYS.len();
    let e = 0..ENTITIES.len();
    prop_oneof![
        6 => (h.clone(), k.clone(), 1..=10u64).prop_map(|(holder, key, secs)| Step::Claim { holder, key, secs }),
        2 => (h.clone(), k.clone()).prop_map(|(holder, key)| Step::Revoke { holder, key }),
        3 => (h.clone(), k.clone()).prop_map(|(holder, key)| Step::Check { holder, key }),
        2 => (h, k.clone()).prop_map(|(holder, key)| Step::CheckNow { holder, key }),
        1 => k.clone().prop_map(|key| Step::Wait { key }),
        1 => (k.clone(), e.clone()).prop_map(|(key, entity)| Step::Pin { key, entity }),
        1 => (k, e).prop_map(|(key, entity)| Step::Unpin { key, entity }),
        5 => prop_oneof![0..200u64, 200..3000u64, 3000..12_000u64].prop_map(|millis| Step::Advance { millis }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    managers: usize,
    attempts: u32,
    write_rates: FaultRates,
    read_rates: FaultRates,
    seed: u64,
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.1), Just(0.3)]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1..=2usize,
        prop_oneof![Just(1u32), Just(3), Just(10)],
        rate(),
        rate(),
        prop_oneof![Just(0.0), Just(0.2)],
        any::<u64>(),
    )
        .prop_map(|(managers, attempts, writes, reads, latency, seed)| Setup {
            managers,
            attempts,
            write_rates: FaultRates::uniform(writes).with_latency(latency),
            read_rates: FaultRates::uniform(reads).with_latency(latency),
            seed,
        })
}

/// One successful claim.
#[derive(Debug, Clone)]
struct ClaimOk {
    key: usize,
    holder: usize,
    generation: Generation,
    started: Timestamp,
    duration: Duration,
    answered: Timestamp,
    issued_seq: u64,
    answered_seq: u64,
}

/// A revoke, from when it was sent to its answer (whatever the answer).
#[derive(Debug, Clone)]
struct RevokeCall {
    key: usize,
    holder: usize,
    started: Timestamp,
    answered_seq: u64,
}

/// A claim call of any outcome, for telling which claims were in flight together.
#[derive(Debug, Clone)]
struct ClaimCall {
    key: usize,
    holder: usize,
    issued_seq: u64,
    answered_seq: u64,
}

/// A claim answered `ClaimDenied` while the model said its holder held the lease.
#[derive(Debug, Clone)]
struct Denial {
    key: usize,
    holder: usize,
    issued_seq: u64,
    answered_seq: u64,
    /// When the model was read, after the answer.
    model_seq: u64,
    model: String,
}

/// A pin call: pinning a lease that expired but is still recorded gives it back to its old
/// holder (the store's pin rule), so a denial next to one may be followed by the holder
/// holding the lease again.
#[derive(Debug, Clone)]
struct PinCall {
    key: usize,
    issued_seq: u64,
    answered_seq: u64,
}

/// A check that said "held".
#[derive(Debug, Clone)]
struct CheckOk {
    key: usize,
    holder: usize,
    generation: Generation,
    issued_seq: u64,
    answered: Timestamp,
    fast: bool,
}

#[derive(Debug, Default)]
struct Log {
    claims: Vec<ClaimOk>,
    claim_calls: Vec<ClaimCall>,
    revokes: Vec<RevokeCall>,
    denials: Vec<Denial>,
    pins: Vec<PinCall>,
    checks: Vec<CheckOk>,
    errors: BTreeMap<String, usize>,
}

#[derive(Clone)]
struct Env {
    clock: FakeClock,
    model: Arc<tokio::sync::Mutex<InMemoryStore>>,
    managers: Vec<Manager>,
    log: Arc<Mutex<Log>>,
    seq: Arc<AtomicU64>,
}

impl Env {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn manager_of(&self, holder: usize) -> &Manager {
        &self.managers[holder % self.managers.len()]
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_error(&self, what: &str, e: &lease_core::Error) {
        *self
            .log()
            .errors
            .entry(format!("{what}: {}", e.kind()))
            .or_default() += 1;
    }

    /// The model's holder of `key` right now, if any.
    async fn model_holder(&self, key: usize) -> Option<(String, Generation)> {
        let k = self::key(key);
        let mut model = self.model.lock().await;
        let leases = model
            .leases(std::slice::from_ref(&k))
            .await
            .expect("model read");
        leases.get(&k).map(|i| (i.holder.clone(), i.generation))
    }
}

fn spawn_step(env: &Env, step: &Step, tasks: &mut Vec<(String, tokio::task::JoinHandle<()>)>) {
    let what = format!("{step:?} at {}", env.clock.now());
    let env = env.clone();
    let task = match step.clone() {
        Step::Claim { holder, key, secs } => tokio::spawn(async move {
            let claimer = env.manager_of(holder).claimer(NS, MODEL).expect("claimer");
            let duration = Duration::from_secs(secs);
            let issued_seq = env.next();
            let started = env.clock.now();
            let result = claimer
                .claim(KEYS[key], Request::new(HOLDERS[holder], duration))
                .await;
            let answered = env.clock.now();
            let answered_seq = env.next();
            env.log().claim_calls.push(ClaimCall {
                key,
                holder,
                issued_seq,
                answered_seq,
            });
            match result {
                Ok(info) => env.log().claims.push(ClaimOk {
                    key,
                    holder,
                    generation: info.generation,
                    started,
                    duration,
                    answered,
                    issued_seq,
                    answered_seq,
                }),
                Err(e) if e.is_claim_denied() => {
                    let model = env.model_holder(key).await;
                    let model_seq = env.next();
                    if let Some((h, g)) = model
                        && h == HOLDERS[holder]
                    {
                        env.log().denials.push(Denial {
                            key,
                            holder,
                            issued_seq,
                            answered_seq,
                            model_seq,
                            model: format!("{h} at generation {g}"),
                        });
                    }
                    env.note_error("claim", &e);
                }
                Err(e) => env.note_error("claim", &e),
            }
        }),
        Step::Revoke { holder, key } => tokio::spawn(async move {
            let revoker = env.manager_of(holder).revoker(NS, MODEL).expect("revoker");
            let started = env.clock.now();
            let result = revoker.revoke(KEYS[key], HOLDERS[holder]).await;
            let answered_seq = env.next();
            env.log().revokes.push(RevokeCall {
                key,
                holder,
                started,
                answered_seq,
            });
            if let Err(e) = result {
                env.note_error("revoke", &e);
            }
        }),
        Step::Check { holder, key } => tokio::spawn(async move {
            let token = env
                .manager_of(holder)
                .token(NS, MODEL, KEYS[key], HOLDERS[holder])
                .expect("token");
            let issued_seq = env.next();
            match token.check().await {
                Ok(generation) => {
                    let answered = env.clock.now();
                    env.log().checks.push(CheckOk {
                        key,
                        holder,
                        generation,
                        issued_seq,
                        answered,
                        fast: false,
                    });
                }
                Err(e) => env.note_error("check", &e),
            }
        }),
        Step::CheckNow { holder, key } => {
            // Synchronous: answered at once, at this instant.
            let token = env
                .manager_of(holder)
                .token(NS, MODEL, KEYS[key], HOLDERS[holder])
                .expect("token");
            let issued_seq = env.next();
            if let Some(generation) = token.check_now() {
                let answered = env.clock.now();
                env.log().checks.push(CheckOk {
                    key,
                    holder,
                    generation,
                    issued_seq,
                    answered,
                    fast: true,
                });
            }
            return;
        }
        Step::Wait { key } => tokio::spawn(async move {
            let claimer = env.managers[key % env.managers.len()]
                .claimer(NS, MODEL)
                .expect("claimer");
            let cancel = CancellationToken::new();
            if let Err(e) = claimer.wait_until_expired(KEYS[key], &cancel).await {
                env.note_error("wait", &e);
            }
        }),
        Step::Pin { key, entity } => tokio::spawn(async move {
            let pinner = env.managers[entity % env.managers.len()]
                .pinner(NS, MODEL)
                .expect("pinner");
            let issued_seq = env.next();
            let result = pinner.pin(KEYS[key], ENTITIES[entity]).await;
            let answered_seq = env.next();
            env.log().pins.push(PinCall {
                key,
                issued_seq,
                answered_seq,
            });
            if let Err(e) = result {
                env.note_error("pin", &e);
            }
        }),
        Step::Unpin { key, entity } => tokio::spawn(async move {
            let pinner = env.managers[entity % env.managers.len()]
                .pinner(NS, MODEL)
                .expect("pinner");
            if let Err(e) = pinner.unpin(KEYS[key], ENTITIES[entity]).await {
                env.note_error("unpin", &e);
            }
        }),
        Step::Advance { millis } => {
            env.clock.advance(Duration::from_millis(millis));
            return;
        }
    };
    tasks.push((what, task));
}

/// The end of `claim`'s guaranteed window: its start plus its duration, cut short by the first
/// revoke of its holder that may have been applied after it.
fn window_end(claim: &ClaimOk, revokes: &[RevokeCall]) -> Timestamp {
    let mut end = claim.started.saturating_add(claim.duration);
    for r in revokes {
        if r.key == claim.key && r.holder == claim.holder && r.answered_seq > claim.issued_seq {
            end = end.min(r.started.max(claim.started));
        }
    }
    end
}

fn violations(log: &Log) -> Vec<String> {
    let mut out = Vec::new();
    let windows: Vec<(&ClaimOk, Timestamp)> = log
        .claims
        .iter()
        .map(|c| (c, window_end(c, &log.revokes)))
        .collect();
    // Safety: no two holders' windows overlap.
    for (i, (a, a_end)) in windows.iter().enumerate() {
        for (b, b_end) in &windows[i + 1..] {
            if a.key != b.key || a.holder == b.holder {
                continue;
            }
            let overlap = a.answered.max(b.answered) < (*a_end).min(*b_end);
            if overlap {
                out.push(format!(
                    "overlapping windows on {}: {} [{}, {}) gen {} and {} [{}, {}) gen {}",
                    KEYS[a.key],
                    HOLDERS[a.holder],
                    a.answered,
                    a_end,
                    a.generation,
                    HOLDERS[b.holder],
                    b.answered,
                    b_end,
                    b.generation
                ));
            }
        }
    }
    // Fencing: one generation, one holder; later claims never go back.
    for a in &log.claims {
        for b in &log.claims {
            if a.key != b.key {
                continue;
            }
            if a.generation == b.generation && a.holder != b.holder {
                out.push(format!(
                    "generation {} of {} given to both {} and {}",
                    a.generation, KEYS[a.key], HOLDERS[a.holder], HOLDERS[b.holder]
                ));
            }
            if a.answered_seq < b.issued_seq && b.generation < a.generation {
                out.push(format!(
                    "generation went back on {}: {} got {} after {} got {}",
                    KEYS[a.key], HOLDERS[b.holder], b.generation, HOLDERS[a.holder], a.generation
                ));
            }
        }
    }
    // Checks never contradict another holder's claim known before the check began.
    for check in &log.checks {
        for (claim, end) in &windows {
            if claim.key == check.key
                && claim.holder != check.holder
                && claim.answered_seq < check.issued_seq
                && claim.answered <= check.answered
                && check.answered < *end
            {
                out.push(format!(
                    "{} check of {} by {} said held (generation {}) at {} inside {}'s window \
                     [{}, {}) (generation {})",
                    if check.fast { "fast" } else { "worker" },
                    KEYS[check.key],
                    HOLDERS[check.holder],
                    check.generation,
                    check.answered,
                    HOLDERS[claim.holder],
                    claim.answered,
                    end,
                    claim.generation
                ));
            }
        }
    }
    // Denials are honest unless another claim of the same holder was in flight, or a pin of
    // the lease (which can give an expired lease back to its holder) ran between the claim
    // and the read of the model.
    for d in &log.denials {
        let concurrent = log.claim_calls.iter().any(|c| {
            c.key == d.key
                && c.holder == d.holder
                && c.issued_seq != d.issued_seq
                && c.issued_seq < d.answered_seq
                && c.answered_seq > d.issued_seq
        });
        let pinned = log
            .pins
            .iter()
            .any(|p| p.key == d.key && p.issued_seq < d.model_seq && p.answered_seq > d.issued_seq);
        if !concurrent && !pinned {
            out.push(format!(
                "claim of {} by {} was denied while the model said {}",
                KEYS[d.key], HOLDERS[d.holder], d.model
            ));
        }
    }
    out
}

async fn manager_case(setup: Setup, steps: Vec<Step>) -> Vec<String> {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let mut handles: Vec<FaultHandle> = Vec::new();
    let mut managers = Vec::new();
    for i in 0..setup.managers {
        let seed = setup.seed.wrapping_add(i as u64);
        let store = FaultyStore::new(model.sibling(), clock.as_clock(), seed)
            .with_rates(setup.write_rates)
            .with_rates_for(OpKind::Read, setup.read_rates)
            .with_rates_for(OpKind::Pinned, setup.read_rates)
            .with_rates_for(OpKind::Poll, setup.read_rates)
            .with_max_latency(Duration::from_millis(300));
        handles.push(store.handle());
        let config = ManagerConfig::new(store, clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_retry(retry(setup.attempts))
            .with_rng_seed(seed);
        managers.push(Manager::start(config).expect("valid config"));
    }
    let env = Env {
        clock: clock.clone(),
        model: Arc::new(tokio::sync::Mutex::new(model.sibling())),
        managers,
        log: Arc::new(Mutex::new(Log::default())),
        seq: Arc::new(AtomicU64::new(0)),
    };
    let mut tasks = Vec::new();
    for step in &steps {
        spawn_step(&env, step, &mut tasks);
        settle().await;
    }
    // Pinned leases never expire, so waits on them would (rightly) never end: once every pin
    // and unpin has been answered, unpin everything, without faults, then let the clock run
    // until every caller has its answer.
    let mut out = Vec::new();
    let pins_answered = drive(&clock, Duration::from_millis(50), ANSWER_WITHIN, || {
        tasks
            .iter()
            .filter(|(what, _)| what.starts_with("Pin") || what.starts_with("Unpin"))
            .all(|(_, t)| t.is_finished())
    })
    .await;
    if !pins_answered {
        out.push(format!(
            "pins had no answer after {ANSWER_WITHIN:?} of fake time"
        ));
    }
    for h in &handles {
        h.set_enabled(false);
    }
    let mut unpins = Vec::new();
    for k in KEYS {
        for e in ENTITIES {
            let pinner = env.managers[0].pinner(NS, MODEL).expect("pinner");
            unpins.push(tokio::spawn(async move { pinner.unpin(k, e).await }));
        }
    }
    let unpinned = drive(&clock, Duration::from_millis(50), ANSWER_WITHIN, || {
        unpins.iter().all(|t| t.is_finished())
    })
    .await;
    for unpin in unpins {
        if unpinned {
            assert!(
                matches!(unpin.await, Ok(Ok(()))),
                "unpinning without faults"
            );
        }
    }
    let all_answered = drive(&clock, Duration::from_millis(100), ANSWER_WITHIN, || {
        tasks.iter().all(|(_, t)| t.is_finished())
    })
    .await;
    if !all_answered {
        let pending: Vec<&str> = tasks
            .iter()
            .filter(|(_, t)| !t.is_finished())
            .map(|(what, _)| what.as_str())
            .collect();
        out.push(format!(
            "{} of {} callers had no answer after {ANSWER_WITHIN:?} of fake time: {}",
            pending.len(),
            tasks.len(),
            pending.join("; ")
        ));
    }
    for (_, task) in tasks {
        if task.is_finished()
            && let Err(e) = task.await
        {
            out.push(format!("a caller panicked: {e}"));
        }
    }
    // Stopping lets a store call in flight finish within a grace period on the fake clock.
    let stops: Vec<_> = env
        .managers
        .iter()
        .map(|m| {
            let m = m.clone();
            tokio::spawn(async move { m.stop().await })
        })
        .collect();
    if !drive(&clock, Duration::from_millis(100), ANSWER_WITHIN, || {
        stops.iter().all(|t| t.is_finished())
    })
    .await
    {
        out.push("a manager did not stop".to_owned());
    }
    let log = env.log();
    out.extend(violations(&log));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn the_manager_keeps_its_guarantees_under_faults(
        setup in setup(),
        steps in proptest::collection::vec(step(), 1..48),
    ) {
        let problems = run(manager_case(setup.clone(), steps));
        prop_assert!(problems.is_empty(), "{setup:?}\n{}", problems.join("\n"));
    }
}

/// The case the property test found: a claim that took effect but was answered `Timeout`,
/// followed by a claim whose only attempt the store answers `Invalid` (the holder already
/// holds it), must not be denied: the holder *does* hold the lease.
#[tokio::test]
async fn a_claim_after_an_ambiguous_timeout_is_not_denied_to_the_holder() {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let store = FaultyStore::new(model.sibling(), clock.as_clock(), 1).with_rates_for(
        OpKind::Claim,
        FaultRates {
            timeout_after: 1.0,
            ..FaultRates::NONE
        },
    );
    let faults = store.handle();
    let manager = Manager::start(
        ManagerConfig::new(store, clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_retry(retry(1)),
    )
    .unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let request = Request::new("h0", Duration::from_secs(10));
    let err = claimer.claim("l0", request.clone()).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(faults.counts().timeouts_after, 1);
    let mut probe = model.sibling();
    let k = key(0);
    assert_eq!(
        probe.leases(std::slice::from_ref(&k)).await.unwrap()[&k].holder,
        "h0",
        "the claim took effect"
    );
    faults.set_enabled(false);
    let again = claimer.claim("l0", request).await;
    assert!(
        !again.as_ref().is_err_and(|e| e.is_claim_denied()),
        "denied to the holder: {again:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// ManagerLeaser and LeaderElector.

/// Managers (one per process) over faulty siblings of one model, with their fault handles.
fn processes(
    clock: &FakeClock,
    model: &InMemoryStore,
    n: usize,
    rates: FaultRates,
    seed: u64,
) -> (Vec<Manager>, Vec<FaultHandle>) {
    let mut managers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..n {
        let seed = seed.wrapping_add(i as u64);
        let store = FaultyStore::new(model.sibling(), clock.as_clock(), seed)
            .with_rates(rates)
            .with_max_latency(Duration::from_millis(300));
        handles.push(store.handle());
        let config = ManagerConfig::new(store, clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_retry(retry(10))
            .with_rng_seed(seed);
        managers.push(Manager::start(config).expect("valid config"));
    }
    (managers, handles)
}

fn fault_rates() -> impl Strategy<Value = FaultRates> {
    (rate(), prop_oneof![Just(0.0), Just(0.2)])
        .prop_map(|(r, latency)| FaultRates::uniform(r).with_latency(latency))
}

#[derive(Debug, Clone)]
enum LeaserStep {
    Acquire {
        who: usize,
        key: usize,
        ttl_secs: u64,
    },
    Release {
        who: usize,
        key: usize,
    },
    Drop {
        who: usize,
        key: usize,
    },
    Advance {
        millis: u64,
    },
}

fn leaser_step() -> impl Strategy<Value = LeaserStep> {
    prop_oneof![
        3 => (0..2usize, 0..2usize, 5..=15u64)
            .prop_map(|(who, key, ttl_secs)| LeaserStep::Acquire { who, key, ttl_secs }),
        1 => (0..2usize, 0..2usize).prop_map(|(who, key)| LeaserStep::Release { who, key }),
        1 => (0..2usize, 0..2usize).prop_map(|(who, key)| LeaserStep::Drop { who, key }),
        6 => (50..800u64).prop_map(|millis| LeaserStep::Advance { millis }),
    ]
}

type Guards = Arc<Mutex<BTreeMap<(usize, usize), lease_core::LeaseGuard>>>;

async fn leaser_case(rates: FaultRates, seed: u64, steps: Vec<LeaserStep>) -> Vec<String> {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let (managers, _handles) = processes(&clock, &model, 2, rates, seed);
    let leasers: Vec<ManagerLeaser> = managers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            ManagerLeaser::new(
                m,
                clock.as_clock(),
                LeaserConfig::new(NS, MODEL, format!("runner-{i}")),
            )
            .expect("leaser")
        })
        .collect();
    let keys: Vec<PathKey> = (0..2)
        .map(|i| PathKey::system(["job", &format!("k{i}")]).expect("key"))
        .collect();
    let guards: Guards = Arc::default();
    let mut probe = model.sibling();
    let mut out = Vec::new();
    for step in steps {
        match step {
            LeaserStep::Acquire { who, key, ttl_secs } => {
                let leaser = leasers[who].clone();
                let k = keys[key].clone();
                let guards = Arc::clone(&guards);
                tokio::spawn(async move {
                    if let Ok((guard, _lost)) = leaser
                        .acquire_lease(&k, Duration::from_secs(ttl_secs), None)
                        .await
                    {
                        let old = guards
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((who, key), guard);
                        drop(old);
                    }
                });
            }
            LeaserStep::Release { who, key } => {
                let guard = guards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(who, key));
                if let Some(guard) = guard {
                    tokio::spawn(async move {
                        let _ = guard.release().await;
                    });
                }
            }
            LeaserStep::Drop { who, key } => {
                let guard = guards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(who, key));
                drop(guard);
            }
            LeaserStep::Advance { millis } => clock.advance(Duration::from_millis(millis)),
        }
        settle().await;
        // Never two live guards on one key, and a live guard's lease is the model's.
        let live: Vec<(usize, usize, Generation)> = guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, g)| !g.is_lost())
            .map(|((who, key), g)| (*who, *key, g.generation()))
            .collect();
        for (key, name) in keys.iter().enumerate() {
            let holders: Vec<usize> = live
                .iter()
                .filter(|(_, k, _)| *k == key)
                .map(|(w, _, _)| *w)
                .collect();
            if holders.len() > 1 {
                out.push(format!(
                    "{} live guards on {} at {}",
                    holders.len(),
                    name,
                    clock.now()
                ));
            }
        }
        for (who, key, generation) in live {
            let k = Key::new(NS, MODEL, keys[key].to_string());
            let stored = probe
                .leases(std::slice::from_ref(&k))
                .await
                .expect("model read")
                .remove(&k);
            let ok = stored.as_ref().is_some_and(|i| {
                i.generation == generation && i.holder.starts_with(&format!("runner-{who}~"))
            });
            if !ok {
                out.push(format!(
                    "runner-{who}'s live guard on {} (generation {generation}) at {}, but the \
                     model has {stored:?}",
                    keys[key],
                    clock.now()
                ));
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    guards.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for m in &managers {
        let m = m.clone();
        let stop = tokio::spawn(async move { m.stop().await });
        drive(&clock, Duration::from_millis(100), ANSWER_WITHIN, || {
            stop.is_finished()
        })
        .await;
    }
    out
}

#[derive(Debug, Clone)]
enum ElectionStep {
    Release { who: usize },
    Drop { who: usize },
    Advance { millis: u64 },
}

fn election_step() -> impl Strategy<Value = ElectionStep> {
    prop_oneof![
        1 => (0..2usize).prop_map(|who| ElectionStep::Release { who }),
        1 => (0..2usize).prop_map(|who| ElectionStep::Drop { who }),
        12 => prop_oneof![50..1000u64, 1000..4000u64].prop_map(|millis| ElectionStep::Advance { millis }),
    ]
}

type Terms = Arc<Mutex<Vec<Option<lease_manager::LeadershipGuard>>>>;

fn campaign(elector: LeaderElector, who: usize, terms: Terms) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok(guard) = elector.lock().await {
            terms.lock().unwrap_or_else(|e| e.into_inner())[who] = Some(guard);
        }
    })
}

async fn election_case(rates: FaultRates, seed: u64, steps: Vec<ElectionStep>) -> Vec<String> {
    const LEASE: &str = "leader";
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let (managers, handles) = processes(&clock, &model, 2, rates, seed);
    let electors: Vec<LeaderElector> = managers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            LeaderElector::new(
                m,
                clock.as_clock(),
                // Candidate 1 releases on drop (a background revoke); candidate 0 does not.
                ElectionConfig::new(NS, MODEL, LEASE, format!("candidate-{i}"))
                    .with_release_on_cancel(i == 1),
                Callbacks::new(),
            )
            .expect("elector")
        })
        .collect();
    let terms: Terms = Arc::new(Mutex::new(vec![None, None]));
    let mut campaigns: Vec<_> = (0..2)
        .map(|i| campaign(electors[i].clone(), i, Arc::clone(&terms)))
        .collect();
    let mut releasing: Vec<Option<tokio::task::JoinHandle<()>>> = vec![None, None];
    let k = Key::new(NS, MODEL, LEASE);
    let mut probe = model.sibling();
    let mut out = Vec::new();
    let check = |out: &mut Vec<String>, stored: Option<lease_core::Info>, now: Timestamp| {
        let terms = terms.lock().unwrap_or_else(|e| e.into_inner());
        let leading: Vec<(usize, Generation)> = terms
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.as_ref()
                    .filter(|g| g.is_leading())
                    .map(|g| (i, g.generation()))
            })
            .collect();
        let watched = electors
            .iter()
            .filter(|e| e.leadership().borrow().is_leading())
            .count();
        if leading.len() > 1 || watched > 1 {
            out.push(format!(
                "two leaders at {now}: guards {leading:?}, {watched} watches say leading"
            ));
        }
        for (i, generation) in leading {
            let ok = stored.as_ref().is_some_and(|s| {
                s.holder == format!("candidate-{i}") && s.generation == generation
            });
            if !ok {
                out.push(format!(
                    "candidate-{i} leads (generation {generation}) at {now}, but the model has \
                     {stored:?}"
                ));
            }
        }
    };
    for step in steps {
        match step {
            ElectionStep::Release { who } | ElectionStep::Drop { who } => {
                let guard = terms.lock().unwrap_or_else(|e| e.into_inner())[who].take();
                if let Some(guard) = guard {
                    if matches!(step, ElectionStep::Release { .. }) {
                        // Spawned: with injected latency the revoke waits for the clock. The
                        // candidate campaigns again only once it has its answer: a revoke still
                        // being retried would revoke the next term too (it names the holder,
                        // not the term).
                        releasing[who] = Some(tokio::spawn(async move {
                            let _ = guard.release().await;
                        }));
                    } else {
                        drop(guard);
                    }
                }
            }
            ElectionStep::Advance { millis } => clock.advance(Duration::from_millis(millis)),
        }
        settle().await;
        let stored = probe
            .leases(std::slice::from_ref(&k))
            .await
            .expect("model read")
            .remove(&k);
        check(&mut out, stored, clock.now());
        if !out.is_empty() {
            return out;
        }
        // A term that ended leaves its candidate campaigning again.
        for who in 0..2 {
            let ended = terms.lock().unwrap_or_else(|e| e.into_inner())[who]
                .as_ref()
                .is_some_and(|g| !g.is_leading());
            if ended {
                terms.lock().unwrap_or_else(|e| e.into_inner())[who] = None;
            }
            let released = releasing[who].as_ref().is_none_or(|r| r.is_finished());
            if released
                && campaigns[who].is_finished()
                && terms.lock().unwrap_or_else(|e| e.into_inner())[who].is_none()
            {
                campaigns[who] = campaign(electors[who].clone(), who, Arc::clone(&terms));
            }
        }
    }
    // Liveness: once the faults stop, someone leads within two lease durations.
    for h in &handles {
        h.set_enabled(false);
    }
    let led = drive(
        &clock,
        Duration::from_millis(250),
        Duration::from_secs(40),
        || {
            let mut terms_now = terms.lock().unwrap_or_else(|e| e.into_inner());
            for who in 0..2 {
                if terms_now[who].as_ref().is_some_and(|g| !g.is_leading()) {
                    terms_now[who] = None;
                }
                let released = releasing[who].as_ref().is_none_or(|r| r.is_finished());
                if released && campaigns[who].is_finished() && terms_now[who].is_none() {
                    campaigns[who] = campaign(electors[who].clone(), who, Arc::clone(&terms));
                }
            }
            terms_now
                .iter()
                .any(|t| t.as_ref().is_some_and(|g| g.is_leading()))
        },
    )
    .await;
    if !led {
        out.push("nobody leads 40 s after the faults stopped".to_owned());
    }
    terms.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for c in &campaigns {
        c.abort();
    }
    for m in &managers {
        let m = m.clone();
        let stop = tokio::spawn(async move { m.stop().await });
        drive(&clock, Duration::from_millis(100), ANSWER_WITHIN, || {
            stop.is_finished()
        })
        .await;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32)))]

    #[test]
    fn leaser_guards_never_overlap_under_faults(
        rates in fault_rates(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(leaser_step(), 1..60),
    ) {
        let problems = run(leaser_case(rates, seed, steps));
        prop_assert!(problems.is_empty(), "{rates:?}\n{}", problems.join("\n"));
    }

    #[test]
    fn never_two_leaders_under_faults(
        rates in fault_rates(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(election_step(), 1..60),
    ) {
        let problems = run(election_case(rates, seed, steps));
        prop_assert!(problems.is_empty(), "{rates:?}\n{}", problems.join("\n"));
    }
}

/// Regression test for a bug found by `never_two_leaders_under_faults` (before its candidates
/// were made to wait for their own releases), which needs no faults at all: a `LeaderElector` with
/// `release_on_cancel` whose guard is dropped revokes the lease in a background task; if it
/// campaigns again at once, its claim reaches the manager first and merely *extends* the old
/// claim (same identity, same generation), so it leads again; then the background revoke
/// (which names the holder, not the term) removes that lease. Another candidate takes it and
/// leads while the first still does, until the first one's next renewal fails. Fixed: `lock()`
/// waits for the elector's own background revokes. (A `release()` still being retried by the
/// manager overlapping a new `lock()` on the same elector is the caller's race: await it.)
#[tokio::test]
async fn a_dropped_guards_background_release_does_not_end_the_next_term() {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let start = |store: InMemoryStore| {
        Manager::start(
            ManagerConfig::new(store, clock.as_clock())
                .with_default_secretary(Arc::new(DefaultSecretary))
                .with_retry(retry(10)),
        )
        .unwrap()
    };
    let ma = start(model.sibling());
    let mb = start(model.sibling());
    let config =
        |who: &str| ElectionConfig::new(NS, MODEL, "leader", who).with_release_on_cancel(true);
    let a = LeaderElector::new(&ma, clock.as_clock(), config("a"), Callbacks::new()).unwrap();
    let b = LeaderElector::new(&mb, clock.as_clock(), config("b"), Callbacks::new()).unwrap();
    let first = a.lock().await.unwrap();
    let b_term = tokio::spawn(async move { b.lock().await });
    settle().await;
    // A steps down by dropping its guard, and campaigns again at once, from the same task (so
    // its claim can reach the manager before the background revoke does).
    drop(first);
    let a_lock = a.lock();
    tokio::pin!(a_lock);
    let mut a_guard = None;
    // Time moves in steps much shorter than a renewal period; one of them leads, never both.
    for _ in 0..100 {
        if a_guard.is_none() {
            tokio::select! {
                biased;
                r = &mut a_lock => a_guard = Some(r.unwrap()),
                () = settle() => {}
            }
        } else {
            settle().await;
        }
        let a_leads = a_guard
            .as_ref()
            .is_some_and(|g: &lease_manager::LeadershipGuard| g.is_leading());
        assert!(
            !(a_leads && b_term.is_finished()),
            "two leaders at {}",
            clock.now()
        );
        clock.advance(Duration::from_millis(50));
    }
    settle().await;
    assert!(
        a_guard.is_some() || b_term.is_finished(),
        "nobody leads after 5 s"
    );
}
