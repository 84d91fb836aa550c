//! Jobs carry the W3C trace context of the span that queued them (migration 9), on SQLite and on
//! the real PostgreSQL, and the queue reports its age for the metrics.

use std::sync::Arc;
use std::time::Duration;

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::model::now;
use keygate_store::Store;
use keygate_store::conformance::{
    ClaimDue as _, new_grant, prov, quick_start_entrances, seeded_workspace,
};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn sqlite() {
    let db = keygate_store::testdb::TestDb::sqlite().await;
    jobs_carry_the_trace_context_of_their_creator(db.store.clone()).await;
}

#[tokio::test]
async fn postgres() {
    let db = keygate_store::testdb::TestDb::postgres().await;
    jobs_carry_the_trace_context_of_their_creator(db.store.clone()).await;
}

async fn jobs_carry_the_trace_context_of_their_creator(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "trace").await;
    let doors = quick_start_entrances(&*store, ws).await;
    assert_eq!(store.queue_age(now()).await.ok(), Some(Default::default()));

    // No span with a context (no exporter): nothing is stored.
    let plain = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    store
        .create_access_grant(ws, &plain, None)
        .await
        .expect("create");

    // Inside a span that continues a caller's trace, as the gateway's RPC span does. The
    // current-thread runtime polls everything on this thread, where the subscriber is set.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let traced = new_grant(&*store, ws, &doors, &[AccessMethodMode::Card]).await;
    let rpc_context = {
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("rpc");
        keygate_telemetry::propagation::set_parent_from_traceparent(&span, CALLER);
        let _entered = span.enter();
        store
            .create_access_grant(ws, &traced, None)
            .await
            .expect("create");
        keygate_telemetry::propagation::current_traceparent().expect("span context")
    };

    let age = store.queue_age(now()).await.expect("age");
    assert!(
        age.oldest_queued_at.is_some() && age.oldest_due_at.is_some(),
        "{age:?}"
    );

    let jobs = store
        .claim_due("w", Duration::from_secs(30), now())
        .await
        .expect("claim");
    assert!(jobs.len() >= 2, "{jobs:?}");
    for j in &jobs {
        if prov(j).access_grant_id == traced.grant.id {
            assert_eq!(j.trace_context.as_deref(), Some(rpc_context.as_str()));
        } else {
            assert_eq!(j.trace_context, None);
        }
    }
    assert!(rpc_context.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(
        jobs.iter()
            .any(|j| j.trace_context.as_deref() == Some(rpc_context.as_str()))
    );
    // Everything claimed: nothing queued any more.
    assert_eq!(store.queue_age(now()).await.ok(), Some(Default::default()));
}
