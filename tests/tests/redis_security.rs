//! Authentication against a real Redis: `requirepass` and ACL users. The right credentials in
//! the URL work; wrong ones give a clear authentication error, not a hang or a retry loop; and
//! the password never shows in `Debug`, `Display`, errors or logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pylock::redis::{RedisBackend, RedisConfig};
use pylock::{Error, Locks};
use pylock_tests::traces::Captured;
use pylock_tests::{Kind, Needs, TestServer};

const SECRET: &str = "s3cret-Pa55";
const ALICE: &str = "w0nderland-Pa55";

/// Everything a user could print or log about a client, a failed acquire, and its error.
async fn all_visible_text(url: &str) -> (Result<(), Error>, String) {
    let captured = Captured::default();
    let _logging = captured.install();
    let backend = RedisBackend::from_url(url).expect("backend");
    let config = RedisConfig::from_url(url).expect("config");
    let locks = Locks::new(Arc::new(backend));
    let result = match locks
        .lock("auth")
        .timeout(Duration::from_millis(300))
        .acquire()
        .await
    {
        Ok(guard) => {
            let text = format!("{guard:?}");
            guard.release().await.map(|()| text)
        }
        Err(error) => Err(error),
    };
    let mut text = format!("{locks:?}\n{config:?}\n{}\n", captured.text());
    match &result {
        Ok(guard_text) => text.push_str(guard_text),
        Err(error) => {
            text.push_str(&format!("{error}\n{error:?}\n"));
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text.push_str(&format!("{inner}\n{inner:?}\n"));
                source = inner.source();
            }
        }
    }
    (result.map(|_| ()), text)
}

fn assert_no_secret(text: &str) {
    for secret in [SECRET, ALICE, "wrong-Pa55"] {
        assert!(!text.contains(secret), "a password leaked into:\n{text}");
    }
}

fn assert_auth_error(result: &Result<(), Error>, text: &str) {
    match result {
        Err(error @ Error::Backend { .. }) => {
            // The one-line message says what is wrong; the source chain has the server's words.
            assert!(
                error.to_string().contains("authentication failed"),
                "the error does not say authentication failed: {error}"
            );
            let source = std::error::Error::source(error).map(ToString::to_string);
            assert!(
                source.is_some_and(|s| s.to_lowercase().contains("auth")),
                "the driver's error is not kept as the source:\n{text}"
            );
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_right_and_wrong() {
    let Some(server) =
        TestServer::start(Kind::Redis, Needs::args(&["--requirepass", SECRET])).await
    else {
        return;
    };
    let port = server.port();

    let (ok, text) = all_visible_text(&format!("redis://:{SECRET}@127.0.0.1:{port}")).await;
    ok.expect("the right password works");
    assert_no_secret(&text);

    for url in [
        format!("redis://:wrong-Pa55@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let started = Instant::now();
        let (result, text) = all_visible_text(&url).await;
        assert_auth_error(&result, &text);
        assert!(started.elapsed() < Duration::from_secs(5), "no retry loop");
        assert_no_secret(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_every_reserved_character_work_and_never_show() {
    // Every character with a meaning in a URL, as people paste passwords: unencoded.
    const RESERVED: &str = "R:e/s?e#r[v]e@d!$&'()*+,;=-Pa55";
    let Some(server) =
        TestServer::start(Kind::Redis, Needs::args(&["--requirepass", RESERVED])).await
    else {
        return;
    };
    let port = server.port();
    let encoded: String = RESERVED
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    for url in [
        format!("redis://:{RESERVED}@127.0.0.1:{port}"),
        format!("redis://default:{RESERVED}@127.0.0.1:{port}/0"),
        format!("redis://:{encoded}@127.0.0.1:{port}"),
    ] {
        let (ok, text) = all_visible_text(&url).await;
        ok.unwrap_or_else(|e| panic!("the right password works: {e}"));
        for part in [RESERVED, "e/s?e#r", "v]e@d!", encoded.as_str()] {
            assert!(!text.contains(part), "a password leaked into:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_right_and_wrong() {
    let password = format!(">{ALICE}");
    let Some(server) = TestServer::start(
        Kind::Redis,
        Needs::args(&[
            "--user", "alice", "on", &password, "~*", "&*", "+@all", "--user", "bob", "on",
            &password, "~*", "&*", "+@all", "-evalsha", "-eval", "--user", "default", "off",
        ]),
    )
    .await
    else {
        return;
    };
    let port = server.port();

    let (ok, text) = all_visible_text(&format!("redis://alice:{ALICE}@127.0.0.1:{port}/0")).await;
    ok.expect("the ACL user works");
    assert_no_secret(&text);

    for url in [
        format!("redis://alice:wrong-Pa55@127.0.0.1:{port}/0"),
        format!("redis://mallory:{ALICE}@127.0.0.1:{port}/0"),
    ] {
        let (result, text) = all_visible_text(&url).await;
        assert_auth_error(&result, &text);
        assert_no_secret(&text);
    }

    // The right password, but no permission to run scripts: the error says so, and does not
    // send the user to check a password that is right.
    let (result, text) = all_visible_text(&format!("redis://bob:{ALICE}@127.0.0.1:{port}/0")).await;
    match &result {
        Err(error @ Error::Backend { .. }) => {
            let message = error.to_string();
            assert!(message.contains("permission denied"), "{message}");
            assert!(
                !message.contains("check the user and password"),
                "{message}"
            );
        }
        other => panic!("expected a permission error, got {other:?}"),
    }
    assert_no_secret(&text);
}
