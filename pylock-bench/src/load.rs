//! The bounds of every measurement and the loop that spreads one over tasks: each load loop
//! stops at whichever of its count and its time comes first.

use std::time::Duration;

use tokio::time::Instant;

use crate::stats::Samples;

/// Limits of one scenario: it stops at whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) operations: u64,
    pub(crate) time: Duration,
}

/// Runs `cycle(task, i)` over and over in `tasks` concurrent tasks, within `budget`, timing
/// each cycle.
pub(crate) async fn in_tasks<F, Fut>(tasks: usize, budget: Budget, cycle: F) -> Samples
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let per_task = budget.operations / tasks as u64;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let cycle = cycle.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                for i in 0..per_task {
                    let begun = Instant::now();
                    cycle(task, i).await;
                    samples.push(begun.elapsed());
                    samples.operations += 1;
                    if started.elapsed() > budget.time {
                        break;
                    }
                }
                samples
            })
        })
        .collect();
    Samples::of_tasks(handles, started).await
}
