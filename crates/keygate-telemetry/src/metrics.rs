//! Prometheus metrics. Every metric Keygate records is declared here, one function each, so
//! names, labels and their values stay in one place (and in step with `docs/telemetry.md`).
//! Before [`install`] runs (unit tests, libraries used alone) every function is a no-op.
//!
//! Label values are bounded: methods are the served RPCs (anything else is `other`), codes the
//! 17 gRPC codes, outcomes and results short fixed lists. Access system ids are the one label that
//! grows with the data, by one per connected access system.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

pub const RPC_DURATION: &str = "keygate_rpc_duration_seconds";
pub const JOBS: &str = "keygate_jobs";
pub const JOBS_DEAD: &str = "keygate_jobs_dead_total";
pub const OLDEST_QUEUED_JOB_AGE: &str = "keygate_job_oldest_queued_age_seconds";
pub const JOB_QUEUE_LAG: &str = "keygate_job_queue_lag_seconds";
pub const PROVIDER_CALL_DURATION: &str = "keygate_provider_call_duration_seconds";
pub const PROVIDER_CALL_ERRORS: &str = "keygate_provider_call_errors_total";
pub const CACHE_REQUESTS: &str = "keygate_cache_requests_total";
pub const CACHE_UNSEALABLE: &str = "keygate_cache_unsealable_total";
pub const WEBHOOK_DELIVERIES: &str = "keygate_webhook_deliveries_total";
pub const LIMIT_REFUSALS: &str = "keygate_limit_refusals_total";
pub const RATE_LIMIT_FALLBACKS: &str = "keygate_rate_limit_fallbacks_total";
pub const CONCURRENCY_LIMIT: &str = "keygate_concurrency_limit";
pub const OVERLOAD_REFUSALS: &str = "keygate_overload_refusals_total";
pub const RECONCILE_PASSES: &str = "keygate_reconcile_passes_total";
pub const RECONCILE_CHECKED: &str = "keygate_reconcile_checked_total";
pub const RECONCILE_REPAIRED: &str = "keygate_reconcile_repaired_total";
pub const RECONCILE_UNREADABLE: &str = "keygate_reconcile_unreadable_total";

#[cfg(feature = "export")]
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
#[cfg(feature = "export")]
const PROVIDER_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[cfg(feature = "export")]
mod exporter;
#[cfg(feature = "export")]
pub use exporter::{MetricsError, MetricsHandle, install};

#[cfg(feature = "export")]
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "gRPC calls, from the request to the response head, by method and gRPC status code"
    );
    describe_gauge!(
        JOBS,
        "Orchestration jobs in the store by state (queued, running, dead), sampled every 5 s"
    );
    describe_counter!(
        JOBS_DEAD,
        "Jobs moved to the dead state (undecodable, or their access system is gone); each needs an operator"
    );
    describe_gauge!(
        OLDEST_QUEUED_JOB_AGE,
        Unit::Seconds,
        "Age of the oldest queued job (since it was queued first); 0 when none is queued"
    );
    describe_gauge!(
        JOB_QUEUE_LAG,
        Unit::Seconds,
        "How long the longest-waiting due job has waited past its run time; 0 when none waits"
    );
    describe_histogram!(
        PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "Calls to access systems by system, operation and outcome"
    );
    describe_counter!(
        PROVIDER_CALL_ERRORS,
        "Failed calls to access systems by system, operation and outcome (transient, ambiguous, permanent)"
    );
    describe_counter!(
        RATE_LIMIT_FALLBACKS,
        "Requests whose shared (Redis) rate limit could not be checked, limited by this replica's own buckets instead"
    );
    describe_counter!(
        CACHE_REQUESTS,
        "Cache look-ups by cache (status, api_key) and result (hit, negative_hit, miss, error)"
    );
    describe_counter!(
        CACHE_UNSEALABLE,
        "Sealed cache entries that failed to open (tampered, moved, or sealed with a key this server does not have) and were treated as misses, by reason"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by outcome (delivered, retry, failed)"
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "gRPC calls that may be in flight now: the adaptive limit of load shedding (its maximum is KEYGATE_MAX_IN_FLIGHT)"
    );
    describe_counter!(
        OVERLOAD_REFUSALS,
        "gRPC calls refused at once because the calls in flight were at the concurrency limit"
    );
    describe_counter!(
        LIMIT_REFUSALS,
        "Calls refused by an abuse limit (auth_failures, watch_streams, webhooks)"
    );
    describe_counter!(
        RECONCILE_PASSES,
        "Reconciliation passes by result (ok, failed)"
    );
    describe_counter!(
        RECONCILE_CHECKED,
        "(access method, access system) pairs compared with their access system"
    );
    describe_counter!(
        RECONCILE_REPAIRED,
        "Pairs found drifted, with a repair queued"
    );
    describe_counter!(
        RECONCILE_UNREADABLE,
        "Pairs whose access system could not be read back"
    );
}

