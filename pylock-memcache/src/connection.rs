//! One pipelined connection to one memcached server, shared by every lock of the backend.
//!
//! memcached answers the requests of a connection in order, so many callers can share it: a
//! writer task sends requests (coalescing whatever is queued into one write) and records who
//! waits for how many responses; a reader task hands responses out in the same order. Nothing
//! here blocks the executor. A connection that fails is dropped, its waiting callers get an
//! error, and the next call connects again.
//!
//! Matching by order alone would go wrong if a request were lost on the way while the
//! connection stayed up (a faulty proxy): every later response would answer the request
//! before it, and an acquire could take another's "stored" for its own. So each request
//! carries a tag of its own in its last command, which memcached echoes (see the protocol
//! module), and a response that carries another tag, or none where one is due, ends the
//! connection: its callers get an error, never another request's answer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pylock_core::Result;
use pylock_core::raw::PerRuntime;
use pylock_core::raw::Timeouts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::errors::{protocol, timed_out, unavailable};
use crate::protocol::{ProtocolError, Request, Response, Tagged, parse};

/// The most bytes the writer sends in one write when requests queue up.
const MAX_BATCH: usize = 64 * 1024;

/// A caller's request: the bytes, how many responses they produce, the tag the last one
/// must carry, and where they go.
struct Queued {
    bytes: Vec<u8>,
    responses: usize,
    tag: Option<u64>,
    reply: oneshot::Sender<Reply>,
}

type Reply = std::result::Result<Vec<Response>, Ended>;

/// Why a connection ended: it dropped (try again later), or the server said something that
/// is not memcached's protocol (retrying will not help: it is likely another kind of server).
#[derive(Debug, Clone)]
enum Ended {
    Dropped(String),
    Protocol(ProtocolError),
}

/// A request written to the socket and not yet fully answered.
struct Pending {
    responses: usize,
    tag: Option<u64>,
    received: Vec<Response>,
    reply: oneshot::Sender<Reply>,
}

/// The requests in flight on one connection, in order, and whether the connection is over.
#[derive(Default)]
struct InFlight {
    pending: VecDeque<Pending>,
    /// Why the connection ended, once it has: later requests fail at once.
    ended: Option<Ended>,
}

type Queue = Arc<Mutex<InFlight>>;

/// A lazily (re)connected, pipelined connection to `addr`.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: String,
    timeouts: Timeouts,
    /// The live connection's request queue, one per runtime that uses this server: its
    /// tasks run on that runtime (see [`PerRuntime`]).
    live: PerRuntime<mpsc::UnboundedSender<Queued>>,
    /// Held while a connection is made, so that concurrent first calls make one.
    connecting: tokio::sync::Mutex<()>,
    /// The next request's tag.
    next_tag: AtomicU64,
}

impl Connection {
    pub(crate) fn new(addr: String, timeouts: Timeouts) -> Self {
        Connection {
            addr,
            timeouts,
            live: PerRuntime::new(),
            connecting: tokio::sync::Mutex::new(()),
            next_tag: AtomicU64::new(1),
        }
    }

    /// The server's address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request`, tagged, and waits for its responses.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] if the server cannot be reached, the connection drops or gets
    /// out of step, or the answer takes longer than the response timeout.
    pub(crate) async fn call(&self, request: &Request) -> Result<Vec<Response>> {
        let sender = self.sender().await?;
        let (reply, answer) = oneshot::channel();
        let (bytes, tag) = request.bytes(self.next_tag.fetch_add(1, Ordering::Relaxed));
        let request = Queued {
            bytes,
            responses: request.responses,
            tag,
            reply,
        };
        if sender.send(request).is_err() {
            self.forget(&sender).await;
            return Err(unavailable(&self.addr, "the connection closed", None));
        }
        match tokio::time::timeout(self.timeouts.response, answer).await {
            Ok(Ok(Ok(responses))) => Ok(responses),
            Ok(Ok(Err(ended))) => {
                self.forget(&sender).await;
                Err(match ended {
                    Ended::Dropped(reason) => unavailable(&self.addr, &reason, None),
                    Ended::Protocol(error) => protocol(&self.addr, error),
                })
            }
            Ok(Err(_)) => {
                self.forget(&sender).await;
                Err(unavailable(&self.addr, "the connection closed", None))
            }
            Err(_) => Err(timed_out(&self.addr, self.timeouts.response)),
        }
    }

