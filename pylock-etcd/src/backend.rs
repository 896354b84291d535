//! [`EtcdBackend`]: each lock primitive as one etcd transaction on a lease.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use pylock_core::raw::{
    Attempt, Capabilities, Holder, LockBackend, PerRuntime, ReleaseNotice, Token, async_trait,
};
use pylock_core::{Error, Result};

use crate::config::EtcdConfig;
use crate::errors::{NAME, from_etcd, is_lease_not_found, timed_out};
use crate::leases::{Lease, Leases};
use crate::queue::{self, Places, QUEUE_MARK, Spot};
use crate::watches::Watches;

/// How many times a request that reached no member is sent, per member of the URL. The client
/// picks a member at random for each, so one try per member is not enough: with one member of
/// three down, all three tries of a call met it about once in 27 calls (a release among them
/// failed). With this many, a call fails only when no member answers, or, with two of three
/// down, once in about 17,000 calls.
const TRIES_PER_MEMBER: usize = 8;

/// Locks on an etcd cluster.
///
/// - acquire: one transaction on a lease with the lock's TTL (whole seconds, rounded up): if
///   the key was never created (`create_revision == 0`), put the owner token on the lease;
///   otherwise read the key, whose lease tells the holder's remaining time. The fence is the
///   revision of the put, which is the key's `create_revision`: etcd's revision counter is
///   replicated and persisted, so fences increase across every holder, member restart, leader
///   election and cluster restart. An attempt that finds its own token (the answer to an
///   earlier attempt was lost) moves the lock to its lease and keeps the fence;
/// - release: if the key still holds our token, delete it (in one transaction);
/// - extend: if the key still holds our token, put it again on a lease with the new TTL (the
///   fence, its `create_revision`, stays);
/// - leases: a lease that carries no key (after a release, an extend, or an attempt that
///   found the lock held) is kept for the next attempt of the same TTL, which renews it
///   alongside its transaction, so an attempt is one write through Raft, not a grant and a
///   write; a lease is granted only when none is idle (see the `leases` module);
/// - waiting: a watch on the key, confirmed by the server before the attempt that precedes the
///   wait; the key's deletion (a release, a forced release, or its lease running out) wakes a
///   waiter.
///
/// Leases count whole seconds and etcd grants at least its minimum (about 2 s by default), so a
/// lock lives at least its `expires`, rounded up to a second, and perhaps longer, never less.
pub struct EtcdBackend {
    config: EtcdConfig,
    /// The client of each runtime that calls: its connection's tasks run on the runtime that
    /// made it.
    clients: PerRuntime<Client>,
    /// Held while a client is made, so that concurrent first calls make one.
    connecting: tokio::sync::Mutex<()>,
    watches: Watches,
    leases: Leases,
    places: Places,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    /// A backend for `config`. It connects on first use.
    pub fn new(config: EtcdConfig) -> Self {
        EtcdBackend {
            config,
            clients: PerRuntime::new(),
            connecting: tokio::sync::Mutex::new(()),
            watches: Watches::new(),
            leases: Leases::default(),
            places: Places::default(),
        }
    }

    /// A backend for an `etcd://` URL (see [`EtcdConfig`]).
    ///
    /// # Errors
    ///
    /// As for [`EtcdConfig::from_url`].
    pub fn from_url(url: &str) -> Result<Self> {
        EtcdConfig::from_url(url).map(Self::new)
    }

