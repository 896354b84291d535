//! `pylock run`: a command that runs only while the lock is held.
//!
//! The lock is renewed while the command runs. If it is lost anyway (renewals failed past the
//! TTL, another owner took it, the hold bound ran out, this process was paused), the command's
//! whole process group is stopped: the termination signal, then SIGKILL after the grace
//! period. SIGTERM, SIGINT, SIGHUP and SIGQUIT are passed on to the group, and the lock is
//! released once the group is gone; one of them before the lock was had ends the wait, and
//! the command never starts. If `pylock` itself dies, the job dies with it (see
//! [`crate::job`]).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use pylock::{Error, Lock, LockGuard};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::exit::{Failure, code, one_line};
use crate::job::{Job, become_subreaper};

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
    /// The exit code when the lock was not had within the timeout (`-E`).
    pub(crate) conflict_code: u8,
}

/// The signals passed on to the job: a service manager's stop (TERM), Ctrl-C (INT), a
/// terminal closing or an ssh drop (HUP), and Ctrl-\\ (QUIT).
struct Forwarded {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Forwarded {
    fn listen() -> Result<Self, Failure> {
        let listen = |kind| signal(kind).map_err(signal_failure);
        Ok(Forwarded {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: listen(SignalKind::hangup())?,
            quit: listen(SignalKind::quit())?,
        })
    }

    /// The next signal to pass on.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.hangup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
        }
    }
}

impl RunCommand {
    fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("pylock: {message}");
        }
    }

    /// Runs the command under the lock; the exit code to leave with.
    pub(crate) async fn run(self) -> Result<u8, Failure> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| Failure::new(code::USAGE, "no command to run after --"))?;
        // Listen before the command starts: a signal in between must not kill this process
        // while its job runs on.
        let mut signals = Forwarded::listen()?;
        become_subreaper();

        let guard = tokio::select! {
            acquired = self.acquire() => acquired?,
            received = signals.next() => return Ok(self.stopped_while_waiting(received)),
        };
        let mut env = vec![("PYLOCK_KEY", self.key.clone())];
        if let Some(fence) = guard.fence() {
            env.push(("PYLOCK_FENCE", fence.to_string()));
        }
        let mut job = match Job::start(program, args, &env) {
            Ok(job) => job,
            Err(failure) => {
                // Nothing ran: the lock is not needed for its TTL.
                let _ = guard.release().await;
                return Err(failure);
            }
        };

        let status = loop {
            tokio::select! {
                status = job.wait() => break status?,
                reason = guard.lost() => {
                    self.say(&format!(
                        "lost the lock {:?} ({reason:?}) while the command ran; stopping it",
                        self.key
                    ));
                    self.stop(&mut job).await;
                    drop(guard);
                    return Ok(code::LOST);
                }
                received = signals.next() => {
                    // The job decides how to end; the lock stays renewed until it has.
                    job.signal(received);
                }
            }
        };
        if job.left_behind() {
            self.say("the command left processes behind; stopping them before releasing the lock");
            self.stop(&mut job).await;
        }
        self.release(guard, exit_code(status)).await
    }

    /// A stop signal came before the lock did: the command never starts, and the wait is given
    /// up (what it leaves, an attempt in flight that may have taken the lock or a fair
    /// waiter's place in line, is released before `pylock` exits: see `main`). The exit code
    /// is a signal's, 128 + N.
    fn stopped_while_waiting(&self, received: Signal) -> u8 {
        self.say(&format!(
            "{received} while waiting for lock {:?}; the command was not started",
            self.key
        ));
        128u8.saturating_add(u8::try_from(received as i32).unwrap_or(0))
    }

    /// How long the wait may last, for messages.
    fn limit(&self) -> String {
        if self.timeout >= pylock::NO_LIMIT {
            "with no time limit".to_owned()
        } else {
            format!("up to {:.1} s", self.timeout.as_secs_f64())
        }
    }

    /// Gets the lock within `--timeout`: one attempt first (so that the wait can be announced),
    /// then the library's wait, which also retries a server that is briefly unreachable.
    async fn acquire(&self) -> Result<LockGuard, Failure> {
        let started = Instant::now();
        let first = match self.lock.try_acquire().await {
            Ok(Some(guard)) => return Ok(guard),
            Ok(None) => None,
            Err(error) if error.is_transient() && !self.timeout.is_zero() => Some(error),
            Err(error) => return Err(error.into()),
        };
        if self.timeout.is_zero() {
            return Err(Failure::conflict(
                self.conflict_code,
                format!("lock {:?} is held by someone else (timeout 0)", self.key),
            ));
        }
        match &first {
            Some(error) => self.say(&format!("{}; retrying {}", one_line(error), self.limit())),
            None => {
                let holder = match self.lock.inspect().await {
                    Ok(Some(holder)) => match holder.remaining {
                        Some(remaining) => {
                            format!(", which has {:.1} s left", remaining.as_secs_f64())
                        }
                        None => String::new(),
                    },
                    _ => String::new(),
                };
                self.say(&format!(
                    "waiting {} for lock {:?}, held by someone else{holder}",
                    self.limit(),
                    self.key
                ));
            }
        }
        let remaining = self.timeout.saturating_sub(started.elapsed());
        match self.lock.clone().timeout(remaining).acquire().await {
            Ok(guard) => {
                self.say(&format!("got lock {:?}", self.key));
                Ok(guard)
            }
            Err(Error::Timeout { .. }) => Err(Failure::conflict(
                self.conflict_code,
                format!(
                    "lock {:?} still held by someone else after {:.1} s; giving up",
                    self.key,
                    started.elapsed().as_secs_f64()
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

    /// The termination signal to the whole group, then SIGKILL after the grace period.
    async fn stop(&self, job: &mut Job) {
        if job.stop(self.term_signal, self.grace).await {
            self.say(&format!(
                "the command outlived the {:.1} s grace period; killed it",
                self.grace.as_secs_f64()
            ));
        }
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
