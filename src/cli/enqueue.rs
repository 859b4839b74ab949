//! `qwen3q enqueue`: read documents, make job specs, send them in batches.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::Result;

use super::args::{EnqueueArgs, GenArgs, TaskName};
use super::{code, fail, millis, parse_duration, Coded, Ctx};
use crate::batch::{self, NewBatch};
use crate::client::Sent;
use crate::ingest::{self, Refusal};
use crate::job::{
    printable, BatchId, Constraint, GenOverrides, GenParams, ModelRef, Quality, Task,
};
use crate::protocol::{Request, Response};
use crate::queue::{BatchTarget, EnqueueOutcome, Enqueued, NewJob};
use crate::registry::RegisteredModel;
use crate::spec::SpecTemplate;

/// Documents per request: each batch is one transaction and one flush…
const BATCH: usize = 500;
/// …and at most this much text, so neither this process nor the worker holds more than a few
/// MiB of documents at a time (a directory of large files used to go over in 500-file batches).
const BATCH_BYTES: usize = 8 << 20;

fn task_of(a: &EnqueueArgs) -> Result<Task> {
    let name = match (a.task, &a.prompt) {
        (None, Some(_)) | (Some(TaskName::Custom), _) => TaskName::Custom,
        (Some(t), Some(_)) => {
            return fail(
                code::BAD_INPUT,
                format!("--prompt goes with --task custom, not {t:?}"),
            )
        }
        (Some(t), None) => t,
        (None, None) => TaskName::Summarize,
    };
    Ok(match name {
        TaskName::Summarize => Task::Summarize,
        TaskName::Keywords => Task::Keywords,
        TaskName::Classify if a.labels.is_empty() => {
            return fail(code::BAD_INPUT, "--task classify needs --labels a,b,c")
        }
        TaskName::Classify => Task::Classify {
            labels: a.labels.clone(),
        },
        TaskName::Extract if a.fields.is_empty() => {
            return fail(code::BAD_INPUT, "--task extract needs --fields a,b")
        }
        TaskName::Extract => Task::Extract {
            fields: a.fields.clone(),
        },
        TaskName::Custom => match &a.prompt {
            // Chunks are sized for the document once: a prompt holding it twice would not fit.
            Some(p) if p.matches("{text}").count() > 1 => {
                return fail(
                    code::BAD_INPUT,
                    format!(
                        "--prompt holds {{text}} {} times; the document goes in once",
                        p.matches("{text}").count()
                    ),
                )
            }
            Some(p) if !p.trim().is_empty() => Task::Custom { prompt: p.clone() },
            _ => {
                return fail(
                    code::BAD_INPUT,
                    "--task custom needs --prompt \"... {text} ...\"",
                )
            }
        },
    })
}

/// `--json-schema FILE` or `--grammar FILE`, read and checked now: a bad file is refused
/// before anything is stored.
fn constraint_of(a: &EnqueueArgs) -> Result<Option<Constraint>> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| Coded(code::BAD_INPUT, format!("cannot read {}: {e}", p.display())))
    };
    let checked = |r: Result<Constraint, String>, p: &std::path::Path| {
        r.map_err(|e| Coded(code::BAD_INPUT, format!("{}: {e}", p.display())))
    };
    Ok(match (&a.json_schema, &a.grammar) {
        (Some(p), None) => Some(checked(Constraint::json_schema(&read(p)?), p)?),
        (None, Some(p)) => Some(checked(Constraint::grammar(&read(p)?), p)?),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return fail(
                code::BAD_INPUT,
                "--json-schema and --grammar exclude each other",
            )
        }
    })
}

