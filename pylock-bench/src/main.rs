//! `pylock-bench`: how fast a backend locks, next to the server's own round trip measured in
//! the same run.
//!
//! ```text
//! cargo run --release --bin pylock-bench -- --url redis://127.0.0.1:6379
//! cargo run --release --bin pylock-bench -- --url redis://127.0.0.1:6379 --json
//! ```
//!
//! Scenarios (each run stops at `--ops` operations or `--seconds`, whichever comes first, and
//! is repeated `--repeat` times; the table shows the median run and the spread):
//! - `uncontended`: one task, acquire + release on fresh keys: cycle latency, and that of the
//!   acquire alone (`acquire_p50_us`; the release is the rest);
//! - `throughput`: `--tasks` tasks on distinct keys of one backend: cycles per second;
//! - `handoff`: `--waiters` tasks on one key: time from a release to the next holder's
//!   acquire;
//! - `crowd`: `--waiters` tasks (default 1000) wait on one held lock, then take it in turn,
//!   each for `--hold-ms`: server commands per second while they wait and per hand-off
//!   (Redis), hand-off latency, wait times, order kept or not (see `crowd.rs`);
//! - `blocking`: the `uncontended` cycle through `pylock::blocking`, from a plain thread,
//!   each cycle preceded by a round trip on a plain blocking socket: `floor_rtt_us` is the
//!   p50 of those, measured alongside.
//!
//! - `contended` (only when named in `--scenario`; single `redis://` server): `--processes`
//!   processes take turns on one key, `--cycles` times each, with a non-atomic counter update
//!   inside (see `peer.rs`).
//!
//! With `--peer rslock` (a single `redis://` server), rslock's uncontended cycle runs after
//! each of pylock's, and its contended workload after each of pylock's: the peer's figures
//! and pylock's as a multiple of them.
//!
//! Baselines, measured in the same run: `baseline_rtt_us`, one round trip (Redis `PING`,
//! memcached `mn`, an etcd read) through the async connection type the backend uses, sent
//! before each `uncontended` cycle; `floor_rtt_us`, the same on a plain blocking socket; for
//! etcd `write_rtt_us`, one `Put` (a write through Raft and the disk, the floor of any lock
//! operation that survives a crash), measured before the scenarios. For Redis also
//! `raw_cycles_per_s`, a bare `SET NX PX` + `DEL` loop with as many tasks as `throughput`, and
//! `script_cycles_per_s`, the same loop running pylock's two scripts directly, one call per
//! lock operation. For a single Redis server, CPU time per cycle of the client (this process)
//! and of the server (`INFO cpu`) is reported for `uncontended` (the interleaved `PING`
//! included), `throughput` and those two loops.

mod baseline;
mod cpu;
mod crowd;
mod load;
mod peer;
mod scenarios;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pylock::memcache::MemcacheBackend;
use pylock::{LockBackend, Locks};

use crate::baseline::{Baseline, Pinger};
use crate::cpu::PerCycle;
use crate::load::Budget;
use crate::scenarios::Cycles;
use crate::stats::Samples;

#[derive(Parser, Debug)]
#[command(about = "Latency, throughput and hand-off of a pylock backend")]
struct Args {
    /// Backend URL (loopback servers only). Give it several times to compare backends in one
    /// run; each later backend's uncontended p50 is then also shown relative to the first.
    #[arg(long, default_value = "memory://")]
    url: Vec<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads; 1 (the default) is a current-thread runtime, which leaves the
    /// other core of a small machine to the server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Most operations per run.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// Most seconds per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Runs per scenario; the median run is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Tasks of the throughput scenario.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// Tasks of the hand-off scenario (default 8) and of the crowd scenario (default 1000).
    #[arg(long)]
    waiters: Option<usize>,
    /// How long each crowd waiter holds the lock, in milliseconds.
    #[arg(long, default_value_t = 1)]
    hold_ms: u64,
    /// Crowd waiters ask for a fair lock (first come, first served).
    #[arg(long)]
    fair: bool,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Measure a peer library alongside on the same server: `rslock` (single `redis://`).
    #[arg(long, value_parser = ["rslock"])]
    peer: Option<String>,
    /// Processes of the contended scenario.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Lock cycles of each process of the contended scenario.
    #[arg(long, default_value_t = 300)]
    cycles: u64,
    /// Internal: run as one worker process of the contended scenario, with this library.
    #[arg(long, hide = true)]
    worker: Option<String>,
    /// Internal: the key the workers of the contended scenario share.
    #[arg(long, hide = true)]
    worker_key: Option<String>,
}

