//! The statements of one connection, and how a batch of ops is sent and its rows read back.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Outcome, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::connection::{ConnectionTask, Settings};
use crate::error::PostgresStoreError;

/// One open connection with its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    _task: ConnectionTask,
    begin: Statement,
    commit: Statement,
    claim: Statement,
    extend: Statement,
    revoke: Statement,
    pub(crate) pin: Statement,
    pub(crate) unpin: Statement,
    pub(crate) snapshot_all: Statement,
    pub(crate) snapshot_keys: Statement,
    pub(crate) snapshot_group: Statement,
    pub(crate) pinned: Statement,
    pub(crate) purge: Statement,
}

/// The columns every snapshot selects, in [`snapshot_row`]'s order.
const SNAPSHOT: &str = "SELECT l.namespace, l.model, l.name, l.holder, l.expiry, l.generation, \
     l.metadata, EXISTS (SELECT 1 FROM {s}.pin p WHERE p.namespace = l.namespace \
     AND p.model = l.model AND p.name = l.name) AS pinned, n.now \
     FROM (SELECT {s}.now_ns($1) AS now) n CROSS JOIN {s}.lease l \
     WHERE (l.expiry > n.now OR EXISTS (SELECT 1 FROM {s}.pin p WHERE p.namespace = l.namespace \
     AND p.model = l.model AND p.name = l.name))";

impl Conn {
    /// Prepares every statement on a fresh connection.
    pub(crate) async fn prepare(
        settings: &Settings,
        client: Client,
        task: ConnectionTask,
    ) -> Result<Conn, PostgresStoreError> {
        let s = &settings.schema;
        let sql = |text: &str| text.replace("{s}", s);
        let prep = |text: String| {
            let client = &client;
            async move {
                client
                    .prepare(&text)
                    .await
                    .map_err(|e| settings.target.error("preparing statements", &e))
            }
        };
        Ok(Conn {
            begin: prep("BEGIN".into()).await?,
            commit: prep("COMMIT".into()).await?,
            claim: prep(sql(
                "SELECT * FROM {s}.claim($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
            .await?,
            extend: prep(sql(
                "SELECT * FROM {s}.extend($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
            .await?,
            revoke: prep(sql("SELECT {s}.revoke($1, $2, $3, $4, $5, $6)")).await?,
            pin: prep(sql("SELECT {s}.pin($1, $2, $3, $4, $5)")).await?,
            unpin: prep(sql("SELECT {s}.unpin($1, $2, $3, $4, $5)")).await?,
            snapshot_all: prep(sql(SNAPSHOT)).await?,
            snapshot_keys: prep(sql(&format!(
                "{SNAPSHOT} AND (l.namespace, l.model, l.name) IN \
                 (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))"
            )))
            .await?,
            snapshot_group: prep(sql(&format!(
                "{SNAPSHOT} AND l.namespace = $2 AND l.model = $3"
            )))
            .await?,
            pinned: prep(sql("SELECT namespace, model, name, entity FROM {s}.pin \
                 ORDER BY namespace, model, name, entity"))
            .await?,
            // The expiry test is on the deleted row itself, so Postgres re-checks it against a
            // claim that committed meanwhile: a fresh claim is never purged.
            purge: prep(sql(
                "DELETE FROM {s}.lease l USING (SELECT {s}.now_ns($1) AS now) n \
                 WHERE l.expiry <= n.now AND NOT EXISTS (SELECT 1 FROM {s}.pin p \
                 WHERE p.namespace = l.namespace AND p.model = l.model AND p.name = l.name) \
                 AND (l.namespace, l.model, l.name) IN (SELECT x.namespace, x.model, x.name \
                 FROM {s}.lease x WHERE x.expiry <= n.now LIMIT $2)",
            ))
            .await?,
            client,
            _task: task,
        })
    }
}

/// A timestamp as stored: nanoseconds, capped at `i64::MAX`.
pub(crate) fn encode(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// When things happen, as the store sees them for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    /// The local clock when the call started.
    pub(crate) start: Timestamp,
    /// Whether expiry is decided on the local clock (then `start` is also "now").
    pub(crate) local: bool,
}

impl Moment {
    /// The `p_now` argument: the local instant, or `NULL` for the server's clock.
    pub(crate) fn param(self) -> Option<i64> {
        self.local.then(|| encode(self.start))
    }

    /// A stored expiry on the local clock. Deciding locally, it is the stored value; deciding on
    /// the server, it is the call's start plus the time the server had left: the server read
    /// `server_now` after the call started, so this is never later than the true instant (under
    /// the documented clock-rate assumption).
    pub(crate) fn expiry(self, stored: i64, server_now: i64) -> Timestamp {
        if self.local {
            Timestamp::from_nanos(u64::try_from(stored).unwrap_or(0))
        } else if stored == i64::MAX {
            Timestamp::MAX
        } else {
            let left = u64::try_from(i128::from(stored) - i128::from(server_now)).unwrap_or(0);
            self.start.saturating_add(Duration::from_nanos(left))
        }
    }
}

/// The owned arguments of one op, borrowed by its statement's parameters.
struct OpArgs {
    namespace: String,
    model: String,
    name: String,
    who: String,
    duration: i64,
    metadata: Option<String>,
}

fn metadata_text(
    settings: &Settings,
    key: &Key,
    value: Option<&serde_json::Value>,
) -> Result<Option<String>, PostgresStoreError> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| PostgresStoreError::BadRow {
            schema: settings.schema.clone(),
            key: key.to_string(),
            reason: format!("metadata cannot be written as JSON: {e}"),
        })
}

fn parse_metadata(
    settings: &Settings,
    key: &Key,
    text: Option<String>,
) -> Result<Option<serde_json::Value>, PostgresStoreError> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| PostgresStoreError::BadRow {
            schema: settings.schema.clone(),
            key: key.to_string(),
            reason: format!("metadata is not JSON: {e}"),
        })
}

