//! Every call the orchestrator makes to an access system goes through [`call`]: one
//! `provider_call` span (a client span, child of the job's or the reconciler's span, around the
//! adapter's own spans) and the provider call metrics, both with the call's outcome.

use std::future::Future;
use std::time::{Duration, Instant};

use keygate_domain::action::AttemptError;
use keygate_domain::model::AccessSystem;
use keygate_providers::ProviderError;
use keygate_telemetry::metrics::ProviderOutcome;
use tokio::time::error::Elapsed;
use tracing::Instrument as _;

/// Runs one provider call `operation` (`provision`, `revoke`, `read_back`, `encode`, `unlock`) on
/// `system` with the call timeout. A timeout counts as ambiguous; `classify` sorts the rest.
pub(crate) async fn call<T, E>(
    system: &AccessSystem,
    operation: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
    classify: impl FnOnce(&Result<T, E>) -> ProviderOutcome,
) -> Result<Result<T, E>, Elapsed> {
    let span = tracing::info_span!(
        "provider_call",
        otel.name = %format!("{} {operation}", system.system_type),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        acs_system_id = %system.id,
        system_type = %system.system_type,
        operation,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let r = tokio::time::timeout(limit, fut)
        .instrument(span.clone())
        .await;
    let outcome = match &r {
        Ok(inner) => classify(inner),
        Err(_) => ProviderOutcome::Ambiguous,
    };
    span.record("outcome", outcome.as_str());
    if outcome != ProviderOutcome::Ok {
        span.record("otel.status_code", "ERROR");
    }
    keygate_telemetry::metrics::provider_call(
        &system.id.to_string(),
        &system.system_type,
        operation,
        outcome,
        started.elapsed(),
    );
    r
}

/// The outcome of a provision, revoke or read-back call.
pub(crate) fn outcome<T>(r: &Result<T, ProviderError>) -> ProviderOutcome {
    match r {
        Ok(_) => ProviderOutcome::Ok,
        Err(ProviderError::Transient(_)) => ProviderOutcome::Transient,
        Err(ProviderError::Ambiguous(_)) => ProviderOutcome::Ambiguous,
        Err(ProviderError::Permanent(_)) => ProviderOutcome::Permanent,
    }
}

/// The outcome of an encoding: a silent encoder is ambiguous, an offline one transient, any
/// other encoder fault (wrong card, card cannot be reissued, ...) permanent.
pub(crate) fn encode_outcome<T>(r: &Result<T, AttemptError>) -> ProviderOutcome {
    match r {
        Ok(_) => ProviderOutcome::Ok,
        Err(e) if e.error_type == "encoder_communication_timeout" => ProviderOutcome::Ambiguous,
        Err(e) if e.error_type == "encoder_not_online" => ProviderOutcome::Transient,
        Err(_) => ProviderOutcome::Permanent,
    }
}

/// The outcome of a remote unlock: a lock that does not answer is transient, a refusal or a
/// system that cannot unlock remotely permanent.
pub(crate) fn unlock_outcome<T>(r: &Result<T, AttemptError>) -> ProviderOutcome {
    match r {
        Ok(_) => ProviderOutcome::Ok,
        Err(e) if e.error_type == "lock_not_online" => ProviderOutcome::Transient,
        Err(_) => ProviderOutcome::Permanent,
    }
}