/// One run of a scenario, summarised.
#[derive(Debug, Clone, Copy)]
struct Run {
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    ops_per_s: f64,
    /// The round trip measured alongside, if any.
    rtt_us: Option<f64>,
    /// The p50 of the acquire alone, for a scenario of acquire + release cycles.
    acquire_p50_us: Option<f64>,
    /// CPU time per cycle, where measured.
    cpu: PerCycle,
}

impl Run {
    fn of(mut samples: Samples, mut pings: Option<Samples>) -> Run {
        Run {
            samples: samples.len(),
            p50_us: samples.quantile_us(0.5),
            p99_us: samples.quantile_us(0.99),
            ops_per_s: samples.ops_per_s(),
            rtt_us: pings
                .as_mut()
                .filter(|p| p.len() > 0)
                .map(|p| p.quantile_us(0.5)),
            acquire_p50_us: None,
            cpu: PerCycle::default(),
        }
    }

    /// A run of acquire + release cycles, with the acquire's p50 on its own.
    fn of_cycles(cycles: Cycles) -> Run {
        let Cycles {
            samples,
            pings,
            mut acquires,
        } = cycles;
        Run {
            acquire_p50_us: (acquires.len() > 0).then(|| acquires.quantile_us(0.5)),
            ..Run::of(samples, Some(pings))
        }
    }
}

/// All runs of a scenario.
struct Row {
    scenario: &'static str,
    runs: Vec<Run>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl Row {
    /// The median of a figure not every run has.
    fn optional(&self, f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.runs.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    }

    /// The median over runs of each run's p50 divided by the round trip measured in that
    /// same run.
    fn ratio_to_alongside(&self) -> Option<f64> {
        self.optional(|r| r.rtt_us.map(|rtt| r.p50_us / rtt))
    }

    fn field(&self, f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
        let values: Vec<f64> = self.runs.iter().map(f).collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(values), min, max)
    }
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    }
    .enable_all()
    .build()
    .expect("runtime");
    if let (Some(library), Some(key)) = (&args.worker, &args.worker_key) {
        let url = args.url.first().expect("a URL");
        runtime.block_on(peer::worker(url, library, key, args.cycles));
        return;
    }
    runtime.block_on(async {
        let mut first: Option<(String, f64)> = None;
        for url in &args.url {
            let p50 = run(&args, url).await;
            match (&first, p50) {
                (None, Some(p50)) => first = Some((url.clone(), p50)),
                (Some((first_url, first_p50)), Some(p50)) if !args.json => println!(
                    "uncontended p50 = {:.2} x that of {}\n",
                    p50 / first_p50,
                    pylock::redact_url(first_url)
                ),
                _ => {}
            }
        }
    });
}

