//! The chaos suite: the library and the `pylock` command under injected faults against real
//! servers, with the history of every critical section checked afterwards.
//!
//! Faults: a TCP fault proxy between some clients and the server (latency, stall, silence,
//! garbage, reset), the server paused (SIGSTOP) and killed and restarted without persistence,
//! and `pylock` processes killed (SIGKILL), paused (SIGSTOP) and hung up (SIGHUP) while their
//! jobs, which have grandchildren, run.
//!
//! The rule checked: no two critical sections overlap, unless the fault took the lock away
//! from a live holder; then the stale holder stopped promptly and the later section has the
//! higher fence. Each test prints faults injected, acquisitions, overlaps (allowed and not)
//! and the worst overrun of an acquire's deadline.
//!
//! The library's workers also give up waiting at random moments (their acquire future
//! dropped), and run both the default lock and the fair one, whose line (places, the holder's
//! naming of the next in line, a leaver's hand-over of that name) is the most intricate state
//! on the server.
//!
//! Each scenario runs `PYLOCK_CHAOS_SECS` seconds (default 15); set it higher for a soak.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pylock::{Error, FINAL_ATTEMPT_GRACE, Locks};
use pylock_tests::{Fault, FaultProxy, Kind, Needs, Provider, TestServer};
use tokio::process::{Child, Command};

fn chaos_time() -> Duration {
    let secs = std::env::var("PYLOCK_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(15);
    Duration::from_secs(secs.clamp(1, 24 * 60 * 60))
}

/// xorshift64, seeded from the clock; the seed is printed so a run can be read back.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("chaos: seed {seed}");
        Rng(seed)
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }

    fn millis(&mut self, below: u64) -> Duration {
        Duration::from_millis(self.next(below))
    }
}

/// One critical section as its holder saw it.
#[derive(Debug, Clone)]
struct Section {
    holder: String,
    fence: Option<u64>,
    start: Instant,
    end: Instant,
    /// The holder learned it lost the lock during the section (or at its release).
    lost: bool,
}

/// The overlaps in `sections`: (allowed, forbidden) descriptions. An overlap is allowed only
/// when the earlier holder lost the lock, stopped within `prompt` of the later one's start,
/// and the later one's fence is higher (where both have one).
fn overlaps(sections: &mut [Section], prompt: Duration) -> (Vec<String>, Vec<String>) {
    sections.sort_by_key(|s| s.start);
    let (mut allowed, mut forbidden) = (Vec::new(), Vec::new());
    for (i, earlier) in sections.iter().enumerate() {
        for later in &sections[i + 1..] {
            if later.start >= earlier.end {
                continue;
            }
            let overlap = earlier.end - later.start;
            let fenced = match (earlier.fence, later.fence) {
                (Some(a), Some(b)) => b > a,
                _ => true,
            };
            let text = format!(
                "{} (fence {:?}, lost {}) overlapped {} (fence {:?}) by {overlap:?}",
                earlier.holder, earlier.fence, earlier.lost, later.holder, later.fence
            );
            if earlier.lost && fenced && overlap <= prompt {
                allowed.push(text);
            } else {
                forbidden.push(text);
            }
        }
    }
    (allowed, forbidden)
}

#[derive(Debug, Default)]
struct Tally {
    faults: Vec<String>,
    acquisitions: usize,
    /// Acquires given up by dropping their future while they waited.
    abandoned: usize,
    timeouts: usize,
    errors: usize,
    worst_overrun: Duration,
    /// Errors other than timeouts, by message.
    kinds: BTreeMap<String, usize>,
}

/// Which lock the library's workers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Default,
    /// First come, first served, with a patience short enough that the line loses dead
    /// waiters (a dropped acquire whose leaving was lost to a fault) within the run.
    Fair,
}