    /// The live connection's request queue, connecting first if there is none.
    async fn sender(&self) -> Result<mpsc::UnboundedSender<Queued>> {
        let live = || self.live.get().filter(|s| !s.is_closed());
        if let Some(sender) = live() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = live() {
            return Ok(sender);
        }
        let stream =
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(&self.addr)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(unavailable(&self.addr, "connecting", Some(error))),
                Err(_) => return Err(timed_out(&self.addr, self.timeouts.connect)),
            };
        // Small requests, each awaited: send them at once.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let (sender, requests) = mpsc::unbounded_channel();
        let queue: Queue = Arc::default();
        tokio::spawn(write(writer, requests, Arc::clone(&queue)));
        tokio::spawn(read(reader, queue, self.addr.clone()));
        self.live.set(sender.clone());
        Ok(sender)
    }

    /// Drops the connection `sender` belongs to, if it is still the current one.
    async fn forget(&self, sender: &mpsc::UnboundedSender<Queued>) {
        self.live.forget_all_if(|live| live.same_channel(sender));
    }
}

/// Sends queued requests, several per write when they pile up.
async fn write(
    mut writer: OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<Queued>,
    queue: Queue,
) {
    let mut batch = Vec::with_capacity(4096);
    while let Some(first) = requests.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            {
                let mut in_flight = lock(&queue);
                if let Some(reason) = &in_flight.ended {
                    // The reader saw the connection end: fail fast, and stop taking requests
                    // so that the next call connects again.
                    let _ = request.reply.send(Err(reason.clone()));
                    return;
                }
                in_flight.pending.push_back(Pending {
                    responses: request.responses,
                    tag: request.tag,
                    received: Vec::with_capacity(request.responses),
                    reply: request.reply,
                });
            }
            batch.extend_from_slice(&request.bytes);
            if batch.len() < MAX_BATCH {
                next = requests.try_recv().ok();
            }
        }
        if let Err(error) = writer.write_all(&batch).await {
            fail_all(&queue, Ended::Dropped(format!("writing: {error}")));
            return;
        }
    }
    // Every handle is gone: let the server close its side, which ends the reader.
    let _ = writer.shutdown().await;
}

/// Hands out responses in request order until the connection ends.
async fn read(mut reader: OwnedReadHalf, queue: Queue, addr: String) {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let read = match reader.read(&mut chunk).await {
            Ok(0) => {
                fail_all(
                    &queue,
                    Ended::Dropped("the server closed the connection".into()),
                );
                return;
            }
            Ok(n) => n,
            Err(error) => {
                fail_all(&queue, Ended::Dropped(format!("reading: {error}")));
                return;
            }
        };
        buffer.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        loop {
            match parse(&buffer[start..]) {
                Ok(Some((response, used))) => {
                    start += used;
                    if let Err(ended) = deliver(&queue, response) {
                        tracing::warn!(%addr, ?ended, "pylock: memcached connection out of step");
                        fail_all(&queue, ended);
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%addr, %error, "pylock: not memcached's protocol");
                    fail_all(&queue, Ended::Protocol(error));
                    return;
                }
            }
        }
        buffer.drain(..start);
    }
}

