//! The job: the command `pylock run` starts, kept in a process group of its own so that it and
//! every process it starts can be stopped together, and tied to this process's life.
//!
//! Three things make "the job dies with the lock" hold however `pylock` ends:
//!
//! - The command leads a new process group; loss of the lock, `--max-hold`, forwarded signals
//!   and the grace period's SIGKILL go to the whole group, grandchildren included.
//! - On Linux the command gets `PR_SET_PDEATHSIG` (SIGKILL): if `pylock` dies, the kernel
//!   kills it, even when `pylock` was killed with SIGKILL itself.
//! - A watchdog, this same binary started as `pylock __watchdog GROUP`, holds the read end of
//!   a pipe whose write end only `pylock` has. However `pylock` dies, the kernel closes that
//!   end; the watchdog reads end-of-file and kills the group, grandchildren included.
//!
//! What remains: a process of the job that leaves the group (`setsid`, a daemon) is out of
//! reach; and a `pylock` that is paused (SIGSTOP, a frozen VM) past the TTL cannot stop its
//! job while paused, which is what fencing tokens (`PYLOCK_FENCE`) are for.

use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::exit::{Failure, code};

/// The hidden subcommand that starts the watchdog.
pub(crate) const WATCHDOG: &str = "__watchdog";

/// How often a stop checks whether the group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// A started command, the leader of its own process group, and its watchdog.
#[derive(Debug)]
pub(crate) struct Job {
    child: Child,
    group: Pid,
    /// The watchdog's stdin: dropped when this process ends, however it ends.
    _lifeline: Option<ChildStdin>,
    /// The command's exit status, once it exited.
    status: Option<ExitStatus>,
}

impl Job {
    /// Starts `program` with `args` and the lock's environment in a new process group.
    ///
    /// # Errors
    ///
    /// [`code::CANNOT_RUN`] (127) if the program does not exist, [`code::CANNOT_EXECUTE`]
    /// (126) if it cannot be executed; both as shells report them.
    pub(crate) fn start(
        program: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<Job, Failure> {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::PermissionDenied => code::CANNOT_EXECUTE,
                _ => code::CANNOT_RUN,
            };
            Failure::new(code, format!("cannot run {program:?}: {e}"))
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| Failure::new(code::ERROR, "the command has no process id"))?;
        let mut job = Job {
            child,
            group,
            _lifeline: None,
            status: None,
        };
        job._lifeline = Some(job.start_watchdog()?);
        Ok(job)
    }

    fn start_watchdog(&mut self) -> Result<ChildStdin, Failure> {
        // Once dropped, the watchdog is reaped by tokio in the background when it exits.
        let started = std::env::current_exe().and_then(|exe| {
            Command::new(exe)
                .arg(WATCHDOG)
                .arg(self.group.as_raw().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
        });
        match started.map(|mut watchdog| watchdog.stdin.take()) {
            Ok(Some(lifeline)) => Ok(lifeline),
            Ok(None) | Err(_) => {
                // Without a watchdog the job would not die with us: do not run it.
                self.signal(Signal::SIGKILL);
                Err(Failure::new(
                    code::ERROR,
                    "cannot start the watchdog that stops the command if pylock dies",
                ))
            }
        }
    }

    /// Sends `signal` to every process of the job's group.
    pub(crate) fn signal(&self, signal: Signal) {
        let _ = killpg(self.group, signal);
    }

    /// Waits for the command (the group's leader) to exit.
    ///
    /// # Errors
    ///
    /// [`code::ERROR`] if waiting fails.
    pub(crate) async fn wait(&mut self) -> Result<ExitStatus, Failure> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Failure::new(code::ERROR, format!("waiting for the command: {e}")))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Whether any process of the group is still there. Reaps the members that are this
    /// process's children (it is their subreaper) once the command itself has been reaped.
    fn group_alive(&self) -> bool {
        if self.status.is_some() {
            while let Ok(status) = waitpid(
                Pid::from_raw(-self.group.as_raw()),
                Some(WaitPidFlag::WNOHANG),
            ) {
                if status == nix::sys::wait::WaitStatus::StillAlive {
                    break;
                }
            }
        }
        killpg(self.group, None) != Err(Errno::ESRCH)
    }

    /// Waits until the command has exited and no process of its group is left, up to `limit`.
    /// True if the group is gone.
    async fn gone_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit.min(Duration::from_secs(24 * 60 * 60));
        loop {
            if self.status.is_none()
                && let Ok(Some(status)) = self.child.try_wait()
            {
                self.status = Some(status);
            }
            if self.status.is_some() && !self.group_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
    }

    /// Stops the whole group: `signal`, then SIGKILL if anything of it outlives `grace`. Returns
    /// once the command has exited; true if SIGKILL was needed.
    pub(crate) async fn stop(&mut self, signal: Signal, grace: Duration) -> bool {
        self.signal(signal);
        if self.gone_within(grace).await {
            return false;
        }
        self.signal(Signal::SIGKILL);
        // SIGKILL cannot be caught; what is left is the kernel's bookkeeping.
        let _ = self.gone_within(Duration::from_secs(5)).await;
        true
    }

    /// Whether processes of the group outlived the command, after it exited.
    pub(crate) fn left_behind(&self) -> bool {
        self.status.is_some() && self.group_alive()
    }
}

/// On Linux, asks the kernel to SIGKILL the command when this process dies.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; it makes two system calls (prctl, getppid) and
    // allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // If this process died before the prctl, the child was already re-parented.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "pylock exited before the command started",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Makes this process the reaper of its descendants that lose their parent, so that the
/// grandchildren of a job stay countable (and reaped) until the group is gone. Linux only.
pub(crate) fn become_subreaper() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// The watchdog's whole life: wait until `pylock` is gone (end-of-file on stdin), then kill
/// the job's group. The terminal's signals are blocked, so a Ctrl-C meant for `pylock` (which
/// forwards it to the job) does not end the watchdog first.
pub(crate) fn watchdog(group: &str) -> u8 {
    let Ok(group) = group.parse::<i32>() else {
        return code::USAGE;
    };
    if group <= 1 {
        return code::USAGE;
    }
    let mut terminal = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        terminal.add(signal);
    }
    let _ = terminal.thread_block();
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    0
}
