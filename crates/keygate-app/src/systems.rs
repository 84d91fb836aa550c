//! Connected access systems and what they hold (entrances, access groups, encoders): reads.
//! Systems are connected by the operator (`workspaces.rs`).

use keygate_domain::Error;
use keygate_domain::ids::{AccessGroupId, AccessSystemId, EncoderId, EntranceId, WorkspaceId};
use keygate_domain::model::{AccessGroup, AccessSystem, Encoder, Entrance};
use keygate_domain::page::{Page, PageRequest};

use crate::App;

impl App {
    /// Systems of the workspace, optionally of one `external_type` only.
    pub async fn list_access_systems(
        &self,
        ws: WorkspaceId,
        external_type: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<AccessSystem>, Error> {
        self.store
            .list_access_systems(ws, external_type, page)
            .await
    }

    pub async fn get_access_system(
        &self,
        ws: WorkspaceId,
        id: AccessSystemId,
    ) -> Result<AccessSystem, Error> {
        self.store.get_access_system(ws, id).await
    }

    /// Entrances of the workspace, optionally of one system only.
    pub async fn list_entrances(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Entrance>, Error> {
        self.store.list_entrances(ws, system, page).await
    }

    /// Like [`Self::list_entrances`], only the entrances among `ids` (empty: every one); the
    /// filter is the store's, so a page is full.
    pub async fn list_entrances_by_id(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[EntranceId],
        page: &PageRequest,
    ) -> Result<Page<Entrance>, Error> {
        self.store.list_entrances_by_id(ws, system, ids, page).await
    }

    pub async fn get_entrance(&self, ws: WorkspaceId, id: EntranceId) -> Result<Entrance, Error> {
        self.store.get_entrance(ws, id).await
    }

    /// Access groups of the workspace, optionally of one system only.
    pub async fn list_access_groups(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<AccessGroup>, Error> {
        self.store.list_access_groups(ws, system, page).await
    }

    /// Card encoders of the workspace, optionally of one system only.
    pub async fn list_encoders(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        page: &PageRequest,
    ) -> Result<Page<Encoder>, Error> {
        self.store.list_encoders(ws, system, page).await
    }

    /// Like [`Self::list_encoders`], only the encoders among `ids` (empty: every one).
    pub async fn list_encoders_by_id(
        &self,
        ws: WorkspaceId,
        system: Option<AccessSystemId>,
        ids: &[keygate_domain::ids::EncoderId],
        page: &PageRequest,
    ) -> Result<Page<Encoder>, Error> {
        self.store.list_encoders_by_id(ws, system, ids, page).await
    }

    /// One access group, with its entrances.
    pub async fn get_access_group(
        &self,
        ws: WorkspaceId,
        id: AccessGroupId,
    ) -> Result<AccessGroup, Error> {
        self.store.get_access_group(ws, id).await
    }

    /// One card encoder.
    pub async fn get_encoder(&self, ws: WorkspaceId, id: EncoderId) -> Result<Encoder, Error> {
        self.store.get_encoder(ws, id).await
    }
}
