//! `pylock`: run a command only while holding a distributed lock, like `flock` across
//! machines. The lock is renewed while the command runs; if it is lost anyway, the command is
//! stopped.
//!
//! ```text
//! PYLOCK_URL=redis://127.0.0.1:6379 pylock run --expires 30 nightly-report -- ./report.sh
//! pylock --url redis://127.0.0.1:6379 status nightly-report
//! pylock --url redis://127.0.0.1:6379 release --force nightly-report
//! ```
//!
//! Exit codes of `pylock run`: the command's own (128 + N if signal N ended it); 75 if the
//! lock was not had within the timeout; 76 if the lock was lost and the command stopped;
//! 64 for bad usage or no lock server; 70 if the lock server failed; 126 if the command could
//! not be executed, 127 if it was not found; 128 + N if signal N came while waiting for the
//! lock (the command never started).

mod exit;
mod job;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use pylock::{Lock, Locks};

use crate::exit::{Failure, code};
use crate::run::RunCommand;

#[derive(Parser, Debug)]
#[command(
    name = "pylock",
    version,
    about = "Run a command only while holding a distributed lock",
    after_help = "Exit codes of `run`: the command's own (128+N if signal N ended it); \
                  75 lock not had within --timeout; 76 lock lost, command stopped; \
                  64 bad usage or no lock server; 70 lock server failed; 126 command not executable; 127 command not found; \
                  128+N signal N while waiting for the lock (command not started)."
)]
struct Cli {
    /// The lock server, e.g. redis://127.0.0.1:6379 or memcache://127.0.0.1:11211.
    #[arg(long, env = "PYLOCK_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// Prefix of the lock's key on the server.
    #[arg(long, default_value = pylock::DEFAULT_KEY_PREFIX, global = true)]
    key_prefix: String,
    /// Say nothing on stderr while waiting or stopping the command, nor when the lock is held
    /// by someone else (exit 75); other errors still show.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Trace what pylock does on stderr: each acquire (attempts, wait) and hold (fence, how
    /// long, how it ended) with -v, every attempt and renewal with -vv. RUST_LOG, when set,
    /// chooses instead (e.g. RUST_LOG=pylock=debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run CMD while holding the lock KEY; renew the lock while CMD runs; stop CMD if the
    /// lock is lost.
    Run {
        /// Lock TTL in seconds: how long the lock outlives this process if it dies. The lock
        /// is renewed every third of it while the command runs.
        #[arg(long, default_value_t = 10.0)]
        expires: f64,
        /// Longest wait for the lock, in seconds; 0 means one attempt (like `flock -n`), `inf`
        /// no limit (like `flock` without -w).
        #[arg(long, short = 'w', default_value_t = 60.0)]
        timeout: f64,
        /// One attempt, no waiting: the same as --timeout 0 (like `flock -n`).
        #[arg(long, short = 'n', conflicts_with = "timeout")]
        nonblock: bool,
        /// First come, first served: hosts waiting for the lock get it in the order they
        /// started waiting (all users of the lock must ask for it).
        #[arg(long)]
        fair: bool,
        /// Exit code when the lock was not had within the timeout (like `flock -E`).
        #[arg(long, short = 'E', default_value_t = code::TIMEOUT)]
        conflict_exit_code: u8,
        /// Longest hold in seconds, renewals included: a stuck command loses the lock then.
        #[arg(long)]
        max_hold: Option<f64>,
        /// The signal that stops the command when the lock is lost.
        #[arg(long, default_value = "SIGTERM")]
        signal: Signal,
        /// Seconds between that signal and SIGKILL.
        #[arg(long, default_value_t = 10.0)]
        grace: f64,
        /// The lock's name.
        key: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show whether the lock KEY is held, for how long, and its fencing token.
    Status {
        /// The lock's name.
        key: String,
    },
    /// Free the lock KEY whoever holds it (operators only; needs --force).
    Release {
        /// Confirm: this frees a lock that another process may still believe it holds.
        #[arg(long)]
        force: bool,
        /// The lock's name.
        key: String,
    },
}

/// A number of seconds from the command line; `inf` is no limit.
fn seconds(name: &str, value: f64) -> Result<Duration, Failure> {
    if value == f64::INFINITY {
        return Ok(Duration::MAX);
    }
    Duration::try_from_secs_f64(value).map_err(|_| {
        Failure::new(
            code::USAGE,
            format!("--{name} must be a number of seconds, not {value}"),
        )
    })
}

fn locks(cli: &Cli) -> Result<Locks, Failure> {
    // Trimmed as the library trims $PYLOCK_URL: a value read from a file ends in a newline.
    let Some(url) = cli.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Err(Failure::new(
            code::USAGE,
            "no lock server: give --url (or set PYLOCK_URL), e.g. --url redis://127.0.0.1:6379 \
             or --url memcache://127.0.0.1:11211",
        ));
    };
    if url.to_ascii_lowercase().starts_with("memory:")
        || url.to_ascii_lowercase().starts_with("open:")
    {
        return Err(Failure::new(
            code::USAGE,
            format!(
                "{} locks nothing outside this one process; give a server, e.g. --url redis://127.0.0.1:6379",
                pylock::redact_url(url)
            ),
        ));
    }
    Ok(pylock::connect(url)?.key_prefix(cli.key_prefix.clone()))
}

