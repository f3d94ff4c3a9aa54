//! The requests the worker takes and the verdicts that end them: the worker's vocabulary.
//!
//! A caller's request arrives as a [`Command`] in an [`Envelope`]. A claim or revoke ends with
//! a [`Verdict`], which [`Pending::settle`](super::pending::Pending::settle) turns into its
//! caller's answer; a [`Command`] the worker cannot serve is answered by [`Command::fail`].

use std::collections::BTreeMap;

use lease_core::{Error, Generation, Info, Key, Request, Result, Timestamp};
use tokio::sync::oneshot;
use tracing::Span;

/// A caller's one-shot reply.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the worker.
#[derive(Debug)]
pub(crate) enum Command {
    Claim {
        key: Key,
        request: Request,
        /// The instant the caller's `claim` started, on the manager's clock.
        started: Timestamp,
        reply: Reply<Info>,
    },
    Revoke {
        key: Key,
        holder: String,
        reply: Reply<()>,
    },
    Check {
        key: Key,
        holder: String,
        /// Ask the store even when the view could answer.
        force_read: bool,
        reply: Reply<Generation>,
    },
    Wait {
        key: Key,
        reply: Reply<()>,
    },
    Pin {
        key: Key,
        entity: String,
        reply: Reply<()>,
    },
    Unpin {
        key: Key,
        entity: String,
        reply: Reply<()>,
    },
    Pinned {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Vec<String>>>,
    },
    LeaseGroup {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Info>>,
    },
}

impl Command {
    /// Answers the caller with `error`, whatever it asked.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Command::Claim { reply, .. } => drop(reply.send(Err(error))),
            Command::Revoke { reply, .. }
            | Command::Wait { reply, .. }
            | Command::Pin { reply, .. }
            | Command::Unpin { reply, .. } => drop(reply.send(Err(error))),
            Command::Check { reply, .. } => drop(reply.send(Err(error))),
            Command::Pinned { reply, .. } => drop(reply.send(Err(error))),
            Command::LeaseGroup { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// A request with the tracing span of the call that sent it.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) command: Command,
    pub(crate) span: Span,
}

/// How a claim or revoke ends: what its caller is told (and what is counted).
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A new holding (claim).
    Claimed(Info),
    /// The holder renewed its holding (claim).
    Extended(Info),
    /// Someone else holds the lease (claim: `ClaimDenied`; revoke: `NotHeld`).
    Denied,
    /// Still `Timeout` after the last attempt, or its outcome cannot be told.
    Timeout,
    /// The lease was revoked (revoke).
    Revoked,
    /// The holder does not hold the lease (revoke).
    NotHeld,
    /// The store failed, or said something a lease outcome does not cover.
    Failed(Error),
    /// The worker stopped before it could finish the request.
    Aborted,
    /// The store answered with the outcome of another kind of op (a broken store).
    Mismatched,
}

/// A copy of `e` (lease errors are not `Clone`): the same kind and message; a store error's
/// source is kept as text.
pub(crate) fn dup_error(e: &Error) -> Error {
    match e {
        Error::ClaimDenied => Error::ClaimDenied,
        Error::NotHeld => Error::NotHeld,
        Error::WaitCancelled => Error::WaitCancelled,
        Error::Invalid => Error::Invalid,
        Error::Held => Error::Held,
        Error::Timeout => Error::Timeout,
        Error::Aborted => Error::Aborted,
        Error::Validation {
            field,
            value,
            reason,
        } => Error::validation(field, value.clone(), reason.clone()),
        Error::Context { context, source } => dup_error(source).context(context.clone()),
        other => match std::error::Error::source(other) {
            Some(source) => Error::store(other.to_string(), source.to_string()),
            None => Error::store_msg(other.to_string()),
        },
    }
}

/// Whether `e` is one of the lease outcomes a store reports in normal operation (as opposed to
/// a failure of the store itself).
pub(crate) fn is_lease_outcome(e: &Error) -> bool {
    e.is_held() || e.is_invalid() || e.is_not_held() || e.is_timeout()
}
