//! # qwen3q: unattended batch processing of documents with local LLMs
//!
//! ## Who owns what
//! - [`job`] — what a job asks for and where it stands; the legal state moves. Pure.
//! - [`crash`] — poison jobs: which jobs a crash of the worker is charged to. Pure.
//! - [`batch`] — batches (schema 9): what one enqueue asked for at once (name, metadata,
//!   deadline), and its OpenAI status derived from its jobs' counts per state, which the store
//!   moves in the transaction that moves a job. Pure. [`upload`] — files uploaded through the
//!   HTTP API and OpenAI's limits on them. Pure.
//! - [`spec`] — the job specs of an enqueue: the CLI and the HTTP API build theirs here, so one
//!   batch file gives the same jobs through either. [`openai`] — the OpenAI shapes written
//!   (the Batch object, output and error lines), the same bytes from the CLI and the API.
//! - [`queue`] — the durable queue behind one interface (trait [`queue::Queue`]: job reads and
//!   writes, batches, uploads, crashes, memory history, model records, quarantine); callers hold a
//!   `dyn Queue` and see no backend type. `queue::sled` is the backend today and the only code
//!   that sees sled: every state change one transaction, flushed before anyone is told.
//! - [`engine`] — the inference seam (trait [`engine::Engine`] = `Residency` (which models are
//!   loaded, keep-alive on the worker's clock) + `Text` (tokens, templates) + `Decoder` (a batch
//!   of sequences decoded together)); the `llama` module of the `qwen3q-engine` binary
//!   (`src/bin/qwen3q-engine/`) is the only code that sees llama-cpp-2 — the library links no
//!   llama.cpp, so `qwen3q` starts fast (see [`cli::inference`]) — (`session`: the batch
//!   context, whose freed slots keep their prompt's cells for the next
//!   prompt that starts the same way, as the pure `engine::prefix` chooses), and picks
//!   llama.cpp's kernels by [`job::Kernels`] (fastest by default; batch-invariant on request,
//!   when an answer must not depend on B). `engine::cache` keeps
//!   loaded models under the pure LRU (`engine::lru`); chunking, templates, GGUF headers (and
//!   a model's identity, `gguf::identity`), memory prediction (`engine::memory`), stop strings
//!   (`engine::stops`) and splitting streamed thinking from the answer (`engine::reasoning`)
//!   are pure.
//!   Every result records its [`job::Provenance`]: model identity, template, kernels, engine.
//! - [`scheduler`] — the worker loop (recover → steer → serve chats → fill → step → record):
//!   continuous batching over jobs (`jobrun`: one job's chunks, reduce rounds, result), the
//!   fallback ladder (`ladder`), recording outcomes (`record`), interactive chat completions
//!   ahead of batch work (`interactive`: not stored; they take the youngest batch sequence's
//!   slot, or the batch yields to another model).
//! - [`registry`] — registered models, measured memory records, finding GGUFs on disk;
//!   [`calibration`] — throughput-by-B curves and their knee. Pure.
//! - [`monitor`] — memory readings (trait `MemoryProbe`: sysinfo, cgroups, macOS sysctl,
//!   llama.cpp devices; a cgroup's working set) and the memory history's maths;
//!   `engine::release` gives memory back when a model leaves (page cache, heap);
//!   `scheduler::admission` (budget, gate, shedding) and `scheduler::batch_size` (the adaptive B controller) decide from them. Pure
//!   where they can be.
//! - [`schedule`] — overnight windows (crontab via croner, DST-safe).
//! - [`service`] — launchd / systemd definitions and management; keeping the machine awake.
//! - [`protocol`] — the request and response enums the CLI and the worker share.
//! - [`handler`] — requests executed against a store: the same code serves the socket and
//!   the CLI's direct mode, so every verb behaves the same with or without a worker.
//! - [`http`] — `worker --http`: OpenAI's Files, Batches, Models and Chat Completions API
//!   (axum) on the worker's runtime, behind a key; its handlers send the CLI's `Request`s to
//!   [`handler`], and chats to the loop (`Signals::submit_chat`, answered over a channel).
//! - [`daemon`] — the worker process: the socket server plus the loop, wired together;
//!   `daemon::warm` loads the last batch's model while the store opens (the hint in
//!   `<home>/warm.json`), so a restart's first token waits for the load, not for both.
//! - [`supervise`] — `qwen3q worker` is a supervisor and a runner: the supervisor reads how the
//!   runner died and charges crashes to the jobs in flight (`crash`; none was alone if the
//!   runner's `ChatWitness` says chats were decoding), then starts it again.
//! - [`cli`] — the verbs, one file each (anyhow lives here only); `cli::start` is a process
//!   from start to exit, for both binaries: `qwen3q` (src/main.rs) without an engine, and
//!   `qwen3q-engine` with llama.cpp's ([`cli::inference`]: the worker's supervisor starts the
//!   engine binary as its runner, `calibrate` becomes it; both check they are one build).
//! - [`client`] — the CLI side: the socket when a worker is alive, else the store directly;
//!   `client::card` is the status the last process to close the store left beside it, which
//!   answers `status` without opening the store while nothing has written to it since.
//! - [`config`], [`home`] — configuration and where data lives; [`validated`] — models already
//!   checked, remembered by path, size and time so a command does not read their header again.
//! - [`ingest`] — reading documents from files, directories, stdin and OpenAI batch files.
//! - [`fuzz`] — mutation fuzzing of the parsers of outside input (GGUF headers, batch lines,
//!   socket requests, stored values): unit tests and `examples/fuzz_parsers`.
//!
//! ## The path a job takes
//! ```text
//! enqueue (CLI) ──socket or direct──▶ handler ──▶ JobWrites::enqueue (a document over 64 KiB
//!               to a file, durable first; then documents, jobs, ready in one transaction;
//!               flushed; a batch request's messages are its document, the job its turns)
//! worker loop:  claim (same model as the batch) ─▶ engine.load (LRU; fallback ladder if it
//!               does not fit) ─▶ split into chunks ─▶ chunks take free slots of the batch ─▶
//!               each decode step advances every slot ─▶ a finished chunk: checkpoint (flushed),
//!               its slot takes the next chunk ─▶ merge or reduce ─▶ result + event (flushed)
//! sampler (in the worker): memory every second ─▶ store: memory history (24 h, then minutes)
//! results (CLI) ──socket or direct──▶ handler ──▶ JobReads::result ──▶ text | jsonl | openai | files
//! HTTP API:     POST /v1/files ─▶ handler ─▶ Uploads; POST /v1/batches ─▶ check every line ─▶
//!               CreateBatch, Enqueue (parts of 500) into it, SealBatch ─▶ the worker loop as above;
//!               GET /v1/files/file-batch_N-output/content ─▶ the batch's jobs' results, as lines
//!               POST /v1/chat/completions ─▶ Signals::submit_chat (raises the engine's
//!               interrupt: the batch's decode in progress stops, `session/step.rs` takes it
//!               back) ─▶ loop step "serve chats" ─▶
//!               a slot of the batch (urgent: its prompt's steps carry nothing else) ─▶ deltas
//!               and the answer over a channel ─▶ JSON or server-sent events; nothing stored
//! ```
//! Every enqueue that adds a job makes a batch (`batch`); its counts per state move with its
//! jobs, a job not started by the batch's deadline expires (`JobWrites::expire_due`).
//! A `kill -9` at any point loses at most the chunk being generated: at start the worker puts
//! jobs left Running back in the queue, and they resume after their last checkpoint. The worker
//! is a supervisor and a runner (`supervise`): when the runner dies by a signal it inflicted on
//! itself, the supervisor charges the crash to the job in flight (`crash`,
//! `Crashes::record_crash`) — several in flight run alone first — and starts the runner again.

pub mod batch;
pub mod calibration;
pub mod cli;
pub mod client;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod engine;
pub mod fuzz;
pub mod handler;
pub mod home;
pub mod http;
pub mod ingest;
pub mod job;
pub mod monitor;
pub mod openai;
pub mod protocol;
pub mod queue;
pub mod registry;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod spec;
pub mod supervise;
pub mod upload;
pub mod validated;

/// This build: a hash of the sources and the manifest (`build.rs`). The two binaries must
/// share it (see `cli::inference`).
pub const BUILD: &str = env!("QWEN3Q_BUILD");

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> job::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
