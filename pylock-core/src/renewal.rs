//! Auto-renewal: while a guard is held, a task extends its lock every third of the TTL.
//!
//! A renewal that finds another owner marks the hold lost at once. One that fails (server
//! unreachable) is retried more often, until the guard's validity runs out, when the hold
//! counts as lost. With a hold bound, renewals stop so that the lock ends at the bound.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::hold::{Hold, LostReason};

/// Never renew more often than this, whatever the TTL.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Keeps `hold` alive with extends of `ttl` until it is lost, released (the task is aborted)
/// or reaches `max_hold`.
pub(crate) async fn renew(hold: Arc<Hold>, ttl: Duration, max_hold: Option<Duration>) {
    let period = (ttl / 3).max(MIN_PERIOD);
    let mut pause = period;
    loop {
        tokio::time::sleep(pause).await;
        if hold.lost_reason().is_some() {
            return;
        }
        let mut next_ttl = ttl;
        if let Some(max_hold) = max_hold {
            let allowed = max_hold.saturating_sub(hold.acquired_at.elapsed());
            if allowed <= hold.remaining() {
                tracing::info!(
                    key = %hold.key,
                    max_hold_ms = max_hold.as_millis(),
                    "pylock: hold bound reached; renewals stop and the lock ends with its TTL"
                );
                return;
            }
            next_ttl = next_ttl.min(allowed);
        }
        match hold.extend(next_ttl).await {
            Ok(()) => pause = period,
            // Marked lost by `extend`.
            Err(Error::Lost { .. }) => return,
            Err(error) => {
                if hold.remaining().is_zero() {
                    tracing::warn!(key = %hold.key, %error, "pylock: renewals failed until the lock expired");
                    hold.mark_lost(LostReason::Expired);
                    return;
                }
                tracing::warn!(key = %hold.key, %error, "pylock: renewal failed, retrying");
                pause = (period / 4).max(MIN_PERIOD);
            }
        }
    }
}
