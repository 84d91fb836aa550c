//! What follows a commit, in one place. After a use case (or a worker) has committed a change
//! to the store, it hands the [`Tracker`] a [`Committed`] note: which grants and methods
//! changed, the last event appended, and which workers have new work. The tracker then evicts
//! the cached status ([`crate::reads::StatusReads`] owns the keys) and the cached API keys
//! ([`crate::auth`] owns those), rings the event doorbell
//! (watchers and the webhook dispatcher wake) and wakes this process's orchestrator or
//! Instant Key sender. No other module evicts, rings or wakes.
//!
//! The events themselves are constructed by the domain's transition functions and appended by
//! the store in the same transaction as the change; the tracker only announces them.

use std::sync::Arc;

use keygate_cache::bus::Doorbell;
use keygate_domain::events::Event;
use keygate_domain::ids::{AccessGrantId, AccessMethodId, ApiKeyId, WorkspaceId};
use tokio::sync::Notify;

use crate::reads::StatusReads;

/// Announces commits: cache eviction, the event doorbell and worker wake-ups.
#[derive(Clone)]
pub struct Tracker {
    reads: StatusReads,
    doorbell: Doorbell,
    orchestrator: Arc<Notify>,
    sender: Arc<Notify>,
}

/// What one commit changed. Built with the `with_*` methods, handed to [`Tracker::committed`].
#[derive(Debug)]
#[must_use = "hand it to Tracker::committed"]
pub struct Committed {
    workspace: WorkspaceId,
    grants: Vec<AccessGrantId>,
    methods: Vec<AccessMethodId>,
    api_keys: Vec<ApiKeyId>,
    last_seq: Option<i64>,
    jobs: bool,
    deliveries: bool,
}

impl Committed {
    pub fn new(workspace: WorkspaceId) -> Self {
        Self {
            workspace,
            grants: Vec::new(),
            methods: Vec::new(),
            api_keys: Vec::new(),
            last_seq: None,
            jobs: false,
            deliveries: false,
        }
    }

    /// A grant whose cached status is now stale.
    pub fn grant(mut self, id: AccessGrantId) -> Self {
        self.grants.push(id);
        self
    }

    /// Methods whose cached status is now stale.
    pub fn methods(mut self, ids: impl IntoIterator<Item = AccessMethodId>) -> Self {
        self.methods.extend(ids);
        self
    }

    /// An API key whose record changed (created or revoked): its cached copy, or the cached
    /// absence of a key with its id, is now stale.
    pub fn api_key(mut self, id: ApiKeyId) -> Self {
        self.api_keys.push(id);
        self
    }

    /// Events appended by the commit: the doorbell rings with the last one's position.
    pub fn events(mut self, appended: &[Event]) -> Self {
        if let Some(last) = appended.last() {
            self.last_seq = Some(self.last_seq.map_or(last.seq, |s| s.max(last.seq)));
        }
        self
    }

    /// Events appended whose position is not known here (the doorbell rings all the same).
    pub fn some_events(mut self) -> Self {
        self.last_seq = Some(self.last_seq.unwrap_or(0));
        self
    }

    /// The commit queued orchestration jobs (provision, revoke, encode, unlock).
    pub fn jobs(mut self) -> Self {
        self.jobs = true;
        self
    }

    /// The commit queued Instant Key deliveries (SMS, email).
    pub fn deliveries(mut self) -> Self {
        self.deliveries = true;
        self
    }
}

impl Tracker {
    pub fn new(
        reads: StatusReads,
        doorbell: Doorbell,
        orchestrator: Arc<Notify>,
        sender: Arc<Notify>,
    ) -> Self {
        Self {
            reads,
            doorbell,
            orchestrator,
            sender,
        }
    }

    /// A tracker of its own: status reads over `store` and `cache`, an in-process doorbell and
    /// fresh bells (tests and tools that run one process).
    pub fn in_process(
        store: Arc<dyn keygate_store::Store>,
        cache: Arc<dyn keygate_cache::Cache>,
    ) -> Self {
        Self::new(
            StatusReads::new(store, cache),
            Doorbell::new(),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        )
    }

    /// The status reads whose cached copies this tracker evicts.
    pub fn reads(&self) -> &StatusReads {
        &self.reads
    }

    /// The doorbell, for those who wait on it (event watchers, the webhook dispatcher).
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// The bell this process's orchestrator waits on.
    pub fn orchestrator_bell(&self) -> Arc<Notify> {
        self.orchestrator.clone()
    }

    /// The bell this process's Instant Key sender waits on.
    pub fn sender_bell(&self) -> Arc<Notify> {
        self.sender.clone()
    }

    /// Announces a commit. Call it after the transaction committed, never before.
    pub async fn committed(&self, c: Committed) {
        if !c.grants.is_empty() || !c.methods.is_empty() {
            self.reads.evict(c.workspace, &c.grants, &c.methods).await;
        }
        for id in c.api_keys {
            crate::auth::evict_api_key(&**self.reads.cache(), id).await;
        }
        if let Some(seq) = c.last_seq {
            self.doorbell.ring(c.workspace.to_string(), seq);
        }
        if c.jobs {
            self.orchestrator.notify_one();
        }
        if c.deliveries {
            self.sender.notify_one();
        }
    }

    /// Wakes the orchestrator with nothing committed (the reconciler queued repairs).
    pub fn wake_orchestrator(&self) {
        self.orchestrator.notify_one();
    }
}
