//! Jobs: what a job asks for ([`JobSpec`]), where it stands ([`JobState`]), and which moves
//! between states are legal ([`JobState::can_become`]). Pure: no sled, no llama, no clock —
//! times come in as arguments (milliseconds since the Unix epoch).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Milliseconds since the Unix epoch, wall clock. Wall time (not monotonic) because it is
/// stored and must mean the same after a reboot.
pub type Millis = u64;

/// A job's number: monotonic from 1, short to type (`qwen3q show 17`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim_start_matches('#').parse().map(JobId)
    }
}

/// A batch's number (schema 9): every enqueue that adds a job makes one. Shown and parsed as
/// OpenAI names batches, `batch_17` (a bare `17` parses too). The batch itself is
/// [`crate::batch`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId(pub u64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch_{}", self.0)
    }
}

impl FromStr for BatchId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.strip_prefix("batch_")
            .unwrap_or(s)
            .parse()
            .map(BatchId)
            .map_err(|_| format!("{s:?} is not a batch id (batch_N)"))
    }
}

/// What to do with a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    Summarize,
    Keywords,
    Classify {
        labels: Vec<String>,
    },
    Extract {
        fields: Vec<String>,
    },
    /// A prompt of the user's own; `{text}` marks where the document goes (appended when absent).
    Custom {
        prompt: String,
    },
    /// OpenAI chat messages as given in a batch file, sent as they are (no chunking of the
    /// user's own conversation). The messages live in the job's document ([`chat_document`]);
    /// the job keeps only each turn's role and length (schema 5), so that the record the
    /// worker rewrites at every state change stays small whatever the conversation's length.
    Chat {
        turns: Vec<Turn>,
    },
}

impl Task {
    /// A short stable name, used in listings and in the dedupe key.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Summarize => "summarize",
            Task::Keywords => "keywords",
            Task::Classify { .. } => "classify",
            Task::Extract { .. } => "extract",
            Task::Custom { .. } => "custom",
            Task::Chat { .. } => "chat",
        }
    }

    /// How outputs of several chunks of one long document become one answer.
    pub fn merge_kind(&self) -> MergeKind {
        match self {
            Task::Summarize | Task::Custom { .. } | Task::Chat { .. } => MergeKind::Reduce,
            Task::Keywords => MergeKind::UnionLines,
            Task::Classify { .. } => MergeKind::Vote,
            Task::Extract { .. } => MergeKind::MergeJson,
        }
    }
}

/// See [`Task::merge_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    /// A final "reduce" prompt combines the chunk outputs (map-reduce).
    Reduce,
    /// Keywords: the union of the chunks' items, first seen first, without duplicates.
    UnionLines,
    /// Classification: the label most chunks chose (ties: the earliest chunk's).
    Vote,
    /// Extraction: per field, the first chunk that found a value.
    MergeJson,
}

/// One chat message (role and content), as in OpenAI's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// One message of a chat job as the job record keeps it: who speaks, and how many bytes of
/// the document are what they say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub bytes: u64,
}

/// Longest role accepted in a chat message, in bytes (OpenAI's are `system`, `developer`,
/// `user`, `assistant`, `tool`).
pub const MAX_ROLE: usize = 64;

/// A chat job's document and turns: each message as `role: content` and a newline, one after
/// the other (what people read in `results`, what sizes the job), and each turn's role and
/// content length, from which [`chat_messages`] gives the messages back exactly.
pub fn chat_document(messages: &[ChatMessage]) -> (String, Vec<Turn>) {
    let mut text = String::new();
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        text.push_str(&m.role);
        text.push_str(": ");
        text.push_str(&m.content);
        text.push('\n');
        turns.push(Turn {
            role: m.role.clone(),
            bytes: m.content.len() as u64,
        });
    }
    (text, turns)
}

