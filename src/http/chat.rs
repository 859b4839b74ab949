//! `POST /v1/chat/completions`: an interactive answer, ahead of the batch work the worker is
//! doing (`scheduler::interactive`). Not a stored job: it is handed to the loop through
//! `Signals::submit_chat` and answered through a channel, as one `chat.completion` or, with
//! `stream: true`, as server-sent `chat.completion.chunk`s ending in `data: [DONE]`.
//!
//! The body is read as a batch line's body is (`ingest::parse_chat_body`: the same fields
//! mean the same), plus what only a live request has: `stream`, `stream_options`, `stop`,
//! `n` (1 only), and llama-server's `chat_template_kwargs.enable_thinking` for Qwen3 thinking.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{blocking, Shared};
use crate::engine::reasoning::Piece;
use crate::engine::{FinishReason, Sampling};
use crate::job::GenParams;
use crate::openai::{chat_chunk, chat_completion, usage_chunk, Completion};
use crate::scheduler::chat::{ChatAnswer, ChatEvent, ChatFailure, ChatRequest, FailureKind};

/// Fields of a live request that a batch line's body does not act on.
const LIVE_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "stop",
    "n",
    "chat_template_kwargs",
];

/// What a request asks, checked.
struct Asked {
    chat: ChatRequest,
    include_usage: bool,
}

pub(super) async fn create(
    State(state): State<Shared>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let (tx, rx) = mpsc::unbounded_channel();
    let st = state.clone();
    let asked = blocking(move || asked(&st, &body, tx)).await?;
    let (stream, include_usage) = (asked.chat.stream, asked.include_usage);
    let model = asked.chat.model.name.clone();
    match state.hooks.signals.submit_chat(asked.chat) {
        Ok(()) => {}
        Err(crate::scheduler::Refused::Stopping) => {
            return Err(ApiError::unavailable("the worker is stopping"))
        }
        Err(crate::scheduler::Refused::TooMany) => {
            return Err(ApiError::too_many(format!(
                "{} chat completions are waiting or running already; try again shortly",
                crate::scheduler::chat::MAX_OPEN
            )))
        }
    }
    let id = format!("chatcmpl-{}", next_id());
    let created = crate::now_ms() / 1000;
    if stream {
        return Ok(streamed(rx, id, created, model, include_usage).into_response());
    }
    let answer = whole(rx).await?;
    Ok(Json(with_completion(&answer, id, created, chat_completion)).into_response())
}

/// Ids of this worker's answers (`chatcmpl-…`): unique while it runs, not stored.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:x}-{}",
        crate::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Check the body and resolve its model (on a blocking thread: the registry is in the store).
fn asked(
    state: &super::ApiState,
    body: &Value,
    reply: mpsc::UnboundedSender<ChatEvent>,
) -> Result<Asked, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    check_body(obj)?;
    let parsed = crate::ingest::parse_chat_body(obj, LIVE_FIELDS).map_err(ApiError::bad_request)?;
    let stream = flag(obj, "stream")?;
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => flag(o, "include_usage")?,
        Some(_) => return Err(ApiError::bad_param("stream_options", "must be an object")),
    };
    let thinking = match obj.get("chat_template_kwargs") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => flag(o, "enable_thinking")?,
        Some(_) => {
            return Err(ApiError::bad_param(
                "chat_template_kwargs",
                "must be an object",
            ))
        }
    };
    let stop = stops(obj.get("stop"))?;
    let mut params = GenParams::qwen3_defaults(thinking);
    parsed.gen.apply(&mut params);
    // (temperature and top_p are in range: `check_body` held the overrides to it, and the
    // model card's defaults are.)
    params.max_tokens = params.max_tokens.min(state.chat_max_tokens.max(1));
    let model =
        (state.resolve_model)(&*state.store, parsed.model.as_deref()).map_err(|e| ApiError {
            code: Some("model_not_found"),
            ..ApiError::not_found(e)
        })?;
    let sampling = Sampling {
        max_tokens: params.max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        top_k: params.top_k,
        min_p: params.min_p,
        // Without a seed, each request samples anew (as OpenAI's do).
        seed: params.seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
        }),
    };
    Ok(Asked {
        chat: ChatRequest {
            model,
            messages: parsed.messages,
            sampling,
            grammar: parsed.constraint,
            stop,
            thinking,
            stream,
            received: Instant::now(),
            reply,
            ticket: None,
        },
        include_usage,
    })
}