/// One finished gRPC call. `method` is `package.Service/Method` (or `other`), `code` the
/// canonical gRPC code name (`OK`, `NOT_FOUND`, ...).
pub fn rpc(method: &str, code: &'static str, elapsed: Duration) {
    histogram!(RPC_DURATION, "method" => method.to_owned(), "code" => code)
        .record(elapsed.as_secs_f64());
}

/// How a call to an access system ended, as the orchestrator classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderOutcome {
    Ok,
    /// Nothing was applied; retried.
    Transient,
    /// Maybe applied (a timeout, a 5xx after sending); read back before a retry.
    Ambiguous,
    /// Refused for good.
    Permanent,
}

impl ProviderOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Transient => "transient",
            Self::Ambiguous => "ambiguous",
            Self::Permanent => "permanent",
        }
    }
}

/// One call to an access system: `operation` is `provision`, `revoke`, `read_back` or `encode`.
pub fn provider_call(
    acs_system_id: &str,
    system_type: &str,
    operation: &'static str,
    outcome: ProviderOutcome,
    elapsed: Duration,
) {
    let labels = [
        ("acs_system_id", acs_system_id.to_owned()),
        ("system_type", system_type.to_owned()),
        ("operation", operation.to_owned()),
        ("outcome", outcome.as_str().to_owned()),
    ];
    histogram!(PROVIDER_CALL_DURATION, &labels).record(elapsed.as_secs_f64());
    if outcome != ProviderOutcome::Ok {
        counter!(PROVIDER_CALL_ERRORS, &labels).increment(1);
    }
}

/// What a cache look-up found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    /// The cache remembers that the store has no such entry (unknown API key ids): the store
    /// was not read.
    NegativeHit,
    /// Not there (or there but undecodable): the store was read.
    Miss,
    /// The cache failed (Redis down or slow): the store was read.
    Error,
}

/// One cache look-up. `cache` is `status` (access grants and methods) or `api_key`.
pub fn cache_lookup(cache: &'static str, result: CacheResult) {
    let result = match result {
        CacheResult::Hit => "hit",
        CacheResult::NegativeHit => "negative_hit",
        CacheResult::Miss => "miss",
        CacheResult::Error => "error",
    };
    counter!(CACHE_REQUESTS, "cache" => cache, "result" => result).increment(1);
}

/// One sealed cache entry that did not open and was treated as a miss. `reason` is
/// `unknown_key` (its key id is none of the configured cache keys), `rejected` (the AEAD check
/// failed: tampered, moved to another key, or another key with the same id) or `malformed`.
pub fn cache_unsealable(reason: &'static str) {
    counter!(CACHE_UNSEALABLE, "reason" => reason).increment(1);
}

/// The outcomes [`webhook_delivery`] counts; anything else is counted as `other`.
pub const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "retry", "failed"];