/// The messages of a chat job from its turns and document (see [`chat_document`]). Stored
/// bytes are not trusted: a document that does not have the turns' shape is an error, never a
/// panic or a guess.
pub fn chat_messages(turns: &[Turn], text: &str) -> Result<Vec<ChatMessage>, String> {
    let bad = |i: usize| format!("the conversation does not match its turns (message {i})");
    let mut rest = text;
    let mut out = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        rest = rest
            .strip_prefix(turn.role.as_str())
            .and_then(|r| r.strip_prefix(": "))
            .ok_or_else(|| bad(i))?;
        let n = usize::try_from(turn.bytes).map_err(|_| bad(i))?;
        let content = rest.get(..n).ok_or_else(|| bad(i))?;
        rest = rest[n..].strip_prefix('\n').ok_or_else(|| bad(i))?;
        out.push(ChatMessage {
            role: turn.role.clone(),
            content: content.to_string(),
        });
    }
    if !rest.is_empty() {
        return Err(bad(turns.len()));
    }
    Ok(out)
}

/// Sampling and length settings for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    /// Sampling seed. `None`: derived from the job id and chunk, so a resumed or retried job
    /// samples the same way it would have.
    pub seed: Option<u32>,
    /// Qwen3 thinking mode. Off by default for batch work.
    pub thinking: bool,
}

impl GenParams {
    /// Qwen3's model-card defaults: without thinking T=0.7, top_p=0.8, top_k=20, min_p=0;
    /// with thinking T=0.6, top_p=0.95, top_k=20, min_p=0.
    pub fn qwen3_defaults(thinking: bool) -> Self {
        let (temperature, top_p) = if thinking { (0.6, 0.95) } else { (0.7, 0.8) };
        GenParams {
            max_tokens: if thinking { 2048 } else { 512 },
            temperature,
            top_p,
            top_k: 20,
            min_p: 0.0,
            seed: None,
            thinking,
        }
    }
}

/// Generation settings given on a command line or in a batch line; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenOverrides {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<u32>,
}

impl GenOverrides {
    pub fn apply(&self, p: &mut GenParams) {
        if let Some(v) = self.max_tokens {
            p.max_tokens = v.max(1);
        }
        if let Some(v) = self.temperature {
            p.temperature = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if self.seed.is_some() {
            p.seed = self.seed;
        }
    }
}

/// Longest custom id accepted, in bytes.
pub const MAX_CUSTOM_ID: usize = 1024;

/// A custom id names a job to people, to `show` and `cancel`, to file names and to OpenAI's
/// output: not empty, at most [`MAX_CUSTOM_ID`] bytes, and no control characters (a NUL ends
/// an id in the store's keys; a newline or an escape sequence would forge lines and colours
/// on a terminal).
pub fn check_custom_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the custom id is empty".into());
    }
    if id.len() > MAX_CUSTOM_ID {
        return Err(format!(
            "the custom id has {} bytes (at most {MAX_CUSTOM_ID})",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the custom id contains the control character {:?}",
            c
        ));
    }
    Ok(())
}

/// A custom id as a terminal or a log may show it: control characters escaped (`\n`,
/// `\u{1b}`), everything else as it is. Ids are checked at enqueue; a store written before
/// that may still hold such ids.
pub fn printable(id: &str) -> std::borrow::Cow<'_, str> {
    if !id.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A document's `doc_sha256`: sha256 of its UTF-8 text, lowercase hex.
pub fn document_sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything a job asks for. Immutable once enqueued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The user's name for the job: given, or derived from the file name.
    pub custom_id: String,
    /// Where the text came from (a path, `-` for stdin, `batch.jsonl:12`), for people only:
    /// the text itself is copied into the store.
    pub source: String,
    /// sha256 of the document text (UTF-8), hex.
    pub doc_sha256: String,
    /// Length of the document text in bytes.
    pub doc_bytes: u64,
    pub task: Task,
    /// Optional system prompt.
    pub system: Option<String>,
    /// The model as the user named it, and the resolved GGUF path.
    pub model: ModelRef,
    pub params: GenParams,
    /// Higher runs first.
    pub priority: i32,
    /// Do not start before this time (set by the user, or moved later by the worker when the
    /// job waits for memory).
    pub not_before: Option<Millis>,
    pub max_attempts: u32,
    /// OpenAI batch body fields this version does not act on, kept as JSON text so that
    /// nothing the user wrote is lost.
    pub extra_json: Option<String>,
    /// A grammar every generation of the job must follow (schema v2).
    pub constraint: Option<Constraint>,
    /// Smaller models to run the job on when its model cannot fit in memory, in order
    /// (`--fallback`; schema v2).
    pub fallback: Vec<ModelRef>,
    /// `--model auto --quality …`: the worker picks the model from the registry when it
    /// claims the job, by the memory free then (`model` is a placeholder named `auto`;
    /// schema v3).
    pub auto: Option<Quality>,
}

