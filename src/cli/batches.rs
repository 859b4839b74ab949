//! `qwen3q batches` and `qwen3q batch show`: what each enqueue asked for at once, and where
//! its jobs stand.

use anyhow::Result;

use super::args::{BatchCommand, BatchesArgs};
use super::output::{batch_json, human_duration, utc};
use super::{code, fail, Ctx};
use crate::batch::BatchView;
use crate::job::{BatchId, Millis, StateKind};
use crate::protocol::{Request, Response};

/// A batch id as a person types it (`batch_7` or `7`); a bad one is a bad command line.
pub fn parse_id(s: &str) -> Result<BatchId> {
    s.parse().or_else(|e: String| fail(code::USAGE, e))
}

/// Batch `id`, or exit "not found".
pub fn require(ctx: &Ctx, id: BatchId) -> Result<BatchView> {
    match ctx.call(Request::Batch(id))? {
        Response::Batches(mut v) if v.len() == 1 => Ok(v.remove(0)),
        other => fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    }
}

/// A `--batch ID` flag, if given: the batch, which must exist.
pub fn flag(ctx: &Ctx, given: Option<&str>) -> Result<Option<BatchId>> {
    match given {
        Some(b) => Ok(Some(require(ctx, parse_id(b)?)?.record.id)),
        None => Ok(None),
    }
}

pub fn list(ctx: &Ctx, a: BatchesArgs) -> Result<i32> {
    let before = a.before.as_deref().map(parse_id).transpose()?;
    let views = match ctx.call(Request::Batches {
        before,
        limit: a.limit.max(1),
    })? {
        Response::Batches(v) => v,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    let now = crate::now_ms();
    if a.json {
        let out: Vec<_> = views.iter().map(|v| batch_json(v, now)).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if views.is_empty() {
        println!("no batches");
        return Ok(0);
    }
    for v in &views {
        println!("{}", line(v, now, None));
    }
    if views.len() == a.limit.max(1) {
        if let Some(last) = views.last() {
            println!("(more: --before {})", last.record.id);
        }
    }
    Ok(0)
}

/// One batch on one line: id, status, progress, name, deadline; with a measured rate, how
/// long its rest takes at it and whether it will miss its deadline.
pub fn line(v: &BatchView, now: Millis, rate: Option<f64>) -> String {
    let r = &v.record;
    let c = &v.counts;
    let finished = c.total() - c.active();
    let mut out = format!(
        "{:<12} {:<11} {finished}/{} done",
        r.id.to_string(),
        v.status().as_str(),
        c.total()
    );
    if c.dead + c.expired > 0 {
        out += &format!(", {} failed", c.dead + c.expired);
    }
    if let Some(eta) = rate
        .filter(|_| c.active() > 0)
        .and_then(|x| v.tokens.eta_ms(x))
    {
        out += &format!(", ~{} left", human_duration(eta));
    }
    if let Some(name) = &r.spec.name {
        out += &format!("  {}", crate::job::printable(name));
    }
    if let Some(d) = r.spec.deadline {
        out += &format!("  {}", deadline(d, now, v.late(now)));
        if !v.late(now) && rate.is_some_and(|x| v.will_miss(now, x)) {
            out += ", will miss it";
        }
    }
    out
}

fn deadline(d: Millis, now: Millis, late: bool) -> String {
    if late {
        format!("deadline {} passed {} ago", utc(d), human_duration(now - d))
    } else if d > now {
        format!("by {} (in {})", utc(d), human_duration(d - now))
    } else {
        format!("deadline {}", utc(d))
    }
}

pub fn run(ctx: &Ctx, c: BatchCommand) -> Result<i32> {
    match c {
        BatchCommand::Show { id, json } => show(ctx, parse_id(&id)?, json),
    }
}

fn show(ctx: &Ctx, id: BatchId, json: bool) -> Result<i32> {
    let v = require(ctx, id)?;
    let now = crate::now_ms();
    if json {
        println!("{}", serde_json::to_string_pretty(&batch_json(&v, now))?);
        return Ok(0);
    }
    let r = &v.record;
    println!("{}", r.id);
    println!("  status:   {}", v.status());
    if let Some(name) = &r.spec.name {
        println!("  name:     {name}");
    }
    println!("  source:   {}", r.spec.source);
    println!("  created:  {}", utc(r.created));
    if let Some(d) = r.spec.deadline {
        println!("  deadline: {}", deadline(d, now, v.late(now)));
    }
    for (k, val) in &r.spec.metadata {
        println!(
            "  meta:     {}={}",
            crate::job::printable(k),
            crate::job::printable(val)
        );
    }
    let parts: Vec<String> = StateKind::ALL
        .iter()
        .filter(|k| v.counts.get(**k) > 0)
        .map(|k| format!("{} {k}", v.counts.get(*k)))
        .collect();
    println!(
        "  jobs:     {} ({} in all)",
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        },
        v.counts.total()
    );
    let rc = v.request_counts();
    println!(
        "  requests: {} completed, {} failed, of {}",
        rc.completed, rc.failed, rc.total
    );
    if let Some(at) = r.cancel_requested {
        println!("  cancel:   asked {}", utc(at));
    }
    println!("  results:  qwen3q results --batch {}", r.id);
    Ok(0)
}
