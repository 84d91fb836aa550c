//! Scenario 7: random and mutated protobuf bodies and tokens for every method the gateway serves
//! (from the descriptors), generated with proptest on stable Rust: the server never answers
//! INTERNAL or UNKNOWN, never drops a connection, stays healthy, never panics, and calls that
//! failed leave the workspace's data as it was.
//!
//! `KEYGATE_FUZZ_CASES` sets the number of calls (default 1500), `KEYGATE_FUZZ_SEED` (64 hex
//! digits) replays a run; the seed of every run is printed and written to the report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use tonic::{Code, Status};

use crate::cluster::{Cluster, Report, channel, out_dir};
use crate::harness::{ADMIN_TOKEN, create_workspace, reason};
use crate::tenancy::{
    Descriptors, Ids, Method, base_request, call_raw, populate, put_bytes_field, put_varint,
    settled_snapshot, stream_raw, wire_fields,
};

/// How a body is made from the method's valid request.
#[derive(Clone, Debug)]
enum Body {
    /// The valid request itself.
    Valid,
    /// Random bytes, not derived from the request.
    Random(Vec<u8>),
    /// One byte XORed with a non-zero mask.
    Flip { at: usize, mask: u8 },
    /// Cut after `keep` bytes (modulo the length).
    Truncate { keep: usize },
    /// A top-level field's key rewritten with another wire type (including the invalid 3, 4, 6, 7).
    WireType { field: usize, wire_type: u8 },
    /// A length-delimited field whose length claims far more bytes than follow.
    HugeLength { field: usize, len: u64 },
    /// A field holding messages nested `depth` deep.
    Nested { number: u32, depth: usize },
    /// A string field set to bytes that are not UTF-8.
    InvalidUtf8 { field: usize, bytes: Vec<u8> },
    /// A string field set to an arbitrary string (ids, URLs, codes, times as text).
    Text { field: usize, text: String },
    /// A varint field set to an arbitrary value (enums, sizes, counts).
    Varint { field: usize, value: u64 },
    /// An unknown field appended.
    Unknown { number: u32, bytes: Vec<u8> },
}

/// Which credentials a call carries.
#[derive(Clone, Debug)]
enum Token {
    /// The credential the method takes: the workspace's key, or the admin token for the
    /// operator API.
    Valid,
    /// The other kind: the admin token for the public API, the workspace's key for the
    /// operator API.
    OtherKind,
    /// Another workspace's key, with this workspace's ids in the body.
    Foreign,
    /// No `authorization` header.
    Missing,
    /// An arbitrary printable header value.
    Garbage(String),
    /// The workspace's key with one character changed.
    Tampered { at: usize, with: char },
}

#[derive(Clone, Debug)]
struct Case {
    method: usize,
    body: Body,
    token: Token,
}

fn body_strategy() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => Just(Body::Valid),
        3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Body::Random),
        3 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Body::Flip { at, mask }),
        2 => any::<usize>().prop_map(|keep| Body::Truncate { keep }),
        2 => (any::<usize>(), 0u8..8).prop_map(|(field, wire_type)| Body::WireType { field, wire_type }),
        2 => (
            any::<usize>(),
            prop_oneof![Just(u64::from(u32::MAX)), Just(u64::MAX), Just(1 << 62), 1_000u64..1 << 40]
        )
            .prop_map(|(field, len)| Body::HugeLength { field, len }),
        1 => (1u32..20, prop_oneof![1usize..20, 90usize..120, 500usize..2000])
            .prop_map(|(number, depth)| Body::Nested { number, depth }),
        2 => (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..40).prop_map(|mut b| {
                b.push(0xff);
                b
            })
        )
            .prop_map(|(field, bytes)| Body::InvalidUtf8 { field, bytes }),
        3 => (
            any::<usize>(),
            prop_oneof![
                any::<String>(),
                "[a-z_]{0,12}[_-]?[0-9a-f-]{0,40}",
                Just(String::new()),
                Just("a".repeat(70_000)),
                Just("\u{0}".into()),
                Just("ag_00000000-0000-0000-0000-000000000000".into()),
                Just("../../etc/passwd".into()),
                Just("9999-99-99T99:99:99Z".into()),
            ]
        )
            .prop_map(|(field, text)| Body::Text { field, text }),
        2 => (
            any::<usize>(),
            prop_oneof![any::<u64>(), Just(u64::MAX), Just(i32::MAX as u64 + 1), 0u64..300]
        )
            .prop_map(|(field, value)| Body::Varint { field, value }),
        1 => (
            20u32..536_870_911,
            proptest::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(number, bytes)| Body::Unknown { number, bytes }),
    ]
}

