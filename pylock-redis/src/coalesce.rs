//! Coalescing: concurrent acquires (or releases) of one backend sent in few script calls.
//!
//! On Redis most of a lock operation's server time is the script's fixed cost, not the
//! commands inside it, and the server's one thread is what limits a busy client. So, like
//! auto-pipelining clients and a database's group commit:
//!
//! - while fewer than `limit` calls of a kind are in flight, a call goes out at once, alone:
//!   an uncontended lock waits for nothing;
//! - calls made while more are in flight join a queue, and a flush task, spawned by the first
//!   of them, sends everything queued, [`MAX_BATCH`] locks to a script call, and gives each
//!   caller its own lock's answer. The flush task runs after the tasks that were ready with
//!   it, so the callers woken by one read of the connection go out together, without waiting
//!   for any reply.
//!
//! Each lock's part of a batch is exactly the single-lock script's work, and the whole batch
//! runs atomically on the server, so batching changes no lock's outcome. A caller that gives
//! up while queued (its future is dropped) is taken out of the queue before the batch is sent.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::{ErrorKind, Script, ScriptInvocation, ServerErrorKind, Value};
use tokio::sync::oneshot;

use crate::calls::{CallError, Calls};

/// Most locks in one script call. Eight already spread a script's fixed cost thin, and a
/// burst split into several calls keeps client and server busy at once: while the client
/// handles one call's replies, the server runs the next call (measured in
/// `docs/BENCHMARKS.md`: larger batches gave the server less to do but left both sides
/// waiting on each other).
pub(crate) const MAX_BATCH: usize = 8;

/// One lock's keys and arguments in a batch script call.
pub(crate) trait Item: Send + 'static {
    /// Adds this lock's keys and arguments to `call`.
    fn add_to(&self, call: &mut ScriptInvocation<'static>);
    /// How many reply values the script gives per lock.
    const REPLY_LEN: usize;
}

/// The script's reply for one lock: [`Item::REPLY_LEN`] values.
pub(crate) type ItemReply = std::result::Result<Vec<Value>, CallError>;

pub(crate) struct Coalescer<I> {
    calls: Arc<Calls>,
    script: &'static Script,
    /// Arguments that come before the locks' own.
    leading_args: Vec<String>,
    /// Calls sent at once while fewer than this many are in flight.
    limit: usize,
    state: Mutex<State<I>>,
}

impl<I> std::fmt::Debug for Coalescer<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

struct State<I> {
    in_flight: usize,
    queue: Vec<Queued<I>>,
    /// A flush task has been spawned and has not taken the queue yet.
    flush_pending: bool,
}

struct Queued<I> {
    item: I,
    reply: oneshot::Sender<ItemReply>,
}

