//! The lease manager: one worker task that owns the [`Store`](lease_core::Store) and serialises
//! every call to it, and the facades programs use.
//!
//! Not written yet: this crate is an empty shell until its issue lands.
