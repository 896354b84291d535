//! CPU time per lock cycle, of the benchmark process and of the Redis server: on a machine
//! where client and server share the cores, which side runs out of CPU first is what sets
//! the throughput, and these figures say where the time goes.

use redis::aio::ConnectionManager;

/// CPU seconds used so far by this process and by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    client: Option<f64>,
    server: Option<f64>,
}

/// CPU microseconds per cycle between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PerCycle {
    pub(crate) client_us: Option<f64>,
    pub(crate) server_us: Option<f64>,
}

/// Reads this process's CPU time and, given a connection, the Redis server's.
pub(crate) async fn read(server: Option<&mut ConnectionManager>) -> Reading {
    let server = match server {
        Some(connection) => server_cpu(connection).await,
        None => None,
    };
    Reading {
        client: process_cpu(),
        server,
    }
}

impl Reading {
    /// The CPU time from `self` to `later`, per cycle of `cycles`.
    pub(crate) fn per_cycle(&self, later: &Reading, cycles: u64) -> PerCycle {
        let per = |from: Option<f64>, to: Option<f64>| match (from, to) {
            (Some(from), Some(to)) if cycles > 0 => Some((to - from) / cycles as f64 * 1e6),
            _ => None,
        };
        PerCycle {
            client_us: per(self.client, later.client),
            server_us: per(self.server, later.server),
        }
    }
}

/// CPU seconds of every thread of this process, from the scheduler's nanosecond counters
/// (`/proc/self/task/*/schedstat`, Linux); `None` elsewhere.
fn process_cpu() -> Option<f64> {
    let mut total_ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total_ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 / 1e9)
}

/// The server's `used_cpu_user` + `used_cpu_sys` (`INFO cpu`), in seconds.
async fn server_cpu(connection: &mut ConnectionManager) -> Option<f64> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(connection)
        .await
        .ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<f64>().ok())
    };
    Some(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}
