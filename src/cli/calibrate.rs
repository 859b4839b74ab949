//! `qwen3q calibrate MODEL`: sweep B on the model here, in this process, through the same
//! engine the worker uses, each load through the memory gate; store the curve (through the
//! worker when it runs, else in the store) for the adaptive batch size to start at its knee.

use anyhow::Result;

use super::args::CalibrateArgs;
use super::output::human_bytes;
use super::{code, fail, Coded, Ctx};
use crate::engine::calibrate::{batch_sizes, sweep, SweepSettings};
use crate::engine::{gguf, Shape};
use crate::monitor::{system::SystemProbe, MemoryProbe};
use crate::protocol::{Request, Response};
use crate::scheduler::admission::{admit_shares, Need};

pub fn run(ctx: &Ctx, a: CalibrateArgs) -> Result<i32> {
    let model = ctx
        .config
        .resolve_model(
            Some(&a.model),
            None,
            &ctx.home.config(),
            &|n| ctx.registered(n),
            &ctx.checked(),
        )
        .map_err(|e| Coded(code::BAD_INPUT, e.to_string()))?;
    if let Response::Status(s) = ctx.call(Request::Status)? {
        if s.worker.is_some_and(|w| !w.running.is_empty()) {
            eprintln!(
                "qwen3q: the worker is running jobs: the sweep competes with them for the CPU and memory, so its figures will be low"
            );
        }
    }
    let parallel = ctx.config.parallel.max(1);
    let settings = SweepSettings {
        n_ctx: a.n_ctx.unwrap_or(ctx.config.n_ctx),
        batch_sizes: batch_sizes(a.max_parallel.unwrap_or(parallel.max(8))),
        max_tokens: a.max_tokens.max(1),
    };
    let (mut engine, _) = super::worker::engine(ctx, a.threads, None)?;
    let graph = engine.graph();
    // The worker's gate: what each shape is predicted to add must fit in free memory beyond
    // the reserve and within the budget's shares (once loaded, only the context is new).
    let facts = gguf::facts_of(std::path::Path::new(&model.path))
        .map_err(|e| Coded(code::BAD_INPUT, format!("{}: {e}", model.path)))?;
    let mut probe = SystemProbe::new(None);
    let mut gate = |shape: Shape, loaded: bool| {
        let p = facts.predict(shape.n_ctx as u64, shape.n_seq as u64, graph);
        let need = Need {
            weights: if loaded { 0 } else { p.weights },
            context: p.total() - p.weights,
            n_seq: shape.n_seq,
        };
        let snap = probe.sample(crate::now_ms());
        admit_shares(&snap, need, 0, &ctx.budget(snap.effective_total())).map_err(|r| r.to_string())
    };
    if !a.json {
        println!(
            "calibrating {} at n_ctx {} per sequence, B = {:?}, {} tokens per sequence",
            model.name, settings.n_ctx, settings.batch_sizes, settings.max_tokens
        );
    }
    let json = a.json;
    let result = sweep(
        engine.as_mut(),
        &model,
        &settings,
        crate::now_ms(),
        &mut gate,
        &mut |p| {
            if !json {
                println!(
                    "  B={:<3} {:>8.1} tok/s   {}",
                    p.n_seq,
                    p.tokens_per_sec,
                    human_bytes(p.memory)
                );
            }
        },
    );
    let s = match result {
        Ok(s) => s,
        Err(e) if e.is_memory() => {
            return fail(code::FAILURE, format!("cannot calibrate now: {e}"))
        }
        Err(e) => return fail(code::BAD_INPUT, format!("{}: {e}", model.name)),
    };
    let knee = s.calibration.knee();
    match ctx.call(Request::RecordCalibration {
        path: model.path.clone(),
        calibration: s.calibration.clone(),
        memory: s.memory.clone(),
    })? {
        Response::Done => {}
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    }
    if a.json {
        let v = serde_json::json!({
            "model": model.name,
            "path": model.path,
            "n_ctx": s.calibration.n_ctx,
            "points": s.calibration.points,
            "knee": knee,
            "stopped": s.stopped.as_ref().map(|(b, e)| serde_json::json!({
                "n_seq": b, "reason": e.to_string(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if let Some((b, e)) = &s.stopped {
        println!("  B={b}: stopped, {e}");
    }
    if let Some(k) = knee {
        println!(
            "knee: B={k} (the smallest B within 10 % of the best); worker --adaptive starts there"
        );
        if k > parallel {
            println!(
                "note: parallel is {parallel} in the config; the knee is above it, so raising parallel to {k} would pay"
            );
        }
    }
    Ok(0)
}
