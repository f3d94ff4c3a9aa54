//! [`PostgresStore`]: the [`Store`] on a Postgres schema, one transaction per op or batch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{Clock, Error, Info, Key, Op, Outcome, Request, Store, validate_string};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::changes::Listener;
use crate::connection::{ConnectionTask, Settings};
use crate::error::PostgresStoreError;
use crate::ops::{self, Conn, Moment};

/// The first and the longest wait between failed reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A lease [`Store`] on a Postgres database, shared by any number of processes on any number of
/// hosts. See the [crate documentation](crate) for time, faults and privileges.
///
/// The store is `Send` but not `Sync`; every method takes `&mut self`. It must be used inside a
/// tokio runtime (its connections are driven by spawned tasks).
pub struct PostgresStore {
    settings: Arc<Settings>,
    conn: Option<Conn>,
    /// Consecutive failed connection attempts, and when the next may be made.
    failures: u32,
    retry_at: Option<Instant>,
    /// Started by the first [`Store::change_notifier`] or [`Store::poll_changes`] call.
    listener: Option<Listener>,
    last_polled: Option<u64>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.settings.target.display)
            .field("schema", &self.settings.schema)
            .field("clock", &self.settings.clock)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    pub(crate) async fn from_parts(
        settings: Arc<Settings>,
        client: Client,
        task: ConnectionTask,
    ) -> Result<PostgresStore, PostgresStoreError> {
        let conn = Conn::prepare(&settings, client, task).await?;
        Ok(PostgresStore {
            settings,
            conn: Some(conn),
            failures: 0,
            retry_at: None,
            listener: None,
            last_polled: None,
        })
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.settings.schema
    }

    /// The clock expiries are reported on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.settings.clock
    }

    /// Deletes up to `limit` expired, unpinned lease rows and returns how many it deleted.
    /// Generations are kept, so later claims still get higher ones.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the server cannot be reached or the statement times out; other
    /// server failures as [`Error::Store`].
    pub async fn purge_expired(&mut self, limit: usize) -> lease_core::Result<usize> {
        let moment = self.moment();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let now = moment.param();
        let deadline = Instant::now() + self.settings.operation_timeout;
        let shared = Arc::clone(&self.settings);
        let settings = &*shared;
        let conn = self.conn(deadline).await?;
        let result = tokio::time::timeout_at(deadline, async {
            conn.client
                .execute(&conn.purge, &[&now, &limit])
                .await
                .map_err(|e| settings.target.error("purging expired leases", &e))
        })
        .await;
        let deleted = self.settle("purging expired leases", result)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn moment(&self) -> Moment {
        Moment {
            start: self.settings.clock.now(),
            local: self.settings.local_expiry,
        }
    }

    /// The open connection, reconnecting (after the backoff of earlier failures) when there is
    /// none.
    async fn conn(&mut self, deadline: Instant) -> Result<&Conn, PostgresStoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let settings = &self.settings;
            let timed_out = || PostgresStoreError::TimedOut {
                target: settings.target.display.clone(),
                action: "reconnecting",
                timeout: settings.operation_timeout,
            };
            if let Some(at) = self.retry_at {
                if at > deadline {
                    return Err(timed_out());
                }
                tokio::time::sleep_until(at).await;
            }
            let attempt = async {
                let (client, task) = settings.connect().await?;
                Conn::prepare(settings, client, task).await
            };
            let result = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            };
            match result {
                Ok(conn) => {
                    self.failures = 0;
                    self.retry_at = None;
                    self.conn = Some(conn);
                }
                Err(err) => {
                    self.failures = self.failures.saturating_add(1);
                    let backoff = BACKOFF_MIN
                        .saturating_mul(1 << self.failures.min(6))
                        .min(BACKOFF_MAX);
                    self.retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(
                        target = %settings.target.display,
                        error = %err,
                        ?backoff,
                        "cannot reconnect to the lease database"
                    );
                    return Err(match err {
                        // Mid-life, an unreachable server is an outage, not a configuration
                        // error: retry.
                        PostgresStoreError::Unreachable { target, reason } => {
                            PostgresStoreError::Transient {
                                target,
                                action: "reconnecting",
                                reason,
                            }
                        }
                        other => other,
                    });
                }
            }
        }
        self.conn.as_ref().ok_or_else(|| PostgresStoreError::Other {
            target: self.settings.target.display.clone(),
            action: "reconnecting",
            reason: "no connection".to_owned(),
        })
    }

    /// The result of a call made within the operation timeout; on any failure the connection
    /// is dropped, so the server rolls back whatever its transaction had done and holds nothing.
    fn settle<T>(
        &mut self,
        action: &'static str,
        result: Result<Result<T, PostgresStoreError>, tokio::time::error::Elapsed>,
    ) -> Result<T, PostgresStoreError> {
        let result = result.unwrap_or_else(|_| {
            Err(PostgresStoreError::TimedOut {
                target: self.settings.target.display.clone(),
                action,
                timeout: self.settings.operation_timeout,
            })
        });
        if let Err(err) = &result
            && let Some(conn) = self.conn.take()
            && matches!(err, PostgresStoreError::TimedOut { .. })
        {
            // The server may still be running (or waiting to run) what we gave up on; closing
            // our socket is not noticed until it next writes. Cancel it, so that it does not
            // take effect long after the caller was told it timed out.
            cancel_in_background(&self.settings, conn.client.cancel_token());
        }
        result
    }

    async fn apply_valid(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<lease_core::Result<Outcome>>, PostgresStoreError> {
        let moment = self.moment();
        let deadline = Instant::now() + self.settings.operation_timeout;
        let shared = Arc::clone(&self.settings);
        let settings = &*shared;
        let conn = self.conn(deadline).await?;
        let result =
            tokio::time::timeout_at(deadline, ops::apply(conn, settings, moment, ops)).await;
        self.settle("applying a batch", result)
    }

    async fn apply_batch(&mut self, ops: Vec<Op>) -> Vec<lease_core::Result<Outcome>> {
        // Validation first, before any I/O; an op that fails it fails alone.
        let mut results: Vec<Option<lease_core::Result<Outcome>>> = ops
            .iter()
            .map(|op| validate_op(op).err().map(Err))
            .collect();
        let valid: Vec<&Op> = ops
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_none())
            .map(|(op, _)| op)
            .collect();
        if valid.is_empty() {
            return results.into_iter().flatten().collect();
        }
        match self.apply_valid(&valid).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for slot in results.iter_mut().filter(|r| r.is_none()) {
                    *slot = outcomes.next();
                }
            }
            Err(err) => {
                // The transaction failed as a whole: nothing took effect (or, for a lost
                // commit, the outcome is unknown and the error is a Timeout): every op says so.
                let transient = err.is_transient();
                let message = err.to_string();
                let mut first = Some(Error::from(err));
                for slot in results.iter_mut().filter(|r| r.is_none()) {
                    let e = first.take().unwrap_or_else(|| {
                        let msg = format!("batch not applied: {message}");
                        if transient {
                            Error::Timeout.context(msg)
                        } else {
                            Error::store_msg(msg)
                        }
                    });
                    *slot = Some(Err(e));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::store_msg("operation was not applied"))))
            .collect()
    }

    async fn one(&mut self, op: Op) -> lease_core::Result<Outcome> {
        self.apply_batch(vec![op])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::store_msg("operation was not applied")))
    }

    /// A snapshot query: `which` picks the statement and its extra parameters.
    async fn read_snapshot(
        &mut self,
        which: Snapshot<'_>,
    ) -> lease_core::Result<BTreeMap<Key, Info>> {
        let moment = self.moment();
        let deadline = Instant::now() + self.settings.operation_timeout;
        let shared = Arc::clone(&self.settings);
        let settings = &*shared;
        let conn = self.conn(deadline).await?;
        let now = moment.param();
        let result = tokio::time::timeout_at(deadline, async {
            let rows = match which {
                Snapshot::All => conn.client.query(&conn.snapshot_all, &[&now]).await,
                Snapshot::Keys(keys) => {
                    let ns: Vec<&str> = keys.iter().map(|k| k.namespace.as_str()).collect();
                    let models: Vec<&str> = keys.iter().map(|k| k.model.as_str()).collect();
                    let names: Vec<&str> = keys.iter().map(|k| k.lease.as_str()).collect();
                    conn.client
                        .query(&conn.snapshot_keys, &[&now, &ns, &models, &names])
                        .await
                }
                Snapshot::Group(namespace, model) => {
                    conn.client
                        .query(&conn.snapshot_group, &[&now, &namespace, &model])
                        .await
                }
            }
            .map_err(|e| settings.target.error("reading leases", &e))?;
            ops::snapshot(settings, moment, &rows)
        })
        .await;
        Ok(self.settle("reading leases", result)?)
    }

    async fn pin_or_unpin(&mut self, key: &Key, entity: &str, pin: bool) -> lease_core::Result<()> {
        key.validate()?;
        validate_string("entity", entity)?;
        let deadline = Instant::now() + self.settings.operation_timeout;
        let shared = Arc::clone(&self.settings);
        let settings = &*shared;
        let conn = self.conn(deadline).await?;
        let statement = if pin { &conn.pin } else { &conn.unpin };
        let action = if pin {
            "pinning a lease"
        } else {
            "unpinning a lease"
        };
        let origin = settings.origin.as_str();
        let result = tokio::time::timeout_at(deadline, async {
            conn.client
                .execute(
                    statement,
                    &[&key.namespace, &key.model, &key.lease, &entity, &origin],
                )
                .await
                .map(|_| ())
                .map_err(|e| settings.target.error(action, &e))
        })
        .await;
        Ok(self.settle(action, result)?)
    }

    fn listener(&mut self) -> Option<&Listener> {
        if self.listener.is_none() {
            self.listener = Listener::start(Arc::clone(&self.settings));
        }
        self.listener.as_ref()
    }
}

