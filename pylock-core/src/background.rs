//! Work the library leaves running after a call has returned or was cancelled: releasing a
//! lock whose guard was dropped (or whose release failed and is tried again), releasing what
//! an abandoned acquire may have taken, and leaving a fair line. [`settle`] lets a program
//! that is about to exit wait for it, so that what it gave up is free now rather than when
//! its TTL runs out.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The cleanups started and maybe not finished, on whatever runtime each runs.
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<JoinHandle<()>>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `cleanup` on `runtime`, remembered until it ends, for [`settle`].
pub(crate) fn spawn(runtime: &Handle, cleanup: impl Future<Output = ()> + Send + 'static) {
    let task = runtime.spawn(cleanup);
    let mut pending = pending();
    pending.retain(|task| !task.is_finished());
    pending.push(task);
}

/// Waits until the cleanups pylock has started in the background have finished, for at most
/// `limit`; whether they all did.
///
/// Dropping a [`LockGuard`](crate::LockGuard) without releasing it, or cancelling an acquire
/// (a `select!`, a timeout around it, a task aborted), leaves pylock a release or a departure
/// from a fair line to do in the background. A program that exits right after may end its
/// runtime before that is done, and then the lock stays held until its TTL runs out, which
/// only makes others wait. Await this before returning from `main` to free it now:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pylock_core::Result<()> {
/// use std::time::Duration;
/// # let locks = pylock_core::Locks::new(std::sync::Arc::new(pylock_core::MemoryBackend::new()));
///
/// let lock = locks.lock("report");
/// tokio::select! {
///     guard = lock.acquire() => { guard?.release().await?; }
///     _ = tokio::time::sleep(Duration::from_secs(1)) => {} // stopping instead
/// }
/// pylock_core::settle(Duration::from_secs(2)).await;
/// # Ok(())
/// # }
/// ```
pub async fn settle(limit: Duration) -> bool {
    let tasks = std::mem::take(&mut *pending());
    let all = async {
        for task in tasks {
            // A cleanup that failed has said so in a trace; a runtime that ended took it.
            let _ = task.await;
        }
    };
    tokio::time::timeout(limit, all).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_waits_for_the_cleanups_started_and_no_longer_than_its_limit() {
        let (done, finished) = tokio::sync::oneshot::channel();
        spawn(&Handle::current(), async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done.send(());
        });
        assert!(settle(Duration::from_secs(10)).await);
        assert!(finished.await.is_ok(), "the cleanup ran to its end");

        spawn(&Handle::current(), std::future::pending());
        assert!(
            !settle(Duration::from_millis(50)).await,
            "bounded by its limit"
        );
    }
}
