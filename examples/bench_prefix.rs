//! Benchmark: shared prefixes decoded once (issue 10 §2). DOCS documents of ~200 tokens, each
//! behind an instruction of ~300 tokens, answered with up to TG tokens, B sequences at a time,
//! on gemma:
//!
//! - `shared`: the worker, one instruction for all documents (its cells are reused);
//! - `distinct`: the worker, an instruction of the same length that differs per document (from
//!   its first word, so nothing is reused);
//! - `llama-server`: the same prompts as `shared`, as chat requests to llama.cpp's server
//!   (`-np B`, `cache_prompt` on, its default; `--swa-full`, without which it reuses nothing of
//!   gemma's prompts), B requests in flight at a time.
//!
//! cargo build --release --bins && cargo run --release --example bench_prefix -- [DOCS] [RUNS] [TG] [B] [KERNELS]
//!
//! The worker's time runs from its first claim to its last result less the one-time model load
//! and context creation (as in `bench_batch`); the server's from the first request sent to the
//! last answer received, after a warm-up request (its load is left out too). Reports the median
//! of RUNS of each, the ratios within each run (distinct ÷ shared, server ÷ shared), the mean
//! prompt and cached tokens. The server is `QWEN3Q_LLAMA_SERVER`, else the one
//! `scripts/build-anchors.sh` builds from the llama-cpp-python 0.3.36 sdist's llama.cpp (of the
//! same weeks as the worker's, built -O3 as the worker's is: BENCHMARKS.md compares the two
//! builds at equal work).

mod support;
use std::path::Path;
use std::time::Instant;
use support::{bin, measured_drain, median, model, post, run_ok};

const N_CTX: u32 = 1024;

/// Words of a made-up report: `seed` picks their order.
fn words(seed: usize, n: usize) -> String {
    const W: [&str; 24] = [
        "river", "harbor", "lantern", "orchard", "signal", "granite", "meadow", "copper", "winter",
        "ledger", "violet", "engine", "market", "thunder", "garden", "compass", "station",
        "quarry", "beacon", "timber", "canal", "furnace", "glacier", "archive",
    ];
    let mut x = seed as u64 * 2_654_435_761 + 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push(W[(x >> 33) as usize % W.len()]);
    }
    out.join(" ")
}

/// The instruction (~300 tokens) for document `i`: the same for all when `shared`.
fn instruction(shared: bool, i: usize) -> String {
    let seed = if shared { 0 } else { 1000 + i };
    format!(
        "{}. Read the field report that follows and answer in one sentence: which place is it about, and what happened there?",
        words(seed, 230)
    )
}

/// Document `i` (~200 tokens).
fn document(i: usize) -> String {
    format!("Field report {i}: {}.", words(i + 1, 160))
}

struct Run {
    secs: f64,
    prompt: f64,
    cached: f64,
}

fn worker_run(
    bin: &Path,
    model: &Path,
    n: usize,
    tg: u32,
    b: u32,
    kernels: &str,
    shared: bool,
) -> Run {
    let dir = tempfile::Builder::new()
        .prefix("q3p")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().join("home");
    let q = |args: &[&str]| run_ok(bin, &home, args);
    for i in 0..n {
        let doc = dir.path().join(format!("r{i:03}.txt"));
        std::fs::write(&doc, document(i)).unwrap();
        q(&[
            "enqueue",
            doc.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            &instruction(shared, i),
            "--max-tokens",
            &tg.to_string(),
            "--temperature",
            "0",
        ]);
    }
    let (_, load_ms) = measured_drain(bin, &home, N_CTX, b, kernels);
    let (results, span_ms) = support::succeeded_results(bin, &home);
    let prompt = support::total(&results, &["usage", "prompt_tokens"]);
    let cached = support::total(
        &results,
        &["usage", "prompt_tokens_details", "cached_tokens"],
    );
    Run {
        secs: span_ms.saturating_sub(load_ms) as f64 / 1000.0,
        prompt: prompt as f64 / n as f64,
        cached: cached as f64 / n as f64,
    }
}

