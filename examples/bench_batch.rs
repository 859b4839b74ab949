//! Benchmark: the worker's continuous batching against llama.cpp's own `llama-batched-bench`,
//! built by `scripts/build-anchors.sh` from the llama.cpp sources llama-cpp-sys-2 vendors (the
//! worker's own llama.cpp), on gemma, at B = 1, 2, 4, 8.
//!
//! cargo build --release --bins && cargo run --release --example bench_batch -- [DOCS] [RUNS] [TG] [B,B,…] [KERNELS,…]
//!
//! Each B, run and kernels (`batch-invariant`, `fastest`; both by default): a fresh home;
//! `qwen3q enqueue` of DOCS documents (not timed); then
//! `qwen3q worker --drain --parallel B --kernels KERNELS`. The worker's time runs from the first claim to the last result
//! (`started_ms`/`finished_ms` in the results) less the one-time model load and context
//! creation (from its log): queue, store writes and checkpoints are all inside. The anchor is
//! `llama-batched-bench -npl B,B,…` (DOCS/B waves of B sequences of the worker's mean prompt
//! and answer lengths, one process, its load left out as the tool leaves it out) with the same
//! context (`-c` n_ctx×B, one KV stream per sequence, `-b`/`-ub` 512, the worker's threads) and
//! llama.cpp's default kernels, run right before and right after the workers; the two are
//! averaged. Reports total tokens/s (prompt tokens decoded + generated: prompt tokens the worker
//! reused from a slot's cells are left out of its count and of the tool's prompts) of both and the ratio worker/tool per
//! B and kernels, and batch-invariant ÷ fastest (each a median over runs of ratios within a
//! run), the time
//! from worker start to its first generated token, and the worker's peak RSS beyond the model
//! file and the KV cache.

mod support;
use std::path::Path;
use std::process::Command;
use support::{bin, doc, measured_drain, median, model, now_ms, run_ok};

use qwen3q::engine::gguf;

const N_CTX: u32 = 1024;

struct WorkerRun {
    tokens: u64,
    mean_pp: f64,
    mean_tg: f64,
    secs: f64,
    peak_rss: u64,
}

fn worker_run(bin: &Path, model: &Path, n: usize, tg: u32, b: u32, kernels: &str) -> WorkerRun {
    let dir = tempfile::Builder::new()
        .prefix("q3b")
        .tempdir_in("/tmp")
        .unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..n {
        std::fs::write(docs.join(format!("doc{i:03}.txt")), doc(i)).unwrap();
    }
    let home = dir.path().join("home");
    let tg_s = tg.to_string();
    run_ok(
        bin,
        &home,
        &[
            "enqueue",
            docs.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-tokens",
            &tg_s,
            "--temperature",
            "0",
        ],
    );
    let (peak_rss, load_ms) = measured_drain(bin, &home, N_CTX, b, kernels);
    let (results, span_ms) = support::succeeded_results(bin, &home);
    // The prompt tokens decoded: those reused from a slot's cells (the shared instruction) are
    // left out here and, through the mean, from the tool's prompts: equal work.
    let pp = support::total(&results, &["usage", "prompt_tokens"])
        - support::total(
            &results,
            &["usage", "prompt_tokens_details", "cached_tokens"],
        );
    let gen = support::total(&results, &["usage", "completion_tokens"]);
    WorkerRun {
        tokens: pp + gen,
        mean_pp: pp as f64 / n as f64,
        mean_tg: gen as f64 / n as f64,
        secs: span_ms.saturating_sub(load_ms) as f64 / 1000.0,
        peak_rss,
    }
}

/// Spawn → the result of a one-token job: the time to the first generated token, with process
/// start, store open, model load and prefill inside.
fn first_token_ms(bin: &Path, model: &Path) -> u64 {
    let dir = tempfile::Builder::new()
        .prefix("q3f")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().join("d.txt");
    std::fs::write(&d, doc(0)).unwrap();
    let home = dir.path().join("home");
    let q = |args: &[&str]| run_ok(bin, &home, args);
    q(&[
        "enqueue",
        d.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--max-tokens",
        "1",
    ]);
    let spawned = now_ms();
    q(&["worker", "--drain"]);
    let out = q(&["results", "--jsonl"]);
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    v["timings"]["finished_ms"].as_u64().unwrap() - spawned
}

