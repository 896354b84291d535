//! etcd's user and password authentication (`etcd://user:password@host`) against a real
//! member with auth enabled: a user limited to pylock's keys locks, waits and is woken, in
//! the default and the fair mode; it keeps working after its auth token expires (etcd drops a
//! token idle for `--auth-token-ttl`, 5 minutes by default; here 1 s) and across a restart of
//! the member; a wrong password, a missing one and a key outside the user's permissions each
//! fail at once with a typed error that names the cause and never shows the password.

use std::time::{Duration, Instant};

use etcd_client::{Permission, PermissionType};
use pylock::{Error, Locks};
use pylock_tests::{Kind, Needs, TestServer, raw_etcd};

const ROOT_PASSWORD: &str = "root-secret-4711";
const USER: &str = "locker";
const PASSWORD: &str = "locker-secret-0815";
/// The prefix the user may read and write: pylock's default key prefix.
const ALLOWED: &str = "pylock:";

/// A member whose auth tokens expire after 1 s idle, with auth enabled: `root`, and `locker`,
/// who may read and write keys under [`ALLOWED`] only. `None` is a skip.
async fn member() -> Option<TestServer> {
    let server = TestServer::start(Kind::Etcd, Needs::args(&["--auth-token-ttl", "1"])).await?;
    let mut raw = raw_etcd(server.url()).await;
    raw.role_add("root").await.expect("role root");
    raw.user_add("root", ROOT_PASSWORD, None)
        .await
        .expect("user root");
    raw.user_grant_role("root", "root")
        .await
        .expect("root is root");
    raw.role_add("pylock").await.expect("role pylock");
    raw.role_grant_permission(
        "pylock",
        Permission::new(PermissionType::Readwrite, ALLOWED).with_prefix(),
    )
    .await
    .expect("permission on pylock's keys");
    raw.user_add(USER, PASSWORD, None).await.expect("user");
    raw.user_grant_role(USER, "pylock").await.expect("role");
    raw.auth_enable().await.expect("auth enable");
    Some(server)
}

/// Locks on the member with `credentials` (`user:password@`, or none), and short timeouts.
fn locks(server: &TestServer, credentials: &str) -> Locks {
    let url = server
        .url()
        .replace("etcd://", &format!("etcd://{credentials}"));
    Locks::connect(&format!("{url}?connect_timeout=2s&response_timeout=2s")).expect("url")
}

/// Locks on the member as the user limited to pylock's keys.
fn as_user(server: &TestServer) -> Locks {
    locks(server, &format!("{USER}:{PASSWORD}@"))
}

/// `error` and its sources, as a user's error report shows them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Acquires a lock of `locks` with a long timeout and expects a `Backend` error within a few
/// seconds: a refusal is not an outage to retry until the timeout. Returns its message, with
/// its sources.
async fn refused(locks: &Locks) -> String {
    let started = Instant::now();
    let result = locks
        .lock("auth")
        .timeout(Duration::from_secs(30))
        .acquire()
        .await;
    let took = started.elapsed();
    let message = match result {
        Err(error @ Error::Backend { .. }) => chain(&error),
        Err(other) => panic!("expected a Backend error, got {other:?}"),
        Ok(_) => panic!("acquired against the member's permissions"),
    };
    assert!(
        took < Duration::from_secs(10),
        "refused only after {took:?}"
    );
    for secret in [PASSWORD, ROOT_PASSWORD] {
        assert!(
            !message.contains(secret),
            "the error shows a password: {message}"
        );
    }
    message
}

/// `lock` taken, a waiter queued, the lock released: the waiter gets it, with a higher fence.
async fn handed_over(lock: &pylock::Lock) {
    let first = lock.acquire().await.expect("acquire as the user");
    let fence = first.fence().expect("etcd gives fences");
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.release().await.expect("release as the user");
    let second = waiter
        .await
        .expect("task")
        .expect("the waiter gets the lock");
    assert!(second.fence().expect("fence") > fence);
    second.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_locks_waits_and_keeps_working_after_its_token_expires() {
    let Some(server) = member().await else {
        return;
    };
    let locks = as_user(&server);
    let lock = locks
        .lock("auth")
        .timeout(Duration::from_secs(20))
        .expires(Duration::from_secs(30));
    // A waiter (its watch is made with the same token), woken by the release; and a fair
    // lock, whose line is under the same prefix, so the same permission covers it.
    handed_over(&lock).await;
    handed_over(&lock.clone().fair()).await;

    // Idle past the token's TTL: etcd forgets the token, and the next calls must
    // authenticate again rather than fail until the process restarts.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let guard = lock
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("acquire {round} after the token expired: {e:#}"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("release {round} after the token expired: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restart_costs_an_authenticated_client_nothing() {
    let Some(mut server) = member().await else {
        return;
    };
    let locks = as_user(&server);
    let lock = locks
        .lock("restart")
        .timeout(Duration::from_secs(20))
        .expires(Duration::from_secs(30));
    let mut held = lock.acquire().await.expect("acquire as the user");
    let fence = held.fence().expect("fence");

    // Restarted on its data dir: the lock, the users and the client's token (an
    // authentication is an entry of the member's log, replayed at start) are kept.
    server.restart().await;

    held.extend(Duration::from_secs(30))
        .await
        .expect("the lock, still ours, extended after the restart");
    held.release().await.expect("release after the restart");
    let next = lock.acquire().await.expect("acquire after the restart");
    assert!(next.fence().expect("fence") > fence);
    next.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_fails_at_once_and_is_never_shown() {
    let Some(server) = member().await else {
        return;
    };
    let wrong = refused(&locks(&server, &format!("{USER}:not-{PASSWORD}@"))).await;
    assert!(wrong.contains("authentication failed"), "{wrong}");
    assert!(!wrong.contains(&format!("not-{PASSWORD}")), "{wrong}");

    let anonymous = refused(&locks(&server, "")).await;
    assert!(anonymous.contains("user name"), "{anonymous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_users_permissions_fails_at_once() {
    let Some(server) = member().await else {
        return;
    };
    let outside = as_user(&server).key_prefix("elsewhere:");
    let message = refused(&outside).await;
    assert!(message.contains("permission denied"), "{message}");
}
