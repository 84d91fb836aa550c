//! Each access system's published request limit (its capability descriptor's `rate_limit`),
//! enforced before every provider call: a worker waits for a token rather than earn a 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use keygate_domain::ids::AccessSystemId;
use keygate_domain::model::AccessSystem;
use keygate_domain::rate::TokenBucket;

#[derive(Default)]
pub struct VendorLimits {
    buckets: Mutex<HashMap<AccessSystemId, TokenBucket>>,
}

impl VendorLimits {
    /// Waits until `system` may be called once more.
    pub async fn acquire(&self, system: &AccessSystem) {
        loop {
            let now = Instant::now();
            let r = match self.buckets.lock() {
                Ok(mut b) => {
                    let limit = &system.capabilities.rate_limit;
                    b.entry(system.id)
                        .or_insert_with(|| {
                            TokenBucket::new(limit.requests_per_second, limit.burst, now)
                        })
                        .take(now)
                }
                Err(_) => Ok(()),
            };
            match r {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}