type Pending<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Awaits every future, polling them in index order each time, so that each sends its request
/// before the next one does: the server executes them in that order.
async fn join_in_order<'a>(
    mut futures: Vec<Pending<'a>>,
) -> Vec<Result<Option<Row>, tokio_postgres::Error>> {
    let mut results: Vec<Option<Result<Option<Row>, tokio_postgres::Error>>> =
        futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(r) => *slot = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Runs `ops` (all valid) as one transaction in one round trip: `BEGIN`, one function call per
/// op, `COMMIT`, pipelined. Any failure fails the whole batch (the caller then drops the
/// connection, so the server rolls back whatever the transaction had done).
///
/// The ops run sorted by key (stably, so ops on one key keep their order), and the outcomes are
/// answered in the caller's order: every batch takes its row locks in one canonical order, so
/// two batches of the same keys in different orders never wait on each other in a cycle (a
/// deadlock the server would only break after its `deadlock_timeout`, failing a batch).
/// (Within one key the order stays the caller's: a batch that extends or revokes a key and then
/// claims it can still meet a claim of that key in a cycle; the server breaks it and the batch
/// fails as a `Timeout`, never with a wrong answer.)
pub(crate) async fn apply(
    conn: &Conn,
    settings: &Settings,
    moment: Moment,
    ops: &[&Op],
) -> Result<Vec<lease_core::Result<Outcome>>, PostgresStoreError> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by(|&a, &b| lock_order(ops[a].key()).cmp(&lock_order(ops[b].key())));
    let sorted: Vec<&Op> = order.iter().map(|&i| ops[i]).collect();
    let outcomes = apply_in_order(conn, settings, moment, &sorted).await?;
    let mut answers: Vec<Option<lease_core::Result<Outcome>>> = ops.iter().map(|_| None).collect();
    for (&i, outcome) in order.iter().zip(outcomes) {
        answers[i] = Some(outcome);
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::store_msg("operation was not applied"))))
        .collect())
}

/// The order in which a batch locks its keys' rows.
fn lock_order(key: &Key) -> (&str, &str, &str) {
    (&key.namespace, &key.model, &key.lease)
}

