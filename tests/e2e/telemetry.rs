//! Telemetry through the real binary: the spans of one access grant arrive at an OTLP receiver
//! with their parent/child links (the caller's trace continued through the RPC, the job and the
//! provider calls), `/metrics` serves the RPC and provider call histograms, and no secret ever
//! reaches a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_proto::{admin, v1};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::metadata::MetadataValue;

use crate::grants::{
    MOBILE, brivo_doors, grants, issued_code, jane_grant, methods, pin_grant, two_doors,
};
use crate::harness::*;

/// One received span with its resource's attributes.
#[derive(Clone, Debug)]
struct Received {
    span: Span,
    resource: Vec<KeyValue>,
}

/// A minimal OTLP/gRPC collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().map_err(|_| tonic::Status::internal("lock"))?;
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Received {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free loopback port; returns its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        format!("http://{addr}")
    }

    fn spans(&self, trace_id: &[u8]) -> Vec<Received> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let u = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
    }
    out
}

/// Waits until every method is issued.
async fn all_issued(ch: &tonic::transport::Channel, key: &str, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in ids {
        loop {
            let m = methods(ch)
                .get_access_method(authed(
                    key,
                    v1::GetAccessMethodRequest {
                        access_method_id: id.clone(),
                    },
                ))
                .await
                .expect("get method")
                .into_inner()
                .access_method
                .expect("method");
            if m.is_issued {
                break;
            }
            assert!(Instant::now() < deadline, "method {id} not issued");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Follows parent links from `span` up to `ancestor`; the span ids passed on the way.
fn chain_to(spans: &HashMap<Vec<u8>, Span>, span: &Span, ancestor: &[u8]) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut at = span;
    for _ in 0..16 {
        path.push(at.name.clone());
        if at.parent_span_id == ancestor {
            return Some(path);
        }
        at = spans.get(&at.parent_span_id)?;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_one_grant_arrive_linked_to_the_callers_trace() {
    let started = Instant::now();
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--sandbox-provision-delay-ms", "20"]
                .map(String::from)
                .to_vec(),
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_SERVICE_NAME".into(), String::new()),
                ("OTEL_TRACES_SAMPLER".into(), "parentbased_always_on".into()),
            ],
            ..Options::default()
        },
    );
    let key = kg.sandbox_key.clone().expect("sandbox key");
    let ch = kg.channel().await;
    let doors = two_doors(&ch, &key).await;

    // The caller's span: the RPC must continue this trace.
    let trace_id = random_bytes::<16>();
    let caller_span = random_bytes::<8>();
    let mut req = authed(&key, jane_grant("otel-1", &doors, &[MOBILE]));
    let tp: MetadataValue<_> = format!("00-{}-{}-01", hex(&trace_id), hex(&caller_span))
        .parse()
        .expect("traceparent");
    req.metadata_mut().insert("traceparent", tp);
    req.metadata_mut()
        .insert("tracestate", MetadataValue::from_static("caller=1"));
    let grant = grants(&ch)
        .create_access_grant(req)
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let method_ids: Vec<String> = grant
        .requested_access_methods
        .iter()
        .flat_map(|r| r.created_access_method_ids.clone())
        .collect();
    assert!(!method_ids.is_empty());
    all_issued(&ch, &key, &method_ids).await;

    // One job per (method, access system): here one per door's system.
    let want_jobs = doors.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let got = collector.spans(&trace_id);
        let jobs = got
            .iter()
            .filter(|r| r.span.name == "job provision")
            .count();
        let calls = got
            .iter()
            .filter(|r| r.span.name.ends_with(" provision") && r.span.name != "job provision")
            .count();
        if jobs >= want_jobs && calls >= want_jobs {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the grant did not arrive: {:?}",
            got.iter().map(|r| &r.span.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let by_id: HashMap<Vec<u8>, Span> = spans
        .iter()
        .map(|r| (r.span.span_id.clone(), r.span.clone()))
        .collect();
    let rpcs: Vec<&Received> = spans
        .iter()
        .filter(|r| r.span.name == "keygate.v1.AccessGrantService/CreateAccessGrant")
        .collect();
    assert_eq!(rpcs.len(), 1, "one RPC span in the trace");
    let rpc = &rpcs[0].span;
    assert_eq!(
        rpc.parent_span_id, caller_span,
        "the RPC continues the caller's span"
    );
    assert_eq!(rpc.kind, 2, "a server span");
    assert_eq!(
        attr(&rpc.attributes, "rpc.service").as_deref(),
        Some("keygate.v1.AccessGrantService")
    );
    assert_eq!(
        attr(&rpc.attributes, "rpc.method").as_deref(),
        Some("CreateAccessGrant")
    );
    assert_eq!(
        attr(&rpc.attributes, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert!(attr(&rpc.attributes, "request_id").is_some_and(|r| !r.is_empty()));
    assert!(attr(&rpc.attributes, "workspace_id").is_some_and(|w| !w.is_empty()));
    assert_eq!(
        attr(&rpcs[0].resource, "service.name").as_deref(),
        Some("keygate")
    );
    assert_eq!(
        attr(&rpcs[0].resource, "keygate.roles").as_deref(),
        Some("gateway,orchestrator,delivery")
    );

    // Every job of the grant hangs under the RPC, every provider call under a job.
    let jobs: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.name == "job provision")
        .collect();
    assert_eq!(jobs.len(), want_jobs, "one job span per provision job");
    for job in &jobs {
        let path = chain_to(&by_id, job, &rpc.span_id);
        assert!(
            path.is_some(),
            "job span {job:?} does not chain up to the RPC span"
        );
        assert_eq!(attr(&job.attributes, "kind").as_deref(), Some("provision"));
    }
    let job_ids: Vec<&[u8]> = jobs.iter().map(|j| j.span_id.as_slice()).collect();
    let calls: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.name.ends_with(" provision") && s.name != "job provision")
        .collect();
    assert_eq!(calls.len(), want_jobs, "one provider call per job");
    for call in &calls {
        assert_eq!(call.kind, 3, "a client span");
        assert_eq!(attr(&call.attributes, "outcome").as_deref(), Some("ok"));
        assert!(
            job_ids.contains(&call.parent_span_id.as_slice()),
            "provider call {} is not a child of a job span",
            call.name
        );
        assert!(chain_to(&by_id, call, &rpc.span_id).is_some());
        // The adapter's own span sits under the provider call.
        assert!(
            spans
                .iter()
                .any(|r| r.span.name == "provision" && r.span.parent_span_id == call.span_id),
            "no adapter span under {}",
            call.name
        );
    }
    eprintln!("telemetry e2e (OTLP) took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_sigterm_are_flushed_before_exit() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = DataDir::new();
    let mut kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--drain-secs", "2"].map(String::from).to_vec(),
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
                // Far beyond the test: only the flush at exit can deliver the span.
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
                ("OTEL_TRACES_SAMPLER".into(), "parentbased_always_on".into()),
            ],
            ..Options::default()
        },
    );
    let key = kg.sandbox_key.clone().expect("sandbox key");
    let ch = kg.channel().await;
    let trace_id = random_bytes::<16>();
    let mut req = authed(&key, v1::ListAccessSystemsRequest::default());
    let tp: MetadataValue<_> = format!("00-{}-{}-01", hex(&trace_id), hex(&random_bytes::<8>()))
        .parse()
        .expect("traceparent");
    req.metadata_mut().insert("traceparent", tp);
    systems(&ch).list_access_systems(req).await.expect("list");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.spans(&trace_id).is_empty(),
        "not exported before exit"
    );
    drop(ch);
    let (status, _) = kg.terminate(Duration::from_secs(30));
    assert!(status.success());
    let names: Vec<String> = collector
        .spans(&trace_id)
        .into_iter()
        .map(|r| r.span.name)
        .collect();
    assert!(
        names.contains(&"keygate.v1.AccessSystemService/ListAccessSystems".to_owned()),
        "the RPC span was not flushed at exit: {names:?}"
    );
}

