//! What the loop keeps of interactive chats, and what it says to a waiting request: the
//! types [`interactive`](super::interactive) serves chats with, and the HTTP API and
//! [`Signals`](super::Signals) pass them by. State only; the loop's steps are in `interactive`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::reasoning::{self, Piece};
use crate::engine::{EngineError, FinishReason, Sampling};
use crate::job::{ChatMessage, Constraint, ModelRef};

/// Most chats waiting or running at once: more are refused (429) instead of piling up.
pub const MAX_OPEN: usize = 64;

/// How long the context of the last chat outlives it on an idle worker: a person's next
/// question comes within seconds, and making the context again would cost its first token
/// that long (about 0.1 s on gemma 3 270M at B = 8: BENCHMARKS.md, "Interactive first").
pub const LINGER: Duration = Duration::from_secs(30);

/// A person is chatting while a chat waits or runs, or one came or ended this recently.
pub const CONVERSING: Duration = Duration::from_secs(300);

/// Batch prompt tokens one step carries while a person is chatting. A chat that comes stops
/// the step in progress (`Decoder::set_interrupt`), but not every step can be stopped (one
/// that feeds a chat's prompt, one past a sliding-window ring's size), and a running chat's
/// tokens share steps with batch work: a step of 512 prompt tokens takes a quarter of a
/// second and more on 2 cores. Chosen by measurement (BENCHMARKS.md, "Interactive first").
pub const PROMPT_CAP: u32 = 32;

/// One chat completion, as the HTTP API asks it of the loop.
pub struct ChatRequest {
    pub model: ModelRef,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    pub grammar: Option<Constraint>,
    pub stop: Vec<String>,
    /// Qwen3 thinking (off unless asked, as for batch work).
    pub thinking: bool,
    /// Send [`ChatEvent::Delta`]s as text comes (`stream: true`), not only the end.
    pub stream: bool,
    /// When the request arrived (time to first token counts from here).
    pub received: Instant,
    /// The answer goes here; a closed channel (the client left) aborts the chat.
    pub reply: tokio::sync::mpsc::UnboundedSender<ChatEvent>,
    /// Its place among the open chats, set by `Signals::submit_chat` (`None` before).
    pub ticket: Option<Ticket>,
}

/// What the loop tells the waiting request.
#[derive(Debug)]
pub enum ChatEvent {
    /// More of the reasoning or the answer (streaming only).
    Delta(Piece),
    /// The whole answer: the last event.
    Done(ChatAnswer),
    /// It could not run: the last event.
    Failed(ChatFailure),
}

/// A finished chat.
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    /// The answer (stop string cut) and the reasoning apart from it, as they were streamed.
    pub answer: String,
    pub reasoning: Option<String>,
    pub model: String,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    pub finish: FinishReason,
}

/// Why a chat did not run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// How the HTTP API answers a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request itself cannot run (its prompt does not fit, its schema is no grammar): 400.
    BadRequest,
    /// Not now (no memory for its model, the worker stopping): 503.
    Unavailable,
}

impl ChatRequest {
    /// Send what may be shown now, when the client asked for a stream.
    pub(super) fn deltas(&self, pieces: Vec<Piece>) {
        if self.stream {
            for piece in pieces {
                let _ = self.reply.send(ChatEvent::Delta(piece));
            }
        }
    }
}

impl Running {
    /// More generated text: into the split, and what it lets out to a streaming client.
    pub(super) fn show(&mut self, text: &str) {
        let mut pieces = Vec::new();
        self.split.push(text, &mut pieces);
        self.request.deltas(pieces);
    }
}

impl ChatFailure {
    pub(super) fn of(e: &EngineError) -> ChatFailure {
        let kind = if e.is_permanent() && !e.is_memory() {
            FailureKind::BadRequest
        } else {
            FailureKind::Unavailable
        };
        ChatFailure {
            kind,
            message: e.to_string(),
        }
    }

    pub(super) fn unavailable(message: &str) -> ChatFailure {
        ChatFailure {
            kind: FailureKind::Unavailable,
            message: message.to_string(),
        }
    }
}

/// A chat in flight, for `status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatInFlight {
    pub model: String,
    /// How long it has been running, ms.
    pub age_ms: u64,
    pub streaming: bool,
}

/// A chat decoding in the batch.
pub(super) struct Running {
    pub(super) request: ChatRequest,
    /// Bytes generated so far (read after every step: only the new ones are copied), and how
    /// many of them went to `split` (streaming).
    pub(super) got: Vec<u8>,
    pub(super) sent: usize,
    /// Reasoning apart from the answer, as the text streams.
    pub(super) split: reasoning::Split,
}

/// The loop's chats: waiting to start, and decoding (by engine tag).
#[derive(Default)]
pub(super) struct Chats {
    pub(super) waiting: VecDeque<ChatRequest>,
    pub(super) running: HashMap<u64, Running>,
    /// Chats answered since the worker started.
    pub served: u64,
    /// When the last chat came or ended ([`LINGER`], [`CONVERSING`]).
    pub(super) last_active: Option<Instant>,
}

impl Chats {
    /// No chat waits or runs.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Chats are waiting to start: claim nothing (a batch job claimed now may need the slot,
    /// or a model other than theirs).
    pub fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// How much longer an idle worker keeps its context for the next chat, if at all.
    pub fn lingering(&self) -> Option<Duration> {
        let left = LINGER.checked_sub(self.last_active?.elapsed())?;
        (!left.is_zero()).then_some(left)
    }

    /// A person is chatting: steps stay short ([`PROMPT_CAP`]).
    pub fn conversing(&self) -> bool {
        !self.is_empty() || self.last_active.is_some_and(|t| t.elapsed() < CONVERSING)
    }

    /// Some chat is decoding (or starts at the next decode).
    pub fn decoding(&self) -> bool {
        !self.running.is_empty()
    }

    pub fn is_chat(&self, tag: u64) -> bool {
        self.running.contains_key(&tag)
    }

    pub fn in_flight(&self) -> Vec<ChatInFlight> {
        self.running
            .values()
            .map(|r| ChatInFlight {
                model: r.request.model.name.clone(),
                age_ms: r.request.received.elapsed().as_millis() as u64,
                streaming: r.request.stream,
            })
            .collect()
    }
}

/// A chat's place among the open ones: given back when the chat (its request) is dropped,
/// however it ended. Made by `Signals::submit_chat`, which counts the open ones.
pub struct Ticket(pub(super) Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
