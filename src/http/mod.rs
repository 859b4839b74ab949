//! The HTTP API (`worker --http 127.0.0.1:11400`): OpenAI's Files, Batches, Models and Chat
//! Completions endpoints on the worker's tokio runtime, so that programs written for OpenAI's batch
//! workflow run on local GGUF models unchanged. One router ([`router`]), the state passed in
//! ([`ApiState`]), one file per resource. Handlers translate HTTP into the same
//! [`Request`](crate::protocol::Request)s the CLI sends and call [`crate::handler::handle`]
//! (on a blocking thread: the store is synchronous): one behaviour, three doors. Chat
//! completions are the exception: not stored, they go to the worker loop directly (`chat`).
//!
//! axum (0.8, HTTP/1 only): tokio's own, pure Rust (nothing compiled for the target, so the
//! macOS check holds), with extractors for JSON, queries and multipart uploads and a body
//! limit per route. No TLS: loopback by default; `README.md` gives an SSH tunnel and a
//! reverse-proxy recipe for another machine.

pub mod auth;
mod batches;
mod chat;
pub mod error;
mod files;
mod models;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::handler::WorkerHooks;
use crate::job::ModelRef;
use crate::protocol::{Request, Response};
use crate::queue::Queue;
pub use auth::ApiKey;
use error::ApiError;

/// Resolves a request's model (its name; `None`: the default) to a job's model, as the
/// CLI's `--model` does: the config's models and the registry, by name only.
pub type ResolveModel = dyn Fn(&dyn Queue, Option<&str>) -> Result<ModelRef, String> + Send + Sync;

/// What `worker --http` is given.
pub struct ApiSettings {
    pub addr: SocketAddr,
    pub key: ApiKey,
    pub resolve_model: Arc<ResolveModel>,
    /// Attempts before a job of the API's batches is given up (the config's).
    pub max_attempts: u32,
    /// The most tokens a chat completion generates (the config's `chat_max_tokens`).
    pub chat_max_tokens: u32,
}

/// Everything a handler needs.
pub struct ApiState {
    pub store: Arc<dyn Queue>,
    pub hooks: WorkerHooks,
    pub key: ApiKey,
    pub resolve_model: Arc<ResolveModel>,
    pub max_attempts: u32,
    pub chat_max_tokens: u32,
}

type Shared = Arc<ApiState>;

/// The router: every route asks for the key.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::one))
        .route("/v1/files", post(files::upload).get(files::list))
        .layer(axum::extract::DefaultBodyLimit::max(files::BODY_LIMIT))
        .route("/v1/files/{id}", get(files::one).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::one))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/chat/completions", post(chat::create))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("the HTTP API stopped: {e}");
    }
}

/// Whether an address is this machine's own (the API is not meant for others: no TLS).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// One request through the handler, on a blocking thread. `Error` answers are 500s,
/// `NotFound` ones 404s.
async fn call(state: &Shared, request: Request) -> Result<Response, ApiError> {
    let st = state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        crate::handler::handle(&*st.store, request, Some(&st.hooks), crate::now_ms())
    })
    .await
    .map_err(|e| ApiError::internal(format!("the request did not finish: {e}")))?;
    match answer {
        Response::Error(e) => Err(ApiError::internal(e)),
        Response::NotFound(e) => Err(ApiError::not_found(e)),
        r => Ok(r),
    }
}

/// Work of several requests (building a batch, writing an output file) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request did not finish: {e}")))?
}

/// [`call`] from a blocking thread (inside [`blocking`]).
fn call_sync(state: &ApiState, request: Request) -> Result<Response, ApiError> {
    match crate::handler::handle(&*state.store, request, Some(&state.hooks), crate::now_ms()) {
        Response::Error(e) => Err(ApiError::internal(e)),
        Response::NotFound(e) => Err(ApiError::not_found(e)),
        r => Ok(r),
    }
}

fn unexpected(r: Response) -> ApiError {
    ApiError::internal(format!("unexpected answer: {r:?}"))
}