/// One webhook delivery attempt, for the delivery role. `outcome` is `delivered` (a 2xx),
/// `retry` (failed, another attempt is scheduled) or `failed` (failed, no attempt left).
pub fn webhook_delivery(outcome: &str) {
    let outcome = WEBHOOK_OUTCOMES
        .iter()
        .find(|o| **o == outcome)
        .copied()
        .unwrap_or("other");
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// A request whose shared rate limit (Redis) could not be checked: this replica's own bucket
/// limited it instead.
pub fn rate_limit_fallback() {
    counter!(RATE_LIMIT_FALLBACKS).increment(1);
}

/// The adaptive concurrency limit of load shedding moved to `limit`.
pub fn concurrency_limit(limit: usize) {
    gauge!(CONCURRENCY_LIMIT).set(limit as f64);
}

/// A call refused by load shedding.
pub fn overload_refused() {
    counter!(OVERLOAD_REFUSALS).increment(1);
}

/// The limits [`limit_refused`] counts; anything else is counted as `other`.
pub const LIMITS: [&str; 3] = ["auth_failures", "watch_streams", "webhooks"];

/// A call refused by an abuse limit: `auth_failures` (a client with too many failed
/// authentications, refused before its credentials are read), `watch_streams` (a workspace's
/// concurrent `WatchEvents` streams) or `webhooks` (a workspace's webhooks, at create).
pub fn limit_refused(limit: &str) {
    let limit = LIMITS
        .iter()
        .find(|l| **l == limit)
        .copied()
        .unwrap_or("other");
    counter!(LIMIT_REFUSALS, "limit" => limit).increment(1);
}

/// One finished reconciliation pass (`None` when it failed before the end).
pub fn reconcile_pass(report: Option<(u64, u64, u64)>) {
    match report {
        Some((checked, repaired, unreadable)) => {
            counter!(RECONCILE_PASSES, "result" => "ok").increment(1);
            counter!(RECONCILE_CHECKED).increment(checked);
            counter!(RECONCILE_REPAIRED).increment(repaired);
            counter!(RECONCILE_UNREADABLE).increment(unreadable);
        }
        None => counter!(RECONCILE_PASSES, "result" => "failed").increment(1),
    }
}

/// A sample of the job queue: how many jobs are in `state`.
pub fn jobs(state: &'static str, count: i64) {
    // Counts fit an f64 exactly far beyond any queue length.
    gauge!(JOBS, "state" => state).set(count as f64);
}

/// Jobs moved to the `dead` state: undecodable, or their access system is gone. Each needs an
/// operator; nothing retries them.
pub fn jobs_dead(count: u64) {
    counter!(JOBS_DEAD).increment(count);
}

/// A sample of the age of the oldest queued job (0 when none is queued).
pub fn oldest_queued_job_age(age: Duration) {
    gauge!(OLDEST_QUEUED_JOB_AGE).set(age.as_secs_f64());
}

/// A sample of how long the longest-waiting due job has waited past its `run_at` (0 when no
/// queued job is due): grows when workers are down or cannot keep up.
pub fn job_queue_lag(lag: Duration) {
    gauge!(JOB_QUEUE_LAG).set(lag.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let h = install().expect("install");
        assert!(
            install().is_ok(),
            "a second install returns the same handle"
        );
        rpc(
            "keygate.v1.AccessGrantService/CreateAccessGrant",
            "OK",
            Duration::from_millis(3),
        );
        provider_call(
            "sys-1",
            "virtual_brivo",
            "provision",
            ProviderOutcome::Transient,
            Duration::from_millis(40),
        );
        cache_lookup("status", CacheResult::Hit);
        cache_unsealable("rejected");
        webhook_delivery("delivered");
        webhook_delivery("surprise");
        jobs("queued", 3);
        reconcile_pass(Some((4, 1, 0)));
        let page = h.render();
        for want in [
            "keygate_rpc_duration_seconds_bucket{method=\"keygate.v1.AccessGrantService/CreateAccessGrant\",code=\"OK\",le=\"0.005\"} 1",
            "keygate_provider_call_errors_total{acs_system_id=\"sys-1\",system_type=\"virtual_brivo\",operation=\"provision\",outcome=\"transient\"} 1",
            "keygate_provider_call_duration_seconds_count{acs_system_id=\"sys-1\",system_type=\"virtual_brivo\",operation=\"provision\",outcome=\"transient\"} 1",
            "keygate_cache_requests_total{cache=\"status\",result=\"hit\"} 1",
            "keygate_cache_unsealable_total{reason=\"rejected\"} 1",
            "keygate_webhook_deliveries_total{outcome=\"delivered\"} 1",
            "keygate_webhook_deliveries_total{outcome=\"other\"} 1",
            "keygate_jobs{state=\"queued\"} 3",
            "keygate_reconcile_checked_total 4",
        ] {
            assert!(page.contains(want), "missing {want} in\n{page}");
        }
    }
}
