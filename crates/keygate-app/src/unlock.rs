//! Remote unlock: the rules that allow one, for every way of asking (an Instant Key page, a
//! person's access method through `UnlockDoor`, an operator's `UnlockEntrance`), checked when it
//! is asked and again by the orchestrator just before the access system is called.
//!
//! An unlock is at most once and never late: it carries a deadline (`expires_at`, the request
//! time plus [`App::unlock_deadline`]); the orchestrator sends it only on its first claim, only
//! before the deadline, and only while [`still_allowed`] holds. Revoking an Instant Key, deleting
//! a grant, an access method or a person ends the unlocks they allowed that are still queued
//! (in the same transaction, in the store).

use std::time::Duration;

use keygate_domain::action::{
    ActionAttempt, ActionType, AttemptError, AttemptStatus, JobWork, UnlockJob, unlock_errors,
};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::DoorState;
use keygate_domain::ids::{AccessMethodId, ActionAttemptId, EntranceId, WorkspaceId};
use keygate_domain::instant_key::Inactive;
use keygate_domain::model::{AccessSystem, Entrance, now};
use keygate_domain::{Error, ErrorReason};
use keygate_store::{Idempotency, Store};
use time::OffsetDateTime;

use crate::App;
use crate::doors;
use crate::tracker::Committed;

/// How long an unlock may wait to be sent, from the request, unless configured
/// (`KEYGATE_UNLOCK_DEADLINE_SECS`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// `AccessMethodService.UnlockDoor`: unlock one entrance through a person's access method.
#[derive(Clone, Debug)]
pub struct UnlockDoor {
    pub idem: Option<Idempotency>,
    pub access_method_id: AccessMethodId,
    pub acs_entrance_id: EntranceId,
}

/// `AccessSystemService.UnlockEntrance`: an operator's remote unlock of one entrance.
#[derive(Clone, Debug)]
pub struct UnlockEntrance {
    pub idem: Option<Idempotency>,
    pub acs_entrance_id: EntranceId,
}

/// Why an unlock is not (or no longer) allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// What allowed it was revoked, deleted or has expired.
    Revoked(String),
    /// The grant's window is closed (not started, or ended), or access to the entrance is not
    /// granted (yet).
    WindowClosed(String),
    /// The entrance or its access system cannot be unlocked remotely, or the access method's
    /// mode cannot unlock.
    NotSupported(String),
}

impl Denied {
    /// As the typed error an unlock's action attempt ends with.
    pub fn attempt_error(&self) -> AttemptError {
        let (t, m) = match self {
            Self::Revoked(m) => (unlock_errors::ACCESS_REVOKED, m),
            Self::WindowClosed(m) => (unlock_errors::WINDOW_CLOSED, m),
            Self::NotSupported(m) => (unlock_errors::NOT_SUPPORTED, m),
        };
        AttemptError {
            error_type: t.into(),
            message: m.clone(),
        }
    }

    /// As the error of a request that asks for an unlock now.
    pub fn into_error(self) -> Error {
        let (reason, message) = match self {
            Self::Revoked(m) => (ErrorReason::ResourceInactive, m),
            Self::WindowClosed(m) => (ErrorReason::AccessWindowClosed, m),
            Self::NotSupported(m) => (ErrorReason::CapabilityNotSupported, m),
        };
        Error::FailedPrecondition { reason, message }
    }
}

/// Whether `system` and `entrance` can be unlocked remotely at all.
pub fn remotely_unlockable(system: &AccessSystem, entrance: &Entrance) -> Result<(), Denied> {
    if !system.capabilities.can_remote_unlock {
        return Err(Denied::NotSupported(format!(
            "access system {} cannot unlock entrances remotely",
            system.id
        )));
    }
    if !entrance.can_unlock_with_cloud_key {
        return Err(Denied::NotSupported(format!(
            "entrance {} cannot be unlocked remotely",
            entrance.id
        )));
    }
    Ok(())
}

