//! `keygate admin ...`: a client of the operator API (`keygate.admin.v1`) of a running Keygate.
//! It parses flags, makes one call (or one per page), and prints a table or JSON. Every rule is
//! the server's; a refusal is printed as the server's code, reason and message.
//!
//! The admin token is sent as `authorization: Bearer <token>` and never printed, logged or
//! echoed in an error.

use std::collections::HashMap;
use std::time::Duration;

use keygate_proto::admin::{self, workspace_service_client::WorkspaceServiceClient};
use keygate_proto::v1;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_types::StatusExt as _;

use crate::config::{
    AdminArgs, AdminCommand, AdminConnectArgs, ApiKeysCommand, SystemsCommand, WorkspaceTypeArg,
    WorkspacesCommand,
};

/// Why an admin command failed. Each prints as one line; none holds the admin token.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "no admin token: set KEYGATE_ADMIN_TOKEN (or --admin-token) to the server's admin token"
    )]
    NoToken,
    #[error("the admin token cannot be sent in a header (it has characters HTTP forbids)")]
    TokenNotAHeader,
    #[error("--endpoint {endpoint:?} is not a URL such as http://127.0.0.1:50051: {source}")]
    BadEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach Keygate at {endpoint}")]
    Unreachable {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Refused(Refusal),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// A call the server answered with an error: its code, stable reason, message and the fields
/// it named. Built from the status, so no header or binary detail is ever printed.
#[derive(Debug)]
pub struct Refusal {
    pub code: tonic::Code,
    pub reason: Option<String>,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server refused the call: {}", code_name(self.code))?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        write!(f, ": {}", self.message)?;
        // The fields the message does not already name.
        for (field, description) in &self.fields {
            if !self.message.contains(&format!("{field}: {description}")) {
                write!(f, "; {field}: {description}")?;
            }
        }
        if self.code == tonic::Code::Unauthenticated && self.reason.is_none() {
            write!(f, " (is KEYGATE_ADMIN_TOKEN the server's admin token?)")?;
        }
        Ok(())
    }
}

impl From<tonic::Status> for AdminError {
    fn from(s: tonic::Status) -> Self {
        let details = s.get_error_details();
        let reason = details.error_info().map(|i| i.reason.clone());
        let fields = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self::Refused(Refusal {
            code: s.code(),
            reason,
            message: s.message().to_owned(),
            fields,
        })
    }
}

/// The gRPC code as the specification spells it (`UNAUTHENTICATED`, `NOT_FOUND`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The endpoint as a URL: `host:port` means plain `http://`.
fn endpoint_url(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.contains("://") {
        e.to_owned()
    } else {
        format!("http://{e}")
    }
}

