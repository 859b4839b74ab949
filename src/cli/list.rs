//! `qwen3q list`: jobs, filtered by state, time and custom id.

use anyhow::Result;

use super::args::ListArgs;
use super::output::{ago, error_of, job_json};
use super::{code, fail, millis, parse_duration, Coded, Ctx};
use qwen3q::job::{JobState, StateKind};
use qwen3q::protocol::{JobView, Request, Response};
use qwen3q::queue::JobFilter;

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
        Some(s) => Some(qwen3q::now_ms().saturating_sub(millis(parse_duration(s)?))),
        None => None,
    };
    let filter = JobFilter {
        states,
        since,
        custom_id_glob: a.custom_id.clone(),
        limit: a.limit,
    };
    let jobs = match ctx.call(Request::List(filter))? {
        Response::Jobs(j) => j,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    if a.json {
        let out: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                job_json(&JobView {
                    job,
                    result: None,
                    events: Vec::new(),
                    crash: None,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let now = qwen3q::now_ms();
    for j in &jobs {
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
            qwen3q::job::printable(&j.spec.custom_id),
            detail
        );
    }
    if jobs.is_empty() {
        eprintln!("no jobs");
    }
    Ok(0)
}