/// Runs the scenarios on `url` and prints them; returns the uncontended p50 if measured.
async fn run(args: &Args, url: &str) -> Option<f64> {
    let budget = Budget {
        operations: args.ops,
        time: Duration::from_secs_f64(args.seconds),
    };
    // A memcache backend is built here so that the baseline pings go through its very
    // connection; any other backend comes from the registry.
    let memcache = url
        .starts_with("memcache://")
        .then(|| Arc::new(MemcacheBackend::from_url(url).unwrap_or_else(|e| panic!("{e}"))));
    let locks = match &memcache {
        Some(backend) => Locks::new(Arc::clone(backend) as Arc<dyn LockBackend>),
        None => pylock::connect(url).unwrap_or_else(|e| panic!("{e}")),
    }
    .key_prefix(format!("pylock-bench:{}:", std::process::id()));
    let backend = locks.backend().name();
    let wanted = |name: &str| args.scenario.is_empty() || args.scenario.iter().any(|s| s == name);
    let repeat = args.repeat.max(1);

    // Warm up: connect, load the scripts.
    let warm_up = Budget {
        operations: 500,
        time: budget.time,
    };
    scenarios::uncontended(&locks, warm_up, None).await;
    let mut baseline = baseline::measure(url, memcache.clone(), args.tasks, budget).await;
    let mut pinger = Pinger::connect(url, memcache).await;

    let mut rows = Vec::new();
    let mut uncontended = Row {
        scenario: "uncontended",
        runs: Vec::new(),
    };
    let rslock = args.peer.is_some() && url.starts_with("redis://");
    let mut rslock_uncontended = Row {
        scenario: "rslock-uncontended",
        runs: Vec::new(),
    };
    for _ in 0..repeat {
        let budget = if wanted("uncontended") {
            budget
        } else {
            warm_up
        };
        let mut meter = pinger.as_ref().and_then(Pinger::redis_connection);
        let before = cpu::read(meter.as_mut()).await;
        let cycles = scenarios::uncontended(&locks, budget, pinger.as_mut()).await;
        let after = cpu::read(meter.as_mut()).await;
        let count = cycles.samples.operations;
        let mut run = Run::of_cycles(cycles);
        // Includes the server's share of the PING sent before each cycle (about 1 us).
        run.cpu = before.per_cycle(&after, count);
        uncontended.runs.push(run);
        if !wanted("uncontended") {
            break;
        }
        if rslock {
            let samples = peer::rslock_uncontended(url, budget).await;
            rslock_uncontended.runs.push(Run::of(samples, None));
        }
    }
    let rtts: Vec<f64> = uncontended.runs.iter().filter_map(|r| r.rtt_us).collect();
    if !rtts.is_empty() {
        baseline.rtt_us = Some(median(rtts));
    }
    let peer_uncontended = (!rslock_uncontended.runs.is_empty()).then(|| {
        let pylock = uncontended.field(|r| r.p50_us).0;
        let rslock = rslock_uncontended.field(|r| r.p50_us).0;
        (pylock, rslock)
    });
    if wanted("uncontended") {
        rows.push(uncontended);
    }
    if !rslock_uncontended.runs.is_empty() {
        rows.push(rslock_uncontended);
    }
    if wanted("throughput") {
        let mut row = Row {
            scenario: "throughput",
            runs: Vec::new(),
        };
        let mut meter = pinger.as_ref().and_then(Pinger::redis_connection);
        for _ in 0..repeat {
            let before = cpu::read(meter.as_mut()).await;
            let samples = scenarios::throughput(&locks, args.tasks, budget).await;
            let after = cpu::read(meter.as_mut()).await;
            let cycles = samples.operations;
            let mut run = Run::of(samples, None);
            run.cpu = before.per_cycle(&after, cycles);
            row.runs.push(run);
        }
        rows.push(row);
    }
    if wanted("handoff") {
        let mut row = Row {
            scenario: "handoff",
            runs: Vec::new(),
        };
        for _ in 0..repeat {
            let samples = scenarios::handoff(&locks, args.waiters.unwrap_or(8), budget).await;
            row.runs.push(Run::of(samples, None));
        }
        rows.push(row);
    }

    if wanted("blocking") {
        let blocking = pylock::blocking::Locks::connect(url)
            .unwrap_or_else(|e| panic!("{e}"))
            .key_prefix(format!("pylock-bench:{}:", std::process::id()));
        let mut floor = pinger.as_ref().and_then(Pinger::floor);
        let row = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Connect and load the scripts on the blocking side first.
                    scenarios::blocking(&blocking, warm_up, None);
                    let mut row = Row {
                        scenario: "blocking",
                        runs: Vec::new(),
                    };
                    for _ in 0..repeat {
                        let cycles = scenarios::blocking(&blocking, budget, floor.as_mut());
                        row.runs.push(Run::of_cycles(cycles));
                    }
                    row
                })
                .join()
                .expect("blocking scenario")
        });
        rows.push(row);
    }

    let mut contended: Vec<(peer::Contended, Option<peer::Contended>)> = Vec::new();
    if wanted("contended") && url.starts_with("redis://") && !args.scenario.is_empty() {
        for _ in 0..repeat {
            let ours = peer::contended(url, "pylock", args.processes, args.cycles).await;
            let theirs = if rslock {
                Some(peer::contended(url, "rslock", args.processes, args.cycles).await)
            } else {
                None
            };
            contended.push((ours, theirs));
        }
    }

    let crowd = if wanted("crowd") {
        let meter = pinger.as_ref().and_then(Pinger::redis_connection);
        let line = match pinger.as_ref() {
            Some(Pinger::Redis { connection, .. }) => crowd::Line::Redis(connection.clone()),
            Some(Pinger::Etcd { client }) => crowd::Line::Etcd(client.clone()),
            _ => crowd::Line::Unseen,
        };
        let waiters = args.waiters.unwrap_or(1000);
        let hold = Duration::from_millis(args.hold_ms);
        Some(crowd::crowd(&locks, waiters, hold, args.fair, meter, line).await)
    } else {
        None
    };

    let contended = Contention::of(&contended, args);
    if args.json {
        if let Some((pylock, rslock)) = peer_uncontended {
            println!(
                "{{\"backend\":\"{backend}\",\"url\":\"{}\",\"scenario\":\"peer-uncontended\",\"peer\":\"rslock\",\"p50_us\":{},\"peer_p50_us\":{},\"ratio\":{}}}",
                pylock::redact_url(url),
                number(Some(pylock)),
                number(Some(rslock)),
                fixed(Some(pylock / rslock), 3),
            );
        }
        if let Some(contended) = &contended {
            println!("{}", contended.json(backend, url));
        }
        if let Some(crowd) = &crowd {
            println!("{}", crowd_json(backend, url, crowd, &baseline));
        }
        for row in &rows {
            println!("{}", json(backend, url, row, &baseline, args));
        }
    } else {
        table(args, url, backend, &rows, &baseline);
        if let Some((pylock, rslock)) = peer_uncontended {
            println!(
                "uncontended p50: pylock {pylock:.1} us, rslock {rslock:.1} us: pylock = {:.2} x rslock",
                pylock / rslock
            );
        }
        if let Some(contended) = &contended {
            println!("{}", contended.line());
        }
        if let Some(crowd) = &crowd {
            crowd_table(crowd, &baseline);
        }
    }
    rows.iter()
        .find(|row| row.scenario == "uncontended")
        .map(|row| row.field(|r| r.p50_us).0)
}