/// `--model auto [--quality Q]`: the quality (medium unless given). The registry must hold a
/// model to choose from; `--fallback` and `--template` make no sense with it.
fn auto_of(ctx: &Ctx, a: &EnqueueArgs) -> Result<Option<Quality>> {
    if a.model.as_deref() != Some("auto") {
        if a.quality.is_some() {
            return fail(code::BAD_INPUT, "--quality goes with --model auto");
        }
        return Ok(None);
    }
    if a.fallback.is_some() || a.template.is_some() {
        return fail(
            code::BAD_INPUT,
            "--model auto chooses among registered models: --fallback and --template do not apply",
        );
    }
    let registered = match ctx.call(Request::ModelList)? {
        Response::Models(m) => m,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    if registered.is_empty() {
        return fail(
            code::BAD_INPUT,
            "--model auto chooses among registered models, and none is registered (qwen3q models add FILE, or models scan --add)",
        );
    }
    Ok(Some(a.quality.unwrap_or(Quality::Medium)))
}

/// `--fallback MODEL,…` (each resolved and checked now) or `--fallback auto`: the registered
/// models of the same architecture with fewer parameters, largest first.
fn fallback_of(ctx: &Ctx, a: &EnqueueArgs, primary: &ModelRef) -> Result<Vec<ModelRef>> {
    let Some(list) = &a.fallback else {
        return Ok(Vec::new());
    };
    if list.trim() == "auto" {
        let facts = crate::engine::gguf::inspect(Path::new(&primary.path))
            .map_err(|e| Coded(code::BAD_INPUT, format!("{}: {e}", primary.path)))?
            .facts(0);
        let mut smaller: Vec<RegisteredModel> = match ctx.call(Request::ModelList)? {
            Response::Models(m) => m
                .into_iter()
                .filter(|m| {
                    m.architecture == facts.architecture
                        && m.parameters < facts.parameters
                        && m.path != primary.path
                })
                .collect(),
            other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
        };
        smaller.sort_by_key(|m| std::cmp::Reverse(m.parameters));
        return Ok(smaller
            .into_iter()
            .map(|m| ModelRef {
                name: m.name,
                path: m.path,
                template: m.template,
            })
            .collect());
    }
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            ctx.config
                .resolve_model(
                    Some(name),
                    None,
                    &ctx.home.config(),
                    &|n| ctx.registered(n),
                    &ctx.checked(),
                )
                .map_err(|e| Coded(code::BAD_INPUT, format!("--fallback: {e}")).into())
        })
        .collect()
}

fn params_of(g: &GenArgs) -> GenParams {
    let mut p = GenParams::qwen3_defaults(g.thinking);
    GenOverrides {
        max_tokens: g.max_tokens,
        temperature: g.temperature,
        top_p: g.top_p,
        top_k: g.top_k,
        min_p: g.min_p,
        seed: g.seed,
    }
    .apply(&mut p);
    p
}

fn not_before(s: &Option<String>) -> Result<Option<u64>> {
    let Some(s) = s else { return Ok(None) };
    if let Some(secs) = s.strip_prefix('@') {
        return match secs.parse::<u64>().ok().and_then(|n| n.checked_mul(1000)) {
            Some(ms) => Ok(Some(ms)),
            None => fail(
                code::USAGE,
                format!("bad --not-before {s:?}: @ and seconds since 1970"),
            ),
        };
    }
    Ok(Some(
        crate::now_ms().saturating_add(millis(parse_duration(s)?)),
    ))
}

/// The batch this enqueue makes: its name, metadata and deadline from the flags.
fn new_batch(a: &EnqueueArgs) -> Result<NewBatch> {
    let metadata = a
        .metadata
        .iter()
        .map(|m| batch::parse_metadata_pair(m))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| Coded(code::USAGE, e))?;
    let now = crate::now_ms();
    let deadline = match (&a.by, &a.within) {
        (Some(by), _) => {
            let at = crate::schedule::next_clock_time(&chrono::Local::now(), by)
                .map_err(|e| Coded(code::USAGE, format!("--by {e}")))?;
            Some(u64::try_from(at.timestamp_millis()).unwrap_or(0))
        }
        (None, Some(within)) => Some(now.saturating_add(millis(parse_duration(within)?))),
        (None, None) => None,
    };
    let source = match &a.batch {
        Some(file) => format!("--batch {}", file.display()),
        None => match a.paths.as_slice() {
            [one] => one.display().to_string(),
            many => format!("{} paths", many.len()),
        },
    };
    let spec = NewBatch {
        name: a.name.clone(),
        metadata,
        deadline,
        source,
        api: None,
    };
    spec.check().map_err(|e| Coded(code::USAGE, e))?;
    Ok(spec)
}

