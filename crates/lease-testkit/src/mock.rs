//! [`MockStore`]: a [`Store`] built with `mockall`, for tests that set expectations on each
//! store call (arguments, counts, order through a `mockall::Sequence`) and script its results.
//!
//! Every method is mocked, the trait's provided ones (`apply`, `poll_changes`,
//! `change_notifier`) included, so a test states exactly what the code under test may call.
//! For a strict, ordered script of calls with readable failure messages, see
//! [`ScriptedStore`](crate::ScriptedStore).
//!
//! ```
//! use std::time::Duration;
//! use lease_core::{Error, Generation, Info, Key, Request, Store, Timestamp};
//! use lease_testkit::MockStore;
//! use mockall::predicate::eq;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let key = Key::new("ns", "model", "lease");
//! let request = Request::new("holder", Duration::from_secs(10));
//!
//! let mut store = MockStore::new();
//! store
//!     .expect_claim_lease()
//!     .with(eq(key.clone()), eq(request.clone()))
//!     .times(1)
//!     .returning(|_, r| {
//!         Ok(Info {
//!             holder: r.holder.clone(),
//!             expiry: Timestamp::from_nanos(10),
//!             generation: Generation(7),
//!             metadata: None,
//!             pinned: false,
//!         })
//!     });
//! store
//!     .expect_revoke_lease()
//!     .returning(|_, _| Err(Error::NotHeld));
//!
//! let info = store.claim_lease(&key, &request).await.unwrap();
//! assert_eq!(info.generation, Generation(7));
//! assert!(store.revoke_lease(&key, "other").await.unwrap_err().is_not_held());
//! # }
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use lease_core::{Info, Key, Op, Outcome, Request, Result, Store};
use mockall::mock;

mock! {
    /// A `mockall` mock of [`Store`]: `MockStore::new()`, then `expect_claim_lease()`,
    /// `expect_leases()`, … for each method; unexpected calls panic, and unmet `times`
    /// expectations panic when the mock is dropped.
    pub Store {}

    #[async_trait]
    impl Store for Store {
        async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info>;
        async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info>;
        async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()>;
        async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>>;
        async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>>;
        async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()>;
        async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()>;
        async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>>;
        async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>>;
        async fn poll_changes(&mut self) -> Result<bool>;
        fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>>;
    }
}
