//! `qwen3q results`: answers as text, JSON lines, OpenAI batch output, or one file per job;
//! `--wait` blocks until the jobs are finished.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::args::{ResultFormat, ResultsArgs};
use super::output::{error_of, job_json, openai_error, openai_success};
use super::{code, fail, Ctx};
use crate::job::BatchId;
use crate::openai::BatchLine;
use crate::protocol::{JobView, Request, Response, Selector};

fn fetch(ctx: &Ctx, selectors: &[Selector]) -> Result<(Vec<JobView>, Vec<String>)> {
    match ctx.call(Request::Results(selectors.to_vec()))? {
        Response::Views { views, missing } => Ok((views, missing)),
        other => fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    }
}

/// Done means nothing more will happen without a person: succeeded, dead or cancelled.
fn finished(v: &JobView) -> bool {
    v.job.state.kind().is_terminal()
}

/// Jobs a request asks for at most when every job is read.
const PAGE: usize = 500;

/// The views of `selectors`, or of every job page by page when there are none: neither the
/// worker nor this process holds every job at once. Calls `each` with each page.
fn for_each_page(
    ctx: &Ctx,
    selectors: &[Selector],
    batch: Option<BatchId>,
    mut each: impl FnMut(Vec<JobView>) -> Result<()>,
) -> Result<Vec<String>> {
    if !selectors.is_empty() {
        let (views, missing) = fetch(ctx, selectors)?;
        each(views)?;
        return Ok(missing);
    }
    let mut after = None;
    loop {
        let filter = crate::queue::JobFilter {
            limit: Some(PAGE),
            after,
            batch,
            ..Default::default()
        };
        let jobs = match ctx.call(Request::List(filter))? {
            Response::Jobs(j) => j,
            other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
        };
        let Some(last) = jobs.last().map(|j| j.id) else {
            return Ok(Vec::new());
        };
        let full = jobs.len() == PAGE;
        let ids: Vec<Selector> = jobs.iter().map(|j| Selector::Id(j.id)).collect();
        let (views, _) = fetch(ctx, &ids)?;
        each(views)?;
        if !full {
            return Ok(Vec::new());
        }
        after = Some(last);
    }
}

/// Jobs not finished yet, and all: for every job from the counts (cheap at any size), else
/// from the selected jobs' views.
fn progress(ctx: &Ctx, selectors: &[Selector], batch: Option<BatchId>) -> Result<(u64, u64)> {
    if let Some(b) = batch {
        let c = super::batches::require(ctx, b)?.counts;
        return Ok((c.total() - c.active(), c.total()));
    }
    if selectors.is_empty() {
        let Response::Status(report) = ctx.call(Request::Status)? else {
            return fail(code::FAILURE, "unexpected answer to status");
        };
        let c = &report.counts;
        return Ok((c.succeeded + c.dead + c.cancelled, c.total()));
    }
    let (views, _) = fetch(ctx, selectors)?;
    let done = views.iter().filter(|v| finished(v)).count() as u64;
    Ok((done, views.len() as u64))
}