/// The tool's tokens/s over `waves` waves of B sequences of `pp` prompt and `tg` generated
/// tokens.
fn tool_tps(tool: &Path, model: &Path, b: u32, waves: usize, pp: u32, tg: u32) -> f64 {
    let npl = vec![b.to_string(); waves].join(",");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let mut cmd = Command::new(tool);
    cmd.args(["-m", model.to_str().unwrap()])
        .args(["-c", &(N_CTX * b).to_string(), "-b", "512", "-ub", "512"])
        .args([
            "-npp",
            &pp.to_string(),
            "-ntg",
            &tg.to_string(),
            "-npl",
            &npl,
        ])
        .args(["-t", &threads, "-tb", &threads, "--output-format", "jsonl"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut tokens, mut secs) = (0f64, 0f64);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines().filter(|l| l.starts_with("{\"n_kv_max\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["t"].as_f64().unwrap();
        tokens += v["speed"].as_f64().unwrap() * t;
        secs += t;
    }
    assert!(secs > 0.0, "no rows from llama-batched-bench: {text}");
    tokens / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let tg: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let bs: Vec<u32> = args
        .get(4)
        .map(|s| s.split(',').map(|b| b.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8]);
    let kernels: Vec<&str> = args
        .get(5)
        .map(|s| s.split(',').collect())
        .unwrap_or_else(|| vec!["batch-invariant", "fastest"]);
    let bin = bin();
    // `llama-batched-bench` from the crate's own llama.cpp.
    let tool = support::anchor("llama-batched-bench-crate", "QWEN3Q_BATCHED_BENCH");
    let model = model("gemma-3-270m-q4_k_m.gguf");
    let facts = gguf::inspect(&model)
        .unwrap()
        .facts(std::fs::metadata(&model).unwrap().len());
    println!("gemma-3-270m Q4_K_M, {n} docs, up to {tg} generated tokens each, n_ctx {N_CTX} per sequence, {runs} runs");
    println!("anchor: {}", tool.display());
    println!("| B | kernels | worker tok/s | tool tok/s | worker/tool | ÷ {} | mean prompt | mean answer | worker peak RSS | RSS beyond model+KV |", kernels[kernels.len() - 1]);
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &b in &bs {
        // Per kernels: worker tok/s, worker/tool and ÷ the last kernels' worker, all per run.
        let mut ws = vec![Vec::new(); kernels.len()];
        let mut ratios = vec![Vec::new(); kernels.len()];
        let mut costs = vec![Vec::new(); kernels.len()];
        let mut rss = vec![Vec::new(); kernels.len()];
        let mut rs = Vec::new();
        let (mut mpp, mut mtg) = (0.0f64, 0.0f64);
        let waves = n.div_ceil(b as usize);
        for run in 0..runs {
            // The tool runs right before and right after the workers (the same shapes: the
            // worker's mean lengths from its previous run, or a first guess), and the two
            // are averaged: this machine's speed drifts within a minute.
            let (pp0, tg0) = if mpp > 0.0 {
                (mpp.round() as u32, mtg.round() as u32)
            } else {
                (151, tg)
            };
            let before = tool_tps(&tool, &model, b, waves, pp0, tg0);
            // Every other run in the reverse order, so that neither kernels always goes first.
            let mut runs: Vec<Option<WorkerRun>> = kernels.iter().map(|_| None).collect();
            let mut order: Vec<usize> = (0..kernels.len()).collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for i in order {
                runs[i] = Some(worker_run(&bin, &model, n, tg, b, kernels[i]));
            }
            let runs: Vec<WorkerRun> = runs.into_iter().map(Option::unwrap).collect();
            let last = &runs[runs.len() - 1];
            let (pp, tgm) = (last.mean_pp.round() as u32, last.mean_tg.round() as u32);
            let after = tool_tps(&tool, &model, b, waves, pp, tgm);
            let tool_rate = (before + after) / 2.0;
            let last_tps = last.tokens as f64 / last.secs;
            for (i, w) in runs.iter().enumerate() {
                let worker_tps = w.tokens as f64 / w.secs;
                eprintln!(
                    "B={b} {}: worker {worker_tps:.1} tok/s ({} tokens in {:.2} s), tool {before:.1} before / {after:.1} after, ratio {:.3}",
                    kernels[i],
                    w.tokens,
                    w.secs,
                    worker_tps / tool_rate
                );
                ws[i].push(worker_tps);
                ratios[i].push(worker_tps / tool_rate);
                costs[i].push(worker_tps / last_tps);
                rss[i].push(w.peak_rss as f64);
            }
            rs.push(tool_rate);
            mpp = last.mean_pp;
            mtg = last.mean_tg;
        }
        let kv = facts.kv_cache_bytes(N_CTX as u64, 512, b as u64);
        let tool_rate = median(rs);
        for (i, k) in kernels.iter().enumerate() {
            let peak = median(rss[i].clone());
            println!(
                "| {b} | {k} | {:.0} | {tool_rate:.0} | {:.3} | {:.3} | {mpp:.0} | {mtg:.0} | {:.0} MiB | {:.0} MiB |",
                median(ws[i].clone()),
                median(ratios[i].clone()),
                median(costs[i].clone()),
                peak / 1048576.0,
                (peak - facts.file_bytes as f64 - kv as f64) / 1048576.0
            );
        }
    }
    let ttft: Vec<f64> = (0..runs)
        .map(|_| first_token_ms(&bin, &model) as f64)
        .collect();
    println!(
        "time from worker start to first generated token: {:.0} ms (median of {runs})",
        median(ttft)
    );
}