/// How `--model auto` trades answer quality against memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// The smallest adequate model (at least 4 bits a weight) that fits.
    Low,
    /// Between: the middle of the adequate models that fit.
    Medium,
    /// The largest model that fits.
    High,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Quality::Low),
            "medium" => Ok(Quality::Medium),
            "high" => Ok(Quality::High),
            _ => Err(format!("unknown quality {s:?} (low, medium or high)")),
        }
    }
}

/// What a job's output must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// A JSON schema (its JSON text): the answer is JSON that follows it, and the result
    /// stores it parsed.
    JsonSchema(String),
    /// A GBNF grammar (llama.cpp's), root rule `root`.
    Grammar(String),
}

impl Constraint {
    /// A JSON schema as given by a user: it must be a JSON object (`{}` for "any JSON").
    pub fn json_schema(text: &str) -> Result<Constraint, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("the JSON schema is not JSON: {e}"))?;
        if !v.is_object() {
            return Err("the JSON schema must be a JSON object".into());
        }
        Ok(Constraint::JsonSchema(v.to_string()))
    }

    /// A GBNF grammar as given by a user: it must define `root`.
    pub fn grammar(text: &str) -> Result<Constraint, String> {
        let defines_root = text
            .lines()
            .any(|l| l.trim_start().starts_with("root") && l.contains("::="));
        if !defines_root {
            return Err("the grammar has no `root ::= …` rule".into());
        }
        Ok(Constraint::Grammar(text.to_string()))
    }
}

/// A model as named by the user and where it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub path: String,
    /// Built-in llama.cpp chat template to use when the GGUF has none (e.g. `gemma`).
    pub template: Option<String>,
}

impl ModelRef {
    /// The same file with the same template: a context of one serves the other (the name is
    /// only what someone called it: a registered name, or a path).
    pub fn same_model(&self, other: &ModelRef) -> bool {
        self.path == other.path && self.template == other.template
    }

    /// The placeholder of a `--model auto` job: the worker picks the real model.
    pub fn auto() -> ModelRef {
        ModelRef {
            name: "auto".into(),
            path: String::new(),
            template: None,
        }
    }
}

/// Token counts, as in OpenAI's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

/// Where a job stands. Each variant carries what is true only in that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running {
        /// The worker must heartbeat before this time; a lease is only a hint since only one
        /// process owns the store, but `status` shows a stale one.
        lease_until: Millis,
        /// 1-based attempt number.
        attempt: u32,
        started: Millis,
        chunks_done: u32,
        /// 0 until the document has been split.
        chunks_total: u32,
    },
    Succeeded {
        finished: Millis,
        usage: Usage,
    },
    Failed {
        error: String,
        /// The attempt that failed.
        attempt: u32,
        next_attempt_at: Millis,
    },
    Dead {
        error: String,
        attempts: u32,
    },
    Cancelled {
        at: Millis,
    },
    /// Its batch's deadline passed before it started (schema 9; OpenAI's expired request).
    Expired {
        at: Millis,
    },
}

/// The state's kind without its data: the key of the per-state indexes. In JSON it is the
/// lowercase name (`"succeeded"`); in the `by_state` index's keys, its number below (one byte,
/// `kind as u8`); inside an encoded value (an event's `from`/`to`), bincode's variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Queued = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Dead = 5,
    Cancelled = 6,
    Expired = 7,
}