/// What an access method may unlock: the entrance is one of its granted doors, its mode is a
/// mobile or cloud key, its grant's window is open and the entrance can be unlocked remotely.
/// A deleted method (or grant) is `Err(Error::NotFound)` from the store, which callers map.
async fn method_allows(
    store: &dyn Store,
    ws: WorkspaceId,
    method: AccessMethodId,
    entrance: EntranceId,
    at: OffsetDateTime,
) -> Result<Result<(AccessSystem, keygate_domain::grant::AccessMethod), Denied>, Error> {
    let m = store.get_access_method(ws, method).await?;
    if !matches!(
        m.mode,
        AccessMethodMode::CloudKey | AccessMethodMode::MobileKey
    ) {
        return Ok(Err(Denied::NotSupported(format!(
            "a {} access method cannot unlock doors remotely (use a cloud_key or mobile_key)",
            m.mode.display_name()
        ))));
    }
    let Some(door) = m.doors.iter().find(|d| d.entrance_id == entrance) else {
        return Err(Error::not_found(
            keygate_domain::Resource::Entrance,
            entrance.to_string(),
        ));
    };
    if door.state != DoorState::Granted {
        return Ok(Err(Denied::WindowClosed(format!(
            "access to entrance {entrance} is not granted to this access method (its state is {:?})",
            door.state
        ))));
    }
    let grant = store.get_access_grant(ws, m.access_grant_id).await?;
    if grant.starts_at > at || grant.ends_at.is_some_and(|e| e <= at) {
        return Ok(Err(Denied::WindowClosed(
            "the access grant's window is not open now".into(),
        )));
    }
    let system = store.get_access_system(ws, door.acs_system_id).await?;
    let e = store.get_entrance(ws, entrance).await?;
    if let Err(d) = remotely_unlockable(&system, &e) {
        return Ok(Err(d));
    }
    Ok(Ok((system, m)))
}

/// Checks again, just before the access system is called, that what allowed `u` still does:
/// the Instant Key is neither revoked nor expired, the person, grant and access method exist,
/// the door is still one of theirs and granted, the window is open, and the entrance can still
/// be unlocked remotely. `Err` is the typed error the attempt ends with; a store failure fails
/// closed (`access_check_failed`).
pub async fn still_allowed(
    store: &dyn Store,
    ws: WorkspaceId,
    u: &UnlockJob,
    at: OffsetDateTime,
) -> Result<(), AttemptError> {
    match check(store, ws, u, at).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(d)) => Err(d.attempt_error()),
        Err(Error::NotFound { .. }) => Err(Denied::Revoked(
            "what allowed this unlock (person, grant, access method, Instant Key or entrance) no longer exists".into(),
        )
        .attempt_error()),
        Err(e) => {
            tracing::warn!(error = %e, "could not check whether the unlock is still allowed: not sending it");
            Err(AttemptError {
                error_type: unlock_errors::CHECK_FAILED.into(),
                message: "whether this unlock is still allowed could not be checked; it was not sent"
                    .into(),
            })
        }
    }
}

async fn check(
    store: &dyn Store,
    ws: WorkspaceId,
    u: &UnlockJob,
    at: OffsetDateTime,
) -> Result<Result<(), Denied>, Error> {
    if let Some(k) = u.instant_key_id {
        let key = store.get_instant_key(ws, k).await?;
        if let Err(why) = key.check(at, true) {
            let why = match why {
                Inactive::Revoked => "revoked",
                Inactive::Expired => "expired",
                Inactive::Exhausted => "used up",
            };
            return Ok(Err(Denied::Revoked(format!("the Instant Key is {why}"))));
        }
    }
    if let Some(p) = u.user_identity_id {
        store.get_user_identity(ws, p).await?;
    }
    if let Some(m) = u.access_method_id {
        return Ok(method_allows(store, ws, m, u.acs_entrance_id, at)
            .await?
            .map(|_| ()));
    }
    match u.user_identity_id {
        // From an Instant Key page: the door must still be one of the person's (of the grant
        // the unlock came through, when it names one).
        Some(p) => {
            let doors = doors::doors(store, ws, p, u.access_grant_id).await?;
            let Some(door) = doors.iter().find(|d| d.entrance_id == u.acs_entrance_id) else {
                return Ok(Err(Denied::Revoked(
                    "the entrance is no longer one of the person's doors".into(),
                )));
            };
            if !door.remote {
                return Ok(Err(Denied::NotSupported(
                    "the entrance cannot be unlocked remotely".into(),
                )));
            }
            if !door.active(at) {
                return Ok(Err(Denied::WindowClosed(
                    "the access grant's window is not open now".into(),
                )));
            }
            Ok(Ok(()))
        }
        // An operator's unlock: the entrance and its system must still allow it.
        None => {
            let system = store.get_access_system(ws, u.acs_system_id).await?;
            let e = store.get_entrance(ws, u.acs_entrance_id).await?;
            Ok(remotely_unlockable(&system, &e))
        }
    }
}