/// Counts for the closing line.
#[derive(Default)]
pub(super) struct Tally {
    pub queued: usize,
    pub existing: usize,
    pub skipped: std::collections::BTreeMap<&'static str, usize>,
    /// Explicitly named inputs that were refused: the command exits 3.
    pub refused: usize,
}

/// Where the documents read go: the store (`Sender`), or `plan`'s counts.
pub(super) trait Sink {
    /// Before the first document: how many will come.
    fn start(&mut self, ctx: &Ctx, total: usize) -> Result<()>;
    fn push(&mut self, item: NewJob, tally: &mut Tally) -> Result<()>;
    /// A document not taken (for a progress bar).
    fn skip(&self);
    /// After the last document.
    fn flush(&mut self, tally: &mut Tally) -> Result<()>;
}

/// What every document of this command line shares (its template), and the largest file it
/// takes: for `enqueue` and `plan` alike.
pub(super) fn template(ctx: &Ctx, a: &EnqueueArgs) -> Result<(SpecTemplate, u64)> {
    if a.paths.is_empty() && a.batch.is_none() {
        return fail(
            code::BAD_INPUT,
            "nothing to enqueue: name files, directories, - (stdin), or --batch FILE.jsonl",
        );
    }
    let task = task_of(a)?;
    let auto = auto_of(ctx, a)?;
    let (model, fallback) = match auto {
        Some(_) => (ModelRef::auto(), Vec::new()),
        None => {
            let model = ctx
                .config
                .resolve_model(
                    a.model.as_deref(),
                    a.template.as_deref(),
                    &ctx.home.config(),
                    &|name| ctx.registered(name),
                    &ctx.checked(),
                )
                .map_err(|e| Coded(code::BAD_INPUT, e.to_string()))?;
            let fallback = fallback_of(ctx, a, &model)?;
            (model, fallback)
        }
    };
    let tpl = SpecTemplate {
        task,
        system: a.system.clone(),
        model,
        params: params_of(&a.gen),
        priority: a.priority,
        not_before: not_before(&a.not_before)?,
        max_attempts: a.max_attempts.unwrap_or(ctx.config.max_attempts).max(1),
        constraint: constraint_of(a)?,
        fallback,
        auto,
    };
    let limit = a.max_file_bytes.unwrap_or(ctx.config.max_file_bytes);
    if limit == 0 || limit > ingest::MAX_DOCUMENT_BYTES {
        return fail(
            code::USAGE,
            format!(
                "--max-file-bytes {limit}: 1 to {} (128 MiB)",
                ingest::MAX_DOCUMENT_BYTES
            ),
        );
    }
    Ok((tpl, limit))
}

/// Read the command line's documents (paths, or a batch file) into `sink`, counting in
/// `tally`.
pub(super) fn read_into(
    ctx: &Ctx,
    tpl: &SpecTemplate,
    a: &EnqueueArgs,
    limit: u64,
    tally: &mut Tally,
    sink: &mut dyn Sink,
) -> Result<()> {
    match &a.batch {
        Some(file) => send_batch_file(ctx, tpl, file, a.strict, limit, tally, sink),
        None => path_items(ctx, tpl, a, limit, tally, sink),
    }
}

pub fn run(ctx: &Ctx, a: EnqueueArgs) -> Result<i32> {
    let (tpl, limit) = template(ctx, &a)?;
    let mut tally = Tally::default();
    let mut sender = Sender::new(a.force, a.json, new_batch(&a)?);
    read_into(ctx, &tpl, &a, limit, &mut tally, &mut sender)?;
    let batch = sender.finish()?;
    let mut line = format!("queued {}", tally.queued);
    if let Some(b) = batch {
        line += &format!(" in {b}");
    }
    if tally.existing > 0 {
        line += &format!(", already queued {}", tally.existing);
    }
    let skipped: usize = tally.skipped.values().sum();
    if skipped > 0 {
        let why: Vec<String> = tally
            .skipped
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        line += &format!(", skipped {skipped} ({})", why.join(", "));
    }
    if !a.json {
        eprintln!("{line}");
    }
    Ok(if tally.refused > 0 {
        code::BAD_INPUT
    } else {
        0
    })
}