impl StateKind {
    pub const ALL: [StateKind; 7] = [
        StateKind::Queued,
        StateKind::Running,
        StateKind::Succeeded,
        StateKind::Failed,
        StateKind::Dead,
        StateKind::Cancelled,
        StateKind::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Queued => "queued",
            StateKind::Running => "running",
            StateKind::Succeeded => "succeeded",
            StateKind::Failed => "failed",
            StateKind::Dead => "dead",
            StateKind::Cancelled => "cancelled",
            StateKind::Expired => "expired",
        }
    }

    pub fn from_byte(b: u8) -> Option<StateKind> {
        StateKind::ALL.into_iter().find(|k| *k as u8 == b)
    }

    /// Nothing more will happen to the job unless a person asks (retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateKind::Succeeded | StateKind::Dead | StateKind::Cancelled | StateKind::Expired
        )
    }

    /// Ended without an answer: dead, cancelled or expired (an OpenAI batch's error file).
    pub fn ended_without_answer(self) -> bool {
        self.is_terminal() && self != StateKind::Succeeded
    }

    /// Has not started (its attempt): queued, or failed and waiting for its retry.
    pub fn waiting_to_start(self) -> bool {
        matches!(self, StateKind::Queued | StateKind::Failed)
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StateKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (queued, running, succeeded, failed, dead, cancelled, expired)"
                )
            })
    }
}

/// Jobs per state.
/// (Here, not in `queue`, so that pure code such as `batch` can count without the queue.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Not started before their batch's deadline (schema 9).
    #[serde(default)]
    pub expired: u64,
}

impl Counts {
    pub fn get(&self, kind: StateKind) -> u64 {
        match kind {
            StateKind::Queued => self.queued,
            StateKind::Running => self.running,
            StateKind::Succeeded => self.succeeded,
            StateKind::Failed => self.failed,
            StateKind::Dead => self.dead,
            StateKind::Cancelled => self.cancelled,
            StateKind::Expired => self.expired,
        }
    }

    pub(crate) fn slot(&mut self, kind: StateKind) -> &mut u64 {
        match kind {
            StateKind::Queued => &mut self.queued,
            StateKind::Running => &mut self.running,
            StateKind::Succeeded => &mut self.succeeded,
            StateKind::Failed => &mut self.failed,
            StateKind::Dead => &mut self.dead,
            StateKind::Cancelled => &mut self.cancelled,
            StateKind::Expired => &mut self.expired,
        }
    }

    pub fn total(&self) -> u64 {
        StateKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    /// Jobs something will still happen to without a person: queued, running, or failed and
    /// waiting for their retry.
    pub fn active(&self) -> u64 {
        StateKind::ALL
            .iter()
            .filter(|k| !k.is_terminal())
            .map(|k| self.get(*k))
            .sum()
    }
}

impl JobState {
    pub fn kind(&self) -> StateKind {
        match self {
            JobState::Queued => StateKind::Queued,
            JobState::Running { .. } => StateKind::Running,
            JobState::Succeeded { .. } => StateKind::Succeeded,
            JobState::Failed { .. } => StateKind::Failed,
            JobState::Dead { .. } => StateKind::Dead,
            JobState::Cancelled { .. } => StateKind::Cancelled,
            JobState::Expired { .. } => StateKind::Expired,
        }
    }

    /// The legal moves. Everything else is a bug (or a stale request) and is refused.
    ///
    /// - Queued → Running (claimed), Cancelled.
    /// - Running → Running (progress, heartbeat), Succeeded, Failed, Dead (out of attempts),
    ///   Queued (worker stopped or died: the attempt does not count), Cancelled.
    /// - Failed → Queued (backoff over, or a person's retry), Cancelled.
    /// - Queued, Failed → Expired (its batch's deadline passed before it started; a failed
    ///   job waiting for its retry has not started that attempt).
    /// - Dead, Cancelled, Expired → Queued (retry). Succeeded → Queued (retry, to run it
    ///   again).
    pub fn can_become(&self, next: StateKind) -> bool {
        use StateKind::*;
        matches!(
            (self.kind(), next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Running)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Dead)
                | (Running, Queued)
                | (Running, Cancelled)
                | (Failed, Queued)
                | (Failed, Cancelled)
                | (Queued, Expired)
                | (Failed, Expired)
                | (Dead, Queued)
                | (Cancelled, Queued)
                | (Expired, Queued)
                | (Succeeded, Queued)
        )
    }
}

