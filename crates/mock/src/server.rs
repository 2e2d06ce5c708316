//! The HTTP/1.1 server: accept loop (TCP_NODELAY, keep-alive), routing, behaviours.

use crate::apis;
use crate::body::{MockBody, SseBody, StreamPlan};
use crate::parse::{ParsedRequest, parse_request};
use crate::render::{self, Api, Usage};
use crate::{Behavior, RecordedRequest, Shared, State, UsageMode};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Accepts connections until `shutdown`'s sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off briefly, then keep serving.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// The routes the mock knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Text,
    Embeddings,
    Models,
}

/// Maps a path to a route and, for Azure paths, the deployment name.
fn route(path: &str) -> Option<(Route, Option<&str>)> {
    let endpoint = |rest: &str| match rest {
        "chat/completions" => Some(Route::Chat),
        "completions" => Some(Route::Text),
        "embeddings" => Some(Route::Embeddings),
        "models" => Some(Route::Models),
        _ => None,
    };
    if let Some(rest) = path.strip_prefix("/v1/") {
        return endpoint(rest).map(|r| (r, None));
    }
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (dep, rest) = rest.split_once('/')?;
    match endpoint(rest) {
        Some(Route::Models) | None => None,
        Some(r) if !dep.is_empty() => Some((r, Some(dep))),
        Some(_) => None,
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: u16, message: &str) -> Response<MockBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, render::error_body(code.as_u16(), message))
}

fn record(shared: &Shared, parts: &hyper::http::request::Parts, body: &Bytes) {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    shared.record(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers,
        body: body.clone(),
    });
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let close = shared.state().config.close_connections;
    let mut res = answer(shared, req).await?;
    if close {
        res.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(res)
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let seq = shared.next_seq();
    let state = shared.state();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if state.config.record_requests {
        record(&shared, &parts, &body);
    }
    let cfg = &state.config;
    if !cfg.ttft.is_zero() {
        tokio::time::sleep(cfg.ttft).await;
    }
    let api_route = apis::route(&parts.method, parts.uri.path());
    let fail = |status: u16, message: &str| match &api_route {
        Some(r) if r.anthropic() => apis::anthropic_error(status, message),
        _ => error_response(status, message),
    };
    if shared.take_failure(cfg.fail_first) {
        return Ok(fail(
            cfg.fail_status,
            "tollgate-mock: injected failure (fail_first)",
        ));
    }
    match cfg.behavior {
        Behavior::Status(status) => {
            return Ok(fail(status, "tollgate-mock: injected failure (status)"));
        }
        Behavior::Hang => std::future::pending::<()>().await,
        Behavior::Ok | Behavior::CloseMidStream => {}
    }
    let resp = match &api_route {
        Some(r) => apis::respond(&shared, &state, seq, &parts.method, r, &body),
        None => respond(&state, seq, &parts.method, parts.uri.path(), &body),
    };
    Ok(if cfg.behavior == Behavior::CloseMidStream {
        truncate(resp)
    } else {
        resp
    })
}

/// For `CloseMidStream`: plain bodies keep their full `Content-Length` but only half the
/// bytes are sent; streams were already planned to stop half way.
fn truncate(resp: Response<MockBody>) -> Response<MockBody> {
    let (mut parts, body) = resp.into_parts();
    let body = match body {
        MockBody::Full(Some(bytes)) => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            MockBody::Truncated(Some(bytes.slice(..bytes.len() / 2)), false)
        }
        other => other,
    };
    Response::from_parts(parts, body)
}