/// `GET path` on the HTTP port: status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn metrics_serve_the_rpc_and_provider_call_histograms() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--sandbox-provision-delay-ms", "20"]
                .map(String::from)
                .to_vec(),
            ..Options::default()
        },
    );
    let key = kg.sandbox_key.clone().expect("sandbox key");
    let ch = kg.channel().await;
    let doors = brivo_doors(&ch, &key).await;
    let grant = grants(&ch)
        .create_access_grant(authed(&key, pin_grant(&doors, "")))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let method = grant.requested_access_methods[0].created_access_method_ids[0].clone();
    issued_code(&ch, &key, &method).await;
    // Twice: the second read is a status cache hit.
    for _ in 0..2 {
        grants(&ch)
            .get_access_grant(authed(
                &key,
                v1::GetAccessGrantRequest {
                    access_grant_id: grant.access_grant_id.clone(),
                },
            ))
            .await
            .expect("get");
    }

    let (status, page) = http_get(&kg.http_addr, "/metrics");
    assert_eq!(status, 200);
    let has = |needle: &str| page.lines().any(|l| l.contains(needle));
    assert!(
        has(
            "keygate_rpc_duration_seconds_bucket{method=\"keygate.v1.AccessGrantService/CreateAccessGrant\",code=\"OK\",le="
        ),
        "no RPC histogram for CreateAccessGrant in\n{page}"
    );
    assert!(has(
        "keygate_rpc_duration_seconds_count{method=\"keygate.v1.AccessGrantService/GetAccessGrant\",code=\"OK\"} 2"
    ));
    assert!(
        page.lines().any(
            |l| l.starts_with("keygate_provider_call_duration_seconds_bucket{")
                && l.contains("system_type=\"virtual_brivo\"")
                && l.contains("operation=\"provision\"")
                && l.contains("outcome=\"ok\"")
        ),
        "no provider call histogram in\n{page}"
    );
    assert!(has(
        "keygate_cache_requests_total{cache=\"status\",result=\"hit\"}"
    ));
    assert!(has(
        "keygate_cache_requests_total{cache=\"api_key\",result=\"hit\"}"
    ));
    assert!(has("keygate_jobs{state=\"queued\"}"));
    assert!(has("# TYPE keygate_rpc_duration_seconds histogram"));
}

