//! Real servers for the tests: an explicit URL from the environment, a testcontainers
//! container when a Docker engine answers, or a server binary on a free loopback port.
//!
//! | variable | meaning |
//! |---|---|
//! | `PYLOCK_TEST_REDIS_URL`, `PYLOCK_TEST_MEMCACHE_URL`, `PYLOCK_TEST_ETCD_URL` | use this server (shared tests only) |
//! | `PYLOCK_TEST_REDIS_IMAGE`, `PYLOCK_TEST_MEMCACHED_IMAGE`, `PYLOCK_TEST_ETCD_IMAGE` | container image (default: the official `redis:7`, `memcached:1.6`, `quay.io/coreos/etcd:v3.5.17`) |
//! | `PYLOCK_TEST_PROVIDER` | force `container` or `binary` |
//! | `CI=true` | a missing server fails the test instead of skipping it |
//!
//! Every server listens on 127.0.0.1 only; containers use the host's network stack.

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::docker;

/// The servers the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server`.
    Redis,
    /// `memcached`.
    Memcached,
    /// `etcd`, a single member. Unlike the others it keeps its data (a directory of its own
    /// under /tmp) when stopped and started again, as etcd does.
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Memcached => "memcached",
            Kind::Etcd => "etcd",
        }
    }

    fn url_env(self) -> &'static str {
        match self {
            Kind::Redis => "PYLOCK_TEST_REDIS_URL",
            Kind::Memcached => "PYLOCK_TEST_MEMCACHE_URL",
            Kind::Etcd => "PYLOCK_TEST_ETCD_URL",
        }
    }

    fn image_env(self) -> &'static str {
        match self {
            Kind::Redis => "PYLOCK_TEST_REDIS_IMAGE",
            Kind::Memcached => "PYLOCK_TEST_MEMCACHED_IMAGE",
            Kind::Etcd => "PYLOCK_TEST_ETCD_IMAGE",
        }
    }

    fn default_image(self) -> (&'static str, &'static str) {
        match self {
            Kind::Redis => ("redis", "7"),
            Kind::Memcached => ("memcached", "1.6"),
            Kind::Etcd => ("quay.io/coreos/etcd", "v3.5.17"),
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Memcached => "memcached",
            Kind::Etcd => "etcd",
        }
    }

    /// The command line that serves on `port` of 127.0.0.1, with no persistence, then `extra`
    /// (where `{port}` stands for `port`; a flag given again there overrides the default).
    fn command(self, port: u16, extra: &[String]) -> Vec<String> {
        let mut command: Vec<String> = match self {
            Kind::Redis => vec![
                "redis-server".into(),
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
            ],
            Kind::Memcached => vec![
                "memcached".into(),
                "-p".into(),
                port.to_string(),
                "-l".into(),
                "127.0.0.1".into(),
                "-U".into(),
                "0".into(),
                "-u".into(),
                "root".into(),
            ],
            // One member; its peer port is never dialled (port 0), its data dir is the port's.
            Kind::Etcd => vec![
                "etcd".into(),
                "--name".into(),
                "pylock-test".into(),
                "--data-dir".into(),
                etcd_data_dir(port).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{port}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{port}"),
                "--listen-peer-urls".into(),
                "http://127.0.0.1:0".into(),
                "--initial-advertise-peer-urls".into(),
                "http://127.0.0.1:2380".into(),
                "--initial-cluster".into(),
                "pylock-test=http://127.0.0.1:2380".into(),
            ],
        };
        command.extend(
            extra
                .iter()
                .map(|arg| arg.replace("{port}", &port.to_string())),
        );
        command
    }

    fn url(self, port: u16) -> String {
        match self {
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::Memcached => format!("memcache://127.0.0.1:{port}"),
            Kind::Etcd => format!("etcd://127.0.0.1:{port}"),
        }
    }
}

/// The data directory of the etcd member serving on `port` (in the container, or on this host
/// for a local binary).
fn etcd_data_dir(port: u16) -> PathBuf {
    PathBuf::from(format!("/tmp/pylock-test-etcd-{port}"))
}

/// Where a server came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// A URL from the environment; the tests cannot restart or configure it.
    External,
    /// A testcontainers container on the host network.
    Container,
    /// A server binary started by the test.
    Binary,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::External => "external URL",
            Provider::Container => "testcontainers",
            Provider::Binary => "local binary",
        })
    }
}

