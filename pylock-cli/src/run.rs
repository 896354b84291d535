//! `pylock run`: a command that runs only while the lock is held.
//!
//! The lock is renewed while the command runs. If it is lost anyway (renewals failed past the
//! TTL, another owner took it, the hold bound ran out, this process was paused), the command
//! is stopped: the termination signal, then SIGKILL after the grace period.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pylock::{Error, Lock, LockGuard};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{Failure, code, one_line};

/// What `pylock run` was asked to do.
#[derive(Debug)]
pub(crate) struct RunCommand {
    pub(crate) lock: Lock,
    pub(crate) key: String,
    pub(crate) timeout: Duration,
    pub(crate) command: Vec<String>,
    pub(crate) term_signal: Signal,
    pub(crate) grace: Duration,
    pub(crate) quiet: bool,
}

impl RunCommand {
    fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("pylock: {message}");
        }
    }

    /// Runs the command under the lock; the exit code to leave with.
    pub(crate) async fn run(self) -> Result<u8, Failure> {
        let guard = self.acquire().await?;
        let fence = guard.fence();
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| Failure::new(code::USAGE, "no command to run after --"))?;
        let mut command = Command::new(program);
        command.args(args).env("PYLOCK_KEY", &self.key);
        if let Some(fence) = fence {
            command.env("PYLOCK_FENCE", fence.to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|e| Failure::new(code::CANNOT_RUN, format!("cannot run {program:?}: {e}")))?;

        let mut terminate = signal(SignalKind::terminate()).map_err(signal_failure)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_failure)?;
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Failure::new(code::ERROR, format!("waiting for the command: {e}")))?;
                self.release(guard, exit_code(status)).await
            }
            reason = guard.lost() => {
                self.say(&format!(
                    "lost the lock {:?} ({reason:?}) while the command ran; stopping it",
                    self.key
                ));
                self.stop(&mut child).await;
                drop(guard);
                Ok(code::LOST)
            }
            _ = terminate.recv() => self.forward(Signal::SIGTERM, &mut child, guard).await,
            _ = interrupt.recv() => self.forward(Signal::SIGINT, &mut child, guard).await,
        }
    }

    async fn acquire(&self) -> Result<LockGuard, Failure> {
        if let Some(guard) = self.lock.try_acquire().await? {
            return Ok(guard);
        }
        if self.timeout.is_zero() {
            return Err(Failure::new(
                code::TIMEOUT,
                format!("lock {:?} is held by someone else (timeout 0)", self.key),
            ));
        }
        let holder = match self.lock.inspect().await {
            Ok(Some(holder)) => match holder.remaining {
                Some(remaining) => format!(", which has {:.1} s left", remaining.as_secs_f64()),
                None => String::new(),
            },
            _ => String::new(),
        };
        self.say(&format!(
            "waiting up to {:.1} s for lock {:?}, held by someone else{holder}",
            self.timeout.as_secs_f64(),
            self.key
        ));
        match self.lock.acquire().await {
            Ok(guard) => {
                self.say(&format!("got lock {:?}", self.key));
                Ok(guard)
            }
            Err(Error::Timeout { waited, .. }) => Err(Failure::new(
                code::TIMEOUT,
                format!(
                    "lock {:?} still held by someone else after {:.1} s; giving up",
                    self.key,
                    waited.as_secs_f64()
                ),
            )),
            Err(error) => Err(error.into()),
        }
    }

    async fn release(&self, guard: LockGuard, exit: u8) -> Result<u8, Failure> {
        match guard.release().await {
            Ok(()) => Ok(exit),
            Err(Error::Lost { .. }) => {
                self.say(&format!(
                    "the lock {:?} was lost before the command finished",
                    self.key
                ));
                Ok(code::LOST)
            }
            Err(error) => {
                // The command ran under the lock; the TTL ends the lock.
                self.say(&format!("releasing the lock: {}", one_line(&error)));
                Ok(exit)
            }
        }
    }

    /// Passes a signal this process got on to the command, waits for it, and releases.
    async fn forward(
        &self,
        signal: Signal,
        child: &mut Child,
        guard: LockGuard,
    ) -> Result<u8, Failure> {
        send(child, signal);
        let status = child
            .wait()
            .await
            .map_err(|e| Failure::new(code::ERROR, format!("waiting for the command: {e}")))?;
        self.release(guard, exit_code(status)).await
    }

    /// The termination signal, then SIGKILL if the command outlives the grace period.
    async fn stop(&self, child: &mut Child) {
        send(child, self.term_signal);
        if tokio::time::timeout(self.grace, child.wait())
            .await
            .is_err()
        {
            self.say(&format!(
                "the command outlived the {:.1} s grace period; killing it",
                self.grace.as_secs_f64()
            ));
            let _ = child.kill().await;
        }
    }
}

fn send(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn signal_failure(error: std::io::Error) -> Failure {
    Failure::new(code::ERROR, format!("cannot watch for signals: {error}"))
}

/// The command's exit code; 128 + N when signal N ended it, as shells report it.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}
