//! Command-line arguments as typed by a person. Resolution into library values happens in the
//! verb files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Unattended batch processing of documents with local LLMs (Qwen3 GGUF via llama.cpp).
#[derive(Debug, Parser)]
#[command(name = "qwen3q", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory (store, socket, config, logs). Default: $XDG_DATA_HOME/qwen3q on Linux,
    /// ~/Library/Application Support/qwen3q on macOS.
    #[arg(long, global = true, env = "QWEN3Q_HOME")]
    pub home: Option<PathBuf>,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put documents into the queue (files, directories, - for stdin, or --batch FILE.jsonl).
    Enqueue(Box<EnqueueArgs>),
    /// Drain the queue: run jobs through llama.cpp until stopped (or, with --drain, until
    /// nothing is left to run).
    Worker(WorkerArgs),
    /// Print results.
    Results(ResultsArgs),
    /// Counts per state, the worker and what it runs, the open batches.
    Status(JsonFlag),
    /// Batches, newest first: what each enqueue asked for, its status and its jobs' counts.
    Batches(BatchesArgs),
    /// One batch.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// List jobs.
    List(ListArgs),
    /// Everything about jobs, their history included.
    Show(ShowArgs),
    /// Cancel jobs (a running job stops at once).
    Cancel(SelectArgs),
    /// Queue failed, dead, cancelled (or succeeded) jobs again.
    Retry(RetryArgs),
    /// Stop claiming new jobs (kept across restarts).
    Pause,
    /// Claim jobs again after `pause`.
    Resume,
    /// Delete finished jobs older than a duration, with their documents and results.
    Prune(PruneArgs),
    /// Models: register, list, scan for, and inspect GGUFs.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Memory now, its trend over a window (from the worker's history), and advice.
    Memory(MemoryArgs),
    /// Measure a model's throughput at B = 1, 2, 4, … sequences decoded together and store
    /// the curve: the adaptive batch size (worker --adaptive) starts at its knee.
    Calibrate(CalibrateArgs),
    /// A dry run before a night: documents, tokens (the model's tokenizer), chunks, memory at
    /// the B the worker runs, estimated time. Takes enqueue's flags; nothing is enqueued.
    Plan(Box<PlanArgs>),
    /// Print the HTTP API's key (made at the first `worker --http`, or now).
    ApiKey,
    /// Print a shell completion script: `qwen3q completions bash > ~/.local/share/bash-completion/completions/qwen3q`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `qwen3q man | man -l -`.
    Man,
    /// Run the worker as a service: launchd on macOS, a systemd user unit on Linux.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service definition, load it, and start the worker.
    Install {
        /// macOS: a LaunchDaemon that starts at boot without a login (runs as you).
        #[arg(long)]
        system: bool,
        /// launchd ProcessType: standard, background (efficiency cores on Apple Silicon),
        /// adaptive, interactive. On Linux, background lowers the worker's priority.
        #[arg(long, default_value = "standard")]
        process_type: String,
        /// Worker flags for the service, after `--` (e.g. -- --parallel 8 --window "0 22 * * *" --until 07:00).
        #[arg(last = true)]
        worker_args: Vec<String>,
    },
    /// Stop the worker and remove the service definition.
    Uninstall {
        #[arg(long)]
        system: bool,
    },
    /// What launchd or systemd says about the service.
    Status {
        #[arg(long)]
        system: bool,
    },
    /// The worker's log: the last lines, and with -f everything that follows.
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// The window the trend covers: 30s, 5m, 2h, 7d.
    #[arg(long, default_value = "5m")]
    pub window: String,
    #[arg(long)]
    pub json: bool,
    /// Draw memory use, B and tokens/s over the window, with the gate's waits and sheds, into
    /// this SVG or PNG file.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// A GGUF path, a registered model or a name from the config's [models].
    pub model: String,
    /// The largest B to try (default: the config's parallel, at least 8).
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Context per sequence (default from config: the worker's n_ctx; a curve is kept per
    /// context size).
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// Tokens each test sequence generates at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// CPU threads for llama.cpp (default from config).
    #[arg(long)]
    pub threads: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Architecture, size, quantization, layers, heads, context and template of a GGUF, read
    /// from its header (the weights are not loaded), and the memory it needs: predicted, and
    /// measured where the worker has run it.
    Inspect {
        /// A GGUF path, a registered model or a name from the config's [models].
        model: String,
        /// Predict memory at this context per sequence (default: 2048 to 32768).
        #[arg(long)]
        n_ctx: Option<u32>,
        /// Predict memory at these sequence counts, e.g. `1,2,4,8` (default: 1, 4, 8).
        #[arg(long, value_delimiter = ',')]
        parallel: Vec<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Register a GGUF under a name (checked now: a truncated or fake file is refused).
    Add {
        /// The GGUF (for a split model, any of its parts).
        path: std::path::PathBuf,
        /// Default: the file name without `.gguf` and split suffix.
        #[arg(long)]
        name: Option<String>,
        /// Built-in llama.cpp chat template for a GGUF without one.
        #[arg(long)]
        template: Option<String>,
    },
    /// Registered models.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Forget a registered model (the file stays).
    Rm { name: String },
    /// Find GGUFs where they usually are (LM Studio, the Hugging Face cache, llama.cpp's cache,
    /// the config's scan_dirs) and in DIRS.
    Scan {
        dirs: Vec<std::path::PathBuf>,
        /// Register every complete model found that is not registered yet.
        #[arg(long)]
        add: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskName {
    Summarize,
    Keywords,
    Classify,
    Extract,
    Custom,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Files, directories (walked recursively) or - for stdin.
    pub paths: Vec<PathBuf>,
    /// An OpenAI Batch API input file (JSON lines of /v1/chat/completions requests).
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "paths")]
    pub batch: Option<PathBuf>,
    /// With --batch: enqueue nothing unless every line is good.
    #[arg(long, requires = "batch")]
    pub strict: bool,
    /// In directories, only files whose name or relative path matches (e.g. '*.md').
    #[arg(long)]
    pub glob: Option<String>,
    /// What to do with each document. A --prompt implies custom.
    #[arg(long, value_enum)]
    pub task: Option<TaskName>,
    /// Labels for --task classify, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Fields for --task extract, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// A custom prompt; {text} marks where the document goes.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Model: a GGUF path, a name from the config's [models] or the registry, or `auto`: the
    /// worker picks a registered model by the memory free when it starts the job (see
    /// --quality).
    #[arg(long, short)]
    pub model: Option<String>,
    /// With `--model auto`: `high` takes the largest registered model that fits the memory
    /// free, `low` the smallest adequate one (at least 4 bits a weight), `medium` one between.
    #[arg(long, value_name = "low|medium|high")]
    pub quality: Option<crate::job::Quality>,
    /// Built-in llama.cpp chat template for a GGUF without one (gemma, chatml, llama3, …).
    #[arg(long)]
    pub template: Option<String>,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Do not start before: a delay from now (30m, 2h) or a Unix time (@1767225600).
    #[arg(long)]
    pub not_before: Option<String>,
    /// A name for the batch this enqueue makes (shown by `batches` and `status`).
    #[arg(long)]
    pub name: Option<String>,
    /// Metadata of the batch, `key=value` (repeat it, at most 16, as OpenAI allows).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// The batch's deadline, a wall-clock time (HH:MM, the next one): among jobs of equal
    /// priority the earliest deadline runs first.
    #[arg(long, value_name = "HH:MM", conflicts_with = "within")]
    pub by: Option<String>,
    /// The batch's deadline as a duration from now (8h, 90m; OpenAI's completion_window).
    #[arg(long, value_name = "DURATION")]
    pub within: Option<String>,
    /// Attempts before a job is given up (default from config: 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The job's name (one document only). Default: the file name.
    #[arg(long)]
    pub custom_id: Option<String>,
    /// Enqueue even when the same document, task and model is already a job.
    #[arg(long)]
    pub force: bool,
    /// Refuse documents larger than this many bytes (default from config: 50 MB).
    #[arg(long)]
    pub max_file_bytes: Option<u64>,
    /// Models to run on instead when the model cannot fit in memory, in order (names or
    /// paths, comma-separated), or `auto`: the registered models of the same architecture
    /// with fewer parameters, largest first.
    #[arg(long, value_name = "MODEL,…|auto")]
    pub fallback: Option<String>,
    /// Constrain every answer to JSON that follows this JSON schema (the result stores it
    /// parsed).
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<std::path::PathBuf>,
    /// Constrain every answer to this GBNF grammar (llama.cpp's format, rule `root`).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<std::path::PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GenArgs {
    /// Most tokens to generate per answer.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// 0 is greedy. Default 0.7 (0.6 with --thinking), as Qwen3's model card says.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub top_k: Option<i32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub seed: Option<u32>,
    /// Let Qwen3 think before answering (reasoning is stored apart from the answer).
    #[arg(long)]
    pub thinking: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Exit 0 once nothing is ready to run.
    #[arg(long)]
    pub drain: bool,
    /// Context size per sequence (default from config: 4096).
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// Sequences decoded together, from one document's chunks or several documents
    /// (default from config: 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: Option<u32>,
    /// Decoding threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// `batch-invariant`: an answer does not depend on --parallel or on what shares the batch
    /// (ggml's reference kernels, weights not repacked; slower, see BENCHMARKS.md);
    /// `fastest`: llama.cpp's fastest kernels, an answer may change with B (default from
    /// config: fastest).
    #[arg(long, value_name = "batch-invariant|fastest")]
    pub kernels: Option<crate::engine::Kernels>,
    /// Longest one chunk may generate, in seconds (default from config: 600).
    #[arg(long)]
    pub chunk_timeout: Option<u64>,
    /// Claim jobs only in a window that opens at this crontab pattern (five fields, local
    /// time; e.g. "0 22 * * 1-5")…
    #[arg(long, requires = "until")]
    pub window: Option<String>,
    /// …and closes at this local time (HH:MM).
    #[arg(long, requires = "window")]
    pub until: Option<String>,
    /// Claim jobs only on AC power; on battery the worker finishes what runs and waits.
    #[arg(long)]
    pub ac_only: bool,
    /// Size the batch adaptively, up to --parallel: grow while tokens/s improves and memory
    /// stays under the warning level, halve on a memory jump, a failed allocation or critical
    /// pressure.
    #[arg(long)]
    pub adaptive: bool,
    /// Serve OpenAI's Files, Batches and Models API on this address (e.g. 127.0.0.1:11400;
    /// config `http`). Every request needs the key `qwen3q api-key` prints.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultFormat {
    Text,
    Jsonl,
    Openai,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Job ids or custom ids (default: all jobs).
    pub jobs: Vec<String>,
    /// The jobs of this batch, in enqueue order.
    #[arg(long, value_name = "BATCH_ID", conflicts_with = "jobs")]
    pub batch: Option<String>,
    /// One JSON object per job (same as --format jsonl).
    #[arg(long)]
    pub jsonl: bool,
    #[arg(long, value_enum)]
    pub format: Option<ResultFormat>,
    /// Write one file per job into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With --format openai: where failed jobs go (default: OUTPUT with .errors.jsonl, or stderr).
    #[arg(long, value_name = "FILE")]
    pub error_file: Option<PathBuf>,
    /// Block until the named jobs (or all) are finished, with a progress bar.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub enqueue: EnqueueArgs,
    /// Context per sequence the worker will run (default from config).
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// Sequences the worker will decode together (default from config).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BatchesArgs {
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only batches older than this one (the next page after a page that ended with it).
    #[arg(long, value_name = "BATCH_ID")]
    pub before: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Everything about a batch: name, metadata, deadline, status, counts.
    Show {
        /// `batch_N` (or `N`).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in these states (repeatable).
    #[arg(long)]
    pub state: Vec<String>,
    /// Only jobs changed within this duration (e.g. 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only custom ids matching this glob.
    #[arg(long)]
    pub custom_id: Option<String>,
    /// Only jobs of this batch.
    #[arg(long, value_name = "BATCH_ID")]
    pub batch: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(required = true)]
    pub jobs: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    #[arg(required_unless_present = "batch")]
    pub jobs: Vec<String>,
    /// Every job of this batch (repeatable); its status becomes cancelling, then cancelled.
    #[arg(long, value_name = "BATCH_ID")]
    pub batch: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    pub jobs: Vec<String>,
    /// Every job of this batch that did not succeed (repeatable); a cancelled batch is open
    /// again.
    #[arg(long, value_name = "BATCH_ID")]
    pub batch: Vec<String>,
    /// Every failed and dead job.
    #[arg(long)]
    pub all_failed: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// e.g. 7d, 12h.
    #[arg(long, required = true)]
    pub older_than: String,
}
