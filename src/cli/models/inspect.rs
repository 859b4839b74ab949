//! `qwen3q models inspect`: what a GGUF holds, read from its header, and the memory it needs:
//! predicted from the header, and measured where the worker has loaded it.

use std::path::PathBuf;

use anyhow::Result;

use super::super::output::human_bytes;
use super::super::{code, fail, Ctx};
use crate::engine::gguf;
use crate::protocol::{Request, Response};

pub fn run(
    ctx: &Ctx,
    model: &str,
    n_ctx: Option<u32>,
    parallel: &[u32],
    json: bool,
) -> Result<i32> {
    let path = match ctx.config.models.get(model) {
        Some(entry) => entry.path.clone(),
        None => match ctx.registered(model) {
            Some(entry) if !model.contains('/') => entry.path,
            _ => PathBuf::from(model),
        },
    };
    if !path.is_file() {
        return fail(
            code::BAD_INPUT,
            format!("model file not found: {}", path.display()),
        );
    }
    let header = match gguf::inspect(&path) {
        Ok(h) => h,
        Err(e) => {
            return fail(
                code::BAD_INPUT,
                format!("{} is not a usable GGUF model: {e}", path.display()),
            )
        }
    };
    let file_bytes = std::fs::metadata(&path)?.len();
    let facts = header.facts(file_bytes);
    // Predicted memory for a few context shapes (as the worker runs: n_ubatch 512,
    // flash attention) and for every shape the worker measured.
    let graph = crate::engine::memory::Graph::default();
    let canonical = path.canonicalize()?.display().to_string();
    let measured = match ctx.call(Request::ModelMemory(canonical.clone()))? {
        Response::Memory(m) => m,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    let calibrations = match ctx.call(Request::Calibrations(canonical))? {
        Response::Calibrations(c) => c,
        other => return fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    };
    let trained = facts.context_length.unwrap_or(4096).max(1);
    let mut shapes: Vec<(u64, u64)> = Vec::new();
    let contexts = match n_ctx {
        Some(n) => vec![n.max(1) as u64],
        None => vec![2048, 4096, 8192, 32768],
    };
    let sequences: Vec<u64> = if parallel.is_empty() {
        vec![1, 4, 8]
    } else {
        parallel.iter().map(|&n| n.max(1) as u64).collect()
    };
    for &n_ctx in &contexts {
        for &n_seq in &sequences {
            shapes.push((n_ctx.min(trained), n_seq));
        }
    }
    if n_ctx.is_none() && parallel.is_empty() {
        shapes.extend(measured.iter().map(|m| (m.n_ctx as u64, m.n_seq as u64)));
    }
    shapes.sort();
    shapes.dedup();
    let predictions: Vec<_> = shapes
        .iter()
        .map(|&(n_ctx, n_seq)| {
            let m = measured
                .iter()
                .find(|m| (m.n_ctx as u64, m.n_seq as u64) == (n_ctx, n_seq));
            (n_ctx, n_seq, facts.predict(n_ctx, n_seq, graph), m)
        })
        .collect();
    if json {
        let mut v = serde_json::to_value(&facts)?;
        v["path"] = serde_json::json!(path.display().to_string());
        v["memory"] = predictions
            .iter()
            .map(|(n_ctx, n_seq, p, m)| {
                serde_json::json!({
                    "n_ctx": n_ctx,
                    "n_seq": n_seq,
                    "predicted": {
                        "weights": p.weights,
                        "kv_cache": p.kv_cache,
                        "compute": p.compute,
                        "total": p.total(),
                    },
                    "measured": m.map(|m| serde_json::json!({
                        "weights": m.weights,
                        "context_allocated": m.context_allocated,
                        "context_resident": m.context_resident,
                        "total": m.total(),
                        "at": m.at,
                    })),
                })
            })
            .collect();
        v["calibrations"] = calibrations
            .iter()
            .map(|c| {
                serde_json::json!({
                    "n_ctx": c.n_ctx,
                    "points": c.points,
                    "knee": c.knee(),
                    "at": c.at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    println!("model:         {}", path.display());
    if let Some(name) = &facts.name {
        println!("name:          {name}");
    }
    println!("architecture:  {}", facts.architecture);
    println!(
        "parameters:    {:.2} B ({})",
        facts.parameters as f64 / 1e9,
        facts.parameters
    );
    println!("quantization:  {}", facts.quantization);
    println!("file:          {}", human_bytes(facts.file_bytes));
    println!("weights:       {}", human_bytes(facts.weight_bytes));
    println!("layers:        {}", opt(facts.layers));
    println!(
        "heads:         {} (KV heads {}, head size {})",
        opt(facts.heads),
        opt(facts.kv_heads),
        opt(facts.head_size)
    );
    println!(
        "context:       {} tokens (trained)",
        opt(facts.context_length)
    );
    if let Some(w) = facts.sliding_window {
        println!("sliding window: {w} tokens on some layers");
    }
    println!("vocabulary:    {}", opt(facts.vocab_size));
    println!(
        "chat template: {}",
        if facts.chat_template {
            "yes"
        } else {
            "no (a built-in one is used; see --template)"
        }
    );
    println!(
        "\nmemory (n_ubatch {}, flash attention {}; n_ctx per sequence; measured = weights + what the context allocated):",
        graph.n_ubatch,
        if graph.flash_attn { "on" } else { "off" }
    );
    println!(
        "{:>7} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "n_ctx", "n_seq", "weights", "KV cache", "compute", "predicted", "measured", "diff"
    );
    for (n_ctx, n_seq, p, m) in &predictions {
        let (measured, diff) = match m {
            Some(m) => (
                human_bytes(m.total()),
                format!(
                    "{:+.1}%",
                    (p.total() as f64 - m.total() as f64) / m.total() as f64 * 100.0
                ),
            ),
            None => ("-".into(), String::new()),
        };
        println!(
            "{n_ctx:>7} {n_seq:>5} {:>10} {:>10} {:>10} {:>10} {measured:>10} {diff:>7}",
            human_bytes(p.weights),
            human_bytes(p.kv_cache),
            human_bytes(p.compute),
            human_bytes(p.total())
        );
    }
    for c in &calibrations {
        let curve: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("B={} {:.0} tok/s", p.n_seq, p.tokens_per_sec))
            .collect();
        println!(
            "\ncalibrated at n_ctx {}: {}; knee B={}",
            c.n_ctx,
            curve.join(", "),
            c.knee().map_or("?".into(), |k| k.to_string())
        );
    }
    Ok(0)
}
