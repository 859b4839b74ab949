//! `qwen3q list`: jobs, filtered by state, time and custom id.

use anyhow::Result;

use super::args::ListArgs;
use super::output::{ago, error_of, job_json};
use super::{code, fail, millis, parse_duration, Coded, Ctx};
use crate::job::{JobState, StateKind};
use crate::protocol::{JobView, Request, Response};
use crate::queue::JobFilter;

pub fn run(ctx: &Ctx, a: ListArgs) -> Result<i32> {
    let states = a
        .state
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| {
            s.parse::<StateKind>()
                .map_err(|e| Coded(code::BAD_INPUT, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let since = match &a.since {
        Some(s) => Some(crate::now_ms().saturating_sub(millis(parse_duration(s)?))),
        None => None,
    };
    let batch = super::batches::flag(ctx, a.batch.as_deref())?;
    // Pages of jobs, so that neither the worker nor this process holds a list of every job.
    let mut after = None;
    let mut left = a.limit.unwrap_or(usize::MAX);
    let mut printed = 0usize;
    if a.json {
        println!("[");
    }
    loop {
        let page = left.min(PAGE);
        if page == 0 {
            break;
        }
        let filter = JobFilter {
            states: states.clone(),
            since,
            custom_id_glob: a.custom_id.clone(),
            limit: Some(page),
            after,
            batch,
        };
        let got = match ctx.call(Request::List(filter))? {
            Response::Jobs(j) => j,
            other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
        };
        let full = got.len() == page;
        after = got.last().map(|j| j.id);
        left -= got.len();
        if a.json {
            for job in got {
                let view = JobView {
                    job,
                    result: None,
                    events: Vec::new(),
                    crash: None,
                    ahead: None,
                };
                let text = serde_json::to_string_pretty(&job_json(&view))?;
                let sep = if printed == 0 { "" } else { ",\n" };
                print!("{sep}  {}", text.replace('\n', "\n  "));
                printed += 1;
            }
        } else {
            print_page(&got);
            printed += got.len();
        }
        if !full {
            break;
        }
    }
    if a.json {
        println!("\n]");
        return Ok(0);
    }
    if printed == 0 {
        eprintln!("no jobs");
    }
    Ok(0)
}

/// Jobs a request asks for at most.
const PAGE: usize = 1000;

/// One line a job.
fn print_page(jobs: &[crate::job::Job]) {
    let now = crate::now_ms();
    for j in jobs {
        let detail = match &j.state {
            JobState::Running {
                chunks_done,
                chunks_total,
                ..
            } if *chunks_total > 0 => {
                format!("chunk {chunks_done}/{chunks_total}")
            }
            JobState::Failed {
                next_attempt_at, ..
            } => format!(
                "retry {}",
                if *next_attempt_at > now {
                    format!("in {}s", (next_attempt_at - now) / 1000)
                } else {
                    "now".into()
                }
            ),
            s => error_of(s).map(|e| e.to_string()).unwrap_or_default(),
        };
        println!(
            "{:>6}  {:<9}  {:<10}  {:<12}  {}  {}",
            format!("#{}", j.id),
            j.state.kind().as_str(),
            j.spec.task.name(),
            ago(j.updated, now),
            crate::job::printable(&j.spec.custom_id),
            detail
        );
    }
}
