//! `etcd://` backend for [pylock](https://docs.rs/pylock): locks on an etcd cluster, the
//! consensus store every Kubernetes cluster runs, with fencing tokens from the store itself.
//!
//! | URL | meaning |
//! |---|---|
//! | `etcd://` | `localhost:2379` |
//! | `etcd://host[:port][,host[:port]...]` | the members of one cluster |
//! | `etcd://user:password@host:2379` | with etcd's authentication |
//! | `etcds://host:2379?ca_file=ca.pem` | over TLS (feature `tls`), trusting that CA (else the system's roots) |
//! | `etcds://...&cert_file=client.pem&key_file=client.key` | with a client certificate (etcd's `--client-cert-auth`) |
//!
//! Options: `connect_timeout`, `response_timeout` (default `1s` each), `namespace` (put before
//! every key on the server), and for `etcds://` `ca_file`, `cert_file`, `key_file`. Unknown
//! options are errors. See [`EtcdConfig`].
//!
//! With authentication, the user needs read and write permission on the locks' keys: the
//! namespace, then the key prefix (`pylock:` by default), as a prefix permission. A wrong
//! password, a missing user or a key outside the user's permissions fails at once with a
//! [`Backend`](pylock_core::Error::Backend) error whose source is etcd's reason; the password
//! never appears in errors. etcd drops a token left idle for its `--auth-token-ttl` (5 minutes
//! by default); the client then authenticates again and sends the call once more.
//!
//! How each operation works (see [`EtcdBackend`]): a lock is a key holding the owner's token,
//! attached to a lease with the lock's TTL; acquire, release and extend are each one
//! transaction that checks the key first (absent, or holding our token), and waiters watch the
//! key, so a release, a forced release or a lease that runs out wakes them.
//!
//! Fair locks (`Lock::fair`): each waiter's place in line is a key under the lock's
//! `:pylock-queue/` prefix, on a lease of the waiter's patience that each attempt renews; the
//! line is ordered by the places' `create_revision`, and only the first takes the lock, in a
//! transaction that checks the lock is free, the place is still the waiter's and no place is
//! older (a waiter's attempts after its first are that one transaction). A waiter
//! that gives up deletes its place; one that dies loses it when the lease runs out; either way
//! the watch wakes the next in line. Lock names containing `:pylock-queue/` are refused.
//!
//! What etcd gives that Redis cannot: **fencing tokens that survive every failure**. The fence
//! is the key's `create_revision`, from etcd's revision counter, which the cluster replicates
//! through Raft and persists: it grows with every holder across member restarts, leader
//! elections and a full restart, where a Redis counter lives and dies with one server's
//! memory. What it costs: every acquire, release and extend is a write through Raft, synced to
//! the members' disks (leases are reused between attempts, renewed alongside the write, so a
//! lease is granted only for a process's first attempts), and leases count whole seconds with
//! a minimum of their own (about 2 s by default), so a lock whose holder died is free after
//! its TTL rounded up to a second, or that minimum.
//!
//! The client is [`etcd-client`](https://docs.rs/etcd-client), the maintained crate over
//! etcd's gRPC API (the same API `etcdctl` and Go's `clientv3` use); it compiles etcd's
//! protocol files at build time, so building this crate needs `protoc` (Debian:
//! `protobuf-compiler`). The JSON gateway would avoid that, but it cannot watch a key in a
//! way that confirms the watch before a waiter's attempt.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use pylock_core::{Locks, Registry};
//!
//! Registry::global().install(pylock_etcd::BACKENDS); // the `pylock` facade does this for you
//! let locks = Locks::connect("etcd://127.0.0.1:2379")?;
//! let guard = locks.lock("nightly-report").acquire().await?;
//! println!("fencing token {:?}", guard.fence());
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Library code returns errors and logs through `tracing`; tests may unwrap and print.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod backend;
mod config;
mod errors;
mod leases;
mod queue;
mod watches;

use std::sync::Arc;

use pylock_core::raw::BackendDescriptor;

pub use backend::EtcdBackend;
pub use config::{DEFAULT_HOST, DEFAULT_PORT, EtcdConfig, OPTIONS};

/// The prefix under which the fair waiters of the lock stored at `key` (its key on the
/// server: namespace, key prefix and name, as in `pylock:nightly-report`) keep their places
/// in line, one key each: for operators' tools and tests that look at a line.
pub fn line_prefix(key: &str) -> String {
    queue::queue_prefix(key)
}

/// `etcd://` and `etcds://`, for [`Registry::install`](pylock_core::Registry::install).
pub const BACKENDS: &[BackendDescriptor] = &[BackendDescriptor {
    name: "etcd",
    schemes: &["etcd", "etcds"],
    open: |url| Ok(Arc::new(EtcdBackend::from_url(url)?)),
}];
