//! The external gRPC connector (`keygate.connector.v1.AccessSystemConnectorService`): an
//! out-of-process adapter, in any language, reached over gRPC. This adapter only translates the
//! provider calls into the connector's RPCs and the connector's gRPC statuses into
//! [`ProviderError`]s / [`AttemptError`]s, by the rules written in `connector.proto`.
//!
//! Settings (`Connection::settings` at discover, `Link::settings` for a stored system):
//! - `address` (required): `http://host:port` or `https://host:port` (TLS with the native roots).
//! - `timeout_ms` (optional, default 10000, 100..=120000): the deadline of every call.
//! - `encode_timeout_ms` (optional, default 60000, 1000..=600000): the deadline of `EncodeCredential`.
//!
//! Credentials: `token` (optional), sent as `authorization: Bearer <token>` on every call, never
//! logged nor put in an error. Anything else, or a malformed value, is refused as
//! `Permanent("invalid_connection_settings: ...")`.
//!
//! References sent to the connector (what makes its changes idempotent):
//! - a user: the holder's `user_identity_id` (one provider user per person and system);
//! - a credential: the `access_method_id`;
//! - a group membership: `{access_method_id}:{access_group_id}`;
//! - an unlock or an encoding: the `action_attempt_id`.
//!
//! An update of a credential-based method (`ProvisionJob::update`, `removed_entrance_ids`) is the
//! same `IssueCredential` with the new entrance set: the connector converges the credential of
//! that reference onto it, so removed doors go with it.

use crate::vendor::attempt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard, RevokeJob, UnlockJob};
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator, PinCodeRules,
    ProviderRateLimit,
};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, EntranceId};
use keygate_domain::model::{
    AccessSystem, NewAccessGroup, NewAccessSystem, NewEncoder, NewEntrance,
};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use keygate_proto::connector as pb;
use keygate_proto::v1;
use pb::access_system_connector_service_client::AccessSystemConnectorServiceClient;
use time::OffsetDateTime;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt as _;

use crate::provider::{
    AccessSystemProvider, Connection, Credentials, Directory, HeldCredential, Holder, Link,
    ProviderError,
};

/// The one system type this adapter serves.
pub const SYSTEM_TYPE: &str = "connector";
pub use crate::vendor::{INVALID_CONNECTION_SETTINGS, INVALID_CREDENTIALS, PROVIDER_UNREACHABLE};

pub const INVALID_CAPABILITIES: &str = "invalid_capabilities";

/// The error type of a failed unlock or encoding that never reached (or never heard back from)
/// the connector.
pub const UNREACHABLE_ERROR_TYPE: &str = PROVIDER_UNREACHABLE;

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const DEFAULT_ENCODE_TIMEOUT: Duration = Duration::from_millis(60_000);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const UNLOCK_TIMEOUT_CAP: Duration = Duration::from_secs(10);
/// Most items a listing may have, and most pages it may take.
const MAX_ITEMS: usize = 10_000;
const MAX_PAGES: usize = 1_000;
/// The reason of an ABORTED change whose outcome the connector cannot tell.
const APPLIED_UNKNOWN: &str = "applied_unknown";

type Client = AccessSystemConnectorServiceClient<Channel>;

