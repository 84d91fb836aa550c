//! What the webhook dispatcher and the Instant Key sender share: running a batch of leased rows
//! under a concurrency limit, and sleeping until the next row is due.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keygate_domain::Error;
use keygate_domain::model::now;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// Shortest wait between two looks at the queue.
pub(crate) const MIN_WAIT: Duration = Duration::from_millis(10);

/// Runs `attempt` for each claimed row on its own task, each holding one of `permits` until it
/// is done, so no more attempts run at once than there are permits.
pub(crate) async fn spawn_each<T, Fut>(
    permits: &Arc<Semaphore>,
    batch: Vec<T>,
    attempt: impl Fn(T) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    for row in batch {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let run = attempt(row);
        tokio::spawn(async move {
            run.await;
            drop(permit);
        });
    }
}

/// How long to sleep before the next look: until the next row is due (`next_due`, asked only
/// when a permit is free), between [`MIN_WAIT`] and `poll`; `poll` when every permit is busy or
/// the store could not tell.
pub(crate) async fn wait(
    permits: &Semaphore,
    next_due: impl Future<Output = Result<Option<OffsetDateTime>, Error>>,
    poll: Duration,
    what: &str,
) -> Duration {
    if permits.available_permits() == 0 {
        return poll;
    }
    match next_due.await {
        Ok(Some(at)) => Duration::try_from(at - now())
            .unwrap_or(Duration::ZERO)
            .clamp(MIN_WAIT, poll),
        Ok(None) => poll,
        Err(e) => {
            tracing::warn!(error = %e, "reading when the next {what} is due failed");
            poll
        }
    }
}
