//! [`Settings`]: what a store and its change listener need besides a connection, and how
//! either opens one ([`Settings::connect`], with the [`ConnectionTask`] that drives it).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lease_core::Clock;
use tokio_postgres::{Client, Config};

use crate::error::{PostgresStoreError, Target};

/// What a store needs besides its connection; shared with the change listener.
pub(crate) struct Settings {
    pub(crate) config: Config,
    pub(crate) target: Target,
    pub(crate) schema: String,
    /// The `LISTEN`/`NOTIFY` channel of the schema.
    pub(crate) channel: String,
    /// The clock the store reports expiries on (and decides them with, in local mode).
    pub(crate) clock: Arc<dyn Clock>,
    /// Decide expiry on `clock` instead of the server's `clock_timestamp()`.
    pub(crate) local_expiry: bool,
    pub(crate) operation_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// How often the change listener checks its connection.
    pub(crate) listener_heartbeat: Duration,
    /// This store's id in notification payloads, so it ignores its own writes.
    pub(crate) origin: String,
    #[cfg(feature = "tls")]
    pub(crate) tls: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target.display)
            .field("schema", &self.schema)
            .field("local_expiry", &self.local_expiry)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Opens one connection and spawns its driver task on the current tokio runtime.
    pub(crate) async fn connect(&self) -> Result<(Client, ConnectionTask), PostgresStoreError> {
        let attempt = async {
            #[cfg(feature = "tls")]
            if self.tls {
                let tls = crate::tls::connector();
                let (client, connection) = self.config.connect(tls).await?;
                return Ok((client, ConnectionTask::spawn(connection)));
            }
            let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
            Ok::<_, tokio_postgres::Error>((client, ConnectionTask::spawn(connection)))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(self.target.connect_error(&e)),
            Err(_) => Err(PostgresStoreError::Unreachable {
                target: self.target.display.clone(),
                reason: format!("no answer within {:?}", self.connect_timeout),
            }),
        }
    }
}

/// The task driving one connection; aborted (closing the connection) when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionTask(tokio::task::JoinHandle<()>);

impl ConnectionTask {
    fn spawn<S, T>(connection: tokio_postgres::Connection<S, T>) -> ConnectionTask
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        ConnectionTask(tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "Postgres lease store connection ended");
            }
        }))
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