/// The gRPC connector adapter.
pub struct ConnectorProvider {
    directory: Arc<dyn Directory>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ConnectorProvider {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self {
            directory,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The cached channel of `address` (one HTTP/2 connection per connector, reused by every
    /// call), made lazily: nothing is dialled until the first call.
    fn channel(&self, address: &str) -> Result<Channel, ProviderError> {
        let mut channels = match self.channels.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let invalid = |why: String| {
            ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: address: {why}"))
        };
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if address.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| invalid(e.to_string()))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Everything needed to call the connector of one system.
    fn target(
        &self,
        acs_system_id: String,
        settings: &BTreeMap<String, String>,
        credentials: &Credentials,
    ) -> Result<Target, ProviderError> {
        let s = Settings::parse(settings)?;
        let token = bearer(credentials)?;
        Ok(Target {
            client: Client::new(self.channel(&s.address)?),
            token,
            timeout: s.timeout,
            encode_timeout: s.encode_timeout,
            acs_system_id,
        })
    }

    async fn stored(&self, system: &AccessSystem) -> Result<(Target, Link), ProviderError> {
        let link = self.directory.link(system).await?;
        let target = self.target(system.id.to_string(), &link.settings, &link.credentials)?;
        Ok((target, link))
    }
}

/// The parsed settings of a connector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    address: String,
    timeout: Duration,
    encode_timeout: Duration,
}

impl Settings {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let invalid = |name: &str, why: &str| {
            ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: {name}: {why}"))
        };
        for name in settings.keys() {
            if !matches!(
                name.as_str(),
                "address" | "timeout_ms" | "encode_timeout_ms"
            ) {
                return Err(invalid(name, "unknown setting"));
            }
        }
        let address = settings
            .get("address")
            .map(|a| a.trim())
            .ok_or_else(|| invalid("address", "required"))?;
        let uri: tonic::codegen::http::Uri = address
            .parse()
            .map_err(|_| invalid("address", "not a URI"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(invalid("address", "the scheme must be http or https"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("address", "no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                "address",
                "must be scheme://host:port, without a path",
            ));
        }
        let ms =
            |name: &str, default: Duration, range: std::ops::RangeInclusive<u64>| match settings
                .get(name)
            {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if range.contains(&n) => Ok(Duration::from_millis(n)),
                    _ => Err(invalid(
                        name,
                        &format!(
                            "must be a whole number of milliseconds in {}..={}",
                            range.start(),
                            range.end()
                        ),
                    )),
                },
            };
        Ok(Self {
            address: address.trim_end_matches('/').to_owned(),
            timeout: ms("timeout_ms", DEFAULT_TIMEOUT, 100..=120_000)?,
            encode_timeout: ms("encode_timeout_ms", DEFAULT_ENCODE_TIMEOUT, 1_000..=600_000)?,
        })
    }
}

/// The `authorization` value of the credentials' `token`, marked sensitive.
fn bearer(credentials: &Credentials) -> Result<Option<MetadataValue<Ascii>>, ProviderError> {
    for name in credentials.values().keys() {
        if name != "token" {
            return Err(ProviderError::Permanent(format!(
                "{INVALID_CONNECTION_SETTINGS}: {name}: unknown credential"
            )));
        }
    }
    let Some(token) = credentials.get("token") else {
        return Ok(None);
    };
    let token = token.trim();
    let bad = || {
        ProviderError::Permanent(format!(
            "{INVALID_CONNECTION_SETTINGS}: token: empty or not a valid header value"
        ))
    };
    if token.is_empty() {
        return Err(bad());
    }
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| bad())?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Whether a call changes something (a lost answer may have been applied) or only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Change,
}

/// One system's connector: a client on the cached channel and the call settings.
#[derive(Clone)]
struct Target {
    client: Client,
    token: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    encode_timeout: Duration,
    acs_system_id: String,
}

impl Target {
    /// Sends one RPC with the bearer token and a deadline (also enforced here, for a
    /// connector that ignores `grpc-timeout`).
    async fn call<T, R, Fut>(
        &self,
        rpc: &'static str,
        deadline: Duration,
        msg: T,
        f: impl FnOnce(Client, Request<T>) -> Fut,
    ) -> Result<R, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        tracing::Span::current().record("rpc", rpc);
        let mut request = Request::new(msg);
        request.set_timeout(deadline);
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        let r = match tokio::time::timeout(deadline, f(self.client.clone(), request)).await {
            Ok(r) => r.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} ms",
                deadline.as_millis()
            ))),
        };
        if let Err(s) = &r {
            tracing::debug!(rpc, code = ?s.code(), "connector call failed");
        }
        r
    }

    fn acs(&self) -> String {
        self.acs_system_id.clone()
    }

    async fn read_credential(
        &self,
        reference_id: String,
    ) -> Result<Option<pb::ProviderCredentialState>, ProviderError> {
        let req = pb::ReadBackStateRequest {
            acs_system_id: self.acs(),
            reference_id,
            object_kind: pb::ObjectKind::Credential as i32,
            external_id: String::new(),
        };
        let rpc = "ReadBackState";
        let r = self
            .call(rpc, self.timeout, req, |mut c, r| async move {
                c.read_back_state(r).await
            })
            .await
            .map_err(|s| provider_error(rpc, &s, Kind::Read))?;
        if !r.exists {
            return Ok(None);
        }
        match r.state {
            Some(pb::read_back_state_response::State::Credential(c)) => Ok(Some(c)),
            _ => Err(ProviderError::Transient(format!(
                "{rpc}: the connector said a credential exists but sent no credential state"
            ))),
        }
    }

    async fn read_user(
        &self,
        reference_id: String,
        external_id: String,
    ) -> Result<Option<pb::ProviderUserState>, ProviderError> {
        let req = pb::ReadBackStateRequest {
            acs_system_id: self.acs(),
            reference_id,
            object_kind: pb::ObjectKind::User as i32,
            external_id,
        };
        let rpc = "ReadBackState";
        let r = self
            .call(rpc, self.timeout, req, |mut c, r| async move {
                c.read_back_state(r).await
            })
            .await
            .map_err(|s| provider_error(rpc, &s, Kind::Read))?;
        if !r.exists {
            return Ok(None);
        }
        match r.state {
            Some(pb::read_back_state_response::State::User(u)) => Ok(Some(u)),
            _ => Err(ProviderError::Transient(format!(
                "{rpc}: the connector said a user exists but sent no user state"
            ))),
        }
    }

    /// Every access group of the connector, with the external ids of its entrances.
    async fn all_groups(
        &self,
        map: impl Fn(&'static str, Status) -> ProviderError,
    ) -> Result<Vec<pb::ProviderAccessGroup>, ProviderError> {
        let reference = uuid::Uuid::new_v4().to_string();
        let rpc = "SyncAccessGroups";
        list_all("access groups", |page_token| {
            let req = pb::SyncAccessGroupsRequest {
                acs_system_id: self.acs(),
                reference_id: reference.clone(),
                page_size: 0,
                page_token,
            };
            let map = &map;
            async move {
                let r = self
                    .call(rpc, self.timeout, req, |mut c, r| async move {
                        c.sync_access_groups(r).await
                    })
                    .await
                    .map_err(|s| map(rpc, s))?;
                Ok((r.access_groups, r.next_page_token))
            }
        })
        .await
    }
}