/// Poll until every selected job is finished. Each poll opens a fresh connection, so a
/// worker can take the store between polls when none was running.
fn wait(ctx: &Ctx, selectors: &[Selector], batch: Option<BatchId>) -> Result<()> {
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("waiting [{bar:40}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut warned = false;
    loop {
        let (done, all) = progress(ctx, selectors, batch)?;
        bar.set_length(all);
        bar.set_position(done);
        if done == all {
            bar.finish_and_clear();
            return Ok(());
        }
        if !warned && !crate::daemon::worker_alive(&ctx.home) {
            eprintln!("qwen3q: no worker is running; start `qwen3q worker` to run the queue (still waiting)");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn safe_file_name(custom_id: &str, id: u64) -> String {
    let cleaned: String = custom_id
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('.');
    if cleaned.is_empty() {
        return format!("job-{id}");
    }
    // File systems allow 255 bytes a name: keep room for the id prefix and an extension, and
    // cut on a character boundary (the id keeps cut names apart).
    let mut cut = cleaned.len().min(MAX_NAME_BYTES);
    while !cleaned.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{id}-{}", &cleaned[..cut])
}

/// Bytes of a custom id kept in a result's file name (with `ID-` before and `.json` after, the
/// name stays within the 255 bytes file systems allow).
const MAX_NAME_BYTES: usize = 200;

fn text_block(v: &JobView) -> String {
    let job = &v.job;
    let mut out = format!(
        "== #{} {} [{}]\n",
        job.id,
        crate::job::printable(&job.spec.custom_id),
        job.state.kind()
    );
    match (&v.result, &job.state) {
        (Some(r), _) => {
            out += r.answer.trim_end();
            out.push('\n');
        }
        (None, state) => {
            if let Some(e) = error_of(state) {
                out += &format!("error: {e}\n");
            }
        }
    }
    out
}

pub fn run(ctx: &Ctx, a: ResultsArgs) -> Result<i32> {
    let format = match (a.format, a.jsonl) {
        (Some(f), false) => f,
        (None, true) | (Some(ResultFormat::Jsonl), true) => ResultFormat::Jsonl,
        (Some(_), true) => return fail(code::BAD_INPUT, "--jsonl and --format disagree"),
        (None, false) => ResultFormat::Text,
    };
    let selectors: Vec<Selector> = a.jobs.iter().map(|s| Selector::parse(s)).collect();
    let batch = super::batches::flag(ctx, a.batch.as_deref())?;
    if a.wait {
        wait(ctx, &selectors, batch)?;
    }
    let missing = match &a.out {
        Some(dir) => {
            let mut files = FileWriter::new(dir, format)?;
            let missing = for_each_page(ctx, &selectors, batch, |views| files.write(&views))?;
            files.finish()?;
            missing
        }
        None => {
            let mut stream = StreamWriter::new(&a, format)?;
            let missing = for_each_page(ctx, &selectors, batch, |views| stream.write(&views))?;
            stream.finish()?;
            missing
        }
    };
    for m in &missing {
        eprintln!("qwen3q: no job {m}");
    }
    Ok(if missing.is_empty() {
        0
    } else {
        code::NOT_FOUND
    })
}

/// `--out DIR`: one file a finished job.
struct FileWriter<'a> {
    dir: &'a Path,
    format: ResultFormat,
    written: usize,
    failed: usize,
}

impl<'a> FileWriter<'a> {
    fn new(dir: &'a Path, format: ResultFormat) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(FileWriter {
            dir,
            format,
            written: 0,
            failed: 0,
        })
    }

    fn write(&mut self, views: &[JobView]) -> Result<()> {
        for v in views
            .iter()
            .filter(|v| v.result.is_some() || error_of(&v.job.state).is_some())
        {
            let base = safe_file_name(&v.job.spec.custom_id, v.job.id.0);
            let (name, body) = match self.format {
                ResultFormat::Text => (
                    format!("{base}.txt"),
                    v.result
                        .as_ref()
                        .map(|r| r.answer.clone() + "\n")
                        .unwrap_or_else(|| text_block(v)),
                ),
                ResultFormat::Jsonl => (
                    format!("{base}.json"),
                    serde_json::to_string_pretty(&job_json(v))? + "\n",
                ),
                ResultFormat::Openai => (
                    format!("{base}.json"),
                    serde_json::to_string_pretty(
                        &openai_success(v).unwrap_or_else(|| openai_error(&v.job)),
                    )? + "\n",
                ),
            };
            let path = self.dir.join(name);
            match std::fs::write(&path, body) {
                Ok(()) => self.written += 1,
                // One file that cannot be written (a full disk, a name the file system
                // refuses) does not stop the others.
                Err(e) => {
                    self.failed += 1;
                    eprintln!("qwen3q: writing {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        eprintln!("wrote {} files to {}", self.written, self.dir.display());
        if self.failed > 0 {
            return Err(super::Coded(
                code::FAILURE,
                format!("{} files could not be written", self.failed),
            )
            .into());
        }
        Ok(())
    }
}

fn open_out(path: &Option<PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// Results to standard output or `-o FILE` (OpenAI: errors to their own file).
struct StreamWriter {
    format: ResultFormat,
    out: Box<dyn Write>,
    errors: Option<Box<dyn Write>>,
    pending: usize,
}

impl StreamWriter {
    fn new(a: &ResultsArgs, format: ResultFormat) -> Result<Self> {
        let errors: Option<Box<dyn Write>> = match format {
            ResultFormat::Openai => {
                let error_path = a.error_file.clone().or_else(|| {
                    a.output.as_ref().map(|o| {
                        let mut p = o.clone().into_os_string();
                        p.push(".errors.jsonl");
                        PathBuf::from(p)
                    })
                });
                Some(match &error_path {
                    Some(p) => Box::new(
                        std::fs::File::create(p)
                            .with_context(|| format!("creating {}", p.display()))?,
                    ),
                    None => Box::new(std::io::stderr()),
                })
            }
            _ => None,
        };
        Ok(StreamWriter {
            format,
            out: open_out(&a.output)?,
            errors,
            pending: 0,
        })
    }

    fn write(&mut self, views: &[JobView]) -> Result<()> {
        for v in views {
            match self.format {
                ResultFormat::Text => write!(self.out, "{}", text_block(v))?,
                ResultFormat::Jsonl => {
                    writeln!(self.out, "{}", serde_json::to_string(&job_json(v))?)?
                }
                ResultFormat::Openai => match crate::openai::batch_line(v) {
                    Some(BatchLine::Output(line)) => {
                        writeln!(self.out, "{}", serde_json::to_string(&line)?)?
                    }
                    Some(BatchLine::Error(line)) => {
                        if let Some(errors) = self.errors.as_mut() {
                            writeln!(errors, "{}", serde_json::to_string(&line)?)?
                        }
                    }
                    None => self.pending += 1,
                },
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.pending > 0 {
            eprintln!(
                "qwen3q: {} jobs are not finished yet (use --wait)",
                self.pending
            );
        }
        self.out.flush()?;
        if let Some(mut e) = self.errors {
            e.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_within_what_file_systems_allow() {
        assert_eq!(safe_file_name("notes/a b.txt", 7), "7-notes_a_b.txt");
        assert_eq!(safe_file_name("..", 3), "job-3");
        // A 300-character id (two bytes each): cut on a character boundary, the id in front.
        let long = "é".repeat(300);
        let name = safe_file_name(&long, 123_456);
        assert!(name.len() + ".json".len() <= 255, "{}", name.len());
        assert!(name.starts_with("123456-é"));
        assert!(name.is_char_boundary(name.len()));
    }
}
