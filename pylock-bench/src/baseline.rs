//! The server's own speed, measured in the same run: what the scenarios are compared with.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use pylock::memcache::MemcacheBackend;
use pylock::redis::keys;
use pylock::redis::scripts::{ACQUIRE, RELEASE};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::cpu::{self, PerCycle};
use crate::load::{Budget, in_tasks};
use crate::stats::Samples;

/// Round trips of the server named by `url`, if the scheme has a baseline.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Baseline {
    /// One round trip (Redis `PING`, memcached `mn`) through the async connection type the
    /// backend uses (p50, µs), sent before each cycle of the `uncontended` scenario so that
    /// both see the same machine load.
    pub(crate) rtt_us: Option<f64>,
    /// The same round trip on a plain blocking socket: the floor on this machine (p50, µs).
    pub(crate) floor_rtt_us: Option<f64>,
    /// etcd only: one write (a `Put`, through Raft and the members' disks) on the same kind of
    /// client (p50, µs). Any lock that survives a crash writes on acquire and on release, so
    /// two of these are the floor of an uncontended cycle; the read (`rtt_us`) skips the disk.
    pub(crate) write_rtt_us: Option<f64>,
    /// A bare `SET NX PX` + `DEL` loop of the throughput scenario's tasks on one multiplexed
    /// connection: cycles per second without any library around it.
    pub(crate) raw_cycles_per_s: Option<f64>,
    /// The same loop running pylock's acquire and release scripts directly (no library):
    /// what the server-side scripts cost.
    pub(crate) script_cycles_per_s: Option<f64>,
    /// CPU time per cycle of the bare loop, client and server.
    pub(crate) raw_cpu: PerCycle,
    /// CPU time per cycle of the scripts-only loop, client and server.
    pub(crate) script_cpu: PerCycle,
}

/// Measures what can be measured apart from the scenarios; `rtt_us` comes from the
/// [`Pinger`] interleaved with the `uncontended` scenario.
pub(crate) async fn measure(
    url: &str,
    memcache: Option<Arc<MemcacheBackend>>,
    tasks: usize,
    budget: Budget,
) -> Baseline {
    match Pinger::connect(url, memcache).await {
        Some(Pinger::Redis { client, connection }) => {
            let addr = tcp_addr(&client);
            let (raw_cycles_per_s, raw_cpu) = timed_cycles(&connection, tasks, budget, false).await;
            let (script_cycles_per_s, script_cpu) =
                timed_cycles(&connection, tasks, budget, true).await;
            Baseline {
                rtt_us: None,
                floor_rtt_us: Some(
                    FloorPinger::connect(&addr, REDIS_PING, REDIS_PONG)
                        .samples(budget)
                        .quantile_us(0.5),
                ),
                raw_cycles_per_s: Some(raw_cycles_per_s),
                script_cycles_per_s: Some(script_cycles_per_s),
                raw_cpu,
                script_cpu,
                write_rtt_us: None,
            }
        }
        // etcd speaks gRPC: no plain-socket floor; the interleaved read, and writes.
        Some(Pinger::Etcd { mut client }) => Baseline {
            write_rtt_us: Some(etcd_writes(&mut client, budget).await.quantile_us(0.5)),
            ..Baseline::default()
        },
        Some(Pinger::Memcache { addr, .. }) => Baseline {
            floor_rtt_us: Some(
                FloorPinger::connect(&addr, MEMCACHE_NOOP, MEMCACHE_NOOP_REPLY)
                    .samples(budget)
                    .quantile_us(0.5),
            ),
            ..Baseline::default()
        },
        None => Baseline::default(),
    }
}

const REDIS_PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const REDIS_PONG: &[u8] = b"+PONG\r\n";
const MEMCACHE_NOOP: &[u8] = b"mn\r\n";
const MEMCACHE_NOOP_REPLY: &[u8] = b"MN\r\n";

/// Round trips through the connection type of the backend under test.
pub(crate) enum Pinger {
    /// `PING` through a `ConnectionManager`, as the Redis backend uses.
    Redis {
        client: Box<redis::Client>,
        connection: ConnectionManager,
    },
    /// `mn` through the pipelined connection of the very backend under test (the same
    /// connection, so the same memcached worker thread, as the lock cycles).
    Memcache {
        backend: Arc<MemcacheBackend>,
        addr: String,
    },
    /// A linearizable `Range` (etcd's read, which goes through the leader and its Raft read
    /// index) on a client of the same crate the etcd backend uses.
    Etcd { client: Box<etcd_client::Client> },
}

impl Pinger {
    /// A pinger for Redis and etcd URLs, or for the memcache backend under test; `None`
    /// otherwise.
    pub(crate) async fn connect(
        url: &str,
        memcache: Option<Arc<MemcacheBackend>>,
    ) -> Option<Pinger> {
        if url.starts_with("redis://") {
            let client = redis::Client::open(url).expect("redis URL");
            let connection =
                ConnectionManager::new_with_config(client.clone(), ConnectionManagerConfig::new())
                    .await
                    .expect("connect");
            return Some(Pinger::Redis {
                client: Box::new(client),
                connection,
            });
        }
        if url.starts_with("etcd://") {
            let backend = pylock::etcd::EtcdBackend::from_url(url).expect("etcd URL");
            let client = etcd_client::Client::connect(backend.config().endpoints(), None)
                .await
                .expect("connect");
            return Some(Pinger::Etcd {
                client: Box::new(client),
            });
        }
        if let Some(backend) = memcache {
            let addr = match backend.config().servers() {
                [one] => one.clone(),
                _ => panic!("baselines need a single memcached server"),
            };
            return Some(Pinger::Memcache { backend, addr });
        }
        None
    }