fn token_strategy() -> impl Strategy<Value = Token> {
    prop_oneof![
        12 => Just(Token::Valid),
        1 => Just(Token::OtherKind),
        3 => Just(Token::Foreign),
        1 => Just(Token::Missing),
        1 => "[ -~]{0,200}".prop_map(Token::Garbage),
        1 => (any::<usize>(), proptest::char::range('!', '~'))
            .prop_map(|(at, with)| Token::Tampered { at, with }),
    ]
}

/// The string and varint fields of a request, by number, from its descriptor.
fn fields_of(d: &Descriptors, m: &Method) -> (Vec<u32>, Vec<u32>) {
    let msg = d.message(&m.input);
    let strings = msg
        .field
        .iter()
        .filter(|f| f.r#type() == Type::String)
        .filter_map(|f| u32::try_from(f.number()).ok())
        .collect();
    let varints = msg
        .field
        .iter()
        .filter(|f| {
            matches!(
                f.r#type(),
                Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 | Type::Enum | Type::Bool
            )
        })
        .filter_map(|f| u32::try_from(f.number()).ok())
        .collect();
    (strings, varints)
}

fn pick<T: Copy>(xs: &[T], i: usize) -> Option<T> {
    (!xs.is_empty()).then(|| xs[i % xs.len()])
}

/// `base` without field `number`, with `payload` as that field (length-delimited).
fn with_bytes(base: &[u8], number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in wire_fields(base).unwrap_or_default() {
        if f.number != number {
            out.extend_from_slice(&base[f.bytes]);
        }
    }
    put_bytes_field(&mut out, number, payload);
    out
}

fn mutate(base: &[u8], body: &Body, strings: &[u32], varints: &[u32]) -> Vec<u8> {
    let fields = wire_fields(base).unwrap_or_default();
    match body {
        Body::Valid => base.to_vec(),
        Body::Random(b) => b.clone(),
        Body::Flip { at, mask } => {
            let mut b = base.to_vec();
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= mask;
            }
            b
        }
        Body::Truncate { keep } => base[..keep % (base.len() + 1)].to_vec(),
        Body::WireType { field, wire_type } => {
            let mut b = base.to_vec();
            if !fields.is_empty() {
                let f = &fields[field % fields.len()];
                // The key is the first bytes of the field; its low 3 bits are the wire type.
                b[f.bytes.start] = (b[f.bytes.start] & !7) | (wire_type & 7);
            }
            b
        }
        Body::HugeLength { field, len } => {
            let delimited: Vec<_> = fields.iter().filter(|f| f.wire_type == 2).collect();
            if delimited.is_empty() {
                let mut b = base.to_vec();
                put_varint(&mut b, (1 << 3) | 2);
                put_varint(&mut b, *len);
                return b;
            }
            let f = delimited[field % delimited.len()];
            let mut out = base[..f.bytes.start].to_vec();
            put_varint(&mut out, (u64::from(f.number) << 3) | 2);
            put_varint(&mut out, *len);
            out.extend_from_slice(&base[f.payload.clone()]);
            out.extend_from_slice(&base[f.bytes.end..]);
            out
        }
        Body::Nested { number, depth } => {
            let mut inner: Vec<u8> = Vec::new();
            for _ in 0..*depth {
                let mut outer = Vec::new();
                put_bytes_field(&mut outer, 1, &inner);
                inner = outer;
            }
            with_bytes(base, *number, &inner)
        }
        Body::InvalidUtf8 { field, bytes } => match pick(strings, *field) {
            Some(n) => with_bytes(base, n, bytes),
            None => with_bytes(base, 1, bytes),
        },
        Body::Text { field, text } => match pick(strings, *field) {
            Some(n) => with_bytes(base, n, text.as_bytes()),
            None => with_bytes(base, 1, text.as_bytes()),
        },
        Body::Varint { field, value } => {
            let n = pick(varints, *field).unwrap_or(1);
            let mut out = Vec::new();
            for f in &fields {
                if f.number != n {
                    out.extend_from_slice(&base[f.bytes.clone()]);
                }
            }
            put_varint(&mut out, u64::from(n) << 3);
            put_varint(&mut out, *value);
            out
        }
        Body::Unknown { number, bytes } => {
            let mut b = base.to_vec();
            put_bytes_field(&mut b, *number, bytes);
            b
        }
    }
}

