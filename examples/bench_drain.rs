//! Benchmark: drain N documents on gemma through the real worker, against the same
//! generations done directly with the engine (no queue, no store, no process start).
//!
//! cargo build --release --bins && cargo run --release --example bench_drain -- [DOCS] [RUNS]
//!
//! Each run: a fresh home; `qwen3q enqueue` (not timed); `qwen3q worker --drain` (timed: process
//! start, model load, every store write and checkpoint); then the raw baseline, which loads the
//! model once and generates the same prompts with the same settings. Reports tokens/s,
//! documents/min and the worker/raw ratio; the median over runs.

mod support;
use std::process::{Command, Stdio};
use std::time::Instant;
use support::{bin, median, model};

use qwen3q::engine::llama::{LlamaEngine, LlamaSettings};
use qwen3q::engine::templates::{task_messages, with_thinking};
use qwen3q::engine::{Control, Engine, Sampling, Shape};
use qwen3q::job::{ModelRef, Task};

const MAX_TOKENS: u32 = 64;

fn doc(i: usize) -> String {
    const S: [&str; 6] = [
        "The committee reviewed the budget for the coming year.",
        "Rainfall in the region was well below the seasonal average.",
        "A new bridge will connect the two halves of the town.",
        "Volunteers planted three hundred trees along the river.",
        "The school added evening classes for adult learners.",
        "Local farmers formed a cooperative to share equipment.",
    ];
    // Numbered, so that no two documents are the same job.
    let body: Vec<&str> = (0..20).map(|k| S[(i + k * 5) % S.len()]).collect();
    format!("Report number {i}. {}", body.join(" "))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let bin = bin();
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release --bins"
    );
    let model = model("gemma-3-270m-q4_k_m.gguf");
    let (mut worker_tps, mut raw_tps, mut dpm, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("q3d")
            .tempdir_in("/tmp")
            .unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        for i in 0..n {
            std::fs::write(docs.join(format!("doc{i:03}.txt")), doc(i)).unwrap();
        }
        let home = dir.path().join("home");
        let q = |args: &[&str]| {
            let st = Command::new(&bin)
                .args(args)
                .env("QWEN3Q_HOME", &home)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "qwen3q {args:?}");
        };
        let max = MAX_TOKENS.to_string();
        q(&[
            "enqueue",
            docs.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-tokens",
            &max,
            "--temperature",
            "0",
        ]);
        let t = Instant::now();
        q(&["worker", "--drain"]);
        let worker_secs = t.elapsed().as_secs_f64();
        let out = Command::new(&bin)
            .args(["results", "--jsonl"])
            .env("QWEN3Q_HOME", &home)
            .output()
            .unwrap();
        let mut worker_tokens = 0u64;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["state"], "succeeded");
            worker_tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
        }

        // The raw baseline: same prompts, same sampling, one engine in this process.
        let t = Instant::now();
        let mut engine = LlamaEngine::new(LlamaSettings::default());
        let mref = ModelRef {
            name: "gemma".into(),
            path: model.to_str().unwrap().into(),
            template: Some("gemma".into()),
        };
        let info = engine
            .load(
                &mref,
                Shape {
                    n_ctx: 4096,
                    n_seq: 1,
                },
            )
            .unwrap();
        let mut raw_tokens = 0u64;
        for i in 0..n {
            let rendered = engine
                .render(&task_messages(&Task::Summarize, None, &doc(i)))
                .unwrap();
            let prompt = with_thinking(rendered, false, info.thinking_template);
            let s = Sampling {
                max_tokens: MAX_TOKENS,
                temperature: 0.0,
                top_p: 0.8,
                top_k: 20,
                min_p: 0.0,
                seed: 0,
            };
            raw_tokens += engine
                .generate(&prompt, &s, &mut || Control::Continue)
                .unwrap()
                .completion_tokens as u64;
        }
        let raw_secs = t.elapsed().as_secs_f64();
        assert_eq!(
            raw_tokens, worker_tokens,
            "same prompts, same greedy output, same token counts"
        );

        let (w, r) = (
            worker_tokens as f64 / worker_secs,
            raw_tokens as f64 / raw_secs,
        );
        println!(
            "run {run}: worker {worker_tokens} tokens in {worker_secs:.2} s = {w:.1} tok/s, {:.1} docs/min; raw {r:.1} tok/s; ratio {:.3}",
            n as f64 / worker_secs * 60.0,
            w / r
        );
        worker_tps.push(w);
        raw_tps.push(r);
        dpm.push(n as f64 / worker_secs * 60.0);
        ratios.push(w / r);
    }
    println!("median of {runs} runs, {n} documents, {MAX_TOKENS} max tokens, gemma-3-270m Q4_K_M:");
    println!(
        "  worker (end to end)   {:>7.1} generated tok/s, {:>6.1} documents/min",
        median(worker_tps),
        median(dpm)
    );
    println!(
        "  raw engine loop       {:>7.1} generated tok/s",
        median(raw_tps)
    );
    println!("  worker / raw          {:>7.3}", median(ratios));
}
