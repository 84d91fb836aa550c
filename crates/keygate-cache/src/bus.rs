//! The event doorbell. The event log in the store is the record; the bus only says "workspace W
//! has events up to seq N" so watchers re-read the log at once instead of on their next poll.
//! A lost ring costs latency, never an event.

use tokio::sync::broadcast;

/// A ring: new events exist in `workspace_id` up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub workspace_id: String,
    pub seq: i64,
}

/// In-process doorbell (the embedded default, and the local fan-out of a shared one).
#[derive(Clone)]
pub struct Doorbell {
    tx: broadcast::Sender<Ring>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    /// Rings for `workspace_id`; no listener is fine.
    pub fn ring(&self, workspace_id: String, seq: i64) {
        let _ = self.tx.send(Ring { workspace_id, seq });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ring> {
        self.tx.subscribe()
    }
}