/// Gives `response` to the oldest pending request, if it answers that request: only its last
/// response carries a tag, and that is the request's own. Otherwise (or if no request is
/// pending) the connection is out of step, and this says why.
fn deliver(queue: &Queue, (response, tag): Tagged) -> std::result::Result<(), Ended> {
    let mut in_flight = lock(queue);
    let Some(front) = in_flight.pending.front_mut() else {
        return Err(Ended::Protocol(ProtocolError(
            "a response nobody asked for".into(),
        )));
    };
    let last = front.received.len() + 1 == front.responses;
    let due = if last { front.tag } else { None };
    // memcached before 1.6.10 or so may answer a miss (`EN`) without the tag: taken, since a
    // miss where a tag is due is the only response such a server leaves untagged.
    let untagged_miss = tag.is_none() && response == Response::Miss;
    if tag != due && !untagged_miss {
        return Err(Ended::Dropped(format!(
            "a response to another request (tag {tag:?} where {:?} was due): a request was \
             lost on the way, so the connection is replaced",
            due
        )));
    }
    front.received.push(response);
    if front.received.len() == front.responses
        && let Some(done) = in_flight.pending.pop_front()
    {
        // The caller may have given up (timeout); that is fine.
        let _ = done.reply.send(Ok(done.received));
    }
    Ok(())
}

/// Ends the connection: every request in flight, and every later one, fails with `ended`.
fn fail_all(queue: &Queue, ended: Ended) {
    let mut in_flight = lock(queue);
    let ended = in_flight.ended.get_or_insert(ended).clone();
    for pending in in_flight.pending.drain(..) {
        let _ = pending.reply.send(Err(ended.clone()));
    }
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, InFlight> {
    // Each critical section is one push, pop or drain: a panic cannot leave it half done.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(queue: &Queue, responses: usize, tag: Option<u64>) -> oneshot::Receiver<Reply> {
        let (reply, answer) = oneshot::channel();
        lock(queue).pending.push_back(Pending {
            responses,
            tag,
            received: Vec::new(),
            reply,
        });
        answer
    }

    #[test]
    fn responses_go_to_the_request_they_answer() {
        let queue = Queue::default();
        let mut acquire = pending(&queue, 2, Some(7));
        let mut ping = pending(&queue, 1, None);
        assert!(deliver(&queue, (Response::Stored, None)).is_ok());
        assert!(deliver(&queue, (Response::Miss, Some(7))).is_ok());
        assert!(deliver(&queue, (Response::Noop, None)).is_ok());
        assert_eq!(
            acquire.try_recv().ok().and_then(Result::ok),
            Some(vec![Response::Stored, Response::Miss])
        );
        assert_eq!(
            ping.try_recv().ok().and_then(Result::ok),
            Some(vec![Response::Noop])
        );
    }

    #[test]
    fn a_response_to_a_later_request_is_refused() {
        // The request tagged 1 was lost on the way; the responses to the one tagged 2 come
        // back while it is still the oldest pending: its caller must not get them.
        let queue = Queue::default();
        let _lost = pending(&queue, 2, Some(1));
        let _next = pending(&queue, 2, Some(2));
        assert!(deliver(&queue, (Response::Stored, None)).is_ok());
        assert!(matches!(
            deliver(&queue, (Response::Miss, Some(2))),
            Err(Ended::Dropped(_))
        ));
        // A tag where none is due (the last response of an untagged request, or an earlier
        // one of a tagged request) is refused too.
        let queue = Queue::default();
        let _ping = pending(&queue, 1, None);
        assert!(deliver(&queue, (Response::Stored, Some(3))).is_err());
        let queue = Queue::default();
        let _two = pending(&queue, 2, Some(4));
        assert!(deliver(&queue, (Response::Stored, Some(4))).is_err());
        // An untagged miss where a tag is due is taken (older servers leave misses untagged);
        // any other untagged response there is not.
        let queue = Queue::default();
        let _miss = pending(&queue, 1, Some(5));
        assert!(deliver(&queue, (Response::Miss, None)).is_ok());
        let _hit = pending(&queue, 1, Some(6));
        assert!(deliver(&queue, (Response::Stored, None)).is_err());
    }
}