/// The contended scenario's runs, summarised: medians of wall times, and of the ratio of
/// pylock's to the peer's in each repeat.
struct Contention {
    processes: usize,
    cycles: u64,
    pylock_s: f64,
    peer_s: Option<f64>,
    ratio: Option<f64>,
    counters_exact: bool,
}

impl Contention {
    fn of(runs: &[(peer::Contended, Option<peer::Contended>)], args: &Args) -> Option<Self> {
        if runs.is_empty() {
            return None;
        }
        let peers: Vec<f64> = runs
            .iter()
            .filter_map(|(_, p)| p.map(|p| p.seconds))
            .collect();
        let ratios: Vec<f64> = runs
            .iter()
            .filter_map(|(ours, p)| p.map(|p| ours.seconds / p.seconds))
            .collect();
        Some(Contention {
            processes: args.processes,
            cycles: args.cycles,
            pylock_s: median(runs.iter().map(|(ours, _)| ours.seconds).collect()),
            peer_s: (!peers.is_empty()).then(|| median(peers)),
            ratio: (!ratios.is_empty()).then(|| median(ratios)),
            counters_exact: runs
                .iter()
                .all(|(ours, p)| ours.counter_exact && p.is_none_or(|p| p.counter_exact)),
        })
    }

    fn line(&self) -> String {
        let peer = match (self.peer_s, self.ratio) {
            (Some(peer), Some(ratio)) => {
                format!(", rslock {peer:.3} s: pylock = {ratio:.2} x rslock")
            }
            _ => String::new(),
        };
        format!(
            "contended ({} processes x {} cycles on one key): pylock {:.3} s{peer}; counters {}",
            self.processes,
            self.cycles,
            self.pylock_s,
            if self.counters_exact {
                "exact"
            } else {
                "WRONG: two holders at once"
            }
        )
    }