/// Follows `next_page_token` until it is empty, within [`MAX_PAGES`] and [`MAX_ITEMS`].
async fn list_all<T, F, Fut>(what: &str, mut page: F) -> Result<Vec<T>, ProviderError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), ProviderError>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    let mut seen = HashSet::new();
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token).await?;
        all.extend(items);
        if all.len() > MAX_ITEMS {
            return Err(ProviderError::Permanent(format!(
                "too many {what}: more than {MAX_ITEMS}"
            )));
        }
        if next.is_empty() {
            return Ok(all);
        }
        if !seen.insert(next.clone()) {
            return Err(ProviderError::Permanent(format!(
                "the connector's listing of {what} repeats a page token"
            )));
        }
        token = next;
    }
    Err(ProviderError::Permanent(format!(
        "too many {what}: more than {MAX_PAGES} pages"
    )))
}

/// The reason of a status: `google.rpc.ErrorInfo.reason` in its details, else a snake_case
/// prefix of its message before a colon.
fn reason_of(s: &Status) -> Option<String> {
    if let Some(info) = s.get_details_error_info()
        && !info.reason.is_empty()
    {
        return Some(info.reason);
    }
    let (head, _) = s.message().split_once(':')?;
    let snake = !head.is_empty()
        && head.len() <= 64
        && head
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    snake.then(|| head.to_owned())
}

/// The status message, prefixed with its reason when it has one and does not already say it.
fn describe(s: &Status) -> String {
    let msg = s.message().trim();
    let msg = if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        msg.to_owned()
    };
    match reason_of(s) {
        Some(r) if !msg.starts_with(&r) => format!("{r}: {msg}"),
        _ => msg,
    }
}

/// The error class of a failed RPC, by the rules of `connector.proto`.
fn provider_error(rpc: &str, s: &Status, kind: Kind) -> ProviderError {
    let what = describe(s);
    match s.code() {
        Code::FailedPrecondition | Code::InvalidArgument | Code::Unimplemented | Code::NotFound => {
            ProviderError::Permanent(what)
        }
        Code::Aborted if reason_of(s).as_deref() == Some(APPLIED_UNKNOWN) => {
            ProviderError::Ambiguous(format!("{rpc}: {what}"))
        }
        Code::DeadlineExceeded | Code::Cancelled if kind == Kind::Change => {
            ProviderError::Ambiguous(format!("{rpc}: {what}"))
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            ProviderError::Transient(format!("{INVALID_CREDENTIALS}: {rpc}: {what}"))
        }
        // Made by this client, not answered by the connector: the connection could not be
        // opened (refused, reset, no route). Nothing was sent; the orchestrator waits without
        // spending attempts.
        Code::Unavailable if std::error::Error::source(s).is_some() => {
            ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {rpc}: {what}"))
        }
        _ => ProviderError::Transient(format!("{rpc}: {what}")),
    }
}

/// At discover, credentials and reachability are what the person connecting must fix.
fn discover_error(rpc: &'static str, s: Status) -> ProviderError {
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            ProviderError::Permanent(format!("{INVALID_CREDENTIALS}: {rpc}: {}", describe(&s)))
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {rpc}: {}", describe(&s)))
        }
        _ => provider_error(rpc, &s, Kind::Read),
    }
}

/// What a changing RPC's outcome means: applied, or not confirmed yet (`Ambiguous`, so the
/// orchestrator reads back and repeats by reference).
fn confirmed(rpc: &str, outcome: Option<&pb::ProviderOutcome>) -> Result<(), ProviderError> {
    let status = outcome
        .and_then(|o| pb::OutcomeStatus::try_from(o.status).ok())
        .unwrap_or(pb::OutcomeStatus::Unspecified);
    let message = outcome.map_or("", |o| o.provider_message.as_str());
    match status {
        pb::OutcomeStatus::Applied | pb::OutcomeStatus::AlreadyApplied => Ok(()),
        pb::OutcomeStatus::Pending => Err(ProviderError::Ambiguous(format!(
            "pending: {rpc}: the provider applies it later {message}"
        ))),
        pb::OutcomeStatus::Unspecified => Err(ProviderError::Ambiguous(format!(
            "{APPLIED_UNKNOWN}: {rpc}: no outcome status {message}"
        ))),
    }
}

fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

fn from_ts(t: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let base = OffsetDateTime::from_unix_timestamp(t.seconds).ok()?;
    Some(base + time::Duration::nanoseconds(i64::from(t.nanos)))
}

fn schedule(holder: &Holder) -> v1::AccessSchedule {
    v1::AccessSchedule {
        starts_at: Some(ts(holder.starts_at)),
        ends_at: holder.ends_at.map(ts),
    }
}

fn mode_to_proto(m: AccessMethodMode) -> v1::AccessMethodMode {
    match m {
        AccessMethodMode::Card => v1::AccessMethodMode::Card,
        AccessMethodMode::Code => v1::AccessMethodMode::Code,
        AccessMethodMode::MobileKey => v1::AccessMethodMode::MobileKey,
        AccessMethodMode::CloudKey => v1::AccessMethodMode::CloudKey,
    }
}

fn mode_from_proto(m: i32) -> Option<AccessMethodMode> {
    match v1::AccessMethodMode::try_from(m).ok()? {
        v1::AccessMethodMode::Card => Some(AccessMethodMode::Card),
        v1::AccessMethodMode::Code => Some(AccessMethodMode::Code),
        v1::AccessMethodMode::MobileKey => Some(AccessMethodMode::MobileKey),
        v1::AccessMethodMode::CloudKey => Some(AccessMethodMode::CloudKey),
        v1::AccessMethodMode::Unspecified => None,
    }
}