/// A connected client whose calls carry the admin token.
struct Client {
    inner: WorkspaceServiceClient<Channel>,
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl Client {
    async fn connect(args: &AdminConnectArgs) -> Result<Self, AdminError> {
        if args.admin_token.is_empty() {
            return Err(AdminError::NoToken);
        }
        let token: MetadataValue<_> = format!("Bearer {}", args.admin_token)
            .parse()
            .map_err(|_| AdminError::TokenNotAHeader)?;
        let url = endpoint_url(&args.endpoint);
        let bad = |source| AdminError::BadEndpoint {
            endpoint: args.endpoint.clone(),
            source,
        };
        let timeout = Duration::from_secs(args.timeout_secs.max(1));
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(bad)?
            .connect_timeout(timeout)
            .timeout(timeout);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(bad)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| AdminError::Unreachable {
                endpoint: url,
                source,
            })?;
        Ok(Self {
            inner: WorkspaceServiceClient::new(channel),
            token,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", self.token.clone());
        r
    }
}

/// Runs one `keygate admin` command.
pub async fn run(args: AdminArgs) -> Result<(), AdminError> {
    let out = execute(&args).await?;
    let text = if args.connect.json {
        let mut s = serde_json::to_string_pretty(&out.json)
            .map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
        s.push('\n');
        s
    } else {
        out.text
    };
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// What a command prints: a table (or a few lines) and the same as JSON.
struct Output {
    text: String,
    json: Value,
}

async fn execute(args: &AdminArgs) -> Result<Output, AdminError> {
    // Input the server would refuse anyway, but that can be refused before connecting.
    let credentials = match &args.command {
        AdminCommand::Systems(SystemsCommand::Connect { credentials, .. }) => {
            parse_credentials(credentials)?
        }
        _ => HashMap::new(),
    };
    let mut c = Client::connect(&args.connect).await?;
    match &args.command {
        AdminCommand::Workspaces(WorkspacesCommand::Create {
            name,
            workspace_type,
            api_key_name,
        }) => {
            let workspace_type = match workspace_type {
                WorkspaceTypeArg::Sandbox => admin::WorkspaceType::Sandbox,
                WorkspaceTypeArg::Production => admin::WorkspaceType::Production,
            };
            let r = c
                .inner
                .create_workspace(c.request(admin::CreateWorkspaceRequest {
                    name: name.clone(),
                    workspace_type: workspace_type as i32,
                    api_key_name: api_key_name.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            let ws = r.workspace.unwrap_or_default();
            let key = r.api_key.unwrap_or_default();
            Ok(Output {
                text: format!(
                    "{}\nAPI key {} ({}); its token, shown once:\n{}\n",
                    table(&WORKSPACE_COLUMNS, &[workspace_row(&ws)]),
                    key.api_key_id,
                    key.name,
                    r.api_key_token
                ),
                json: json!({
                    "workspace": workspace_json(&ws),
                    "api_key": api_key_json(&key),
                    "api_key_token": r.api_key_token,
                }),
            })
        }
        AdminCommand::Workspaces(WorkspacesCommand::List) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .inner
                    .list_workspaces(c.request(admin::ListWorkspacesRequest {
                        page_size: 500,
                        page_token,
                    }))
                    .await?
                    .into_inner();
                all.extend(r.workspaces);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            let rows: Vec<_> = all.iter().map(workspace_row).collect();
            Ok(Output {
                text: table(&WORKSPACE_COLUMNS, &rows),
                json: json!({ "workspaces": all.iter().map(workspace_json).collect::<Vec<_>>() }),
            })
        }
        AdminCommand::ApiKeys(ApiKeysCommand::Create { workspace_id, name }) => {
            let r = c
                .inner
                .create_api_key(c.request(admin::CreateApiKeyRequest {
                    workspace_id: workspace_id.clone(),
                    name: name.clone(),
                }))
                .await?
                .into_inner();
            let key = r.api_key.unwrap_or_default();
            Ok(Output {
                text: format!(
                    "{}\nIts token, shown once:\n{}\n",
                    table(&API_KEY_COLUMNS, &[api_key_row(&key)]),
                    r.api_key_token
                ),
                json: json!({
                    "api_key": api_key_json(&key),
                    "api_key_token": r.api_key_token,
                }),
            })
        }
        AdminCommand::ApiKeys(ApiKeysCommand::List { workspace_id }) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .inner
                    .list_api_keys(c.request(admin::ListApiKeysRequest {
                        workspace_id: workspace_id.clone(),
                        page_size: 500,
                        page_token,
                    }))
                    .await?
                    .into_inner();
                all.extend(r.api_keys);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            let rows: Vec<_> = all.iter().map(api_key_row).collect();
            Ok(Output {
                text: table(&API_KEY_COLUMNS, &rows),
                json: json!({ "api_keys": all.iter().map(api_key_json).collect::<Vec<_>>() }),
            })
        }
        AdminCommand::ApiKeys(ApiKeysCommand::Revoke {
            workspace_id,
            api_key_id,
        }) => {
            let r = c
                .inner
                .revoke_api_key(c.request(admin::RevokeApiKeyRequest {
                    workspace_id: workspace_id.clone(),
                    api_key_id: api_key_id.clone(),
                }))
                .await?
                .into_inner();
            let key = r.api_key.unwrap_or_default();
            Ok(Output {
                text: table(&API_KEY_COLUMNS, &[api_key_row(&key)]),
                json: json!({ "api_key": api_key_json(&key) }),
            })
        }
        AdminCommand::Systems(SystemsCommand::Connect {
            workspace_id,
            system_type,
            name,
            time_zone,
            settings,
            credentials: _,
        }) => {
            let r = c
                .inner
                .connect_access_system(c.request(admin::ConnectAccessSystemRequest {
                    workspace_id: workspace_id.clone(),
                    system_type: system_type.clone(),
                    name: name.clone().unwrap_or_default(),
                    time_zone: time_zone.clone().unwrap_or_default(),
                    settings: settings.iter().cloned().collect(),
                    credentials,
                }))
                .await?
                .into_inner();
            let s = r.acs_system.unwrap_or_default();
            Ok(Output {
                text: table(&SYSTEM_COLUMNS, &[system_row(&s)]),
                json: json!({ "acs_system": system_json(&s) }),
            })
        }
        AdminCommand::Systems(SystemsCommand::List { workspace_id }) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .inner
                    .list_access_systems(c.request(admin::ListAccessSystemsRequest {
                        workspace_id: workspace_id.clone(),
                        page_size: 500,
                        page_token,
                    }))
                    .await?
                    .into_inner();
                all.extend(r.acs_systems);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            let rows: Vec<_> = all.iter().map(system_row).collect();
            Ok(Output {
                text: table(&SYSTEM_COLUMNS, &rows),
                json: json!({ "acs_systems": all.iter().map(system_json).collect::<Vec<_>>() }),
            })
        }
    }
}

/// `--credential KEY=VALUE` (or `KEY=@file`). A malformed one is refused without echoing it.
fn parse_credentials(raw: &[String]) -> Result<HashMap<String, String>, AdminError> {
    let mut out = HashMap::new();
    for (i, item) in raw.iter().enumerate() {
        let (k, v) = crate::config::key_value(item).map_err(|_| {
            AdminError::BadInput(format!(
                "--credential number {} is not KEY=VALUE with a non-empty KEY",
                i + 1
            ))
        })?;
        let v = match v.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| AdminError::ReadFile {
                    path: path.to_owned(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => v,
        };
        out.insert(k, v);
    }
    Ok(out)
}

/// RFC 3339 in UTC, or empty when absent.
fn time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return String::new();
    };
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn time_json(ts: Option<&prost_types::Timestamp>) -> Value {
    match ts {
        Some(_) => Value::String(time(ts)),
        None => Value::Null,
    }
}

fn workspace_type(t: i32) -> &'static str {
    match admin::WorkspaceType::try_from(t) {
        Ok(admin::WorkspaceType::Sandbox) => "sandbox",
        Ok(admin::WorkspaceType::Production) => "production",
        _ => "unspecified",
    }
}

const WORKSPACE_COLUMNS: [&str; 4] = ["WORKSPACE ID", "NAME", "TYPE", "CREATED"];

fn workspace_row(w: &admin::Workspace) -> Vec<String> {
    vec![
        w.workspace_id.clone(),
        w.name.clone(),
        workspace_type(w.workspace_type).to_owned(),
        time(w.created_at.as_ref()),
    ]
}

fn workspace_json(w: &admin::Workspace) -> Value {
    json!({
        "workspace_id": w.workspace_id,
        "name": w.name,
        "workspace_type": workspace_type(w.workspace_type),
        "is_sandbox": w.is_sandbox,
        "created_at": time_json(w.created_at.as_ref()),
    })
}

const API_KEY_COLUMNS: [&str; 5] = ["API KEY ID", "NAME", "STATE", "CREATED", "REVOKED"];

fn api_key_row(k: &admin::ApiKey) -> Vec<String> {
    vec![
        k.api_key_id.clone(),
        k.name.clone(),
        if k.is_revoked { "revoked" } else { "active" }.to_owned(),
        time(k.created_at.as_ref()),
        time(k.revoked_at.as_ref()),
    ]
}

fn api_key_json(k: &admin::ApiKey) -> Value {
    json!({
        "api_key_id": k.api_key_id,
        "workspace_id": k.workspace_id,
        "name": k.name,
        "is_revoked": k.is_revoked,
        "created_at": time_json(k.created_at.as_ref()),
        "revoked_at": time_json(k.revoked_at.as_ref()),
    })
}

const SYSTEM_COLUMNS: [&str; 6] = [
    "ACS SYSTEM ID",
    "NAME",
    "TYPE",
    "TIME ZONE",
    "LAST SYNCED",
    "ERRORS",
];

fn system_row(s: &v1::AccessSystem) -> Vec<String> {
    vec![
        s.acs_system_id.clone(),
        s.name.clone(),
        s.system_type.clone(),
        s.time_zone.clone(),
        time(s.last_synced_at.as_ref()),
        s.errors
            .iter()
            .map(|e| e.code.as_str())
            .collect::<Vec<_>>()
            .join(","),
    ]
}

fn system_json(s: &v1::AccessSystem) -> Value {
    let notes = |code: &str, message: &str, at: Option<&prost_types::Timestamp>| json!({ "code": code, "message": message, "created_at": time_json(at) });
    json!({
        "acs_system_id": s.acs_system_id,
        "workspace_id": s.workspace_id,
        "name": s.name,
        "external_type": s.external_type,
        "system_type": s.system_type,
        "is_virtual": s.is_virtual,
        "time_zone": s.time_zone,
        "settings": s.settings,
        "created_at": time_json(s.created_at.as_ref()),
        "last_synced_at": time_json(s.last_synced_at.as_ref()),
        "disconnected_at": time_json(s.disconnected_at.as_ref()),
        "warnings": s.warnings.iter().map(|w| notes(&w.code, &w.message, w.created_at.as_ref())).collect::<Vec<_>>(),
        "errors": s.errors.iter().map(|e| notes(&e.code, &e.message, e.created_at.as_ref())).collect::<Vec<_>>(),
    })
}

/// Columns padded to their widest cell, two spaces apart; control characters in cells become
/// spaces so that a name cannot break the table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_neutralise_control_characters() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "Main\nlobby".into()],
                vec!["bbbb".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID    NAME\na     Main lobby\nbbbb  x\n");
    }

    #[test]
    fn refusals_print_code_reason_message_and_fields() {
        let r = Refusal {
            code: tonic::Code::InvalidArgument,
            reason: Some("INVALID_FIELD".into()),
            message: "invalid input".into(),
            fields: vec![("name".into(), "must not be empty".into())],
        };
        assert_eq!(
            r.to_string(),
            "the server refused the call: INVALID_ARGUMENT (INVALID_FIELD): invalid input; name: must not be empty"
        );
    }

    #[test]
    fn malformed_credentials_are_refused_without_echoing_them() {
        let e = parse_credentials(&["hunter2".into()]).expect_err("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let ok = parse_credentials(&["api_key=a=b".into()]).expect("parses");
        assert_eq!(ok.get("api_key").map(String::as_str), Some("a=b"));
    }

    #[test]
    fn a_bare_address_is_plain_http() {
        assert_eq!(endpoint_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(endpoint_url("https://kg.example"), "https://kg.example");
    }
}