/// What a test needs from its server.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Extra server arguments (passwords, ACL users); implies a server of its own.
    pub args: Vec<String>,
    /// The test stops, starts or restarts the server; implies a server of its own.
    pub control: bool,
    /// Only this provider will do.
    pub provider: Option<Provider>,
}

impl Needs {
    /// Any server will do.
    pub fn any() -> Self {
        Self::default()
    }

    /// A server of the test's own, which it may stop and start.
    pub fn control() -> Self {
        Needs {
            control: true,
            ..Self::default()
        }
    }

    /// A server of its own started with `args` (`{port}` in one stands for the server's port).
    pub fn args(args: &[&str]) -> Self {
        Needs {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            control: true,
            ..Self::default()
        }
    }

    /// Only from `provider`.
    pub fn from(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }
}

enum Process {
    External,
    Container(Box<ContainerAsync<GenericImage>>),
    Binary(Option<Child>),
}

/// A running test server. Dropping it stops what the test started.
pub struct TestServer {
    kind: Kind,
    provider: Provider,
    url: String,
    port: u16,
    args: Vec<String>,
    process: Process,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field("port", &self.port)
            .finish()
    }
}

impl TestServer {
    /// A server as `needs` says, or `None` (after saying why on stderr) when there is none
    /// to be had outside CI. Under `CI=true` a missing server panics: CI must not skip.
    pub async fn start(kind: Kind, needs: Needs) -> Option<TestServer> {
        let forced = std::env::var("PYLOCK_TEST_PROVIDER").ok();
        let wanted = needs.provider.or(match forced.as_deref() {
            Some("container") => Some(Provider::Container),
            Some("binary") => Some(Provider::Binary),
            _ => None,
        });
        let own = needs.control || !needs.args.is_empty();

        if !own
            && matches!(wanted, None | Some(Provider::External))
            && let Ok(url) = std::env::var(kind.url_env())
        {
            return Some(announce(TestServer {
                kind,
                provider: Provider::External,
                url,
                port: 0,
                args: Vec::new(),
                process: Process::External,
            }));
        }
        let mut reasons = Vec::new();
        if matches!(wanted, None | Some(Provider::Container)) {
            match start_container(kind, &needs.args).await {
                Ok(server) => return Some(announce(server)),
                Err(reason) => reasons.push(format!("testcontainers: {reason}")),
            }
        }
        if matches!(wanted, None | Some(Provider::Binary)) {
            match start_binary(kind, &needs.args).await {
                Ok(server) => return Some(announce(server)),
                Err(reason) => reasons.push(format!("binary: {reason}")),
            }
        }
        let message = format!(
            "no {} server for this test ({}); set {}, start a Docker engine, or install {}",
            kind.name(),
            reasons.join("; "),
            kind.url_env(),
            kind.binary()
        );
        crate::skip::skip(&message);
        None
    }

