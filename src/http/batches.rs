//! `/v1/batches`: a batch made from an uploaded file, as OpenAI's Batch API makes one — every
//! line checked first (one bad line fails the batch, with each line's error, and nothing is
//! enqueued), then its requests enqueued into it in parts and the batch sealed. Its jobs are
//! the CLI's: the same file through `enqueue --batch` gives the same jobs (`spec`).
//!
//! Unlike `enqueue`, a request that is a job already is enqueued again into this batch: an
//! OpenAI batch is its requests, and its output file must hold every one of them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, call, call_sync, error::ApiError, unexpected, ApiState, Shared};
use crate::batch::{self, ApiOrigin, BatchView, LineError, NewBatch};
use crate::ingest::{self, BatchItem};
use crate::job::{BatchId, GenParams, ModelRef, Task};
use crate::protocol::{Request, Response, Selector};
use crate::queue::{BatchTarget, NewJob};
use crate::spec::SpecTemplate;
use crate::upload::{FileId, MAX_UPLOAD_LINES};

/// The one endpoint whose requests qwen3q runs.
const ENDPOINT: &str = "/v1/chat/completions";
/// Requests per enqueue: one transaction and one flush each, as the CLI sends them.
const PART: usize = 500;
/// Errors kept of a failed input (OpenAI's list is short too).
const MAX_ERRORS: usize = 100;

#[derive(serde::Deserialize)]
pub struct CreateBody {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

fn batch_json(v: &BatchView) -> Value {
    crate::openai::batch_json(v, crate::now_ms())
}

pub(super) fn get_batch(state: &ApiState, id: BatchId) -> Result<BatchView, ApiError> {
    match call_sync(state, Request::Batch(id))? {
        Response::Batches(mut v) if v.len() == 1 => Ok(v.remove(0)),
        other => Err(unexpected(other)),
    }
}

fn parse_id(id: &str) -> Result<BatchId, ApiError> {
    match id.strip_prefix("batch_").map(str::parse) {
        Some(Ok(n)) => Ok(BatchId(n)),
        _ => Err(ApiError::not_found(format!("No such Batch object: {id}"))),
    }
}

pub async fn create(
    State(state): State<Shared>,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    if body.endpoint != ENDPOINT {
        return Err(ApiError::bad_param(
            "endpoint",
            format!("endpoint {:?}: only {ENDPOINT} is served", body.endpoint),
        ));
    }
    let window = batch::parse_window(&body.completion_window)
        .map_err(|e| ApiError::bad_param("completion_window", e))?;
    let mut metadata = Vec::new();
    for (k, v) in body.metadata.unwrap_or_default() {
        match v {
            Value::String(s) => metadata.push((k, s)),
            _ => {
                return Err(ApiError::bad_param(
                    "metadata",
                    format!("metadata {k:?}: values are strings"),
                ))
            }
        }
    }
    let file: FileId = body
        .input_file_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("No such File object: {}", body.input_file_id)))?;
    let now = crate::now_ms();
    let spec = NewBatch {
        name: None,
        metadata,
        deadline: Some(now.saturating_add(window)),
        source: format!("POST /v1/batches ({file})"),
        api: Some(ApiOrigin {
            input_file_id: file,
            endpoint: body.endpoint,
            completion_window: body.completion_window,
        }),
    };
    spec.check()
        .map_err(|e| ApiError::bad_param("metadata", e))?;
    let view = blocking(move || fill(&state, file, spec)).await?;
    Ok(Json(batch_json(&view)))
}

/// Read the input file, make the batch, check every line, enqueue its requests, seal it.
fn fill(state: &ApiState, file: FileId, spec: NewBatch) -> Result<BatchView, ApiError> {
    let text = match call_sync(state, Request::UploadText(file))? {
        Response::Text(t) => t,
        other => return Err(unexpected(other)),
    };
    let id = match call_sync(state, Request::CreateBatch(spec))? {
        Response::Batches(v) if v.len() == 1 => v[0].record.id,
        Response::Error(e) => return Err(ApiError::bad_request(e)),
        other => return Err(unexpected(other)),
    };
    let (items, errors) = check_lines(state, &text);
    if !errors.is_empty() {
        call_sync(state, Request::FailBatch { id, errors })?;
        return get_batch(state, id);
    }
    let mut pending: Vec<NewJob> = Vec::with_capacity(PART.min(items.len()));
    for (line, model, item) in items {
        pending.push(template(state, model).chat(item, format!("{file}:{line}")));
        if pending.len() >= PART {
            enqueue(state, id, std::mem::take(&mut pending))?;
        }
    }
    enqueue(state, id, pending)?;
    call_sync(state, Request::SealBatch(id))?;
    get_batch(state, id)
}

