//! `keygate.v1.AccessSystemService`: views of connected systems (`keygate_app::systems`),
//! connecting, syncing and disconnecting one (`keygate_app::connections`) and an operator's remote unlock of an entrance
//! (`keygate_app::unlock`).

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, access_system_service_server::AccessSystemService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct AccessSystems {
    pub app: App,
}

#[tonic::async_trait]
impl AccessSystemService for AccessSystems {
    #[tracing::instrument(skip_all)]
    async fn list_access_systems(
        &self,
        req: Request<v1::ListAccessSystemsRequest>,
    ) -> Reply<v1::ListAccessSystemsResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter = ["ListAccessSystems", r.external_type.as_str()];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let external_type =
                validate::filter_text("external_type", &r.external_type).map_err(|v| {
                    keygate_domain::Error::InvalidArgument {
                        violations: vec![v],
                    }
                })?;
            let found = self
                .app
                .list_access_systems(ws, external_type.as_deref(), &page)
                .await?;
            Ok(v1::ListAccessSystemsResponse {
                acs_systems: found.items.iter().map(convert::access_system).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_access_system(
        &self,
        req: Request<v1::GetAccessSystemRequest>,
    ) -> Reply<v1::GetAccessSystemResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "acs_system_id",
                &req.get_ref().acs_system_id,
                Resource::AccessSystem,
            )?;
            let s = self.app.get_access_system(ws, id).await?;
            Ok(v1::GetAccessSystemResponse {
                acs_system: Some(convert::access_system(&s)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_entrances(
        &self,
        req: Request<v1::ListEntrancesRequest>,
    ) -> Reply<v1::ListEntrancesResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter = ["ListEntrances", r.acs_system_id.as_str()];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let system =
                validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)?;
            let found = self.app.list_entrances(ws, system, &page).await?;
            Ok(v1::ListEntrancesResponse {
                acs_entrances: found.items.iter().map(convert::entrance).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_entrance(
        &self,
        req: Request<v1::GetEntranceRequest>,
    ) -> Reply<v1::GetEntranceResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "acs_entrance_id",
                &req.get_ref().acs_entrance_id,
                Resource::Entrance,
            )?;
            let e = self.app.get_entrance(ws, id).await?;
            Ok(v1::GetEntranceResponse {
                acs_entrance: Some(convert::entrance(&e)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_groups(
        &self,
        req: Request<v1::ListAccessGroupsRequest>,
    ) -> Reply<v1::ListAccessGroupsResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter = ["ListAccessGroups", r.acs_system_id.as_str()];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let system =
                validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)?;
            let found = self.app.list_access_groups(ws, system, &page).await?;
            Ok(v1::ListAccessGroupsResponse {
                acs_access_groups: found.items.iter().map(convert::access_group).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_encoders(
        &self,
        req: Request<v1::ListEncodersRequest>,
    ) -> Reply<v1::ListEncodersResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter = ["ListEncoders", r.acs_system_id.as_str()];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let system =
                validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)?;
            let found = self.app.list_encoders(ws, system, &page).await?;
            Ok(v1::ListEncodersResponse {
                acs_encoders: found.items.iter().map(convert::encoder).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn unlock_entrance(
        &self,
        req: Request<v1::UnlockEntranceRequest>,
    ) -> Reply<v1::UnlockEntranceResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let a = self.app.unlock_entrance(ws, cmd).await?;
            Ok(v1::UnlockEntranceResponse {
                action_attempt: Some(convert::action_attempt(&a)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn connect_access_system(
        &self,
        req: Request<v1::ConnectAccessSystemRequest>,
    ) -> Reply<v1::ConnectAccessSystemResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let s = self.app.connect_access_system(ws, cmd).await?;
            Ok(v1::ConnectAccessSystemResponse {
                acs_system: Some(convert::access_system(&s)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn sync_access_system(
        &self,
        req: Request<v1::SyncAccessSystemRequest>,
    ) -> Reply<v1::SyncAccessSystemResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "acs_system_id",
                &req.get_ref().acs_system_id,
                Resource::AccessSystem,
            )?;
            let (s, report) = self.app.sync_access_system(ws, id).await?;
            let ids =
                |v: &[keygate_domain::ids::EntranceId]| v.iter().map(ToString::to_string).collect();
            Ok(v1::SyncAccessSystemResponse {
                acs_system: Some(convert::access_system(&s)),
                added_acs_entrance_ids: ids(&report.entrances_added),
                removed_acs_entrance_ids: ids(&report.entrances_removed),
                restored_acs_entrance_ids: ids(&report.entrances_restored),
                warned_access_grant_ids: report
                    .grants_warned
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn disconnect_access_system(
        &self,
        req: Request<v1::DisconnectAccessSystemRequest>,
    ) -> Reply<v1::DisconnectAccessSystemResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "acs_system_id",
                &req.get_ref().acs_system_id,
                Resource::AccessSystem,
            )?;
            let s = self.app.disconnect_access_system(ws, id).await?;
            Ok(v1::DisconnectAccessSystemResponse {
                acs_system: Some(convert::access_system(&s)),
            })
        })
        .await
    }
}
