//! Release notices over Redis pub/sub: one shared subscriber connection per backend, one
//! channel subscription per waited lock, dropped when its last waiter leaves.
//!
//! The rules that keep wake-ups from getting lost:
//! - A waiter is on the [`NoticeBoard`] *before* its `SUBSCRIBE` is sent, and `subscribe`
//!   returns only after the server confirmed it, so every release after that reaches it.
//! - Subscribing and unsubscribing take turns under one async lock (the `gate`), and an
//!   `UNSUBSCRIBE` is sent only if the board shows no waiter at that moment: a waiter that
//!   arrives later sends its own `SUBSCRIBE` after it, on the same connection, in order.
//! - When the subscriber connection drops, the reader reconnects, subscribes again to every
//!   waited channel, and then wakes all waiters, since releases during the outage were not
//!   heard. Meanwhile waiters fall back to polling (the core's bounded backoff).
//!
//! A connection in doubt is never kept: a `SUBSCRIBE` or `UNSUBSCRIBE` that failed, timed out
//! or was abandoned (its waiter's deadline passed; the wait loop bounds every subscription by
//! it) closes the connection, reader included, and the next waiter connects afresh, so no
//! waiter queues behind a server that stopped answering.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use pylock_core::{NoticeBoard, ReleaseNotice, Result};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{Mutex, watch};

use crate::config::RedisConfig;
use crate::errors::{from_redis, timed_out};

/// Longest pause between reconnect attempts of the subscriber connection.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

pub(crate) struct Notices {
    /// One client per server that can deliver the notices (the seed nodes of a cluster);
    /// reconnects go round them.
    clients: Vec<redis::Client>,
    next_client: std::sync::atomic::AtomicUsize,
    /// The server's URL, redacted, for messages.
    server: String,
    timeout: Duration,
    /// Keyed by channel name.
    board: NoticeBoard,
    /// Its `close` sender drops with `Notices`, which ends the reader task.
    gate: Mutex<Subscriber>,
}

#[derive(Default)]
struct Subscriber {
    sink: Option<PubSubSink>,
    /// Channels the server has confirmed on the current connection.
    active: HashSet<String>,
    /// Dropped to close the current connection's reader (and so the connection).
    close: Option<watch::Sender<()>>,
}

impl Subscriber {
    /// Forgets the current connection and ends its reader: the next subscription connects
    /// again.
    fn discard(&mut self) {
        self.sink = None;
        self.active.clear();
        self.close = None;
    }
}

/// Discards the subscriber's connection when dropped before [`InDoubt::settled`]: a
/// subscription abandoned half-way (its waiter's deadline) leaves the connection's state
/// unknown.
struct InDoubt<'a> {
    subscriber: &'a mut Subscriber,
    settled: bool,
}

impl InDoubt<'_> {
    fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for InDoubt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.subscriber.discard();
        }
    }
}

impl Notices {
    pub(crate) fn new(clients: Vec<redis::Client>, config: &RedisConfig) -> Arc<Self> {
        Arc::new_cyclic(|this: &Weak<Notices>| {
            let this = this.clone();
            Notices {
                clients,
                next_client: std::sync::atomic::AtomicUsize::new(0),
                server: config.redacted_url().to_owned(),
                timeout: config.call_timeout(),
                board: NoticeBoard::with_idle_hook(move |channel| {
                    unsubscribe_later(this.clone(), channel.to_owned());
                }),
                gate: Mutex::default(),
            }
        })
    }

    /// Subscribes a waiter to `channel`; returns once the server has confirmed it.
    pub(crate) async fn subscribe(self: &Arc<Self>, channel: &str) -> Result<ReleaseNotice> {
        let mut subscriber = self.gate.lock().await;
        let (notice, _) = self.board.subscribe(channel);
        if subscriber.active.contains(channel) {
            return Ok(notice);
        }
        let doubt = InDoubt {
            subscriber: &mut subscriber,
            settled: false,
        };
        let mut sink = match &doubt.subscriber.sink {
            Some(sink) => sink.clone(),
            None => {
                let (sink, close) = self.connect().await?;
                doubt.subscriber.sink = Some(sink.clone());
                doubt.subscriber.close = Some(close);
                sink
            }
        };
        match tokio::time::timeout(self.timeout, sink.subscribe(channel)).await {
            Ok(Ok(())) => {
                doubt.subscriber.active.insert(channel.to_owned());
                doubt.settled();
                Ok(notice)
            }
            // `doubt` discards the connection as it drops.
            Ok(Err(error)) => Err(from_redis(
                error,
                "subscribing to release notices",
                &self.server,
            )),
            Err(_) => Err(timed_out(
                "subscribing to release notices",
                &self.server,
                self.timeout,
            )),
        }
    }