/// The connector's capability descriptor, as Keygate plans from it. Refuses what Keygate could
/// not plan with (no model, no mode, codes without rules, an unusable rate limit).
pub fn capabilities_from_proto(
    c: Option<&v1::CapabilityDescriptor>,
) -> Result<CapabilityDescriptor, ProviderError> {
    let invalid = |why: String| ProviderError::Permanent(format!("{INVALID_CAPABILITIES}: {why}"));
    let c = c.ok_or_else(|| invalid("no capability descriptor".into()))?;
    let permission_model = match v1::PermissionModel::try_from(c.permission_model) {
        Ok(v1::PermissionModel::AccessGroups) => PermissionModel::AccessGroups,
        Ok(v1::PermissionModel::CredentialBased) => PermissionModel::CredentialBased,
        Ok(v1::PermissionModel::ReservationOverride) => PermissionModel::ReservationOverride,
        _ => {
            return Err(invalid(
                "the permission model is unspecified or unknown".into(),
            ));
        }
    };
    let mut supported_modes = Vec::new();
    for m in &c.supported_modes {
        let mode = mode_from_proto(*m)
            .ok_or_else(|| invalid(format!("unspecified or unknown mode {m}")))?;
        if !supported_modes.contains(&mode) {
            supported_modes.push(mode);
        }
    }
    if supported_modes.is_empty() {
        return Err(invalid("no supported mode".into()));
    }
    let pin_code_rules = if supported_modes.contains(&AccessMethodMode::Code) {
        let r = c
            .pin_code_rules
            .as_ref()
            .ok_or_else(|| invalid("codes are supported but there are no PIN code rules".into()))?;
        let generator = match v1::PinCodeGenerator::try_from(r.generator) {
            Ok(v1::PinCodeGenerator::Provider) => PinCodeGenerator::Provider,
            Ok(v1::PinCodeGenerator::Keygate) => PinCodeGenerator::Keygate,
            _ => return Err(invalid("the PIN code generator is unspecified".into())),
        };
        let len = |n: i32| u8::try_from(n).ok().filter(|n| (1..=32).contains(n));
        let (Some(min_length), Some(max_length)) = (len(r.min_length), len(r.max_length)) else {
            return Err(invalid(format!(
                "PIN lengths {}..{} out of 1..=32",
                r.min_length, r.max_length
            )));
        };
        if min_length > max_length {
            return Err(invalid(format!(
                "PIN min_length {min_length} above max_length {max_length}"
            )));
        }
        Some(PinCodeRules {
            generator,
            min_length,
            max_length,
            can_request_code: r.can_request_code,
            is_code_per_entrance: r.is_code_per_entrance,
        })
    } else {
        None
    };
    if c.is_card_encoding_required && !supported_modes.contains(&AccessMethodMode::Card) {
        return Err(invalid(
            "card encoding is required but cards are not supported".into(),
        ));
    }
    let rate_limit = c
        .rate_limit
        .as_ref()
        .ok_or_else(|| invalid("no rate limit".into()))?;
    let burst = u32::try_from(rate_limit.burst)
        .ok()
        .filter(|b| *b >= 1)
        .ok_or_else(|| invalid(format!("rate limit burst {}", rate_limit.burst)))?;
    if !(rate_limit.requests_per_second.is_finite() && rate_limit.requests_per_second > 0.0) {
        return Err(invalid(format!(
            "rate limit of {} requests per second",
            rate_limit.requests_per_second
        )));
    }
    Ok(CapabilityDescriptor {
        permission_model,
        supported_modes,
        pin_code_rules,
        is_card_encoding_required: c.is_card_encoding_required,
        can_remote_unlock: c.can_remote_unlock,
        can_issue_mobile_keys: c.can_issue_mobile_keys,
        can_assign_entrances_directly: c.can_assign_entrances_directly,
        can_schedule_credentials: c.can_schedule_credentials,
        rate_limit: ProviderRateLimit {
            requests_per_second: rate_limit.requests_per_second,
            burst,
        },
    })
}

/// Refuses a listing with an empty or repeated external id.
fn unique_ids<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), ProviderError> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err(ProviderError::Permanent(format!(
                "the connector listed {what} with an empty external id"
            )));
        }
        if !seen.insert(id) {
            return Err(ProviderError::Permanent(format!(
                "the connector listed {what} with a duplicate external id {id:?}"
            )));
        }
    }
    Ok(())
}

/// The `AttemptError` of a failed unlock or encoding: the connector's reason when it gave one,
/// else by code (`fallback` for a refusal, `provider_unreachable` for the transient classes).
fn attempt_error(rpc: &str, s: &Status, fallback: &str, deadline_type: &str) -> AttemptError {
    let message = format!("{rpc}: {}", describe(s));
    let reason = reason_of(s);
    let error_type = match s.code() {
        Code::Aborted if reason.as_deref() == Some(APPLIED_UNKNOWN) => {
            keygate_domain::action::unlock_errors::NOT_CONFIRMED.to_owned()
        }
        Code::DeadlineExceeded | Code::Cancelled => deadline_type.to_owned(),
        Code::Unauthenticated | Code::PermissionDenied => INVALID_CREDENTIALS.to_owned(),
        Code::FailedPrecondition => reason.unwrap_or_else(|| fallback.to_owned()),
        Code::InvalidArgument | Code::Unimplemented | Code::NotFound => fallback.to_owned(),
        _ => UNREACHABLE_ERROR_TYPE.to_owned(),
    };
    AttemptError {
        error_type,
        message,
    }
}