/// [`apply`] with the ops run in the order given.
async fn apply_in_order(
    conn: &Conn,
    settings: &Settings,
    moment: Moment,
    ops: &[&Op],
) -> Result<Vec<lease_core::Result<Outcome>>, PostgresStoreError> {
    let mut args = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key();
        let (who, duration, metadata) = match op {
            Op::Claim { request, .. } | Op::Extend { request, .. } => (
                request.holder.clone(),
                nanos(request.duration),
                metadata_text(settings, key, request.metadata.as_ref())?,
            ),
            Op::Revoke { holder, .. } => (holder.clone(), 0, None),
        };
        args.push(OpArgs {
            namespace: key.namespace.clone(),
            model: key.model.clone(),
            name: key.lease.clone(),
            who,
            duration,
            metadata,
        });
    }
    let now = moment.param();
    let origin = settings.origin.as_str();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = ops
        .iter()
        .zip(&args)
        .map(|(op, a)| -> Vec<&(dyn ToSql + Sync)> {
            match op {
                Op::Claim { .. } | Op::Extend { .. } => vec![
                    &a.namespace,
                    &a.model,
                    &a.name,
                    &a.who,
                    &a.duration,
                    &a.metadata,
                    &now,
                    &origin,
                ],
                Op::Revoke { .. } => {
                    vec![&a.namespace, &a.model, &a.name, &a.who, &now, &origin]
                }
            }
        })
        .collect();
    let client = &conn.client;
    let mut futures: Vec<Pending<'_>> = Vec::with_capacity(ops.len() + 2);
    futures.push(Box::pin(async {
        client.execute(&conn.begin, &[]).await.map(|_| None)
    }));
    for (op, p) in ops.iter().zip(&params) {
        let statement = match op {
            Op::Claim { .. } => &conn.claim,
            Op::Extend { .. } => &conn.extend,
            Op::Revoke { .. } => &conn.revoke,
        };
        futures.push(Box::pin(async move {
            client.query_one(statement, p).await.map(Some)
        }));
    }
    futures.push(Box::pin(async {
        client.execute(&conn.commit, &[]).await.map(|_| None)
    }));
    let results = join_in_order(futures).await;
    // The first error is the cause; later statements only report the aborted transaction.
    let mut rows = Vec::with_capacity(ops.len());
    for result in results {
        match result {
            Ok(Some(row)) => rows.push(row),
            Ok(None) => {}
            Err(e) => return Err(settings.target.error("applying a batch", &e)),
        }
    }
    ops.iter()
        .zip(rows)
        .map(|(op, row)| outcome(settings, moment, op, &row))
        .collect()
}

fn outcome(
    settings: &Settings,
    moment: Moment,
    op: &Op,
    row: &Row,
) -> Result<lease_core::Result<Outcome>, PostgresStoreError> {
    let key = op.key();
    let bad = |reason: String| PostgresStoreError::BadRow {
        schema: settings.schema.clone(),
        key: key.to_string(),
        reason,
    };
    let read = |e: tokio_postgres::Error| bad(format!("unreadable result: {e}"));
    let status: String = row.try_get(0).map_err(read)?;
    let refused = match status.as_str() {
        "ok" => None,
        "held" => Some(Error::Held),
        "invalid" => Some(Error::Invalid),
        "not_held" => Some(Error::NotHeld),
        other => return Err(bad(format!("unknown status {other:?}"))),
    };
    if let Some(error) = refused {
        return Ok(Err(error));
    }
    let (holder, is_claim) = match op {
        Op::Revoke { .. } => return Ok(Ok(Outcome::Revoked)),
        Op::Claim { request, .. } => (request.holder.clone(), true),
        Op::Extend { request, .. } => (request.holder.clone(), false),
    };
    let server_now: i64 = row.try_get(1).map_err(read)?;
    let expiry: i64 = row.try_get(2).map_err(read)?;
    let generation: i64 = row.try_get(3).map_err(read)?;
    let metadata: Option<String> = row.try_get(4).map_err(read)?;
    let pinned: bool = row.try_get(5).map_err(read)?;
    let info = Info {
        holder,
        expiry: moment.expiry(expiry, server_now),
        generation: Generation(
            u64::try_from(generation).map_err(|_| bad("negative generation".into()))?,
        ),
        metadata: parse_metadata(settings, key, metadata)?,
        pinned,
    };
    Ok(Ok(if is_claim {
        Outcome::Claimed(info)
    } else {
        Outcome::Extended(info)
    }))
}

/// The leases in snapshot rows, skipping any the server says are no longer valid.
pub(crate) fn snapshot(
    settings: &Settings,
    moment: Moment,
    rows: &[Row],
) -> Result<BTreeMap<Key, Info>, PostgresStoreError> {
    let mut out = BTreeMap::new();
    for row in rows {
        let read = |e: tokio_postgres::Error| PostgresStoreError::BadRow {
            schema: settings.schema.clone(),
            key: "a snapshot".to_owned(),
            reason: format!("unreadable row: {e}"),
        };
        let key = Key::new(
            row.try_get::<_, String>(0).map_err(read)?,
            row.try_get::<_, String>(1).map_err(read)?,
            row.try_get::<_, String>(2).map_err(read)?,
        );
        let expiry: i64 = row.try_get(4).map_err(read)?;
        let generation: i64 = row.try_get(5).map_err(read)?;
        let metadata = parse_metadata(settings, &key, row.try_get(6).map_err(read)?)?;
        let pinned: bool = row.try_get(7).map_err(read)?;
        let server_now: i64 = row.try_get(8).map_err(read)?;
        let info = Info {
            holder: row.try_get(3).map_err(read)?,
            expiry: moment.expiry(expiry, server_now),
            generation: Generation(u64::try_from(generation).unwrap_or(0)),
            metadata,
            pinned,
        };
        out.insert(key, info);
    }
    Ok(out)
}