    /// Opens the subscriber connection and starts its reader; dropping the returned sender
    /// ends the reader.
    async fn connect(self: &Arc<Self>) -> Result<(PubSubSink, watch::Sender<()>)> {
        let (sink, stream) = self.open().await?;
        let (close, closed) = watch::channel(());
        tokio::spawn(read(Arc::downgrade(self), stream, closed));
        Ok((sink, close))
    }

    async fn open(&self) -> Result<(PubSubSink, PubSubStream)> {
        let context = "connecting for release notices";
        // After a failure, the next attempt goes to the next server.
        let turn = self
            .next_client
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = &self.clients[turn % self.clients.len()];
        match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub.split()),
            Ok(Err(error)) => Err(from_redis(error, context, &self.server)),
            Err(_) => Err(timed_out(context, &self.server, self.timeout)),
        }
    }

    async fn unsubscribe_if_idle(&self, channel: &str) {
        let mut subscriber = self.gate.lock().await;
        if self.board.is_waited(channel) || !subscriber.active.remove(channel) {
            return;
        }
        let Some(mut sink) = subscriber.sink.clone() else {
            return;
        };
        let doubt = InDoubt {
            subscriber: &mut subscriber,
            settled: false,
        };
        // A failure or no answer: the connection is in doubt, and `doubt` discards it.
        if let Ok(Ok(())) = tokio::time::timeout(self.timeout, sink.unsubscribe(channel)).await {
            doubt.settled();
        }
    }

    /// After the subscriber connection dropped: one attempt to connect again, subscribe to
    /// every waited channel and wake all waiters (releases during the outage were not heard).
    /// The new connection's stream and the signal that ends it, if it worked.
    async fn reconnect_once(&self) -> Option<(PubSubStream, watch::Receiver<()>)> {
        let mut subscriber = self.gate.lock().await;
        subscriber.discard();
        let waited = self.board.waited_keys();
        let reconnected = match self.open().await {
            Ok((mut sink, stream)) => {
                let subscribed = waited.is_empty()
                    || matches!(
                        tokio::time::timeout(self.timeout, sink.subscribe(&waited)).await,
                        Ok(Ok(()))
                    );
                subscribed.then(|| {
                    let (close, closed) = watch::channel(());
                    subscriber.active.extend(waited.iter().cloned());
                    subscriber.sink = Some(sink);
                    subscriber.close = Some(close);
                    (stream, closed)
                })
            }
            Err(_) => None,
        };
        drop(subscriber);
        // Connected or not, every waiter should try now rather than wait for a notice that
        // may have been lost.
        for channel in &waited {
            self.board.notify(channel);
        }
        reconnected
    }
}

/// Delivers messages to waiters until the backend is dropped or the connection discarded,
/// reconnecting when the connection drops.
async fn read(notices: Weak<Notices>, mut stream: PubSubStream, mut closed: watch::Receiver<()>) {
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let Some(notices) = notices.upgrade() else { return };
                    notices.board.notify(message.get_channel_name());
                }
                None => {
                    tracing::debug!("pylock: redis release-notice connection lost, reconnecting");
                    match reconnect(&notices).await {
                        Some((next, next_closed)) => (stream, closed) = (next, next_closed),
                        None => return,
                    }
                }
            },
            // The connection was discarded (or the backend dropped): end it.
            _ = closed.changed() => return,
        }
    }
}

/// Reconnects with capped exponential pauses until it works or the backend is dropped. Holds
/// the backend only during an attempt, so that dropping it stops this loop.
async fn reconnect(notices: &Weak<Notices>) -> Option<(PubSubStream, watch::Receiver<()>)> {
    let mut pause = Duration::from_millis(50);
    loop {
        let reconnected = notices.upgrade()?.reconnect_once().await;
        if reconnected.is_some() {
            return reconnected;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

/// Called (synchronously) when the last waiter of `channel` leaves.
fn unsubscribe_later(notices: Weak<Notices>, channel: String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Some(notices) = notices.upgrade() {
                notices.unsubscribe_if_idle(&channel).await;
            }
        });
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices")
            .field("board", &self.board)
            .finish_non_exhaustive()
    }
}
