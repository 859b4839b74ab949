//! `/v1/files`: uploads (`purpose=batch`, at most 200 MB and 50,000 lines, as OpenAI limits
//! them: 413 above), and the output and error files of ended batches, made from their jobs'
//! results when read (`file-batch_7-output`, `file-batch_7-errors`).

use axum::extract::{Multipart, Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, call, call_sync, error::ApiError, unexpected, ApiState, Shared};
use crate::job::BatchId;
use crate::openai::BatchLine;
use crate::protocol::{Request, Response, Selector};
use crate::queue::JobFilter;
use crate::upload::{self, FileId, FileInfo, FileRef, UploadError};

/// The largest request body the upload route reads: the largest file and room for the
/// multipart framing and the `purpose` field.
pub const BODY_LIMIT: usize = upload::MAX_UPLOAD_BYTES as usize + (1 << 20);

fn file_json(f: &FileInfo) -> Value {
    json!({
        "id": f.id.to_string(),
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created / 1000,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": null,
        "status_details": null,
    })
}

pub async fn upload(
    State(state): State<Shared>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut form = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (mut content, mut filename, mut purpose) = (None, None, None);
    while let Some(field) = form.next_field().await? {
        match field.name() {
            Some("file") => {
                filename = Some(field.file_name().unwrap_or("upload").to_string());
                let bytes = field.bytes().await?;
                if bytes.len() as u64 > upload::MAX_UPLOAD_BYTES {
                    return Err(upload_error(UploadError::TooLarge));
                }
                content = Some(bytes.to_vec());
            }
            Some("purpose") => purpose = Some(field.text().await?),
            // Taken (OpenAI's clients send them), not acted on: uploads stay until deleted.
            Some("expires_after[anchor]" | "expires_after[seconds]") => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {:?} in the form (file, purpose)",
                    other.unwrap_or("")
                )))
            }
        }
    }
    let content = content.ok_or_else(|| ApiError::bad_param("file", "no `file` in the form"))?;
    let purpose =
        purpose.ok_or_else(|| ApiError::bad_param("purpose", "no `purpose` in the form"))?;
    let filename = filename.unwrap_or_default();
    let (text, lines, purpose) = blocking(move || match upload::check(&purpose, content) {
        Ok((text, lines)) => Ok((text, lines, purpose)),
        Err(e) => Err(upload_error(e)),
    })
    .await?;
    match call(
        &state,
        Request::UploadAdd {
            filename,
            purpose,
            text,
            lines,
        },
    )
    .await?
    {
        Response::Files(f) if f.len() == 1 => Ok(Json(file_json(&f[0]))),
        other => Err(unexpected(other)),
    }
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::TooLarge | UploadError::TooManyLines(_) => ApiError::too_large(e.to_string()),
        UploadError::Purpose(_) => ApiError::bad_param("purpose", e.to_string()),
        UploadError::NotText => ApiError::bad_param("file", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    purpose: Option<String>,
}

/// Uploads, newest first; `after` and `limit` page them as OpenAI's clients do.
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let after = match q.after.as_deref() {
        Some(a) => Some(
            a.parse::<FileId>()
                .map_err(|e| ApiError::bad_param("after", e))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "limit: 1 to 10000"));
    }
    let files = match call(
        &state,
        Request::Uploads {
            after,
            limit: limit + 1,
        },
    )
    .await?
    {
        Response::Files(f) => f,
        other => return Err(unexpected(other)),
    };
    let mut data: Vec<&FileInfo> = files
        .iter()
        .filter(|f| q.purpose.as_deref().is_none_or(|p| p == f.purpose))
        .collect();
    let has_more = files.len() > limit;
    data.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": data.iter().map(|f| file_json(f)).collect::<Vec<_>>(),
        "first_id": data.first().map(|f| f.id.to_string()),
        "last_id": data.last().map(|f| f.id.to_string()),
        "has_more": has_more,
    })))
}

fn parse_ref(id: &str) -> Result<FileRef, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("No such File object: {id}")))
}

pub async fn one(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match parse_ref(&id)? {
        FileRef::Upload(f) => match call(&state, Request::UploadGet(f)).await? {
            Response::Files(v) if v.len() == 1 => Ok(Json(file_json(&v[0]))),
            other => Err(unexpected(other)),
        },
        r @ (FileRef::Output(b) | FileRef::Errors(b)) => {
            let (text, created) = blocking(move || batch_file(&state, r, b)).await?;
            Ok(Json(json!({
                "id": r.to_string(),
                "object": "file",
                "bytes": text.len(),
                "created_at": created / 1000,
                "filename": format!("{}.jsonl", r.to_string().trim_start_matches("file-")),
                "purpose": "batch_output",
                "status": "processed",
                "expires_at": null,
                "status_details": null,
            })))
        }
    }
}

pub async fn content(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let text = match parse_ref(&id)? {
        FileRef::Upload(f) => match call(&state, Request::UploadText(f)).await? {
            Response::Text(t) => t,
            other => return Err(unexpected(other)),
        },
        r @ (FileRef::Output(b) | FileRef::Errors(b)) => {
            blocking(move || batch_file(&state, r, b)).await?.0
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], text))
}

pub async fn delete(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let FileRef::Upload(f) = parse_ref(&id)? else {
        return Err(ApiError::bad_request(
            "a batch's output and error files go with the batch's results (qwen3q prune)",
        ));
    };
    match call(&state, Request::UploadRemove(f)).await? {
        Response::Removed(true) => Ok(Json(json!({"id": id, "object": "file", "deleted": true}))),
        Response::Removed(false) => Err(ApiError::not_found(format!("No such File object: {id}"))),
        other => Err(unexpected(other)),
    }
}

/// Jobs read a page at a time when a batch's file is written.
const PAGE: usize = 500;

/// The output (or error) file of batch `b`, once it has ended: a line per job that succeeded
/// (or failed for good, was cancelled or expired), in enqueue order; and when it ended.
fn batch_file(state: &ApiState, r: FileRef, b: BatchId) -> Result<(String, u64), ApiError> {
    let missing = || ApiError::not_found(format!("No such File object: {r}"));
    let view = match super::batches::get_batch(state, b) {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => return Err(missing()),
        other => other?,
    };
    let Some(ended) = view.record.ended.filter(|_| view.status().is_terminal()) else {
        return Err(missing());
    };
    let mut out = String::new();
    let mut after = None;
    loop {
        let filter = JobFilter {
            batch: Some(b),
            after,
            limit: Some(PAGE),
            ..Default::default()
        };
        let jobs = match call_sync(state, Request::List(filter))? {
            Response::Jobs(j) => j,
            other => return Err(unexpected(other)),
        };
        let Some(last) = jobs.last().map(|j| j.id) else {
            break;
        };
        let full = jobs.len() == PAGE;
        let selectors = jobs.iter().map(|j| Selector::Id(j.id)).collect();
        let views = match call_sync(state, Request::Results(selectors))? {
            Response::Views { views, .. } => views,
            other => return Err(unexpected(other)),
        };
        for v in &views {
            let line = match (r, crate::openai::batch_line(v)) {
                (FileRef::Output(_), Some(BatchLine::Output(line)))
                | (FileRef::Errors(_), Some(BatchLine::Error(line))) => Some(line),
                _ => None,
            };
            if let Some(line) = line {
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        if !full {
            break;
        }
        after = Some(last);
    }
    Ok((out, ended))
}