fn server_start(tool: &Path, model: &Path, b: u32, port: u16) -> support::Server {
    // Without --swa-full the server reuses no cell of gemma's sliding-window layers and
    // decodes every prompt whole (seen: `cache_n` 1 of 272 for the same prompt twice).
    support::llama_server(tool, model, b, N_CTX * b, &["--swa-full"], port)
}

fn chat(port: u16, content: &str, tg: u32) -> (u64, u64) {
    let v = post(
        port,
        "/v1/chat/completions",
        &serde_json::json!({
            "messages": [{"role": "user", "content": content}],
            "max_tokens": tg,
            "temperature": 0,
            "cache_prompt": true,
        }),
    );
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = v["timings"]["cache_n"].as_u64().unwrap_or(0);
    (prompt, cached)
}

fn server_run(port: u16, n: usize, tg: u32, b: u32) -> Run {
    // The worker's prompt: the instruction, a blank line, the document (Task::Custom).
    let prompts: Vec<String> = (0..n)
        .map(|i| format!("{}\n\n{}", instruction(true, i), document(i)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let totals: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..b)
            .map(|_| {
                scope.spawn(|| {
                    let mut t = (0, 0);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return t;
                        }
                        let (p, c) = chat(port, &prompts[i], tg);
                        t.0 += p;
                        t.1 += c;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let (p, c) = totals.iter().fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1));
    Run {
        secs,
        prompt: p as f64 / n as f64,
        cached: c as f64 / n as f64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let tg: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let b: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4);
    let kernels = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "batch-invariant".into());
    let bin = bin();
    let model = model("gemma-3-270m-q4_k_m.gguf");
    let tool = support::anchor("llama-server", "QWEN3Q_LLAMA_SERVER");
    let port = 18_000 + (std::process::id() % 1000) as u16;
    println!("gemma-3-270m Q4_K_M, {n} documents, up to {tg} generated tokens each, B = {b}, n_ctx {N_CTX} per sequence, worker kernels {kernels}, {runs} runs");
    println!("llama-server: {}", tool.display());
    let (mut shared, mut distinct, mut server) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_ratio, mut s_ratio) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Every other run in the reverse order, so that none always goes first.
        let mut order = ["shared", "distinct", "server"];
        if run % 2 == 1 {
            order.reverse();
        }
        let (mut sh, mut di, mut se) = (None, None, None);
        for what in order {
            match what {
                "shared" => sh = Some(worker_run(&bin, &model, n, tg, b, &kernels, true)),
                "distinct" => di = Some(worker_run(&bin, &model, n, tg, b, &kernels, false)),
                _ => {
                    let _server = server_start(&tool, &model, b, port);
                    chat(port, "Say hello.", 4); // warm-up
                    se = Some(server_run(port, n, tg, b));
                }
            }
        }
        let (sh, di, se) = (sh.unwrap(), di.unwrap(), se.unwrap());
        eprintln!(
            "run {run}: shared {:.2} s (prompt {:.0}, cached {:.0}), distinct {:.2} s (prompt {:.0}, cached {:.0}), llama-server {:.2} s (prompt {:.0}, cached {:.0})",
            sh.secs, sh.prompt, sh.cached, di.secs, di.prompt, di.cached, se.secs, se.prompt, se.cached
        );
        d_ratio.push(di.secs / sh.secs);
        s_ratio.push(se.secs / sh.secs);
        shared.push(sh);
        distinct.push(di);
        server.push(se);
    }
    println!("| | seconds (median) | mean prompt tokens | mean cached tokens | ÷ shared (median of ratios) |");
    println!("|---|---|---|---|---|");
    for (name, v, r) in [
        ("worker, shared instruction", &shared, None),
        ("worker, distinct instructions", &distinct, Some(&d_ratio)),
        ("llama-server, shared instruction", &server, Some(&s_ratio)),
    ] {
        println!(
            "| {name} | {:.2} | {:.0} | {:.0} | {} |",
            median(v.iter().map(|r| r.secs).collect()),
            median(v.iter().map(|r| r.prompt).collect()),
            median(v.iter().map(|r| r.cached).collect()),
            r.map_or("1".to_string(), |r| format!("{:.2}", median(r.clone())))
        );
    }
}
