//! A claim or revoke from its arrival to its answer, and the one way it is answered.
//!
//! Claims and revokes become a [`Pending`] (they may be batched, retried and re-decided);
//! everything else stays a [`Command`] inside [`Work`]. A [`Pending`] is answered only by
//! [`Pending::settle`], which also records the outcome.

use lease_core::{Error, Info, Key, Request, Timestamp};
use tracing::Span;

use super::command::{Command, Envelope, Reply, Verdict};
use super::recorder::Recorder;

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
/// Answers decided but not sent yet: a batch's answers are held while the worker hands the
/// store its next call, so that the callers (woken by each answer, and competing for the
/// runtime's threads) do not delay that call. Sent with [`Answers::send`]; never held across
/// a wait for the store.
#[derive(Debug, Default)]
pub(crate) struct Answers(Vec<(Pending, Verdict)>);

impl Answers {
    /// Holds `verdict` for `pending`'s caller.
    pub(crate) fn hold(&mut self, pending: Pending, verdict: Verdict) {
        self.0.push((pending, verdict));
    }

    /// Makes room for `n` more answers.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    /// How many answers are held.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether any answer is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sends every held answer ([`Pending::settle`]).
    pub(crate) fn send(self, recorder: &Recorder) {
        for (pending, verdict) in self.0 {
            pending.settle(verdict, recorder);
        }
    }
}

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
