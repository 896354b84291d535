//! `Lock::new("a_key")` uses the backend named by `PYLOCK_URL`, installed by the facade with no
//! call from the user. Each case runs in a child process, because the default client is
//! process-wide and set once.

use std::process::Command;

use pylock::{Error, Lock, Locks};

/// Re-runs the test `name` of this binary in a child with `PYLOCK_URL` set to `url` (or
/// unset), and fails if the child fails.
fn in_child(name: &str, url: Option<&str>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"));
    child
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("PYLOCK_TEST_CHILD", "1");
    match url {
        Some(url) => child.env("PYLOCK_URL", url),
        None => child.env_remove("PYLOCK_URL"),
    };
    let output = child.output().expect("spawn the child test");
    assert!(
        output.status.success(),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child did not run {name}:\n{stdout}"
    );
}

fn is_child() -> bool {
    std::env::var_os("PYLOCK_TEST_CHILD").is_some()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn without_pylock_url_the_default_is_memory() {
    if !is_child() {
        return in_child("without_pylock_url_the_default_is_memory", None);
    }
    block_on(async {
        let guard = Lock::new("a_key").acquire().await.expect("acquire");
        assert_eq!(Locks::global().unwrap().backend().name(), "memory");
        // memory:// is a real lock: a second holder is refused.
        let second = Lock::new("a_key").try_acquire().await.expect("try");
        assert!(second.is_none());
        guard.release().await.expect("release");
    });
}

#[cfg(feature = "open")]
#[test]
fn pylock_url_picks_a_feature_backend_without_any_install_call() {
    if !is_child() {
        return in_child(
            "pylock_url_picks_a_feature_backend_without_any_install_call",
            Some("open://"),
        );
    }
    block_on(async {
        let a = Lock::new("a_key").acquire().await.expect("acquire");
        assert_eq!(Locks::global().unwrap().backend().name(), "open");
        // open:// never blocks: a second holder gets in at once.
        let b = Lock::new("a_key")
            .timeout(std::time::Duration::ZERO)
            .acquire()
            .await
            .expect("open:// lets everyone in");
        a.release().await.expect("release");
        b.release().await.expect("release");
    });
}

#[test]
fn an_unknown_scheme_in_pylock_url_is_a_clear_error() {
    if !is_child() {
        return in_child(
            "an_unknown_scheme_in_pylock_url_is_a_clear_error",
            Some("zookeeper://localhost"),
        );
    }
    block_on(async {
        match Lock::new("a_key").acquire().await {
            Err(Error::UnknownScheme { scheme, available }) => {
                assert_eq!(scheme, "zookeeper");
                assert!(available.contains(&"memory".to_owned()), "{available:?}");
            }
            other => panic!("expected UnknownScheme, got {other:?}"),
        }
    });
}

#[test]
fn a_malformed_pylock_url_is_a_clear_error_without_secrets() {
    if !is_child() {
        return in_child(
            "a_malformed_pylock_url_is_a_clear_error_without_secrets",
            Some("memory://user:hunter2@bad host"),
        );
    }
    block_on(async {
        let error = Lock::new("a_key").acquire().await.unwrap_err();
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
    });
}
