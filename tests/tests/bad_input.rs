//! Bad input is a typed error, never a panic, and never shows a password: URLs and option
//! values for every backend the facade installs, lock durations, and memcached key encoding,
//! property-tested.

use std::time::Duration;

use proptest::prelude::*;
use pylock::Locks;

/// The schemes the facade installs with every feature on.
const SCHEMES: &[&str] = &[
    "memory",
    "open",
    "redis",
    "redis+unix",
    "redis+cluster",
    "redlock",
    "memcache",
];

/// Every option some backend knows, and one none does.
const OPTIONS: &[&str] = &[
    "connect_timeout",
    "response_timeout",
    "db",
    "fencing",
    "wait_replicas",
    "wait_timeout",
    "node_timeout",
    "colour",
];

fn option_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}(\\.[0-9]{0,5})?(ms|s|m)?",
        "-?[0-9]?(\\.[0-9])?e[0-9]{1,3}",
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("18446744073709551616".to_owned()),
        "[a-z%]{0,8}",
    ]
}

fn password() -> impl Strategy<Value = String> {
    "[ -~]{0,10}".prop_map(|middle| format!("Zq{middle}Xj"))
}

/// Opens `url` through the facade, in a runtime (some backends need one to exist); what it
/// shows of its error, if any.
fn open(url: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    match pylock::connect(url) {
        Ok(locks) => {
            let _ = format!("{locks:?}");
            None
        }
        Err(error) => Some(format!("{error} {error:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn urls_and_options_open_or_are_refused_without_showing_the_password(
        scheme in proptest::sample::select(SCHEMES),
        slashes in any::<bool>(),
        password in password(),
        hosts in "[a-z0-9.:,\\[\\]]{0,20}",
        path in "(/[a-z0-9/]{0,6})?",
        options in proptest::collection::vec((proptest::sample::select(OPTIONS), option_value()), 0..4),
    ) {
        let query: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let separator = if slashes { "://" } else { ":" };
        let url = format!("{scheme}{separator}app:{password}@{hosts}{path}?{}", query.join("&"));
        if let Some(shown) = open(&url) {
            prop_assert!(!shown.contains(&password), "{url:?} showed {shown:?}");
        }
    }

    #[test]
    fn any_string_opens_or_is_refused(url in ".{0,60}") {
        let _ = open(&url);
    }

    #[test]
    fn any_durations_acquire_or_are_refused(
        expires in any::<(u64, u32)>(),
        timeout in any::<(u64, u32)>(),
        max_hold in proptest::option::of(any::<(u64, u32)>()),
    ) {
        let duration = |(secs, nanos): (u64, u32)| Duration::new(secs, nanos % 1_000_000_000);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let locks = Locks::connect("memory://").expect("memory");
            let mut lock = locks
                .lock("k")
                .expires(duration(expires))
                // The lock is free: any accepted timeout returns at once.
                .timeout(duration(timeout))
                .auto_renew();
            if let Some(max_hold) = max_hold {
                lock = lock.max_hold(duration(max_hold));
            }
            if let Ok(guard) = lock.acquire().await {
                let _ = guard.release().await;
            }
        });
    }

    #[test]
    fn memcached_keys_are_always_carried(key in ".{1,400}") {
        let encoded = pylock::memcache::keys::encode(&key);
        prop_assert!(!encoded.is_empty() && encoded.len() <= 250, "{encoded:?}");
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded:?}");
    }
}

#[test]
fn huge_timeouts_in_a_url_are_refused_not_a_panic() {
    let shown =
        open("redis://127.0.0.1:6379?connect_timeout=1e19&response_timeout=1e19").expect("refused");
    assert!(shown.contains("connect_timeout"), "{shown}");
}
