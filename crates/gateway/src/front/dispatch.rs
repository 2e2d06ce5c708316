//! The dispatch phase: the model's routes in fallback order, while no byte has reached the
//! client. Providers whose breaker is open are skipped while another is healthy; connect errors,
//! timeouts, 429 and 5xx move on to the next route, other answers are final.

use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::app::App;
use crate::error::ApiError;
use crate::front::Parsed;
use crate::front::admit::Admission;
use crate::sim::{self, SimRequest};
use crate::upstream::{Failure, Target, UpstreamResponse, now_ms};
use tollgate_wire::Endpoint;

/// Sends the request to the first route that answers. The admission is marked dispatched before
/// the first byte leaves, so from then on a record is owed whatever happens.
pub async fn dispatch(
    app: &App,
    admission: &mut Admission,
    parsed: &Parsed<'_>,
) -> Result<UpstreamResponse, Failure> {
    let (request, body, endpoint, restrict) =
        (&parsed.view, parsed.body, parsed.endpoint, parsed.restrict);
    let Some(model) = admission.model().cloned() else {
        return Err(Failure::Connect("no route".into()));
    };
    let routes = &model.routes;
    let attempts = (app.config.server.max_attempts as usize).max(routes.len());
    let timeout = Duration::from_millis(app.config.server.upstream_timeout_ms);
    let mut rewritten: Option<(&str, Bytes)> = None;
    let mut last_failure = None;
    let now = now_ms();
    let healthy = routes.iter().filter(|r| r.health.available(now)).count();
    for attempt in 0..attempts {
        let route = if healthy == 0 || healthy == routes.len() {
            &routes[attempt % routes.len()]
        } else {
            routes
                .iter()
                .filter(|r| r.health.available(now))
                .nth(attempt % healthy)
                .unwrap_or(&routes[0])
        };
        admission.dispatched(route_index(routes, route));
        if attempt == 0 {
            app.metrics
                .overhead
                .observe(parsed.started.elapsed().as_secs_f64());
        }
        let result = match &route.target {
            Target::Http { pool, paths, auth } => {
                let upstream_body = if request.needs_rewrite(&route.upstream_model, restrict) {
                    match &rewritten {
                        Some((m, b)) if *m == &*route.upstream_model => b.clone(),
                        _ => {
                            let b = Bytes::from(request.rewrite(&route.upstream_model, restrict));
                            rewritten = Some((&route.upstream_model, b.clone()));
                            b
                        }
                    }
                } else {
                    body.clone()
                };
                // Chat to an anthropic route is translated; Responses and Messages go natively.
                // The context of a chat translated for an Anthropic route, built only for one.
                let id = admission.id();
                let chat = || tollgate_wire::anthropic::ChatContext {
                    id: format!("chatcmpl-{id}"),
                    created: time::OffsetDateTime::now_utc().unix_timestamp(),
                    model: route.upstream_model.to_string(),
                    include_usage: true,
                };
                let sent = Instant::now();
                let result = crate::dialect::send_http_route(
                    &route.dialect,
                    pool,
                    paths,
                    auth.as_ref(),
                    endpoint,
                    upstream_body,
                    chat,
                    timeout,
                )
                .await;
                if matches!(result, Ok(_) | Err(Failure::Status { .. })) {
                    route.metrics.upstream.observe(sent.elapsed().as_secs_f64());
                }
                result
            }
            Target::Simulated(_)
                if !endpoint.has_stream_options() && endpoint != Endpoint::Embeddings =>
            {
                Err(crate::dialect::unservable(endpoint))
            }
            Target::Simulated(cfg) => {
                let (texts, messages) = request.prompt_texts(endpoint);
                let inputs = texts.len();
                let prompt_tokens = model.encoding.count_prompt_async(texts, messages).await;
                Ok(sim::respond(
                    cfg,
                    &SimRequest {
                        endpoint,
                        model: &model.name,
                        stream: request.stream,
                        include_usage: true,
                        max_tokens: request.max_tokens,
                        n: request.choices(restrict),
                        prompt_tokens,
                        inputs,
                        seed_text: body,
                    },
                ))
            }
        };
        match &result {
            Err(f) if f.retryable() => route.health.failure(now_ms()),
            _ => route.health.success(),
        }
        match result {
            Ok(resp) => return Ok(resp),
            Err(f) => {
                let retry = f.retryable() && attempt + 1 < attempts;
                tracing::warn!(
                    request = %admission.id(),
                    provider = %route.provider,
                    attempt,
                    retry,
                    failure = %failure_label(&f),
                    "Upstream attempt failed."
                );
                last_failure = Some(f);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last_failure.unwrap_or(Failure::Connect("no route".into())))
}

/// The position of `route` in `routes` (it is one of them).
fn route_index(routes: &[crate::upstream::Route], route: &crate::upstream::Route) -> usize {
    routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .unwrap_or(0)
}

fn failure_label(f: &Failure) -> String {
    match f {
        Failure::Connect(e) => format!("connect: {e}"),
        Failure::Timeout => "timeout".into(),
        Failure::Status { status, .. } => format!("status {status}"),
    }
}

/// The client's answer when every attempt failed: 502/504 in OpenAI's shape, or the upstream's
/// own client error (and 429) passed through as it shaped it.
pub fn failure_response(f: Failure) -> (StatusCode, Response) {
    match f {
        Failure::Connect(_) => {
            let e = ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream provider could not be reached.",
            );
            (e.status, e.into_response())
        }
        Failure::Timeout => {
            let e = ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream provider did not answer in time.",
            );
            (e.status, e.into_response())
        }
        Failure::Status {
            status,
            body,
            retry_after,
            content_type,
        } => {
            if status.is_server_error() {
                let e = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "The upstream provider failed with status {}.",
                        status.as_u16()
                    ),
                );
                return (e.status, e.into_response());
            }
            let mut res = (status, body).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            if let Some(r) = retry_after {
                h.insert(header::RETRY_AFTER, r);
            }
            (status, res)
        }
    }
}