fn enqueue(state: &ApiState, id: BatchId, items: Vec<NewJob>) -> Result<(), ApiError> {
    if items.is_empty() {
        return Ok(());
    }
    let request = Request::Enqueue {
        items,
        force: true,
        batch: BatchTarget::Add(id),
    };
    match call_sync(state, request)? {
        Response::Enqueued(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The spec a line's job starts from: its model, the model card's settings (the line's own
/// override them), the config's attempts.
fn template(state: &ApiState, model: ModelRef) -> SpecTemplate {
    SpecTemplate {
        task: Task::Chat { turns: Vec::new() },
        system: None,
        model,
        params: GenParams::qwen3_defaults(false),
        priority: 0,
        not_before: None,
        max_attempts: state.max_attempts.max(1),
        constraint: None,
        fallback: Vec::new(),
        auto: None,
    }
}

/// Every line of the file, parsed, with its model resolved; or what is wrong with each bad
/// one (at most [`MAX_ERRORS`]).
fn check_lines(state: &ApiState, text: &str) -> (Vec<(u64, ModelRef, BatchItem)>, Vec<LineError>) {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut models: HashMap<Option<String>, Result<ModelRef, String>> = HashMap::new();
    let mut ids = ingest::SeenIds::default();
    let fail = |errors: &mut Vec<LineError>, line: u64, code: &str, message: String| {
        if errors.len() < MAX_ERRORS {
            errors.push(LineError {
                line,
                code: code.into(),
                message,
            });
        }
    };
    let mut requests = 0u64;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        requests += 1;
        if requests > MAX_UPLOAD_LINES {
            fail(
                &mut errors,
                n,
                "too_many_requests",
                format!("more than {MAX_UPLOAD_LINES} requests"),
            );
            break;
        }
        let item = match ingest::parse_batch_line(line) {
            Ok(item) => item,
            Err(e) => {
                fail(&mut errors, n, "invalid_request", e);
                continue;
            }
        };
        if let Some(first) = ids.see(&item.custom_id, n as usize) {
            fail(
                &mut errors,
                n,
                "duplicate_custom_id",
                format!("custom_id {:?} is also on line {first}", item.custom_id),
            );
            continue;
        }
        let model = models
            .entry(item.model.clone())
            .or_insert_with(|| (state.resolve_model)(&*state.store, item.model.as_deref()))
            .clone();
        match model {
            Ok(m) => items.push((n, m, item)),
            Err(e) => fail(&mut errors, n, "model_not_found", e),
        }
    }
    if requests == 0 {
        fail(
            &mut errors,
            0,
            "empty_file",
            "the file holds no requests".into(),
        );
    }
    (items, errors)
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Batches, newest first; `after` and `limit` (1 to 100, 20 by default) page them.
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let before = match q.after.as_deref() {
        Some(a) => Some(
            parse_id(a)
                .map_err(|_| ApiError::bad_param("after", format!("{a:?} is not a batch id")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_param("limit", "limit: 1 to 100"));
    }
    let mut views = match call(
        &state,
        Request::Batches {
            before,
            limit: limit + 1,
        },
    )
    .await?
    {
        Response::Batches(v) => v,
        other => return Err(unexpected(other)),
    };
    let has_more = views.len() > limit;
    views.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": views.iter().map(batch_json).collect::<Vec<_>>(),
        "first_id": views.first().map(|v| v.record.id.to_string()),
        "last_id": views.last().map(|v| v.record.id.to_string()),
        "has_more": has_more,
    })))
}

pub async fn one(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(batch_json(
        &blocking(move || get_batch(&state, id)).await?,
    )))
}

/// Cancel: the batch is `cancelling` at once; its queued jobs are cancelled, its running ones
/// stopped by the worker; finished work is kept (its output file holds it).
pub async fn cancel(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let view = blocking(move || {
        let view = get_batch(&state, id)?;
        if view.status().is_terminal() && view.status() != batch::BatchStatus::Cancelled {
            return Err(ApiError {
                status: axum::http::StatusCode::CONFLICT,
                ..ApiError::bad_request(format!(
                    "{id} has ended ({}): nothing to cancel",
                    view.status()
                ))
            });
        }
        call_sync(&state, Request::Cancel(vec![Selector::Batch(id)]))?;
        get_batch(&state, id)
    })
    .await?;
    Ok(Json(batch_json(&view)))
}
