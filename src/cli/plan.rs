//! `qwen3q plan PATHS… --model M`: a dry run before a night. The documents are read as
//! `enqueue` reads them (the same flags, the same specs), tokenized and split by the model's
//! own tokenizer in this process (through the engine, as `calibrate` runs), and counted:
//! documents, tokens, chunks, the tokens to generate; the memory at the B the worker would
//! run; the time, from the model's calibration at that B or the worker's measured speed.
//! Nothing is enqueued.

use anyhow::Result;

use super::args::PlanArgs;
use super::enqueue::{read_into, template, Sink, Tally};
use super::output::{human_bytes, human_duration};
use super::{code, fail, Coded, Ctx};
use crate::engine::{gguf, Engine, ModelInfo, Shape};
use crate::job::{Job, JobId, JobState, MergeKind};
use crate::protocol::{Request, Response};
use crate::queue::NewJob;

/// What the documents add up to.
#[derive(Debug, Default, serde::Serialize)]
struct Totals {
    documents: u64,
    bytes: u64,
    /// The documents' own tokens (the model's tokenizer, no template).
    tokens: u64,
    chunks: u64,
    /// Generations: one per chunk, and a reduce for a document of several chunks whose task
    /// combines them so.
    generations: u64,
    /// At most `max_tokens` a generation.
    max_new_tokens: u64,
    /// Documents that would fail (their prompt cannot fit the context), with the first reason.
    would_fail: u64,
    first_failure: Option<String>,
}

/// The sink `plan` reads into: counts, through the model's tokenizer.
struct Planner<'a> {
    engine: &'a mut dyn Engine,
    info: ModelInfo,
    margin: u32,
    totals: Totals,
}

impl Sink for Planner<'_> {
    fn start(&mut self, _ctx: &Ctx, _total: usize) -> Result<()> {
        Ok(())
    }

    fn push(&mut self, item: NewJob, tally: &mut Tally) -> Result<()> {
        let t = &mut self.totals;
        t.documents += 1;
        t.bytes += item.text.len() as u64;
        tally.queued += 1;
        let job = Job {
            id: JobId(0),
            spec: item.spec,
            state: JobState::Queued,
            attempts: 0,
            enqueued: 0,
            updated: 0,
            batch: None,
            deadline: None,
        };
        t.tokens += self
            .engine
            .tokenize(&item.text)
            .map_err(|e| Coded(code::FAILURE, e.to_string()))?
            .len() as u64;
        let max = u64::from(job.spec.params.max_tokens);
        match crate::scheduler::jobrun::chunk_texts(
            &mut *self.engine,
            &job,
            &self.info,
            self.margin,
            &item.text,
        ) {
            Ok(chunks) => {
                let n = chunks.len() as u64;
                let reduce = n > 1 && job.spec.task.merge_kind() == MergeKind::Reduce;
                t.chunks += n;
                t.generations += n + u64::from(reduce);
                t.max_new_tokens += max * (n + u64::from(reduce));
            }
            Err(e) => {
                t.would_fail += 1;
                t.first_failure
                    .get_or_insert_with(|| format!("{}: {e}", job.spec.source));
            }
        }
        Ok(())
    }

    fn skip(&self) {}

    fn flush(&mut self, _tally: &mut Tally) -> Result<()> {
        Ok(())
    }
}

