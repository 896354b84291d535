//! Release notices over Redis pub/sub: one shared subscriber connection per backend, one
//! channel subscription per waited lock, dropped when its last waiter leaves.
//!
//! The rules that keep wake-ups from getting lost:
//! - A waiter is on the [`NoticeBoard`] *before* its `SUBSCRIBE` is sent, and `subscribe`
//!   returns only after the server confirmed it, so every release after that reaches it.
//! - Subscribing and unsubscribing one channel take turns under that channel's lock (one of
//!   [`STRIPES`] locks, chosen by the channel's hash), and an `UNSUBSCRIBE` is sent only if
//!   the board shows no waiter at that moment: a waiter that arrives later sends its own
//!   `SUBSCRIBE` after it, on the same connection, in order.
//! - When the subscriber connection drops (or is discarded, below), the board is marked
//!   unhealthy, which wakes every waiter and makes them poll (the core's bounded backoff)
//!   instead of sleeping until the holder's TTL. The reader reconnects, subscribes again to
//!   every waited channel, marks the board healthy and wakes all waiters, since releases
//!   during the outage were not heard. A connection made afresh also subscribes every waited
//!   channel before the board counts as healthy.
//!
//! Waiters of different locks never queue behind each other's network calls: the shared
//! state is behind a plain mutex never held across an `.await`, and only waiters of the same
//! channel (who need that very subscription) or of a connection being made wait. A connection
//! in doubt is never kept: a `SUBSCRIBE` or `UNSUBSCRIBE` that failed, timed out or was
//! abandoned (its waiter's deadline passed; the wait loop bounds every subscription by it)
//! closes the connection, reader included, and the next waiter connects afresh.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use pylock_core::Result;
use pylock_core::raw::{NoticeBoard, ReleaseNotice};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{Mutex, watch};

use crate::config::RedisConfig;
use crate::errors::{from_redis, timed_out};

/// Longest pause between reconnect attempts of the subscriber connection.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// How many channel locks: waiters of different locks rarely share one.
const STRIPES: usize = 64;

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
    /// The connection and what it is subscribed to. Never held across an `.await`; its
    /// `close` sender drops with `Notices`, which ends the reader task.
    state: std::sync::Mutex<Subscriber>,
    /// Held while a connection is made (waiters without one need that connection).
    connecting: Mutex<()>,
    /// Orders the subscribe and unsubscribe calls of one channel.
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Subscriber {
    /// The current connection's sink and generation.
    sink: Option<(u64, PubSubSink)>,
    generation: u64,
    /// Channels the server has confirmed on the current connection.
    active: HashSet<String>,
    /// Dropped to close the current connection's reader (and so the connection).
    close: Option<watch::Sender<()>>,
    /// The runtime the current connection's reader runs on.
    reader_runtime: Option<tokio::runtime::Id>,
}

impl Subscriber {
    /// Forgets connection `generation` (if still current) and ends its reader: the next
    /// subscription connects again. Whether it was current.
    fn discard(&mut self, generation: u64) -> bool {
        let current = self.sink.as_ref().is_some_and(|(g, _)| *g == generation);
        if current {
            self.sink = None;
            self.active.clear();
            self.close = None;
        }
        current
    }

    /// Makes `sink` the current connection; its generation.
    /// Called on the runtime the connection's reader is spawned on.
    fn install(&mut self, sink: PubSubSink, close: watch::Sender<()>) -> u64 {
        self.generation += 1;
        self.sink = Some((self.generation, sink));
        self.active.clear();
        self.close = Some(close);
        self.reader_runtime = current_runtime();
        self.generation
    }
}

