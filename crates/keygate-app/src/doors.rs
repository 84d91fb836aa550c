//! What an Instant Key opens: the granted entrances of the person's mobile keys (of one grant,
//! or of every grant for a key generated for the user identity), with what each one can do.

use std::collections::HashMap;

use keygate_domain::Error;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::DoorState;
use keygate_domain::ids::{
    AccessGrantId, AccessMethodId, AccessSystemId, EntranceId, UserIdentityId, WorkspaceId,
};
use keygate_domain::model::AccessSystem;
use keygate_domain::page::PageRequest;
use keygate_store::{GrantFilter, MethodFilter, Store};
use time::OffsetDateTime;

use crate::App;

/// One door on the page.
#[derive(Clone, Debug)]
pub struct Door {
    pub entrance_id: EntranceId,
    /// The grant and the mobile key that give the person this door (the first, when several
    /// do): an unlock through the page is cancelled when either is deleted.
    pub access_grant_id: AccessGrantId,
    pub access_method_id: AccessMethodId,
    pub name: String,
    pub system: AccessSystem,
    /// The system can unlock it from here.
    pub remote: bool,
    /// A PIN of the same person that opens it, when there is one.
    pub code: Option<String>,
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
}

impl Door {
    /// Whether access to it is current at `now`.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|e| e > now)
    }
}

const ALL: PageRequest = PageRequest {
    after: None,
    limit: 500,
};

impl App {
    /// The doors of `user`'s mobile keys, of grant `grant` only when given.
    pub async fn person_doors(
        &self,
        ws: WorkspaceId,
        user: UserIdentityId,
        grant: Option<AccessGrantId>,
    ) -> Result<Vec<Door>, Error> {
        doors(&*self.store, ws, user, grant).await
    }
}

/// The doors of `user`'s mobile keys, of grant `grant` only when given.
pub async fn doors(
    store: &dyn Store,
    ws: WorkspaceId,
    user: UserIdentityId,
    grant: Option<AccessGrantId>,
) -> Result<Vec<Door>, Error> {
    let methods = store
        .list_access_methods(
            ws,
            &MethodFilter {
                access_grant_id: grant,
                user_identity_id: Some(user),
                ..Default::default()
            },
            &ALL,
        )
        .await?
        .items;
    let grants: HashMap<AccessGrantId, keygate_domain::grant::AccessGrant> = store
        .list_access_grants(
            ws,
            &GrantFilter {
                user_identity_id: Some(user),
                ..Default::default()
            },
            &ALL,
        )
        .await?
        .items
        .into_iter()
        .map(|g| (g.id, g))
        .collect();
    // PINs of the same person by entrance, for doors that cannot be unlocked from the page.
    let mut codes: HashMap<EntranceId, String> = HashMap::new();
    for m in methods.iter().filter(|m| m.mode == AccessMethodMode::Code) {
        if let Some(code) = &m.code {
            for d in m.doors.iter().filter(|d| d.state == DoorState::Granted) {
                codes.entry(d.entrance_id).or_insert_with(|| code.clone());
            }
        }
    }
    let mut systems: HashMap<AccessSystemId, AccessSystem> = HashMap::new();
    let mut out: Vec<Door> = Vec::new();
    for m in methods
        .iter()
        .filter(|m| m.mode == AccessMethodMode::MobileKey)
    {
        let Some(g) = grants.get(&m.access_grant_id) else {
            continue;
        };
        for d in m.doors.iter().filter(|d| d.state == DoorState::Granted) {
            if out.iter().any(|o| o.entrance_id == d.entrance_id) {
                continue;
            }
            let system = match systems.get(&d.acs_system_id) {
                Some(s) => s.clone(),
                None => {
                    let s = store.get_access_system(ws, d.acs_system_id).await?;
                    systems.insert(s.id, s.clone());
                    s
                }
            };
            let entrance = store.get_entrance(ws, d.entrance_id).await?;
            out.push(Door {
                entrance_id: d.entrance_id,
                access_grant_id: g.id,
                access_method_id: m.id,
                name: entrance.display_name,
                remote: system.capabilities.can_remote_unlock && entrance.can_unlock_with_cloud_key,
                code: codes.get(&d.entrance_id).cloned(),
                system,
                starts_at: g.starts_at,
                ends_at: g.ends_at,
            });
        }
    }
    Ok(out)
}
