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
        qwen3q::job::printable(&job.spec.custom_id),
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
    let (mut written, mut failed) = (0, 0);
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
        match std::fs::write(&path, body) {
            Ok(()) => written += 1,
            // One file that cannot be written (a full disk, a name the file system refuses)
            // does not stop the others.
            Err(e) => {
                failed += 1;
                eprintln!("qwen3q: writing {}: {e}", path.display());
            }
        }
    }
    eprintln!("wrote {written} files to {}", dir.display());
    if failed > 0 {
        return Err(super::Coded(
            code::FAILURE,
            format!("{failed} files could not be written"),
        )
        .into());
    }
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
