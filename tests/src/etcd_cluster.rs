//! A real etcd cluster of several members on loopback ports, each a local `etcd` process with
//! a data dir of its own; dropping it stops every member and removes the data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// A running cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    client_port: u16,
    dir: PathBuf,
    /// The command line, to start it again on its data dir.
    args: Vec<String>,
    process: Option<Child>,
}

impl Member {
    fn spawn(&mut self) {
        self.process = Some(
            Command::new("etcd")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start an etcd member"),
        );
    }
}

impl EtcdCluster {
    /// `size` members, every one serving, a leader elected; `None` (a skip, see
    /// [`crate::skip`]) when there is no `etcd` binary.
    pub async fn start(size: usize) -> Option<EtcdCluster> {
        if Command::new("etcd").arg("--version").output().is_err() {
            crate::skip::skip("no etcd binary to build a test cluster with");
            return None;
        }
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| (free_port().expect("port"), free_port().expect("port")))
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = std::env::temp_dir().join(format!("pylock-etcd-cluster-{client}"));
                let _ = std::fs::remove_dir_all(&dir);
                let args = [
                    ["--name", &format!("m{i}")],
                    ["--data-dir", &dir.display().to_string()],
                    [
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ],
                    [
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ],
                    ["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")],
                    [
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                    ],
                    ["--initial-cluster", &initial],
                    ["--initial-cluster-state", "new"],
                ]
                .iter()
                .flatten()
                .map(|arg| (*arg).to_owned())
                .collect();
                let mut member = Member {
                    client_port: *client,
                    dir,
                    args,
                    process: None,
                };
                member.spawn();
                member
            })
            .collect();
        let cluster = EtcdCluster { members };
        cluster.leader().await;
        Some(cluster)
    }

    /// `etcd://` with every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// The index of the member that leads now, once a live member says it leads (within
    /// 30 s; a paused member answers nothing and is passed over).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, member) in self.members.iter().enumerate() {
                if member.process.is_none() {
                    continue;
                }
                let endpoint = format!("http://127.0.0.1:{}", member.client_port);
                let status = tokio::time::timeout(Duration::from_secs(1), async {
                    let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                    client.status().await.ok()
                })
                .await
                .ok()
                .flatten();
                if let Some(status) = status
                    && let Some(header) = status.header()
                    && status.leader() != 0
                    && status.leader() == header.member_id()
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no etcd member leads");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every member at once (SIGKILL) and starts them all again on their data dirs;
    /// returns once they have a leader.
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for member in &mut self.members {
            member.spawn();
        }
        self.leader().await;
    }

    /// Waits until every live member answers (within 30 s): after a resume or a restart, a
    /// member that is still catching up answers slowly.
    pub async fn wait_until_all_serve(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for member in self.members.iter().filter(|m| m.process.is_some()) {
            let endpoint = format!("http://127.0.0.1:{}", member.client_port);
            loop {
                let answered = tokio::time::timeout(Duration::from_millis(500), async {
                    let mut client = etcd_client::Client::connect([endpoint.clone()], None)
                        .await
                        .ok()?;
                    client.get("pylock-test-probe", None).await.ok()
                })
                .await;
                if matches!(answered, Ok(Some(_))) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {endpoint} does not serve"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Freezes member `i` (SIGSTOP): its connections stay open, it answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a paused member go on.
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(process) = &self.members[i].process {
            let _ = Command::new("kill")
                .args([signal, &process.id().to_string()])
                .status();
        }
    }

    /// Kills member `i` (SIGKILL, like a crash); its data dir stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut process) = member.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
            let _ = std::fs::remove_dir_all(&member.dir);
        }
    }
}
