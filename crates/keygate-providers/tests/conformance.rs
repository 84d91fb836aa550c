//! The provider conformance suite against the five sandbox virtual systems. The other adapters
//! (the gRPC connector, the vendor adapters) run the same scenarios with their own harness.

use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::model::AccessSystem;
use keygate_providers::conformance::{FaultClass, Harness};
use keygate_providers::virtual_system::{Fault, VirtualSystems};

/// The virtual systems' harness: faults through `VirtualSystems::inject`, credentials counted
/// in the in-memory ledger (one `VirtualSystems` per test, so the count is this test's).
struct Virtual(VirtualSystems);

#[async_trait]
impl Harness for Virtual {
    fn inject(&self, system: &AccessSystem, class: FaultClass) -> bool {
        let fault = match class {
            FaultClass::Transient => Fault::Unavailable,
            FaultClass::AmbiguousApplied => Fault::FailedButApplied,
            FaultClass::AmbiguousNotApplied => Fault::Timeout,
            FaultClass::Permanent => Fault::Refused,
        };
        self.0.inject(system.id, [fault]);
        true
    }

    async fn held_count(&self, _system: &AccessSystem) -> Option<usize> {
        Some(self.0.credential_count())
    }
}

fn setup() -> (VirtualSystems, Virtual) {
    let systems = VirtualSystems::new(Duration::ZERO);
    (systems.clone(), Virtual(systems))
}

macro_rules! suite {
    ($($ty:ident),* $(,)?) => {
        $(
            mod $ty {
                use super::*;
                use keygate_providers::conformance as c;

                const TYPE: &str = stringify!($ty);

                suite!(@scenarios
                    discover_is_consistent,
                    provision_is_idempotent,
                    revoke_is_idempotent,
                    unlock_follows_capabilities,
                    encode_follows_capabilities,
                    error_classes_are_honest,
                    declared_rate_limit_is_usable,
                );
            }
        )*
    };
    (@scenarios $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                let (provider, harness) = setup();
                c::$scenario(&provider, &harness, TYPE).await;
            }
        )*
    };
}

suite!(
    virtual_salto_ks,
    virtual_salto_space,
    virtual_visionline,
    virtual_latch,
    virtual_brivo,
);

/// Every type the adapter declares is covered above.
#[test]
fn every_virtual_type_is_in_the_suite() {
    use keygate_providers::AccessSystemProvider as _;
    let (provider, _) = setup();
    assert_eq!(
        provider.system_types(),
        [
            "virtual_salto_ks",
            "virtual_salto_space",
            "virtual_visionline",
            "virtual_latch",
            "virtual_brivo",
        ]
    );
}

/// The whole suite in one go through the registry, as the binary dispatches.
#[tokio::test]
async fn the_registry_passes_the_suite_for_every_type() {
    use std::sync::Arc;
    let (provider, harness) = setup();
    let mut registry = keygate_providers::Registry::new();
    registry.register(Arc::new(provider));
    for t in registry.types() {
        keygate_providers::conformance::run_all(&registry, &harness, &t).await;
    }
}