    fn json(&self, backend: &str, url: &str) -> String {
        format!(
            "{{\"backend\":\"{backend}\",\"url\":\"{}\",\"scenario\":\"contended\",\"processes\":{},\"cycles\":{},\"seconds\":{},\"peer\":{},\"peer_seconds\":{},\"ratio\":{},\"counters_exact\":{}}}",
            pylock::redact_url(url),
            self.processes,
            self.cycles,
            fixed(Some(self.pylock_s), 4),
            if self.peer_s.is_some() {
                "\"rslock\""
            } else {
                "null"
            },
            fixed(self.peer_s, 4),
            fixed(self.ratio, 3),
            self.counters_exact,
        )
    }
}

/// The blocking round trip to compare `row` with: for the `blocking` scenario the one measured
/// alongside it, cycle by cycle; otherwise the baseline's.
fn floor_rtt_us(row: &Row, baseline: &Baseline) -> Option<f64> {
    if row.scenario == "blocking" {
        row.optional(|r| r.rtt_us)
    } else {
        baseline.floor_rtt_us
    }
}

/// The crowd scenario's JSON line.
fn crowd_json(backend: &str, url: &str, crowd: &crowd::Crowd, baseline: &Baseline) -> String {
    let (mut handoffs, mut waits) = (crowd.handoffs.clone(), crowd.waits.clone());
    format!(
        "{{\"backend\":\"{backend}\",\"url\":\"{}\",\"scenario\":\"crowd\",\"waiters\":{},\"fair\":{},\"acquisitions\":{},\"server_cmds_per_handoff\":{},\"idle_cmds_per_s\":{},\"handoff_p50_us\":{},\"handoff_p99_us\":{},\"wait_p99_ms\":{},\"wait_max_ms\":{},\"fifo_violations\":{},\"timeouts\":{},\"errors\":{},\"baseline_rtt_us\":{}}}",
        pylock::redact_url(url),
        crowd.waiters,
        crowd.fair,
        crowd.acquisitions,
        number(crowd.server_cmds_per_handoff),
        number(crowd.idle_cmds_per_s),
        number(Some(handoffs.quantile_us(0.5))),
        number(Some(handoffs.quantile_us(0.99))),
        number(Some(waits.quantile_us(0.99) / 1000.0)),
        number(Some(waits.quantile_us(1.0) / 1000.0)),
        crowd.fifo_violations,
        crowd.timeouts,
        crowd.errors,
        number(baseline.rtt_us),
    )
}