    /// A connection to the Redis server, to read its CPU time.
    pub(crate) fn redis_connection(&self) -> Option<ConnectionManager> {
        match self {
            Pinger::Redis { connection, .. } => Some(connection.clone()),
            Pinger::Memcache { .. } | Pinger::Etcd { .. } => None,
        }
    }

    /// A plain blocking socket to the same server, for the floor (not for etcd's gRPC).
    pub(crate) fn floor(&self) -> Option<FloorPinger> {
        match self {
            Pinger::Redis { client, .. } => Some(FloorPinger::connect(
                &tcp_addr(client),
                REDIS_PING,
                REDIS_PONG,
            )),
            Pinger::Memcache { addr, .. } => Some(FloorPinger::connect(
                addr,
                MEMCACHE_NOOP,
                MEMCACHE_NOOP_REPLY,
            )),
            Pinger::Etcd { .. } => None,
        }
    }

    /// One round trip.
    pub(crate) async fn ping(&mut self) -> Duration {
        let sent = Instant::now();
        match self {
            Pinger::Redis { connection, .. } => {
                let _: String = redis::cmd("PING")
                    .query_async(connection)
                    .await
                    .expect("PING");
            }
            Pinger::Memcache { backend, .. } => backend.ping("bench").await.expect("mn"),
            Pinger::Etcd { client } => {
                client
                    .get("pylock-bench-ping", None)
                    .await
                    .expect("etcd read");
            }
        }
        sent.elapsed()
    }
}

/// Round trips of one etcd `Put` each, on one key, within `budget`.
async fn etcd_writes(client: &mut etcd_client::Client, budget: Budget) -> Samples {
    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..budget.operations {
        let sent = Instant::now();
        client
            .put("pylock-bench-write", i.to_string(), None)
            .await
            .expect("etcd write");
        samples.push(sent.elapsed());
        samples.operations += 1;
        if started.elapsed() > budget.time {
            break;
        }
    }
    let _ = client.delete("pylock-bench-write", None).await;
    samples.elapsed = started.elapsed();
    samples
}

fn tcp_addr(client: &redis::Client) -> String {
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("baselines need a TCP address, not {other:?}"),
    }
}

/// Round trips on a plain blocking socket: the floor on this machine.
pub(crate) struct FloorPinger {
    socket: TcpStream,
    request: &'static [u8],
    reply: &'static [u8],
    answer: Vec<u8>,
}

impl FloorPinger {
    fn connect(addr: &str, request: &'static [u8], reply: &'static [u8]) -> FloorPinger {
        let socket = TcpStream::connect(addr).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        FloorPinger {
            socket,
            request,
            reply,
            answer: vec![0u8; reply.len()],
        }
    }

    /// One round trip.
    pub(crate) fn ping(&mut self) -> Duration {
        let sent = std::time::Instant::now();
        self.socket.write_all(self.request).expect("write");
        self.socket.read_exact(&mut self.answer).expect("read");
        assert_eq!(self.answer, self.reply);
        sent.elapsed()
    }

    /// Round trips within `budget`.
    fn samples(&mut self, budget: Budget) -> Samples {
        let mut samples = Samples::default();
        let started = std::time::Instant::now();
        for _ in 0..budget.operations {
            samples.push(self.ping());
            samples.operations += 1;
            if started.elapsed() > budget.time {
                break;
            }
        }
        samples.elapsed = started.elapsed();
        samples
    }
}

/// [`raw_cycles`]: cycles per second and CPU time per cycle.
async fn timed_cycles(
    manager: &ConnectionManager,
    tasks: usize,
    budget: Budget,
    scripts: bool,
) -> (f64, PerCycle) {
    let mut meter = manager.clone();
    let before = cpu::read(Some(&mut meter)).await;
    let samples = raw_cycles(manager, tasks, budget, scripts).await;
    let after = cpu::read(Some(&mut meter)).await;
    (
        samples.ops_per_s(),
        before.per_cycle(&after, samples.operations),
    )
}

/// `tasks` tasks on one multiplexed connection, each cycle two commands: `SET NX PX` and
/// `DEL`, or (`scripts`) pylock's acquire and release scripts.
async fn raw_cycles(
    manager: &ConnectionManager,
    tasks: usize,
    budget: Budget,
    scripts: bool,
) -> Samples {
    let manager = manager.clone();
    in_tasks(tasks, budget, move |task, i| {
        let mut connection = manager.clone();
        let key = format!("raw:{task}:{}", i % 16);
        async move {
            if scripts {
                // The last argument is the call's tag, which the reply echoes first.
                let _: (String, Vec<i64>) = ACQUIRE
                    .arg("1")
                    .key(&key)
                    .key(keys::fence_key(&key))
                    .arg("token")
                    .arg(10_000)
                    .arg("0")
                    .arg("tag")
                    .invoke_async(&mut connection)
                    .await
                    .expect("acquire script");
                let _: (String, Vec<i64>) = RELEASE
                    .key(&key)
                    .key(keys::line_key(&key))
                    .arg("token")
                    .arg(keys::notice_channel(&key))
                    .arg("tag")
                    .invoke_async(&mut connection)
                    .await
                    .expect("release script");
            } else {
                let _: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg("token")
                    .arg("NX")
                    .arg("PX")
                    .arg(10_000)
                    .query_async(&mut connection)
                    .await
                    .expect("SET");
                let _: i64 = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .expect("DEL");
            }
        }
    })
    .await
}
