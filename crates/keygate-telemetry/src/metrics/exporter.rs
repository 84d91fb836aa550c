//! The Prometheus recorder and its scrape page (the `export` feature: only the binary needs it).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{PROVIDER_BUCKETS, PROVIDER_CALL_DURATION, RPC_BUCKETS, RPC_DURATION, describe};

/// Renders the scrape page of the installed recorder.
#[derive(Clone)]
pub struct MetricsHandle(PrometheusHandle);

impl MetricsHandle {
    /// The Prometheus text exposition (format 0.0.4) of every metric so far.
    pub fn render(&self) -> String {
        self.0.render()
    }

    /// Housekeeping of histogram buffers; [`MetricsHandle::spawn_upkeep`] runs it periodically.
    pub fn run_upkeep(&self) {
        self.0.run_upkeep();
    }

    /// Runs [`MetricsHandle::run_upkeep`] every 5 s on the current Tokio runtime, for ever.
    pub fn spawn_upkeep(&self) -> tokio::task::JoinHandle<()> {
        let h = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        })
    }
}

static HANDLE: OnceLock<MetricsHandle> = OnceLock::new();

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// Installs the global Prometheus recorder (once per process; later calls return the same
/// handle) and describes every metric.
pub fn install() -> Result<MetricsHandle, MetricsError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let err = |e: metrics_exporter_prometheus::BuildError| MetricsError(e.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RPC_DURATION.into()), RPC_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full(PROVIDER_CALL_DURATION.into()),
            PROVIDER_BUCKETS,
        )
        .map_err(err)?
        .install_recorder()
        .map_err(err)?;
    describe();
    let h = MetricsHandle(handle);
    Ok(HANDLE.get_or_init(|| h).clone())
}
