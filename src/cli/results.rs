//! `qwen3q results`: answers as text, JSON lines, OpenAI batch output, or one file per job;
//! `--wait` blocks until the jobs are finished.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::args::{ResultFormat, ResultsArgs};
use super::output::{error_of, job_json, openai_error, openai_success};
use super::{code, fail, Ctx};
use qwen3q::job::{JobState, StateKind};
use qwen3q::protocol::{JobView, Request, Response, Selector};

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

/// Poll until every selected job is finished. Each poll opens a fresh connection, so a
/// worker can take the store between polls when none was running.
fn wait(ctx: &Ctx, selectors: &[Selector]) -> Result<()> {
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
        let (views, _) = fetch(ctx, selectors)?;
        let done = views.iter().filter(|v| finished(v)).count();
        bar.set_length(views.len() as u64);
        bar.set_position(done as u64);
        if done == views.len() {
            bar.finish_and_clear();
            return Ok(());
        }
        if !warned && !qwen3q::daemon::worker_alive(&ctx.home) {
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
    let cleaned = cleaned.trim_matches('.').to_string();
    if cleaned.is_empty() {
        format!("job-{id}")
    } else {
        format!("{id}-{cleaned}")
    }
}

fn text_block(v: &JobView) -> String {
    let job = &v.job;
    let mut out = format!(
        "== #{} {} [{}]\n",
        job.id,
        job.spec.custom_id,
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
    if a.wait {
        wait(ctx, &selectors)?;
    }
    let (views, missing) = fetch(ctx, &selectors)?;
    for m in &missing {
        eprintln!("qwen3q: no job {m}");
    }
    if let Some(dir) = &a.out {
        write_dir(dir, &views, format)?;
    } else {
        write_stream(&a, &views, format)?;
    }
    Ok(if missing.is_empty() {
        0
    } else {
        code::NOT_FOUND
    })
}

fn write_dir(dir: &Path, views: &[JobView], format: ResultFormat) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0;
    for v in views
        .iter()
        .filter(|v| v.result.is_some() || error_of(&v.job.state).is_some())
    {
        let base = safe_file_name(&v.job.spec.custom_id, v.job.id.0);
        let (name, body) = match format {
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
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    eprintln!("wrote {written} files to {}", dir.display());
    Ok(())
}

fn open_out(path: &Option<PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

fn write_stream(a: &ResultsArgs, views: &[JobView], format: ResultFormat) -> Result<()> {
    let mut out = open_out(&a.output)?;
    match format {
        ResultFormat::Text => {
            for v in views {
                write!(out, "{}", text_block(v))?;
            }
        }
        ResultFormat::Jsonl => {
            for v in views {
                writeln!(out, "{}", serde_json::to_string(&job_json(v))?)?;
            }
        }
        ResultFormat::Openai => {
            let error_path = a.error_file.clone().or_else(|| {
                a.output.as_ref().map(|o| {
                    let mut p = o.clone().into_os_string();
                    p.push(".errors.jsonl");
                    PathBuf::from(p)
                })
            });
            let mut errors: Box<dyn Write> = match &error_path {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ),
                None => Box::new(std::io::stderr()),
            };
            let mut pending = 0;
            for v in views {
                match (&v.job.state, openai_success(v)) {
                    (JobState::Succeeded { .. }, Some(line)) => {
                        writeln!(out, "{}", serde_json::to_string(&line)?)?
                    }
                    (s, _) if matches!(s.kind(), StateKind::Dead | StateKind::Cancelled) => {
                        writeln!(errors, "{}", serde_json::to_string(&openai_error(&v.job))?)?
                    }
                    _ => pending += 1,
                }
            }
            if pending > 0 {
                eprintln!("qwen3q: {pending} jobs are not finished yet (use --wait)");
            }
        }
    }
    out.flush()?;
    Ok(())
}
