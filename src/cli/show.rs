//! `qwen3q show`: everything about jobs, their history included.

use anyhow::Result;

use super::output::{error_of, job_json};
use super::{code, fail, Ctx};
use crate::protocol::{Request, Response, Selector};

pub fn run(ctx: &Ctx, jobs: &[String], json: bool) -> Result<i32> {
    let selectors: Vec<Selector> = jobs.iter().map(|s| Selector::parse(s)).collect();
    let (views, missing) = match ctx.call(Request::Show(selectors))? {
        Response::Views { views, missing } => (views, missing),
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    if json {
        let out: Vec<_> = views
            .iter()
            .map(|v| {
                let mut j = job_json(v);
                j["events"] = serde_json::to_value(&v.events).unwrap_or_default();
                j["crashes"] = serde_json::to_value(&v.crash).unwrap_or_default();
                j["ahead"] = serde_json::to_value(v.ahead).unwrap_or_default();
                j
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for v in &views {
            let j = &v.job;
            println!("job #{} {}", j.id, crate::job::printable(&j.spec.custom_id));
            println!("  state:    {}", j.state.kind());
            if let Some(n) = v.ahead {
                println!("  position: {n} ready jobs ahead of it");
            }
            if let Some(e) = error_of(&j.state) {
                println!("  error:    {e}");
            }
            println!("  source:   {}", j.spec.source);
            if let Some(b) = j.batch {
                println!("  batch:    {b}");
            }
            println!(
                "  task:     {}",
                serde_json::to_string(&super::output::task_json(&j.spec.task))?
            );
            println!("  model:    {} ({})", j.spec.model.name, j.spec.model.path);
            println!(
                "  document: {} bytes, sha256 {}",
                j.spec.doc_bytes, j.spec.doc_sha256
            );
            println!("  attempts: {} of {}", j.attempts, j.spec.max_attempts);
            if let Some(c) = &v.crash {
                println!(
                    "  crashes:  {} charged (the worker crashed while it ran alone); last: {}{}",
                    c.charged,
                    c.last_signal,
                    if c.suspect { "; runs alone next" } else { "" }
                );
            }
            if let Some(r) = &v.result {
                println!(
                    "  usage:    {} prompt + {} generated tokens, {} chunks, {} ms generating",
                    r.usage.prompt_tokens, r.usage.completion_tokens, r.chunks, r.generation_millis
                );
                if let Some(p) = &r.provenance {
                    println!(
                        "  ran on:   {} (template {}), {} kernels, {}",
                        p.model,
                        p.template,
                        p.kernels.as_str(),
                        p.engine
                    );
                }
                if let Some(reasoning) = &r.reasoning {
                    println!("  reasoning:\n    {}", reasoning.replace('\n', "\n    "));
                }
                println!("  answer:\n    {}", r.answer.replace('\n', "\n    "));
            }
            println!("  events:");
            for e in &v.events {
                let from = e.from.map(|f| f.as_str()).unwrap_or("-");
                println!(
                    "    {}  {from:>9} -> {:<9}  {}",
                    super::output::utc(e.at),
                    e.to.as_str(),
                    e.reason
                );
            }
        }
    }
    for m in &missing {
        eprintln!("qwen3q: no job {m}");
    }
    Ok(if missing.is_empty() {
        0
    } else {
        code::NOT_FOUND
    })
}