/// A stored job: its spec, its state, and the bookkeeping around attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Attempts that ended (failed or succeeded). A worker's death does not count.
    pub attempts: u32,
    pub enqueued: Millis,
    /// Last state change.
    pub updated: Millis,
    /// The batch whose enqueue added the job (schema 9); `None` for a job enqueued before
    /// batches existed.
    pub batch: Option<BatchId>,
    /// Its batch's deadline (schema 9), copied here so that the ready order (priority, then
    /// the earliest deadline) is kept without reading the batch.
    pub deadline: Option<Millis>,
}

/// One line of a job's history: a state change or a finished chunk, with time and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    /// `None` when the job was created.
    pub from: Option<StateKind>,
    pub to: StateKind,
    /// For a finished chunk: its number (0-based).
    pub chunk: Option<u32>,
    pub reason: String,
}

/// The output of one finished chunk: the checkpoint that makes a restart resume after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutput {
    pub text: String,
    pub reasoning: Option<String>,
    pub usage: Usage,
    pub millis: u64,
    /// The plan this chunk belongs to: the context size and the number of chunks. A worker
    /// restarted with another context size splits differently, and must not mix plans.
    pub n_ctx: u32,
    pub chunks_total: u32,
    /// The path of the model that wrote it: a job resumed on another model (an `auto` pick,
    /// a fallback) must not mix its answers with this one's. Empty when unknown (a checkpoint
    /// of schema 2 or before; schema v3).
    pub model: String,
    /// Of the prompt's tokens, those whose KV cells were reused rather than decoded (schema v8).
    pub cached_tokens: u64,
}

/// Which llama.cpp kernels run.
///
/// llama.cpp's fastest CPU kernels compute a sequence's logits differently depending on the
/// other rows of the batch: llamafile's sgemm takes products of two rows or more and leaves a
/// single row to ggml's dot product; repacked weights (Q4_K and others interleaved 8 rows at a
/// time) take a GEMM for groups of 4 rows and a GEMV for the rest; the tiled K-quant product is
/// taken from 8 rows up; flash attention works in tiles of query rows, and splits a long KV
/// range across threads only for a single row. The sums then round differently and a greedy
/// answer can change with B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernels {
    /// Weights as in the file (no repacking), and ggml's reference kernels (its CPU backend's
    /// `use_ref`: no llamafile, no tiled product, flash attention one query row at a time over
    /// the whole KV range): each output element is computed in one fixed order, whatever shares
    /// the batch, so greedy and seeded answers do not depend on `--parallel` or on who rides
    /// along. Cost: BENCHMARKS.md ("Batch-invariant kernels"): more than the 5 % that would
    /// have made it the default.
    BatchInvariant,
    /// llamafile, repacked weights, the tiled product and flash attention's tiles and split
    /// where llama.cpp picks them (its defaults, as `llama-batched-bench` runs): an
    /// answer may differ with B, with what shares the batch, and with what ran in its slot
    /// before it (a reused prompt prefix leaves a shorter rest to decode, in other row groups).
    /// The default.
    #[default]
    Fastest,
}

impl Kernels {
    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::BatchInvariant => "batch-invariant",
            Kernels::Fastest => "fastest",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Kernels::BatchInvariant, Kernels::Fastest]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kernels {s:?} (batch-invariant or fastest)"))
    }
}

/// What ran a job, beside the job's own parameters (sampling, seed, task, system prompt, which
/// `results` shows): the model by its content, the chat template, the kernels and the engine
/// (schema v8). With batch-invariant kernels that reproduces the answer on the same build and
/// the same kind of CPU (its vector width orders sums too); the build flags and the CPU's
/// features are not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model's identity, `gguf-sha256:<hash of its header>:<file size>`
    /// (`engine::gguf::identity`): the same file anywhere, another file when anything but its
    /// weights' bytes differs.
    pub model: String,
    /// `gguf` when the model's own template rendered the prompt (then part of the model's
    /// identity), else the name of the fallback template.
    pub template: String,
    /// Whether the answer may depend on what shared the batch.
    pub kernels: Kernels,
    /// The engine and its version, e.g. `llama.cpp (llama-cpp-sys-2 0.1.161+qwen3q.2)` (the
    /// crate that vendors llama.cpp, and the revision of qwen3q's patch to it).
    pub engine: String,
}

