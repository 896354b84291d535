//! The main demo: workers contend for one lock; each critical section does a non-atomic
//! read-modify-write of a counter file. Every hold interval is printed, and the run fails
//! (exit code 1) if two intervals overlap or the counter lost an update.
//!
//! ```text
//! cargo run -p pylock --example contention                      # memory://, 8 tasks
//! cargo run -p pylock --example contention -- --url redis://127.0.0.1:6379 --processes 4
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug, Clone)]
#[command(about = "Workers contend for one pylock; fails if two ever hold it at once")]
struct Args {
    /// Backend URL; defaults to $PYLOCK_URL, then memory:// (in-process only).
    #[arg(long)]
    url: Option<String>,
    /// Processes to run the workers in (needs a backend shared across processes).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Concurrent workers (tasks) per process.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Critical sections per worker.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long each critical section holds the lock, in milliseconds.
    #[arg(long, default_value_t = 2)]
    hold_ms: u64,
    /// Lock expiry in seconds (must exceed --hold-ms).
    #[arg(long, default_value_t = 10.0)]
    expires: f64,
    /// Longest wait for the lock, in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// The lock's name.
    #[arg(long, default_value = "contention-demo")]
    key: String,
    /// Internal: run as one of the child processes, writing to this counter file.
    #[arg(long, hide = true)]
    child_counter: Option<PathBuf>,
    /// Internal: this child's number.
    #[arg(long, hide = true, default_value_t = 0)]
    child_index: usize,
}

/// One critical section, as seen from inside it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    start_us: u128,
    end_us: u128,
    process: usize,
    worker: usize,
    round: usize,
    fence: Option<u64>,
}

impl Hold {
    fn to_line(self) -> String {
        format!(
            "HOLD {} {} {} {} {} {}",
            self.start_us,
            self.end_us,
            self.process,
            self.worker,
            self.round,
            self.fence.map_or("-".to_owned(), |f| f.to_string())
        )
    }

    fn from_line(line: &str) -> Option<Hold> {
        let mut parts = line.strip_prefix("HOLD ")?.split(' ');
        let mut next = || parts.next();
        Some(Hold {
            start_us: next()?.parse().ok()?,
            end_us: next()?.parse().ok()?,
            process: next()?.parse().ok()?,
            worker: next()?.parse().ok()?,
            round: next()?.parse().ok()?,
            fence: next()?.parse().ok(),
        })
    }
}

fn now_us() -> u128 {
    // Wall-clock time only to line up intervals from several processes of one machine for
    // the report; the lock itself never compares clocks.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.child_counter {
        Some(counter) => run_child(&args, counter).await,
        None => run_parent(&args).await,
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("contention: {message}");
            ExitCode::from(2)
        }
    }
}

fn url(args: &Args) -> String {
    args.url
        .clone()
        .or_else(|| {
            std::env::var(pylock::URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| pylock::DEFAULT_URL.to_owned())
}

fn lock(args: &Args) -> Result<pylock::Lock, String> {
    let locks = pylock::connect(&url(args)).map_err(|e| e.to_string())?;
    Ok(locks
        .lock(args.key.as_str())
        .expires(Duration::from_secs_f64(args.expires))
        .timeout(Duration::from_secs_f64(args.timeout)))
}

/// Runs this process's workers; returns their holds, or the first error.
async fn run_workers(args: &Args, counter: &Path) -> Result<Vec<Hold>, String> {
    let lock = lock(args)?;
    let mut tasks = Vec::new();
    for worker in 0..args.workers {
        let lock = lock.clone();
        let counter = counter.to_owned();
        let (rounds, hold, process) = (
            args.rounds,
            Duration::from_millis(args.hold_ms),
            args.child_index,
        );
        tasks.push(tokio::spawn(async move {
            let mut holds = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let guard = lock.acquire().await.map_err(|e| e.to_string())?;
                let start_us = now_us();
                // Deliberately not atomic: read, wait, write. Only the lock keeps it exact.
                let seen = read_counter(&counter).await?;
                tokio::time::sleep(hold).await;
                write_counter(&counter, seen + 1, process, worker).await?;
                let end_us = now_us();
                let fence = guard.fence();
                guard
                    .release()
                    .await
                    .map_err(|e| format!("worker {worker} round {round}: {e}"))?;
                holds.push(Hold {
                    start_us,
                    end_us,
                    process,
                    worker,
                    round,
                    fence,
                });
            }
            Ok::<_, String>(holds)
        }));
    }
    let mut holds = Vec::new();
    for task in tasks {
        holds.extend(task.await.map_err(|e| format!("worker panicked: {e}"))??);
    }
    Ok(holds)
}

/// Replaces the counter file in one step (write a temporary file, rename it over), so a
/// reader always sees a whole number: without the lock, updates get lost, not garbled.
async fn write_counter(
    path: &Path,
    value: u64,
    process: usize,
    worker: usize,
) -> Result<(), String> {
    let temporary = path.with_extension(format!("{process}.{worker}.tmp"));
    tokio::fs::write(&temporary, value.to_string())
        .await
        .map_err(|e| format!("writing {}: {e}", temporary.display()))?;
    tokio::fs::rename(&temporary, path)
        .await
        .map_err(|e| format!("replacing {}: {e}", path.display()))
}

async fn read_counter(path: &Path) -> Result<u64, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("counter file {} holds {text:?}: {e}", path.display()))
}

