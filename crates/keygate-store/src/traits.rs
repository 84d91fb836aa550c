//! The storage traits. Each role has its own trait; `Store` composes them.

use async_trait::async_trait;
use keygate_domain::Error;
use keygate_domain::events::{Event, EventFilter, NewEvent};
use keygate_domain::grant::{AccessGrant, AccessMethod, ProvisionJob};
use keygate_domain::ids::{AccessGrantId, AccessMethodId, EventId, JobId};
use keygate_domain::ids::{AccessGroupId, AcsCredentialId, AcsUserId};
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

    /// The stored value of `key`, if any; stores nothing. (How a key that earlier versions
    /// kept here, such as the Instant Key secret, is found to be copied out.)
    async fn read_setting(&self, key: &str) -> Result<Option<String>, Error>;
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
    /// Stores a connected system under `id` with its entrances, groups and encoders, its
    /// settings and sealed credentials, and an `acs_system.connected` event, in one
    /// transaction. With `idem`, a replay of the same request answers the first system.
    async fn connect_access_system(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
        system: &NewAccessSystem,
        connection: &keygate_domain::model::SystemConnection,
        idem: Option<&Idempotency>,
    ) -> Result<AccessSystem, Error>;

    /// How a stored system is reached: settings and sealed credentials (none once disconnected).
    async fn access_system_connection(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<keygate_domain::model::SystemConnection, Error>;

    /// The system's own ids of its entrances, groups and encoders, removed ones included.
    async fn external_ids(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<keygate_domain::model::ExternalIds, Error>;

    /// Matches a fresh listing of the system against the record in one transaction (see
    /// [`keygate_domain::model::SyncReport`]), with the events it causes.
    async fn sync_access_system(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
        found: &NewAccessSystem,
        at: OffsetDateTime,
    ) -> Result<keygate_domain::model::SyncReport, Error>;

    /// Replaces the errors and warnings of a connected system, with `events`, in one
    /// transaction; a disconnected system is left as it is.
    async fn set_access_system_health(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
        errors: &[keygate_domain::grant::Notice],
        warnings: &[keygate_domain::grant::Notice],
        events: &[keygate_domain::events::NewEvent],
        at: OffsetDateTime,
    ) -> Result<(), Error>;

    /// Disconnects a system: drops its credentials, marks it `account_disconnected`, appends
    /// `acs_system.disconnected`. Disconnecting twice changes nothing.
    async fn disconnect_access_system(
        &self,
        workspace: WorkspaceId,
        id: AccessSystemId,
        at: OffsetDateTime,
    ) -> Result<(), Error>;

    /// Connected systems of every workspace not synced since `before`, oldest first.
    async fn systems_due_for_sync(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(WorkspaceId, AccessSystemId)>, Error>;

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

    /// Like `list_entrances`, only the entrances among `ids` (empty: every one), so a page is
    /// full. Ids not in the workspace are simply not listed.
    async fn list_entrances_by_id(
        &self,
        workspace: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EntranceId],
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

    /// Like `list_encoders`, only the encoders among `ids` (empty: every one).
    async fn list_encoders_by_id(
        &self,
        workspace: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[keygate_domain::ids::EncoderId],
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

    /// Deletes a person and their access in one transaction: every live access grant (and so
    /// every credential) deleted as `delete_access_grant` deletes one, with its revocation
    /// jobs; every Instant Key revoked; linked access system users unlinked; then
    /// `user_identity.deleted`. Returns what it took away and the events appended.
    async fn delete_user_identity(
        &self,
        workspace: WorkspaceId,
        id: UserIdentityId,
        now: OffsetDateTime,
    ) -> Result<(keygate_domain::model::IdentityDeleted, Vec<Event>), Error>;
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
    /// The grant's Instant Key (when a mobile key was requested) with the SHA-256 of its link token.
    pub instant_key: Option<(keygate_domain::instant_key::InstantKey, String)>,
}

/// Filters of `ListAccessGrants`.
#[derive(Clone, Debug, Default)]
pub struct GrantFilter {
    pub user_identity_id: Option<UserIdentityId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub acs_system_id: Option<AccessSystemId>,
    /// Only these grants; empty means any.
    pub access_grant_ids: Vec<AccessGrantId>,
    /// Only the grant with this key.
    pub access_grant_key: Option<String>,
    /// Only grants with this reservation key.
    pub reservation_key: Option<String>,
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

    /// Starts an action (an encoding, an unlock): the pending attempt and its job, in one
    /// transaction (with the idempotency claim). A replay returns the first attempt.
    async fn create_action_attempt(
        &self,
        workspace: WorkspaceId,
        attempt: &keygate_domain::action::ActionAttempt,
        job: &keygate_domain::action::JobWork,
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
    /// The fencing token of this claim: fresh on every claim of the job. The store acts on
    /// the job (completion, reschedule, fence check, lease renewal) only for the holder of the
    /// current token, so the task of a lost claim can neither call nor complete.
    pub lease_token: String,
    /// The W3C `traceparent` of the span that queued the job (the RPC, or the reconciler), when
    /// traces are exported: the job's span continues that trace.
    pub trace_context: Option<String>,
}

/// One claim: up to `limit` due jobs of one access system, leased to `owner` for `lease`.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    /// The claiming worker, for operators reading the jobs table.
    pub owner: &'a str,
    pub workspace_id: WorkspaceId,
    pub acs_system_id: AccessSystemId,
    pub limit: u32,
    pub lease: std::time::Duration,
}

/// An access system with due jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueSystem {
    pub workspace_id: WorkspaceId,
    pub acs_system_id: AccessSystemId,
    /// How many of its jobs are due (an upper bound of what a claim can get).
    pub due: u32,
}

/// What a claim returned.
#[derive(Debug, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    /// Jobs of the claim that could not be decoded and went to the `dead` state.
    pub dead: u32,
}

/// How long the queue has been waiting, for the queue metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueAge {
    /// When the oldest queued job was first queued.
    pub oldest_queued_at: Option<OffsetDateTime>,
    /// The earliest `run_at` of the queued jobs that are due: how far behind the workers are.
    pub oldest_due_at: Option<OffsetDateTime>,
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
    /// The (workspace, access system) pairs with due jobs (queued and due, or running with an
    /// expired lease), at most `limit`, the longest-waiting first. A worker claims per pair, as
    /// many as it can start at once, so one system's backlog never holds another's jobs.
    async fn due_systems(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<DueSystem>, Error>;

    /// Leases up to `claim.limit` due jobs of one access system to `claim.owner`, under one
    /// fresh fencing token, oldest first. A job waits while another job of the same credential
    /// (subject, system) holds a live lease. A job whose payload cannot be decoded is moved to
    /// the `dead` state (with the reason) instead of being returned, and counted in
    /// [`Claimed::dead`]; the rest of the claim is returned.
    async fn claim_jobs(&self, claim: &Claim<'_>, now: OffsetDateTime) -> Result<Claimed, Error>;

    /// Extends the lease of every job still held under `lease_token` to `until`; returns how
    /// many. A job claimed again by someone else (a new token) is not touched.
    async fn renew_leases(&self, lease_token: &str, until: OffsetDateTime) -> Result<u64, Error>;

    /// Moves a job that can never run (its access system is gone) to the `dead` state with
    /// `reason`. `Ok(false)` when the lease was lost.
    async fn bury_job(&self, job: &Job, reason: &str, now: OffsetDateTime) -> Result<bool, Error>;

    /// Whether `job`'s claim still holds its lease at `now`: checked just before each provider
    /// call, so a task whose lease ran out or was taken over never calls.
    async fn lease_valid(&self, job: &Job, now: OffsetDateTime) -> Result<bool, Error>;

    /// Applies a provider outcome (status transitions, events) and finishes the job, in one
    /// transaction. `Ok(None)` when the lease was lost to another worker: nothing is written.
    async fn complete_provision(
        &self,
        job: &Job,
        result: &ProvisionResult,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// Puts a job back in the queue for `run_at`. With `refund`, this attempt does not count
    /// against the retry budget (the call was never made, as while a circuit is open).
    /// `Ok(false)` when the lease was lost.
    async fn reschedule_job(
        &self,
        job: &Job,
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
        outcome: &Result<keygate_domain::action::EncodedCard, keygate_domain::action::AttemptError>,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// Writes `reason` on the doors of a provision job that are still pending (the access
    /// system could not be reached), so the API shows why they wait. Fenced like every write
    /// of a job; `false` when the lease was lost.
    async fn note_pending(
        &self,
        job: &Job,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Records that the provider's answer to a provision job was ambiguous (timeout, 5xx): its
    /// pending doors become `unknown`, with the reason, until the retry (idempotent by
    /// reference, so it doubles as the read-back) settles them. `Ok(false)` when the lease was lost.
    async fn mark_unknown(
        &self,
        job: &Job,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Records an unlock's outcome (the attempt, and `acs_entrance.unlocked` on success) and
    /// finishes the job. `Ok(None)` when the lease was lost.
    async fn complete_unlock(
        &self,
        job: &Job,
        outcome: &Result<(), keygate_domain::action::AttemptError>,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// Records that a revocation went through (doors revoked, events) and finishes the job.
    async fn complete_revoke(
        &self,
        job: &Job,
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

    /// The oldest queued job's queueing time, and the earliest due time of the queued jobs
    /// whose `run_at` has come (`now`).
    async fn queue_age(&self, now: OffsetDateTime) -> Result<QueueAge, Error>;
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

    /// Deletes events recorded before `before` (retention); returns how many. A cursor older
    /// than the oldest kept event resumes at the oldest kept one.
    async fn purge_events(&self, before: OffsetDateTime) -> Result<u64, Error>;

    /// The seq of the workspace's newest event (0 when none): where a live watch starts.
    async fn latest_event_seq(&self, workspace: WorkspaceId) -> Result<i64, Error>;

    /// The newest event seq of each of `workspaces` that has one, in one round trip: what the
    /// process's event tail polls to learn which watched workspaces moved.
    async fn latest_event_seqs(
        &self,
        workspaces: &[WorkspaceId],
    ) -> Result<Vec<(WorkspaceId, i64)>, Error> {
        let mut out = Vec::with_capacity(workspaces.len());
        for ws in workspaces {
            out.push((*ws, self.latest_event_seq(*ws).await?));
        }
        Ok(out)
    }
}

/// Instant Keys and the devices that claimed them.
#[async_trait]
pub trait InstantKeyStore: Send + Sync {
    /// Creates a key (with the idempotency claim, and `instant_key.created`). `token_sha256` is
    /// the SHA-256 of its link token, the only trace of the token kept. A replay returns the first key.
    async fn create_instant_key(
        &self,
        workspace: WorkspaceId,
        key: &keygate_domain::instant_key::InstantKey,
        token_sha256: &str,
        idempotency: Option<&Idempotency>,
    ) -> Result<(keygate_domain::instant_key::InstantKey, Vec<Event>), Error>;

    async fn get_instant_key(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::InstantKeyId,
    ) -> Result<keygate_domain::instant_key::InstantKey, Error>;

    /// The key whose link token hashes to `token_sha256`, in any workspace: how a link finds its
    /// key. Revoked and expired keys are returned too (the page says why they do not work).
    async fn find_instant_key(
        &self,
        token_sha256: &str,
    ) -> Result<Option<keygate_domain::instant_key::InstantKey>, Error>;

    async fn list_instant_keys(
        &self,
        workspace: WorkspaceId,
        user_identity: Option<UserIdentityId>,
        page: &PageRequest,
    ) -> Result<Page<keygate_domain::instant_key::InstantKey>, Error>;

    /// Revokes a key (idempotent: a revoked key is returned unchanged, with no event).
    async fn revoke_instant_key(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::InstantKeyId,
        now: OffsetDateTime,
    ) -> Result<(keygate_domain::instant_key::InstantKey, Vec<Event>), Error>;

    /// Claims the key for the device whose cookie hashes to `device_sha256`: `Ok(true)` when the
    /// device holds a claim now (new or earlier), `Ok(false)` when every claim is taken.
    async fn claim_instant_key(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::InstantKeyId,
        device_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Whether the device already holds a claim of the key.
    async fn has_claim(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::InstantKeyId,
        device_sha256: &str,
    ) -> Result<bool, Error>;
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

/// A webhook that may have events to fan out: enabled, with its cursor and subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCursor {
    pub workspace_id: WorkspaceId,
    pub webhook_id: keygate_domain::ids::WebhookId,
    /// The last event seq fanned out to it.
    pub cursor_seq: i64,
    /// Dotted types; empty means every type.
    pub event_types: Vec<String>,
}

/// One delivery row as stored: what happened to one event for one webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDeliveryRecord {
    pub event_seq: i64,
    pub event_id: EventId,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
}

/// Webhooks (`WebhookService`) and their deliveries (the delivery role's dispatcher).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Creates a webhook, with the idempotency claim in the same transaction. Its cursor starts
    /// at the workspace's newest event: it receives the events recorded after it. Returns the
    /// webhook and its signing secret; a replay returns the first webhook and its secret.
    async fn create_webhook(
        &self,
        workspace: WorkspaceId,
        new: &keygate_domain::webhook::NewWebhook,
        idempotency: Option<&Idempotency>,
    ) -> Result<(keygate_domain::webhook::Webhook, String), Error>;

    async fn get_webhook(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::WebhookId,
    ) -> Result<keygate_domain::webhook::Webhook, Error>;

    /// The signing secret of a webhook (for the replay of its create only).
    async fn webhook_secret(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::WebhookId,
    ) -> Result<String, Error>;

    /// Oldest first (ids are time-ordered); disabled webhooks included.
    async fn list_webhooks(
        &self,
        workspace: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<keygate_domain::webhook::Webhook>, Error>;

    /// Replaces the event types a webhook receives (empty: every type), keeping its URL, secret,
    /// cursor and deliveries already made. Events fanned out after this commits are chosen by
    /// the new types. Returns the webhook as it is now; `NOT_FOUND` for one not in the workspace.
    async fn update_webhook_event_types(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::WebhookId,
        event_types: &[String],
    ) -> Result<keygate_domain::webhook::Webhook, Error>;

    /// Deletes a webhook and every delivery of it not yet made.
    async fn delete_webhook(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::WebhookId,
    ) -> Result<(), Error>;

    /// Enabled webhooks whose workspace has events after their cursor, across workspaces.
    async fn webhooks_behind(&self, limit: u32) -> Result<Vec<WebhookCursor>, Error>;

    /// In one transaction, and only if the webhook is still enabled with its cursor at `from`:
    /// inserts a pending delivery due at `now` for each `(seq, event_id)` of `events` and moves
    /// the cursor to `to`. `Ok(false)` when the webhook moved on, was disabled or deleted, or
    /// its event types are no longer `c.event_types` (nothing is written): a crash or a concurrent dispatcher neither loses nor doubles a row.
    async fn fan_out_webhook(
        &self,
        cursor: &WebhookCursor,
        to: i64,
        events: &[(i64, EventId)],
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Leases up to `limit` due pending deliveries of enabled webhooks (or ones whose lease
    /// expired) and counts the attempt each is about to make.
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<keygate_domain::webhook::ClaimedDelivery>, Error>;

    /// Workspaces with due deliveries (pending, due, not leased, of enabled webhooks) and how
    /// many each has due, the one waiting longest first; at most `limit` workspaces. The
    /// dispatcher takes them in turns with [`Self::claim_workspace_deliveries`].
    async fn due_delivery_workspaces(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(WorkspaceId, u32)>, Error>;

    /// [`Self::claim_deliveries`] of one workspace's deliveries only.
    async fn claim_workspace_deliveries(
        &self,
        workspace: WorkspaceId,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<keygate_domain::webhook::ClaimedDelivery>, Error>;

    /// Records one attempt's outcome on the delivery and its webhook, in one transaction, under
    /// the claim's lease: success, a retry at `retry_at`, or failed for good. A failure when the
    /// webhook has had no success for `disable_after` disables it (its other pending deliveries
    /// fail) and appends `webhook.disabled`. Returns the events appended; `Ok(None)` when the
    /// lease was lost or the webhook deleted (nothing is written).
    async fn record_delivery_attempt(
        &self,
        delivery: &keygate_domain::webhook::ClaimedDelivery,
        outcome: &keygate_domain::webhook::AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// When the soonest pending delivery is due; `None` when there is none.
    async fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>, Error>;

    /// The webhook an event is about (`webhook.disabled`), by the event's seq; `None` for
    /// events about no webhook.
    async fn event_webhook_id(
        &self,
        workspace: WorkspaceId,
        seq: i64,
    ) -> Result<Option<keygate_domain::ids::WebhookId>, Error>;

    /// A webhook's delivery rows in event order, at most `limit` (for inspection and tests).
    async fn list_webhook_deliveries(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::WebhookId,
        limit: u32,
    ) -> Result<Vec<WebhookDeliveryRecord>, Error>;
}

/// Deliveries of Instant Key links by SMS or email (`DeliverInstantKey`, the delivery role's
/// sender). A delivery row is its own queue entry: created pending and due at once, leased by a
/// sender, finished sent or failed. Neither the link nor the message is stored.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records a pending delivery of a key of `workspace`, due now, with the idempotency claim,
    /// in one transaction. A replay returns the first delivery. NOT_FOUND when the key is not in
    /// the workspace.
    async fn create_key_delivery(
        &self,
        workspace: WorkspaceId,
        new: &keygate_domain::delivery::NewDelivery,
        idempotency: Option<&Idempotency>,
    ) -> Result<keygate_domain::delivery::Delivery, Error>;

    async fn get_key_delivery(
        &self,
        workspace: WorkspaceId,
        id: keygate_domain::ids::DeliveryId,
    ) -> Result<keygate_domain::delivery::Delivery, Error>;

    /// The deliveries of these keys, newest first, at most `per_key` of each.
    async fn key_deliveries(
        &self,
        workspace: WorkspaceId,
        keys: &[keygate_domain::ids::InstantKeyId],
        per_key: u32,
    ) -> Result<Vec<keygate_domain::delivery::Delivery>, Error>;

    /// Deliveries of one workspace (or of all), newest first, at most `limit`; with
    /// `outbox_only`, only those put in the outbox. For `keygate deliveries list` and `/outbox`.
    async fn recent_key_deliveries(
        &self,
        workspace: Option<WorkspaceId>,
        outbox_only: bool,
        limit: u32,
    ) -> Result<Vec<keygate_domain::delivery::Delivery>, Error>;

    /// Leases up to `limit` due pending deliveries of the channels this sender serves (or ones
    /// whose lease ran out) and counts the attempt each is about to make. Rows another sender is
    /// claiming are skipped (SKIP LOCKED on PostgreSQL), never waited for.
    async fn claim_key_deliveries(
        &self,
        sms: bool,
        email: bool,
        limit: u32,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<keygate_domain::delivery::DeliveryClaim>, Error>;

    /// Records one attempt's outcome under the claim's lease, in one transaction: sent (with
    /// `instant_key.delivered`), a retry, or failed (with `instant_key.delivery_failed`).
    /// Returns the events appended; `Ok(None)` when the lease was lost (nothing is written).
    async fn record_key_delivery(
        &self,
        claim: &keygate_domain::delivery::DeliveryClaim,
        outcome: &keygate_domain::delivery::Outcome,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Event>>, Error>;

    /// When the soonest pending delivery of these channels is due (or its lease runs out);
    /// `None` when there is none.
    async fn next_key_delivery_due(
        &self,
        sms: bool,
        email: bool,
    ) -> Result<Option<OffsetDateTime>, Error>;
}

/// Access system users, their access-group memberships and their credentials (the console flow
/// of seed 000). A credential is only a mapping onto the access grant that implements it; the
/// grant is written through `GrantStore`. Deleted users and credentials whose access method was
/// deleted are `NotFound` and left out of lists.
#[async_trait]
pub trait AcsUserStore: Send + Sync {
    /// Creates a user, with the idempotency claim in the same transaction: a replay returns the
    /// user created first. Its access system must be in the workspace (`NotFound` otherwise).
    async fn create_acs_user(
        &self,
        workspace: WorkspaceId,
        user: &keygate_domain::acs::AcsUser,
        idempotency: Option<&Idempotency>,
    ) -> Result<keygate_domain::acs::AcsUser, Error>;

    async fn get_acs_user(
        &self,
        workspace: WorkspaceId,
        id: AcsUserId,
    ) -> Result<keygate_domain::acs::AcsUser, Error>;

    /// Oldest first (ids are time-ordered).
    async fn list_acs_users(
        &self,
        workspace: WorkspaceId,
        filter: &keygate_domain::acs::AcsUserFilter,
        page: &PageRequest,
    ) -> Result<Page<keygate_domain::acs::AcsUser>, Error>;

    /// Marks a user deleted and drops its memberships. Its credentials are deleted first by the
    /// caller, through their grants.
    async fn delete_acs_user(
        &self,
        workspace: WorkspaceId,
        id: AcsUserId,
        now: OffsetDateTime,
    ) -> Result<(), Error>;

    /// Links a user to a user identity (both in the workspace). Linking it again to the same
    /// identity changes nothing; a user linked to another identity is refused
    /// (`ACS_USER_ALREADY_LINKED`).
    async fn link_acs_user(
        &self,
        workspace: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<(), Error>;

    /// Unlinks a user from a user identity (both in the workspace). A user linked to no identity
    /// changes nothing (a retry); one linked to another identity is refused
    /// (`ACS_USER_NOT_LINKED`, naming neither identity's data).
    async fn unlink_acs_user(
        &self,
        workspace: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<(), Error>;

    /// The users linked to each of these identities, as (identity, user) pairs in user order.
    async fn linked_acs_users(
        &self,
        workspace: WorkspaceId,
        identities: &[UserIdentityId],
    ) -> Result<Vec<(UserIdentityId, AcsUserId)>, Error>;

    /// One access group with its entrances.
    async fn get_access_group(
        &self,
        workspace: WorkspaceId,
        id: AccessGroupId,
    ) -> Result<AccessGroup, Error>;

    /// Makes the user a member of the group or not (idempotent both ways); returns the user.
    async fn set_access_group_member(
        &self,
        workspace: WorkspaceId,
        user: AcsUserId,
        group: AccessGroupId,
        member: bool,
        now: OffsetDateTime,
    ) -> Result<keygate_domain::acs::AcsUser, Error>;

    /// Records which grant implements a credential. A second credential for the same grant (a
    /// replay of its create) is not written: the first is returned.
    async fn create_acs_credential(
        &self,
        workspace: WorkspaceId,
        credential: &keygate_domain::acs::AcsCredential,
    ) -> Result<keygate_domain::acs::AcsCredential, Error>;

    async fn get_acs_credential(
        &self,
        workspace: WorkspaceId,
        id: AcsCredentialId,
    ) -> Result<keygate_domain::acs::AcsCredential, Error>;

    /// The credential a grant implements, if any (deleted ones included).
    async fn acs_credential_of_grant(
        &self,
        workspace: WorkspaceId,
        grant: AccessGrantId,
    ) -> Result<Option<keygate_domain::acs::AcsCredential>, Error>;

    /// Oldest first.
    async fn list_acs_credentials(
        &self,
        workspace: WorkspaceId,
        filter: &keygate_domain::acs::CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<keygate_domain::acs::AcsCredential>, Error>;

    /// Every credential of a user, deleted ones included: what deleting the user revokes.
    async fn all_acs_credentials_of(
        &self,
        workspace: WorkspaceId,
        user: AcsUserId,
    ) -> Result<Vec<keygate_domain::acs::AcsCredential>, Error>;
}

/// The whole store of record.
#[async_trait]
pub trait Store:
    SettingsStore
    + WorkspaceStore
    + ApiKeyStore
    + AccessSystemStore
    + UserIdentityStore
    + AcsUserStore
    + GrantStore
    + JobQueue
    + EventLog
    + IdempotencyStore
    + WebhookStore
    + InstantKeyStore
    + DeliveryStore
    + crate::vendor_events::VendorEventStore
{
    /// `postgres` or `sqlite`.
    fn backend_name(&self) -> &'static str;

    /// The store's connection pool, for the stores of other crates that keep their own tables in
    /// this database (the virtual systems' ledger in keygate-providers).
    fn pool(&self) -> crate::StorePool;

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