/// The crowd scenario, as lines under the table.
fn crowd_table(crowd: &crowd::Crowd, baseline: &Baseline) {
    let (mut handoffs, mut waits) = (crowd.handoffs.clone(), crowd.waits.clone());
    let p50 = handoffs.quantile_us(0.5);
    let ratio = baseline
        .rtt_us
        .map(|rtt| format!(" ({:.2} x async round trip)", p50 / rtt))
        .unwrap_or_default();
    println!(
        "crowd{}: {} waiters, {} acquisitions, {} timeouts, {} errors | hand-off p50 {p50:.1} us{ratio}, p99 {:.1} us | wait p99 {:.1} ms, max {:.1} ms | out of order {}",
        if crowd.fair { " (fair)" } else { "" },
        crowd.waiters,
        crowd.acquisitions,
        crowd.timeouts,
        crowd.errors,
        handoffs.quantile_us(0.99),
        waits.quantile_us(0.99) / 1000.0,
        waits.quantile_us(1.0) / 1000.0,
        crowd.fifo_violations,
    );
    if let (Some(per_handoff), Some(idle)) = (crowd.server_cmds_per_handoff, crowd.idle_cmds_per_s)
    {
        println!(
            "crowd: server commands {per_handoff:.1} per hand-off, {idle:.0} per second while all wait"
        );
    }
}

/// `value` with `decimals` decimals, or `null`.
fn fixed(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".to_owned(),
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "null".to_owned(),
    }
}

fn json(backend: &str, url: &str, row: &Row, baseline: &Baseline, args: &Args) -> String {
    let (p50, ..) = row.field(|r| r.p50_us);
    let (p99, ..) = row.field(|r| r.p99_us);
    let (ops, ..) = row.field(|r| r.ops_per_s);
    let samples: usize = row.runs.iter().map(|r| r.samples).sum();
    format!(
        "{{\"backend\":\"{backend}\",\"url\":\"{}\",\"scenario\":\"{}\",\"runs\":{},\"samples\":{samples},\"threads\":{},\"p50_us\":{},\"p99_us\":{},\"ops_per_s\":{},\"baseline_rtt_us\":{},\"floor_rtt_us\":{},\"raw_cycles_per_s\":{},\"script_cycles_per_s\":{},\"client_cpu_us_per_cycle\":{},\"server_cpu_us_per_cycle\":{},\"raw_client_cpu_us_per_cycle\":{},\"raw_server_cpu_us_per_cycle\":{},\"write_rtt_us\":{},\"acquire_p50_us\":{}}}",
        pylock::redact_url(url),
        row.scenario,
        row.runs.len(),
        args.threads,
        number(Some(p50)),
        number(Some(p99)),
        number(Some(ops)),
        number(baseline.rtt_us),
        number(floor_rtt_us(row, baseline)),
        number(baseline.raw_cycles_per_s),
        number(baseline.script_cycles_per_s),
        number(row.optional(|r| r.cpu.client_us)),
        number(row.optional(|r| r.cpu.server_us)),
        number(baseline.raw_cpu.client_us),
        number(baseline.raw_cpu.server_us),
        number(baseline.write_rtt_us),
        number(row.optional(|r| r.acquire_p50_us)),
    )
}

/// `p50` in writes of the baseline's store, where it has them (etcd).
fn in_writes(p50: f64, baseline: &Baseline) -> String {
    baseline
        .write_rtt_us
        .map(|write| format!("; = {:.2} x one write", p50 / write))
        .unwrap_or_default()
}