#[tokio::test]
async fn no_secret_appears_in_any_log_line() {
    let dir = DataDir::new();
    let log = dir.0.join("stderr.log");
    let mut kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms",
                "20",
                "--log-format",
                "json",
                "--drain-secs",
                "2",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![("RUST_LOG".into(), "debug".into())],
            stderr_file: Some(log.clone()),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (ws, first_key) = create_workspace(&ch, "Log check", true).await;
    let second = admin_client(&ch)
        .create_api_key(authed(
            ADMIN_TOKEN,
            admin::CreateApiKeyRequest {
                workspace_id: ws,
                name: "second".into(),
            },
        ))
        .await
        .expect("create key")
        .into_inner()
        .api_key_token;
    // A well-formed key with a wrong secret, and a wrong admin token, are refused: their
    // secrets must not be logged either.
    let id_part: Vec<&str> = first_key.splitn(3, '_').take(2).collect();
    let forged = format!(
        "{}_forgedSecretValue0123456789abcdefghijkl",
        id_part.join("_")
    );
    let refused = identities(&ch)
        .list_user_identities(authed(&forged, v1::ListUserIdentitiesRequest::default()))
        .await;
    assert!(refused.is_err());
    let wrong_admin = "wrong-admin-token-9876543210";
    assert!(
        admin_client(&ch)
            .list_workspaces(authed(wrong_admin, admin::ListWorkspacesRequest::default()))
            .await
            .is_err()
    );

    // A PIN the caller chooses, on Brivo (Keygate picks the code there).
    let pin = (uuid::Uuid::new_v4().as_u128() % 90_000_000 + 10_000_000).to_string();
    let doors = brivo_doors(&ch, &second).await;
    let grant = grants(&ch)
        .create_access_grant(authed(&second, pin_grant(&doors, &pin)))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let method = grant.requested_access_methods[0].created_access_method_ids[0].clone();
    let issued = issued_code(&ch, &second, &method).await;
    assert_eq!(issued.code, pin);
    // The shutdown's lines too.
    drop(ch);
    let (status, _) = kg.terminate(Duration::from_secs(30));
    assert!(status.success());

    let text = std::fs::read_to_string(&log).expect("read stderr");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() > 20,
        "too few log lines to mean anything: {}",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "debug lines expected"
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line: {line}"
        );
    }
    // `kg_<id>_<secret>`; the secret itself may contain `_`.
    let secret_of = |token: &str| token.splitn(3, '_').nth(2).unwrap_or_default().to_owned();
    let secrets = [
        ("the first API key", first_key.clone()),
        ("the first API key's secret", secret_of(&first_key)),
        ("the second API key", second.clone()),
        ("the second API key's secret", secret_of(&second)),
        ("the forged key's secret", secret_of(&forged)),
        ("the admin token", ADMIN_TOKEN.to_owned()),
        ("the wrong admin token", wrong_admin.to_owned()),
        ("the PIN", pin.clone()),
        (
            "the sandbox API key",
            kg.sandbox_key.clone().expect("sandbox key"),
        ),
    ];
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} too short to search for");
        if let Some(line) = lines.iter().find(|l| l.contains(secret.as_str())) {
            panic!("{what} appears in a log line: {line}");
        }
    }
}
