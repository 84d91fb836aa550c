//! Operator (`keygate.admin.v1.WorkspaceService`) requests, whose workspace is a field of the
//! request parsed with the command; and the tenant's own `ConnectAccessSystem`
//! (`keygate.v1.AccessSystemService`), whose workspace is the caller's.

use keygate_app::workspaces::{self, ConnectSystem, CreateApiKey, CreateWorkspace};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::model::WorkspaceType;
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::{admin, v1};

use super::{IntoCommand, claim};

impl IntoCommand for admin::CreateWorkspaceRequest {
    type Command = CreateWorkspace;

    fn into_command(self) -> Result<CreateWorkspace, Error> {
        let admin::CreateWorkspaceRequest {
            name,
            workspace_type,
            api_key_name,
        } = self;
        let mut v = Violations::default();
        let name = v.check(validate::name("name", &name));
        let kind = match admin::WorkspaceType::try_from(workspace_type) {
            Ok(admin::WorkspaceType::Sandbox) => Some(WorkspaceType::Sandbox),
            Ok(admin::WorkspaceType::Production) => Some(WorkspaceType::Production),
            _ => v.check(Err(FieldViolation::new(
                "workspace_type",
                "must be WORKSPACE_TYPE_SANDBOX or WORKSPACE_TYPE_PRODUCTION",
            ))),
        };
        let api_key_name = if api_key_name.trim().is_empty() {
            None
        } else {
            v.check(validate::name("api_key_name", &api_key_name))
        };
        v.finish()?;
        let (Some(name), Some(workspace_type)) = (name, kind) else {
            return Err(Error::Internal {
                message: "validated fields missing".into(),
            });
        };
        Ok(CreateWorkspace {
            name,
            workspace_type,
            api_key_name,
        })
    }
}

impl IntoCommand for admin::CreateApiKeyRequest {
    type Command = (WorkspaceId, CreateApiKey);

    fn into_command(self) -> Result<(WorkspaceId, CreateApiKey), Error> {
        let admin::CreateApiKeyRequest { workspace_id, name } = self;
        let ws = validate::id("workspace_id", &workspace_id, Resource::Workspace)?;
        let name = validate::name("name", &name).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        Ok((ws, CreateApiKey { name }))
    }
}

impl IntoCommand for admin::ConnectAccessSystemRequest {
    type Command = (WorkspaceId, ConnectSystem);

    fn into_command(self) -> Result<(WorkspaceId, ConnectSystem), Error> {
        let admin::ConnectAccessSystemRequest {
            workspace_id,
            system_type,
            name,
            time_zone,
            settings,
            credentials,
        } = self;
        let ws = validate::id("workspace_id", &workspace_id, Resource::Workspace)?;
        let mut v = Violations::default();
        let name = v.check(validate::optional_name("name", &name)).flatten();
        let time_zone = v.check(workspaces::time_zone(&time_zone)).flatten();
        if system_type.trim().is_empty() {
            v.check::<()>(Err(FieldViolation::new("system_type", "is required")));
        }
        v.finish()?;
        Ok((
            ws,
            ConnectSystem {
                idem: None,
                system_type,
                name,
                time_zone,
                settings: settings.into_iter().collect(),
                credentials: credentials.into_iter().collect(),
            },
        ))
    }
}

impl IntoCommand for v1::ConnectAccessSystemRequest {
    type Command = ConnectSystem;

    fn into_command(self) -> Result<ConnectSystem, Error> {
        // The idempotency record keeps a digest of the request: credentials count by name only,
        // so no digest of a secret is stored.
        let fingerprint = v1::ConnectAccessSystemRequest {
            request_id: String::new(),
            credentials: self
                .credentials
                .keys()
                .map(|k| (k.clone(), String::new()))
                .collect(),
            ..self.clone()
        };
        let v1::ConnectAccessSystemRequest {
            system_type,
            name,
            time_zone,
            request_id,
            settings,
            credentials,
        } = self;
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&request_id)).flatten();
        let name = v.check(validate::optional_name("name", &name)).flatten();
        let time_zone = v.check(workspaces::time_zone(&time_zone)).flatten();
        if system_type.trim().is_empty() {
            v.check::<()>(Err(FieldViolation::new("system_type", "is required")));
        }
        v.finish()?;
        Ok(ConnectSystem {
            idem: claim("ConnectAccessSystem", request_id, &fingerprint),
            system_type,
            name,
            time_zone,
            settings: settings.into_iter().collect(),
            credentials: credentials.into_iter().collect(),
        })
    }
}
