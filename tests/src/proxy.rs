//! A TCP fault proxy on 127.0.0.1, between a client and a real server: passes bytes through,
//! or delays them, stalls them, resets connections, swallows requests (a silent, half-open
//! server), or answers garbage. Tests switch faults at any time; every connection obeys the
//! current one from its next chunk on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass through.
    Pass,
    /// Every chunk, each way, waits this long first (added latency).
    Delay(Duration),
    /// Nothing moves either way; chunks wait until the fault changes (a partition that
    /// heals: TCP delivers what was queued).
    Stall,
    /// Requests are read and dropped, nothing is answered: a silent or half-open server.
    Silent,
    /// Every request is answered with bytes no server sends.
    Garbage,
    /// Open connections are closed at once, and new ones reset (RST) as they come.
    Reset,
}

/// A running proxy. Dropping it stops it and every connection through it.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    /// The accept loop and the connections; aborted on drop.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port to `upstream` (`127.0.0.1:port`), passing bytes.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (fault, faults) = watch::channel(Fault::Pass);
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let connections = Arc::clone(&tasks);
        tasks.lock().expect("tasks").spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = faults.clone();
                connections
                    .lock()
                    .expect("tasks")
                    .spawn(serve(client, upstream, faults));
            }
        });
        FaultProxy { port, fault, tasks }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches to `fault`.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

/// What no Redis or memcached server ever answers.
const GARBAGE: &[u8] = b"\x00\xffHTTP/1.1 418 I'm a teapot\r\n%%%\r\n";

async fn serve(client: TcpStream, upstream: u16, mut faults: watch::Receiver<Fault>) {
    if *faults.borrow_and_update() == Fault::Reset {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let server_write = Arc::new(tokio::sync::Mutex::new(server_write));
    // Requests may be answered with garbage by the proxy itself; replies are only dropped.
    let requests = pump(
        client_read,
        server_write,
        Some(Arc::clone(&client_write)),
        faults.clone(),
    );
    let replies = pump(server_read, client_write, None, faults.clone());
    tokio::select! {
        () = requests => {}
        () = replies => {}
        () = async { while faults.changed().await.is_ok() && *faults.borrow() != Fault::Reset {} } => {}
    }
    // Dropping both halves closes the connection.
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0: close() sends RST instead of FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}

type Writer = Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>;

/// Forwards chunks from `from` to `to`, obeying the fault in force for each chunk. With
/// `answer` (the client, for requests), `Garbage` answers there instead of forwarding.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: Writer,
    answer: Option<Writer>,
    mut faults: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        loop {
            let fault = *faults.borrow_and_update();
            match fault {
                Fault::Pass => {}
                Fault::Delay(delay) => tokio::time::sleep(delay).await,
                Fault::Stall => {
                    if faults.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Fault::Silent => break,
                Fault::Garbage => {
                    if let Some(client) = &answer
                        && client.lock().await.write_all(GARBAGE).await.is_err()
                    {
                        return;
                    }
                    break;
                }
                Fault::Reset => return,
            }
            if to.lock().await.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            break;
        }
    }
}
