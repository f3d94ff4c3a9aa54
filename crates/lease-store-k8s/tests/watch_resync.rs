//! A follower's cost after the API server goes away and comes back, on a real API server: its
//! watch follows again and its requests drop back to none (one open watch) within seconds.
//!
//! The shared server is not restarted: the store reaches it through a TCP proxy on 127.0.0.1
//! that the test cuts (every open connection dropped, new ones refused: what clients see of a
//! restarting API server) and restores. Requests are counted by a tower layer in the store's
//! client.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo nextest run -p lease-store-k8s --run-ignored all`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use kube::client::{Body, ClientBuilder};
use lease_core::{Key, Request, Store};
use lease_store_k8s::LeaseObjectStore;
use lease_testkit::FakeClock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::util::MapRequestLayer;

use common::{NamespaceGuard, admin_config, client};

/// A TCP proxy to the API server that can be cut and restored.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: open connections close when it changes.
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let cut = Arc::clone(&cut);
            let epoch = epoch.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut closed = epoch.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = closed.changed() => {}
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            cut,
            epoch,
            task,
        }
    }

    /// Drops every open connection and refuses new ones (`true`), or accepts again.
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.epoch.send_modify(|e| *e += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client through `proxy` that counts its requests in `count`.
fn counted_proxied_client(config: &kube::Config, proxy: &Proxy, count: &Arc<AtomicU64>) -> Client {
    let mut config = config.clone();
    let url = config.cluster_url.clone();
    let host = url.host().expect("a cluster host");
    config.cluster_url = format!("https://{host}:{}", proxy.addr.port())
        .parse()
        .unwrap();
    let count = Arc::clone(count);
    let layer = MapRequestLayer::new(move |request: http::Request<Body>| {
        count.fetch_add(1, Ordering::SeqCst);
        request
    });
    ClientBuilder::try_from(config)
        .expect("a client builder")
        .with_layer(&layer)
        .build()
}

/// One follower round, as an elector's follower does it: re-read only when the store says
/// something changed.
async fn follow(store: &mut LeaseObjectStore, key: &Key) -> bool {
    let changed = store.poll_changes().await.unwrap();
    if changed {
        let _ = store.leases(std::slice::from_ref(key)).await;
    }
    changed
}

/// Follows every 100 ms until a poll says "no change" `n` times in a row; returns when.
async fn follow_until_quiet(
    store: &mut LeaseObjectStore,
    key: &Key,
    n: usize,
    limit: Duration,
) -> Instant {
    let started = Instant::now();
    let mut quiet = 0;
    while quiet < n {
        assert!(
            started.elapsed() < limit,
            "the follower still re-reads {limit:?} later: its watch never reports synced again"
        );
        quiet = if follow(store, key).await {
            0
        } else {
            quiet + 1
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn a_follower_is_back_to_one_watch_after_the_server_returns() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "watch-resync")
        .await
        .unwrap();
    let url = config.cluster_url.clone();
    let upstream = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(443));
    let proxy = Proxy::start(upstream).await;
    let key = Key::new("resync", "model-1", "lease");
    let mut leader = LeaseObjectStore::new(
        client(&config),
        ns.name.clone(),
        FakeClock::new().as_clock(),
    );
    leader
        .claim_lease(&key, &Request::new("leader", Duration::from_secs(30)))
        .await
        .unwrap();

    let count = Arc::new(AtomicU64::new(0));
    let mut follower = LeaseObjectStore::new(
        counted_proxied_client(&config, &proxy, &count),
        ns.name.clone(),
        FakeClock::new().as_clock(),
    );
    follow_until_quiet(&mut follower, &key, 5, Duration::from_secs(30)).await;
    // Steady state: no request at all for 2 s of following (the watch stays open).
    let before = count.load(Ordering::SeqCst);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert!(!follow(&mut follower, &key).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "requests while following"
    );

    for round in 0..2 {
        // The server goes away for 3 s: the follower notices and re-reads meanwhile.
        proxy.set_cut(true);
        let cut_at = Instant::now();
        let mut saw_change = false;
        while cut_at.elapsed() < Duration::from_secs(3) {
            saw_change |= follow(&mut follower, &key).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(saw_change, "round {round}: the broken watch went unnoticed");

        // It is back: within a few seconds the follower costs nothing again.
        proxy.set_cut(false);
        let back = Instant::now();
        let quiet_at = follow_until_quiet(&mut follower, &key, 5, Duration::from_secs(20)).await;
        println!(
            "round {round}: quiet {:.2} s after the server came back",
            quiet_at.duration_since(back).as_secs_f64()
        );
        let before = count.load(Ordering::SeqCst);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            assert!(!follow(&mut follower, &key).await, "round {round}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            before,
            "round {round}: requests per 3 s of following after the server came back"
        );
        // And it still follows: a change made meanwhile is reported.
        leader
            .extend_lease(&key, &Request::new("leader", Duration::from_secs(30)))
            .await
            .unwrap();
        let started = Instant::now();
        while !follower.poll_changes().await.unwrap() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "round {round}: the renewal never arrived through the watch"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
