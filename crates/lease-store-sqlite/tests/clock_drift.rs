//! Clock drift between the processes sharing one file. What the store guarantees: a claim or
//! extend records its expiry as an instant on the *writer's* clock (its reading at the start
//! of the transaction, plus the duration; an extend never lowers it), and every opener judges
//! that instant on *its own* clock, without re-basing it. So the store is exact when every
//! opener reads the one clock, as they do in production (`CLOCK_BOOTTIME`, shared by every
//! process of the host; the boot id guards the rest). When openers' clocks disagree (only
//! injected clocks can: a `FakeClock` per store here), an opener whose clock reads `Δ` ahead
//! of the holder's frees the lease `Δ` early in true time, and a slower opener frees it late;
//! a holder is safe only if it stops `Δ` before its own window ends, where `Δ` is how far the
//! fastest opener's clock reads ahead of its own at any point of the window (a rate drift
//! is an offset that grows between writes).
//!
//! Each "process" is a store with a session of its own on one file, and its own fake clock.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Key, Request, Store, Timestamp};
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::FakeClock;

const TTL: Duration = Duration::from_secs(60);

fn key() -> Key {
    Key::new("ns", "model", "job")
}

fn open(db: &std::path::Path, clock: &Arc<FakeClock>) -> SqliteStore {
    SqliteStore::builder(db)
        .clock(clock.clone())
        .session_scope(SessionScope::Store)
        .open()
        .unwrap()
}

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("leases.db");
    (dir, db)
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_nanos(secs * 1_000_000_000)
}

async fn try_take(store: &mut SqliteStore) -> bool {
    match store.claim_lease(&key(), &Request::new("taker", TTL)).await {
        Ok(_) => true,
        Err(Error::Held) => false,
        Err(e) => panic!("{e}"),
    }
}

/// Openers whose clocks read ahead of or behind the holder's see the one recorded expiry (the
/// holder's clock + the duration, not re-based) and free the lease when their own clock
/// reaches it: not a nanosecond before.
#[tokio::test]
async fn each_opener_frees_a_lease_when_its_own_clock_reaches_the_recorded_expiry() {
    for offset_secs in [0_i64, 10, -10, 59, 61, -3600] {
        let (_dir, db) = temp_db();
        let base = 10_000;
        let holder_clock = Arc::new(FakeClock::starting_at(at(base)));
        let other_at = base.checked_add_signed(offset_secs).unwrap();
        let other_clock = Arc::new(FakeClock::starting_at(at(other_at)));
        let mut holder = open(&db, &holder_clock);
        let mut other = open(&db, &other_clock);
        let info = holder
            .claim_lease(&key(), &Request::new("holder", TTL))
            .await
            .unwrap();
        assert_eq!(
            info.expiry,
            at(base).saturating_add(TTL),
            "the writer's clock"
        );
        let seen = other.leases(&[key()]).await.unwrap();
        match seen.get(&key()) {
            // The other clock is already past the expiry: the lease is not live for it.
            None => assert!(at(other_at) >= info.expiry, "offset {offset_secs}"),
            Some(i) => assert_eq!(i.expiry, info.expiry, "offset {offset_secs}: not re-based"),
        }
        if at(other_at) < info.expiry {
            other_clock.set(info.expiry.saturating_sub(Duration::from_nanos(1)));
            assert!(
                !try_take(&mut other).await,
                "offset {offset_secs}: taken before the taker's clock read the expiry"
            );
        }
        other_clock.set(other_clock.now().max(info.expiry));
        assert!(
            try_take(&mut other).await,
            "offset {offset_secs}: not free once the taker's clock read the expiry"
        );
    }
}

/// A holder whose clock reads behind (a slow clock, or a second process of the holder with
/// one) extends: the recorded expiry never moves back, so its extends never free the lease
/// earlier for a faster opener than the earlier write promised.
#[tokio::test]
async fn an_extend_from_a_clock_behind_never_lowers_the_recorded_expiry() {
    let (_dir, db) = temp_db();
    let ahead = Arc::new(FakeClock::starting_at(at(1_000)));
    let behind = Arc::new(FakeClock::starting_at(at(950)));
    let mut first = open(&db, &ahead);
    let request = Request::new("holder", TTL);
    let claimed = first.claim_lease(&key(), &request).await.unwrap();
    let mut second = open(&db, &behind);
    let extended = second.extend_lease(&key(), &request).await.unwrap();
    assert_eq!(
        extended.expiry, claimed.expiry,
        "an extend lowered the expiry"
    );
    assert_eq!(extended.generation, claimed.generation);
    let mut other = open(&db, &ahead);
    ahead.set(claimed.expiry.saturating_sub(Duration::from_nanos(1)));
    assert!(!try_take(&mut other).await);
}

/// The bound, walked through time: a holder renews every 20 s and then stops (dies, or is
/// paused); another opener, whose clock reads `delta` ahead of the holder's, tries to take
/// the lease at every step. A holder that acts until `start + TTL - delta` on its own clock
/// after each successful call never overlaps the taker; one that acts for the full `TTL`
/// overlaps it by `delta`.
#[tokio::test]
async fn a_holder_stopping_delta_early_never_overlaps_an_opener_delta_ahead() {
    for delta_secs in [0_u64, 1, 5, 30] {
        let delta = Duration::from_secs(delta_secs);
        let (_dir, db) = temp_db();
        let holder_clock = Arc::new(FakeClock::starting_at(at(5_000)));
        let taker_clock = Arc::new(FakeClock::starting_at(at(5_000).saturating_add(delta)));
        let mut holder = open(&db, &holder_clock);
        let mut taker = open(&db, &taker_clock);
        let request = Request::new("holder", TTL);
        let step = Duration::from_millis(250);
        // True time is the holder's clock; the taker's reads `delta` more.
        let mut last_start = None;
        let mut taken_at = None;
        let mut renewals = 0;
        while taken_at.is_none() {
            let now = holder_clock.now();
            if renewals < 5
                && last_start.is_none_or(|s: Timestamp| {
                    now.saturating_duration_since(s) >= Duration::from_secs(20)
                })
            {
                if last_start.is_none() {
                    holder.claim_lease(&key(), &request).await.unwrap();
                } else {
                    holder.extend_lease(&key(), &request).await.unwrap();
                }
                last_start = Some(now);
                renewals += 1;
            } else if try_take(&mut taker).await {
                taken_at = Some(now);
            }
            holder_clock.advance(step);
            taker_clock.advance(step);
        }
        let (start, taken) = (last_start.unwrap(), taken_at.unwrap());
        let with_margin = start.saturating_add(TTL.saturating_sub(delta));
        let full = start.saturating_add(TTL);
        assert!(
            with_margin <= taken,
            "delta {delta_secs}s: the holder's window with the margin ends at {with_margin:?}, \
             after the taker took the lease at {taken:?}"
        );
        // And the margin is needed: the full window overlaps the taker by `delta` (to a step).
        let overlap = full.saturating_duration_since(taken);
        assert!(
            overlap <= delta && delta.saturating_sub(overlap) <= step,
            "delta {delta_secs}s: overlap {overlap:?}"
        );
    }
}
