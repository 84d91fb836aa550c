//! The rows of grants, access methods, their doors and action attempts, and their conversions
//! into the domain types. Dialect-neutral: text ids, bigint microsecond times, booleans and JSON
//! held in text.

use keygate_domain::action::{ActionAttempt, AttemptError};
use keygate_domain::grant::{
    AccessGrant, AccessMethod, DoorState, DoorStatus, RequestedAccessMethod,
};

use crate::error::{StoreError, StoreResult};
use crate::util::{from_micros, parse};

/// Parses JSON held in a text column.
pub(crate) fn unjson<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        message: format!("stored {what} does not parse: {e}"),
        source: Some(Box::new(e)),
    })
}

fn opt_id<T: std::str::FromStr>(col: &str, s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| parse(col, &s)).transpose()
}

fn opt_time(us: Option<i64>) -> StoreResult<Option<time::OffsetDateTime>> {
    us.map(from_micros).transpose()
}

#[derive(sqlx::FromRow)]
pub(crate) struct GrantRow {
    access_grant_id: String,
    workspace_id: String,
    user_identity_id: String,
    access_grant_key: Option<String>,
    name: String,
    reservation_key: Option<String>,
    starts_at: i64,
    ends_at: Option<i64>,
    requested_access_methods: String,
    instant_key_id: Option<String>,
    warnings: String,
    errors: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<GrantRow> for AccessGrant {
    type Error = StoreError;

    fn try_from(r: GrantRow) -> StoreResult<Self> {
        let requested: Vec<RequestedAccessMethod> =
            unjson("requested_access_methods", &r.requested_access_methods)?;
        Ok(AccessGrant {
            id: parse("access_grant_id", &r.access_grant_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            user_identity_id: parse("user_identity_id", &r.user_identity_id)?,
            access_grant_key: r.access_grant_key,
            name: r.name,
            reservation_key: r.reservation_key,
            starts_at: from_micros(r.starts_at)?,
            ends_at: opt_time(r.ends_at)?,
            entrance_ids: Vec::new(),
            access_method_ids: requested
                .iter()
                .flat_map(|q| q.created_access_method_ids.iter().copied())
                .collect(),
            requested,
            instant_key_id: opt_id("instant_key_id", r.instant_key_id)?,
            warnings: unjson("warnings", &r.warnings)?,
            errors: unjson("errors", &r.errors)?,
            pending_mutations: Vec::new(),
            created_at: from_micros(r.created_at)?,
            updated_at: from_micros(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MethodRow {
    access_method_id: String,
    workspace_id: String,
    access_grant_id: String,
    user_identity_id: String,
    mode: String,
    display_name: String,
    is_issued: bool,
    issued_at: Option<i64>,
    is_card_encoding_required: bool,
    is_ready_for_encoding: bool,
    code: Option<String>,
    client_session_token: Option<String>,
    instant_key_id: Option<String>,
    warnings: String,
    errors: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<MethodRow> for AccessMethod {
    type Error = StoreError;

    fn try_from(r: MethodRow) -> StoreResult<Self> {
        Ok(AccessMethod {
            id: parse("access_method_id", &r.access_method_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            access_grant_id: parse("access_grant_id", &r.access_grant_id)?,
            user_identity_id: parse("user_identity_id", &r.user_identity_id)?,
            mode: unjson("mode", &format!("\"{}\"", r.mode))?,
            display_name: r.display_name,
            is_issued: r.is_issued,
            issued_at: opt_time(r.issued_at)?,
            is_card_encoding_required: r.is_card_encoding_required,
            is_ready_for_encoding: r.is_ready_for_encoding,
            code: r.code,
            client_session_token: r.client_session_token,
            instant_key_id: opt_id("instant_key_id", r.instant_key_id)?,
            doors: Vec::new(),
            warnings: unjson("warnings", &r.warnings)?,
            errors: unjson("errors", &r.errors)?,
            created_at: from_micros(r.created_at)?,
            updated_at: from_micros(r.updated_at)?,
        })
    }
}

/// One entrance of an access method (`access_method_entrances`).
#[derive(sqlx::FromRow)]
pub(crate) struct DoorRow {
    acs_entrance_id: String,
    acs_system_id: String,
    state: String,
    reason: Option<String>,
    updated_at: i64,
    pending_mutation: Option<String>,
}

impl TryFrom<DoorRow> for DoorStatus {
    type Error = StoreError;

    fn try_from(r: DoorRow) -> StoreResult<Self> {
        Ok(DoorStatus {
            entrance_id: parse("acs_entrance_id", &r.acs_entrance_id)?,
            acs_system_id: parse("acs_system_id", &r.acs_system_id)?,
            state: DoorState::parse(&r.state)
                .ok_or_else(|| StoreError::corrupt(format!("stored door state {:?}", r.state)))?,
            reason: r.reason,
            updated_at: from_micros(r.updated_at)?,
            pending: r
                .pending_mutation
                .map(|j| unjson("pending_mutation", &j))
                .transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    action_attempt_id: String,
    workspace_id: String,
    action_type: String,
    status: String,
    access_method_id: Option<String>,
    acs_encoder_id: Option<String>,
    acs_entrance_id: Option<String>,
    result: Option<String>,
    error_type: Option<String>,
    error_message: Option<String>,
    created_at: i64,
    completed_at: Option<i64>,
}

impl TryFrom<AttemptRow> for ActionAttempt {
    type Error = StoreError;

    fn try_from(r: AttemptRow) -> StoreResult<Self> {
        Ok(ActionAttempt {
            id: parse("action_attempt_id", &r.action_attempt_id)?,
            workspace_id: parse("workspace_id", &r.workspace_id)?,
            action_type: unjson("action_type", &format!("\"{}\"", r.action_type))?,
            status: unjson("status", &format!("\"{}\"", r.status))?,
            access_method_id: opt_id("access_method_id", r.access_method_id)?,
            acs_encoder_id: opt_id("acs_encoder_id", r.acs_encoder_id)?,
            acs_entrance_id: opt_id("acs_entrance_id", r.acs_entrance_id)?,
            result: r.result.map(|j| unjson("result", &j)).transpose()?,
            error: r.error_type.map(|error_type| AttemptError {
                error_type,
                message: r.error_message.unwrap_or_default(),
            }),
            created_at: from_micros(r.created_at)?,
            completed_at: opt_time(r.completed_at)?,
        })
    }
}
