//! `qwen3q memory`: the reading now (this process's own probe), the trend over a window from
//! the worker's history, a sparkline, and advice.

use anyhow::Result;

use super::args::MemoryArgs;
use super::output::human_bytes;
use super::{code, fail, millis, parse_duration, Ctx};
use crate::monitor::history::{
    recommendations, sparkline, trend, wait_advice, waits_by_model, Sample,
};
use crate::monitor::{system::SystemProbe, MemoryProbe};
use crate::protocol::{Request, Response};
use crate::scheduler::admission::{pressure, Budget};

/// One line for each model that waited for memory in the window (a minute or more), with a
/// variant that would have fit the memory typically free.
fn wait_advices(ctx: &Ctx, samples: &[Sample], budget: &Budget) -> Result<Vec<String>> {
    // Minute averages are 60 s apart: a longer gap is time the worker was not running.
    let waits = waits_by_model(samples, 120_000);
    if waits.iter().all(|w| w.1 < 60_000) {
        return Ok(Vec::new());
    }
    let registry = match ctx.call(Request::ModelList)? {
        Response::Models(m) => m,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    let mut free: Vec<u64> = samples.iter().map(|s| s.available).collect();
    free.sort_unstable();
    let typical = free[free.len() / 2].saturating_sub(budget.reserve);
    Ok(waits
        .iter()
        .filter(|w| w.1 >= 60_000)
        .map(|(model, ms)| wait_advice(model, *ms, &registry, typical))
        .collect())
}

pub fn run(ctx: &Ctx, a: MemoryArgs) -> Result<i32> {
    let window = parse_duration(&a.window)?;
    let now = crate::now_ms();
    let snap = SystemProbe::new(None).sample(now);
    let budget = ctx.budget(snap.effective_total());
    let since = now.saturating_sub(millis(window));
    let samples = match ctx.call(Request::MemoryHistory { since })? {
        Response::History(s) => s,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    if let Some(path) = &a.plot {
        return plot(&samples, path);
    }
    let level = pressure(&snap, &budget);
    let t = trend(&samples);
    let used: Vec<f64> = samples.iter().map(|s| s.used_percent).collect();
    let spark = sparkline(&used, 60);
    let mut advice = match (&t, samples.last()) {
        (Some(t), Some(latest)) => {
            recommendations(t, latest, budget.warn_percent, budget.critical_percent)
        }
        _ => Vec::new(),
    };
    advice.extend(wait_advices(ctx, &samples, &budget)?);
    if a.json {
        let v = serde_json::json!({
            "current": snap,
            "pressure": level,
            "reserve": budget.reserve,
            "window_ms": millis(window),
            "samples": samples.len(),
            "trend": t,
            "sparkline": spark,
            "latest": samples.last(),
            // At most 300 samples, evenly spaced: enough to plot or to see B adapt.
            "series": samples
                .iter()
                .step_by(samples.len().div_ceil(300).max(1))
                .map(|s| serde_json::json!({
                    "at": s.at,
                    "used_percent": s.used_percent,
                    "available": s.available,
                    "process_rss": s.process_rss,
                    "models": s.models,
                    "batch": s.batch,
                    "tokens_per_sec": s.tokens_per_sec,
                    "waiting_for": s.waiting_for,
                    "sheds": s.sheds,
                }))
                .collect::<Vec<_>>(),
            "waits": waits_by_model(&samples, 120_000)
                .into_iter()
                .map(|(model, ms)| serde_json::json!({"model": model, "waited_ms": ms}))
                .collect::<Vec<_>>(),
            "recommendations": advice,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let total = snap.effective_total();
    let avail = snap.effective_available();
    println!(
        "now:      {} of {} in use ({:.0} %), {} available, pressure {level:?}",
        human_bytes(total.saturating_sub(avail)),
        human_bytes(total),
        snap.used_percent(),
        human_bytes(avail)
    );
    if let Some(cg) = snap.cgroup {
        println!(
            "cgroup:   {} limit {}, in use {} (charged {}, less {} of inactive file cache)",
            cg.version,
            human_bytes(cg.limit),
            human_bytes(cg.working_set()),
            human_bytes(cg.usage),
            human_bytes(cg.inactive_file)
        );
    }
    if let Some(p) = snap.free_percent {
        println!("macOS:    {p} % free (kern.memorystatus_level)");
    }
    println!(
        "reserve:  {} kept for the system",
        human_bytes(budget.reserve)
    );
    match &t {
        None => println!(
            "history:  none in the last {} (the worker records it while it runs)",
            a.window
        ),
        Some(t) => {
            println!(
                "trend:    last {}, {} samples: average {:.0} %, peak {:.0} %, minimum {:.0} %, now {:.0} % — {:?}",
                a.window, t.samples, t.average, t.peak, t.minimum, t.current, t.direction
            );
            println!("          {spark}");
        }
    }
    if let Some(s) = samples.last() {
        let models: Vec<String> = s
            .models
            .iter()
            .map(|(n, b)| format!("{n} {}", human_bytes(*b)))
            .collect();
        println!(
            "worker:   B={}, {:.1} tok/s, {} queued, RSS {}{}",
            s.batch,
            s.tokens_per_sec,
            s.queue_depth,
            human_bytes(s.process_rss),
            if models.is_empty() {
                String::new()
            } else {
                format!(", models: {}", models.join(", "))
            }
        );
    }
    for r in &advice {
        println!("advice:   {r}");
    }
    Ok(0)
}

/// `--plot FILE.svg|FILE.png`: the window's samples, with the gate's waits and the sheds the
/// history recorded.
fn plot(samples: &[crate::monitor::history::Sample], path: &std::path::Path) -> Result<i32> {
    if crate::monitor::plot::Format::of(path).is_none() {
        return fail(
            code::BAD_INPUT,
            format!("{}: name the plot file .svg or .png", path.display()),
        );
    }
    match crate::monitor::plot::draw(samples, path) {
        Ok(()) => {
            println!("wrote {} ({} samples)", path.display(), samples.len());
            Ok(0)
        }
        Err(e) => fail(code::NOT_FOUND, e),
    }
}
