//! A circuit breaker per access system: after a run of failures, stop calling the system for a
//! while so a broken vendor is not hammered and its jobs wait instead of burning their retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keygate_domain::ids::AccessSystemId;

pub struct Breakers {
    threshold: u32,
    open_for: Duration,
    state: Mutex<HashMap<AccessSystemId, (u32, Option<Instant>)>>,
}

impl Breakers {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(remaining)` while the breaker of `system` is open.
    pub fn open(&self, system: AccessSystemId) -> Option<Duration> {
        let Ok(state) = self.state.lock() else {
            return None;
        };
        let until = state.get(&system)?.1?;
        until.checked_duration_since(Instant::now())
    }

    pub fn success(&self, system: AccessSystemId) {
        if let Ok(mut state) = self.state.lock() {
            state.remove(&system);
        }
    }

    pub fn failure(&self, system: AccessSystemId) {
        if let Ok(mut state) = self.state.lock() {
            let entry = state.entry(system).or_insert((0, None));
            entry.0 += 1;
            if entry.0 >= self.threshold {
                entry.1 = Some(Instant::now() + self.open_for);
                entry.0 = 0;
                tracing::warn!(acs_system_id = %system, open_for_ms = self.open_for.as_millis() as u64, "circuit open");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_on_success() {
        let b = Breakers::new(2, Duration::from_secs(10));
        let s = AccessSystemId::new();
        b.failure(s);
        assert!(b.open(s).is_none());
        b.failure(s);
        assert!(b.open(s).is_some());
        b.success(s);
        assert!(b.open(s).is_none());
        assert!(b.open(AccessSystemId::new()).is_none(), "per system");
    }
}