/// An unlock's or encoding's typed error from a failure before the answer.
fn from_provider_error(e: ProviderError) -> AttemptError {
    crate::vendor::attempt_from(e, UNREACHABLE_ERROR_TYPE)
}

#[async_trait]
impl AccessSystemProvider for ConnectorProvider {
    fn system_types(&self) -> Vec<String> {
        vec![SYSTEM_TYPE.to_owned()]
    }

    #[tracing::instrument(skip_all, fields(system_type = %system_type, acs_system_id, rpc))]
    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        if system_type != SYSTEM_TYPE {
            return Err(ProviderError::Permanent(format!(
                "{system_type:?} is not served by the connector adapter"
            )));
        }
        let acs = connection
            .acs_system_id
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::Span::current().record("acs_system_id", acs.as_str());
        let t = self.target(acs, &connection.settings, &connection.credentials)?;
        let reference = uuid::Uuid::new_v4().to_string();

        let rpc = "GetCapabilities";
        let caps = t
            .call(
                rpc,
                t.timeout,
                pb::GetCapabilitiesRequest {
                    acs_system_id: t.acs(),
                    reference_id: reference.clone(),
                },
                |mut c, r| async move { c.get_capabilities(r).await },
            )
            .await
            .map_err(|s| discover_error(rpc, s))?;
        let capabilities = capabilities_from_proto(caps.capabilities.as_ref())?;

        let rpc = "SyncEntrances";
        let listed = list_all("entrances", |page_token| {
            let req = pb::SyncEntrancesRequest {
                acs_system_id: t.acs(),
                reference_id: reference.clone(),
                page_size: 0,
                page_token,
            };
            let t = &t;
            async move {
                let r = t
                    .call(rpc, t.timeout, req, |mut c, r| async move {
                        c.sync_entrances(r).await
                    })
                    .await
                    .map_err(|s| discover_error(rpc, s))?;
                Ok((r.entrances, r.next_page_token))
            }
        })
        .await?;
        unique_ids("entrances", listed.iter().map(|e| e.external_id.as_str()))?;
        let caps_ref = &capabilities;
        let entrances: Vec<NewEntrance> = listed
            .into_iter()
            .map(|e| {
                // An entrance cannot do what its system cannot: clamp rather than mislead.
                let card = e.can_unlock_with_card && caps_ref.supports(AccessMethodMode::Card);
                let code = e.can_unlock_with_code && caps_ref.supports(AccessMethodMode::Code);
                let mobile =
                    e.can_unlock_with_mobile_key && caps_ref.supports(AccessMethodMode::MobileKey);
                let cloud = e.can_unlock_with_cloud_key && caps_ref.can_remote_unlock;
                if (card, code, mobile, cloud)
                    != (
                        e.can_unlock_with_card,
                        e.can_unlock_with_code,
                        e.can_unlock_with_mobile_key,
                        e.can_unlock_with_cloud_key,
                    )
                {
                    tracing::warn!(
                        external_id = %e.external_id,
                        "an entrance claims a mode its system does not support; dropped"
                    );
                }
                NewEntrance {
                    external_id: e.external_id,
                    display_name: e.display_name,
                    can_unlock_with_card: card,
                    can_unlock_with_code: code,
                    can_unlock_with_mobile_key: mobile,
                    can_unlock_with_cloud_key: cloud,
                    can_belong_to_reservation: e.can_belong_to_reservation,
                }
            })
            .collect();
        let index: HashMap<&str, usize> = entrances
            .iter()
            .enumerate()
            .map(|(i, e)| (e.external_id.as_str(), i))
            .collect();