/// Read files in batches and send each batch as it is read, so memory stays bounded by a
/// batch however many files there are.
fn path_items(
    ctx: &Ctx,
    tpl: &SpecTemplate,
    a: &EnqueueArgs,
    limit: u64,
    tally: &mut Tally,
    sender: &mut dyn Sink,
) -> Result<()> {
    let stdin_count = a.paths.iter().filter(|p| p.as_os_str() == "-").count();
    if stdin_count > 1 {
        return fail(code::BAD_INPUT, "- (stdin) may be named once");
    }
    let files: Vec<_> = a
        .paths
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .cloned()
        .collect();
    let found = ingest::expand(&files, a.glob.as_deref())
        .map_err(|e| Coded(code::BAD_INPUT, e.to_string()))?;
    for dir in files.iter().filter(|p| p.is_dir()) {
        if !found.iter().any(|f| f.path.starts_with(dir)) {
            let what = match &a.glob {
                Some(g) => format!("{}: no files match --glob {g:?}", dir.display()),
                None => format!("{}: no files in this directory", dir.display()),
            };
            return fail(code::BAD_INPUT, what);
        }
    }
    let total = found.len() + stdin_count;
    if let Some(id) = &a.custom_id {
        crate::job::check_custom_id(id)
            .or_else(|why| fail(code::USAGE, format!("--custom-id: {why}")))?;
    }
    if a.custom_id.is_some() && total != 1 {
        return fail(
            code::BAD_INPUT,
            "--custom-id names one document; this enqueue has several",
        );
    }
    let mut from_stdin = None;
    if stdin_count == 1 {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Coded(code::BAD_INPUT, format!("-: cannot read stdin: {e}")))?;
        match ingest::decode_text(&bytes, limit) {
            Ok(text) => {
                let id = a.custom_id.clone().unwrap_or_else(|| "stdin".into());
                from_stdin = Some(NewJob {
                    spec: tpl.spec(id, "-".into(), &text),
                    text,
                });
            }
            Err(r) => refuse(tally, "-", &r, false),
        }
    }
    sender.start(ctx, total)?;
    if let Some(item) = from_stdin {
        sender.push(item, tally)?;
    }
    for f in found {
        if let Some(why) = f.broken {
            let path = f.path.display().to_string();
            refuse(tally, &path, &Refusal::Unreadable(why), f.in_directory);
            sender.skip();
            continue;
        }
        let id = a.custom_id.clone().unwrap_or(f.custom_id);
        if let Err(why) = crate::job::check_custom_id(&id) {
            let path = f.path.display().to_string();
            refuse(tally, &path, &Refusal::BadName(why), f.in_directory);
            sender.skip();
            continue;
        }
        match ingest::read_file(&f.path, limit) {
            Ok(text) => {
                let source = f
                    .path
                    .canonicalize()
                    .unwrap_or(f.path)
                    .display()
                    .to_string();
                let item = NewJob {
                    spec: tpl.spec(id, source, &text),
                    text,
                };
                sender.push(item, tally)?;
            }
            Err(r) => {
                refuse(tally, &f.path.display().to_string(), &r, f.in_directory);
                sender.skip();
            }
        }
    }
    sender.flush(tally)
}

/// Report a refused document: a one-line reason for a named input (the command then exits
/// 3), a count for a file found in a directory.
fn refuse(tally: &mut Tally, what: &str, why: &Refusal, in_directory: bool) {
    if in_directory {
        *tally.skipped.entry(why.kind()).or_default() += 1;
        tracing::info!("skipped {what}: {why}");
    } else {
        tally.refused += 1;
        eprintln!("qwen3q: {what}: {why}");
    }
}

/// The lines of a batch file, read one at a time.
fn batch_lines(
    file: &Path,
    limit: u64,
) -> Result<ingest::BatchLines<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(file).map_err(|e| {
        Coded(
            code::BAD_INPUT,
            format!("{}: cannot read: {e}", file.display()),
        )
    })?;
    Ok(ingest::BatchLines::new(std::io::BufReader::new(f), limit))
}

