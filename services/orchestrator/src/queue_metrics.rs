//! Samples the job queue for the metrics: jobs by state, the age of the oldest queued job and
//! how far the workers are behind. Every orchestrator samples the same shared queue, so with
//! several replicas take `max` across them, not `sum`.

use std::sync::Arc;
use std::time::Duration;

use keygate_domain::model::now;
use keygate_store::Store;
use tokio::sync::watch;

/// The states sampled (`done` jobs are history, kept a week, and not counted).
const STATES: [&str; 3] = ["queued", "running", "dead"];

/// Samples every `every` until `stop` turns true. A failed sample leaves the last values.
pub async fn sample_queue(store: Arc<dyn Store>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        }
        sample(&*store).await;
    }
}

/// Takes one sample.
pub async fn sample(store: &dyn Store) {
    for state in STATES {
        match store.count_jobs(state).await {
            Ok(n) => keygate_telemetry::metrics::jobs(state, n),
            Err(e) => tracing::debug!(error = %e, state, "could not count jobs"),
        }
    }
    let t = now();
    match store.queue_age(t).await {
        Ok(age) => {
            let since = |at: Option<time::OffsetDateTime>| {
                at.map_or(Duration::ZERO, |at| {
                    Duration::try_from(t - at).unwrap_or(Duration::ZERO)
                })
            };
            keygate_telemetry::metrics::oldest_queued_job_age(since(age.oldest_queued_at));
            keygate_telemetry::metrics::job_queue_lag(since(age.oldest_due_at));
        }
        Err(e) => tracing::debug!(error = %e, "could not read the queue's age"),
    }
}
