//! Release notices from etcd watches: one watch per key that has waiters in this process
//! (the lock and its fair line), confirmed by the server (`created`) before a waiter's
//! attempt, and kept up by a task that reconnects it when it breaks. While any watch is down
//! the board is unhealthy, so waiters poll; when it is back, the key's waiters try again (a
//! release meanwhile went unheard).
//!
//! A deletion (the lock released, forced or expired; a place in line given up or lapsed)
//! wakes one waiter of the process, and, when fair waiters watch the key, the first in line
//! by its token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchStream};
use pylock_core::Result;
use pylock_core::raw::{NoticeBoard, ReleaseNotice, Token};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::errors::{NAME, timed_out};
use crate::queue;

/// The first pause before a broken watch is made again; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub(crate) struct Watches {
    shared: Arc<Shared>,
}

struct Shared {
    board: NoticeBoard,
    keys: Mutex<HashMap<String, KeyWatch>>,
    /// How many watches are down now.
    broken: AtomicUsize,
}

/// A key's watch: whether it was confirmed (`Some(true)`) or could not be made
/// (`Some(false)`), and the task that keeps it.
struct KeyWatch {
    ready: watch::Receiver<Option<bool>>,
    task: AbortHandle,
    /// Whether a fair waiter has watched the key: deletions then wake the first in line too.
    fair: Arc<AtomicBool>,
}

impl Watches {
    pub(crate) fn new() -> Self {
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let weak = weak.clone();
            Shared {
                board: NoticeBoard::with_idle_hook(move |key| {
                    if let Some(shared) = weak.upgrade() {
                        shared.idle(key);
                    }
                }),
                keys: Mutex::default(),
                broken: AtomicUsize::new(0),
            }
        });
        Watches { shared }
    }

    /// A notice of `key`'s releases (for the fair waiter of `token`, of its turn), once the
    /// key's watch is confirmed by the server.
    ///
    /// `client` makes the watch if the key has none; `limit` bounds the wait for the
    /// confirmation; `server` names the cluster in errors.
    pub(crate) async fn subscribe(
        &self,
        client: Client,
        limit: Duration,
        server: &str,
        key: &str,
        fair: Option<&Token>,
    ) -> Result<ReleaseNotice> {
        // Joined before the watch is looked up, so that the last waiter leaving meanwhile
        // cannot take the watch away from this one (see `Shared::idle`).
        let (notice, _) = match fair {
            Some(token) => self.shared.board.subscribe_waiter(key, token),
            None => self.shared.board.subscribe(key),
        };
        let mut ready = {
            let mut keys = self.shared.keys();
            match keys.get(key) {
                Some(existing) if !existing.task.is_finished() => {
                    if fair.is_some() {
                        existing.fair.store(true, Ordering::SeqCst);
                    }
                    existing.ready.clone()
                }
                _ => {
                    let (confirm, ready) = watch::channel(None);
                    let fair = Arc::new(AtomicBool::new(fair.is_some()));
                    let task = tokio::spawn(keep_watching(
                        client,
                        key.to_owned(),
                        confirm,
                        Arc::downgrade(&self.shared),
                        Arc::clone(&fair),
                        limit,
                    ))
                    .abort_handle();
                    keys.insert(
                        key.to_owned(),
                        KeyWatch {
                            ready: ready.clone(),
                            task,
                            fair,
                        },
                    );
                    ready
                }
            }
        };
        let context = "watching a lock";
        match tokio::time::timeout(limit, ready.wait_for(Option::is_some)).await {
            Ok(Ok(confirmed)) if *confirmed == Some(true) => Ok(notice),
            Ok(_) => Err(pylock_core::Error::Unavailable {
                backend: NAME,
                context: format!("{context} on {server}"),
                source: "the watch could not be made".into(),
            }),
            Err(_) => Err(timed_out(context, server, limit)),
        }
    }
}

impl Shared {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, KeyWatch>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last waiter of `key` left: its watch goes, unless a waiter joined meanwhile.
    fn idle(&self, key: &str) {
        let mut keys = self.keys();
        if self.board.waiters(key) == 0
            && let Some(gone) = keys.remove(key)
        {
            gone.task.abort();
        }
    }

    fn broke(&self) {
        self.broken.fetch_add(1, Ordering::SeqCst);
        self.board.set_healthy(false);
    }

    fn repaired(&self) {
        if self.broken.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.board.set_healthy(true);
        }
    }
}

/// Counts a broken watch until it is dropped (repaired, or its task ended).
struct Broken(Weak<Shared>);

impl Drop for Broken {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.repaired();
        }
    }
}

/// Tells the first in `key`'s line (if it waits in this process) that it may be its turn.
async fn wake_first_in_line(client: &mut Client, board: &NoticeBoard, key: &str, limit: Duration) {
    let read = client.get(
        queue::queue_prefix(key),
        Some(queue::first_in_line_options()),
    );
    if let Ok(Ok(line)) = tokio::time::timeout(limit, read).await
        && let Some(first) = line.kvs().first()
    {
        board.notify_waiter(key, &queue::token_of(first));
    }
}

/// Opens a watch on `key` and its line and waits for the server to confirm it.
async fn open(client: &mut Client, key: &str, limit: Duration) -> Option<WatchStream> {
    let opened = tokio::time::timeout(limit, async {
        let range = WatchOptions::new().with_range(queue::watch_range_end(key));
        let mut stream = client.watch(key, Some(range)).await.ok()?;
        match stream.message().await {
            Ok(Some(answer)) if answer.created() && !answer.canceled() => Some(stream),
            _ => None,
        }
    });
    opened.await.ok().flatten()
}

/// Keeps `key`'s watch: says on `confirm` whether the first one was made, posts each deletion
/// of the key to the board, and makes the watch again whenever it breaks.
async fn keep_watching(
    mut client: Client,
    key: String,
    confirm: watch::Sender<Option<bool>>,
    shared: Weak<Shared>,
    fair: Arc<AtomicBool>,
    limit: Duration,
) {
    let mut broken: Option<Broken> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        match open(&mut client, &key, limit).await {
            Some(mut stream) => {
                confirm.send_replace(Some(true));
                let Some(board) = shared.upgrade().map(|s| s.board.clone()) else {
                    return;
                };
                if broken.take().is_some() {
                    // Deletions while the watch was down went unheard.
                    board.notify_all(&key);
                }
                pause = FIRST_PAUSE;
                while let Ok(Some(answer)) = stream.message().await {
                    if answer.canceled() {
                        break;
                    }
                    let deleted = answer.events().iter().any(|event| {
                        event.event_type() == EventType::Delete
                            && event
                                .kv()
                                .is_some_and(|kv| queue::is_watched(&key, kv.key()))
                    });
                    if deleted {
                        board.notify(&key);
                        if fair.load(Ordering::SeqCst) {
                            wake_first_in_line(&mut client, &board, &key, limit).await;
                        }
                    }
                }
            }
            None if confirm.borrow().is_none() => {
                // The first watch could not be made: the subscriber polls; the next one
                // tries again.
                confirm.send_replace(Some(false));
                if let Some(shared) = shared.upgrade() {
                    shared.keys().remove(&key);
                }
                return;
            }
            None => {}
        }
        if broken.is_none() {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            strong.broke();
            broken = Some(Broken(shared.clone()));
            tracing::warn!(
                key,
                "pylock: the etcd watch broke; waiters poll until it is back"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