fn token_value(t: &Token, admin: bool, own: &str, foreign: &str) -> Option<String> {
    match (t, admin) {
        (Token::Valid, false) | (Token::OtherKind, true) => Some(own.to_owned()),
        (Token::Valid, true) | (Token::OtherKind, false) => Some(ADMIN_TOKEN.to_owned()),
        _ => token_other(t, own, foreign),
    }
}

fn token_other(t: &Token, own: &str, foreign: &str) -> Option<String> {
    match t {
        Token::Valid | Token::OtherKind => Some(own.to_owned()),
        Token::Foreign => Some(foreign.to_owned()),
        Token::Missing => None,
        Token::Garbage(s) => Some(s.clone()),
        Token::Tampered { at, with } => {
            let mut chars: Vec<char> = own.chars().collect();
            let i = at % chars.len().max(1);
            if chars.get(i) == Some(with) {
                chars[i] = if *with == 'a' { 'b' } else { 'a' };
            } else if i < chars.len() {
                chars[i] = *with;
            }
            Some(chars.into_iter().collect())
        }
    }
}

/// Whether a call of `path` only reads.
fn reads(path: &str) -> bool {
    let m = path.rsplit('/').next().unwrap_or_default();
    m.starts_with("Get") || m.starts_with("List") || m.starts_with("Watch")
}

async fn healthy(ch: &tonic::transport::Channel) -> Result<(), String> {
    let body = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    }
    .encode_to_vec();
    let reply = call_raw(ch, "/grpc.health.v1.Health/Check", None, body)
        .await
        .map_err(|s| format!("health check failed: {s:?}"))?;
    let r = tonic_health::pb::HealthCheckResponse::decode(reply.as_slice())
        .map_err(|e| format!("health reply: {e}"))?;
    if r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("health: {}", r.status))
    }
}

