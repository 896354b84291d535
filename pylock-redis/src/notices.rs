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
    gate: Mutex<Subscriber>,
    /// Dropped with `Notices`: tells the reader task to stop.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

#[derive(Default)]
struct Subscriber {
    sink: Option<PubSubSink>,
    /// Channels the server has confirmed on the current connection.
    active: HashSet<String>,
}

impl Notices {
    pub(crate) fn new(clients: Vec<redis::Client>, config: &RedisConfig) -> Arc<Self> {
        let (stop_sender, stop) = watch::channel(());
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
                _stop: stop_sender,
                stop,
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
        let mut sink = match &subscriber.sink {
            Some(sink) => sink.clone(),
            None => {
                let sink = self.connect().await?;
                subscriber.sink = Some(sink.clone());
                sink
            }
        };
        match tokio::time::timeout(self.timeout, sink.subscribe(channel)).await {
            Ok(Ok(())) => {
                subscriber.active.insert(channel.to_owned());
                Ok(notice)
            }
            failed => {
                // The connection is in doubt: start afresh next time.
                subscriber.sink = None;
                subscriber.active.clear();
                Err(match failed {
                    Ok(Err(error)) => {
                        from_redis(error, "subscribing to release notices", &self.server)
                    }
                    _ => timed_out("subscribing to release notices", &self.server, self.timeout),
                })
            }
        }
    }

    /// Opens the subscriber connection and starts its reader.
    async fn connect(self: &Arc<Self>) -> Result<PubSubSink> {
        let (sink, stream) = self.open().await?;
        tokio::spawn(read(Arc::downgrade(self), stream, self.stop.clone()));
        Ok(sink)
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
        if let Some(sink) = &mut subscriber.sink {
            // A failure means the connection is gone, and the subscription with it.
            let _ = tokio::time::timeout(self.timeout, sink.unsubscribe(channel)).await;
        }
    }

    /// After the subscriber connection dropped: one attempt to connect again, subscribe to
    /// every waited channel and wake all waiters (releases during the outage were not heard).
    async fn reconnect_once(&self) -> Option<PubSubStream> {
        let mut subscriber = self.gate.lock().await;
        subscriber.sink = None;
        subscriber.active.clear();
        let waited = self.board.waited_keys();
        let reconnected = match self.open().await {
            Ok((mut sink, stream)) => {
                let subscribed = waited.is_empty()
                    || matches!(
                        tokio::time::timeout(self.timeout, sink.subscribe(&waited)).await,
                        Ok(Ok(()))
                    );
                subscribed.then(|| {
                    subscriber.active.extend(waited.iter().cloned());
                    subscriber.sink = Some(sink);
                    stream
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

/// Delivers messages to waiters until the backend is dropped, reconnecting when needed.
async fn read(notices: Weak<Notices>, mut stream: PubSubStream, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let Some(notices) = notices.upgrade() else { return };
                    notices.board.notify(message.get_channel_name());
                }
                None => {
                    tracing::debug!("pylock: redis release-notice connection lost, reconnecting");
                    match reconnect(&notices, &mut stop).await {
                        Some(next) => stream = next,
                        None => return,
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Reconnects with capped exponential pauses until it works or the backend is dropped. Holds
/// the backend only during an attempt, so that dropping it stops this loop.
async fn reconnect(
    notices: &Weak<Notices>,
    stop: &mut watch::Receiver<()>,
) -> Option<PubSubStream> {
    let mut pause = Duration::from_millis(50);
    loop {
        let stream = notices.upgrade()?.reconnect_once().await;
        if stream.is_some() {
            return stream;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return None,
        }
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