/// What a finished job produced, and what really ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub answer: String,
    /// Qwen3's thinking, kept apart from the answer.
    pub reasoning: Option<String>,
    pub usage: Usage,
    /// The model and settings that ran the job.
    pub model: ModelRef,
    pub n_ctx: u32,
    /// Map chunks the document was split into (1 for a short document).
    pub chunks: u32,
    /// Whether a reduce prompt combined the chunks.
    pub reduced: bool,
    /// When the successful attempt started and ended.
    pub started: Millis,
    pub finished: Millis,
    /// Time spent generating, summed over chunks (a resumed job counts only what ran).
    pub generation_millis: u64,
    pub attempts: u32,
    /// Sequences decoded together when the job finished (B; schema v2).
    pub n_seq: u32,
    /// The answer parsed as JSON (compact text), for a job with a JSON schema (schema v2).
    pub json: Option<String>,
    /// Why this model ran, when the worker chose it (`--model auto`) or fell back from the
    /// job's own (schema v3).
    pub choice: Option<String>,
    /// What reproduces the answer; `None` for a result written before schema v8.
    pub provenance: Option<Provenance>,
    /// Of `usage.prompt_tokens`, those whose KV cells were reused from a prompt that began the
    /// same way instead of decoded (OpenAI's `prompt_tokens_details.cached_tokens`; schema v8).
    pub cached_tokens: u64,
}

/// Exponential backoff with jitter for a failed attempt: 30 s × 2^(attempt−1), at most an hour,
/// then ±20 % by `jitter` (a number in [0, 1), given so that this stays pure).
pub fn backoff_ms(attempt: u32, jitter: f64) -> Millis {
    let base: u64 = 30_000u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = base.min(3_600_000) as f64;
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (capped * factor) as Millis
}

