//! The change listener: a dedicated connection that `LISTEN`s on the schema's channel and bumps
//! a counter for every other store's write, reconnecting with backoff when it is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::connection::Settings;

/// The first and the longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A running listener; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    task: tokio::task::JoinHandle<()>,
    changes: watch::Receiver<u64>,
    /// True while `LISTEN` is in force on a live connection: only then can a quiet channel be
    /// trusted to mean "no change".
    healthy: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening in a task on the current runtime; `None` outside a tokio runtime.
    pub(crate) fn start(settings: Arc<Settings>) -> Option<Listener> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, changes) = watch::channel(0u64);
        let healthy = Arc::new(AtomicBool::new(false));
        let task = runtime.spawn(run(settings, sender, Arc::clone(&healthy)));
        Some(Listener {
            task,
            changes,
            healthy,
        })
    }

    /// The counter's receiver.
    pub(crate) fn receiver(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The counter's current value.
    pub(crate) fn current(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Whether notifications are currently being received.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|n| *n = n.wrapping_add(1));
}

async fn run(settings: Arc<Settings>, sender: watch::Sender<u64>, healthy: Arc<AtomicBool>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match listen_once(&settings, &sender, &healthy).await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(error) => {
                tracing::warn!(
                    target = %settings.target.display,
                    %error,
                    "lease change listener lost its connection; reconnecting (changes are \
                     noticed at refresh polls meanwhile)"
                );
            }
        }
        healthy.store(false, Ordering::Release);
        // Whatever happened while not listening is unknown: make waiters re-read.
        bump(&sender);
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: connect, `LISTEN`, forward notifications until it fails. `Ok` when
/// it had been listening (so the next attempt starts with a short backoff).
async fn listen_once(
    settings: &Settings,
    sender: &watch::Sender<u64>,
    healthy: &AtomicBool,
) -> Result<(), String> {
    let connect = async {
        #[cfg(feature = "tls")]
        if settings.tls {
            let (client, connection) = settings.config.connect(crate::tls::connector()).await?;
            return Ok((client, drive(connection)));
        }
        let (client, connection) = settings.config.connect(tokio_postgres::NoTls).await?;
        Ok::<_, tokio_postgres::Error>((client, drive(connection)))
    };
    let (client, (driver, mut rx)) = connect.await.map_err(|e| crate::error::describe(&e))?;
    let _abort = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {}", settings.channel))
        .await
        .map_err(|e| crate::error::describe(&e))?;
    healthy.store(true, Ordering::Release);
    // Anything that changed before LISTEN took effect was missed.
    bump(sender);
    let mut heartbeat = tokio::time::interval(settings.listener_heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.payload() != settings.origin {
                        bump(sender);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(crate::error::describe(&e)),
                None => return Err("connection closed".to_owned()),
            },
            _ = heartbeat.tick() => {
                // A half-open TCP connection never errors by itself: ask the server.
                let ping = client.simple_query("SELECT 1");
                match tokio::time::timeout(settings.connect_timeout, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(crate::error::describe(&e)),
                    Err(_) => return Err("heartbeat not answered".to_owned()),
                }
            }
            () = sender.closed() => return Ok(()),
        }
    }
}

type Messages = mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

/// Drives `connection` in a task, sending its messages (notifications among them) through a
/// channel that closes when the connection ends.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> (tokio::task::JoinHandle<()>, Messages)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let end = message.is_err();
            if tx.send(message).is_err() || end {
                break;
            }
        }
    });
    (driver, rx)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