/// A status the server may answer; INTERNAL, UNKNOWN and a dropped connection (UNAVAILABLE or
/// CANCELLED without the server's `ErrorInfo`) are failures.
fn acceptable(s: &Status) -> bool {
    match s.code() {
        Code::Internal | Code::Unknown | Code::DataLoss => false,
        Code::Unavailable | Code::Cancelled => !reason(s).is_empty(),
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_and_mutated_requests() {
    let started = Instant::now();
    let cases: usize = std::env::var("KEYGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: [u8; 32] = match std::env::var("KEYGATE_FUZZ_SEED") {
        Ok(hex) => {
            let mut s = [0u8; 32];
            for (i, b) in s.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                    .expect("KEYGATE_FUZZ_SEED is 64 hex digits");
            }
            s
        }
        Err(_) => {
            let mut s = [0u8; 32];
            s[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            s[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            s
        }
    };
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    eprintln!("fuzz: {cases} calls, KEYGATE_FUZZ_SEED={seed_hex}");

    let d = Descriptors::load();
    let cluster = Cluster::start(
        "fuzz",
        1,
        &[
            "--webhook-allow-loopback",
            "true",
            // Garbage tokens are part of the input: the failed-authentication budget per client
            // (tested on its own in e2e) would otherwise refuse everything after 60 of them.
            "--auth-failures-per-minute-per-client",
            "0",
        ],
    )
    .await;
    let url = cluster.urls()[0].clone();
    let ch = channel(&url).await;
    let own = populate(&ch, &cluster.key, &cluster.workspace_id, "fuzz-a").await;
    let (_ws_b, key_b) = create_workspace(&ch, "fuzz-b", true).await;
    // The operator API acts on a workspace of its own, so the fuzzer never revokes the key it
    // uses.
    let (ws_c, _key_c) = create_workspace(&ch, "fuzz-c", true).await;
    let mut for_admin = own.clone();
    for_admin.0.insert("workspace_id".into(), ws_c.clone());
    let c_keys = call_raw(
        &ch,
        "/keygate.admin.v1.WorkspaceService/ListApiKeys",
        Some(ADMIN_TOKEN),
        keygate_proto::admin::ListApiKeysRequest {
            workspace_id: ws_c.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
    .await
    .expect("list C's keys");
    let c_key = keygate_proto::admin::ListApiKeysResponse::decode(c_keys.as_slice())
        .expect("decode")
        .api_keys
        .into_iter()
        .next()
        .expect("a key")
        .api_key_id;
    for_admin.0.insert("api_key_id".into(), c_key);
    let ids_for = |m: &Method| -> &Ids { if m.admin { &for_admin } else { &own } };

    let strategy = (0..d.methods.len(), body_strategy(), token_strategy()).prop_map(
        |(method, body, token)| Case {
            method,
            body,
            token,
        },
    );
    let mut config = Config::with_cases(u32::try_from(cases).unwrap_or(u32::MAX));
    config.failure_persistence = None;
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));

    const BATCH: usize = 50;
    let mut baseline = settled_snapshot(&ch, &cluster.key, &own).await;
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_body: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut methods_hit = std::collections::BTreeSet::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut checks, mut rebaselines, mut health_checks) = (0usize, 0usize, 0usize);
    let mut batch_wrote = false;
    let mut previous = String::from("none");
    for i in 0..cases {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let m = &d.methods[case.method];
        let (strings, varints) = fields_of(&d, m);
        let body = mutate(
            &base_request(&m.path, ids_for(m)),
            &case.body,
            &strings,
            &varints,
        );
        let token = token_value(&case.token, m.admin, &cluster.key, &key_b);
        methods_hit.insert(m.path.clone());
        *by_body
            .entry(match case.body {
                Body::Valid => "valid",
                Body::Random(_) => "random bytes",
                Body::Flip { .. } => "byte flip",
                Body::Truncate { .. } => "truncated",
                Body::WireType { .. } => "wrong wire type",
                Body::HugeLength { .. } => "huge length",
                Body::Nested { .. } => "deep nesting",
                Body::InvalidUtf8 { .. } => "invalid UTF-8",
                Body::Text { .. } => "arbitrary string",
                Body::Varint { .. } => "arbitrary varint",
                Body::Unknown { .. } => "unknown field",
            })
            .or_default() += 1;
        let outcome = if m.server_streaming {
            // A stream is dropped by this client after 100 ms (a reset of the stream). Many of
            // them on one connection meet h2's reset-flood protection (a GOAWAY), which would
            // cancel the unary calls queued on that connection: each stream gets its own.
            let stream_ch = channel(&url).await;
            let (_, err) = stream_raw(
                &stream_ch,
                &m.path,
                token.as_deref(),
                body,
                Duration::from_millis(100),
            )
            .await;
            match err {
                None => Ok(false),
                Some(s) => Err(s),
            }
        } else {
            call_raw(&ch, &m.path, token.as_deref(), body)
                .await
                .map(|_| !reads(&m.path))
        };
        let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
        *by_code.entry(format!("{code:?}")).or_default() += 1;
        match outcome {
            Ok(wrote) => {
                if wrote && matches!(case.token, Token::Valid | Token::OtherKind) {
                    batch_wrote = true;
                }
                if wrote
                    && matches!(
                        case.token,
                        Token::Missing | Token::Garbage(_) | Token::Tampered { .. }
                    )
                {
                    failures.push(format!(
                        "call {i} {} succeeded without a valid token: {case:?}",
                        m.path
                    ));
                }
            }
            Err(s) if !acceptable(&s) => {
                failures.push(format!(
                    "call {i} {} answered {:?} {}: {} for {case:?} (the call before: {previous})",
                    m.path,
                    s.code(),
                    reason(&s),
                    s.message()
                ));
            }
            Err(_) => {}
        }
        previous = format!("{} {case:?}", m.path);
        if !failures.is_empty() {
            // Is the server still there?
            if let Err(e) = healthy(&ch).await {
                failures.push(format!("after call {i}: {e}"));
            }
            break;
        }
        if (i + 1) % BATCH == 0 || i + 1 == cases {
            health_checks += 1;
            if let Err(e) = healthy(&ch).await {
                failures.push(format!("after call {i}: {e}"));
                break;
            }
            if batch_wrote {
                // A call succeeded and wrote: the new data is legitimate; start again from it.
                baseline = settled_snapshot(&ch, &cluster.key, &own).await;
                rebaselines += 1;
            } else {
                let now = settled_snapshot(&ch, &cluster.key, &own).await;
                checks += 1;
                let diff = crate::tenancy::changed(&baseline, &now);
                if !diff.is_empty() {
                    failures.push(format!(
                        "calls {}..={i} all failed or only read, yet the workspace changed: {diff:?}",
                        i + 1 - BATCH.min(i + 1)
                    ));
                    break;
                }
                baseline = now;
            }
            batch_wrote = false;
        }
    }

    // No panic anywhere in the replica's log.
    let log = std::fs::read_to_string(out_dir().join("logs").join("fuzz-replica-a.log"))
        .unwrap_or_default();
    let panics = log.matches("panicked").count();
    if panics > 0 {
        failures.push(format!("{panics} panics in the replica's log"));
    }
    assert!(
        failures.is_empty(),
        "KEYGATE_FUZZ_SEED={seed_hex}:\n{}",
        failures.join("\n")
    );

    let mut report = Report::new(
        "7. Random and mutated requests and tokens for every RPC",
        "proptest (stable Rust) draws a method of the descriptors (every method the gateway \
         serves), a body (the method's valid request, random bytes, a byte flip, a truncation, \
         a wrong wire type, a huge length, messages nested up to 2000 deep, invalid UTF-8, an \
         arbitrary string or varint in a field, an unknown field) and a token (the method's own \
         credential, the other kind (admin token / workspace key), another workspace's key with this workspace's ids, none, \
         printable garbage, the key with one character changed). Every answer must be a status \
         other than INTERNAL/UNKNOWN/DATA_LOSS and not a dropped connection; the health check \
         passes after every batch of 50; every batch in which no call wrote leaves the list \
         RPCs' replies of the workspace unchanged; the replica logs no panic. \
         `KEYGATE_FUZZ_CASES` raises the number of calls.",
    );
    report.row(
        "Methods called (of the descriptors')",
        format!("{} of {}", methods_hit.len(), d.methods.len()),
    );
    report.row("Calls", cases);
    report.row("Bodies", crate::cluster::tally(&by_body, " "));
    report.row("Statuses", crate::cluster::tally(&by_code, " "));
    report.row(
        "INTERNAL / UNKNOWN / dropped connections / panics",
        "0 (must be 0)",
    );
    report.row(
        "Data checks (batches without a write: unchanged) / batches with a write",
        format!("{checks} passed / {rebaselines}"),
    );
    report.row("Health checks passed", health_checks);
    report.row("Seed", format!("`{seed_hex}`"));
    report.row("Wall time", format!("{} s", started.elapsed().as_secs()));
    report.write("7-fuzz", "random_and_mutated_requests");
}
