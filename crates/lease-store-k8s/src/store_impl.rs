//! The one [`Store`](lease_core::Store) implementation both Kubernetes stores share.

/// Implements [`Store`](lease_core::Store) for a store type whose `engine` field is an
/// [`Engine`](crate::engine::Engine): every method forwards to the engine, so the two Kubernetes stores cannot drift
/// apart. What each operation sends to the API server is on the store types' docs.
macro_rules! store_via_engine {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl lease_core::Store for $store {
            /// Claims through a conditional create (absent object) or replace (free or expired).
            ///
            /// # Errors
            ///
            /// As [`Store::claim_lease`](lease_core::Store::claim_lease); see
            /// [`K8sStoreError`](crate::K8sStoreError) for how API failures map.
            async fn claim_lease(
                &mut self,
                key: &lease_core::Key,
                request: &lease_core::Request,
            ) -> lease_core::Result<lease_core::Info> {
                self.engine.claim(key, request).await
            }

            /// Extends with one conditional replace of the last object seen (no read when it is
            /// current).
            ///
            /// # Errors
            ///
            /// As [`Store::extend_lease`](lease_core::Store::extend_lease).
            async fn extend_lease(
                &mut self,
                key: &lease_core::Key,
                request: &lease_core::Request,
            ) -> lease_core::Result<lease_core::Info> {
                self.engine.extend(key, request).await
            }

            /// Revokes by clearing the holder (as client-go's release does); the object and its
            /// generation stay.
            ///
            /// # Errors
            ///
            /// As [`Store::revoke_lease`](lease_core::Store::revoke_lease).
            async fn revoke_lease(
                &mut self,
                key: &lease_core::Key,
                holder: &str,
            ) -> lease_core::Result<()> {
                self.engine.revoke(key, holder).await
            }

            /// # Errors
            ///
            /// As [`Store::leases`](lease_core::Store::leases).
            async fn leases(
                &mut self,
                keys: &[lease_core::Key],
            ) -> lease_core::Result<std::collections::BTreeMap<lease_core::Key, lease_core::Info>>
            {
                self.engine.leases(keys).await
            }

            /// One label-selected list (or the watch's cache).
            ///
            /// # Errors
            ///
            /// As [`Store::lease_group`](lease_core::Store::lease_group).
            async fn lease_group(
                &mut self,
                namespace: &str,
                model: &str,
            ) -> lease_core::Result<std::collections::BTreeMap<lease_core::Key, lease_core::Info>>
            {
                self.engine.lease_group(namespace, model).await
            }

            /// # Errors
            ///
            /// As [`Store::pin_lease`](lease_core::Store::pin_lease).
            async fn pin_lease(
                &mut self,
                key: &lease_core::Key,
                entity: &str,
            ) -> lease_core::Result<()> {
                self.engine.set_pin(key, entity, true).await
            }

            /// # Errors
            ///
            /// As [`Store::unpin_lease`](lease_core::Store::unpin_lease).
            async fn unpin_lease(
                &mut self,
                key: &lease_core::Key,
                entity: &str,
            ) -> lease_core::Result<()> {
                self.engine.set_pin(key, entity, false).await
            }

            /// # Errors
            ///
            /// As [`Store::pinned`](lease_core::Store::pinned).
            async fn pinned(
                &mut self,
            ) -> lease_core::Result<std::collections::BTreeMap<lease_core::Key, Vec<String>>> {
                self.engine.pinned().await
            }

            /// Compares the watch's change counter with the last call's: no API request. Starts
            /// the watch on first use (and then says yes).
            ///
            /// # Errors
            ///
            /// Never.
            async fn poll_changes(&mut self) -> lease_core::Result<bool> {
                Ok(self.engine.poll_changes().await)
            }

            /// A counter bumped on every change another process makes to this store's objects,
            /// fed by a Kubernetes watch started on first call. `None` outside a tokio runtime.
            fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
                self.engine.change_notifier()
            }
        }
    };
}
pub(crate) use store_via_engine;