    /// The backend's settings.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    fn server(&self) -> &str {
        self.config.redacted_url()
    }

    /// The client of the calling runtime, made on first use.
    pub(crate) async fn client(&self) -> Result<Client> {
        if let Some(client) = self.clients.get() {
            return Ok(client);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(client) = self.clients.get() {
            return Ok(client);
        }
        let timeouts = self.config.timeouts;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeouts.connect)
            .with_timeout(timeouts.response);
        if let Some((user, password)) = &self.config.credentials {
            // etcd forgets a token left idle for its `--auth-token-ttl` (5 minutes by
            // default): a call refused for that authenticates again and is sent once more,
            // instead of every call failing until the process restarts.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(files) = &self.config.tls {
            options = options.with_tls(tls_options(files));
        }
        let context = "connecting";
        let client = match tokio::time::timeout(
            timeouts.call(),
            Client::connect(&self.config.endpoints, Some(options)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(from_etcd(context, self.server(), error)),
            Err(_) => return Err(timed_out(context, self.server(), timeouts.call())),
        };
        self.clients.set(client.clone());
        Ok(client)
    }

    /// One request, bounded by [`Timeouts::call`](pylock_core::raw::Timeouts::call).
    ///
    /// The client spreads requests over the members at random; one sent to a member that is
    /// down (or whose name does not resolve) fails to connect, before anything reached a
    /// server, and is sent again, up to [`TRIES_PER_MEMBER`] times per member within the
    /// call's time, so that a dead member costs a caller nothing while the others serve.
    pub(crate) async fn call<T, F, Fut>(&self, context: &str, request: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let limit = self.config.timeouts.call();
        let tries = self.config.endpoints.len() * TRIES_PER_MEMBER;
        let answer = tokio::time::timeout(limit, async {
            let mut tried = 1;
            loop {
                match request(client.clone()).await {
                    Err(error) if tried < tries && never_reached_a_member(&error) => tried += 1,
                    answer => return answer,
                }
            }
        });
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(from_etcd(context, self.server(), error)),
            Err(_) => Err(timed_out(context, self.server(), limit)),
        }
    }

    /// The key on the server: the namespace, then the lock's key. A name that could address a
    /// fair lock's line is refused.
    fn server_key(&self, key: &str) -> Result<String> {
        if key.contains(QUEUE_MARK) {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: format!("names containing {QUEUE_MARK:?} are pylock's own keys"),
            });
        }
        Ok(format!("{}{key}", self.config.namespace))
    }

    /// A new lease of `seconds`.
    async fn grant(&self, seconds: i64) -> Result<Lease> {
        let sent = Instant::now();
        let granted = self
            .call("granting a lease", |mut client| async move {
                client.lease_grant(seconds, None).await
            })
            .await?;
        let life = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(0));
        Ok(Lease::granted(granted.id(), seconds, life, sent))
    }

    /// Renews `lease` to its full TTL: a keep-alive, which the leader answers without a write
    /// through Raft.
    async fn renew(&self, lease: i64) -> Result<()> {
        self.call("renewing a lease", |mut client| async move {
            client.lease_keep_alive(lease).await.map(drop)
        })
        .await
    }

    /// Revokes `lease` without waiting for the answer: it only frees the server sooner, the
    /// lease ends by itself.
    fn revoke_later(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        let client = self.clients.get();
        if let (Some(mut client), Ok(runtime)) = (client, tokio::runtime::Handle::try_current()) {
            let limit = self.config.timeouts.call();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(limit, client.lease_revoke(lease)).await;
            });
        }
    }

    /// `lease`, which carries no key, for a later attempt (or revoked if the pool is full).
    fn set_aside(&self, lease: Lease) {
        if let Some(extra) = self.leases.give_back(lease) {
            self.revoke_later(extra.id);
        }
    }

    /// The lease `id`, which a lock or a place in line has just left: back to the pool if this
    /// backend lent it, else revoked.
    fn recycle(&self, id: i64) {
        match self.leases.returned(id) {
            Some(lease) => self.set_aside(lease),
            None => self.revoke_later(id),
        }
    }

    async fn txn(&self, context: &str, txn: Txn) -> Result<TxnResponse> {
        self.call(context, |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// The transaction `build` makes for a lease of `seconds`, and that lease, which lives at
    /// least `seconds` counted from this call if the answer is `Ok`.
    ///
    /// The lease is an idle one of ours if there is one, renewed alongside the transaction
    /// (one write through Raft for the attempt), else a new one granted first (two writes). If
    /// the idle lease turns out gone, or its renewal fails so that its life is unknown, the
    /// transaction is sent again on a new lease: whatever the first one put on the old lease
    /// is found there as ours and moved (an acquire takes it back, an extend moves it), and
    /// the old lease ends by itself. A transaction that fails otherwise may have landed: its
    /// lease is left to end by itself, not revoked, since revoking it would delete what the
    /// transaction put there (a fair waiter's place, and with it the waiter's turn); the next
    /// attempt finds and moves it, and a caller that gives up releases or leaves the line.
    async fn txn_on_lease(
        &self,
        context: &str,
        seconds: i64,
        build: impl Fn(i64) -> Txn,
    ) -> Result<(TxnResponse, Lease)> {
        let sent = Instant::now();
        if let Some(idle) = self.leases.take(seconds, self.config.timeouts.call()) {
            let (answer, renewal) =
                tokio::join!(self.txn(context, build(idle.id)), self.renew(idle.id));
            match (answer, renewal) {
                (Ok(answer), Ok(())) => return Ok((answer, idle.renewed(sent))),
                (Err(error), _) if !is_lease_not_found(&error) => return Err(error),
                _ => {}
            }
        }
        let lease = self.grant(seconds).await?;
        let answer = self.txn(context, build(lease.id)).await?;
        Ok((answer, lease))
    }

    /// The remaining time of `lease`, if etcd still has it.
    async fn lease_remaining(&self, lease: i64) -> Result<Option<Duration>> {
        let answer = self
            .call("reading a lease", |mut client| async move {
                client.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok(u64::try_from(answer.ttl()).ok().map(Duration::from_secs))
    }

    /// An earlier attempt of ours got the lock and its answer was lost: the lock moves onto
    /// `lease`, which lives its TTL counted from this attempt, keeping its fence; a fair
    /// waiter's `place` in line goes too.
    async fn take_back(
        &self,
        key: String,
        owner: String,
        holder: &KeyValue,
        lease: Lease,
        place: Option<String>,
    ) -> Result<Attempt> {
        let mut moves = vec![TxnOp::put(
            key.clone(),
            owner.clone(),
            Some(PutOptions::new().with_lease(lease.id)),
        )];
        moves.extend(place.map(|place| TxnOp::delete(place, None)));
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, owner)])
            .and_then(moves);
        let moved = self.txn("acquiring a lock", txn).await?;
        if moved.succeeded() {
            self.leases.lend(lease);
            self.recycle(holder.lease());
            return Ok(Attempt::Acquired {
                fence: u64::try_from(holder.create_revision()).ok(),
            });
        }
        self.set_aside(lease);
        Ok(Attempt::Held {
            remaining: Some(Duration::ZERO),
        })
    }

    /// One attempt of a fair waiter whose place in line is `spot`: a transaction that takes
    /// the lock if it is free, the place is still the waiter's and no place in line is older,
    /// and otherwise reads the holder, the first in line and the place; the place's lease is
    /// renewed alongside (the waiter's sign of life, which keeps its turn). So a waiter's
    /// attempts after its first, and a hand-off to it, cost one write. `None` if the place is
    /// gone (its waiter was silent past its patience, or an operator removed it): the waiter
    /// must queue again. `sign_of_life`: whether to renew the place's lease.
    async fn take_turn(
        &self,
        key: &str,
        owner: &str,
        place: &str,
        spot: Spot,
        ttl: Duration,
        sign_of_life: bool,
    ) -> Result<Option<Attempt>> {
        let (taken, renewed) = tokio::join!(
            self.txn_on_lease("acquiring a fair lock", lease_seconds(ttl), |lease| {
                Txn::new()
                    .when([
                        Compare::create_revision(key, CompareOp::Equal, 0),
                        Compare::create_revision(place, CompareOp::Equal, spot.revision),
                        // Every place in line came at the same time as this one or later.
                        Compare::create_revision(
                            queue::queue_prefix(key),
                            CompareOp::Greater,
                            spot.revision - 1,
                        )
                        .with_prefix(),
                    ])
                    .and_then([
                        TxnOp::put(key, owner, Some(PutOptions::new().with_lease(lease))),
                        TxnOp::delete(place, None),
                    ])
                    .or_else([
                        TxnOp::get(key, None),
                        TxnOp::get(
                            queue::queue_prefix(key),
                            Some(queue::first_in_line_options()),
                        ),
                        TxnOp::get(place, None),
                    ])
            }),
            async {
                if sign_of_life {
                    self.renew(spot.lease).await
                } else {
                    Ok(())
                }
            },
        );
        let (answer, lease) = taken?;
        if answer.succeeded() {
            self.leases.lend(lease);
            self.places.forget(place);
            self.recycle(spot.lease);
            return Ok(Some(Attempt::Acquired {
                fence: fence_of(&answer),
            }));
        }
        self.set_aside(lease);
        let mut reads = answer.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        let (holder, first, mine) = (
            reads.next().flatten(),
            reads.next().flatten(),
            reads.next().flatten(),
        );
        if renewed.is_err() || mine.is_none_or(|mine| mine.create_revision() != spot.revision) {
            self.places.forget(place);
            return Ok(None);
        }
        if let Some(holder) = holder {
            let remaining = self.lease_remaining(holder.lease()).await.unwrap_or(None);
            return Ok(Some(Attempt::Held { remaining }));
        }
        Ok(Some(Attempt::Held {
            // Free, and first in line: only a race (the lock came and went) can get here.
            remaining: first
                .filter(|first| first.key() == place.as_bytes())
                .map(|_| Duration::ZERO),
        }))
    }

    /// Notices of `key`'s releases, through its watch (for the fair waiter `token`, if given).
    async fn watch(&self, key: &str, token: Option<&Token>) -> Result<ReleaseNotice> {
        let key = self.server_key(key)?;
        let client = self.client().await?;
        let limit = self.config.timeouts.call();
        self.watches
            .subscribe(client, limit, self.server(), &key, token)
            .await
    }

    /// Whatever `key` holds, if it is a lock of ours: a token on a lease.
    async fn lock_at(&self, key: &str) -> Result<Option<KeyValue>> {
        let server_key = self.server_key(key)?;
        let answer = self
            .call("reading a lock", |mut client| {
                let server_key = server_key.clone();
                async move { client.get(server_key, None::<GetOptions>).await }
            })
            .await?;
        let Some(kv) = answer.kvs().first().cloned() else {
            return Ok(None);
        };
        let is_token = kv.value().len() == 32 && kv.value().iter().all(u8::is_ascii_hexdigit);
        if !is_token || kv.lease() == 0 {
            return Err(Error::NotALock {
                key: key.to_owned(),
                found: if is_token {
                    "a token without a lease".to_owned()
                } else {
                    format!("a value of {} bytes", kv.value().len())
                },
            });
        }
        Ok(Some(kv))
    }
}