/// A batch file, streamed twice: once to check every line (bad ones reported with their
/// numbers; with `--strict` one bad line stops everything), then to send the good ones in
/// batches. Neither pass holds more than a batch of it.
fn send_batch_file(
    ctx: &Ctx,
    tpl: &SpecTemplate,
    file: &Path,
    strict: bool,
    limit: u64,
    tally: &mut Tally,
    sender: &mut dyn Sink,
) -> Result<()> {
    // Two passes need a file that reads twice: a pipe (`--batch /dev/stdin`, `<(jq …)`) is
    // copied into the home first.
    let meta = std::fs::metadata(file)
        .map_err(|e| Coded(code::BAD_INPUT, format!("{}: {e}", file.display())))?;
    if meta.is_dir() {
        return fail(
            code::BAD_INPUT,
            format!("{}: a directory, not a batch file", file.display()),
        );
    }
    let spool = ctx
        .home
        .dir
        .join(format!("batch-{}.jsonl.part", std::process::id()));
    let _remove = RemoveOnDrop(spool.clone());
    let file = if meta.is_file() {
        file
    } else {
        ctx.home
            .ensure()
            .map_err(|e| Coded(code::FAILURE, e.to_string()))?;
        let copy = std::fs::File::open(file)
            .and_then(|mut from| std::io::copy(&mut from, &mut std::fs::File::create(&spool)?));
        copy.map_err(|e| {
            Coded(
                code::BAD_INPUT,
                format!("{}: cannot read: {e}", file.display()),
            )
        })?;
        spool.as_path()
    };
    let (mut good, mut bad) = (0usize, 0);
    // A custom id names one request of the file (OpenAI's rule): a later line with the same
    // id is refused, naming both lines, and skipped by the second pass.
    let mut ids = ingest::SeenIds::default();
    let mut repeats = std::collections::HashSet::new();
    for (n, line) in batch_lines(file, limit)? {
        let checked = line
            .and_then(|l| ingest::parse_batch_line(&l))
            .and_then(|item| match ids.see(&item.custom_id, n) {
                None => Ok(()),
                Some(first) => {
                    repeats.insert(n);
                    Err(format!(
                        "custom_id \"{}\" is also on line {first} (ids are unique in a batch file)",
                        printable(&item.custom_id)
                    ))
                }
            });
        match checked {
            Ok(()) => good += 1,
            Err(e) => {
                eprintln!("qwen3q: {}:{n}: {e}", file.display());
                bad += 1;
            }
        }
    }
    drop(ids);
    if bad > 0 {
        tally.refused += bad;
        if strict {
            return fail(
                code::BAD_INPUT,
                format!(
                    "{bad} bad lines in {}; --strict: nothing enqueued",
                    file.display()
                ),
            );
        }
    }
    if good == 0 && bad == 0 {
        return fail(
            code::BAD_INPUT,
            format!("{}: no requests in the file", file.display()),
        );
    }
    sender.start(ctx, good)?;
    let mut read_again = 0;
    for (n, line) in batch_lines(file, limit)? {
        // Lines are read again: one that changed since the first pass is skipped.
        if repeats.contains(&n) {
            continue;
        }
        let Ok(item) = line.and_then(|l| ingest::parse_batch_line(&l)) else {
            continue;
        };
        read_again += 1;
        sender.push(tpl.chat(item, format!("{}:{n}", file.display())), tally)?;
    }
    sender.flush(tally)?;
    if read_again < good {
        tally.refused += good - read_again;
        eprintln!(
            "qwen3q: {}: the file changed while it was read; {} good lines were not enqueued",
            file.display(),
            good - read_again
        );
    }
    Ok(())
}

/// A file removed when this goes out of scope (if it exists).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    if len < 50 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {human_pos}/{human_len}, {eta} left",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// Sends batches to the worker (or the store) and reports each outcome.
struct Sender {
    force: bool,
    json: bool,
    conn: Option<crate::client::Connection>,
    bar: indicatif::ProgressBar,
    /// Print a line per document (small enqueues only).
    verbose: bool,
    all: Vec<serde_json::Value>,
    /// Documents waiting to go as one batch, and their bytes of text.
    pending: Vec<NewJob>,
    pending_bytes: usize,
    /// The batch the next request's jobs join: a new one until a request has made it.
    target: BatchTarget,
}

impl Sink for Sender {
    /// Queue a document (after [`Sink::start`]); a full batch — [`BATCH`] documents or
    /// [`BATCH_BYTES`] of text — goes at once.
    fn push(&mut self, item: NewJob, tally: &mut Tally) -> Result<()> {
        self.pending_bytes += item.text.len();
        self.pending.push(item);
        if self.pending.len() >= BATCH || self.pending_bytes >= BATCH_BYTES {
            self.flush(tally)?;
        }
        Ok(())
    }

