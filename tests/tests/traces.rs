//! What pylock tells `tracing`: the spans and fields an operator graphs.

use std::sync::Arc;
use std::time::Duration;

use pylock::{Error, Locks, LostReason, MemoryBackend};
use pylock_tests::traces::Captured;

fn locks() -> Locks {
    Locks::new(Arc::new(MemoryBackend::new()))
}

#[tokio::test(flavor = "current_thread")]
async fn traces_show_waits_attempts_and_hold_times() {
    let captured = Captured::default();
    let _recording = captured.install();

    let locks = locks();
    let holder = locks.lock("traced").acquire().await.unwrap();
    let waiter = tokio::spawn({
        let lock = locks.lock("traced");
        async move { lock.acquire().await.unwrap().release().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    holder.release().await.unwrap();
    waiter.await.unwrap();

    let text = captured.text();
    assert!(text.contains("pylock.acquire"), "{text}");
    assert!(text.contains("key=traced"), "{text}");
    let waiter_line = text
        .lines()
        .find(|line| line.contains("acquired") && line.contains("fence=2"))
        .unwrap_or_else(|| panic!("no acquire event for the waiter: {text}"));
    let attempts: u32 = waiter_line
        .split("attempts=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count: {waiter_line}"));
    assert!(attempts >= 2, "the waiter had to try again: {waiter_line}");
    assert!(text.contains("waited_us="), "{text}");
    assert!(text.contains("held_us="), "{text}");
    assert!(text.contains("pylock: released"), "{text}");

    // The spans, as an operator graphs them: each acquire with its attempts, wait and
    // outcome; each hold with its fence, duration and end.
    let closed = |name: &str| -> Vec<String> {
        let text = captured.text();
        text.lines()
            .filter(|line| line.contains(name) && line.contains("close"))
            .map(str::to_owned)
            .collect()
    };
    let acquires = closed("pylock.acquire{");
    assert!(
        acquires
            .iter()
            .any(|line| line.contains("outcome=\"acquired\"")
                && line.contains("backend=\"memory\"")
                && line.contains("waited_us=")),
        "{acquires:?}"
    );
    let held = locks.lock("traced").timeout(Duration::ZERO);
    let guard = held.acquire().await.unwrap();
    assert!(matches!(held.acquire().await, Err(Error::Timeout { .. })));
    assert!(
        closed("pylock.acquire{")
            .iter()
            .any(|line| line.contains("outcome=\"timeout\"")),
        "{text}"
    );
    drop(guard);
    locks.lock("traced").acquire().await.unwrap().abandon();
    let expiring = locks.lock("lost").expires(Duration::from_millis(10));
    let guard = expiring.acquire().await.unwrap();
    assert_eq!(guard.lost().await, LostReason::Expired);
    drop(guard);
    tokio::task::yield_now().await;
    let holds = closed("pylock.hold{");
    for end in ["released", "dropped", "abandoned", "lost"] {
        assert!(
            holds
                .iter()
                .any(|line| line.contains(&format!("end=\"{end}\"")) && line.contains("held_us=")),
            "no hold ended {end}: {holds:?}"
        );
    }
    assert!(
        holds.iter().any(|line| line.contains("fence=")),
        "{holds:?}"
    );
}
