//! The requests the worker takes, and the one way each is answered.
//!
//! A caller's request arrives as a [`Command`] in an [`Envelope`]. Claims and revokes become a
//! [`Pending`] (they may be batched, retried and re-decided); everything else stays a
//! [`Command`]. A [`Pending`] is answered only by [`Pending::settle`], which also records the
//! outcome; a [`Command`] the worker cannot serve is answered by [`Command::fail`].

use std::collections::BTreeMap;

use lease_core::{Error, Generation, Info, Key, Request, Result, Timestamp};
use tokio::sync::oneshot;
use tracing::Span;

use super::recorder::Recorder;

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

/// A claim or revoke, from its arrival to its answer (possibly through retries).
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) key: Key,
    pub(crate) kind: PendingKind,
    /// Store attempts made so far.
    pub(crate) attempts: u32,
    /// A claim that was sent as an extend: its holder held the lease, and the caller asked to
    /// keep that holding. It stays an extend on every retry, so a retry can never re-claim a
    /// lease that was revoked, lapsed or taken by another in the meantime.
    pub(crate) extend: bool,
    pub(crate) span: Span,
}

#[derive(Debug)]
pub(crate) enum PendingKind {
    Claim {
        request: Request,
        started: Timestamp,
        reply: Reply<Info>,
    },
    Revoke {
        holder: String,
        reply: Reply<()>,
    },
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

impl Pending {
    /// Whether the caller has gone (its reply receiver is dropped: the call was cancelled or
    /// timed out). Its request must not be acted on any more: a renewal retried after its
    /// caller released the lease would re-claim it for nobody, and a revoke retried after its
    /// caller claimed again would end a holding someone relies on.
    pub(crate) fn caller_gone(&self) -> bool {
        match &self.kind {
            PendingKind::Claim { reply, .. } => reply.is_closed(),
            PendingKind::Revoke { reply, .. } => reply.is_closed(),
        }
    }

    pub(crate) fn is_claim(&self) -> bool {
        matches!(self.kind, PendingKind::Claim { .. })
    }

    /// Answers the caller and records the outcome: the one place a claim or revoke ends.
    pub(crate) fn settle(self, verdict: Verdict, recorder: &Recorder) {
        let namespace = &self.key.namespace;
        match self.kind {
            PendingKind::Claim { reply, .. } => {
                recorder.claim_answered(namespace, &verdict);
                let result = match verdict {
                    Verdict::Claimed(info) | Verdict::Extended(info) => Ok(info),
                    Verdict::Denied => Err(Error::ClaimDenied),
                    Verdict::Timeout => Err(Error::Timeout),
                    Verdict::NotHeld => Err(Error::NotHeld),
                    Verdict::Failed(e) => Err(e),
                    Verdict::Aborted => Err(Error::Aborted),
                    Verdict::Revoked | Verdict::Mismatched => Err(Error::store_msg(
                        "lease store answered a claim with a revoke",
                    )),
                };
                let _ = reply.send(result);
            }
            PendingKind::Revoke { reply, .. } => {
                recorder.revoke_answered(namespace, &verdict);
                let result = match verdict {
                    Verdict::Revoked => Ok(()),
                    Verdict::Denied | Verdict::NotHeld => Err(Error::NotHeld),
                    Verdict::Timeout => Err(Error::Timeout),
                    Verdict::Failed(e) => Err(e),
                    Verdict::Aborted => Err(Error::Aborted),
                    Verdict::Claimed(_) | Verdict::Extended(_) | Verdict::Mismatched => Err(
                        Error::store_msg("lease store answered a revoke with a claim"),
                    ),
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// A request as it arrives: a claim or revoke, or another command.
#[derive(Debug)]
pub(crate) enum Work {
    Op(Pending),
    Other(Command, Span),
}

impl Work {
    pub(crate) fn from_envelope(env: Envelope) -> Work {
        match env.command {
            Command::Claim {
                key,
                request,
                started,
                reply,
            } => Work::Op(Pending {
                key,
                kind: PendingKind::Claim {
                    request,
                    started,
                    reply,
                },
                attempts: 0,
                extend: false,
                span: env.span,
            }),
            Command::Revoke { key, holder, reply } => Work::Op(Pending {
                key,
                kind: PendingKind::Revoke { holder, reply },
                attempts: 0,
                extend: false,
                span: env.span,
            }),
            other => Work::Other(other, env.span),
        }
    }

    pub(crate) fn abort(self, recorder: &Recorder) {
        match self {
            Work::Op(p) => p.settle(Verdict::Aborted, recorder),
            Work::Other(command, _) => command.fail(Error::Aborted),
        }
    }
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
