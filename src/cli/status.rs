//! `qwen3q status`: counts per state, the worker and what it runs.

use anyhow::Result;

use super::output::{ago, human_bytes, human_duration};
use super::{code, fail, Ctx};
use crate::job::StateKind;
use crate::protocol::{Request, Response};

pub fn run(ctx: &Ctx, json: bool) -> Result<i32> {
    let report = match ctx.call(Request::Status)? {
        Response::Status(r) => r,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let now = crate::now_ms();
    match &report.worker {
        Some(w) => {
            println!(
                "worker:  running (pid {}, up {})",
                w.pid,
                human_duration(now.saturating_sub(w.started))
            );
            for m in &w.models {
                let role = if m.current {
                    "in use".to_string()
                } else {
                    format!("idle, last used {}", ago(m.last_used, now))
                };
                let pin = if m.pinned { ", pinned" } else { "" };
                println!(
                    "model:   {} ({}, {role}{pin})",
                    m.name,
                    human_bytes(m.bytes)
                );
            }
            if w.parallel > 0 {
                println!(
                    "batch:   {} of {} sequences in flight",
                    w.in_flight, w.parallel
                );
            }
            for c in &w.running {
                let progress = if c.chunks_total > 0 {
                    format!(
                        ", chunk {}/{}",
                        c.chunks_done.min(c.chunks_total),
                        c.chunks_total
                    )
                } else {
                    String::new()
                };
                println!(
                    "running: #{} {} (started {}{progress})",
                    c.id,
                    crate::job::printable(&c.custom_id),
                    ago(c.started, now)
                );
            }
            for c in &w.chats {
                println!(
                    "chat:    on {} for {}{}",
                    crate::job::printable(&c.model),
                    human_duration(c.age_ms),
                    if c.streaming { ", streaming" } else { "" }
                );
            }
            if let (true, Some(why)) = (w.running.is_empty(), &w.waiting) {
                println!("waiting: {why}");
            }
            if let Some(wait) = &w.memory_wait {
                println!("memory:  {} ({})", wait.why, ago(wait.at, now));
            }
            if let Some((at, step)) = w.sheds.last() {
                println!(
                    "shed:    {} under critical memory pressure ({}; {} in all)",
                    serde_json::to_value(step)?.as_str().unwrap_or("?"),
                    ago(*at, now),
                    w.sheds.len()
                );
            }
            if w.keep_awake {
                println!("power:   keeping the machine awake while jobs run");
            }
            if w.on_battery == Some(true) {
                println!("power:   on battery");
            }
            println!("done:    {} jobs since start", w.finished);
            if w.chats_served > 0 || w.preempted > 0 {
                println!(
                    "chats:   {} answered since start ({} batch sequences gave their slot and started again; {} batch steps stopped for a chat and decoded again)",
                    w.chats_served, w.preempted, w.steps_stopped
                );
            }
        }
        None => println!("worker:  not running"),
    }
    let parts: Vec<String> = StateKind::ALL
        .iter()
        .map(|k| format!("{} {}", report.counts.get(*k), k))
        .collect();
    println!(
        "jobs:    {} ({} in all)",
        parts.join(", "),
        report.counts.total()
    );
    if let Some(due) = report.next_due {
        let when = if due > now {
            format!("in {}", human_duration(due - now))
        } else {
            "now".into()
        };
        println!("next:    a delayed job is due {when}");
    }
    for v in &report.open_batches {
        println!(
            "batch:   {}",
            super::batches::line(v, now, report.tokens_per_sec)
        );
    }
    let more = report
        .open_batch_count
        .saturating_sub(report.open_batches.len() as u64);
    if more > 0 {
        println!("batches: {more} more open (qwen3q batches)");
    }
    if let (Some(rate), false) = (report.tokens_per_sec, report.open_batches.is_empty()) {
        println!("rate:    {rate:.0} tokens/s generated over the last 10 minutes of work");
    }
    if report.paused {
        println!("paused:  yes (qwen3q resume)");
    }
    if report.quarantined > 0 {
        println!(
            "damaged: {} jobs quarantined (their stored values did not decode; dead, bytes kept)",
            report.quarantined
        );
    }
    println!(
        "store:   {} ({})",
        report.store_path,
        human_bytes(report.store_bytes)
    );
    Ok(0)
}