impl App {
    /// The deadline of an unlock requested now.
    pub(crate) fn unlock_expires_at(&self) -> OffsetDateTime {
        now() + self.unlock_deadline
    }

    /// Unlocks one entrance through a person's access method (a cloud or mobile key): checks
    /// that the method opens it now, then queues the unlock with its deadline and answers with
    /// the pending action attempt (`UNLOCK_DOOR`). Idempotent by `request_id`: a replay answers
    /// the first attempt and queues nothing.
    pub async fn unlock_door(
        &self,
        ws: WorkspaceId,
        cmd: UnlockDoor,
    ) -> Result<ActionAttempt, Error> {
        let UnlockDoor {
            idem,
            access_method_id,
            acs_entrance_id,
        } = cmd;
        if let Some(first) = self.replayed_attempt(ws, idem.as_ref()).await? {
            return Ok(first);
        }
        let (system, m) = method_allows(&*self.store, ws, access_method_id, acs_entrance_id, now())
            .await?
            .map_err(Denied::into_error)?;
        let job = UnlockJob {
            action_attempt_id: ActionAttemptId::new(),
            acs_system_id: system.id,
            acs_entrance_id,
            user_identity_id: Some(m.user_identity_id),
            instant_key_id: None,
            access_grant_id: Some(m.access_grant_id),
            access_method_id: Some(access_method_id),
            expires_at: Some(self.unlock_expires_at()),
        };
        self.queue_unlock(ws, job, idem.as_ref()).await
    }

    /// An operator's remote unlock of one entrance of the workspace's access systems: checks
    /// that the entrance can be unlocked remotely, then queues it with its deadline.
    /// Idempotent by `request_id`.
    pub async fn unlock_entrance(
        &self,
        ws: WorkspaceId,
        cmd: UnlockEntrance,
    ) -> Result<ActionAttempt, Error> {
        let UnlockEntrance {
            idem,
            acs_entrance_id,
        } = cmd;
        if let Some(first) = self.replayed_attempt(ws, idem.as_ref()).await? {
            return Ok(first);
        }
        let e = self.store.get_entrance(ws, acs_entrance_id).await?;
        let system = self.store.get_access_system(ws, e.acs_system_id).await?;
        remotely_unlockable(&system, &e).map_err(Denied::into_error)?;
        let job = UnlockJob {
            action_attempt_id: ActionAttemptId::new(),
            acs_system_id: system.id,
            acs_entrance_id,
            user_identity_id: None,
            instant_key_id: None,
            access_grant_id: None,
            access_method_id: None,
            expires_at: Some(self.unlock_expires_at()),
        };
        self.queue_unlock(ws, job, idem.as_ref()).await
    }

    async fn replayed_attempt(
        &self,
        ws: WorkspaceId,
        idem: Option<&Idempotency>,
    ) -> Result<Option<ActionAttempt>, Error> {
        let Some(idem) = idem else { return Ok(None) };
        let Some(first) = self.store.replay(ws, idem).await? else {
            return Ok(None);
        };
        let first: ActionAttemptId = first.parse().map_err(|_| Error::Internal {
            message: "stored attempt id".into(),
        })?;
        Ok(Some(self.store.get_action_attempt(ws, first).await?))
    }

    /// Writes the attempt and its job in one transaction and wakes the orchestrator.
    pub(crate) async fn queue_unlock(
        &self,
        ws: WorkspaceId,
        job: UnlockJob,
        idem: Option<&Idempotency>,
    ) -> Result<ActionAttempt, Error> {
        let attempt = ActionAttempt {
            id: job.action_attempt_id,
            workspace_id: ws,
            action_type: ActionType::UnlockDoor,
            status: AttemptStatus::Pending,
            access_method_id: job.access_method_id,
            acs_encoder_id: None,
            acs_entrance_id: Some(job.acs_entrance_id),
            result: None,
            error: None,
            created_at: now(),
            completed_at: None,
        };
        let entrance = job.acs_entrance_id;
        let stored = self
            .store
            .create_action_attempt(ws, &attempt, &JobWork::Unlock(job), idem)
            .await?;
        self.tracker.committed(Committed::new(ws).jobs()).await;
        tracing::info!(action_attempt_id = %stored.id, acs_entrance_id = %entrance, "unlock requested");
        Ok(stored)
    }
}
