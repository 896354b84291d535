//! The conformance suite (`pylock_core::conformance`) on every backend of ours and every way
//! of getting its server: one trial per check and backend, named `<backend>::<check>`, so a
//! broken rule shows by name next to every other. `cargo test --test conformance -- redlock`
//! runs Redlock's. A check that a backend's capabilities exclude is reported as ignored, with
//! the reason; so is every check of a backend whose server cannot be had outside CI (in CI
//! that fails). Each backend also has a `skips_only_what_it_cannot_do` trial: the checks it is
//! excused from are exactly the expected ones.

use std::any::Any;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use libtest_mimic::{Arguments, Failed, Trial};
use pylock::MemoryBackend;
use pylock::etcd::EtcdBackend;
use pylock::memcache::MemcacheBackend;
use pylock::open::OpenBackend;
use pylock::raw::LockBackend;
use pylock::redis::{RedisBackend, RedlockBackend};
use pylock_core::conformance::{self, CHECKS, Fixture};
use pylock_tests::tls::{self, Pki};
use pylock_tests::{ClusterTls, Kind, Needs, Provider, TestCluster, TestServer};
use tokio::runtime::Handle;

/// Makes a group's backend, and returns with it whatever must live as long as the run (the
/// servers), or why there is none.
type Start = fn() -> futures_util::future::BoxFuture<'static, Made>;
type Made = Result<(Arc<dyn LockBackend>, Box<dyn Any + Send>), String>;

const NO_FENCING: &[&str] = &["fencing_tokens_increase"];
const NO_FAIR_QUEUE: &[&str] = &[
    "fair_waiters_take_turns_in_the_order_they_came",
    "a_fair_waiter_that_gives_up_leaves_the_queue_at_once",
    "a_fair_waiter_never_heard_from_again_is_skipped",
    "a_dead_waiter_behind_a_fair_holder_is_skipped",
    "a_fair_waiter_behind_another_never_takes_the_lock_first",
];
/// memcached: no notices (so no wake-up checks and no fair queue) and no fencing.
const MEMCACHED_SKIPS: &[&str] = &[
    "waiter_wakes_on_release",
    "release_between_attempt_and_wait_still_wakes",
    "fencing_tokens_increase",
    "fair_waiters_take_turns_in_the_order_they_came",
    "a_fair_waiter_that_gives_up_leaves_the_queue_at_once",
    "a_fair_waiter_never_heard_from_again_is_skipped",
    "a_dead_waiter_behind_a_fair_holder_is_skipped",
    "a_fair_waiter_behind_another_never_takes_the_lock_first",
];