/// Sends a cancel request for the statement `token`'s connection is running, best effort.
fn cancel_in_background(settings: &Settings, token: tokio_postgres::CancelToken) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    #[cfg(feature = "tls")]
    let tls = settings.tls;
    #[cfg(not(feature = "tls"))]
    let _ = settings;
    runtime.spawn(async move {
        #[cfg(feature = "tls")]
        if tls {
            let _ = token.cancel_query(crate::tls::connector()).await;
            return;
        }
        let _ = token.cancel_query(tokio_postgres::NoTls).await;
    });
}

enum Snapshot<'a> {
    All,
    Keys(&'a [Key]),
    Group(&'a str, &'a str),
}

/// Validates one op's inputs, as the single-op methods do.
fn validate_op(op: &Op) -> lease_core::Result<()> {
    match op {
        Op::Claim { key, request } | Op::Extend { key, request } => {
            key.validate()?;
            request.validate()
        }
        Op::Revoke { key, holder } => {
            key.validate()?;
            validate_string("holder", holder)
        }
    }
}

fn unexpected(outcome: Outcome) -> Error {
    Error::store_msg(format!("unexpected outcome {outcome:?}"))
}

#[async_trait]
impl Store for PostgresStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> lease_core::Result<Info> {
        let op = Op::Claim {
            key: key.clone(),
            request: request.clone(),
        };
        match self.one(op).await? {
            Outcome::Claimed(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> lease_core::Result<Info> {
        let op = Op::Extend {
            key: key.clone(),
            request: request.clone(),
        };
        match self.one(op).await? {
            Outcome::Extended(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> lease_core::Result<()> {
        let op = Op::Revoke {
            key: key.clone(),
            holder: holder.to_owned(),
        };
        match self.one(op).await? {
            Outcome::Revoked => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn leases(&mut self, keys: &[Key]) -> lease_core::Result<BTreeMap<Key, Info>> {
        for key in keys {
            key.validate()?;
        }
        if keys.is_empty() {
            self.read_snapshot(Snapshot::All).await
        } else {
            self.read_snapshot(Snapshot::Keys(keys)).await
        }
    }

    async fn lease_group(
        &mut self,
        namespace: &str,
        model: &str,
    ) -> lease_core::Result<BTreeMap<Key, Info>> {
        validate_string("namespace", namespace)?;
        validate_string("model", model)?;
        self.read_snapshot(Snapshot::Group(namespace, model)).await
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        self.pin_or_unpin(key, entity, true).await
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        self.pin_or_unpin(key, entity, false).await
    }

    /// Every pinned key, including absent leases whose pins wait for their next claimant.
    async fn pinned(&mut self) -> lease_core::Result<BTreeMap<Key, Vec<String>>> {
        let deadline = Instant::now() + self.settings.operation_timeout;
        let shared = Arc::clone(&self.settings);
        let settings = &*shared;
        let conn = self.conn(deadline).await?;
        let result = tokio::time::timeout_at(deadline, async {
            let rows = conn
                .client
                .query(&conn.pinned, &[])
                .await
                .map_err(|e| settings.target.error("reading pins", &e))?;
            let mut out: BTreeMap<Key, Vec<String>> = BTreeMap::new();
            for row in rows {
                let key = Key::new(
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                    row.get::<_, String>(2),
                );
                out.entry(key).or_default().push(row.get(3));
            }
            Ok(out)
        })
        .await;
        Ok(self.settle("reading pins", result)?)
    }

    /// The whole batch in one transaction, sent in one round trip (`BEGIN`, one function call
    /// per op, `COMMIT`, pipelined). Ops that fail validation fail alone, before it; if the
    /// transaction fails, every other op gets the error and none took effect, or, when the
    /// connection was lost before the commit's answer, every op gets
    /// [`Error::Timeout`] (the outcome is unknown).
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<lease_core::Result<Outcome>> {
        self.apply_batch(ops).await
    }

    /// Whether another store has written since the last poll, as the change listener's
    /// `NOTIFY`s tell; always true while the listener is not connected (its first poll, after
    /// a lost connection), so the manager falls back to re-reading at every refresh.
    async fn poll_changes(&mut self) -> lease_core::Result<bool> {
        let Some(current) = self.listener().map(Listener::current) else {
            return Ok(true);
        };
        if self.last_polled == Some(current) {
            // Let the listener task handle notifications that have already arrived.
            tokio::task::yield_now().await;
        }
        let Some(listener) = self.listener() else {
            return Ok(true);
        };
        let current = listener.current();
        let healthy = listener.is_healthy();
        let changed = !healthy || self.last_polled != Some(current);
        self.last_polled = Some(current);
        Ok(changed)
    }

    /// A counter bumped when another store (of any process on any host) commits a write to the
    /// schema, through `LISTEN`/`NOTIFY` on a dedicated connection, and whenever that connection
    /// is lost or re-established (changes may have been missed). The first call starts the
    /// listener; it stops when the store is dropped.
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.listener().map(Listener::receiver)
    }
}
