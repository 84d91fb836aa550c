//! The gRPC connector adapter against an in-process fake connector: the provider conformance
//! suite for two capability profiles (credential based with card encoding and remote unlock;
//! access groups with Keygate-chosen PINs), then the connector's own rules (credentials,
//! reachability, settings, garbage listings, deadlines, paging, pending outcomes, typed
//! unlock/encode failures, the token never in an error).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate_domain::action::{EncodeJob, UnlockJob};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::ids::{AccessSystemId, ActionAttemptId, WorkspaceId};
use keygate_domain::model::AccessSystem;
use keygate_proto::connector as pb;
use keygate_proto::v1;
use keygate_providers::conformance::{self as c, FaultClass, Harness, Site};
use keygate_providers::connector::{ConnectorProvider, SYSTEM_TYPE};
use keygate_providers::{
    AccessSystemProvider, Connection, Credentials, Directory, Link, ProviderError,
};
use pb::access_system_connector_service_server::{
    AccessSystemConnectorService, AccessSystemConnectorServiceServer,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

const TOKEN: &str = "s3cr3t-connector-token-4f1a";
const WRONG_TOKEN: &str = "wr0ng-connector-token-9c2b";

// ---------------------------------------------------------------------------------------------
// The fake connector
// ---------------------------------------------------------------------------------------------

/// A scripted misbehaviour of the next changing call (of one RPC, or of any).
#[derive(Clone, Debug)]
enum Fault {
    /// UNAVAILABLE before anything is applied.
    Unavailable,
    /// Applied, then ABORTED `applied_unknown` (in the status details).
    AppliedUnknownAfter,
    /// Not applied, ABORTED `applied_unknown` (in the message prefix).
    AppliedUnknownBefore,
    /// FAILED_PRECONDITION with this reason; nothing applied.
    Refused(&'static str),
    /// Accepted, answered `OUTCOME_STATUS_PENDING`; a credential is kept unissued.
    Pending,
}

#[derive(Clone)]
struct Profile {
    caps: v1::CapabilityDescriptor,
    entrances: Vec<pb::ProviderEntrance>,
    groups: Vec<pb::ProviderAccessGroup>,
    encoders: Vec<pb::ProviderEncoder>,
    page_size: usize,
    /// Every call sleeps this long first (a hanging connector).
    hang: Option<Duration>,
}

#[derive(Default)]
struct FakeState {
    users: HashMap<String, pb::ProviderUserState>,
    /// GrantAccess by reference: (user external id, group external id).
    grants: HashMap<String, (String, String)>,
    credentials: HashMap<String, pb::ProviderCredentialState>,
    faults: VecDeque<(Option<&'static str>, Fault)>,
    calls: HashMap<&'static str, usize>,
    unlocks: Vec<String>,
    next: u64,
    /// Every `authorization` value seen that was wrong (to prove the token went on the wire).
    bearer_seen: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    profile: Arc<Profile>,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn new(profile: Profile) -> Self {
        Self {
            profile: Arc::new(profile),
            state: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn inject(&self, rpc: Option<&'static str>, fault: Fault) {
        self.with(|s| s.faults.push_back((rpc, fault)));
    }

    fn calls(&self, rpc: &str) -> usize {
        self.with(|s| s.calls.get(rpc).copied().unwrap_or(0))
    }

    fn credential_count(&self) -> usize {
        self.with(|s| s.credentials.len())
    }

    /// Checks the bearer token and hangs when told to; counts the call.
    async fn enter<T>(&self, rpc: &'static str, r: &Request<T>) -> Result<(), Status> {
        if let Some(h) = self.profile.hang {
            tokio::time::sleep(h).await;
        }
        let auth = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.with(|s| *s.calls.entry(rpc).or_default() += 1);
        if auth != format!("Bearer {TOKEN}") {
            self.with(|s| s.bearer_seen.push(auth));
            return Err(Status::unauthenticated("the bearer token is not valid"));
        }
        Ok(())
    }

    /// The next fault for a changing `rpc`, if one is queued for it.
    fn fault(&self, rpc: &'static str) -> Option<Fault> {
        self.with(|s| {
            let i = s
                .faults
                .iter()
                .position(|(only, _)| only.is_none_or(|o| o == rpc))?;
            s.faults.remove(i).map(|(_, f)| f)
        })
    }

    /// Runs a changing call under the scripted faults. `apply` returns the answer for a given
    /// outcome status.
    fn change<R>(
        &self,
        rpc: &'static str,
        apply: impl FnOnce(&mut FakeState, bool) -> Result<(R, pb::OutcomeStatus), Status>,
        answer: impl FnOnce(R, pb::ProviderOutcome) -> R,
    ) -> Result<R, Status> {
        let outcome = |status: pb::OutcomeStatus| pb::ProviderOutcome {
            status: status as i32,
            provider_message: String::new(),
            provider_request_id: format!("req-{rpc}"),
        };
        match self.fault(rpc) {
            Some(Fault::Unavailable) => Err(Status::unavailable("provider answered 503")),
            Some(Fault::Refused(reason)) => Err(Status::with_error_details(
                Code::FailedPrecondition,
                "the provider refused the request",
                ErrorDetails::with_error_info(reason, "keygate.dev", HashMap::new()),
            )),
            Some(Fault::AppliedUnknownBefore) => Err(Status::aborted(
                "applied_unknown: the provider timed out after accepting",
            )),
            Some(Fault::AppliedUnknownAfter) => {
                self.with(|s| apply(s, false))?;
                Err(Status::with_error_details(
                    Code::Aborted,
                    "the provider answered 500 after writing",
                    ErrorDetails::with_error_info("applied_unknown", "keygate.dev", HashMap::new()),
                ))
            }
            Some(Fault::Pending) => {
                let (r, _) = self.with(|s| apply(s, true))?;
                Ok(answer(r, outcome(pb::OutcomeStatus::Pending)))
            }
            None => {
                let (r, status) = self.with(|s| apply(s, false))?;
                Ok(answer(r, outcome(status)))
            }
        }
    }

    fn page<T: Clone>(&self, all: &[T], token: &str) -> Result<(Vec<T>, String), Status> {
        let start: usize = if token.is_empty() {
            0
        } else {
            token
                .parse()
                .map_err(|_| Status::invalid_argument("bad page token"))?
        };
        let end = (start + self.profile.page_size).min(all.len());
        let next = if end < all.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok((all.get(start..end).unwrap_or_default().to_vec(), next))
    }

    fn user_state(s: &FakeState, mut u: pb::ProviderUserState) -> pb::ProviderUserState {
        let mut groups: Vec<String> = s
            .grants
            .values()
            .filter(|(user, _)| *user == u.external_id)
            .map(|(_, g)| g.clone())
            .collect();
        groups.sort();
        groups.dedup();
        u.access_group_external_ids = groups;
        u
    }
}

#[async_trait]
impl AccessSystemConnectorService for Fake {
    async fn get_capabilities(
        &self,
        r: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        self.enter("GetCapabilities", &r).await?;
        Ok(Response::new(pb::GetCapabilitiesResponse {
            capabilities: Some(self.profile.caps.clone()),
            connector_name: "acme-doors-connector".into(),
            connector_version: "1.0.0".into(),
            external_type: String::new(),
        }))
    }

    async fn sync_entrances(
        &self,
        r: Request<pb::SyncEntrancesRequest>,
    ) -> Result<Response<pb::SyncEntrancesResponse>, Status> {
        self.enter("SyncEntrances", &r).await?;
        let (entrances, next_page_token) =
            self.page(&self.profile.entrances, &r.get_ref().page_token)?;
        Ok(Response::new(pb::SyncEntrancesResponse {
            entrances,
            next_page_token,
        }))
    }

    async fn sync_access_groups(
        &self,
        r: Request<pb::SyncAccessGroupsRequest>,
    ) -> Result<Response<pb::SyncAccessGroupsResponse>, Status> {
        self.enter("SyncAccessGroups", &r).await?;
        let (access_groups, next_page_token) =
            self.page(&self.profile.groups, &r.get_ref().page_token)?;
        Ok(Response::new(pb::SyncAccessGroupsResponse {
            access_groups,
            next_page_token,
        }))
    }

    async fn sync_encoders(
        &self,
        r: Request<pb::SyncEncodersRequest>,
    ) -> Result<Response<pb::SyncEncodersResponse>, Status> {
        self.enter("SyncEncoders", &r).await?;
        let (encoders, next_page_token) =
            self.page(&self.profile.encoders, &r.get_ref().page_token)?;
        Ok(Response::new(pb::SyncEncodersResponse {
            encoders,
            next_page_token,
        }))
    }

    async fn ensure_user(
        &self,
        r: Request<pb::EnsureUserRequest>,
    ) -> Result<Response<pb::EnsureUserResponse>, Status> {
        self.enter("EnsureUser", &r).await?;
        let q = r.into_inner();
        if q.reference_id.is_empty() || q.full_name.is_empty() {
            return Err(Status::invalid_argument(
                "reference_id and full_name are required",
            ));
        }
        self.change(
            "EnsureUser",
            |s, _| {
                let id = match s.users.get(&q.reference_id) {
                    Some(u) => u.external_id.clone(),
                    None => {
                        s.next += 1;
                        format!("user-{}", s.next)
                    }
                };
                let wanted = pb::ProviderUserState {
                    external_id: id.clone(),
                    reference_id: q.reference_id.clone(),
                    full_name: q.full_name.clone(),
                    email_address: q.email_address.clone(),
                    phone_number: q.phone_number.clone(),
                    access_schedule: q.access_schedule,
                    ..Default::default()
                };
                let status = if s.users.get(&q.reference_id) == Some(&wanted) {
                    pb::OutcomeStatus::AlreadyApplied
                } else {
                    pb::OutcomeStatus::Applied
                };
                s.users.insert(q.reference_id.clone(), wanted);
                Ok((
                    pb::EnsureUserResponse {
                        outcome: None,
                        user_external_id: id,
                    },
                    status,
                ))
            },
            |r, o| pb::EnsureUserResponse {
                outcome: Some(o),
                ..r
            },
        )
        .map(Response::new)
    }

    async fn grant_access(
        &self,
        r: Request<pb::GrantAccessRequest>,
    ) -> Result<Response<pb::GrantAccessResponse>, Status> {
        self.enter("GrantAccess", &r).await?;
        let q = r.into_inner();
        let Some(pb::grant_access_request::Target::AccessGroupExternalId(g)) = q.target else {
            return Err(Status::unimplemented("only access groups"));
        };
        if !self.profile.groups.iter().any(|x| x.external_id == g) {
            return Err(Status::not_found("no such group"));
        }
        self.change(
            "GrantAccess",
            |s, _| {
                let v = (q.user_external_id.clone(), g.clone());
                let status = if s.grants.get(&q.reference_id) == Some(&v) {
                    pb::OutcomeStatus::AlreadyApplied
                } else {
                    pb::OutcomeStatus::Applied
                };
                s.grants.insert(q.reference_id.clone(), v);
                Ok((pb::GrantAccessResponse { outcome: None }, status))
            },
            |_, o| pb::GrantAccessResponse { outcome: Some(o) },
        )
        .map(Response::new)
    }

    async fn revoke_access(
        &self,
        r: Request<pb::RevokeAccessRequest>,
    ) -> Result<Response<pb::RevokeAccessResponse>, Status> {
        self.enter("RevokeAccess", &r).await?;
        let q = r.into_inner();
        self.change(
            "RevokeAccess",
            |s, _| {
                let status = if s.grants.remove(&q.reference_id).is_some() {
                    pb::OutcomeStatus::Applied
                } else {
                    pb::OutcomeStatus::AlreadyApplied
                };
                Ok((pb::RevokeAccessResponse { outcome: None }, status))
            },
            |_, o| pb::RevokeAccessResponse { outcome: Some(o) },
        )
        .map(Response::new)
    }

    async fn issue_credential(
        &self,
        r: Request<pb::IssueCredentialRequest>,
    ) -> Result<Response<pb::IssueCredentialResponse>, Status> {
        self.enter("IssueCredential", &r).await?;
        let q = r.into_inner();
        let caps = &self.profile.caps;
        let mode =
            v1::AccessMethodMode::try_from(q.mode).map_err(|_| Status::invalid_argument("mode"))?;
        for e in &q.entrance_external_ids {
            if !self.profile.entrances.iter().any(|x| x.external_id == *e) {
                return Err(Status::not_found(format!("no entrance {e}")));
            }
        }
        self.change(
            "IssueCredential",
            |s, pending| {
                let existing = s.credentials.get(&q.reference_id).cloned();
                let (id, code) = match &existing {
                    Some(c) => (c.external_id.clone(), c.code.clone()),
                    None => {
                        s.next += 1;
                        let code = match mode {
                            v1::AccessMethodMode::Code if !q.code.is_empty() => q.code.clone(),
                            v1::AccessMethodMode::Code => format!("{:06}", 100_000 + s.next),
                            _ => String::new(),
                        };
                        (format!("cred-{}", s.next), code)
                    }
                };
                let wanted = pb::ProviderCredentialState {
                    external_id: id.clone(),
                    reference_id: q.reference_id.clone(),
                    user_external_id: q.user_external_id.clone(),
                    mode: q.mode,
                    code: code.clone(),
                    card_number: existing
                        .as_ref()
                        .map(|c| c.card_number.clone())
                        .unwrap_or_default(),
                    entrance_external_ids: q.entrance_external_ids.clone(),
                    schedule: q.schedule,
                    is_issued: !pending,
                    is_card_encoding_required: mode == v1::AccessMethodMode::Card
                        && caps.is_card_encoding_required,
                };
                let status = if existing.as_ref() == Some(&wanted) {
                    pb::OutcomeStatus::AlreadyApplied
                } else {
                    pb::OutcomeStatus::Applied
                };
                s.credentials.insert(q.reference_id.clone(), wanted.clone());
                Ok((
                    pb::IssueCredentialResponse {
                        outcome: None,
                        credential_external_id: id,
                        code,
                        card_number: wanted.card_number,
                        is_card_encoding_required: wanted.is_card_encoding_required,
                    },
                    status,
                ))
            },
            |r, o| pb::IssueCredentialResponse {
                outcome: Some(o),
                ..r
            },
        )
        .map(Response::new)
    }

    async fn revoke_credential(
        &self,
        r: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::RevokeCredentialResponse>, Status> {
        self.enter("RevokeCredential", &r).await?;
        let q = r.into_inner();
        self.change(
            "RevokeCredential",
            |s, _| {
                let status = if s.credentials.remove(&q.reference_id).is_some() {
                    pb::OutcomeStatus::Applied
                } else {
                    pb::OutcomeStatus::AlreadyApplied
                };
                Ok((pb::RevokeCredentialResponse { outcome: None }, status))
            },
            |_, o| pb::RevokeCredentialResponse { outcome: Some(o) },
        )
        .map(Response::new)
    }

    async fn encode_credential(
        &self,
        r: Request<pb::EncodeCredentialRequest>,
    ) -> Result<Response<pb::EncodeCredentialResponse>, Status> {
        self.enter("EncodeCredential", &r).await?;
        let q = r.into_inner();
        if !self
            .profile
            .encoders
            .iter()
            .any(|e| e.external_id == q.encoder_external_id)
        {
            return Err(Status::not_found("no such encoder"));
        }
        self.change(
            "EncodeCredential",
            |s, _| {
                s.next += 1;
                let n = s.next;
                let c = s
                    .credentials
                    .values_mut()
                    .find(|c| c.external_id == q.credential_external_id)
                    .ok_or_else(|| {
                        Status::with_error_details(
                            Code::FailedPrecondition,
                            "no such credential",
                            ErrorDetails::with_error_info(
                                "no_credential_on_encoder",
                                "keygate.dev",
                                HashMap::new(),
                            ),
                        )
                    })?;
                if c.card_number.is_empty() {
                    c.card_number = format!("{:010}", 4_000_000_000u64 + n);
                }
                c.is_card_encoding_required = false;
                Ok((
                    pb::EncodeCredentialResponse {
                        outcome: None,
                        credential_external_id: c.external_id.clone(),
                        card_number: c.card_number.clone(),
                    },
                    pb::OutcomeStatus::Applied,
                ))
            },
            |r, o| pb::EncodeCredentialResponse {
                outcome: Some(o),
                ..r
            },
        )
        .map(Response::new)
    }

    async fn unlock_entrance(
        &self,
        r: Request<pb::UnlockEntranceRequest>,
    ) -> Result<Response<pb::UnlockEntranceResponse>, Status> {
        self.enter("UnlockEntrance", &r).await?;
        let q = r.into_inner();
        if !self.profile.caps.can_remote_unlock {
            return Err(Status::failed_precondition(
                "remote_unlock_not_supported: no cloud unlock",
            ));
        }
        if !self
            .profile
            .entrances
            .iter()
            .any(|e| e.external_id == q.entrance_external_id)
        {
            return Err(Status::not_found("no such entrance"));
        }
        self.change(
            "UnlockEntrance",
            |s, _| {
                s.unlocks.push(q.entrance_external_id.clone());
                Ok((
                    pb::UnlockEntranceResponse { outcome: None },
                    pb::OutcomeStatus::Applied,
                ))
            },
            |_, o| pb::UnlockEntranceResponse { outcome: Some(o) },
        )
        .map(Response::new)
    }

    async fn read_back_state(
        &self,
        r: Request<pb::ReadBackStateRequest>,
    ) -> Result<Response<pb::ReadBackStateResponse>, Status> {
        use pb::read_back_state_response::State;
        self.enter("ReadBackState", &r).await?;
        let q = r.into_inner();
        let kind = pb::ObjectKind::try_from(q.object_kind).unwrap_or(pb::ObjectKind::Unspecified);
        let state = self.with(|s| match kind {
            pb::ObjectKind::User => Ok(s
                .users
                .values()
                .find(|u| {
                    (!q.external_id.is_empty() && u.external_id == q.external_id)
                        || (q.external_id.is_empty() && u.reference_id == q.reference_id)
                })
                .cloned()
                .map(|u| State::User(Fake::user_state(s, u)))),
            pb::ObjectKind::Credential => Ok(s
                .credentials
                .values()
                .find(|c| {
                    (!q.external_id.is_empty() && c.external_id == q.external_id)
                        || (q.external_id.is_empty() && c.reference_id == q.reference_id)
                })
                .cloned()
                .map(State::Credential)),
            pb::ObjectKind::Unspecified => Err(Status::invalid_argument("object_kind")),
        })?;
        Ok(Response::new(pb::ReadBackStateResponse {
            exists: state.is_some(),
            state,
        }))
    }
}

/// Serves `fake` on 127.0.0.1 and returns its address.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AccessSystemConnectorServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------------------------

fn entrance(id: &str, card: bool, code: bool, mobile: bool, cloud: bool) -> pb::ProviderEntrance {
    pb::ProviderEntrance {
        external_id: id.into(),
        display_name: format!("Door {id}"),
        can_unlock_with_card: card,
        can_unlock_with_code: code,
        can_unlock_with_mobile_key: mobile,
        can_unlock_with_cloud_key: cloud,
        can_belong_to_reservation: false,
    }
}

fn rate_limit() -> Option<v1::ProviderRateLimit> {
    Some(v1::ProviderRateLimit {
        requests_per_second: 10.0,
        burst: 5,
    })
}

/// Credential based: cards that need encoding, provider PINs, remote unlock; five doors
/// listed two per page.
fn credential_based() -> Profile {
    Profile {
        caps: v1::CapabilityDescriptor {
            permission_model: v1::PermissionModel::CredentialBased as i32,
            supported_modes: vec![
                v1::AccessMethodMode::Card as i32,
                v1::AccessMethodMode::Code as i32,
                v1::AccessMethodMode::CloudKey as i32,
            ],
            pin_code_rules: Some(v1::PinCodeRules {
                generator: v1::PinCodeGenerator::Provider as i32,
                min_length: 4,
                max_length: 8,
                can_request_code: false,
                is_code_per_entrance: false,
            }),
            is_card_encoding_required: true,
            can_remote_unlock: true,
            can_issue_mobile_keys: false,
            can_assign_entrances_directly: true,
            can_schedule_credentials: true,
            rate_limit: rate_limit(),
        },
        entrances: vec![
            entrance("d1", true, true, false, true),
            entrance("d2", true, true, false, true),
            entrance("d3", true, false, false, false),
            entrance("d4", false, true, false, false),
            entrance("d5", true, true, false, true),
        ],
        groups: Vec::new(),
        encoders: vec![pb::ProviderEncoder {
            external_id: "enc-1".into(),
            display_name: "Front Desk Encoder".into(),
            is_online: true,
        }],
        page_size: 2,
        hang: None,
    }
}

/// Access groups: Keygate-chosen PINs and mobile keys, no encoding, no remote unlock; groups
/// listed one per page.
fn access_groups() -> Profile {
    Profile {
        caps: v1::CapabilityDescriptor {
            permission_model: v1::PermissionModel::AccessGroups as i32,
            supported_modes: vec![
                v1::AccessMethodMode::Code as i32,
                v1::AccessMethodMode::MobileKey as i32,
            ],
            pin_code_rules: Some(v1::PinCodeRules {
                generator: v1::PinCodeGenerator::Keygate as i32,
                min_length: 4,
                max_length: 6,
                can_request_code: true,
                is_code_per_entrance: false,
            }),
            is_card_encoding_required: false,
            can_remote_unlock: false,
            can_issue_mobile_keys: true,
            can_assign_entrances_directly: false,
            can_schedule_credentials: true,
            rate_limit: rate_limit(),
        },
        entrances: vec![
            entrance("g-d1", false, true, true, false),
            entrance("g-d2", false, true, true, false),
            entrance("g-d3", false, true, true, false),
        ],
        groups: vec![
            pb::ProviderAccessGroup {
                external_id: "staff".into(),
                display_name: "Staff".into(),
                entrance_external_ids: vec!["g-d1".into(), "g-d2".into(), "ghost".into()],
            },
            pb::ProviderAccessGroup {
                external_id: "all".into(),
                display_name: "Everyone".into(),
                entrance_external_ids: vec!["g-d1".into(), "g-d2".into(), "g-d3".into()],
            },
        ],
        encoders: Vec::new(),
        page_size: 1,
        hang: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Directory and harness
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Links(Mutex<HashMap<AccessSystemId, Link>>);

#[async_trait]
impl Directory for Links {
    async fn link(&self, system: &AccessSystem) -> Result<Link, ProviderError> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&system.id).cloned())
            .ok_or_else(|| ProviderError::Permanent("account_disconnected: no link".into()))
    }
}

fn settings(address: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("address".to_owned(), address.to_owned()),
        ("timeout_ms".to_owned(), "5000".to_owned()),
    ])
}

fn credentials(token: &str) -> Credentials {
    Credentials::new(BTreeMap::from([("token".to_owned(), token.to_owned())]))
}

fn connection(address: &str, token: &str) -> Connection {
    Connection {
        settings: settings(address),
        credentials: credentials(token),
        ..Connection::default()
    }
}

struct ConnectorHarness {
    fake: Fake,
    address: String,
    links: Arc<Links>,
}

#[async_trait]
impl Harness for ConnectorHarness {
    async fn connect(&self, provider: &dyn AccessSystemProvider, system_type: &str) -> Site {
        let discovered = provider
            .discover(system_type, &connection(&self.address, TOKEN))
            .await
            .unwrap_or_else(|e| panic!("{system_type}: discover failed: {e}"));
        let site = Site::from_discovery(discovered, WorkspaceId::new());
        let link = Link {
            settings: settings(&self.address),
            credentials: credentials(TOKEN),
            entrances: site.external_ids.entrances.clone(),
            access_groups: site.external_ids.access_groups.clone(),
            encoders: site.external_ids.encoders.clone(),
        };
        if let Ok(mut m) = self.links.0.lock() {
            m.insert(site.system.id, link);
        }
        site
    }

    fn inject(&self, _system: &AccessSystem, class: FaultClass) -> bool {
        let fault = match class {
            FaultClass::Transient => Fault::Unavailable,
            FaultClass::AmbiguousApplied => Fault::AppliedUnknownAfter,
            FaultClass::AmbiguousNotApplied => Fault::AppliedUnknownBefore,
            FaultClass::Permanent => Fault::Refused("provider_refused"),
        };
        self.fake.inject(None, fault);
        true
    }

    async fn held_count(&self, _system: &AccessSystem) -> Option<usize> {
        Some(self.fake.credential_count())
    }
}

async fn setup(profile: Profile) -> (ConnectorProvider, ConnectorHarness) {
    let fake = Fake::new(profile);
    let address = serve(fake.clone()).await;
    let links = Arc::new(Links::default());
    let provider = ConnectorProvider::new(links.clone());
    (
        provider,
        ConnectorHarness {
            fake,
            address,
            links,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

macro_rules! suite {
    ($($profile:ident),* $(,)?) => {
        $(
            mod $profile {
                use super::*;
                suite!(@scenarios $profile,
                    discover_is_consistent,
                    provision_is_idempotent,
                    revoke_is_idempotent,
                    unlock_follows_capabilities,
                    encode_follows_capabilities,
                    error_classes_are_honest,
                    declared_rate_limit_is_usable,
                );
            }
        )*
    };
    (@scenarios $profile:ident, $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                let (provider, harness) = setup(super::$profile()).await;
                c::$scenario(&provider, &harness, SYSTEM_TYPE).await;
            }
        )*
    };
}

suite!(credential_based, access_groups);

#[test]
fn the_adapter_serves_the_connector_type() {
    let provider = ConnectorProvider::new(Arc::new(Links::default()));
    assert_eq!(provider.system_types(), [SYSTEM_TYPE]);
}

// ---------------------------------------------------------------------------------------------
// The connector's own rules
// ---------------------------------------------------------------------------------------------

fn assert_prefix(r: Result<impl std::fmt::Debug, ProviderError>, permanent: bool, prefix: &str) {
    let e = r.expect_err("must fail");
    let (is_permanent, m) = match &e {
        ProviderError::Permanent(m) => (true, m),
        ProviderError::Transient(m) | ProviderError::Ambiguous(m) => (false, m),
    };
    assert_eq!(is_permanent, permanent, "{e:?}");
    if !permanent {
        assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    }
    assert!(m.starts_with(prefix), "{e:?} should start with {prefix:?}");
    assert!(
        !m.contains(TOKEN) && !m.contains(WRONG_TOKEN),
        "a token leaked: {e:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_at_discover_is_invalid_credentials() {
    let (provider, h) = setup(credential_based()).await;
    let r = provider
        .discover(SYSTEM_TYPE, &connection(&h.address, WRONG_TOKEN))
        .await;
    assert_prefix(r, true, "invalid_credentials: ");
    // The token did travel as a bearer token.
    let seen = h.fake.with(|s| s.bearer_seen.clone());
    assert_eq!(seen, [format!("Bearer {WRONG_TOKEN}")]);
    // Without a token at all, the same.
    let mut conn = connection(&h.address, TOKEN);
    conn.credentials = Credentials::default();
    assert_prefix(
        provider.discover(SYSTEM_TYPE, &conn).await,
        true,
        "invalid_credentials: ",
    );
}

#[tokio::test]
async fn a_wrong_token_on_a_stored_system_is_transient_invalid_credentials() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    if let Ok(mut m) = h.links.0.lock()
        && let Some(l) = m.get_mut(&site.system.id)
    {
        l.credentials = credentials(WRONG_TOKEN);
    }
    let r = provider
        .read_back(&site.system, keygate_domain::ids::AccessMethodId::new())
        .await;
    assert_prefix(r, false, "invalid_credentials: ");
}

#[tokio::test]
async fn a_stored_system_whose_connector_is_down_is_provider_unreachable() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    if let Ok(mut m) = h.links.0.lock()
        && let Some(l) = m.get_mut(&site.system.id)
    {
        l.settings
            .insert("address".into(), format!("http://127.0.0.1:{port}"));
    }
    let r = provider
        .read_back(&site.system, keygate_domain::ids::AccessMethodId::new())
        .await;
    assert_prefix(r, false, "provider_unreachable: ");
}

#[tokio::test]
async fn a_connector_that_answers_unavailable_is_an_ordinary_transient_fault() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    h.fake.inject(None, Fault::Unavailable);
    let job = c::provision_job(&site, AccessMethodMode::Code).expect("a code job");
    let r = provider.provision(&site.system, &job, &c::holder()).await;
    match r {
        Err(ProviderError::Transient(m)) => {
            assert!(!m.starts_with("provider_unreachable"), "{m}")
        }
        other => panic!("want a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_connector_is_provider_unreachable() {
    // A port nothing listens on: bound, then released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let provider = ConnectorProvider::new(Arc::new(Links::default()));
    let started = Instant::now();
    let r = provider
        .discover(
            SYSTEM_TYPE,
            &connection(&format!("http://127.0.0.1:{port}"), TOKEN),
        )
        .await;
    assert_prefix(r, false, "provider_unreachable: ");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn malformed_or_unknown_settings_are_refused() {
    let provider = ConnectorProvider::new(Arc::new(Links::default()));
    let base = connection("http://127.0.0.1:9", TOKEN);
    type Change = Box<dyn Fn(&mut Connection)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "address",
            Box::new(|c| {
                c.settings.remove("address");
            }),
        ),
        (
            "address",
            Box::new(|c| {
                c.settings.insert("address".into(), "not a url".into());
            }),
        ),
        (
            "address",
            Box::new(|c| {
                c.settings
                    .insert("address".into(), "ftp://127.0.0.1:9".into());
            }),
        ),
        (
            "timeout_ms",
            Box::new(|c| {
                c.settings.insert("timeout_ms".into(), "50".into());
            }),
        ),
        (
            "timeout_ms",
            Box::new(|c| {
                c.settings.insert("timeout_ms".into(), "soon".into());
            }),
        ),
        (
            "encode_timeout_ms",
            Box::new(|c| {
                c.settings.insert("encode_timeout_ms".into(), "-1".into());
            }),
        ),
        (
            "colour",
            Box::new(|c| {
                c.settings.insert("colour".into(), "red".into());
            }),
        ),
        (
            "api_key",
            Box::new(|c| {
                c.credentials =
                    Credentials::new(BTreeMap::from([("api_key".to_owned(), TOKEN.to_owned())]));
            }),
        ),
        (
            "token",
            Box::new(|c| {
                c.credentials =
                    Credentials::new(BTreeMap::from([("token".to_owned(), "a\nb".to_owned())]));
            }),
        ),
    ];
    for (name, change) in cases {
        let mut conn = base.clone();
        change(&mut conn);
        assert_prefix(
            provider.discover(SYSTEM_TYPE, &conn).await,
            true,
            &format!("invalid_connection_settings: {name}"),
        );
    }
}

#[tokio::test]
async fn duplicate_external_ids_in_a_listing_are_refused() {
    let mut p = credential_based();
    p.entrances.push(entrance("d3", true, false, false, false));
    let (provider, h) = setup(p).await;
    let r = provider
        .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
        .await;
    let e = r.expect_err("a duplicate must be refused");
    assert!(
        matches!(&e, ProviderError::Permanent(m) if m.contains("duplicate") && m.contains("d3")),
        "{e:?}"
    );

    let mut p = access_groups();
    p.groups.push(p.groups[0].clone());
    let (provider, h) = setup(p).await;
    let e = provider
        .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
        .await
        .expect_err("a duplicate group must be refused");
    assert!(matches!(e, ProviderError::Permanent(_)), "{e:?}");
}

#[tokio::test]
async fn unusable_capabilities_are_refused() {
    let mut p = credential_based();
    p.caps.permission_model = v1::PermissionModel::Unspecified as i32;
    let (provider, h) = setup(p).await;
    assert_prefix(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
            .await,
        true,
        "invalid_capabilities: ",
    );
    let mut p = credential_based();
    p.caps.supported_modes.clear();
    let (provider, h) = setup(p).await;
    assert_prefix(
        provider
            .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
            .await,
        true,
        "invalid_capabilities: ",
    );
}

#[tokio::test]
async fn a_hanging_connector_fails_within_the_timeout() {
    let mut p = credential_based();
    p.hang = Some(Duration::from_secs(10));
    let (provider, h) = setup(p).await;
    let mut conn = connection(&h.address, TOKEN);
    conn.settings.insert("timeout_ms".into(), "300".into());
    let started = Instant::now();
    let r = provider.discover(SYSTEM_TYPE, &conn).await;
    let took = started.elapsed();
    assert_prefix(r, false, "provider_unreachable: ");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn listings_are_followed_across_pages() {
    let (provider, h) = setup(credential_based()).await;
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
        .await
        .expect("discover");
    let ids: Vec<&str> = d.entrances.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(ids, ["d1", "d2", "d3", "d4", "d5"]);
    assert_eq!(h.fake.calls("SyncEntrances"), 3, "5 doors, 2 per page");
    assert_eq!(d.encoders.len(), 1);
    assert_eq!(d.system_type, SYSTEM_TYPE);
    assert_eq!(d.external_type, "connector_site");
    assert_eq!(d.name, "acme-doors-connector (connector)");
    assert_eq!(d.time_zone, "UTC");
    assert!(!d.is_virtual);

    let (provider, h) = setup(access_groups()).await;
    let d = provider
        .discover(SYSTEM_TYPE, &connection(&h.address, TOKEN))
        .await
        .expect("discover");
    assert_eq!(h.fake.calls("SyncAccessGroups"), 2, "2 groups, 1 per page");
    assert_eq!(
        h.fake.calls("SyncEncoders"),
        0,
        "no encoding, no encoder listing"
    );
    // The unknown entrance of "staff" is dropped; the rest resolve to indexes.
    assert_eq!(d.access_groups[0].entrance_indexes, [0, 1]);
    assert_eq!(d.access_groups[1].entrance_indexes, [0, 1, 2]);
}

#[tokio::test]
async fn a_pending_outcome_is_ambiguous_and_reads_back_as_nothing_yet() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code).expect("a code job");
    h.fake.inject(Some("IssueCredential"), Fault::Pending);
    let e = provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect_err("pending is not granted yet");
    assert!(
        matches!(&e, ProviderError::Ambiguous(m) if m.starts_with("pending: ")),
        "{e:?}"
    );
    assert_eq!(
        provider
            .read_back(&site.system, job.access_method_id)
            .await
            .expect("read back"),
        None
    );
    // The repeat converges on the same credential.
    let who = c::holder();
    provider
        .provision(&site.system, &job, &who)
        .await
        .expect("the repeat");
    assert_eq!(h.fake.credential_count(), 1);
}

#[tokio::test]
async fn unlock_and_encode_failures_are_typed() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let door = site
        .entrances
        .iter()
        .find(|e| e.can_unlock_with_cloud_key)
        .expect("a cloud door");
    let unlock = || UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: door.id,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(30)),
    };
    h.fake
        .inject(Some("UnlockEntrance"), Fault::Refused("unlock_failed"));
    let e = provider
        .unlock(&site.system, &unlock())
        .await
        .expect_err("refused");
    assert_eq!(e.error_type, "unlock_failed", "{e:?}");
    h.fake.inject(Some("UnlockEntrance"), Fault::Unavailable);
    let e = provider
        .unlock(&site.system, &unlock())
        .await
        .expect_err("unavailable");
    assert_eq!(e.error_type, "provider_unreachable", "{e:?}");
    let mut late = unlock();
    late.expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    let e = provider
        .unlock(&site.system, &late)
        .await
        .expect_err("expired");
    assert_eq!(e.error_type, "unlock_expired", "{e:?}");
    provider
        .unlock(&site.system, &unlock())
        .await
        .expect("unlocks");
    assert_eq!(h.fake.with(|s| s.unlocks.len()), 1, "one door opened");

    let job = c::provision_job(&site, AccessMethodMode::Card).expect("a card job");
    provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect("provision");
    let encode = EncodeJob {
        action_attempt_id: ActionAttemptId::new(),
        access_method_id: job.access_method_id,
        acs_system_id: site.system.id,
        acs_encoder_id: site.encoders[0].id,
    };
    h.fake.inject(
        Some("EncodeCredential"),
        Fault::Refused("encoder_not_online"),
    );
    let e = provider
        .encode(&site.system, &encode)
        .await
        .expect_err("offline");
    assert_eq!(e.error_type, "encoder_not_online", "{e:?}");
    let card = provider
        .encode(&site.system, &encode)
        .await
        .expect("encodes");
    assert!(card.acs_credential_id.starts_with("cred-"), "{card:?}");
}