        let access_groups = if capabilities.permission_model == PermissionModel::AccessGroups {
            let groups = t.all_groups(discover_error).await?;
            unique_ids(
                "access groups",
                groups.iter().map(|g| g.external_id.as_str()),
            )?;
            groups
                .into_iter()
                .map(|g| {
                    let mut entrance_indexes = Vec::new();
                    for id in &g.entrance_external_ids {
                        match index.get(id.as_str()) {
                            Some(i) if !entrance_indexes.contains(i) => entrance_indexes.push(*i),
                            Some(_) => {}
                            None => tracing::warn!(
                                group = %g.external_id,
                                entrance = %id,
                                "an access group names an entrance the listing does not have; dropped"
                            ),
                        }
                    }
                    NewAccessGroup {
                        external_id: g.external_id,
                        display_name: g.display_name,
                        entrance_indexes,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };

        let encoders = if capabilities.is_card_encoding_required {
            let rpc = "SyncEncoders";
            let listed = list_all("encoders", |page_token| {
                let req = pb::SyncEncodersRequest {
                    acs_system_id: t.acs(),
                    reference_id: reference.clone(),
                    page_size: 0,
                    page_token,
                };
                let t = &t;
                async move {
                    let r = t
                        .call(rpc, t.timeout, req, |mut c, r| async move {
                            c.sync_encoders(r).await
                        })
                        .await
                        .map_err(|s| discover_error(rpc, s))?;
                    Ok((r.encoders, r.next_page_token))
                }
            })
            .await?;
            unique_ids("encoders", listed.iter().map(|e| e.external_id.as_str()))?;
            listed
                .into_iter()
                .map(|e| NewEncoder {
                    external_id: e.external_id,
                    display_name: e.display_name,
                    is_online: e.is_online,
                })
                .collect()
        } else {
            Vec::new()
        };

        let connector_name = if caps.connector_name.trim().is_empty() {
            "Connector"
        } else {
            caps.connector_name.trim()
        };
        Ok(NewAccessSystem {
            name: connection
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("{connector_name} (connector)")),
            external_type: if caps.external_type.trim().is_empty() {
                "connector_site".to_owned()
            } else {
                caps.external_type.trim().to_owned()
            },
            system_type: SYSTEM_TYPE.to_owned(),
            is_virtual: false,
            time_zone: connection
                .time_zone
                .clone()
                .filter(|z| !z.trim().is_empty())
                .unwrap_or_else(|| "UTC".to_owned()),
            capabilities,
            entrances,
            access_groups,
            encoders,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, rpc))]
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        let (t, link) = self.stored(system).await?;
        let entrance_external_ids = job
            .entrance_ids
            .iter()
            .map(|id| {
                link.entrances.get(id).cloned().ok_or_else(|| {
                    ProviderError::Permanent(format!("entrance_not_synced: entrance {id}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let groups = job
            .access_group_ids
            .iter()
            .map(|id| {
                link.access_groups
                    .get(id)
                    .map(|ext| (*id, ext.clone()))
                    .ok_or_else(|| {
                        ProviderError::Permanent(format!(
                            "access_group_not_synced: access group {id}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let rpc = "EnsureUser";
        let user = t
            .call(
                rpc,
                t.timeout,
                pb::EnsureUserRequest {
                    acs_system_id: t.acs(),
                    reference_id: holder.user_identity_id.to_string(),
                    full_name: holder.full_name.clone(),
                    email_address: holder.email_address.clone().unwrap_or_default(),
                    phone_number: holder.phone_number.clone().unwrap_or_default(),
                    access_schedule: Some(schedule(holder)),
                },
                |mut c, r| async move { c.ensure_user(r).await },
            )
            .await
            .map_err(|s| provider_error(rpc, &s, Kind::Change))?;
        confirmed(rpc, user.outcome.as_ref())?;
        if user.user_external_id.is_empty() {
            return Err(ProviderError::Ambiguous(format!(
                "{rpc}: the connector returned no user external id"
            )));
        }

        let by_groups = system.capabilities.permission_model == PermissionModel::AccessGroups;
        if by_groups {
            for (group_id, group_external_id) in &groups {
                let rpc = "GrantAccess";
                let r = t
                    .call(
                        rpc,
                        t.timeout,
                        pb::GrantAccessRequest {
                            acs_system_id: t.acs(),
                            reference_id: format!("{}:{group_id}", job.access_method_id),
                            user_external_id: user.user_external_id.clone(),
                            schedule: Some(schedule(holder)),
                            target: Some(pb::grant_access_request::Target::AccessGroupExternalId(
                                group_external_id.clone(),
                            )),
                        },
                        |mut c, r| async move { c.grant_access(r).await },
                    )
                    .await
                    .map_err(|s| provider_error(rpc, &s, Kind::Change))?;
                confirmed(rpc, r.outcome.as_ref())?;
            }
        }

        let rpc = "IssueCredential";
        let issued = t
            .call(
                rpc,
                t.timeout,
                pb::IssueCredentialRequest {
                    acs_system_id: t.acs(),
                    reference_id: job.access_method_id.to_string(),
                    user_external_id: user.user_external_id.clone(),
                    mode: mode_to_proto(job.mode) as i32,
                    entrance_external_ids: if by_groups {
                        Vec::new()
                    } else {
                        entrance_external_ids
                    },
                    schedule: Some(schedule(holder)),
                    code: if job.mode == AccessMethodMode::Code {
                        job.requested_code.clone().unwrap_or_default()
                    } else {
                        String::new()
                    },
                    card_number: String::new(),
                    reservation_key: String::new(),
                },
                |mut c, r| async move { c.issue_credential(r).await },
            )
            .await
            .map_err(|s| provider_error(rpc, &s, Kind::Change))?;
        confirmed(rpc, issued.outcome.as_ref())?;

        let code = (!issued.code.is_empty())
            .then(|| issued.code.clone())
            .or_else(|| {
                (job.mode == AccessMethodMode::Code)
                    .then(|| job.requested_code.clone())
                    .flatten()
            });
        Ok(ProvisionResult {
            doors: job
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code,
            card_encoding_required: issued.is_card_encoding_required,
            client_session_token: None,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, rpc))]
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        let (t, link) = self.stored(system).await?;
        let Some(credential) = t.read_credential(job.access_method_id.to_string()).await? else {
            return Ok(());
        };
        // Group memberships first: the credential is how a repeat finds the user again.
        if system.capabilities.permission_model == PermissionModel::AccessGroups
            && !credential.user_external_id.is_empty()
        {
            let user = t
                .read_user(String::new(), credential.user_external_id.clone())
                .await?;
            let groups_by_external: HashMap<&str, _> = link
                .access_groups
                .iter()
                .map(|(id, ext)| (ext.as_str(), *id))
                .collect();
            for ext in user
                .map(|u| u.access_group_external_ids)
                .unwrap_or_default()
            {
                let Some(group_id) = groups_by_external.get(ext.as_str()) else {
                    continue;
                };
                let rpc = "RevokeAccess";
                let r = t
                    .call(
                        rpc,
                        t.timeout,
                        pb::RevokeAccessRequest {
                            acs_system_id: t.acs(),
                            reference_id: format!("{}:{group_id}", job.access_method_id),
                            user_external_id: credential.user_external_id.clone(),
                            target: Some(pb::revoke_access_request::Target::AccessGroupExternalId(
                                ext.clone(),
                            )),
                        },
                        |mut c, r| async move { c.revoke_access(r).await },
                    )
                    .await
                    .map_err(|s| provider_error(rpc, &s, Kind::Change))?;
                confirmed(rpc, r.outcome.as_ref())?;
            }
        }
        let rpc = "RevokeCredential";
        let r = t
            .call(
                rpc,
                t.timeout,
                pb::RevokeCredentialRequest {
                    acs_system_id: t.acs(),
                    reference_id: job.access_method_id.to_string(),
                    credential_external_id: credential.external_id.clone(),
                },
                |mut c, r| async move { c.revoke_credential(r).await },
            )
            .await
            .map_err(|s| provider_error(rpc, &s, Kind::Change))?;
        confirmed(rpc, r.outcome.as_ref())
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, %access_method_id, rpc))]
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        let (t, link) = self.stored(system).await?;
        let Some(c) = t.read_credential(access_method_id.to_string()).await? else {
            return Ok(None);
        };
        // Accepted but not applied yet (a pending issue): nothing works yet.
        if !c.is_issued && !c.is_card_encoding_required {
            return Ok(None);
        }
        let by_external: HashMap<&str, EntranceId> = link
            .entrances
            .iter()
            .map(|(id, ext)| (ext.as_str(), *id))
            .collect();
        let mut external: BTreeSet<String> = c.entrance_external_ids.iter().cloned().collect();
        if system.capabilities.permission_model == PermissionModel::AccessGroups
            && !c.user_external_id.is_empty()
        {
            // Through groups: the doors of the groups the user is in, as the connector lists them.
            if let Some(user) = t
                .read_user(String::new(), c.user_external_id.clone())
                .await?
            {
                let member: HashSet<&str> = user
                    .access_group_external_ids
                    .iter()
                    .map(String::as_str)
                    .collect();
                if !member.is_empty() {
                    let groups = t
                        .all_groups(|rpc, s| provider_error(rpc, &s, Kind::Read))
                        .await?;
                    for g in groups
                        .into_iter()
                        .filter(|g| member.contains(g.external_id.as_str()))
                    {
                        external.extend(g.entrance_external_ids);
                    }
                }
            }
        }
        let mut entrance_ids = Vec::new();
        for ext in &external {
            match by_external.get(ext.as_str()) {
                Some(id) => entrance_ids.push(*id),
                None => tracing::warn!(
                    entrance = %ext,
                    "the credential opens an entrance Keygate does not know; ignored"
                ),
            }
        }
        let schedule = c.schedule.as_ref();
        Ok(Some(HeldCredential {
            entrance_ids,
            starts_at: schedule
                .and_then(|s| s.starts_at.as_ref())
                .and_then(from_ts),
            ends_at: schedule.and_then(|s| s.ends_at.as_ref()).and_then(from_ts),
            code: (!c.code.is_empty()).then_some(c.code),
            card_encoding_required: c.is_card_encoding_required,
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_entrance_id = %job.acs_entrance_id, rpc))]
    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        use keygate_domain::action::unlock_errors;
        if !system.capabilities.can_remote_unlock {
            return Err(attempt(
                unlock_errors::NOT_SUPPORTED,
                "this access system cannot unlock remotely",
            ));
        }
        let (t, link) = self.stored(system).await.map_err(from_provider_error)?;
        let Some(entrance) = link.entrances.get(&job.acs_entrance_id).cloned() else {
            return Err(attempt(
                "entrance_not_synced",
                format!("entrance {} has no external id", job.acs_entrance_id),
            ));
        };
        let mut deadline = t.timeout.min(UNLOCK_TIMEOUT_CAP);
        if let Some(expires_at) = job.expires_at {
            let left = expires_at - OffsetDateTime::now_utc();
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            if left.is_zero() {
                return Err(attempt(
                    unlock_errors::EXPIRED,
                    "the unlock's deadline passed before it was sent",
                ));
            }
            deadline = deadline.min(left);
        }
        let rpc = "UnlockEntrance";
        let r = t
            .call(
                rpc,
                deadline,
                pb::UnlockEntranceRequest {
                    acs_system_id: t.acs(),
                    reference_id: job.action_attempt_id.to_string(),
                    entrance_external_id: entrance,
                    user_external_id: String::new(),
                },
                |mut c, r| async move { c.unlock_entrance(r).await },
            )
            .await
            .map_err(|s| attempt_error(rpc, &s, "unlock_failed", UNREACHABLE_ERROR_TYPE))?;
        let status = r
            .outcome
            .as_ref()
            .and_then(|o| pb::OutcomeStatus::try_from(o.status).ok())
            .unwrap_or(pb::OutcomeStatus::Unspecified);
        match status {
            // A pending unlock was accepted by the provider, which opens within its own deadline.
            pb::OutcomeStatus::Applied
            | pb::OutcomeStatus::AlreadyApplied
            | pb::OutcomeStatus::Pending => Ok(()),
            pb::OutcomeStatus::Unspecified => Err(attempt(
                unlock_errors::NOT_CONFIRMED,
                format!("{rpc}: the connector did not say whether the door unlocked"),
            )),
        }
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_encoder_id = %job.acs_encoder_id, rpc))]
    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        if !system.capabilities.is_card_encoding_required {
            return Err(attempt(
                "credential_cannot_be_reissued",
                "this access system does not encode cards",
            ));
        }
        let (t, link) = self.stored(system).await.map_err(from_provider_error)?;
        let Some(encoder) = link.encoders.get(&job.acs_encoder_id).cloned() else {
            return Err(attempt(
                "encoder_not_online",
                format!("encoder {} has no external id", job.acs_encoder_id),
            ));
        };
        let credential = t
            .read_credential(job.access_method_id.to_string())
            .await
            .map_err(from_provider_error)?
            .ok_or_else(|| {
                attempt(
                    "no_credential_on_encoder",
                    "the access system holds no credential for this access method yet",
                )
            })?;
        let rpc = "EncodeCredential";
        let r = t
            .call(
                rpc,
                t.encode_timeout,
                pb::EncodeCredentialRequest {
                    acs_system_id: t.acs(),
                    reference_id: job.action_attempt_id.to_string(),
                    credential_external_id: credential.external_id.clone(),
                    encoder_external_id: encoder,
                },
                |mut c, r| async move { c.encode_credential(r).await },
            )
            .await
            .map_err(|s| {
                attempt_error(
                    rpc,
                    &s,
                    "credential_cannot_be_reissued",
                    "encoder_communication_timeout",
                )
            })?;
        let status = r
            .outcome
            .as_ref()
            .and_then(|o| pb::OutcomeStatus::try_from(o.status).ok())
            .unwrap_or(pb::OutcomeStatus::Unspecified);
        if !matches!(
            status,
            pb::OutcomeStatus::Applied | pb::OutcomeStatus::AlreadyApplied
        ) {
            return Err(attempt(
                "encoder_communication_timeout",
                format!("{rpc}: the connector did not confirm the card was written ({status:?})"),
            ));
        }
        Ok(EncodedCard {
            acs_credential_id: if r.credential_external_id.is_empty() {
                credential.external_id
            } else {
                r.credential_external_id
            },
            card_number: if r.card_number.is_empty() {
                credential.card_number
            } else {
                r.card_number
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_are_checked() {
        let ok = Settings::parse(&settings(&[("address", "http://127.0.0.1:5000")]));
        assert_eq!(
            ok.map(|s| s.timeout),
            Ok(DEFAULT_TIMEOUT),
            "the default timeout"
        );
        for (bad, name) in [
            (settings(&[]), "address"),
            (settings(&[("address", "ftp://x:1")]), "address"),
            (settings(&[("address", "http://x:1/path")]), "address"),
            (
                settings(&[("address", "http://x:1"), ("timeout_ms", "5")]),
                "timeout_ms",
            ),
            (
                settings(&[("address", "http://x:1"), ("encode_timeout_ms", "soon")]),
                "encode_timeout_ms",
            ),
            (
                settings(&[("address", "http://x:1"), ("colour", "red")]),
                "colour",
            ),
        ] {
            match Settings::parse(&bad) {
                Err(ProviderError::Permanent(m)) => assert!(
                    m.starts_with(&format!("{INVALID_CONNECTION_SETTINGS}: {name}")),
                    "{m}"
                ),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    struct NoLinks;

    #[async_trait]
    impl Directory for NoLinks {
        async fn link(&self, _system: &AccessSystem) -> Result<Link, ProviderError> {
            Err(ProviderError::Permanent(
                "account_disconnected: none".into(),
            ))
        }
    }

    #[tokio::test]
    async fn one_channel_per_address_and_https_uses_tls() {
        let p = ConnectorProvider::new(Arc::new(NoLinks));
        let none = Credentials::default();
        for address in [
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/",
            "https://connector.example.com:443",
        ] {
            p.target(String::new(), &settings(&[("address", address)]), &none)
                .unwrap_or_else(|e| panic!("{address}: {e}"));
        }
        let channels = p.channels.lock().map(|c| c.len()).unwrap_or(0);
        assert_eq!(channels, 2, "the same address reuses its channel");
    }

    #[test]
    fn reasons_come_from_details_or_the_message() {
        let s = Status::aborted("applied_unknown: provider timed out");
        assert_eq!(reason_of(&s).as_deref(), Some(APPLIED_UNKNOWN));
        assert!(matches!(
            provider_error("X", &s, Kind::Change),
            ProviderError::Ambiguous(_)
        ));
        let s = Status::with_error_details(
            Code::FailedPrecondition,
            "the PIN is taken",
            tonic_types::ErrorDetails::with_error_info(
                "code_unavailable",
                "keygate.dev",
                HashMap::new(),
            ),
        );
        assert_eq!(
            provider_error("X", &s, Kind::Change),
            ProviderError::Permanent("code_unavailable: the PIN is taken".into())
        );
        let s = Status::deadline_exceeded("slow");
        assert!(matches!(
            provider_error("X", &s, Kind::Read),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            provider_error("X", &s, Kind::Change),
            ProviderError::Ambiguous(_)
        ));
        let s = Status::permission_denied("no");
        assert!(matches!(
            provider_error("X", &s, Kind::Change),
            ProviderError::Transient(m) if m.starts_with("invalid_credentials: ")
        ));
    }
}
