//! A real Redis Cluster on loopback ports: `redis-server` processes in cluster mode, joined by
//! `redis-cli --cluster create`. Dropping it stops every node.
//!
//! It is a blocking API. The methods that wait for the cluster to settle (`start`,
//! `restart`, `wait_for_failover`, `wait_until_healthy`) take seconds: async tests call them
//! inside `tokio::task::spawn_blocking` or `block_in_place`. The others run one `redis-cli`
//! command or send a signal, and may be called directly.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// A running cluster of `masters` masters with `replicas` replicas each.
#[derive(Debug)]
pub struct TestCluster {
    dir: PathBuf,
    nodes: BTreeMap<u16, Option<Child>>,
    /// For a cluster over TLS: the PEM files of the nodes' certificate, key and CA.
    tls: Option<ClusterTls>,
}

/// The certificate files a TLS cluster's nodes present, and the CA that signed them.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The nodes' certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) clients must trust.
    pub ca: PathBuf,
}

impl TestCluster {
    /// Starts and joins the nodes; `None` (after saying why) when `redis-server` or
    /// `redis-cli` is missing outside CI. Under `CI=true` a missing binary panics.
    pub fn start(masters: usize, replicas: usize) -> Option<TestCluster> {
        Self::start_with(masters, replicas, None)
    }

    /// As [`start`](Self::start), every node speaking only TLS (clients, cluster bus and
    /// replication) with the certificate of `tls`.
    pub fn start_tls(masters: usize, replicas: usize, tls: ClusterTls) -> Option<TestCluster> {
        Self::start_with(masters, replicas, Some(tls))
    }

    fn start_with(masters: usize, replicas: usize, tls: Option<ClusterTls>) -> Option<TestCluster> {
        for binary in ["redis-server", "redis-cli"] {
            if Command::new(binary).arg("--version").output().is_err() {
                crate::skip::skip(&format!("no {binary} to build a test cluster with"));
                return None;
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "pylock-cluster-{}-{}",
            std::process::id(),
            free_port().expect("port")
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = TestCluster {
            dir,
            nodes: BTreeMap::new(),
            tls,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = free_port().expect("free port");
            cluster.nodes.insert(port, None);
            cluster.spawn(port);
        }
        let mut create = Command::new("redis-cli");
        create.args(cluster.cli_tls_args());
        create.arg("--cluster").arg("create");
        for port in cluster.nodes.keys() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "creating the cluster failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_healthy();
        let _ = writeln!(
            std::io::stderr(),
            "test server: redis cluster ({masters} masters, {replicas} replicas each) via local binaries at {}",
            cluster.url()
        );
        Some(cluster)
    }

    fn spawn(&mut self, port: u16) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a cluster node");
        self.nodes.insert(port, Some(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cluster node {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis+cluster://` (`rediss+cluster://?ca_file=...` over TLS) with every node as a
    /// seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .keys()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        match &self.tls {
            None => format!("redis+cluster://{}", seeds.join(",")),
            Some(tls) => format!(
                "rediss+cluster://{}?ca_file={}",
                seeds.join(","),
                tls.ca.display()
            ),
        }
    }

    /// What `redis-cli` needs to talk to the nodes.
    fn cli_tls_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(tls) => vec![
                "--tls".to_owned(),
                "--cacert".to_owned(),
                tls.ca.display().to_string(),
            ],
        }
    }

    /// `redis-cli ARGS...` on the node at `port`, its output.
    pub fn cli_on(&self, port: u16, args: &[&str]) -> String {
        redis_cli(&self.cli_tls_args(), port, args)
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        let nodes = self.cli_any(&["cluster", "nodes"]);
        nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| {
                let addr = line.split_whitespace().nth(1)?;
                addr.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The port of the master that holds `key` now (a master that does not serve the key's
    /// slot answers `MOVED`).
    pub fn master_of(&self, key: &str) -> u16 {
        self.masters()
            .into_iter()
            .find(|port| self.cli_on(*port, &["exists", key]).trim() == "1")
            .unwrap_or_else(|| panic!("no master holds {key}"))
    }

    /// Starts the node on `port` again, with its cluster configuration: a master that was
    /// replaced comes back as a replica of its successor.
    pub fn restart(&mut self, port: u16) {
        self.kill(port);
        self.spawn(port);
    }

    /// Freezes the node on `port` (SIGSTOP): its connections stay open, it answers nothing.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Lets a paused node go on.
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        if let Some(Some(child)) = self.nodes.get(&port) {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// The port of the first seed in [`url`](Self::url): the node a backend's release-notice
    /// connection goes to first.
    pub fn first_seed(&self) -> u16 {
        self.nodes.keys().next().copied().unwrap_or_default()
    }

    /// Kills the node on `port` (SIGKILL, like a crash).
    pub fn kill(&mut self, port: u16) {
        if let Some(Some(mut child)) = self.nodes.insert(port, None) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the cluster has seen the node on `killed` fail and promoted a replica in
    /// its place: `masters` healthy masters serving every slot again.
    pub fn wait_for_failover(&self, killed: u16, masters: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = self.cli_any(&["cluster", "nodes"]);
            let failed = nodes
                .lines()
                .any(|line| line.contains(&format!(":{killed}@")) && line.contains("fail"));
            if failed && self.masters().len() == masters {
                self.wait_until_healthy();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no replica replaced the master on {killed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every live node reports `cluster_state:ok` and all slots are served.
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let healthy = self.live_ports().iter().all(|port| {
                let info = self.cli_on(*port, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    fn cli_any(&self, args: &[&str]) -> String {
        let port = *self.live_ports().first().expect("a live node");
        self.cli_on(port, args)
    }
}

/// `redis-cli -p PORT ARGS...` on a plain (not TLS) node, its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    redis_cli(&[], port, args)
}

fn redis_cli(tls: &[String], port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(tls)
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.nodes.values_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