    /// The server's URL for pylock.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server came from.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The loopback port (0 for an external server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (its data is lost). Only for servers of the test's own.
    pub async fn stop(&mut self) {
        match &mut self.process {
            Process::External => panic!("cannot stop an external server"),
            Process::Container(container) => container
                .stop_with_timeout(Some(0))
                .await
                .expect("stop the container"),
            Process::Binary(child) => {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        wait_until(
            || TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err(),
            "stop",
        )
        .await;
    }

    /// Starts a stopped server again on the same port, empty.
    pub async fn start_again(&mut self) {
        match &mut self.process {
            Process::External => panic!("cannot start an external server"),
            Process::Container(container) => {
                container.start().await.expect("start the container again");
            }
            Process::Binary(child) => {
                *child = Some(spawn(self.kind, self.port, &self.args).expect("restart the binary"));
            }
        }
        wait_ready(self.kind, self.port)
            .await
            .expect("the restarted server answers");
    }

    /// Freezes the server (SIGSTOP, or a paused container): connections stay open, nothing
    /// is answered. Only for servers of the test's own.
    pub async fn pause(&mut self) {
        match &mut self.process {
            Process::External => panic!("cannot pause an external server"),
            Process::Container(container) => container.pause().await.expect("pause the container"),
            Process::Binary(child) => {
                if let Some(child) = child {
                    let _ = std::process::Command::new("kill")
                        .args(["-STOP", &child.id().to_string()])
                        .status();
                }
            }
        }
    }

    /// Lets a paused server go on.
    pub async fn resume(&mut self) {
        match &mut self.process {
            Process::External => panic!("cannot resume an external server"),
            Process::Container(container) => {
                container.unpause().await.expect("unpause the container");
            }
            Process::Binary(child) => {
                if let Some(child) = child {
                    let _ = std::process::Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                }
            }
        }
    }

    /// Stops and starts the server: everything it held is gone.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Process::Binary(child) = &mut self.process {
            if let Some(child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
            if self.kind == Kind::Etcd {
                let _ = std::fs::remove_dir_all(etcd_data_dir(self.port));
            }
        }
        // A container is removed by its own drop.
    }
}

fn announce(server: TestServer) -> TestServer {
    // The log of every run says which provider served it. Written to the stderr handle
    // itself, which the test harness does not capture, so it shows for passing tests too.
    let _ = writeln!(
        std::io::stderr(),
        "test server: {} via {} at {}",
        server.kind.name(),
        server.provider,
        server.url
    );
    server
}

async fn start_container(kind: Kind, args: &[String]) -> Result<TestServer, String> {
    docker::ping().await?;
    let (default_name, default_tag) = kind.default_image();
    let image =
        std::env::var(kind.image_env()).unwrap_or_else(|_| format!("{default_name}:{default_tag}"));
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let port = free_port()?;
    let ready = match kind {
        Kind::Redis => WaitFor::message_on_stdout("Ready to accept connections"),
        // memcached prints nothing when ready, and etcd's log goes to stderr: the readiness
        // check below decides.
        Kind::Memcached | Kind::Etcd => WaitFor::Nothing,
    };
    let container = GenericImage::new(name, tag)
        .with_wait_for(ready)
        .with_network("host")
        .with_cmd(kind.command(port, args))
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .map_err(|e| format!("starting {image}: {e}"))?;
    wait_ready(kind, port).await?;
    Ok(TestServer {
        kind,
        provider: Provider::Container,
        url: kind.url(port),
        port,
        args: args.to_vec(),
        process: Process::Container(Box::new(container)),
    })
}

async fn start_binary(kind: Kind, args: &[String]) -> Result<TestServer, String> {
    let port = free_port()?;
    if kind == Kind::Etcd {
        // A member starts empty; it keeps its data only across its own restarts.
        let _ = std::fs::remove_dir_all(etcd_data_dir(port));
    }
    let child = spawn(kind, port, args)?;
    let mut server = TestServer {
        kind,
        provider: Provider::Binary,
        url: kind.url(port),
        port,
        args: args.to_vec(),
        process: Process::Binary(Some(child)),
    };
    if let Err(reason) = wait_ready(kind, port).await {
        if let Process::Binary(Some(child)) = &mut server.process {
            let _ = child.kill();
        }
        return Err(reason);
    }
    Ok(server)
}

fn spawn(kind: Kind, port: u16, args: &[String]) -> Result<Child, String> {
    let command = kind.command(port, args);
    let binary =
        find_binary(kind.binary()).ok_or_else(|| format!("{} not found", kind.binary()))?;
    Command::new(binary)
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", kind.binary()))
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free TCP port on 127.0.0.1, never one this process was given before.
///
/// The tests of one file run at once, and some stop servers and start them again on the same
/// port. A port freed by one test's stopped server must not go to another test's new server:
/// the first test's clients would then reach a stranger (a Redlock test once counted another
/// test's node as one of its own, and so a majority where two of its three nodes were down).
pub fn free_port() -> Result<u16, String> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err("no free port that was not given out before".to_owned())
}

/// Waits, without holding up the test's runtime, until something listens on `port`.
async fn wait_ready(kind: Kind, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if serving(kind, port) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 20 s"))
}

/// Whether the server on `port` serves: it listens, and etcd has also elected itself leader
/// (its `/health` says so; before that it refuses requests).
fn serving(kind: Kind, port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    if kind != Kind::Etcd {
        return true;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut answer))
        .is_ok()
        && answer.contains("\"health\":\"true\"")
}

/// Waits, without holding up the test's runtime, until `done` (a quick local check) is true.
async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the server did not {what} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