#[tokio::test]
async fn a_refused_code_keeps_its_reason() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let job = c::provision_job(&site, AccessMethodMode::Code).expect("a code job");
    h.fake
        .inject(Some("IssueCredential"), Fault::Refused("code_unavailable"));
    let e = provider
        .provision(&site.system, &job, &c::holder())
        .await
        .expect_err("refused");
    assert_eq!(
        e,
        ProviderError::Permanent("code_unavailable: the provider refused the request".into())
    );
}

#[tokio::test]
async fn an_update_reissues_with_the_new_doors() {
    let (provider, h) = setup(credential_based()).await;
    let site = h.connect(&provider, SYSTEM_TYPE).await;
    let mut job = c::provision_job(&site, AccessMethodMode::Code).expect("a code job");
    let who = c::holder();
    let first = provider
        .provision(&site.system, &job, &who)
        .await
        .expect("provision");
    let removed = job.entrance_ids.pop().expect("two doors");
    job.removed_entrance_ids = vec![removed];
    job.update = true;
    let second = provider
        .provision(&site.system, &job, &who)
        .await
        .expect("update");
    assert_eq!(first.code, second.code, "the same credential");
    let held = provider
        .read_back(&site.system, job.access_method_id)
        .await
        .expect("read back")
        .expect("held");
    assert_eq!(held.entrance_ids, job.entrance_ids);
    assert_eq!(h.fake.credential_count(), 1);
}

#[tokio::test]
async fn the_token_never_prints() {
    let conn = connection("http://127.0.0.1:9", TOKEN);
    let printed = format!("{conn:?}");
    assert!(!printed.contains(TOKEN), "{printed}");
}