fn respond(
    state: &State,
    seq: u64,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<MockBody> {
    let Some((route, deployment)) = route(path) else {
        return error_response(404, "tollgate-mock: unknown route");
    };
    let expected = if route == Route::Models {
        Method::GET
    } else {
        Method::POST
    };
    if method != expected {
        return error_response(405, "tollgate-mock: method not allowed");
    }
    if route == Route::Models {
        return json_response(StatusCode::OK, state.models_body.clone());
    }
    let parsed = match parse_request(body) {
        Ok(p) => p,
        Err(e) => return error_response(400, &e.to_string()),
    };
    let model_json = match (&parsed.model_json, deployment) {
        (Some(m), _) => m.clone(),
        (None, Some(dep)) => serde_json::to_string(dep).unwrap_or_else(|_| "\"\"".to_owned()),
        (None, None) => return error_response(400, "you must provide a model parameter"),
    };
    let cfg = &state.config;
    let created = now_secs();
    match route {
        Route::Embeddings => {
            let body = render::embeddings(
                &model_json,
                parsed.inputs,
                parsed.prompt_tokens,
                cfg.usage != UsageMode::Never,
            );
            json_response(StatusCode::OK, body)
        }
        Route::Chat | Route::Text => {
            let api = if route == Route::Chat {
                Api::Chat
            } else {
                Api::Text
            };
            if parsed.stream {
                stream_response(state, api, seq, created, &model_json, &parsed)
            } else {
                let usage = (cfg.usage != UsageMode::Never).then(|| usage_of(state, &parsed));
                let body = render::plain_completion(
                    api,
                    seq,
                    created,
                    &model_json,
                    parsed.n,
                    &state.content,
                    usage.as_ref(),
                );
                json_response(StatusCode::OK, body)
            }
        }
        Route::Models => json_response(StatusCode::OK, state.models_body.clone()),
    }
}

fn usage_of(state: &State, parsed: &ParsedRequest) -> Usage {
    let cfg = &state.config;
    Usage {
        prompt: parsed.prompt_tokens,
        completion: u64::from(cfg.response_tokens) * u64::from(parsed.n)
            + u64::from(cfg.reasoning_tokens),
        cached: u64::from(cfg.cached_tokens),
        reasoning: u64::from(cfg.reasoning_tokens),
    }
}

fn stream_response(
    state: &State,
    api: Api,
    seq: u64,
    created: u64,
    model_json: &str,
    parsed: &ParsedRequest,
) -> Response<MockBody> {
    let cfg = &state.config;
    let mut prefix = Vec::with_capacity(160);
    prefix.extend_from_slice(b"data: {");
    render::push_head(&mut prefix, api, true, seq, created, model_json);
    prefix.extend_from_slice(b",\"choices\":[");
    let (usage_null, every_chunk, final_usage) = match cfg.usage {
        UsageMode::Always => (parsed.include_usage, false, parsed.include_usage),
        UsageMode::Never => (false, false, false),
        UsageMode::EveryChunk => (false, true, true),
    };
    let tokens = u64::from(cfg.response_tokens);
    let plan = StreamPlan {
        api,
        prefix: Bytes::from(prefix),
        n: parsed.n,
        tokens,
        chunks: cfg.stream_chunks.map_or(tokens, u64::from),
        usage_null,
        every_chunk,
        final_usage,
        prompt: parsed.prompt_tokens,
        cached: u64::from(cfg.cached_tokens),
        reasoning: u64::from(cfg.reasoning_tokens),
        gap: cfg.chunk_gap,
        split_writes: cfg.split_writes,
        keepalive_comments: cfg.keepalive_comments,
        close_mid_stream: cfg.behavior == Behavior::CloseMidStream,
    };
    let mut resp = Response::new(MockBody::Sse(Box::new(SseBody::new(plan))));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1/chat/completions"), Some((Route::Chat, None)));
        assert_eq!(route("/v1/completions"), Some((Route::Text, None)));
        assert_eq!(route("/v1/embeddings"), Some((Route::Embeddings, None)));
        assert_eq!(route("/v1/models"), Some((Route::Models, None)));
        assert_eq!(
            route("/openai/deployments/gpt4/chat/completions"),
            Some((Route::Chat, Some("gpt4")))
        );
        assert_eq!(
            route("/openai/deployments/emb/embeddings"),
            Some((Route::Embeddings, Some("emb")))
        );
        assert_eq!(route("/openai/deployments//completions"), None);
        assert_eq!(route("/v2/chat/completions"), None);
        assert_eq!(route("/v1/chat/completion"), None);
    }
}
