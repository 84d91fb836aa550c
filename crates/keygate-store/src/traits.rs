//! The storage traits. Each role has its own trait; `Store` composes them.

use async_trait::async_trait;
use keygate_domain::Error;
use keygate_domain::events::{Event, EventFilter, NewEvent};
use keygate_domain::grant::{AccessGrant, AccessMethod, ProvisionJob};
use keygate_domain::ids::{AccessGrantId, AccessMethodId, EventId, JobId};
use keygate_domain::ids::{AccessSystemId, ApiKeyId, EntranceId, UserIdentityId, WorkspaceId};
use keygate_domain::model::{
    AccessGroup, AccessSystem, ApiKey, Encoder, Entrance, NewAccessSystem, NewUserIdentity,
    UserIdentity, UserIdentityFilter, UserIdentityPatch, Workspace,
};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::tracker::ProvisionResult;
use time::OffsetDateTime;

/// An idempotency claim for a create call: the caller's `request_id`, the operation, and a hash
/// of the request body (same id + same hash replays; same id + other hash is refused).
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub request_id: String,
    pub operation: &'static str,
    pub request_sha256: Vec<u8>,
}

/// Process-wide settings shared by all replicas (signing keys, the bootstrap marker).
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Returns the stored value of `key`, storing `init` first if there is none. Concurrent
    /// callers all get the one value that won.
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, Error>;
}

/// Workspaces (tenants).
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace, its first API key and its access systems in one transaction.
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        first_key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> Result<(), Error>;

    /// Creates the bootstrap sandbox exactly once per database: returns `Ok(None)` after creating
    /// it, or `Ok(Some(id))` with the workspace a previous start (or a concurrent replica) made.
    async fn bootstrap_workspace(
        &self,
        workspace: &Workspace,
        first_key: &ApiKey,
        systems: &[NewAccessSystem],
    ) -> Result<Option<WorkspaceId>, Error>;

    async fn get_workspace(&self, id: WorkspaceId) -> Result<Workspace, Error>;

    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>, Error>;
}