fn table(args: &Args, url: &str, backend: &str, rows: &[Row], baseline: &Baseline) {
    println!(
        "pylock-bench: backend {backend}, {}, {} runtime thread(s), {} runs of at most {} ops / {} s per scenario (median run shown, [min..max] of runs)",
        pylock::redact_url(url),
        args.threads,
        args.repeat.max(1),
        args.ops,
        args.seconds
    );
    if let (Some(rtt), Some(floor)) = (baseline.rtt_us, baseline.floor_rtt_us) {
        println!(
            "baselines: async round trip p50 {rtt:.1} us (interleaved with uncontended) | blocking-socket round trip p50 {floor:.1} us"
        );
    }
    if let (Some(rtt), Some(write)) = (baseline.rtt_us, baseline.write_rtt_us) {
        println!(
            "baselines: read round trip p50 {rtt:.1} us (interleaved with uncontended) | write (put) round trip p50 {write:.1} us"
        );
    }
    if let (Some(raw), Some(scripts)) = (baseline.raw_cycles_per_s, baseline.script_cycles_per_s) {
        println!(
            "           x{} tasks: bare SET NX PX + DEL {raw:.0} cycles/s | pylock's scripts alone {scripts:.0} cycles/s",
            args.tasks
        );
    }
    println!(
        "{:<12} {:>8} {:>22} {:>9} {:>26}   compared with the baselines",
        "scenario", "samples", "p50_us", "p99_us", "ops_per_s"
    );
    for row in rows {
        let (p50, p50_min, p50_max) = row.field(|r| r.p50_us);
        let (p99, ..) = row.field(|r| r.p99_us);
        let (ops, ops_min, ops_max) = row.field(|r| r.ops_per_s);
        let samples: usize = row.runs.iter().map(|r| r.samples).sum();
        let comparison = match row.scenario {
            "uncontended" => {
                let ratio = row
                    .ratio_to_alongside()
                    .map(|ratio| format!("p50 = {ratio:.2} x async round trip"))
                    .unwrap_or_default();
                let acquire = row
                    .optional(|r| r.acquire_p50_us)
                    .zip(row.optional(|r| Some(r.acquire_p50_us? / r.rtt_us?)))
                    .map(|(acquire, ratio)| {
                        format!("; acquire alone p50 {acquire:.1} us = {ratio:.2} x")
                    })
                    .unwrap_or_default();
                let ratio = format!("{ratio}{acquire}");
                match row.optional(|r| r.cpu.server_us) {
                    Some(server) => format!("{ratio}; server cpu {server:.2} us/cycle"),
                    None => format!("{ratio}{}", in_writes(p50, baseline)),
                }
            }
            "throughput" => baseline
                .raw_cycles_per_s
                .map(|raw| format!("{:.2} x the bare loop", ops / raw))
                .unwrap_or_default(),
            "handoff" => baseline
                .rtt_us
                .map(|rtt| {
                    format!(
                        "p50 = {:.2} x async round trip{}",
                        p50 / rtt,
                        in_writes(p50, baseline)
                    )
                })
                .unwrap_or_default(),
            "blocking" => row
                .ratio_to_alongside()
                .zip(row.optional(|r| r.rtt_us))
                .map(|(ratio, rtt)| {
                    format!(
                        "p50 = {ratio:.2} x blocking-socket round trip ({rtt:.1} us, alongside)"
                    )
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        println!(
            "{:<12} {:>8} {:>8.1} [{:>5.1}..{:>5.1}] {:>9.1} {:>9.0} [{:>6.0}..{:>6.0}]   {comparison}",
            row.scenario, samples, p50, p50_min, p50_max, p99, ops, ops_min, ops_max
        );
    }
    let throughput = rows.iter().find(|row| row.scenario == "throughput");
    if let Some(row) = throughput
        && let (Some(client), Some(server)) = (
            row.optional(|r| r.cpu.client_us),
            row.optional(|r| r.cpu.server_us),
        )
    {
        let loops = [
            ("bare loop", baseline.raw_cpu),
            ("scripts alone", baseline.script_cpu),
        ]
        .iter()
        .filter_map(|(name, cpu)| {
            Some(format!(
                "{name}: client {:.2}, server {:.2}",
                cpu.client_us?, cpu.server_us?
            ))
        })
        .collect::<Vec<_>>()
        .join(" | ");
        println!("cpu us per throughput cycle: client {client:.2}, server {server:.2} | {loops}");
    }
}
