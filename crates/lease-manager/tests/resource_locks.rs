//! `ResourceLocks` on the fake clock: acquire, take-over of an expired lock, renew, release
//! (a no-op for other transactions), release_all, every error, and a fenced failover between
//! two transactions.

mod support;

use lease_core::{Error, Key, Store as _};
use lease_manager::{
    Fence, LeaseOp, LeaseOpError, ResourceKey, ResourceLockError, ResourceLocks, lease_name,
};
use lease_testkit::{FakeClock, InMemoryStore};
use support::*;

fn web() -> ResourceKey {
    ResourceKey::new("apps", "Deployment", "prod", "web")
}

async fn holder(backing: &InMemoryStore, name: &str) -> Option<String> {
    let mut probe = backing.sibling();
    let k = Key::new(NS, MODEL, name);
    probe
        .leases(std::slice::from_ref(&k))
        .await
        .unwrap()
        .remove(&k)
        .map(|i| i.holder)
}

#[tokio::test]
async fn acquire_renew_release() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 2);
    let locks1 = ResourceLocks::new(&procs[0].1, NS, MODEL).unwrap();
    let locks2 = ResourceLocks::new(&procs[1].1, NS, MODEL).unwrap();

    let lock = locks1.acquire(&web(), "txn-1", secs(30)).await.unwrap();
    assert_eq!(lock.lease_name, lease_name(&web()));
    assert_eq!(
        holder(&backing, &lock.lease_name).await.as_deref(),
        Some("txn-1")
    );
    // Acquiring again by the same transaction extends it under the same generation.
    let again = locks1.acquire(&web(), "txn-1", secs(30)).await.unwrap();
    assert_eq!(again, lock);

    match locks2.acquire(&web(), "txn-2", secs(30)).await {
        Err(ResourceLockError::AlreadyLocked { lease_name, holder }) => {
            assert_eq!(lease_name, lock.lease_name);
            assert_eq!(holder, "txn-1");
        }
        other => panic!("{other:?}"),
    }

    tick(&clock, secs(20)).await;
    assert_eq!(
        locks1
            .renew(&lock.lease_name, "txn-1", secs(30))
            .await
            .unwrap(),
        lock.generation
    );
    tick(&clock, secs(20)).await;
    assert_eq!(
        holder(&backing, &lock.lease_name).await.as_deref(),
        Some("txn-1"),
        "renewed: still held 40 s after a 30 s acquire"
    );

    // Releasing another transaction's lock is a no-op.
    locks2.release(&lock.lease_name, "txn-2").await.unwrap();
    assert_eq!(
        holder(&backing, &lock.lease_name).await.as_deref(),
        Some("txn-1")
    );
    locks1.release(&lock.lease_name, "txn-1").await.unwrap();
    assert_eq!(holder(&backing, &lock.lease_name).await, None);
    // Releasing what nobody holds is a no-op too.
    locks1.release(&lock.lease_name, "txn-1").await.unwrap();

    let next = locks2.acquire(&web(), "txn-2", secs(30)).await.unwrap();
    assert!(next.generation > lock.generation);
}

#[tokio::test]
async fn an_expired_lock_is_taken_over_and_its_renewal_fails() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 2);
    let locks1 = ResourceLocks::new(&procs[0].1, NS, MODEL).unwrap();
    let locks2 = ResourceLocks::new(&procs[1].1, NS, MODEL).unwrap();
    let fence = Fence::new();

    let old = locks1.acquire(&web(), "txn-1", secs(10)).await.unwrap();
    fence.admit(old.generation).unwrap();
    // txn-1 pauses past its lease.
    tick(&clock, secs(10)).await;
    match locks1.renew(&old.lease_name, "txn-1", secs(10)).await {
        Err(ResourceLockError::LockExpired { lease_name }) => {
            assert_eq!(lease_name, old.lease_name)
        }
        other => panic!("{other:?}"),
    }
    let new = locks2.acquire(&web(), "txn-2", secs(10)).await.unwrap();
    assert!(new.generation > old.generation);
    fence.admit(new.generation).unwrap();
    // The paused transaction is refused both by the lock and by the protected resource.
    match locks1.renew(&old.lease_name, "txn-1", secs(10)).await {
        Err(ResourceLockError::AlreadyLocked { holder, .. }) => assert_eq!(holder, "txn-2"),
        other => panic!("{other:?}"),
    }
    assert!(fence.admit(old.generation).is_err());
    // And its release does not disturb the new holder.
    locks1.release(&old.lease_name, "txn-1").await.unwrap();
    locks2
        .renew(&new.lease_name, "txn-2", secs(10))
        .await
        .unwrap();
}