/// What the OpenAPI document says of a body, held to (the batch line parser is lenient with
/// types it does not read; a live request is refused for them, as OpenAI refuses them).
fn check_body(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_param("messages", "messages must be a list"))?;
    for m in messages {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("system" | "developer" | "user" | "assistant")) {
            return Err(ApiError::bad_param(
                "messages",
                "a message's role is system, developer, user or assistant",
            ));
        }
        let text_only = match m.get("content") {
            Some(Value::String(_)) => true,
            Some(Value::Array(parts)) => {
                !parts.is_empty()
                    && parts.iter().all(|p| {
                        p.get("type").and_then(Value::as_str) == Some("text")
                            && p.get("text").is_some_and(Value::is_string)
                    })
            }
            _ => false,
        };
        if !text_only {
            return Err(ApiError::bad_param(
                "messages",
                "a message's content is text, or a list of text parts",
            ));
        }
    }
    let integer = |key: &'static str, lo: u64, hi: u64| match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| (lo..=hi).contains(&n)) => Ok(()),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("{key} is an integer from {lo} to {hi}"),
        )),
    };
    integer("max_tokens", 1, i32::MAX as u64)?;
    integer("max_completion_tokens", 1, i32::MAX as u64)?;
    integer("seed", 0, u32::MAX as u64)?;
    integer("n", 1, 1)?;
    let number = |key: &'static str, ok: fn(f64) -> bool, range: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_f64().is_some_and(ok) => Ok(()),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("{key} is a number {range}"),
        )),
    };
    number("temperature", |x| (0.0..=2.0).contains(&x), "from 0 to 2")?;
    number("top_p", |x| x > 0.0 && x <= 1.0, "above 0, at most 1")?;
    match obj.get("response_format") {
        None | Some(Value::Null) => {}
        Some(rf) => {
            let ok = match rf.get("type").and_then(Value::as_str) {
                Some("text" | "json_object") => true,
                Some("json_schema") => rf.get("json_schema").is_some_and(|j| {
                    j.get("name").is_some_and(Value::is_string)
                        && matches!(j.get("strict"), None | Some(Value::Null | Value::Bool(_)))
                        && j.get("schema")
                            .and_then(|s| s.get("type"))
                            .and_then(Value::as_str)
                            == Some("object")
                }),
                _ => false,
            };
            if !ok {
                return Err(ApiError::bad_param(
                    "response_format",
                    "text, json_object, or json_schema with a name and an object schema",
                ));
            }
        }
    }
    Ok(())
}

fn flag(obj: &Map<String, Value>, key: &'static str) -> Result<bool, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("{key} must be true or false"),
        )),
    }
}

/// `stop`: a string or up to four of them.
fn stops(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_param("stop", "stop sequences are strings"))?,
        Some(_) => return Err(ApiError::bad_param("stop", "a string or a list of strings")),
    };
    crate::engine::stops::check(&list).map_err(|e| ApiError::bad_param("stop", e))?;
    Ok(list)
}

fn failure(f: ChatFailure) -> ApiError {
    match f.kind {
        FailureKind::BadRequest => ApiError::bad_request(f.message),
        FailureKind::Unavailable => ApiError::unavailable(f.message),
    }
}

fn gone() -> ApiError {
    ApiError::unavailable("the worker stopped before answering")
}

/// The whole answer (deltas, if any, are skipped).
async fn whole(mut rx: mpsc::UnboundedReceiver<ChatEvent>) -> Result<ChatAnswer, ApiError> {
    loop {
        match rx.recv().await {
            Some(ChatEvent::Delta(_)) => {}
            Some(ChatEvent::Done(answer)) => return Ok(answer),
            Some(ChatEvent::Failed(f)) => return Err(failure(f)),
            None => return Err(gone()),
        }
    }
}

fn finish(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

/// `a` as a [`Completion`], handed to `f` (the split texts live only for the call).
fn with_completion<T>(
    a: &ChatAnswer,
    id: String,
    created: u64,
    f: impl FnOnce(&Completion) -> T,
) -> T {
    f(&Completion {
        id,
        created,
        model: &a.model,
        answer: &a.answer,
        reasoning: a.reasoning.as_deref(),
        finish: finish(a.finish),
        prompt_tokens: a.prompt_tokens.into(),
        completion_tokens: a.completion_tokens.into(),
        cached_tokens: a.cached_tokens.into(),
    })
}

/// The answer as server-sent events: a role chunk, content chunks as the text comes, the
/// finish chunk, the usage chunk if asked, `[DONE]`. A failure after the start is an
/// `error` event (OpenAI's clients raise it). A task turns the loop's events into SSE
/// events; when the client leaves, its channel closes, the task ends and drops the loop's
/// channel, and the loop aborts the chat at its next step.
fn streamed(
    mut rx: mpsc::UnboundedReceiver<ChatEvent>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> Sse<Events> {
    let (tx, out) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let data = |v: Value| Event::default().data(v.to_string());
        let chunk =
            |delta: Value, fin: Option<&str>| data(chat_chunk(&id, created, &model, delta, fin));
        if tx
            .send(chunk(json!({"role": "assistant", "content": ""}), None))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let event = match rx.recv().await {
                Some(ChatEvent::Delta(Piece::Answer(text))) => {
                    chunk(json!({"content": text}), None)
                }
                // As llama-server streams Qwen3's thinking.
                Some(ChatEvent::Delta(Piece::Reasoning(text))) => {
                    chunk(json!({"reasoning_content": text}), None)
                }
                Some(ChatEvent::Done(answer)) => {
                    let _ = tx.send(chunk(json!({}), Some(finish(answer.finish)))).await;
                    if include_usage {
                        let usage = with_completion(&answer, id.clone(), created, usage_chunk);
                        let _ = tx.send(data(usage)).await;
                    }
                    break;
                }
                Some(ChatEvent::Failed(f)) => {
                    let e = failure(f);
                    let _ = tx.send(data(json!({"error": e.body()}))).await;
                    break;
                }
                None => {
                    let _ = tx.send(data(json!({"error": gone().body()}))).await;
                    break;
                }
            };
            if tx.send(event).await.is_err() {
                return; // the client left
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(Events(out))
}

/// The SSE events of one answer, as a stream.
pub(super) struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}
