//! Access methods: read, delete, encode a card; and the action attempts that follow
//! asynchronous actions.

use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus, EncodeJob, JobWork};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::AccessMethod;
use keygate_domain::ids::{AccessGrantId, AccessMethodId, ActionAttemptId, EncoderId, WorkspaceId};
use keygate_domain::model::now;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, ErrorReason};
use keygate_store::{Idempotency, MethodFilter};

use crate::App;
use crate::tracker::Committed;

/// A validated `EncodeAccessMethod`: write a card's credential with an encoder.
#[derive(Clone, Debug)]
pub struct EncodeCard {
    pub idem: Option<Idempotency>,
    pub access_method_id: AccessMethodId,
    pub acs_encoder_id: EncoderId,
}

impl App {
    /// A method by id, through the status cache.
    pub async fn get_access_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
    ) -> Result<AccessMethod, Error> {
        self.tracker.reads().access_method(ws, id).await
    }

    pub async fn list_access_methods(
        &self,
        ws: WorkspaceId,
        filter: &MethodFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessMethod>, Error> {
        self.store.list_access_methods(ws, filter, page).await
    }

    /// Deletes one method: `NOT_FOUND` at once, revoke jobs take the access back.
    pub async fn delete_access_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
    ) -> Result<(), Error> {
        let events = self.store.delete_access_method(ws, id, now()).await?;
        let grants: Vec<AccessGrantId> = events.iter().filter_map(|e| e.access_grant_id).collect();
        let mut done = Committed::new(ws).methods([id]).events(&events).jobs();
        for g in grants {
            done = done.grant(g);
        }
        self.tracker.committed(done).await;
        Ok(())
    }

    /// Starts encoding a card that waits for it (`access_method.card_encoding_required`) on an
    /// encoder of its access system; the orchestrator runs it and the attempt says how it went.
    /// A replay returns the first attempt, even though the card may no longer be waiting.
    pub async fn encode_access_method(
        &self,
        ws: WorkspaceId,
        cmd: EncodeCard,
    ) -> Result<ActionAttempt, Error> {
        let EncodeCard {
            idem,
            access_method_id: id,
            acs_encoder_id: encoder_id,
        } = cmd;
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await?
        {
            let first: ActionAttemptId = first.parse().map_err(|_| Error::Internal {
                message: "stored attempt id".into(),
            })?;
            return self.store.get_action_attempt(ws, first).await;
        }
        let method = self.store.get_access_method(ws, id).await?;
        let encoder = self.store.get_encoder(ws, encoder_id).await?;
        if method.mode != AccessMethodMode::Card || !method.is_ready_for_encoding {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::NotReadyForEncoding,
                message: "this access method is not a card ready for encoding (wait for access_method.card_encoding_required)".into(),
            });
        }
        if !method
            .doors
            .iter()
            .any(|d| d.acs_system_id == encoder.acs_system_id)
        {
            return Err(Error::invalid(
                "acs_encoder_id",
                "the encoder belongs to another access system than this card",
            ));
        }
        let attempt = ActionAttempt {
            id: ActionAttemptId::new(),
            workspace_id: ws,
            action_type: ActionType::EncodeCredential,
            status: AttemptStatus::Pending,
            access_method_id: Some(id),
            acs_encoder_id: Some(encoder_id),
            acs_entrance_id: None,
            result: None,
            error: None,
            created_at: now(),
            completed_at: None,
        };
        let job = EncodeJob {
            action_attempt_id: attempt.id,
            access_method_id: id,
            acs_system_id: encoder.acs_system_id,
            acs_encoder_id: encoder_id,
        };
        let stored = self
            .store
            .create_action_attempt(ws, &attempt, &JobWork::Encode(job), idem.as_ref())
            .await?;
        self.tracker.committed(Committed::new(ws).jobs()).await;
        Ok(stored)
    }

    pub async fn get_action_attempt(
        &self,
        ws: WorkspaceId,
        id: ActionAttemptId,
    ) -> Result<ActionAttempt, Error> {
        self.store.get_action_attempt(ws, id).await
    }
}