/// Discards connection `generation` when dropped before [`InDoubt::settled`]: a call
/// abandoned half-way (its waiter's deadline) leaves the connection's state unknown.
struct InDoubt<'a> {
    notices: &'a Notices,
    generation: u64,
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
            let discarded = self.notices.state().discard(self.generation);
            if discarded {
                self.notices.board.set_healthy(false);
            }
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
                timeout: config.timeouts.call(),
                board: NoticeBoard::with_idle_hook(move |channel| {
                    unsubscribe_later(this.clone(), channel.to_owned());
                }),
                state: std::sync::Mutex::default(),
                connecting: Mutex::default(),
                stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
            }
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Subscriber> {
        // Each critical section is a few field updates: a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock that orders the calls of `channel`.
    fn stripe(&self, channel: &str) -> &Mutex<()> {
        let index = usize::try_from(self.hasher.hash_one(channel) % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }

    /// Whether waiters of this process wait on `channel` now: a lock taken then is set
    /// marked, so that its release is announced to them.
    pub(crate) fn is_waited(&self, channel: &str) -> bool {
        self.board.waiters(channel) > 0
    }

    /// Subscribes a waiter to `channel` (a fair waiter with its token: woken only by notices
    /// addressed to it); returns once the server has confirmed it. A waiter on another
    /// runtime than the connection's reader gets a notice marked unreliable: that runtime
    /// may not be running, so the waiter also polls.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        fair: Option<&pylock_core::raw::Token>,
    ) -> Result<ReleaseNotice> {
        let notice = self.subscribe_here(channel, fair).await?;
        Ok(if self.state().reader_runtime == current_runtime() {
            notice
        } else {
            notice.unreliable()
        })
    }

    async fn subscribe_here(
        self: &Arc<Self>,
        channel: &str,
        fair: Option<&pylock_core::raw::Token>,
    ) -> Result<ReleaseNotice> {
        let (notice, _) = match fair {
            Some(token) => self.board.subscribe_waiter(channel, token),
            None => self.board.subscribe(channel),
        };
        let _turn = self.stripe(channel).lock().await;
        if self.state().active.contains(channel) {
            return Ok(notice);
        }
        let (generation, mut sink) = self.sink().await?;
        let doubt = InDoubt {
            notices: self,
            generation,
            settled: false,
        };
        match tokio::time::timeout(self.timeout, sink.subscribe(channel)).await {
            Ok(Ok(())) => {
                let mut state = self.state();
                // On a connection replaced meanwhile, the reconnect subscribed every waited
                // channel, this one included (its waiter was on the board first).
                if state.sink.as_ref().is_some_and(|(g, _)| *g == generation) {
                    state.active.insert(channel.to_owned());
                }
                drop(state);
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

    /// The current connection's sink and generation, connecting first if there is none.
    async fn sink(self: &Arc<Self>) -> Result<(u64, PubSubSink)> {
        if let Some(current) = self.state().sink.clone() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.state().sink.clone() {
            return Ok(current);
        }
        let (mut sink, stream) = self.open().await?;
        // Every waiter of this process listens on this connection from now on, those whose
        // subscription went with a discarded connection too.
        let waited = self.board.waited_keys();
        if !waited.is_empty() {
            match tokio::time::timeout(self.timeout, sink.subscribe(&waited)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(from_redis(
                        error,
                        "subscribing to release notices",
                        &self.server,
                    ));
                }
                Err(_) => {
                    return Err(timed_out(
                        "subscribing to release notices",
                        &self.server,
                        self.timeout,
                    ));
                }
            }
        }
        let (close, closed) = watch::channel(());
        let generation = {
            let mut state = self.state();
            let generation = state.install(sink.clone(), close);
            state.active.extend(waited.iter().cloned());
            generation
        };
        tokio::spawn(read(Arc::downgrade(self), stream, closed, generation));
        self.board.set_healthy(true);
        Ok((generation, sink))
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
        let _turn = self.stripe(channel).lock().await;
        let (generation, mut sink) = {
            let mut state = self.state();
            if self.board.is_waited(channel) || !state.active.remove(channel) {
                return;
            }
            let Some(current) = state.sink.clone() else {
                return;
            };
            current
        };
        let doubt = InDoubt {
            notices: self,
            generation,
            settled: false,
        };
        // A failure or no answer: the connection is in doubt, and `doubt` discards it.
        if let Ok(Ok(())) = tokio::time::timeout(self.timeout, sink.unsubscribe(channel)).await {
            doubt.settled();
        }
    }

    /// After connection `generation` dropped: one attempt to connect again, subscribe to
    /// every waited channel and wake all waiters (releases during the outage were not heard).
    async fn reconnect_once(&self, generation: u64) -> Reconnect {
        let _connecting = self.connecting.lock().await;
        {
            let mut state = self.state();
            if state.sink.as_ref().is_some_and(|(g, _)| *g != generation) {
                // Another connection took over (a waiter found none and made one).
                return Reconnect::Superseded;
            }
            state.discard(generation);
        }
        self.board.set_healthy(false);
        let waited = self.board.waited_keys();
        let reconnected = match self.open().await {
            Ok((mut sink, stream)) => {
                let subscribed = waited.is_empty()
                    || matches!(
                        tokio::time::timeout(self.timeout, sink.subscribe(&waited)).await,
                        Ok(Ok(()))
                    );
                if subscribed {
                    let (close, closed) = watch::channel(());
                    let mut state = self.state();
                    let generation = state.install(sink, close);
                    state.active.extend(waited.iter().cloned());
                    Reconnect::Done(stream, closed, generation)
                } else {
                    Reconnect::Failed
                }
            }
            Err(_) => Reconnect::Failed,
        };
        if matches!(reconnected, Reconnect::Done(..)) {
            self.board.set_healthy(true);
        }
        // Connected or not, every waiter should try now rather than wait for a notice that
        // may have been lost.
        for channel in &waited {
            self.board.notify_all(channel);
        }
        reconnected
    }
}

/// How an attempt to replace a dropped connection went.
enum Reconnect {
    /// The new connection's stream, the signal that ends it, and its generation.
    Done(PubSubStream, watch::Receiver<()>, u64),
    Failed,
    /// Another connection is current: the old reader has nothing left to do.
    Superseded,
}

/// Delivers messages of connection `generation` to waiters until the backend is dropped or
/// the connection discarded, reconnecting when the connection drops.
async fn read(
    notices: Weak<Notices>,
    mut stream: PubSubStream,
    mut closed: watch::Receiver<()>,
    generation: u64,
) {
    let mut reading = Reading {
        notices: notices.clone(),
        generation,
    };
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let Some(notices) = notices.upgrade() else { return };
                    // Empty: wake one waiter; a token: the fair waiter first in line.
                    let to = message.get_payload_bytes();
                    let channel = message.get_channel_name();
                    match std::str::from_utf8(to) {
                        Ok(token) if !token.is_empty() => {
                            notices.board.notify_waiter(channel, token);
                        }
                        _ => {
                            notices.board.notify(channel);
                        }
                    }
                }
                None => {
                    tracing::debug!("pylock: redis release-notice connection lost, reconnecting");
                    match reconnect(&notices, reading.generation).await {
                        Some((next, next_closed, next_generation)) => {
                            (stream, closed, reading.generation) =
                                (next, next_closed, next_generation);
                        }
                        None => return,
                    }
                }
            },
            // The connection was discarded (or the backend dropped): end it.
            _ = closed.changed() => return,
        }
    }
}

/// The reader of connection `generation`, alive. If the reader goes away while its connection
/// is still the current one (the runtime it ran on was shut down, as each `#[tokio::test]`
/// does), nobody reads that connection any more: it is discarded, which marks the notices
/// down (waiters poll) and makes the next subscription connect afresh, on a live runtime.
struct Reading {
    notices: Weak<Notices>,
    generation: u64,
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(notices) = self.notices.upgrade() {
            let discarded = notices.state().discard(self.generation);
            if discarded {
                notices.board.set_healthy(false);
            }
        }
    }
}

/// Reconnects with capped exponential pauses until it works, another connection took over,
/// or the backend is dropped. Holds the backend only during an attempt, so that dropping it
/// stops this loop.
async fn reconnect(
    notices: &Weak<Notices>,
    generation: u64,
) -> Option<(PubSubStream, watch::Receiver<()>, u64)> {
    let mut pause = Duration::from_millis(50);
    loop {
        match notices.upgrade()?.reconnect_once(generation).await {
            Reconnect::Done(stream, closed, generation) => {
                return Some((stream, closed, generation));
            }
            Reconnect::Superseded => return None,
            Reconnect::Failed => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.id())
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
