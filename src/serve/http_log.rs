//! Around every request: a request ID (the client's `X-Request-ID` when it sends a
//! sane one, else a new random one) echoed in the response with a `Server` header;
//! one JSON log line per request (request ID, method, path, status, bytes, duration);
//! the factory's CORS answer (any origin); and the HTTP metrics by route pattern.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::metrics::{HandlerLabels, HttpLabels};

const REQUEST_ID: &str = "x-request-id";

/// Wraps `router` with the logging and metrics middleware.
pub fn layer(router: Router, state: AppState) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let state = state.clone();
            async move { around(state, req, next).await }
        },
    ))
}

fn new_request_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

async fn around(state: AppState, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let inflight = state
        .metrics
        .http_inflight
        .get_or_create(&HandlerLabels {
            handler: handler.clone(),
        })
        .clone();
    inflight.inc();
    let mut response = next.run(req).await;
    inflight.dec();
    let status = response.status().as_u16();
    // The body's exact size, else the length the handler announced (streamed assets).
    let bytes: u64 = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .filter(|n| *n > 0)
        .or_else(|| {
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let duration = started.elapsed().as_secs_f64();
    let labels = HttpLabels {
        handler,
        method: method.clone(),
        code: status.to_string(),
    };
    state
        .metrics
        .http_duration
        .get_or_create(&labels)
        .observe(duration);
    state
        .metrics
        .http_size
        .get_or_create(&labels)
        .observe(bytes as f64);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    // CORS as the factory answers by default: any origin may read the API.
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Disposition, Content-Length, Content-Type"),
    );
    response.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static(concat!("imager/", env!("CARGO_PKG_VERSION"))),
    );
    let error = response
        .extensions()
        .get::<super::ErrorMessage>()
        .map(|e| e.0.clone());
    tracing::info!(
        target: "request",
        request_id = %id,
        method = %method,
        path = %path,
        status,
        bytes,
        duration_ms = (duration * 1000.0 * 1000.0).round() / 1000.0,
        error = error.as_deref(),
    );
    response
}
