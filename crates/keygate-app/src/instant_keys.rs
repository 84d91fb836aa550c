//! Instant Keys: a link (and its QR code) to a page that lists a person's doors and unlocks
//! them. Only the hash of a link's token is stored; the link is derived from the key id.

use keygate_domain::Error;
use keygate_domain::ids::{InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::{self, InstantKey};
use keygate_domain::model::now;
use keygate_domain::page::PageRequest;
use keygate_store::{GrantFilter, Idempotency};
use time::OffsetDateTime;

use crate::App;
use crate::tracker::Committed;

/// Most devices one key may be claimed by.
pub const MAX_USE_COUNT: i32 = 10;
/// Furthest `expires_at` a caller may ask for.
pub const MAX_LIFETIME: time::Duration = time::Duration::days(365);

/// A validated `GenerateInstantKey`.
#[derive(Clone, Debug)]
pub struct GenerateKey {
    pub idem: Option<Idempotency>,
    pub user_identity_id: UserIdentityId,
    /// 1 to [`MAX_USE_COUNT`].
    pub max_use_count: u32,
    /// `None`: when the person's last access ends, at most a default lifetime away.
    pub expires_at: Option<OffsetDateTime>,
}

impl App {
    /// Makes a new Instant Key for a person, or returns the first one on a replay. Returns the
    /// key and its link.
    pub async fn generate_instant_key(
        &self,
        ws: WorkspaceId,
        cmd: GenerateKey,
    ) -> Result<(InstantKey, String), Error> {
        let GenerateKey {
            idem,
            user_identity_id: user,
            max_use_count,
            expires_at,
        } = cmd;
        let at = now();
        self.store.get_user_identity(ws, user).await?;
        let expires_at = match expires_at {
            Some(t) => t,
            None => self.last_access_ends(ws, user, at).await?,
        };
        let key = InstantKey {
            id: InstantKeyId::new(),
            workspace_id: ws,
            user_identity_id: user,
            access_grant_id: None,
            created_at: at,
            expires_at: Some(expires_at),
            max_use_count,
            use_count: 0,
            revoked_at: None,
        };
        let (url, token_sha256) = self.links.mint(key.id)?;
        let (created, events) = self
            .store
            .create_instant_key(ws, &key, &token_sha256, idem.as_ref())
            .await?;
        self.tracker
            .committed(Committed::new(ws).events(&events))
            .await;
        let url = if created.id == key.id {
            url
        } else {
            self.links.url(created.id)?
        };
        Ok((created, url))
    }

    /// When the person's last access ends: the latest `ends_at` of their grants, at most
    /// [`instant_key::DEFAULT_LIFETIME`] away (open-ended access gets that).
    async fn last_access_ends(
        &self,
        ws: WorkspaceId,
        user: UserIdentityId,
        at: OffsetDateTime,
    ) -> Result<OffsetDateTime, Error> {
        let cap = at + instant_key::DEFAULT_LIFETIME;
        let grants = self
            .store
            .list_access_grants(
                ws,
                &GrantFilter {
                    user_identity_id: Some(user),
                    ..Default::default()
                },
                &PageRequest {
                    after: None,
                    limit: 500,
                },
            )
            .await?;
        let mut last = None;
        for g in grants.items {
            match g.ends_at {
                None => return Ok(cap),
                Some(e) if e > at => last = Some(last.map_or(e, |l: OffsetDateTime| l.max(e))),
                Some(_) => {}
            }
        }
        Ok(last.map_or(cap, |l| l.min(cap)))
    }
}