#[tokio::test]
async fn release_all_tries_every_lease_and_returns_the_first_error() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let locks = ResourceLocks::new(&procs[0].1, NS, MODEL).unwrap();
    let a = locks
        .acquire(
            &ResourceKey::new("", "ConfigMap", "ns", "a"),
            "txn",
            secs(30),
        )
        .await
        .unwrap();
    let b = locks
        .acquire(
            &ResourceKey::new("", "ConfigMap", "ns", "b"),
            "txn",
            secs(30),
        )
        .await
        .unwrap();
    let err = locks
        .release_all(
            [
                a.lease_name.as_str(),
                "bad name",
                b.lease_name.as_str(),
                "x.y",
            ],
            "txn",
        )
        .await
        .unwrap_err();
    match err {
        ResourceLockError::Invalid(Error::Validation { field, value, .. }) => {
            assert_eq!((field, value.as_str()), ("lease", "bad name"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(holder(&backing, &a.lease_name).await, None);
    assert_eq!(
        holder(&backing, &b.lease_name).await,
        None,
        "tried after the error"
    );
    locks
        .release_all(Vec::<String>::new(), "txn")
        .await
        .unwrap();
}

#[tokio::test]
async fn errors_name_the_operation_and_the_input() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let locks = ResourceLocks::new(m, NS, MODEL).unwrap();

    for (key, txn, timeout, field) in [
        (ResourceKey::new("", "", "ns", "a"), "t", secs(1), "kind"),
        (ResourceKey::new("", "Pod", "ns", ""), "t", secs(1), "name"),
        (web(), "t x", secs(1), "txn"),
        (web(), "t", std::time::Duration::ZERO, "duration"),
    ] {
        match locks.acquire(&key, txn, timeout).await {
            Err(ResourceLockError::Invalid(Error::Validation { field: f, .. })) => {
                assert_eq!(f, field)
            }
            other => panic!("{field}: {other:?}"),
        }
    }

    let lock = locks.acquire(&web(), "txn-1", secs(30)).await.unwrap();
    store.set_broken(true);
    let cases = [
        (
            locks
                .acquire(&ResourceKey::new("", "Pod", "ns", "p"), "txn-1", secs(30))
                .await
                .err(),
            LeaseOp::Creating,
        ),
        (
            locks.renew(&lock.lease_name, "txn-2", secs(30)).await.err(),
            LeaseOp::Getting,
        ),
        (
            locks.release(&lock.lease_name, "txn-2").await.err(),
            LeaseOp::Getting,
        ),
    ];
    for (err, op) in cases {
        match err {
            Some(ResourceLockError::Op(LeaseOpError {
                op: o,
                ref lease_name,
                ref source,
            })) => {
                assert_eq!(o, op);
                assert!(lease_name.starts_with("resource-lock/"));
                assert_eq!(source.to_string(), "injected failure");
            }
            other => panic!("{op}: {other:?}"),
        }
    }
    // The holder's own renewal and release are answered from the manager's memory up to the
    // store call, which fails: renewing and deleting.
    match locks.renew(&lock.lease_name, "txn-1", secs(30)).await {
        Err(ResourceLockError::Op(e)) => {
            assert_eq!(e.op, LeaseOp::Renewing);
            assert_eq!(
                e.to_string(),
                format!("renewing lease {}: injected failure", lock.lease_name)
            );
        }
        other => panic!("{other:?}"),
    }
    match locks.release(&lock.lease_name, "txn-1").await {
        Err(ResourceLockError::Op(e)) => assert_eq!(e.op, LeaseOp::Deleting),
        other => panic!("{other:?}"),
    }
    store.set_broken(false);
    m.stop().await;
    assert!(ResourceLocks::new(m, NS, MODEL).unwrap_err().is_aborted());
}