/// Each backend: its group name, how it starts, and the checks it is excused from (`None`:
/// all those that need exclusion, for `open://`).
fn groups() -> Vec<(&'static str, Start, Option<Vec<&'static str>>)> {
    let none = Some(Vec::new());
    vec![
        ("memory", || Box::pin(memory()), none.clone()),
        ("open", || Box::pin(open()), None),
        (
            "redis-container",
            || Box::pin(redis(Provider::Container, "")),
            none.clone(),
        ),
        (
            "redis-binary",
            || Box::pin(redis(Provider::Binary, "")),
            none.clone(),
        ),
        (
            "redis-without-fencing",
            || Box::pin(redis(Provider::Binary, "?fencing=false")),
            Some(NO_FENCING.to_vec()),
        ),
        ("redis-unix-socket", || Box::pin(redis_unix()), none.clone()),
        ("redis-cluster", || Box::pin(redis_cluster()), none.clone()),
        ("redis-tls", || Box::pin(redis_tls()), none.clone()),
        (
            "redis-cluster-tls",
            || Box::pin(redis_cluster_tls()),
            none.clone(),
        ),
        (
            "redlock-3-nodes",
            || Box::pin(redlock(3)),
            Some([NO_FENCING, NO_FAIR_QUEUE].concat()),
        ),
        (
            "redlock-5-nodes",
            || Box::pin(redlock(5)),
            Some([NO_FENCING, NO_FAIR_QUEUE].concat()),
        ),
        (
            "memcache-container",
            || Box::pin(memcache(Provider::Container)),
            Some(MEMCACHED_SKIPS.to_vec()),
        ),
        (
            "memcache-binary",
            || Box::pin(memcache(Provider::Binary)),
            Some(MEMCACHED_SKIPS.to_vec()),
        ),
        (
            "etcd-container",
            || Box::pin(etcd(Provider::Container)),
            none.clone(),
        ),
        (
            "etcd-binary",
            || Box::pin(etcd(Provider::Binary)),
            none.clone(),
        ),
        ("etcd-tls", || Box::pin(etcd_tls()), none),
    ]
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // What the fixtures started, dropped on the runtime after the run (containers need one).
    let kept: Arc<Mutex<Vec<Box<dyn Any + Send>>>> = Arc::default();
    let mut trials = Vec::new();
    for (group, start, excused) in groups() {
        let fixture = fixture(runtime.handle(), start, Arc::clone(&kept));
        trials.extend(conformance::trials(
            group,
            runtime.handle(),
            Arc::clone(&fixture),
        ));
        trials.push(skips_only(group, fixture, excused));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    runtime.block_on(async move {
        kept.lock().unwrap_or_else(PoisonError::into_inner).clear();
    });
    conclusion.exit_code()
}

/// The group's backend, started by the first of its trials that runs and shared by the rest.
fn fixture(runtime: &Handle, start: Start, kept: Arc<Mutex<Vec<Box<dyn Any + Send>>>>) -> Fixture {
    let made: Arc<OnceLock<Result<Arc<dyn LockBackend>, String>>> = Arc::default();
    let runtime = runtime.clone();
    Arc::new(move || {
        made.get_or_init(|| {
            let (backend, servers) = runtime.block_on(start())?;
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(servers);
            Ok(backend)
        })
        .clone()
    })
}

/// `<group>::skips_only_what_it_cannot_do`: the checks the backend's capabilities excuse it
/// from are exactly `excused` (`None`: every check that needs exclusion).
fn skips_only(group: &str, fixture: Fixture, excused: Option<Vec<&'static str>>) -> Trial {
    Trial::ignorable_test(
        format!("{group}::skips_only_what_it_cannot_do"),
        move || {
            let backend = match fixture() {
                Ok(backend) => backend,
                Err(reason) => return Ok(libtest_mimic::Completion::ignored_with(reason)),
            };
            let caps = backend.capabilities();
            let skipped: Vec<(&str, &str)> = CHECKS
                .iter()
                .filter_map(|check| (check.skip_reason)(&caps).map(|why| (check.name, why)))
                .collect();
            let matches = match &excused {
                Some(expected) => skipped
                    .iter()
                    .map(|(name, _)| *name)
                    .eq(expected.iter().copied()),
                None => {
                    !skipped.is_empty()
                        && skipped
                            .iter()
                            .all(|(_, why)| why.contains("does not exclude"))
                }
            };
            if matches {
                Ok(libtest_mimic::Completion::Completed)
            } else {
                Err(Failed::from(format!(
                    "skips {skipped:?}, expected {excused:?}"
                )))
            }
        },
    )
}

fn boxed(backend: impl LockBackend + 'static, servers: impl Any + Send) -> Made {
    Ok((Arc::new(backend), Box::new(servers)))
}

fn no_server(kind: &str) -> String {
    format!("no {kind} server to test against (see the SKIPPED line above)")
}

async fn memory() -> Made {
    boxed(MemoryBackend::new(), ())
}

async fn open() -> Made {
    boxed(OpenBackend::new(), ())
}

async fn redis(provider: Provider, options: &str) -> Made {
    let server = TestServer::start(Kind::Redis, Needs::any().from(provider))
        .await
        .ok_or_else(|| no_server("redis"))?;
    let url = format!("{}{options}", server.url());
    eprintln!("conformance: redis via {} at {url}", server.provider());
    boxed(RedisBackend::from_url(&url).expect("backend"), server)
}

async fn redis_unix() -> Made {
    let socket = std::env::temp_dir().join(format!("pylock-test-{}.sock", std::process::id()));
    let socket = socket.to_string_lossy().into_owned();
    // A socket file is only visible to a server on this host's file system: a local binary.
    let needs =
        Needs::args(&["--unixsocket", &socket, "--unixsocketperm", "700"]).from(Provider::Binary);
    let server = TestServer::start(Kind::Redis, needs)
        .await
        .ok_or_else(|| no_server("redis"))?;
    let url = format!("redis+unix://{socket}?db=1");
    boxed(RedisBackend::from_url(&url).expect("backend"), server)
}

async fn redis_cluster() -> Made {
    let cluster = tokio::task::spawn_blocking(|| TestCluster::start(3, 0))
        .await
        .expect("the cluster fixture")
        .ok_or_else(|| no_server("redis cluster"))?;
    boxed(
        RedisBackend::from_url(&cluster.url()).expect("backend"),
        cluster,
    )
}

/// A TLS server with a private CA, trusted through the URL's `ca_file`.
async fn redis_tls() -> Made {
    let pki = Pki::make("conformance").ok_or("openssl could not make the test certificates")?;
    let (server, port) = tls::tls_server(&pki, "no")
        .await
        .ok_or_else(|| no_server("redis"))?;
    let url = tls::url(port, &format!("ca_file={}", pki.path("ca.pem")));
    boxed(
        RedisBackend::from_url(&url).expect("backend"),
        (server, pki),
    )
}

/// A Cluster whose nodes speak only TLS, clients, bus and replication alike.
async fn redis_cluster_tls() -> Made {
    let pki = Pki::make("cluster").ok_or("openssl could not make the test certificates")?;
    let tls = ClusterTls {
        cert: pki.dir.join("server.pem"),
        key: pki.dir.join("server.key"),
        ca: pki.dir.join("ca.pem"),
    };
    let cluster = tokio::task::spawn_blocking(move || TestCluster::start_tls(3, 0, tls))
        .await
        .expect("the cluster fixture")
        .ok_or_else(|| no_server("redis cluster"))?;
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    boxed(
        RedisBackend::from_url(&url).expect("backend"),
        (cluster, pki),
    )
}

async fn redlock(count: usize) -> Made {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(
            TestServer::start(Kind::Redis, Needs::control())
                .await
                .ok_or_else(|| no_server("redis"))?,
        );
    }
    let hosts: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    // The nodes started a moment ago: the restart guard (tested on its own) would keep them
    // from granting anything for a minute.
    let url = format!("redlock://{}?restart_guard=0", hosts.join(","));
    boxed(RedlockBackend::from_url(&url).expect("backend"), nodes)
}

