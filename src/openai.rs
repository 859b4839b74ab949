//! The OpenAI shapes qwen3q writes: the Batch object, and the lines of a batch's output and
//! error files. The CLI (`results --format openai`, `batches --json`) and the HTTP API write
//! the same bytes from the same code. Pure.

use serde_json::{json, Value};

use crate::batch::{BatchStatus, BatchView};
use crate::job::{Job, JobState, Millis, StateKind};
use crate::protocol::JobView;
use crate::upload::FileRef;

/// OpenAI's `finish_reason`: `length` when one generation (a document of one chunk, a chat)
/// used every token it was allowed, else `stop` (it ended by itself). A document of several
/// chunks ends with its merge or reduce: `stop`.
pub fn finish_reason(view: &JobView) -> &'static str {
    match &view.result {
        Some(r)
            if r.chunks <= 1
                && !r.reduced
                && r.usage.completion_tokens >= u64::from(view.job.spec.params.max_tokens) =>
        {
            "length"
        }
        _ => "stop",
    }
}

/// A job's line in its batch's files: the output file's for a succeeded job (with its
/// result), the error file's for one that ended without an answer; none while it may still
/// run. `results --format openai` and the HTTP API's batch files both write these.
pub enum BatchLine {
    Output(Value),
    Error(Value),
}

pub fn batch_line(view: &JobView) -> Option<BatchLine> {
    let kind = view.job.state.kind();
    if kind == StateKind::Succeeded {
        return openai_success(view).map(BatchLine::Output);
    }
    kind.ended_without_answer()
        .then(|| BatchLine::Error(openai_error(&view.job)))
}

/// An OpenAI Batch API output line for a succeeded job.
pub fn openai_success(view: &JobView) -> Option<Value> {
    let r = view.result.as_ref()?;
    let job = &view.job;
    let body = chat_completion(&Completion {
        id: format!("chatcmpl-{}", job.id),
        created: r.finished / 1000,
        model: &r.model.name,
        answer: &r.answer,
        reasoning: r.reasoning.as_deref(),
        finish: finish_reason(view),
        prompt_tokens: r.usage.prompt_tokens,
        completion_tokens: r.usage.completion_tokens,
        cached_tokens: r.cached_tokens,
    });
    Some(json!({
        "id": format!("batch_req_{}", job.id),
        "custom_id": job.spec.custom_id,
        "response": {
            "status_code": 200,
            "request_id": format!("req_{}", job.id),
            "body": body,
        },
        "error": null,
    }))
}

/// What a chat completion says: a batch job's result, or an interactive answer.
pub struct Completion<'a> {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub model: &'a str,
    pub answer: &'a str,
    /// Qwen3's thinking, apart from the answer (`reasoning_content`, as llama-server and
    /// vLLM name it).
    pub reasoning: Option<&'a str>,
    /// `stop` or `length`.
    pub finish: &'static str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

/// OpenAI's `chat.completion` object.
pub fn chat_completion(c: &Completion) -> Value {
    let mut message = json!({"role": "assistant", "content": c.answer, "refusal": null});
    if let Some(reasoning) = c.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    json!({
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": c.finish,
            "logprobs": null,
        }],
        "usage": usage(c),
    })
}

fn usage(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    })
}

/// One `chat.completion.chunk` of a streamed answer: `delta` (`{"role": "assistant"}` first,
/// then `{"content": …}` pieces), the last one with its `finish_reason`.
pub fn chat_chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// The last chunk when the request asked for `stream_options.include_usage`: no choices,
/// the usage.
pub fn usage_chunk(c: &Completion) -> Value {
    json!({
        "id": c.id,
        "object": "chat.completion.chunk",
        "created": c.created,
        "model": c.model,
        "choices": [],
        "usage": usage(c),
    })
}

/// An OpenAI Batch API error line for a job that failed for good, was cancelled or expired
/// (OpenAI's codes `batch_cancelled` and `batch_expired` for the last two).
pub fn openai_error(job: &Job) -> Value {
    let (code, message) = match &job.state {
        JobState::Dead { error, .. } => ("job_failed", error.clone()),
        JobState::Cancelled { .. } => ("batch_cancelled", "the job was cancelled".to_string()),
        JobState::Expired { .. } => (
            "batch_expired",
            "the batch's deadline passed before the job started".to_string(),
        ),
        other => ("not_finished", format!("the job is {}", other.kind())),
    };
    json!({
        "id": format!("batch_req_{}", job.id),
        "custom_id": job.spec.custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}

/// A batch as OpenAI's Batch object (`GET /v1/batches/{id}`, `batches --json`, `batch show
/// --json`): every field OpenAI's clients read — times in Unix seconds, `output_file_id` and
/// `error_file_id` once it has ended (the files are made from the results when read) — with
/// what qwen3q adds: `name`, `source`, `deadline`, `late`, and `counts`, the jobs per state.
pub fn batch_json(view: &BatchView, now: Millis) -> Value {
    let r = &view.record;
    let secs = |ms: Millis| ms / 1000;
    let status = view.status();
    let metadata: serde_json::Map<String, Value> = r
        .spec
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let ended = r.ended.filter(|_| status.is_terminal()).map(secs);
    let at = |s: BatchStatus| ended.filter(|_| status == s);
    let c = &view.counts;
    let has_errors = StateKind::ALL
        .iter()
        .any(|k| k.ended_without_answer() && c.get(*k) > 0);
    let errors = (!r.errors.is_empty()).then(|| {
        json!({
            "object": "list",
            "data": r.errors.iter().map(|e| json!({
                "code": e.code, "line": e.line, "message": e.message, "param": null,
            })).collect::<Vec<_>>(),
        })
    });
    let (endpoint, input_file_id, window) = match &r.spec.api {
        Some(api) => (
            api.endpoint.clone(),
            Some(api.input_file_id.to_string()),
            api.completion_window.clone(),
        ),
        None => ("/v1/chat/completions".to_string(), None, String::new()),
    };
    json!({
        "id": r.id.to_string(),
        "object": "batch",
        "endpoint": endpoint,
        "errors": errors,
        "input_file_id": input_file_id.unwrap_or_default(),
        "completion_window": window,
        "status": status.as_str(),
        "output_file_id": ended
            .filter(|_| status != BatchStatus::Failed)
            .map(|_| FileRef::Output(r.id).to_string()),
        "error_file_id": ended
            .filter(|_| has_errors)
            .map(|_| FileRef::Errors(r.id).to_string()),
        "created_at": secs(r.created),
        "in_progress_at": r.sealed.filter(|_| r.errors.is_empty()).map(secs),
        "expires_at": r.spec.deadline.map(secs),
        "finalizing_at": null,
        "completed_at": at(BatchStatus::Completed),
        "failed_at": at(BatchStatus::Failed),
        "expired_at": at(BatchStatus::Expired),
        "cancelling_at": r.cancel_requested.map(secs),
        "cancelled_at": at(BatchStatus::Cancelled),
        "request_counts": view.request_counts(),
        "metadata": metadata,
        "name": r.spec.name,
        "source": r.spec.source,
        "deadline": r.spec.deadline.map(secs),
        "late": view.late(now),
        "counts": view.counts,
        "expected_tokens_left": view.tokens.expected_left(),
    })
}
