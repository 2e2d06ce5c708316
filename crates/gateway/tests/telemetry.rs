//! OpenTelemetry traces against an in-process OTLP/HTTP collector: a request span per inference
//! request (continuing an incoming `traceparent`), a child span per phase, the GenAI attributes
//! with the ledger's token counts; and a collector that is down does not hurt serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use tollgate_mock::{MockConfig, MockUpstream};

/// Spans received, with the `service.name` of their resource.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Serves OTLP/HTTP (protobuf) on a loopback port; returns its base URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.receive(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        base
    }

    async fn receive(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.paths.lock().unwrap().push(req.uri().path().to_owned());
        assert_eq!(
            req.headers()["content-type"],
            "application/x-protobuf",
            "OTLP/HTTP protobuf"
        );
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let export = ExportTraceServiceRequest::decode(body).unwrap();
        let mut spans = self.spans.lock().unwrap();
        for rs in export.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Any::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        let mut res = Response::new(Full::new(Bytes::new()));
        res.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        res
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes as text (`"x"` for strings, the number for integers).
fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), v)
        })
        .collect()
}

const PHASES: [&str; 9] = [
    "authenticate",
    "read",
    "parse",
    "route",
    "enforce",
    "admit",
    "dispatch",
    "respond",
    "meter",
];

async fn flush(gw: &Gateway) {
    let app = gw.app.clone();
    tokio::task::spawn_blocking(move || app.telemetry.as_ref().unwrap().flush())
        .await
        .unwrap()
        .unwrap();
}

/// The request span of a trace and its children by name, checking the parent links.
fn request_and_phases<'a>(
    spans: &'a [(String, Span)],
    trace_id: &str,
) -> (&'a Span, Vec<&'a Span>) {
    let in_trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let request = in_trace
        .iter()
        .find(|s| s.name.starts_with("POST "))
        .unwrap_or_else(|| panic!("no request span in trace {trace_id}"));
    let mut children: Vec<&Span> = in_trace
        .iter()
        .copied()
        .filter(|s| s.parent_span_id == request.span_id)
        .collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(
        children.len() + 1,
        in_trace.len(),
        "every other span of the trace is a child of the request span"
    );
    for c in &children {
        assert!(c.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(c.end_time_unix_nano <= request.end_time_unix_nano);
        assert!(c.start_time_unix_nano <= c.end_time_unix_nano);
    }
    (request, children)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_each_phase_reach_the_collector_with_gen_ai_attributes() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let mock = MockUpstream::start(MockConfig {
        response_tokens: 16,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = start(&format!(
        "{}\n[telemetry]\notlp_endpoint = \"{otlp}\"\nservice_name = \"tollgate-test\"\n",
        openai_models(&[mock.base_url()])
    ))
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    let auth = format!("Bearer {key}");
    let msg = json!([{"role": "user", "content": "count to three"}]);

    // Plain, continuing the caller's trace.
    let parent_trace = "0af7651916cd43dd8448eb211c80319c";
    let parent_span = "b7ad6b7169203331";
    let plain = gw
        .post_as(
            "/v1/chat/completions",
            &auth,
            &[(
                "traceparent",
                &format!("00-{parent_trace}-{parent_span}-01"),
            )],
            json!({"model": "gpt-4o-mini", "messages": msg}).to_string(),
        )
        .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text());
    let plain_id = plain.header("x-request-id").unwrap().to_owned();
    // Streamed, a new trace.
    let streamed = gw
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": msg, "stream": true}),
        )
        .await;
    assert_eq!(streamed.status, StatusCode::OK);
    let streamed_id = streamed.header("x-request-id").unwrap().to_owned();
    // Refused at the first phase.
    let refused = gw
        .chat("tg-wrong", json!({"model": "gpt-4o-mini", "messages": msg}))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    flush(&gw).await;
    let spans = collector.spans();
    assert!(
        collector
            .paths
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "/v1/traces")
    );
    assert!(spans.iter().all(|(service, _)| service == "tollgate-test"));
    let records = gw.records().await;
    let record = |id: &str| records.iter().find(|r| r.id == id).unwrap().clone();

    // The plain request: its trace is the caller's, its parent the caller's span.
    let (request, phases) = request_and_phases(&spans, parent_trace);
    assert_eq!(hex(&request.parent_span_id), parent_span);
    assert_eq!(request.name, "POST /v1/chat/completions");
    assert_eq!(request.kind, 2, "SERVER");
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, PHASES);
    let a = attrs(request);
    let r = record(&plain_id);
    assert_eq!(a["tollgate.request.id"], plain_id);
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["http.route"], "/v1/chat/completions");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(a["gen_ai.response.model"], "up-mini");
    assert_eq!(a["gen_ai.provider.name"], "p0");
    assert_eq!(a["gen_ai.usage.input_tokens"], r.input_tokens.to_string());
    assert_eq!(a["gen_ai.usage.output_tokens"], "16");
    assert!(r.input_tokens > 0);
    let dispatch = phases.iter().find(|s| s.name == "dispatch").unwrap();
    assert_eq!(dispatch.kind, 3, "CLIENT");
    assert_eq!(attrs(dispatch)["gen_ai.request.model"], "gpt-4o-mini");

    // The streamed request: a trace of its own, the stream's usage.
    let streamed_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| attrs(s).get("tollgate.request.id") == Some(&streamed_id))
        .unwrap();
    assert!(streamed_span.parent_span_id.is_empty(), "a root span");
    let (request, phases) = request_and_phases(&spans, &hex(&streamed_span.trace_id));
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, PHASES);
    let a = attrs(request);
    let r = record(&streamed_id);
    assert_eq!(a["tollgate.stream"], "true");
    assert_eq!(a["gen_ai.usage.input_tokens"], r.input_tokens.to_string());
    assert_eq!(a["gen_ai.usage.output_tokens"], r.output_tokens.to_string());
    assert_eq!(r.output_tokens, 16);

    // The refusal: the request span and the phase it ended in.
    let refused_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name.starts_with("POST ") && attrs(s)["http.response.status_code"] == "401")
        .unwrap();
    let (_, phases) = request_and_phases(&spans, &hex(&refused_span.trace_id));
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["authenticate"]);
    assert!(!attrs(refused_span).contains_key("gen_ai.request.model"));
    assert_eq!(spans.len(), 10 + 10 + 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_hurt_serving() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let otlp = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let gw = start(&format!(
        "{}\n[telemetry]\notlp_endpoint = \"{otlp}\"\nexport_timeout_ms = 500\n",
        openai_models(&[mock.base_url()])
    ))
    .await;
    let (_, _, _, key) = gw.tenant("acme", json!({})).await;
    for stream in [false, true, false] {
        let r = gw
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The export fails; nothing waits on it but this flush.
    let app = gw.app.clone();
    let flushed = tokio::task::spawn_blocking(move || app.telemetry.as_ref().unwrap().flush())
        .await
        .unwrap();
    assert!(flushed.is_err(), "the export to a closed port failed");
    assert_eq!(gw.records().await.len(), 3);
    gw.stop().await;
}