/// The client's TLS settings for an `etcds://` URL's files: its CA or the system's roots, and
/// its client certificate if it names one.
#[cfg(feature = "tls")]
fn tls_options(files: &pylock_core::raw::TlsFiles) -> etcd_client::TlsOptions {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let tls = match &files.ca {
        Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(ca)),
        None => TlsOptions::new().with_native_roots(),
    };
    match &files.client {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// Whether `error` is a failure to connect to a member: the request was never sent. The
/// connector says `tcp connect error` for a member that is down and `dns error` for a name
/// that does not resolve (a typo, a member whose record is gone).
fn never_reached_a_member(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            status.code() == tonic::Code::Unavailable
                && (message.contains("connect") || message.contains("dns error"))
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// A TTL as etcd's whole lease seconds, rounded up (a lock lives at least its TTL).
fn lease_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_nanos().div_ceil(1_000_000_000).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// The fence of a transaction that created a lock: its revision, which is the lock's
/// `create_revision`.
fn fence_of(answer: &TxnResponse) -> Option<u64> {
    answer
        .header()
        .and_then(|header| u64::try_from(header.revision()).ok())
}

/// The first key-value a transaction's `get` read, if any.
fn read(answer: &TxnResponse) -> Option<KeyValue> {
    answer.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_fencing(true)
            .with_notifications(true)
            .with_inspection(true)
            .with_ttl_granularity(Duration::from_secs(1))
            .with_fair(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let key = self.server_key(key)?;
        let owner = token.to_hex();
        let (answer, lease) = self
            .txn_on_lease("acquiring a lock", lease_seconds(ttl), |lease| {
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        owner.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key.clone(), None)])
            })
            .await?;
        if answer.succeeded() {
            self.leases.lend(lease);
            return Ok(Attempt::Acquired {
                fence: fence_of(&answer),
            });
        }
        let Some(holder) = read(&answer) else {
            // Deleted between the compare and the read cannot happen in one transaction;
            // an empty read means the key went at once: free, try again.
            self.set_aside(lease);
            return Ok(Attempt::Held {
                remaining: Some(Duration::ZERO),
            });
        };
        if holder.value() == owner.as_bytes() {
            return self.take_back(key, owner, &holder, lease, None).await;
        }
        self.set_aside(lease);
        let remaining = self.lease_remaining(holder.lease()).await.unwrap_or(None);
        Ok(Attempt::Held { remaining })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let key = self.server_key(key)?;
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                token.to_hex(),
            )])
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )]);
        let answer = self.txn("releasing a lock", txn).await?;
        for op in answer.op_responses() {
            if let TxnOpResponse::Delete(deleted) = op {
                for held in deleted.prev_kvs() {
                    self.recycle(held.lease());
                }
            }
        }
        Ok(answer.succeeded())
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let key = self.server_key(key)?;
        let owner = token.to_hex();
        let (answer, lease) = self
            .txn_on_lease("extending a lock", lease_seconds(ttl), |lease| {
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, owner.clone())])
                    .and_then([
                        TxnOp::get(key.clone(), None),
                        TxnOp::put(
                            key.clone(),
                            owner.clone(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                    ])
            })
            .await?;
        match read(&answer) {
            Some(old) if answer.succeeded() => {
                self.leases.lend(lease);
                self.recycle(old.lease());
            }
            _ => self.set_aside(lease),
        }
        Ok(answer.succeeded())
    }

    async fn try_acquire_fair(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        patience: Duration,
    ) -> Result<Attempt> {
        let key = self.server_key(key)?;
        let owner = token.to_hex();
        let place = queue::entry(&key, &owner);
        if let Some(spot) = self.places.get(&place)
            && let Some(attempt) = self
                .take_turn(&key, &owner, &place, spot, ttl, true)
                .await?
        {
            return Ok(attempt);
        }
        // Not in line yet (or no longer): a place that lives for the patience from this sign
        // of life. Putting it again keeps its `create_revision`, so the waiter keeps its turn.
        let (answer, waiting) = self
            .txn_on_lease(
                "waiting in a fair lock's line",
                lease_seconds(patience),
                |waiting| {
                    Txn::new().and_then([
                        TxnOp::put(
                            place.clone(),
                            owner.clone(),
                            Some(PutOptions::new().with_lease(waiting).with_prev_key()),
                        ),
                        TxnOp::get(key.clone(), None),
                        TxnOp::get(
                            queue::queue_prefix(&key),
                            Some(queue::first_in_line_options()),
                        ),
                    ])
                },
            )
            .await?;
        self.leases.lend(waiting);
        // A new place was created by this transaction: its revision is the transaction's.
        let mut revision = answer.header().map_or(0, |header| header.revision());
        let (mut holder, mut first) = (None, None);
        for (i, op) in answer.op_responses().into_iter().enumerate() {
            match op {
                TxnOpResponse::Put(put) => {
                    if let Some(before) = put.prev_key() {
                        revision = before.create_revision();
                        self.recycle(before.lease());
                    }
                }
                TxnOpResponse::Get(get) if i == 1 => holder = get.kvs().first().cloned(),
                TxnOpResponse::Get(get) => first = get.kvs().first().cloned(),
                _ => {}
            }
        }
        let spot = Spot {
            revision,
            lease: waiting.id,
        };
        self.places.remember(&place, spot);
        if let Some(holder) = holder {
            if holder.value() == owner.as_bytes() {
                let lease = self.grant(lease_seconds(ttl)).await?;
                // Revoked, not pooled: it still carries the place unless the lock is taken
                // back.
                self.places.forget(&place);
                self.leases.returned(waiting.id);
                self.revoke_later(waiting.id);
                return self
                    .take_back(key, owner, &holder, lease, Some(place))
                    .await;
            }
            let remaining = self.lease_remaining(holder.lease()).await.unwrap_or(None);
            return Ok(Attempt::Held { remaining });
        }
        if first.is_some_and(|first| first.key() == place.as_bytes()) {
            // First in line and the lock free: take it (or learn why not) at once.
            // The place was just put on a lease renewed by this attempt: no second renewal.
            if let Some(attempt) = self
                .take_turn(&key, &owner, &place, spot, ttl, false)
                .await?
            {
                return Ok(attempt);
            }
            // The place went between the two transactions: queue again.
            return Ok(Attempt::Held {
                remaining: Some(Duration::ZERO),
            });
        }
        // Free, but another waiter's turn: the watch tells it.
        Ok(Attempt::Held { remaining: None })
    }

    async fn leave_queue(&self, key: &str, token: &Token) -> Result<()> {
        let place = queue::entry(&self.server_key(key)?, &token.to_hex());
        self.places.forget(&place);
        let gone = self
            .call("leaving a fair lock's line", |mut client| {
                let place = place.clone();
                async move {
                    client
                        .delete(
                            place,
                            Some(etcd_client::DeleteOptions::new().with_prev_key()),
                        )
                        .await
                }
            })
            .await?;
        for before in gone.prev_kvs() {
            self.recycle(before.lease());
        }
        Ok(())
    }

    async fn subscribe_waiter(&self, key: &str, token: &Token) -> Result<Option<ReleaseNotice>> {
        self.watch(key, Some(token)).await.map(Some)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        self.watch(key, None).await.map(Some)
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let Some(kv) = self.lock_at(key).await? else {
            return Ok(None);
        };
        let remaining = self.lease_remaining(kv.lease()).await?;
        Ok(Some(Holder::new(
            remaining,
            u64::try_from(kv.create_revision()).ok(),
        )))
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let Some(kv) = self.lock_at(key).await? else {
            return Ok(false);
        };
        // Only the lock that was read: not one put since by a new holder.
        let server_key = self.server_key(key)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                server_key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(server_key, None)]);
        let answer = self.txn("forcing a release", txn).await?;
        if answer.succeeded() {
            self.revoke_later(kv.lease());
        }
        Ok(answer.succeeded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_address_a_line_are_refused() {
        let backend = EtcdBackend::from_url("etcd://127.0.0.1:1?namespace=app/").unwrap();
        assert_eq!(backend.server_key("pylock:a").unwrap(), "app/pylock:a");
        assert!(matches!(
            backend.server_key("pylock:a:pylock-queue/0123"),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(1)), 1);
        assert_eq!(lease_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(lease_seconds(Duration::MAX), i64::MAX);
    }
}
