//! The runtime under `pylock::blocking`: one current-thread tokio runtime for the process,
//! which never stops running.
//!
//! A blocking call runs its future *on the calling thread*: it does not hop to another
//! thread and back, it polls the backend's I/O right where the call was made. Between calls
//! a driver thread runs the runtime, so that what lives on it keeps going while the caller
//! works: auto-renewal tasks, the backend's connections (which async users of the same
//! backend, in other runtimes, also send through), background releases.
//!
//! The hand-over: a call tells the driver to let go and takes the runtime; the driver takes
//! it back once no call has been in progress for [`IDLE_BEFORE_DRIVING`]. Calls that follow
//! each other closely (acquire, short work, release; or many threads) thus pay for no
//! hand-over, and the runtime's tasks are polled by the calls themselves meanwhile.

use std::future::Future;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::sync::Notify;

use pylock_core::{Error, Result};

/// How long the runtime may go without a call before the driver thread runs it. Short
/// enough that a renewal or another runtime's request waits no longer than this; long
/// enough that back-to-back calls keep the runtime on their own threads.
const IDLE_BEFORE_DRIVING: Duration = Duration::from_millis(1);

struct Shared {
    runtime: Runtime,
    state: Mutex<State>,
    /// Where the driver thread waits while calls run the runtime.
    wake_driver: Condvar,
    /// Tells the driver thread to give the runtime up to a call.
    let_go: Notify,
}

struct State {
    /// Blocking calls in progress.
    calls: usize,
    last_call_ended: Instant,
    /// Whether the driver thread is running the runtime.
    driving: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a counter and two plain values: a panic cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The driver thread: runs the runtime whenever no call has for a while.
    fn drive(&self) {
        let mut state = self.state();
        loop {
            let idle_for = state.last_call_ended.elapsed();
            if state.calls > 0 || idle_for < IDLE_BEFORE_DRIVING {
                // Calls do not signal their end (it would cost each a system call): look
                // again after the idle period.
                let wait = IDLE_BEFORE_DRIVING.saturating_sub(idle_for);
                state = self
                    .wake_driver
                    .wait_timeout(state, wait.max(IDLE_BEFORE_DRIVING / 4))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            state.driving = true;
            drop(state);
            self.runtime.block_on(self.let_go.notified());
            state = self.state();
            state.driving = false;
        }
    }

    /// Runs `future` on the calling thread, taking the runtime from the driver if it has it.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        {
            let mut state = self.state();
            state.calls += 1;
            if state.driving {
                self.let_go.notify_one();
            }
        }
        // Ends the call also when `future` panics, so the driver does not wait forever.
        struct EndCall<'a>(&'a Shared);
        impl Drop for EndCall<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state();
                state.calls -= 1;
                state.last_call_ended = Instant::now();
            }
        }
        let _end = EndCall(self);
        self.runtime.block_on(future)
    }
}

/// The runtime and its driver thread, started on first use. A failure to start them is kept
/// (and returned to every call): it comes from the system, not from the call.
fn shared() -> Result<&'static Shared> {
    static SHARED: OnceLock<std::result::Result<&'static Shared, String>> = OnceLock::new();
    match SHARED.get_or_init(start) {
        Ok(shared) => Ok(shared),
        Err(reason) => Err(Error::BlockingRuntime {
            reason: reason.clone(),
        }),
    }
}

fn start() -> std::result::Result<&'static Shared, String> {
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Lives as long as the process, like the driver thread that runs it.
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        runtime,
        state: Mutex::new(State {
            calls: 0,
            last_call_ended: Instant::now(),
            driving: false,
        }),
        wake_driver: Condvar::new(),
        let_go: Notify::new(),
    }));
    std::thread::Builder::new()
        .name("pylock-blocking".to_owned())
        .spawn(|| shared.drive())
        .map_err(|e| format!("the driver thread: {e}"))?;
    Ok(shared)
}

/// Runs `future` to completion on the calling thread.
///
/// # Errors
///
/// [`Error::BlockingInRuntime`] inside an async runtime (it would block that runtime's
/// thread); [`Error::BlockingRuntime`] if the runtime or its driver thread cannot be started.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::BlockingInRuntime);
    }
    Ok(shared()?.block_on(future))
}

/// Spawns `future` on the blocking runtime, where it runs between calls too.
#[cfg(test)]
pub(crate) fn spawn<F>(future: F) -> Result<tokio::task::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(shared()?.runtime.spawn(future))
}