    /// Send the documents still pending.
    fn flush(&mut self, tally: &mut Tally) -> Result<()> {
        self.pending_bytes = 0;
        let batch = std::mem::take(&mut self.pending);
        self.send(batch, tally)
    }

    fn start(&mut self, ctx: &Ctx, total: usize) -> Result<()> {
        if total > 0 {
            self.conn = Some(ctx.connect()?);
        }
        self.bar = progress(total as u64, "enqueuing");
        self.verbose = total <= 20;
        Ok(())
    }

    fn skip(&self) {
        self.bar.inc(1);
    }
}

impl Sender {
    fn new(force: bool, json: bool, batch: NewBatch) -> Sender {
        Sender {
            target: BatchTarget::New(batch),
            force,
            json,
            conn: None,
            bar: indicatif::ProgressBar::hidden(),
            verbose: false,
            all: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Send one batch (its documents move into the request: no second copy is made). A batch
    /// over the worker's request limit as JSON comes back unsent and goes in halves; a single
    /// document over it is refused with a line.
    fn send(&mut self, batch: Vec<NewJob>, tally: &mut Tally) -> Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let names: Vec<(String, String)> = batch
            .iter()
            .map(|i| (i.spec.custom_id.clone(), i.spec.source.clone()))
            .collect();
        let request = Request::Enqueue {
            items: batch,
            force: self.force,
            batch: self.target.clone(),
        };
        let response = match conn.send(request)? {
            Sent::Answer(response) => response,
            Sent::TooLarge(Request::Enqueue { mut items, .. }, size) => {
                if items.len() == 1 {
                    tally.refused += 1;
                    self.bar.inc(1);
                    eprintln!(
                        "qwen3q: {}: too large to send to the worker ({} MiB as JSON; the limit is {} MiB)",
                        items[0].spec.source,
                        size >> 20,
                        crate::protocol::MAX_REQUEST_BYTES >> 20
                    );
                    return Ok(());
                }
                let second = items.split_off(items.len() / 2);
                self.send(items, tally)?;
                return self.send(second, tally);
            }
            Sent::TooLarge(..) => unreachable!("the request sent was an enqueue"),
        };
        let Enqueued { outcomes, batch } = match response {
            Response::Enqueued(o) => o,
            Response::Error(e) => return fail(code::FAILURE, e),
            other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
        };
        for ((custom_id, source), outcome) in names.iter().zip(&outcomes) {
            let (id, word) = match outcome {
                EnqueueOutcome::Queued(id) => {
                    tally.queued += 1;
                    (id, "queued".to_string())
                }
                EnqueueOutcome::Existing(id, state) => {
                    tally.existing += 1;
                    (id, format!("exists ({state})"))
                }
            };
            if self.verbose && !self.json {
                let hint = if word == "queued" {
                    ""
                } else {
                    "; --force to enqueue again"
                };
                println!("{word} #{id} {}{hint}", printable(custom_id));
            }
            if self.json {
                let mut entry = serde_json::json!({
                    "id": id.0,
                    "custom_id": custom_id,
                    "source": source,
                    "outcome": word,
                });
                if let (EnqueueOutcome::Queued(_), Some(b)) = (outcome, batch) {
                    entry["batch"] = b.to_string().into();
                }
                self.all.push(entry);
            }
        }
        if let Some(b) = batch {
            self.target = BatchTarget::Add(b);
        }
        self.bar.inc(names.len() as u64);
        Ok(())
    }

    /// The batch made, if any, sealed: every request of the enqueue was sent.
    fn finish(mut self) -> Result<Option<BatchId>> {
        self.bar.finish_and_clear();
        let batch = match self.target {
            BatchTarget::Add(b) => Some(b),
            _ => None,
        };
        if let (Some(b), Some(conn)) = (batch, self.conn.as_mut()) {
            match conn.call(Request::SealBatch(b))? {
                Response::Done => {}
                Response::Error(e) => return fail(code::FAILURE, e),
                other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
            }
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&self.all)?);
        }
        Ok(batch)
    }
}