impl<I: Item> Coalescer<I> {
    /// Calls of `script` over `calls`, at most `limit` at once before they are batched
    /// (`usize::MAX`: never batched).
    pub(crate) fn new(
        calls: Arc<Calls>,
        script: &'static Script,
        leading_args: Vec<String>,
        limit: usize,
    ) -> Arc<Self> {
        Arc::new(Coalescer {
            calls,
            script,
            leading_args,
            limit: limit.max(1),
            state: Mutex::new(State {
                in_flight: 0,
                queue: Vec::new(),
                flush_pending: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<I>> {
        // The state is consistent between statements; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The script's answer for `item`: sent at once, or with the next batch.
    pub(crate) async fn call(self: &Arc<Self>, item: I) -> ItemReply {
        let turn = {
            let mut state = self.state();
            let runtime = tokio::runtime::Handle::try_current();
            if (state.in_flight < self.limit && state.queue.is_empty()) || runtime.is_err() {
                // Counted here, under the lock, so that no more than `limit` go out alone.
                state.in_flight += 1;
                Ok(item)
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push(Queued { item, reply });
                if !state.flush_pending
                    && let Ok(runtime) = runtime
                {
                    state.flush_pending = true;
                    runtime.spawn(Arc::clone(self).flush());
                }
                Err(answer)
            }
        };
        match turn {
            Ok(item) => {
                let _slot = Slot(self);
                let mut replies = self.send(vec![item]).await;
                replies.pop().unwrap_or(Err(CallError::Dropped))
            }
            // The flush task answers every queued call: with the script's reply, or its error
            // after the call limit. The bound here only guards against a flush task that never
            // ran (its runtime shut down).
            Err(answer) => {
                let limit = self.calls.limit() * 2;
                match tokio::time::timeout(limit, answer).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(_)) => Err(CallError::Dropped),
                    Err(_) => Err(CallError::TimedOut(limit)),
                }
            }
        }
    }

    /// One script call for `items`; each item's reply, in order.
    async fn send(&self, items: Vec<I>) -> Vec<ItemReply> {
        let mut call = self.script.prepare_invoke();
        for arg in &self.leading_args {
            call.arg(arg);
        }
        for item in &items {
            item.add_to(&mut call);
        }
        let count = items.len();
        let failed = move |error: CallError| vec![Err(error); count];
        match self.calls.invoke(&mut call).await {
            Ok(Value::Array(values)) if values.len() == items.len() * I::REPLY_LEN => {
                let mut values = values.into_iter();
                (0..items.len())
                    .map(|_| Ok(values.by_ref().take(I::REPLY_LEN).collect()))
                    .collect()
            }
            Ok(other) => failed(CallError::BadReply(format!(
                "expected {} values from the script, got {other:?}",
                items.len() * I::REPLY_LEN
            ))),
            // A command of the script failed part-way (a key of another type). The scripts
            // make asking again lock by lock safe (release reads before it writes; acquire
            // recognises its own token), and then only the lock at fault gets the error.
            Err(CallError::Redis(error)) if items.len() > 1 && refused_by_script(&error) => {
                drop(call);
                let mut replies = Vec::with_capacity(items.len());
                for item in items {
                    replies.extend(Box::pin(self.send(vec![item])).await);
                }
                replies
            }
            Err(error) => failed(error),
        }
    }

    /// Sends the queued calls, [`MAX_BATCH`] to a script call, and answers each of them.
    async fn flush(self: Arc<Self>) {
        let mut queue: Vec<Queued<I>> = {
            let mut state = self.state();
            state.flush_pending = false;
            std::mem::take(&mut state.queue)
        };
        // Callers that gave up are not sent for.
        queue.retain(|queued| !queued.reply.is_closed());
        let mut batches = Vec::new();
        while !queue.is_empty() {
            let rest = queue.split_off(queue.len().min(MAX_BATCH));
            batches.push(self.answer(std::mem::replace(&mut queue, rest)));
        }
        futures_util::future::join_all(batches).await;
    }

    /// Sends one batch and answers each of its callers.
    async fn answer(&self, batch: Vec<Queued<I>>) {
        let _slot = Slot::new(self);
        let (items, replies): (Vec<I>, Vec<oneshot::Sender<ItemReply>>) = batch
            .into_iter()
            .map(|queued| (queued.item, queued.reply))
            .unzip();
        for (reply, value) in replies.into_iter().zip(self.send(items).await) {
            let _ = reply.send(value);
        }
    }
}

/// Whether the server ran the script and a command in it failed (say, `WRONGTYPE`), as opposed
/// to a refusal of the whole call (loading, read-only, cluster down) or a lost connection.
fn refused_by_script(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Extension | ErrorKind::Server(ServerErrorKind::ResponseError)
    )
}

/// One call (or batch) in flight, counted until it ends: answered, failed or dropped.
struct Slot<'a, I>(&'a Coalescer<I>);

impl<'a, I: Item> Slot<'a, I> {
    fn new(coalescer: &'a Coalescer<I>) -> Self {
        coalescer.state().in_flight += 1;
        Slot(coalescer)
    }
}

impl<I> Drop for Slot<'_, I> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight -= 1;
    }
}