async fn run_child(args: &Args, counter: &Path) -> Result<ExitCode, String> {
    for hold in run_workers(args, counter).await? {
        println!("{}", hold.to_line());
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_parent(args: &Args) -> Result<ExitCode, String> {
    let url = url(args);
    let redacted = pylock::redact_url(&url);
    if args.processes == 0 || args.workers == 0 {
        return Err("--processes and --workers must be at least 1".to_owned());
    }
    if args.processes > 1 && url.to_ascii_lowercase().starts_with("memory:") {
        return Err(
            "memory:// locks exist inside one process only; give --url redis://..., \
             memcache://... or etcd://... to contend across processes"
                .to_owned(),
        );
    }
    let counter =
        std::env::temp_dir().join(format!("pylock-contention-{}.count", std::process::id()));
    tokio::fs::write(&counter, "0")
        .await
        .map_err(|e| format!("creating {}: {e}", counter.display()))?;
    println!(
        "pylock contention demo: {} process(es) x {} workers x {} rounds on {redacted}, key {:?}",
        args.processes, args.workers, args.rounds, args.key
    );

    let holds = if args.processes == 1 {
        run_workers(args, &counter).await
    } else {
        run_children(args, &counter).await
    };
    let final_count = read_counter(&counter).await;
    let _ = tokio::fs::remove_file(&counter).await;
    let mut holds = holds?;
    let final_count = final_count?;

    holds.sort_by_key(|h| h.start_us);
    let origin = holds.first().map_or(0, |h| h.start_us);
    let ms = |us: u128| (us - origin) as f64 / 1000.0;
    let mut overlaps = 0;
    for (i, hold) in holds.iter().enumerate() {
        let overlap = i > 0 && hold.start_us < holds[i - 1].end_us;
        overlaps += usize::from(overlap);
        println!(
            "  p{} w{} r{}  held {:>10.3} .. {:>10.3} ms  fence {}{}",
            hold.process,
            hold.worker,
            hold.round,
            ms(hold.start_us),
            ms(hold.end_us),
            hold.fence.map_or("-".to_owned(), |f| f.to_string()),
            if overlap {
                "  <-- OVERLAPS the previous hold"
            } else {
                ""
            }
        );
    }
    let expected = (args.processes * args.workers * args.rounds) as u64;
    let ok = overlaps == 0 && final_count == expected && holds.len() as u64 == expected;
    println!(
        "{}: {} holds, {overlaps} overlapping; counter = {final_count} (expected {expected})",
        if ok { "OK" } else { "VIOLATION" },
        holds.len()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_children(args: &Args, counter: &Path) -> Result<Vec<Hold>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let mut children = Vec::new();
    for index in 0..args.processes {
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("--url")
            .arg(url(args))
            .args(["--workers", &args.workers.to_string()])
            .args(["--rounds", &args.rounds.to_string()])
            .args(["--hold-ms", &args.hold_ms.to_string()])
            .args(["--expires", &args.expires.to_string()])
            .args(["--timeout", &args.timeout.to_string()])
            .args(["--key", &args.key])
            .arg("--child-counter")
            .arg(counter)
            .args(["--child-index", &index.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        children.push(
            command
                .spawn()
                .map_err(|e| format!("starting a child: {e}"))?,
        );
    }
    // Read every child at once, so that none blocks on a full pipe.
    let readers: Vec<_> = children
        .into_iter()
        .enumerate()
        .map(|(index, child)| tokio::spawn(collect_child(index, child)))
        .collect();
    let mut holds = Vec::new();
    for reader in readers {
        holds.extend(reader.await.map_err(|e| format!("child reader: {e}"))??);
    }
    Ok(holds)
}

async fn collect_child(
    index: usize,
    mut child: tokio::process::Child,
) -> Result<Vec<Hold>, String> {
    let mut holds = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| format!("reading child {index}: {e}"))?
        {
            match Hold::from_line(&line) {
                Some(hold) => holds.push(hold),
                None => println!("  child {index}: {line}"),
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for child {index}: {e}"))?;
    if !status.success() {
        return Err(format!("child process {index} failed ({status})"));
    }
    Ok(holds)
}
