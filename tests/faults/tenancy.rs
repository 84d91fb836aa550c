//! Scenario 6: the cross-tenant matrix, generated from the descriptors. Workspace A creates one of
//! each resource; workspace B's key calls every method of every service the gateway serves with
//! A's ids in its id fields (each id field on its own, the others B's own ids, and all of them at
//! once), and every reply follows the method's rule in `TABLE`. A's data is compared before and
//! after. The requests are raw bytes sent by method path, so the same machinery drives the fuzzing
//! scenario (`fuzz.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use keygate_proto::{admin, v1};
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use prost_types::field_descriptor_proto::Type;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cluster::{Cluster, Report, channel};
use crate::harness::{ADMIN_TOKEN, authed, create_workspace, reason};

// ---------------------------------------------------------------------------------------------
// Raw calls: a codec of bytes, so a call is driven by its method path.

/// Passes protobuf bodies through as bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawCoder;

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

/// A request carrying `token` as its bearer token, if any.
pub fn raw_request(token: Option<&str>, body: Vec<u8>) -> Request<Vec<u8>> {
    match token {
        Some(t) => authed(t, body),
        None => Request::new(body),
    }
}

/// One unary call by path with a raw body.
pub async fn call_raw(
    ch: &Channel,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path =
        PathAndQuery::try_from(path).map_err(|e| Status::invalid_argument(format!("path: {e}")))?;
    grpc.unary(raw_request(token, body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// A server-streaming call by path: the stream's messages received within `window` (or until it
/// ended), or the status it failed with (at once or after some messages).
pub async fn stream_raw(
    ch: &Channel,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    window: Duration,
) -> (Vec<Vec<u8>>, Option<Status>) {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    if let Err(e) = grpc.ready().await {
        return (
            Vec::new(),
            Some(Status::unavailable(format!("not ready: {e}"))),
        );
    }
    let path = match PathAndQuery::try_from(path) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), Some(Status::invalid_argument(e.to_string()))),
    };
    let mut stream = match grpc
        .server_streaming(raw_request(token, body), path, RawCodec)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return (Vec::new(), Some(s)),
    };
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(until, stream.message()).await {
            Err(_) | Ok(Ok(None)) => return (got, None),
            Ok(Ok(Some(m))) => got.push(m),
            Ok(Err(s)) => return (got, Some(s)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The descriptors: every method the gateway serves, and the fields of its request.

/// One method of a served service.
#[derive(Clone, Debug)]
pub struct Method {
    /// `/keygate.v1.AccessGrantService/CreateAccessGrant`.
    pub path: String,
    /// The request message, by full name (`keygate.v1.CreateAccessGrantRequest`).
    pub input: String,
    pub server_streaming: bool,
    pub admin: bool,
}

/// The decoded descriptor set of `keygate-proto`.
pub struct Descriptors {
    pub methods: Vec<Method>,
    messages: HashMap<String, prost_types::DescriptorProto>,
}

/// The packages the gateway serves (`keygate.connector.v1` is what connectors serve, not us).
const SERVED_PACKAGES: [&str; 2] = ["keygate.v1", "keygate.admin.v1"];

impl Descriptors {
    pub fn load() -> Self {
        let set = prost_types::FileDescriptorSet::decode(keygate_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut messages = HashMap::new();
        let mut methods = Vec::new();
        for file in &set.file {
            let pkg = file.package();
            fn walk(
                prefix: &str,
                m: &prost_types::DescriptorProto,
                out: &mut HashMap<String, prost_types::DescriptorProto>,
            ) {
                let name = format!("{prefix}.{}", m.name());
                for n in &m.nested_type {
                    walk(&name, n, out);
                }
                out.insert(name, m.clone());
            }
            for m in &file.message_type {
                walk(pkg, m, &mut messages);
            }
            if !SERVED_PACKAGES.contains(&pkg) {
                continue;
            }
            for s in &file.service {
                for m in &s.method {
                    methods.push(Method {
                        path: format!("/{pkg}.{}/{}", s.name(), m.name()),
                        input: m.input_type().trim_start_matches('.').to_owned(),
                        server_streaming: m.server_streaming(),
                        admin: pkg == "keygate.admin.v1",
                    });
                }
            }
        }
        methods.sort_by(|a, b| a.path.cmp(&b.path));
        Self { methods, messages }
    }

    pub fn message(&self, full_name: &str) -> &prost_types::DescriptorProto {
        self.messages
            .get(full_name)
            .unwrap_or_else(|| panic!("message {full_name} in the descriptor set"))
    }

    /// The services the descriptors declare for the gateway, by full name.
    pub fn services(&self) -> BTreeSet<String> {
        self.methods
            .iter()
            .map(|m| m.path[1..].split('/').next().unwrap_or_default().to_owned())
            .collect()
    }
}

/// An id field of a request: a top-level string named `*_id` or `*_ids` (not `request_id`, the
/// idempotency key), `instant_key_url` (a link is an id) or `cursor` (a position in a workspace's
/// log).
#[derive(Clone, Debug)]
pub struct IdField {
    pub name: String,
    pub number: u32,
    /// The real oneof it belongs to (proto3 `optional` is not one).
    pub oneof: Option<i32>,
    /// Which resource's id it takes: the name without `add_`/`remove_` and in the singular.
    pub kind: String,
}

pub fn id_fields(d: &Descriptors, input: &str) -> Vec<IdField> {
    let msg = d.message(input);
    let mut out = Vec::new();
    for f in &msg.field {
        let name = f.name();
        let is_string = f.r#type() == Type::String;
        if !is_string || name == "request_id" {
            if f.r#type() == Type::Message {
                assert_no_nested_ids(d, f.type_name().trim_start_matches('.'), name, 0);
            }
            continue;
        }
        let id_like = name.ends_with("_id")
            || name.ends_with("_ids")
            || name == "instant_key_url"
            || name == "cursor";
        if !id_like {
            continue;
        }
        let kind = name
            .trim_start_matches("add_")
            .trim_start_matches("remove_")
            .trim_end_matches('s')
            .to_owned();
        let oneof = if f.proto3_optional() {
            None
        } else {
            f.oneof_index
        };
        out.push(IdField {
            name: name.to_owned(),
            number: u32::try_from(f.number()).expect("field number"),
            oneof,
            kind,
        });
    }
    out
}

/// The matrix fills top-level id fields; a nested message of a request holding an id would escape
/// it, so the test fails until the matrix learns to fill it.
fn assert_no_nested_ids(d: &Descriptors, msg: &str, via: &str, depth: usize) {
    if msg.starts_with("google.protobuf.") || depth > 4 {
        return;
    }
    for f in &d.message(msg).field {
        assert!(
            !(f.name().ends_with("_id") || f.name().ends_with("_ids")),
            "{msg}.{} (reached through `{via}`) is an id inside a nested request message; \
             teach the cross-tenant matrix to fill it",
            f.name()
        );
        if f.r#type() == Type::Message {
            assert_no_nested_ids(d, f.type_name().trim_start_matches('.'), via, depth + 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire editing: a request's top-level fields, replaced by number.

/// A field of an encoded message: its number, wire type and the bytes of the whole field (key
/// included).
#[derive(Clone, Debug)]
pub struct WireField {
    pub number: u32,
    pub wire_type: u8,
    pub bytes: std::ops::Range<usize>,
    /// For length-delimited fields, where the payload is.
    pub payload: std::ops::Range<usize>,
}

pub fn read_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The top-level fields of a well-formed message, in order; `None` when it does not parse.
pub fn wire_fields(buf: &[u8]) -> Option<Vec<WireField>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = read_varint(buf, &mut at)?;
        let number = u32::try_from(key >> 3).ok()?;
        let wire_type = (key & 7) as u8;
        let payload_start;
        match wire_type {
            0 => {
                payload_start = at;
                read_varint(buf, &mut at)?;
            }
            1 => {
                payload_start = at;
                at += 8;
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut at)?).ok()?;
                payload_start = at;
                at = at.checked_add(len)?;
            }
            5 => {
                payload_start = at;
                at += 4;
            }
            _ => return None,
        }
        if at > buf.len() {
            return None;
        }
        out.push(WireField {
            number,
            wire_type,
            bytes: start..at,
            payload: payload_start..at,
        });
    }
    Some(out)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// `buf` without any occurrence of the fields `drop`, then `values` appended as field `number`.
pub fn replace_field(buf: &[u8], drop: &[u32], number: u32, values: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len() + 64);
    for f in wire_fields(buf).expect("an encoded request parses") {
        if !drop.contains(&f.number) {
            out.extend_from_slice(&buf[f.bytes]);
        }
    }
    for v in values {
        put_bytes_field(&mut out, number, v.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The resources of a workspace.

/// One id of each kind of resource of a workspace, by kind (`access_grant_id`, ...).
#[derive(Clone, Debug, Default)]
pub struct Ids(pub BTreeMap<String, String>);

impl Ids {
    pub fn get(&self, kind: &str) -> &str {
        self.0
            .get(kind)
            .unwrap_or_else(|| {
                panic!("the matrix has no `{kind}` to put in an id field: create one in `populate`")
            })
            .as_str()
    }

    /// Every id, url and cursor of the workspace: none may appear in another workspace's reply.
    pub fn values(&self) -> Vec<&str> {
        self.0.values().map(String::as_str).collect()
    }
}

fn rid(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4())
}

fn ts(from_now: Duration) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now() + from_now)
}

/// Creates one of each resource in the workspace of `key` (its id is `ws`): a user identity, an
/// access grant with a card on a door of the virtual Salto Space system (and so an access
/// method), the card's encoding (an action attempt), an access system user linked to the
/// identity, in an access group, with a credential, an Instant Key, a webhook, and reads an
/// entrance, a system, an encoder, an event (and its cursor) and an API key.
pub async fn populate(ch: &Channel, key: &str, ws: &str, tag: &str) -> Ids {
    let mut ids = BTreeMap::new();
    ids.insert("workspace_id".to_owned(), ws.to_owned());
    let mut sys = v1::access_system_service_client::AccessSystemServiceClient::new(ch.clone());
    let space = sys
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list systems")
        .into_inner()
        .acs_systems
        .into_iter()
        .find(|s| s.system_type == "virtual_salto_space")
        .expect("the sandbox has a virtual Salto Space")
        .acs_system_id;
    let door = sys
        .list_entrances(authed(
            key,
            v1::ListEntrancesRequest {
                acs_system_id: space.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list entrances")
        .into_inner()
        .acs_entrances
        .into_iter()
        .find(|e| e.can_unlock_with_card)
        .expect("a card door")
        .acs_entrance_id;
    let encoder = sys
        .list_encoders(authed(
            key,
            v1::ListEncodersRequest {
                acs_system_id: space.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list encoders")
        .into_inner()
        .acs_encoders
        .into_iter()
        .next()
        .expect("an encoder")
        .acs_encoder_id;
    let group = sys
        .list_access_groups(authed(
            key,
            v1::ListAccessGroupsRequest {
                acs_system_id: space.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list groups")
        .into_inner()
        .acs_access_groups
        .into_iter()
        .next()
        .expect("an access group")
        .acs_access_group_id;

    let mut people = v1::user_identity_service_client::UserIdentityServiceClient::new(ch.clone());
    let person = people
        .create_user_identity(authed(
            key,
            v1::CreateUserIdentityRequest {
                request_id: rid(tag),
                user_identity_key: format!("{tag}-guest"),
                full_name: format!("{tag} Guest"),
                email_address: format!("{tag}.guest@example.com"),
                phone_number: String::new(),
            },
        ))
        .await
        .expect("create identity")
        .into_inner()
        .user_identity
        .expect("identity")
        .user_identity_id;

    let mut grants = v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone());
    let grant = grants
        .create_access_grant(authed(
            key,
            v1::CreateAccessGrantRequest {
                request_id: rid(tag),
                grantee: Some(v1::create_access_grant_request::Grantee::UserIdentityId(
                    person.clone(),
                )),
                acs_entrance_ids: vec![door.clone()],
                requested_access_methods: vec![v1::NewRequestedAccessMethod {
                    mode: v1::AccessMethodMode::Card as i32,
                    code: String::new(),
                }],
                ..Default::default()
            },
        ))
        .await
        .expect("create grant")
        .into_inner()
        .access_grant
        .expect("grant")
        .access_grant_id;
    let mut methods = v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let method = loop {
        let ms = methods
            .list_access_methods(authed(
                key,
                v1::ListAccessMethodsRequest {
                    access_grant_id: grant.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list methods")
            .into_inner()
            .access_methods;
        let granted = !ms.is_empty()
            && ms.iter().all(|m| {
                m.entrances
                    .iter()
                    .all(|e| e.state == v1::AccessState::Granted as i32)
            });
        if granted {
            break ms[0].access_method_id.clone();
        }
        assert!(Instant::now() < deadline, "the grant converges within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let attempt = methods
        .encode_access_method(authed(
            key,
            v1::EncodeAccessMethodRequest {
                access_method_id: method.clone(),
                acs_encoder_id: encoder.clone(),
                request_id: rid(tag),
            },
        ))
        .await
        .expect("encode the card")
        .into_inner()
        .action_attempt
        .expect("attempt")
        .action_attempt_id;

    let mut acs = v1::acs_user_service_client::AcsUserServiceClient::new(ch.clone());
    let acs_user = acs
        .create_acs_user(authed(
            key,
            v1::CreateAcsUserRequest {
                request_id: rid(tag),
                acs_system_id: space.clone(),
                full_name: format!("{tag} Staff"),
                email_address: format!("{tag}.staff@example.com"),
                phone_number: String::new(),
                access_schedule: Some(v1::AccessSchedule {
                    starts_at: Some(ts(Duration::from_secs(600))),
                    ends_at: Some(ts(Duration::from_secs(3 * 86_400))),
                }),
            },
        ))
        .await
        .expect("create acs user")
        .into_inner()
        .acs_user
        .expect("acs user")
        .acs_user_id;
    people
        .link_acs_user(authed(
            key,
            v1::LinkAcsUserRequest {
                user_identity_id: person.clone(),
                acs_user_id: acs_user.clone(),
            },
        ))
        .await
        .expect("link acs user");
    acs.add_user_to_access_group(authed(
        key,
        v1::AddUserToAccessGroupRequest {
            acs_user_id: acs_user.clone(),
            acs_access_group_id: group.clone(),
        },
    ))
    .await
    .expect("add to group");
    let credential = acs
        .create_credential(authed(
            key,
            v1::CreateCredentialRequest {
                request_id: rid(tag),
                acs_user_id: acs_user.clone(),
                access_method: v1::AccessMethodMode::Card as i32,
                // Salto Space grants through access groups: no doors of its own.
                acs_entrance_ids: Vec::new(),
                ..Default::default()
            },
        ))
        .await
        .expect("create credential")
        .into_inner()
        .acs_credential
        .expect("credential")
        .acs_credential_id;

    let key_reply = people
        .generate_instant_key(authed(
            key,
            v1::GenerateInstantKeyRequest {
                request_id: rid(tag),
                user_identity_id: person.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("generate instant key")
        .into_inner()
        .instant_key
        .expect("instant key");

    let webhook = v1::webhook_service_client::WebhookServiceClient::new(ch.clone())
        .create_webhook(authed(
            key,
            v1::CreateWebhookRequest {
                request_id: rid(tag),
                url: "http://127.0.0.1:9/hook".into(),
                // A type nothing in the scenario records: no delivery changes the webhook.
                event_types: vec!["access_grant.deleted".into()],
            },
        ))
        .await
        .expect("create webhook")
        .into_inner()
        .webhook
        .expect("webhook")
        .webhook_id;

    let event = v1::event_service_client::EventServiceClient::new(ch.clone())
        .list_events(authed(key, v1::ListEventsRequest::default()))
        .await
        .expect("list events")
        .into_inner()
        .events
        .into_iter()
        .next()
        .expect("an event");
    let api_key = admin::workspace_service_client::WorkspaceServiceClient::new(ch.clone())
        .list_api_keys(authed(
            ADMIN_TOKEN,
            admin::ListApiKeysRequest {
                workspace_id: ws.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("list api keys")
        .into_inner()
        .api_keys
        .into_iter()
        .next()
        .expect("an api key")
        .api_key_id;

    for (k, v) in [
        ("acs_system_id", space),
        ("acs_entrance_id", door),
        ("acs_encoder_id", encoder),
        ("acs_access_group_id", group),
        ("user_identity_id", person),
        ("access_grant_id", grant),
        ("access_method_id", method),
        ("action_attempt_id", attempt),
        ("acs_user_id", acs_user),
        ("acs_credential_id", credential),
        ("instant_key_id", key_reply.instant_key_id),
        ("instant_key_url", key_reply.instant_key_url),
        ("webhook_id", webhook),
        ("event_id", event.event_id),
        ("cursor", event.cursor),
        ("api_key_id", api_key),
    ] {
        assert!(!v.is_empty(), "{k} is set");
        ids.insert(k.to_owned(), v);
    }
    Ids(ids)
}

// ---------------------------------------------------------------------------------------------
// The table: every method, its rule, and a valid request in the caller's own workspace.

/// What a call with a foreign id must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// NOT_FOUND with a `*_NOT_FOUND` reason.
    NotFound,
    /// A list filtered by a foreign id: OK and empty (a filter does not check that the resource
    /// exists, as `ListEvents` documents), or NOT_FOUND when the method looks the filter up.
    EmptyOrNotFound,
    /// The method has no id field: it acts in the caller's workspace; any reply but INTERNAL or
    /// UNKNOWN, and none of A's ids in it.
    NoIdField,
    /// A stream: refused (NOT_FOUND, or INVALID_ARGUMENT `INVALID_CURSOR` for another
    /// workspace's cursor) or open and yielding nothing of A's.
    Stream,
    /// The operator API with a workspace key: PERMISSION_DENIED or UNAUTHENTICATED.
    AdminRefused,
    /// An id that only takes something away when present (`remove_*`): an id the resource does
    /// not hold is ignored, A's or nobody's alike, so OK and none of A's ids in the reply.
    IgnoredWhenAbsent,
    /// The caller's own resource in another field is refused first (FAILED_PRECONDITION
    /// `CAPABILITY_NOT_SUPPORTED`, about the caller's resource), before the foreign id is read;
    /// the same answer as for an id of nobody, and nothing of A's in it.
    OwnResourceRefusedFirst,
}

/// Where one id field of a method follows another rule than its method's, and why.
pub const FIELD_RULES: &[(&str, &str, Rule)] = &[
    // Removing an entrance the grant does not have is a no-op, whoever's entrance it is.
    (
        "/keygate.v1.AccessGrantService/UpdateAccessGrant",
        "remove_acs_entrance_ids",
        Rule::IgnoredWhenAbsent,
    ),
    // The caller's method is a card, which cannot unlock remotely: refused before the door.
    (
        "/keygate.v1.AccessMethodService/UnlockDoor",
        "acs_entrance_id",
        Rule::OwnResourceRefusedFirst,
    ),
    // The caller's user is on Salto Space, which grants through access groups: entrances are
    // refused before they are read.
    (
        "/keygate.v1.AcsUserService/CreateCredential",
        "acs_entrance_ids",
        Rule::OwnResourceRefusedFirst,
    ),
];

/// Every method the gateway serves, with its rule. A method missing here fails the test.
pub const TABLE: &[(&str, Rule)] = &[
    (
        "/keygate.admin.v1.WorkspaceService/ConnectAccessSystem",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/CreateApiKey",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/CreateWorkspace",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/ListAccessSystems",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/ListApiKeys",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/ListWorkspaces",
        Rule::AdminRefused,
    ),
    (
        "/keygate.admin.v1.WorkspaceService/RevokeApiKey",
        Rule::AdminRefused,
    ),
    (
        "/keygate.v1.AccessGrantService/CreateAccessGrant",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessGrantService/DeleteAccessGrant",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessGrantService/GetAccessGrant",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessGrantService/ListAccessGrants",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AccessGrantService/UpdateAccessGrant",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessMethodService/DeleteAccessMethod",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessMethodService/EncodeAccessMethod",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessMethodService/GetAccessMethod",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessMethodService/ListAccessMethods",
        Rule::EmptyOrNotFound,
    ),
    ("/keygate.v1.AccessMethodService/UnlockDoor", Rule::NotFound),
    (
        "/keygate.v1.AccessSystemService/ConnectAccessSystem",
        Rule::NoIdField,
    ),
    (
        "/keygate.v1.AccessSystemService/DisconnectAccessSystem",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/GetAccessSystem",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/GetEntrance",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/ListAccessGroups",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/ListAccessSystems",
        Rule::NoIdField,
    ),
    (
        "/keygate.v1.AccessSystemService/ListEncoders",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/ListEntrances",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/SyncAccessSystem",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AccessSystemService/UnlockEntrance",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.AcsUserService/AddUserToAccessGroup",
        Rule::NotFound,
    ),
    ("/keygate.v1.AcsUserService/CreateAcsUser", Rule::NotFound),
    (
        "/keygate.v1.AcsUserService/CreateCredential",
        Rule::NotFound,
    ),
    ("/keygate.v1.AcsUserService/DeleteAcsUser", Rule::NotFound),
    (
        "/keygate.v1.AcsUserService/DeleteCredential",
        Rule::NotFound,
    ),
    ("/keygate.v1.AcsUserService/GetAcsUser", Rule::NotFound),
    (
        "/keygate.v1.AcsUserService/ListAcsUsers",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AcsUserService/ListCredentials",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.AcsUserService/RemoveUserFromAccessGroup",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.ActionAttemptService/GetActionAttempt",
        Rule::NotFound,
    ),
    ("/keygate.v1.EventService/GetEvent", Rule::NotFound),
    ("/keygate.v1.EventService/ListEvents", Rule::EmptyOrNotFound),
    ("/keygate.v1.EventService/WatchEvents", Rule::Stream),
    (
        "/keygate.v1.InstantKeyService/DeliverInstantKey",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.InstantKeyService/GetInstantKey",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.InstantKeyService/ListInstantKeys",
        Rule::EmptyOrNotFound,
    ),
    (
        "/keygate.v1.InstantKeyService/RevokeInstantKey",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/CreateUserIdentity",
        Rule::NoIdField,
    ),
    (
        "/keygate.v1.UserIdentityService/DeleteUserIdentity",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/GenerateInstantKey",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/GetUserIdentity",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/LinkAcsUser",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/ListUserIdentities",
        Rule::NoIdField,
    ),
    (
        "/keygate.v1.UserIdentityService/UnlinkAcsUser",
        Rule::NotFound,
    ),
    (
        "/keygate.v1.UserIdentityService/UpdateUserIdentity",
        Rule::NotFound,
    ),
    ("/keygate.v1.WebhookService/CreateWebhook", Rule::NoIdField),
    ("/keygate.v1.WebhookService/DeleteWebhook", Rule::NotFound),
    ("/keygate.v1.WebhookService/GetWebhook", Rule::NotFound),
    ("/keygate.v1.WebhookService/ListWebhooks", Rule::NoIdField),
    ("/keygate.v1.WebhookService/UpdateWebhook", Rule::NotFound),
];

pub fn rule(path: &str) -> Rule {
    TABLE
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("{path} is not in the matrix's TABLE"))
}

/// A valid request of `path` in the workspace whose ids are `own` (ids of `own` in every id
/// field), encoded. The matrix then puts foreign ids into its id fields; the fuzzer mutates it.
pub fn base_request(path: &str, own: &Ids) -> Vec<u8> {
    let id = |k: &str| own.get(k).to_owned();
    let method = path.rsplit('/').next().unwrap_or_default();
    let r = rid("matrix");
    let card = v1::AccessMethodMode::Card as i32;
    match (path.starts_with("/keygate.admin."), method) {
        (true, "ConnectAccessSystem") => admin::ConnectAccessSystemRequest {
            workspace_id: id("workspace_id"),
            system_type: "virtual_salto_space".into(),
            name: "Matrix".into(),
            time_zone: "UTC".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        (true, "CreateApiKey") => admin::CreateApiKeyRequest {
            workspace_id: id("workspace_id"),
            name: "matrix".into(),
        }
        .encode_to_vec(),
        (true, "CreateWorkspace") => admin::CreateWorkspaceRequest {
            name: "Matrix".into(),
            workspace_type: admin::WorkspaceType::Sandbox as i32,
            api_key_name: String::new(),
        }
        .encode_to_vec(),
        (true, "ListAccessSystems") => admin::ListAccessSystemsRequest {
            workspace_id: id("workspace_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (true, "ListApiKeys") => admin::ListApiKeysRequest {
            workspace_id: id("workspace_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (true, "ListWorkspaces") => admin::ListWorkspacesRequest::default().encode_to_vec(),
        (true, "RevokeApiKey") => admin::RevokeApiKeyRequest {
            workspace_id: id("workspace_id"),
            api_key_id: id("api_key_id"),
        }
        .encode_to_vec(),
        (false, "CreateAccessGrant") => v1::CreateAccessGrantRequest {
            request_id: r,
            grantee: Some(v1::create_access_grant_request::Grantee::UserIdentityId(
                id("user_identity_id"),
            )),
            acs_entrance_ids: vec![id("acs_entrance_id")],
            requested_access_methods: vec![v1::NewRequestedAccessMethod {
                mode: card,
                code: String::new(),
            }],
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "DeleteAccessGrant") => v1::DeleteAccessGrantRequest {
            access_grant_id: id("access_grant_id"),
        }
        .encode_to_vec(),
        (false, "GetAccessGrant") => v1::GetAccessGrantRequest {
            access_grant_id: id("access_grant_id"),
        }
        .encode_to_vec(),
        (false, "ListAccessGrants") => v1::ListAccessGrantsRequest {
            user_identity_id: id("user_identity_id"),
            acs_entrance_id: id("acs_entrance_id"),
            acs_system_id: id("acs_system_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "UpdateAccessGrant") => v1::UpdateAccessGrantRequest {
            access_grant_id: id("access_grant_id"),
            add_acs_entrance_ids: vec![id("acs_entrance_id")],
            remove_acs_entrance_ids: Vec::new(),
            name: Some("Matrix".into()),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "DeleteAccessMethod") => v1::DeleteAccessMethodRequest {
            access_method_id: id("access_method_id"),
        }
        .encode_to_vec(),
        (false, "EncodeAccessMethod") => v1::EncodeAccessMethodRequest {
            access_method_id: id("access_method_id"),
            acs_encoder_id: id("acs_encoder_id"),
            request_id: r,
        }
        .encode_to_vec(),
        (false, "GetAccessMethod") => v1::GetAccessMethodRequest {
            access_method_id: id("access_method_id"),
        }
        .encode_to_vec(),
        (false, "ListAccessMethods") => v1::ListAccessMethodsRequest {
            access_grant_id: id("access_grant_id"),
            user_identity_id: id("user_identity_id"),
            acs_entrance_id: id("acs_entrance_id"),
            acs_system_id: id("acs_system_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "UnlockDoor") => v1::UnlockDoorRequest {
            access_method_id: id("access_method_id"),
            acs_entrance_id: id("acs_entrance_id"),
            request_id: r,
        }
        .encode_to_vec(),
        (false, "ConnectAccessSystem") => v1::ConnectAccessSystemRequest {
            system_type: "virtual_salto_space".into(),
            name: "Matrix".into(),
            time_zone: "UTC".into(),
            request_id: r,
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "DisconnectAccessSystem") => v1::DisconnectAccessSystemRequest {
            acs_system_id: id("acs_system_id"),
        }
        .encode_to_vec(),
        (false, "GetAccessSystem") => v1::GetAccessSystemRequest {
            acs_system_id: id("acs_system_id"),
        }
        .encode_to_vec(),
        (false, "GetEntrance") => v1::GetEntranceRequest {
            acs_entrance_id: id("acs_entrance_id"),
        }
        .encode_to_vec(),
        (false, "ListAccessGroups") => v1::ListAccessGroupsRequest {
            acs_system_id: id("acs_system_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "ListAccessSystems") => v1::ListAccessSystemsRequest::default().encode_to_vec(),
        (false, "ListEncoders") => v1::ListEncodersRequest {
            acs_system_id: id("acs_system_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "ListEntrances") => v1::ListEntrancesRequest {
            acs_system_id: id("acs_system_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "SyncAccessSystem") => v1::SyncAccessSystemRequest {
            acs_system_id: id("acs_system_id"),
        }
        .encode_to_vec(),
        (false, "UnlockEntrance") => v1::UnlockEntranceRequest {
            acs_entrance_id: id("acs_entrance_id"),
            request_id: r,
        }
        .encode_to_vec(),
        (false, "AddUserToAccessGroup") => v1::AddUserToAccessGroupRequest {
            acs_user_id: id("acs_user_id"),
            acs_access_group_id: id("acs_access_group_id"),
        }
        .encode_to_vec(),
        (false, "CreateAcsUser") => v1::CreateAcsUserRequest {
            request_id: r,
            acs_system_id: id("acs_system_id"),
            full_name: "Matrix Staff".into(),
            email_address: "matrix.staff@example.com".into(),
            phone_number: String::new(),
            access_schedule: None,
        }
        .encode_to_vec(),
        (false, "CreateCredential") => v1::CreateCredentialRequest {
            request_id: r,
            acs_user_id: id("acs_user_id"),
            access_method: card,
            acs_entrance_ids: Vec::new(),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "DeleteAcsUser") => v1::DeleteAcsUserRequest {
            acs_user_id: id("acs_user_id"),
        }
        .encode_to_vec(),
        (false, "DeleteCredential") => v1::DeleteCredentialRequest {
            acs_credential_id: id("acs_credential_id"),
        }
        .encode_to_vec(),
        (false, "GetAcsUser") => v1::GetAcsUserRequest {
            acs_user_id: id("acs_user_id"),
        }
        .encode_to_vec(),
        (false, "ListAcsUsers") => v1::ListAcsUsersRequest {
            acs_system_id: id("acs_system_id"),
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "ListCredentials") => v1::ListCredentialsRequest {
            acs_user_id: id("acs_user_id"),
            acs_system_id: id("acs_system_id"),
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "RemoveUserFromAccessGroup") => v1::RemoveUserFromAccessGroupRequest {
            acs_user_id: id("acs_user_id"),
            acs_access_group_id: id("acs_access_group_id"),
        }
        .encode_to_vec(),
        (false, "GetActionAttempt") => v1::GetActionAttemptRequest {
            action_attempt_id: id("action_attempt_id"),
        }
        .encode_to_vec(),
        (false, "GetEvent") => v1::GetEventRequest {
            event_id: id("event_id"),
        }
        .encode_to_vec(),
        (false, "ListEvents") => v1::ListEventsRequest {
            access_grant_id: id("access_grant_id"),
            access_method_id: id("access_method_id"),
            acs_system_id: id("acs_system_id"),
            acs_entrance_id: id("acs_entrance_id"),
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "WatchEvents") => v1::WatchEventsRequest {
            cursor: id("cursor"),
            access_grant_id: id("access_grant_id"),
            access_method_id: id("access_method_id"),
            acs_system_id: id("acs_system_id"),
            acs_entrance_id: id("acs_entrance_id"),
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "DeliverInstantKey") => v1::DeliverInstantKeyRequest {
            request_id: r,
            instant_key_id: id("instant_key_id"),
            channel: v1::DeliveryChannel::Email as i32,
            to: "matrix@example.com".into(),
        }
        .encode_to_vec(),
        (false, "GetInstantKey") => v1::GetInstantKeyRequest {
            lookup: Some(v1::get_instant_key_request::Lookup::InstantKeyId(id(
                "instant_key_id",
            ))),
        }
        .encode_to_vec(),
        (false, "ListInstantKeys") => v1::ListInstantKeysRequest {
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "RevokeInstantKey") => v1::RevokeInstantKeyRequest {
            instant_key_id: id("instant_key_id"),
        }
        .encode_to_vec(),
        (false, "CreateUserIdentity") => v1::CreateUserIdentityRequest {
            request_id: r,
            user_identity_key: String::new(),
            full_name: "Matrix Person".into(),
            email_address: String::new(),
            phone_number: String::new(),
        }
        .encode_to_vec(),
        (false, "DeleteUserIdentity") => v1::DeleteUserIdentityRequest {
            user_identity_id: id("user_identity_id"),
        }
        .encode_to_vec(),
        (false, "GenerateInstantKey") => v1::GenerateInstantKeyRequest {
            request_id: r,
            user_identity_id: id("user_identity_id"),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "GetUserIdentity") => v1::GetUserIdentityRequest {
            user_identity_id: id("user_identity_id"),
        }
        .encode_to_vec(),
        (false, "LinkAcsUser") => v1::LinkAcsUserRequest {
            user_identity_id: id("user_identity_id"),
            acs_user_id: id("acs_user_id"),
        }
        .encode_to_vec(),
        (false, "ListUserIdentities") => v1::ListUserIdentitiesRequest::default().encode_to_vec(),
        (false, "UnlinkAcsUser") => v1::UnlinkAcsUserRequest {
            user_identity_id: id("user_identity_id"),
            acs_user_id: id("acs_user_id"),
        }
        .encode_to_vec(),
        (false, "UpdateUserIdentity") => v1::UpdateUserIdentityRequest {
            user_identity_id: id("user_identity_id"),
            full_name: Some("Mallory".into()),
            ..Default::default()
        }
        .encode_to_vec(),
        (false, "CreateWebhook") => v1::CreateWebhookRequest {
            request_id: r,
            url: "http://127.0.0.1:9/matrix".into(),
            event_types: vec!["access_grant.deleted".into()],
        }
        .encode_to_vec(),
        (false, "DeleteWebhook") => v1::DeleteWebhookRequest {
            webhook_id: id("webhook_id"),
        }
        .encode_to_vec(),
        (false, "GetWebhook") => v1::GetWebhookRequest {
            webhook_id: id("webhook_id"),
        }
        .encode_to_vec(),
        (false, "ListWebhooks") => v1::ListWebhooksRequest::default().encode_to_vec(),
        (false, "UpdateWebhook") => v1::UpdateWebhookRequest {
            webhook_id: id("webhook_id"),
            event_types: vec!["access_grant.created".into()],
        }
        .encode_to_vec(),
        _ => panic!("{path} has no request builder in the matrix"),
    }
}

/// The requests of the matrix for one method: (what is foreign, body). Each id field on its own
/// (the other id fields hold the caller's own ids, or, when they are `filters` of a list or a
/// stream, are left empty; fields of the same oneof are dropped), then every id field at once
/// (one member per oneof).
pub fn foreign_variants(
    fields: &[IdField],
    base: &[u8],
    foreign: &Ids,
    filters: bool,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let value = |f: &IdField| foreign.get(&f.kind).to_owned();
    for f in fields {
        let siblings: Vec<u32> = fields
            .iter()
            .filter(|g| filters || (g.oneof.is_some() && g.oneof == f.oneof))
            .map(|g| g.number)
            .chain([f.number])
            .collect();
        let v = value(f);
        out.push((
            f.name.clone(),
            replace_field(base, &siblings, f.number, &[&v]),
        ));
    }
    if fields.len() > 1 {
        let mut body = base.to_vec();
        let mut names = Vec::new();
        let mut oneofs_set = BTreeSet::new();
        // A `remove_*` field would name the same entrance as its `add_*` field: refused as a
        // contradiction before any lookup, so it is left to its own variant.
        for f in fields.iter().filter(|f| !f.name.starts_with("remove_")) {
            let mut drop = vec![f.number];
            if let Some(o) = f.oneof {
                if !oneofs_set.insert(o) {
                    continue;
                }
                drop.extend(
                    fields
                        .iter()
                        .filter(|g| g.oneof == Some(o))
                        .map(|g| g.number),
                );
            }
            let v = value(f);
            body = replace_field(&body, &drop, f.number, &[&v]);
            names.push(f.name.as_str());
        }
        out.push((format!("all: {}", names.join(", ")), body));
    }
    out
}

/// Whether any of `needles` appears in `haystack`.
pub fn leaks(haystack: &[u8], needles: &[&str]) -> Option<String> {
    needles
        .iter()
        .find(|n| !n.is_empty() && haystack.windows(n.len()).any(|w| w == n.as_bytes()))
        .map(|n| (*n).to_owned())
}

// ---------------------------------------------------------------------------------------------
// Snapshots of a workspace's data, through its list RPCs.

/// The list RPCs of a workspace and their replies (encoded), for before/after comparisons.
pub async fn snapshot(ch: &Channel, key: &str, ids: &Ids) -> BTreeMap<String, Vec<u8>> {
    let reqs: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "/keygate.v1.AccessGrantService/ListAccessGrants",
            Some(key),
            v1::ListAccessGrantsRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.AccessMethodService/ListAccessMethods",
            Some(key),
            v1::ListAccessMethodsRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.UserIdentityService/ListUserIdentities",
            Some(key),
            v1::ListUserIdentitiesRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.AcsUserService/ListAcsUsers",
            Some(key),
            v1::ListAcsUsersRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.AcsUserService/ListCredentials",
            Some(key),
            v1::ListCredentialsRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.InstantKeyService/ListInstantKeys",
            Some(key),
            v1::ListInstantKeysRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.WebhookService/ListWebhooks",
            Some(key),
            v1::ListWebhooksRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.AccessSystemService/ListAccessSystems",
            Some(key),
            v1::ListAccessSystemsRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.AccessSystemService/ListEntrances",
            Some(key),
            v1::ListEntrancesRequest::default().encode_to_vec(),
        ),
        (
            "/keygate.v1.ActionAttemptService/GetActionAttempt",
            Some(key),
            v1::GetActionAttemptRequest {
                action_attempt_id: ids.get("action_attempt_id").to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "/keygate.v1.EventService/ListEvents",
            Some(key),
            v1::ListEventsRequest {
                page_size: 1000,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/keygate.admin.v1.WorkspaceService/ListApiKeys",
            Some(ADMIN_TOKEN),
            admin::ListApiKeysRequest {
                workspace_id: ids.get("workspace_id").to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/keygate.admin.v1.WorkspaceService/ListWorkspaces",
            Some(ADMIN_TOKEN),
            admin::ListWorkspacesRequest {
                page_size: 1000,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    let mut out = BTreeMap::new();
    for (path, token, body) in reqs {
        let mut reply = call_raw(ch, path, token, body)
            .await
            .unwrap_or_else(|s| panic!("snapshot {path}: {s:?}"));
        if path.ends_with("/ListWebhooks") {
            // The dispatcher's bookkeeping of deliveries (of events recorded earlier) is not data
            // a call changes.
            let mut r =
                v1::ListWebhooksResponse::decode(reply.as_slice()).expect("decode webhooks");
            for w in &mut r.webhooks {
                w.last_delivery_at = None;
                w.consecutive_failures = 0;
                w.is_enabled = true;
                w.disabled_reason.clear();
            }
            reply = r.encode_to_vec();
        }
        out.insert(path.to_owned(), reply);
    }
    out
}

/// A snapshot once the workspace is quiet: two in a row 500 ms apart are equal (background work,
/// such as the orchestrator settling a grant, has finished).
pub async fn settled_snapshot(ch: &Channel, key: &str, ids: &Ids) -> BTreeMap<String, Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = snapshot(ch, key, ids).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot(ch, key, ids).await;
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the workspace settles within 30 s"
        );
        last = now;
    }
}

/// The paths whose replies differ between two snapshots.
pub fn changed(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn code_name(c: Code) -> String {
    format!("{c:?}")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_tenant_matrix() {
    let started = Instant::now();
    let d = Descriptors::load();

    // The table covers exactly the methods the descriptors declare, and the descriptors declare
    // exactly the services the gateway serves.
    let declared: BTreeSet<&str> = d.methods.iter().map(|m| m.path.as_str()).collect();
    let tabled: BTreeSet<&str> = TABLE.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        declared, tabled,
        "every method of the descriptors has a row in TABLE and no row is stale"
    );
    let served: BTreeSet<String> = keygate_gateway::SERVICE_NAMES
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        d.services(),
        served,
        "the descriptors' services are the served ones"
    );

    let cluster = Cluster::start("tenancy", 1, &["--webhook-allow-loopback", "true"]).await;
    let ch = channel(&cluster.urls()[0]).await;
    let a = populate(&ch, &cluster.key, &cluster.workspace_id, "tenant-a").await;
    let (ws_b, key_b) = create_workspace(&ch, "tenancy-b", true).await;
    let b = populate(&ch, &key_b, &ws_b, "tenant-b").await;
    let a_values = a.values();

    let before = settled_snapshot(&ch, &cluster.key, &a).await;

    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut calls = 0usize;
    let mut id_fields_total = 0usize;
    let mut streams = Vec::new();
    let mut list_outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &d.methods {
        let fields = id_fields(&d, &m.input);
        id_fields_total += fields.len();
        let rule = rule(&m.path);
        *by_rule.entry(format!("{rule:?}")).or_default() += 1;
        let base = base_request(&m.path, &b);
        let variants = if m.admin {
            // The operator API with B's key and A's ids: refused whatever the ids.
            let mut v = foreign_variants(&fields, &base, &a, false);
            if v.is_empty() {
                v.push(("no id field".into(), base.clone()));
            }
            v
        } else if fields.is_empty() {
            vec![("no id field".into(), base.clone())]
        } else {
            foreign_variants(
                &fields,
                &base,
                &a,
                matches!(rule, Rule::EmptyOrNotFound | Rule::Stream),
            )
        };
        assert_eq!(
            rule == Rule::NoIdField,
            fields.is_empty() && !m.admin,
            "{}: NoIdField is the rule of exactly the methods without id fields",
            m.path
        );
        for (what, body) in variants {
            calls += 1;
            if m.server_streaming {
                streams.push((m.path.clone(), what, body));
                continue;
            }
            let r = call_raw(&ch, &m.path, Some(&key_b), body).await;
            let code = r.as_ref().err().map_or(Code::Ok, Status::code);
            *by_code.entry(code_name(code)).or_default() += 1;
            let rule = FIELD_RULES
                .iter()
                .find(|(p, f, _)| *p == m.path && *f == what)
                .map_or(rule, |(_, _, r)| *r);
            let verdict: Result<(), String> = match (&r, rule) {
                (Ok(reply), Rule::IgnoredWhenAbsent) => leaks(reply, &a_values)
                    .map_or(Ok(()), |id| Err(format!("reply holds A's {id}"))),
                (Err(s), Rule::OwnResourceRefusedFirst)
                    if s.code() == Code::FailedPrecondition
                        && reason(s) == "CAPABILITY_NOT_SUPPORTED"
                        && leaks(s.message().as_bytes(), &a_values).is_none() =>
                {
                    Ok(())
                }
                (Err(s), _) if matches!(s.code(), Code::Internal | Code::Unknown) => {
                    Err(format!("{s:?}"))
                }
                (Err(s), Rule::NotFound | Rule::EmptyOrNotFound)
                    if s.code() == Code::NotFound && reason(s).ends_with("_NOT_FOUND") =>
                {
                    Ok(())
                }
                (Ok(reply), Rule::EmptyOrNotFound) => {
                    // The list (field 1) is empty and nothing of A's is in the reply.
                    let items = wire_fields(reply)
                        .map(|fs| fs.iter().filter(|f| f.number == 1).count())
                        .unwrap_or(usize::MAX);
                    match leaks(reply, &a_values) {
                        Some(id) => Err(format!("reply holds A's {id}")),
                        None if items != 0 => Err(format!("{items} items listed")),
                        None => Ok(()),
                    }
                }
                (Err(s), Rule::AdminRefused)
                    if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) =>
                {
                    Ok(())
                }
                (r, Rule::NoIdField) => match r {
                    Ok(reply) => leaks(reply, &a_values)
                        .map_or(Ok(()), |id| Err(format!("reply holds A's {id}"))),
                    Err(s) => leaks(s.message().as_bytes(), &a_values)
                        .map_or(Ok(()), |id| Err(format!("status holds A's {id}"))),
                },
                (Ok(_), _) => Err("OK".into()),
                (Err(s), _) => Err(format!("{:?} {}: {}", s.code(), reason(s), s.message())),
            };
            if rule == Rule::EmptyOrNotFound && !what.starts_with("all") {
                let outcome = if code == Code::NotFound {
                    "NOT_FOUND"
                } else {
                    "empty"
                };
                list_outcomes
                    .entry(format!("{outcome}: {}", what))
                    .or_default()
                    .push(m.path.rsplit('/').next().unwrap_or_default().to_owned());
            }
            if let Err(e) = verdict {
                failures.push(format!("{} [{what}] under {rule:?}: {e}", m.path));
            }
        }
    }

    let after = settled_snapshot(&ch, &cluster.key, &a).await;
    let diff = changed(&before, &after);

    // While B's streams are open, A records an event: none of B's streams may carry it.
    let window = Duration::from_secs(3);
    let open = |key: String, path: String, body: Vec<u8>| {
        let ch = ch.clone();
        tokio::spawn(async move { stream_raw(&ch, &path, Some(&key), body, window).await })
    };
    let watch = "/keygate.v1.EventService/WatchEvents".to_owned();
    let a_watch = open(
        cluster.key.clone(),
        watch.clone(),
        v1::WatchEventsRequest::default().encode_to_vec(),
    );
    // And one stream of B without any filter.
    streams.push((
        watch.clone(),
        "no filter".into(),
        v1::WatchEventsRequest::default().encode_to_vec(),
    ));
    let streams: Vec<_> = streams
        .into_iter()
        .map(|(path, what, body)| (path.clone(), what, open(key_b.clone(), path, body)))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Events about A's person, grant, methods, system and door: an Instant Key and new times.
    v1::user_identity_service_client::UserIdentityServiceClient::new(ch.clone())
        .generate_instant_key(authed(
            &cluster.key,
            v1::GenerateInstantKeyRequest {
                request_id: rid("a-late"),
                user_identity_id: a.get("user_identity_id").to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("A records an event");
    v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone())
        .update_access_grant(authed(
            &cluster.key,
            v1::UpdateAccessGrantRequest {
                access_grant_id: a.get("access_grant_id").to_owned(),
                ends_at: Some(ts(Duration::from_secs(7 * 86_400))),
                ..Default::default()
            },
        ))
        .await
        .expect("A records another event");
    let (a_seen, a_err) = a_watch.await.expect("join A's watch");
    assert!(
        !a_seen.is_empty(),
        "A's own watch sees A's event ({a_err:?}): B's streams had something to leak"
    );
    let mut stream_outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (path, what, task) in streams {
        let (got, err) = task.await.expect("join stream");
        let outcome = match &err {
            None => format!("open, {} messages", got.len()),
            Some(s) => format!("{:?} {}", s.code(), reason(s)),
        };
        *stream_outcomes.entry(outcome).or_default() += 1;
        let code = err.as_ref().map_or(Code::Ok, Status::code);
        *by_code.entry(code_name(code)).or_default() += 1;
        for m in &got {
            if let Some(id) = leaks(m, &a_values) {
                failures.push(format!("{path} [{what}]: streamed A's {id}"));
            }
        }
        if !got.is_empty() && what != "no filter" {
            failures.push(format!("{path} [{what}]: {} messages to B", got.len()));
        }
        match err {
            None => {}
            Some(s) if s.code() == Code::NotFound => {}
            Some(s) if s.code() == Code::InvalidArgument && reason(&s) == "INVALID_CURSOR" => {}
            // The stream ends at the window: the client cancelled it.
            Some(s) if s.code() == Code::Cancelled => {}
            Some(s) => failures.push(format!(
                "{path} [{what}]: {:?} {}: {}",
                s.code(),
                reason(&s),
                s.message()
            )),
        }
    }

    assert!(
        failures.is_empty(),
        "{} cross-tenant calls broke their rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        diff.is_empty(),
        "A's data changed during the matrix: {diff:?}"
    );

    let mut report = Report::new(
        "6. Cross-tenant matrix over every RPC and stream",
        "Generated from `keygate_proto::FILE_DESCRIPTOR_SET`: every method of every service the \
         gateway serves (the test fails when a method has no row in its table, or a request \
         holds an id the matrix cannot fill). Workspace A creates one of each resource; \
         workspace B's key calls every method with A's ids, each id field on its own (B's own \
         ids in the others) and all at once. Rules: get/update/delete/act → `NOT_FOUND` with a \
         `*_NOT_FOUND` reason; list filtered by a foreign id → empty or `NOT_FOUND`; methods \
         without id fields → nothing of A's in the reply; `WatchEvents` → refused or open with \
         nothing of A's while A records an event; the operator API with a workspace key → \
         refused. A's data is compared before and after through its list RPCs.",
    );
    report.row("Methods covered (descriptor = table)", declared.len());
    report.row("Id fields filled with A's ids", id_fields_total);
    report.row("Methods by rule", crate::cluster::tally(&by_rule, " "));
    report.row("Calls made with B's key", calls);
    report.row("Statuses", crate::cluster::tally(&by_code, " "));
    report.row(
        "`WatchEvents` outcomes",
        crate::cluster::tally(&stream_outcomes, ": "),
    );
    report.row(
        "Lists filtered by one foreign id, by filter",
        list_outcomes
            .iter()
            .map(|(k, v)| format!("{k} ({})", v.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    );
    report.row(
        "Id fields under a rule of their own",
        FIELD_RULES
            .iter()
            .map(|(p, f, r)| format!("`{}` `{f}`: {r:?}", p.rsplit('/').next().unwrap_or(p)))
            .collect::<Vec<_>>()
            .join("; "),
    );
    report.row(
        "Calls that broke their rule",
        format!("{} (must be 0)", failures.len()),
    );
    report.row(
        "List RPCs of A whose reply changed",
        format!("{} of {} (must be 0)", diff.len(), before.len()),
    );
    report.row("Wall time", format!("{} s", started.elapsed().as_secs()));
    report.write("6-tenancy", "cross_tenant_matrix");
}