async fn library_chaos(kind: Kind, scheme: &str, mode: Mode) {
    let Some(mut server) = TestServer::start(kind, Needs::control().from(Provider::Binary)).await
    else {
        return;
    };
    let proxy = FaultProxy::start(server.port()).await;
    let direct = format!(
        "{scheme}://127.0.0.1:{}?connect_timeout=300ms&response_timeout=300ms",
        server.port()
    );
    let proxied = format!(
        "{scheme}://127.0.0.1:{}?connect_timeout=300ms&response_timeout=300ms",
        proxy.port()
    );
    let ttl = match kind {
        Kind::Redis => Duration::from_millis(600),
        // memcached counts whole seconds; etcd's leases too, with a minimum of about 2 s.
        Kind::Memcached | Kind::Etcd => Duration::from_secs(2),
    };
    let timeout = Duration::from_secs(2);
    let key = format!("chaos-{}", std::process::id());
    let sections = Arc::new(Mutex::new(Vec::<Section>::new()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + chaos_time();

    let mut workers = Vec::new();
    for worker in 0..4 {
        let url = if worker % 2 == 0 { &direct } else { &proxied };
        let locks = Locks::connect(url).expect("connect");
        let lock = locks
            .lock(key.as_str())
            .expires(ttl)
            .timeout(timeout)
            .auto_renew();
        let lock = match mode {
            Mode::Default => lock,
            Mode::Fair => lock.fair_patience(Duration::from_secs(2)),
        };
        let (sections, tally) = (Arc::clone(&sections), Arc::clone(&tally));
        let holder = format!(
            "worker {worker} ({})",
            if worker % 2 == 0 { "direct" } else { "proxied" }
        );
        let mut rng = Rng::seeded();
        workers.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if Instant::now() >= until {
                    break;
                }
                let asked = Instant::now();
                // One acquire in five is given up at a random moment, mostly while it waits
                // (or in line): dropped futures must leave no lock and no stuck line behind.
                let acquired = if rng.next(5) == 0 {
                    let patience = rng.millis(timeout.as_millis() as u64);
                    match tokio::time::timeout(patience, lock.acquire()).await {
                        Ok(acquired) => acquired,
                        Err(_) => {
                            tally.lock().expect("tally").abandoned += 1;
                            continue;
                        }
                    }
                } else {
                    lock.acquire().await
                };
                let overrun = asked
                    .elapsed()
                    .saturating_sub(timeout + FINAL_ATTEMPT_GRACE);
                {
                    let mut tally = tally.lock().expect("tally");
                    tally.worst_overrun = tally.worst_overrun.max(overrun);
                }
                let guard = match acquired {
                    Ok(guard) => guard,
                    Err(error) => {
                        {
                            let mut tally = tally.lock().expect("tally");
                            match error {
                                Error::Timeout { .. } => tally.timeouts += 1,
                                error => {
                                    tally.errors += 1;
                                    let text = format!(
                                        "{error}: {:?}",
                                        std::error::Error::source(&error).map(ToString::to_string)
                                    );
                                    let seen = tally.kinds.entry(text).or_insert(0);
                                    *seen += 1;
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let start = Instant::now();
                // Mostly short work, sometimes longer than the TTL: renewal must carry it.
                let longest = if rng.next(4) == 0 { ttl * 2 } else { ttl / 10 };
                let work = tokio::time::sleep(rng.millis(longest.as_millis() as u64));
                let lost = tokio::select! {
                    () = work => false,
                    _ = guard.lost() => true,
                };
                let end = Instant::now();
                let fence = guard.fence();
                let released = guard.release().await;
                let lost = lost || matches!(released, Err(Error::Lost { .. }));
                sections.lock().expect("sections").push(Section {
                    holder: holder.clone(),
                    fence,
                    start,
                    end,
                    lost,
                });
                tally.lock().expect("tally").acquisitions += 1;
            }
        }));
    }

    // The faults, one after another until the time is up.
    let mut rng = Rng::seeded();
    let mut round = 0u32;
    while Instant::now() < until && round < 10_000 {
        round += 1;
        tokio::time::sleep(rng.millis(600) + Duration::from_millis(200)).await;
        let fault = match rng.next(8) {
            0 => {
                proxy.set(Fault::Delay(rng.millis(200)));
                "proxy latency"
            }
            1 => {
                proxy.set(Fault::Stall);
                "proxy stall"
            }
            2 => {
                proxy.set(Fault::Silent);
                "proxy silent (half-open)"
            }
            3 => {
                proxy.set(Fault::Garbage);
                "proxy garbage"
            }
            4 => {
                proxy.set(Fault::Reset);
                "proxy reset"
            }
            5 => {
                server.pause().await;
                tokio::time::sleep(ttl + rng.millis(500)).await;
                server.resume().await;
                "server paused past the TTL"
            }
            6 => {
                server.restart().await;
                "server killed and restarted empty"
            }
            _ => "none",
        };
        if fault != "none" {
            tokio::time::sleep(rng.millis(ttl.as_millis() as u64 * 2)).await;
            proxy.set(Fault::Pass);
            tally.lock().expect("tally").faults.push(fault.to_owned());
        }
    }
    proxy.set(Fault::Pass);
    for worker in workers {
        worker.await.expect("worker");
    }

    let mut sections = sections.lock().expect("sections").clone();
    // A holder learns of a loss by its own validity timer or by a renewal (every third of
    // the TTL) that the server answers: a TTL plus a response timeout bounds "promptly".
    let (allowed, forbidden) = overlaps(&mut sections, ttl + Duration::from_millis(600));
    let tally = tally.lock().expect("tally");
    eprintln!(
        "chaos ({kind:?} library, {mode:?} lock): {} faults injected, {} acquisitions, {} abandoned, \
         {} timeouts, {} other errors, \
         {} overlaps allowed (lock taken from a live holder, stopped promptly, higher fence), \
         {} forbidden; worst acquire deadline overrun {:?}",
        tally.faults.len(),
        tally.acquisitions,
        tally.abandoned,
        tally.timeouts,
        tally.errors,
        allowed.len(),
        forbidden.len(),
        tally.worst_overrun
    );
    for text in &allowed {
        eprintln!("chaos: allowed: {text}");
    }
    for (text, count) in &tally.kinds {
        eprintln!("chaos: {count} x {text}");
    }
    assert!(forbidden.is_empty(), "forbidden overlaps: {forbidden:#?}");
    assert!(tally.acquisitions > 0, "no acquisition at all");
    assert!(
        tally.worst_overrun <= Duration::from_secs(1),
        "an acquire overran its deadline by {:?}",
        tally.worst_overrun
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_library_on_redis() {
    library_chaos(Kind::Redis, "redis", Mode::Default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fair_library_on_redis() {
    library_chaos(Kind::Redis, "redis", Mode::Fair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_library_on_memcached() {
    library_chaos(Kind::Memcached, "memcache", Mode::Default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_library_on_etcd() {
    library_chaos(Kind::Etcd, "etcd", Mode::Default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fair_library_on_etcd() {
    library_chaos(Kind::Etcd, "etcd", Mode::Fair).await;
}

/// One `pylock` process the chaos may strike.
#[derive(Debug)]
struct Running {
    pid: u32,
    started: SystemTime,
}

/// What was done to `pylock` processes: (pid, what, when, when it ended if a pause).
#[derive(Debug, Clone)]
struct Strike {
    pid: u32,
    what: &'static str,
    at: SystemTime,
    resumed: Option<SystemTime>,
}

fn nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pylock-chaos-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn kill(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pylock_run_killed_paused_and_hung_up() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let dir = scratch("cli");
    let history = dir.join("history");
    let key = format!("chaos-cli-{}", std::process::id());
    // The job: a grandchild writes a tick (fence, pylock's pid, time) every 50 ms for up to a
    // second; every tick is a moment the job acted as the lock's holder.
    let job = format!(
        "P=$PPID sh -c 'i=0; while [ $i -lt 20 ]; do echo \"$PYLOCK_FENCE $P $(date +%s%N)\" >> {}; \
         sleep 0.05; i=$((i+1)); done'",
        history.display()
    );
    let running = Arc::new(Mutex::new(BTreeMap::<usize, Running>::new()));
    let until = Instant::now() + chaos_time();
    let runs = Arc::new(Mutex::new(0usize));

    let mut hosts = Vec::new();
    for host in 0..3 {
        let (running, runs, job, key) = (
            Arc::clone(&running),
            Arc::clone(&runs),
            job.clone(),
            key.clone(),
        );
        let url = server.url().to_owned();
        hosts.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                if Instant::now() >= until {
                    break;
                }
                let child: Child = Command::new(env!("CARGO_BIN_EXE_pylock"))
                    .env_remove("PYLOCK_URL")
                    .args([
                        "--url",
                        &url,
                        "-q",
                        "run",
                        "--expires",
                        "1",
                        "--timeout",
                        "5",
                    ])
                    .args(["--grace", "0.3", &key, "--", "sh", "-c", &job])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn pylock");
                let pid = child.id().expect("pid");
                running.lock().expect("running").insert(
                    host,
                    Running {
                        pid,
                        started: SystemTime::now(),
                    },
                );
                *runs.lock().expect("runs") += 1;
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await;
                running.lock().expect("running").remove(&host);
            }
        }));
    }

    let mut rng = Rng::seeded();
    let mut strikes = Vec::new();
    for _ in 0..10_000 {
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(rng.millis(700) + Duration::from_millis(300)).await;
        let target = {
            let running = running.lock().expect("running");
            let victims: Vec<(u32, SystemTime)> =
                running.values().map(|r| (r.pid, r.started)).collect();
            if victims.is_empty() {
                continue;
            }
            victims[rng.next(victims.len() as u64) as usize]
        };
        let (pid, _) = target;
        let what = match rng.next(3) {
            0 => "SIGKILL",
            1 => "SIGSTOP past the TTL",
            _ => "SIGHUP",
        };
        let at = SystemTime::now();
        let resumed = match what {
            "SIGKILL" => {
                kill(pid, "-KILL");
                None
            }
            "SIGHUP" => {
                kill(pid, "-HUP");
                None
            }
            _ => {
                kill(pid, "-STOP");
                tokio::time::sleep(Duration::from_millis(1500)).await;
                kill(pid, "-CONT");
                Some(SystemTime::now())
            }
        };
        strikes.push(Strike {
            pid,
            what,
            at,
            resumed,
        });
    }
    for host in hosts {
        host.await.expect("host");
    }
    // Let any stray tick land (there must be none).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Read the ticks back: per fence, its pylock and its first and last tick.
    let text = std::fs::read_to_string(&history).unwrap_or_default();
    let mut holds: BTreeMap<u64, (u32, u128, u128)> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [fence, pid, at] = parts.as_slice() else {
            continue;
        };
        let (Ok(fence), Ok(pid), Ok(at)) =
            (fence.parse::<u64>(), pid.parse::<u32>(), at.parse::<u128>())
        else {
            continue;
        };
        let hold = holds.entry(fence).or_insert((pid, at, at));
        hold.1 = hold.1.min(at);
        hold.2 = hold.2.max(at);
    }
    let mut forbidden = Vec::new();
    let mut allowed = 0;
    // A killed pylock's job must stop within this; a paused one's within this of its resume.
    let prompt: u128 = 1_000_000_000;
    for strike in &strikes {
        for (fence, (pid, first, last)) in &holds {
            // Only a job already running when its pylock was struck (a pylock struck while
            // it waited may hold and run later, rightly).
            if *pid != strike.pid || *first > nanos(strike.at) {
                continue;
            }
            let limit = match strike.what {
                "SIGSTOP past the TTL" => nanos(strike.resumed.unwrap_or(strike.at)) + prompt,
                _ => nanos(strike.at) + prompt,
            };
            if *last > limit {
                forbidden.push(format!(
                    "the job of fence {fence} ran {} ms after {} of its pylock",
                    (*last - nanos(strike.at)) / 1_000_000,
                    strike.what
                ));
            }
        }
    }
    let ordered: Vec<(&u64, &(u32, u128, u128))> = holds.iter().collect();
    for (i, (fence, (pid, _, last))) in ordered.iter().enumerate() {
        for (later_fence, (_, later_first, _)) in &ordered[i + 1..] {
            if later_first >= last {
                continue;
            }
            // The later fence overlapped an earlier one: only a paused pylock may cause it.
            let paused = strikes
                .iter()
                .any(|s| s.pid == *pid && s.what == "SIGSTOP past the TTL");
            if paused {
                allowed += 1;
            } else {
                forbidden.push(format!(
                    "fence {fence} (pylock {pid}) ticked until {last}, after fence {later_fence} began at {later_first}"
                ));
            }
        }
    }
    // Fences increase with time: a later first tick never has a lower fence.
    let mut by_time: Vec<(u128, u64)> = holds
        .iter()
        .map(|(f, (_, first, _))| (*first, *f))
        .collect();
    by_time.sort();
    for pair in by_time.windows(2) {
        if pair[1].1 < pair[0].1 {
            forbidden.push(format!(
                "fence {} began after fence {}",
                pair[1].1, pair[0].1
            ));
        }
    }
    eprintln!(
        "chaos (pylock run): {} faults injected ({} SIGKILL, {} SIGSTOP, {} SIGHUP), {} runs, \
         {} acquisitions that ran a job, {} overlaps allowed (a paused pylock's job, stopped \
         after resume, lower fence), {} forbidden",
        strikes.len(),
        strikes.iter().filter(|s| s.what == "SIGKILL").count(),
        strikes
            .iter()
            .filter(|s| s.what.starts_with("SIGSTOP"))
            .count(),
        strikes.iter().filter(|s| s.what == "SIGHUP").count(),
        *runs.lock().expect("runs"),
        holds.len(),
        allowed,
        forbidden.len()
    );
    assert!(forbidden.is_empty(), "{forbidden:#?}");
    assert!(!holds.is_empty(), "no job ran");
}
