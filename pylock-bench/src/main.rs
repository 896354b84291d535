//! `pylock-bench`: how fast a backend locks, next to the server's own round trip measured in
//! the same run.
//!
//! ```text
//! cargo run --release --bin pylock-bench -- --url redis://127.0.0.1:6379
//! cargo run --release --bin pylock-bench -- --url redis://127.0.0.1:6379 --json
//! ```
//!
//! Scenarios (each stops at `--ops` operations or `--seconds`, whichever comes first):
//! - `uncontended`: one task, acquire + release on fresh keys: cycle latency;
//! - `throughput`: `--tasks` tasks on distinct keys of one backend: cycles per second;
//! - `handoff`: `--waiters` tasks on one key: time from a release to the next holder's
//!   acquire.
//!
//! Baselines (Redis): `baseline_rtt_us`, a PING through the async connection type the
//! backend uses; `floor_rtt_us`, a PING on a plain blocking socket; `raw_cycles_per_s`, a bare
//! `SET NX PX` + `DEL` loop with as many tasks as `throughput`.

mod baseline;
mod scenarios;
mod stats;

use std::time::Duration;

use clap::Parser;

use crate::baseline::Baseline;
use crate::scenarios::Budget;
use crate::stats::Samples;

#[derive(Parser, Debug)]
#[command(about = "Latency, throughput and hand-off of a pylock backend")]
struct Args {
    /// Backend URL (loopback servers only).
    #[arg(long, default_value = "memory://")]
    url: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Most operations per scenario.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// Most seconds per scenario.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Tasks of the throughput scenario.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// Tasks of the hand-off scenario.
    #[arg(long, default_value_t = 8)]
    waiters: usize,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
}

struct Row {
    scenario: &'static str,
    samples: Samples,
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
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let budget = Budget {
        operations: args.ops,
        time: Duration::from_secs_f64(args.seconds),
    };
    let locks = pylock::connect(&args.url)
        .unwrap_or_else(|e| panic!("{e}"))
        .key_prefix(format!("pylock-bench:{}:", std::process::id()));
    let backend = locks.backend().name();
    let wanted = |name: &str| args.scenario.is_empty() || args.scenario.iter().any(|s| s == name);

    // Warm up: connect, load the scripts.
    scenarios::uncontended(
        &locks,
        Budget {
            operations: 200,
            time: budget.time,
        },
    )
    .await;
    let baseline = baseline::measure(&args.url, args.tasks, budget).await;

    let mut rows = Vec::new();
    if wanted("uncontended") {
        rows.push(Row {
            scenario: "uncontended",
            samples: scenarios::uncontended(&locks, budget).await,
        });
    }
    if wanted("throughput") {
        rows.push(Row {
            scenario: "throughput",
            samples: scenarios::throughput(&locks, args.tasks, budget).await,
        });
    }
    if wanted("handoff") {
        rows.push(Row {
            scenario: "handoff",
            samples: scenarios::handoff(&locks, args.waiters, budget).await,
        });
    }

    if args.json {
        for row in &mut rows {
            println!("{}", json(backend, row, &baseline));
        }
    } else {
        table(&args, backend, &mut rows, &baseline);
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "null".to_owned(),
    }
}

fn json(backend: &str, row: &mut Row, baseline: &Baseline) -> String {
    format!(
        "{{\"backend\":\"{backend}\",\"scenario\":\"{}\",\"samples\":{},\"p50_us\":{},\"p99_us\":{},\"ops_per_s\":{},\"baseline_rtt_us\":{},\"floor_rtt_us\":{},\"raw_cycles_per_s\":{},\"script_cycles_per_s\":{}}}",
        row.scenario,
        row.samples.len(),
        number(Some(row.samples.quantile_us(0.5))),
        number(Some(row.samples.quantile_us(0.99))),
        number(Some(row.samples.ops_per_s())),
        number(baseline.rtt_us),
        number(baseline.floor_rtt_us),
        number(baseline.raw_cycles_per_s),
        number(baseline.script_cycles_per_s),
    )
}

fn table(args: &Args, backend: &str, rows: &mut [Row], baseline: &Baseline) {
    println!(
        "pylock-bench: backend {backend}, {}, {} runtime thread(s), at most {} ops / {} s per scenario",
        pylock::url::redact_url(&args.url),
        args.threads,
        args.ops,
        args.seconds
    );
    if let (Some(rtt), Some(floor), Some(raw), Some(scripts)) = (
        baseline.rtt_us,
        baseline.floor_rtt_us,
        baseline.raw_cycles_per_s,
        baseline.script_cycles_per_s,
    ) {
        println!(
            "baselines: async PING p50 {rtt:.1} us | blocking-socket PING p50 {floor:.1} us\n\
             \x20          x{} tasks: bare SET NX PX + DEL {raw:.0} cycles/s | pylock's scripts alone {scripts:.0} cycles/s",
            args.tasks
        );
    }
    println!(
        "{:<12} {:>8} {:>10} {:>10} {:>12}   {}",
        "scenario", "samples", "p50_us", "p99_us", "ops_per_s", "compared with the baselines"
    );
    for row in rows {
        let p50 = row.samples.quantile_us(0.5);
        let p99 = row.samples.quantile_us(0.99);
        let ops = row.samples.ops_per_s();
        let comparison = match (row.scenario, baseline.rtt_us, baseline.raw_cycles_per_s) {
            ("uncontended", Some(rtt), _) => format!("p50 = {:.2} x async PING", p50 / rtt),
            ("throughput", _, Some(raw)) => format!("{:.2} x the bare loop", ops / raw),
            ("handoff", Some(rtt), _) => format!("p50 = {:.2} x async PING", p50 / rtt),
            _ => String::new(),
        };
        println!(
            "{:<12} {:>8} {:>10.1} {:>10.1} {:>12.0}   {comparison}",
            row.scenario,
            row.samples.len(),
            p50,
            p99,
            ops
        );
    }
}