/// After attempt `attempt` failed with `error` at `now`: Failed with a retry time, or Dead.
pub fn after_failure(
    attempt: u32,
    max_attempts: u32,
    error: String,
    now: Millis,
    jitter: f64,
) -> JobState {
    if attempt >= max_attempts {
        JobState::Dead {
            error,
            attempts: attempt,
        }
    } else {
        JobState::Failed {
            error,
            attempt,
            next_attempt_at: now + backoff_ms(attempt, jitter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_refuse_control_characters_and_print_escaped() {
        assert!(check_custom_id("notes/2024 report.txt").is_ok());
        assert!(check_custom_id("é✓").is_ok());
        for bad in ["", "a\0b", "line\nbreak", "esc\u{1b}[31m", "del\u{7f}"] {
            assert!(check_custom_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_custom_id(&"x".repeat(MAX_CUSTOM_ID + 1)).is_err());
        assert!(check_custom_id(&"x".repeat(MAX_CUSTOM_ID)).is_ok());
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\nb\u{1b}[1m"), "a\\nb\\u{1b}[1m");
    }

    #[test]
    fn a_conversation_comes_back_from_its_document_exactly() {
        let m = |role: &str, content: &str| ChatMessage {
            role: role.into(),
            content: content.into(),
        };
        let messages = vec![
            m("system", "Be brief."),
            // Contents that look like the layout itself: a newline and "user: " inside.
            m("user", "one\nuser: two\n"),
            m("assistant", ""),
            m("user", "é✓ <|im_end|>"),
        ];
        let (text, turns) = chat_document(&messages);
        assert_eq!(text.lines().next(), Some("system: Be brief."));
        assert_eq!(chat_messages(&turns, &text).unwrap(), messages);
        // Damaged documents or turns are errors, never a panic: cut, extended, shifted, a
        // length inside a character, a length past the end.
        assert!(chat_messages(&turns, &text[..text.len() - 1]).is_err());
        assert!(chat_messages(&turns, &format!("{text}x")).is_err());
        assert!(chat_messages(&turns, &text[1..]).is_err());
        let mut inside = turns.clone();
        inside[3].bytes = 3; // 'é' is 2 bytes, then the first byte of '✓'
        assert!(chat_messages(&inside, &text).is_err());
        let mut past = turns.clone();
        past[0].bytes = u64::MAX;
        assert!(chat_messages(&past, &text).is_err());
        assert_eq!(chat_messages(&[], "").unwrap(), vec![]);
    }

    fn sample(kind: StateKind) -> JobState {
        match kind {
            StateKind::Queued => JobState::Queued,
            StateKind::Running => JobState::Running {
                lease_until: 1,
                attempt: 1,
                started: 0,
                chunks_done: 0,
                chunks_total: 0,
            },
            StateKind::Succeeded => JobState::Succeeded {
                finished: 1,
                usage: Usage::default(),
            },
            StateKind::Failed => JobState::Failed {
                error: "x".into(),
                attempt: 1,
                next_attempt_at: 5,
            },
            StateKind::Dead => JobState::Dead {
                error: "x".into(),
                attempts: 3,
            },
            StateKind::Cancelled => JobState::Cancelled { at: 1 },
            StateKind::Expired => JobState::Expired { at: 1 },
        }
    }

    #[test]
    fn every_transition_is_judged_as_specified() {
        use StateKind::*;
        let legal = [
            (Queued, Running),
            (Queued, Cancelled),
            (Running, Running),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Dead),
            (Running, Queued),
            (Running, Cancelled),
            (Failed, Queued),
            (Failed, Cancelled),
            (Queued, Expired),
            (Failed, Expired),
            (Dead, Queued),
            (Cancelled, Queued),
            (Expired, Queued),
            (Succeeded, Queued),
        ];
        let mut n_legal = 0;
        for from in StateKind::ALL {
            for to in StateKind::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(
                    sample(from).can_become(to),
                    expected,
                    "{from} -> {to} should be {}",
                    if expected { "legal" } else { "illegal" }
                );
                n_legal += expected as usize;
            }
        }
        assert_eq!(n_legal, legal.len());
        // Some illegal ones spelled out, for the reader.
        assert!(!sample(Succeeded).can_become(Running));
        assert!(!sample(Queued).can_become(Succeeded));
        assert!(!sample(Dead).can_become(Running));
        assert!(!sample(Cancelled).can_become(Succeeded));
    }

    #[test]
    fn state_kind_round_trips_through_byte_and_name() {
        for k in StateKind::ALL {
            assert_eq!(StateKind::from_byte(k as u8), Some(k));
            assert_eq!(k.as_str().parse::<StateKind>().unwrap(), k);
            assert_eq!(sample(k).kind(), k);
        }
        assert_eq!(StateKind::from_byte(0), None);
        assert!("sleeping".parse::<StateKind>().is_err());
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter_and_caps_at_an_hour() {
        assert_eq!(backoff_ms(1, 0.5), 30_000);
        assert_eq!(backoff_ms(2, 0.5), 60_000);
        assert_eq!(backoff_ms(3, 0.5), 120_000);
        assert_eq!(backoff_ms(1, 0.0), 24_000);
        assert_eq!(backoff_ms(1, 1.0), 36_000);
        assert_eq!(backoff_ms(30, 0.5), 3_600_000);
        assert_eq!(backoff_ms(u32::MAX, 0.5), 3_600_000);
    }

    #[test]
    fn failure_becomes_dead_after_max_attempts() {
        match after_failure(1, 3, "boom".into(), 1000, 0.5) {
            JobState::Failed {
                attempt,
                next_attempt_at,
                ..
            } => {
                assert_eq!(attempt, 1);
                assert_eq!(next_attempt_at, 31_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_failure(3, 3, "boom".into(), 0, 0.5),
            JobState::Dead { attempts: 3, .. }
        ));
    }

    #[test]
    fn qwen3_defaults_follow_the_model_card() {
        let off = GenParams::qwen3_defaults(false);
        assert_eq!(
            (off.temperature, off.top_p, off.top_k, off.min_p),
            (0.7, 0.8, 20, 0.0)
        );
        let on = GenParams::qwen3_defaults(true);
        assert_eq!(
            (on.temperature, on.top_p, on.top_k, on.min_p),
            (0.6, 0.95, 20, 0.0)
        );
        assert!(on.thinking && !off.thinking);
    }

    #[test]
    fn job_id_parses_with_or_without_hash() {
        assert_eq!("17".parse::<JobId>().unwrap(), JobId(17));
        assert_eq!("#17".parse::<JobId>().unwrap(), JobId(17));
        assert!("x".parse::<JobId>().is_err());
    }
}