pub fn run(ctx: &Ctx, a: PlanArgs) -> Result<i32> {
    let e = &a.enqueue;
    if e.paths.is_empty() && e.batch.is_none() {
        return fail(
            code::BAD_INPUT,
            "nothing to plan: name files, directories, - (stdin), or --batch FILE.jsonl",
        );
    }
    let (tpl, limit) = template(ctx, e)?;
    if tpl.auto.is_some() {
        return fail(
            code::USAGE,
            "plan needs a model: --model auto picks one when a job is claimed",
        );
    }
    let n_ctx = a.n_ctx.unwrap_or(ctx.config.n_ctx);
    let b = a.parallel.unwrap_or(ctx.config.parallel).max(1);
    let (mut engine, _) = super::worker::engine(ctx, None, None)?;
    // One sequence is enough to tokenize and split: no batch-sized context is allocated.
    let info = engine
        .load(&tpl.model, Shape { n_ctx, n_seq: 1 }, crate::now_ms())
        .map_err(|err| Coded(code::BAD_INPUT, format!("{}: {err}", tpl.model.name)))?;
    let graph = engine.graph();
    let mut planner = Planner {
        engine: engine.as_mut(),
        info,
        margin: crate::scheduler::RunSettings::default().margin,
        totals: Totals::default(),
    };
    let mut tally = Tally::default();
    read_into(ctx, &tpl, e, limit, &mut tally, &mut planner)?;
    let totals = planner.totals;
    let n_ctx = planner.info.n_ctx;

    let facts = gguf::facts_of(std::path::Path::new(&tpl.model.path))
        .map_err(|err| Coded(code::BAD_INPUT, format!("{}: {err}", tpl.model.path)))?;
    let memory = facts.predict(n_ctx as u64, b as u64, graph);
    let (rate, rate_from) = speed(ctx, &tpl.model.path, n_ctx, b)?;
    let seconds = rate.map(|r| totals.max_new_tokens as f64 / r);
    let skipped: usize = tally.skipped.values().sum();

    if e.json {
        let v = serde_json::json!({
            "model": tpl.model.name,
            "model_path": tpl.model.path,
            "n_ctx": n_ctx,
            "parallel": b,
            "totals": totals,
            "skipped": skipped,
            "refused": tally.refused,
            "memory": {
                "weights": memory.weights,
                "kv_cache": memory.kv_cache,
                "compute": memory.compute,
                "total": memory.total(),
            },
            "tokens_per_sec": rate,
            "tokens_per_sec_from": rate_from,
            "seconds_at_most": seconds.map(|s| s.round() as u64),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "documents: {} ({}), {} tokens by {}'s tokenizer",
            totals.documents,
            human_bytes(totals.bytes),
            totals.tokens,
            tpl.model.name
        );
        println!(
            "chunks:    {} at n_ctx {n_ctx}; {} generations of at most {} tokens ({} in all)",
            totals.chunks, totals.generations, tpl.params.max_tokens, totals.max_new_tokens
        );
        if totals.would_fail > 0 {
            println!(
                "fails:     {} documents ({})",
                totals.would_fail,
                totals.first_failure.as_deref().unwrap_or("")
            );
        }
        if skipped > 0 {
            println!("skipped:   {skipped} files (as enqueue would skip them)");
        }
        println!(
            "memory:    {} at B={b} (weights {}, KV cache {}, compute {}), predicted",
            human_bytes(memory.total()),
            human_bytes(memory.weights),
            human_bytes(memory.kv_cache),
            human_bytes(memory.compute)
        );
        match (seconds, rate) {
            (Some(s), Some(r)) => println!(
                "time:      at most {} at {r:.0} tokens/s ({rate_from}), if every generation used all its tokens",
                human_duration((s * 1000.0) as u64)
            ),
            _ => println!(
                "time:      no measured speed for this model: run `qwen3q calibrate {}`",
                tpl.model.name
            ),
        }
        println!("nothing was enqueued");
    }
    Ok(if tally.refused > 0 {
        code::BAD_INPUT
    } else {
        0
    })
}

/// Generated tokens a second at B: the calibration at this context (the point at B, else the
/// nearest below), else the worker's measured rate of the last minutes; and where it came from.
fn speed(ctx: &Ctx, path: &str, n_ctx: u32, b: u32) -> Result<(Option<f64>, &'static str)> {
    if let Response::Calibrations(cs) = ctx.call(Request::Calibrations(path.to_string()))? {
        let point = cs
            .iter()
            .filter(|c| c.n_ctx == n_ctx)
            .flat_map(|c| c.points.iter())
            .filter(|p| p.n_seq <= b)
            .max_by_key(|p| p.n_seq);
        if let Some(p) = point {
            return Ok((Some(p.tokens_per_sec), "calibration"));
        }
    }
    if let Response::Status(s) = ctx.call(Request::Status)? {
        if let Some(r) = s.tokens_per_sec {
            return Ok((Some(r), "the worker's last minutes"));
        }
    }
    Ok((None, "none"))
}
