//! The application as the tests build it: over a store, with an in-process cache, doorbell and
//! bells, fixed link and page-token secrets, no SMS or email sender.

use std::sync::Arc;
use std::time::Duration;

use keygate_app::App;
use keygate_app::ssrf::NetworkPolicy;
use keygate_app::tokens::PageTokens;
use keygate_app::tracker::Tracker;
use keygate_domain::instant_key::Links;
use keygate_providers::Registry;
use keygate_providers::virtual_system::VirtualSystems;
use keygate_store::Store;

pub fn app(store: Arc<dyn Store>, webhook_network: NetworkPolicy) -> App {
    let tracker = Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(1_000)),
    );
    let links = Links::new("http://keygate.test");
    links.set_secret(vec![5; 32]);
    let mut providers = Registry::new();
    providers.register(Arc::new(VirtualSystems::new(Duration::ZERO)));
    App {
        webhook_network,
        ..App::new(
            store,
            tracker,
            links,
            PageTokens::new(vec![6; 32]),
            providers,
        )
    }
}