async fn memcache(provider: Provider) -> Made {
    let server = TestServer::start(Kind::Memcached, Needs::any().from(provider))
        .await
        .ok_or_else(|| no_server("memcached"))?;
    eprintln!(
        "conformance: memcached via {} at {}",
        server.provider(),
        server.url()
    );
    boxed(
        MemcacheBackend::from_url(server.url()).expect("backend"),
        server,
    )
}

async fn etcd(provider: Provider) -> Made {
    let server = TestServer::start(Kind::Etcd, Needs::any().from(provider))
        .await
        .ok_or_else(|| no_server("etcd"))?;
    eprintln!(
        "conformance: etcd via {} at {}",
        server.provider(),
        server.url()
    );
    boxed(
        EtcdBackend::from_url(server.url()).expect("backend"),
        server,
    )
}

/// A member serving TLS with a private CA, trusted through the URL's `ca_file`, that asks for a
/// client certificate (as the members of a Kubernetes control plane do).
async fn etcd_tls() -> Made {
    let pki =
        Pki::make("etcd-conformance").ok_or("openssl could not make the test certificates")?;
    let (server, port) = tls::etcd_tls_server(&pki, true)
        .await
        .ok_or_else(|| no_server("etcd"))?;
    let url = tls::etcd_url(port, &pki.mutual_query());
    boxed(EtcdBackend::from_url(&url).expect("backend"), (server, pki))
}
