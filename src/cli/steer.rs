//! `qwen3q cancel`, `retry`, `pause`, `resume`, `prune`: a person steering the queue.

use anyhow::Result;

use super::args::{PruneArgs, RetryArgs, SelectArgs};
use super::{code, fail, millis, parse_duration, Ctx};
use crate::job::StateKind;
use crate::protocol::{Request, Response, Selector};
use crate::queue::TransitionOutcome;

fn report(response: Response, verb: &str) -> Result<i32> {
    let Response::Transitions { outcomes, missing } = response else {
        return fail(code::FAILURE, format!("unexpected answer: {response:?}"));
    };
    for (id, o) in &outcomes {
        match o {
            TransitionOutcome::Done => println!("{verb} #{id}"),
            TransitionOutcome::Unchanged(s) => println!("#{id} is already {s}"),
            TransitionOutcome::Refused(StateKind::Running) if verb == "cancelled" => eprintln!(
                "qwen3q: #{id} is still running: the worker did not stop it within 15 s; try again"
            ),
            TransitionOutcome::Refused(StateKind::Running) => eprintln!(
                "qwen3q: #{id} is running and cannot be {verb} now: the worker owns it (cancel it \
                 first with `qwen3q cancel {id}`, or wait for it to end)"
            ),
            TransitionOutcome::Refused(s) => eprintln!("qwen3q: #{id} is {s} and cannot be {verb}"),
            TransitionOutcome::NotFound => eprintln!("qwen3q: no job #{id}"),
        }
    }
    for m in &missing {
        eprintln!("qwen3q: no job {m}");
    }
    if !missing.is_empty()
        || outcomes
            .iter()
            .any(|(_, o)| *o == TransitionOutcome::NotFound)
    {
        return Ok(code::NOT_FOUND);
    }
    let refused = outcomes
        .iter()
        .any(|(_, o)| matches!(o, TransitionOutcome::Refused(_)));
    Ok(if refused { code::BAD_INPUT } else { 0 })
}

/// Jobs named by number or custom id, then every job of each `--batch` (one that does not
/// exist: exit "not found", nothing done).
fn selectors(ctx: &Ctx, jobs: &[String], batches: &[String]) -> Result<Vec<Selector>> {
    let mut out: Vec<Selector> = jobs.iter().map(|s| Selector::parse(s)).collect();
    for b in batches {
        let id = super::batches::parse_id(b)?;
        super::batches::require(ctx, id)?;
        out.push(Selector::Batch(id));
    }
    Ok(out)
}

pub fn cancel(ctx: &Ctx, a: &SelectArgs) -> Result<i32> {
    let request = Request::Cancel(selectors(ctx, &a.jobs, &a.batch)?);
    report(ctx.call(request)?, "cancelled")
}

pub fn retry(ctx: &Ctx, a: RetryArgs) -> Result<i32> {
    if a.jobs.is_empty() && a.batch.is_empty() && !a.all_failed {
        return fail(
            code::BAD_INPUT,
            "name jobs to retry, --batch ID, or --all-failed",
        );
    }
    let request = Request::Retry {
        selectors: selectors(ctx, &a.jobs, &a.batch)?,
        all_failed: a.all_failed,
    };
    report(ctx.call(request)?, "queued again")
}

pub fn pause(ctx: &Ctx, paused: bool) -> Result<i32> {
    ctx.call(if paused {
        Request::Pause
    } else {
        Request::Resume
    })?;
    println!(
        "{}",
        if paused {
            "paused: the worker claims no new jobs"
        } else {
            "resumed"
        }
    );
    Ok(0)
}

pub fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let age = parse_duration(&a.older_than)?;
    let before = crate::now_ms().saturating_sub(millis(age));
    match ctx.call(Request::Prune { before })? {
        Response::Pruned(n) => {
            println!("pruned {n} finished jobs");
            Ok(0)
        }
        other => fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    }
}