/// API keys. `find_api_key` is the one unscoped read: it is how a request finds its workspace.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), Error>;

    async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, Error>;

    async fn list_api_keys(
        &self,
        workspace: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error>;

    /// Revokes a key (idempotent: a second call keeps the first `revoked_at`).
    async fn revoke_api_key(
        &self,
        workspace: WorkspaceId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey, Error>;
}

/// Access systems and what they contain. Listing by system filter checks the system belongs to
/// the workspace, so a foreign system id is `NotFound`, not an empty list.
#[async_trait]
pub trait AccessSystemStore: Send + Sync {
    async fn connect_access_system(
        &self,
        workspace: WorkspaceId,
        system: &NewAccessSystem,
    ) -> Result<AccessSystem, Error>;

    async fn get_access_system(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<AccessSystem, Error>;

    async fn list_access_systems(
        &self,
        workspace: WorkspaceId,
        external_type: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<AccessSystem>, Error>;

    async fn get_entrance(&self, workspace: WorkspaceId, id: EntranceId)
    -> Result<Entrance, Error>;

    async fn list_entrances(
        &self,
        workspace: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Entrance>, Error>;

    async fn list_access_groups(
        &self,
        workspace: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<AccessGroup>, Error>;

    async fn list_encoders(
        &self,
        workspace: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Encoder>, Error>;

    /// The planner's view of these entrances (flags, system capabilities, covering groups), in
    /// the order given. An id that is not in the workspace is `NotFound`.
    async fn get_encoder(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::EncoderId,
    ) -> Result<Encoder, Error>;

    async fn planning_entrances(
        &self,
        workspace: WorkspaceId,
        ids: &[EntranceId],
    ) -> Result<Vec<keygate_domain::grant::PlanningEntrance>, Error>;
}

/// User identities.
#[async_trait]
pub trait UserIdentityStore: Send + Sync {
    /// Creates a user identity. With `idempotency`, the claim is made in the same transaction:
    /// a replay returns the identity created first.
    async fn create_user_identity(
        &self,
        workspace: WorkspaceId,
        id: UserIdentityId,
        new: &NewUserIdentity,
        idempotency: Option<&Idempotency>,
        now: OffsetDateTime,
    ) -> Result<UserIdentity, Error>;

    async fn get_user_identity(
        &self,
        workspace: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<UserIdentity, Error>;

    async fn list_user_identities(
        &self,
        workspace: WorkspaceId,
        filter: &UserIdentityFilter,
        page: &PageRequest,
    ) -> Result<Page<UserIdentity>, Error>;

    async fn update_user_identity(
        &self,
        workspace: WorkspaceId,
        id: UserIdentityId,
        patch: &UserIdentityPatch,
        now: OffsetDateTime,
    ) -> Result<UserIdentity, Error>;

    async fn delete_user_identity(
        &self,
        workspace: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<(), Error>;
}

/// Everything one `CreateAccessGrant` writes, in one transaction.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub grant: AccessGrant,
    /// Set when the person was given inline: created with `grant.user_identity_id`.
    pub new_identity: Option<NewUserIdentity>,
    /// The grant's entrances with their systems, in request order.
    pub entrances: Vec<(EntranceId, AccessSystemId)>,
    pub methods: Vec<AccessMethod>,
    pub jobs: Vec<ProvisionJob>,
    pub events: Vec<NewEvent>,
}

/// Filters of `ListAccessGrants`.
#[derive(Clone, Debug, Default)]
pub struct GrantFilter {
    pub user_identity_id: Option<UserIdentityId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub acs_system_id: Option<AccessSystemId>,
}

/// Filters of `ListAccessMethods`.
#[derive(Clone, Debug, Default)]
pub struct MethodFilter {
    pub access_grant_id: Option<AccessGrantId>,
    pub user_identity_id: Option<UserIdentityId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub acs_system_id: Option<AccessSystemId>,
}

/// Access grants and access methods.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Writes the grant, its methods, doors, jobs and events (and the inline user identity and
    /// idempotency claim) in one transaction. Returns the grant and whether it is new (false on
    /// an idempotent replay).
    async fn create_access_grant(
        &self,
        workspace: WorkspaceId,
        new: &NewGrant,
        idempotency: Option<&Idempotency>,
    ) -> Result<(AccessGrant, Vec<Event>), Error>;

    async fn get_access_grant(
        &self,
        workspace: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<AccessGrant, Error>;

    async fn list_access_grants(
        &self,
        workspace: WorkspaceId,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessGrant>, Error>;

    async fn get_access_method(
        &self,
        workspace: WorkspaceId,
        id: AccessMethodId,
    ) -> Result<AccessMethod, Error>;

    async fn list_access_methods(
        &self,
        workspace: WorkspaceId,
        filter: &MethodFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessMethod>, Error>;

    /// Starts an encoding: the pending attempt and its job, in one transaction (with the
    /// idempotency claim). A replay returns the first attempt.
    async fn create_encode_attempt(
        &self,
        workspace: WorkspaceId,
        attempt: &keygate_domain::action::ActionAttempt,
        job: &keygate_domain::action::EncodeJob,
        idempotency: Option<&Idempotency>,
    ) -> Result<keygate_domain::action::ActionAttempt, Error>;

    async fn get_action_attempt(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::ActionAttemptId,
    ) -> Result<keygate_domain::action::ActionAttempt, Error>;

    /// Deletes a grant and its methods: they vanish from reads now; a revocation job per
    /// (method, system) takes the access back. Returns the events appended.
    async fn delete_access_grant(
        &self,
        workspace: WorkspaceId,
        id: AccessGrantId,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, Error>;

    /// Deletes one method, as `delete_access_grant` does for all of a grant's.
    async fn delete_access_method(
        &self,
        workspace: WorkspaceId,
        id: AccessMethodId,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, Error>;

    /// A grant that is not deleted with its live methods, at one snapshot: what an update is
    /// planned from.
    async fn access_grant_with_methods(
        &self,
        workspace: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<(AccessGrant, Vec<AccessMethod>), Error>;

    /// Writes an update planned from `before` (as `access_grant_with_methods` returned it), in
    /// one transaction, after checking under the grant's lock that it has not changed since:
    /// `Aborted` when it has (plan again). Queued provisions of each (method, system) a new job
    /// covers are superseded. Returns the grant as it now is and the events appended.
    async fn update_access_grant(
        &self,
        workspace: WorkspaceId,
        before: &(AccessGrant, Vec<AccessMethod>),
        write: &keygate_domain::update::GrantWrite,
    ) -> Result<(AccessGrant, Vec<Event>), Error>;

    /// PIN codes of access methods that are not revoked on any of `entrances`.
    async fn active_codes(
        &self,
        workspace: WorkspaceId,
        entrances: &[EntranceId],
    ) -> Result<Vec<String>, Error>;
}

/// A leased orchestration job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub work: keygate_domain::action::JobWork,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// One access method's doors in one access system as the record has them: what the reconciler
/// compares with what the access system holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileItem {
    pub workspace_id: WorkspaceId,
    pub access_grant_id: AccessGrantId,
    pub access_method_id: AccessMethodId,
    pub acs_system_id: AccessSystemId,
    pub mode: keygate_domain::capability::AccessMethodMode,
    pub code: Option<String>,
    /// The method or its grant was deleted, or the grant ended: nothing should be held.
    pub gone: bool,
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
    pub doors: Vec<keygate_domain::grant::DoorStatus>,
}

/// The durable job queue of the orchestrator.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Leases up to `limit` due jobs (queued and due, or running with an expired lease) to `owner`.
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Job>, Error>;

    /// Applies a provider outcome (status transitions, events) and finishes the job, in one
    /// transaction. `Ok(None)` when the lease was lost to another worker: nothing is written.
    async fn complete_provision(
        &self,
        job: &Job,
        owner: &str,
        result: &ProvisionResult,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// Puts a job back in the queue for `run_at`. With `refund`, this attempt does not count
    /// against the retry budget (the call was never made, as while a circuit is open).
    /// `Ok(false)` when the lease was lost.
    async fn reschedule_job(
        &self,
        job: &Job,
        owner: &str,
        run_at: OffsetDateTime,
        error: &str,
        refund: bool,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Records an encoding outcome (the attempt's result, the card method issued, the event)
    /// and finishes the job, in one transaction. `Ok(None)` when the lease was lost.
    async fn complete_encode(
        &self,
        job: &Job,
        owner: &str,
        outcome: &Result<keygate_domain::action::EncodedCard, keygate_domain::action::AttemptError>,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// Records that the provider's answer to a provision job was ambiguous (timeout, 5xx): its
    /// pending doors become `unknown`, with the reason, until the retry (idempotent by
    /// reference, so it doubles as the read-back) settles them. `Ok(false)` when the lease was lost.
    async fn mark_unknown(
        &self,
        job: &Job,
        owner: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Records that a revocation went through (doors revoked, events) and finishes the job.
    async fn complete_revoke(
        &self,
        job: &Job,
        owner: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// A page of (method, system) pairs to reconcile, methods after `after` in id order, across
    /// workspaces. Pairs with a queued or running job are left out: that job settles them.
    async fn reconcile_page(
        &self,
        after: Option<AccessMethodId>,
        limit: u32,
    ) -> Result<Vec<ReconcileItem>, Error>;

    /// Queues `work` to repair `item` and marks its doors `lost` pending with `reason`, in one
    /// transaction, unless a job of the same (method, system) was queued meanwhile (then
    /// `Ok(false)` and nothing is written).
    async fn repair(
        &self,
        item: &ReconcileItem,
        lost: &[EntranceId],
        reason: &str,
        work: &keygate_domain::action::JobWork,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Marks up to `limit` grants whose `ends_at` has passed as expired and queues the
    /// revocation of all their access. Returns the workspaces touched.
    async fn expire_grants(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>, Error>;

    /// How many jobs are in `state` (`queued`, `running`, `done`, `dead`).
    async fn count_jobs(&self, state: &str) -> Result<i64, Error>;
}

/// The per-workspace event log. `seq` is the resume cursor.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn list_events(
        &self,
        workspace: WorkspaceId,
        filter: &EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, Error>;

    async fn get_event(&self, workspace: WorkspaceId, id: EventId) -> Result<Event, Error>;

    /// The seq of the workspace's newest event (0 when none): where a live watch starts.
    async fn latest_event_seq(&self, workspace: WorkspaceId) -> Result<i64, Error>;
}

/// The vendor-side state of the sandbox virtual access systems, kept in the store so it
/// survives restarts like a real vendor's would.
#[async_trait]
pub trait SandboxLedger: Send + Sync {
    /// Stores `credential`, or, when one exists for its (system, access method), gives it the new
    /// entrances and schedule while keeping its ids and code. Returns the one stored.
    async fn sandbox_credential(
        &self,
        credential: &keygate_domain::model::SandboxCredential,
    ) -> Result<keygate_domain::model::SandboxCredential, Error>;

    async fn find_sandbox_credential(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<Option<keygate_domain::model::SandboxCredential>, Error>;

    /// Removes a credential (revocation); removing one that is not there is fine.
    async fn delete_sandbox_credential(
        &self,
        system: AccessSystemId,
        method: AccessMethodId,
    ) -> Result<(), Error>;

    /// Credentials held by the sandbox systems of a workspace.
    async fn count_sandbox_credentials(&self, workspace: WorkspaceId) -> Result<i64, Error>;
}

/// Idempotency records, read outside a create.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Looks `idem` up: `Some(resource_id)` when the same request was made before, `None` when
    /// the key is unused; the same key with another body is ALREADY_EXISTS. Lets a replay return
    /// the first result even where validating the request again would now fail.
    async fn replay(
        &self,
        workspace: WorkspaceId,
        idem: &Idempotency,
    ) -> Result<Option<String>, Error>;
}

/// The whole store of record.
#[async_trait]
pub trait Store:
    SettingsStore
    + WorkspaceStore
    + ApiKeyStore
    + AccessSystemStore
    + UserIdentityStore
    + GrantStore
    + JobQueue
    + EventLog
    + SandboxLedger
    + IdempotencyStore
{
    /// `postgres` or `sqlite`.
    fn backend_name(&self) -> &'static str;

    /// Applies pending migrations; returns the schema version now in place.
    async fn migrate(&self) -> Result<i64, Error>;

    /// The highest applied migration, or 0 on an empty database.
    async fn schema_version(&self) -> Result<i64, Error>;

    /// Answers when the store can serve: one round trip.
    async fn ping(&self) -> Result<(), Error>;

    /// Deletes finished jobs last changed before `before`; returns how many.
    async fn purge_finished_jobs(&self, before: OffsetDateTime) -> Result<u64, Error>;

    /// Deletes idempotency records created before `before`; returns how many.
    async fn purge_idempotency(&self, before: OffsetDateTime) -> Result<u64, Error>;
}