/// The longest `pylock` waits before exiting for the library's background work: one call, which
/// takes at most the URL's timeouts (one second each by default).
const SETTLE: Duration = Duration::from_secs(5);

async fn main_result(cli: Cli) -> Result<u8, Failure> {
    let locks = locks(&cli)?;
    match cli.command {
        Command::Run {
            expires,
            timeout,
            max_hold,
            signal,
            grace,
            nonblock,
            fair,
            conflict_exit_code,
            key,
            command,
        } => {
            let timeout = if nonblock {
                Duration::ZERO
            } else {
                seconds("timeout", timeout)?
            };
            let mut lock = locks
                .lock(key.as_str())
                .expires(seconds("expires", expires)?)
                .timeout(timeout)
                .auto_renew();
            if let Some(max_hold) = max_hold {
                lock = lock.max_hold(seconds("max-hold", max_hold)?);
            }
            if fair {
                lock = lock.fair();
            }
            RunCommand {
                lock,
                key,
                timeout,
                command,
                term_signal: signal,
                grace: seconds("grace", grace)?,
                quiet: cli.quiet,
                conflict_code: conflict_exit_code,
            }
            .run()
            .await
        }
        Command::Status { key } => status(&locks.lock(key.as_str())).await,
        Command::Release { force, key } => {
            if !force {
                return Err(Failure::new(
                    code::USAGE,
                    "release needs --force: it frees the lock whoever holds it",
                ));
            }
            let released = locks.lock(key.as_str()).force_release().await?;
            println!(
                "{key}: {}",
                if released {
                    "released (forced)"
                } else {
                    "was not held"
                }
            );
            Ok(0)
        }
    }
}

async fn status(lock: &Lock) -> Result<u8, Failure> {
    match lock.inspect().await? {
        None => println!("{}: free", lock.key()),
        Some(holder) => {
            let mut line = format!("{}: held", lock.key());
            if let Some(remaining) = holder.remaining {
                line.push_str(&format!(", expires in {:.1} s", remaining.as_secs_f64()));
            }
            if let Some(fence) = holder.fence {
                line.push_str(&format!(", fence {fence}"));
            }
            println!("{line}");
        }
    }
    Ok(0)
}

/// Installs a tracing subscriber on stderr if RUST_LOG is set or -v given: the library's
/// spans (`pylock.acquire`, `pylock.hold`, shown as they close, with their durations) and
/// events (attempts, renewals, losses).
fn trace_to_stderr(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match (std::env::var("RUST_LOG"), verbose) {
        (Ok(directives), _) if !directives.trim().is_empty() => EnvFilter::new(directives),
        (_, 0) => return,
        // Targets match by prefix: `pylock` covers pylock_core, pylock_redis, ...
        (_, 1) => EnvFilter::new("pylock=info"),
        _ => EnvFilter::new("pylock=debug"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The subcommand named on the command line, if any: where a usage error's help is.
fn subcommand() -> Option<String> {
    use clap::CommandFactory;
    let command = Cli::command();
    std::env::args().skip(1).find(|arg| {
        command
            .get_subcommands()
            .any(|sub| sub.get_name() == arg && sub.get_name() != "help")
    })
}

fn main() -> ExitCode {
    // The watchdog of `pylock run` (see `job.rs`) is this binary, started with a hidden word.
    let mut args = std::env::args();
    if let (Some(_), Some(word), Some(group), None) =
        (args.next(), args.next(), args.next(), args.next())
        && word == job::WATCHDOG
    {
        return ExitCode::from(job::watchdog(&group));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are answers; anything else is bad usage (sysexits EX_USAGE,
            // as the exit-code table says, not clap's default 2), told on one line.
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    let _ = error.print();
                    ExitCode::SUCCESS
                }
                // `pylock` alone: the help is the answer, but nothing was done.
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                    ExitCode::from(code::USAGE)
                }
                _ => Failure::usage(&error, subcommand().as_deref()).report(),
            };
        }
    };
    trace_to_stderr(cli.verbose);
    let quiet = cli.quiet;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Failure::new(code::ERROR, format!("cannot start: {error}")).report(),
    };
    let result = runtime.block_on(async {
        let result = main_result(cli).await;
        // A wait given up (a stop signal, a timeout) or a guard dropped leaves the library a
        // release or a departure from a fair line to finish in the background: let it, so the
        // lock is free now rather than when its TTL or the waiter's patience runs out.
        pylock::settle(SETTLE).await;
        result
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // Like `flock -n`, a quiet run says nothing when the lock is simply taken: a cron job
        // that overlaps another host's must not mail every time.
        Err(failure) if quiet && failure.conflict => ExitCode::from(failure.code),
        Err(failure) => failure.report(),
    }
}
